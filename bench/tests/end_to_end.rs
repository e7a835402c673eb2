//! The whole network, end to end, over real gRPC on loopback: a broker and a
//! vendor node with sled stores, and a customer who opens an account, is
//! credited, buys broker scrip, exchanges it for vendor scrip and pays with
//! change, after which replayed, tampered and expired scrip are refused.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use millicent_bench::network::LocalNetwork;
use millicent_client::ClientError;
use millicent_client::protocol::{self, connect_broker, connect_vendor};
use millicent_core::{
    Amount, CustomerKey, KeyRing, MasterSecret, Properties, Scrip, ScripBody, ScripId, SeriesKey,
    Suite, Variant, VendorName,
};
use millicent_proto as wire;

fn now_secs() -> u64 {
    protocol::now_ms() / 1000
}

fn reason(error: &ClientError) -> &str {
    error.reason().unwrap_or("(no reason)")
}

#[tokio::test]
async fn a_customer_pays_with_change_and_bad_scrip_is_refused_in_the_modern_suite() {
    a_customer_pays_with_change_and_bad_scrip_is_refused(Suite::Modern).await;
}

#[tokio::test]
async fn a_customer_pays_with_change_and_bad_scrip_is_refused_in_the_classic_suite() {
    a_customer_pays_with_change_and_bad_scrip_is_refused(Suite::Classic).await;
}

async fn a_customer_pays_with_change_and_bad_scrip_is_refused(suite: Suite) {
    let network = LocalNetwork::start(None, suite).await.unwrap();
    let mut broker = connect_broker(&network.broker_url()).await.unwrap();
    let mut vendor = connect_vendor(&network.vendor_url()).await.unwrap();

    let offers = protocol::prices(&mut vendor).await.unwrap();
    let offer = &offers[0];
    let item = offer
        .items
        .iter()
        .find(|item| item.price == Amount::new(10))
        .unwrap();

    // Fund an account and turn it into vendor scrip.
    let info = protocol::broker_info(&mut broker).await.unwrap();
    assert!(info.vendors.contains(&offer.vendor.as_str().to_owned()));
    assert_eq!(
        (info.suite, offer.suites.as_slice()),
        (suite, [suite].as_slice())
    );
    let (account, key) = protocol::open_account(&mut broker, info.suite)
        .await
        .unwrap();
    let token = network.operator_token().to_owned();
    let balance = protocol::credit(&mut broker, &token, account, Amount::new(1000), "deposit-1")
        .await
        .unwrap();
    assert_eq!(balance.balance, Amount::new(1000));
    assert!(!balance.repeated);
    // A retry credits nothing more; the reference for another amount is
    // refused.
    let again = protocol::credit(&mut broker, &token, account, Amount::new(1000), "deposit-1")
        .await
        .unwrap();
    assert_eq!((again.balance, again.repeated), (Amount::new(1000), true));
    let reused = protocol::credit(&mut broker, &token, account, Amount::new(7), "deposit-1")
        .await
        .unwrap_err();
    assert_eq!(reused.reason(), Some("reference_reused"), "{reused}");
    let bought = protocol::buy_broker_scrip(
        &mut broker,
        info.suite,
        account,
        key.expose_bytes(),
        Amount::new(600),
    )
    .await
    .unwrap();
    assert_eq!(bought.balance, Amount::new(400));
    let exchanged = protocol::exchange(
        &mut broker,
        &bought.scrip,
        &bought.secret,
        &offer.vendor,
        Amount::new(100),
    )
    .await
    .unwrap();
    assert_eq!(exchanged.change.as_ref().unwrap().value(), Amount::new(500));

    // Pay three times, each time with the change of the last payment.
    let first = exchanged.vendor_scrip.clone();
    assert_eq!(first.suite(), suite);
    let secret = exchanged.vendor_secret;
    let mut scrip = first.clone();
    for (round, variant) in [Variant::Secure, Variant::Private, Variant::Clear]
        .into_iter()
        .enumerate()
    {
        let paid = protocol::pay(&mut vendor, &scrip, &secret, variant, &item.name)
            .await
            .unwrap();
        assert_eq!(paid.price, item.price);
        assert!(!paid.goods.is_empty());
        let change = paid.change.unwrap();
        assert_eq!(change.value(), Amount::new(100 - 10 * (round as u64 + 1)));
        assert_ne!(change.id(), scrip.id());
        scrip = change;
    }

    // Replayed: the first scrip, spent, with a different request.
    let replay = protocol::pay(&mut vendor, &first, &secret, Variant::Private, &item.name).await;
    assert_eq!(reason(&replay.unwrap_err()), "double_spend");

    // Tampered: the current change with its value raised, old certificate.
    let raised = ScripBody {
        value: Amount::new(1_000_000),
        ..scrip.body().clone()
    };
    let tampered = Scrip::decode(&raised.encode(), scrip.certificate().as_bytes()).unwrap();
    let refused = protocol::pay(&mut vendor, &tampered, &secret, Variant::Secure, &item.name).await;
    assert_eq!(reason(&refused.unwrap_err()), "bad_certificate");

    // The current change is still good after the refusals.
    let paid = protocol::pay(&mut vendor, &scrip, &secret, Variant::Secure, &item.name).await;
    assert_eq!(paid.unwrap().change.unwrap().value(), Amount::new(60));

    // Broker scrip already spent on the exchange cannot be spent again.
    let again = protocol::exchange(
        &mut broker,
        &bought.scrip,
        &bought.secret,
        &offer.vendor,
        Amount::new(50),
    )
    .await;
    assert_eq!(reason(&again.unwrap_err()), "double_spend");

    // The account shows the credit and the purchase, and nothing else.
    let statement = protocol::get_account(&mut broker, info.suite, account, key.expose_bytes())
        .await
        .unwrap();
    assert_eq!(statement.balance, Amount::new(400));

    network.shutdown().await.unwrap();
}

/// Payments on one `PayStream`, shared by concurrent payers: each gets its
/// own checked reply, and a replay on the stream is refused.
#[tokio::test]
async fn payers_share_a_payment_stream() {
    let network = LocalNetwork::start(None, Suite::DEFAULT).await.unwrap();
    let mut broker = connect_broker(&network.broker_url()).await.unwrap();
    let mut vendor = connect_vendor(&network.vendor_url()).await.unwrap();
    let offer = protocol::prices(&mut vendor).await.unwrap().remove(0);
    let item = offer
        .items
        .iter()
        .find(|item| item.price == Amount::new(1))
        .unwrap()
        .clone();
    let info = protocol::broker_info(&mut broker).await.unwrap();
    let (account, key) = protocol::open_account(&mut broker, info.suite)
        .await
        .unwrap();
    let token = network.operator_token().to_owned();
    protocol::credit(&mut broker, &token, account, Amount::new(100), "d")
        .await
        .unwrap();
    let stream = std::sync::Arc::new(
        millicent_client::stream::PaymentStream::open(&mut vendor)
            .await
            .unwrap(),
    );

    let mut payers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let bought = protocol::buy_broker_scrip(
            &mut broker,
            info.suite,
            account,
            key.expose_bytes(),
            Amount::new(20),
        )
        .await
        .unwrap();
        let exchanged = protocol::exchange(
            &mut broker,
            &bought.scrip,
            &bought.secret,
            &offer.vendor,
            Amount::new(20),
        )
        .await
        .unwrap();
        let (stream, item) = (stream.clone(), item.name.clone());
        payers.spawn(async move {
            let (first, secret) = (exchanged.vendor_scrip, exchanged.vendor_secret);
            let mut scrip = first.clone();
            for _ in 0..10 {
                let paid = stream
                    .pay(&scrip, &secret, Variant::Secure, &item)
                    .await
                    .unwrap();
                scrip = paid.change.unwrap();
            }
            assert_eq!(scrip.value(), Amount::new(10));
            let replay = stream.pay(&first, &secret, Variant::Private, &item).await;
            assert_eq!(reason(&replay.unwrap_err()), "double_spend");
        });
    }
    while let Some(payer) = payers.join_next().await {
        payer.unwrap();
    }
    drop(stream);
    network.shutdown().await.unwrap();
}

/// Scrip that a licensed minter made correctly but that has expired.
#[tokio::test]
async fn expired_scrip_is_refused_and_stays_unspent() {
    let network = LocalNetwork::start(None, Suite::DEFAULT).await.unwrap();
    let mut vendor = connect_vendor(&network.vendor_url()).await.unwrap();
    let offers = protocol::prices(&mut vendor).await.unwrap();
    let vendor_name = offers[0].vendor.clone();
    let item = offers[0].items[0].clone();

    let mut request = tonic::Request::new(wire::GrantLicenceRequest {
        vendor: vendor_name.as_str().to_owned(),
        broker: "test-minter".to_owned(),
    });
    let bearer = format!("Bearer {}", network.licence_token())
        .parse()
        .unwrap();
    request.metadata_mut().insert("authorization", bearer);
    let licence = vendor.grant_licence(request).await.unwrap().into_inner();
    let keys = key_ring(&vendor_name, &licence);

    let suite = Suite::from_id(licence.suite as u8).unwrap();
    let mint = |seq: u32, expires_at: u64| {
        keys.mint(ScripBody {
            suite,
            vendor: vendor_name.clone(),
            value: Amount::new(1000),
            id: ScripId::new(licence.series, seq),
            cust_id: millicent_core::CustId::new(licence.customer_selector as u16, 1).unwrap(),
            expires_at,
            properties: Properties::default(),
        })
        .unwrap()
    };
    let expired = mint(0, now_secs() - 1);
    let secret = keys.customer_secret(suite, expired.body().cust_id).unwrap();
    let refused = protocol::pay(&mut vendor, &expired, &secret, Variant::Secure, &item.name).await;
    assert_eq!(reason(&refused.unwrap_err()), "expired");

    // The same ID# with a valid expiry was never marked spent.
    let fresh = mint(0, now_secs() + 3600);
    protocol::pay(&mut vendor, &fresh, &secret, Variant::Secure, &item.name)
        .await
        .unwrap();

    network.shutdown().await.unwrap();
}

fn key_ring(vendor: &VendorName, licence: &wire::Licence) -> KeyRing {
    let suite = Suite::from_id(licence.suite as u8).unwrap();
    let mut keys = KeyRing::new(vendor.clone());
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
    keys
}

/// The demo's own check: whatever variant the customers pay in, every
/// customer's first scrip, presented again in another payment after the
/// run, is refused as a double spend, and none is taken for a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_refuses_every_replay_in_every_stamped_variant() {
    for variant in [Variant::Secure, Variant::Private] {
        let network = LocalNetwork::start(None, Suite::DEFAULT).await.unwrap();
        let plan = millicent_bench::load::LoadPlan {
            broker: network.broker_url(),
            vendor: network.vendor_url(),
            operator_token: network.operator_token().to_owned(),
            customers: 4,
            channels: 1,
            duration: std::time::Duration::from_millis(500),
            variant,
            scrip_value: Amount::new(1000),
            stop: Default::default(),
            stream: false,
        };
        let result = millicent_bench::load::run(&plan).await.unwrap();
        assert!(result.accepted > 0, "{variant:?}: nothing was paid");
        let replays = &result.replays;
        assert_eq!(
            (replays.attempted, replays.refused, replays.accepted),
            (4, 4, 0),
            "{variant:?}: {replays:?}"
        );
        network.shutdown().await.unwrap();
    }
}

/// A payment stream outlives its call: when the vendor node restarts, the
/// payment in flight fails with an unknown outcome, and sending it again on
/// the same `PaymentStream` opens a new call and gets it answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_stream_reopens_after_the_vendor_node_restarts() {
    use millicent_vendor::{RunningVendor, VendorConfig};

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = VendorConfig {
        listen: ([127, 0, 0, 1], port).into(),
        data_dir: dir.path().join("vendor"),
        licence_token: Some("licence".to_owned()),
        ..VendorConfig::default()
    };
    let node = RunningVendor::start(config.clone()).await.unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut vendor = connect_vendor(&url).await.unwrap();
    let offer = protocol::prices(&mut vendor).await.unwrap().remove(0);
    let item = offer.items[0].name.clone();
    let mut request = tonic::Request::new(wire::GrantLicenceRequest {
        vendor: offer.vendor.as_str().to_owned(),
        broker: "test-minter".to_owned(),
    });
    request
        .metadata_mut()
        .insert("authorization", "Bearer licence".parse().unwrap());
    let licence = vendor.grant_licence(request).await.unwrap().into_inner();
    let keys = key_ring(&offer.vendor, &licence);
    let suite = Suite::from_id(licence.suite as u8).unwrap();
    let mint = |seq: u32| {
        keys.mint(ScripBody {
            suite,
            vendor: offer.vendor.clone(),
            value: Amount::new(1000),
            id: ScripId::new(licence.series, seq),
            cust_id: millicent_core::CustId::new(licence.customer_selector as u16, 1).unwrap(),
            expires_at: now_secs() + 3600,
            properties: Properties::default(),
        })
        .unwrap()
    };
    let (first, second) = (mint(0), mint(1));
    let secret = keys.customer_secret(suite, first.body().cust_id).unwrap();
    let stream = millicent_client::stream::PaymentStream::open(&mut vendor)
        .await
        .unwrap();
    stream
        .pay(&first, &secret, Variant::Secure, &item)
        .await
        .unwrap();

    node.shutdown().await.unwrap();
    let node = RunningVendor::start(config).await.unwrap();
    let mut tries = 0;
    let paid = loop {
        tries += 1;
        match stream.pay(&second, &secret, Variant::Secure, &item).await {
            Ok(paid) => break paid,
            Err(error) => {
                assert!(error.outcome_unknown(), "try {tries}: {error}");
                assert!(tries < 20, "the stream never came back: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    let price = offer.items[0].price.units();
    assert_eq!(paid.change.unwrap().value(), Amount::new(1000 - price));
    // The node kept the first payment's spend across the restart.
    let replay = stream.pay(&first, &secret, Variant::Private, &item).await;
    assert_eq!(reason(&replay.unwrap_err()), "double_spend");
    drop(stream);
    node.shutdown().await.unwrap();
}
