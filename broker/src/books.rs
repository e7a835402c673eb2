//! The double-entry books of one shard.
//!
//! Safety critical: these are the broker's accounts of money. Every
//! operation that moves value is one [`Transaction`] whose postings sum to
//! zero, written to the journal together with the state it describes (a
//! balance, a spent piece of broker scrip, a sold warehouse piece), and
//! committed before the reply. Most operations write the entry and that
//! state in one atomic write; an exchange, the operation that must be
//! cheapest, writes them in an order that lets the shard recognise and
//! undo, when it opens, an exchange a crash cut short (see
//! `exchange::happened`). The books therefore never show what did not
//! happen, nor miss what did, across any crash.
//!
//! # Accounts
//!
//! Balances are signed: debits positive, credits negative, so the sum of
//! every account is zero at all times. The accounts and what they hold:
//!
//! | account | class | holds |
//! |---|---|---|
//! | `cash` | cash | money received (credits, payments from brokers) less money paid out |
//! | `fees` | fees | fees earned (negative: income) |
//! | `broker_scrip` | broker_scrip | broker scrip outstanding (negative: owed to its holders) |
//! | `customer/ID` | customer | each customer's balance (negative: owed to the customer) |
//! | `vendor_scrip/V` | vendor_scrip | vendor scrip sold, owed to vendor V once redeemed |
//! | `payable/V` | payable | owed to vendor V now |
//! | `warehouse/V` | warehouse | vendor V's scrip bought in bulk and not yet sold (an asset) |
//! | `broker/B` | broker | owed by broker B (positive) or to it (negative) |
//!
//! # Journal (table `journal`; integers big-endian)
//!
//! - `j ‖ seq (8)` → a transaction: version (1) = 1 ‖ kind (1) ‖
//!   timestamp ms (8) ‖ reference (1 + n) ‖ postings (1) ‖ each posting:
//!   account (1 + n) ‖ side (1: 0 debit, 1 credit) ‖ amount (8) ‖ scrip
//!   lines (1) ‖ each line: role (1) ‖ issuer (1 + n, empty for this
//!   broker) ‖ ID# (8) ‖ value (8)
//! - `c` → the checkpoint: seq (8) ‖ customer debits (16) ‖ customer
//!   credits (16) ‖ accounts (4) ‖ each: account (1 + n) ‖ debits (16) ‖
//!   credits (16)
//! - `r ‖ reference` → the reply of the payout with that reference
//!
//! # In memory, and the checkpoint
//!
//! Customer balances live in the `accounts` table, one record per account,
//! changed under that account's lock. Every other account (a handful per
//! vendor and per broker) is kept in memory, because nearly every exchange
//! changes `broker_scrip` and `fees`: a durable record of them would be one
//! contended key. Every few seconds a checkpoint records them with the
//! sequence number they include; opening the books loads the checkpoint
//! and replays the few entries written after it.
//!
//! Writers hold a read lock on [`Books::writing`] from the moment they
//! take a sequence number until their entry is written and applied in
//! memory; the checkpoint takes the write lock. So every entry numbered up
//! to the checkpoint's is written before the checkpoint is, and after a
//! crash the checkpoint never counts an entry the journal lost. An entry
//! that failed to be written leaves a gap in the numbers, and nothing else.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use millicent_core::{Amount, ScripId, VendorName};
use millicent_ledger::{Ledger, LedgerError, Table, Writes};

use crate::BrokerError;

/// Name of the journal table.
pub(crate) const TABLE: &str = "journal";

const ENTRY_PREFIX: u8 = b'j';
const CHECKPOINT_KEY: &[u8] = b"c";
const REPLY_PREFIX: u8 = b'r';
const VERSION: u8 = 1;

/// The class of an account, which its name starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Class {
    Cash,
    Fees,
    BrokerScrip,
    Customer,
    VendorScrip,
    Payable,
    Warehouse,
    Broker,
}

impl Class {
    /// Every class, in the order statements and metrics list them.
    pub(crate) const ALL: [Class; 8] = [
        Class::Cash,
        Class::Fees,
        Class::BrokerScrip,
        Class::Customer,
        Class::VendorScrip,
        Class::Payable,
        Class::Warehouse,
        Class::Broker,
    ];

    /// The class's name, in account names, metrics and audits.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Class::Cash => "cash",
            Class::Fees => "fees",
            Class::BrokerScrip => "broker_scrip",
            Class::Customer => "customer",
            Class::VendorScrip => "vendor_scrip",
            Class::Payable => "payable",
            Class::Warehouse => "warehouse",
            Class::Broker => "broker",
        }
    }
}

/// One account of the books.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Account {
    Cash,
    Fees,
    BrokerScrip,
    Customer(u64),
    VendorScrip(VendorName),
    Payable(VendorName),
    Warehouse(VendorName),
    Broker(VendorName),
}

impl Account {
    pub(crate) fn class(&self) -> Class {
        match self {
            Account::Cash => Class::Cash,
            Account::Fees => Class::Fees,
            Account::BrokerScrip => Class::BrokerScrip,
            Account::Customer(_) => Class::Customer,
            Account::VendorScrip(_) => Class::VendorScrip,
            Account::Payable(_) => Class::Payable,
            Account::Warehouse(_) => Class::Warehouse,
            Account::Broker(_) => Class::Broker,
        }
    }

    /// The account's name: its class, then `/` and the customer, vendor or
    /// broker it is for.
    pub(crate) fn name(&self) -> String {
        let class = self.class().name();
        match self {
            Account::Cash | Account::Fees | Account::BrokerScrip => class.to_owned(),
            Account::Customer(id) => format!("{class}/{id}"),
            Account::VendorScrip(name)
            | Account::Payable(name)
            | Account::Warehouse(name)
            | Account::Broker(name) => format!("{class}/{name}"),
        }
    }

    /// The account named `name`, if it is one.
    pub(crate) fn parse(name: &str) -> Option<Account> {
        let (class, of) = match name.split_once('/') {
            Some((class, of)) => (class, Some(of)),
            None => (name, None),
        };
        let party = || of.and_then(|of| VendorName::new(of).ok());
        Some(match (class, of) {
            ("cash", None) => Account::Cash,
            ("fees", None) => Account::Fees,
            ("broker_scrip", None) => Account::BrokerScrip,
            ("customer", Some(id)) => Account::Customer(id.parse().ok()?),
            ("vendor_scrip", Some(_)) => Account::VendorScrip(party()?),
            ("payable", Some(_)) => Account::Payable(party()?),
            ("warehouse", Some(_)) => Account::Warehouse(party()?),
            ("broker", Some(_)) => Account::Broker(party()?),
            _ => return None,
        })
    }
}

/// What kind of operation a transaction records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TxKind {
    Credit = 1,
    BuyBrokerScrip = 2,
    Exchange = 3,
    Refund = 4,
    Renewal = 5,
    WarehousePurchase = 6,
    Redemption = 7,
    Payout = 8,
    PeerSale = 9,
    PeerOrphan = 10,
}

impl TxKind {
    const ALL: [TxKind; 10] = [
        TxKind::Credit,
        TxKind::BuyBrokerScrip,
        TxKind::Exchange,
        TxKind::Refund,
        TxKind::Renewal,
        TxKind::WarehousePurchase,
        TxKind::Redemption,
        TxKind::Payout,
        TxKind::PeerSale,
        TxKind::PeerOrphan,
    ];

    /// The kind's name in metrics and audits.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TxKind::Credit => "credit",
            TxKind::BuyBrokerScrip => "buy_broker_scrip",
            TxKind::Exchange => "exchange",
            TxKind::Refund => "refund",
            TxKind::Renewal => "renewal",
            TxKind::WarehousePurchase => "warehouse_purchase",
            TxKind::Redemption => "redemption",
            TxKind::Payout => "payout",
            TxKind::PeerSale => "peer_sale",
            TxKind::PeerOrphan => "peer_orphan",
        }
    }

    fn from_byte(byte: u8) -> Option<TxKind> {
        TxKind::ALL.into_iter().find(|kind| *kind as u8 == byte)
    }
}

/// What a transaction did with one piece of scrip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScripRole {
    /// Issued: broker scrip bought or given as change, vendor scrip sold.
    Issued = 1,
    /// Broker scrip spent (in an exchange or a refund).
    Spent = 2,
    /// Expired vendor scrip replaced by a renewal.
    Retired = 3,
    /// Vendor scrip of the series `id.series()` reported redeemed since the
    /// last report, worth `value` in all (the line stands for the series).
    Redeemed = 4,
    /// Warehouse scrip of the series `id.series()` reported spent while in
    /// stock, worth `value` in all, written off (the line stands for the
    /// series).
    Lost = 5,
}

impl ScripRole {
    fn from_byte(byte: u8) -> Option<ScripRole> {
        [
            ScripRole::Issued,
            ScripRole::Spent,
            ScripRole::Retired,
            ScripRole::Redeemed,
            ScripRole::Lost,
        ]
        .into_iter()
        .find(|role| *role as u8 == byte)
    }
}

/// One piece of scrip a transaction issued, spent, retired or saw redeemed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScripLine {
    pub(crate) role: ScripRole,
    /// The vendor of vendor scrip; `None` for this broker's own scrip.
    pub(crate) issuer: Option<VendorName>,
    pub(crate) id: ScripId,
    pub(crate) value: Amount,
}

/// A debit (positive) or credit (negative) of one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Posting {
    pub(crate) account: Account,
    pub(crate) amount: i128,
}

/// One balanced operation: postings that sum to zero, and the scrip it
/// issued, spent or retired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Transaction {
    pub(crate) kind: TxKind,
    pub(crate) timestamp_ms: u64,
    pub(crate) reference: String,
    pub(crate) postings: Vec<Posting>,
    pub(crate) scrip: Vec<ScripLine>,
}

impl Transaction {
    pub(crate) fn new(kind: TxKind, timestamp_ms: u64, reference: &str) -> Transaction {
        Transaction {
            kind,
            timestamp_ms,
            // References are at most 128 bytes (see `accounts`); longer ones
            // are cut on a character boundary to fit the one-byte length.
            reference: truncate(reference, 255).to_owned(),
            postings: Vec::new(),
            scrip: Vec::new(),
        }
    }

    /// Debits `account` by `amount`; nothing if it is zero.
    pub(crate) fn debit(mut self, account: Account, amount: Amount) -> Transaction {
        if !amount.is_zero() {
            self.postings.push(Posting {
                account,
                amount: i128::from(amount.units()),
            });
        }
        self
    }

    /// Credits `account` by `amount`; nothing if it is zero.
    pub(crate) fn credit(mut self, account: Account, amount: Amount) -> Transaction {
        if !amount.is_zero() {
            self.postings.push(Posting {
                account,
                amount: -i128::from(amount.units()),
            });
        }
        self
    }

    /// Records what happened to a piece of scrip.
    pub(crate) fn scrip(
        mut self,
        role: ScripRole,
        issuer: Option<&VendorName>,
        id: ScripId,
        value: Amount,
    ) -> Transaction {
        self.scrip.push(ScripLine {
            role,
            issuer: issuer.cloned(),
            id,
            value,
        });
        self
    }

    /// Whether the postings sum to zero.
    pub(crate) fn is_balanced(&self) -> bool {
        self.postings
            .iter()
            .map(|posting| posting.amount)
            .sum::<i128>()
            == 0
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 40 * self.postings.len() + 40 * self.scrip.len());
        out.push(VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        push_name(&mut out, &self.reference);
        out.push(self.postings.len() as u8);
        for posting in &self.postings {
            push_name(&mut out, &posting.account.name());
            out.push(u8::from(posting.amount < 0));
            out.extend_from_slice(&(posting.amount.unsigned_abs() as u64).to_be_bytes());
        }
        out.push(self.scrip.len() as u8);
        for line in &self.scrip {
            out.push(line.role as u8);
            push_name(
                &mut out,
                line.issuer.as_ref().map_or("", VendorName::as_str),
            );
            out.extend_from_slice(&line.id.as_u64().to_be_bytes());
            out.extend_from_slice(&line.value.units().to_be_bytes());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Transaction> {
        let mut reader = Reader(bytes);
        if reader.u8()? != VERSION {
            return None;
        }
        let kind = TxKind::from_byte(reader.u8()?)?;
        let timestamp_ms = reader.u64()?;
        let reference = reader.name()?.to_owned();
        let mut postings = Vec::new();
        for _ in 0..reader.u8()? {
            let account = Account::parse(reader.name()?)?;
            let credit = match reader.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            };
            let amount = i128::from(reader.u64()?);
            postings.push(Posting {
                account,
                amount: if credit { -amount } else { amount },
            });
        }
        let mut scrip = Vec::new();
        for _ in 0..reader.u8()? {
            let role = ScripRole::from_byte(reader.u8()?)?;
            let issuer = match reader.name()? {
                "" => None,
                name => Some(VendorName::new(name).ok()?),
            };
            scrip.push(ScripLine {
                role,
                issuer,
                id: ScripId::from_u64(reader.u64()?),
                value: Amount::new(reader.u64()?),
            });
        }
        reader.0.is_empty().then_some(Transaction {
            kind,
            timestamp_ms,
            reference,
            postings,
            scrip,
        })
    }
}

/// The debits and credits of one account (or class) so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sides {
    pub(crate) debits: u128,
    pub(crate) credits: u128,
}

impl Sides {
    /// Debits less credits.
    pub(crate) fn balance(self) -> i128 {
        self.debits as i128 - self.credits as i128
    }

    pub(crate) fn post(&mut self, amount: i128) {
        if amount >= 0 {
            self.debits += amount as u128;
        } else {
            self.credits += amount.unsigned_abs();
        }
    }
}

/// What the books keep in memory: every account but the customers', and
/// the customers' class as a whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Balances {
    pub(crate) accounts: BTreeMap<Account, Sides>,
    pub(crate) customers: Sides,
}

impl Balances {
    pub(crate) fn apply(&mut self, tx: &Transaction) {
        for posting in &tx.postings {
            match posting.account {
                Account::Customer(_) => self.customers.post(posting.amount),
                _ => self
                    .accounts
                    .entry(posting.account.clone())
                    .or_default()
                    .post(posting.amount),
            }
        }
    }

    /// The balance of every class.
    pub(crate) fn by_class(&self) -> BTreeMap<Class, i128> {
        let mut classes: BTreeMap<Class, i128> =
            Class::ALL.iter().map(|class| (*class, 0)).collect();
        for (account, sides) in &self.accounts {
            *classes.entry(account.class()).or_default() += sides.balance();
        }
        *classes.entry(Class::Customer).or_default() += self.customers.balance();
        classes
    }

    fn encode(&self, seq: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + 64 * self.accounts.len());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&self.customers.debits.to_be_bytes());
        out.extend_from_slice(&self.customers.credits.to_be_bytes());
        out.extend_from_slice(&(self.accounts.len() as u32).to_be_bytes());
        for (account, sides) in &self.accounts {
            push_name(&mut out, &account.name());
            out.extend_from_slice(&sides.debits.to_be_bytes());
            out.extend_from_slice(&sides.credits.to_be_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<(u64, Balances)> {
        let mut reader = Reader(bytes);
        let seq = reader.u64()?;
        let customers = Sides {
            debits: reader.u128()?,
            credits: reader.u128()?,
        };
        let count = u32::from_be_bytes(reader.take(4)?.try_into().ok()?);
        let mut accounts = BTreeMap::new();
        for _ in 0..count {
            let account = Account::parse(reader.name()?)?;
            let sides = Sides {
                debits: reader.u128()?,
                credits: reader.u128()?,
            };
            accounts.insert(account, sides);
        }
        reader.0.is_empty().then_some((
            seq,
            Balances {
                accounts,
                customers,
            },
        ))
    }
}

/// The journal and the balances of one shard.
pub(crate) struct Books {
    ledger: Ledger,
    table: Table,
    next_seq: AtomicU64,
    balances: Mutex<Balances>,
    writing: RwLock<()>,
}

/// A journal entry dropped when the books were opened, because what it
/// records did not happen (see [`Books::open`]).
pub(crate) type Dropped = (u64, Transaction);

impl Books {
    /// Opens the journal of `ledger`: loads the checkpoint and applies the
    /// entries written after it, except those `happened` says did not
    /// happen: such an entry is returned, for the caller to undo what was
    /// written with it and remove it (with [`Books::discard`]) in one
    /// atomic write.
    ///
    /// Only entries after the checkpoint can be such: an entry written
    /// with [`Books::write_now`] is followed by the write that makes it
    /// true (a spend record), and a crash between the two leaves the entry
    /// alone; but the checkpoint is written after both, so if it survived
    /// they did.
    pub(crate) fn open(
        ledger: &Ledger,
        mut happened: impl FnMut(&Transaction) -> bool,
    ) -> Result<(Books, Vec<Dropped>), BrokerError> {
        let table = ledger.table(TABLE)?;
        let (mut last, mut balances) = match table.get(CHECKPOINT_KEY)? {
            Some(bytes) => {
                Balances::decode(&bytes).ok_or_else(|| unreadable("journal checkpoint"))?
            }
            None => (0, Balances::default()),
        };
        let mut dropped = Vec::new();
        for entry in table.scan_prefix_from([ENTRY_PREFIX], entry_key(last.saturating_add(1))) {
            let (key, value) = entry?;
            let seq = parse_entry_key(&key).ok_or_else(|| unreadable("journal key"))?;
            let tx = Transaction::decode(&value).ok_or_else(|| unreadable("journal entry"))?;
            last = seq;
            if happened(&tx) {
                balances.apply(&tx);
            } else {
                // Left in the journal until the caller has undone what was
                // written with it, in one atomic write that removes it
                // too: a crash on the way leaves it to be dropped again.
                dropped.push((seq, tx));
            }
        }
        let books = Books {
            ledger: ledger.clone(),
            table,
            next_seq: AtomicU64::new(last + 1),
            balances: Mutex::new(balances),
            writing: RwLock::new(()),
        };
        Ok((books, dropped))
    }

    /// Writes `tx` as the next journal entry at once, as a plain write of
    /// its own, and returns its number; for operations that make what the
    /// entry records true by a later write, and check at [`Books::open`]
    /// that it was made. Call with [`Books::writing`] held, and
    /// [`Books::applied`] once the operation is complete.
    pub(crate) fn write_now(&self, tx: &Transaction) -> Result<u64, BrokerError> {
        check_balanced(tx)?;
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.table.insert(entry_key(seq), tx.encode())?;
        Ok(seq)
    }

    /// Removes entry `seq`, written by [`Books::write_now`] for an
    /// operation that then failed.
    pub(crate) fn discard(&self, writes: &mut Writes, seq: u64) {
        writes.remove(&self.table, entry_key(seq));
    }

    /// The ledger the books are kept in.
    pub(crate) fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The journal table.
    pub(crate) fn table(&self) -> &Table {
        &self.table
    }

    /// Held by every writer from staging its entry until it is applied.
    pub(crate) fn writing(&self) -> RwLockReadGuard<'_, ()> {
        self.writing.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops every writer until the guard is dropped: for checkpoints and
    /// live audits, which need the books to stand still.
    pub(crate) fn quiesce(&self) -> RwLockWriteGuard<'_, ()> {
        self.writing.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `tx` to `writes` as the next journal entry. Call with
    /// [`Books::writing`] held, and [`Books::applied`] once `writes` are
    /// written.
    pub(crate) fn stage(&self, writes: &mut Writes, tx: &Transaction) -> Result<(), BrokerError> {
        check_balanced(tx)?;
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        writes.insert(&self.table, entry_key(seq), tx.encode());
        Ok(())
    }

    /// Applies a written transaction to the balances in memory.
    pub(crate) fn applied(&self, tx: &Transaction) {
        self.balances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .apply(tx);
        crate::telemetry::transaction(tx.kind);
    }

    /// Writes `writes` with `tx` as one atomic write and applies it.
    pub(crate) fn post(&self, mut writes: Writes, tx: &Transaction) -> Result<(), BrokerError> {
        let _writing = self.writing();
        self.stage(&mut writes, tx)?;
        self.ledger.apply(writes)?;
        self.applied(tx);
        Ok(())
    }

    /// The debits and credits of `account` (not a customer's).
    pub(crate) fn sides(&self, account: &Account) -> Sides {
        self.balances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .accounts
            .get(account)
            .copied()
            .unwrap_or_default()
    }

    /// The balance of `account` (not a customer's).
    pub(crate) fn balance(&self, account: &Account) -> i128 {
        self.sides(account).balance()
    }

    /// A copy of the balances in memory.
    pub(crate) fn balances(&self) -> Balances {
        self.balances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records the balances with the number of the last entry they hold.
    ///
    /// The spend records that make those entries true may still be staged
    /// in memory (the spend store writes them at the next commit); they are
    /// written out first, so that the store, which recovers a prefix of its
    /// writes, never keeps a checkpoint without the spends it counts.
    pub(crate) fn checkpoint(&self) -> Result<(), LedgerError> {
        let _still = self.quiesce();
        let last = self.next_seq.load(Ordering::Relaxed).saturating_sub(1);
        let balances = self.balances();
        self.ledger.write_staged()?;
        self.table.insert(CHECKPOINT_KEY, balances.encode(last))
    }

    /// The stored reply of the operation with `reference`, if any.
    pub(crate) fn reply_for(&self, reference: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        self.table.get(reply_key(reference))
    }

    /// Adds the reply of the operation with `reference` to `writes`.
    pub(crate) fn record_reply(&self, writes: &mut Writes, reference: &str, reply: &[u8]) {
        writes.insert(&self.table, reply_key(reference), reply);
    }
}

/// An unbalanced transaction is a bug, never input: it is refused before
/// anything is written.
fn check_balanced(tx: &Transaction) -> Result<(), BrokerError> {
    if tx.is_balanced() {
        return Ok(());
    }
    Err(BrokerError::Server {
        detail: format!("an unbalanced {} transaction was refused", tx.kind.name()),
    })
}

/// Every journal entry of `table` in order, for audits.
pub(crate) fn entries(
    table: &Table,
) -> impl Iterator<Item = Result<(u64, Option<Transaction>), LedgerError>> + use<> {
    table.scan_prefix([ENTRY_PREFIX]).map(|entry| {
        entry.map(|(key, value)| {
            let seq = parse_entry_key(&key).unwrap_or(0);
            (seq, Transaction::decode(&value))
        })
    })
}

/// A checkpoint as stored: `Err(())` if it is unreadable.
pub(crate) type StoredCheckpoint = Result<(u64, Balances), ()>;

/// The stored checkpoint of `table`, if any, for audits.
pub(crate) fn stored_checkpoint(table: &Table) -> Result<Option<StoredCheckpoint>, LedgerError> {
    Ok(table
        .get(CHECKPOINT_KEY)?
        .map(|bytes| Balances::decode(&bytes).ok_or(())))
}

fn entry_key(seq: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = ENTRY_PREFIX;
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn parse_entry_key(key: &[u8]) -> Option<u64> {
    match key {
        [ENTRY_PREFIX, rest @ ..] => rest.try_into().ok().map(u64::from_be_bytes),
        _ => None,
    }
}

fn reply_key(reference: &str) -> Vec<u8> {
    let mut key = vec![REPLY_PREFIX];
    key.extend_from_slice(reference.as_bytes());
    key
}

fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Appends a name of at most 255 bytes with its length.
fn push_name(out: &mut Vec<u8>, name: &str) {
    let name = truncate(name, 255);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.0.len() < len {
            return None;
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|bytes| bytes[0])
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_be_bytes)
    }

    fn u128(&mut self) -> Option<u128> {
        self.take(16)?.try_into().ok().map(u128::from_be_bytes)
    }

    fn name(&mut self) -> Option<&'a str> {
        let len = self.u8()? as usize;
        std::str::from_utf8(self.take(len)?).ok()
    }
}

fn unreadable(what: &str) -> BrokerError {
    BrokerError::Storage(LedgerError::Storage {
        operation: "read journal",
        detail: format!("stored {what} is unreadable"),
    })
}

#[cfg(test)]
mod tests {
    use millicent_ledger::Durability;

    use super::*;

    fn vendor() -> VendorName {
        VendorName::new("news.example").unwrap()
    }

    fn exchange(paid: u64, change: u64, value: u64, fee: u64) -> Transaction {
        Transaction::new(TxKind::Exchange, 7, "x")
            .debit(Account::BrokerScrip, Amount::new(paid))
            .credit(Account::BrokerScrip, Amount::new(change))
            .credit(Account::VendorScrip(vendor()), Amount::new(value))
            .credit(Account::Fees, Amount::new(fee))
            .scrip(
                ScripRole::Spent,
                None,
                ScripId::new(1, 2),
                Amount::new(paid),
            )
            .scrip(
                ScripRole::Issued,
                Some(&vendor()),
                ScripId::new(9, 0),
                Amount::new(value),
            )
    }

    #[test]
    fn accounts_and_transactions_round_trip() {
        for account in [
            Account::Cash,
            Account::Fees,
            Account::BrokerScrip,
            Account::Customer(u64::MAX),
            Account::VendorScrip(vendor()),
            Account::Payable(vendor()),
            Account::Warehouse(vendor()),
            Account::Broker(vendor()),
        ] {
            assert_eq!(Account::parse(&account.name()), Some(account));
        }
        assert_eq!(Account::parse("cash/x"), None);
        assert_eq!(Account::parse("payable"), None);
        assert_eq!(Account::parse("customer/x"), None);

        let tx = exchange(100, 40, 55, 5);
        assert!(tx.is_balanced());
        assert_eq!(Transaction::decode(&tx.encode()), Some(tx.clone()));
        let bytes = tx.encode();
        for len in 0..bytes.len() {
            assert_eq!(Transaction::decode(&bytes[..len]), None);
        }
        assert!(!exchange(100, 40, 55, 6).is_balanced());
        // Zero amounts post nothing.
        assert_eq!(exchange(60, 0, 60, 0).postings.len(), 2);
    }

    #[tokio::test]
    async fn balances_survive_a_reopen_with_and_without_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let expected = {
            let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
            let (books, _) = Books::open(&ledger, |_| true).unwrap();
            books
                .post(Writes::new(), &exchange(100, 40, 55, 5))
                .unwrap();
            books.checkpoint().unwrap();
            books.post(Writes::new(), &exchange(10, 0, 10, 0)).unwrap();
            let credit = Transaction::new(TxKind::Credit, 1, "c")
                .debit(Account::Cash, Amount::new(30))
                .credit(Account::Customer(4), Amount::new(30));
            books.post(Writes::new(), &credit).unwrap();
            let unbalanced = exchange(1, 0, 2, 0);
            assert!(books.post(Writes::new(), &unbalanced).is_err());
            ledger.commit().await.unwrap();
            let balances = books.balances();
            drop(books);
            ledger.close().await.unwrap();
            balances
        };
        assert_eq!(expected.accounts[&Account::BrokerScrip].balance(), 70);
        assert_eq!(
            expected.accounts[&Account::VendorScrip(vendor())].balance(),
            -65
        );
        assert_eq!(expected.customers.balance(), -30);
        assert_eq!(expected.by_class().values().sum::<i128>(), 0);

        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let (books, _) = Books::open(&ledger, |_| true).unwrap();
        assert_eq!(books.balances(), expected);
        let seqs: Vec<u64> = entries(books.table())
            .map(|entry| entry.unwrap().0)
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
        // The refused transaction left no entry, and numbering goes on.
        books.post(Writes::new(), &exchange(1, 0, 1, 0)).unwrap();
        let last = entries(books.table()).last().unwrap().unwrap().0;
        assert_eq!(last, 4);
    }

    #[tokio::test]
    async fn entries_after_the_checkpoint_that_did_not_happen_are_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
            let (books, _) = Books::open(&ledger, |_| true).unwrap();
            let first = exchange(5, 0, 5, 0);
            books.write_now(&first).unwrap();
            books.applied(&first);
            books.checkpoint().unwrap();
            // Two more written, and the process dies before applying them.
            books.write_now(&exchange(7, 0, 7, 0)).unwrap();
            books.write_now(&exchange(9, 0, 9, 0)).unwrap();
            assert!(books.write_now(&exchange(1, 0, 2, 0)).is_err());
            ledger.commit().await.unwrap();
            drop(books);
            ledger.close().await.unwrap();
        }
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        // The checkpoint holds entry 1; of 2 and 3, the 7 did not happen.
        let (books, dropped) = Books::open(&ledger, |tx| tx.postings[0].amount != 7).unwrap();
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].0, 2);
        assert_eq!(books.balance(&Account::BrokerScrip), 14);
        // The entry stays until the caller has undone what came with it.
        let seqs = |books: &Books| -> Vec<u64> {
            entries(books.table())
                .map(|entry| entry.unwrap().0)
                .collect()
        };
        assert_eq!(seqs(&books), [1, 2, 3]);
        let mut writes = Writes::new();
        books.discard(&mut writes, 2);
        ledger.apply(writes).unwrap();
        assert_eq!(seqs(&books), [1, 3]);
    }
}
