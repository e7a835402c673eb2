//! Durable state for the Millicent services: sled behind a narrow interface,
//! with group commit.
//!
//! Both the broker and the vendor node keep the state that must survive a
//! crash here and nowhere else. A write becomes visible at once (to readers
//! in the same process) and durable when a later [`Ledger::commit`] returns:
//! every caller that is waiting joins the next flush, so one `fsync` makes
//! many operations durable at once. A service answers a request only after
//! `commit` has returned for the writes that request made.
//!
//! sled is an embedded, crash-safe B-tree; this crate is the only one that
//! names it, so the store can be replaced without touching the services.
//!
//! The store holds the services' secrets, so its directory is private to
//! the user running the service: [`prepare_data_dir`] creates it with mode
//! 0700 and refuses one that others can reach, before the store is opened.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod commit;
mod data_dir;
mod spends;
mod table;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use commit::{CommitMetrics, Durability};
pub use data_dir::{DATA_DIR_MODE, DataDirError, prepare_data_dir};
pub use spends::{SpendError, SpendOutcome, SpendStore, describe_spend_metrics};
pub use table::{Abort, Batch, Entry, Table, TxError, TxFailure, TxTable, Writes};

/// Errors of the durable store. Messages name the operation and the store's
/// own description of the failure, never a key or value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    /// The storage engine failed (I/O error, disk full, corruption).
    #[error("storage failed during {operation}: {detail}")]
    Storage {
        /// What was being done.
        operation: &'static str,
        /// The storage engine's description.
        detail: String,
    },
    /// The committer has shut down; nothing more can be made durable.
    #[error("the store is shutting down")]
    Closed,
    /// Another process has the store open: one store, one process.
    #[error(
        "the store in {} is open in another process; is the service running? \
         Stop it first, or ask the running service instead",
        path.display()
    )]
    InUse {
        /// The store's directory.
        path: std::path::PathBuf,
    },
}

impl LedgerError {
    pub(crate) fn storage(operation: &'static str, error: impl std::fmt::Display) -> LedgerError {
        LedgerError::Storage {
            operation,
            detail: error.to_string(),
        }
    }
}

/// An open store: named tables and a group committer.
#[derive(Clone)]
pub struct Ledger {
    db: sled::Db,
    committer: Arc<commit::Committer>,
    staging: Arc<commit::Staging>,
}

impl Ledger {
    /// Opens (or creates) the store in directory `path` and starts its
    /// committer on the current tokio runtime.
    pub fn open(path: &Path, durability: Durability) -> Result<Ledger, LedgerError> {
        Ledger::open_with_metrics(path, durability, CommitMetrics::default())
    }

    /// As [`Ledger::open`], with the committer's metrics under the names
    /// and labels of `metrics`, for processes that run several stores.
    pub fn open_with_metrics(
        path: &Path,
        durability: Durability,
        metrics: CommitMetrics,
    ) -> Result<Ledger, LedgerError> {
        let db = open_db(path)?;
        let staging = Arc::new(commit::Staging::default());
        let committer = Arc::new(commit::Committer::start(
            db.clone(),
            staging.clone(),
            durability,
            metrics,
        ));
        Ok(Ledger {
            db,
            committer,
            staging,
        })
    }

    /// The table `name`, created empty if it does not exist.
    pub fn table(&self, name: &str) -> Result<Table, LedgerError> {
        let tree = self
            .db
            .open_tree(name)
            .map_err(|error| LedgerError::storage("open table", error))?;
        Ok(Table::new(tree))
    }

    /// Names of every table in the store.
    pub fn table_names(&self) -> Vec<String> {
        self.db
            .tree_names()
            .into_iter()
            .filter_map(|name| String::from_utf8(name.to_vec()).ok())
            .collect()
    }

    /// Applies `writes`, to any tables of this ledger, atomically.
    pub fn apply(&self, writes: Writes) -> Result<(), LedgerError> {
        writes.apply()
    }

    /// Applies `writes` one by one in the order they were added: cheaper
    /// than [`Ledger::apply`], but a crash leaves any prefix of them (see
    /// [`Writes`]).
    pub fn apply_in_order(&self, writes: Writes) -> Result<(), LedgerError> {
        writes.apply_in_order()
    }

    /// Removes table `name` and everything in it; returns whether it existed.
    pub fn drop_table(&self, name: &str) -> Result<bool, LedgerError> {
        self.db
            .drop_tree(name)
            .map_err(|error| LedgerError::storage("drop table", error))
    }

    /// Returns once every write made before the call is durable (in
    /// [`Durability::Strict`]), sharing one flush with concurrent callers.
    pub async fn commit(&self) -> Result<(), LedgerError> {
        self.committer.commit().await
    }

    /// Writes out everything staged and flushes now, blocking the thread;
    /// for shutdown and for the rare writes that must not wait.
    pub fn flush_blocking(&self) -> Result<(), LedgerError> {
        commit::write_and_flush(&self.db, &self.staging)
    }

    /// Writes out everything staged so far (without flushing): for a write
    /// that must reach the store after the staged records it depends on,
    /// such as a checkpoint that counts them.
    pub fn write_staged(&self) -> Result<(), LedgerError> {
        self.staging.write_all()
    }

    /// Has `part`'s staged writes written out before every flush.
    pub(crate) fn register_staged(&self, part: std::sync::Weak<dyn commit::Staged>) {
        self.staging.register(part);
    }

    /// Flushes, stops the committer and releases the store, so that it can
    /// be opened again. Returns an error if this is not the last handle.
    pub async fn close(self) -> Result<(), LedgerError> {
        self.flush_blocking()?;
        let Ledger { db, committer, .. } = self;
        drop(db);
        match Arc::try_unwrap(committer) {
            Ok(committer) => {
                committer.stop().await;
                Ok(())
            }
            Err(_) => Err(LedgerError::storage("close", "the store is still in use")),
        }
    }

    /// The durability mode the store was opened with.
    pub fn durability(&self) -> Durability {
        self.committer.durability()
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, LedgerError> {
        self.db
            .size_on_disk()
            .map_err(|error| LedgerError::storage("size", error))
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("durability", &self.durability())
            .finish()
    }
}

/// Default interval between checkpoints in [`Durability::Relaxed`] mode.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// How long opening waits for a store that a process just closed or lost:
/// sled releases its lock a moment after its last handle goes.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens the sled database in `path`, waiting up to [`LOCK_WAIT`] for its
/// lock.
fn open_db(path: &Path) -> Result<sled::Db, LedgerError> {
    let started = std::time::Instant::now();
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(256 * 1024 * 1024)
            .open()
        {
            Ok(db) => return Ok(db),
            // sled holds an exclusive lock on its files while open, and
            // reports a taken lock as an I/O error saying so.
            Err(sled::Error::Io(io))
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().starts_with("could not acquire lock") =>
            {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(LedgerError::InUse {
                        path: path.to_owned(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(other) => return Err(LedgerError::storage("open", other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_store_open_elsewhere_is_refused_as_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let first = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let error = Ledger::open(dir.path(), Durability::Strict).unwrap_err();
        assert!(
            matches!(&error, LedgerError::InUse { path } if path == dir.path()),
            "{error}"
        );
        assert!(error.to_string().contains("another process"), "{error}");
        first.close().await.unwrap();
        Ledger::open(dir.path(), Durability::Strict).unwrap();
    }
}
