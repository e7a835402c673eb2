//! Replays the fuzzing corpus through every target, so that `cargo test`
//! checks each input the fuzzer found interesting, and every crash
//! reproducer that was fixed, without a fuzzer installed.
//!
//! `fuzz/corpus/TARGET/` must exist and hold at least one file for every
//! target: a missing corpus fails rather than passing with nothing run.
//! `fuzz/regressions/TARGET/` holds the inputs of fixed crashes and may be
//! absent.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use millicent_fuzz_targets::{TARGETS, Target};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; `None` if it does not exist.
fn inputs(dir: &Path) -> Option<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut files: Vec<PathBuf> = entries
        .map(|entry| match entry {
            Ok(entry) => entry.path(),
            Err(error) => panic!("cannot list {}: {error}", dir.display()),
        })
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    Some(files)
}

/// Runs every file through `target`; returns the files that panicked.
fn replay(target: Target, files: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for file in files {
        let data = match std::fs::read(file) {
            Ok(data) => data,
            Err(error) => panic!("cannot read {}: {error}", file.display()),
        };
        if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
            failures.push(file.display().to_string());
        }
    }
    failures
}

#[test]
fn every_target_has_a_corpus_and_every_input_passes() {
    let mut failures = Vec::new();
    for &(name, target) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        let files = inputs(&dir).unwrap_or_default();
        assert!(
            !files.is_empty(),
            "{} is missing or empty: seed it with `cargo run -p millicent-fuzz-targets \
             --example seeds`",
            dir.display()
        );
        failures.extend(replay(target, &files));
    }
    assert!(failures.is_empty(), "inputs that panic: {failures:#?}");
}

#[test]
fn every_fixed_crash_stays_fixed() {
    let mut failures = Vec::new();
    for &(name, target) in TARGETS {
        let dir = fuzz_dir().join("regressions").join(name);
        if let Some(files) = inputs(&dir) {
            failures.extend(replay(target, &files));
        }
    }
    assert!(
        failures.is_empty(),
        "reproducers that panic again: {failures:#?}"
    );
}

#[test]
fn every_target_has_a_cargo_fuzz_wrapper_and_every_wrapper_a_target() {
    for &(name, _) in TARGETS {
        let wrapper = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(wrapper.is_file(), "{} is missing", wrapper.display());
    }
    for wrapper in inputs(&fuzz_dir().join("fuzz_targets")).unwrap_or_default() {
        let name = wrapper
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned());
        assert!(
            TARGETS
                .iter()
                .any(|(target, _)| Some(*target) == name.as_deref()),
            "{} calls no target in TARGETS",
            wrapper.display()
        );
    }
}

#[test]
fn every_corpus_and_regression_directory_names_a_target() {
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                TARGETS.iter().any(|(target, _)| *target == name),
                "fuzz/{kind}/{name} belongs to no target in TARGETS"
            );
        }
    }
}
