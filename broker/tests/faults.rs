//! Faults at the broker: replayed and forged account calls, spending more
//! than there is, broker scrip used twice, refunds, minting beyond a
//! licence and races for one piece of scrip. Each is refused with its
//! reason or happens exactly once, and every test ends with the books
//! audited, live and offline.

// In test code a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;

use millicent_broker::{BrokerConfig, RunningBroker};
use millicent_core::broker::account_shard;
use millicent_proto as proto;
use support::*;
use tonic::Code;

#[tokio::test]
async fn replayed_and_forged_account_calls_change_nothing_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, mut client) = start(dir.path(), None).await;
    let account = open_account(&mut client).await;
    let other = open_account(&mut client).await;
    credit(&mut client, account.id, 100, "r").await;

    let nonce = random_nonce();
    let request = buy_request(&account, 30, nonce);
    let first = client
        .buy_broker_scrip(request.clone())
        .await
        .unwrap()
        .into_inner();
    broker.shutdown().await.unwrap();

    // The call record survives the restart: the replay gets the first reply.
    let (broker, mut client) = start(dir.path(), None).await;
    let again = client
        .buy_broker_scrip(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    assert_eq!(balance(&mut client, &account).await, 70);

    // The same nonce for another method is another call, and refused.
    let reused = proto::GetAccountRequest {
        auth: Some(auth(&account, "GetAccount", &[], now_ms(), nonce)),
    };
    let result = client.get_account(reused).await;
    assert_refused(result, Code::Unauthenticated, "unauthenticated");

    // A call signed with another account's key, or for another account.
    let mut forged = buy_request(&other, 10, random_nonce());
    forged.auth.as_mut().unwrap().account_id = account.id;
    let result = client.buy_broker_scrip(forged).await;
    assert_refused(result, Code::Unauthenticated, "unauthenticated");
    let mut swapped = buy_request(&account, 10, random_nonce());
    swapped.auth.as_mut().unwrap().nonce[0] ^= 1;
    let result = client.buy_broker_scrip(swapped).await;
    assert_refused(result, Code::Unauthenticated, "unauthenticated");

    // Too far in the future is as stale as too far in the past.
    let ahead = proto::BuyBrokerScripRequest {
        auth: Some(auth(
            &account,
            "BuyBrokerScrip",
            &10u64.to_be_bytes(),
            now_ms() + 301_000,
            random_nonce(),
        )),
        amount: 10,
    };
    let result = client.buy_broker_scrip(ahead).await;
    assert_refused(result, Code::Unauthenticated, "stale_timestamp");

    assert_eq!(balance(&mut client, &account).await, 70);
    assert_eq!(balance(&mut client, &other).await, 0);
    let report = assert_live_audit_clean(&mut client).await;
    assert_eq!(report.shards[0].accounts, 2);
    broker.shutdown().await.unwrap();
    let audit = assert_audit_clean(dir.path()).await;
    let shard = &audit.shards[0];
    assert_eq!(shard.balances["cash"], 100);
    assert_eq!(shard.balances["customer"], -70);
    assert_eq!(shard.balances["broker_scrip"], -30);
}

#[tokio::test]
async fn racing_exchanges_of_one_piece_spend_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = TestVendor::start().await;
    let (broker, mut client) = start(dir.path(), Some(&vendor)).await;
    let (_, held) = funded(&mut client, 50, 0).await;

    let mut tasks = Vec::new();
    for value in 1..=12 {
        let mut client = client.clone();
        let (request, _) = exchange_request(&held, VENDOR, value);
        tasks.push(tokio::spawn(async move { client.exchange(request).await }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(status) => assert_eq!(reason(&status), "double_spend", "{status:?}"),
        }
    }
    assert_eq!(won, 1);

    // More than the scrip is worth is refused, and spends nothing.
    let (_, other) = funded(&mut client, 20, 5).await;
    let (request, _) = exchange_request(&other, VENDOR, 21);
    assert_refused(
        client.exchange(request).await,
        Code::FailedPrecondition,
        "insufficient_value",
    );
    let (request, payment) = exchange_request(&other, VENDOR, 20);
    let reply = client.exchange(request).await.unwrap().into_inner();
    check_exchange_reply(&other, &payment, &reply, &vendor);

    assert_live_audit_clean(&mut client).await;
    broker.shutdown().await.unwrap();
    assert_audit_clean(dir.path()).await;
}

#[tokio::test]
async fn refunded_broker_scrip_is_balance_again_and_spent_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = TestVendor::start().await;
    let (broker, mut client) = start(dir.path(), Some(&vendor)).await;
    let (account, held) = funded(&mut client, 40, 60).await;

    // A refund to an account that does not exist spends nothing.
    let missing = refund_request(&held, account.id + 100);
    assert_refused(
        client.refund(missing).await,
        Code::NotFound,
        "unknown_account",
    );

    let request = refund_request(&held, account.id);
    let refunded = client.refund(request.clone()).await.unwrap().into_inner();
    assert_eq!(
        (refunded.account_id, refunded.credited, refunded.balance),
        (account.id, 40, 100)
    );
    let retried = client.refund(request).await.unwrap().into_inner();
    assert_eq!(retried, refunded);
    assert_eq!(balance(&mut client, &account).await, 100);

    // Refunded scrip is spent: neither another refund nor an exchange.
    let other = open_account(&mut client).await;
    assert_refused(
        client.refund(refund_request(&held, other.id)).await,
        Code::AlreadyExists,
        "double_spend",
    );
    let (exchange, _) = exchange_request(&held, VENDOR, 5);
    assert_refused(
        client.exchange(exchange).await,
        Code::AlreadyExists,
        "double_spend",
    );

    // Change is broker scrip like any other: it can be refunded too.
    let more = buy(&mut client, &account, 30).await.unwrap();
    let (request, payment) = exchange_request(&more, VENDOR, 12);
    let reply = client.exchange(request).await.unwrap().into_inner();
    let change = check_exchange_reply(&more, &payment, &reply, &vendor)
        .change
        .unwrap();
    let refunded = client
        .refund(refund_request(&change, account.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((refunded.credited, refunded.balance), (18, 88));

    let statement = statement(&mut client, &account).await;
    let kinds: Vec<&str> = statement.entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "credit",
            "buy_broker_scrip",
            "refund",
            "buy_broker_scrip",
            "refund"
        ]
    );
    assert_eq!(statement.entries[2].delta, 40);

    assert_live_audit_clean(&mut client).await;
    broker.shutdown().await.unwrap();
    let audit = assert_audit_clean(dir.path()).await;
    // What was credited is in the accounts or sold as vendor scrip.
    let shard = &audit.shards[0];
    assert_eq!(shard.balances["cash"], 100);
    assert_eq!(shard.balances["customer"], -88);
    assert_eq!(shard.balances["vendor_scrip"], -12);
}

#[tokio::test]
async fn scrip_of_one_shard_is_refunded_only_to_an_account_of_that_shard() {
    let dir = tempfile::tempdir().unwrap();
    let broker = RunningBroker::start(BrokerConfig {
        shards: vec![0, 1],
        ..config(dir.path(), None)
    })
    .await
    .unwrap();
    let mut client = connect(broker.addr()).await;
    let (first, held) = funded(&mut client, 10, 0).await;
    let second = open_account(&mut client).await;
    assert_ne!(account_shard(first.id), account_shard(second.id));
    assert_eq!(
        millicent_core::broker::scrip_shard(held.scrip.id()),
        account_shard(first.id)
    );

    assert_refused(
        client.refund(refund_request(&held, second.id)).await,
        Code::FailedPrecondition,
        "other_shard",
    );
    let refunded = client
        .refund(refund_request(&held, first.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refunded.balance, 10);

    let report = assert_live_audit_clean(&mut client).await;
    assert_eq!(report.shards.len(), 2);
    broker.shutdown().await.unwrap();
    assert_audit_clean(dir.path()).await;
}

/// Exchanges `held` for one unit of vendor scrip; returns what was minted
/// and the change.
async fn exchange_one(client: &mut Client, held: &Held, vendor: &TestVendor) -> Exchanged {
    let (request, payment) = exchange_request(held, VENDOR, 1);
    let reply = client.exchange(request).await.unwrap().into_inner();
    check_exchange_reply(held, &payment, &reply, vendor)
}

#[tokio::test]
async fn a_licence_is_never_minted_beyond_and_a_new_one_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = TestVendor::start().await;
    vendor
        .id_limit
        .store(3, std::sync::atomic::Ordering::SeqCst);
    let (broker, mut client) = start(dir.path(), Some(&vendor)).await;
    let (_, mut held) = funded(&mut client, 100, 0).await;

    let mut minted = Vec::new();
    for _ in 0..6 {
        let exchanged = exchange_one(&mut client, &held, &vendor).await;
        minted.push(exchanged.vendor_scrip.scrip.id());
        held = exchanged.change.unwrap();
    }
    let seqs: Vec<(u32, u32)> = minted.iter().map(|id| (id.series(), id.seq())).collect();
    assert_eq!(
        seqs,
        [
            (LICENCE_SERIES, 0),
            (LICENCE_SERIES, 1),
            (LICENCE_SERIES, 2),
            (LICENCE_SERIES + 1, 0),
            (LICENCE_SERIES + 1, 1),
            (LICENCE_SERIES + 1, 2),
        ]
    );
    assert_eq!(vendor.grants(), 2);

    // With the second licence used up and the node down, nothing is
    // minted and nothing is spent: the same exchange works later.
    vendor.set_available(false);
    let (request, payment) = exchange_request(&held, VENDOR, 1);
    assert_refused(
        client.exchange(request.clone()).await,
        Code::Unavailable,
        "vendor_unavailable",
    );
    vendor.set_available(true);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let reply = client.exchange(request).await.unwrap().into_inner();
    let exchanged = check_exchange_reply(&held, &payment, &reply, &vendor);
    assert_eq!(
        exchanged.vendor_scrip.scrip.id(),
        millicent_core::ScripId::new(LICENCE_SERIES + 2, 0)
    );
    assert_eq!(vendor.grants(), 3);

    assert_live_audit_clean(&mut client).await;
    broker.shutdown().await.unwrap();
    let audit = assert_audit_clean(dir.path()).await;
    assert_eq!(audit.shards[0].balances["vendor_scrip"], -7);
    let distinct: HashSet<_> = minted.iter().collect();
    assert_eq!(distinct.len(), minted.len());
}
