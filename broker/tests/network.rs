//! The broker network, end to end over real gRPC: a real vendor node, a
//! broker B licensed for its vendor, and a broker A that is not and buys
//! from B. A customer of A pays the vendor with scrip A bought from B; the
//! brokers owe each other what they should, settle it with payouts, and
//! both their books audit clean.

// In test code a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use millicent_broker::{BrokerConfig, BrokerPeerConfig, RunningBroker, VendorConfig};
use millicent_client::protocol;
use millicent_core::{AccountKey, Amount, Suite, Variant, VendorName};
use millicent_proto as proto;
use millicent_vendor::RunningVendor;
use support::{OPERATOR_TOKEN, assert_live_audit_clean, connect, operator};

const BROKER_A: &str = "broker-a.example";
const BROKER_B: &str = "broker-b.example";
const PEER_TOKEN: &str = "peer-token-between-a-and-b";
const LICENCE_TOKEN: &str = "vendor-licence-token-0123456789";

/// A customer of the broker at `url`, with an account credited `credit`.
struct Customer {
    client: support::Client,
    suite: Suite,
    account: u64,
    key: AccountKey,
}

impl Customer {
    async fn open(url: &str, credit: u64) -> Customer {
        let mut client = protocol::connect_broker(url).await.unwrap();
        let suite = protocol::broker_info(&mut client).await.unwrap().suite;
        let (account, key) = protocol::open_account(&mut client, suite).await.unwrap();
        protocol::credit(
            &mut client,
            OPERATOR_TOKEN,
            account,
            Amount::new(credit),
            "d1",
        )
        .await
        .unwrap();
        Customer {
            client,
            suite,
            account,
            key,
        }
    }

    async fn buy(&mut self, amount: u64) -> protocol::BoughtScrip {
        protocol::buy_broker_scrip(
            &mut self.client,
            self.suite,
            self.account,
            self.key.expose_bytes(),
            Amount::new(amount),
        )
        .await
        .unwrap()
    }

    async fn exchange(
        &mut self,
        bought: &protocol::BoughtScrip,
        vendor: &VendorName,
        value: u64,
    ) -> Result<protocol::Exchanged, millicent_client::ClientError> {
        protocol::exchange(
            &mut self.client,
            &bought.scrip,
            &bought.secret,
            vendor,
            Amount::new(value),
        )
        .await
    }
}

async fn settlement(client: &mut support::Client) -> proto::ShardSettlement {
    let reply = client
        .get_settlement(operator(proto::GetSettlementRequest { refresh: true }))
        .await
        .unwrap()
        .into_inner();
    reply.shards.into_iter().next().unwrap()
}

fn broker_line<'a>(shard: &'a proto::ShardSettlement, name: &str) -> &'a proto::BrokerSettlement {
    shard
        .brokers
        .iter()
        .find(|line| line.broker == name)
        .unwrap()
}

fn payout(
    counterparty: &str,
    direction: proto::PayoutDirection,
    amount: u64,
) -> tonic::Request<proto::PayoutRequest> {
    operator(proto::PayoutRequest {
        shard: 0,
        counterparty: counterparty.to_owned(),
        direction: direction as i32,
        amount,
        reference: format!("settle-{counterparty}"),
    })
}

#[tokio::test]
async fn a_customer_of_one_broker_pays_a_vendor_only_the_other_serves() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = RunningVendor::start(millicent_vendor::VendorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("vendor"),
        licence_token: Some(LICENCE_TOKEN.to_owned()),
        ..millicent_vendor::VendorConfig::default()
    })
    .await
    .unwrap();
    let vendor_url = format!("http://{}", vendor.addr());
    let news = VendorName::new("news.example").unwrap();

    let broker_b = RunningBroker::start(BrokerConfig {
        name: BROKER_B.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("b"),
        operator_token: Some(OPERATOR_TOKEN.to_owned()),
        exchange_fee: 2,
        vendors: vec![VendorConfig {
            name: news.to_string(),
            node: vendor_url.clone(),
            licence_token: Some(LICENCE_TOKEN.to_owned()),
            ..VendorConfig::default()
        }],
        brokers: vec![BrokerPeerConfig {
            name: BROKER_A.to_owned(),
            token: Some(PEER_TOKEN.to_owned()),
            ..BrokerPeerConfig::default()
        }],
        ..BrokerConfig::default()
    })
    .await
    .unwrap();
    let start_a = |token: &str, data_dir: &str| BrokerConfig {
        name: BROKER_A.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join(data_dir),
        operator_token: Some(OPERATOR_TOKEN.to_owned()),
        exchange_fee: 1,
        brokers: vec![BrokerPeerConfig {
            name: BROKER_B.to_owned(),
            url: Some(format!("http://{}", broker_b.addr())),
            token: Some(token.to_owned()),
            vendors: vec![news.to_string()],
            max_fee: 2,
        }],
        ..BrokerConfig::default()
    };

    // Broker A with a wrong token: B sells it nothing.
    let impostor = RunningBroker::start(start_a("not-the-token", "impostor"))
        .await
        .unwrap();
    let mut customer = Customer::open(&format!("http://{}", impostor.addr()), 200).await;
    let bought = customer.buy(200).await;
    let refused = customer.exchange(&bought, &news, 100).await;
    assert_eq!(refused.unwrap_err().reason(), Some("vendor_unavailable"));
    impostor.shutdown().await.unwrap();

    let broker_a = RunningBroker::start(start_a(PEER_TOKEN, "a"))
        .await
        .unwrap();
    let a_url = format!("http://{}", broker_a.addr());
    let mut customer = Customer::open(&a_url, 1000).await;
    let info = protocol::broker_info(&mut customer.client).await.unwrap();
    assert!(info.vendors.contains(&news.to_string()));
    let bought = customer.buy(500).await;

    // A buys from B for the customer: the price is the value, A's fee and B's.
    let prepared =
        protocol::PreparedExchange::new(&bought.scrip, &bought.secret, &news, Amount::new(100))
            .unwrap();
    let mut raw = connect(broker_a.addr()).await;
    let reply = raw
        .exchange(prepared.request().clone())
        .await
        .unwrap()
        .into_inner();
    let exchanged = prepared.check(&bought.secret, &reply).unwrap();
    assert_eq!(exchanged.price, Amount::new(103));
    assert_eq!(exchanged.change.as_ref().unwrap().value(), Amount::new(397));
    // A lost reply, fetched again: A buys nothing more from B.
    let again = raw
        .exchange(prepared.request().clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, reply);

    // The vendor takes the scrip: it was minted under B's licence.
    let mut vendor_client = protocol::connect_vendor(&vendor_url).await.unwrap();
    let paid = protocol::pay(
        &mut vendor_client,
        &exchanged.vendor_scrip,
        &exchanged.vendor_secret,
        Variant::Secure,
        "article-1",
    )
    .await
    .unwrap();
    assert_eq!(paid.goods, b"The text of article 1");

    // What each owes: A owes B the value and B's fee; B owes the vendor
    // the value, once the vendor reports the scrip redeemed.
    let mut a_ops = connect(broker_a.addr()).await;
    let mut b_ops = connect(broker_b.addr()).await;
    let a_books = settlement(&mut a_ops).await;
    assert_eq!(broker_line(&a_books, BROKER_B).balance, -102);
    assert_eq!(a_books.fees, 1);
    let b_books = settlement(&mut b_ops).await;
    assert_eq!(broker_line(&b_books, BROKER_A).balance, 102);
    assert_eq!(b_books.fees, 2);
    let owed_vendor = &b_books.vendors[0];
    assert_eq!((owed_vendor.payable, owed_vendor.outstanding), (100, 0));

    // The brokers settle: A pays, B records the money received.
    let too_much = a_ops
        .record_payout(payout(BROKER_B, proto::PayoutDirection::Pay, 103))
        .await;
    assert_eq!(
        too_much
            .unwrap_err()
            .metadata()
            .get("millicent-reason")
            .unwrap(),
        "exceeds_owed"
    );
    let owed = a_ops
        .record_payout(payout(BROKER_B, proto::PayoutDirection::Pay, 102))
        .await
        .unwrap()
        .into_inner()
        .owed;
    assert_eq!(owed, 0);
    let owed = b_ops
        .record_payout(payout(BROKER_A, proto::PayoutDirection::Receive, 102))
        .await
        .unwrap()
        .into_inner()
        .owed;
    assert_eq!(owed, 0);
    assert_eq!(
        broker_line(&settlement(&mut a_ops).await, BROKER_B).balance,
        0
    );
    assert_eq!(
        broker_line(&settlement(&mut b_ops).await, BROKER_A).balance,
        0
    );

    // Scrip that covers the value and A's fee but not the most B may
    // charge is refused before A buys anything, so neither broker's books
    // show a purchase the other's do not.
    let short = customer.buy(102).await;
    let refused = customer.exchange(&short, &news, 100).await;
    assert_eq!(refused.unwrap_err().reason(), Some("insufficient_value"));
    assert_eq!(
        broker_line(&settlement(&mut a_ops).await, BROKER_B).balance,
        0
    );
    assert_eq!(
        broker_line(&settlement(&mut b_ops).await, BROKER_A).balance,
        0
    );

    assert_live_audit_clean(&mut a_ops).await;
    assert_live_audit_clean(&mut b_ops).await;
    broker_a.shutdown().await.unwrap();
    broker_b.shutdown().await.unwrap();
    vendor.shutdown().await.unwrap();
    for books in ["a", "b"] {
        let report = millicent_broker::audit::audit_data_dir(&dir.path().join(books))
            .await
            .unwrap();
        assert!(
            report.is_clean(),
            "broker {books}: {:?}",
            report.discrepancy
        );
    }
}
