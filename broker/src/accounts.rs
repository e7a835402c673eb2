//! Customer accounts of one shard: balances, history, credit references,
//! and the replies to account calls kept for retries.
//!
//! Every operation on an account runs under that account's lock and ends
//! in one atomic write: the balance, its history entry, the record that
//! makes the operation idempotent and, when money moves, the journal entry
//! of the books (see `books`). A refused operation writes nothing. Each
//! shard is kept by one process, so a lock in memory is all it takes to
//! keep two operations on one account from racing for its balance.
//!
//! # Idempotency
//!
//! - A credit carries the operator's reference; a second credit with the
//!   same reference to the same account credits nothing and returns the
//!   reply of the first. References are kept for good.
//! - An account call carries a nonce. A second call with the same nonce and
//!   the same MAC (the same call, retried) gets the stored reply of the
//!   first; the same nonce with another MAC is refused. Call records are
//!   removed once their timestamp is outside the clock window, after which
//!   the call is refused as stale anyway.
//!
//! # Keys (table `accounts`; integers big-endian)
//!
//! - `n` → the next account number of the shard (8); the first is 1, and an
//!   account's ID is its shard (top byte) and number
//! - `a ‖ account (8)` → balance (8) ‖ number of history entries (8)
//! - `h ‖ account (8) ‖ index (8)` → timestamp ms (8) ‖ kind (1: credit,
//!   2: broker scrip bought, 3: refund) ‖ amount (8) ‖ balance after (8) ‖
//!   reference
//! - `c ‖ account (8) ‖ reference` → balance after that credit (8)
//! - `q ‖ account (8) ‖ nonce (16)` → timestamp ms (8) ‖ method (1) ‖ MAC
//!   length (1) ‖ MAC ‖ reply
//! - `t ‖ minute of the call's timestamp (8) ‖ account (8) ‖ nonce (16)` →
//!   empty; orders call records by age for pruning

use std::sync::{Mutex, MutexGuard, PoisonError};

use millicent_core::account::NONCE_LEN;
use millicent_core::{Amount, Mac, ScripId};
use millicent_ledger::{Batch, Ledger, LedgerError, Table, Writes};

use crate::BrokerError;
use crate::books::{Account, Books, ScripRole, Transaction, TxKind};

/// Most history entries a statement shows.
pub(crate) const STATEMENT_ENTRIES: u64 = 100;
/// Largest amount one credit or purchase may move: history entries carry a
/// signed 64-bit change of the balance.
pub(crate) const MAX_ENTRY_AMOUNT: u64 = i64::MAX as u64;
/// Longest credit reference, in bytes.
pub(crate) const MAX_REFERENCE_LEN: usize = 128;

const NEXT_ACCOUNT_KEY: &[u8] = b"n";
const ACCOUNT_PREFIX: u8 = b'a';
const HISTORY_PREFIX: u8 = b'h';
const CREDIT_PREFIX: u8 = b'c';
const CALL_PREFIX: u8 = b'q';
const CALL_AGE_PREFIX: u8 = b't';
const MS_PER_MINUTE: u64 = 60_000;
const LOCK_STRIPES: usize = 1024;

/// The accounts of one shard's customers.
pub(crate) struct Accounts {
    table: Table,
    shard: u8,
    locks: Vec<Mutex<()>>,
    opening: Mutex<()>,
}

/// An authenticated account call, as far as idempotency needs it: the MAC
/// was checked before it gets here.
pub(crate) struct AccountCall {
    pub(crate) account_id: u64,
    pub(crate) timestamp_ms: u64,
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) mac: Mac,
    pub(crate) method: Method,
}

/// The account calls; the name enters the call's MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    BuyBrokerScrip = 1,
    GetAccount = 2,
}

impl Method {
    /// The method name as the MAC covers it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Method::BuyBrokerScrip => "BuyBrokerScrip",
            Method::GetAccount => "GetAccount",
        }
    }
}

/// The reply to an account call or credit, and whether it was made now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome<T> {
    /// The operation happened now.
    Fresh(T),
    /// The operation had happened before; this is its reply, unchanged.
    Repeat(T),
}

impl<T> Outcome<T> {
    pub(crate) fn into_inner(self) -> T {
        match self {
            Outcome::Fresh(value) | Outcome::Repeat(value) => value,
        }
    }
}

/// What moved an account's balance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Credit = 1,
    BuyBrokerScrip = 2,
    Refund = 3,
}

impl EntryKind {
    /// The kind's name in account statements.
    pub(crate) fn name(self) -> &'static str {
        match self {
            EntryKind::Credit => "credit",
            EntryKind::BuyBrokerScrip => "buy_broker_scrip",
            EntryKind::Refund => "refund",
        }
    }

    /// Whether the entry adds to the balance.
    pub(crate) fn adds(self) -> bool {
        !matches!(self, EntryKind::BuyBrokerScrip)
    }

    fn from_byte(byte: u8) -> Option<EntryKind> {
        match byte {
            1 => Some(EntryKind::Credit),
            2 => Some(EntryKind::BuyBrokerScrip),
            3 => Some(EntryKind::Refund),
            _ => None,
        }
    }
}

/// One line of an account's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) timestamp_ms: u64,
    pub(crate) kind: EntryKind,
    /// The amount moved: added for a credit or refund, taken for a purchase.
    pub(crate) amount: Amount,
    pub(crate) balance_after: Amount,
    pub(crate) reference: String,
}

/// An account's balance and latest history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Statement {
    pub(crate) account_id: u64,
    pub(crate) balance: Amount,
    /// The latest entries, oldest first.
    pub(crate) entries: Vec<Entry>,
}

/// The stored head of an account.
#[derive(Clone, Copy)]
struct AccountRecord {
    balance: Amount,
    entries: u64,
}

impl Accounts {
    /// Opens the `accounts` table of `shard`.
    pub(crate) fn open(ledger: &Ledger, shard: u8) -> Result<Accounts, LedgerError> {
        Ok(Accounts {
            table: ledger.table("accounts")?,
            shard,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            opening: Mutex::new(()),
        })
    }

    /// Number of accounts ever opened in the shard.
    pub(crate) fn count(&self) -> Result<u64, BrokerError> {
        Ok(self.next_number()?.saturating_sub(1))
    }

    /// The lock of `account_id`: held for the whole of any operation that
    /// reads and changes the account.
    pub(crate) fn lock(&self, account_id: u64) -> MutexGuard<'_, ()> {
        let stripe = (account_id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize % LOCK_STRIPES;
        // Every write is atomic, so a panic under the lock leaves nothing
        // half done and a poisoned lock is safe to take.
        self.locks[stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens an account with a zero balance; returns its ID.
    pub(crate) fn open_account(&self) -> Result<u64, BrokerError> {
        let _opening = self.opening.lock().unwrap_or_else(PoisonError::into_inner);
        let number = self.next_number()?;
        let id = millicent_core::broker::account_id(self.shard, number).map_err(|_| {
            BrokerError::Server {
                detail: format!("every account number of shard {} has been used", self.shard),
            }
        })?;
        let mut batch = Batch::default();
        batch.insert(NEXT_ACCOUNT_KEY, (number + 1).to_be_bytes());
        batch.insert(
            account_key(ACCOUNT_PREFIX, id),
            encode_account(AccountRecord {
                balance: Amount::ZERO,
                entries: 0,
            }),
        );
        self.table.apply(batch)?;
        Ok(id)
    }

    /// Adds `amount` to the balance, once per `reference`; returns the
    /// balance right after the credit with that reference.
    pub(crate) fn credit(
        &self,
        books: &Books,
        account_id: u64,
        amount: Amount,
        reference: &str,
        now_ms: u64,
    ) -> Result<Outcome<Amount>, BrokerError> {
        let reference_key = credit_key(account_id, reference);
        let _account = self.lock(account_id);
        if let Some(bytes) = self.table.get(&reference_key)? {
            let (balance, credited) = bytes
                .split_at_checked(8)
                .and_then(|(balance, credited)| Some((decode_u64(balance)?, decode_u64(credited)?)))
                .ok_or_else(|| unreadable("credit"))?;
            if credited != amount.units() {
                return Err(BrokerError::ReferenceReused {
                    reference: reference.to_owned(),
                    recorded: format!("a credit of {credited} to account {account_id}"),
                    asked: format!("a credit of {amount}"),
                });
            }
            return Ok(Outcome::Repeat(Amount::new(balance)));
        }
        let mut writes = Writes::new();
        let balance = self.book(
            &mut writes,
            account_id,
            EntryKind::Credit,
            amount,
            reference,
            now_ms,
        )?;
        let mut recorded = [0; 16];
        recorded[..8].copy_from_slice(&balance.units().to_be_bytes());
        recorded[8..].copy_from_slice(&amount.units().to_be_bytes());
        writes.insert(&self.table, &reference_key, recorded);
        let tx = Transaction::new(TxKind::Credit, now_ms, reference)
            .debit(Account::Cash, amount)
            .credit(Account::Customer(account_id), amount);
        books.post(writes, &tx)?;
        Ok(Outcome::Fresh(balance))
    }

    /// Takes `amount` from the balance for the broker scrip `scrip`;
    /// `reply` makes the reply from the new balance.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn buy_broker_scrip(
        &self,
        books: &Books,
        call: &AccountCall,
        amount: Amount,
        scrip: ScripId,
        reference: &str,
        now_ms: u64,
        reply: impl FnOnce(Amount) -> Vec<u8>,
    ) -> Result<Outcome<Vec<u8>>, BrokerError> {
        self.call(books, call, |writes| {
            let balance = self.book(
                writes,
                call.account_id,
                EntryKind::BuyBrokerScrip,
                amount,
                reference,
                now_ms,
            )?;
            let tx = Transaction::new(TxKind::BuyBrokerScrip, now_ms, reference)
                .debit(Account::Customer(call.account_id), amount)
                .credit(Account::BrokerScrip, amount)
                .scrip(ScripRole::Issued, None, scrip, amount);
            Ok((reply(balance), Some(tx)))
        })
    }

    /// The account's balance and latest history; `reply` encodes it.
    pub(crate) fn statement(
        &self,
        books: &Books,
        call: &AccountCall,
        reply: impl FnOnce(&Statement) -> Vec<u8>,
    ) -> Result<Outcome<Vec<u8>>, BrokerError> {
        self.call(books, call, |_| {
            let account = self.get(call.account_id)?;
            let first = account.entries.saturating_sub(STATEMENT_ENTRIES);
            let mut entries = Vec::with_capacity((account.entries - first) as usize);
            for index in first..account.entries {
                let bytes = self
                    .table
                    .get(history_key(call.account_id, index))?
                    .ok_or_else(|| unreadable("history"))?;
                entries.push(decode_entry(&bytes).ok_or_else(|| unreadable("history"))?);
            }
            let statement = Statement {
                account_id: call.account_id,
                balance: account.balance,
                entries,
            };
            Ok((reply(&statement), None))
        })
    }

    /// Adds to `writes` a history entry of `kind` moving `amount` and the
    /// account's new balance, which it returns. The caller holds the
    /// account's lock until `writes` are written, and journals the move.
    pub(crate) fn book(
        &self,
        writes: &mut Writes,
        account_id: u64,
        kind: EntryKind,
        amount: Amount,
        reference: &str,
        now_ms: u64,
    ) -> Result<Amount, BrokerError> {
        let account = self.get(account_id)?;
        let balance = if kind.adds() {
            account.balance.checked_add(amount)?
        } else {
            account
                .balance
                .checked_sub(amount)
                .map_err(|_| BrokerError::InsufficientFunds {
                    balance: account.balance.units(),
                    amount: amount.units(),
                })?
        };
        let entry = Entry {
            timestamp_ms: now_ms,
            kind,
            amount,
            balance_after: balance,
            reference: reference.to_owned(),
        };
        writes.insert(
            &self.table,
            history_key(account_id, account.entries),
            encode_entry(&entry),
        );
        writes.insert(
            &self.table,
            account_key(ACCOUNT_PREFIX, account_id),
            encode_account(AccountRecord {
                balance,
                entries: account.entries + 1,
            }),
        );
        Ok(balance)
    }

    /// Every account of the shard with its balance, for audits.
    pub(crate) fn balances(
        &self,
    ) -> impl Iterator<Item = Result<(u64, Amount), BrokerError>> + use<> {
        self.table.scan_prefix([ACCOUNT_PREFIX]).map(|entry| {
            let (key, value) = entry?;
            let id = key
                .get(1..)
                .and_then(decode_u64)
                .ok_or_else(|| unreadable("account key"))?;
            let record = decode_account(&value).ok_or_else(|| unreadable("account"))?;
            Ok((id, record.balance))
        })
    }

    /// Removes the records of calls whose timestamp is more than
    /// `window_ms` before `now_ms`: such a call is refused as stale before
    /// its record would be looked at. Returns how many were removed.
    pub(crate) fn prune_calls(&self, now_ms: u64, window_ms: u64) -> Result<usize, BrokerError> {
        let oldest_kept = now_ms.saturating_sub(window_ms) / MS_PER_MINUTE;
        let mut batch = Batch::default();
        let mut removed = 0;
        for entry in self.table.scan_prefix([CALL_AGE_PREFIX]) {
            let (key, _) = entry?;
            // Keys are ordered by minute: the first one still kept ends the scan.
            let Some((minute, account_id, nonce)) = parse_age_key(&key) else {
                break;
            };
            if minute >= oldest_kept {
                break;
            }
            let mut call_key = account_key(CALL_PREFIX, account_id);
            call_key.extend_from_slice(nonce);
            batch.remove(call_key);
            batch.remove(&key);
            removed += 1;
        }
        self.table.apply(batch)?;
        Ok(removed)
    }

    /// Runs `body` as the first execution of `call`, or returns the stored
    /// reply of a retried call. `body` adds its writes and returns the
    /// reply and the transaction it journals, if money moves.
    fn call(
        &self,
        books: &Books,
        call: &AccountCall,
        body: impl FnOnce(&mut Writes) -> Result<(Vec<u8>, Option<Transaction>), BrokerError>,
    ) -> Result<Outcome<Vec<u8>>, BrokerError> {
        let mut call_key = account_key(CALL_PREFIX, call.account_id);
        call_key.extend_from_slice(&call.nonce);
        let mut age_key = vec![CALL_AGE_PREFIX];
        age_key.extend_from_slice(&(call.timestamp_ms / MS_PER_MINUTE).to_be_bytes());
        age_key.extend_from_slice(&call.account_id.to_be_bytes());
        age_key.extend_from_slice(&call.nonce);

        let _account = self.lock(call.account_id);
        if let Some(record) = self.table.get(&call_key)? {
            return match stored_reply(&record, call) {
                Some(reply) => Ok(Outcome::Repeat(reply)),
                None => Err(BrokerError::Unauthenticated {
                    detail: "the nonce was already used by a different call",
                }),
            };
        }
        let mut writes = Writes::new();
        let (reply, tx) = body(&mut writes)?;
        writes.insert(&self.table, &call_key, encode_call_record(call, &reply));
        writes.insert(&self.table, &age_key, []);
        match tx {
            Some(tx) => books.post(writes, &tx)?,
            None => books.ledger().apply(writes)?,
        }
        Ok(Outcome::Fresh(reply))
    }

    fn get(&self, account_id: u64) -> Result<AccountRecord, BrokerError> {
        let bytes = self
            .table
            .get(account_key(ACCOUNT_PREFIX, account_id))?
            .ok_or(BrokerError::UnknownAccount { account_id })?;
        decode_account(&bytes).ok_or_else(|| unreadable("account"))
    }

    fn next_number(&self) -> Result<u64, BrokerError> {
        match self.table.get(NEXT_ACCOUNT_KEY)? {
            Some(bytes) => decode_u64(&bytes).ok_or_else(|| unreadable("account counter")),
            None => Ok(1),
        }
    }
}

fn encode_account(record: AccountRecord) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&record.balance.units().to_be_bytes());
    value[8..].copy_from_slice(&record.entries.to_be_bytes());
    value
}

fn decode_account(bytes: &[u8]) -> Option<AccountRecord> {
    Some(AccountRecord {
        balance: Amount::new(decode_u64(bytes.get(..8)?)?),
        entries: decode_u64(bytes.get(8..)?)?,
    })
}

fn account_key(kind: u8, account_id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + 8 + 16);
    key.push(kind);
    key.extend_from_slice(&account_id.to_be_bytes());
    key
}

fn history_key(account_id: u64, index: u64) -> Vec<u8> {
    let mut key = account_key(HISTORY_PREFIX, account_id);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn credit_key(account_id: u64, reference: &str) -> Vec<u8> {
    let mut key = account_key(CREDIT_PREFIX, account_id);
    key.extend_from_slice(reference.as_bytes());
    key
}

fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut value = Vec::with_capacity(25 + entry.reference.len());
    value.extend_from_slice(&entry.timestamp_ms.to_be_bytes());
    value.push(entry.kind as u8);
    value.extend_from_slice(&entry.amount.units().to_be_bytes());
    value.extend_from_slice(&entry.balance_after.units().to_be_bytes());
    value.extend_from_slice(entry.reference.as_bytes());
    value
}

fn decode_entry(bytes: &[u8]) -> Option<Entry> {
    Some(Entry {
        timestamp_ms: decode_u64(bytes.get(..8)?)?,
        kind: EntryKind::from_byte(*bytes.get(8)?)?,
        amount: Amount::new(decode_u64(bytes.get(9..17)?)?),
        balance_after: Amount::new(decode_u64(bytes.get(17..25)?)?),
        reference: String::from_utf8(bytes.get(25..)?.to_vec()).ok()?,
    })
}

fn encode_call_record(call: &AccountCall, reply: &[u8]) -> Vec<u8> {
    let mac = call.mac.as_bytes();
    let mut value = Vec::with_capacity(10 + mac.len() + reply.len());
    value.extend_from_slice(&call.timestamp_ms.to_be_bytes());
    value.push(call.method as u8);
    value.push(mac.len() as u8);
    value.extend_from_slice(mac);
    value.extend_from_slice(reply);
    value
}

/// The stored reply, if `record` is of the same call: same method and MAC
/// (the MAC covers the timestamp, nonce and parameters).
fn stored_reply(record: &[u8], call: &AccountCall) -> Option<Vec<u8>> {
    let method = *record.get(8)?;
    let mac_len = *record.get(9)? as usize;
    let mac = record.get(10..10 + mac_len)?;
    let same = call.mac.ct_eq_bytes(mac) && method == call.method as u8;
    same.then(|| record[10 + mac_len..].to_vec())
}

/// Minute, account and nonce of a `t` key.
fn parse_age_key(key: &[u8]) -> Option<(u64, u64, &[u8])> {
    let minute = decode_u64(key.get(1..9)?)?;
    let account_id = decode_u64(key.get(9..17)?)?;
    let nonce = key.get(17..)?;
    Some((minute, account_id, nonce))
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

fn unreadable(what: &str) -> BrokerError {
    BrokerError::Storage(LedgerError::Storage {
        operation: "read account",
        detail: format!("stored {what} is unreadable"),
    })
}

#[cfg(test)]
mod tests {
    use millicent_ledger::Durability;

    use super::*;
    use crate::books::Class;

    const NOW_MS: u64 = 1_800_000_000_000;

    fn call(account_id: u64, nonce: u8, mac: u8, method: Method) -> AccountCall {
        AccountCall {
            account_id,
            timestamp_ms: NOW_MS,
            nonce: [nonce; NONCE_LEN],
            mac: Mac::from_slice(&[mac; 16]),
            method,
        }
    }

    fn balance_reply(balance: Amount) -> Vec<u8> {
        balance.units().to_be_bytes().to_vec()
    }

    fn open(dir: &std::path::Path, shard: u8) -> (Ledger, Accounts, Books) {
        let ledger = Ledger::open(dir, Durability::Strict).unwrap();
        let accounts = Accounts::open(&ledger, shard).unwrap();
        let (books, _) = Books::open(&ledger, |_| true).unwrap();
        (ledger, accounts, books)
    }

    #[tokio::test]
    async fn credits_are_idempotent_per_reference_and_checked_for_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let (_ledger, accounts, books) = open(dir.path(), 0);
        let id = accounts.open_account().unwrap();
        assert_eq!(id, 1);
        assert_eq!(accounts.count().unwrap(), 1);

        let credit =
            |amount, reference| accounts.credit(&books, id, Amount::new(amount), reference, NOW_MS);
        assert_eq!(credit(10, "a").unwrap(), Outcome::Fresh(Amount::new(10)));
        assert_eq!(credit(5, "b").unwrap(), Outcome::Fresh(Amount::new(15)));
        assert_eq!(credit(10, "a").unwrap(), Outcome::Repeat(Amount::new(10)));
        // The same reference for another amount changes nothing.
        let reused = credit(11, "a").unwrap_err();
        assert_eq!(reused.reason(), "reference_reused", "{reused}");
        assert!(matches!(
            credit(u64::MAX, "c"),
            Err(BrokerError::Protocol(millicent_core::Error::AmountOverflow))
        ));
        assert!(matches!(
            accounts.credit(&books, 99, Amount::new(1), "a", NOW_MS),
            Err(BrokerError::UnknownAccount { account_id: 99 })
        ));

        let statement = accounts
            .statement(&books, &call(id, 1, 1, Method::GetAccount), |statement| {
                balance_reply(statement.balance)
            })
            .unwrap();
        assert_eq!(statement.into_inner(), balance_reply(Amount::new(15)));

        // Each credit is one journal entry: cash in, owed to the customer.
        let classes = books.balances().by_class();
        assert_eq!(classes[&Class::Cash], 15);
        assert_eq!(classes[&Class::Customer], -15);
    }

    #[tokio::test]
    async fn accounts_of_a_shard_carry_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let (_ledger, accounts, _books) = open(dir.path(), 3);
        let id = accounts.open_account().unwrap();
        assert_eq!(millicent_core::broker::account_shard(id), 3);
        assert_eq!(id & millicent_core::broker::MAX_ACCOUNT_NUMBER, 1);
    }

    #[tokio::test]
    async fn a_purchase_debits_once_per_nonce_and_never_overdraws() {
        let dir = tempfile::tempdir().unwrap();
        let (_ledger, accounts, books) = open(dir.path(), 0);
        let id = accounts.open_account().unwrap();
        accounts
            .credit(&books, id, Amount::new(10), "r", NOW_MS)
            .unwrap();

        let buy = |call: &AccountCall, amount, seq| {
            accounts.buy_broker_scrip(
                &books,
                call,
                Amount::new(amount),
                ScripId::new(1, seq),
                "scrip",
                NOW_MS,
                balance_reply,
            )
        };
        let first = call(id, 1, 1, Method::BuyBrokerScrip);
        assert_eq!(
            buy(&first, 4, 0).unwrap(),
            Outcome::Fresh(balance_reply(Amount::new(6)))
        );
        assert_eq!(
            buy(&first, 4, 1).unwrap(),
            Outcome::Repeat(balance_reply(Amount::new(6)))
        );

        let reused_nonce = call(id, 1, 2, Method::BuyBrokerScrip);
        assert!(matches!(
            buy(&reused_nonce, 4, 2),
            Err(BrokerError::Unauthenticated { .. })
        ));
        let too_much = call(id, 2, 1, Method::BuyBrokerScrip);
        assert!(matches!(
            buy(&too_much, 7, 3),
            Err(BrokerError::InsufficientFunds {
                balance: 6,
                amount: 7
            })
        ));
        // The refused purchase left no call record: the nonce is still free.
        assert_eq!(
            buy(&too_much, 6, 4).unwrap(),
            Outcome::Fresh(balance_reply(Amount::ZERO))
        );

        let statement = accounts
            .statement(&books, &call(id, 3, 1, Method::GetAccount), |statement| {
                let kinds: Vec<&str> = statement.entries.iter().map(|e| e.kind.name()).collect();
                kinds.join(",").into_bytes()
            })
            .unwrap();
        assert_eq!(
            statement.into_inner(),
            b"credit,buy_broker_scrip,buy_broker_scrip"
        );
        let classes = books.balances().by_class();
        assert_eq!(classes[&Class::BrokerScrip], -10);
        assert_eq!(classes[&Class::Customer], 0);
    }

    #[tokio::test]
    async fn a_statement_shows_the_latest_hundred_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (_ledger, accounts, books) = open(dir.path(), 0);
        let id = accounts.open_account().unwrap();
        for n in 0..105 {
            accounts
                .credit(&books, id, Amount::new(1), &format!("r{n}"), NOW_MS)
                .unwrap();
        }
        let reply = accounts
            .statement(&books, &call(id, 1, 1, Method::GetAccount), |statement| {
                let first = &statement.entries[0];
                format!("{} {}", statement.entries.len(), first.reference).into_bytes()
            })
            .unwrap();
        assert_eq!(reply.into_inner(), b"100 r5");
    }

    #[tokio::test]
    async fn call_records_are_pruned_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let (_ledger, accounts, books) = open(dir.path(), 0);
        let id = accounts.open_account().unwrap();
        let first = call(id, 1, 1, Method::GetAccount);
        accounts
            .statement(&books, &first, |_| b"old".to_vec())
            .unwrap();

        let window = 300_000;
        assert_eq!(accounts.prune_calls(NOW_MS + window, window).unwrap(), 0);
        assert_eq!(
            accounts
                .prune_calls(NOW_MS + window + MS_PER_MINUTE, window)
                .unwrap(),
            1
        );
        let again = accounts
            .statement(&books, &first, |_| b"new".to_vec())
            .unwrap();
        assert_eq!(again, Outcome::Fresh(b"new".to_vec()));
    }
}
