//! The audit: proof, from what a broker keeps, that it neither lost nor
//! created money.
//!
//! An audit reads every journal entry of every shard and checks it against
//! itself and against each other store that records the same events:
//!
//! 1. every entry decodes and balances (its postings sum to zero), so the
//!    total of all accounts is zero;
//! 2. the checkpoint equals the journal up to the entry it names, and on a
//!    running broker the balances in memory equal the whole journal;
//! 3. every customer's balance in the `accounts` table equals what the
//!    journal posted to that customer, and no posting names an account
//!    that does not exist;
//! 4. broker scrip: every piece spent was issued before, with the same
//!    value, and spent once; what was issued and not spent is exactly the
//!    balance of `broker_scrip`; the spend store marks spent exactly the
//!    pieces the journal spent (in series still held), and the renewed
//!    vendor scrip exactly the pieces the journal retired;
//! 5. vendor scrip: no piece was issued twice or retired twice; the
//!    balance of `vendor_scrip/V` is what was sold under licence owed at
//!    redemption, less what was retired and what the vendor reported
//!    redeemed; the record of sales equals the journal's; the redemptions
//!    recorded from the vendor's reports are worth what the journal says;
//! 6. the warehouse: its stock is worth the balance of `warehouse/V`, every
//!    piece sold is in the journal and every piece lost was written off.
//!
//! The audit stops at the first discrepancy and names it: the shard, the
//! journal entry or account, and both values. Offline it reads a stopped
//! broker's data directory; live (the `Audit` call) it checks each shard
//! while holding off its writers, so that the stores stand still.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use millicent_core::{Amount, ScripId, VendorName};
use millicent_ledger::{Durability, Ledger, SpendStore, Table};

use crate::accounts::Accounts;
use crate::books::{self, Account, Balances, Books, ScripRole, Sides};
use crate::config::Contract;
use crate::service::BrokerState;
use crate::settlement::{self, SeriesKind, Settlement};
use crate::shard::{self, SPENDS_TABLE};
use crate::warehouse::{self, PieceState, Warehouse};
use crate::{BrokerError, exchange, keys};

/// What an audit found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Every shard checked, in order.
    pub shards: Vec<ShardAudit>,
    /// The first discrepancy found, if any; the audit stops there.
    pub discrepancy: Option<String>,
}

impl AuditReport {
    /// Whether every check passed.
    pub fn is_clean(&self) -> bool {
        self.discrepancy.is_none()
    }
}

/// The figures of one shard's books.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardAudit {
    /// The shard.
    pub shard: u8,
    /// Journal entries read.
    pub transactions: u64,
    /// Customer accounts.
    pub accounts: u64,
    /// The balance of every class of account (debits positive).
    pub balances: BTreeMap<String, i128>,
}

/// Audits the stores of a stopped broker in `data_dir`: every `shard-N`
/// directory in it.
pub async fn audit_data_dir(data_dir: &Path) -> Result<AuditReport, BrokerError> {
    let mut shards: Vec<u8> = Vec::new();
    let entries = std::fs::read_dir(data_dir).map_err(|source| {
        BrokerError::DataDir(millicent_ledger::DataDirError::Unusable {
            path: data_dir.to_owned(),
            action: "read",
            source,
        })
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if let Some(number) = name.to_str().and_then(|name| name.strip_prefix("shard-"))
            && let Ok(number) = number.parse::<u8>()
        {
            shards.push(number);
        }
    }
    shards.sort_unstable();
    if shards.is_empty() {
        return Err(BrokerError::Config {
            detail: format!(
                "{} holds no shard-N directory: it is not a broker's data directory",
                data_dir.display()
            ),
        });
    }

    let mut report = AuditReport::default();
    for number in shards {
        let dir = shard::shard_dir(data_dir, number);
        millicent_ledger::prepare_data_dir(&dir)?;
        let ledger = Ledger::open(&dir, Durability::Strict)?;
        let result = audit_offline_shard(&ledger, number);
        ledger.close().await?;
        if !record(&mut report, result?) {
            break;
        }
    }
    Ok(report)
}

fn audit_offline_shard(
    ledger: &Ledger,
    number: u8,
) -> Result<Result<ShardAudit, String>, BrokerError> {
    let (broker, stored) = shard::read_meta(ledger)?;
    if stored != number {
        return Ok(Err(format!(
            "directory shard-{number} holds the store of shard {stored}"
        )));
    }
    let spends = SpendStore::open(ledger, SPENDS_TABLE, 1)?;
    // First the repair the broker makes when it opens a shard: exchanges
    // cut short by a crash before their answer are undone.
    let settlement = Settlement::open(ledger)?;
    let warehouse = Warehouse::open(ledger.table(warehouse::TABLE)?, &[])?;
    let (books, dropped) = Books::open(ledger, |tx| exchange::happened(tx, &broker, &spends))?;
    exchange::recover(&books, &settlement, &warehouse, &dropped);
    let stores = Stores {
        shard: number,
        broker: &broker,
        journal: books.table(),
        accounts: &Accounts::open(ledger, number)?,
        keys: &ledger.table("keys")?,
        settlement: settlement.table(),
        warehouse: warehouse.table(),
        spends: &spends,
        memory: Some(books.balances()),
    };
    audit_shard(&stores)
}

/// Audits every shard of a running broker, each while its writers wait.
pub(crate) fn audit_live(state: &BrokerState) -> Result<AuditReport, BrokerError> {
    let mut report = AuditReport::default();
    for shard in state.shards.values() {
        let _upkeep = shard
            .upkeep
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _still = shard.books.quiesce();
        let stores = Stores {
            shard: shard.id,
            broker: shard.broker_name(),
            journal: shard.books.table(),
            accounts: &shard.accounts,
            keys: &shard.ledger.table("keys")?,
            settlement: shard.settlement.table(),
            warehouse: shard.warehouse.table(),
            spends: &shard.spends,
            memory: Some(shard.books.balances()),
        };
        if !record(&mut report, audit_shard(&stores)?) {
            break;
        }
    }
    Ok(report)
}

/// Adds a shard's result to `report`; whether to go on.
fn record(report: &mut AuditReport, result: Result<ShardAudit, String>) -> bool {
    match result {
        Ok(shard) => {
            report.shards.push(shard);
            true
        }
        Err(discrepancy) => {
            report.discrepancy = Some(discrepancy);
            false
        }
    }
}

/// What one shard's audit reads.
struct Stores<'a> {
    shard: u8,
    broker: &'a VendorName,
    journal: &'a Table,
    accounts: &'a Accounts,
    keys: &'a Table,
    settlement: &'a Table,
    warehouse: &'a Table,
    spends: &'a SpendStore,
    /// The balances a running shard holds in memory.
    memory: Option<Balances>,
}

/// What the journal says happened to scrip.
#[derive(Default)]
struct ScripLedger {
    broker_issued: HashMap<ScripId, Amount>,
    broker_spent: HashSet<ScripId>,
    vendor_issued: HashMap<(VendorName, ScripId), Amount>,
    vendor_retired: HashSet<(VendorName, ScripId)>,
    redeemed: HashMap<(VendorName, u32), Amount>,
    lost: HashMap<(VendorName, u32), Amount>,
}

fn audit_shard(stores: &Stores<'_>) -> Result<Result<ShardAudit, String>, BrokerError> {
    let shard = stores.shard;
    let fail = |detail: String| Ok(Err(format!("shard {shard}: {detail}")));
    let checkpoint = books::stored_checkpoint(stores.journal)?;
    let checkpoint = match checkpoint {
        Some(Err(())) => return fail("the journal checkpoint is unreadable".to_owned()),
        Some(Ok(checkpoint)) => Some(checkpoint),
        None => None,
    };

    let mut running = Balances::default();
    let mut accounts: BTreeMap<Account, i128> = BTreeMap::new();
    let mut at_checkpoint: Option<Balances> = None;
    let mut scrip = ScripLedger::default();
    let mut transactions = 0u64;
    for entry in books::entries(stores.journal) {
        let (seq, tx) = entry?;
        let Some(tx) = tx else {
            return fail(format!("journal entry {seq} does not decode"));
        };
        if !tx.is_balanced() {
            let sum: i128 = tx.postings.iter().map(|posting| posting.amount).sum();
            return fail(format!(
                "journal entry {seq} ({}) does not balance: its postings sum to {sum}",
                tx.kind.name()
            ));
        }
        if let Some((checkpoint_seq, _)) = &checkpoint
            && at_checkpoint.is_none()
            && seq > *checkpoint_seq
        {
            at_checkpoint = Some(running.clone());
        }
        running.apply(&tx);
        for posting in &tx.postings {
            *accounts.entry(posting.account.clone()).or_default() += posting.amount;
        }
        if let Err(detail) = scrip.apply(seq, &tx) {
            return fail(detail);
        }
        transactions += 1;
    }
    let total: i128 = accounts.values().sum();
    if total != 0 {
        return fail(format!("the accounts sum to {total}, not zero"));
    }

    // The checkpoint and the balances in memory.
    if let Some((checkpoint_seq, stored)) = &checkpoint {
        let journal = at_checkpoint.as_ref().unwrap_or(&running);
        if let Some(detail) = compare_balances(stored, journal) {
            return fail(format!(
                "the checkpoint at journal entry {checkpoint_seq} differs from the journal: {detail}"
            ));
        }
    }
    if let Some(memory) = &stores.memory
        && let Some(detail) = compare_balances(memory, &running)
    {
        return fail(format!(
            "the balances in memory differ from the journal: {detail}"
        ));
    }

    // Customers.
    let mut customers = 0u64;
    let mut seen = HashSet::new();
    for entry in stores.accounts.balances() {
        let (id, balance) = entry?;
        customers += 1;
        seen.insert(id);
        let journal = -accounts
            .get(&Account::Customer(id))
            .copied()
            .unwrap_or_default();
        if journal != i128::from(balance.units()) {
            return fail(format!(
                "account {id} holds {balance}, the journal says {journal}"
            ));
        }
    }
    if let Some(Account::Customer(id)) = accounts
        .keys()
        .find(|account| matches!(account, Account::Customer(id) if !seen.contains(id)))
    {
        return fail(format!(
            "the journal posts to account {id}, which does not exist"
        ));
    }

    if let Some(detail) = check_broker_scrip(stores, &scrip, &accounts)? {
        return fail(detail);
    }
    if let Some(detail) = check_vendor_scrip(stores, &scrip, &accounts)? {
        return fail(detail);
    }

    let mut balances: BTreeMap<String, i128> = running
        .by_class()
        .into_iter()
        .map(|(class, balance)| (class.name().to_owned(), balance))
        .collect();
    balances.retain(|_, balance| *balance != 0);
    Ok(Ok(ShardAudit {
        shard,
        transactions,
        accounts: customers,
        balances,
    }))
}

impl ScripLedger {
    fn apply(&mut self, seq: u64, tx: &books::Transaction) -> Result<(), String> {
        for line in &tx.scrip {
            let (id, value) = (line.id, line.value);
            match (line.role, &line.issuer) {
                (ScripRole::Issued, None) => {
                    if self.broker_issued.insert(id, value).is_some() {
                        return Err(format!(
                            "journal entry {seq} issues broker scrip {id} again"
                        ));
                    }
                }
                (ScripRole::Spent, None) => match self.broker_issued.get(&id) {
                    None => {
                        return Err(format!(
                            "journal entry {seq} spends broker scrip {id}, which was never issued"
                        ));
                    }
                    Some(issued) if *issued != value => {
                        return Err(format!(
                            "journal entry {seq} spends broker scrip {id} as worth {value}; it \
                             was issued worth {issued}"
                        ));
                    }
                    Some(_) => {
                        if !self.broker_spent.insert(id) {
                            return Err(format!(
                                "journal entry {seq} spends broker scrip {id} a second time"
                            ));
                        }
                    }
                },
                (ScripRole::Issued, Some(vendor)) => {
                    if self
                        .vendor_issued
                        .insert((vendor.clone(), id), value)
                        .is_some()
                    {
                        return Err(format!(
                            "journal entry {seq} issues {vendor} scrip {id} again"
                        ));
                    }
                }
                (ScripRole::Retired, Some(vendor)) => {
                    let key = (vendor.clone(), id);
                    if self.vendor_issued.get(&key) != Some(&value) {
                        return Err(format!(
                            "journal entry {seq} retires {vendor} scrip {id} worth {value}, \
                             which was not issued so"
                        ));
                    }
                    if !self.vendor_retired.insert(key) {
                        return Err(format!(
                            "journal entry {seq} retires {vendor} scrip {id} a second time"
                        ));
                    }
                }
                (ScripRole::Redeemed, Some(vendor)) => {
                    add(&mut self.redeemed, (vendor.clone(), id.series()), value)
                        .map_err(|()| format!("journal entry {seq}: redemptions overflow"))?;
                }
                (ScripRole::Lost, Some(vendor)) => {
                    add(&mut self.lost, (vendor.clone(), id.series()), value)
                        .map_err(|()| format!("journal entry {seq}: losses overflow"))?;
                }
                (role, issuer) => {
                    return Err(format!(
                        "journal entry {seq} has a scrip line of no meaning: {role:?} by {issuer:?}"
                    ));
                }
            }
        }
        Ok(())
    }
}

fn add<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Amount>,
    key: K,
    value: Amount,
) -> Result<(), ()> {
    let sum = map.entry(key).or_default();
    *sum = sum.checked_add(value).map_err(|_| ())?;
    Ok(())
}

fn balance_of(accounts: &BTreeMap<Account, i128>, account: &Account) -> i128 {
    accounts.get(account).copied().unwrap_or_default()
}

/// Check 4: broker scrip against its balance and the spend store.
fn check_broker_scrip(
    stores: &Stores<'_>,
    scrip: &ScripLedger,
    accounts: &BTreeMap<Account, i128>,
) -> Result<Option<String>, BrokerError> {
    let outstanding: i128 = scrip
        .broker_issued
        .iter()
        .filter(|(id, _)| !scrip.broker_spent.contains(id))
        .map(|(_, value)| i128::from(value.units()))
        .sum();
    let balance = -balance_of(accounts, &Account::BrokerScrip);
    if outstanding != balance {
        return Ok(Some(format!(
            "broker scrip issued and not spent is worth {outstanding}, the broker_scrip \
             account holds {balance}"
        )));
    }

    let live = keys::live_series(stores.keys)?;
    let mut spent_ids: BTreeSet<ScripId> = BTreeSet::new();
    for series in stores.spends.spent_series(stores.broker) {
        spent_ids.extend(spent_in(stores.spends, stores.broker, series));
    }
    for id in &scrip.broker_spent {
        if live.contains(&id.series()) && !spent_ids.contains(id) {
            return Ok(Some(format!(
                "the journal spends broker scrip {id}, the spend store does not"
            )));
        }
    }
    if let Some(id) = spent_ids.iter().find(|id| !scrip.broker_spent.contains(id)) {
        return Ok(Some(format!(
            "the spend store has broker scrip {id} spent, the journal does not"
        )));
    }

    let mut renewed: BTreeSet<(VendorName, ScripId)> = BTreeSet::new();
    let vendors: BTreeSet<&VendorName> = scrip
        .vendor_issued
        .keys()
        .map(|(vendor, _)| vendor)
        .collect();
    for vendor in vendors {
        for series in stores.spends.spent_series(vendor) {
            renewed.extend(spent_in(stores.spends, vendor, series).map(|id| (vendor.clone(), id)));
        }
    }
    for key in &scrip.vendor_retired {
        if !renewed.contains(key) {
            return Ok(Some(format!(
                "the journal renews {} scrip {}, the spend store does not",
                key.0, key.1
            )));
        }
    }
    if let Some((vendor, id)) = renewed
        .iter()
        .find(|key| !scrip.vendor_retired.contains(key))
    {
        return Ok(Some(format!(
            "the spend store has {vendor} scrip {id} renewed, the journal does not"
        )));
    }
    Ok(None)
}

/// Every ID# of `series` of `issuer` the spend store has spent.
fn spent_in(
    spends: &SpendStore,
    issuer: &VendorName,
    series: u32,
) -> impl Iterator<Item = ScripId> {
    let words = spends.spent_words(issuer, series, 0, usize::MAX);
    words
        .into_iter()
        .enumerate()
        .flat_map(move |(index, mut word)| {
            let mut ids = Vec::new();
            while word != 0 {
                let bit = word.trailing_zeros();
                ids.push(ScripId::new(series, index as u32 * 64 + bit));
                word &= word - 1;
            }
            ids
        })
}

/// Checks 5 and 6: vendor scrip against its balances, the record of sales,
/// the recorded redemption reports and the warehouse.
fn check_vendor_scrip(
    stores: &Stores<'_>,
    scrip: &ScripLedger,
    accounts: &BTreeMap<Account, i128>,
) -> Result<Option<String>, BrokerError> {
    let registry: HashMap<(VendorName, u32), SeriesKind> = settlement::registry(stores.settlement)?
        .into_iter()
        .map(|record| ((record.vendor, record.series), record.kind))
        .collect();
    let kind_of = |vendor: &VendorName, id: ScripId| registry.get(&(vendor.clone(), id.series()));

    // Sales under licence, as recorded and as journalled.
    let sold = settlement::sold_pieces(stores.settlement)?;
    for ((vendor, id), value) in &scrip.vendor_issued {
        if matches!(kind_of(vendor, *id), Some(SeriesKind::Licence(_)))
            && sold.get(&(vendor.clone(), *id)) != Some(value)
        {
            return Ok(Some(format!(
                "the journal sells {vendor} scrip {id} worth {value}, the record of sales does not"
            )));
        }
    }
    for ((vendor, id), value) in &sold {
        if scrip.vendor_issued.get(&(vendor.clone(), *id)) != Some(value) {
            return Ok(Some(format!(
                "the record of sales has {vendor} scrip {id} worth {value}, the journal does not"
            )));
        }
    }

    // The warehouse.
    let mut stock: HashMap<VendorName, i128> = HashMap::new();
    let mut sold_pieces: HashMap<(VendorName, ScripId), Amount> = HashMap::new();
    let mut lost: HashMap<(VendorName, u32), Amount> = HashMap::new();
    for entry in warehouse::all_pieces(stores.warehouse) {
        let (state, piece) = entry?;
        let body = piece.scrip.body();
        match state {
            PieceState::Stock => {
                *stock.entry(body.vendor.clone()).or_default() += i128::from(body.value.units())
            }
            PieceState::Sold => {
                sold_pieces.insert((body.vendor.clone(), body.id), body.value);
            }
            PieceState::Lost => {
                let _ = add(
                    &mut lost,
                    (body.vendor.clone(), body.id.series()),
                    body.value,
                );
            }
        }
    }
    for ((vendor, id), value) in &sold_pieces {
        if scrip.vendor_issued.get(&(vendor.clone(), *id)) != Some(value) {
            return Ok(Some(format!(
                "the warehouse sold {vendor} scrip {id}, the journal does not say so"
            )));
        }
    }
    for (vendor, id) in scrip.vendor_issued.keys() {
        if kind_of(vendor, *id) == Some(&SeriesKind::Warehouse)
            && !sold_pieces.contains_key(&(vendor.clone(), *id))
        {
            return Ok(Some(format!(
                "the journal sells {vendor} scrip {id} from the warehouse, which does not have \
                 it sold"
            )));
        }
    }
    let vendors: BTreeSet<VendorName> = accounts
        .keys()
        .filter_map(|account| match account {
            Account::Warehouse(vendor) | Account::VendorScrip(vendor) => Some(vendor.clone()),
            _ => None,
        })
        .chain(stock.keys().cloned())
        .chain(scrip.vendor_issued.keys().map(|(vendor, _)| vendor.clone()))
        .collect();
    for vendor in &vendors {
        let held = stock.get(vendor).copied().unwrap_or_default();
        let balance = balance_of(accounts, &Account::Warehouse(vendor.clone()));
        if held != balance {
            return Ok(Some(format!(
                "the warehouse holds {vendor} scrip worth {held}, warehouse/{vendor} holds {balance}"
            )));
        }
    }
    for (key, value) in &lost {
        if scrip.lost.get(key) != Some(value) {
            return Ok(Some(format!(
                "{} warehouse scrip of series {} worth {value} is lost, the journal wrote off {}",
                key.0,
                key.1,
                scrip.lost.get(key).copied().unwrap_or_default()
            )));
        }
    }

    // Redemptions recorded from reports, against the journal.
    let bits = settlement::recorded_bits(stores.settlement)?;
    let mut reported: HashMap<(VendorName, u32), Amount> = HashMap::new();
    for ((vendor, series), seqs) in &bits {
        for seq in seqs {
            let id = ScripId::new(*series, *seq);
            let value = match registry.get(&(vendor.clone(), *series)) {
                Some(SeriesKind::Licence(_)) => sold.get(&(vendor.clone(), id)).copied(),
                Some(SeriesKind::Warehouse) => sold_pieces.get(&(vendor.clone(), id)).copied(),
                None => None,
            };
            if let Some(value) = value {
                let _ = add(&mut reported, (vendor.clone(), *series), value);
            }
        }
    }
    for key in reported.keys().chain(scrip.redeemed.keys()) {
        let (recorded, journal) = (
            reported.get(key).copied().unwrap_or_default(),
            scrip.redeemed.get(key).copied().unwrap_or_default(),
        );
        if recorded != journal {
            return Ok(Some(format!(
                "the reports recorded for {} series {} say {recorded} was redeemed, the \
                 journal says {journal}",
                key.0, key.1
            )));
        }
    }

    // Vendor scrip owed at redemption: sold, less retired, less redeemed.
    let mut outstanding: HashMap<VendorName, i128> = HashMap::new();
    for ((vendor, id), value) in &scrip.vendor_issued {
        if kind_of(vendor, *id) == Some(&SeriesKind::Licence(Contract::Redeemed)) {
            let retired = scrip.vendor_retired.contains(&(vendor.clone(), *id));
            if !retired {
                *outstanding.entry(vendor.clone()).or_default() += i128::from(value.units());
            }
        }
    }
    for ((vendor, series), value) in &scrip.redeemed {
        if registry.get(&(vendor.clone(), *series))
            == Some(&SeriesKind::Licence(Contract::Redeemed))
        {
            *outstanding.entry(vendor.clone()).or_default() -= i128::from(value.units());
        }
    }
    for vendor in &vendors {
        let expected = outstanding.get(vendor).copied().unwrap_or_default();
        let balance = -balance_of(accounts, &Account::VendorScrip(vendor.clone()));
        if expected != balance {
            return Ok(Some(format!(
                "{vendor} scrip sold and not yet redeemed is worth {expected}, \
                 vendor_scrip/{vendor} holds {balance}"
            )));
        }
    }
    Ok(None)
}

/// The first difference between two sets of balances, described.
fn compare_balances(stored: &Balances, journal: &Balances) -> Option<String> {
    if stored.customers != journal.customers {
        return Some(format!(
            "customer accounts hold {} there, {} in the journal",
            stored.customers.balance(),
            journal.customers.balance()
        ));
    }
    let names: BTreeSet<&Account> = stored
        .accounts
        .keys()
        .chain(journal.accounts.keys())
        .collect();
    for account in names {
        let (a, b) = (
            stored.accounts.get(account).copied().unwrap_or_default(),
            journal.accounts.get(account).copied().unwrap_or_default(),
        );
        if a != b && !(is_zero(a) && is_zero(b)) {
            return Some(format!(
                "{} holds {} there, {} in the journal",
                account.name(),
                a.balance(),
                b.balance()
            ));
        }
    }
    None
}

fn is_zero(sides: Sides) -> bool {
    sides == Sides::default()
}
