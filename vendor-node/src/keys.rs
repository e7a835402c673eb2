//! The vendor node's key material, kept in the ledger table `keys`.
//!
//! A vendor's scrip is checked with the master scrip secret of its series
//! and the master customer secret of its Cust ID#'s selector. The node
//! creates both kinds of secret, from the operating system's random number
//! generator, for two purposes: its own *change series*, in which it mints
//! change, and *licences*, each a new series and a new customer selector
//! handed to one broker. Nothing here lives outside the ledger, so keys and
//! spent IDs share one durability path.
//!
//! # Layout
//!
//! Keys start with a kind byte and the vendor's name (`vendor` below is the
//! name's length as one byte, then the name). Integers are big-endian.
//!
//! | key | value |
//! |---|---|
//! | `S ‖ vendor ‖ series (4)` | series record |
//! | `C ‖ vendor ‖ selector (2)` | customer-key record |
//! | `N ‖ vendor ‖ s` | next series number to allocate (4) |
//! | `N ‖ vendor ‖ c` | next customer selector to allocate (4) |
//! | `M ‖ vendor ‖ series (4)` | change-ID mark of an own series (8) |
//!
//! A series record is `version (1) = 1 ‖ suite (1) ‖ expires_at (8) ‖
//! created_at (8) ‖ master scrip secret (32) ‖ owner node (1 + n) ‖ holder
//! kind (1) ‖ broker (1 + n)`, where holder kind 0 is the node's own change
//! series (broker empty) and 1 a licensed series held by the broker named.
//!
//! A customer-key record is `version (1) = 1 ‖ suite (1) ‖ master customer
//! secret (32) ‖ series (4) ‖ broker (1 + n)`: the licence it was granted
//! with.
//!
//! The change-ID mark of a series is a sequence number that no change has
//! reached: every ID# below it may have been issued, none at or above it
//! has. The node raises the mark, and commits, before issuing any ID# under
//! the new mark, so after a restart it continues above the mark and never
//! issues an ID# twice.
//!
//! Series numbers and selectors are allocated from the counters and never
//! reused. Series numbers come from the node's `series_range` only (see
//! [`crate::cluster`]): the counter starts at the range's first number, or
//! jumps there if it is below it, and a counter past the range's last
//! number refuses every new series as `exhausted`. Selectors start at 1;
//! selector 0 is left unused so that a zero Cust ID# never matches a
//! licence by accident. Selectors need no partitioning between nodes: a
//! selector's customer key is only ever looked up by the node holding the
//! series of the scrip, which granted that selector with the series.
//!
//! Customer keys are never removed, because change keeps the Cust ID# of
//! the scrip it replaces and so outlives the licence's series. A vendor can
//! therefore grant at most 65,535 licences over its lifetime; after that,
//! licence requests are refused as `exhausted` until selectors of licences
//! whose every piece of scrip and change has expired are reclaimed, which
//! this node does not do yet.

use millicent_core::secret::MASTER_SECRET_LEN;
use millicent_core::{CustomerKey, MasterSecret, SeriesKey, Suite, VendorName};
use millicent_ledger::{Batch, Ledger, LedgerError, Table};
use rand::TryRng as _;
use zeroize::Zeroizing;

use crate::VendorError;
use crate::cluster::SeriesRange;

/// Name of the ledger table holding key material.
pub(crate) const TABLE: &str = "keys";

const SERIES: u8 = b'S';
const CUSTOMER: u8 = b'C';
const COUNTER: u8 = b'N';
const MARK: u8 = b'M';
const RECORD_VERSION: u8 = 1;
const HOLDER_NODE: u8 = 0;
const HOLDER_BROKER: u8 = 1;

/// Who mints scrip in a series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Holder {
    /// The node itself: its change series.
    Node,
    /// A broker, under a licence.
    Broker(String),
}

/// A series as stored.
#[derive(Clone, Debug)]
pub(crate) struct SeriesRecord {
    pub(crate) key: SeriesKey,
    pub(crate) holder: Holder,
}

/// Everything stored for one vendor.
#[derive(Debug, Default)]
pub(crate) struct StoredKeys {
    pub(crate) series: Vec<SeriesRecord>,
    pub(crate) customers: Vec<CustomerKey>,
}

/// What a licence consists of: one new series and one new selector.
#[derive(Clone, Debug)]
pub(crate) struct LicenceKeys {
    pub(crate) series: SeriesKey,
    pub(crate) customer: CustomerKey,
}

/// The `keys` table. Writers of one vendor's keys must be serialised by the
/// caller (counters are read, then written), and must commit the ledger
/// before handing out or using what they wrote.
#[derive(Clone, Debug)]
pub(crate) struct KeyStore {
    table: Table,
    node: String,
    series: SeriesRange,
}

impl KeyStore {
    /// The key store of `ledger`; `node` is recorded as the owner of new
    /// series, whose numbers are taken from `series`.
    pub(crate) fn open(
        ledger: &Ledger,
        node: &str,
        series: SeriesRange,
    ) -> Result<KeyStore, LedgerError> {
        Ok(KeyStore {
            table: ledger.table(TABLE)?,
            node: node.to_owned(),
            series,
        })
    }

    /// Every series and customer key stored for `vendor`.
    pub(crate) fn load(&self, vendor: &VendorName) -> Result<StoredKeys, VendorError> {
        let mut stored = StoredKeys::default();
        for entry in self.table.scan_prefix(prefix(SERIES, vendor)) {
            let (key, value) = entry?;
            let value = Zeroizing::new(value);
            let series = key_suffix::<4>(&key, vendor)
                .map(u32::from_be_bytes)
                .ok_or_else(|| corrupt(vendor, "series key", "wrong length"))?;
            stored.series.push(
                decode_series(series, &value)
                    .map_err(|detail| corrupt(vendor, &format!("series {series}"), detail))?,
            );
        }
        for entry in self.table.scan_prefix(prefix(CUSTOMER, vendor)) {
            let (key, value) = entry?;
            let value = Zeroizing::new(value);
            let selector = key_suffix::<2>(&key, vendor)
                .map(u16::from_be_bytes)
                .ok_or_else(|| corrupt(vendor, "selector key", "wrong length"))?;
            stored.customers.push(
                decode_customer(selector, &value)
                    .map_err(|detail| corrupt(vendor, &format!("selector {selector}"), detail))?,
            );
        }
        Ok(stored)
    }

    /// Whom `series` of `vendor` is held for, if it is on record.
    pub(crate) fn series_holder(
        &self,
        vendor: &VendorName,
        series: u32,
    ) -> Result<Option<Holder>, VendorError> {
        let Some(value) = self.table.get(series_key(vendor, series))? else {
            return Ok(None);
        };
        let value = Zeroizing::new(value);
        let record = decode_series(series, &value)
            .map_err(|detail| corrupt(vendor, &format!("series {series}"), detail))?;
        Ok(Some(record.holder))
    }

    /// The change-ID mark of `series`: 0 if none was ever set.
    pub(crate) fn change_mark(&self, vendor: &VendorName, series: u32) -> Result<u64, VendorError> {
        match self.table.get(mark_key(vendor, series))? {
            None => Ok(0),
            Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| corrupt(vendor, &format!("change mark {series}"), "wrong length")),
        }
    }

    /// Raises the change-ID mark of `series` to `mark`.
    pub(crate) fn set_change_mark(
        &self,
        vendor: &VendorName,
        series: u32,
        mark: u64,
    ) -> Result<(), LedgerError> {
        self.table
            .insert(mark_key(vendor, series), mark.to_be_bytes())
    }

    /// Creates a new own change series expiring at `expires_at`, with its
    /// change-ID mark set to `first_mark`.
    pub(crate) fn create_own_series(
        &self,
        vendor: &VendorName,
        suite: Suite,
        now: u64,
        expires_at: u64,
        first_mark: u64,
    ) -> Result<SeriesKey, VendorError> {
        let number = self.next_series(vendor)?;
        let key = SeriesKey {
            series: number,
            suite,
            expires_at,
            secret: MasterSecret::new(suite, *random_secret()?),
        };
        let mut batch = Batch::default();
        batch.insert(counter_key(vendor, b's'), series_after(vendor, number)?);
        batch.insert(
            series_key(vendor, number),
            encode_series(&key, now, &self.node, &Holder::Node),
        );
        batch.insert(mark_key(vendor, number), first_mark.to_be_bytes());
        self.table.apply(batch)?;
        Ok(key)
    }

    /// Creates the keys of a licence for `broker`: a new series expiring at
    /// `expires_at` and a new customer selector.
    pub(crate) fn create_licence(
        &self,
        vendor: &VendorName,
        suite: Suite,
        broker: &str,
        now: u64,
        expires_at: u64,
    ) -> Result<LicenceKeys, VendorError> {
        let series_number = self.next_series(vendor)?;
        let selector = self.next_selector(vendor)?;
        let series = SeriesKey {
            series: series_number,
            suite,
            expires_at,
            secret: MasterSecret::new(suite, *random_secret()?),
        };
        let customer = CustomerKey {
            selector,
            suite,
            secret: MasterSecret::new(suite, *random_secret()?),
        };
        let holder = Holder::Broker(broker.to_owned());

        let mut batch = Batch::default();
        batch.insert(
            counter_key(vendor, b's'),
            series_after(vendor, series_number)?,
        );
        batch.insert(
            counter_key(vendor, b'c'),
            (u32::from(selector) + 1).to_be_bytes(),
        );
        batch.insert(
            series_key(vendor, series_number),
            encode_series(&series, now, &self.node, &holder),
        );
        batch.insert(
            customer_key(vendor, selector),
            encode_customer(&customer, series_number, broker),
        );
        self.table.apply(batch)?;
        Ok(LicenceKeys { series, customer })
    }

    /// Removes a series' record and change mark; only for series whose
    /// scrip can no longer be presented. Its number stays used.
    pub(crate) fn remove_series(
        &self,
        vendor: &VendorName,
        series: u32,
    ) -> Result<(), LedgerError> {
        let mut batch = Batch::default();
        batch.remove(series_key(vendor, series));
        batch.remove(mark_key(vendor, series));
        self.table.apply(batch)
    }

    fn next_series(&self, vendor: &VendorName) -> Result<u32, VendorError> {
        let next = self
            .counter(vendor, b's')?
            .max(u64::from(self.series.first()));
        if next > u64::from(self.series.last()) {
            return Err(VendorError::SeriesExhausted {
                vendor: vendor.clone(),
                first: self.series.first(),
                last: self.series.last(),
            });
        }
        u32::try_from(next).map_err(|_| VendorError::Exhausted {
            vendor: vendor.clone(),
            what: "series numbers",
        })
    }

    fn next_selector(&self, vendor: &VendorName) -> Result<u16, VendorError> {
        let next = self.counter(vendor, b'c')?.max(1);
        u16::try_from(next).map_err(|_| VendorError::Exhausted {
            vendor: vendor.clone(),
            what: "customer selectors for new licences",
        })
    }

    fn counter(&self, vendor: &VendorName, which: u8) -> Result<u64, VendorError> {
        match self.table.get(counter_key(vendor, which))? {
            None => Ok(0),
            Some(bytes) => <[u8; 4]>::try_from(bytes.as_slice())
                .map(|bytes| u64::from(u32::from_be_bytes(bytes)))
                .map_err(|_| corrupt(vendor, "counter", "wrong length")),
        }
    }
}

/// The stored form of the series counter after allocating `number`. The
/// counter is a `u32`, so allocating the last number leaves it unable to
/// advance, and the next allocation reports the numbers as used up.
fn series_after(vendor: &VendorName, number: u32) -> Result<[u8; 4], VendorError> {
    number
        .checked_add(1)
        .map(u32::to_be_bytes)
        .ok_or_else(|| VendorError::Exhausted {
            vendor: vendor.clone(),
            what: "series numbers",
        })
}

/// 32 bytes from the operating system's random number generator.
fn random_secret() -> Result<Zeroizing<[u8; MASTER_SECRET_LEN]>, VendorError> {
    let mut bytes = Zeroizing::new([0u8; MASTER_SECRET_LEN]);
    rand::rngs::SysRng
        .try_fill_bytes(bytes.as_mut())
        .map_err(|error| VendorError::Random {
            detail: error.to_string(),
        })?;
    Ok(bytes)
}

fn corrupt(vendor: &VendorName, what: &str, detail: &'static str) -> VendorError {
    VendorError::CorruptKeys {
        what: format!("{what} of vendor {vendor}"),
        detail,
    }
}

fn prefix(kind: u8, vendor: &VendorName) -> Vec<u8> {
    let name = vendor.as_str().as_bytes();
    let mut key = Vec::with_capacity(2 + name.len() + 4);
    key.push(kind);
    // Vendor names are at most 64 bytes, so the length fits one byte.
    key.push(name.len() as u8);
    key.extend_from_slice(name);
    key
}

fn series_key(vendor: &VendorName, series: u32) -> Vec<u8> {
    let mut key = prefix(SERIES, vendor);
    key.extend_from_slice(&series.to_be_bytes());
    key
}

fn customer_key(vendor: &VendorName, selector: u16) -> Vec<u8> {
    let mut key = prefix(CUSTOMER, vendor);
    key.extend_from_slice(&selector.to_be_bytes());
    key
}

fn counter_key(vendor: &VendorName, which: u8) -> Vec<u8> {
    let mut key = prefix(COUNTER, vendor);
    key.push(which);
    key
}

fn mark_key(vendor: &VendorName, series: u32) -> Vec<u8> {
    let mut key = prefix(MARK, vendor);
    key.extend_from_slice(&series.to_be_bytes());
    key
}

/// The fixed-size tail of a key that starts with the vendor's prefix.
fn key_suffix<const N: usize>(key: &[u8], vendor: &VendorName) -> Option<[u8; N]> {
    let skip = 2 + vendor.as_str().len();
    key.get(skip..)?.try_into().ok()
}

fn encode_series(
    key: &SeriesKey,
    created_at: u64,
    owner: &str,
    holder: &Holder,
) -> Zeroizing<Vec<u8>> {
    let (kind, broker) = match holder {
        Holder::Node => (HOLDER_NODE, ""),
        Holder::Broker(broker) => (HOLDER_BROKER, broker.as_str()),
    };
    let mut out = Zeroizing::new(Vec::with_capacity(
        2 + 16 + MASTER_SECRET_LEN + 3 + owner.len() + broker.len(),
    ));
    out.push(RECORD_VERSION);
    out.push(key.suite.id());
    out.extend_from_slice(&key.expires_at.to_be_bytes());
    out.extend_from_slice(&created_at.to_be_bytes());
    out.extend_from_slice(key.secret.expose_bytes());
    push_name(&mut out, owner);
    out.push(kind);
    push_name(&mut out, broker);
    out
}

fn decode_series(series: u32, bytes: &[u8]) -> Result<SeriesRecord, &'static str> {
    let mut reader = Reader(bytes);
    if reader.take(1)? != [RECORD_VERSION] {
        return Err("unknown record version");
    }
    let suite = Suite::from_id(reader.take(1)?[0]).map_err(|_| "unknown suite")?;
    let expires_at = reader.u64()?;
    let _created_at = reader.u64()?;
    let secret = MasterSecret::from_slice(suite, reader.take(MASTER_SECRET_LEN)?)
        .map_err(|_| "bad secret")?;
    let _owner = reader.name()?;
    let kind = reader.take(1)?[0];
    let broker = reader.name()?;
    reader.finish()?;
    let holder = match kind {
        HOLDER_NODE => Holder::Node,
        HOLDER_BROKER => Holder::Broker(broker),
        _ => return Err("unknown holder kind"),
    };
    Ok(SeriesRecord {
        key: SeriesKey {
            series,
            suite,
            expires_at,
            secret,
        },
        holder,
    })
}

fn encode_customer(key: &CustomerKey, series: u32, broker: &str) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(2 + MASTER_SECRET_LEN + 5 + broker.len()));
    out.push(RECORD_VERSION);
    out.push(key.suite.id());
    out.extend_from_slice(key.secret.expose_bytes());
    out.extend_from_slice(&series.to_be_bytes());
    push_name(&mut out, broker);
    out
}

fn decode_customer(selector: u16, bytes: &[u8]) -> Result<CustomerKey, &'static str> {
    let mut reader = Reader(bytes);
    if reader.take(1)? != [RECORD_VERSION] {
        return Err("unknown record version");
    }
    let suite = Suite::from_id(reader.take(1)?[0]).map_err(|_| "unknown suite")?;
    let secret = MasterSecret::from_slice(suite, reader.take(MASTER_SECRET_LEN)?)
        .map_err(|_| "bad secret")?;
    let _series = reader.take(4)?;
    let _broker = reader.name()?;
    reader.finish()?;
    Ok(CustomerKey {
        selector,
        suite,
        secret,
    })
}

/// Appends a name of at most 255 bytes (node and broker names are at most
/// 64) with its length.
fn push_name(out: &mut Vec<u8>, name: &str) {
    let bytes = &name.as_bytes()[..name.len().min(255)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

/// A cursor over a stored record that fails instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < len {
            return Err("truncated");
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        let bytes: [u8; 8] = self.take(8)?.try_into().map_err(|_| "truncated")?;
        Ok(u64::from_be_bytes(bytes))
    }

    fn name(&mut self) -> Result<String, &'static str> {
        let len = self.take(1)?[0] as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "name is not UTF-8")
    }

    fn finish(&self) -> Result<(), &'static str> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use millicent_ledger::Durability;

    fn vendor() -> VendorName {
        VendorName::new("news.example").unwrap()
    }

    fn everything() -> SeriesRange {
        SeriesRange::new(1, u32::MAX - 1).unwrap()
    }

    #[tokio::test]
    async fn series_come_from_the_range_only() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let low = KeyStore::open(&ledger, "vendor-1", everything()).unwrap();
        let first = low
            .create_own_series(&vendor(), Suite::Classic, 10, 1000, 1)
            .unwrap();
        assert_eq!(first.series, 1);

        // A counter below the range jumps to its start; the range's last
        // number is used, and then nothing more.
        let high = KeyStore::open(&ledger, "vendor-1", SeriesRange::new(50, 51).unwrap()).unwrap();
        let licence = high
            .create_licence(&vendor(), Suite::Classic, "broker-1", 10, 1000)
            .unwrap();
        assert_eq!(licence.series.series, 50);
        let own = high
            .create_own_series(&vendor(), Suite::Classic, 10, 1000, 1)
            .unwrap();
        assert_eq!(own.series, 51);
        let error = high
            .create_licence(&vendor(), Suite::Classic, "broker-1", 10, 1000)
            .unwrap_err();
        assert_eq!(error.reason(), "exhausted");
        assert!(error.to_string().contains("[50, 51]"), "{error}");
        assert!(
            high.create_own_series(&vendor(), Suite::Classic, 10, 1000, 1)
                .is_err()
        );
        // The refused licence allocated no selector.
        assert_eq!(low.next_selector(&vendor()).unwrap(), 2);
    }

    #[tokio::test]
    async fn keys_survive_reopen_and_numbers_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (own, licence) = {
            let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
            let store = KeyStore::open(&ledger, "vendor-1", everything()).unwrap();
            let own = store
                .create_own_series(&vendor(), Suite::Classic, 10, 1000, 65536)
                .unwrap();
            let licence = store
                .create_licence(&vendor(), Suite::Classic, "broker-1", 10, 2000)
                .unwrap();
            ledger.commit().await.unwrap();
            drop(store);
            ledger.close().await.unwrap();
            (own, licence)
        };
        assert_eq!(own.series, 1);
        assert_eq!((licence.series.series, licence.customer.selector), (2, 1));

        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let store = KeyStore::open(&ledger, "vendor-1", everything()).unwrap();
        let stored = store.load(&vendor()).unwrap();
        assert_eq!(stored.series.len(), 2);
        let first = &stored.series[0];
        assert_eq!(first.holder, Holder::Node);
        assert_eq!(first.key.secret, own.secret);
        assert_eq!(first.key.expires_at, 1000);
        assert_eq!(
            stored.series[1].holder,
            Holder::Broker("broker-1".to_owned())
        );
        assert_eq!(stored.customers[0].secret, licence.customer.secret);
        assert_eq!(store.change_mark(&vendor(), 1).unwrap(), 65536);
        assert_eq!(store.change_mark(&vendor(), 2).unwrap(), 0);

        store.remove_series(&vendor(), 1).unwrap();
        let next = store
            .create_licence(&vendor(), Suite::Classic, "broker-2", 20, 3000)
            .unwrap();
        assert_eq!((next.series.series, next.customer.selector), (3, 2));
        assert_eq!(store.load(&vendor()).unwrap().series.len(), 2);

        let other = VendorName::new("news.example.org").unwrap();
        assert!(store.load(&other).unwrap().series.is_empty());
    }

    #[tokio::test]
    async fn debug_output_shows_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let store = KeyStore::open(&ledger, "vendor-1", everything()).unwrap();
        store
            .create_own_series(&vendor(), Suite::Classic, 10, 1000, 1)
            .unwrap();
        let licence = store
            .create_licence(&vendor(), Suite::Classic, "broker-1", 10, 1000)
            .unwrap();
        let stored = store.load(&vendor()).unwrap();

        let text = format!("{licence:?} {licence:#?} {stored:?} {stored:#?}");
        let secrets = stored
            .series
            .iter()
            .map(|record| &record.key.secret)
            .chain(stored.customers.iter().map(|key| &key.secret));
        for secret in secrets {
            let bytes = &secret.expose_bytes()[..4];
            let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            let decimal: Vec<String> = bytes.iter().map(u8::to_string).collect();
            assert!(!text.contains(&hex), "{text}");
            assert!(!text.contains(&decimal.join(", ")), "{text}");
        }
        assert!(text.contains("MasterSecret(..)"));
    }

    #[test]
    fn records_decode_strictly() {
        let key = SeriesKey {
            series: 4,
            suite: Suite::Classic,
            expires_at: 99,
            secret: MasterSecret::new(Suite::Classic, [3; 32]),
        };
        let bytes = encode_series(&key, 1, "vendor-1", &Holder::Broker("b".into()));
        let record = decode_series(4, &bytes).unwrap();
        assert_eq!(record.key.secret, key.secret);
        for len in 0..bytes.len() {
            assert!(decode_series(4, &bytes[..len]).is_err());
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(decode_series(4, &longer).is_err());
    }
}
