//! What a customer must know of a broker beyond exchanges: which shard
//! holds an account or a piece of broker scrip, how a refund of broker
//! scrip is asked for, and how expired vendor scrip is renewed.
//!
//! # Shards
//!
//! A broker splits its customer accounts into *shards*, numbered 0 to 255,
//! each kept by exactly one of the broker's nodes. The shard of an account
//! is the top byte of its account ID, and the shard of a piece of broker
//! scrip is the top byte of its series (so bits 63..56 of its ID#): broker
//! scrip is only ever spent at the shard that issued it, and a customer
//! buys broker scrip from its own account's shard. Which node keeps which
//! shard is configuration, published in the broker's `GetBrokerInfo`.
//!
//! # Refunds
//!
//! Unspent broker scrip is turned back into account balance by a
//! secure-variant payment to the broker whose request is a
//! [`RefundRequest`]: the account ID to credit. The reply's goods are
//! [`refund_goods`]: the account, the amount credited and the balance after.
//!
//! # Renewals
//!
//! Vendor scrip that a broker sold and that expired recently, unspent, is
//! exchanged for fresh scrip of the same value by a request stamp over the
//! expired scrip and the fixed request [`RENEWAL_REQUEST`]. The reply's
//! goods are those of an exchange ([`exchange_goods`](crate::exchange::exchange_goods)),
//! the fresh scrip's customer secret sealed under the expired scrip's.

use crate::scrip::{Reader, ScripId};
use crate::{Error, Result};

/// Bits of an account ID or series below its shard byte.
const ACCOUNT_NUMBER_BITS: u32 = 56;
const SERIES_NUMBER_BITS: u32 = 24;

/// Largest account number within a shard.
pub const MAX_ACCOUNT_NUMBER: u64 = (1 << ACCOUNT_NUMBER_BITS) - 1;
/// Largest broker-scrip series number within a shard.
pub const MAX_SERIES_NUMBER: u32 = (1 << SERIES_NUMBER_BITS) - 1;

/// The request of every renewal of expired vendor scrip.
pub const RENEWAL_REQUEST: &[u8] = b"MC1-RENEW";

/// The shard holding account `account_id`: its top byte.
pub const fn account_shard(account_id: u64) -> u8 {
    (account_id >> ACCOUNT_NUMBER_BITS) as u8
}

/// The account ID of account `number` of `shard`.
pub fn account_id(shard: u8, number: u64) -> Result<u64> {
    if number > MAX_ACCOUNT_NUMBER {
        return Err(Error::Malformed {
            what: "account number",
            detail: "more than 56 bits",
        });
    }
    Ok((u64::from(shard) << ACCOUNT_NUMBER_BITS) | number)
}

/// The shard of broker scrip in `series`: the series' top byte.
pub const fn series_shard(series: u32) -> u8 {
    (series >> SERIES_NUMBER_BITS) as u8
}

/// The shard that issued the broker scrip with ID# `id`.
pub const fn scrip_shard(id: ScripId) -> u8 {
    series_shard(id.series())
}

/// Series `number` of the broker scrip of `shard`.
pub fn broker_series(shard: u8, number: u32) -> Result<u32> {
    if number > MAX_SERIES_NUMBER {
        return Err(Error::Malformed {
            what: "series number",
            detail: "more than 24 bits",
        });
    }
    Ok((u32::from(shard) << SERIES_NUMBER_BITS) | number)
}

/// What a refund asks for: the value of the broker scrip paid, credited to
/// an account of the shard that issued the scrip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefundRequest {
    /// The account to credit.
    pub account_id: u64,
}

impl RefundRequest {
    /// Canonical encoding: the account ID, 8 bytes big-endian.
    pub fn encode(&self) -> [u8; 8] {
        self.account_id.to_be_bytes()
    }

    /// Decodes the canonical encoding; nothing may follow it.
    pub fn decode(bytes: &[u8]) -> Result<RefundRequest> {
        let mut reader = Reader {
            bytes,
            what: "refund request",
        };
        let account_id = reader.u64()?;
        if !reader.bytes.is_empty() {
            return Err(Error::Malformed {
                what: "refund request",
                detail: "trailing bytes",
            });
        }
        Ok(RefundRequest { account_id })
    }
}

/// The goods of a refund reply, as covered by its reply stamp: the account
/// credited, the amount credited and the account's balance right after,
/// each 8 bytes big-endian.
pub fn refund_goods(account_id: u64, credited: u64, balance: u64) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..8].copy_from_slice(&account_id.to_be_bytes());
    out[8..16].copy_from_slice(&credited.to_be_bytes());
    out[16..].copy_from_slice(&balance.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_byte_names_the_shard() {
        let id = account_id(3, 77).unwrap();
        assert_eq!(id, (3 << 56) | 77);
        assert_eq!(account_shard(id), 3);
        assert_eq!(account_shard(1), 0);
        assert!(account_id(1, MAX_ACCOUNT_NUMBER + 1).is_err());

        let series = broker_series(2, 9).unwrap();
        assert_eq!(series_shard(series), 2);
        assert_eq!(scrip_shard(ScripId::new(series, 5)), 2);
        assert_eq!(series_shard(1), 0);
        assert!(broker_series(0, MAX_SERIES_NUMBER + 1).is_err());
    }

    #[test]
    fn refund_requests_round_trip_strictly() {
        let request = RefundRequest { account_id: 42 };
        let bytes = request.encode();
        assert_eq!(RefundRequest::decode(&bytes).unwrap(), request);
        assert!(RefundRequest::decode(&bytes[..7]).is_err());
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(RefundRequest::decode(&longer).is_err());
    }
}
