//! One shard of the broker: its own store and everything kept in it.
//!
//! A shard keeps the accounts whose ID has its number in the top byte, the
//! broker scrip of series with its number in the top byte, its own
//! secrets, licences, warehouse and books, all in one sled store in
//! `data_dir/shard-N`. Everything an operation on an account or a piece of
//! broker scrip touches is in that one store, which is what lets one
//! atomic write cover it; moving a shard to another node means moving that
//! directory and changing the cluster map.
//!
//! # Tables
//!
//! | table | module | holds |
//! |---|---|---|
//! | `meta` | here | the broker's name and the shard's number |
//! | `accounts` | `accounts` | balances, history, call and credit records |
//! | `journal` | `books` | the double-entry journal and its checkpoint |
//! | `keys` | `keys`, `licences` | secrets, broker-scrip series, licences |
//! | `ids` | `allocate` | reserved ID# and Cust ID# numbers |
//! | `spends`, `spends-segment-*` | ledger's `SpendStore` | spent broker scrip, renewed vendor scrip, replies |
//! | `settlement` | `settlement` | series sold from, sales, redemption reports |
//! | `warehouse` | `warehouse` | pieces bought in blocks |
//! | `peer-sales` | `network` | replies to other brokers' purchases |

use std::path::{Path, PathBuf};

use millicent_core::VendorName;
use millicent_ledger::{CommitMetrics, Durability, Ledger, LedgerError, SpendStore, Table};

use crate::accounts::Accounts;
use crate::books::Books;
use crate::config::Settings;
use crate::keys::BrokerKeys;
use crate::licences::Licences;
use crate::settlement::Settlement;
use crate::warehouse::{self, Warehouse};
use crate::{BrokerError, exchange, unix_now};

/// A key of the shard's tables: `prefix`, then `name` with its length in
/// one byte (names are at most 64 bytes), with room for `more` bytes.
pub(crate) fn name_key(prefix: &[u8], name: &VendorName, more: usize) -> Vec<u8> {
    let name = name.as_str().as_bytes();
    let mut key = Vec::with_capacity(prefix.len() + 1 + name.len() + more);
    key.extend_from_slice(prefix);
    key.push(name.len() as u8);
    key.extend_from_slice(name);
    key
}

/// The table of spent broker scrip and renewed vendor scrip.
pub(crate) const SPENDS_TABLE: &str = "spends";
/// The table of replies to other brokers' purchases.
pub(crate) const PEER_SALES_TABLE: &str = "peer-sales";
const META_TABLE: &str = "meta";
const META_NAME: &[u8] = b"name";
const META_SHARD: &[u8] = b"shard";

/// The directory of shard `shard` under `data_dir`.
pub(crate) fn shard_dir(data_dir: &Path, shard: u8) -> PathBuf {
    data_dir.join(format!("shard-{shard}"))
}

/// Everything one shard keeps.
pub(crate) struct Shard {
    pub(crate) id: u8,
    pub(crate) ledger: Ledger,
    pub(crate) accounts: Accounts,
    pub(crate) keys: BrokerKeys,
    pub(crate) licences: Licences,
    pub(crate) spends: SpendStore,
    pub(crate) books: Books,
    pub(crate) settlement: Settlement,
    pub(crate) warehouse: Warehouse,
    pub(crate) peer_sales: Table,
    /// Held by maintenance and by live audits, which must not overlap.
    pub(crate) upkeep: std::sync::Mutex<()>,
    /// Serialises sales to other brokers, each checked against the replies
    /// already given.
    pub(crate) selling: std::sync::Mutex<()>,
}

impl Shard {
    /// Opens (or creates) shard `id` in its directory under `data_dir`.
    pub(crate) async fn open(
        settings: &Settings,
        data_dir: &Path,
        id: u8,
    ) -> Result<Shard, BrokerError> {
        let dir = shard_dir(data_dir, id);
        millicent_ledger::prepare_data_dir(&dir)?;
        let metrics = CommitMetrics::new("millicent_broker", &[("shard", id.to_string())]);
        let ledger = Ledger::open_with_metrics(&dir, Durability::Strict, metrics)?;
        match Shard::load(settings, &ledger, id).await {
            Ok(shard) => Ok(shard),
            Err(error) => {
                if let Err(close) = ledger.close().await {
                    tracing::warn!(error = %close, shard = id, "could not release the store");
                }
                Err(error)
            }
        }
    }

    async fn load(settings: &Settings, ledger: &Ledger, id: u8) -> Result<Shard, BrokerError> {
        let (now, _) = unix_now();
        check_meta(&ledger.table(META_TABLE)?, &settings.name, id)?;
        let keys_table = ledger.table("keys")?;
        let ids = ledger.table("ids")?;
        let keys = BrokerKeys::open(
            &keys_table,
            &ids,
            &settings.name,
            id,
            settings.suite,
            settings.scrip_lifetime_secs,
            now,
        )?;
        let settlement = Settlement::open(ledger)?;
        let licences = Licences::open(
            &settings.name,
            &settings.vendors,
            ledger,
            &keys_table,
            &ids,
            settlement.table(),
            now,
        )?;
        let spends = SpendStore::open(ledger, SPENDS_TABLE, settings.retry_window_secs)?;
        let (books, dropped) =
            Books::open(ledger, |tx| exchange::happened(tx, &settings.name, &spends))?;
        let shard = Shard {
            id,
            ledger: ledger.clone(),
            accounts: Accounts::open(ledger, id)?,
            keys,
            licences,
            spends,
            books,
            warehouse: Warehouse::open(ledger.table(warehouse::TABLE)?, &settings.vendors)?,
            settlement,
            peer_sales: ledger.table(PEER_SALES_TABLE)?,
            upkeep: std::sync::Mutex::new(()),
            selling: std::sync::Mutex::new(()),
        };
        exchange::recover(&shard.books, &shard.settlement, &shard.warehouse, &dropped);
        // Keys made on a first start are durable before anything uses them.
        ledger.commit().await?;
        Ok(shard)
    }

    /// The broker's name, the vendor of its broker scrip.
    pub(crate) fn broker_name(&self) -> &VendorName {
        self.keys.name()
    }

    /// Closes the shard's store; `self` must be the last handle on it.
    pub(crate) async fn close(self) -> Result<(), LedgerError> {
        let Shard {
            ledger,
            accounts,
            keys,
            licences,
            spends,
            books,
            settlement,
            warehouse,
            peer_sales,
            ..
        } = self;
        drop((
            accounts, keys, licences, spends, books, settlement, warehouse, peer_sales,
        ));
        ledger.close().await
    }
}

/// Records the broker's name and the shard's number in a new store, and
/// refuses a store made for another broker or shard.
fn check_meta(meta: &Table, name: &VendorName, shard: u8) -> Result<(), BrokerError> {
    match (meta.get(META_NAME)?, meta.get(META_SHARD)?) {
        (None, None) => {
            meta.insert(META_NAME, name.as_str())?;
            meta.insert(META_SHARD, [shard])?;
            Ok(())
        }
        (Some(stored_name), Some(stored_shard))
            if stored_name == name.as_str().as_bytes() && stored_shard == [shard] =>
        {
            Ok(())
        }
        (stored_name, stored_shard) => Err(BrokerError::Config {
            detail: format!(
                "the store of shard {shard} was made for broker {:?}, shard {:?}; this \
                 configuration is broker {name}: use its own data directory",
                stored_name.map(|name| String::from_utf8_lossy(&name).into_owned()),
                stored_shard.and_then(|shard| shard.first().copied()),
            ),
        }),
    }
}

/// What a store says it holds, for offline audits: the broker's name and
/// the shard's number.
pub(crate) fn read_meta(ledger: &Ledger) -> Result<(VendorName, u8), BrokerError> {
    let meta = ledger.table(META_TABLE)?;
    let unreadable = || BrokerError::Config {
        detail: "this store has no broker name or shard number: it is not a broker shard"
            .to_owned(),
    };
    let name = meta.get(META_NAME)?.ok_or_else(unreadable)?;
    let shard = meta.get(META_SHARD)?.ok_or_else(unreadable)?;
    let name = std::str::from_utf8(&name)
        .ok()
        .and_then(|name| VendorName::new(name).ok())
        .ok_or_else(unreadable)?;
    match shard.as_slice() {
        [shard] => Ok((name, *shard)),
        _ => Err(unreadable()),
    }
}
