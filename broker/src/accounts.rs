//! Customer accounts: balances, history, credit references, and the replies
//! to account calls kept for retries.
//!
//! Every operation is one transaction over the `accounts` table, so a
//! balance, its history entry and the record that makes the operation
//! idempotent change together or not at all; a refused operation writes
//! nothing. The transaction bodies may run more than once when they
//! conflict, so callers hand in everything random or minted beforehand.
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
//! - `n` → the next account ID (8); the first account is 1
//! - `a ‖ account (8)` → balance (8) ‖ number of history entries (8)
//! - `h ‖ account (8) ‖ index (8)` → timestamp ms (8) ‖ kind (1: credit,
//!   2: broker scrip bought) ‖ amount (8) ‖ balance after (8) ‖ reference
//! - `c ‖ account (8) ‖ reference` → balance after that credit (8)
//! - `q ‖ account (8) ‖ nonce (16)` → timestamp ms (8) ‖ method (1) ‖ MAC
//!   length (1) ‖ MAC ‖ reply
//! - `t ‖ minute of the call's timestamp (8) ‖ account (8) ‖ nonce (16)` →
//!   empty; orders call records by age for pruning

use millicent_core::account::NONCE_LEN;
use millicent_core::{Amount, Mac};
use millicent_ledger::{Abort, Batch, Ledger, LedgerError, Table, TxError, TxTable};

use crate::BrokerError;

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

/// The accounts of the broker's customers.
pub(crate) struct Accounts {
    table: Table,
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
}

impl EntryKind {
    /// The kind's name in account statements.
    pub(crate) fn name(self) -> &'static str {
        match self {
            EntryKind::Credit => "credit",
            EntryKind::BuyBrokerScrip => "buy_broker_scrip",
        }
    }

    fn from_byte(byte: u8) -> Option<EntryKind> {
        match byte {
            1 => Some(EntryKind::Credit),
            2 => Some(EntryKind::BuyBrokerScrip),
            _ => None,
        }
    }
}

/// One line of an account's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) timestamp_ms: u64,
    pub(crate) kind: EntryKind,
    /// The amount moved: added for a credit, taken for a purchase.
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
    /// Opens the `accounts` table.
    pub(crate) fn open(ledger: &Ledger) -> Result<Accounts, LedgerError> {
        Ok(Accounts {
            table: ledger.table("accounts")?,
        })
    }

    /// Number of accounts ever opened.
    pub(crate) fn count(&self) -> Result<u64, BrokerError> {
        let next = match self.table.get(NEXT_ACCOUNT_KEY)? {
            Some(bytes) => decode_u64(&bytes).ok_or_else(|| unreadable("account counter"))?,
            None => 1,
        };
        Ok(next.saturating_sub(1))
    }

    /// Opens an account with a zero balance; returns its ID.
    pub(crate) fn open_account(&self) -> Result<u64, BrokerError> {
        transact(&self.table, |tx| {
            let id = match tx.get(NEXT_ACCOUNT_KEY)? {
                Some(bytes) => decode_u64(&bytes).ok_or_else(|| abort_unreadable("counter"))?,
                None => 1,
            };
            let next = id.checked_add(1).ok_or_else(|| {
                Abort::With(BrokerError::Server {
                    detail: "every account ID has been used".to_owned(),
                })
            })?;
            tx.insert(NEXT_ACCOUNT_KEY, next.to_be_bytes())?;
            put_account(
                tx,
                id,
                AccountRecord {
                    balance: Amount::ZERO,
                    entries: 0,
                },
            )?;
            Ok(id)
        })
    }

    /// Adds `amount` to the balance, once per `reference`; returns the
    /// balance right after the credit with that reference.
    pub(crate) fn credit(
        &self,
        account_id: u64,
        amount: Amount,
        reference: &str,
        now_ms: u64,
    ) -> Result<Outcome<Amount>, BrokerError> {
        let reference_key = credit_key(account_id, reference);
        transact(&self.table, |tx| {
            if let Some(bytes) = tx.get(&reference_key)? {
                let balance = decode_u64(&bytes).ok_or_else(|| abort_unreadable("credit"))?;
                return Ok(Outcome::Repeat(Amount::new(balance)));
            }
            let account = get_account(tx, account_id)?;
            let balance = account
                .balance
                .checked_add(amount)
                .map_err(|error| Abort::With(error.into()))?;
            append_entry(
                tx,
                account_id,
                account,
                &Entry {
                    timestamp_ms: now_ms,
                    kind: EntryKind::Credit,
                    amount,
                    balance_after: balance,
                    reference: reference.to_owned(),
                },
            )?;
            tx.insert(&reference_key, balance.units().to_be_bytes())?;
            Ok(Outcome::Fresh(balance))
        })
    }

    /// Takes `amount` from the balance for broker scrip; `reply` makes the
    /// reply from the new balance (it may run more than once).
    pub(crate) fn buy_broker_scrip(
        &self,
        call: &AccountCall,
        amount: Amount,
        reference: &str,
        now_ms: u64,
        reply: impl Fn(Amount) -> Vec<u8>,
    ) -> Result<Outcome<Vec<u8>>, BrokerError> {
        self.call(call, |tx| {
            let account = get_account(tx, call.account_id)?;
            let balance = account.balance.checked_sub(amount).map_err(|_| {
                Abort::With(BrokerError::InsufficientFunds {
                    balance: account.balance.units(),
                    amount: amount.units(),
                })
            })?;
            append_entry(
                tx,
                call.account_id,
                account,
                &Entry {
                    timestamp_ms: now_ms,
                    kind: EntryKind::BuyBrokerScrip,
                    amount,
                    balance_after: balance,
                    reference: reference.to_owned(),
                },
            )?;
            Ok(reply(balance))
        })
    }

    /// The account's balance and latest history; `reply` encodes it.
    pub(crate) fn statement(
        &self,
        call: &AccountCall,
        reply: impl Fn(&Statement) -> Vec<u8>,
    ) -> Result<Outcome<Vec<u8>>, BrokerError> {
        self.call(call, |tx| {
            let account = get_account(tx, call.account_id)?;
            let first = account.entries.saturating_sub(STATEMENT_ENTRIES);
            let mut entries = Vec::with_capacity((account.entries - first) as usize);
            for index in first..account.entries {
                let bytes = tx
                    .get(history_key(call.account_id, index))?
                    .ok_or_else(|| abort_unreadable("history"))?;
                entries.push(decode_entry(&bytes).ok_or_else(|| abort_unreadable("history"))?);
            }
            Ok(reply(&Statement {
                account_id: call.account_id,
                balance: account.balance,
                entries,
            }))
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
            let mut call_key = account_prefix(CALL_PREFIX, account_id);
            call_key.extend_from_slice(nonce);
            batch.remove(call_key);
            batch.remove(&key);
            removed += 1;
        }
        self.table.apply(batch)?;
        Ok(removed)
    }

    /// Runs `body` as the first execution of `call`, or returns the stored
    /// reply of a retried call.
    fn call(
        &self,
        call: &AccountCall,
        body: impl Fn(&TxTable<'_>) -> Result<Vec<u8>, Abort<BrokerError>>,
    ) -> Result<Outcome<Vec<u8>>, BrokerError> {
        let mut call_key = account_prefix(CALL_PREFIX, call.account_id);
        call_key.extend_from_slice(&call.nonce);
        let mut age_key = vec![CALL_AGE_PREFIX];
        age_key.extend_from_slice(&(call.timestamp_ms / MS_PER_MINUTE).to_be_bytes());
        age_key.extend_from_slice(&call.account_id.to_be_bytes());
        age_key.extend_from_slice(&call.nonce);

        transact(&self.table, |tx| {
            if let Some(record) = tx.get(&call_key)? {
                return match stored_reply(&record, call) {
                    Some(reply) => Ok(Outcome::Repeat(reply)),
                    None => Err(Abort::With(BrokerError::Unauthenticated {
                        detail: "the nonce was already used by a different call",
                    })),
                };
            }
            let reply = body(tx)?;
            tx.insert(&call_key, encode_call_record(call, &reply))?;
            tx.insert(&age_key, [])?;
            Ok(Outcome::Fresh(reply))
        })
    }
}

fn transact<T>(
    table: &Table,
    body: impl Fn(&TxTable<'_>) -> Result<T, Abort<BrokerError>>,
) -> Result<T, BrokerError> {
    table.transaction(body).map_err(|error| match error {
        TxError::Aborted(error) => error,
        TxError::Storage(error) => BrokerError::Storage(error),
    })
}

fn get_account(tx: &TxTable<'_>, account_id: u64) -> Result<AccountRecord, Abort<BrokerError>> {
    let bytes = tx
        .get(account_prefix(ACCOUNT_PREFIX, account_id))?
        .ok_or(Abort::With(BrokerError::UnknownAccount { account_id }))?;
    match (
        bytes.get(..8).and_then(decode_u64),
        bytes.get(8..).and_then(decode_u64),
    ) {
        (Some(balance), Some(entries)) => Ok(AccountRecord {
            balance: Amount::new(balance),
            entries,
        }),
        _ => Err(abort_unreadable("account")),
    }
}

fn put_account(
    tx: &TxTable<'_>,
    account_id: u64,
    record: AccountRecord,
) -> Result<(), Abort<BrokerError>> {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&record.balance.units().to_be_bytes());
    value[8..].copy_from_slice(&record.entries.to_be_bytes());
    tx.insert(account_prefix(ACCOUNT_PREFIX, account_id), value)?;
    Ok(())
}

/// Writes `entry` as the account's next history entry and its balance as
/// the account's balance.
fn append_entry(
    tx: &TxTable<'_>,
    account_id: u64,
    account: AccountRecord,
    entry: &Entry,
) -> Result<(), Abort<BrokerError>> {
    tx.insert(
        history_key(account_id, account.entries),
        encode_entry(entry),
    )?;
    put_account(
        tx,
        account_id,
        AccountRecord {
            balance: entry.balance_after,
            entries: account.entries + 1,
        },
    )
}

fn account_prefix(kind: u8, account_id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + 8 + 16);
    key.push(kind);
    key.extend_from_slice(&account_id.to_be_bytes());
    key
}

fn history_key(account_id: u64, index: u64) -> Vec<u8> {
    let mut key = account_prefix(HISTORY_PREFIX, account_id);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn credit_key(account_id: u64, reference: &str) -> Vec<u8> {
    let mut key = account_prefix(CREDIT_PREFIX, account_id);
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

fn abort_unreadable(what: &str) -> Abort<BrokerError> {
    Abort::With(unreadable(what))
}

#[cfg(test)]
mod tests {
    use millicent_ledger::Durability;

    use super::*;

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

    #[tokio::test]
    async fn credits_are_idempotent_per_reference_and_checked_for_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let accounts = Accounts::open(&ledger).unwrap();
        let id = accounts.open_account().unwrap();
        assert_eq!(id, 1);
        assert_eq!(accounts.count().unwrap(), 1);

        let credit =
            |amount, reference| accounts.credit(id, Amount::new(amount), reference, NOW_MS);
        assert_eq!(credit(10, "a").unwrap(), Outcome::Fresh(Amount::new(10)));
        assert_eq!(credit(5, "b").unwrap(), Outcome::Fresh(Amount::new(15)));
        assert_eq!(credit(10, "a").unwrap(), Outcome::Repeat(Amount::new(10)));
        assert!(matches!(
            credit(u64::MAX, "c"),
            Err(BrokerError::Protocol(millicent_core::Error::AmountOverflow))
        ));
        assert!(matches!(
            accounts.credit(99, Amount::new(1), "a", NOW_MS),
            Err(BrokerError::UnknownAccount { account_id: 99 })
        ));

        let statement = accounts
            .statement(&call(id, 1, 1, Method::GetAccount), |statement| {
                balance_reply(statement.balance)
            })
            .unwrap();
        assert_eq!(statement.into_inner(), balance_reply(Amount::new(15)));
    }

    #[tokio::test]
    async fn a_purchase_debits_once_per_nonce_and_never_overdraws() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let accounts = Accounts::open(&ledger).unwrap();
        let id = accounts.open_account().unwrap();
        accounts.credit(id, Amount::new(10), "r", NOW_MS).unwrap();

        let buy = |call: &AccountCall, amount| {
            accounts.buy_broker_scrip(call, Amount::new(amount), "scrip", NOW_MS, balance_reply)
        };
        let first = call(id, 1, 1, Method::BuyBrokerScrip);
        assert_eq!(
            buy(&first, 4).unwrap(),
            Outcome::Fresh(balance_reply(Amount::new(6)))
        );
        assert_eq!(
            buy(&first, 4).unwrap(),
            Outcome::Repeat(balance_reply(Amount::new(6)))
        );

        let reused_nonce = call(id, 1, 2, Method::BuyBrokerScrip);
        assert!(matches!(
            buy(&reused_nonce, 4),
            Err(BrokerError::Unauthenticated { .. })
        ));
        let too_much = call(id, 2, 1, Method::BuyBrokerScrip);
        assert!(matches!(
            buy(&too_much, 7),
            Err(BrokerError::InsufficientFunds {
                balance: 6,
                amount: 7
            })
        ));
        // The refused purchase left no call record: the nonce is still free.
        assert_eq!(
            buy(&too_much, 6).unwrap(),
            Outcome::Fresh(balance_reply(Amount::ZERO))
        );

        let statement = accounts
            .statement(&call(id, 3, 1, Method::GetAccount), |statement| {
                let kinds: Vec<&str> = statement.entries.iter().map(|e| e.kind.name()).collect();
                kinds.join(",").into_bytes()
            })
            .unwrap();
        assert_eq!(
            statement.into_inner(),
            b"credit,buy_broker_scrip,buy_broker_scrip"
        );
    }

    #[tokio::test]
    async fn a_statement_shows_the_latest_hundred_entries() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let accounts = Accounts::open(&ledger).unwrap();
        let id = accounts.open_account().unwrap();
        for n in 0..105 {
            accounts
                .credit(id, Amount::new(1), &format!("r{n}"), NOW_MS)
                .unwrap();
        }
        let reply = accounts
            .statement(&call(id, 1, 1, Method::GetAccount), |statement| {
                let first = &statement.entries[0];
                format!("{} {}", statement.entries.len(), first.reference).into_bytes()
            })
            .unwrap();
        assert_eq!(reply.into_inner(), b"100 r5");
    }

    #[tokio::test]
    async fn call_records_are_pruned_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let accounts = Accounts::open(&ledger).unwrap();
        let id = accounts.open_account().unwrap();
        let first = call(id, 1, 1, Method::GetAccount);
        accounts.statement(&first, |_| b"old".to_vec()).unwrap();

        let window = 300_000;
        assert_eq!(accounts.prune_calls(NOW_MS + window, window).unwrap(), 0);
        assert_eq!(
            accounts
                .prune_calls(NOW_MS + window + MS_PER_MINUTE, window)
                .unwrap(),
            1
        );
        let again = accounts.statement(&first, |_| b"new".to_vec()).unwrap();
        assert_eq!(again, Outcome::Fresh(b"new".to_vec()));
    }
}
