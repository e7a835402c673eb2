//! Licences to mint vendor scrip, and minting under them, in one shard.
//!
//! A licence, granted by a vendor's node, is the right to mint one series
//! of that vendor's scrip (all of it, or its first `id_limit` sequence
//! numbers) with Cust IDs under one customer selector, until an expiry; it
//! carries the master secrets of exactly that series and that selector.
//! Each shard asks for licences of its own, so that no two shards ever
//! share a counter. A shard asks the first time a customer wants the
//! vendor's scrip, keeps the licence in the `keys` table, and asks for a
//! new one once half of the current licence's lifetime has passed or its
//! sequence numbers run out. While a vendor node cannot be reached the
//! shard keeps minting under a licence that is still valid; with none,
//! exchanges for that vendor fail with `vendor_unavailable`, and a later
//! one (at most one a second) asks the node again.
//!
//! The broker mints only with the key ring a licence builds, which holds
//! only the licensed series and selector, and only sequence numbers the
//! licence covers come from its allocator, so it cannot mint outside a
//! licence even by mistake; sequence numbers and Cust ID numbers come from
//! durable allocators (see `allocate`), so none is issued twice.
//!
//! Licences replaced by newer ones are kept, with their secrets, until
//! their series has been expired for the renewal grace period: renewing
//! expired scrip needs the secrets of the series it was minted in. Then
//! their record is deleted; what settlement needs of them (the series, its
//! contract and expiry) stays in the series registry of `settlement`.
//!
//! # Keys (table `keys`; integers big-endian)
//!
//! - `licence/` ‖ vendor name length (1) ‖ vendor name ‖ series (4) →
//!   suite (1) ‖ series (4) ‖ expiry, Unix seconds (8) ‖ time obtained,
//!   Unix seconds (8) ‖ customer selector (2) ‖ master scrip secret (32) ‖
//!   master customer secret (32) ‖ ID limit (8, 0 for the whole series) ‖
//!   contract (1: redeemed, 2: sold)

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use millicent_core::secret::MASTER_SECRET_LEN;
use millicent_core::{
    Amount, CustId, CustomerKey, CustomerSecret, KeyRing, MasterSecret, Properties, Scrip,
    ScripBody, ScripId, SeriesKey, Suite, VendorName,
};
use millicent_ledger::{Ledger, LedgerError, Table, Writes};
use millicent_proto::GrantLicenceRequest;
use zeroize::Zeroizing;

use crate::allocate::Allocator;
use crate::config::{Contract, Source, VendorSettings};
use crate::settlement::{self, SeriesKind};
use crate::{BrokerError, convert, links};

/// Lifetime of vendor scrip minted in an exchange, at most; a licence that
/// ends sooner shortens it. A customer exchanges broker scrip when it is
/// about to pay a vendor, so a day is plenty.
const VENDOR_SCRIP_LIFETIME_SECS: u64 = 24 * 60 * 60;
const LICENCE_PREFIX: &[u8] = b"licence/";
const RECORD_LEN: usize = 1 + 4 + 8 + 8 + 2 + 2 * MASTER_SECRET_LEN + 8 + 1;
/// After a failed renewal, how long to keep minting under the current
/// licence before asking the vendor node again.
const RENEWAL_BACKOFF: Duration = Duration::from_secs(10);
/// With no usable licence, how long after a failed attempt exchanges fail
/// at once instead of asking again: a node that is down is asked about
/// once a second, not once per exchange.
const RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// What a vendor node granted, checked (see `convert::licence_from_wire`).
pub(crate) struct LicenceGrant {
    pub(crate) suite: Suite,
    pub(crate) series: u32,
    pub(crate) expires_at: u64,
    pub(crate) selector: u16,
    pub(crate) scrip_secret: MasterSecret,
    pub(crate) customer_secret: MasterSecret,
    /// Sequence numbers covered; 0 for the whole series.
    pub(crate) id_limit: u64,
}

/// A licence in use: its key ring and its number allocators.
pub(crate) struct Licence {
    vendor: VendorName,
    suite: Suite,
    series: u32,
    expires_at: u64,
    obtained_at: u64,
    selector: u16,
    contract: Contract,
    ring: KeyRing,
    seqs: Allocator,
    customers: Allocator,
}

impl Licence {
    fn new(
        vendor: &VendorName,
        grant: LicenceGrant,
        obtained_at: u64,
        contract: Contract,
        ids: &Table,
    ) -> Result<Licence, LedgerError> {
        let mut ring = KeyRing::new(vendor.clone());
        ring.add_series(SeriesKey {
            series: grant.series,
            suite: grant.suite,
            expires_at: grant.expires_at,
            secret: grant.scrip_secret,
        });
        ring.add_customer_key(CustomerKey {
            selector: grant.selector,
            suite: grant.suite,
            secret: grant.customer_secret,
        });
        let seqs = match grant.id_limit {
            0 => Allocator::series(ids, vendor, grant.series)?,
            limit => Allocator::series_limited(ids, vendor, grant.series, limit)?,
        };
        Ok(Licence {
            vendor: vendor.clone(),
            suite: grant.suite,
            series: grant.series,
            expires_at: grant.expires_at,
            obtained_at,
            selector: grant.selector,
            contract,
            seqs,
            customers: Allocator::customers(ids, vendor, grant.selector)?,
            ring,
        })
    }

    /// When vendor is owed for scrip minted under this licence.
    pub(crate) fn contract(&self) -> Contract {
        self.contract
    }

    /// The licence's key ring: the series and the customer selector.
    pub(crate) fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// Whether the licence is not yet due for renewal.
    fn is_fresh(&self, now: u64) -> bool {
        let half_life = self.expires_at.saturating_sub(self.obtained_at) / 2;
        now < self.obtained_at.saturating_add(half_life) && !self.seqs.is_exhausted()
    }

    /// Whether scrip can still be minted under the licence.
    fn is_usable(&self, now: u64) -> bool {
        now < self.expires_at && !self.seqs.is_exhausted()
    }

    /// Mints vendor scrip of `value` with a fresh ID# and Cust ID#; returns
    /// it with its customer secret.
    pub(crate) fn mint(
        &self,
        value: Amount,
        now: u64,
    ) -> Result<(Scrip, CustomerSecret), BrokerError> {
        if now >= self.expires_at {
            return Err(self.unavailable("the licence has expired"));
        }
        let seq = self
            .seqs
            .next_seq()?
            .ok_or_else(|| self.unavailable("every ID# of the licence has been minted"))?;
        let number = self
            .customers
            .next()?
            .ok_or_else(|| self.unavailable("the licence's Cust IDs are used up"))?;
        let cust_id = CustId::new(self.selector, number)?;
        let body = ScripBody {
            suite: self.suite,
            vendor: self.vendor.clone(),
            value,
            id: ScripId::new(self.series, seq),
            cust_id,
            expires_at: self
                .expires_at
                .min(now.saturating_add(VENDOR_SCRIP_LIFETIME_SECS)),
            properties: Properties::default(),
        };
        let scrip = self.ring.mint(body)?;
        let secret = self.ring.customer_secret(self.suite, cust_id)?;
        Ok((scrip, secret))
    }

    fn unavailable(&self, detail: &str) -> BrokerError {
        links::unavailable(&self.vendor, detail.to_owned())
    }
}

/// The licences of every vendor the broker mints for, in one shard.
pub(crate) struct Licences {
    broker: VendorName,
    ledger: Ledger,
    keys: Table,
    ids: Table,
    registry: Table,
    vendors: BTreeMap<VendorName, VendorSlot>,
}

/// One vendor minted under licence: its current licence, those kept for
/// renewals, and the renewal in progress.
struct VendorSlot {
    settings: VendorSettings,
    contract: Contract,
    current: RwLock<Option<Arc<Licence>>>,
    /// Every licence still held, by series, the current one included.
    held: RwLock<BTreeMap<u32, Arc<Licence>>>,
    /// Held while asking the vendor node, so that one caller asks and the
    /// others wait for its answer; holds the time of the last failure.
    renewal: tokio::sync::Mutex<Option<Instant>>,
}

impl VendorSlot {
    fn current(&self) -> Option<Arc<Licence>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Licences {
    /// Loads the stored licences of the vendors minted under licence; the
    /// newest usable one of each becomes current.
    pub(crate) fn open(
        broker: &VendorName,
        vendors: &[VendorSettings],
        ledger: &Ledger,
        keys: &Table,
        ids: &Table,
        registry: &Table,
        now: u64,
    ) -> Result<Licences, BrokerError> {
        let mut slots = BTreeMap::new();
        for settings in vendors {
            let Source::Licence(contract) = settings.source else {
                continue;
            };
            let mut held = BTreeMap::new();
            for entry in keys.scan_prefix(vendor_prefix(&settings.name)) {
                let (_, record) = entry?;
                let record = Zeroizing::new(record);
                let (grant, obtained_at, contract) = decode_record(&record)?;
                let series = grant.series;
                let licence = Licence::new(&settings.name, grant, obtained_at, contract, ids)?;
                held.insert(series, Arc::new(licence));
            }
            let current = held
                .values()
                .filter(|licence| licence.is_usable(now))
                .max_by_key(|licence| licence.obtained_at)
                .cloned();
            slots.insert(
                settings.name.clone(),
                VendorSlot {
                    settings: settings.clone(),
                    contract,
                    current: RwLock::new(current),
                    held: RwLock::new(held),
                    renewal: tokio::sync::Mutex::new(None),
                },
            );
        }
        Ok(Licences {
            broker: broker.clone(),
            ledger: ledger.clone(),
            keys: keys.clone(),
            ids: ids.clone(),
            registry: registry.clone(),
            vendors: slots,
        })
    }

    /// The licence of `vendor` for `series`, if still held.
    pub(crate) fn find(&self, vendor: &VendorName, series: u32) -> Option<Arc<Licence>> {
        self.vendors.get(vendor).and_then(|slot| {
            slot.held
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&series)
                .cloned()
        })
    }

    /// A licence to mint `vendor`'s scrip at `now`, obtaining a new one
    /// from the vendor's node when none is held or the current one is due.
    pub(crate) async fn get(
        &self,
        vendor: &VendorName,
        now: u64,
    ) -> Result<Arc<Licence>, BrokerError> {
        let slot = self
            .vendors
            .get(vendor)
            .ok_or_else(|| BrokerError::UnknownVendor {
                vendor: vendor.to_string(),
            })?;
        let current = slot.current();
        if let Some(licence) = current.as_ref().filter(|licence| licence.is_fresh(now)) {
            return Ok(licence.clone());
        }

        if let Some(usable) = current.filter(|licence| licence.is_usable(now)) {
            // Due for renewal but still valid: one caller renews while the
            // others keep minting under the current licence.
            let Ok(mut last_failure) = slot.renewal.try_lock() else {
                return Ok(usable);
            };
            if last_failure.is_some_and(|failed_at| failed_at.elapsed() < RENEWAL_BACKOFF) {
                return Ok(usable);
            }
            return match self.obtain(slot, now).await {
                Ok(licence) => {
                    *last_failure = None;
                    Ok(licence)
                }
                Err(error) => {
                    *last_failure = Some(Instant::now());
                    tracing::warn!(
                        vendor = %vendor,
                        %error,
                        "licence renewal failed; minting under the current licence"
                    );
                    Ok(usable)
                }
            };
        }

        // No usable licence: one caller asks the vendor node, the others
        // wait for its answer.
        let waiting_since = Instant::now();
        let mut last_failure = slot.renewal.lock().await;
        if let Some(licence) = slot.current().filter(|licence| licence.is_usable(now)) {
            return Ok(licence);
        }
        if last_failure.is_some_and(|failed_at| {
            failed_at > waiting_since || failed_at.elapsed() < RETRY_BACKOFF
        }) {
            return Err(links::unavailable(
                vendor,
                "the vendor node did not grant a licence just now; try again".to_owned(),
            ));
        }
        match self.obtain(slot, now).await {
            Ok(licence) => {
                *last_failure = None;
                Ok(licence)
            }
            Err(error) => {
                *last_failure = Some(Instant::now());
                tracing::warn!(vendor = %vendor, %error, "no licence could be obtained");
                Err(error)
            }
        }
    }

    /// Forgets every licence whose series expired more than `grace_secs`
    /// before `now`, secrets and all; returns how many.
    pub(crate) fn prune(&self, now: u64, grace_secs: u64) -> Result<usize, BrokerError> {
        let mut pruned = 0;
        for (vendor, slot) in &self.vendors {
            let mut held = slot.held.write().unwrap_or_else(PoisonError::into_inner);
            let gone: Vec<u32> = held
                .values()
                .filter(|licence| licence.expires_at.saturating_add(grace_secs) <= now)
                .map(|licence| licence.series)
                .collect();
            for series in gone {
                self.keys.remove(licence_key(vendor, series))?;
                held.remove(&series);
                pruned += 1;
                tracing::info!(vendor = %vendor, series, "expired licence forgotten");
            }
        }
        Ok(pruned)
    }

    /// Asks the vendor node for a licence, stores it durably with its
    /// series in the registry, and makes it current.
    async fn obtain(&self, slot: &VendorSlot, now: u64) -> Result<Arc<Licence>, BrokerError> {
        let settings = &slot.settings;
        let vendor = &settings.name;
        let request = links::bearer(
            GrantLicenceRequest {
                vendor: vendor.to_string(),
                broker: self.broker.to_string(),
            },
            &settings.licence_token,
            vendor,
        )?;
        let wire = links::vendor_node(settings)
            .await?
            .grant_licence(request)
            .await
            .map_err(|status| links::refused(settings, "a licence", &status))?
            .into_inner();
        let grant = convert::licence_from_wire(wire, vendor, now).map_err(|error| {
            links::unavailable(
                vendor,
                format!("the vendor node sent an unusable licence: {error}"),
            )
        })?;
        if self.find(vendor, grant.series).is_some() {
            return Err(links::unavailable(
                vendor,
                format!(
                    "the vendor node granted series {} a second time",
                    grant.series
                ),
            ));
        }

        let mut writes = Writes::new();
        writes.insert(
            &self.keys,
            licence_key(vendor, grant.series),
            encode_record(&grant, now, slot.contract),
        );
        settlement::register_series(
            &mut writes,
            &self.registry,
            vendor,
            grant.series,
            SeriesKind::Licence(slot.contract),
            grant.expires_at,
        );
        self.ledger.apply(writes)?;
        self.ledger.commit().await?;

        let (series, selector, expires_at) = (grant.series, grant.selector, grant.expires_at);
        let id_limit = grant.id_limit;
        let licence = Arc::new(Licence::new(vendor, grant, now, slot.contract, &self.ids)?);
        slot.held
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(series, licence.clone());
        *slot.current.write().unwrap_or_else(PoisonError::into_inner) = Some(licence.clone());
        tracing::info!(
            vendor = %vendor,
            series,
            customer_selector = selector,
            expires_at,
            id_limit,
            contract = slot.contract.name(),
            "licence obtained"
        );
        Ok(licence)
    }
}

fn vendor_prefix(vendor: &VendorName) -> Vec<u8> {
    crate::shard::name_key(LICENCE_PREFIX, vendor, 4)
}

fn licence_key(vendor: &VendorName, series: u32) -> Vec<u8> {
    let mut key = vendor_prefix(vendor);
    key.extend_from_slice(&series.to_be_bytes());
    key
}

fn encode_record(grant: &LicenceGrant, obtained_at: u64, contract: Contract) -> Zeroizing<Vec<u8>> {
    let mut record = Zeroizing::new(Vec::with_capacity(RECORD_LEN));
    record.push(grant.suite.id());
    record.extend_from_slice(&grant.series.to_be_bytes());
    record.extend_from_slice(&grant.expires_at.to_be_bytes());
    record.extend_from_slice(&obtained_at.to_be_bytes());
    record.extend_from_slice(&grant.selector.to_be_bytes());
    record.extend_from_slice(grant.scrip_secret.expose_bytes());
    record.extend_from_slice(grant.customer_secret.expose_bytes());
    record.extend_from_slice(&grant.id_limit.to_be_bytes());
    record.push(contract as u8);
    record
}

fn decode_record(record: &[u8]) -> Result<(LicenceGrant, u64, Contract), BrokerError> {
    let unreadable = |detail: &str| {
        BrokerError::Storage(LedgerError::Storage {
            operation: "load licence",
            detail: detail.to_owned(),
        })
    };
    if record.len() != RECORD_LEN {
        return Err(unreadable("stored licence has the wrong length"));
    }
    let suite = Suite::from_id(record[0])?;
    let be = |range: std::ops::Range<usize>| -> u64 {
        record[range]
            .iter()
            .fold(0u64, |value, byte| (value << 8) | u64::from(*byte))
    };
    let contract = Contract::from_byte(record[95])
        .ok_or_else(|| unreadable("stored licence has an unknown contract"))?;
    let grant = LicenceGrant {
        suite,
        series: be(1..5) as u32,
        expires_at: be(5..13),
        selector: be(21..23) as u16,
        scrip_secret: MasterSecret::from_slice(suite, &record[23..55])?,
        customer_secret: MasterSecret::from_slice(suite, &record[55..87])?,
        id_limit: be(87..95),
    };
    Ok((grant, be(13..21), contract))
}

#[cfg(test)]
mod tests {
    use millicent_ledger::Durability;

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn grant(expires_at: u64, id_limit: u64) -> LicenceGrant {
        LicenceGrant {
            suite: Suite::Classic,
            series: 7,
            expires_at,
            selector: 3,
            scrip_secret: MasterSecret::new(Suite::Classic, [1; 32]),
            customer_secret: MasterSecret::new(Suite::Classic, [2; 32]),
            id_limit,
        }
    }

    #[test]
    fn records_round_trip() {
        let record = encode_record(&grant(NOW + 100, 9), NOW, Contract::Sold);
        let (decoded, obtained_at, contract) = decode_record(&record).unwrap();
        assert_eq!((obtained_at, contract), (NOW, Contract::Sold));
        assert_eq!(decoded.series, 7);
        assert_eq!(decoded.selector, 3);
        assert_eq!(decoded.expires_at, NOW + 100);
        assert_eq!(decoded.id_limit, 9);
        assert_eq!(decoded.scrip_secret, grant(0, 0).scrip_secret);
        assert_eq!(decoded.customer_secret, grant(0, 0).customer_secret);
        assert!(decode_record(&record[1..]).is_err());
    }

    #[tokio::test]
    async fn a_due_licence_is_used_while_its_node_is_down_and_never_after_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let (keys, ids) = (ledger.table("keys").unwrap(), ledger.table("ids").unwrap());
        let registry = ledger.table("settlement").unwrap();
        let vendor = VendorName::new("news").unwrap();
        keys.insert(
            licence_key(&vendor, 7),
            encode_record(&grant(NOW + 100, 0), NOW, Contract::Redeemed),
        )
        .unwrap();
        // Nothing listens on port 1: every request for a licence fails.
        let settings = VendorSettings {
            name: vendor.clone(),
            node: "http://127.0.0.1:1".to_owned(),
            licence_token: "t".to_owned(),
            source: Source::Licence(Contract::Redeemed),
            client_tls: millicent_transport::ClientTls::default(),
        };
        let broker = VendorName::new("broker").unwrap();
        let licences =
            Licences::open(&broker, &[settings], &ledger, &keys, &ids, &registry, NOW).unwrap();

        let fresh = licences.get(&vendor, NOW + 10).await.unwrap();
        assert_eq!(fresh.series, 7);
        let due = licences.get(&vendor, NOW + 60).await.unwrap();
        assert!(Arc::ptr_eq(&fresh, &due));
        let expired = licences.get(&vendor, NOW + 100).await;
        assert!(matches!(
            expired,
            Err(BrokerError::VendorUnavailable { .. })
        ));
        let unknown = licences.get(&VendorName::new("other").unwrap(), NOW).await;
        assert!(matches!(unknown, Err(BrokerError::UnknownVendor { .. })));

        // The expired licence is kept for renewals until the grace is over.
        assert!(licences.find(&vendor, 7).is_some());
        assert_eq!(licences.prune(NOW + 150, 60).unwrap(), 0);
        assert_eq!(licences.prune(NOW + 160, 60).unwrap(), 1);
        assert!(licences.find(&vendor, 7).is_none());
        assert_eq!(keys.scan_prefix(vendor_prefix(&vendor)).count(), 0);
    }

    #[tokio::test]
    async fn minting_stays_inside_the_licence() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let ids = ledger.table("ids").unwrap();
        let vendor = VendorName::new("news").unwrap();
        let licence =
            Licence::new(&vendor, grant(NOW + 100, 0), NOW, Contract::Redeemed, &ids).unwrap();

        let (scrip, secret) = licence.mint(Amount::new(5), NOW).unwrap();
        assert_eq!(scrip.id(), ScripId::new(7, 0));
        assert_eq!(scrip.body().cust_id.selector(), 3);
        assert_eq!(scrip.body().expires_at, NOW + 100);
        assert_eq!(licence.ring.verify(&scrip, NOW), Ok(()));
        let expected = licence
            .ring
            .customer_secret(Suite::Classic, scrip.body().cust_id)
            .unwrap();
        assert_eq!(secret, expected);
        let (second, _) = licence.mint(Amount::new(5), NOW).unwrap();
        assert_eq!(second.id(), ScripId::new(7, 1));

        assert!(licence.is_fresh(NOW + 49));
        assert!(!licence.is_fresh(NOW + 50));
        assert!(licence.is_usable(NOW + 99));
        assert!(matches!(
            licence.mint(Amount::new(5), NOW + 100),
            Err(BrokerError::VendorUnavailable { .. })
        ));
    }

    #[tokio::test]
    async fn a_licence_of_part_of_a_series_mints_only_that_part() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let ids = ledger.table("ids").unwrap();
        let vendor = VendorName::new("news").unwrap();
        let licence =
            Licence::new(&vendor, grant(NOW + 100, 3), NOW, Contract::Redeemed, &ids).unwrap();
        let seqs: Vec<u32> = (0..3)
            .map(|_| licence.mint(Amount::new(1), NOW).unwrap().0.id().seq())
            .collect();
        assert_eq!(seqs, [0, 1, 2]);
        assert!(!licence.is_usable(NOW));
        assert!(!licence.is_fresh(NOW));
        assert!(matches!(
            licence.mint(Amount::new(1), NOW),
            Err(BrokerError::VendorUnavailable { .. })
        ));
    }
}
