//! One function per protocol exchange with a broker or a vendor node.
//!
//! These functions keep no state and touch no file: each builds a request
//! with `millicent-core`, makes one gRPC call, checks the reply the way the
//! protocol says a customer must (stamps, change, values), and returns the
//! checked result. The wallet is built on them, and so is the load
//! generator, which is why they take ready clients and do no more work than
//! the protocol needs.
//!
//! Randomness (nonces) comes from the thread-local generator of `rand`, and
//! the clock is read only for the timestamps of account calls.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use millicent_core::account::{self, NONCE_LEN};
use millicent_core::exchange::{self, ExchangeRequest};
use millicent_core::{
    Amount, CustomerSecret, Payment, PaymentReply, Scrip, SealPurpose, Suite, Variant, VendorName,
};
use millicent_proto as wire;
use millicent_proto::broker_service_client::BrokerServiceClient;
use millicent_proto::vendor_service_client::VendorServiceClient;
use tonic::transport::{Channel, Endpoint};
use zeroize::Zeroizing;

use crate::ClientError;
use crate::convert::{
    optional_stamp, payment_reply_from_wire, price_list_from_wire, required, scrip_from_wire,
    scrip_to_wire, variant_to_wire,
};

/// How long to wait for a connection to a server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for any one call's reply.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Method name under which [`buy_broker_scrip`] is authenticated.
pub const METHOD_BUY_BROKER_SCRIP: &str = "BuyBrokerScrip";
/// Method name under which [`get_account`] is authenticated.
pub const METHOD_GET_ACCOUNT: &str = "GetAccount";

/// Opens a channel to the server at `url`. A URL without a scheme is taken
/// to be plain `http://`; any scheme but `http` is refused, as there is no
/// TLS yet.
pub async fn connect(url: &str) -> Result<Channel, ClientError> {
    let url = normalize_url(url)?;
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|error| ClientError::Transport {
            url: url.clone(),
            error,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    endpoint
        .connect()
        .await
        .map_err(|error| ClientError::Transport { url, error })
}

/// A broker client connected to `url`.
pub async fn connect_broker(url: &str) -> Result<BrokerServiceClient<Channel>, ClientError> {
    Ok(BrokerServiceClient::new(connect(url).await?))
}

/// A vendor node client connected to `url`.
pub async fn connect_vendor(url: &str) -> Result<VendorServiceClient<Channel>, ClientError> {
    Ok(VendorServiceClient::new(connect(url).await?))
}

/// `url` as an `http://` URL: with `http://` in front if it names no
/// scheme, refused if it names any other scheme. This client has no TLS, so
/// an `https://` URL would otherwise be dialled in plaintext.
pub fn normalize_url(url: &str) -> Result<String, ClientError> {
    match url.split_once("://") {
        Some((scheme, rest)) if is_scheme(scheme) => {
            if scheme.eq_ignore_ascii_case("http") {
                Ok(format!("http://{rest}"))
            } else {
                Err(ClientError::UnsupportedUrl {
                    url: url.to_owned(),
                    scheme: scheme.to_ascii_lowercase(),
                })
            }
        }
        _ => Ok(format!("http://{url}")),
    }
}

/// Whether `text` is a URL scheme: a letter, then letters, digits, `+`,
/// `-` or `.`.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// The key that authenticates calls on one broker account: zeroised when
/// dropped, never printed, compared in constant time.
pub use millicent_core::AccountKey;

/// Opens an account at a broker whose suite is `suite`: returns the account
/// ID and its key, which the broker shows only this once.
pub async fn open_account(
    client: &mut BrokerServiceClient<Channel>,
    suite: Suite,
) -> Result<(u64, AccountKey), ClientError> {
    let reply = client
        .open_account(wire::OpenAccountRequest {})
        .await?
        .into_inner();
    let key = Zeroizing::new(reply.account_key);
    let key = AccountKey::from_slice(suite, &key).map_err(|_| ClientError::BadReply {
        call: "OpenAccount",
        detail: format!(
            "carries an account key of {} bytes, not the {} of the {} suite",
            key.len(),
            suite.mac_len(),
            suite.name()
        ),
    })?;
    Ok((reply.account_id, key))
}

/// What a broker says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfoSummary {
    /// The broker's name: the vendor name in its broker scrip.
    pub name: VendorName,
    /// The suite of its broker scrip and of its account MACs.
    pub suite: Suite,
    /// The vendors it can sell scrip for.
    pub vendors: Vec<String>,
}

/// Asks a broker for its name, suite and the vendors it serves.
pub async fn broker_info(
    client: &mut BrokerServiceClient<Channel>,
) -> Result<BrokerInfoSummary, ClientError> {
    let reply = client
        .get_broker_info(wire::GetBrokerInfoRequest {})
        .await?
        .into_inner();
    let name = VendorName::new(&reply.broker).map_err(|source| ClientError::BadReply {
        call: "GetBrokerInfo",
        detail: format!("names the broker {:?} ({source})", reply.broker),
    })?;
    let suite = u8::try_from(reply.suite)
        .ok()
        .and_then(|id| Suite::from_id(id).ok())
        .ok_or_else(|| ClientError::BadReply {
            call: "GetBrokerInfo",
            detail: format!(
                "names suite {}, which this client does not know",
                reply.suite
            ),
        })?;
    Ok(BrokerInfoSummary {
        name,
        suite,
        vendors: reply.vendors,
    })
}

/// The proof that an account call comes from the key's holder:
/// `account_mac` over the method name (the gRPC method, for example
/// `"BuyBrokerScrip"`), account ID, time in milliseconds, nonce and the
/// call's parameters.
pub fn account_auth(
    suite: Suite,
    account_id: u64,
    key: &[u8],
    method: &str,
    params: &[u8],
    now_ms: u64,
    nonce: [u8; NONCE_LEN],
) -> wire::AccountAuth {
    let mac = account::account_mac(suite, key, method, account_id, now_ms, &nonce, params);
    wire::AccountAuth {
        account_id,
        timestamp_ms: now_ms,
        nonce: nonce.to_vec(),
        mac: mac.as_bytes().to_vec(),
    }
}

/// What makes one account call unique: its time and nonce. The broker
/// answers a repeated nonce with the first call's reply, so a call retried
/// with the same `AccountCallId` cannot take effect twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountCallId {
    /// Milliseconds since the Unix epoch when the call was first made.
    pub timestamp_ms: u64,
    /// 16 random bytes.
    pub nonce: [u8; NONCE_LEN],
}

impl AccountCallId {
    /// A new call: the current time and a random nonce.
    pub fn fresh() -> AccountCallId {
        AccountCallId {
            timestamp_ms: now_ms(),
            nonce: rand::random(),
        }
    }
}

/// Broker scrip just bought, with its customer secret.
#[derive(Debug)]
pub struct BoughtScrip {
    /// The broker scrip.
    pub scrip: Scrip,
    /// Its customer secret, opened from the broker's sealed copy.
    pub secret: CustomerSecret,
    /// The account balance after the purchase.
    pub balance: Amount,
}

/// Buys broker scrip worth `amount` from the account's balance.
pub async fn buy_broker_scrip(
    client: &mut BrokerServiceClient<Channel>,
    suite: Suite,
    account_id: u64,
    key: &[u8],
    amount: Amount,
) -> Result<BoughtScrip, ClientError> {
    let call = AccountCallId::fresh();
    buy_broker_scrip_as(client, suite, account_id, key, amount, call).await
}

/// As [`buy_broker_scrip`], as the call `call`: repeating a call whose reply
/// was lost fetches that reply instead of buying twice.
pub async fn buy_broker_scrip_as(
    client: &mut BrokerServiceClient<Channel>,
    suite: Suite,
    account_id: u64,
    key: &[u8],
    amount: Amount,
    call: AccountCallId,
) -> Result<BoughtScrip, ClientError> {
    let params = amount.units().to_be_bytes();
    let auth = account_auth(
        suite,
        account_id,
        key,
        METHOD_BUY_BROKER_SCRIP,
        &params,
        call.timestamp_ms,
        call.nonce,
    );
    let reply = client
        .buy_broker_scrip(wire::BuyBrokerScripRequest {
            auth: Some(auth),
            amount: amount.units(),
        })
        .await?
        .into_inner();

    let scrip = scrip_from_wire(required(reply.scrip.as_ref(), "BuyBrokerScrip", "scrip")?)?;
    if scrip.value() != amount {
        return Err(ClientError::BadReply {
            call: "BuyBrokerScrip",
            detail: format!(
                "carries scrip worth {}, not the {amount} asked",
                scrip.value()
            ),
        });
    }
    let opened = Zeroizing::new(suite.open(
        key,
        SealPurpose::BrokerScripSecret,
        &reply.sealed_customer_secret,
    )?);
    let secret = CustomerSecret::from_slice(scrip.suite(), &opened)?;
    Ok(BoughtScrip {
        scrip,
        secret,
        balance: Amount::new(reply.balance),
    })
}

/// One line of an account statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementEntry {
    /// When it was booked, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// What it was: `"credit"` or `"buy_broker_scrip"`.
    pub kind: String,
    /// The signed change of the balance.
    pub delta: i64,
    /// The balance after it.
    pub balance_after: Amount,
    /// The operator's reference, for credits.
    pub reference: String,
}

/// An account's balance and history as the broker keeps them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountStatementSummary {
    /// The account.
    pub account_id: u64,
    /// Its balance.
    pub balance: Amount,
    /// Its entries, as the broker sent them.
    pub entries: Vec<StatementEntry>,
}

/// Fetches an account's balance and entries.
pub async fn get_account(
    client: &mut BrokerServiceClient<Channel>,
    suite: Suite,
    account_id: u64,
    key: &[u8],
) -> Result<AccountStatementSummary, ClientError> {
    let call = AccountCallId::fresh();
    let auth = account_auth(
        suite,
        account_id,
        key,
        METHOD_GET_ACCOUNT,
        &[],
        call.timestamp_ms,
        call.nonce,
    );
    let reply = client
        .get_account(wire::GetAccountRequest { auth: Some(auth) })
        .await?
        .into_inner();
    Ok(AccountStatementSummary {
        account_id: reply.account_id,
        balance: Amount::new(reply.balance),
        entries: reply
            .entries
            .into_iter()
            .map(|entry| StatementEntry {
                timestamp_ms: entry.timestamp_ms,
                kind: entry.kind,
                delta: entry.delta,
                balance_after: Amount::new(entry.balance_after),
                reference: entry.reference,
            })
            .collect(),
    })
}

/// Operator call: credits `amount` to an account, standing in for a
/// heavyweight payment. `reference` is unique per account; repeating it
/// credits nothing more. Returns the new balance.
pub async fn credit(
    client: &mut BrokerServiceClient<Channel>,
    operator_token: &str,
    account_id: u64,
    amount: Amount,
    reference: &str,
) -> Result<Amount, ClientError> {
    let mut request = tonic::Request::new(wire::CreditRequest {
        account_id,
        amount: amount.units(),
        reference: reference.to_owned(),
    });
    let bearer =
        format!("Bearer {operator_token}")
            .parse()
            .map_err(|_| ClientError::InvalidArgument {
                what: "operator token",
                value: "(not shown)".to_owned(),
                error: millicent_core::Error::Malformed {
                    what: "operator token",
                    detail: "only visible ASCII is allowed in a token",
                },
            })?;
    request.metadata_mut().insert("authorization", bearer);
    let reply = client
        .credit(request)
        .await
        .map_err(|status| match ClientError::from_status(status) {
            ClientError::Refused {
                reason, message, ..
            } if reason == "unauthenticated" => ClientError::OperatorTokenRefused { message },
            other => other,
        })?
        .into_inner();
    Ok(Amount::new(reply.balance))
}

/// The result of exchanging broker scrip for vendor scrip.
#[derive(Debug)]
pub struct Exchanged {
    /// The vendor scrip.
    pub vendor_scrip: Scrip,
    /// Its customer secret.
    pub vendor_secret: CustomerSecret,
    /// Change in broker scrip, under the same customer secret as the
    /// broker scrip paid.
    pub change: Option<Scrip>,
    /// What the exchange cost in broker scrip: the vendor scrip's value
    /// plus the broker's fee.
    pub price: Amount,
}

/// Pays `broker_scrip` to its broker for vendor scrip of `value` for
/// `vendor`. The exchange is a secure-variant payment, so the broker's
/// reply stamp proves the vendor scrip, its sealed secret and the change
/// come from the broker.
pub async fn exchange(
    client: &mut BrokerServiceClient<Channel>,
    broker_scrip: &Scrip,
    broker_secret: &CustomerSecret,
    vendor: &VendorName,
    value: Amount,
) -> Result<Exchanged, ClientError> {
    let order = ExchangeRequest {
        vendor: vendor.clone(),
        value,
    }
    .encode();
    let payment = Payment::prepare(
        broker_scrip.clone(),
        broker_secret,
        Variant::Secure,
        &order,
        &random_nonce(broker_scrip.suite()),
    )
    .map_err(prepare_error)?;
    let reply = client
        .exchange(wire::ExchangeRequest {
            broker_scrip: Some(scrip_to_wire(broker_scrip)),
            request: payment.request.clone(),
            request_stamp: stamp_bytes(&payment),
        })
        .await?
        .into_inner();

    let vendor_scrip = scrip_from_wire(required(
        reply.vendor_scrip.as_ref(),
        "Exchange",
        "vendor scrip",
    )?)?;
    let checked = PaymentReply {
        goods: exchange::exchange_goods(&vendor_scrip, &reply.sealed_customer_secret),
        change: reply.change.as_ref().map(scrip_from_wire).transpose()?,
        reply_stamp: optional_stamp(broker_scrip.suite(), "reply stamp", &reply.reply_stamp)?,
        price: Amount::new(reply.price),
    };
    checked.open(&payment, broker_secret)?;
    let vendor_secret = exchange::open_customer_secret(
        broker_scrip.suite(),
        broker_secret,
        &reply.sealed_customer_secret,
        vendor_scrip.suite(),
    )?;

    let body = vendor_scrip.body();
    if body.vendor != *vendor || body.value != value {
        return Err(ClientError::BadReply {
            call: "Exchange",
            detail: format!(
                "carries scrip worth {} for {}, not {value} for {vendor}",
                body.value, body.vendor
            ),
        });
    }
    Ok(Exchanged {
        vendor_scrip,
        vendor_secret,
        change: checked.change,
        price: checked.price,
    })
}

/// What a vendor gave for a payment.
#[derive(Debug)]
pub struct Paid {
    /// The goods, decrypted in the private variant.
    pub goods: Vec<u8>,
    /// Change scrip, under the same customer secret as the scrip paid.
    pub change: Option<Scrip>,
    /// The price charged.
    pub price: Amount,
}

/// A payment for `item` and the `PayRequest` that carries it.
pub fn prepare_payment(
    scrip: &Scrip,
    secret: &CustomerSecret,
    variant: Variant,
    item: &str,
) -> Result<(Payment, wire::PayRequest), ClientError> {
    let payment = Payment::prepare(
        scrip.clone(),
        secret,
        variant,
        item.as_bytes(),
        &random_nonce(scrip.suite()),
    )
    .map_err(prepare_error)?;
    let request = wire::PayRequest {
        scrip: Some(scrip_to_wire(scrip)),
        variant: variant_to_wire(variant) as i32,
        request: payment.request.clone(),
        request_stamp: stamp_bytes(&payment),
    };
    Ok((payment, request))
}

/// Pays for `item` with `scrip` in `variant` and checks the reply: change
/// for the same customer worth value minus price and, except in the clear
/// variant, the reply stamp. `secret` is the scrip's customer secret.
pub async fn pay(
    client: &mut VendorServiceClient<Channel>,
    scrip: &Scrip,
    secret: &CustomerSecret,
    variant: Variant,
    item: &str,
) -> Result<Paid, ClientError> {
    let (payment, _) = prepare_payment(scrip, secret, variant, item)?;
    pay_prepared(client, &payment, secret).await
}

/// Sends `payment`, prepared before (and perhaps recorded, so that a lost
/// reply can be fetched by sending the identical payment again), and
/// checks the reply as [`pay`] does.
pub async fn pay_prepared(
    client: &mut VendorServiceClient<Channel>,
    payment: &Payment,
    secret: &CustomerSecret,
) -> Result<Paid, ClientError> {
    let request = wire::PayRequest {
        scrip: Some(scrip_to_wire(&payment.scrip)),
        variant: variant_to_wire(payment.variant) as i32,
        request: payment.request.clone(),
        request_stamp: stamp_bytes(payment),
    };
    let reply = client.pay(request).await?.into_inner();

    let checked = payment_reply_from_wire(payment.scrip.suite(), &reply)?;
    let goods = checked.open(payment, secret)?;
    Ok(Paid {
        goods,
        change: checked.change,
        price: checked.price,
    })
}

/// An item a vendor sells and its price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemPrice {
    /// The item's name, as sent in a payment's request.
    pub name: String,
    /// Its price in the smallest unit.
    pub price: Amount,
}

/// One vendor served by a vendor node, as its price list describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendorOfferSummary {
    /// The vendor's name, as it appears in its scrip.
    pub vendor: VendorName,
    /// What it sells.
    pub items: Vec<ItemPrice>,
    /// The payment variants it accepts (those this client knows).
    pub variants: Vec<Variant>,
    /// The suites of its scrip (those this client knows).
    pub suites: Vec<Suite>,
}

impl VendorOfferSummary {
    /// The price of `item`, if this vendor sells it.
    pub fn price_of(&self, item: &str) -> Option<Amount> {
        self.items
            .iter()
            .find(|offer| offer.name == item)
            .map(|offer| offer.price)
    }
}

/// Fetches a vendor node's price list.
pub async fn prices(
    client: &mut VendorServiceClient<Channel>,
) -> Result<Vec<VendorOfferSummary>, ClientError> {
    let list = client
        .get_prices(wire::GetPricesRequest {})
        .await?
        .into_inner();
    price_list_from_wire(list)
}

/// The current time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// A random nonce of the length `suite` seals with.
fn random_nonce(suite: Suite) -> Vec<u8> {
    let mut nonce = vec![0u8; suite.nonce_len()];
    rand::fill(&mut nonce[..]);
    nonce
}

/// The request stamp as sent: empty in the clear variant.
fn stamp_bytes(payment: &Payment) -> Vec<u8> {
    payment
        .request_stamp
        .map(|stamp| stamp.as_bytes().to_vec())
        .unwrap_or_default()
}

/// Preparing a payment fails only on the caller's input: a request too
/// long for the protocol.
fn prepare_error(error: millicent_core::Error) -> ClientError {
    match error {
        millicent_core::Error::TooLarge { what, actual, max } => ClientError::Limit {
            what,
            actual: actual as u64,
            max: max as u64,
        },
        other => ClientError::Protocol(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_auth_carries_the_core_mac() {
        let key = [5u8; 16];
        let nonce = [3u8; 16];
        let params = 250u64.to_be_bytes();
        let auth = account_auth(
            Suite::Classic,
            42,
            &key,
            METHOD_BUY_BROKER_SCRIP,
            &params,
            1_700_000_000_000,
            nonce,
        );
        let expected = account::account_mac(
            Suite::Classic,
            &key,
            "BuyBrokerScrip",
            42,
            1_700_000_000_000,
            &nonce,
            &params,
        );
        assert_eq!(auth.mac, expected.as_bytes());
        assert_eq!(auth.account_id, 42);
        assert_eq!(auth.timestamp_ms, 1_700_000_000_000);
        assert_eq!(auth.nonce, nonce);
        assert_eq!(METHOD_GET_ACCOUNT, "GetAccount");
    }

    #[test]
    fn fresh_account_calls_differ() {
        assert_ne!(AccountCallId::fresh().nonce, AccountCallId::fresh().nonce);
    }

    #[test]
    fn an_account_key_is_never_printed() {
        let key = AccountKey::from_slice(Suite::Classic, &[0xab; 16]).unwrap();
        assert_eq!(format!("{key:?}"), "AccountKey(..)");
    }

    #[test]
    fn urls_without_a_scheme_are_plain_http_and_other_schemes_are_refused() {
        assert_eq!(
            normalize_url("localhost:7000").unwrap(),
            "http://localhost:7000"
        );
        assert_eq!(
            normalize_url("HTTP://b.example:7100").unwrap(),
            "http://b.example:7100"
        );
        for url in [
            "https://b.example",
            "ftp://b.example",
            "grpcs://b.example:7100",
        ] {
            match normalize_url(url) {
                Err(error @ ClientError::UnsupportedUrl { .. }) => {
                    assert!(
                        error.to_string().contains("TLS is not available yet"),
                        "{error}"
                    );
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_oversized_item_is_a_limit_error() {
        let error = prepare_error(millicent_core::Error::TooLarge {
            what: "request",
            actual: 2000,
            max: 1024,
        });
        assert!(matches!(
            error,
            ClientError::Limit {
                actual: 2000,
                max: 1024,
                ..
            }
        ));
    }
}
