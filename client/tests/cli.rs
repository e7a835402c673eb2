//! The `millicent` command line, run as a user runs it, against a real
//! broker and vendor node serving gRPC on loopback with sled stores.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use millicent_broker::{BrokerConfig, RunningBroker};
use millicent_vendor::{RunningVendor, VendorConfig};
use serde_json::Value;

const OPERATOR_TOKEN: &str = "operator-token-for-tests";
const LICENCE_TOKEN: &str = "licence-token-for-tests";

struct Network {
    vendor: RunningVendor,
    broker: RunningBroker,
}

async fn start(dir: &Path) -> Network {
    let loopback = ([127, 0, 0, 1], 0).into();
    let vendor = RunningVendor::start(VendorConfig {
        listen: loopback,
        data_dir: dir.join("vendor"),
        licence_token: Some(LICENCE_TOKEN.to_owned()),
        ..VendorConfig::default()
    })
    .await
    .unwrap();
    let broker = RunningBroker::start(BrokerConfig {
        listen: loopback,
        data_dir: dir.join("broker"),
        operator_token: Some(OPERATOR_TOKEN.to_owned()),
        vendors: vec![millicent_broker::VendorConfig {
            name: "news.example".to_owned(),
            node: format!("http://{}", vendor.addr()),
            licence_token: Some(LICENCE_TOKEN.to_owned()),
        }],
        ..BrokerConfig::default()
    })
    .await
    .unwrap();
    Network { vendor, broker }
}

/// Runs `millicent` off the async runtime's threads.
async fn millicent(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_millicent"))
            .args(&args)
            .env_remove("MILLICENT_WALLET")
            .env_remove("MILLICENT_OPERATOR_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

async fn ok_json(args: &[&str]) -> Value {
    let mut all = vec!["--json".to_owned()];
    all.extend(args.iter().map(|arg| arg.to_string()));
    let output = millicent(all).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "millicent {args:?} failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
}

async fn fails(args: &[&str]) -> String {
    let output = millicent(args.iter().map(|arg| arg.to_string()).collect()).await;
    assert!(
        !output.status.success(),
        "millicent {args:?} should have failed"
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(stderr.starts_with("error: "), "unclear error: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_funds_a_wallet_pays_with_change_and_reads_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let network = start(dir.path()).await;
    let broker = format!("http://{}", network.broker.addr());
    let vendor = format!("http://{}", network.vendor.addr());
    let wallet_path = dir.path().join("my.wallet");
    let wallet = wallet_path.to_str().unwrap();

    ok_json(&["--wallet", wallet, "create"]).await;
    let joined = ok_json(&["--wallet", wallet, "join", "--broker", &broker]).await;
    let account = joined["account_id"].as_u64().unwrap().to_string();
    let credited = ok_json(&[
        "credit",
        "--broker",
        &broker,
        "--account",
        &account,
        "--amount",
        "1000",
        "--reference",
        "deposit-1",
        "--operator-token",
        OPERATOR_TOKEN,
    ])
    .await;
    assert_eq!(credited["balance"], 1000);
    ok_json(&["--wallet", wallet, "buy", "--amount", "500"]).await;

    // The first payment exchanges broker scrip for 100 of vendor scrip.
    for round in 1..=3u64 {
        let paid = ok_json(&[
            "--wallet",
            wallet,
            "pay",
            "--vendor",
            &vendor,
            "--item",
            "article-1",
        ])
        .await;
        assert_eq!(paid["price"], 10);
        assert_eq!(paid["change"], 100 - 10 * round);
        assert_eq!(paid["exchange"].is_null(), round > 1);
        assert_eq!(paid["goods"], "The text of article 1");
    }

    let balance = ok_json(&["--wallet", wallet, "balance"]).await;
    assert_eq!(balance["brokers"][0]["balance"], 500);
    assert_eq!(balance["brokers"][0]["scrip"]["value"], 400);
    assert_eq!(balance["vendors"][0]["vendor"], "news.example");
    assert_eq!(balance["vendors"][0]["scrip"]["value"], 70);

    // A refused payment spends nothing and says what went wrong.
    let error = fails(&[
        "--wallet",
        wallet,
        "pay",
        "--vendor",
        &vendor,
        "--item",
        "no-such-item",
    ])
    .await;
    assert!(error.contains("no-such-item"), "{error}");
    let balance = ok_json(&["--wallet", wallet, "balance"]).await;
    assert_eq!(balance["vendors"][0]["scrip"]["value"], 70);

    let history = ok_json(&["--wallet", wallet, "history"]).await;
    let pays = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["kind"] == "pay" && entry["outcome"] == "ok")
        .count();
    assert_eq!(pays, 3, "{history}");

    // Crediting without the operator's token is refused.
    let error = fails(&[
        "credit",
        "--broker",
        &broker,
        "--account",
        &account,
        "--amount",
        "5",
        "--reference",
        "deposit-2",
        "--operator-token",
        "wrong",
    ])
    .await;
    assert!(
        error.contains("unauthenticated") || error.contains("token"),
        "{error}"
    );

    network.broker.shutdown().await.unwrap();
    network.vendor.shutdown().await.unwrap();
}
