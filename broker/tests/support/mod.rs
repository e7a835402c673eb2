//! What the broker's end-to-end tests share: a stand-in vendor node that
//! grants licences, sells blocks and reports redemptions from a known key
//! ring, and a minimal wallet that talks to the broker over real gRPC.

// Each test binary uses a different part of this module; in test code a
// panic is a failed test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use millicent_broker::{BrokerConfig, VendorConfig};
use millicent_core::account::account_mac;
use millicent_core::exchange::{ExchangeRequest, exchange_goods, open_customer_secret};
use millicent_core::{
    Amount, CustId, CustomerKey, CustomerSecret, KeyRing, Mac, MasterSecret, Payment, PaymentReply,
    Properties, Scrip, ScripBody, ScripId, SealPurpose, SeriesKey, Suite, Variant, VendorName,
};
use millicent_proto as proto;
use millicent_proto::broker_service_client::BrokerServiceClient;
use millicent_proto::vendor_service_server::{VendorService, VendorServiceServer};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

pub(crate) const VENDOR: &str = "news.example";
pub(crate) const BROKER: &str = "broker.local";
pub(crate) const OPERATOR_TOKEN: &str = "operator-token";
pub(crate) const LICENCE_TOKEN: &str = "licence-token";
pub(crate) const LICENCE_SERIES: u32 = 7;
pub(crate) const LICENCE_SELECTOR: u16 = 3;

pub(crate) type Client = BrokerServiceClient<Channel>;

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The `millicent-reason` of a refusal.
pub(crate) fn reason(status: &Status) -> &str {
    status
        .metadata()
        .get("millicent-reason")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}

/// Asserts that `result` is a refusal with `code` and `reason`.
#[track_caller]
pub(crate) fn assert_refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, why: &str) {
    let status = result.expect_err("the call should have been refused");
    assert_eq!(
        (status.code(), reason(&status)),
        (code, why),
        "{}",
        status.message()
    );
}

// ---------------------------------------------------------------------------
// A stand-in vendor node
// ---------------------------------------------------------------------------

/// Series the stand-in node grants licences in: 7, then 8, ...
pub(crate) const LICENCE_SERIES_COUNT: u32 = 16;
/// Series of the blocks the stand-in node sells: 100, then 101, ...
pub(crate) const BLOCK_SERIES: u32 = 100;
/// The customer selector of the pieces of every block.
pub(crate) const BLOCK_SELECTOR: u16 = 9;

/// A stand-in for a vendor node: grants licences for `VENDOR` in series
/// 7, 8, ..., sells blocks in series 100, 101, ..., and reports as spent
/// whatever the test marks spent.
pub(crate) struct TestVendor {
    pub(crate) addr: SocketAddr,
    /// The vendor's own keys: what checks the scrip the broker mints.
    pub(crate) ring: KeyRing,
    pub(crate) grants: Arc<AtomicUsize>,
    pub(crate) available: Arc<AtomicBool>,
    /// How many ID#s each licence covers (0: the whole series).
    pub(crate) id_limit: Arc<AtomicU64>,
    /// What the node reports spent.
    pub(crate) spent: Arc<Mutex<HashSet<ScripId>>>,
    /// Seconds from a grant to the expiry of its licence or block.
    pub(crate) lifetime: Arc<AtomicU64>,
    blocks: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

struct StandInNode {
    ring: KeyRing,
    lifetime: Arc<AtomicU64>,
    grants: Arc<AtomicUsize>,
    blocks: Arc<AtomicUsize>,
    available: Arc<AtomicBool>,
    id_limit: Arc<AtomicU64>,
    spent: Arc<Mutex<HashSet<ScripId>>>,
}

impl StandInNode {
    fn check(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        vendor: &str,
        broker: &str,
    ) -> Result<(), Status> {
        if !self.available.load(Ordering::SeqCst) {
            return Err(Status::unavailable("the test node is down"));
        }
        let authorized = metadata
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            == Some(&format!("Bearer {LICENCE_TOKEN}"));
        if !authorized {
            return Err(Status::unauthenticated("wrong licence token"));
        }
        if vendor != VENDOR || broker != BROKER {
            return Err(Status::not_found("no such vendor or broker"));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl VendorService for StandInNode {
    type PayStreamStream = tonic::codegen::BoxStream<proto::PayBatchReply>;

    async fn pay_stream(
        &self,
        _request: Request<tonic::Streaming<proto::PayBatch>>,
    ) -> Result<Response<Self::PayStreamStream>, Status> {
        Err(Status::unimplemented("this test node takes no payments"))
    }

    async fn pay(
        &self,
        _request: Request<proto::PayRequest>,
    ) -> Result<Response<proto::PayReply>, Status> {
        Err(Status::unimplemented("this test node takes no payments"))
    }

    async fn get_prices(
        &self,
        _request: Request<proto::GetPricesRequest>,
    ) -> Result<Response<proto::PriceList>, Status> {
        Err(Status::unimplemented("this test node sells nothing"))
    }

    async fn grant_licence(
        &self,
        request: Request<proto::GrantLicenceRequest>,
    ) -> Result<Response<proto::Licence>, Status> {
        let (metadata, _, request) = request.into_parts();
        self.check(&metadata, &request.vendor, &request.broker)?;
        let granted = self.grants.fetch_add(1, Ordering::SeqCst) as u32;
        let series = LICENCE_SERIES + granted % LICENCE_SERIES_COUNT;
        let key = self.ring.series(series).unwrap();
        let customer = self.ring.customer_key(LICENCE_SELECTOR).unwrap();
        Ok(Response::new(proto::Licence {
            vendor: VENDOR.to_owned(),
            suite: u32::from(Suite::Classic.id()),
            series,
            expires_at: now() + self.lifetime.load(Ordering::SeqCst),
            master_scrip_secret: key.secret.expose_bytes().to_vec(),
            customer_selector: u32::from(LICENCE_SELECTOR),
            master_customer_secret: customer.secret.expose_bytes().to_vec(),
            id_limit: self.id_limit.load(Ordering::SeqCst),
        }))
    }

    async fn sell_scrip_block(
        &self,
        request: Request<proto::SellScripBlockRequest>,
    ) -> Result<Response<proto::ScripBlock>, Status> {
        let (metadata, _, request) = request.into_parts();
        self.check(&metadata, &request.vendor, &request.broker)?;
        let series = BLOCK_SERIES + self.blocks.fetch_add(1, Ordering::SeqCst) as u32;
        let expires_at = now() + self.lifetime.load(Ordering::SeqCst);
        let pieces = (0..request.count)
            .map(|seq| {
                let cust_id =
                    CustId::new(BLOCK_SELECTOR, u64::from(series) << 16 | u64::from(seq)).unwrap();
                let scrip = self
                    .ring
                    .mint(ScripBody {
                        suite: Suite::Classic,
                        vendor: VendorName::new(VENDOR).unwrap(),
                        value: Amount::new(request.value),
                        id: ScripId::new(series, seq),
                        cust_id,
                        expires_at,
                        properties: Properties::default(),
                    })
                    .unwrap();
                let secret = self.ring.customer_secret(Suite::Classic, cust_id).unwrap();
                proto::BlockPiece {
                    scrip: Some(scrip_to_wire(&scrip)),
                    customer_secret: secret.expose_bytes().to_vec(),
                }
            })
            .collect();
        Ok(Response::new(proto::ScripBlock {
            vendor: VENDOR.to_owned(),
            series,
            expires_at,
            pieces,
        }))
    }

    async fn report_redemptions(
        &self,
        request: Request<proto::RedemptionsRequest>,
    ) -> Result<Response<proto::RedemptionReport>, Status> {
        let (metadata, _, request) = request.into_parts();
        self.check(&metadata, &request.vendor, &request.broker)?;
        let spent = self.spent.lock().unwrap();
        let series = request
            .series
            .iter()
            .map(|query| {
                let mut bits = Vec::new();
                for id in spent.iter().filter(|id| id.series() == query.series) {
                    if id.seq() < query.first_seq {
                        continue;
                    }
                    let offset = (id.seq() - query.first_seq) as usize;
                    if bits.len() <= offset / 8 {
                        bits.resize(offset / 8 + 1, 0);
                    }
                    bits[offset / 8] |= 1 << (offset % 8);
                }
                proto::SeriesRedemptions {
                    series: query.series,
                    known: true,
                    first_seq: query.first_seq,
                    spent: bits,
                    more: false,
                }
            })
            .collect();
        Ok(Response::new(proto::RedemptionReport {
            vendor: VENDOR.to_owned(),
            as_of: now(),
            series,
        }))
    }
}

impl TestVendor {
    pub(crate) async fn start() -> TestVendor {
        // The node's own keys outlive every licence; what a licence or block
        // is worth is set by `lifetime`.
        let expires_at = now() + 10 * 365 * 24 * 60 * 60;
        let mut ring = KeyRing::new(VendorName::new(VENDOR).unwrap());
        let series = (0..LICENCE_SERIES_COUNT)
            .map(|n| LICENCE_SERIES + n)
            .chain((0..LICENCE_SERIES_COUNT).map(|n| BLOCK_SERIES + n));
        for series in series {
            ring.add_series(SeriesKey {
                series,
                suite: Suite::Classic,
                expires_at,
                secret: MasterSecret::new(Suite::Classic, [series as u8; 32]),
            });
        }
        for selector in [LICENCE_SELECTOR, BLOCK_SELECTOR] {
            ring.add_customer_key(CustomerKey {
                selector,
                suite: Suite::Classic,
                secret: MasterSecret::new(Suite::Classic, [0x20 + selector as u8; 32]),
            });
        }

        let grants = Arc::new(AtomicUsize::new(0));
        let blocks = Arc::new(AtomicUsize::new(0));
        let available = Arc::new(AtomicBool::new(true));
        let id_limit = Arc::new(AtomicU64::new(0));
        let spent = Arc::new(Mutex::new(HashSet::new()));
        let lifetime = Arc::new(AtomicU64::new(3 * 24 * 60 * 60));
        let node = StandInNode {
            ring: ring.clone(),
            lifetime: lifetime.clone(),
            grants: grants.clone(),
            blocks: blocks.clone(),
            available: available.clone(),
            id_limit: id_limit.clone(),
            spent: spent.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(VendorServiceServer::new(node))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async move {
                        let _ = stopped.await;
                    },
                ),
        );
        TestVendor {
            addr,
            ring,
            grants,
            available,
            id_limit,
            spent,
            lifetime,
            blocks,
            stop: Some(stop),
        }
    }

    pub(crate) fn set_available(&self, available: bool) {
        self.available.store(available, Ordering::SeqCst);
    }

    pub(crate) fn grants(&self) -> usize {
        self.grants.load(Ordering::SeqCst)
    }

    pub(crate) fn blocks_sold(&self) -> usize {
        self.blocks.load(Ordering::SeqCst)
    }

    /// Makes the node report `scrip` as spent.
    pub(crate) fn mark_spent(&self, scrip: &Scrip) {
        self.spent.lock().unwrap().insert(scrip.id());
    }
}

impl Drop for TestVendor {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A broker configuration for tests: a free port, its store under `dir`,
/// and `vendor` as its only vendor.
/// Writes the configuration file of a `millicent-broker` binary in `dir`:
/// two shards, the classic suite, its store in `dir/broker`, selling the
/// stand-in vendor's scrip. Returns the file's path.
pub(crate) fn binary_config(
    dir: &Path,
    listen: SocketAddr,
    metrics: SocketAddr,
    vendor: &TestVendor,
) -> PathBuf {
    let quoted = |text: &str| toml::Value::String(text.to_owned()).to_string();
    let text = format!(
        r#"
name = "{BROKER}"
node = "broker-1"
shards = [0, 1]
suite = "classic"
listen = "{listen}"
metrics_listen = "{metrics}"
data_dir = {data_dir}
operator_token = {operator}

[[vendors]]
name = "{VENDOR}"
node = "http://{vendor}"
licence_token = {licence}
"#,
        data_dir = quoted(dir.join("broker").to_str().unwrap()),
        operator = quoted(OPERATOR_TOKEN),
        vendor = vendor.addr,
        licence = quoted(LICENCE_TOKEN),
    );
    let path = dir.join("broker.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) fn config(dir: &Path, vendor: Option<&TestVendor>) -> BrokerConfig {
    BrokerConfig {
        name: BROKER.to_owned(),
        // The classic suite, like the stand-in vendor's licences; both
        // suites run end to end in bench/tests/end_to_end.rs.
        suite: Suite::Classic.name().to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("broker"),
        operator_token: Some(OPERATOR_TOKEN.to_owned()),
        vendors: vendor
            .map(|vendor| {
                vec![VendorConfig {
                    name: VENDOR.to_owned(),
                    node: format!("http://{}", vendor.addr),
                    licence_token: Some(LICENCE_TOKEN.to_owned()),
                    ..VendorConfig::default()
                }]
            })
            .unwrap_or_default(),
        ..BrokerConfig::default()
    }
}

pub(crate) async fn start(
    dir: &Path,
    vendor: Option<&TestVendor>,
) -> (millicent_broker::RunningBroker, Client) {
    let broker = millicent_broker::RunningBroker::start(config(dir, vendor))
        .await
        .unwrap();
    let client = connect(broker.addr()).await;
    (broker, client)
}

/// An account holding `amount` of broker scrip in one piece, and a balance
/// of `left`.
pub(crate) async fn funded(client: &mut Client, amount: u64, left: u64) -> (Account, Held) {
    let account = open_account(client).await;
    credit(client, account.id, amount + left, "funding").await;
    let held = buy(client, &account, amount).await.unwrap();
    (account, held)
}

pub(crate) async fn connect(addr: SocketAddr) -> Client {
    BrokerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------
// A minimal wallet
// ---------------------------------------------------------------------------

/// An account and its key.
#[derive(Clone)]
pub(crate) struct Account {
    pub(crate) id: u64,
    pub(crate) key: Vec<u8>,
}

/// Scrip in hand, with its customer secret.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub(crate) scrip: Scrip,
    pub(crate) secret: CustomerSecret,
}

pub(crate) async fn open_account(client: &mut Client) -> Account {
    let reply = client
        .open_account(proto::OpenAccountRequest {})
        .await
        .unwrap()
        .into_inner();
    Account {
        id: reply.account_id,
        key: reply.account_key,
    }
}

pub(crate) async fn credit_with(
    client: &mut Client,
    token: Option<&str>,
    account_id: u64,
    amount: u64,
    reference: &str,
) -> Result<u64, Status> {
    let mut request = Request::new(proto::CreditRequest {
        account_id,
        amount,
        reference: reference.to_owned(),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    Ok(client.credit(request).await?.into_inner().balance)
}

pub(crate) async fn credit(
    client: &mut Client,
    account_id: u64,
    amount: u64,
    reference: &str,
) -> u64 {
    credit_with(client, Some(OPERATOR_TOKEN), account_id, amount, reference)
        .await
        .unwrap()
}

pub(crate) fn random_nonce() -> [u8; 16] {
    let mut nonce = [0u8; 16];
    rand::fill(&mut nonce[..]);
    nonce
}

pub(crate) fn auth(
    account: &Account,
    method: &str,
    params: &[u8],
    timestamp_ms: u64,
    nonce: [u8; 16],
) -> proto::AccountAuth {
    let mac = account_mac(
        Suite::Classic,
        &account.key,
        method,
        account.id,
        timestamp_ms,
        &nonce,
        params,
    );
    proto::AccountAuth {
        account_id: account.id,
        timestamp_ms,
        nonce: nonce.to_vec(),
        mac: mac.as_bytes().to_vec(),
    }
}

pub(crate) fn buy_request(
    account: &Account,
    amount: u64,
    nonce: [u8; 16],
) -> proto::BuyBrokerScripRequest {
    proto::BuyBrokerScripRequest {
        auth: Some(auth(
            account,
            "BuyBrokerScrip",
            &amount.to_be_bytes(),
            now_ms(),
            nonce,
        )),
        amount,
    }
}

/// The scrip and customer secret in a purchase reply.
pub(crate) fn open_purchase(account: &Account, reply: &proto::BuyBrokerScripReply) -> Held {
    let scrip = reply.scrip.as_ref().unwrap();
    let scrip = Scrip::decode(&scrip.body, &scrip.certificate).unwrap();
    let secret = scrip
        .suite()
        .open(
            &account.key,
            SealPurpose::BrokerScripSecret,
            &reply.sealed_customer_secret,
        )
        .unwrap();
    Held {
        secret: CustomerSecret::from_slice(scrip.suite(), &secret).unwrap(),
        scrip,
    }
}

pub(crate) async fn buy(
    client: &mut Client,
    account: &Account,
    amount: u64,
) -> Result<Held, Status> {
    let reply = client
        .buy_broker_scrip(buy_request(account, amount, random_nonce()))
        .await?
        .into_inner();
    Ok(open_purchase(account, &reply))
}

pub(crate) async fn statement(client: &mut Client, account: &Account) -> proto::AccountStatement {
    let request = proto::GetAccountRequest {
        auth: Some(auth(account, "GetAccount", &[], now_ms(), random_nonce())),
    };
    client.get_account(request).await.unwrap().into_inner()
}

pub(crate) async fn balance(client: &mut Client, account: &Account) -> u64 {
    statement(client, account).await.balance
}

/// A secure-variant payment in `held` to the broker, with `request`.
fn pay_broker(held: &Held, request: &[u8]) -> Payment {
    Payment::prepare(
        held.scrip.clone(),
        &held.secret,
        Variant::Secure,
        request,
        &[],
    )
    .unwrap()
}

/// An exchange of `held` for `value` of `vendor`'s scrip, as sent.
pub(crate) fn exchange_request(
    held: &Held,
    vendor: &str,
    value: u64,
) -> (proto::ExchangeRequest, Payment) {
    let request = ExchangeRequest {
        vendor: VendorName::new(vendor).unwrap(),
        value: Amount::new(value),
    }
    .encode();
    let payment = pay_broker(held, &request);
    let wire = proto::ExchangeRequest {
        broker_scrip: Some(scrip_to_wire(&held.scrip)),
        request: payment.request.clone(),
        request_stamp: payment.request_stamp.unwrap().as_bytes().to_vec(),
    };
    (wire, payment)
}

pub(crate) fn scrip_to_wire(scrip: &Scrip) -> proto::Scrip {
    proto::Scrip {
        body: scrip.encoded_body().to_vec(),
        certificate: scrip.certificate().as_bytes().to_vec(),
    }
}

/// What an exchange gave: vendor scrip in hand and the change.
pub(crate) struct Exchanged {
    pub(crate) vendor_scrip: Held,
    pub(crate) change: Option<Held>,
    pub(crate) price: u64,
}

/// Checks an exchange reply as a wallet would (reply stamp, change, sealed
/// secret) and as the vendor would (certificate, customer secret).
pub(crate) fn check_exchange_reply(
    held: &Held,
    payment: &Payment,
    reply: &proto::ExchangeReply,
    vendor: &TestVendor,
) -> Exchanged {
    let wire = reply.vendor_scrip.as_ref().unwrap();
    let vendor_scrip = Scrip::decode(&wire.body, &wire.certificate).unwrap();
    let change = reply
        .change
        .as_ref()
        .map(|change| Scrip::decode(&change.body, &change.certificate).unwrap());
    let suite = held.scrip.suite();
    let payment_reply = PaymentReply {
        goods: exchange_goods(&vendor_scrip, &reply.sealed_customer_secret),
        change: change.clone(),
        reply_stamp: Some(Mac::parse(suite, "reply stamp", &reply.reply_stamp).unwrap()),
        price: Amount::new(reply.price),
    };
    payment_reply.open(payment, &held.secret).unwrap();

    let vendor_secret = open_customer_secret(
        suite,
        &held.secret,
        &reply.sealed_customer_secret,
        vendor_scrip.suite(),
    )
    .unwrap();
    assert_eq!(vendor.ring.verify(&vendor_scrip, now()), Ok(()));
    let expected = vendor
        .ring
        .customer_secret(vendor_scrip.suite(), vendor_scrip.body().cust_id)
        .unwrap();
    assert_eq!(vendor_secret, expected);

    Exchanged {
        vendor_scrip: Held {
            scrip: vendor_scrip,
            secret: vendor_secret,
        },
        change: change.map(|scrip| Held {
            scrip,
            secret: held.secret.clone(),
        }),
        price: reply.price,
    }
}

// ---------------------------------------------------------------------------
// Operator calls and audits
// ---------------------------------------------------------------------------

/// `message` with the operator's bearer token.
pub(crate) fn operator<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {OPERATOR_TOKEN}").parse().unwrap(),
    );
    request
}

/// Asks the running broker to audit itself and asserts its books balance.
pub(crate) async fn assert_live_audit_clean(client: &mut Client) -> proto::AuditReport {
    let report = client
        .audit(operator(proto::AuditRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(report.clean, "live audit: {}", report.discrepancy);
    report
}

/// Audits the stores of a stopped broker under `dir` and asserts its books
/// balance.
pub(crate) async fn assert_audit_clean(dir: &Path) -> millicent_broker::audit::AuditReport {
    let report = millicent_broker::audit::audit_data_dir(&dir.join("broker"))
        .await
        .unwrap();
    assert!(report.is_clean(), "audit: {:?}", report.discrepancy);
    report
}

/// The settlement statement of shard 0, after fresh redemption reports.
pub(crate) async fn statement_of(client: &mut Client) -> proto::ShardSettlement {
    let settlement = client
        .get_settlement(operator(proto::GetSettlementRequest { refresh: true }))
        .await
        .unwrap()
        .into_inner();
    settlement.shards.into_iter().next().unwrap()
}

/// A refund of `held` into `account_id`, as sent.
pub(crate) fn refund_request(held: &Held, account_id: u64) -> proto::RefundRequest {
    let request = millicent_core::broker::RefundRequest { account_id }.encode();
    let payment = pay_broker(held, &request);
    proto::RefundRequest {
        broker_scrip: Some(scrip_to_wire(&held.scrip)),
        request: payment.request,
        request_stamp: payment.request_stamp.unwrap().as_bytes().to_vec(),
    }
}

/// A renewal of the expired vendor scrip `held`, bought in `shard`.
pub(crate) fn renew_request(shard: u8, held: &Held) -> proto::RenewRequest {
    let stamp = millicent_core::payment::request_stamp(
        &held.secret,
        &held.scrip,
        millicent_core::broker::RENEWAL_REQUEST,
    );
    proto::RenewRequest {
        shard: u32::from(shard),
        vendor_scrip: Some(scrip_to_wire(&held.scrip)),
        request_stamp: stamp.as_bytes().to_vec(),
    }
}

/// Opens a renewal reply as a wallet would: the reply stamp under the
/// expired scrip's customer secret, and the fresh scrip's secret sealed
/// under it.
pub(crate) fn open_renewal(
    old: &Held,
    request: &proto::RenewRequest,
    reply: &proto::RenewReply,
) -> Held {
    let wire = reply.vendor_scrip.as_ref().unwrap();
    let fresh = Scrip::decode(&wire.body, &wire.certificate).unwrap();
    let stamp = Mac::parse(old.scrip.suite(), "stamp", &request.request_stamp).unwrap();
    let goods = exchange_goods(&fresh, &reply.sealed_customer_secret);
    let expected =
        millicent_core::payment::reply_stamp(old.scrip.suite(), &old.secret, &stamp, None, &goods);
    assert!(
        expected.ct_eq_bytes(&reply.reply_stamp),
        "bad renewal reply stamp"
    );
    let secret = open_customer_secret(
        old.scrip.suite(),
        &old.secret,
        &reply.sealed_customer_secret,
        fresh.suite(),
    )
    .unwrap();
    Held {
        scrip: fresh,
        secret,
    }
}
