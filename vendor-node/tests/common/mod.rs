//! Shared helpers of the end-to-end tests: a node on 127.0.0.1 with a
//! temporary store, a gRPC client, and a stand-in broker that mints scrip
//! under a licence the way a real broker would.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use millicent_core::scrip::ScripBody;
use millicent_core::{
    Amount, CustId, CustomerKey, CustomerSecret, KeyRing, Mac, MasterSecret, Payment, PaymentReply,
    Properties, Scrip, ScripId, SeriesKey, Suite, Variant, VendorName,
};
use millicent_proto as wire;
use millicent_proto::vendor_service_client::VendorServiceClient;
use millicent_vendor::{ItemSpec, REASON_KEY, RunningVendor, VendorConfig, VendorSpec};
use tonic::transport::Channel;

/// The licence token the test nodes accept.
pub const TOKEN: &str = "test-licence-token-0123456789";
/// A fixed nonce of the length `suite` takes (tests need no fresh ones).
pub fn nonce(suite: Suite) -> Vec<u8> {
    vec![7; suite.nonce_len()]
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn item(name: &str, price: u64, content: &str) -> ItemSpec {
    ItemSpec {
        name: name.to_owned(),
        price,
        content: content.to_owned(),
    }
}

/// Two vendors: `news.example` takes every variant, `shop.example` only
/// the stamped ones.
pub fn config(dir: &Path) -> VendorConfig {
    VendorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("store"),
        licence_token: Some(TOKEN.to_owned()),
        vendors: vec![
            VendorSpec {
                name: "news.example".to_owned(),
                suite: "classic".to_owned(),
                accept_suites: Vec::new(),
                variants: vec!["clear".into(), "secure".into(), "private".into()],
                clear_max_price: None,
                items: vec![
                    item("headline", 1, "Headline"),
                    item("article-1", 10, "The text of article 1"),
                    item("archive", 100, "The archive"),
                ],
            },
            VendorSpec {
                name: "shop.example".to_owned(),
                suite: "modern".to_owned(),
                accept_suites: Vec::new(),
                variants: vec!["secure".into(), "private".into()],
                clear_max_price: None,
                items: vec![item("pencil", 3, "A pencil")],
            },
        ],
        ..VendorConfig::default()
    }
}

pub struct Harness {
    pub node: RunningVendor,
    pub client: VendorServiceClient<Channel>,
}

pub async fn start(config: VendorConfig) -> Harness {
    let node = RunningVendor::start(config).await.unwrap();
    let client = VendorServiceClient::connect(format!("http://{}", node.addr()))
        .await
        .unwrap();
    Harness { node, client }
}

/// Asks for a licence, presenting `token` if given.
pub async fn ask_licence(
    client: &mut VendorServiceClient<Channel>,
    vendor: &str,
    token: Option<&str>,
) -> Result<wire::Licence, tonic::Status> {
    let mut request = tonic::Request::new(wire::GrantLicenceRequest {
        vendor: vendor.to_owned(),
        broker: "broker-1".to_owned(),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    client.grant_licence(request).await.map(|r| r.into_inner())
}

/// A broker holding one licence.
pub struct Broker {
    pub keys: KeyRing,
    pub suite: Suite,
    pub series: u32,
    pub selector: u16,
    pub expires_at: u64,
    next: u32,
}

impl Broker {
    pub async fn licensed(client: &mut VendorServiceClient<Channel>, vendor: &str) -> Broker {
        let licence = ask_licence(client, vendor, Some(TOKEN)).await.unwrap();
        Broker::from_licence(&licence)
    }

    pub fn from_licence(licence: &wire::Licence) -> Broker {
        Broker::for_vendor(licence, &licence.vendor)
    }

    /// A broker minting with the licence's secrets but naming `vendor` in
    /// its scrip (to present scrip at the wrong vendor).
    pub fn for_vendor(licence: &wire::Licence, vendor: &str) -> Broker {
        let suite = Suite::from_id(licence.suite as u8).unwrap();
        let mut keys = KeyRing::new(VendorName::new(vendor).unwrap());
        keys.add_series(SeriesKey {
            series: licence.series,
            suite,
            expires_at: licence.expires_at,
            secret: MasterSecret::from_slice(suite, &licence.master_scrip_secret).unwrap(),
        });
        keys.add_customer_key(CustomerKey {
            selector: licence.customer_selector as u16,
            suite,
            secret: MasterSecret::from_slice(suite, &licence.master_customer_secret).unwrap(),
        });
        Broker {
            keys,
            suite,
            series: licence.series,
            selector: licence.customer_selector as u16,
            expires_at: licence.expires_at,
            next: 1,
        }
    }

    /// The body of the next scrip worth `value`, valid for an hour.
    pub fn body(&mut self, value: u64) -> ScripBody {
        let seq = self.next;
        self.next += 1;
        ScripBody {
            suite: self.suite,
            vendor: self.keys.vendor().clone(),
            value: Amount::new(value),
            id: ScripId::new(self.series, seq),
            cust_id: CustId::new(self.selector, 1000 + u64::from(seq)).unwrap(),
            expires_at: now() + 3600,
            properties: Properties::default(),
        }
    }

    pub fn mint(&mut self, value: u64) -> Scrip {
        let body = self.body(value);
        self.keys.mint(body).unwrap()
    }

    pub fn certify(&self, body: ScripBody) -> Scrip {
        self.keys.mint(body).unwrap()
    }

    pub fn secret(&self, scrip: &Scrip) -> CustomerSecret {
        self.keys
            .customer_secret(scrip.suite(), scrip.body().cust_id)
            .unwrap()
    }

    pub fn payment(&self, scrip: &Scrip, variant: Variant, item: &str) -> Payment {
        let secret = self.secret(scrip);
        Payment::prepare(
            scrip.clone(),
            &secret,
            variant,
            item.as_bytes(),
            &nonce(scrip.suite()),
        )
        .unwrap()
    }
}

pub fn scrip_to_wire(scrip: &Scrip) -> wire::Scrip {
    wire::Scrip {
        body: scrip.encoded_body().to_vec(),
        certificate: scrip.certificate().as_bytes().to_vec(),
    }
}

pub fn pay_request(payment: &Payment) -> wire::PayRequest {
    let variant = match payment.variant {
        Variant::Clear => wire::Variant::Clear,
        Variant::Secure => wire::Variant::Secure,
        Variant::Private => wire::Variant::Private,
    };
    wire::PayRequest {
        scrip: Some(scrip_to_wire(&payment.scrip)),
        variant: variant as i32,
        request: payment.request.clone(),
        request_stamp: payment
            .request_stamp
            .map(|stamp| stamp.as_bytes().to_vec())
            .unwrap_or_default(),
    }
}

pub fn reply_from_wire(reply: &wire::PayReply) -> PaymentReply {
    PaymentReply {
        goods: reply.goods.clone(),
        change: reply
            .change
            .as_ref()
            .map(|change| Scrip::decode(&change.body, &change.certificate).unwrap()),
        reply_stamp: (!reply.reply_stamp.is_empty()).then(|| Mac::from_slice(&reply.reply_stamp)),
        price: Amount::new(reply.price),
    }
}

/// Pays and checks the reply as a customer would; returns the reply, the
/// plaintext goods and the change.
pub async fn pay_ok(
    client: &mut VendorServiceClient<Channel>,
    payment: &Payment,
    secret: &CustomerSecret,
) -> (wire::PayReply, Vec<u8>, Option<Scrip>) {
    let wire_reply = client.pay(pay_request(payment)).await.unwrap().into_inner();
    let reply = reply_from_wire(&wire_reply);
    let goods = reply.open(payment, secret).unwrap();
    (wire_reply, goods, reply.change)
}

/// The status code and `millicent-reason` of a refused payment.
pub async fn pay_refused(
    client: &mut VendorServiceClient<Channel>,
    request: wire::PayRequest,
) -> (tonic::Code, String) {
    let status = client.pay(request).await.unwrap_err();
    (status.code(), reason(&status))
}

pub fn reason(status: &tonic::Status) -> String {
    status
        .metadata()
        .get(REASON_KEY)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}
