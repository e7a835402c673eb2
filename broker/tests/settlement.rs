//! Settlement with a vendor, payouts, the scrip warehouse and renewals of
//! expired vendor scrip, against the stand-in vendor node. Every test ends
//! with the books audited, live and offline.

// In test code a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use millicent_broker::{RunningBroker, VendorConfig};
use millicent_core::Amount;
use millicent_proto as proto;
use support::*;
use tonic::Code;

/// Buys vendor scrip of each of `values` with one piece of broker scrip.
async fn buy_vendor_scrip(client: &mut Client, vendor: &TestVendor, values: &[u64]) -> Vec<Held> {
    let total: u64 = values.iter().sum();
    let (_, mut held) = funded(client, total, 0).await;
    let mut bought = Vec::new();
    for (index, value) in values.iter().enumerate() {
        let (request, payment) = exchange_request(&held, VENDOR, *value);
        let reply = client.exchange(request).await.unwrap().into_inner();
        let exchanged = check_exchange_reply(&held, &payment, &reply, vendor);
        bought.push(exchanged.vendor_scrip);
        if index + 1 < values.len() {
            held = exchanged.change.unwrap();
        }
    }
    bought
}

fn payout(amount: u64, reference: &str) -> tonic::Request<proto::PayoutRequest> {
    operator(proto::PayoutRequest {
        shard: 0,
        counterparty: VENDOR.to_owned(),
        direction: proto::PayoutDirection::Pay as i32,
        amount,
        reference: reference.to_owned(),
    })
}

fn vendor_line(shard: &proto::ShardSettlement) -> &proto::VendorSettlement {
    shard
        .vendors
        .iter()
        .find(|line| line.vendor == VENDOR)
        .unwrap()
}

#[tokio::test]
async fn redeemed_scrip_is_owed_to_the_vendor_and_payouts_settle_it() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = TestVendor::start().await;
    let (broker, mut client) = start(dir.path(), Some(&vendor)).await;
    let bought = buy_vendor_scrip(&mut client, &vendor, &[10, 20, 30]).await;

    let before = statement_of(&mut client).await;
    let line = vendor_line(&before);
    assert_eq!((line.payable, line.outstanding), (0, 60));

    vendor.mark_spent(&bought[0].scrip);
    vendor.mark_spent(&bought[2].scrip);
    let after = statement_of(&mut client).await;
    let line = vendor_line(&after);
    assert_eq!((line.payable, line.accrued, line.outstanding), (40, 40, 20));
    assert!(line.reported_at > 0);
    // A second report of the same spends settles nothing twice.
    let again = statement_of(&mut client).await;
    assert_eq!(vendor_line(&again).payable, 40);

    let too_much = client.record_payout(payout(41, "p1")).await;
    assert_refused(too_much, Code::FailedPrecondition, "exceeds_owed");
    let paid = client.record_payout(payout(40, "p1")).await.unwrap();
    assert_eq!((paid.get_ref().owed, paid.get_ref().repeated), (0, false));
    let repeated = client.record_payout(payout(40, "p1")).await.unwrap();
    assert_eq!(
        (repeated.get_ref().owed, repeated.get_ref().repeated),
        (0, true)
    );
    // The reference of another payout is refused, not taken for a retry.
    let reused = client.record_payout(payout(30, "p1")).await;
    assert_refused(reused, Code::AlreadyExists, "reference_reused");
    let without_token = client
        .record_payout(tonic::Request::new(proto::PayoutRequest {
            shard: 0,
            counterparty: VENDOR.to_owned(),
            direction: proto::PayoutDirection::Pay as i32,
            amount: 1,
            reference: "p2".to_owned(),
        }))
        .await;
    assert_refused(without_token, Code::Unauthenticated, "unauthenticated");
    let unknown = client
        .record_payout(operator(proto::PayoutRequest {
            counterparty: "nobody.example".to_owned(),
            ..payout(1, "p3").into_inner()
        }))
        .await;
    assert_refused(unknown, Code::NotFound, "unknown_vendor");

    let settled = statement_of(&mut client).await;
    let line = vendor_line(&settled);
    assert_eq!((line.payable, line.paid, line.outstanding), (0, 40, 20));
    assert_eq!(settled.cash, 60 - 40);

    assert_live_audit_clean(&mut client).await;
    broker.shutdown().await.unwrap();
    assert_audit_clean(dir.path()).await;
}

#[tokio::test]
async fn scrip_owed_at_sale_is_payable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = TestVendor::start().await;
    let mut config = config(dir.path(), Some(&vendor));
    config.vendors[0].contract = Some("sold".to_owned());
    let broker = RunningBroker::start(config).await.unwrap();
    let mut client = connect(broker.addr()).await;
    let bought = buy_vendor_scrip(&mut client, &vendor, &[7, 8]).await;
    vendor.mark_spent(&bought[0].scrip);
    let statement = statement_of(&mut client).await;
    let line = vendor_line(&statement);
    assert_eq!((line.payable, line.outstanding), (15, 0));

    assert_live_audit_clean(&mut client).await;
    broker.shutdown().await.unwrap();
    assert_audit_clean(dir.path()).await;
}

#[tokio::test]
async fn warehouse_pieces_are_bought_in_blocks_and_resold_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = TestVendor::start().await;
    let mut config = config(dir.path(), Some(&vendor));
    config.vendors = vec![VendorConfig {
        source: Some("warehouse".to_owned()),
        warehouse_value: Some(5),
        warehouse_block: Some(4),
        warehouse_low_water: Some(2),
        ..config.vendors.remove(0)
    }];
    let broker = RunningBroker::start(config).await.unwrap();
    let mut client = connect(broker.addr()).await;
    let (_, mut held) = funded(&mut client, 100, 0).await;

    let (wrong, _) = exchange_request(&held, VENDOR, 6);
    assert_refused(
        client.exchange(wrong).await,
        Code::FailedPrecondition,
        "wrong_value",
    );

    // The first exchange finds the stock empty and starts buying a block.
    let mut sold = Vec::new();
    while sold.len() < 6 {
        let (request, payment) = exchange_request(&held, VENDOR, 5);
        match client.exchange(request).await {
            Ok(reply) => {
                let exchanged = check_exchange_reply(&held, &payment, &reply.into_inner(), &vendor);
                assert_eq!(exchanged.vendor_scrip.scrip.value(), Amount::new(5));
                sold.push(exchanged.vendor_scrip);
                held = exchanged.change.unwrap();
            }
            Err(status) => {
                assert_eq!(reason(&status), "vendor_unavailable", "{status:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let series: std::collections::BTreeSet<u32> =
        sold.iter().map(|held| held.scrip.id().series()).collect();
    assert!(series.iter().all(|series| *series >= BLOCK_SERIES));
    assert!(vendor.blocks_sold() >= 2);

    // Blocks are owed when bought; what is left is stock.
    let statement = statement_of(&mut client).await;
    let line = vendor_line(&statement);
    let bought = vendor.blocks_sold() as i64 * 20;
    assert_eq!(line.payable, bought);
    assert_eq!(line.stock, bought - 30);
    assert_eq!(line.outstanding, 0);

    // A redemption of a sold piece changes no money: it was owed already.
    vendor.mark_spent(&sold[0].scrip);
    let statement = statement_of(&mut client).await;
    assert_eq!(vendor_line(&statement).payable, bought);

    assert_live_audit_clean(&mut client).await;
    broker.shutdown().await.unwrap();
    assert_audit_clean(dir.path()).await;
}

#[tokio::test]
async fn expired_vendor_scrip_is_renewed_once_unless_the_vendor_saw_it_spent() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = TestVendor::start().await;
    // The first licence, and the scrip minted under it, expire at once.
    vendor.lifetime.store(2, Ordering::SeqCst);
    let (broker, mut client) = start(dir.path(), Some(&vendor)).await;
    let bought = buy_vendor_scrip(&mut client, &vendor, &[10, 10, 10]).await;
    vendor.lifetime.store(3 * 24 * 60 * 60, Ordering::SeqCst);

    let early = client
        .renew_vendor_scrip(renew_request(0, &bought[0]))
        .await;
    assert_refused(early, Code::FailedPrecondition, "not_expired");
    vendor.mark_spent(&bought[1].scrip);
    while now() < bought[0].scrip.body().expires_at {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let request = renew_request(0, &bought[0]);
    let reply = client
        .renew_vendor_scrip(request.clone())
        .await
        .unwrap()
        .into_inner();
    let fresh = open_renewal(&bought[0], &request, &reply);
    assert_eq!(fresh.scrip.value(), Amount::new(10));
    assert!(fresh.scrip.body().expires_at > now());
    assert_eq!(vendor.ring.verify(&fresh.scrip, now()), Ok(()));
    assert_eq!(vendor.grants(), 2);
    // A lost reply is fetched again; nothing more is minted.
    let retry = client
        .renew_vendor_scrip(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry, reply);

    let spent = client
        .renew_vendor_scrip(renew_request(0, &bought[1]))
        .await;
    assert_refused(spent, Code::AlreadyExists, "double_spend");

    let mut forged = renew_request(0, &bought[2]);
    forged.request_stamp[0] ^= 1;
    assert_refused(
        client.renew_vendor_scrip(forged).await,
        Code::PermissionDenied,
        "bad_request_stamp",
    );
    let mut elsewhere = renew_request(0, &bought[2]);
    elsewhere.shard = 9;
    assert_refused(
        client.renew_vendor_scrip(elsewhere).await,
        Code::InvalidArgument,
        "malformed",
    );
    let request = renew_request(0, &bought[2]);
    let reply = client
        .renew_vendor_scrip(request.clone())
        .await
        .unwrap()
        .into_inner();
    open_renewal(&bought[2], &request, &reply);

    // Fresh scrip is not renewed: it has not expired.
    let fresh_again = client.renew_vendor_scrip(renew_request(0, &fresh)).await;
    assert_refused(fresh_again, Code::FailedPrecondition, "not_expired");

    let statement = statement_of(&mut client).await;
    let line = vendor_line(&statement);
    // One piece redeemed, two renewed: 10 owed, 20 still outstanding.
    assert_eq!((line.payable, line.outstanding), (10, 20));

    assert_live_audit_clean(&mut client).await;
    broker.shutdown().await.unwrap();
    assert_audit_clean(dir.path()).await;
}
