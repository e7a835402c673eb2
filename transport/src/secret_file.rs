//! Files that hold secrets: private keys of TLS identities and wallets.
//!
//! Whoever reads such a file can impersonate its owner or spend their
//! scrip, so a file that group or others may read or write is refused
//! before a byte of it is used. The check reads the mode bits of the open
//! file rather than trying another user's access, because root can read any
//! file and a successful read proves nothing; it is the same rule the
//! services apply to their data directories.

use std::fs::{File, Metadata};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Largest secret file read: a private key in PEM is a few kilobytes.
pub const MAX_SECRET_FILE_LEN: u64 = 64 * 1024;

/// The permission bits of a file others may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("mode {mode:03o} lets other users read or change it")]
pub struct NotPrivate {
    /// The file's permission bits.
    pub mode: u32,
}

/// Refuses `metadata` of a file or directory that users other than its
/// owner may read, write or enter (any bit of `077`).
#[cfg(unix)]
pub fn check_owner_only(metadata: &Metadata) -> Result<(), NotPrivate> {
    use std::os::unix::fs::PermissionsExt as _;

    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(NotPrivate { mode });
    }
    Ok(())
}

/// Refuses nothing: other systems have no Unix mode bits to check.
#[cfg(not(unix))]
pub fn check_owner_only(_metadata: &Metadata) -> Result<(), NotPrivate> {
    Ok(())
}

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// Users other than the owner may read or change it.
    #[error(
        "{} holds a private key and has mode {mode:03o}, so other users can read it; \
         run `chmod 600 {}` and start again",
        path.display(),
        path.display()
    )]
    NotPrivate {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It is larger than any key.
    #[error("{} is larger than {MAX_SECRET_FILE_LEN} bytes, too large for a key", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// It cannot be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
}

/// Reads the secret file at `path` into a buffer wiped when dropped,
/// refusing it, unread, if others may reach it.
pub fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, SecretFileError> {
    let unreadable = |source| SecretFileError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(unreadable)?;
    let metadata = file.metadata().map_err(unreadable)?;
    check_owner_only(&metadata).map_err(|NotPrivate { mode }| SecretFileError::NotPrivate {
        path: path.to_owned(),
        mode,
    })?;
    if metadata.len() > MAX_SECRET_FILE_LEN {
        return Err(SecretFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    let mut contents = Zeroizing::new(Vec::with_capacity(metadata.len() as usize));
    file.take(MAX_SECRET_FILE_LEN + 1)
        .read_to_end(&mut contents)
        .map_err(unreadable)?;
    if contents.len() as u64 > MAX_SECRET_FILE_LEN {
        return Err(SecretFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(contents)
}

/// Writes `contents` to a new file at `path` with mode 0600, set by the
/// call that creates it; an existing file is replaced only if it is
/// already private.
pub fn write_secret(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write as _;

    if let Ok(metadata) = std::fs::symlink_metadata(path)
        && check_owner_only(&metadata).is_err()
    {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} exists and others can read it; remove it first",
                path.display()
            ),
        ));
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(all(test, unix))]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_private_file_is_read_and_a_readable_one_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_secret(&path, b"secret").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_secret(&path).unwrap().as_slice(), b"secret");

        for wide in [0o644, 0o640, 0o604, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(wide)).unwrap();
            let error = read_secret(&path).unwrap_err();
            assert!(
                matches!(&error, SecretFileError::NotPrivate { mode, .. } if *mode == wide),
                "{error:?}"
            );
            let text = error.to_string();
            assert!(
                text.contains(&format!("`chmod 600 {}`", path.display())),
                "{text}"
            );
            assert!(!text.contains("secret\""), "{text}");
            // Refusing changes nothing, and a wider file is not rewritten.
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                wide
            );
            assert!(write_secret(&path, b"other").is_err());
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read_secret(&path).unwrap().as_slice(), b"secret");
    }

    #[test]
    fn a_file_larger_than_a_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.pem");
        write_secret(&path, &vec![b'a'; MAX_SECRET_FILE_LEN as usize + 1]).unwrap();
        assert!(matches!(
            read_secret(&path),
            Err(SecretFileError::TooLarge { .. })
        ));
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            read_secret(&missing),
            Err(SecretFileError::Unreadable { .. })
        ));
    }
}
