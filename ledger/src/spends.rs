//! Durable spent IDs and the replies kept for retries.
//!
//! Safety critical: this is the one place that decides whether a piece of
//! scrip has been spent, for the vendor node (vendor scrip) and the broker
//! (broker scrip) alike.
//!
//! # Design
//!
//! Memory holds a [`SpentSet`] per issuer: a bitmap per series, about one bit
//! per issued ID#. The store holds two things:
//!
//! - **segments**: tables of *spend records*, one per spend, keyed by issuer
//!   and ID# and holding a fingerprint of the request and the reply sent. A
//!   new segment starts every few seconds; the newest is the active one.
//!   Records serve retries for the retry window and, until a checkpoint
//!   covers them, are the durable truth about which IDs are spent.
//! - a **checkpoint**: the bitmaps, as chunks of [`CHUNK_BITS`] bits, that
//!   hold every ID# spent in segments up to a marker.
//!
//! A spend runs under the lock of the bitmap word holding its ID#: if the
//! bit is set the payment is a retry (a record with the same fingerprint
//! exists) or a double spend; otherwise the reply is made, the record is
//! written to the active segment, and only then the bit is set. A spend
//! thus writes one small record with nearly increasing keys, which is cheap
//! for the store, and never rewrites the bitmap.
//!
//! When the active segment is a few seconds old the next spend starts a new
//! one before writing its record, and folds the closed segment's bits into
//! the checkpoint in one atomic batch with the new marker. Every record is
//! therefore dated before its segment's start plus `SEGMENT_SECS`, and no
//! later than the start of the next segment: that bounds the age of a
//! segment's records when looking for a reply or dropping old segments.
//! Segments are dropped whole once they are past the retry window and
//! covered by a flushed checkpoint. On open, the checkpoint is loaded and
//! the few segments after its marker are replayed, so a restart reads a few
//! seconds of records, not the whole history.
//!
//! The caller answers only after [`Ledger::commit`](crate::Ledger::commit)
//! has returned: a spend answered as accepted is durable. A crash after the
//! record is written and before the answer leaves the scrip spent *and* its
//! reply on record, so the customer's retry gets the reply. The store
//! recovers a prefix of its writes, so a checkpoint that survives a crash
//! implies the segment records it covers survived too.
//!
//! # Keys
//!
//! - segment table `NAME-segment-N-START` (N and START, the Unix second it
//!   started, as 20 decimal digits): `issuer length (1) ‖ issuer ‖ ID# (8)` →
//!   `fingerprint length (2) ‖ fingerprint ‖ reply`
//! - table `NAME`: `c ‖ issuer length (1) ‖ issuer ‖ series (4) ‖ chunk (4)` →
//!   512 bytes, bit `i` of byte `j` being sequence number
//!   `4096 × chunk + 8 × j + i`; and `m` → the marker, the number of the last
//!   segment folded in (8 bytes).

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};

use dashmap::DashMap;
use millicent_core::spent::{CHUNK_BITS, word_index};
use millicent_core::{ScripId, SpentSet, VendorName};

use crate::{Batch, Ledger, LedgerError, Table, Writes};

const LOCK_STRIPES: usize = 1024;
/// How long a segment is the active one. A restart replays at most about
/// twice this much of spends.
const SEGMENT_SECS: u64 = 5;
const CHUNK_PREFIX: u8 = b'c';
const MARKER_KEY: &[u8] = b"m";
const CHUNK_WORDS: usize = CHUNK_BITS as usize / 64;

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

/// One table of spend records.
struct Segment {
    number: u64,
    started_at: u64,
    name: String,
    table: Table,
}

/// Bits set by the spends of one segment in one chunk, not yet in the
/// checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct DirtyChunk {
    segment: u64,
    issuer: VendorName,
    series: u32,
    chunk: u32,
}

/// Spent IDs of every issuer a process checks, kept in memory and on disk.
pub struct SpendStore {
    ledger: Ledger,
    name: String,
    checkpoint: Table,
    sets: DashMap<VendorName, Arc<SpentSet>>,
    locks: Vec<Mutex<()>>,
    retry_window_secs: u64,
    /// Oldest first; the last is the active segment. Spends hold the read
    /// lock while they write, so a segment is closed only when no spend is
    /// still writing to it.
    segments: RwLock<Vec<Arc<Segment>>>,
    dirty: DashMap<DirtyChunk, Box<[u64; CHUNK_WORDS]>>,
    /// Number of the last segment folded into the checkpoint.
    folded: Mutex<u64>,
}

impl SpendStore {
    /// Opens the spend tables `name` of `ledger`: loads the checkpoint,
    /// replays the segments written since, and starts a new active
    /// segment. Reply records are kept for `retry_window_secs`.
    pub fn open(
        ledger: &Ledger,
        name: &str,
        retry_window_secs: u64,
    ) -> Result<SpendStore, LedgerError> {
        let checkpoint = ledger.table(name)?;
        let sets: DashMap<VendorName, Arc<SpentSet>> = DashMap::new();
        for entry in checkpoint.scan_prefix([CHUNK_PREFIX]) {
            let (key, value) = entry?;
            let (issuer, series, chunk) =
                parse_chunk_key(&key).ok_or_else(|| corrupt("unreadable checkpoint key"))?;
            let words = chunk_words(&value)
                .ok_or_else(|| corrupt("checkpoint chunk of the wrong length"))?;
            let set = sets.entry(issuer).or_default().clone();
            for (i, word) in words.iter().enumerate().filter(|(_, word)| **word != 0) {
                let index = chunk * (CHUNK_WORDS as u32) + i as u32;
                set.load_word(series, index, *word)
                    .map_err(|error| corrupt(error.to_string()))?;
            }
        }
        let folded = match checkpoint.get(MARKER_KEY)? {
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt("unreadable checkpoint marker"))?,
            ),
            None => 0,
        };

        let prefix = format!("{name}-segment-");
        let mut found: Vec<(u64, u64, String)> = ledger
            .table_names()
            .into_iter()
            .filter_map(|table| {
                let (number, started_at) = parse_segment_name(table.strip_prefix(&prefix)?)?;
                Some((number, started_at, table))
            })
            .collect();
        found.sort();
        let mut segments = Vec::new();
        let dirty = DashMap::new();
        for (number, started_at, table_name) in found {
            let table = ledger.table(&table_name)?;
            if number > folded {
                for entry in table.scan_prefix([]) {
                    let (key, _) = entry?;
                    let (issuer, id) = parse_record_key(&key)
                        .ok_or_else(|| corrupt("unreadable spend record key"))?;
                    sets.entry(issuer.clone()).or_default().insert(id);
                    mark_dirty(&dirty, number, &issuer, id);
                }
            }
            segments.push(Arc::new(Segment {
                number,
                started_at,
                name: table_name,
                table,
            }));
        }

        let last = segments
            .last()
            .map_or(folded, |segment| segment.number.max(folded));
        let store = SpendStore {
            ledger: ledger.clone(),
            name: name.to_owned(),
            checkpoint,
            sets,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            retry_window_secs,
            segments: RwLock::new(segments),
            dirty,
            folded: Mutex::new(folded),
        };
        let newest_start = store
            .segments
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .last()
            .map_or(0, |segment| segment.started_at);
        // The store reads no clock. The newest segment's records are dated
        // before its start plus SEGMENT_SECS, so the new segment starts
        // then: the records stay within the bound of the next start, and a
        // retry of any of them finds its reply for the whole retry window.
        store.start_segment(last + 1, newest_start.saturating_add(SEGMENT_SECS))?;
        store.fold_through(last)?;
        Ok(store)
    }

    /// The ledger to [`commit`](Ledger::commit) before answering a spend.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Spends `id` of `issuer` for a request with `fingerprint` (which must
    /// determine the request exactly). `make_reply` runs only for a fresh
    /// spend and only its success changes state. `now_secs` is the current
    /// Unix time.
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
        self.spend_inner(issuer, id, fingerprint, now_secs, || {
            make_reply().map(|reply| (reply, None))
        })
    }

    /// As [`SpendStore::spend`], where making the reply also yields writes
    /// to other tables of the same ledger (a journal entry, a balance) that
    /// must happen exactly when the spend does: they are applied in one
    /// atomic write with the spend record, so after a crash either the
    /// spend and all of them are there, or none is.
    pub fn spend_with<E>(
        &self,
        issuer: &VendorName,
        id: ScripId,
        fingerprint: &[u8],
        now_secs: u64,
        make_reply: impl FnOnce() -> Result<(Vec<u8>, Writes), E>,
    ) -> Result<SpendOutcome, SpendError<E>> {
        self.spend_inner(issuer, id, fingerprint, now_secs, || {
            make_reply().map(|(reply, writes)| (reply, Some(writes)))
        })
    }

    fn spend_inner<E>(
        &self,
        issuer: &VendorName,
        id: ScripId,
        fingerprint: &[u8],
        now_secs: u64,
        make_reply: impl FnOnce() -> Result<(Vec<u8>, Option<Writes>), E>,
    ) -> Result<SpendOutcome, SpendError<E>> {
        let set = self.set(issuer);
        let guard = self.lock(issuer, id);

        if set.contains(id) {
            return match self.find_reply(issuer, id, fingerprint, now_secs) {
                Ok(Some(reply)) => Ok(SpendOutcome::Retry(reply)),
                Ok(None) => Err(SpendError::DoubleSpend),
                Err(error) => Err(SpendError::Storage(error)),
            };
        }

        let (reply, mut with) = make_reply().map_err(SpendError::Reply)?;
        let mut record = Vec::with_capacity(2 + fingerprint.len() + reply.len());
        record.extend_from_slice(&(fingerprint.len() as u16).to_be_bytes());
        record.extend_from_slice(fingerprint);
        record.extend_from_slice(&reply);
        let mut failed_rotation = None;
        loop {
            {
                let segments = self
                    .segments
                    .read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let Some(active) = segments.last() else {
                    return Err(SpendError::Storage(corrupt("no active segment")));
                };
                if now_secs < active.started_at.saturating_add(SEGMENT_SECS) {
                    // The record first: whoever sees the bit can find the record.
                    let written = match with.take() {
                        None => active.table.insert(record_key(issuer, id), record),
                        Some(mut writes) => {
                            writes.insert(&active.table, record_key(issuer, id), record);
                            self.ledger.apply(writes)
                        }
                    };
                    written.map_err(SpendError::Storage)?;
                    set.insert(id);
                    mark_dirty(&self.dirty, active.number, issuer, id);
                    break;
                }
            }
            // The active segment is too old to date this record: start a
            // new one first. If that failed, nothing was written.
            if let Some(error) = failed_rotation {
                return Err(SpendError::Storage(error));
            }
            if let Err(error) = self.rotate(now_secs) {
                // A new segment may have started with only the fold into
                // the checkpoint failing; that merely delays the checkpoint.
                tracing::error!(%error, "could not start a new spend segment");
                failed_rotation = Some(error);
            }
        }
        drop(guard);
        Ok(SpendOutcome::Fresh(reply))
    }

    /// Whether `id` of `issuer` is spent.
    pub fn is_spent(&self, issuer: &VendorName, id: ScripId) -> bool {
        self.sets.get(issuer).is_some_and(|set| set.contains(id))
    }

    /// Up to `max_words` words of the spent-ID bitmap of `series` of
    /// `issuer`, from word `first_word` on (bit `i` of word `w` is sequence
    /// number `64 × w + i`); trailing zero words are left out. This reads
    /// the bits in memory, which include spends not yet committed: commit
    /// the ledger before telling anyone what they say.
    pub fn spent_words(
        &self,
        issuer: &VendorName,
        series: u32,
        first_word: u32,
        max_words: usize,
    ) -> Vec<u64> {
        self.sets.get(issuer).map_or_else(Vec::new, |set| {
            set.series_words(series, first_word, max_words)
        })
    }

    /// The series of `issuer` with at least one spent ID.
    pub fn spent_series(&self, issuer: &VendorName) -> Vec<u32> {
        self.sets
            .get(issuer)
            .map_or_else(Vec::new, |set| set.series())
    }

    /// Forgets every spent ID of `series` of `issuer`, in memory and in the
    /// checkpoint. Only for series whose scrip can no longer be presented.
    pub fn forget_series(&self, issuer: &VendorName, series: u32) -> Result<(), LedgerError> {
        let _folding = self
            .folded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut prefix = issuer_prefix(CHUNK_PREFIX, issuer);
        prefix.extend_from_slice(&series.to_be_bytes());
        let mut batch = Batch::default();
        for entry in self.checkpoint.scan_prefix(&prefix) {
            batch.remove(entry?.0);
        }
        self.checkpoint.apply(batch)?;
        self.dirty
            .retain(|key, _| !(key.issuer == *issuer && key.series == series));
        if let Some(set) = self.sets.get(issuer) {
            set.forget_series(series);
        }
        Ok(())
    }

    /// Starts a new segment if the active one is old, and drops segments
    /// whose records are all past the retry window; returns how many were
    /// dropped.
    pub fn prune_replies(&self, now_secs: u64) -> Result<usize, LedgerError> {
        self.rotate(now_secs)?;
        let folded = *self
            .folded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let expired: Vec<Arc<Segment>> = {
            let segments = self
                .segments
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            segments
                .windows(2)
                .filter(|pair| {
                    pair[0].number <= folded
                        && pair[1].started_at.saturating_add(self.retry_window_secs) < now_secs
                })
                .map(|pair| pair[0].clone())
                .collect()
        };
        if expired.is_empty() {
            return Ok(0);
        }
        // The checkpoint covering these segments must be on disk before
        // they go.
        self.ledger.flush_blocking()?;
        self.segments
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|segment| !expired.iter().any(|gone| gone.number == segment.number));
        for segment in &expired {
            self.ledger.drop_table(&segment.name)?;
        }
        Ok(expired.len())
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

    /// The lock of the word holding `id`: the test and the set of its bit
    /// and the record of the spend happen under it, so of two spends of one
    /// ID# exactly one is fresh.
    fn lock(&self, issuer: &VendorName, id: ScripId) -> std::sync::MutexGuard<'_, ()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (issuer, id.series(), word_index(id)).hash(&mut hasher);
        let stripe = hasher.finish() as usize % LOCK_STRIPES;
        // A panic while holding the lock leaves no half-made state behind
        // (each write is atomic), so a poisoned lock is safe to take.
        self.locks[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn start_segment(&self, number: u64, started_at: u64) -> Result<(), LedgerError> {
        let name = format!("{}-segment-{number:020}-{started_at:020}", self.name);
        let table = self.ledger.table(&name)?;
        self.segments
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Arc::new(Segment {
                number,
                started_at,
                name,
                table,
            }));
        Ok(())
    }

    /// Closes the active segment if it is old enough, and folds it into
    /// the checkpoint.
    fn rotate(&self, now_secs: u64) -> Result<(), LedgerError> {
        let closed = {
            let mut segments = self
                .segments
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let Some(active) = segments.last() else {
                return Err(corrupt("no active segment"));
            };
            if now_secs < active.started_at.saturating_add(SEGMENT_SECS) {
                return Ok(());
            }
            let closed = active.number;
            let name = format!("{}-segment-{:020}-{now_secs:020}", self.name, closed + 1);
            let table = self.ledger.table(&name)?;
            segments.push(Arc::new(Segment {
                number: closed + 1,
                started_at: now_secs,
                name,
                table,
            }));
            closed
        };
        self.fold_through(closed)
    }

    /// Folds the bits of every closed segment up to `last` into the
    /// checkpoint, one atomic batch per segment, in order.
    fn fold_through(&self, last: u64) -> Result<(), LedgerError> {
        let mut folded = self
            .folded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while *folded < last {
            let segment = *folded + 1;
            let keys: Vec<DirtyChunk> = self
                .dirty
                .iter()
                .filter(|entry| entry.key().segment == segment)
                .map(|entry| entry.key().clone())
                .collect();
            let mut batch = Batch::default();
            for key in &keys {
                let Some(bits) = self.dirty.get(key).map(|bits| bits.clone()) else {
                    continue;
                };
                let chunk_key = chunk_key(&key.issuer, key.series, key.chunk);
                let mut words = match self.checkpoint.get(&chunk_key)? {
                    Some(bytes) => chunk_words(&bytes)
                        .ok_or_else(|| corrupt("checkpoint chunk of the wrong length"))?,
                    None => [0u64; CHUNK_WORDS],
                };
                for (word, new) in words.iter_mut().zip(bits.iter()) {
                    *word |= new;
                }
                batch.insert(chunk_key, chunk_bytes(&words));
            }
            batch.insert(MARKER_KEY, segment.to_be_bytes());
            self.checkpoint.apply(batch)?;
            for key in &keys {
                self.dirty.remove(key);
            }
            *folded = segment;
        }
        Ok(())
    }

    fn find_reply(
        &self,
        issuer: &VendorName,
        id: ScripId,
        fingerprint: &[u8],
        now_secs: u64,
    ) -> Result<Option<Vec<u8>>, LedgerError> {
        let oldest = now_secs.saturating_sub(self.retry_window_secs);
        let key = record_key(issuer, id);
        let segments = self
            .segments
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // A segment's records are dated no later than the start of the next
        // one, and the active segment's before its start plus SEGMENT_SECS;
        // look only where the window reaches.
        let active_ends = segments
            .last()
            .map_or(0, |active| active.started_at.saturating_add(SEGMENT_SECS));
        let ends = segments
            .iter()
            .skip(1)
            .map(|next| next.started_at)
            .chain(std::iter::once(active_ends));
        let live: Vec<&Arc<Segment>> = segments
            .iter()
            .zip(ends)
            .filter(|(_, ends_at)| *ends_at >= oldest)
            .map(|(segment, _)| segment)
            .collect();
        for segment in live.into_iter().rev() {
            if let Some(record) = segment.table.get(&key)? {
                return Ok(matching_reply(&record, fingerprint));
            }
        }
        Ok(None)
    }
}

fn mark_dirty(
    dirty: &DashMap<DirtyChunk, Box<[u64; CHUNK_WORDS]>>,
    segment: u64,
    issuer: &VendorName,
    id: ScripId,
) {
    let key = DirtyChunk {
        segment,
        issuer: issuer.clone(),
        series: id.series(),
        chunk: id.seq() / CHUNK_BITS,
    };
    let within = id.seq() % CHUNK_BITS;
    dirty
        .entry(key)
        .or_insert_with(|| Box::new([0; CHUNK_WORDS]))[(within / 64) as usize] |=
        1u64 << (within % 64);
}

fn corrupt(detail: impl std::fmt::Display) -> LedgerError {
    LedgerError::storage("read spent IDs", detail)
}

fn matching_reply(record: &[u8], fingerprint: &[u8]) -> Option<Vec<u8>> {
    let len = u16::from_be_bytes(record.get(..2)?.try_into().ok()?) as usize;
    let stored = record.get(2..2 + len)?;
    let equal = subtle::ConstantTimeEq::ct_eq(stored, fingerprint);
    bool::from(equal).then(|| record[2 + len..].to_vec())
}

fn issuer_prefix(kind: u8, issuer: &VendorName) -> Vec<u8> {
    let name = issuer.as_str().as_bytes();
    let mut key = Vec::with_capacity(2 + name.len() + 8);
    key.push(kind);
    key.push(name.len() as u8);
    key.extend_from_slice(name);
    key
}

fn chunk_key(issuer: &VendorName, series: u32, chunk: u32) -> Vec<u8> {
    let mut key = issuer_prefix(CHUNK_PREFIX, issuer);
    key.extend_from_slice(&series.to_be_bytes());
    key.extend_from_slice(&chunk.to_be_bytes());
    key
}

fn parse_chunk_key(key: &[u8]) -> Option<(VendorName, u32, u32)> {
    let name_len = *key.get(1)? as usize;
    let name = std::str::from_utf8(key.get(2..2 + name_len)?).ok()?;
    let rest = key.get(2 + name_len..)?;
    if rest.len() != 8 {
        return None;
    }
    let series = u32::from_be_bytes(rest[..4].try_into().ok()?);
    let chunk = u32::from_be_bytes(rest[4..].try_into().ok()?);
    Some((VendorName::new(name).ok()?, series, chunk))
}

fn chunk_words(bytes: &[u8]) -> Option<[u64; CHUNK_WORDS]> {
    if bytes.len() != CHUNK_WORDS * 8 {
        return None;
    }
    let mut words = [0u64; CHUNK_WORDS];
    for (word, raw) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        *word = u64::from_le_bytes(raw.try_into().ok()?);
    }
    Some(words)
}

fn chunk_bytes(words: &[u64; CHUNK_WORDS]) -> Vec<u8> {
    words.iter().flat_map(|word| word.to_le_bytes()).collect()
}

fn record_key(issuer: &VendorName, id: ScripId) -> Vec<u8> {
    let name = issuer.as_str().as_bytes();
    let mut key = Vec::with_capacity(1 + name.len() + 8);
    key.push(name.len() as u8);
    key.extend_from_slice(name);
    key.extend_from_slice(&id.as_u64().to_be_bytes());
    key
}

fn parse_record_key(key: &[u8]) -> Option<(VendorName, ScripId)> {
    let name_len = *key.first()? as usize;
    let name = std::str::from_utf8(key.get(1..1 + name_len)?).ok()?;
    let id = key.get(1 + name_len..)?;
    let id = u64::from_be_bytes(id.try_into().ok()?);
    Some((VendorName::new(name).ok()?, ScripId::from_u64(id)))
}

fn parse_segment_name(rest: &str) -> Option<(u64, u64)> {
    let (number, started_at) = rest.split_once('-')?;
    Some((number.parse().ok()?, started_at.parse().ok()?))
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
    async fn a_spend_with_writes_lands_with_its_record_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let journal_key = b"entry".to_vec();
        {
            let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
            let store = SpendStore::open(&ledger, "spends", 600).unwrap();
            let journal = ledger.table("journal").unwrap();
            let with_entry = |reply: &'static [u8]| {
                let journal = journal.clone();
                let key = journal_key.clone();
                move || {
                    let mut writes = Writes::new();
                    writes.insert(&journal, key, reply);
                    Ok::<_, ()>((reply.to_vec(), writes))
                }
            };
            let id = ScripId::new(1, 3);
            let first = store.spend_with(&vendor(), id, b"f", NOW, with_entry(b"r1"));
            assert_eq!(first.unwrap(), SpendOutcome::Fresh(b"r1".to_vec()));
            assert_eq!(journal.get(&journal_key).unwrap(), Some(b"r1".to_vec()));
            // A retry makes no reply, so it writes nothing either.
            let again = store.spend_with(&vendor(), id, b"f", NOW, with_entry(b"r2"));
            assert_eq!(again.unwrap(), SpendOutcome::Retry(b"r1".to_vec()));
            assert_eq!(journal.get(&journal_key).unwrap(), Some(b"r1".to_vec()));
            let refused = store.spend_with(&vendor(), ScripId::new(1, 4), b"f", NOW, || {
                Err::<(Vec<u8>, Writes), _>("no")
            });
            assert!(matches!(refused, Err(SpendError::Reply("no"))));
            assert!(!store.is_spent(&vendor(), ScripId::new(1, 4)));
            assert_eq!(store.spent_words(&vendor(), 1, 0, 4), [1 << 3]);
            assert_eq!(store.spent_series(&vendor()), [1]);
            ledger.commit().await.unwrap();
            drop((store, journal));
            ledger.close().await.unwrap();
        }
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let store = SpendStore::open(&ledger, "spends", 600).unwrap();
        assert!(store.is_spent(&vendor(), ScripId::new(1, 3)));
        let journal = ledger.table("journal").unwrap();
        assert_eq!(journal.get(&journal_key).unwrap(), Some(b"r1".to_vec()));
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
    async fn old_segments_are_dropped_and_their_spends_stay_spent() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
            let store = SpendStore::open(&ledger, "spends", 600).unwrap();
            store
                .spend(&vendor(), ScripId::new(1, 1), b"f", NOW, reply(b"r"))
                .unwrap();
            store
                .spend(&vendor(), ScripId::new(2, 1), b"f", NOW + 600, reply(b"r"))
                .unwrap();
            let retry = store.spend(&vendor(), ScripId::new(2, 1), b"f", NOW + 700, reply(b"x"));
            assert_eq!(retry.unwrap(), SpendOutcome::Retry(b"r".to_vec()));
            assert!(store.prune_replies(NOW + 1300).unwrap() >= 1);

            // Past the window the record is gone: a retry is a double spend.
            let late = store.spend(&vendor(), ScripId::new(1, 1), b"f", NOW + 1300, reply(b"x"));
            assert!(matches!(late, Err(SpendError::DoubleSpend)));
            store.forget_series(&vendor(), 2).unwrap();
            drop(store);
            ledger.close().await.unwrap();
        }
        // The checkpoint still holds series 1; series 2 was forgotten.
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let store = SpendStore::open(&ledger, "spends", 600).unwrap();
        assert!(store.is_spent(&vendor(), ScripId::new(1, 1)));
        assert!(!store.is_spent(&vendor(), ScripId::new(2, 1)));
    }

    #[tokio::test]
    async fn a_retry_after_a_restart_gets_its_reply_for_the_whole_window() {
        let dir = tempfile::tempdir().unwrap();
        let late = ScripId::new(1, 2);
        {
            let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
            let store = SpendStore::open(&ledger, "spends", 600).unwrap();
            store
                .spend(&vendor(), ScripId::new(1, 1), b"f", NOW, reply(b"r"))
                .unwrap();
            // Later than its segment's start, in the segment still active
            // when the store closes.
            store
                .spend(&vendor(), late, b"f", NOW + 2, reply(b"r2"))
                .unwrap();
            drop(store);
            ledger.close().await.unwrap();
        }
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let store = SpendStore::open(&ledger, "spends", 600).unwrap();
        store.prune_replies(NOW + 602).unwrap();
        let retry = store.spend(&vendor(), late, b"f", NOW + 602, reply(b"x"));
        assert_eq!(retry.unwrap(), SpendOutcome::Retry(b"r2".to_vec()));
    }

    #[tokio::test]
    async fn spends_of_a_segment_not_yet_folded_are_replayed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<ScripId> = (0..300).map(|seq| ScripId::new(4, seq * 7)).collect();
        {
            let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
            let store = SpendStore::open(&ledger, "spends", 600).unwrap();
            // Half in a segment that is folded in, half in the active one.
            for (i, id) in ids.iter().enumerate() {
                let now = if i < 150 { NOW } else { NOW + 10 };
                store.spend(&vendor(), *id, b"f", now, reply(b"r")).unwrap();
            }
            ledger.commit().await.unwrap();
            drop(store);
            ledger.close().await.unwrap();
        }
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let store = SpendStore::open(&ledger, "spends", 600).unwrap();
        assert_eq!(store.len(), 300);
        assert!(ids.iter().all(|id| store.is_spent(&vendor(), *id)));
        let retry = store
            .spend(&vendor(), ids[299], b"f", NOW + 11, reply(b"x"))
            .unwrap();
        assert_eq!(retry, SpendOutcome::Retry(b"r".to_vec()));
    }
}
