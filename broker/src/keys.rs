//! The broker's own secrets: the series of its broker scrip, the master
//! customer secret of broker scrip, and the master account secret.
//!
//! Every secret is drawn from the operating system's random number generator
//! the first time it is needed and kept in the `keys` table, in a data
//! directory only the broker's user may read. Account keys are not stored:
//! each is derived from the master account secret and the account ID.
//!
//! # Series
//!
//! A broker-scrip series lives twice the configured scrip lifetime. A new
//! series is started once less than half of the current one remains (or
//! its sequence numbers run out), so scrip minted now always expires with
//! its full lifetime inside its series. Older series stay in the key ring,
//! and their scrip stays spendable, until they expire; an hour after that
//! they are retired: key deleted, spent IDs forgotten. Series numbers carry
//! the shard in their top byte (see `millicent_core::broker`), count up
//! from 1 within it and are never reused.
//!
//! Every shard has secrets of its own: its broker scrip is checked only
//! by the shard, and its account keys derive from its own master account
//! secret.
//!
//! # Keys (table `keys`)
//!
//! - `account-secret` → suite (1) ‖ master account secret (32)
//! - `customer-key` → suite (1) ‖ selector (2) ‖ master customer secret (32)
//! - `series/` ‖ series (4) → suite (1) ‖ expiry, Unix seconds (8) ‖
//!   master scrip secret (32)
//! - `next-series` → the next series number (4)
//!
//! All integers are big-endian. Licences share the table under `licence/`
//! (see the `licences` module).

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use millicent_core::account::account_key;
use millicent_core::broker::{broker_series, series_shard};
use millicent_core::secret::MASTER_SECRET_LEN;
use millicent_core::{
    AccountKey, CustId, CustomerKey, KeyRing, MasterSecret, ScripId, SeriesKey, Suite, VendorName,
};
use millicent_ledger::{Batch, LedgerError, SpendStore, Table};
use rand::TryRng;
use zeroize::Zeroizing;

use crate::BrokerError;
use crate::allocate::{self, Allocator};

const ACCOUNT_SECRET_KEY: &[u8] = b"account-secret";
const CUSTOMER_KEY_KEY: &[u8] = b"customer-key";
const SERIES_PREFIX: &[u8] = b"series/";
const NEXT_SERIES_KEY: &[u8] = b"next-series";

/// The customer selector of every broker scrip's Cust ID#.
const CUSTOMER_SELECTOR: u16 = 1;
/// How long after its expiry a series is retired. Its scrip is refused as
/// expired from the expiry on; the grace only keeps clock trouble from
/// turning into an unknown-series error.
const RETIRE_GRACE_SECS: u64 = 60 * 60;

/// The broker's secrets and the issuing of its broker scrip, in one shard.
pub(crate) struct BrokerKeys {
    name: VendorName,
    shard: u8,
    suite: Suite,
    keys: Table,
    ids: Table,
    series_lifetime_secs: u64,
    account_secret: MasterSecret,
    customers: Allocator,
    ring: RwLock<Arc<KeyRing>>,
    issuing: Mutex<Issuing>,
}

/// The series new broker scrip is minted in.
struct Issuing {
    series: u32,
    expires_at: u64,
    seqs: Allocator,
    next_series: u32,
}

impl BrokerKeys {
    /// Loads the broker's secrets, creating any that do not exist yet, and
    /// starts a new series if the current one is due.
    pub(crate) fn open(
        keys: &Table,
        ids: &Table,
        name: &VendorName,
        shard: u8,
        suite: Suite,
        scrip_lifetime_secs: u64,
        now: u64,
    ) -> Result<BrokerKeys, BrokerError> {
        let account_secret = load_or_create(keys, ACCOUNT_SECRET_KEY, suite, &[])?;
        let selector = CUSTOMER_SELECTOR.to_be_bytes();
        let customer_secret = load_or_create(keys, CUSTOMER_KEY_KEY, suite, &selector)?;

        let mut ring = KeyRing::new(name.clone());
        ring.add_customer_key(CustomerKey {
            selector: CUSTOMER_SELECTOR,
            suite,
            secret: customer_secret,
        });
        let mut newest: Option<SeriesKey> = None;
        for entry in keys.scan_prefix(SERIES_PREFIX) {
            let (key, value) = entry?;
            let series = decode_series(&key, &Zeroizing::new(value))?;
            if newest
                .as_ref()
                .is_none_or(|newest| series.expires_at > newest.expires_at)
            {
                newest = Some(series.clone());
            }
            ring.add_series(series);
        }
        let first_series = broker_series(shard, 1)?;
        let next_series = match keys.get(NEXT_SERIES_KEY)? {
            None => first_series,
            Some(bytes) => u32::from_be_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| unreadable("next-series"))?,
            ),
        };
        if series_shard(next_series) != shard {
            return Err(BrokerError::Config {
                detail: format!(
                    "this store holds the keys of another shard than {shard}; every shard                      has its own data directory, shard-{shard}"
                ),
            });
        }

        let issuing = match newest {
            Some(series) => Issuing {
                series: series.series,
                expires_at: series.expires_at,
                seqs: Allocator::series(ids, name, series.series)?,
                next_series,
            },
            // No series yet: `rotate_if_due` below starts the first one
            // (series numbers start at 1, so 0 means none).
            None => Issuing {
                series: 0,
                expires_at: 0,
                seqs: Allocator::series(ids, name, 0)?,
                next_series,
            },
        };
        let broker_keys = BrokerKeys {
            name: name.clone(),
            shard,
            suite,
            keys: keys.clone(),
            ids: ids.clone(),
            series_lifetime_secs: scrip_lifetime_secs.saturating_mul(2),
            account_secret,
            customers: Allocator::customers(ids, name, CUSTOMER_SELECTOR)?,
            ring: RwLock::new(Arc::new(ring)),
            issuing: Mutex::new(issuing),
        };
        broker_keys.rotate_if_due(now)?;
        Ok(broker_keys)
    }

    /// The key of account `account_id`.
    pub(crate) fn account_key(&self, account_id: u64) -> AccountKey {
        account_key(&self.account_secret, account_id)
    }

    /// The broker's name, the vendor of its scrip.
    pub(crate) fn name(&self) -> &VendorName {
        &self.name
    }

    /// Every series and the customer key: what mints and checks broker scrip.
    pub(crate) fn ring(&self) -> Arc<KeyRing> {
        self.ring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A fresh ID# for broker scrip, and the expiry of its series. Starts a
    /// new series first when the current one is due; take the key ring to
    /// mint with only after this call.
    pub(crate) fn next_scrip_id(&self, now: u64) -> Result<(ScripId, u64), BrokerError> {
        let mut issuing = self.issuing.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_due(&issuing, now) {
            self.start_series(&mut issuing, now)?;
        }
        if let Some(seq) = issuing.seqs.next_seq()? {
            return Ok((ScripId::new(issuing.series, seq), issuing.expires_at));
        }
        self.start_series(&mut issuing, now)?;
        match issuing.seqs.next_seq()? {
            Some(seq) => Ok((ScripId::new(issuing.series, seq), issuing.expires_at)),
            None => Err(LedgerError::Storage {
                operation: "allocate ID#",
                detail: "a new series has no sequence numbers".to_owned(),
            }
            .into()),
        }
    }

    /// A fresh Cust ID# for broker scrip.
    pub(crate) fn next_cust_id(&self) -> Result<CustId, BrokerError> {
        let number = self.customers.next()?.ok_or_else(|| LedgerError::Storage {
            operation: "allocate Cust ID#",
            detail: "every Cust ID# of the broker's selector has been issued".to_owned(),
        })?;
        Ok(CustId::new(CUSTOMER_SELECTOR, number)?)
    }

    /// Starts a new series if the current one is due.
    pub(crate) fn rotate_if_due(&self, now: u64) -> Result<(), BrokerError> {
        let mut issuing = self.issuing.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_due(&issuing, now) {
            self.start_series(&mut issuing, now)?;
        }
        Ok(())
    }

    /// Retires every series that expired more than an hour ago: deletes its
    /// key and forgets its spent IDs. Returns how many were retired.
    pub(crate) fn retire_expired(
        &self,
        now: u64,
        spends: &SpendStore,
    ) -> Result<usize, BrokerError> {
        let mut ring = self.ring.write().unwrap_or_else(PoisonError::into_inner);
        let expired: Vec<u32> = ring
            .all_series()
            .filter(|key| key.expires_at.saturating_add(RETIRE_GRACE_SECS) <= now)
            .map(|key| key.series)
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }

        for series in &expired {
            self.keys.remove(series_key(*series))?;
            allocate::forget_series(&self.ids, &self.name, *series)?;
            spends.forget_series(&self.name, *series)?;
            tracing::info!(broker = %self.name, series, "broker-scrip series retired");
        }
        let mut kept = KeyRing::new(self.name.clone());
        for key in ring
            .all_series()
            .filter(|key| !expired.contains(&key.series))
        {
            kept.add_series(key.clone());
        }
        for key in ring.all_customer_keys() {
            kept.add_customer_key(key.clone());
        }
        *ring = Arc::new(kept);
        Ok(expired.len())
    }

    fn is_due(&self, issuing: &Issuing, now: u64) -> bool {
        let remaining = issuing.expires_at.saturating_sub(now);
        issuing.series == 0
            || remaining < self.series_lifetime_secs / 2
            || issuing.seqs.is_exhausted()
    }

    fn start_series(&self, issuing: &mut Issuing, now: u64) -> Result<(), BrokerError> {
        let series = issuing.next_series;
        let next_series = series
            .checked_add(1)
            .filter(|next| series_shard(*next) == self.shard)
            .ok_or_else(|| BrokerError::Server {
                detail: format!("every series number of shard {} has been used", self.shard),
            })?;
        let key = SeriesKey {
            series,
            suite: self.suite,
            expires_at: now.saturating_add(self.series_lifetime_secs),
            secret: MasterSecret::new(self.suite, *random_secret()?),
        };

        let mut batch = Batch::default();
        batch.insert(series_key(series), encode_series(&key));
        batch.insert(NEXT_SERIES_KEY, next_series.to_be_bytes());
        self.keys.apply(batch)?;
        let seqs = Allocator::series(&self.ids, &self.name, series)?;

        {
            let mut ring = self.ring.write().unwrap_or_else(PoisonError::into_inner);
            let mut updated = KeyRing::clone(&ring);
            updated.add_series(key.clone());
            *ring = Arc::new(updated);
        }
        *issuing = Issuing {
            series,
            expires_at: key.expires_at,
            seqs,
            next_series,
        };
        tracing::info!(
            broker = %self.name,
            series,
            expires_at = key.expires_at,
            "broker-scrip series started"
        );
        Ok(())
    }
}

/// The broker-scrip series whose keys `keys` still holds, for audits.
pub(crate) fn live_series(keys: &Table) -> Result<std::collections::BTreeSet<u32>, BrokerError> {
    let mut live = std::collections::BTreeSet::new();
    for entry in keys.scan_prefix(SERIES_PREFIX) {
        let (key, _) = entry?;
        let series = key
            .strip_prefix(SERIES_PREFIX)
            .and_then(|number| number.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| unreadable("series key"))?;
        live.insert(series);
    }
    Ok(live)
}

/// 32 bytes from the operating system's random number generator, wiped
/// when dropped.
pub(crate) fn random_secret() -> Result<Zeroizing<[u8; MASTER_SECRET_LEN]>, BrokerError> {
    let mut bytes = Zeroizing::new([0u8; MASTER_SECRET_LEN]);
    rand::rngs::SysRng
        .try_fill_bytes(bytes.as_mut())
        .map_err(|error| BrokerError::Server {
            detail: format!("the operating system's random number generator failed: {error}"),
        })?;
    Ok(bytes)
}

/// Reads the secret stored at `key` (suite byte, then `extra`, then the
/// secret), or draws and stores a new one.
fn load_or_create(
    keys: &Table,
    key: &[u8],
    suite: Suite,
    extra: &[u8],
) -> Result<MasterSecret, BrokerError> {
    let what = String::from_utf8_lossy(key).into_owned();
    if let Some(value) = keys.get(key)?.map(Zeroizing::new) {
        let stored_suite = *value.first().ok_or_else(|| unreadable(&what))?;
        if stored_suite != suite.id() {
            return Err(BrokerError::Config {
                detail: format!(
                    "the data directory's {what} was made for cipher suite {stored_suite}, \
                     but the configuration asks for suite {} ({}); use the data directory \
                     with its own suite or start from an empty one",
                    suite.id(),
                    suite.name()
                ),
            });
        }
        let rest = &value[1..];
        if rest.len() != extra.len() + MASTER_SECRET_LEN || !rest.starts_with(extra) {
            return Err(unreadable(&what));
        }
        return Ok(MasterSecret::from_slice(suite, &rest[extra.len()..])?);
    }

    let secret = MasterSecret::new(suite, *random_secret()?);
    let mut value = Zeroizing::new(Vec::with_capacity(1 + extra.len() + MASTER_SECRET_LEN));
    value.push(suite.id());
    value.extend_from_slice(extra);
    value.extend_from_slice(secret.expose_bytes());
    keys.insert(key, value)?;
    Ok(secret)
}

fn series_key(series: u32) -> Vec<u8> {
    let mut key = SERIES_PREFIX.to_vec();
    key.extend_from_slice(&series.to_be_bytes());
    key
}

fn encode_series(key: &SeriesKey) -> Zeroizing<Vec<u8>> {
    let mut value = Zeroizing::new(Vec::with_capacity(1 + 8 + MASTER_SECRET_LEN));
    value.push(key.suite.id());
    value.extend_from_slice(&key.expires_at.to_be_bytes());
    value.extend_from_slice(key.secret.expose_bytes());
    value
}

fn decode_series(key: &[u8], value: &[u8]) -> Result<SeriesKey, BrokerError> {
    let series = key
        .strip_prefix(SERIES_PREFIX)
        .and_then(|number| number.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| unreadable("series key"))?;
    if value.len() != 1 + 8 + MASTER_SECRET_LEN {
        return Err(unreadable("series"));
    }
    let suite = Suite::from_id(value[0])?;
    let expires_at = value[1..9]
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| unreadable("series"))?;
    Ok(SeriesKey {
        series,
        suite,
        expires_at,
        secret: MasterSecret::from_slice(suite, &value[9..])?,
    })
}

fn unreadable(what: &str) -> BrokerError {
    BrokerError::Storage(LedgerError::Storage {
        operation: "load broker keys",
        detail: format!("stored {what} is unreadable"),
    })
}

#[cfg(test)]
mod tests {
    use millicent_core::{Amount, Properties, ScripBody};
    use millicent_ledger::{Durability, Ledger};

    use super::*;

    const NOW: u64 = 1_800_000_000;
    const LIFETIME: u64 = 1000;

    fn name() -> VendorName {
        VendorName::new("broker.local").unwrap()
    }

    fn open(ledger: &Ledger, now: u64) -> BrokerKeys {
        let keys = ledger.table("keys").unwrap();
        let ids = ledger.table("ids").unwrap();
        BrokerKeys::open(&keys, &ids, &name(), 0, Suite::Classic, LIFETIME, now).unwrap()
    }

    fn mint(keys: &BrokerKeys, now: u64) -> millicent_core::Scrip {
        let (id, _) = keys.next_scrip_id(now).unwrap();
        let body = ScripBody {
            suite: Suite::Classic,
            vendor: name(),
            value: Amount::new(5),
            id,
            cust_id: keys.next_cust_id().unwrap(),
            expires_at: now + LIFETIME,
            properties: Properties::default(),
        };
        keys.ring().mint(body).unwrap()
    }

    #[tokio::test]
    async fn a_shard_mints_in_its_own_series_and_refuses_another_shards_store() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let (table, ids) = (ledger.table("keys").unwrap(), ledger.table("ids").unwrap());
        let keys =
            BrokerKeys::open(&table, &ids, &name(), 2, Suite::Classic, LIFETIME, NOW).unwrap();
        let (id, _) = keys.next_scrip_id(NOW).unwrap();
        assert_eq!(id.series(), broker_series(2, 1).unwrap());
        drop(keys);
        let other = BrokerKeys::open(&table, &ids, &name(), 3, Suite::Classic, LIFETIME, NOW);
        assert!(matches!(other, Err(BrokerError::Config { .. })));
    }

    #[tokio::test]
    async fn debug_output_shows_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let keys = open(&ledger, NOW);
        let account_key = keys.account_key(7);
        let ring = keys.ring();

        let text = format!("{account_key:?} {ring:?} {ring:#?}");
        let secrets = [
            account_key.expose_bytes(),
            keys.account_secret.expose_bytes(),
        ]
        .into_iter()
        .chain(ring.all_series().map(|key| &key.secret.expose_bytes()[..]))
        .chain(
            ring.all_customer_keys()
                .map(|key| &key.secret.expose_bytes()[..]),
        );
        for secret in secrets {
            let hex: String = secret[..4]
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            let decimal: Vec<String> = secret[..4].iter().map(u8::to_string).collect();
            assert!(!text.contains(&hex), "{text}");
            assert!(!text.contains(&decimal.join(", ")), "{text}");
        }
        assert!(text.contains("AccountKey(..)") && text.contains("MasterSecret(..)"));
    }

    #[tokio::test]
    async fn secrets_survive_reopen_and_scrip_stays_valid() {
        let dir = tempfile::tempdir().unwrap();
        let (scrip, account_key) = {
            let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
            let keys = open(&ledger, NOW);
            let scrip = mint(&keys, NOW);
            let account_key = keys.account_key(7);
            drop(keys);
            ledger.commit().await.unwrap();
            ledger.close().await.unwrap();
            (scrip, account_key)
        };
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let keys = open(&ledger, NOW + 1);
        assert_eq!(keys.account_key(7), account_key);
        assert_ne!(keys.account_key(8), account_key);
        assert_eq!(keys.ring().verify(&scrip, NOW + 1), Ok(()));
        let again = mint(&keys, NOW + 1);
        assert_ne!(again.id(), scrip.id());
        assert_ne!(again.body().cust_id, scrip.body().cust_id);
    }

    #[tokio::test]
    async fn a_new_series_starts_at_half_life_and_old_ones_retire_after_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let spends = SpendStore::open(&ledger, "spends", 600).unwrap();
        let keys = open(&ledger, NOW);
        let first = mint(&keys, NOW);

        // The first series lives 2 * LIFETIME; past half of it a new one starts.
        let later = NOW + LIFETIME + 1;
        let second = mint(&keys, later);
        assert_ne!(first.id().series(), second.id().series());
        // The old series stays in the ring: scrip minted in it late in its
        // life is still spendable.
        assert!(keys.ring().series(first.id().series()).is_some());

        let retired_at = NOW + 2 * LIFETIME + RETIRE_GRACE_SECS;
        assert_eq!(keys.retire_expired(retired_at - 1, &spends).unwrap(), 0);
        assert_eq!(keys.retire_expired(retired_at, &spends).unwrap(), 1);
        assert!(keys.ring().series(first.id().series()).is_none());
        assert!(keys.ring().series(second.id().series()).is_some());
    }
}
