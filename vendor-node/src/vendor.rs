//! One vendor served by the node: its catalogue, its key ring, its change
//! series, and the operations that change its keys.
//!
//! The key ring is read on every payment and changed rarely (a licence, a
//! new change series, a series forgotten), so it sits behind a read-write
//! lock as an `Arc`: a payment clones the `Arc` and works on a snapshot, and
//! a change builds a new ring and swaps it in. Changes of a vendor's keys
//! are serialised by one async lock, because each reads counters from the
//! store, writes, and commits before the result is used.
//!
//! Those commits are real flushes in every durability mode. Relaxed
//! durability may lose recent spends in a crash, but losing a licence
//! already handed to a broker, or a change-ID reservation already used,
//! would reuse series numbers and change ID#s with other secrets and other
//! owners; these writes are rare, so they always wait for the disk.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use millicent_core::{Error, KeyRing, Suite, Variant, VendorName};
use millicent_ledger::{Durability, Ledger, LedgerError, SpendStore};

use crate::VendorError;
use crate::change::{BLOCK, ChangeIds, LOW_WATER, SERIES_CAPACITY, Taken};
use crate::config::{Catalogue, Item};
use crate::keys::{Holder, KeyStore, LicenceKeys};

/// A vendor and everything the node keeps for it.
#[derive(Debug)]
pub(crate) struct Vendor {
    pub(crate) catalogue: Catalogue,
    items: HashMap<Vec<u8>, usize>,
    keys: RwLock<Arc<KeyRing>>,
    /// One change series per accepted suite, the vendor's own suite first:
    /// change is minted in the suite of the scrip paid, because the
    /// customer secret that spends it belongs to that suite.
    change: Vec<SuiteChange>,
    /// Serialises changes of this vendor's keys and change-ID marks.
    admin: tokio::sync::Mutex<()>,
    store: KeyStore,
    ledger: Ledger,
    series_lifetime_secs: u64,
    /// The vendor's counters of accepted payments, registered once: the
    /// payment path counts with them instead of looking them up by name.
    pub(crate) counters: PaymentCounters,
}

/// Counters of the payments a vendor accepted.
#[derive(Debug)]
pub(crate) struct PaymentCounters {
    pub(crate) accepted: metrics::Counter,
    pub(crate) retried: metrics::Counter,
    pub(crate) value_redeemed: metrics::Counter,
    pub(crate) scrip_issued: metrics::Counter,
    pub(crate) scrip_issued_value: metrics::Counter,
}

impl PaymentCounters {
    fn register(vendor: &VendorName) -> PaymentCounters {
        let payments = |outcome: &'static str| {
            metrics::counter!(
                "millicent_vendor_payments_total",
                "vendor" => vendor.as_str().to_owned(),
                "outcome" => outcome
            )
        };
        let labels = [("vendor", vendor.as_str().to_owned())];
        PaymentCounters {
            accepted: payments("accepted"),
            retried: payments("retried"),
            value_redeemed: metrics::counter!("millicent_vendor_value_redeemed_total", &labels),
            scrip_issued: metrics::counter!("millicent_vendor_scrip_issued_total", &labels),
            scrip_issued_value: metrics::counter!(
                "millicent_vendor_scrip_issued_value_total",
                &labels
            ),
        }
    }
}

/// Where change of one suite comes from.
///
/// The vendor's own suite always has a change series. Another accepted
/// suite (one the vendor is moving away from) gets one only when a payment
/// in it first needs change, and gives it up when it is due for
/// replacement, so that a suite whose scrip no longer arrives stops
/// costing series.
#[derive(Debug)]
struct SuiteChange {
    suite: Suite,
    ids: ChangeIds,
    /// Set while a background reservation of change IDs is under way.
    refilling: AtomicBool,
}

impl SuiteChange {
    /// Change of `suite` with no series yet: the first take finds nothing
    /// and the refill that follows starts a series.
    fn unstarted(suite: Suite) -> SuiteChange {
        SuiteChange::continuing(
            suite,
            ChangeIds::new(0, 0, SERIES_CAPACITY, SERIES_CAPACITY),
        )
    }

    fn continuing(suite: Suite, ids: ChangeIds) -> SuiteChange {
        SuiteChange {
            suite,
            ids,
            refilling: AtomicBool::new(false),
        }
    }

    /// Whether a series was started (an unstarted cursor expires at 0).
    fn is_started(&self) -> bool {
        self.ids.position().expires_at != 0
    }
}

impl Vendor {
    /// Loads the vendor's keys, starts a change series if it has no usable
    /// one, and reserves the first block of change IDs.
    pub(crate) async fn open(
        catalogue: Catalogue,
        store: KeyStore,
        ledger: Ledger,
        series_lifetime_secs: u64,
        now: u64,
    ) -> Result<Vendor, VendorError> {
        let name = catalogue.name.clone();
        let stored = store.load(&name)?;
        // Dropping a suite while scrip of it is live would strand that
        // scrip in customers' wallets: refuse, and say how to move.
        if let Some(stranded) = stored.series.iter().find(|record| {
            record.key.expires_at > now && !catalogue.accepted_suites.contains(&record.key.suite)
        }) {
            let whose = match &stranded.holder {
                Holder::Node => "the node's change".to_owned(),
                Holder::Broker(broker) => format!("broker {broker}'s licence"),
            };
            return Err(VendorError::Config {
                detail: format!(
                    "vendor {name}: series {} ({whose}) holds live {} scrip until {}, and this \
                     configuration no longer accepts that suite; add \"{}\" to accept_suites \
                     until then (see docs/OPERATIONS.md, \"Cipher suites\"), or use another \
                     data_dir for a new deployment",
                    stranded.key.series,
                    stranded.key.suite.name(),
                    stranded.key.expires_at,
                    stranded.key.suite.name(),
                ),
            });
        }
        let mut ring = KeyRing::new(name.clone());
        for record in &stored.series {
            ring.add_series(record.key.clone());
        }
        for key in stored.customers {
            ring.add_customer_key(key);
        }

        // The newest own series of each accepted suite carries on, unless
        // it is due for replacement: then the vendor's own suite starts a
        // new one below and another suite waits until it needs change.
        let lifetime = series_lifetime_secs;
        let mut change = Vec::with_capacity(catalogue.accepted_suites.len());
        let mut to_refill = Vec::new();
        for &suite in &catalogue.accepted_suites {
            let current = stored
                .series
                .iter()
                .filter(|record| record.holder == Holder::Node && record.key.suite == suite)
                .max_by_key(|record| record.key.expires_at)
                .map(|record| (record.key.series, record.key.expires_at))
                .filter(|(_, expires_at)| !is_due(lifetime, *expires_at, now));
            match current {
                Some((series, expires_at)) => {
                    let mark = store.change_mark(&name, series)?;
                    let ids = ChangeIds::new(series, expires_at, mark, mark);
                    change.push(SuiteChange::continuing(suite, ids));
                    to_refill.push(suite);
                }
                None => change.push(SuiteChange::unstarted(suite)),
            }
        }

        let items = catalogue
            .items
            .iter()
            .enumerate()
            .map(|(index, item)| (item.name.as_bytes().to_vec(), index))
            .collect();
        let own_suite = catalogue.suite;
        let counters = PaymentCounters::register(&name);
        let vendor = Vendor {
            counters,
            catalogue,
            items,
            keys: RwLock::new(Arc::new(ring)),
            change,
            admin: tokio::sync::Mutex::new(()),
            store,
            ledger,
            series_lifetime_secs,
        };
        if !to_refill.contains(&own_suite) {
            let _admin = vendor.admin.lock().await;
            vendor.start_change_series(own_suite, now).await?;
        }
        for suite in to_refill {
            vendor.refill_change_ids(suite, now).await?;
        }
        Ok(vendor)
    }

    /// The vendor's name.
    pub(crate) fn name(&self) -> &VendorName {
        &self.catalogue.name
    }

    /// A snapshot of the key ring.
    pub(crate) fn key_ring(&self) -> Arc<KeyRing> {
        // Writers swap a whole `Arc` in one assignment, so a poisoned lock
        // still holds a complete ring.
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Whether the vendor takes scrip of `suite`.
    pub(crate) fn accepts_suite(&self, suite: Suite) -> bool {
        self.catalogue.accepted_suites.contains(&suite)
    }

    /// Whether the vendor takes payments in `variant`.
    pub(crate) fn accepts(&self, variant: Variant) -> bool {
        self.catalogue.variants.contains(&variant)
    }

    /// The item named by a plaintext request: an item of the price list,
    /// or a web request priced by the node's HTTP gateway.
    pub(crate) fn item(&self, request: &[u8]) -> Result<&Item, VendorError> {
        self.items
            .get(request)
            .and_then(|index| self.catalogue.items.get(*index))
            .or_else(|| self.catalogue.web.as_ref()?.item_for(request))
            .ok_or_else(|| VendorError::UnknownItem {
                vendor: self.name().clone(),
            })
    }

    /// A fresh ID# for change in `suite`, if the committed block has one
    /// left; `None` also for a suite the vendor does not accept.
    pub(crate) fn take_change_id(&self, suite: Suite) -> Option<Taken> {
        self.change_of(suite)?.ids.take()
    }

    /// Claims the right to run a background refill of `suite`'s change
    /// IDs; `false` if one runs.
    pub(crate) fn begin_background_refill(&self, suite: Suite) -> bool {
        self.change_of(suite)
            .is_some_and(|change| !change.refilling.swap(true, Ordering::AcqRel))
    }

    /// Ends what [`Vendor::begin_background_refill`] began.
    pub(crate) fn end_background_refill(&self, suite: Suite) {
        if let Some(change) = self.change_of(suite) {
            change.refilling.store(false, Ordering::Release);
        }
    }

    /// Reserves the next block of change IDs of `suite` if fewer than a
    /// quarter of a block are left, starting a new change series when the
    /// current one is full (or none was started). Returns once the new IDs
    /// are committed and usable.
    pub(crate) async fn refill_change_ids(
        &self,
        suite: Suite,
        now: u64,
    ) -> Result<(), VendorError> {
        let change = self
            .change_of(suite)
            .ok_or(VendorError::Protocol(Error::SuiteNotAccepted(suite.id())))?;
        let _admin = self.admin.lock().await;
        let position = change.ids.position();
        if position.remaining() >= LOW_WATER {
            return Ok(());
        }
        if position.limit >= SERIES_CAPACITY {
            return self.start_change_series(suite, now).await;
        }
        let mark = (position.limit + BLOCK).min(SERIES_CAPACITY);
        self.store
            .set_change_mark(self.name(), position.series, mark)?;
        self.commit_keys().await?;
        change.ids.extend(position.series, mark);
        Ok(())
    }

    /// Replaces every change series that has less than half its lifetime
    /// left: the vendor's own suite starts a new series at once, another
    /// suite gives its series up until a payment needs change again.
    /// Returns the suites whose series was replaced or given up.
    pub(crate) async fn rotate_change_series(&self, now: u64) -> Result<Vec<Suite>, VendorError> {
        let _admin = self.admin.lock().await;
        let mut rotated = Vec::new();
        for change in &self.change {
            if !change.is_started() || !self.is_due(change.ids.position().expires_at, now) {
                continue;
            }
            if change.suite == self.catalogue.suite {
                self.start_change_series(change.suite, now).await?;
            } else {
                change.ids.stop();
                tracing::info!(
                    vendor = %self.name(),
                    suite = change.suite.name(),
                    "change series of a secondary suite given up until needed"
                );
            }
            rotated.push(change.suite);
        }
        Ok(rotated)
    }

    /// Creates, commits and returns the keys of a new licence for `broker`;
    /// from then on the vendor accepts scrip minted under it.
    pub(crate) async fn grant_licence(
        &self,
        broker: &str,
        now: u64,
    ) -> Result<LicenceKeys, VendorError> {
        self.create_held_series(broker, now, "licence granted")
            .await
    }

    /// Whom `series` is held for, if the vendor has it on record.
    pub(crate) fn series_holder(&self, series: u32) -> Result<Option<Holder>, VendorError> {
        self.store.series_holder(self.name(), series)
    }

    /// Creates and commits a new series and customer selector held for
    /// `broker` (a licence, or a block of scrip sold to it), and adds both
    /// to the key ring; logs `event` once done.
    pub(crate) async fn create_held_series(
        &self,
        broker: &str,
        now: u64,
        event: &'static str,
    ) -> Result<LicenceKeys, VendorError> {
        let _admin = self.admin.lock().await;
        let expires_at = now.saturating_add(self.series_lifetime_secs);
        let licence = self.store.create_licence(
            self.name(),
            self.catalogue.suite,
            broker,
            now,
            expires_at,
        )?;
        self.commit_keys().await?;
        self.update_ring(|ring| {
            ring.add_series(licence.series.clone());
            ring.add_customer_key(licence.customer.clone());
        });
        tracing::info!(
            vendor = %self.name(),
            broker,
            series = licence.series.series,
            customer_selector = licence.customer.selector,
            expires_at,
            "{event}"
        );
        Ok(licence)
    }

    /// Forgets every series expired more than `grace_secs` ago: its key,
    /// its spent IDs and its change mark. No scrip of such a series can be
    /// accepted any more (its key is gone), so its spent IDs are no longer
    /// needed. Customer keys are kept: change in the own series carries the
    /// Cust ID#s of licences long expired. Returns the series forgotten.
    pub(crate) async fn forget_expired_series(
        &self,
        spends: &SpendStore,
        now: u64,
        grace_secs: u64,
    ) -> Result<Vec<u32>, VendorError> {
        let _admin = self.admin.lock().await;
        let current: Vec<u32> = self
            .change
            .iter()
            .filter(|change| change.is_started())
            .map(|change| change.ids.position().series)
            .collect();
        let expired: Vec<u32> = self
            .key_ring()
            .all_series()
            .filter(|key| !current.contains(&key.series))
            .filter(|key| key.expires_at.saturating_add(grace_secs) <= now)
            .map(|key| key.series)
            .collect();
        if expired.is_empty() {
            return Ok(expired);
        }
        // The key goes first: once it is gone, no payment of the series
        // can reach the spent-ID check that forgetting removes.
        self.update_ring(|ring| {
            let mut kept = KeyRing::new(ring.vendor().clone());
            for key in ring
                .all_series()
                .filter(|key| !expired.contains(&key.series))
            {
                kept.add_series(key.clone());
            }
            for key in ring.all_customer_keys() {
                kept.add_customer_key(key.clone());
            }
            *ring = kept;
        });
        for series in &expired {
            spends.forget_series(self.name(), *series)?;
            self.store.remove_series(self.name(), *series)?;
        }
        self.commit_keys().await?;
        tracing::info!(vendor = %self.name(), series = ?expired, "expired series forgotten");
        Ok(expired)
    }

    /// Whether a change series expiring at `expires_at` should be replaced.
    fn is_due(&self, expires_at: u64, now: u64) -> bool {
        is_due(self.series_lifetime_secs, expires_at, now)
    }

    fn change_of(&self, suite: Suite) -> Option<&SuiteChange> {
        self.change.iter().find(|change| change.suite == suite)
    }

    /// Creates and commits a new change series of `suite` with its first
    /// block of IDs reserved, then moves that suite's change to it. The
    /// caller holds the admin lock.
    async fn start_change_series(&self, suite: Suite, now: u64) -> Result<(), VendorError> {
        let change = self
            .change_of(suite)
            .ok_or(VendorError::Protocol(Error::SuiteNotAccepted(suite.id())))?;
        let expires_at = now.saturating_add(self.series_lifetime_secs);
        let key = self
            .store
            .create_own_series(self.name(), suite, now, expires_at, BLOCK)?;
        self.commit_keys().await?;
        let series = key.series;
        // The ring gets the key before any change ID# of the series exists.
        self.update_ring(|ring| ring.add_series(key));
        change.ids.switch(series, expires_at, BLOCK);
        tracing::info!(
            vendor = %self.name(),
            suite = suite.name(),
            series,
            expires_at,
            "change series started"
        );
        Ok(())
    }

    /// Makes every write made so far durable, whatever the durability mode.
    async fn commit_keys(&self) -> Result<(), VendorError> {
        match self.ledger.durability() {
            Durability::Strict => self.ledger.commit().await?,
            Durability::Relaxed { .. } => {
                let ledger = self.ledger.clone();
                tokio::task::spawn_blocking(move || ledger.flush_blocking())
                    .await
                    .map_err(|error| LedgerError::Storage {
                        operation: "flush key material",
                        detail: error.to_string(),
                    })??;
            }
        }
        Ok(())
    }

    fn update_ring(&self, change: impl FnOnce(&mut KeyRing)) {
        let mut guard = self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut ring = KeyRing::clone(&guard);
        change(&mut ring);
        *guard = Arc::new(ring);
    }
}

/// Whether a change series expiring at `expires_at` has less than half of
/// a lifetime of `lifetime` seconds left.
fn is_due(lifetime: u64, expires_at: u64, now: u64) -> bool {
    expires_at.saturating_sub(now) < lifetime / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VendorConfig;
    use millicent_core::ScripId;
    use millicent_ledger::Durability;

    const NOW: u64 = 1_800_000_000;
    const LIFETIME: u64 = 10_000;

    async fn open(ledger: &Ledger, now: u64) -> Vendor {
        let settings = VendorConfig::default().validate().unwrap();
        let store = KeyStore::open(ledger, "vendor-1", settings.cluster.own()).unwrap();
        let catalogue = settings.catalogues.into_iter().next().unwrap();
        Vendor::open(catalogue, store, ledger.clone(), LIFETIME, now)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn dropping_a_suite_with_live_scrip_is_refused_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let classic = |accept: &[&str]| {
            let mut config = VendorConfig::default();
            config.vendors[0].suite = "classic".to_owned();
            config.vendors[0].accept_suites = accept.iter().map(|s| s.to_string()).collect();
            config
        };
        let open_with = |config: VendorConfig, now: u64| {
            let ledger = ledger.clone();
            async move {
                let settings = config.validate().unwrap();
                let store = KeyStore::open(&ledger, "vendor-1", settings.cluster.own()).unwrap();
                let catalogue = settings.catalogues.into_iter().next().unwrap();
                Vendor::open(catalogue, store, ledger, LIFETIME, now).await
            }
        };
        drop(open_with(classic(&[]), NOW).await.unwrap());

        let error = match open_with(VendorConfig::default(), NOW + 1).await {
            Ok(_) => panic!("a vendor dropping live classic scrip opened"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("live classic scrip"), "{error}");
        assert!(error.contains("accept_suites"), "{error}");
        // Listing the old suite is the way to move; once its series is
        // past expiry, nothing is stranded and the old suite may go.
        let mut moving = VendorConfig::default();
        moving.vendors[0].accept_suites = vec!["modern".to_owned(), "classic".to_owned()];
        drop(open_with(moving, NOW + 2).await.unwrap());
        let later = NOW + 10 * LIFETIME;
        drop(open_with(VendorConfig::default(), later).await.unwrap());
    }

    fn next_id(vendor: &Vendor) -> ScripId {
        vendor.take_change_id(Suite::DEFAULT).unwrap().slot.id
    }

    #[tokio::test]
    async fn change_ids_continue_above_the_committed_mark() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let vendor = open(&ledger, NOW).await;
        assert_eq!(next_id(&vendor), ScripId::new(1, 0));

        // Running low, the vendor reserves the next block before the first
        // is used up.
        let last = loop {
            let taken = vendor.take_change_id(Suite::DEFAULT).unwrap();
            if taken.running_low {
                break taken.slot.id;
            }
        };
        assert_eq!(u64::from(last.seq()), BLOCK - LOW_WATER);
        vendor.refill_change_ids(Suite::DEFAULT, NOW).await.unwrap();
        assert_eq!(vendor.change[0].ids.position().limit, 2 * BLOCK);
        assert_eq!(next_id(&vendor).seq(), last.seq() + 1);
        drop(vendor);

        // After a restart, change continues above the mark committed last.
        let vendor = open(&ledger, NOW).await;
        assert_eq!(next_id(&vendor), ScripId::new(1, (2 * BLOCK) as u32));
    }

    #[tokio::test]
    async fn a_change_series_is_replaced_at_half_life_and_forgotten_after_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let spends = SpendStore::open(&ledger, "spends", 600).unwrap();
        let vendor = open(&ledger, NOW).await;
        let first = next_id(&vendor);
        let spent = |id| spends.spend(vendor.name(), id, b"f", NOW, || Ok::<_, ()>(vec![]));
        assert!(spent(first).is_ok());

        let half = NOW + LIFETIME / 2;
        assert!(
            vendor
                .rotate_change_series(half - 1)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            vendor.rotate_change_series(half + 1).await.unwrap(),
            [Suite::DEFAULT]
        );
        assert_eq!(next_id(&vendor), ScripId::new(2, 0));
        assert!(vendor.key_ring().series(1).is_some());

        // Series 1 stays, spent IDs and all, until expiry plus grace.
        let forget_at = NOW + LIFETIME + 600;
        let forgotten = vendor.forget_expired_series(&spends, forget_at - 1, 600);
        assert!(forgotten.await.unwrap().is_empty());
        assert!(spends.is_spent(vendor.name(), first));
        let forgotten = vendor.forget_expired_series(&spends, forget_at, 600);
        assert_eq!(forgotten.await.unwrap(), vec![1]);
        assert!(!spends.is_spent(vendor.name(), first));
        assert!(vendor.key_ring().series(1).is_none());
        assert!(vendor.key_ring().series(2).is_some());
        drop(vendor);

        // The forgotten key stays gone after a restart, and its number is
        // not reused.
        let vendor = open(&ledger, half + 2).await;
        assert!(vendor.key_ring().series(1).is_none());
        let licence = vendor.grant_licence("broker-1", half + 2).await.unwrap();
        assert_eq!(licence.series.series, 3);
    }

    #[tokio::test]
    async fn a_node_that_was_off_too_long_starts_a_fresh_change_series() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        drop(open(&ledger, NOW).await);
        let vendor = open(&ledger, NOW + LIFETIME).await;
        assert_eq!(next_id(&vendor), ScripId::new(2, 0));
        assert_eq!(
            vendor
                .take_change_id(Suite::DEFAULT)
                .unwrap()
                .slot
                .expires_at,
            NOW + 2 * LIFETIME
        );
    }

    #[tokio::test]
    async fn a_secondary_suite_starts_change_when_needed_and_gives_it_up_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let mut settings = VendorConfig::default();
        settings.vendors[0].accept_suites = vec!["modern".into(), "classic".into()];
        let settings = settings.validate().unwrap();
        let store = KeyStore::open(&ledger, "vendor-1", settings.cluster.own()).unwrap();
        let catalogue = settings.catalogues.into_iter().next().unwrap();
        let vendor = Vendor::open(catalogue, store, ledger.clone(), LIFETIME, NOW)
            .await
            .unwrap();
        assert_eq!(next_id(&vendor), ScripId::new(1, 0));

        // No classic series exists until a payment needs classic change.
        assert!(vendor.take_change_id(Suite::Classic).is_none());
        vendor.refill_change_ids(Suite::Classic, NOW).await.unwrap();
        let classic = vendor.take_change_id(Suite::Classic).unwrap().slot.id;
        assert_eq!(classic, ScripId::new(2, 0));
        assert_eq!(vendor.key_ring().series(2).unwrap().suite, Suite::Classic);

        // At half life the own suite moves on, the classic one stops.
        let half = NOW + LIFETIME / 2 + 1;
        let rotated = vendor.rotate_change_series(half).await.unwrap();
        assert_eq!(rotated, [Suite::Modern, Suite::Classic]);
        assert_eq!(next_id(&vendor), ScripId::new(3, 0));
        assert!(vendor.take_change_id(Suite::Classic).is_none());
        assert!(vendor.rotate_change_series(half).await.unwrap().is_empty());

        // Both old series are forgotten after expiry; the current one stays.
        let spends = SpendStore::open(&ledger, "spends", 600).unwrap();
        let forgotten = vendor.forget_expired_series(&spends, NOW + LIFETIME + 600, 600);
        let mut forgotten = forgotten.await.unwrap();
        forgotten.sort_unstable();
        assert_eq!(forgotten, vec![1, 2]);
        assert!(vendor.key_ring().series(3).is_some());
    }

    #[tokio::test]
    async fn a_suite_the_vendor_does_not_accept_has_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let vendor = open(&ledger, NOW).await;
        assert!(vendor.take_change_id(Suite::Classic).is_none());
        let refused = vendor.refill_change_ids(Suite::Classic, NOW).await;
        assert_eq!(refused.unwrap_err().reason(), "suite_not_accepted");
        assert!(
            vendor
                .key_ring()
                .all_series()
                .all(|key| key.suite == Suite::Modern)
        );
    }
}
