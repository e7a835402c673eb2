//! The spent-ID set: which ID#s a vendor has already accepted.
//!
//! Safety critical: this set is what stops scrip being spent twice. IDs are
//! issued densely within a series, so each series keeps a bitmap, about one
//! bit per issued ID#, allocated in chunks of [`CHUNK_BITS`] bits. The
//! services persist it a 64-bit word at a time, so recording a spend writes
//! eight bytes. A whole series is forgotten at once when it is past expiry,
//! because its scrip can no longer be presented.
//!
//! The set is the hot, in-memory copy; whoever owns it must make an insert
//! durable before acting on it.

use dashmap::DashMap;

use crate::scrip::ScripId;
use crate::{Error, Result};

/// Bits per chunk of memory.
pub const CHUNK_BITS: u32 = 4096;
const CHUNK_WORDS: usize = CHUNK_BITS as usize / 64;

type Chunk = [u64; CHUNK_WORDS];

/// The spent sequence numbers of one series.
#[derive(Clone, Debug, Default)]
pub struct SeriesBitmap {
    chunks: Vec<Option<Box<Chunk>>>,
    count: u64,
}

impl SeriesBitmap {
    /// Whether `seq` is spent.
    pub fn contains(&self, seq: u32) -> bool {
        let (chunk, word, bit) = position(seq);
        match self.chunks.get(chunk) {
            Some(Some(words)) => words[word] & bit != 0,
            _ => false,
        }
    }

    /// Marks `seq` spent; returns `false` if it already was.
    pub fn insert(&mut self, seq: u32) -> bool {
        let (chunk, word, bit) = position(seq);
        if self.chunks.len() <= chunk {
            self.chunks.resize_with(chunk + 1, || None);
        }
        let words = self.chunks[chunk].get_or_insert_with(|| Box::new([0; CHUNK_WORDS]));
        if words[word] & bit != 0 {
            return false;
        }
        words[word] |= bit;
        self.count += 1;
        true
    }

    /// Unmarks `seq`; used only to undo an insert that could not be made durable.
    pub fn remove(&mut self, seq: u32) {
        let (chunk, word, bit) = position(seq);
        if let Some(Some(words)) = self.chunks.get_mut(chunk)
            && words[word] & bit != 0
        {
            words[word] &= !bit;
            self.count -= 1;
        }
    }

    /// Number of spent IDs.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether nothing is spent.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Approximate heap bytes used.
    pub fn memory_bytes(&self) -> usize {
        let allocated = self.chunks.iter().flatten().count();
        self.chunks.capacity() * std::mem::size_of::<Option<Box<Chunk>>>()
            + allocated * std::mem::size_of::<Chunk>()
    }

    /// Word `index` of the bitmap: bit `i` is sequence number
    /// `index * 64 + i`. This is the unit the services persist.
    pub fn word(&self, index: u32) -> u64 {
        let seq = index as u64 * 64;
        if seq > u32::MAX as u64 {
            return 0;
        }
        let (chunk, word, _) = position(seq as u32);
        match self.chunks.get(chunk) {
            Some(Some(words)) => words[word],
            _ => 0,
        }
    }

    /// Merges a persisted word into the bitmap.
    pub fn load_word(&mut self, index: u32, mut word: u64) -> Result<()> {
        let base = index as u64 * 64;
        if base > u32::MAX as u64 {
            return Err(Error::Malformed {
                what: "spent word",
                detail: "index out of range",
            });
        }
        while word != 0 {
            let bit = word.trailing_zeros() as u64;
            self.insert((base + bit) as u32);
            word &= word - 1;
        }
        Ok(())
    }
}

fn position(seq: u32) -> (usize, usize, u64) {
    let chunk = (seq / CHUNK_BITS) as usize;
    let within = seq % CHUNK_BITS;
    (chunk, (within / 64) as usize, 1u64 << (within % 64))
}

/// The index of the 64-bit word of the bitmap an ID# falls in.
pub fn word_index(id: ScripId) -> u32 {
    id.seq() / 64
}

/// One vendor's spent IDs, a bitmap per series, safe to share between threads.
#[derive(Debug, Default)]
pub struct SpentSet {
    series: DashMap<u32, SeriesBitmap>,
}

impl SpentSet {
    /// An empty set.
    pub fn new() -> SpentSet {
        SpentSet::default()
    }

    /// Marks `id` spent; returns `false` if it already was.
    pub fn insert(&self, id: ScripId) -> bool {
        self.series.entry(id.series()).or_default().insert(id.seq())
    }

    /// Whether `id` is spent.
    pub fn contains(&self, id: ScripId) -> bool {
        self.series
            .get(&id.series())
            .is_some_and(|bitmap| bitmap.contains(id.seq()))
    }

    /// Undoes an insert that could not be made durable.
    pub fn remove(&self, id: ScripId) {
        if let Some(mut bitmap) = self.series.get_mut(&id.series()) {
            bitmap.remove(id.seq());
        }
    }

    /// The persisted word holding `id` (see [`SeriesBitmap::word`]).
    pub fn word_of(&self, id: ScripId) -> u64 {
        match self.series.get(&id.series()) {
            Some(bitmap) => bitmap.word(word_index(id)),
            None => 0,
        }
    }

    /// Merges a persisted word of `series`.
    pub fn load_word(&self, series: u32, index: u32, word: u64) -> Result<()> {
        self.series
            .entry(series)
            .or_default()
            .load_word(index, word)
    }

    /// Forgets a whole series (past expiry and grace).
    pub fn forget_series(&self, series: u32) {
        self.series.remove(&series);
    }

    /// Up to `max_words` words of the bitmap of `series`, from word
    /// `first_word` on (see [`SeriesBitmap::word`]), without the zero
    /// words at the end; empty if nothing from there on is spent.
    pub fn series_words(&self, series: u32, first_word: u32, max_words: usize) -> Vec<u64> {
        let Some(bitmap) = self.series.get(&series) else {
            return Vec::new();
        };
        let words_held = (bitmap.chunks.len() * CHUNK_WORDS) as u64;
        let end = words_held.min(u64::from(first_word) + max_words as u64);
        let mut words: Vec<u64> = (u64::from(first_word)..end)
            .map(|index| bitmap.word(index as u32))
            .collect();
        while words.last() == Some(&0) {
            words.pop();
        }
        words
    }

    /// The series with at least one spent ID.
    pub fn series(&self) -> Vec<u32> {
        self.series.iter().map(|entry| *entry.key()).collect()
    }

    /// Number of spent IDs over all series.
    pub fn len(&self) -> u64 {
        self.series.iter().map(|entry| entry.len()).sum()
    }

    /// Whether nothing is spent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate heap bytes used by the bitmaps.
    pub fn memory_bytes(&self) -> usize {
        self.series.iter().map(|entry| entry.memory_bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_is_test_and_set() {
        let set = SpentSet::new();
        let id = ScripId::new(1, 5000);
        assert!(!set.contains(id));
        assert!(set.insert(id));
        assert!(!set.insert(id));
        assert!(set.contains(id));
        assert!(!set.contains(ScripId::new(2, 5000)));
        assert!(!set.contains(ScripId::new(1, 5001)));
        set.remove(id);
        assert!(!set.contains(id));
        assert_eq!(set.len(), 0);
    }

    #[test]
    fn a_series_reads_back_as_words_from_any_start() {
        let set = SpentSet::new();
        for seq in [0, 65, 130, 5000] {
            set.insert(ScripId::new(4, seq));
        }
        let words = set.series_words(4, 0, 1000);
        assert_eq!(words.len(), 5000 / 64 + 1);
        assert_eq!(words[0], 1);
        assert_eq!(words[1], 1 << 1);
        assert_eq!(words[2], 1 << 2);
        assert_eq!(words[5000 / 64], 1 << (5000 % 64));
        assert_eq!(set.series_words(4, 1, 2), [1 << 1, 1 << 2]);
        assert!(set.series_words(4, 3, 10).is_empty());
        assert!(set.series_words(9, 0, 10).is_empty());
    }

    #[test]
    fn words_round_trip() {
        let mut bitmap = SeriesBitmap::default();
        let seqs = [0, 1, 63, 64, 4095, 4096, 9000, u32::MAX];
        for seq in seqs {
            bitmap.insert(seq);
        }
        let mut restored = SeriesBitmap::default();
        for seq in seqs {
            let index = seq / 64;
            restored.load_word(index, bitmap.word(index)).unwrap();
        }
        assert_eq!(restored.len(), 8);
        assert!(seqs.iter().all(|seq| restored.contains(*seq)));
        assert!(!restored.contains(2));
        assert_eq!(bitmap.word(0), 0b11 | 1 << 63);
        assert_eq!(bitmap.word(u32::MAX / 64 + 1), 0);
        assert!(restored.load_word(u32::MAX / 64 + 1, 1).is_err());
    }

    #[test]
    fn dense_ids_cost_about_one_bit_each() {
        let mut bitmap = SeriesBitmap::default();
        for seq in 0..1_000_000 {
            bitmap.insert(seq);
        }
        let bits_per_id = bitmap.memory_bytes() as f64 * 8.0 / 1_000_000.0;
        assert!(bits_per_id < 1.1, "{bits_per_id} bits per ID");
    }
}
