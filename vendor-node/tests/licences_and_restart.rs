//! Licences need the operator's token; everything a node accepted survives a
//! restart on the same store.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use common::*;
use millicent_core::{Scrip, Suite, Variant};
use millicent_ledger::{Durability, Ledger};
use millicent_vendor::RunningVendor;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_licence_needs_the_token_and_a_refusal_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Harness { node, mut client } = start(config(dir.path())).await;

    for token in [None, Some("wrong-token"), Some("")] {
        let status = ask_licence(&mut client, "news.example", token)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
        assert_eq!(reason(&status), "unauthenticated");
        assert!(!status.message().contains(TOKEN));
    }
    let status = ask_licence(&mut client, "nobody.example", Some(TOKEN))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::NotFound, "unknown_vendor")
    );

    // The refused requests allocated nothing: the first licence has the
    // first series after the node's change series, and the first selector.
    let first = ask_licence(&mut client, "news.example", Some(TOKEN))
        .await
        .unwrap();
    assert_eq!((first.series, first.customer_selector), (2, 1));
    assert_eq!(first.vendor, "news.example");
    assert_eq!(first.suite, 1);
    assert_eq!(first.master_scrip_secret.len(), 32);
    let lifetime = first.expires_at - now();
    assert!(lifetime.abs_diff(30 * 24 * 3600) < 60, "{lifetime}");

    // Each licence has its own series, selector and secrets.
    let second = ask_licence(&mut client, "news.example", Some(TOKEN))
        .await
        .unwrap();
    assert_eq!((second.series, second.customer_selector), (3, 2));
    assert_ne!(second.master_scrip_secret, first.master_scrip_secret);
    assert_ne!(second.master_customer_secret, first.master_customer_secret);
    node.shutdown().await.unwrap();

    // A node without a token grants nothing, whatever is presented.
    let mut open = config(dir.path());
    open.licence_token = None;
    let Harness { node, mut client } = start(open).await;
    let status = ask_licence(&mut client, "news.example", Some(TOKEN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("no licence_token"));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spends_replies_keys_and_change_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Harness { node, mut client } = start(config(dir.path())).await;
    let mut broker = Broker::licensed(&mut client, "news.example").await;

    // A spent scrip and its reply.
    let spent = broker.mint(100);
    let secret = broker.secret(&spent);
    let payment = broker.payment(&spent, Variant::Secure, "article-1");
    let (first_reply, _, _) = pay_ok(&mut client, &payment, &secret).await;

    // Change made before the restart, left unspent.
    let mut issued = HashSet::new();
    let mut unspent_change = Vec::new();
    for _ in 0..5 {
        let scrip = broker.mint(50);
        let payment = broker.payment(&scrip, Variant::Clear, "headline");
        let (_, _, change) = pay_ok(&mut client, &payment, &broker.secret(&scrip)).await;
        let change = change.unwrap();
        issued.insert(change.id());
        unspent_change.push(change);
    }
    node.shutdown().await.unwrap();

    let Harness { node, mut client } = start(config(dir.path())).await;

    // The retry still gets the same reply; another request is refused.
    let (again, _, _) = pay_ok(&mut client, &payment, &secret).await;
    assert_eq!(again, first_reply);
    let other = broker.payment(&spent, Variant::Secure, "headline");
    let status = client.pay(pay_request(&other)).await.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::AlreadyExists, "double_spend")
    );

    // The licence is still honoured and the old change still spends; no
    // change ID# issued before the restart is issued again.
    let fresh = broker.mint(100);
    let before_max = issued.iter().map(|id| id.seq()).max().unwrap();
    let mut spend_and_collect = |change: Option<Scrip>| {
        let change = change.unwrap();
        assert!(
            issued.insert(change.id()),
            "change ID# {} reused",
            change.id()
        );
        assert!(change.id().seq() > before_max);
    };
    let payment = broker.payment(&fresh, Variant::Private, "headline");
    let (_, goods, change) = pay_ok(&mut client, &payment, &broker.secret(&fresh)).await;
    assert_eq!(goods, b"Headline");
    spend_and_collect(change);
    for change in &unspent_change {
        let payment = broker.payment(change, Variant::Secure, "headline");
        let (_, _, new_change) = pay_ok(&mut client, &payment, &broker.secret(change)).await;
        spend_and_collect(new_change);
    }

    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failed_start_leaves_the_store_reusable() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut busy = config(dir.path());
    busy.listen = taken.local_addr().unwrap();
    let error = RunningVendor::start(busy).await.unwrap_err();
    assert!(error.to_string().contains("cannot listen"), "{error}");

    let Harness { node, .. } = start(config(dir.path())).await;
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn unreadable_keys_stop_the_start_and_release_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let Harness { node, .. } = start(config(dir.path())).await;
    node.shutdown().await.unwrap();

    // Damage the record of news.example's change series (series 1).
    let mut key = vec![b'S', 12];
    key.extend_from_slice(b"news.example");
    key.extend_from_slice(&1u32.to_be_bytes());
    let store = dir.path().join("store");
    let ledger = Ledger::open(&store, Durability::Strict).unwrap();
    let keys = ledger.table("keys").unwrap();
    let good = keys.get(&key).unwrap().unwrap();
    keys.insert(&key, b"junk").unwrap();
    ledger.commit().await.unwrap();
    drop(keys);
    ledger.close().await.unwrap();

    let error = RunningVendor::start(config(dir.path())).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("series 1 of vendor news.example"),
        "{error}"
    );

    // The failed start released the store: it can be repaired and used.
    let ledger = Ledger::open(&store, Durability::Strict).unwrap();
    let keys = ledger.table("keys").unwrap();
    keys.insert(&key, good).unwrap();
    ledger.commit().await.unwrap();
    drop(keys);
    ledger.close().await.unwrap();
    let Harness { node, .. } = start(config(dir.path())).await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_durability_serves_and_a_clean_stop_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let relaxed = millicent_vendor::VendorConfig {
        durability: millicent_vendor::DurabilityMode::Relaxed,
        checkpoint_interval_ms: 50,
        ..config(dir.path())
    };
    let Harness { node, mut client } = start(relaxed.clone()).await;
    let mut broker = Broker::licensed(&mut client, "news.example").await;
    let scrip = broker.mint(100);
    let secret = broker.secret(&scrip);
    let payment = broker.payment(&scrip, Variant::Secure, "article-1");
    let (first, _, _) = pay_ok(&mut client, &payment, &secret).await;
    node.shutdown().await.unwrap();

    // A clean stop flushes: the licence, the spend and its reply are kept,
    // in either mode.
    let Harness { node, mut client } = start(config(dir.path())).await;
    let (again, _, _) = pay_ok(&mut client, &payment, &secret).await;
    assert_eq!(again, first);
    let other = broker.payment(&scrip, Variant::Secure, "headline");
    let status = client.pay(pay_request(&other)).await.unwrap_err();
    assert_eq!(reason(&status), "double_spend");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_moving_to_another_suite_keeps_paying_scrip_of_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let Harness { node, mut client } = start(config(dir.path())).await;
    let mut classic = Broker::licensed(&mut client, "news.example").await;
    assert_eq!(classic.suite, Suite::Classic);
    let old = classic.mint(100);
    let unpaid = classic.mint(100);
    node.shutdown().await.unwrap();

    // news.example moves to the modern suite and still takes classic scrip.
    let mut moved = config(dir.path());
    moved.vendors[0].suite = "modern".to_owned();
    moved.vendors[0].accept_suites = vec!["modern".to_owned(), "classic".to_owned()];
    let Harness { node, mut client } = start(moved.clone()).await;

    // Classic scrip pays, and its change is classic too: the customer
    // secret that spends it is a classic one.
    let secret = classic.secret(&old);
    let payment = classic.payment(&old, Variant::Secure, "article-1");
    let (_, _, change) = pay_ok(&mut client, &payment, &secret).await;
    let change = change.unwrap();
    assert_eq!(change.suite(), Suite::Classic);
    let payment = classic.payment(&change, Variant::Private, "article-1");
    let (_, goods, change) = pay_ok(&mut client, &payment, &secret).await;
    assert_eq!(goods, b"The text of article 1");
    assert_eq!(change.unwrap().value(), millicent_core::Amount::new(80));

    // New licences, and the change of their scrip, are modern.
    let mut modern = Broker::licensed(&mut client, "news.example").await;
    assert_eq!(modern.suite, Suite::Modern);
    let fresh = modern.mint(100);
    let secret = modern.secret(&fresh);
    let payment = modern.payment(&fresh, Variant::Secure, "article-1");
    let (_, _, change) = pay_ok(&mut client, &payment, &secret).await;
    assert_eq!(change.unwrap().suite(), Suite::Modern);
    node.shutdown().await.unwrap();

    // Classic cannot leave the list while its series are live: the node
    // would strand the scrip in customers' wallets, so it does not start.
    let mut modern_only = moved.clone();
    modern_only.vendors[0].accept_suites = Vec::new();
    let error = match RunningVendor::start(modern_only).await {
        Ok(_) => panic!("a node dropping live classic scrip started"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("live classic scrip"), "{error}");
    assert!(error.contains("accept_suites"), "{error}");

    let Harness { node, mut client } = start(moved).await;
    let secret = classic.secret(&unpaid);
    let payment = classic.payment(&unpaid, Variant::Secure, "article-1");
    pay_ok(&mut client, &payment, &secret).await;
    node.shutdown().await.unwrap();
}
