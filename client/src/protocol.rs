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
use millicent_core::payment;
use millicent_core::{
    Amount, CustomerSecret, Payment, PaymentReply, Scrip, SealPurpose, Suite, Variant, VendorName,
};
use millicent_proto as wire;
use millicent_proto::broker_service_client::BrokerServiceClient;
use millicent_proto::vendor_service_client::VendorServiceClient;
use tonic::transport::Channel;
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
/// to be plain `http://`; an `https://` URL is dialled with the TLS
/// settings the process installed
/// ([`millicent_transport::tls::install_process_client_tls`]), and refused
/// if it installed none; any other scheme is refused.
pub async fn connect(url: &str) -> Result<Channel, ClientError> {
    let url = normalize_url(url)?;
    let endpoint = millicent_transport::tls::endpoint(&url)?
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

/// `url` with its scheme in lower case, `http://` in front if it names
/// none, refused if it names one other than `http` and `https`.
pub fn normalize_url(url: &str) -> Result<String, ClientError> {
    match url.split_once("://") {
        Some((scheme, rest)) if is_scheme(scheme) => {
            if scheme.eq_ignore_ascii_case("http") {
                Ok(format!("http://{rest}"))
            } else if scheme.eq_ignore_ascii_case("https") {
                Ok(format!("https://{rest}"))
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
    /// Which of its nodes keeps which shard.
    pub cluster: ClusterMap,
}

/// A broker node and the shards it keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardOwner {
    /// The node's name.
    pub node: String,
    /// Where it is reached.
    pub url: String,
    /// The shards it keeps.
    pub shards: Vec<u8>,
}

/// Which node of a broker keeps which shard, as the broker publishes it.
///
/// An account belongs to the shard in the top byte of its ID, broker scrip
/// to the shard in the top byte of its series (see
/// [`millicent_core::broker`]); calls about either go to the node keeping
/// that shard. A broker without shards publishes one node keeping shard 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterMap {
    /// Every node of the broker.
    pub nodes: Vec<ShardOwner>,
}

impl ClusterMap {
    /// The URL of the node keeping `shard`, if any does.
    pub fn url_of_shard(&self, shard: u8) -> Option<&str> {
        self.nodes
            .iter()
            .find(|node| node.shards.contains(&shard))
            .map(|node| node.url.as_str())
    }

    /// The URL of the node keeping account `account_id`.
    pub fn url_of_account(&self, account_id: u64) -> Option<&str> {
        self.url_of_shard(millicent_core::broker::account_shard(account_id))
    }

    /// The URL of the node that takes `broker_scrip` (in an exchange or a
    /// refund).
    pub fn url_of_scrip(&self, broker_scrip: &Scrip) -> Option<&str> {
        self.url_of_shard(millicent_core::broker::scrip_shard(broker_scrip.id()))
    }
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
    let mut nodes = Vec::with_capacity(reply.cluster.len());
    for owner in reply.cluster {
        let shards = owner
            .shards
            .iter()
            .map(|shard| u8::try_from(*shard))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| ClientError::BadReply {
                call: "GetBrokerInfo",
                detail: format!("names a shard above 255 for node {}", owner.node),
            })?;
        nodes.push(ShardOwner {
            node: owner.node,
            url: normalize_url(&owner.url)?,
            shards,
        });
    }
    Ok(BrokerInfoSummary {
        name,
        suite,
        vendors: reply.vendors,
        cluster: ClusterMap { nodes },
    })
}

/// A broker client connected to the node keeping `shard`, found through
/// the cluster map of the node at `url` (which is used itself when it
/// keeps the shard or publishes no map).
pub async fn connect_broker_for_shard(
    url: &str,
    shard: u8,
) -> Result<BrokerServiceClient<Channel>, ClientError> {
    let mut client = connect_broker(url).await?;
    let info = broker_info(&mut client).await?;
    match info.cluster.url_of_shard(shard) {
        Some(owner) if normalize_url(owner)? != normalize_url(url)? => connect_broker(owner).await,
        _ => Ok(client),
    }
}

/// A broker client connected to the node keeping account `account_id`.
pub async fn connect_broker_for_account(
    url: &str,
    account_id: u64,
) -> Result<BrokerServiceClient<Channel>, ClientError> {
    connect_broker_for_shard(url, millicent_core::broker::account_shard(account_id)).await
}

/// The metadata entry of a `wrong_node` refusal giving the owner's URL.
pub const OWNER_URL_METADATA_KEY: &str = "millicent-owner-url";

/// Makes one broker call; if the node answers `wrong_node`, connects
/// `client` to the node it names and makes the call there once more (a
/// refused call changed nothing, so repeating it is safe). `client` stays
/// connected to that node afterwards.
async fn routed<T, F, Fut>(
    client: &mut BrokerServiceClient<Channel>,
    call: F,
) -> Result<T, ClientError>
where
    F: Fn(BrokerServiceClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let status = match call(client.clone()).await {
        Ok(reply) => return Ok(reply.into_inner()),
        Err(status) => status,
    };
    let owner = status
        .metadata()
        .get(crate::REASON_METADATA_KEY)
        .filter(|reason| *reason == "wrong_node")
        .and_then(|_| status.metadata().get(OWNER_URL_METADATA_KEY))
        .and_then(|url| url.to_str().ok())
        .map(str::to_owned);
    let Some(owner) = owner else {
        return Err(ClientError::from_status(status));
    };
    *client = connect_broker(&owner).await?;
    Ok(call(client.clone()).await?.into_inner())
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
    let request = wire::BuyBrokerScripRequest {
        auth: Some(auth),
        amount: amount.units(),
    };
    let reply = routed(client, |mut client| {
        let request = request.clone();
        async move { client.buy_broker_scrip(request).await }
    })
    .await?;

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
    let request = wire::GetAccountRequest { auth: Some(auth) };
    let reply = routed(client, |mut client| {
        let request = request.clone();
        async move { client.get_account(request).await }
    })
    .await?;
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

/// The answer to [`credit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credited {
    /// The balance right after the credit with the reference.
    pub balance: Amount,
    /// Whether the reference had been credited already, so that this call
    /// credited nothing more.
    pub repeated: bool,
}

/// Operator call: credits `amount` to an account, standing in for a
/// heavyweight payment. `reference` is unique per account; repeating it
/// with the same amount credits nothing more, and with another amount is
/// refused (`reference_reused`).
pub async fn credit(
    client: &mut BrokerServiceClient<Channel>,
    operator_token: &str,
    account_id: u64,
    amount: Amount,
    reference: &str,
) -> Result<Credited, ClientError> {
    let message = wire::CreditRequest {
        account_id,
        amount: amount.units(),
        reference: reference.to_owned(),
    };
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {operator_token}")
        .parse()
        .map_err(|_| ClientError::InvalidArgument {
            what: "operator token",
            value: "(not shown)".to_owned(),
            error: millicent_core::Error::Malformed {
                what: "operator token",
                detail: "only visible ASCII is allowed in a token",
            },
        })?;
    let reply = routed(client, |mut client| {
        let mut request = tonic::Request::new(message.clone());
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
        async move { client.credit(request).await }
    })
    .await
    .map_err(|error| match error {
        ClientError::Refused {
            reason, message, ..
        } if reason == "unauthenticated" => ClientError::OperatorTokenRefused { message },
        other => other,
    })?;
    Ok(Credited {
        balance: Amount::new(reply.balance),
        repeated: reply.repeated,
    })
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
    let prepared = PreparedExchange::new(broker_scrip, broker_secret, vendor, value)?;
    let reply = routed(client, |mut client| {
        let request = prepared.request.clone();
        async move { client.exchange(request).await }
    })
    .await?;
    prepared.check(broker_secret, &reply)
}

/// A secure-variant payment to the broker in `broker_scrip`, with `order`
/// as its request.
fn pay_broker(
    broker_scrip: &Scrip,
    broker_secret: &CustomerSecret,
    order: &[u8],
) -> Result<Payment, ClientError> {
    Payment::prepare(
        broker_scrip.clone(),
        broker_secret,
        Variant::Secure,
        order,
        &random_nonce(broker_scrip.suite()),
    )
    .map_err(prepare_error)
}

/// An exchange ready to send, and what its reply must be: for sending
/// exchanges another way than [`exchange`] (many on one `ExchangeStream`).
#[derive(Debug)]
pub struct PreparedExchange {
    payment: Payment,
    request: wire::ExchangeRequest,
    vendor: VendorName,
    value: Amount,
}

impl PreparedExchange {
    /// Prepares the exchange of `broker_scrip` for `value` of `vendor`'s
    /// scrip.
    pub fn new(
        broker_scrip: &Scrip,
        broker_secret: &CustomerSecret,
        vendor: &VendorName,
        value: Amount,
    ) -> Result<PreparedExchange, ClientError> {
        let order = ExchangeRequest {
            vendor: vendor.clone(),
            value,
        }
        .encode();
        let payment = pay_broker(broker_scrip, broker_secret, &order)?;
        let request = wire::ExchangeRequest {
            broker_scrip: Some(scrip_to_wire(broker_scrip)),
            request: payment.request.clone(),
            request_stamp: stamp_bytes(&payment),
        };
        Ok(PreparedExchange {
            payment,
            request,
            vendor: vendor.clone(),
            value,
        })
    }

    /// The request to send.
    pub fn request(&self) -> &wire::ExchangeRequest {
        &self.request
    }

    /// Checks the broker's reply (reply stamp, change, the vendor scrip and
    /// its sealed secret) and opens it.
    pub fn check(
        &self,
        broker_secret: &CustomerSecret,
        reply: &wire::ExchangeReply,
    ) -> Result<Exchanged, ClientError> {
        let broker_scrip = &self.payment.scrip;
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
        checked.open(&self.payment, broker_secret)?;
        let vendor_secret = exchange::open_customer_secret(
            broker_scrip.suite(),
            broker_secret,
            &reply.sealed_customer_secret,
            vendor_scrip.suite(),
        )?;

        let body = vendor_scrip.body();
        if body.vendor != self.vendor || body.value != self.value {
            return Err(ClientError::BadReply {
                call: "Exchange",
                detail: format!(
                    "carries scrip worth {} for {}, not {} for {}",
                    body.value, body.vendor, self.value, self.vendor
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
}

/// A refund of broker scrip into an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refunded {
    /// The account credited.
    pub account_id: u64,
    /// The value credited: the scrip's whole value.
    pub credited: Amount,
    /// The account's balance right after the refund.
    pub balance: Amount,
}

/// Turns unspent `broker_scrip` back into balance of account `account_id`,
/// which must be of the scrip's shard (the account the scrip was bought
/// from always is). A secure-variant payment to the broker, so the reply
/// stamp proves the refund is the broker's answer; repeating the call
/// after a lost reply gets the same reply and credits nothing more.
pub async fn refund(
    client: &mut BrokerServiceClient<Channel>,
    broker_scrip: &Scrip,
    broker_secret: &CustomerSecret,
    account_id: u64,
) -> Result<Refunded, ClientError> {
    let order = millicent_core::broker::RefundRequest { account_id }.encode();
    let payment = pay_broker(broker_scrip, broker_secret, &order)?;
    let request = wire::RefundRequest {
        broker_scrip: Some(scrip_to_wire(broker_scrip)),
        request: payment.request.clone(),
        request_stamp: stamp_bytes(&payment),
    };
    let reply = routed(client, |mut client| {
        let request = request.clone();
        async move { client.refund(request).await }
    })
    .await?;

    let goods =
        millicent_core::broker::refund_goods(reply.account_id, reply.credited, reply.balance);
    let checked = PaymentReply {
        goods: goods.to_vec(),
        change: None,
        reply_stamp: optional_stamp(broker_scrip.suite(), "reply stamp", &reply.reply_stamp)?,
        price: broker_scrip.value(),
    };
    checked.open(&payment, broker_secret)?;
    if reply.account_id != account_id || reply.credited != broker_scrip.value().units() {
        return Err(ClientError::BadReply {
            call: "Refund",
            detail: format!(
                "credits {} to account {}, not {} to account {account_id}",
                reply.credited,
                reply.account_id,
                broker_scrip.value()
            ),
        });
    }
    Ok(Refunded {
        account_id,
        credited: Amount::new(reply.credited),
        balance: Amount::new(reply.balance),
    })
}

/// Fresh vendor scrip for expired scrip.
#[derive(Debug)]
pub struct Renewed {
    /// The fresh scrip, of the same vendor and value.
    pub vendor_scrip: Scrip,
    /// Its customer secret.
    pub vendor_secret: CustomerSecret,
}

/// Exchanges `expired` vendor scrip, which the broker sold and which
/// expired unspent within the broker's grace period, for fresh scrip of the
/// same value. `shard` is the shard of the broker scrip that bought it (the
/// top byte of that scrip's series); `client` may be connected to any node
/// of the broker. Repeating the call after a lost reply gets the same scrip.
pub async fn renew_vendor_scrip(
    client: &mut BrokerServiceClient<Channel>,
    shard: u8,
    expired: &Scrip,
    secret: &CustomerSecret,
) -> Result<Renewed, ClientError> {
    let stamp = payment::request_stamp(secret, expired, millicent_core::broker::RENEWAL_REQUEST);
    let request = wire::RenewRequest {
        shard: u32::from(shard),
        vendor_scrip: Some(scrip_to_wire(expired)),
        request_stamp: stamp.as_bytes().to_vec(),
    };
    let reply = routed(client, |mut client| {
        let request = request.clone();
        async move { client.renew_vendor_scrip(request).await }
    })
    .await?;

    let fresh = scrip_from_wire(required(
        reply.vendor_scrip.as_ref(),
        "RenewVendorScrip",
        "vendor scrip",
    )?)?;
    let goods = exchange::exchange_goods(&fresh, &reply.sealed_customer_secret);
    let expected = payment::reply_stamp(expired.suite(), secret, &stamp, None, &goods);
    if !expected.ct_eq_bytes(&reply.reply_stamp) {
        return Err(millicent_core::Error::BadReplyStamp.into());
    }
    let vendor_secret = exchange::open_customer_secret(
        expired.suite(),
        secret,
        &reply.sealed_customer_secret,
        fresh.suite(),
    )?;
    let (old, new) = (expired.body(), fresh.body());
    if new.vendor != old.vendor || new.value != old.value {
        return Err(ClientError::BadReply {
            call: "RenewVendorScrip",
            detail: format!(
                "carries scrip worth {} for {}, not {} for {}",
                new.value, new.vendor, old.value, old.vendor
            ),
        });
    }
    Ok(Renewed {
        vendor_scrip: fresh,
        vendor_secret,
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
    fn the_cluster_map_routes_accounts_and_scrip_by_their_shard() {
        let map = ClusterMap {
            nodes: vec![
                ShardOwner {
                    node: "b1".into(),
                    url: "http://a:1".into(),
                    shards: vec![0, 1],
                },
                ShardOwner {
                    node: "b2".into(),
                    url: "http://b:1".into(),
                    shards: vec![2],
                },
            ],
        };
        let account = millicent_core::broker::account_id(2, 5).unwrap();
        assert_eq!(map.url_of_account(account), Some("http://b:1"));
        assert_eq!(map.url_of_account(7), Some("http://a:1"));
        assert_eq!(map.url_of_shard(3), None);
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
        assert_eq!(
            normalize_url("HTTPS://b.example:7100").unwrap(),
            "https://b.example:7100"
        );
        for url in ["ftp://b.example", "grpcs://b.example:7100"] {
            match normalize_url(url) {
                Err(error @ ClientError::UnsupportedUrl { .. }) => {
                    assert!(
                        error.to_string().contains("only http:// and https://"),
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
