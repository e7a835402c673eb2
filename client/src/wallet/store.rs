//! The wallet file on disk: bounded reads, and writes that are atomic,
//! durable and readable by the owner only.
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

/// The wallet file's contents. They hold secrets, so the buffer is zeroised
/// when dropped.
pub(crate) fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let file = File::open(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ClientError::WalletNotFound {
            path: path.to_owned(),
        },
        _ => io_error(path, "open", source),
    })?;
    let len = file
        .metadata()
        .map_err(|source| io_error(path, "read", source))?
        .len();
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

/// Writes a new wallet at `path`, failing if any file is there already.
pub(crate) fn create(path: &Path, contents: &[u8]) -> Result<(), ClientError> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(ClientError::WalletExists {
            path: path.to_owned(),
        });
    }
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
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
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

    #[test]
    fn a_missing_wallet_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read(&dir.path().join("absent.json")),
            Err(ClientError::WalletNotFound { .. })
        ));
    }
}
