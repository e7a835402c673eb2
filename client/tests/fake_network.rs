//! The wallet against an in-process broker and vendor node.
//!
//! The fakes here implement the gRPC services with `millicent-core` and a
//! few maps, just enough of each server to exercise every client path:
//! joining, buying, exchanging, the three variants, refusals, and replies
//! lost after the server acted. They are not the real services, whose own
//! behaviour is tested end to end elsewhere.

// The fakes are test code too: a failed unwrap in them is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use millicent_client::protocol::{self, connect_broker, connect_vendor};
use millicent_client::wallet::{HistoryKind, Outcome, PayOrder, Wallet};
use millicent_client::{ClientError, REASON_METADATA_KEY, scrip_to_wire};
use millicent_core::account::{account_key, account_mac};
use millicent_core::broker::{RefundRequest, refund_goods};
use millicent_core::exchange::{ExchangeRequest, exchange_goods, seal_customer_secret};
use millicent_core::payment::ChangeSlot;
use millicent_core::scrip::{CustId, Properties, ScripBody};
use millicent_core::suite::Mac;
use millicent_core::{
    AccountKey, Amount, CustomerKey, KeyRing, MasterSecret, Payment, Scrip, ScripId, SealPurpose,
    SeriesKey, Suite, Variant, VendorName, VerifiedPayment,
};
use millicent_proto as wire;
use millicent_proto::broker_service_server::{BrokerService, BrokerServiceServer};
use millicent_proto::vendor_service_server::{VendorService, VendorServiceServer};
use tonic::metadata::MetadataValue;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

const VENDOR: &str = "news.example";
const BROKER: &str = "broker.example";
const OPERATOR_TOKEN: &str = "operator-token";
const ARTICLE_PRICE: u64 = 30;
const EXCHANGE_FEE: u64 = 2;
const GOODS: &[u8] = b"the article";

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn ring(vendor: &str, scrip_secret: u8, customer_secret: u8) -> KeyRing {
    let mut ring = KeyRing::new(VendorName::new(vendor).unwrap());
    ring.add_series(SeriesKey {
        series: 1,
        suite: Suite::Classic,
        expires_at: now_s() + 3600,
        secret: MasterSecret::new(Suite::Classic, [scrip_secret; 32]),
    });
    ring.add_customer_key(CustomerKey {
        selector: 1,
        suite: Suite::Classic,
        secret: MasterSecret::new(Suite::Classic, [customer_secret; 32]),
    });
    ring
}

fn vendor_ring() -> KeyRing {
    ring(VENDOR, 0x11, 0x22)
}

fn refuse(code: Code, reason: &'static str) -> Status {
    let mut status = Status::new(code, format!("refused: {reason}"));
    status
        .metadata_mut()
        .insert(REASON_METADATA_KEY, MetadataValue::from_static(reason));
    status
}

fn core_refusal(error: millicent_core::Error) -> Status {
    let mut status = Status::new(Code::FailedPrecondition, error.to_string());
    status.metadata_mut().insert(
        REASON_METADATA_KEY,
        MetadataValue::try_from(error.reason()).unwrap(),
    );
    status
}

fn decode_scrip(scrip: Option<wire::Scrip>) -> Result<Scrip, Status> {
    let scrip = scrip.ok_or_else(|| refuse(Code::InvalidArgument, "malformed"))?;
    Scrip::decode(&scrip.body, &scrip.certificate).map_err(core_refusal)
}

fn stamp(suite: Suite, bytes: &[u8]) -> Result<Option<Mac>, Status> {
    if bytes.is_empty() {
        return Ok(None);
    }
    Mac::parse(suite, "request stamp", bytes)
        .map(Some)
        .map_err(core_refusal)
}

fn stamp_bytes(stamp: Option<Mac>) -> Vec<u8> {
    stamp.map(|s| s.as_bytes().to_vec()).unwrap_or_default()
}

/// A vendor node selling one article, remembering spent scrip and the
/// reply to each, so a retried payment gets the same reply.
struct FakeVendor {
    ring: KeyRing,
    state: Mutex<VendorState>,
    lose_next_reply: AtomicBool,
    tamper_next_reply: AtomicBool,
    refuse_next_payment: Mutex<Option<&'static str>>,
    fail_prices: AtomicBool,
    /// Every `Pay` request received, as received.
    received: Mutex<Vec<wire::PayRequest>>,
}

struct VendorState {
    next_seq: u32,
    spent: HashMap<u64, (Option<Mac>, wire::PayReply)>,
}

impl FakeVendor {
    fn new() -> FakeVendor {
        FakeVendor {
            ring: vendor_ring(),
            state: Mutex::new(VendorState {
                next_seq: 1_000_000,
                spent: HashMap::new(),
            }),
            lose_next_reply: AtomicBool::new(false),
            tamper_next_reply: AtomicBool::new(false),
            refuse_next_payment: Mutex::new(None),
            fail_prices: AtomicBool::new(false),
            received: Mutex::new(Vec::new()),
        }
    }
}

#[tonic::async_trait]
impl VendorService for FakeVendor {
    type PayStreamStream = tonic::codegen::BoxStream<wire::PayBatchReply>;

    async fn pay_stream(
        &self,
        _request: Request<tonic::Streaming<wire::PayBatch>>,
    ) -> Result<Response<Self::PayStreamStream>, Status> {
        Err(Status::unimplemented("the wallet does not stream payments"))
    }

    async fn sell_scrip_block(
        &self,
        _request: Request<wire::SellScripBlockRequest>,
    ) -> Result<Response<wire::ScripBlock>, Status> {
        Err(Status::unimplemented("the wallet buys no blocks"))
    }

    async fn report_redemptions(
        &self,
        _request: Request<wire::RedemptionsRequest>,
    ) -> Result<Response<wire::RedemptionReport>, Status> {
        Err(Status::unimplemented("the wallet asks for no reports"))
    }

    async fn pay(
        &self,
        request: Request<wire::PayRequest>,
    ) -> Result<Response<wire::PayReply>, Status> {
        if let Some(reason) = self.refuse_next_payment.lock().unwrap().take() {
            return Err(refuse(Code::PermissionDenied, reason));
        }
        let request = request.into_inner();
        self.received.lock().unwrap().push(request.clone());
        let scrip = decode_scrip(request.scrip)?;
        let variant = match request.variant {
            1 => Variant::Clear,
            2 => Variant::Secure,
            3 => Variant::Private,
            _ => return Err(refuse(Code::InvalidArgument, "malformed")),
        };
        let request_stamp = stamp(scrip.suite(), &request.request_stamp)?;
        let payment = Payment {
            scrip,
            variant,
            request: request.request,
            request_stamp,
        };
        let verified = payment.verify(&self.ring, now_s()).map_err(core_refusal)?;
        let id = verified.scrip().id().as_u64();

        let mut state = self.state.lock().unwrap();
        if let Some((seen, reply)) = state.spent.get(&id) {
            if seen.is_some() && seen.as_ref() == verified.request_stamp() {
                return Ok(Response::new(reply.clone()));
            }
            return Err(refuse(Code::AlreadyExists, "double_spend"));
        }
        if verified.request() != b"article-1" {
            return Err(refuse(Code::NotFound, "unknown_item"));
        }
        let slot = ChangeSlot {
            id: ScripId::new(1, state.next_seq),
            expires_at: verified.scrip().body().expires_at,
        };
        state.next_seq += 1;
        let reply = verified
            .reply(
                &self.ring,
                Amount::new(ARTICLE_PRICE),
                Some(slot),
                GOODS,
                &[7; 8],
            )
            .map_err(core_refusal)?;
        let mut wire_reply = wire::PayReply {
            goods: reply.goods,
            change: reply.change.as_ref().map(scrip_to_wire),
            reply_stamp: stamp_bytes(reply.reply_stamp),
            price: ARTICLE_PRICE,
        };
        state.spent.insert(id, (request_stamp, wire_reply.clone()));

        if self.lose_next_reply.swap(false, Ordering::SeqCst) {
            return Err(Status::unavailable("connection reset"));
        }
        if self.tamper_next_reply.swap(false, Ordering::SeqCst) {
            wire_reply.goods = b"something else".to_vec();
        }
        Ok(Response::new(wire_reply))
    }

    async fn get_prices(
        &self,
        _: Request<wire::GetPricesRequest>,
    ) -> Result<Response<wire::PriceList>, Status> {
        if self.fail_prices.load(Ordering::SeqCst) {
            return Err(Status::unavailable("connection reset"));
        }
        Ok(Response::new(wire::PriceList {
            vendors: vec![wire::VendorOffer {
                vendor: VENDOR.into(),
                items: vec![wire::Item {
                    name: "article-1".into(),
                    price: ARTICLE_PRICE,
                    variants: vec![1, 2, 3],
                }],
                variants: vec![1, 2, 3],
                suites: vec![1],
            }],
        }))
    }

    async fn grant_licence(
        &self,
        _: Request<wire::GrantLicenceRequest>,
    ) -> Result<Response<wire::Licence>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
}

/// A broker licensed to mint the vendor's scrip, with accounts in a map.
struct FakeBroker {
    ring: KeyRing,
    vendor_ring: KeyRing,
    master: MasterSecret,
    state: Mutex<BrokerState>,
    lose_next_reply: AtomicBool,
}

#[derive(Default)]
struct BrokerState {
    balances: HashMap<u64, u64>,
    next_seq: u32,
    buys: HashMap<Vec<u8>, wire::BuyBrokerScripReply>,
    spent: HashMap<u64, (Mac, wire::ExchangeReply)>,
    refunds: HashMap<u64, (Mac, wire::RefundReply)>,
}

impl FakeBroker {
    fn new() -> FakeBroker {
        FakeBroker {
            ring: ring(BROKER, 0x33, 0x44),
            vendor_ring: vendor_ring(),
            master: MasterSecret::new(Suite::Classic, [0x55; 32]),
            state: Mutex::new(BrokerState {
                next_seq: 1,
                ..BrokerState::default()
            }),
            lose_next_reply: AtomicBool::new(false),
        }
    }

    fn check_auth(
        &self,
        auth: Option<&wire::AccountAuth>,
        method: &str,
        params: &[u8],
    ) -> Result<(u64, AccountKey), Status> {
        let auth = auth.ok_or_else(|| refuse(Code::Unauthenticated, "unauthenticated"))?;
        let key = account_key(&self.master, auth.account_id);
        let nonce: [u8; 16] = auth.nonce.as_slice().try_into().unwrap();
        let expected = account_mac(
            Suite::Classic,
            key.expose_bytes(),
            method,
            auth.account_id,
            auth.timestamp_ms,
            &nonce,
            params,
        );
        if !expected.ct_eq_bytes(&auth.mac) {
            return Err(refuse(Code::Unauthenticated, "unauthenticated"));
        }
        Ok((auth.account_id, key))
    }

    /// Checks a secure-variant payment in broker scrip, as the exchange and
    /// refund calls carry it: the verified payment, its ID# and its stamp.
    fn verify_payment(
        &self,
        scrip: Option<wire::Scrip>,
        request: Vec<u8>,
        request_stamp: &[u8],
    ) -> Result<(VerifiedPayment, u64, Mac), Status> {
        let scrip = decode_scrip(scrip)?;
        let request_stamp = stamp(scrip.suite(), request_stamp)?;
        let payment = Payment {
            scrip,
            variant: Variant::Secure,
            request,
            request_stamp,
        };
        let verified = payment.verify(&self.ring, now_s()).map_err(core_refusal)?;
        let id = verified.scrip().id().as_u64();
        let stamp = *verified.request_stamp().unwrap();
        Ok((verified, id, stamp))
    }

    fn mint(ring: &KeyRing, value: u64, seq: u32, cust: u64) -> Scrip {
        ring.mint(ScripBody {
            suite: Suite::Classic,
            vendor: ring.vendor().clone(),
            value: Amount::new(value),
            id: ScripId::new(1, seq),
            cust_id: CustId::new(1, cust).unwrap(),
            expires_at: now_s() + 600,
            properties: Properties::default(),
        })
        .unwrap()
    }
}

#[tonic::async_trait]
impl BrokerService for FakeBroker {
    async fn open_account(
        &self,
        _: Request<wire::OpenAccountRequest>,
    ) -> Result<Response<wire::OpenAccountReply>, Status> {
        let mut state = self.state.lock().unwrap();
        let account_id = state.balances.len() as u64 + 1;
        state.balances.insert(account_id, 0);
        Ok(Response::new(wire::OpenAccountReply {
            account_id,
            account_key: account_key(&self.master, account_id)
                .expose_bytes()
                .to_vec(),
        }))
    }

    async fn credit(
        &self,
        request: Request<wire::CreditRequest>,
    ) -> Result<Response<wire::CreditReply>, Status> {
        let bearer = format!("Bearer {OPERATOR_TOKEN}");
        if request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            != Some(bearer.as_bytes())
        {
            return Err(refuse(Code::Unauthenticated, "unauthenticated"));
        }
        let request = request.into_inner();
        let mut state = self.state.lock().unwrap();
        let balance = state
            .balances
            .get_mut(&request.account_id)
            .ok_or_else(|| refuse(Code::NotFound, "unknown_account"))?;
        *balance += request.amount;
        Ok(Response::new(wire::CreditReply {
            balance: *balance,
            repeated: false,
        }))
    }

    async fn buy_broker_scrip(
        &self,
        request: Request<wire::BuyBrokerScripRequest>,
    ) -> Result<Response<wire::BuyBrokerScripReply>, Status> {
        let request = request.into_inner();
        let (account_id, key) = self.check_auth(
            request.auth.as_ref(),
            "BuyBrokerScrip",
            &request.amount.to_be_bytes(),
        )?;
        let nonce = request.auth.map(|auth| auth.nonce).unwrap_or_default();

        let mut state = self.state.lock().unwrap();
        if let Some(reply) = state.buys.get(&nonce) {
            return Ok(Response::new(reply.clone()));
        }
        let balance = state.balances.entry(account_id).or_default();
        if *balance < request.amount {
            return Err(refuse(Code::FailedPrecondition, "insufficient_funds"));
        }
        *balance -= request.amount;
        let balance = *balance;
        let seq = state.next_seq;
        state.next_seq += 1;

        let scrip = FakeBroker::mint(&self.ring, request.amount, seq, account_id);
        let secret = self
            .ring
            .customer_secret(Suite::Classic, scrip.body().cust_id)
            .unwrap();
        let sealed = Suite::Classic
            .seal(
                key.expose_bytes(),
                SealPurpose::BrokerScripSecret,
                &[3; 8],
                secret.expose_bytes(),
            )
            .unwrap();
        let reply = wire::BuyBrokerScripReply {
            scrip: Some(scrip_to_wire(&scrip)),
            sealed_customer_secret: sealed,
            balance,
        };
        state.buys.insert(nonce, reply.clone());
        if self.lose_next_reply.swap(false, Ordering::SeqCst) {
            return Err(Status::deadline_exceeded("timed out"));
        }
        Ok(Response::new(reply))
    }

    async fn exchange(
        &self,
        request: Request<wire::ExchangeRequest>,
    ) -> Result<Response<wire::ExchangeReply>, Status> {
        let request = request.into_inner();
        let (verified, id, stamp) = self.verify_payment(
            request.broker_scrip,
            request.request,
            &request.request_stamp,
        )?;

        let mut state = self.state.lock().unwrap();
        if let Some((seen, reply)) = state.spent.get(&id) {
            if *seen == stamp {
                return Ok(Response::new(reply.clone()));
            }
            return Err(refuse(Code::AlreadyExists, "double_spend"));
        }
        let order = ExchangeRequest::decode(verified.request()).map_err(core_refusal)?;
        if order.vendor.as_str() != VENDOR {
            return Err(refuse(Code::NotFound, "unknown_vendor"));
        }
        let seq = state.next_seq;
        state.next_seq += 2;

        let vendor_scrip =
            FakeBroker::mint(&self.vendor_ring, order.value.units(), seq, seq.into());
        let vendor_secret = self
            .vendor_ring
            .customer_secret(Suite::Classic, vendor_scrip.body().cust_id)
            .unwrap();
        let broker_secret = verified.customer_secret().unwrap();
        let sealed =
            seal_customer_secret(Suite::Classic, broker_secret, &[4; 8], &vendor_secret).unwrap();
        let price = Amount::new(order.value.units() + EXCHANGE_FEE);
        let slot = ChangeSlot {
            id: ScripId::new(1, seq + 1),
            expires_at: verified.scrip().body().expires_at,
        };
        let goods = exchange_goods(&vendor_scrip, &sealed);
        let reply = verified
            .reply(&self.ring, price, Some(slot), &goods, &[5; 8])
            .map_err(core_refusal)?;
        let wire_reply = wire::ExchangeReply {
            vendor_scrip: Some(scrip_to_wire(&vendor_scrip)),
            sealed_customer_secret: sealed,
            change: reply.change.as_ref().map(scrip_to_wire),
            reply_stamp: stamp_bytes(reply.reply_stamp),
            price: price.units(),
        };
        state.spent.insert(id, (stamp, wire_reply.clone()));
        Ok(Response::new(wire_reply))
    }

    async fn get_account(
        &self,
        request: Request<wire::GetAccountRequest>,
    ) -> Result<Response<wire::AccountStatement>, Status> {
        let request = request.into_inner();
        let (account_id, _) = self.check_auth(request.auth.as_ref(), "GetAccount", &[])?;
        let state = self.state.lock().unwrap();
        Ok(Response::new(wire::AccountStatement {
            account_id,
            balance: state.balances.get(&account_id).copied().unwrap_or_default(),
            entries: Vec::new(),
        }))
    }

    async fn get_broker_info(
        &self,
        _: Request<wire::GetBrokerInfoRequest>,
    ) -> Result<Response<wire::BrokerInfo>, Status> {
        Ok(Response::new(wire::BrokerInfo {
            broker: BROKER.into(),
            suite: 1,
            vendors: vec![VENDOR.into()],
            ..wire::BrokerInfo::default()
        }))
    }

    type ExchangeStreamStream = tonic::codegen::BoxStream<wire::ExchangeStreamReply>;

    async fn exchange_stream(
        &self,
        _: Request<tonic::Streaming<wire::ExchangeStreamRequest>>,
    ) -> Result<Response<Self::ExchangeStreamStream>, Status> {
        Err(Status::unimplemented(
            "the wallet does not stream exchanges",
        ))
    }

    async fn refund(
        &self,
        request: Request<wire::RefundRequest>,
    ) -> Result<Response<wire::RefundReply>, Status> {
        let request = request.into_inner();
        let (verified, id, stamp) = self.verify_payment(
            request.broker_scrip,
            request.request,
            &request.request_stamp,
        )?;

        let mut state = self.state.lock().unwrap();
        if let Some((seen, reply)) = state.refunds.get(&id) {
            if *seen == stamp {
                return Ok(Response::new(reply.clone()));
            }
            return Err(refuse(Code::AlreadyExists, "double_spend"));
        }
        let order = RefundRequest::decode(verified.request()).map_err(core_refusal)?;
        let value = verified.scrip().value();
        let balance = state
            .balances
            .get_mut(&order.account_id)
            .ok_or_else(|| refuse(Code::NotFound, "unknown_account"))?;
        *balance += value.units();
        let balance = *balance;
        let goods = refund_goods(order.account_id, value.units(), balance);
        let reply = verified
            .reply(&self.ring, value, None, &goods, &[6; 8])
            .map_err(core_refusal)?;
        let wire_reply = wire::RefundReply {
            account_id: order.account_id,
            credited: value.units(),
            balance,
            reply_stamp: stamp_bytes(reply.reply_stamp),
        };
        state.refunds.insert(id, (stamp, wire_reply.clone()));
        if self.lose_next_reply.swap(false, Ordering::SeqCst) {
            return Err(Status::deadline_exceeded("timed out"));
        }
        Ok(Response::new(wire_reply))
    }

    async fn renew_vendor_scrip(
        &self,
        _: Request<wire::RenewRequest>,
    ) -> Result<Response<wire::RenewReply>, Status> {
        Err(Status::unimplemented("the wallet renews nothing"))
    }

    async fn peer_exchange(
        &self,
        _: Request<wire::PeerExchangeRequest>,
    ) -> Result<Response<wire::PeerExchangeReply>, Status> {
        Err(Status::unimplemented("a wallet is no broker"))
    }

    async fn get_settlement(
        &self,
        _: Request<wire::GetSettlementRequest>,
    ) -> Result<Response<wire::Settlement>, Status> {
        Err(Status::unimplemented("operator call"))
    }

    async fn record_payout(
        &self,
        _: Request<wire::PayoutRequest>,
    ) -> Result<Response<wire::PayoutReply>, Status> {
        Err(Status::unimplemented("operator call"))
    }

    async fn audit(
        &self,
        _: Request<wire::AuditRequest>,
    ) -> Result<Response<wire::AuditReport>, Status> {
        Err(Status::unimplemented("operator call"))
    }
}

/// A running fake network and a wallet that has joined its broker, with
/// `funds` credited to its account.
struct Network {
    vendor: Arc<FakeVendor>,
    broker: Arc<FakeBroker>,
    vendor_url: String,
    broker_url: String,
    _dir: tempfile::TempDir,
    wallet: Wallet,
}

async fn listen() -> (TcpIncoming, String) {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", incoming.local_addr().unwrap());
    (incoming, url)
}

async fn network(funds: u64) -> Network {
    let vendor = Arc::new(FakeVendor::new());
    let broker = Arc::new(FakeBroker::new());
    let (incoming, vendor_url) = listen().await;
    tokio::spawn(
        Server::builder()
            .add_service(VendorServiceServer::from_arc(vendor.clone()))
            .serve_with_incoming(incoming),
    );
    let (incoming, broker_url) = listen().await;
    tokio::spawn(
        Server::builder()
            .add_service(BrokerServiceServer::from_arc(broker.clone()))
            .serve_with_incoming(incoming),
    );

    let dir = tempfile::tempdir().unwrap();
    let mut wallet = Wallet::create(dir.path().join("wallet.json")).unwrap();
    let joined = wallet.join_broker(&broker_url).await.unwrap();
    assert!(joined.new_account);
    let mut client = connect_broker(&broker_url).await.unwrap();
    let balance = protocol::credit(
        &mut client,
        OPERATOR_TOKEN,
        joined.account_id,
        Amount::new(funds),
        "test",
    )
    .await
    .unwrap();
    assert_eq!(balance.balance, Amount::new(funds));
    Network {
        vendor,
        broker,
        vendor_url,
        broker_url,
        _dir: dir,
        wallet,
    }
}

fn article(net: &Network, variant: Option<Variant>, top_up: u64) -> PayOrder {
    PayOrder {
        vendor_url: net.vendor_url.clone(),
        vendor: None,
        item: "article-1".into(),
        variant,
        top_up: Some(Amount::new(top_up)),
    }
}

/// Releases the wallet's lock and opens it again, as the next command would.
fn reopen(wallet: Wallet) -> Wallet {
    let path = wallet.path().to_owned();
    drop(wallet);
    Wallet::open(path).unwrap()
}

fn keys(held: &[millicent_client::wallet::HeldScrip]) -> Vec<u64> {
    held.iter().map(|h| h.scrip().value().units()).collect()
}

fn units(total: millicent_client::wallet::ScripTotal) -> (u64, usize, u64) {
    (total.value.units(), total.pieces, total.in_flight.units())
}

#[tokio::test]
async fn buy_exchange_and_pay_in_every_variant() {
    let mut net = network(1000).await;
    let bought = net.wallet.buy(None, Amount::new(500)).await.unwrap();
    assert_eq!(bought.balance, Amount::new(500));

    let first = net.wallet.pay(&article(&net, None, 100)).await.unwrap();
    assert_eq!(first.goods, GOODS);
    assert_eq!(first.variant, Variant::Secure);
    assert_eq!(
        (first.price, first.change),
        (Amount::new(30), Amount::new(70))
    );
    let exchange = first.exchange.unwrap();
    assert_eq!(exchange.value, Amount::new(100));
    assert_eq!(exchange.price, Amount::new(100 + EXCHANGE_FEE));

    for variant in [Variant::Private, Variant::Clear] {
        let next = net
            .wallet
            .pay(&article(&net, Some(variant), 100))
            .await
            .unwrap();
        assert_eq!(next.goods, GOODS, "{variant:?}");
        assert_eq!(next.exchange, None, "{variant:?}");
    }

    let wallet = reopen(net.wallet);
    let balances = wallet.balances().await.unwrap();
    assert_eq!(
        balances.brokers[0].account.as_ref().unwrap(),
        &Amount::new(500)
    );
    assert_eq!(units(balances.brokers[0].scrip), (398, 1, 0));
    assert_eq!(units(balances.vendors[0].scrip), (10, 1, 0));
    let kinds: Vec<HistoryKind> = wallet.history().iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            HistoryKind::Buy,
            HistoryKind::Exchange,
            HistoryKind::Pay,
            HistoryKind::Pay,
            HistoryKind::Pay
        ]
    );
    assert!(wallet.history().iter().all(|e| e.outcome == Outcome::Ok));
    assert!(!wallet.has_unsettled_calls());
}

#[tokio::test]
async fn a_lost_payment_reply_is_recovered_after_a_restart() {
    let mut net = network(1000).await;
    net.wallet.buy(None, Amount::new(500)).await.unwrap();
    net.vendor.lose_next_reply.store(true, Ordering::SeqCst);

    let error = net.wallet.pay(&article(&net, None, 0)).await.unwrap_err();
    assert!(error.outcome_unknown(), "{error}");
    assert!(
        matches!(
            error,
            ClientError::Unsettled {
                call: "payment",
                ..
            }
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains("run `millicent recover`"), "{text}");
    assert!(!text.contains("try again"), "{text}");
    assert!(net.wallet.has_unsettled_calls());

    let mut reopened = reopen(net.wallet);
    let balances = reopened.balances().await.unwrap();
    assert_eq!(units(balances.vendors[0].scrip), (0, 0, 30));

    let recovery = reopened.recover().await.unwrap();
    assert!(recovery.unsettled.is_empty(), "{:?}", recovery.unsettled);
    assert_eq!(recovery.settled.len(), 1);
    assert_eq!(recovery.settled[0].goods.as_deref(), Some(GOODS));
    assert!(!reopened.has_unsettled_calls());
    let outcomes: Vec<&Outcome> = reopened.history().iter().map(|e| &e.outcome).collect();
    assert_eq!(
        outcomes,
        [
            &Outcome::Ok,
            &Outcome::Ok,
            &Outcome::Interrupted,
            &Outcome::Ok
        ]
    );
}

#[tokio::test]
async fn a_private_payment_whose_reply_was_lost_is_sent_again_byte_for_byte() {
    let mut net = network(1000).await;
    net.wallet.buy(None, Amount::new(500)).await.unwrap();
    net.vendor.lose_next_reply.store(true, Ordering::SeqCst);
    let order = article(&net, Some(Variant::Private), 0);
    let error = net.wallet.pay(&order).await.unwrap_err();
    assert!(error.outcome_unknown(), "{error}");

    let mut reopened = reopen(net.wallet);
    let recovery = reopened.recover().await.unwrap();
    assert!(recovery.unsettled.is_empty(), "{:?}", recovery.unsettled);
    assert_eq!(recovery.settled[0].goods.as_deref(), Some(GOODS));

    // The sealed request has a random nonce; the retry is still identical,
    // because the wallet kept the bytes it sent.
    let received = net.vendor.received.lock().unwrap().clone();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0], received[1]);
    assert_ne!(received[0].request, b"article-1", "the request was sealed");
}

#[tokio::test]
async fn a_lost_purchase_is_fetched_again_not_bought_twice() {
    let mut net = network(1000).await;
    net.broker.lose_next_reply.store(true, Ordering::SeqCst);
    let error = net.wallet.buy(None, Amount::new(400)).await.unwrap_err();
    assert!(error.outcome_unknown(), "{error}");
    assert!(
        matches!(
            error,
            ClientError::Unsettled {
                call: "purchase",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.to_string().contains("try again"), "{error}");
    assert_eq!(net.wallet.pending_buys().len(), 1);

    let mut reopened = reopen(net.wallet);
    let recovery = reopened.recover().await.unwrap();
    assert_eq!(recovery.settled.len(), 1);
    assert!(reopened.pending_buys().is_empty());
    let balances = reopened.balances().await.unwrap();
    assert_eq!(
        balances.brokers[0].account.as_ref().unwrap(),
        &Amount::new(600)
    );
    assert_eq!(units(balances.brokers[0].scrip), (400, 1, 0));
}

#[tokio::test]
async fn a_lost_refund_reply_is_recovered_and_credited_once() {
    let mut net = network(1000).await;
    net.wallet.buy(None, Amount::new(400)).await.unwrap();
    net.broker.lose_next_reply.store(true, Ordering::SeqCst);
    let error = net.wallet.refund(BROKER).await.unwrap_err();
    assert!(
        matches!(error, ClientError::Unsettled { call: "refund", .. }),
        "{error:?}"
    );
    assert!(net.wallet.has_unsettled_calls());

    let mut reopened = reopen(net.wallet);
    let balances = reopened.balances().await.unwrap();
    assert_eq!(units(balances.brokers[0].scrip), (0, 0, 400));
    let recovery = reopened.recover().await.unwrap();
    assert!(recovery.unsettled.is_empty(), "{:?}", recovery.unsettled);
    assert_eq!(recovery.settled.len(), 1);
    assert_eq!(recovery.settled[0].entry.kind, HistoryKind::Refund);
    assert!(!reopened.has_unsettled_calls());

    let balances = reopened.balances().await.unwrap();
    assert_eq!(
        balances.brokers[0].account.as_ref().unwrap(),
        &Amount::new(1000)
    );
    assert_eq!(units(balances.brokers[0].scrip), (0, 0, 0));
    // Nothing is left to refund: the account is not credited again.
    let refund = reopened.refund(BROKER).await.unwrap();
    assert_eq!(refund.pieces, 0);
    let balances = reopened.balances().await.unwrap();
    assert_eq!(
        balances.brokers[0].account.as_ref().unwrap(),
        &Amount::new(1000)
    );
}

#[tokio::test]
async fn scrip_spent_elsewhere_is_refused_and_dropped() {
    let mut net = network(1000).await;
    net.wallet.buy(None, Amount::new(500)).await.unwrap();
    net.wallet.pay(&article(&net, None, 100)).await.unwrap();

    // Spend the change behind the wallet's back, for a different request.
    let held = net.wallet.vendor_scrip()[0].clone();
    let mut vendor = connect_vendor(&net.vendor_url).await.unwrap();
    let stolen = protocol::pay(
        &mut vendor,
        held.scrip(),
        held.secret(),
        Variant::Secure,
        "x",
    )
    .await
    .unwrap_err();
    assert_eq!(stolen.reason(), Some("unknown_item"));
    protocol::pay(
        &mut vendor,
        held.scrip(),
        held.secret(),
        Variant::Clear,
        "article-1",
    )
    .await
    .unwrap();

    let error = net.wallet.pay(&article(&net, None, 0)).await.unwrap_err();
    assert_eq!(error.reason(), Some("double_spend"));
    assert!(net.wallet.vendor_scrip().is_empty());
    assert!(!net.wallet.has_unsettled_calls());
}

#[tokio::test]
async fn refusals_and_bad_replies_are_reported_and_recorded() {
    let mut net = network(100).await;
    let error = net.wallet.buy(None, Amount::new(500)).await.unwrap_err();
    assert_eq!(error.reason(), Some("insufficient_funds"));
    assert!(net.wallet.pending_buys().is_empty());

    // 49 and the fee do not fit in 50: the broker refuses, spending
    // nothing, and the exchange is asked again for just the price.
    net.wallet.buy(None, Amount::new(50)).await.unwrap();
    let paid = net.wallet.pay(&article(&net, None, 49)).await.unwrap();
    let exchange = paid.exchange.unwrap();
    assert_eq!(exchange.value, Amount::new(ARTICLE_PRICE));
    assert_eq!(paid.change, Amount::ZERO);
    assert_eq!(keys(net.wallet.broker_scrip()), [18]);

    // Too little for the price: the error names the price, not the top-up.
    let error = net.wallet.pay(&article(&net, None, 100)).await.unwrap_err();
    assert!(
        matches!(error, ClientError::NoScrip { needed, .. } if needed == Amount::new(ARTICLE_PRICE)),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("largest broker scrip held is worth 18"),
        "{error}"
    );

    let mut order = article(&net, None, 0);
    order.item = "article-2".into();
    let error = net.wallet.pay(&order).await.unwrap_err();
    assert!(matches!(error, ClientError::NoSuchItem { .. }), "{error}");

    net.wallet.buy(None, Amount::new(50)).await.unwrap();
    net.vendor.tamper_next_reply.store(true, Ordering::SeqCst);
    let scrip = net.wallet.broker_scrip()[1].clone();
    let mut broker = connect_broker(&net.broker_url).await.unwrap();
    let vendor_name = VendorName::new(VENDOR).unwrap();
    let exchanged = protocol::exchange(
        &mut broker,
        scrip.scrip(),
        scrip.secret(),
        &vendor_name,
        Amount::new(40),
    )
    .await
    .unwrap();
    let mut vendor = connect_vendor(&net.vendor_url).await.unwrap();
    let error = protocol::pay(
        &mut vendor,
        &exchanged.vendor_scrip,
        &exchanged.vendor_secret,
        Variant::Secure,
        "article-1",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::Protocol(millicent_core::Error::BadReplyStamp)
        ),
        "{error}"
    );

    let outcomes: Vec<&Outcome> = net.wallet.history().iter().map(|e| &e.outcome).collect();
    assert_eq!(
        outcomes,
        [
            &Outcome::Refused {
                reason: "insufficient_funds".into()
            },
            &Outcome::Ok,
            &Outcome::Refused {
                reason: "insufficient_value".into()
            },
            &Outcome::Ok,
            &Outcome::Ok,
            &Outcome::Ok,
        ]
    );
}

#[tokio::test]
async fn a_top_up_is_only_for_exchanges_and_shrinks_to_the_broker_scrip_held() {
    let mut net = network(1000).await;
    net.wallet.buy(None, Amount::new(80)).await.unwrap();

    // 100 is more than the 80 held: the exchange asks for 80, which with
    // the fee is refused, and then for the price.
    let first = net.wallet.pay(&article(&net, None, 100)).await.unwrap();
    assert_eq!(first.exchange.unwrap().value, Amount::new(ARTICLE_PRICE));
    assert_eq!(keys(net.wallet.broker_scrip()), [48]);

    // Vendor scrip that covers the price is used whatever the top-up.
    net.wallet.buy(None, Amount::new(200)).await.unwrap();
    let second = net.wallet.pay(&article(&net, None, 150)).await.unwrap();
    assert_eq!(second.exchange.unwrap().value, Amount::new(150));
    let third = net.wallet.pay(&article(&net, None, 1000)).await.unwrap();
    assert_eq!(third.exchange, None);
    assert_eq!(keys(net.wallet.vendor_scrip()), [90]);

    // Broker scrip that cannot pay the price and the fee is refused twice
    // and kept.
    let mut net = network(1000).await;
    net.wallet
        .buy(None, Amount::new(ARTICLE_PRICE + 1))
        .await
        .unwrap();
    let error = net.wallet.pay(&article(&net, None, 100)).await.unwrap_err();
    assert_eq!(error.reason(), Some("insufficient_value"), "{error}");
    assert!(error.to_string().contains("kept in the wallet"), "{error}");
    assert_eq!(keys(net.wallet.broker_scrip()), [ARTICLE_PRICE + 1]);
    assert!(!net.wallet.has_unsettled_calls());
}

#[tokio::test]
async fn scrip_refused_by_a_node_that_does_not_know_it_is_kept() {
    let mut net = network(1000).await;
    net.wallet.buy(None, Amount::new(500)).await.unwrap();
    net.wallet.pay(&article(&net, None, 100)).await.unwrap();
    assert_eq!(keys(net.wallet.vendor_scrip()), [70]);

    for reason in [
        "bad_certificate",
        "unknown_series",
        "wrong_vendor",
        "expired",
    ] {
        *net.vendor.refuse_next_payment.lock().unwrap() = Some(reason);
        let error = net.wallet.pay(&article(&net, None, 0)).await.unwrap_err();
        assert_eq!(error.reason(), Some(reason));
        let text = error.to_string();
        assert!(text.contains(&net.vendor_url), "{text}");
        assert!(text.contains("the scrip is kept in the wallet"), "{text}");
        assert_eq!(keys(net.wallet.vendor_scrip()), [70], "{reason}");
        assert!(!net.wallet.has_unsettled_calls());
    }

    let refusals: Vec<_> = net
        .wallet
        .history()
        .iter()
        .filter(|entry| matches!(entry.outcome, Outcome::Refused { .. }))
        .collect();
    assert_eq!(refusals.len(), 4);
    assert!(
        refusals
            .iter()
            .all(|entry| entry.url.as_deref() == Some(net.vendor_url.as_str()))
    );

    // The kept scrip is genuine: the node that knows it takes it.
    let paid = net.wallet.pay(&article(&net, None, 0)).await.unwrap();
    assert_eq!((paid.exchange, paid.change), (None, Amount::new(40)));
}

#[tokio::test]
async fn a_payment_that_cannot_reach_the_vendor_is_recorded_and_keeps_nothing() {
    let mut net = network(1000).await;
    net.wallet.buy(None, Amount::new(500)).await.unwrap();

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let mut order = article(&net, None, 100);
    order.vendor_url = closed.clone();
    let error = net.wallet.pay(&order).await.unwrap_err();
    assert!(matches!(error, ClientError::Transport { .. }), "{error}");

    // A price list lost on the way is a failure too, but not one to recover:
    // no scrip was sent.
    net.vendor.fail_prices.store(true, Ordering::SeqCst);
    let error = net.wallet.pay(&article(&net, None, 100)).await.unwrap_err();
    assert!(matches!(error, ClientError::Rpc { .. }), "{error:?}");
    assert!(!error.to_string().contains("recover"), "{error}");
    assert!(!net.wallet.has_unsettled_calls());

    let failed: Vec<(&Outcome, Option<&str>)> = net
        .wallet
        .history()
        .iter()
        .filter(|entry| entry.kind == HistoryKind::Pay)
        .map(|entry| (&entry.outcome, entry.url.as_deref()))
        .collect();
    assert_eq!(
        failed,
        [
            (
                &Outcome::Failed {
                    reason: "unreachable".into()
                },
                Some(closed.as_str())
            ),
            (
                &Outcome::Failed {
                    reason: "unavailable".into()
                },
                Some(net.vendor_url.as_str())
            ),
        ]
    );
    assert_eq!(keys(net.wallet.broker_scrip()), [500]);
}

#[tokio::test]
async fn urls_of_other_schemes_are_refused_before_anything_is_sent() {
    let mut net = network(1000).await;
    net.wallet.buy(None, Amount::new(500)).await.unwrap();
    for url in ["ftp://127.0.0.1:1", "https://127.0.0.1:1"] {
        let error = net.wallet.join_broker(url).await.unwrap_err();
        // This process trusts no certificate authority, so it dials no
        // https:// URL either.
        assert!(
            matches!(
                error,
                ClientError::UnsupportedUrl { .. }
                    | ClientError::Tls(millicent_transport::TlsError::NoTrust { .. })
            ),
            "{error}"
        );
        let mut order = article(&net, None, 100);
        order.vendor_url = url.into();
        let error = net.wallet.pay(&order).await.unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("only http:// and https://")
                || text.contains("no certificate authority to trust"),
            "{text}"
        );
    }
    let https = net.vendor_url.replace("http://", "https://");
    let mut order = article(&net, None, 100);
    order.vendor_url = https;
    assert!(net.wallet.pay(&order).await.is_err());
    assert!(net.wallet.vendor_scrip().is_empty());
    assert_eq!(keys(net.wallet.broker_scrip()), [500]);
}

#[tokio::test]
async fn a_refused_operator_token_is_reported_as_such() {
    let net = network(10).await;
    let mut client = connect_broker(&net.broker_url).await.unwrap();
    let error = protocol::credit(&mut client, "wrong", 1, Amount::new(5), "again")
        .await
        .unwrap_err();
    assert_eq!(error.reason(), Some("unauthenticated"));
    let text = error.to_string();
    assert!(text.contains("--operator-token"), "{text}");
    assert!(!text.contains("account key"), "{text}");
}
