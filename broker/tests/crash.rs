//! Crash safety of the real `millicent-broker` binary under `kill -9`.
//!
//! Customers buy broker scrip and then exchange it for vendor scrip in
//! chains (each exchange's change pays the next) while the broker, keeping
//! two shards, is killed with SIGKILL at random moments and restarted on
//! the same stores. A call whose reply was lost is sent again unchanged and
//! must then be answered (with the reply on record, or afresh), never
//! refused. At the end every accepted purchase and exchange, sent again,
//! gets its reply again; the last change of every chain still pays; and
//! the books, audited offline by `millicent-broker audit`, balance to the
//! unit: what was credited is in the accounts, in broker scrip or sold as
//! vendor scrip.
//!
//! The kill delays come from a seeded generator; the seed is printed, and
//! `MILLICENT_CRASH_SEED=<seed>` repeats a run.

// A test: any surprise should stop it at once, with the value in the message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../vendor-node/tests/common/process.rs"]
mod process;
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use millicent_proto as proto;
use millicent_proto::broker_service_client::BrokerServiceClient;
use process::{ServiceProcess, free_port};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use support::*;
use tonic::transport::Endpoint;

const CUSTOMERS: usize = 16;
const KILLS: usize = 4;
const CREDITED: u64 = 1_000_000;
const BOUGHT: u64 = 600_000;
/// How long a restarted broker may take to serve.
const SERVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one call may take before it counts as lost.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call is retried before the test gives up on the broker.
const RETRY_LIMIT: Duration = Duration::from_secs(30);
/// Exchanges go on this long after the last restart.
const RUN_AFTER_LAST_RESTART: Duration = Duration::from_millis(500);

/// The broker's binary, configured by its file only.
fn start_broker(config: &Path) -> ServiceProcess {
    ServiceProcess::start(
        "the broker",
        env!("CARGO_BIN_EXE_millicent-broker"),
        config,
        &[
            "MILLICENT_BROKER_LISTEN",
            "MILLICENT_BROKER_DATA_DIR",
            "MILLICENT_BROKER_METRICS_LISTEN",
            "MILLICENT_OPERATOR_TOKEN",
            "MILLICENT_LICENCE_TOKEN",
        ],
    )
}

fn lazy_client(url: &str) -> Client {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .unwrap()
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CALL_TIMEOUT);
    BrokerServiceClient::new(endpoint.connect_lazy())
}

async fn wait_serving(broker: &mut ServiceProcess, url: &str) {
    let deadline = Instant::now() + SERVE_TIMEOUT;
    loop {
        broker.check_running();
        let mut client = lazy_client(url);
        if client
            .get_broker_info(proto::GetBrokerInfoRequest {})
            .await
            .is_ok()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the broker did not serve within {SERVE_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes `call` until the broker answers it; a refusal fails the test.
/// Returns the reply and whether an attempt was lost first.
async fn until_answered<T, F, Fut>(url: &str, call: F) -> (T, bool)
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = Instant::now() + RETRY_LIMIT;
    let mut lost = false;
    loop {
        match call(lazy_client(url)).await {
            Ok(reply) => return (reply.into_inner(), lost),
            Err(status) if !reason(&status).is_empty() => panic!(
                "a call was refused ({}{}): {}",
                reason(&status),
                if lost { ", after a lost reply" } else { "" },
                status.message()
            ),
            Err(_) => {
                lost = true;
                assert!(
                    Instant::now() < deadline,
                    "the broker did not answer within {RETRY_LIMIT:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// One customer's history.
struct Chain {
    account: Account,
    buy: (proto::BuyBrokerScripRequest, proto::BuyBrokerScripReply),
    exchanges: Vec<(proto::ExchangeRequest, proto::ExchangeReply)>,
    /// The broker scrip in hand: the last change.
    held: Held,
    vendor_value: u64,
    lost: usize,
}

async fn run_chain(url: String, index: usize, stop: Arc<AtomicBool>) -> Chain {
    let (opened, was_lost) = until_answered(&url, |mut c| async move {
        c.open_account(proto::OpenAccountRequest {}).await
    })
    .await;
    let mut lost = usize::from(was_lost);
    let account = Account {
        id: opened.account_id,
        key: opened.account_key,
    };
    let credit = proto::CreditRequest {
        account_id: account.id,
        amount: CREDITED,
        reference: format!("deposit-{index}"),
    };
    let (_, was_lost) = until_answered(&url, |mut c| {
        let credit = credit.clone();
        async move { c.credit(operator(credit)).await }
    })
    .await;
    lost += usize::from(was_lost);
    let request = buy_request(&account, BOUGHT, random_nonce());
    let (bought, was_lost) = until_answered(&url, |mut c| {
        let request = request.clone();
        async move { c.buy_broker_scrip(request).await }
    })
    .await;
    lost += usize::from(was_lost);
    let mut held = open_purchase(&account, &bought);

    let mut exchanges = Vec::new();
    let mut vendor_value = 0;
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let value = 1 + round % 3;
        round += 1;
        let (request, _) = exchange_request(&held, VENDOR, value);
        let (reply, was_lost) = until_answered(&url, |mut c| {
            let request = request.clone();
            async move { c.exchange(request).await }
        })
        .await;
        lost += usize::from(was_lost);
        vendor_value += value;
        let change = reply.change.as_ref().expect("a chain never runs out");
        let scrip = millicent_core::Scrip::decode(&change.body, &change.certificate).unwrap();
        let next = Held {
            scrip,
            secret: held.secret.clone(),
        };
        exchanges.push((request, reply));
        held = next;
    }
    Chain {
        account,
        buy: (request, bought),
        exchanges,
        held,
        vendor_value,
        lost,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_purchases_survive_kill_9_and_the_books_balance() {
    let seed = std::env::var("MILLICENT_CRASH_SEED")
        .ok()
        .map(|seed| seed.parse().expect("MILLICENT_CRASH_SEED is a number"))
        .unwrap_or_else(|| {
            let clock = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            clock.as_secs() ^ u64::from(clock.subsec_nanos()) ^ u64::from(std::process::id())
        });
    println!("crash test seed: {seed} (MILLICENT_CRASH_SEED={seed} repeats this run)");
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().unwrap();
    let vendor = TestVendor::start().await;
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let url = format!("http://{listen}");
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = binary_config(dir.path(), listen, metrics, &vendor);
    let mut broker = start_broker(&config);
    wait_serving(&mut broker, &url).await;

    let stop = Arc::new(AtomicBool::new(false));
    let chains: Vec<_> = (0..CUSTOMERS)
        .map(|index| tokio::spawn(run_chain(url.clone(), index, stop.clone())))
        .collect();
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..=900))).await;
        broker.check_running();
        broker.kill();
        broker = start_broker(&config);
        wait_serving(&mut broker, &url).await;
    }
    tokio::time::sleep(RUN_AFTER_LAST_RESTART).await;
    stop.store(true, Ordering::Relaxed);
    let mut finished = Vec::with_capacity(CUSTOMERS);
    for chain in chains {
        finished.push(chain.await.expect("a customer failed"));
    }
    let lost: usize = finished.iter().map(|chain| chain.lost).sum();
    assert!(
        lost > 0,
        "no kill interrupted a call; the test proved nothing"
    );
    assert!(finished.iter().all(|chain| !chain.exchanges.is_empty()));

    // Every accepted call, sent again, gets its reply again.
    let mut client = lazy_client(&url);
    for chain in &finished {
        let again = client
            .buy_broker_scrip(chain.buy.0.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again, chain.buy.1, "a purchase was answered differently");
        for (request, reply) in &chain.exchanges {
            let again = client.exchange(request.clone()).await.unwrap().into_inner();
            assert_eq!(&again, reply, "an exchange was answered differently");
        }
        assert_eq!(
            balance(&mut client, &chain.account).await,
            CREDITED - BOUGHT,
            "a balance changed"
        );
    }
    // The last change of every chain still pays.
    for chain in &finished {
        let (request, _) = exchange_request(&chain.held, VENDOR, 1);
        client.exchange(request).await.unwrap();
    }
    assert_live_audit_clean(&mut client).await;
    broker.kill();

    // The binary's own audit of the stopped broker's stores.
    let audited = Command::new(env!("CARGO_BIN_EXE_millicent-broker"))
        .args(["audit", "--data-dir"])
        .arg(dir.path().join("broker"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&audited.stdout);
    assert!(audited.status.success(), "audit failed: {said}");
    assert!(said.contains("the books balance"), "{said}");

    // To the unit: credits are in accounts, broker scrip and vendor scrip.
    let report = assert_audit_clean(dir.path()).await;
    let total = |class: &str| -> i128 {
        report
            .shards
            .iter()
            .map(|shard| shard.balances.get(class).copied().unwrap_or(0))
            .sum()
    };
    let vendor_value: u64 = finished.iter().map(|chain| chain.vendor_value + 1).sum();
    let credited = (CUSTOMERS as u64 * CREDITED) as i128;
    assert_eq!(total("cash"), credited);
    assert_eq!(
        total("customer"),
        -((CUSTOMERS as u64 * (CREDITED - BOUGHT)) as i128)
    );
    assert_eq!(total("vendor_scrip"), -(vendor_value as i128));
    assert_eq!(
        total("broker_scrip"),
        -((CUSTOMERS as u64 * BOUGHT - vendor_value) as i128)
    );
}
