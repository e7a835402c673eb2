//! ID#s for change: handed out densely from the node's own change series,
//! in blocks reserved durably ahead of use.
//!
//! Dense IDs keep the spent-ID bitmaps at about one bit per scrip. Never
//! issuing an ID# twice is what the durable mark (see [`crate::keys`]) is
//! for: this module hands out only sequence numbers below the mark most
//! recently committed, and asks for the next block to be reserved while a
//! quarter of the current one is still left, so payments rarely wait.

use std::sync::Mutex;

use millicent_core::ScripId;
use millicent_core::payment::ChangeSlot;

/// Sequence numbers reserved at a time.
pub(crate) const BLOCK: u64 = 65_536;
/// When fewer sequence numbers than this are left, reserve the next block.
pub(crate) const LOW_WATER: u64 = BLOCK / 4;
/// Sequence numbers in one series: the low 32 bits of an ID#.
pub(crate) const SERIES_CAPACITY: u64 = 1 << 32;

/// Where the next change ID# comes from.
#[derive(Debug)]
pub(crate) struct ChangeIds {
    cursor: Mutex<Cursor>,
}

#[derive(Clone, Copy, Debug)]
struct Cursor {
    series: u32,
    expires_at: u64,
    /// The next sequence number to hand out.
    next: u64,
    /// The committed mark: sequence numbers below it may be handed out.
    limit: u64,
}

/// A change slot, and whether the reserve is running low.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Taken {
    pub(crate) slot: ChangeSlot,
    pub(crate) running_low: bool,
}

/// The state of the current block, for deciding whether to reserve more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) series: u32,
    pub(crate) expires_at: u64,
    pub(crate) next: u64,
    pub(crate) limit: u64,
}

impl Position {
    /// Sequence numbers still free below the mark.
    pub(crate) fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.next)
    }
}

impl ChangeIds {
    /// Change from `series` (expiring at `expires_at`), continuing at `next`
    /// with sequence numbers below `limit` committed for use.
    pub(crate) fn new(series: u32, expires_at: u64, next: u64, limit: u64) -> ChangeIds {
        ChangeIds {
            cursor: Mutex::new(Cursor {
                series,
                expires_at,
                next,
                limit: limit.min(SERIES_CAPACITY),
            }),
        }
    }

    /// The next free slot, or `None` if the committed block is used up.
    pub(crate) fn take(&self) -> Option<Taken> {
        let mut cursor = self.lock();
        if cursor.next >= cursor.limit {
            return None;
        }
        // `limit` never exceeds SERIES_CAPACITY, so `next` fits 32 bits.
        let seq = u32::try_from(cursor.next).ok()?;
        cursor.next += 1;
        Some(Taken {
            slot: ChangeSlot {
                id: ScripId::new(cursor.series, seq),
                expires_at: cursor.expires_at,
            },
            running_low: cursor.limit - cursor.next < LOW_WATER,
        })
    }

    /// Where the cursor stands.
    pub(crate) fn position(&self) -> Position {
        let cursor = *self.lock();
        Position {
            series: cursor.series,
            expires_at: cursor.expires_at,
            next: cursor.next,
            limit: cursor.limit,
        }
    }

    /// Raises the usable limit of `series` to a newly committed `mark`.
    pub(crate) fn extend(&self, series: u32, mark: u64) {
        let mut cursor = self.lock();
        if cursor.series == series && mark > cursor.limit {
            cursor.limit = mark.min(SERIES_CAPACITY);
        }
    }

    /// Moves to a new series whose first block (below `limit`) is committed.
    pub(crate) fn switch(&self, series: u32, expires_at: u64, limit: u64) {
        *self.lock() = Cursor {
            series,
            expires_at,
            next: 0,
            limit: limit.min(SERIES_CAPACITY),
        };
    }

    /// Gives the series up: nothing more is handed out until
    /// [`ChangeIds::switch`] moves to a new one.
    pub(crate) fn stop(&self) {
        *self.lock() = Cursor {
            series: 0,
            expires_at: 0,
            next: SERIES_CAPACITY,
            limit: SERIES_CAPACITY,
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cursor> {
        // The cursor is a few integers updated in one step each, so a
        // panic elsewhere cannot leave it half-written.
        self.cursor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_and_stop_at_the_mark() {
        let ids = ChangeIds::new(3, 100, 10, 13);
        let seqs: Vec<u32> = std::iter::from_fn(|| ids.take())
            .map(|taken| taken.slot.id.seq())
            .collect();
        assert_eq!(seqs, vec![10, 11, 12]);
        assert!(ids.take().is_none());

        ids.extend(3, 14);
        let taken = ids.take().unwrap();
        assert_eq!(taken.slot.id, ScripId::new(3, 13));
        assert_eq!(taken.slot.expires_at, 100);
        assert!(taken.running_low);

        // A mark for a series no longer current changes nothing.
        ids.extend(2, 1000);
        assert!(ids.take().is_none());

        ids.switch(4, 200, BLOCK);
        let taken = ids.take().unwrap();
        assert_eq!(taken.slot.id, ScripId::new(4, 0));
        assert!(!taken.running_low);
    }

    #[test]
    fn the_last_sequence_number_of_a_series_is_usable_and_then_nothing() {
        let ids = ChangeIds::new(1, 100, SERIES_CAPACITY - 1, SERIES_CAPACITY + 5);
        assert_eq!(ids.position().remaining(), 1);
        assert_eq!(ids.take().unwrap().slot.id.seq(), u32::MAX);
        ids.extend(1, SERIES_CAPACITY + 10);
        assert!(ids.take().is_none());
    }
}
