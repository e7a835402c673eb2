//! The wallet file's format: JSON, with byte strings in hex.
//!
//! The records here mirror the wallet's in-memory types field for field;
//! reading a file checks every field (names, suites, scrip encodings, secret
//! lengths) so that a damaged file is refused as a whole rather than
//! half-loaded. Hex strings of secrets are zeroised when a record is dropped.
//!
//! ```json
//! {
//!   "version": 1,
//!   "brokers": [{ "name": "broker.example", "url": "http://127.0.0.1:7100",
//!                 "suite": "classic", "account_id": 7, "account_key": "<hex>",
//!                 "vendors": ["news.example"] }],
//!   "broker_scrip": [{ "broker": "broker.example", "scrip": "<hex>",
//!                      "secret": "<hex>" }],
//!   "vendor_scrip": [{ "vendor": "news.example", "vendor_url": "http://…",
//!                      "scrip": "<hex>", "secret": "<hex>",
//!                      "in_flight": { "kind": "pay", "variant": "secure",
//!                                     "item": "article-1", "vendor_url": "http://…" } }],
//!   "pending_buys": [{ "broker": "broker.example", "amount": 500,
//!                      "timestamp_ms": 1800000000000, "nonce": "<hex>" }],
//!   "history": [{ "time_ms": 1800000000000, "kind": "pay", "vendor": "news.example",
//!                 "item": "article-1", "price": 30, "change": 70, "outcome": "ok" }],
//!   "settings": { "top_up": 100, "max_price": 100, "daily_limit": 1000,
//!                 "vendor_daily_limit": null, "vendor_limits": {} }
//! }
//! ```
//!
//! A payment in flight also records its price and, in the private variant,
//! the sealed request sent (`"price": 30, "sealed_request": "<hex>"`). A web
//! payment in flight is
//! `{ "kind": "web", "url": "http://…/articles/1", "method": "GET",
//! "request": "GET news.example/articles/1", "variant": "secure",
//! "price": 10 }`, and its history entry has the answer's `status`.
//!
//! A file protected by a passphrase is an envelope of format version 2
//! around this one (see `seal`).
//!
//! Scrip is stored as body followed by certificate (`Scrip::encode`).

use std::path::Path;

use millicent_core::account::NONCE_LEN;
use millicent_core::{Amount, CustomerSecret, Scrip, Suite, Variant, VendorName};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{BrokerAccount, HeldScrip, HistoryEntry, InFlight, PendingBuy, Settings};
use crate::ClientError;
use crate::protocol::{AccountCallId, AccountKey};

/// The version of the format written by this program.
const FORMAT_VERSION: u32 = 1;

/// What a wallet file holds, checked: a wallet without its file and lock.
#[derive(Default)]
pub(super) struct Contents {
    pub(super) brokers: Vec<BrokerAccount>,
    pub(super) broker_scrip: Vec<HeldScrip>,
    pub(super) vendor_scrip: Vec<HeldScrip>,
    pub(super) pending_buys: Vec<PendingBuy>,
    pub(super) history: Vec<HistoryEntry>,
    pub(super) settings: Settings,
}

impl Contents {
    /// The contents borrowed, for [`encode`].
    pub(super) fn parts(&self) -> Parts<'_> {
        Parts {
            brokers: &self.brokers,
            broker_scrip: &self.broker_scrip,
            vendor_scrip: &self.vendor_scrip,
            pending_buys: &self.pending_buys,
            history: &self.history,
            settings: &self.settings,
        }
    }
}

/// A wallet's contents, borrowed from a [`Contents`] or an open wallet.
pub(super) struct Parts<'a> {
    pub(super) brokers: &'a [BrokerAccount],
    pub(super) broker_scrip: &'a [HeldScrip],
    pub(super) vendor_scrip: &'a [HeldScrip],
    pub(super) pending_buys: &'a [PendingBuy],
    pub(super) history: &'a [HistoryEntry],
    pub(super) settings: &'a Settings,
}

#[derive(Serialize, Deserialize)]
struct WalletRecord {
    version: u32,
    #[serde(default)]
    brokers: Vec<BrokerRecord>,
    #[serde(default)]
    broker_scrip: Vec<BrokerScripRecord>,
    #[serde(default)]
    vendor_scrip: Vec<VendorScripRecord>,
    #[serde(default)]
    pending_buys: Vec<PendingBuyRecord>,
    #[serde(default)]
    history: Vec<HistoryEntry>,
    #[serde(default)]
    settings: Settings,
}

#[derive(Serialize, Deserialize)]
struct BrokerRecord {
    name: String,
    url: String,
    suite: String,
    account_id: u64,
    account_key: Zeroizing<String>,
    #[serde(default)]
    vendors: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct BrokerScripRecord {
    broker: String,
    scrip: String,
    secret: Zeroizing<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    in_flight: Option<InFlightRecord>,
}

#[derive(Serialize, Deserialize)]
struct VendorScripRecord {
    vendor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vendor_url: Option<String>,
    scrip: String,
    secret: Zeroizing<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    in_flight: Option<InFlightRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum InFlightRecord {
    Pay {
        variant: String,
        item: String,
        vendor_url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        price: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sealed_request: Option<String>,
    },
    Web {
        url: String,
        method: String,
        request: String,
        variant: String,
        price: u64,
    },
    Exchange {
        vendor: String,
        value: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vendor_url: Option<String>,
    },
    Refund {
        account_id: u64,
    },
}

#[derive(Serialize, Deserialize)]
struct PendingBuyRecord {
    broker: String,
    amount: u64,
    timestamp_ms: u64,
    nonce: String,
}

/// The file holding `wallet`, in a buffer zeroised when dropped; `path`
/// names the file in errors.
pub(super) fn encode(path: &Path, wallet: Parts<'_>) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let record = WalletRecord {
        version: FORMAT_VERSION,
        brokers: wallet.brokers.iter().map(broker_record).collect(),
        broker_scrip: wallet
            .broker_scrip
            .iter()
            .map(|held| BrokerScripRecord {
                broker: held.scrip.body().vendor.to_string(),
                scrip: hex::encode(held.scrip.encode()),
                secret: Zeroizing::new(hex::encode(held.secret.expose_bytes())),
                in_flight: held.in_flight.as_ref().map(in_flight_record),
            })
            .collect(),
        vendor_scrip: wallet
            .vendor_scrip
            .iter()
            .map(|held| VendorScripRecord {
                vendor: held.scrip.body().vendor.to_string(),
                vendor_url: held.vendor_url.clone(),
                scrip: hex::encode(held.scrip.encode()),
                secret: Zeroizing::new(hex::encode(held.secret.expose_bytes())),
                in_flight: held.in_flight.as_ref().map(in_flight_record),
            })
            .collect(),
        pending_buys: wallet
            .pending_buys
            .iter()
            .map(|pending| PendingBuyRecord {
                broker: pending.broker.to_string(),
                amount: pending.amount.units(),
                timestamp_ms: pending.call.timestamp_ms,
                nonce: hex::encode(pending.call.nonce),
            })
            .collect(),
        history: wallet.history.to_vec(),
        settings: wallet.settings.clone(),
    };
    let mut buffer = SecretBuffer::default();
    serde_json::to_writer_pretty(&mut buffer, &record).map_err(|error| ClientError::Wallet {
        path: path.to_owned(),
        action: "encode",
        error: std::io::Error::other(error),
    })?;
    buffer.append(b"\n");
    Ok(buffer.0)
}

/// A growing buffer that wipes each allocation it outgrows, so that writing
/// a wallet leaves no copy of its secrets in freed memory (a plain `Vec`
/// frees its old allocation as it is when it grows).
#[derive(Default)]
struct SecretBuffer(Zeroizing<Vec<u8>>);

impl SecretBuffer {
    fn append(&mut self, bytes: &[u8]) {
        let needed = self.0.len() + bytes.len();
        if needed > self.0.capacity() {
            let mut larger = Zeroizing::new(Vec::with_capacity(needed.max(2 * self.0.capacity())));
            larger.extend_from_slice(&self.0);
            // The smaller allocation is wiped as it is dropped here.
            self.0 = larger;
        }
        self.0.extend_from_slice(bytes);
    }
}

impl std::io::Write for SecretBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.append(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn broker_record(account: &BrokerAccount) -> BrokerRecord {
    BrokerRecord {
        name: account.name.to_string(),
        url: account.url.clone(),
        suite: account.suite.name().to_owned(),
        account_id: account.account_id,
        account_key: Zeroizing::new(hex::encode(account.key.expose_bytes())),
        vendors: account.vendors.clone(),
    }
}

fn in_flight_record(in_flight: &InFlight) -> InFlightRecord {
    match in_flight {
        InFlight::Pay {
            variant,
            item,
            vendor_url,
            price,
            sealed_request,
        } => InFlightRecord::Pay {
            variant: variant.name().to_owned(),
            item: item.clone(),
            vendor_url: vendor_url.clone(),
            price: price.map(Amount::units),
            sealed_request: sealed_request.as_deref().map(hex::encode),
        },
        InFlight::Web {
            url,
            method,
            request,
            variant,
            price,
        } => InFlightRecord::Web {
            url: url.clone(),
            method: method.clone(),
            request: request.clone(),
            variant: variant.name().to_owned(),
            price: price.units(),
        },
        InFlight::Exchange {
            vendor,
            value,
            vendor_url,
        } => InFlightRecord::Exchange {
            vendor: vendor.to_string(),
            value: value.units(),
            vendor_url: vendor_url.clone(),
        },
        InFlight::Refund { account_id } => InFlightRecord::Refund {
            account_id: *account_id,
        },
    }
}

/// The version alone, read first: a newer format may differ in any other
/// field.
#[derive(Deserialize)]
struct VersionRecord {
    version: u64,
}

/// Whether `contents` is a protected wallet file (format version 2), to
/// be opened with its passphrase first.
pub(super) fn is_sealed(contents: &[u8]) -> bool {
    serde_json::from_slice::<VersionRecord>(contents)
        .is_ok_and(|record| record.version == u64::from(super::seal::SEALED_VERSION))
}

/// What the wallet file at `path`, holding `contents`, holds.
pub(super) fn decode(path: &Path, contents: &[u8]) -> Result<Contents, ClientError> {
    let path = path.to_owned();
    let version = serde_json::from_slice::<VersionRecord>(contents)
        .map_err(|error| ClientError::WalletCorrupt {
            path: path.clone(),
            detail: format!("not a wallet file ({error})"),
        })?
        .version;
    // Version 2 is a protected file, opened before it gets here.
    let newest = super::seal::SEALED_VERSION;
    if version > u64::from(newest) {
        return Err(ClientError::WalletTooNew {
            path,
            version,
            supported: newest,
        });
    }
    decode_record(contents).map_err(|detail| ClientError::WalletCorrupt { path, detail })
}

/// Reading fails with a description of the first bad field.
type Checked<T> = Result<T, String>;

fn decode_record(contents: &[u8]) -> Checked<Contents> {
    let record: WalletRecord =
        serde_json::from_slice(contents).map_err(|error| format!("not a wallet file ({error})"))?;
    if record.version != FORMAT_VERSION {
        return Err(format!(
            "it is in format version {}, which no version of this program wrote",
            record.version
        ));
    }

    let mut wallet = Contents::default();
    for broker in &record.brokers {
        let suite = Suite::from_name(&broker.suite).ok_or_else(|| {
            format!(
                "broker {} uses unknown suite {:?}",
                broker.name, broker.suite
            )
        })?;
        let bytes = secret_bytes("account key", &broker.account_key)?;
        let key = AccountKey::from_slice(suite, &bytes).map_err(|_| {
            format!(
                "the account key of broker {} is {} bytes long, not the {} of its suite",
                broker.name,
                bytes.len(),
                suite.mac_len()
            )
        })?;
        wallet.brokers.push(BrokerAccount {
            name: vendor_name(&broker.name)?,
            url: broker.url.clone(),
            suite,
            account_id: broker.account_id,
            key,
            vendors: broker.vendors.clone(),
        });
    }
    for held in &record.broker_scrip {
        let mut scrip = held_scrip(&held.broker, &held.scrip, &held.secret)?;
        scrip.in_flight = held.in_flight.as_ref().map(in_flight).transpose()?;
        wallet.broker_scrip.push(scrip);
    }
    for held in &record.vendor_scrip {
        let mut scrip = held_scrip(&held.vendor, &held.scrip, &held.secret)?;
        scrip.vendor_url = held.vendor_url.clone();
        scrip.in_flight = held.in_flight.as_ref().map(in_flight).transpose()?;
        wallet.vendor_scrip.push(scrip);
    }
    for pending in &record.pending_buys {
        let nonce = hex::decode(&pending.nonce)
            .ok()
            .and_then(|bytes| <[u8; NONCE_LEN]>::try_from(bytes).ok())
            .ok_or_else(|| format!("a pending buy has a bad nonce {:?}", pending.nonce))?;
        wallet.pending_buys.push(PendingBuy {
            broker: vendor_name(&pending.broker)?,
            amount: Amount::new(pending.amount),
            call: AccountCallId {
                timestamp_ms: pending.timestamp_ms,
                nonce,
            },
        });
    }
    wallet.history = record.history;
    wallet.settings = record.settings;
    Ok(wallet)
}

fn held_scrip(issuer: &str, scrip: &str, secret: &str) -> Checked<HeldScrip> {
    let bytes =
        hex::decode(scrip).map_err(|error| format!("scrip of {issuer} is not hex ({error})"))?;
    let scrip = Scrip::decode_concatenated(&bytes)
        .map_err(|error| format!("scrip of {issuer} does not decode ({error})"))?;
    if scrip.body().vendor.as_str() != issuer {
        return Err(format!(
            "scrip filed under {issuer} is scrip of {}",
            scrip.body().vendor
        ));
    }
    let secret =
        CustomerSecret::from_slice(scrip.suite(), &secret_bytes("customer secret", secret)?)
            .map_err(|error| {
                format!(
                    "scrip {} of {issuer} has a bad secret ({error})",
                    scrip.id()
                )
            })?;
    Ok(HeldScrip::new(scrip, secret, None))
}

fn in_flight(record: &InFlightRecord) -> Checked<InFlight> {
    Ok(match record {
        InFlightRecord::Pay {
            variant,
            item,
            vendor_url,
            price,
            sealed_request,
        } => InFlight::Pay {
            variant: variant_named(variant)?,
            item: item.clone(),
            vendor_url: vendor_url.clone(),
            price: price.map(Amount::new),
            sealed_request: sealed_request
                .as_deref()
                .map(|text| hex::decode(text).map_err(|_| "a sealed request is not hex".to_owned()))
                .transpose()?,
        },
        InFlightRecord::Web {
            url,
            method,
            request,
            variant,
            price,
        } => {
            if !matches!(method.as_str(), "GET" | "HEAD")
                || millicent_core::web::parse_web_request(request.as_bytes()).is_none()
            {
                return Err(format!(
                    "a web payment in flight is not one: {method} {request}"
                ));
            }
            InFlight::Web {
                url: url.clone(),
                method: method.clone(),
                request: request.clone(),
                variant: variant_named(variant)?,
                price: Amount::new(*price),
            }
        }
        InFlightRecord::Exchange {
            vendor,
            value,
            vendor_url,
        } => InFlight::Exchange {
            vendor: vendor_name(vendor)?,
            value: Amount::new(*value),
            vendor_url: vendor_url.clone(),
        },
        InFlightRecord::Refund { account_id } => InFlight::Refund {
            account_id: *account_id,
        },
    })
}

fn variant_named(name: &str) -> Checked<Variant> {
    Variant::from_name(name).ok_or_else(|| format!("unknown payment variant {name:?}"))
}

fn vendor_name(name: &str) -> Checked<VendorName> {
    VendorName::new(name).map_err(|error| format!("{name:?} is not a vendor name ({error})"))
}

/// Decodes a hex secret into a buffer zeroised when dropped. The message
/// never quotes the secret.
fn secret_bytes(what: &str, hex_text: &str) -> Checked<Zeroizing<Vec<u8>>> {
    hex::decode(hex_text)
        .map(Zeroizing::new)
        .map_err(|_| format!("a stored {what} is not hex"))
}

/// Serde helpers for an optional [`Amount`], stored as its units.
pub(super) mod optional_amount {
    use millicent_core::Amount;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes the units, or null.
    pub(crate) fn serialize<S: Serializer>(
        amount: &Option<Amount>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        amount.map(Amount::units).serialize(serializer)
    }

    /// Reads the units, or null.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Amount>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.map(Amount::new))
    }
}

/// Serde helpers for an [`Amount`], stored as its units.
pub(super) mod amount {
    use millicent_core::Amount;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes the units.
    pub(crate) fn serialize<S: Serializer>(
        amount: &Amount,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        amount.units().serialize(serializer)
    }

    /// Reads the units.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Amount, D::Error> {
        Ok(Amount::new(u64::deserialize(deserializer)?))
    }
}
