//! Payments over real gRPC: every variant, change, retries, double spends,
//! and every kind of bad input, each refused without spending the scrip.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use millicent_core::scrip::ScripBody;
use millicent_core::{Amount, MasterSecret, Scrip, SeriesKey, Variant};
use millicent_proto as wire;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_variant_pays_and_its_change_pays_again() {
    let dir = tempfile::tempdir().unwrap();
    let Harness { node, mut client } = start(config(dir.path())).await;
    let mut broker = Broker::licensed(&mut client, "news.example").await;

    for variant in Variant::ALL {
        let scrip = broker.mint(100);
        let secret = broker.secret(&scrip);
        let payment = broker.payment(&scrip, variant, "article-1");
        let (wire_reply, goods, change) = pay_ok(&mut client, &payment, &secret).await;
        assert_eq!(goods, b"The text of article 1", "{variant:?}");
        assert_eq!(wire_reply.price, 10);
        assert_eq!(wire_reply.reply_stamp.is_empty(), variant == Variant::Clear);
        assert_eq!(wire_reply.goods == goods, variant != Variant::Private);

        // Change is worth the rest, for the same customer, in the node's
        // own change series, so the same customer secret spends it.
        let change = change.unwrap();
        assert_eq!(change.value(), Amount::new(90));
        assert_eq!(change.body().cust_id, scrip.body().cust_id);
        assert_ne!(change.id().series(), broker.series);

        let payment = broker.payment(&change, variant, "article-1");
        let (_, goods, change) = pay_ok(&mut client, &payment, &secret).await;
        assert_eq!(goods, b"The text of article 1");
        assert_eq!(change.unwrap().value(), Amount::new(80));
    }

    // Scrip worth exactly the price gets no change.
    let scrip = broker.mint(10);
    let secret = broker.secret(&scrip);
    let payment = broker.payment(&scrip, Variant::Secure, "article-1");
    let (wire_reply, _, change) = pay_ok(&mut client, &payment, &secret).await;
    assert!(change.is_none() && wire_reply.change.is_none());

    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_gets_the_same_reply_and_another_request_is_a_double_spend() {
    let dir = tempfile::tempdir().unwrap();
    let Harness { node, mut client } = start(config(dir.path())).await;
    let mut broker = Broker::licensed(&mut client, "news.example").await;

    for variant in Variant::ALL {
        let scrip = broker.mint(100);
        let secret = broker.secret(&scrip);
        let payment = broker.payment(&scrip, variant, "article-1");
        let (first, _, _) = pay_ok(&mut client, &payment, &secret).await;
        let (again, _, _) = pay_ok(&mut client, &payment, &secret).await;
        assert_eq!(first, again, "{variant:?}");

        let other = broker.payment(&scrip, variant, "headline");
        let (code, reason) = pay_refused(&mut client, pay_request(&other)).await;
        assert_eq!(
            (code, reason.as_str()),
            (Code::AlreadyExists, "double_spend")
        );
    }

    // A private retry sealed afresh (another nonce) carries the same request
    // stamp, so it is the same payment.
    let scrip = broker.mint(100);
    let secret = broker.secret(&scrip);
    let payment = broker.payment(&scrip, Variant::Private, "article-1");
    let (first, _, _) = pay_ok(&mut client, &payment, &secret).await;
    let resealed = millicent_core::Payment::prepare(
        scrip.clone(),
        &secret,
        Variant::Private,
        b"article-1",
        &[9; 8],
    )
    .unwrap();
    assert_ne!(resealed.request, payment.request);
    let (again, _, _) = pay_ok(&mut client, &resealed, &secret).await;
    assert_eq!(first, again);

    // The same item in another variant has the same request stamp but is
    // another payment: the recorded private reply would not fit it.
    let secure = broker.payment(&scrip, Variant::Secure, "article-1");
    assert_eq!(secure.request_stamp, payment.request_stamp);
    let (code, reason) = pay_refused(&mut client, pay_request(&secure)).await;
    assert_eq!(
        (code, reason.as_str()),
        (Code::AlreadyExists, "double_spend")
    );

    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payments_are_refused_and_spend_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Harness { node, mut client } = start(config(dir.path())).await;
    let mut broker = Broker::licensed(&mut client, "news.example").await;
    let refused = |code: Code, reason: &str| (code, reason.to_owned());

    // Forged certificate, then the genuine scrip of the same ID#.
    let scrip = broker.mint(100);
    let mut request = pay_request(&broker.payment(&scrip, Variant::Secure, "article-1"));
    request.scrip.as_mut().unwrap().certificate = vec![0; 16];
    assert_eq!(
        pay_refused(&mut client, request).await,
        refused(Code::PermissionDenied, "bad_certificate")
    );
    pays(&mut client, &broker, &scrip).await;

    // Tampered value under the original certificate.
    let scrip = broker.mint(5);
    let tampered = ScripBody {
        value: Amount::new(1000),
        ..scrip.body().clone()
    };
    let mut request = pay_request(&broker.payment(&scrip, Variant::Clear, "archive"));
    request.scrip.as_mut().unwrap().body = tampered.encode();
    assert_eq!(
        pay_refused(&mut client, request).await,
        refused(Code::PermissionDenied, "bad_certificate")
    );
    pays(&mut client, &broker, &scrip).await;

    // Wrong customer secret: a thief holding the scrip but not the secret.
    let scrip = broker.mint(100);
    let other = broker.mint(100);
    let wrong = broker.secret(&other);
    let theft = millicent_core::Payment::prepare(
        scrip.clone(),
        &wrong,
        Variant::Secure,
        b"article-1",
        &nonce(scrip.suite()),
    )
    .unwrap();
    assert_eq!(
        pay_refused(&mut client, pay_request(&theft)).await,
        refused(Code::PermissionDenied, "bad_request_stamp")
    );
    pays(&mut client, &broker, &scrip).await;

    // A tampered request under a genuine stamp.
    let scrip = broker.mint(100);
    let mut request = pay_request(&broker.payment(&scrip, Variant::Secure, "headline"));
    request.request = b"archive".to_vec();
    assert_eq!(
        pay_refused(&mut client, request).await,
        refused(Code::PermissionDenied, "bad_request_stamp")
    );
    pays(&mut client, &broker, &scrip).await;

    // Expired scrip; the same ID# with a valid expiry then pays.
    let body = broker.body(100);
    let expired = broker.certify(ScripBody {
        expires_at: now() - 1,
        ..body.clone()
    });
    let request = pay_request(&broker.payment(&expired, Variant::Secure, "article-1"));
    assert_eq!(
        pay_refused(&mut client, request).await,
        refused(Code::FailedPrecondition, "expired")
    );
    pays(&mut client, &broker, &broker.certify(body)).await;

    // Scrip claiming to outlive its series.
    let body = broker.body(100);
    let longer = Broker::from_licence(&wire::Licence {
        expires_at: broker.expires_at + 1000,
        ..licence_of(&broker)
    });
    let outliving = longer.keys.mint(ScripBody {
        expires_at: broker.expires_at + 10,
        ..body.clone()
    });
    let request = pay_request(&longer.payment(&outliving.unwrap(), Variant::Secure, "headline"));
    assert_eq!(
        pay_refused(&mut client, request).await,
        refused(Code::PermissionDenied, "outlives_series")
    );
    pays(&mut client, &broker, &broker.certify(body)).await;

    // Value below the price, then a cheaper item.
    let scrip = broker.mint(5);
    let request = pay_request(&broker.payment(&scrip, Variant::Secure, "archive"));
    assert_eq!(
        pay_refused(&mut client, request).await,
        refused(Code::FailedPrecondition, "insufficient_value")
    );
    pays(&mut client, &broker, &scrip).await;

    // Unknown item, in the clear and sealed.
    let scrip = broker.mint(100);
    for variant in [Variant::Clear, Variant::Private] {
        let request = pay_request(&broker.payment(&scrip, variant, "no-such-item"));
        assert_eq!(
            pay_refused(&mut client, request).await,
            refused(Code::NotFound, "unknown_item")
        );
    }
    pays(&mut client, &broker, &scrip).await;

    // Malformed body and unspecified variant.
    let scrip = broker.mint(100);
    let mut request = pay_request(&broker.payment(&scrip, Variant::Clear, "headline"));
    request.scrip.as_mut().unwrap().body.truncate(10);
    assert_eq!(
        pay_refused(&mut client, request).await,
        refused(Code::InvalidArgument, "malformed")
    );
    let mut request = pay_request(&broker.payment(&scrip, Variant::Clear, "headline"));
    request.variant = wire::Variant::Unspecified as i32;
    assert_eq!(
        pay_refused(&mut client, request).await,
        refused(Code::InvalidArgument, "malformed")
    );
    let mut request = pay_request(&broker.payment(&scrip, Variant::Secure, "headline"));
    request.request_stamp.clear();
    assert_eq!(
        pay_refused(&mut client, request).await,
        refused(Code::InvalidArgument, "variant_mismatch")
    );
    pays(&mut client, &broker, &scrip).await;

    // Oversized request.
    let scrip = broker.mint(100);
    let mut request = pay_request(&broker.payment(&scrip, Variant::Clear, "headline"));
    request.request = vec![b'x'; millicent_core::payment::MAX_REQUEST_LEN + 1];
    assert_eq!(
        pay_refused(&mut client, request).await,
        refused(Code::InvalidArgument, "too_large")
    );
    pays(&mut client, &broker, &scrip).await;

    // A message beyond the gRPC size limit is refused by the transport.
    let mut request = pay_request(&broker.payment(&scrip, Variant::Clear, "headline"));
    request.request = vec![b'x'; millicent_vendor::MAX_MESSAGE_BYTES + 1];
    let status = client.pay(request).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);

    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrip_goes_only_to_its_own_vendor_and_variants() {
    let dir = tempfile::tempdir().unwrap();
    let Harness { node, mut client } = start(config(dir.path())).await;
    let news = ask_licence(&mut client, "news.example", Some(TOKEN))
        .await
        .unwrap();

    // Scrip naming a vendor the node does not serve.
    let mut nobody = Broker::for_vendor(&news, "nobody.example");
    let scrip = nobody.mint(100);
    let request = pay_request(&nobody.payment(&scrip, Variant::Secure, "article-1"));
    assert_eq!(
        pay_refused(&mut client, request).await,
        (Code::NotFound, "unknown_vendor".to_owned())
    );

    // Scrip for another vendor of this node, certified with news.example's
    // classic licence: shop.example takes modern scrip only.
    let mut misused = Broker::for_vendor(&news, "shop.example");
    let scrip = misused.mint(100);
    let request = pay_request(&misused.payment(&scrip, Variant::Secure, "pencil"));
    assert_eq!(
        pay_refused(&mut client, request).await,
        (Code::PermissionDenied, "suite_not_accepted".to_owned())
    );

    // Scrip of shop.example's suite in a series the vendor never made.
    let mut shop = Broker::licensed(&mut client, "shop.example").await;
    let mut forger = Broker::licensed(&mut client, "shop.example").await;
    forger.series += 1000;
    forger.keys.add_series(SeriesKey {
        series: forger.series,
        suite: forger.suite,
        expires_at: forger.expires_at,
        secret: MasterSecret::new(forger.suite, [7; 32]),
    });
    let scrip = forger.mint(100);
    let request = pay_request(&forger.payment(&scrip, Variant::Secure, "pencil"));
    assert_eq!(
        pay_refused(&mut client, request).await,
        (Code::PermissionDenied, "unknown_series".to_owned())
    );

    // A variant the vendor does not take, then one it does.
    let scrip = shop.mint(10);
    let request = pay_request(&shop.payment(&scrip, Variant::Clear, "pencil"));
    assert_eq!(
        pay_refused(&mut client, request).await,
        (Code::FailedPrecondition, "variant_not_accepted".to_owned())
    );
    let secret = shop.secret(&scrip);
    let payment = shop.payment(&scrip, Variant::Secure, "pencil");
    let (_, goods, change) = pay_ok(&mut client, &payment, &secret).await;
    assert_eq!(goods, b"A pencil");
    assert_eq!(change.unwrap().value(), Amount::new(7));

    // The same series number at another vendor is another series: scrip
    // of news.example with the ID# just spent at shop.example still pays.
    let mut news_broker = Broker::from_licence(&news);
    let same_id = news_broker.mint(100);
    assert_eq!(same_id.id(), scrip.id());
    pays(&mut client, &news_broker, &same_id).await;

    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_payments_with_one_scrip_accept_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let Harness { node, mut client } = start(config(dir.path())).await;
    let mut broker = Broker::licensed(&mut client, "news.example").await;

    let scrip = broker.mint(100);
    let items = ["headline", "article-1", "archive"];
    let mut tasks = Vec::new();
    for round in 0..30 {
        let mut client = client.clone();
        let request = pay_request(&broker.payment(&scrip, Variant::Secure, items[round % 3]));
        tasks.push(tokio::spawn(async move { client.pay(request).await }));
    }
    let mut accepted = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(reply) => accepted.push(reply.into_inner()),
            Err(status) => assert_eq!(reason(&status), "double_spend"),
        }
    }
    // Retries of the winning request all get its reply; no other request
    // is accepted.
    assert!(!accepted.is_empty());
    assert!(accepted.iter().all(|reply| *reply == accepted[0]));

    // Many different scrip at once: every change ID# is distinct.
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let mut client = client.clone();
        let scrip = broker.mint(50);
        let request = pay_request(&broker.payment(&scrip, Variant::Clear, "headline"));
        tasks.push(tokio::spawn(async move { client.pay(request).await }));
    }
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let reply = task.await.unwrap().unwrap().into_inner();
        let change = reply.change.unwrap();
        let change = Scrip::decode(&change.body, &change.certificate).unwrap();
        assert!(ids.insert(change.id()));
    }
    assert_eq!(ids.len(), 200);

    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn prices_list_every_vendor() {
    let dir = tempfile::tempdir().unwrap();
    let Harness { node, mut client } = start(config(dir.path())).await;
    let prices = client
        .get_prices(wire::GetPricesRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = prices.vendors.iter().map(|v| v.vendor.as_str()).collect();
    assert_eq!(names, ["news.example", "shop.example"]);
    let shop = &prices.vendors[1];
    assert_eq!(shop.items[0].name, "pencil");
    assert_eq!(shop.items[0].price, 3);
    assert_eq!(
        shop.variants,
        [wire::Variant::Secure as i32, wire::Variant::Private as i32]
    );
    assert_eq!(shop.suites, [2]);
    node.shutdown().await.unwrap();
}

/// Checks that `scrip` (unspent, worth at least 1) pays for the headline.
async fn pays(
    client: &mut millicent_proto::vendor_service_client::VendorServiceClient<
        tonic::transport::Channel,
    >,
    broker: &Broker,
    scrip: &Scrip,
) {
    let secret = broker.secret(scrip);
    let payment = broker.payment(scrip, Variant::Secure, "headline");
    let (_, goods, _) = pay_ok(client, &payment, &secret).await;
    assert_eq!(goods, b"Headline");
}

/// The licence a broker was built from, for deriving variants of it.
fn licence_of(broker: &Broker) -> wire::Licence {
    let series = broker.keys.series(broker.series).unwrap();
    let customer = broker.keys.customer_key(broker.selector).unwrap();
    wire::Licence {
        vendor: broker.keys.vendor().as_str().to_owned(),
        suite: u32::from(series.suite.id()),
        series: broker.series,
        expires_at: series.expires_at,
        master_scrip_secret: series.secret.expose_bytes().to_vec(),
        customer_selector: u32::from(broker.selector),
        master_customer_secret: customer.secret.expose_bytes().to_vec(),
        id_limit: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clear_variant_pays_only_up_to_the_vendors_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut limited = config(dir.path());
    limited.vendors[0].clear_max_price = Some(10);
    let Harness { node, mut client } = start(limited).await;
    let mut broker = Broker::licensed(&mut client, "news.example").await;

    // Up to the limit, clear pays; above it, clear is refused and the
    // scrip stays unspent for a stamped variant.
    for item in ["headline", "article-1"] {
        let scrip = broker.mint(100);
        let payment = broker.payment(&scrip, Variant::Clear, item);
        pay_ok(&mut client, &payment, &broker.secret(&scrip)).await;
    }
    let scrip = broker.mint(100);
    let request = pay_request(&broker.payment(&scrip, Variant::Clear, "archive"));
    let status = client.pay(request).await.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::FailedPrecondition, "variant_not_accepted")
    );
    assert!(
        status.message().contains("only for prices up to 10") && status.message().contains("100"),
        "{}",
        status.message()
    );
    let payment = broker.payment(&scrip, Variant::Secure, "archive");
    let (_, goods, _) = pay_ok(&mut client, &payment, &broker.secret(&scrip)).await;
    assert_eq!(goods, b"The archive");

    // GetPrices lists, for each item, the variants that pay for it.
    let prices = client
        .get_prices(wire::GetPricesRequest {})
        .await
        .unwrap()
        .into_inner();
    let all = vec![1, 2, 3];
    let stamped = vec![2, 3];
    let variants: Vec<(&str, &Vec<i32>)> = prices
        .vendors
        .iter()
        .flat_map(|vendor| vendor.items.iter())
        .map(|item| (item.name.as_str(), &item.variants))
        .collect();
    assert_eq!(
        variants,
        [
            ("headline", &all),
            ("article-1", &all),
            ("archive", &stamped),
            ("pencil", &stamped)
        ]
    );
    assert_eq!(prices.vendors[0].variants, all);

    node.shutdown().await.unwrap();
}
