//! The `millicent` command line, run as a user runs it, against a real
//! broker and vendor node serving gRPC on loopback with sled stores.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};

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
            ..millicent_broker::VendorConfig::default()
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

/// Runs a command expected to fail with `--json`: the error is JSON on
/// standard output.
async fn fails_json(args: &[&str]) -> Value {
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

/// Creates a wallet at `wallet`, joins the broker, has 1000 credited and
/// buys 500 of broker scrip.
async fn funded_wallet(network: &Network, wallet: &str) {
    let broker = format!("http://{}", network.broker.addr());
    ok_json(&["--wallet", wallet, "create"]).await;
    let joined = ok_json(&["join", "--wallet", wallet, "--broker", &broker]).await;
    let account = joined["account_id"].as_u64().unwrap().to_string();
    ok_json(&[
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
    ok_json(&["--wallet", wallet, "buy", "--amount", "500"]).await;
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
    assert!(error.contains("unauthenticated"), "{error}");
    assert!(error.contains("operator token"), "{error}");
    assert!(!error.contains("account key"), "{error}");

    // With --json, errors are JSON on standard output, with the reason.
    let error = fails_json(&[
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
    assert_eq!(error["reason"], "unauthenticated", "{error}");
    let error = fails_json(&[
        "--wallet",
        wallet,
        "pay",
        "--vendor",
        &vendor,
        "--item",
        "no-such-item",
    ])
    .await;
    assert!(error["reason"].is_null(), "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("no-such-item"),
        "{error}"
    );

    // There is no TLS yet: an https:// URL is refused, not dialled in
    // plaintext.
    let https = vendor.replace("http://", "https://");
    let error = fails(&[
        "--wallet",
        wallet,
        "pay",
        "--vendor",
        &https,
        "--item",
        "article-1",
    ])
    .await;
    assert!(error.contains("TLS is not available yet"), "{error}");
    let balance = ok_json(&["--wallet", wallet, "balance"]).await;
    assert_eq!(balance["vendors"][0]["scrip"]["value"], 70);

    // A wallet other users can read is refused until it is made private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;

        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(&wallet_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = fails(&["--wallet", wallet, "balance"]).await;
        assert!(error.contains(&format!("chmod 600 {wallet}")), "{error}");
        std::fs::set_permissions(&wallet_path, private).unwrap();
        ok_json(&["--wallet", wallet, "balance"]).await;
    }

    network.broker.shutdown().await.unwrap();
    network.vendor.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_one_wallet_take_turns_and_lose_no_scrip() {
    let dir = tempfile::tempdir().unwrap();
    let network = start(dir.path()).await;
    let vendor = format!("http://{}", network.vendor.addr());
    let wallet_path = dir.path().join("shared.wallet");
    let wallet = wallet_path.to_str().unwrap();
    funded_wallet(&network, wallet).await;
    let pay = [
        "--wallet",
        wallet,
        "pay",
        "--vendor",
        &vendor,
        "--item",
        "article-1",
    ];
    ok_json(&pay).await;

    // While another user of the wallet holds it, a command says it waits,
    // and goes on once the wallet is free.
    let held = millicent_client::Wallet::open(&wallet_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_millicent"))
        .args(["--json"].iter().chain(&pay))
        .env_remove("MILLICENT_WALLET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let first_line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stderr)
            .read_line(&mut line)
            .unwrap();
        line
    })
    .await
    .unwrap();
    assert!(
        first_line.starts_with(&format!(
            "waiting for another millicent command using {wallet}"
        )),
        "{first_line}"
    );
    drop(held);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    // Payments started together are made one after the other, each from
    // the change the one before left.
    let mut payments = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let args: Vec<String> = ["--json"]
            .iter()
            .chain(&pay)
            .map(|arg| arg.to_string())
            .collect();
        payments.spawn(millicent(args));
    }
    let mut changes = Vec::new();
    while let Some(output) = payments.join_next().await {
        let output = output.unwrap();
        assert!(output.status.success(), "{output:?}");
        let paid: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert!(paid["exchange"].is_null(), "{paid}");
        changes.push(paid["change"].as_u64().unwrap());
    }
    changes.sort_unstable();
    assert_eq!(changes, [40, 50, 60, 70]);

    // 100 of vendor scrip, six payments of 10: 40 left, nothing in flight.
    let balance = ok_json(&["--wallet", wallet, "balance"]).await;
    assert_eq!(balance["vendors"][0]["scrip"]["value"], 40, "{balance}");
    assert_eq!(balance["vendors"][0]["scrip"]["pieces"], 1, "{balance}");
    assert_eq!(balance["vendors"][0]["scrip"]["in_flight"], 0, "{balance}");
    assert_eq!(balance["brokers"][0]["scrip"]["value"], 400, "{balance}");
    let history = ok_json(&["--wallet", wallet, "history"]).await;
    let pays = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["kind"] == "pay" && entry["outcome"] == "ok")
        .count();
    assert_eq!(pays, 6, "{history}");
    assert!(!dir.path().join("shared.wallet.tmp").exists());

    network.broker.shutdown().await.unwrap();
    network.vendor.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrip_refused_by_a_node_that_does_not_know_it_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let network = start(dir.path()).await;
    let vendor = format!("http://{}", network.vendor.addr());
    // Another deployment's node for a vendor of the same name: it has its
    // own keys, so it cannot tell this wallet's scrip from a forgery.
    let stranger = RunningVendor::start(VendorConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir: dir.path().join("stranger"),
        ..VendorConfig::default()
    })
    .await
    .unwrap();
    let stranger_url = format!("http://{}", stranger.addr());
    let wallet_path = dir.path().join("my.wallet");
    let wallet = wallet_path.to_str().unwrap();
    funded_wallet(&network, wallet).await;
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
    assert_eq!(paid["change"], 90);

    let error = fails_json(&[
        "--wallet",
        wallet,
        "pay",
        "--vendor",
        &stranger_url,
        "--item",
        "article-1",
    ])
    .await;
    let text = error["error"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("{stranger_url} refused")),
        "{text}"
    );
    assert!(text.contains("the scrip is kept in the wallet"), "{text}");
    let reason = error["reason"].as_str().unwrap();

    let balance = ok_json(&["--wallet", wallet, "balance"]).await;
    assert_eq!(balance["vendors"][0]["scrip"]["value"], 90, "{balance}");
    let history = ok_json(&["--wallet", wallet, "history"]).await;
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "pay");
    assert_eq!(last["outcome"]["refused"]["reason"], reason, "{last}");
    assert_eq!(last["url"], stranger_url.as_str(), "{last}");

    // The node that issued the scrip still takes it.
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
    assert_eq!(paid["change"], 80);
    assert!(paid["exchange"].is_null());

    stranger.shutdown().await.unwrap();
    network.broker.shutdown().await.unwrap();
    network.vendor.shutdown().await.unwrap();
}
