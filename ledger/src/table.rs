//! Tables: ordered maps of bytes to bytes, with atomic batches and
//! transactions within one table.

use sled::Transactional as _;
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

/// Writes to several tables of one [`Ledger`](crate::Ledger), applied
/// atomically by [`Ledger::apply`](crate::Ledger::apply): after a crash
/// either all of them are there or none is. Later writes of a key replace
/// earlier ones.
#[derive(Debug, Default)]
pub struct Writes {
    tables: Vec<(Table, Vec<Write>)>,
}

/// One write: a key and its new value, or `None` to remove it.
type Write = (Vec<u8>, Option<Vec<u8>>);

impl Writes {
    /// No writes yet.
    pub fn new() -> Writes {
        Writes::default()
    }

    /// Sets `key` of `table` to `value`.
    pub fn insert(&mut self, table: &Table, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.writes_of(table)
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    /// Removes `key` of `table`.
    pub fn remove(&mut self, table: &Table, key: impl AsRef<[u8]>) {
        self.writes_of(table).push((key.as_ref().to_vec(), None));
    }

    /// Adds every write of `other`, after those already here.
    pub fn append(&mut self, other: Writes) {
        for (table, writes) in other.tables {
            self.writes_of(&table).extend(writes);
        }
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.tables.iter().map(|(_, writes)| writes.len()).sum()
    }

    /// Whether there are no writes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn writes_of(&mut self, table: &Table) -> &mut Vec<Write> {
        let position = match self
            .tables
            .iter()
            .position(|(held, _)| held.tree.name() == table.tree.name())
        {
            Some(position) => position,
            None => {
                self.tables.push((table.clone(), Vec::new()));
                self.tables.len() - 1
            }
        };
        &mut self.tables[position].1
    }

    /// Applies the writes one by one, each as a plain write: table by
    /// table in the order each table was first written to, and within a
    /// table in the order added. Cheaper than [`Writes::apply`] (the store
    /// logs an atomic batch as a unit of its own, which costs several
    /// kilobytes of log), but not atomic: a crash leaves a prefix of the
    /// writes in that order, and a failure stops at the write that failed.
    /// The caller must be able to recognise and repair any prefix.
    pub(crate) fn apply_in_order(self) -> Result<(), LedgerError> {
        for (table, writes) in self.tables {
            for (key, value) in writes {
                match value {
                    Some(value) => table.insert(key, value)?,
                    None => table.remove(key)?,
                }
            }
        }
        Ok(())
    }

    /// Applies the writes atomically: one batch for one table, one
    /// transaction (which only writes, so it never conflicts) for several.
    pub(crate) fn apply(self) -> Result<(), LedgerError> {
        let mut batches: Vec<(sled::Tree, sled::Batch)> = self
            .tables
            .into_iter()
            .map(|(table, writes)| {
                let mut batch = sled::Batch::default();
                for (key, value) in writes {
                    match value {
                        Some(value) => batch.insert(key, value),
                        None => batch.remove(key),
                    }
                }
                (table.tree, batch)
            })
            .collect();
        match batches.len() {
            0 => Ok(()),
            1 => {
                let (tree, batch) = batches.remove(0);
                tree.apply_batch(batch)
                    .map_err(|error| LedgerError::storage("write", error))
            }
            _ => {
                let trees: Vec<sled::Tree> = batches.iter().map(|(tree, _)| tree.clone()).collect();
                trees
                    .as_slice()
                    .transaction(|views| {
                        for (view, (_, batch)) in views.iter().zip(&batches) {
                            view.apply_batch(batch)?;
                        }
                        Ok::<(), ConflictableTransactionError<()>>(())
                    })
                    .map_err(|error| match error {
                        TransactionError::Abort(()) => {
                            LedgerError::storage("write", "a write-only transaction aborted")
                        }
                        TransactionError::Storage(error) => LedgerError::storage("write", error),
                    })
            }
        }
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

    /// Every entry whose key starts with `prefix` and is at least `start`,
    /// in key order.
    pub fn scan_prefix_from<P: AsRef<[u8]>, S: AsRef<[u8]>>(
        &self,
        prefix: P,
        start: S,
    ) -> impl Iterator<Item = Result<Entry, LedgerError>> + use<P, S> {
        let start = start.as_ref().to_vec();
        self.tree
            .range(start..)
            .take_while(move |entry| match entry {
                Ok((key, _)) => key.starts_with(prefix.as_ref()),
                Err(_) => true,
            })
            .map(|entry| {
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
    async fn writes_to_several_tables_land_together() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let (a, b) = (ledger.table("a").unwrap(), ledger.table("b").unwrap());
        a.insert(b"gone", b"x").unwrap();
        let mut writes = crate::Writes::new();
        writes.insert(&a, b"1", b"one");
        writes.insert(&b, b"2", b"two");
        let mut more = crate::Writes::new();
        more.remove(&a, b"gone");
        more.insert(&b, b"3", b"three");
        writes.append(more);
        assert_eq!(writes.len(), 4);
        ledger.apply(writes).unwrap();
        assert_eq!(a.get(b"1").unwrap(), Some(b"one".to_vec()));
        assert_eq!(a.get(b"gone").unwrap(), None);
        assert_eq!(b.get(b"2").unwrap(), Some(b"two".to_vec()));
        assert_eq!(b.get(b"3").unwrap(), Some(b"three".to_vec()));
        ledger.apply(crate::Writes::new()).unwrap();
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
