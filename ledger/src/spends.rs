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
//! - **segments**: tables of *spend records*, one per spend, holding the
//!   ID#, a fingerprint of the request and the reply sent. A new segment
//!   starts every few seconds; the newest is the active one. Records serve
//!   retries for the retry window and, until a checkpoint covers them, are
//!   the durable truth about which IDs are spent.
//! - a **checkpoint**: the bitmaps, as chunks of [`CHUNK_BITS`] bits, that
//!   hold every ID# spent in segments up to a marker.
//!
//! A spend runs under the lock of the bitmap word holding its ID#: if the
//! bit is set the payment is a retry (a record with the same fingerprint
//! exists) or a double spend; otherwise the reply is made, the record is
//! *staged* in memory, and only then the bit is set.
//!
//! # Staged records and group writes
//!
//! The store's cost is per write, not per byte, so records are not written
//! one by one. Staged records wait, grouped by *bucket* (issuer, series and
//! [`BUCKET_BITS`] high bits of the sequence number), until the ledger's
//! next flush: the group commit first writes every bucket staged since the
//! last one as one value, keyed `bucket ‖ group number`, then flushes. A
//! flush shared by hundreds of payments thus also shares their writes, and
//! payments whose IDs are near each other (change handed out in order)
//! share a key. A caller answers only after
//! [`Ledger::commit`](crate::Ledger::commit) has returned, and that commit
//! covers every record staged before it was called, so an answered spend is
//! durable.
//!
//! A spend whose reply comes with writes to other tables (a journal entry,
//! a balance) that must land exactly when the spend does, made by
//! [`SpendStore::spend_with`], is not staged: its record is written at once
//! under a group number of its own, in one atomic write with those writes.
//!
//! A retry looks for its record in the staged buckets first, then in the
//! ones being written, then in the store. A group being written stays
//! visible in memory until its write has returned, so a record is always
//! in at least one of the places looked in. A failed write puts its group
//! back, to be written by the next flush; until then its spends' retries
//! are answered from memory and wait for that flush like any other.
//!
//! # Segments and the checkpoint
//!
//! When the active segment is a few seconds old the next spend starts a new
//! one, writes out everything staged (so that the closed segment is
//! complete in the store), and folds the closed segment's bits into the
//! checkpoint in one atomic batch with the new marker. Every record is
//! therefore dated before its segment's start plus `SEGMENT_SECS`, and no
//! later than the start of the next segment: that bounds the age of a
//! segment's records when looking for a reply or dropping old segments.
//! Segments are dropped whole once they are past the retry window and
//! covered by a flushed checkpoint. On open, the checkpoint is loaded and
//! the few segments after its marker are replayed, so a restart reads a few
//! seconds of records, not the whole history. The store recovers a prefix
//! of its writes, and a segment's records are written before the checkpoint
//! that covers it, so a checkpoint that survives a crash implies the
//! records it covers survived too.
//!
//! A crash after a record is staged and before the answer leaves may lose
//! the record and the spend with it: the scrip is unspent again, and the
//! customer, who got no answer, pays again with it. A crash after the
//! write and before the answer leaves the scrip spent *and* its reply on
//! record, so the customer's retry gets the reply.
//!
//! # Keys
//!
//! - segment table `NAME-segment-N-START` (N and START, the Unix second it
//!   started, as 20 decimal digits): `issuer length (1) ‖ issuer ‖ series (4)
//!   ‖ bucket (4) ‖ group (8)` → records, each `sequence (4) ‖ fingerprint
//!   length (2) ‖ fingerprint ‖ reply length (4) ‖ reply`
//! - table `NAME`: `c ‖ issuer length (1) ‖ issuer ‖ series (4) ‖ chunk (4)` →
//!   512 bytes, bit `i` of byte `j` being sequence number
//!   `4096 × chunk + 8 × j + i`; and `m` → the marker, the number of the last
//!   segment folded in (8 bytes).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};

use dashmap::DashMap;
use millicent_core::spent::{CHUNK_BITS, word_index};
use millicent_core::{ScripId, SpentSet, VendorName};

use crate::commit::Staged;
use crate::{Batch, Ledger, LedgerError, Table, Writes};

const LOCK_STRIPES: usize = 1024;
/// How long a segment is the active one. A restart replays at most about
/// twice this much of spends.
const SEGMENT_SECS: u64 = 5;
/// Sequence numbers of one bucket: `2^BUCKET_BITS`, a quarter of a chunk.
const BUCKET_BITS: u32 = 10;
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

/// Where a record is staged: its segment and its bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BucketKey {
    segment: u64,
    issuer: VendorName,
    series: u32,
    bucket: u32,
}

impl BucketKey {
    fn of(segment: u64, issuer: &VendorName, id: ScripId) -> BucketKey {
        BucketKey {
            segment,
            issuer: issuer.clone(),
            series: id.series(),
            bucket: id.seq() >> BUCKET_BITS,
        }
    }
}

/// Staged records by bucket, each bucket's records concatenated.
type Group = HashMap<BucketKey, Vec<u8>>;

/// Records not yet known to be in the store.
#[derive(Default)]
struct Staging {
    /// Records staged since the last write began.
    current: Group,
    /// Groups being written; each leaves only once its write has returned.
    writing: Vec<Arc<Group>>,
}

/// The histogram of store keys written per group of staged spend records.
const SPEND_GROUP_BUCKETS: &str = "millicent_ledger_spend_group_buckets";

/// Describes the metrics a [`SpendStore`] records to the installed
/// recorder, so that every process keeping one exports them with their
/// help text.
pub fn describe_spend_metrics() {
    metrics::describe_histogram!(
        SPEND_GROUP_BUCKETS,
        "Store keys written per group of staged spend records (fewer than the spends in it \
         when their ID#s are neighbours)"
    );
}

/// Spent IDs of every issuer a process checks, kept in memory and on disk.
pub struct SpendStore {
    inner: Arc<Inner>,
}

struct Inner {
    ledger: Ledger,
    name: String,
    checkpoint: Table,
    sets: DashMap<VendorName, Arc<SpentSet>>,
    locks: Vec<Mutex<()>>,
    retry_window_secs: u64,
    /// Oldest first; the last is the active segment. Spends hold the read
    /// lock while they stage, so a segment is closed only when no spend is
    /// still staging into it.
    segments: RwLock<Vec<Arc<Segment>>>,
    dirty: DashMap<DirtyChunk, Box<[u64; CHUNK_WORDS]>>,
    /// Number of the last segment folded into the checkpoint.
    folded: Mutex<u64>,
    staging: Mutex<Staging>,
    /// Serialises writes of staged groups; holds the next group number,
    /// unique within a segment because every open starts a new segment.
    writer: Mutex<u64>,
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
                    let (key, value) = entry?;
                    let (issuer, series) = parse_group_key(&key)
                        .ok_or_else(|| corrupt("unreadable spend record key"))?;
                    let set = sets.entry(issuer.clone()).or_default().clone();
                    for record in Records::new(&value) {
                        let id = ScripId::new(series, record?.seq);
                        set.insert(id);
                        mark_dirty(&dirty, number, &issuer, id);
                    }
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
        let inner = Arc::new(Inner {
            ledger: ledger.clone(),
            name: name.to_owned(),
            checkpoint,
            sets,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            retry_window_secs,
            segments: RwLock::new(segments),
            dirty,
            folded: Mutex::new(folded),
            staging: Mutex::new(Staging::default()),
            writer: Mutex::new(0),
        });
        let newest_start = inner
            .read_segments()
            .last()
            .map_or(0, |segment| segment.started_at);
        // The store reads no clock. The newest segment's records are dated
        // before its start plus SEGMENT_SECS, so the new segment starts
        // then: the records stay within the bound of the next start, and a
        // retry of any of them finds its reply for the whole retry window.
        inner.start_segment(last + 1, newest_start.saturating_add(SEGMENT_SECS))?;
        inner.fold_through(last)?;
        let staged: Arc<dyn Staged> = inner.clone();
        ledger.register_staged(Arc::downgrade(&staged));
        Ok(SpendStore { inner })
    }

    /// The ledger to [`commit`](Ledger::commit) before answering a spend.
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    /// Spends `id` of `issuer` for a request with `fingerprint` (which must
    /// determine the request exactly). `make_reply` runs only for a fresh
    /// spend and only its success changes state. `now_secs` is the current
    /// Unix time.
    ///
    /// The caller must commit the ledger before sending the reply, fresh or
    /// retried: the record may still be staged.
    pub fn spend<E>(
        &self,
        issuer: &VendorName,
        id: ScripId,
        fingerprint: &[u8],
        now_secs: u64,
        make_reply: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<SpendOutcome, SpendError<E>> {
        self.inner
            .spend(issuer, id, fingerprint, now_secs, make_reply)
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
        self.inner
            .spend_with(issuer, id, fingerprint, now_secs, make_reply)
    }

    /// Whether `id` of `issuer` is spent.
    pub fn is_spent(&self, issuer: &VendorName, id: ScripId) -> bool {
        self.inner
            .sets
            .get(issuer)
            .is_some_and(|set| set.contains(id))
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
        self.inner.sets.get(issuer).map_or_else(Vec::new, |set| {
            set.series_words(series, first_word, max_words)
        })
    }

    /// The series of `issuer` with at least one spent ID.
    pub fn spent_series(&self, issuer: &VendorName) -> Vec<u32> {
        self.inner
            .sets
            .get(issuer)
            .map_or_else(Vec::new, |set| set.series())
    }

    /// Forgets every spent ID of `series` of `issuer`, in memory and in the
    /// checkpoint. Only for series whose scrip can no longer be presented.
    pub fn forget_series(&self, issuer: &VendorName, series: u32) -> Result<(), LedgerError> {
        self.inner.forget_series(issuer, series)
    }

    /// Starts a new segment if the active one is old, and drops segments
    /// whose records are all past the retry window; returns how many were
    /// dropped.
    pub fn prune_replies(&self, now_secs: u64) -> Result<usize, LedgerError> {
        self.inner.prune_replies(now_secs)
    }

    /// Spent IDs held in memory, over all issuers.
    pub fn len(&self) -> u64 {
        self.inner.sets.iter().map(|entry| entry.len()).sum()
    }

    /// Whether nothing is spent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate bytes of memory the spent bitmaps use.
    pub fn memory_bytes(&self) -> usize {
        self.inner
            .sets
            .iter()
            .map(|entry| entry.memory_bytes())
            .sum()
    }
}

impl Drop for SpendStore {
    /// Writes out what is staged, so that a store dropped without a last
    /// commit (at shutdown, before the ledger is closed) keeps it.
    fn drop(&mut self) {
        if let Err(error) = self.inner.write_staged() {
            tracing::error!(%error, "writing staged spend records at close failed");
        }
    }
}

impl Staged for Inner {
    fn write_staged(&self) -> Result<(), LedgerError> {
        let mut next_group = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let group = {
            let mut staging = self.lock_staging();
            if staging.current.is_empty() {
                return Ok(());
            }
            let group = Arc::new(std::mem::take(&mut staging.current));
            staging.writing.push(group.clone());
            group
        };

        let number = *next_group;
        let written = self.write_group(&group, number);
        let mut staging = self.lock_staging();
        staging.writing.retain(|other| !Arc::ptr_eq(other, &group));
        match written {
            Ok(()) => {
                *next_group += 1;
                metrics::histogram!(SPEND_GROUP_BUCKETS).record(group.len() as f64);
                Ok(())
            }
            Err(error) => {
                // Back to the staged records, ahead of anything staged
                // since: the next write takes them all.
                for (key, records) in Arc::unwrap_or_clone(group) {
                    let staged = staging.current.entry(key).or_default();
                    let later = std::mem::replace(staged, records);
                    staged.extend_from_slice(&later);
                }
                Err(error)
            }
        }
    }
}

impl Inner {
    fn spend<E>(
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

    fn spend_with<E>(
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

    /// The one body of a spend: staged, or written at once with `writes`
    /// when making the reply yields some.
    fn spend_inner<E>(
        &self,
        issuer: &VendorName,
        id: ScripId,
        fingerprint: &[u8],
        now_secs: u64,
        make_reply: impl FnOnce() -> Result<(Vec<u8>, Option<Writes>), E>,
    ) -> Result<SpendOutcome, SpendError<E>> {
        let fingerprint_len = u16::try_from(fingerprint.len())
            .map_err(|_| SpendError::Storage(corrupt("fingerprint longer than 65535 bytes")))?;
        let set = self.set(issuer);
        let guard = self.lock(issuer, id);

        if set.contains(id) {
            return match self.find_reply(issuer, id, fingerprint, now_secs) {
                Ok(Some(reply)) => Ok(SpendOutcome::Retry(reply)),
                Ok(None) => Err(SpendError::DoubleSpend),
                Err(error) => Err(SpendError::Storage(error)),
            };
        }

        let (reply, mut writes) = make_reply().map_err(SpendError::Reply)?;
        let reply_len = u32::try_from(reply.len())
            .map_err(|_| SpendError::Storage(corrupt("reply longer than 4 GiB")))?;
        let mut record = Vec::with_capacity(10 + fingerprint.len() + reply.len());
        record.extend_from_slice(&id.seq().to_be_bytes());
        record.extend_from_slice(&fingerprint_len.to_be_bytes());
        record.extend_from_slice(fingerprint);
        record.extend_from_slice(&reply_len.to_be_bytes());
        record.extend_from_slice(&reply);
        let mut failed_rotation = None;
        loop {
            {
                let segments = self.read_segments();
                let Some(active) = segments.last() else {
                    return Err(SpendError::Storage(corrupt("no active segment")));
                };
                if now_secs < active.started_at.saturating_add(SEGMENT_SECS) {
                    // The record first: whoever sees the bit can find it.
                    let key = BucketKey::of(active.number, issuer, id);
                    match writes.take() {
                        None => {
                            let mut staging = self.lock_staging();
                            let records = staging.current.entry(key).or_default();
                            records.extend_from_slice(&record);
                        }
                        Some(writes) => self
                            .write_now(&active.table, &key, &record, writes)
                            .map_err(SpendError::Storage)?,
                    }
                    set.insert(id);
                    mark_dirty(&self.dirty, active.number, issuer, id);
                    break;
                }
            }
            // The active segment is too old to date this record: start a
            // new one first. If that failed, nothing was staged or written.
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

    /// Writes one record at once, under a group number of its own, in one
    /// atomic write with `writes`.
    fn write_now(
        &self,
        segment: &Table,
        key: &BucketKey,
        record: &[u8],
        mut writes: Writes,
    ) -> Result<(), LedgerError> {
        let mut next_group = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        writes.insert(segment, group_key(key, *next_group), record);
        self.ledger.apply(writes)?;
        *next_group += 1;
        Ok(())
    }

    fn forget_series(&self, issuer: &VendorName, series: u32) -> Result<(), LedgerError> {
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

    fn prune_replies(&self, now_secs: u64) -> Result<usize, LedgerError> {
        self.rotate(now_secs)?;
        let folded = *self
            .folded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let expired: Vec<Arc<Segment>> = self
            .read_segments()
            .windows(2)
            .filter(|pair| {
                pair[0].number <= folded
                    && pair[1].started_at.saturating_add(self.retry_window_secs) < now_secs
            })
            .map(|pair| pair[0].clone())
            .collect();
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

    fn set(&self, issuer: &VendorName) -> Arc<SpentSet> {
        if let Some(set) = self.sets.get(issuer) {
            return set.clone();
        }
        self.sets.entry(issuer.clone()).or_default().clone()
    }

    /// The lock of the word holding `id`: the test and the set of its bit
    /// and the staging of its record happen under it, so of two spends of
    /// one ID# exactly one is fresh.
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

    fn read_segments(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Segment>>> {
        // Segments are pushed and removed whole: a poisoned lock still
        // guards a consistent list.
        self.segments
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_staging(&self) -> std::sync::MutexGuard<'_, Staging> {
        // Every change of the staging area is one insert, append or move.
        self.staging
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes one group: for each segment, its buckets as one atomic batch.
    fn write_group(&self, group: &Group, number: u64) -> Result<(), LedgerError> {
        let segments = self.read_segments();
        let mut batches: HashMap<u64, Batch> = HashMap::new();
        for (key, records) in group {
            batches
                .entry(key.segment)
                .or_default()
                .insert(group_key(key, number), records);
        }
        for (segment, batch) in batches {
            let table = segments
                .iter()
                .find(|candidate| candidate.number == segment)
                .ok_or_else(|| corrupt("a staged record's segment is gone"))?;
            table.table.apply(batch)?;
        }
        Ok(())
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

    /// Closes the active segment if it is old enough, writes out what is
    /// staged, and folds the closed segment into the checkpoint.
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
        // No spend stages into the closed segment any more (they hold the
        // read lock while staging); its records go to the store before the
        // checkpoint that covers them.
        self.write_staged()?;
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

    /// The reply recorded for `id` with `fingerprint` within the retry
    /// window: `None` if there is none (or its fingerprint differs).
    fn find_reply(
        &self,
        issuer: &VendorName,
        id: ScripId,
        fingerprint: &[u8],
        now_secs: u64,
    ) -> Result<Option<Vec<u8>>, LedgerError> {
        let oldest = now_secs.saturating_sub(self.retry_window_secs);
        let live: Vec<Arc<Segment>> = {
            let segments = self.read_segments();
            // A segment's records are dated no later than the start of the
            // next one, and the active segment's before its start plus
            // SEGMENT_SECS; look only where the window reaches.
            let active_ends = segments
                .last()
                .map_or(0, |active| active.started_at.saturating_add(SEGMENT_SECS));
            let ends = segments
                .iter()
                .skip(1)
                .map(|next| next.started_at)
                .chain(std::iter::once(active_ends));
            let mut live: Vec<Arc<Segment>> = segments
                .iter()
                .zip(ends)
                .filter(|(_, ends_at)| *ends_at >= oldest)
                .map(|(segment, _)| segment.clone())
                .collect();
            live.reverse();
            live
        };

        // Memory first: a group leaves memory only once it is written, so
        // a record missed here is in the store.
        {
            let staging = self.lock_staging();
            let groups = std::iter::once(&staging.current)
                .chain(staging.writing.iter().map(|group| &**group));
            for group in groups {
                for segment in &live {
                    let key = BucketKey::of(segment.number, issuer, id);
                    if let Some(records) = group.get(&key)
                        && let Some(reply) = look_up(records, id.seq(), fingerprint)?
                    {
                        return Ok(reply);
                    }
                }
            }
        }

        let mut prefix = issuer_prefix_plain(issuer);
        prefix.extend_from_slice(&id.series().to_be_bytes());
        prefix.extend_from_slice(&(id.seq() >> BUCKET_BITS).to_be_bytes());
        for segment in &live {
            for entry in segment.table.scan_prefix(prefix.clone()) {
                let (_, records) = entry?;
                if let Some(reply) = look_up(&records, id.seq(), fingerprint)? {
                    return Ok(reply);
                }
            }
        }
        Ok(None)
    }
}

/// One spend record, borrowed from a bucket's records.
struct Record<'a> {
    seq: u32,
    fingerprint: &'a [u8],
    reply: &'a [u8],
}

/// The records of one bucket, in the order they were staged.
struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Records<'a> {
    fn new(bytes: &'a [u8]) -> Records<'a> {
        Records { rest: bytes }
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.rest.len() < len {
            return None;
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(taken)
    }

    fn record(&mut self) -> Option<Record<'a>> {
        let seq = u32::from_be_bytes(self.take(4)?.try_into().ok()?);
        let fingerprint_len = u16::from_be_bytes(self.take(2)?.try_into().ok()?);
        let fingerprint = self.take(fingerprint_len.into())?;
        let reply_len = u32::from_be_bytes(self.take(4)?.try_into().ok()?);
        let reply = self.take(usize::try_from(reply_len).ok()?)?;
        Some(Record {
            seq,
            fingerprint,
            reply,
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, LedgerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match self.record() {
            Some(record) => Some(Ok(record)),
            None => {
                self.rest = &[];
                Some(Err(corrupt("truncated spend record")))
            }
        }
    }
}

/// Looks for the record of `seq` among `records`: `None` if it is not
/// there, else its reply if its fingerprint is `fingerprint` (a retry) or
/// `Some(None)` if it is another request's (a double spend).
fn look_up(
    records: &[u8],
    seq: u32,
    fingerprint: &[u8],
) -> Result<Option<Option<Vec<u8>>>, LedgerError> {
    for record in Records::new(records) {
        let record = record?;
        if record.seq == seq {
            let same = subtle::ConstantTimeEq::ct_eq(record.fingerprint, fingerprint);
            return Ok(Some(bool::from(same).then(|| record.reply.to_vec())));
        }
    }
    Ok(None)
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

fn issuer_prefix(kind: u8, issuer: &VendorName) -> Vec<u8> {
    let mut key = vec![kind];
    key.extend_from_slice(&issuer_prefix_plain(issuer));
    key
}

/// `issuer length (1) ‖ issuer`, with room for what callers append.
fn issuer_prefix_plain(issuer: &VendorName) -> Vec<u8> {
    let name = issuer.as_str().as_bytes();
    let mut key = Vec::with_capacity(1 + name.len() + 16);
    // Vendor names are at most 64 bytes.
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

/// The key of the records of bucket `key` written in group `number`.
fn group_key(key: &BucketKey, number: u64) -> Vec<u8> {
    let mut group_key = issuer_prefix_plain(&key.issuer);
    group_key.extend_from_slice(&key.series.to_be_bytes());
    group_key.extend_from_slice(&key.bucket.to_be_bytes());
    group_key.extend_from_slice(&number.to_be_bytes());
    group_key
}

/// The issuer and series of a group key: `issuer length (1) ‖ issuer ‖
/// series (4) ‖ bucket (4) ‖ group (8)`.
fn parse_group_key(key: &[u8]) -> Option<(VendorName, u32)> {
    let name_len = *key.first()? as usize;
    let name = std::str::from_utf8(key.get(1..1 + name_len)?).ok()?;
    let rest = key.get(1 + name_len..)?;
    if rest.len() != 16 {
        return None;
    }
    let series = u32::from_be_bytes(rest[..4].try_into().ok()?);
    Some((VendorName::new(name).ok()?, series))
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

    #[tokio::test]
    async fn spends_are_staged_and_written_by_bucket_at_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let store = SpendStore::open(&ledger, "spends", 600).unwrap();

        // Staged: a retry finds the reply before anything is written.
        let ids: Vec<ScripId> = (0..2000).map(|seq| ScripId::new(5, seq)).collect();
        for id in &ids {
            store.spend(&vendor(), *id, b"f", NOW, reply(b"r")).unwrap();
        }
        let segment = store.inner.read_segments().last().unwrap().table.clone();
        assert_eq!(segment.len(), 0);
        let retry = store.spend(&vendor(), ids[7], b"f", NOW, reply(b"x"));
        assert_eq!(retry.unwrap(), SpendOutcome::Retry(b"r".to_vec()));
        let other = store.spend(&vendor(), ids[7], b"g", NOW, reply(b"x"));
        assert!(matches!(other, Err(SpendError::DoubleSpend)));

        // The commit writes one key per bucket of 1024 IDs, and retries are
        // then answered from the store.
        ledger.commit().await.unwrap();
        assert_eq!(segment.len(), 2);
        assert!(store.inner.lock_staging().current.is_empty());
        for id in [ids[0], ids[1023], ids[1024], ids[1999]] {
            let retry = store.spend(&vendor(), id, b"f", NOW + 1, reply(b"x"));
            assert_eq!(retry.unwrap(), SpendOutcome::Retry(b"r".to_vec()), "{id}");
        }

        // A later spend in a written bucket gets a key of its own group.
        let late = ScripId::new(5, 2000);
        store
            .spend(&vendor(), late, b"f", NOW + 1, reply(b"r2"))
            .unwrap();
        ledger.commit().await.unwrap();
        assert_eq!(segment.len(), 3);
        let retry = store.spend(&vendor(), late, b"f", NOW + 2, reply(b"x"));
        assert_eq!(retry.unwrap(), SpendOutcome::Retry(b"r2".to_vec()));
    }

    #[tokio::test]
    async fn a_new_segment_is_complete_in_the_store_before_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let store = SpendStore::open(&ledger, "spends", 600).unwrap();
        store
            .spend(&vendor(), ScripId::new(1, 1), b"f", NOW, reply(b"r"))
            .unwrap();
        let first = store.inner.read_segments().last().unwrap().clone();
        assert_eq!(first.table.len(), 0);
        // The next spend is dated past the segment: it starts a new one,
        // which writes the staged record of the old one and folds it in.
        store
            .spend(&vendor(), ScripId::new(1, 2), b"f", NOW + 10, reply(b"r"))
            .unwrap();
        assert_eq!(first.table.len(), 1);
        assert_eq!(*store.inner.folded.lock().unwrap(), first.number);
        let chunk = store
            .inner
            .checkpoint
            .get(chunk_key(&vendor(), 1, 0))
            .unwrap()
            .unwrap();
        assert_eq!(chunk[0], 0b10);
    }
}
