//! End-to-end tests: a broker started in-process on 127.0.0.1, a stand-in
//! vendor node granting licences, and a minimal wallet, all over real gRPC.

// In test code a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Every test that refuses something ends with an audit of the books, live
// and offline: no refusal may leave them out of balance.

mod support;

use std::collections::HashSet;

use millicent_broker::{BrokerError, RunningBroker};
use millicent_core::{Amount, ScripBody, Suite};
use millicent_proto as proto;
use support::*;
use tonic::Code;

#[tokio::test]
async fn open_credit_buy_and_exchange_with_change() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = TestVendor::start().await;
    let mut config = config(dir.path(), Some(&vendor));
    config.exchange_fee = 5;
    let broker = RunningBroker::start(config).await.unwrap();
    let mut client = connect(broker.addr()).await;

    let info = client
        .get_broker_info(proto::GetBrokerInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.broker, BROKER);
    assert_eq!(info.suite, u32::from(Suite::Classic.id()));
    assert_eq!(info.vendors, [VENDOR]);

    let account = open_account(&mut client).await;
    assert_eq!(account.key.len(), Suite::Classic.mac_len());
    assert_eq!(credit(&mut client, account.id, 1000, "card-1").await, 1000);
    let held = buy(&mut client, &account, 300).await.unwrap();
    assert_eq!(held.scrip.value(), Amount::new(300));
    assert_eq!(held.scrip.body().vendor.as_str(), BROKER);
    assert!(held.scrip.body().expires_at > now());

    let (request, payment) = exchange_request(&held, VENDOR, 100);
    let reply = client.exchange(request).await.unwrap().into_inner();
    let exchanged = check_exchange_reply(&held, &payment, &reply, &vendor);
    assert_eq!(exchanged.price, 105);
    let vendor_scrip = &exchanged.vendor_scrip.scrip;
    assert_eq!(vendor_scrip.value(), Amount::new(100));
    assert_eq!(vendor_scrip.body().vendor.as_str(), VENDOR);
    assert_eq!(vendor_scrip.id().series(), LICENCE_SERIES);
    assert_eq!(vendor_scrip.body().cust_id.selector(), LICENCE_SELECTOR);
    let change = exchanged.change.unwrap();
    assert_eq!(change.scrip.value(), Amount::new(195));
    assert_eq!(change.scrip.body().cust_id, held.scrip.body().cust_id);
    assert_ne!(change.scrip.id(), held.scrip.id());

    // The change is good broker scrip: it pays for the next exchange, and
    // the licence obtained for the first one is used again.
    let (request, payment) = exchange_request(&change, VENDOR, 190);
    let reply = client.exchange(request).await.unwrap().into_inner();
    let second = check_exchange_reply(&change, &payment, &reply, &vendor);
    assert!(second.change.is_none());
    assert_ne!(second.vendor_scrip.scrip.id(), vendor_scrip.id());
    assert_ne!(
        second.vendor_scrip.scrip.body().cust_id,
        vendor_scrip.body().cust_id
    );
    assert_eq!(vendor.grants(), 1);

    let statement = statement(&mut client, &account).await;
    assert_eq!(statement.balance, 700);
    let entries: Vec<(&str, i64, u64)> = statement
        .entries
        .iter()
        .map(|entry| (entry.kind.as_str(), entry.delta, entry.balance_after))
        .collect();
    assert_eq!(
        entries,
        [("credit", 1000, 1000), ("buy_broker_scrip", -300, 700)]
    );
    assert_eq!(statement.entries[0].reference, "card-1");

    assert_live_audit_clean(&mut client).await;
    broker.shutdown().await.unwrap();
    assert_audit_clean(dir.path()).await;
}

#[tokio::test]
async fn credit_needs_the_operator_token_and_is_idempotent_per_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, mut client) = start(dir.path(), None).await;
    let account = open_account(&mut client).await;

    let missing = credit_with(&mut client, None, account.id, 10, "r1").await;
    assert_refused(missing, Code::Unauthenticated, "unauthenticated");
    let wrong = credit_with(&mut client, Some("guess"), account.id, 10, "r1").await;
    assert_refused(wrong, Code::Unauthenticated, "unauthenticated");
    assert_eq!(balance(&mut client, &account).await, 0);

    assert_eq!(credit(&mut client, account.id, 10, "r1").await, 10);
    assert_eq!(credit(&mut client, account.id, 10, "r1").await, 10);
    // The reference of another credit is refused, and credits nothing.
    let reused = credit_with(&mut client, Some(OPERATOR_TOKEN), account.id, 99, "r1").await;
    assert_refused(reused, Code::AlreadyExists, "reference_reused");
    assert_eq!(credit(&mut client, account.id, 5, "r2").await, 15);
    assert_eq!(balance(&mut client, &account).await, 15);

    let token = Some(OPERATOR_TOKEN);
    let unknown = credit_with(&mut client, token, account.id + 100, 10, "r").await;
    assert_refused(unknown, Code::NotFound, "unknown_account");
    let zero = credit_with(&mut client, token, account.id, 0, "r3").await;
    assert_refused(zero, Code::InvalidArgument, "malformed");
    let no_reference = credit_with(&mut client, token, account.id, 1, "").await;
    assert_refused(no_reference, Code::InvalidArgument, "malformed");
    assert_eq!(balance(&mut client, &account).await, 15);
    assert_live_audit_clean(&mut client).await;
    broker.shutdown().await.unwrap();
    assert_audit_clean(dir.path()).await;

    // Without an operator token, credits are refused outright.
    let mut config = config(dir.path(), None);
    config.operator_token = None;
    let broker = RunningBroker::start(config).await.unwrap();
    let mut client = connect(broker.addr()).await;
    let refused = credit_with(&mut client, Some(OPERATOR_TOKEN), account.id, 1, "r9").await;
    assert_refused(refused, Code::Unauthenticated, "unauthenticated");
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_replayed_purchase_returns_the_same_reply_and_debits_once() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, mut client) = start(dir.path(), None).await;
    let account = open_account(&mut client).await;
    credit(&mut client, account.id, 100, "r").await;

    let request = buy_request(&account, 30, random_nonce());
    let first = client
        .buy_broker_scrip(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = client.buy_broker_scrip(request).await.unwrap().into_inner();
    assert_eq!(first, again);
    assert_eq!(first.balance, 70);
    assert_eq!(balance(&mut client, &account).await, 70);

    // The same nonce with other parameters is not a retry.
    let nonce = random_nonce();
    let request = buy_request(&account, 31, nonce);
    client.buy_broker_scrip(request).await.unwrap();
    let refused = client
        .buy_broker_scrip(buy_request(&account, 32, nonce))
        .await;
    assert_refused(refused, Code::Unauthenticated, "unauthenticated");
    assert_eq!(balance(&mut client, &account).await, 39);
    assert_live_audit_clean(&mut client).await;
    broker.shutdown().await.unwrap();
    assert_audit_clean(dir.path()).await;
}

#[tokio::test]
async fn refused_account_calls_change_no_balance() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, mut client) = start(dir.path(), None).await;
    let account = open_account(&mut client).await;
    credit(&mut client, account.id, 50, "r").await;

    let mut forged = buy_request(&account, 10, random_nonce());
    forged.auth.as_mut().unwrap().mac[0] ^= 1;
    let result = client.buy_broker_scrip(forged).await;
    assert_refused(result, Code::Unauthenticated, "unauthenticated");

    let mut raised = buy_request(&account, 10, random_nonce());
    raised.amount = 11;
    let result = client.buy_broker_scrip(raised).await;
    assert_refused(result, Code::Unauthenticated, "unauthenticated");

    let other = open_account(&mut client).await;
    let mut stolen = buy_request(&other, 10, random_nonce());
    stolen.auth.as_mut().unwrap().account_id = account.id;
    let result = client.buy_broker_scrip(stolen).await;
    assert_refused(result, Code::Unauthenticated, "unauthenticated");

    let stale_at = now_ms() - 301_000;
    let stale = proto::BuyBrokerScripRequest {
        auth: Some(auth(
            &account,
            "BuyBrokerScrip",
            &10u64.to_be_bytes(),
            stale_at,
            random_nonce(),
        )),
        amount: 10,
    };
    let result = client.buy_broker_scrip(stale).await;
    assert_refused(result, Code::Unauthenticated, "stale_timestamp");

    let mut short_nonce = buy_request(&account, 10, random_nonce());
    short_nonce.auth.as_mut().unwrap().nonce.pop();
    let result = client.buy_broker_scrip(short_nonce).await;
    assert_refused(result, Code::InvalidArgument, "malformed");

    let result = client
        .buy_broker_scrip(buy_request(&account, 51, random_nonce()))
        .await;
    assert_refused(result, Code::FailedPrecondition, "insufficient_funds");
    assert_eq!(balance(&mut client, &account).await, 50);

    // Amounts: the balance is checked against overflow.
    let rich = open_account(&mut client).await;
    let half = i64::MAX as u64;
    credit(&mut client, rich.id, half, "a").await;
    credit(&mut client, rich.id, half, "b").await;
    let token = Some(OPERATOR_TOKEN);
    let result = credit_with(&mut client, token, rich.id, 2, "c").await;
    assert_refused(result, Code::InvalidArgument, "amount_overflow");
    assert_eq!(balance(&mut client, &rich).await, 2 * half);
    let result = credit_with(&mut client, token, rich.id, u64::MAX, "d").await;
    assert_refused(result, Code::InvalidArgument, "too_large");
    assert_eq!(balance(&mut client, &rich).await, 2 * half);

    assert_live_audit_clean(&mut client).await;
    broker.shutdown().await.unwrap();
    assert_audit_clean(dir.path()).await;
}

#[tokio::test]
async fn concurrent_purchases_never_overdraw() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, mut client) = start(dir.path(), None).await;
    let account = open_account(&mut client).await;
    credit(&mut client, account.id, 100, "r").await;

    let mut tasks = Vec::new();
    for _ in 0..30 {
        let mut client = client.clone();
        let account = account.clone();
        tasks.push(tokio::spawn(
            async move { buy(&mut client, &account, 7).await },
        ));
    }
    let mut bought = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(held) => bought.push(held),
            Err(status) => assert_eq!(reason(&status), "insufficient_funds"),
        }
    }
    assert_eq!(bought.len(), 14);
    assert_eq!(balance(&mut client, &account).await, 2);
    let ids: HashSet<u64> = bought.iter().map(|held| held.scrip.id().as_u64()).collect();
    let customers: HashSet<u64> = bought
        .iter()
        .map(|held| held.scrip.body().cust_id.as_u64())
        .collect();
    assert_eq!((ids.len(), customers.len()), (14, 14));
    assert_live_audit_clean(&mut client).await;
    broker.shutdown().await.unwrap();
    assert_audit_clean(dir.path()).await;
}

#[tokio::test]
async fn exchange_refusals_spend_nothing_and_a_spent_scrip_only_retries() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = TestVendor::start().await;
    let mut config = config(dir.path(), Some(&vendor));
    config.exchange_fee = 5;
    let broker = RunningBroker::start(config).await.unwrap();
    let mut client = connect(broker.addr()).await;
    let (_, held) = funded(&mut client, 50, 0).await;

    let (request, _) = exchange_request(&held, "other.example", 10);
    let result = client.exchange(request).await;
    assert_refused(result, Code::NotFound, "unknown_vendor");

    let (request, _) = exchange_request(&held, VENDOR, 46);
    let result = client.exchange(request).await;
    assert_refused(result, Code::FailedPrecondition, "insufficient_value");

    let (request, _) = exchange_request(&held, VENDOR, 0);
    let result = client.exchange(request).await;
    assert_refused(result, Code::InvalidArgument, "malformed");

    let (request, _) = exchange_request(&held, VENDOR, u64::MAX);
    let result = client.exchange(request).await;
    assert_refused(result, Code::InvalidArgument, "amount_overflow");

    let (mut tampered, _) = exchange_request(&held, VENDOR, 10);
    let richer = ScripBody {
        value: Amount::new(5000),
        ..held.scrip.body().clone()
    };
    tampered.broker_scrip.as_mut().unwrap().body = richer.encode();
    let result = client.exchange(tampered).await;
    assert_refused(result, Code::PermissionDenied, "bad_certificate");

    let (mut forged_stamp, _) = exchange_request(&held, VENDOR, 10);
    forged_stamp.request_stamp[0] ^= 1;
    let result = client.exchange(forged_stamp).await;
    assert_refused(result, Code::PermissionDenied, "bad_request_stamp");

    let (mut garbage, _) = exchange_request(&held, VENDOR, 10);
    garbage.broker_scrip.as_mut().unwrap().body.truncate(5);
    let result = client.exchange(garbage).await;
    assert_refused(result, Code::InvalidArgument, "malformed");

    // None of that spent the scrip.
    let (request, payment) = exchange_request(&held, VENDOR, 45);
    let first = client.exchange(request.clone()).await.unwrap().into_inner();
    check_exchange_reply(&held, &payment, &first, &vendor);

    let retry = client.exchange(request).await.unwrap().into_inner();
    assert_eq!(retry, first);

    let (other_request, _) = exchange_request(&held, VENDOR, 10);
    let result = client.exchange(other_request).await;
    assert_refused(result, Code::AlreadyExists, "double_spend");
    assert_live_audit_clean(&mut client).await;
    broker.shutdown().await.unwrap();
    assert_audit_clean(dir.path()).await;
}

#[tokio::test]
async fn vendor_scrip_waits_for_a_licence_and_the_broker_asks_again() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = TestVendor::start().await;
    vendor.set_available(false);
    let (broker, mut client) = start(dir.path(), Some(&vendor)).await;
    let (_, held) = funded(&mut client, 20, 0).await;

    let (request, payment) = exchange_request(&held, VENDOR, 20);
    let result = client.exchange(request.clone()).await;
    assert_refused(result, Code::Unavailable, "vendor_unavailable");

    // A node that was down is asked again, at most once a second.
    vendor.set_available(true);
    let result = client.exchange(request.clone()).await;
    assert_refused(result, Code::Unavailable, "vendor_unavailable");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let reply = client.exchange(request).await.unwrap().into_inner();
    check_exchange_reply(&held, &payment, &reply, &vendor);
    assert_eq!(vendor.grants(), 1);
    assert_live_audit_clean(&mut client).await;
    broker.shutdown().await.unwrap();
    assert_audit_clean(dir.path()).await;
}

#[tokio::test]
async fn a_restart_keeps_balances_spent_scrip_and_never_reuses_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = TestVendor::start().await;
    let mut broker_ids = HashSet::new();
    let mut vendor_ids = HashSet::new();

    let (broker, mut client) = start(dir.path(), Some(&vendor)).await;
    let (account, held) = funded(&mut client, 40, 60).await;
    broker_ids.insert(held.scrip.id());
    let (request, payment) = exchange_request(&held, VENDOR, 15);
    let first = client.exchange(request.clone()).await.unwrap().into_inner();
    let exchanged = check_exchange_reply(&held, &payment, &first, &vendor);
    vendor_ids.insert(exchanged.vendor_scrip.scrip.id());
    let change = exchanged.change.unwrap();
    broker_ids.insert(change.scrip.id());
    broker.shutdown().await.unwrap();

    let (broker, mut client) = start(dir.path(), Some(&vendor)).await;
    assert_eq!(balance(&mut client, &account).await, 60);

    let retry = client.exchange(request).await.unwrap().into_inner();
    assert_eq!(retry, first);
    let (other, _) = exchange_request(&held, VENDOR, 5);
    let result = client.exchange(other).await;
    assert_refused(result, Code::AlreadyExists, "double_spend");

    let more = buy(&mut client, &account, 10).await.unwrap();
    assert!(broker_ids.insert(more.scrip.id()), "broker scrip ID reused");
    let (request, payment) = exchange_request(&change, VENDOR, 5);
    let reply = client.exchange(request).await.unwrap().into_inner();
    let exchanged = check_exchange_reply(&change, &payment, &reply, &vendor);
    assert!(vendor_ids.insert(exchanged.vendor_scrip.scrip.id()));
    assert!(broker_ids.insert(exchanged.change.unwrap().scrip.id()));
    // The licence was kept across the restart.
    assert_eq!(vendor.grants(), 1);
    assert_live_audit_clean(&mut client).await;
    broker.shutdown().await.unwrap();
    assert_audit_clean(dir.path()).await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_data_directory_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (broker, _) = start(dir.path(), None).await;
    broker.shutdown().await.unwrap();
    let mode = std::fs::metadata(dir.path().join("broker"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[cfg(unix)]
#[tokio::test]
async fn a_data_directory_others_can_reach_is_refused_and_left_as_it_was() {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use millicent_ledger::DataDirError;

    /// Every file and directory under `dir`, with its mode and contents.
    fn snapshot(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let mut entries = vec![(dir.to_owned(), mode(dir), Vec::new())];
        let mut children: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        children.sort();
        for child in children {
            if child.is_dir() {
                entries.extend(snapshot(&child));
            } else {
                entries.push((child.clone(), mode(&child), fs::read(&child).unwrap()));
            }
        }
        entries
    }

    let dir = tempfile::tempdir().unwrap();
    let (broker, _) = start(dir.path(), None).await;
    broker.shutdown().await.unwrap();
    let data_dir = dir.path().join("broker");
    fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(&data_dir);

    let error = RunningBroker::start(config(dir.path(), None))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            &error,
            BrokerError::DataDir(DataDirError::NotPrivate { path, mode: 0o755 }) if path == &data_dir
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains("mode 755"), "{text}");
    assert!(
        text.contains(&format!("`chmod 700 {}`", data_dir.display())),
        "{text}"
    );
    assert_eq!(snapshot(&data_dir), before);

    fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700)).unwrap();
    let (broker, _) = start(dir.path(), None).await;
    broker.shutdown().await.unwrap();
}
