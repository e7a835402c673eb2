//! What the broker's end-to-end tests share: a stand-in vendor node that
//! grants licences from a known key ring, and a minimal wallet that talks
//! to the broker over real gRPC.

// Each test binary uses a different part of this module; in test code a
// panic is a failed test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use millicent_broker::{BrokerConfig, VendorConfig};
use millicent_core::account::account_mac;
use millicent_core::exchange::{ExchangeRequest, exchange_goods, open_customer_secret};
use millicent_core::{
    Amount, CustomerKey, CustomerSecret, KeyRing, Mac, MasterSecret, Payment, PaymentReply, Scrip,
    SealPurpose, SeriesKey, Suite, Variant, VendorName,
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
// A vendor node that only grants licences
// ---------------------------------------------------------------------------

/// A stand-in for a vendor node: grants one fixed licence for `VENDOR`.
pub(crate) struct TestVendor {
    pub(crate) addr: SocketAddr,
    /// The vendor's own keys: what checks the scrip the broker mints.
    pub(crate) ring: KeyRing,
    pub(crate) grants: Arc<AtomicUsize>,
    pub(crate) available: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

struct LicensingNode {
    licence: proto::Licence,
    grants: Arc<AtomicUsize>,
    available: Arc<AtomicBool>,
}

#[tonic::async_trait]
impl VendorService for LicensingNode {
    type PayStreamStream = tonic::codegen::BoxStream<proto::PayBatchReply>;

    async fn pay_stream(
        &self,
        _request: Request<tonic::Streaming<proto::PayBatch>>,
    ) -> Result<Response<Self::PayStreamStream>, Status> {
        Err(Status::unimplemented("this test node only grants licences"))
    }

    async fn pay(
        &self,
        _request: Request<proto::PayRequest>,
    ) -> Result<Response<proto::PayReply>, Status> {
        Err(Status::unimplemented("this test node only grants licences"))
    }

    async fn get_prices(
        &self,
        _request: Request<proto::GetPricesRequest>,
    ) -> Result<Response<proto::PriceList>, Status> {
        Err(Status::unimplemented("this test node only grants licences"))
    }

    async fn grant_licence(
        &self,
        request: Request<proto::GrantLicenceRequest>,
    ) -> Result<Response<proto::Licence>, Status> {
        if !self.available.load(Ordering::SeqCst) {
            return Err(Status::unavailable("the test node is down"));
        }
        let authorized = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            == Some(&format!("Bearer {LICENCE_TOKEN}"));
        if !authorized {
            return Err(Status::unauthenticated("wrong licence token"));
        }
        let request = request.into_inner();
        if request.vendor != VENDOR || request.broker != BROKER {
            return Err(Status::not_found("no such vendor or broker"));
        }
        self.grants.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(self.licence.clone()))
    }
}

impl TestVendor {
    pub(crate) async fn start() -> TestVendor {
        let expires_at = now() + 3 * 24 * 60 * 60;
        let scrip_secret = [0x11; 32];
        let customer_secret = [0x22; 32];
        let mut ring = KeyRing::new(VendorName::new(VENDOR).unwrap());
        ring.add_series(SeriesKey {
            series: LICENCE_SERIES,
            suite: Suite::Classic,
            expires_at,
            secret: MasterSecret::new(Suite::Classic, scrip_secret),
        });
        ring.add_customer_key(CustomerKey {
            selector: LICENCE_SELECTOR,
            suite: Suite::Classic,
            secret: MasterSecret::new(Suite::Classic, customer_secret),
        });
        let licence = proto::Licence {
            vendor: VENDOR.to_owned(),
            suite: u32::from(Suite::Classic.id()),
            series: LICENCE_SERIES,
            expires_at,
            master_scrip_secret: scrip_secret.to_vec(),
            customer_selector: u32::from(LICENCE_SELECTOR),
            master_customer_secret: customer_secret.to_vec(),
        };

        let grants = Arc::new(AtomicUsize::new(0));
        let available = Arc::new(AtomicBool::new(true));
        let node = LicensingNode {
            licence,
            grants: grants.clone(),
            available: available.clone(),
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
            stop: Some(stop),
        }
    }

    pub(crate) fn set_available(&self, available: bool) {
        self.available.store(available, Ordering::SeqCst);
    }

    pub(crate) fn grants(&self) -> usize {
        self.grants.load(Ordering::SeqCst)
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
pub(crate) fn config(dir: &Path, vendor: Option<&TestVendor>) -> BrokerConfig {
    BrokerConfig {
        name: BROKER.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("broker"),
        operator_token: Some(OPERATOR_TOKEN.to_owned()),
        vendors: vendor
            .map(|vendor| {
                vec![VendorConfig {
                    name: VENDOR.to_owned(),
                    node: format!("http://{}", vendor.addr),
                    licence_token: Some(LICENCE_TOKEN.to_owned()),
                }]
            })
            .unwrap_or_default(),
        ..BrokerConfig::default()
    }
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
    let payment = Payment::prepare(
        held.scrip.clone(),
        &held.secret,
        Variant::Secure,
        &request,
        &[],
    )
    .unwrap();
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
