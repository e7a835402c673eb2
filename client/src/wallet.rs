//! The wallet: broker accounts, scrip and history kept in one file, and the
//! operations that spend them.
//!
//! # One user at a time
//!
//! An open [`Wallet`] holds an exclusive lock on its file (on `PATH.lock`)
//! until it is dropped. Every operation reads, changes and writes the whole
//! file, so two operations that ran at once on one wallet would each write
//! over the other's changes, losing scrip; with the lock, the second waits
//! for the first ([`Wallet::open`]) or is told the wallet is busy
//! ([`Wallet::try_open`]).
//!
//! # Crash safety
//!
//! Scrip is cash: a wallet that forgets scrip it paid with, or change it was
//! given, loses money. Every operation that spends therefore has the same
//! shape:
//!
//! 1. connect to the server (nothing is recorded if that fails);
//! 2. record the call in the wallet and save: the scrip to be paid is marked
//!    *in flight* with what it is paying for, or a purchase of broker scrip is
//!    kept as a *pending buy* with the time and nonce of its account call;
//! 3. make the call;
//! 4. apply the answer (remove the spent scrip, add change and new scrip,
//!    append history) and save.
//!
//! A crash or lost reply between 2 and 4 leaves the call recorded. Repeating
//! it is safe: a secure payment with the same scrip and request has the same
//! request stamp, which the vendor (or broker) recognises as a retry and
//! answers with its first reply; an account call with the same nonce gets
//! the first call's reply. [`Wallet::recover`] repeats every recorded call,
//! identically: a private payment keeps the sealed request it sent (files
//! written before that was kept are repeated with a freshly sealed request,
//! whose stamp is still the same because it covers the plaintext), and a
//! web payment keeps its URL, method and web request. The `millicent`
//! commands that spend or show balances call it first.
//!
//! A refusal is final, and changes nothing at the server: the scrip is
//! released for the next payment. It is dropped from the wallet only when it
//! can never be spent: when the server says `double_spend`, or when it has
//! expired by the wallet's own clock. Every other refusal (`bad_certificate`,
//! `unknown_series`, `wrong_vendor`, even `expired` by a server's clock) is
//! the word of one node, which may just be the wrong node for this scrip:
//! genuine scrip paid to a node of another deployment is refused as
//! `bad_certificate`. The refusal is recorded in the history and the error
//! names the node and says the scrip was kept.
//!
//! A reply that fails the protocol's checks releases the scrip too: the
//! server may have spent it, and if so the next attempt to use it is refused
//! as a double spend and drops it.

mod file;
mod limits;
mod seal;
mod store;
mod web;

pub use limits::{DAY_MS, Settings};
pub use seal::Passphrase;
pub use web::{WebOrder, WebPurchase};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use millicent_core::{Amount, CustomerSecret, Payment, Scrip, ScripId, Suite, Variant, VendorName};
use millicent_proto::broker_service_client::BrokerServiceClient;
use millicent_proto::vendor_service_client::VendorServiceClient;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::ClientError;
use crate::error::ScripFate;
use crate::protocol::{
    self, AccountCallId, AccountKey, Paid, VendorOfferSummary, connect_broker, connect_vendor,
    normalize_url, now_ms,
};

/// Refusal reasons after which a piece of scrip can never be spent, so the
/// wallet drops it. Scrip refused for any other reason is kept, unless it
/// has expired by the wallet's own clock.
pub const DROP_REASONS: &[&str] = &["double_spend"];

/// A wallet file, loaded and locked for as long as this value lives.
///
/// `Debug` shows scrip and history but no secret: customer secrets and
/// account keys print as `..`.
#[derive(Debug)]
pub struct Wallet {
    path: PathBuf,
    _lock: store::WalletLock,
    brokers: Vec<BrokerAccount>,
    broker_scrip: Vec<HeldScrip>,
    vendor_scrip: Vec<HeldScrip>,
    pending_buys: Vec<PendingBuy>,
    history: Vec<HistoryEntry>,
    settings: Settings,
    /// The key the file is encrypted with, if it is protected.
    protection: Option<seal::FileKey>,
}

/// An account at a broker.
#[derive(Clone, Debug)]
pub struct BrokerAccount {
    /// The broker's name: the vendor name in its broker scrip.
    pub name: VendorName,
    /// Where the broker answers.
    pub url: String,
    /// The suite of its broker scrip and account MACs.
    pub suite: Suite,
    /// The account's ID.
    pub account_id: u64,
    key: AccountKey,
    /// The vendors the broker sells scrip for, as it last said.
    pub vendors: Vec<String>,
}

impl BrokerAccount {
    /// The key authenticating calls on the account.
    pub fn key(&self) -> &AccountKey {
        &self.key
    }

    /// Whether the broker said it sells scrip for `vendor`.
    pub fn sells_for(&self, vendor: &VendorName) -> bool {
        self.vendors.iter().any(|name| name == vendor.as_str())
    }
}

/// A piece of scrip the wallet holds, with its customer secret.
#[derive(Clone, Debug)]
pub struct HeldScrip {
    scrip: Scrip,
    secret: CustomerSecret,
    vendor_url: Option<String>,
    in_flight: Option<InFlight>,
}

impl HeldScrip {
    fn new(scrip: Scrip, secret: CustomerSecret, vendor_url: Option<String>) -> HeldScrip {
        HeldScrip {
            scrip,
            secret,
            vendor_url,
            in_flight: None,
        }
    }

    /// The scrip.
    pub fn scrip(&self) -> &Scrip {
        &self.scrip
    }

    /// Its customer secret.
    pub fn secret(&self) -> &CustomerSecret {
        &self.secret
    }

    /// For vendor scrip, the vendor node it was last used with.
    pub fn vendor_url(&self) -> Option<&str> {
        self.vendor_url.as_deref()
    }

    /// The call it was sent in whose answer has not been recorded, if any.
    pub fn in_flight(&self) -> Option<&InFlight> {
        self.in_flight.as_ref()
    }

    fn key(&self) -> ScripKey {
        ScripKey {
            vendor: self.scrip.body().vendor.clone(),
            id: self.scrip.id(),
        }
    }

    fn is_spendable(&self, now_s: u64) -> bool {
        self.in_flight.is_none() && self.scrip.body().expires_at > now_s
    }
}

/// A call a piece of scrip was sent in, recorded before sending so that it
/// can be repeated if the answer is lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InFlight {
    /// Payment for an item at a vendor node.
    Pay {
        /// The variant used.
        variant: Variant,
        /// The item paid for.
        item: String,
        /// The vendor node paid.
        vendor_url: String,
        /// The price asked (unknown in files written before it was kept).
        price: Option<Amount>,
        /// In the private variant, the sealed request exactly as sent, so
        /// that a retry sends the same bytes.
        sealed_request: Option<Vec<u8>>,
    },
    /// Payment for an HTTP resource at a vendor's gateway.
    Web {
        /// The resource's URL.
        url: String,
        /// The HTTP method (GET or HEAD).
        method: String,
        /// The web request stamped.
        request: String,
        /// The variant used (clear or secure).
        variant: Variant,
        /// The price offered.
        price: Amount,
    },
    /// Refund of broker scrip into the account it was bought from.
    Refund {
        /// The account credited.
        account_id: u64,
    },
    /// Exchange of broker scrip for vendor scrip.
    Exchange {
        /// The vendor whose scrip was asked for.
        vendor: VendorName,
        /// The value asked for.
        value: Amount,
        /// The vendor node the scrip was wanted for, if known.
        vendor_url: Option<String>,
    },
}

/// A purchase of broker scrip whose answer has not been recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingBuy {
    /// The broker.
    pub broker: VendorName,
    /// The value bought.
    pub amount: Amount,
    /// The account call, repeated as is to fetch a lost answer.
    pub call: AccountCallId,
}

/// One line of the wallet's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When the call was made, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// What was done.
    pub kind: HistoryKind,
    /// The broker involved, for purchases and exchanges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// The vendor involved, for exchanges and payments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// The item paid for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// The broker's or vendor node's URL that was called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// What it cost: the price of an item, the value plus fee of an
    /// exchange, the amount of a purchase.
    #[serde(default, with = "file::optional_amount")]
    pub price: Option<Amount>,
    /// The value of the change received.
    #[serde(default, with = "file::optional_amount")]
    pub change: Option<Amount>,
    /// For a payment for an HTTP resource, the status of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How it ended.
    pub outcome: Outcome,
}

impl HistoryEntry {
    fn new(kind: HistoryKind) -> HistoryEntry {
        HistoryEntry {
            time_ms: now_ms(),
            kind,
            broker: None,
            vendor: None,
            item: None,
            url: None,
            price: None,
            change: None,
            status: None,
            outcome: Outcome::Ok,
        }
    }
}

/// The kinds of history entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryKind {
    /// Broker scrip bought from an account's balance.
    Buy,
    /// Broker scrip exchanged for vendor scrip.
    Exchange,
    /// A vendor paid for an item.
    Pay,
    /// Broker scrip turned back into account balance.
    Refund,
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It succeeded.
    Ok,
    /// The server refused it.
    Refused {
        /// The server's reason.
        reason: String,
    },
    /// The reply failed the protocol's checks, or the call could not be made
    /// (reason `unreachable` when the server could not be reached).
    Failed {
        /// What went wrong, in snake_case.
        reason: String,
    },
    /// The answer was lost; the call is still recorded and
    /// [`Wallet::recover`] repeats it.
    Interrupted,
}

/// What to pay for, for [`Wallet::pay`].
#[derive(Clone, Debug)]
pub struct PayOrder {
    /// The vendor node's URL.
    pub vendor_url: String,
    /// The vendor, when the node serves several that sell the item; otherwise
    /// the first vendor listing the item is paid.
    pub vendor: Option<VendorName>,
    /// The item's name.
    pub item: String,
    /// The variant; by default the secure variant if the vendor accepts it.
    pub variant: Option<Variant>,
    /// When no vendor scrip held covers the price and broker scrip must be
    /// exchanged, ask for this much vendor scrip (or the price, if more), so
    /// that the next payments to the vendor need no exchange. If the broker
    /// scrip held is worth less, the exchange asks for less, down to the
    /// price. `None` takes the wallet's setting.
    pub top_up: Option<Amount>,
}

/// The result of [`Wallet::join_broker`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    /// The broker's name.
    pub broker: VendorName,
    /// The account at that broker.
    pub account_id: u64,
    /// False if the wallet already had an account there; then only the
    /// broker's URL and vendor list were refreshed.
    pub new_account: bool,
}

/// The result of [`Wallet::buy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bought {
    /// The broker.
    pub broker: VendorName,
    /// The value of broker scrip bought.
    pub value: Amount,
    /// The account balance left.
    pub balance: Amount,
}

/// The result of [`Wallet::refund`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    /// The broker.
    pub broker: VendorName,
    /// How many pieces of broker scrip were refunded.
    pub pieces: usize,
    /// Their total value, credited to the account.
    pub credited: Amount,
    /// The account balance after the last refund, if any was made.
    pub balance: Option<Amount>,
}

/// An exchange made on the way to a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeSummary {
    /// The broker.
    pub broker: VendorName,
    /// The value of vendor scrip received.
    pub value: Amount,
    /// What it cost in broker scrip, fee included.
    pub price: Amount,
}

/// The result of [`Wallet::pay`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purchase {
    /// The vendor paid.
    pub vendor: VendorName,
    /// The item.
    pub item: String,
    /// The variant used.
    pub variant: Variant,
    /// The goods.
    pub goods: Vec<u8>,
    /// The price charged.
    pub price: Amount,
    /// The value of the change received (zero if none).
    pub change: Amount,
    /// The exchange made to get vendor scrip, if one was needed.
    pub exchange: Option<ExchangeSummary>,
}

/// Value held in scrip of one issuer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScripTotal {
    /// Total value of the scrip that can be spent.
    pub value: Amount,
    /// How many pieces that is.
    pub pieces: usize,
    /// Total value of scrip in calls whose answer was lost.
    pub in_flight: Amount,
    /// Total value of expired scrip, which no vendor accepts any more.
    pub expired: Amount,
}

impl ScripTotal {
    fn add(&mut self, held: &HeldScrip, now_s: u64) -> Result<(), ClientError> {
        let value = held.scrip.value();
        if held.in_flight.is_some() {
            self.in_flight = self.in_flight.checked_add(value)?;
        } else if held.scrip.body().expires_at <= now_s {
            self.expired = self.expired.checked_add(value)?;
        } else {
            self.value = self.value.checked_add(value)?;
            self.pieces += 1;
        }
        Ok(())
    }
}

/// What the wallet holds at one broker.
#[derive(Debug)]
pub struct BrokerBalance {
    /// The broker.
    pub broker: VendorName,
    /// The account.
    pub account_id: u64,
    /// The account balance, or why it could not be fetched.
    pub account: Result<Amount, ClientError>,
    /// Broker scrip held.
    pub scrip: ScripTotal,
}

/// What the wallet holds for one vendor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendorBalance {
    /// The vendor.
    pub vendor: VendorName,
    /// Vendor scrip held.
    pub scrip: ScripTotal,
}

/// The result of [`Wallet::balances`].
#[derive(Debug)]
pub struct Balances {
    /// One entry per broker joined.
    pub brokers: Vec<BrokerBalance>,
    /// One entry per vendor whose scrip is held, by name.
    pub vendors: Vec<VendorBalance>,
}

/// A recorded call that [`Wallet::recover`] settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The history entry it added.
    pub entry: HistoryEntry,
    /// The goods, for a payment that went through.
    pub goods: Option<Vec<u8>>,
}

/// The result of [`Wallet::recover`].
#[derive(Debug, Default)]
pub struct Recovery {
    /// Calls settled, one way or the other.
    pub settled: Vec<Recovered>,
    /// Why the calls still recorded could not be settled this time.
    pub unsettled: Vec<ClientError>,
}

/// The two purses of a wallet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purse {
    Broker,
    Vendor,
}

/// Identifies a piece of scrip in a purse.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ScripKey {
    vendor: VendorName,
    id: ScripId,
}

/// What an exchange asks a broker for.
#[derive(Clone)]
struct ExchangeCall<'a> {
    /// The broker's URL.
    broker_url: &'a str,
    /// The vendor whose scrip is asked for.
    vendor: &'a VendorName,
    /// The value asked for.
    value: Amount,
    /// The vendor node the scrip is wanted for, if known.
    vendor_url: Option<String>,
}

/// A call's history entry, and its result for the caller.
struct Settled<T> {
    entry: HistoryEntry,
    result: Result<T, ClientError>,
}

impl Wallet {
    /// Creates an empty wallet at `path`, and holds its lock; fails if a
    /// file is there already.
    pub fn create(path: impl Into<PathBuf>) -> Result<Wallet, ClientError> {
        Wallet::create_with(path, None)
    }

    /// As [`Wallet::create`], protecting the file with `passphrase` if one
    /// is given.
    pub fn create_with(
        path: impl Into<PathBuf>,
        passphrase: Option<&Passphrase>,
    ) -> Result<Wallet, ClientError> {
        let path = path.into();
        store::refuse_existing(&path)?;
        let lock = store::lock(&path)?;
        let mut wallet = Wallet::empty(path, lock);
        wallet.protection = passphrase.map(Passphrase::new_key).transpose()?;
        store::create(&wallet.path, &wallet.file_contents()?)?;
        Ok(wallet)
    }

    /// Loads the wallet at `path` and holds its lock until dropped. If
    /// another `Wallet` holds the lock, in this process or another, blocks
    /// the calling thread until it is released; [`Wallet::try_open`] does
    /// not wait.
    pub fn open(path: impl Into<PathBuf>) -> Result<Wallet, ClientError> {
        Wallet::open_with(path, None)
    }

    /// As [`Wallet::open`], with the passphrase of a protected file.
    pub fn open_with(
        path: impl Into<PathBuf>,
        passphrase: Option<&Passphrase>,
    ) -> Result<Wallet, ClientError> {
        let path = path.into();
        store::require_private(&path)?;
        let lock = store::lock(&path)?;
        Wallet::load(path, lock, passphrase)
    }

    /// As [`Wallet::open`], but fails with [`ClientError::WalletBusy`]
    /// rather than wait if another `Wallet` holds the lock.
    pub fn try_open(path: impl Into<PathBuf>) -> Result<Wallet, ClientError> {
        Wallet::try_open_with(path, None)
    }

    /// As [`Wallet::try_open`], with the passphrase of a protected file.
    pub fn try_open_with(
        path: impl Into<PathBuf>,
        passphrase: Option<&Passphrase>,
    ) -> Result<Wallet, ClientError> {
        let path = path.into();
        store::require_private(&path)?;
        match store::try_lock(&path)? {
            Some(lock) => Wallet::load(path, lock, passphrase),
            None => Err(ClientError::WalletBusy { path }),
        }
    }

    fn load(
        path: PathBuf,
        lock: store::WalletLock,
        passphrase: Option<&Passphrase>,
    ) -> Result<Wallet, ClientError> {
        let contents = store::read(&path)?;
        let (contents, protection) = if file::is_sealed(&contents) {
            let passphrase =
                passphrase.ok_or_else(|| ClientError::PassphraseNeeded { path: path.clone() })?;
            let (plain, key) = seal::open(&path, &contents, passphrase)?;
            (plain, Some(key))
        } else {
            (contents, None)
        };
        let file::Contents {
            brokers,
            broker_scrip,
            vendor_scrip,
            pending_buys,
            history,
            settings,
        } = file::decode(&path, &contents)?;
        Ok(Wallet {
            brokers,
            broker_scrip,
            vendor_scrip,
            pending_buys,
            history,
            settings,
            protection,
            ..Wallet::empty(path, lock)
        })
    }

    /// Writes the wallet to its file, atomically and durably.
    pub fn save(&self) -> Result<(), ClientError> {
        store::replace(&self.path, &self.file_contents()?)
    }

    /// The file as [`Wallet::save`] writes it: encrypted if protected.
    fn file_contents(&self) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let plain = file::encode(&self.path, self.parts())?;
        match &self.protection {
            Some(key) => Ok(Zeroizing::new(seal::seal(key, &plain)?)),
            None => Ok(plain),
        }
    }

    /// Whether the file is protected by a passphrase.
    pub fn is_protected(&self) -> bool {
        self.protection.is_some()
    }

    /// Protects the file with `passphrase` from now on (a new salt, so an
    /// old passphrase no longer opens it), or removes the protection with
    /// `None`, and saves the wallet.
    pub fn set_passphrase(&mut self, passphrase: Option<&Passphrase>) -> Result<(), ClientError> {
        self.protection = passphrase.map(Passphrase::new_key).transpose()?;
        self.save()
    }

    /// Checks `contents` as [`Wallet::open`] checks a wallet file, and returns
    /// the file [`Wallet::save`] would write for the wallet it holds. No file
    /// is read, written or locked; errors name the file `path`. This is for
    /// tests and fuzzing of the format: a file that opens saves as a file
    /// that opens and saves unchanged.
    pub fn reencode_file(path: &Path, contents: &[u8]) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        file::encode(path, file::decode(path, contents)?.parts())
    }

    fn parts(&self) -> file::Parts<'_> {
        file::Parts {
            brokers: &self.brokers,
            broker_scrip: &self.broker_scrip,
            vendor_scrip: &self.vendor_scrip,
            pending_buys: &self.pending_buys,
            history: &self.history,
            settings: &self.settings,
        }
    }

    fn empty(path: PathBuf, lock: store::WalletLock) -> Wallet {
        Wallet {
            path,
            _lock: lock,
            brokers: Vec::new(),
            broker_scrip: Vec::new(),
            vendor_scrip: Vec::new(),
            pending_buys: Vec::new(),
            history: Vec::new(),
            settings: Settings::default(),
            protection: None,
        }
    }

    /// The wallet file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The brokers joined, in the order joined.
    pub fn brokers(&self) -> &[BrokerAccount] {
        &self.brokers
    }

    /// Broker scrip held.
    pub fn broker_scrip(&self) -> &[HeldScrip] {
        &self.broker_scrip
    }

    /// Vendor scrip held.
    pub fn vendor_scrip(&self) -> &[HeldScrip] {
        &self.vendor_scrip
    }

    /// Purchases of broker scrip whose answer was lost.
    pub fn pending_buys(&self) -> &[PendingBuy] {
        &self.pending_buys
    }

    /// Everything done with the wallet, oldest first.
    pub fn history(&self) -> &[HistoryEntry] {
        &self.history
    }

    /// Whether some call's answer was lost, so that [`Wallet::recover`]
    /// has work to do.
    pub fn has_unsettled_calls(&self) -> bool {
        !self.pending_buys.is_empty()
            || self
                .broker_scrip
                .iter()
                .chain(&self.vendor_scrip)
                .any(|held| held.in_flight.is_some())
    }

    /// Opens an account at the broker at `url` and keeps its key. If the
    /// wallet already has an account there, only the broker's URL and vendor
    /// list are refreshed.
    pub async fn join_broker(&mut self, url: &str) -> Result<Joined, ClientError> {
        let url = normalize_url(url)?;
        let mut client = connect_broker(&url).await?;
        let info = protocol::broker_info(&mut client).await?;

        if let Some(known) = self.brokers.iter_mut().find(|b| b.name == info.name) {
            known.url = url;
            known.vendors = info.vendors;
            let joined = Joined {
                broker: known.name.clone(),
                account_id: known.account_id,
                new_account: false,
            };
            self.save()?;
            return Ok(joined);
        }

        let (account_id, key) = protocol::open_account(&mut client, info.suite).await?;
        self.brokers.push(BrokerAccount {
            name: info.name.clone(),
            url,
            suite: info.suite,
            account_id,
            key,
            vendors: info.vendors,
        });
        self.save()?;
        Ok(Joined {
            broker: info.name,
            account_id,
            new_account: true,
        })
    }

    /// Buys broker scrip worth `amount` from the account at `broker` (by
    /// name), or at the first broker joined.
    pub async fn buy(
        &mut self,
        broker: Option<&str>,
        amount: Amount,
    ) -> Result<Bought, ClientError> {
        let account = match broker {
            Some(name) => self.broker_named(name)?,
            None => self.brokers.first().ok_or_else(|| ClientError::NoBroker {
                detail: "the wallet has joined no broker".to_owned(),
            })?,
        };
        let url = account.url.clone();
        let pending = PendingBuy {
            broker: account.name.clone(),
            amount,
            call: AccountCallId::fresh(),
        };
        let mut client = match connect_broker(&url).await {
            Ok(client) => client,
            Err(error) => {
                let mut entry = HistoryEntry::new(HistoryKind::Buy);
                entry.broker = Some(pending.broker.to_string());
                entry.url = Some(url);
                entry.price = Some(amount);
                return Err(self.record_unmade(entry, error)?);
            }
        };

        self.pending_buys.push(pending.clone());
        self.save()?;
        let settled = self.settle_buy(&mut client, &url, &pending).await?;
        self.finish(settled)
    }

    /// Turns every spendable piece of broker scrip of `broker` (by name) back
    /// into balance of the wallet's account there, one refund per piece.
    ///
    /// Each piece is recorded in flight before it is sent, so a refund whose
    /// answer is lost is repeated by [`Wallet::recover`] and credited once.
    /// Stops at the first failure; pieces refunded before it stay refunded.
    pub async fn refund(&mut self, broker: &str) -> Result<Refund, ClientError> {
        let account = self.broker_named(broker)?.clone();
        let now_s = now_ms() / 1000;
        let keys: Vec<ScripKey> = self
            .broker_scrip
            .iter()
            .filter(|held| held.scrip.body().vendor == account.name && held.is_spendable(now_s))
            .map(HeldScrip::key)
            .collect();
        let mut refund = Refund {
            broker: account.name.clone(),
            pieces: 0,
            credited: Amount::ZERO,
            balance: None,
        };
        if keys.is_empty() {
            return Ok(refund);
        }
        let mut client = match connect_broker(&account.url).await {
            Ok(client) => client,
            Err(error) => {
                let mut entry = HistoryEntry::new(HistoryKind::Refund);
                entry.broker = Some(account.name.to_string());
                entry.url = Some(account.url.clone());
                return Err(self.record_unmade(entry, error)?);
            }
        };
        for key in keys {
            let in_flight = InFlight::Refund {
                account_id: account.account_id,
            };
            self.mark_in_flight(Purse::Broker, &key, in_flight)?;
            let settled = self
                .settle_refund(&mut client, &account.url, &key, account.account_id)
                .await?;
            let refunded = self.finish(settled)?;
            refund.pieces += 1;
            refund.credited = refund.credited.checked_add(refunded.credited)?;
            refund.balance = Some(refunded.balance);
        }
        Ok(refund)
    }

    /// Pays for an item at a vendor node, exchanging broker scrip for vendor
    /// scrip first if no vendor scrip held covers the price.
    pub async fn pay(&mut self, order: &PayOrder) -> Result<Purchase, ClientError> {
        let vendor_url = normalize_url(&order.vendor_url)?;
        let reached = async {
            let mut client = connect_vendor(&vendor_url).await?;
            let offers = protocol::prices(&mut client).await?;
            Ok((client, offers))
        };
        let (mut vendor_client, offers) = match reached.await {
            Ok(reached) => reached,
            Err(error) => {
                let mut entry = HistoryEntry::new(HistoryKind::Pay);
                entry.vendor = order.vendor.as_ref().map(VendorName::to_string);
                entry.item = Some(order.item.clone());
                entry.url = Some(vendor_url);
                return Err(self.record_unmade(entry, error)?);
            }
        };
        let (vendor, price, variant) = choose_offer(&offers, order, &vendor_url)?;
        self.check_limits(&vendor, price, now_ms())?;

        let top_up = order.top_up.unwrap_or(self.settings.top_up);
        let (key, exchange) = self
            .vendor_scrip_for(&vendor, price, top_up, &vendor_url)
            .await?;

        let payment = {
            let held = self.held(Purse::Vendor, &key)?;
            let (payment, _) =
                protocol::prepare_payment(&held.scrip, &held.secret, variant, &order.item)?;
            payment
        };
        let in_flight = InFlight::Pay {
            variant,
            item: order.item.clone(),
            vendor_url: vendor_url.clone(),
            price: Some(price),
            sealed_request: (variant == Variant::Private).then(|| payment.request.clone()),
        };
        self.mark_in_flight(Purse::Vendor, &key, in_flight)?;
        let settled = self
            .settle_pay(&mut vendor_client, &key, &payment, &order.item, &vendor_url)
            .await?;
        let paid = self.finish(settled)?;
        Ok(Purchase {
            vendor,
            item: order.item.clone(),
            variant,
            goods: paid.goods,
            price: paid.price,
            change: change_value(paid.change.as_ref()),
            exchange,
        })
    }

    /// Account balances (fetched from each broker) and the scrip held.
    pub async fn balances(&self) -> Result<Balances, ClientError> {
        let now_s = now_ms() / 1000;
        let mut brokers = Vec::with_capacity(self.brokers.len());
        for account in &self.brokers {
            let mut scrip = ScripTotal::default();
            for held in &self.broker_scrip {
                if held.scrip.body().vendor == account.name {
                    scrip.add(held, now_s)?;
                }
            }
            let balance = async {
                let mut client = connect_broker(&account.url).await?;
                let statement = protocol::get_account(
                    &mut client,
                    account.suite,
                    account.account_id,
                    account.key.expose_bytes(),
                )
                .await?;
                Ok(statement.balance)
            };
            brokers.push(BrokerBalance {
                broker: account.name.clone(),
                account_id: account.account_id,
                account: balance.await,
                scrip,
            });
        }

        let mut vendors = BTreeMap::<VendorName, ScripTotal>::new();
        for held in &self.vendor_scrip {
            let vendor = held.scrip.body().vendor.clone();
            vendors.entry(vendor).or_default().add(held, now_s)?;
        }
        Ok(Balances {
            brokers,
            vendors: vendors
                .into_iter()
                .map(|(vendor, scrip)| VendorBalance { vendor, scrip })
                .collect(),
        })
    }

    /// Repeats every call whose answer was lost (pending purchases, scrip in
    /// flight) and records the answers. Calls that still get no answer stay
    /// recorded for the next attempt.
    pub async fn recover(&mut self) -> Result<Recovery, ClientError> {
        let mut recovery = Recovery::default();

        for pending in self.pending_buys.clone() {
            let url = match self.broker_named(pending.broker.as_str()) {
                Ok(account) => account.url.clone(),
                Err(error) => {
                    recovery.unsettled.push(error);
                    continue;
                }
            };
            match connect_broker(&url).await {
                Ok(mut client) => {
                    let settled = self.settle_buy(&mut client, &url, &pending).await?;
                    recovery.note(settled, |_| None);
                }
                Err(error) => recovery.unsettled.push(error),
            }
        }

        for held in self.broker_scrip.clone() {
            let Some(in_flight) = held.in_flight.clone() else {
                continue;
            };
            let url = match self.broker_named(held.scrip.body().vendor.as_str()) {
                Ok(account) => account.url.clone(),
                Err(error) => {
                    recovery.unsettled.push(error);
                    continue;
                }
            };
            let mut client = match connect_broker(&url).await {
                Ok(client) => client,
                Err(error) => {
                    recovery.unsettled.push(error);
                    continue;
                }
            };
            match in_flight {
                InFlight::Exchange {
                    vendor,
                    value,
                    vendor_url,
                } => {
                    let call = ExchangeCall {
                        broker_url: &url,
                        vendor: &vendor,
                        value,
                        vendor_url,
                    };
                    let settled = self.settle_exchange(&mut client, &held.key(), call).await?;
                    recovery.note(settled, |_| None);
                }
                InFlight::Refund { account_id } => {
                    let settled = self
                        .settle_refund(&mut client, &url, &held.key(), account_id)
                        .await?;
                    recovery.note(settled, |_| None);
                }
                InFlight::Pay { .. } | InFlight::Web { .. } => {}
            }
        }

        let http = crate::web::http_client();
        for held in self.vendor_scrip.clone() {
            match held.in_flight.clone() {
                Some(InFlight::Pay {
                    variant,
                    item,
                    vendor_url,
                    sealed_request,
                    ..
                }) => {
                    let payment = recorded_payment(&held, variant, &item, sealed_request)?;
                    match connect_vendor(&vendor_url).await {
                        Ok(mut client) => {
                            let settled = self
                                .settle_pay(&mut client, &held.key(), &payment, &item, &vendor_url)
                                .await?;
                            recovery.note(settled, |paid| Some(paid.goods.clone()));
                        }
                        Err(error) => recovery.unsettled.push(error),
                    }
                }
                Some(InFlight::Web { .. }) => {
                    let settled = self.resend_web(&http, &held).await?;
                    recovery.note(settled, |_| None);
                }
                Some(InFlight::Exchange { .. } | InFlight::Refund { .. }) | None => {}
            }
        }
        Ok(recovery)
    }

    /// The smallest vendor scrip of `vendor` that covers `price`, or, if
    /// none does, vendor scrip worth `top_up` (at least `price`) from an
    /// exchange, with the summary of that exchange.
    async fn vendor_scrip_for(
        &mut self,
        vendor: &VendorName,
        price: Amount,
        top_up: Amount,
        vendor_url: &str,
    ) -> Result<(ScripKey, Option<ExchangeSummary>), ClientError> {
        if let Some(key) = self.pick_vendor_scrip(vendor, price, now_ms() / 1000) {
            return Ok((key, None));
        }
        let (key, summary) = self.exchange_for(vendor, price, top_up, vendor_url).await?;
        Ok((key, Some(summary)))
    }

    /// Gets vendor scrip for `vendor` worth `top_up`, and at least `price`,
    /// by exchanging the largest broker scrip of a broker that sells it.
    ///
    /// The top-up is what the customer would like, the price what the
    /// payment needs: broker scrip worth less than the top-up is exchanged
    /// for all it is worth. The broker's fee is not known in advance, so if
    /// the broker refuses that as `insufficient_value` (the fee does not fit
    /// in the scrip) the exchange is asked again for just the price. The
    /// refusal spent nothing, so the same scrip pays for the second try.
    async fn exchange_for(
        &mut self,
        vendor: &VendorName,
        price: Amount,
        top_up: Amount,
        vendor_url: &str,
    ) -> Result<(ScripKey, ExchangeSummary), ClientError> {
        if !self.brokers.iter().any(|b| b.sells_for(vendor)) {
            self.refresh_broker_info().await?;
        }
        let now_s = now_ms() / 1000;
        let largest = self
            .broker_scrip
            .iter()
            .filter(|held| held.is_spendable(now_s))
            .filter(|held| {
                let issuer = &held.scrip.body().vendor;
                self.brokers
                    .iter()
                    .any(|b| b.name == *issuer && b.sells_for(vendor))
            })
            .max_by_key(|held| held.scrip.value());
        let Some(largest) = largest else {
            return Err(self.no_scrip(vendor, price));
        };
        let held_value = largest.scrip.value();
        if held_value < price {
            return Err(ClientError::NoScrip {
                vendor: vendor.to_string(),
                needed: price,
                detail: format!(
                    "the largest broker scrip held is worth {held_value}; \
                     buy more with `millicent buy`"
                ),
            });
        }

        let key = largest.key();
        let url = self.broker_named(key.vendor.as_str())?.url.clone();
        let mut client = match connect_broker(&url).await {
            Ok(client) => client,
            Err(error) => {
                let mut entry = HistoryEntry::new(HistoryKind::Exchange);
                entry.broker = Some(key.vendor.to_string());
                entry.vendor = Some(vendor.to_string());
                entry.url = Some(url);
                return Err(self.record_unmade(entry, error)?);
            }
        };

        let wanted = top_up.max(price).min(held_value);
        let call = ExchangeCall {
            broker_url: &url,
            vendor,
            value: wanted,
            vendor_url: Some(vendor_url.to_owned()),
        };
        match self.exchange_with(&mut client, &key, call.clone()).await {
            Err(error) if wanted > price && error.reason() == Some("insufficient_value") => {
                let call = ExchangeCall {
                    value: price,
                    ..call
                };
                self.exchange_with(&mut client, &key, call).await
            }
            result => result,
        }
    }

    /// Exchanges the broker scrip `key` as `call` asks, for the first time.
    async fn exchange_with(
        &mut self,
        client: &mut BrokerServiceClient<Channel>,
        key: &ScripKey,
        call: ExchangeCall<'_>,
    ) -> Result<(ScripKey, ExchangeSummary), ClientError> {
        let in_flight = InFlight::Exchange {
            vendor: call.vendor.clone(),
            value: call.value,
            vendor_url: call.vendor_url.clone(),
        };
        self.mark_in_flight(Purse::Broker, key, in_flight)?;
        let settled = self.settle_exchange(client, key, call).await?;
        self.finish(settled)
    }

    /// Why no broker scrip can be exchanged for `vendor`'s scrip.
    fn no_scrip(&self, vendor: &VendorName, value: Amount) -> ClientError {
        let sellers: Vec<&str> = self
            .brokers
            .iter()
            .filter(|b| b.sells_for(vendor))
            .map(|b| b.name.as_str())
            .collect();
        let detail = if self.brokers.is_empty() {
            "the wallet has joined no broker; join one with `millicent join`".to_owned()
        } else if sellers.is_empty() {
            "no broker joined sells this vendor's scrip; join one that does".to_owned()
        } else {
            format!(
                "no broker scrip of {} is held; buy some with `millicent buy`",
                sellers.join(", ")
            )
        };
        ClientError::NoScrip {
            vendor: vendor.to_string(),
            needed: value,
            detail,
        }
    }

    /// Asks every broker again which vendors it serves. A broker that cannot
    /// be reached keeps the list it gave before.
    async fn refresh_broker_info(&mut self) -> Result<(), ClientError> {
        let mut changed = false;
        for account in &mut self.brokers {
            let Ok(mut client) = connect_broker(&account.url).await else {
                continue;
            };
            let Ok(info) = protocol::broker_info(&mut client).await else {
                continue;
            };
            if info.name == account.name && info.vendors != account.vendors {
                account.vendors = info.vendors;
                changed = true;
            }
        }
        if changed {
            self.save()?;
        }
        Ok(())
    }

    /// The smallest spendable vendor scrip for `vendor` worth at least `price`.
    fn pick_vendor_scrip(
        &self,
        vendor: &VendorName,
        price: Amount,
        now_s: u64,
    ) -> Option<ScripKey> {
        self.vendor_scrip
            .iter()
            .filter(|held| held.scrip.body().vendor == *vendor)
            .filter(|held| held.is_spendable(now_s) && held.scrip.value() >= price)
            .min_by_key(|held| held.scrip.value())
            .map(HeldScrip::key)
    }

    fn broker_named(&self, name: &str) -> Result<&BrokerAccount, ClientError> {
        self.brokers
            .iter()
            .find(|b| b.name.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.brokers.iter().map(|b| b.name.as_str()).collect();
                ClientError::NoBroker {
                    detail: if known.is_empty() {
                        format!("no broker named {name:?} is joined; the wallet has joined none")
                    } else {
                        format!(
                            "no broker named {name:?} is joined; the wallet knows {}",
                            known.join(", ")
                        )
                    },
                }
            })
    }

    /// Makes the purchase `pending` (already recorded) and records its answer.
    async fn settle_buy(
        &mut self,
        client: &mut BrokerServiceClient<Channel>,
        broker_url: &str,
        pending: &PendingBuy,
    ) -> Result<Settled<Bought>, ClientError> {
        let account = self.broker_named(pending.broker.as_str())?.clone();
        let mut entry = HistoryEntry::new(HistoryKind::Buy);
        entry.broker = Some(account.name.to_string());
        entry.url = Some(broker_url.to_owned());
        entry.price = Some(pending.amount);

        let result = protocol::buy_broker_scrip_as(
            client,
            account.suite,
            account.account_id,
            account.key.expose_bytes(),
            pending.amount,
            pending.call,
        )
        .await
        .and_then(|bought| {
            let issuer = &bought.scrip.body().vendor;
            if *issuer != account.name {
                return Err(ClientError::BadReply {
                    call: "BuyBrokerScrip",
                    detail: format!("carries scrip of {issuer}, not of {}", account.name),
                });
            }
            Ok(bought)
        });

        let result = match result {
            Err(error) if error.outcome_unknown() => {
                entry.outcome = Outcome::Interrupted;
                return Ok(Settled {
                    entry,
                    result: Err(error),
                });
            }
            Ok(bought) => {
                self.broker_scrip
                    .push(HeldScrip::new(bought.scrip, bought.secret, None));
                Ok(Bought {
                    broker: account.name.clone(),
                    value: pending.amount,
                    balance: bought.balance,
                })
            }
            Err(error) => {
                entry.outcome = failure_outcome(&error);
                Err(error)
            }
        };
        self.pending_buys.retain(|p| p.call != pending.call);
        self.record(&entry)?;
        Ok(Settled { entry, result })
    }

    /// Makes the exchange of the broker scrip `key` (already marked in
    /// flight) and records its answer.
    async fn settle_exchange(
        &mut self,
        client: &mut BrokerServiceClient<Channel>,
        key: &ScripKey,
        call: ExchangeCall<'_>,
    ) -> Result<Settled<(ScripKey, ExchangeSummary)>, ClientError> {
        let ExchangeCall {
            broker_url,
            vendor,
            value,
            vendor_url,
        } = call;
        let held = self.held(Purse::Broker, key)?.clone();
        let mut entry = HistoryEntry::new(HistoryKind::Exchange);
        entry.broker = Some(key.vendor.to_string());
        entry.vendor = Some(vendor.to_string());
        entry.url = Some(broker_url.to_owned());

        let result = protocol::exchange(client, &held.scrip, &held.secret, vendor, value).await;
        let exchanged = match result {
            Ok(exchanged) => exchanged,
            Err(error) => return self.settle_failure(Purse::Broker, key, entry, error),
        };

        self.take(Purse::Broker, key);
        entry.price = Some(exchanged.price);
        entry.change = Some(change_value(exchanged.change.as_ref()));
        if let Some(change) = exchanged.change {
            self.broker_scrip
                .push(HeldScrip::new(change, held.secret.clone(), None));
        }
        let vendor_held =
            HeldScrip::new(exchanged.vendor_scrip, exchanged.vendor_secret, vendor_url);
        let vendor_key = vendor_held.key();
        self.vendor_scrip.push(vendor_held);
        self.record(&entry)?;
        Ok(Settled {
            entry,
            result: Ok((
                vendor_key,
                ExchangeSummary {
                    broker: key.vendor.clone(),
                    value,
                    price: exchanged.price,
                },
            )),
        })
    }

    /// Makes the refund of the broker scrip `key` (already marked in flight)
    /// into `account_id`, and records its answer.
    async fn settle_refund(
        &mut self,
        client: &mut BrokerServiceClient<Channel>,
        broker_url: &str,
        key: &ScripKey,
        account_id: u64,
    ) -> Result<Settled<protocol::Refunded>, ClientError> {
        let held = self.held(Purse::Broker, key)?.clone();
        let mut entry = HistoryEntry::new(HistoryKind::Refund);
        entry.broker = Some(key.vendor.to_string());
        entry.url = Some(broker_url.to_owned());
        entry.price = Some(held.scrip.value());

        let result = protocol::refund(client, &held.scrip, &held.secret, account_id).await;
        let refunded = match result {
            Ok(refunded) => refunded,
            Err(error) => return self.settle_failure(Purse::Broker, key, entry, error),
        };
        self.take(Purse::Broker, key);
        self.record(&entry)?;
        Ok(Settled {
            entry,
            result: Ok(refunded),
        })
    }

    /// Makes the payment with the vendor scrip `key` (already marked in
    /// flight) and records its answer.
    async fn settle_pay(
        &mut self,
        client: &mut VendorServiceClient<Channel>,
        key: &ScripKey,
        payment: &Payment,
        item: &str,
        vendor_url: &str,
    ) -> Result<Settled<Paid>, ClientError> {
        let held = self.held(Purse::Vendor, key)?.clone();
        let mut entry = HistoryEntry::new(HistoryKind::Pay);
        entry.vendor = Some(key.vendor.to_string());
        entry.item = Some(item.to_owned());
        entry.url = Some(vendor_url.to_owned());

        let result = protocol::pay_prepared(client, payment, &held.secret).await;
        let paid = match result {
            Ok(paid) => paid,
            Err(error) => return self.settle_failure(Purse::Vendor, key, entry, error),
        };

        self.take(Purse::Vendor, key);
        entry.price = Some(paid.price);
        entry.change = Some(change_value(paid.change.as_ref()));
        if let Some(change) = &paid.change {
            self.vendor_scrip.push(HeldScrip::new(
                change.clone(),
                held.secret.clone(),
                Some(vendor_url.to_owned()),
            ));
        }
        self.record(&entry)?;
        Ok(Settled {
            entry,
            result: Ok(paid),
        })
    }

    /// The caller's result of a call made for the first time: an answer
    /// that was lost is written to the history as interrupted, and the error
    /// says that the wallet kept the call for [`Wallet::recover`].
    fn finish<T>(&mut self, settled: Settled<T>) -> Result<T, ClientError> {
        if settled.entry.outcome != Outcome::Interrupted {
            return settled.result;
        }
        self.record(&settled.entry)?;
        let call = match settled.entry.kind {
            HistoryKind::Buy => "purchase",
            HistoryKind::Exchange => "exchange",
            HistoryKind::Pay => "payment",
            HistoryKind::Refund => "refund",
        };
        settled.result.map_err(|error| match error {
            ClientError::Rpc { code, message } => ClientError::Unsettled {
                call,
                code,
                message,
            },
            other => other,
        })
    }

    /// Whether the wallet holds spendable scrip of `vendor`, or has joined
    /// a broker that sells it (asking the brokers again if none said so).
    async fn can_get_scrip_of(&mut self, vendor: &VendorName) -> Result<bool, ClientError> {
        let now_s = now_ms() / 1000;
        let held = |wallet: &Wallet| {
            wallet
                .vendor_scrip
                .iter()
                .any(|h| h.scrip.body().vendor == *vendor && h.is_spendable(now_s))
                || wallet.brokers.iter().any(|b| b.sells_for(vendor))
        };
        if held(self) {
            return Ok(true);
        }
        self.refresh_broker_info().await?;
        Ok(held(self))
    }

    /// Records a call that could not be made (nothing was sent, so nothing
    /// is kept), and gives back its error.
    fn record_unmade(
        &mut self,
        mut entry: HistoryEntry,
        error: ClientError,
    ) -> Result<ClientError, ClientError> {
        entry.outcome = failure_outcome(&error);
        self.record(&entry)?;
        Ok(error)
    }

    /// The settled failure of a call with scrip from `purse`, recorded as
    /// [`Wallet::record_failure`] records it.
    fn settle_failure<T>(
        &mut self,
        purse: Purse,
        key: &ScripKey,
        mut entry: HistoryEntry,
        error: ClientError,
    ) -> Result<Settled<T>, ClientError> {
        let error = self.record_failure(purse, key, &mut entry, error)?;
        Ok(Settled {
            entry,
            result: Err(error),
        })
    }

    /// Records a failed call with scrip from `purse`, and gives back its
    /// error: the scrip stays in flight if the answer was lost, is dropped
    /// if it can never be spent, and is released otherwise. A refusal comes
    /// back as [`ClientError::ScripRefused`], naming the node (the entry's
    /// URL) and what became of the scrip.
    fn record_failure(
        &mut self,
        purse: Purse,
        key: &ScripKey,
        entry: &mut HistoryEntry,
        error: ClientError,
    ) -> Result<ClientError, ClientError> {
        if error.outcome_unknown() {
            entry.outcome = Outcome::Interrupted;
            return Ok(error);
        }
        entry.outcome = failure_outcome(&error);
        let Some(index) = self.position(purse, key) else {
            self.record(entry)?;
            return Ok(error);
        };

        let held = &self.purse(purse)[index];
        let expired = held.scrip.body().expires_at <= now_ms() / 1000;
        let value = held.scrip.value();
        let fate = match error.reason() {
            Some(reason) if DROP_REASONS.contains(&reason) || expired => {
                self.purse_mut(purse).remove(index);
                ScripFate::Dropped
            }
            _ => {
                self.purse_mut(purse)[index].in_flight = None;
                ScripFate::Kept
            }
        };
        self.record(entry)?;

        Ok(match error {
            ClientError::Refused {
                reason,
                code,
                message,
            } => ClientError::ScripRefused {
                node: entry.url.clone().unwrap_or_default(),
                issuer: key.vendor.to_string(),
                value,
                reason,
                code,
                message,
                fate,
            },
            other => other,
        })
    }

    fn mark_in_flight(
        &mut self,
        purse: Purse,
        key: &ScripKey,
        in_flight: InFlight,
    ) -> Result<(), ClientError> {
        let index = self.position(purse, key).ok_or_else(|| missing(key))?;
        let held = &mut self.purse_mut(purse)[index];
        match &in_flight {
            InFlight::Pay { vendor_url, .. } => held.vendor_url = Some(vendor_url.clone()),
            InFlight::Web { url, .. } => held.vendor_url = Some(url.clone()),
            InFlight::Exchange { .. } | InFlight::Refund { .. } => {}
        }
        held.in_flight = Some(in_flight);
        self.save()
    }

    fn record(&mut self, entry: &HistoryEntry) -> Result<(), ClientError> {
        self.history.push(entry.clone());
        self.save()
    }

    fn purse(&self, purse: Purse) -> &Vec<HeldScrip> {
        match purse {
            Purse::Broker => &self.broker_scrip,
            Purse::Vendor => &self.vendor_scrip,
        }
    }

    fn purse_mut(&mut self, purse: Purse) -> &mut Vec<HeldScrip> {
        match purse {
            Purse::Broker => &mut self.broker_scrip,
            Purse::Vendor => &mut self.vendor_scrip,
        }
    }

    fn position(&self, purse: Purse, key: &ScripKey) -> Option<usize> {
        self.purse(purse).iter().position(|held| held.key() == *key)
    }

    fn held(&self, purse: Purse, key: &ScripKey) -> Result<&HeldScrip, ClientError> {
        let index = self.position(purse, key).ok_or_else(|| missing(key))?;
        Ok(&self.purse(purse)[index])
    }

    fn take(&mut self, purse: Purse, key: &ScripKey) -> Option<HeldScrip> {
        let index = self.position(purse, key)?;
        Some(self.purse_mut(purse).remove(index))
    }
}

impl Recovery {
    fn note<T>(&mut self, settled: Settled<T>, goods: impl FnOnce(&T) -> Option<Vec<u8>>) {
        match settled.result {
            Err(error) if error.outcome_unknown() => self.unsettled.push(error),
            result => self.settled.push(Recovered {
                entry: settled.entry,
                goods: result.as_ref().ok().and_then(goods),
            }),
        }
    }
}

/// Picks the vendor, price and variant for `order` from a node's price list.
fn choose_offer(
    offers: &[VendorOfferSummary],
    order: &PayOrder,
    vendor_url: &str,
) -> Result<(VendorName, Amount, Variant), ClientError> {
    let found = offers
        .iter()
        .filter(|offer| order.vendor.as_ref().is_none_or(|v| offer.vendor == *v))
        .find_map(|offer| Some((offer, offer.price_of(&order.item)?)));
    let Some((offer, price)) = found else {
        return Err(ClientError::NoSuchItem {
            vendor_url: vendor_url.to_owned(),
            vendor: order.vendor.as_ref().map(VendorName::to_string),
            item: order.item.clone(),
        });
    };

    let accepts = |variant: &Variant| offer.variants.is_empty() || offer.variants.contains(variant);
    let variant = match order.variant {
        Some(variant) if accepts(&variant) => variant,
        Some(variant) => {
            return Err(ClientError::VariantNotAccepted {
                vendor: offer.vendor.to_string(),
                variant: variant.name(),
                accepted: accepted_names(&offer.variants),
            });
        }
        None => [Variant::Secure, Variant::Private, Variant::Clear]
            .into_iter()
            .find(accepts)
            .ok_or_else(|| ClientError::VariantNotAccepted {
                vendor: offer.vendor.to_string(),
                variant: Variant::Secure.name(),
                accepted: accepted_names(&offer.variants),
            })?,
    };
    Ok((offer.vendor.clone(), price, variant))
}

fn accepted_names(variants: &[Variant]) -> String {
    let names: Vec<&str> = variants.iter().map(|v| v.name()).collect();
    names.join(", ")
}

/// The payment recorded for `item` with `held`: in the private variant
/// the sealed request exactly as sent, if it was kept; otherwise prepared
/// again, which gives the same request and stamp.
fn recorded_payment(
    held: &HeldScrip,
    variant: Variant,
    item: &str,
    sealed_request: Option<Vec<u8>>,
) -> Result<Payment, ClientError> {
    match sealed_request {
        Some(sealed) if variant == Variant::Private => Ok(Payment {
            scrip: held.scrip.clone(),
            variant,
            request: sealed,
            request_stamp: Some(millicent_core::payment::request_stamp(
                &held.secret,
                &held.scrip,
                item.as_bytes(),
            )),
        }),
        _ => Ok(protocol::prepare_payment(&held.scrip, &held.secret, variant, item)?.0),
    }
}

fn change_value(change: Option<&Scrip>) -> Amount {
    change.map_or(Amount::ZERO, Scrip::value)
}

fn missing(key: &ScripKey) -> ClientError {
    ClientError::NoScrip {
        vendor: key.vendor.to_string(),
        needed: Amount::ZERO,
        detail: format!("scrip {} is no longer in the wallet", key.id),
    }
}

/// The history outcome of a failed call whose answer did arrive.
fn failure_outcome(error: &ClientError) -> Outcome {
    if let Some(reason) = error.reason() {
        return Outcome::Refused {
            reason: reason.to_owned(),
        };
    }
    let reason = match error {
        ClientError::Transport { .. } => "unreachable".to_owned(),
        ClientError::Protocol(error) => error.reason().to_owned(),
        ClientError::BadReply { .. } => "bad_reply".to_owned(),
        ClientError::Limit { .. } => "too_large".to_owned(),
        ClientError::Rpc { code, .. } => snake_case(&format!("{code:?}")),
        _ => "error".to_owned(),
    };
    Outcome::Failed { reason }
}

fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// `ms` since the Unix epoch as an ISO 8601 UTC time, to the second.
pub fn utc_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from a day count (proleptic Gregorian calendar), by eras of
    // 400 years, which all have the same number of days.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests;
