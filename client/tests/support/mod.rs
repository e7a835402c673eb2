//! Helpers shared by the command line tests: `millicent` run as a user
//! runs it, and a wallet funded at a broker.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use millicent_broker::{BrokerConfig, RunningBroker};
use serde_json::Value;

/// The operator token of the test brokers.
pub const OPERATOR_TOKEN: &str = "operator-token-for-tests";
/// The licence token of the test vendor nodes.
pub const LICENCE_TOKEN: &str = "licence-token-for-tests";

/// A broker on loopback, storing in `dir/broker`, selling the scrip of
/// `news.example` from the vendor node at `vendor`.
pub async fn start_broker(dir: &Path, vendor: std::net::SocketAddr) -> RunningBroker {
    RunningBroker::start(BrokerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir: dir.join("broker"),
        operator_token: Some(OPERATOR_TOKEN.to_owned()),
        vendors: vec![millicent_broker::VendorConfig {
            name: "news.example".to_owned(),
            node: format!("http://{vendor}"),
            licence_token: Some(LICENCE_TOKEN.to_owned()),
            ..millicent_broker::VendorConfig::default()
        }],
        ..BrokerConfig::default()
    })
    .await
    .unwrap()
}

/// Runs `millicent` off the async runtime's threads.
pub async fn millicent(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_millicent"))
            .args(&args)
            .env_remove("MILLICENT_WALLET")
            .env_remove("MILLICENT_OPERATOR_TOKEN")
            .env_remove("MILLICENT_PASSPHRASE")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

pub async fn ok_json(args: &[&str]) -> Value {
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

/// Runs a command expected to fail with `--json`: the error is JSON on
/// standard output.
pub async fn fails_json(args: &[&str]) -> Value {
    let mut all = vec!["--json".to_owned()];
    all.extend(args.iter().map(|arg| arg.to_string()));
    let output = millicent(all).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "millicent {args:?} should have failed"
    );
    let error: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"));
    assert!(error["error"].is_string(), "{error}");
    error
}

/// Creates a wallet at `wallet`, joins the broker at `broker`, has 1000
/// credited and buys 500 of broker scrip.
pub async fn funded_wallet(broker: &str, wallet: &str) {
    ok_json(&["--wallet", wallet, "create"]).await;
    let joined = ok_json(&["join", "--wallet", wallet, "--broker", broker]).await;
    let account = joined["account_id"].as_u64().unwrap().to_string();
    ok_json(&[
        "credit",
        "--broker",
        broker,
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
    ok_json(&["--wallet", wallet, "buy", "--amount", "500"]).await;
}

pub async fn fails(args: &[&str]) -> String {
    let output = millicent(args.iter().map(|arg| arg.to_string()).collect()).await;
    assert!(
        !output.status.success(),
        "millicent {args:?} should have failed"
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(stderr.starts_with("error: "), "unclear error: {stderr}");
    stderr
}
