//! The data directory of a service, which holds the store and with it every
//! secret the service keeps: created owner-only, and refused when users
//! other than its owner can reach it.
//!
//! A new directory (and each missing parent) is made with mode 0700 in the
//! call that creates it, so there is no moment at which others could open
//! it. The files the store writes inside take the process's umask; the
//! directory is what keeps them private, which is why an existing one is
//! checked before the store is opened. The check reads the mode bits rather
//! than trying to open anything, because root can read any file and a
//! successful read proves nothing.

use std::io;
use std::path::{Path, PathBuf};

/// Mode of a data directory.
pub const DATA_DIR_MODE: u32 = 0o700;

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Users other than the owner may list or enter the directory.
    #[error(
        "data directory {} has mode {mode:03o}, so other users can reach the secrets in it; \
         run `chmod 700 {}` and start again",
        path.display(),
        path.display()
    )]
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The directory cannot be created or inspected.
    #[error("data directory {}: cannot {action} it: {source}", path.display())]
    Unusable {
        /// The directory.
        path: PathBuf,
        /// What failed.
        action: &'static str,
        /// The operating system's reason.
        source: io::Error,
    },
}

/// Creates the data directory `path` with mode 0700 if it does not exist,
/// and refuses one that group or others may reach. A refusal changes
/// nothing on disk.
pub fn prepare_data_dir(path: &Path) -> Result<(), DataDirError> {
    let unusable = |action, source| DataDirError::Unusable {
        path: path.to_owned(),
        action,
        source,
    };

    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DATA_DIR_MODE);
    builder
        .create(path)
        .map_err(|source| unusable("create", source))?;

    let metadata = std::fs::metadata(path).map_err(|source| unusable("inspect", source))?;
    if !metadata.is_dir() {
        return Err(unusable(
            "use",
            io::Error::new(io::ErrorKind::NotADirectory, "it is not a directory"),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(DataDirError::NotPrivate {
                path: path.to_owned(),
                mode,
            });
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).map_or(0, |metadata| metadata.permissions().mode() & 0o777)
    }

    #[test]
    fn a_new_directory_and_its_parents_are_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/b");
        prepare_data_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700);
        // An existing private directory is accepted as it is.
        prepare_data_dir(&fresh).unwrap();
        fs::set_permissions(&fresh, fs::Permissions::from_mode(0o500)).unwrap();
        prepare_data_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o500);
    }

    #[test]
    fn a_directory_others_can_reach_is_refused_and_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("store");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("db"), b"secrets").unwrap();
        for wide in [0o755, 0o750, 0o701] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(wide)).unwrap();
            let error = prepare_data_dir(&dir).unwrap_err();
            assert!(
                matches!(&error, DataDirError::NotPrivate { path, mode } if path == &dir && *mode == wide),
                "{error:?}"
            );
            let text = error.to_string();
            assert!(text.contains(&format!("mode {wide:03o}")), "{text}");
            assert!(
                text.contains(&format!("`chmod 700 {}`", dir.display())),
                "{text}"
            );
            assert_eq!(mode(&dir), wide);
        }
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["db"]);
        assert_eq!(fs::read(dir.join("db")).unwrap(), b"secrets");
    }

    #[test]
    fn a_file_in_its_place_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("store");
        fs::write(&path, b"").unwrap();
        assert!(matches!(
            prepare_data_dir(&path),
            Err(DataDirError::Unusable { .. })
        ));
    }
}
