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

use millicent_core::{KeyRing, Suite, Variant, VendorName};
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
    change: ChangeIds,
    /// Serialises changes of this vendor's keys and change-ID marks.
    admin: tokio::sync::Mutex<()>,
    /// Set while a background reservation of change IDs is under way.
    refilling: AtomicBool,
    store: KeyStore,
    ledger: Ledger,
    series_lifetime_secs: u64,
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
        let mut ring = KeyRing::new(name.clone());
        for record in &stored.series {
            ring.add_series(record.key.clone());
        }
        for key in stored.customers {
            ring.add_customer_key(key);
        }

        // The newest own series of the configured suite carries on, unless
        // it is due for replacement, in which case a new one starts below.
        let current = stored
            .series
            .iter()
            .filter(|record| record.holder == Holder::Node && record.key.suite == catalogue.suite)
            .max_by_key(|record| record.key.expires_at)
            .map(|record| (record.key.series, record.key.expires_at));
        let change = match current {
            Some((series, expires_at)) => {
                let mark = store.change_mark(&name, series)?;
                ChangeIds::new(series, expires_at, mark, mark)
            }
            // An exhausted cursor: the first refill below starts a series.
            None => ChangeIds::new(0, 0, SERIES_CAPACITY, SERIES_CAPACITY),
        };

        let items = catalogue
            .items
            .iter()
            .enumerate()
            .map(|(index, item)| (item.name.as_bytes().to_vec(), index))
            .collect();
        let vendor = Vendor {
            catalogue,
            items,
            keys: RwLock::new(Arc::new(ring)),
            change,
            admin: tokio::sync::Mutex::new(()),
            refilling: AtomicBool::new(false),
            store,
            ledger,
            series_lifetime_secs,
        };
        if current.is_none_or(|(_, expires_at)| vendor.is_due(expires_at, now)) {
            let _admin = vendor.admin.lock().await;
            vendor.start_change_series(now).await?;
        } else {
            vendor.refill_change_ids(now).await?;
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

    /// The item named by a plaintext request.
    pub(crate) fn item(&self, request: &[u8]) -> Result<&Item, VendorError> {
        self.items
            .get(request)
            .and_then(|index| self.catalogue.items.get(*index))
            .ok_or_else(|| VendorError::UnknownItem {
                vendor: self.name().clone(),
            })
    }

    /// A fresh ID# for change, if the committed block has one left.
    pub(crate) fn take_change_id(&self) -> Option<Taken> {
        self.change.take()
    }

    /// Claims the right to run a background refill; `false` if one runs.
    pub(crate) fn begin_background_refill(&self) -> bool {
        !self.refilling.swap(true, Ordering::AcqRel)
    }

    /// Ends what [`Vendor::begin_background_refill`] began.
    pub(crate) fn end_background_refill(&self) {
        self.refilling.store(false, Ordering::Release);
    }

    /// Reserves the next block of change IDs if fewer than a quarter of a
    /// block are left, starting a new change series when the current one is
    /// full. Returns once the new IDs are committed and usable.
    pub(crate) async fn refill_change_ids(&self, now: u64) -> Result<(), VendorError> {
        let _admin = self.admin.lock().await;
        let position = self.change.position();
        if position.remaining() >= LOW_WATER {
            return Ok(());
        }
        if position.limit >= SERIES_CAPACITY {
            return self.start_change_series(now).await;
        }
        let mark = (position.limit + BLOCK).min(SERIES_CAPACITY);
        self.store
            .set_change_mark(self.name(), position.series, mark)?;
        self.commit_keys().await?;
        self.change.extend(position.series, mark);
        Ok(())
    }

    /// Starts a new change series if the current one has less than half its
    /// lifetime left. Returns whether it did.
    pub(crate) async fn rotate_change_series(&self, now: u64) -> Result<bool, VendorError> {
        let _admin = self.admin.lock().await;
        if !self.is_due(self.change.position().expires_at, now) {
            return Ok(false);
        }
        self.start_change_series(now).await?;
        Ok(true)
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
        let current = self.change.position().series;
        let expired: Vec<u32> = self
            .key_ring()
            .all_series()
            .filter(|key| key.series != current)
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
        expires_at.saturating_sub(now) < self.series_lifetime_secs / 2
    }

    /// Creates and commits a new change series with its first block of IDs
    /// reserved, then moves change to it. The caller holds the admin lock.
    async fn start_change_series(&self, now: u64) -> Result<(), VendorError> {
        let expires_at = now.saturating_add(self.series_lifetime_secs);
        let key = self.store.create_own_series(
            self.name(),
            self.catalogue.suite,
            now,
            expires_at,
            BLOCK,
        )?;
        self.commit_keys().await?;
        let series = key.series;
        // The ring gets the key before any change ID# of the series exists.
        self.update_ring(|ring| ring.add_series(key));
        self.change.switch(series, expires_at, BLOCK);
        tracing::info!(vendor = %self.name(), series, expires_at, "change series started");
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

    fn next_id(vendor: &Vendor) -> ScripId {
        vendor.take_change_id().unwrap().slot.id
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
            let taken = vendor.take_change_id().unwrap();
            if taken.running_low {
                break taken.slot.id;
            }
        };
        assert_eq!(u64::from(last.seq()), BLOCK - LOW_WATER);
        vendor.refill_change_ids(NOW).await.unwrap();
        assert_eq!(vendor.change.position().limit, 2 * BLOCK);
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
        assert!(!vendor.rotate_change_series(half - 1).await.unwrap());
        assert!(vendor.rotate_change_series(half + 1).await.unwrap());
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
            vendor.take_change_id().unwrap().slot.expires_at,
            NOW + 2 * LIFETIME
        );
    }
}
