//! The wallet file on disk: the lock that gives one command at a time the
//! wallet, bounded reads of private files, and writes that are atomic,
//! durable and readable by the owner only.
//!
//! The lock is an exclusive lock on `PATH.lock`, a file created next to the
//! wallet and never removed (removing a lock file lets two processes lock two
//! different files). Every read and write of the wallet happens while it is
//! held, so two commands on one wallet run one after the other instead of
//! overwriting each other's changes, and only one of them uses `PATH.tmp`.
//!
//! A write goes to `PATH.tmp` (created afresh with mode 0600), is flushed to
//! the disk, and then takes the place of `PATH` by a rename; the directory is
//! flushed too, so that after a crash `PATH` holds either the old wallet or
//! the new one, never a mixture. Creating a wallet links the temporary file
//! to `PATH` instead of renaming it, which fails if `PATH` exists: an
//! existing wallet is never overwritten, even by a race.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::ClientError;

/// Largest wallet file this program reads, in bytes.
pub(crate) const MAX_WALLET_LEN: u64 = 64 << 20;

/// An exclusive lock on one wallet, released when dropped (or when the
/// process ends, however it ends).
#[derive(Debug)]
pub(crate) struct WalletLock {
    _file: File,
}

/// The lock file of the wallet at `path`: its name with `.lock` appended.
pub(crate) fn lock_path(path: &Path) -> PathBuf {
    with_suffix(path, ".lock")
}

/// Takes the lock of the wallet at `path`, waiting for as long as another
/// process (or another `Wallet` in this one) holds it.
pub(crate) fn lock(path: &Path) -> Result<WalletLock, ClientError> {
    let lock_path = lock_path(path);
    let file = open_lock_file(&lock_path)?;
    file.lock()
        .map_err(|source| io_error(&lock_path, "lock", source))?;
    Ok(WalletLock { _file: file })
}

/// Takes the lock of the wallet at `path` if it is free; `None` if another
/// holds it.
pub(crate) fn try_lock(path: &Path) -> Result<Option<WalletLock>, ClientError> {
    let lock_path = lock_path(path);
    let file = open_lock_file(&lock_path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(WalletLock { _file: file })),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(source)) => Err(io_error(&lock_path, "lock", source)),
    }
}

fn open_lock_file(lock_path: &Path) -> Result<File, ClientError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(lock_path)
        .map_err(|source| io_error(lock_path, "create the lock file of", source))
}

/// Fails with [`ClientError::WalletNotFound`] if there is no file at `path`
/// and with [`ClientError::WalletNotPrivate`] if others can reach it, before
/// the lock is taken, so that neither a mistyped path nor a refused wallet
/// leaves a lock file behind. [`read`] checks the open file again.
pub(crate) fn require_private(path: &Path) -> Result<(), ClientError> {
    match fs::metadata(path) {
        Ok(metadata) => check_private(path, &metadata),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Err(ClientError::WalletNotFound {
            path: path.to_owned(),
        }),
        // Whatever is wrong is reported, with its path, when the file is read.
        Err(_) => Ok(()),
    }
}

/// Fails with [`ClientError::WalletExists`] if there is a file at `path`.
pub(crate) fn refuse_existing(path: &Path) -> Result<(), ClientError> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(ClientError::WalletExists {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// The wallet file's contents. They hold secrets, so the buffer is zeroised
/// when dropped, and a file that other users can read or change is refused.
pub(crate) fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let file = File::open(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ClientError::WalletNotFound {
            path: path.to_owned(),
        },
        _ => io_error(path, "open", source),
    })?;
    let metadata = file
        .metadata()
        .map_err(|source| io_error(path, "read", source))?;
    check_private(path, &metadata)?;
    let len = metadata.len();
    if len > MAX_WALLET_LEN {
        return Err(ClientError::Limit {
            what: "wallet file",
            actual: len,
            max: MAX_WALLET_LEN,
        });
    }

    let mut contents = Zeroizing::new(Vec::with_capacity(len as usize));
    file.take(MAX_WALLET_LEN)
        .read_to_end(&mut contents)
        .map_err(|source| io_error(path, "read", source))?;
    Ok(contents)
}

/// Refuses a wallet file that users other than its owner can read or change:
/// anyone who can read it can spend its scrip.
fn check_private(path: &Path, metadata: &fs::Metadata) -> Result<(), ClientError> {
    millicent_transport::secret_file::check_owner_only(metadata).map_err(|not_private| {
        ClientError::WalletNotPrivate {
            path: path.to_owned(),
            mode: not_private.mode,
        }
    })
}

/// Writes a new wallet at `path`, failing if any file is there already.
pub(crate) fn create(path: &Path, contents: &[u8]) -> Result<(), ClientError> {
    refuse_existing(path)?;
    let temporary = write_temporary(path, contents)?;

    let linked = match fs::hard_link(&temporary, path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            Err(ClientError::WalletExists {
                path: path.to_owned(),
            })
        }
        // Some file systems have no hard links; there the check above is
        // the only guard against overwriting, and a rename stands in.
        Err(_) if fs::symlink_metadata(path).is_err() => {
            fs::rename(&temporary, path).map_err(|source| io_error(path, "create", source))
        }
        Err(_) => Err(ClientError::WalletExists {
            path: path.to_owned(),
        }),
    };
    let removed = remove_if_present(&temporary);
    linked?;
    removed.map_err(|source| io_error(&temporary, "remove the temporary copy of", source))?;
    sync_directory(path)
}

/// Replaces the wallet at `path` with `contents`, atomically and durably.
pub(crate) fn replace(path: &Path, contents: &[u8]) -> Result<(), ClientError> {
    let temporary = write_temporary(path, contents)?;
    fs::rename(&temporary, path).map_err(|source| io_error(path, "replace", source))?;
    sync_directory(path)
}

/// The temporary file next to `path`: its name with `.tmp` appended.
pub(crate) fn temporary_path(path: &Path) -> PathBuf {
    with_suffix(path, ".tmp")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes and flushes `contents` to a fresh owner-only temporary file.
fn write_temporary(path: &Path, contents: &[u8]) -> Result<PathBuf, ClientError> {
    let temporary = temporary_path(path);
    // A temporary file left by a crash is stale: it is removed, not reused,
    // so the new one is created with owner-only permissions.
    remove_if_present(&temporary).map_err(|source| io_error(&temporary, "remove", source))?;

    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&temporary)
        .map_err(|source| io_error(&temporary, "write", source))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(&temporary, "write", source))?;
    Ok(temporary)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Flushes the directory holding `path`, so that a rename or link in it
/// survives a crash.
fn sync_directory(path: &Path) -> Result<(), ClientError> {
    #[cfg(unix)]
    {
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(directory)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| io_error(directory, "flush the directory of", source))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn io_error(path: &Path, action: &'static str, source: io::Error) -> ClientError {
    ClientError::Wallet {
        path: path.to_owned(),
        action,
        error: source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_refuses_an_existing_file_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.json");
        fs::write(&path, b"precious").unwrap();
        assert!(matches!(
            create(&path, b"{}"),
            Err(ClientError::WalletExists { .. })
        ));
        assert_eq!(fs::read(&path).unwrap(), b"precious");
        assert!(!temporary_path(&path).exists());
    }

    #[test]
    fn replace_swaps_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.json");
        create(&path, b"first").unwrap();
        replace(&path, b"second").unwrap();
        assert_eq!(&*read(&path).unwrap(), b"second");
        assert!(!temporary_path(&path).exists());
    }

    #[test]
    fn a_stale_temporary_is_replaced_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.json");
        fs::write(temporary_path(&path), b"left over from a crash, longer").unwrap();
        create(&path, b"new").unwrap();
        assert_eq!(&*read(&path).unwrap(), b"new");
    }

    #[cfg(unix)]
    #[test]
    fn files_are_readable_by_the_owner_only() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.json");
        let stale = temporary_path(&path);
        fs::write(&stale, b"x").unwrap();
        fs::set_permissions(&stale, fs::Permissions::from_mode(0o644)).unwrap();

        create(&path, b"a").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        replace(&path, b"b").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn a_file_other_users_can_read_or_change_is_refused() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.json");
        create(&path, b"secret").unwrap();
        for mode in [0o640, 0o604, 0o620] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            match read(&path) {
                Err(ClientError::WalletNotPrivate { mode: seen, .. }) => assert_eq!(seen, mode),
                other => panic!("{mode:o}: {other:?}"),
            }
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(&*read(&path).unwrap(), b"secret");
    }

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.json");
        let held = lock(&path).unwrap();
        assert!(try_lock(&path).unwrap().is_none());

        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || lock(&path).map(drop))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "a second lock waits");
        drop(held);
        waiter.join().unwrap().unwrap();
        assert!(try_lock(&path).unwrap().is_some());
        assert!(lock_path(&path).exists());
    }

    #[test]
    fn a_missing_wallet_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read(&dir.path().join("absent.json")),
            Err(ClientError::WalletNotFound { .. })
        ));
    }
}
