//! Crash safety of the real `millicent-vendor` binary: under `kill -9`, and
//! on a disk that fills up.
//!
//! Customers pay in chains (each payment's change pays the next) while the
//! node is killed with SIGKILL at random moments and restarted on the same
//! store. A payment whose reply was lost is retried with the identical
//! request and must then be accepted (with the reply on record, or afresh),
//! never refused. At the end every accepted payment, replayed identically,
//! gets its reply again; replayed with another request it is a double
//! spend; the last change of every chain pays; and no change ID# was ever
//! handed out twice.
//!
//! The kill delays come from a seeded generator; the seed is printed, and
//! `MILLICENT_CRASH_SEED=<seed>` repeats a run.
//!
//! A second test puts the store on a small tmpfs (mounting it takes root,
//! which the test command has in CI) and pays until the disk is full: the
//! node refuses with `storage`, and after the disk grows and the node
//! restarts, nothing it had accepted is lost.

// A test: any surprise should stop it at once, with the value in the message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/process.rs"]
mod process;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use millicent_core::{CustomerSecret, Payment, Scrip, ScripId, Variant};
use millicent_proto as wire;
use millicent_proto::pay_stream_reply::Result as Answer;
use millicent_proto::vendor_service_client::VendorServiceClient;
use process::{ServiceProcess, free_port};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use tonic::transport::{Channel, Endpoint};

const CUSTOMERS: usize = 32;
const KILLS: usize = 4;
/// Each customer's first scrip: enough that no chain runs out.
const START_VALUE: u64 = 1_000_000;
/// How long a restarted node may take to serve.
const SERVE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one call may take before it counts as lost.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a payment is retried before the test gives up on the node.
const RETRY_LIMIT: Duration = Duration::from_secs(20);
/// Payments keep going this long after the last restart.
const RUN_AFTER_LAST_RESTART: Duration = Duration::from_millis(500);

/// The vendor node's binary, configured by its file only.
fn start_node(config: &Path) -> ServiceProcess {
    ServiceProcess::start(
        "the node",
        env!("CARGO_BIN_EXE_millicent-vendor"),
        config,
        &[
            "MILLICENT_VENDOR_LISTEN",
            "MILLICENT_VENDOR_DATA_DIR",
            "MILLICENT_VENDOR_METRICS_LISTEN",
            "MILLICENT_LICENCE_TOKEN",
        ],
    )
}

fn write_config(dir: &Path, listen: SocketAddr) -> PathBuf {
    let data_dir = dir.join("store");
    let quoted = |text: &str| toml::Value::String(text.to_owned()).to_string();
    let text = format!(
        r#"
node = "vendor-1"
listen = "{listen}"
metrics_listen = "127.0.0.1:{metrics}"
data_dir = {data_dir}
licence_token = {token}

[[vendors]]
name = "news.example"
variants = ["clear", "secure", "private"]

[[vendors.items]]
name = "headline"
price = 1
content = "Headline"

[[vendors.items]]
name = "article-1"
price = 10
content = "The text of article 1"
"#,
        metrics = free_port(),
        data_dir = quoted(data_dir.to_str().unwrap()),
        token = quoted(TOKEN),
    );
    let path = dir.join("vendor.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn lazy_client(url: &str) -> VendorServiceClient<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .unwrap()
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CALL_TIMEOUT);
    VendorServiceClient::new(endpoint.connect_lazy())
}

/// Waits until the node answers `GetPrices`.
async fn wait_serving(node: &mut ServiceProcess, url: &str) -> VendorServiceClient<Channel> {
    let deadline = Instant::now() + SERVE_TIMEOUT;
    loop {
        node.check_running();
        let mut client = lazy_client(url);
        if client.get_prices(wire::GetPricesRequest {}).await.is_ok() {
            return client;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not serve within {SERVE_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One accepted payment, as its customer saw it.
#[derive(Clone)]
struct Accepted {
    scrip: Scrip,
    item: &'static str,
    request: wire::PayRequest,
    reply: wire::PayReply,
}

/// A customer paying with its change, again and again.
struct Chain {
    secret: CustomerSecret,
    variant: Variant,
    scrip: Scrip,
    accepted: Vec<Accepted>,
    /// Payments sent again because an attempt failed while the node was
    /// down (its reply lost, or the call never reaching the node).
    retried: usize,
}

const ITEMS: [(&str, &[u8]); 2] = [
    ("headline", b"Headline"),
    ("article-1", b"The text of article 1"),
];

/// Pays until `stop` is set, retrying each payment identically until the
/// node answers it.
async fn run_chain(url: String, mut chain: Chain, stop: Arc<AtomicBool>) -> Chain {
    let mut client = lazy_client(&url);
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        let (item, goods) = ITEMS[round % ITEMS.len()];
        round += 1;
        let payment = Payment::prepare(
            chain.scrip.clone(),
            &chain.secret,
            chain.variant,
            item.as_bytes(),
            &nonce(chain.scrip.suite()),
        )
        .unwrap();
        let request = pay_request(&payment);
        let (reply, lost) = pay_until_answered(&url, &mut client, &request).await;
        chain.retried += usize::from(lost);

        let opened = reply_from_wire(&reply).open(&payment, &chain.secret);
        assert_eq!(opened.as_deref(), Ok(goods));
        let change = reply_from_wire(&reply)
            .change
            .expect("a chain's scrip is worth more than any price");
        let paid = std::mem::replace(&mut chain.scrip, change);
        chain.accepted.push(Accepted {
            scrip: paid,
            item,
            request,
            reply,
        });
    }
    chain
}

/// Sends `request` until the node answers it; a refusal fails the test.
/// Returns the reply and whether an attempt failed first.
async fn pay_until_answered(
    url: &str,
    client: &mut VendorServiceClient<Channel>,
    request: &wire::PayRequest,
) -> (wire::PayReply, bool) {
    let deadline = Instant::now() + RETRY_LIMIT;
    let mut lost = false;
    loop {
        match client.pay(request.clone()).await {
            Ok(reply) => return (reply.into_inner(), lost),
            Err(status) if !reason(&status).is_empty() => panic!(
                "a payment was refused ({}{}): {}",
                reason(&status),
                if lost { ", after a lost reply" } else { "" },
                status.message()
            ),
            // No reason: the transport failed (the node is down, or shed
            // the call). The identical request is sent again.
            Err(_) => {
                lost = true;
                assert!(
                    Instant::now() < deadline,
                    "the node did not answer within {RETRY_LIMIT:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
                *client = lazy_client(url);
            }
        }
    }
}

/// Sends every request on one `PayStream` and returns the answers in order.
async fn pay_on_stream(
    client: &mut VendorServiceClient<Channel>,
    requests: Vec<wire::PayRequest>,
) -> Vec<Answer> {
    let count = requests.len();
    let elements: Vec<wire::PayStreamRequest> = requests
        .into_iter()
        .enumerate()
        .map(|(sequence, payment)| wire::PayStreamRequest {
            sequence: sequence as u64,
            payment: Some(payment),
        })
        .collect();
    let batches: Vec<wire::PayBatch> = elements
        .chunks(64)
        .map(|payments| wire::PayBatch {
            payments: payments.to_vec(),
        })
        .collect();
    let mut replies = client
        .pay_stream(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    let mut answers: Vec<Option<Answer>> = vec![None; count];
    while let Some(batch) = replies.message().await.unwrap() {
        for reply in batch.replies {
            let slot = &mut answers[reply.sequence as usize];
            assert!(slot.is_none(), "sequence {} answered twice", reply.sequence);
            *slot = reply.result;
        }
    }
    answers
        .into_iter()
        .map(|answer| answer.expect("every element is answered"))
        .collect()
}

fn change_id(reply: &wire::PayReply) -> Option<ScripId> {
    reply.change.as_ref().map(|change| {
        Scrip::decode(&change.body, &change.certificate)
            .unwrap()
            .id()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_payments_survive_kill_9_and_are_never_accepted_twice() {
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
    let started = Instant::now();

    let dir = tempfile::tempdir().unwrap();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let url = format!("http://{listen}");
    let config = write_config(dir.path(), listen);
    let mut node = start_node(&config);
    let mut client = wait_serving(&mut node, &url).await;

    // A licence, and a customer per chain with scrip minted under it.
    let licence = ask_licence(&mut client, "news.example", Some(TOKEN))
        .await
        .unwrap();
    let mut broker = Broker::from_licence(&licence);
    let stop = Arc::new(AtomicBool::new(false));
    let chains: Vec<_> = (0..CUSTOMERS)
        .map(|index| {
            let scrip = broker.mint(START_VALUE);
            let chain = Chain {
                secret: broker.secret(&scrip),
                variant: Variant::ALL[index % Variant::ALL.len()],
                scrip,
                accepted: Vec::new(),
                retried: 0,
            };
            tokio::spawn(run_chain(url.clone(), chain, stop.clone()))
        })
        .collect();

    for _ in 0..KILLS {
        let delay = Duration::from_millis(rng.random_range(100..=700));
        tokio::time::sleep(delay).await;
        node.check_running();
        node.kill();
        node = start_node(&config);
        client = wait_serving(&mut node, &url).await;
    }
    tokio::time::sleep(RUN_AFTER_LAST_RESTART).await;
    stop.store(true, Ordering::Relaxed);
    let mut finished = Vec::with_capacity(CUSTOMERS);
    for chain in chains {
        finished.push(chain.await.expect("a payment chain failed"));
    }
    let accepted: Vec<Accepted> = finished
        .iter()
        .flat_map(|chain| chain.accepted.iter().cloned())
        .collect();
    let retried: usize = finished.iter().map(|chain| chain.retried).sum();
    assert!(
        finished.iter().all(|chain| !chain.accepted.is_empty()),
        "every chain paid at least once"
    );
    assert!(
        retried > 0,
        "no kill interrupted a payment; the test proved nothing"
    );

    // The checks below send thousands of payments on one stream: a client
    // without a per-call timeout.
    let mut streams = VendorServiceClient::connect(url.clone()).await.unwrap();

    // Every accepted payment, replayed identically, gets its reply again.
    let replays = accepted.iter().map(|paid| paid.request.clone()).collect();
    for (paid, answer) in accepted
        .iter()
        .zip(pay_on_stream(&mut streams, replays).await)
    {
        match answer {
            Answer::Reply(reply) => assert_eq!(reply, paid.reply, "a retry got another reply"),
            Answer::Refusal(refusal) => panic!("a retry was refused: {refusal:?}"),
        }
    }

    // Replayed with another request, it is a double spend.
    let chain_of: HashMap<_, _> = finished
        .iter()
        .flat_map(|chain| {
            chain
                .accepted
                .iter()
                .map(move |paid| (paid.scrip.id(), (&chain.secret, chain.variant)))
        })
        .collect();
    let others = accepted
        .iter()
        .map(|paid| {
            let (secret, variant) = chain_of[&paid.scrip.id()];
            let other = if paid.item == ITEMS[0].0 {
                ITEMS[1].0
            } else {
                ITEMS[0].0
            };
            let payment = Payment::prepare(
                paid.scrip.clone(),
                secret,
                variant,
                other.as_bytes(),
                &nonce(paid.scrip.suite()),
            )
            .unwrap();
            pay_request(&payment)
        })
        .collect();
    for answer in pay_on_stream(&mut streams, others).await {
        match answer {
            Answer::Refusal(refusal) => assert_eq!(refusal.reason, "double_spend"),
            Answer::Reply(reply) => panic!("spent scrip was accepted again: {reply:?}"),
        }
    }

    // The last change of every chain pays; every change handed out before
    // it paid already, as the chain went on.
    let mut last_replies = Vec::new();
    for chain in &finished {
        let payment = Payment::prepare(
            chain.scrip.clone(),
            &chain.secret,
            chain.variant,
            b"headline",
            &nonce(chain.scrip.suite()),
        )
        .unwrap();
        let (reply, _) = pay_until_answered(&url, &mut client, &pay_request(&payment)).await;
        assert_eq!(
            reply_from_wire(&reply)
                .open(&payment, &chain.secret)
                .unwrap(),
            b"Headline"
        );
        last_replies.push(reply);
    }

    // No change ID# was handed out twice, across all kills.
    let mut change_ids = HashSet::new();
    for reply in accepted.iter().map(|paid| &paid.reply).chain(&last_replies) {
        let id = change_id(reply).expect("chains always get change");
        assert!(change_ids.insert(id), "change ID# {id} handed out twice");
    }

    node.check_running();
    println!(
        "crash test: {KILLS} kills, {} payments accepted by {CUSTOMERS} chains, {retried} sent \
         again after a failed attempt, {:.1} s",
        accepted.len() + last_replies.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A small tmpfs mounted over a directory, so that the store can fill it.
/// Needs root (as the test command runs in CI); unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> SmallDisk {
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("cannot run mount");
        assert!(
            status.success(),
            "this test fills a small tmpfs and needs to mount one, which takes root"
        );
        SmallDisk {
            path: path.to_owned(),
        }
    }

    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("cannot run mount");
        assert!(status.success(), "cannot grow the tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Pays with one customer's change until the node refuses a payment for
/// lack of storage; returns the payments accepted and the refused one.
async fn pay_until_the_disk_is_full(
    url: String,
    mut scrip: Scrip,
    secret: CustomerSecret,
) -> (Vec<(Scrip, wire::PayRequest)>, wire::PayRequest, Scrip) {
    let mut client = lazy_client(&url);
    let mut accepted = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the disk never filled up");
        let payment = Payment::prepare(
            scrip.clone(),
            &secret,
            Variant::Secure,
            b"headline",
            &nonce(scrip.suite()),
        )
        .unwrap();
        let request = pay_request(&payment);
        match client.pay(request.clone()).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                let change = reply_from_wire(&reply).change.unwrap();
                accepted.push((std::mem::replace(&mut scrip, change), request));
            }
            Err(status) if reason(&status) == "storage" => {
                assert_eq!(status.code(), tonic::Code::Unavailable);
                return (accepted, request, scrip);
            }
            Err(status) => panic!("unexpected refusal: {status:?}"),
        }
    }
}

/// Disk full: payments are refused with `storage` and nothing answered as
/// accepted is lost. After the disk grows and the node restarts, every
/// accepted payment is still spent, and every refused one can be sent again
/// unchanged and is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_payments_and_loses_no_accepted_one() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(dir.path(), "3m");
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let url = format!("http://{listen}");
    let config = write_config(dir.path(), listen);
    let mut node = start_node(&config);
    let mut client = wait_serving(&mut node, &url).await;
    let mut broker = Broker::licensed(&mut client, "news.example").await;

    let mut customers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let scrip = broker.mint(START_VALUE);
        let secret = broker.secret(&scrip);
        customers.spawn(pay_until_the_disk_is_full(url.clone(), scrip, secret));
    }
    let mut results = Vec::new();
    while let Some(result) = customers.join_next().await {
        results.push(result.unwrap());
    }
    node.check_running();
    assert!(
        results
            .iter()
            .map(|(accepted, _, _)| accepted.len())
            .sum::<usize>()
            > 0
    );

    node.kill();
    disk.grow("64m");
    let mut node = start_node(&config);
    let mut client = wait_serving(&mut node, &url).await;
    for (accepted, refused, unspent) in results {
        for (scrip, _) in &accepted {
            let secret = broker.secret(scrip);
            let other = Payment::prepare(
                scrip.clone(),
                &secret,
                Variant::Secure,
                b"article-1",
                &nonce(scrip.suite()),
            )
            .unwrap();
            let status = client.pay(pay_request(&other)).await.unwrap_err();
            assert_eq!(
                reason(&status),
                "double_spend",
                "an accepted payment was lost"
            );
        }
        let reply = client
            .pay(refused)
            .await
            .expect("a refused payment, sent again, pays");
        let change = reply_from_wire(&reply.into_inner()).change.unwrap();
        assert_eq!(change.value().units(), unspent.value().units() - 1);
    }
    node.kill();
}
