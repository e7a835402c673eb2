//! Durable spent IDs and the replies kept for retries.
//!
//! Safety critical: this is the one place that decides whether a piece of
//! scrip has been spent, for the vendor node (vendor scrip) and the broker
//! (broker scrip) alike.
//!
//! # Design
//!
//! Memory holds a [`SpentSet`] per issuer (a bitmap per series); the store
//! holds the same bitmaps as 64-bit words, plus, for every
//! spend, a *reply record*: a fingerprint of the request and the reply sent,
//! kept for the retry window so that a customer who lost a reply and sends
//! the same payment again gets the same reply instead of a double-spend
//! error.
//!
//! A spend runs under the lock of the bitmap word holding the ID#:
//!
//! 1. if the bit is set, the payment is a retry (a reply record with the
//!    same fingerprint exists) or a double spend;
//! 2. otherwise the reply is made, the bit is set, and the updated word and
//!    the reply record are written in one atomic batch.
//!
//! Writes of one word are serialised by its lock, so a word on disk always
//! holds every bit set before it was written. The caller then waits for
//! [`Ledger::commit`](crate::Ledger::commit) and only then answers: a spend
//! answered as accepted is durable. A crash after the batch and before the
//! answer leaves the scrip spent *and* its reply on record, so the
//! customer's retry gets the reply.
//!
//! # Keys
//!
//! - `w ‖ issuer length (1) ‖ issuer ‖ series (4) ‖ word index (4)` → the
//!   word, 8 bytes little-endian: bit `i` is sequence number `64 × index + i`
//! - `r ‖ minute (8) ‖ issuer length (1) ‖ issuer ‖ ID# (8)` →
//!   `fingerprint length (2) ‖ fingerprint ‖ reply`
//!
//! Reply records are grouped by the minute they were written, so records
//! past the retry window are removed by dropping whole minutes.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use millicent_core::spent::word_index;
use millicent_core::{ScripId, SpentSet, VendorName};

use crate::{Batch, Ledger, LedgerError, Table};

const LOCK_STRIPES: usize = 1024;
const WORD_PREFIX: u8 = b'w';
const REPLY_PREFIX: u8 = b'r';

/// What [`SpendStore::spend`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum SpendOutcome {
    /// The scrip was unspent; it is now spent and this reply is on record.
    Fresh(Vec<u8>),
    /// The same payment was accepted before; this is its reply, unchanged.
    Retry(Vec<u8>),
}

/// Why a spend was refused.
#[derive(Debug)]
pub enum SpendError<E> {
    /// The scrip was spent by a different request (or its reply record is
    /// past the retry window).
    DoubleSpend,
    /// Making the reply failed; nothing changed.
    Reply(E),
    /// The store failed; nothing changed.
    Storage(LedgerError),
}

/// Spent IDs of every issuer a process checks, kept in memory and on disk.
pub struct SpendStore {
    ledger: Ledger,
    table: Table,
    sets: DashMap<VendorName, Arc<SpentSet>>,
    locks: Vec<Mutex<()>>,
    retry_window_secs: u64,
}

impl SpendStore {
    /// Opens the spend table `name` of `ledger` and loads every word into
    /// memory. Reply records are kept for `retry_window_secs`.
    pub fn open(
        ledger: &Ledger,
        name: &str,
        retry_window_secs: u64,
    ) -> Result<SpendStore, LedgerError> {
        let table = ledger.table(name)?;
        let sets: DashMap<VendorName, Arc<SpentSet>> = DashMap::new();
        for entry in table.scan_prefix([WORD_PREFIX]) {
            let (key, value) = entry?;
            let (issuer, series, index) = parse_word_key(&key)
                .ok_or_else(|| LedgerError::storage("load spent IDs", "unreadable word key"))?;
            let word: [u8; 8] = value
                .as_slice()
                .try_into()
                .map_err(|_| LedgerError::storage("load spent IDs", "word of the wrong length"))?;
            let set = sets.entry(issuer).or_default().clone();
            set.load_word(series, index, u64::from_le_bytes(word))
                .map_err(|error| LedgerError::storage("load spent IDs", error))?;
        }
        let locks = (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect();
        Ok(SpendStore {
            ledger: ledger.clone(),
            table,
            sets,
            locks,
            retry_window_secs,
        })
    }

    /// The ledger to [`commit`](Ledger::commit) before answering a spend.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Spends `id` of `issuer` for a request with `fingerprint` (which must
    /// determine the request exactly: the request stamp, or the request
    /// itself when unstamped). `make_reply` runs only for a fresh spend and
    /// only its success changes state. `now_secs` is the current Unix time.
    ///
    /// The caller must commit the ledger before sending the reply.
    pub fn spend<E>(
        &self,
        issuer: &VendorName,
        id: ScripId,
        fingerprint: &[u8],
        now_secs: u64,
        make_reply: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<SpendOutcome, SpendError<E>> {
        let set = self.set(issuer);
        let _guard = self.lock(issuer, id);

        if set.contains(id) {
            return match self.find_reply(issuer, id, fingerprint, now_secs) {
                Ok(Some(reply)) => Ok(SpendOutcome::Retry(reply)),
                Ok(None) => Err(SpendError::DoubleSpend),
                Err(error) => Err(SpendError::Storage(error)),
            };
        }

        let reply = make_reply().map_err(SpendError::Reply)?;
        set.insert(id);
        let mut batch = Batch::default();
        batch.insert(
            word_key(issuer, id.series(), word_index(id)),
            set.word_of(id).to_le_bytes(),
        );
        let mut record = Vec::with_capacity(2 + fingerprint.len() + reply.len());
        record.extend_from_slice(&(fingerprint.len() as u16).to_be_bytes());
        record.extend_from_slice(fingerprint);
        record.extend_from_slice(&reply);
        batch.insert(reply_key(now_secs / 60, issuer, id), record);
        if let Err(error) = self.table.apply(batch) {
            set.remove(id);
            return Err(SpendError::Storage(error));
        }
        Ok(SpendOutcome::Fresh(reply))
    }

    /// Whether `id` of `issuer` is spent.
    pub fn is_spent(&self, issuer: &VendorName, id: ScripId) -> bool {
        self.sets.get(issuer).is_some_and(|set| set.contains(id))
    }

    /// Forgets every spent ID of `series` of `issuer`, in memory and on disk.
    /// Only for series whose scrip can no longer be presented.
    pub fn forget_series(&self, issuer: &VendorName, series: u32) -> Result<(), LedgerError> {
        let mut prefix = issuer_prefix(WORD_PREFIX, issuer);
        prefix.extend_from_slice(&series.to_be_bytes());
        let mut batch = Batch::default();
        for entry in self.table.scan_prefix(&prefix) {
            batch.remove(entry?.0);
        }
        self.table.apply(batch)?;
        if let Some(set) = self.sets.get(issuer) {
            set.forget_series(series);
        }
        Ok(())
    }

    /// Removes reply records older than the retry window; returns how many.
    pub fn prune_replies(&self, now_secs: u64) -> Result<usize, LedgerError> {
        let oldest_kept = (now_secs.saturating_sub(self.retry_window_secs)) / 60;
        let mut batch = Batch::default();
        for entry in self.table.scan_prefix([REPLY_PREFIX]) {
            let (key, _) = entry?;
            match key.get(1..9).and_then(|minute| minute.try_into().ok()) {
                Some(minute) if u64::from_be_bytes(minute) < oldest_kept => batch.remove(key),
                _ => break,
            }
        }
        let removed = batch.len();
        self.table.apply(batch)?;
        Ok(removed)
    }

    /// Spent IDs held in memory, over all issuers.
    pub fn len(&self) -> u64 {
        self.sets.iter().map(|entry| entry.len()).sum()
    }

    /// Whether nothing is spent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate bytes of memory the spent bitmaps use.
    pub fn memory_bytes(&self) -> usize {
        self.sets.iter().map(|entry| entry.memory_bytes()).sum()
    }

    fn set(&self, issuer: &VendorName) -> Arc<SpentSet> {
        if let Some(set) = self.sets.get(issuer) {
            return set.clone();
        }
        self.sets.entry(issuer.clone()).or_default().clone()
    }

    /// The lock of the word holding `id`: all writes of one word are
    /// serialised, so a word written later always holds the bits of one
    /// written earlier.
    fn lock(&self, issuer: &VendorName, id: ScripId) -> std::sync::MutexGuard<'_, ()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (issuer, id.series(), word_index(id)).hash(&mut hasher);
        let stripe = hasher.finish() as usize % LOCK_STRIPES;
        // A panic while holding the lock leaves no half-made state behind
        // (the batch is atomic), so a poisoned lock is safe to take.
        self.locks[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn find_reply(
        &self,
        issuer: &VendorName,
        id: ScripId,
        fingerprint: &[u8],
        now_secs: u64,
    ) -> Result<Option<Vec<u8>>, LedgerError> {
        let newest = now_secs / 60;
        let oldest = now_secs.saturating_sub(self.retry_window_secs) / 60;
        for minute in (oldest..=newest).rev() {
            if let Some(record) = self.table.get(reply_key(minute, issuer, id))? {
                return Ok(matching_reply(&record, fingerprint));
            }
        }
        Ok(None)
    }
}

fn matching_reply(record: &[u8], fingerprint: &[u8]) -> Option<Vec<u8>> {
    let len = u16::from_be_bytes(record.get(..2)?.try_into().ok()?) as usize;
    let stored = record.get(2..2 + len)?;
    let equal = subtle::ConstantTimeEq::ct_eq(stored, fingerprint);
    bool::from(equal).then(|| record[2 + len..].to_vec())
}

fn issuer_prefix(kind: u8, issuer: &VendorName) -> Vec<u8> {
    let name = issuer.as_str().as_bytes();
    let mut key = Vec::with_capacity(2 + name.len() + 16);
    key.push(kind);
    key.push(name.len() as u8);
    key.extend_from_slice(name);
    key
}

fn word_key(issuer: &VendorName, series: u32, index: u32) -> Vec<u8> {
    let mut key = issuer_prefix(WORD_PREFIX, issuer);
    key.extend_from_slice(&series.to_be_bytes());
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn parse_word_key(key: &[u8]) -> Option<(VendorName, u32, u32)> {
    let name_len = *key.get(1)? as usize;
    let name = std::str::from_utf8(key.get(2..2 + name_len)?).ok()?;
    let rest = key.get(2 + name_len..)?;
    if rest.len() != 8 {
        return None;
    }
    let series = u32::from_be_bytes(rest[..4].try_into().ok()?);
    let index = u32::from_be_bytes(rest[4..].try_into().ok()?);
    Some((VendorName::new(name).ok()?, series, index))
}

fn reply_key(minute: u64, issuer: &VendorName, id: ScripId) -> Vec<u8> {
    let name = issuer.as_str().as_bytes();
    let mut key = Vec::with_capacity(1 + 8 + 1 + name.len() + 8);
    key.push(REPLY_PREFIX);
    key.extend_from_slice(&minute.to_be_bytes());
    key.push(name.len() as u8);
    key.extend_from_slice(name);
    key.extend_from_slice(&id.as_u64().to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Durability;

    const NOW: u64 = 1_800_000_000;

    fn vendor() -> VendorName {
        VendorName::new("news.example").unwrap()
    }

    fn reply(bytes: &'static [u8]) -> impl FnOnce() -> Result<Vec<u8>, ()> {
        move || Ok(bytes.to_vec())
    }

    #[tokio::test]
    async fn second_spend_is_a_retry_or_a_double_spend() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let store = SpendStore::open(&ledger, "spends", 600).unwrap();
        let id = ScripId::new(1, 7);

        let first = store.spend(&vendor(), id, b"stamp-a", NOW, reply(b"reply-1"));
        assert_eq!(first.unwrap(), SpendOutcome::Fresh(b"reply-1".to_vec()));
        let again = store.spend(&vendor(), id, b"stamp-a", NOW + 5, reply(b"other"));
        assert_eq!(again.unwrap(), SpendOutcome::Retry(b"reply-1".to_vec()));
        let other = store.spend(&vendor(), id, b"stamp-b", NOW + 5, reply(b"other"));
        assert!(matches!(other, Err(SpendError::DoubleSpend)));
        let late = store.spend(&vendor(), id, b"stamp-a", NOW + 700, reply(b"other"));
        assert!(matches!(late, Err(SpendError::DoubleSpend)));
    }

    #[tokio::test]
    async fn a_failed_reply_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let store = SpendStore::open(&ledger, "spends", 600).unwrap();
        let id = ScripId::new(1, 7);
        let failed = store.spend(&vendor(), id, b"s", NOW, || Err::<Vec<u8>, _>("no"));
        assert!(matches!(failed, Err(SpendError::Reply("no"))));
        assert!(!store.is_spent(&vendor(), id));
        assert!(store.spend(&vendor(), id, b"s", NOW, reply(b"r")).is_ok());
    }

    #[tokio::test]
    async fn spends_and_replies_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<ScripId> = (0..10_000).map(|seq| ScripId::new(3, seq * 3)).collect();
        {
            let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
            let store = SpendStore::open(&ledger, "spends", 600).unwrap();
            for id in &ids {
                store.spend(&vendor(), *id, b"f", NOW, reply(b"r")).unwrap();
            }
            ledger.commit().await.unwrap();
            drop(store);
            ledger.close().await.unwrap();
        }
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let store = SpendStore::open(&ledger, "spends", 600).unwrap();
        assert_eq!(store.len(), ids.len() as u64);
        assert!(ids.iter().all(|id| store.is_spent(&vendor(), *id)));
        assert!(!store.is_spent(&vendor(), ScripId::new(3, 1)));
        let retry = store
            .spend(&vendor(), ids[5], b"f", NOW + 1, reply(b"x"))
            .unwrap();
        assert_eq!(retry, SpendOutcome::Retry(b"r".to_vec()));
    }

    #[tokio::test]
    async fn concurrent_spends_of_one_id_accept_exactly_one() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let store = Arc::new(SpendStore::open(&ledger, "spends", 600).unwrap());
        let mut threads = Vec::new();
        for thread in 0..8u8 {
            let store = store.clone();
            threads.push(std::thread::spawn(move || {
                (0..500u32)
                    .filter(|seq| {
                        let fingerprint = [thread];
                        let id = ScripId::new(9, *seq);
                        store
                            .spend(&vendor(), id, &fingerprint, NOW, reply(b"r"))
                            .is_ok()
                    })
                    .count()
            }));
        }
        let accepted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(accepted, 500);
    }

    #[tokio::test]
    async fn old_replies_are_pruned_and_series_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let store = SpendStore::open(&ledger, "spends", 600).unwrap();
        store
            .spend(&vendor(), ScripId::new(1, 1), b"f", NOW, reply(b"r"))
            .unwrap();
        store
            .spend(&vendor(), ScripId::new(2, 1), b"f", NOW + 600, reply(b"r"))
            .unwrap();
        assert_eq!(store.prune_replies(NOW + 700).unwrap(), 1);
        store.forget_series(&vendor(), 1).unwrap();
        assert!(!store.is_spent(&vendor(), ScripId::new(1, 1)));
        assert!(store.is_spent(&vendor(), ScripId::new(2, 1)));
    }
}
