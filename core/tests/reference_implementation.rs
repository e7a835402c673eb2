//! Runs the independent Python implementation in docs/reference/ over the
//! vector file, so the vectors (and docs/PROTOCOL.md, which the Python code
//! follows) are checked by code that shares nothing with this crate.
//!
//! Needs `python3` with `pycryptodome`; `scripts/test` installs it. A missing
//! interpreter or module fails this test with a message saying so.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn python_reference_agrees_with_every_vector() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new("python3")
        .arg(root.join("docs/reference/millicent_ref.py"))
        .arg(root.join("docs/test-vectors/classic.json"))
        .arg(root.join("docs/test-vectors/modern.json"))
        .output()
        .expect("python3 must be installed to check the reference implementation");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python reference implementation disagrees or cannot run \
         (scripts/test installs pycryptodome):\n{stdout}\n{stderr}"
    );
    for suite in ["classic suite", "modern suite"] {
        assert!(
            stdout.contains(&format!("{suite}, "))
                && stdout.matches("passed, 0 failed").count() == 2,
            "unexpected output: {stdout}"
        );
    }
}
