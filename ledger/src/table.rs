//! Tables: ordered maps of bytes to bytes, with atomic batches and
//! transactions within one table.

use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};

use crate::LedgerError;

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One named table of a [`Ledger`](crate::Ledger).
#[derive(Clone, Debug)]
pub struct Table {
    tree: sled::Tree,
}

/// Writes applied to one table atomically.
#[derive(Debug, Default)]
pub struct Batch {
    inner: sled::Batch,
    len: usize,
}

impl Batch {
    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.inner.insert(key.as_ref(), value.as_ref());
        self.len += 1;
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.inner.remove(key.as_ref());
        self.len += 1;
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no writes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Table {
    pub(crate) fn new(tree: sled::Tree) -> Table {
        Table { tree }
    }

    /// The value of `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, LedgerError> {
        self.tree
            .get(key)
            .map(|value| value.map(|value| value.to_vec()))
            .map_err(|error| LedgerError::storage("read", error))
    }

    /// Sets `key` to `value`.
    pub fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<(), LedgerError> {
        self.tree
            .insert(key.as_ref(), value.as_ref())
            .map(|_| ())
            .map_err(|error| LedgerError::storage("write", error))
    }

    /// Removes `key`.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), LedgerError> {
        self.tree
            .remove(key)
            .map(|_| ())
            .map_err(|error| LedgerError::storage("write", error))
    }

    /// Applies `batch` atomically.
    pub fn apply(&self, batch: Batch) -> Result<(), LedgerError> {
        self.tree
            .apply_batch(batch.inner)
            .map_err(|error| LedgerError::storage("write", error))
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn scan_prefix<P: AsRef<[u8]>>(
        &self,
        prefix: P,
    ) -> impl Iterator<Item = Result<Entry, LedgerError>> + use<P> {
        self.tree.scan_prefix(prefix).map(|entry| {
            entry
                .map(|(key, value)| (key.to_vec(), value.to_vec()))
                .map_err(|error| LedgerError::storage("scan", error))
        })
    }

    /// The entry with the greatest key starting with `prefix`.
    pub fn last_with_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<Option<Entry>, LedgerError> {
        match self.tree.scan_prefix(prefix).next_back() {
            Some(Ok((key, value))) => Ok(Some((key.to_vec(), value.to_vec()))),
            Some(Err(error)) => Err(LedgerError::storage("scan", error)),
            None => Ok(None),
        }
    }

    /// Number of entries (walks the table).
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Runs `body` as one serialisable transaction over this table. `body`
    /// may run more than once if it conflicts with a concurrent
    /// transaction, so it must not have effects outside the table.
    pub fn transaction<T, E>(
        &self,
        body: impl Fn(&TxTable<'_>) -> Result<T, Abort<E>>,
    ) -> Result<T, TxError<E>> {
        self.tree
            .transaction(|tree| {
                body(&TxTable { tree }).map_err(|abort| match abort {
                    Abort::With(error) => ConflictableTransactionError::Abort(error),
                    Abort::Storage(TxFailure(inner)) => inner.into(),
                })
            })
            .map_err(|error| match error {
                TransactionError::Abort(error) => TxError::Aborted(error),
                TransactionError::Storage(error) => {
                    TxError::Storage(LedgerError::storage("transaction", error))
                }
            })
    }
}

/// A table inside a transaction.
pub struct TxTable<'a> {
    tree: &'a TransactionalTree,
}

/// A storage failure or conflict inside a transaction; propagate it with `?`.
#[derive(Debug)]
pub struct TxFailure(UnabortableTransactionError);

/// Why a transaction body stopped.
#[derive(Debug)]
pub enum Abort<E> {
    /// The body refused the operation; nothing is written.
    With(E),
    /// Storage failed or the transaction must be retried.
    Storage(TxFailure),
}

impl<E> From<TxFailure> for Abort<E> {
    fn from(failure: TxFailure) -> Abort<E> {
        Abort::Storage(failure)
    }
}

/// How a transaction failed.
#[derive(Debug)]
pub enum TxError<E> {
    /// The body aborted with this error; nothing was written.
    Aborted(E),
    /// Storage failed; nothing was written.
    Storage(LedgerError),
}

impl TxTable<'_> {
    /// The value of `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, TxFailure> {
        self.tree
            .get(key)
            .map(|value| value.map(|value| value.to_vec()))
            .map_err(TxFailure)
    }

    /// Sets `key` to `value`.
    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), TxFailure> {
        self.tree
            .insert(key.as_ref(), value.as_ref())
            .map(|_| ())
            .map_err(TxFailure)
    }

    /// Removes `key`.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), TxFailure> {
        self.tree
            .remove(key.as_ref())
            .map(|_| ())
            .map_err(TxFailure)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Abort, Durability, Ledger, TxError};

    #[tokio::test]
    async fn writes_survive_reopen_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
            let table = ledger.table("t").unwrap();
            table.insert(b"k", b"v").unwrap();
            ledger.commit().await.unwrap();
            ledger.close().await.unwrap();
        }
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        assert_eq!(
            ledger.table("t").unwrap().get(b"k").unwrap(),
            Some(b"v".to_vec())
        );
    }

    #[tokio::test]
    async fn concurrent_commits_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let table = ledger.table("t").unwrap();
        let mut tasks = Vec::new();
        for i in 0u32..200 {
            let (ledger, table) = (ledger.clone(), table.clone());
            tasks.push(tokio::spawn(async move {
                table.insert(i.to_be_bytes(), b"x").unwrap();
                ledger.commit().await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(table.len(), 200);
    }

    #[tokio::test]
    async fn an_aborted_transaction_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let table = ledger.table("t").unwrap();
        let result: Result<(), TxError<&str>> = table.transaction(|tx| {
            tx.insert(b"a", b"1")?;
            Err(Abort::With("no"))
        });
        assert!(matches!(result, Err(TxError::Aborted("no"))));
        assert_eq!(table.get(b"a").unwrap(), None);
    }
}
