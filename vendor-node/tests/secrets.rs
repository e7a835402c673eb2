//! The node's store holds master secrets: it is created owner-only, a store
//! others can reach is refused without being touched, and no licence prints
//! its secrets.

#![allow(clippy::unwrap_used)]
#![cfg(unix)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use common::*;
use millicent_ledger::DataDirError;
use millicent_vendor::{RunningVendor, VendorError};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file and directory under `dir`, with its mode and contents.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
    let mut entries = vec![(dir.to_owned(), mode(dir), Vec::new())];
    let mut children: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    children.sort();
    for child in children {
        if child.is_dir() {
            entries.extend(snapshot(&child));
        } else {
            entries.push((child.clone(), mode(&child), fs::read(&child).unwrap()));
        }
    }
    entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_store_is_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.data_dir = dir.path().join("nodes/store");
    let node = RunningVendor::start(config.clone()).await.unwrap();
    node.shutdown().await.unwrap();
    assert_eq!(mode(&config.data_dir), 0o700);
    assert_eq!(mode(&dir.path().join("nodes")), 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_others_can_reach_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let node = RunningVendor::start(config.clone()).await.unwrap();
    node.shutdown().await.unwrap();

    fs::set_permissions(&config.data_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(&config.data_dir);
    let error = RunningVendor::start(config.clone()).await.unwrap_err();
    assert!(
        matches!(
            &error,
            VendorError::DataDir(DataDirError::NotPrivate { path, mode: 0o755 })
                if path == &config.data_dir
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains("mode 755"), "{text}");
    assert!(
        text.contains(&format!("`chmod 700 {}`", config.data_dir.display())),
        "{text}"
    );
    assert_eq!(snapshot(&config.data_dir), before);

    fs::set_permissions(&config.data_dir, fs::Permissions::from_mode(0o700)).unwrap();
    let Harness { node, .. } = start(config).await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_licence_never_prints_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let Harness { node, mut client } = start(config(dir.path())).await;
    let licence = ask_licence(&mut client, "news.example", Some(TOKEN))
        .await
        .unwrap();
    let text = format!("{licence:?} {licence:#?}");
    for secret in [
        &licence.master_scrip_secret,
        &licence.master_customer_secret,
    ] {
        assert_eq!(secret.len(), 32);
        assert!(!text.contains(&hex(&secret[..4])), "{text}");
        let decimal: Vec<String> = secret[..4].iter().map(u8::to_string).collect();
        assert!(!text.contains(&decimal.join(", ")), "{text}");
    }
    node.shutdown().await.unwrap();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
