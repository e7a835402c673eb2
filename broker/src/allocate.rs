//! Dense, never-reused numbers: sequence numbers within a series, and Cust
//! ID# numbers within a customer selector.
//!
//! Safety critical: two pieces of scrip with one ID# would make spending
//! either one a double spend of the other, and two customers with one Cust
//! ID# would share a customer secret. Numbers are also issued densely,
//! because whoever checks spending keeps one bit per sequence number.
//!
//! Writing a counter per number would put a write, and a point of
//! contention, on every purchase. Instead an allocator *reserves* a block of
//! [`BLOCK`] numbers at a time: it writes the end of the block to the
//! ledger before it hands out any number in it. Every reply carrying a
//! number is sent only after a ledger commit that began after that write,
//! so every number that has left the process lies below a durable
//! reservation, and after a restart issuing resumes at the stored end. A
//! restart skips at most the unused rest of one block per allocator, which
//! costs a few hundred bytes of bitmap at the checker.
//!
//! # Keys (table `ids`)
//!
//! - `s ‖ issuer length (1) ‖ issuer ‖ series (4)` → end of the reserved
//!   sequence numbers (8), exclusive
//! - `c ‖ issuer length (1) ‖ issuer ‖ selector (2)` → end of the reserved
//!   Cust ID# numbers (8), exclusive
//!
//! The issuer is the name in the scrip: the broker's for broker scrip, the
//! vendor's for scrip minted under licence.

use std::sync::{Mutex, PoisonError};

use millicent_core::{CustId, VendorName};
use millicent_ledger::{LedgerError, Table};

/// Numbers reserved by one durable write.
pub(crate) const BLOCK: u64 = 4096;

const SERIES_PREFIX: u8 = b's';
const CUSTOMER_PREFIX: u8 = b'c';

/// Hands out the numbers of one series or one customer selector in order.
pub(crate) struct Allocator {
    table: Table,
    key: Vec<u8>,
    /// One past the largest number the allocator may issue.
    limit: u64,
    range: Mutex<Reserved>,
}

/// The numbers reserved and not yet issued: `next..end`.
struct Reserved {
    next: u64,
    end: u64,
}

impl Allocator {
    /// Sequence numbers of `series` of `issuer`'s scrip: 0 to `u32::MAX`.
    pub(crate) fn series(
        table: &Table,
        issuer: &VendorName,
        series: u32,
    ) -> Result<Allocator, LedgerError> {
        let key = allocator_key(SERIES_PREFIX, issuer, &series.to_be_bytes());
        Allocator::open(table, key, 1 << 32)
    }

    /// Sequence numbers 0 to `limit` − 1 of `series` of `issuer`'s scrip
    /// (at most the whole series): a licence covering part of a series.
    pub(crate) fn series_limited(
        table: &Table,
        issuer: &VendorName,
        series: u32,
        limit: u64,
    ) -> Result<Allocator, LedgerError> {
        let key = allocator_key(SERIES_PREFIX, issuer, &series.to_be_bytes());
        Allocator::open(table, key, limit.min(1 << 32))
    }

    /// Cust ID# numbers under `selector` of `issuer`: 0 to 2⁴⁸ − 1.
    pub(crate) fn customers(
        table: &Table,
        issuer: &VendorName,
        selector: u16,
    ) -> Result<Allocator, LedgerError> {
        let key = allocator_key(CUSTOMER_PREFIX, issuer, &selector.to_be_bytes());
        Allocator::open(table, key, CustId::MAX_NUMBER + 1)
    }

    fn open(table: &Table, key: Vec<u8>, limit: u64) -> Result<Allocator, LedgerError> {
        let end = match table.get(&key)? {
            None => 0,
            Some(value) => {
                let bytes: [u8; 8] =
                    value
                        .as_slice()
                        .try_into()
                        .map_err(|_| LedgerError::Storage {
                            operation: "read ID reservation",
                            detail: "stored value is not 8 bytes".to_owned(),
                        })?;
                u64::from_be_bytes(bytes).min(limit)
            }
        };
        Ok(Allocator {
            table: table.clone(),
            key,
            limit,
            range: Mutex::new(Reserved { next: end, end }),
        })
    }

    /// The next number, or `None` once every number has been issued.
    pub(crate) fn next(&self) -> Result<Option<u64>, LedgerError> {
        // A panic cannot leave the range half-updated: `end` is raised only
        // after its write succeeded, and `next` only after that.
        let mut range = self.range.lock().unwrap_or_else(PoisonError::into_inner);
        if range.next == range.end {
            if range.end >= self.limit {
                return Ok(None);
            }
            let end = range.end.saturating_add(BLOCK).min(self.limit);
            self.table.insert(&self.key, end.to_be_bytes())?;
            range.end = end;
        }
        let number = range.next;
        range.next += 1;
        Ok(Some(number))
    }

    /// The next sequence number of a series allocator.
    pub(crate) fn next_seq(&self) -> Result<Option<u32>, LedgerError> {
        Ok(self.next()?.and_then(|number| u32::try_from(number).ok()))
    }

    /// Whether every number has been issued.
    pub(crate) fn is_exhausted(&self) -> bool {
        let range = self.range.lock().unwrap_or_else(PoisonError::into_inner);
        range.next >= self.limit
    }
}

/// Deletes the reservation of a retired series. Its numbers cannot be issued
/// again all the same: series numbers are never reused.
pub(crate) fn forget_series(
    table: &Table,
    issuer: &VendorName,
    series: u32,
) -> Result<(), LedgerError> {
    table.remove(allocator_key(SERIES_PREFIX, issuer, &series.to_be_bytes()))
}

fn allocator_key(kind: u8, issuer: &VendorName, number: &[u8]) -> Vec<u8> {
    let mut key = crate::shard::name_key(&[kind], issuer, number.len());
    key.extend_from_slice(number);
    key
}

#[cfg(test)]
mod tests {
    use millicent_ledger::{Durability, Ledger};

    use super::*;

    fn issuer() -> VendorName {
        VendorName::new("broker.local").unwrap()
    }

    #[tokio::test]
    async fn numbers_are_dense_and_never_reused_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let first: Vec<u32> = {
            let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
            let table = ledger.table("ids").unwrap();
            let allocator = Allocator::series(&table, &issuer(), 7).unwrap();
            let numbers = (0..10)
                .map(|_| allocator.next_seq().unwrap().unwrap())
                .collect();
            drop((allocator, table));
            ledger.commit().await.unwrap();
            ledger.close().await.unwrap();
            numbers
        };
        assert_eq!(first, (0..10).collect::<Vec<u32>>());

        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let table = ledger.table("ids").unwrap();
        let allocator = Allocator::series(&table, &issuer(), 7).unwrap();
        assert_eq!(allocator.next_seq().unwrap(), Some(BLOCK as u32));
        let other_series = Allocator::series(&table, &issuer(), 8).unwrap();
        assert_eq!(other_series.next_seq().unwrap(), Some(0));
    }

    #[tokio::test]
    async fn an_allocator_stops_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let table = ledger.table("ids").unwrap();
        let allocator = Allocator::open(&table, b"k".to_vec(), 3).unwrap();
        let numbers: Vec<_> = (0..4).map(|_| allocator.next().unwrap()).collect();
        assert_eq!(numbers, [Some(0), Some(1), Some(2), None]);
        assert!(allocator.is_exhausted());
    }
}
