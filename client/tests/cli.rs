//! The `millicent` command line, run as a user runs it, against a real
//! broker and vendor node serving gRPC on loopback with sled stores.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use millicent_broker::RunningBroker;
use millicent_vendor::{RunningVendor, VendorConfig};
use serde_json::Value;
use support::{LICENCE_TOKEN, OPERATOR_TOKEN, fails, fails_json, millicent, ok_json};

mod support;

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
    let broker = support::start_broker(dir, vendor.addr()).await;
    Network { vendor, broker }
}

/// Creates a wallet at `wallet`, joins the broker, has 1000 credited and
/// buys 500 of broker scrip.
async fn funded_wallet(network: &Network, wallet: &str) {
    support::funded_wallet(&format!("http://{}", network.broker.addr()), wallet).await;
}

/// A network and a funded wallet in a temporary folder.
struct Funded {
    dir: tempfile::TempDir,
    network: Network,
    vendor: String,
    wallet: String,
}

impl Funded {
    async fn new() -> Funded {
        let dir = tempfile::tempdir().unwrap();
        let network = start(dir.path()).await;
        let vendor = format!("http://{}", network.vendor.addr());
        let wallet = dir.path().join("my.wallet").to_str().unwrap().to_owned();
        funded_wallet(&network, &wallet).await;
        Funded {
            dir,
            network,
            vendor,
            wallet,
        }
    }

    async fn shutdown(self) {
        self.network.broker.shutdown().await.unwrap();
        self.network.vendor.shutdown().await.unwrap();
        drop(self.dir);
    }
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

    // Without an authority to trust, an https:// URL is refused, not
    // dialled unchecked, and nothing is spent.
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
    assert!(
        error.contains("no certificate authority to trust"),
        "{error}"
    );
    assert_eq!(error.matches(&https).count(), 1, "said once: {error}");
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

/// Runs `millicent` with the environment variable `name` set to `value`.
async fn with_env(name: &'static str, value: &str, args: &[&str]) -> Output {
    let value = value.to_owned();
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_millicent"))
            .args(&args)
            .env_remove("MILLICENT_WALLET")
            .env_remove("MILLICENT_PASSPHRASE")
            .env(name, value)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// Runs `millicent` with `MILLICENT_PASSPHRASE` set to `passphrase`.
async fn with_passphrase(passphrase: &str, args: &[&str]) -> Output {
    with_env("MILLICENT_PASSPHRASE", passphrase, args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_wallet_opens_with_its_passphrase_only() {
    let funded = Funded::new().await;
    let (vendor, wallet) = (&funded.vendor, funded.wallet.as_str());
    let wallet_path = Path::new(wallet);
    let secret_hex = {
        let plain = std::fs::read_to_string(wallet_path).unwrap();
        let record: Value = serde_json::from_str(&plain).unwrap();
        record["brokers"][0]["account_key"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // Protecting it: the file no longer holds any secret in the clear.
    let set = with_passphrase("", &["--wallet", wallet, "passphrase"]).await;
    assert!(!set.status.success(), "a new passphrase is needed");
    let set = with_env(
        "MILLICENT_NEW_PASSPHRASE",
        "correct horse battery",
        &["--wallet", wallet, "passphrase"],
    )
    .await;
    assert!(set.status.success(), "{set:?}");
    let sealed = std::fs::read_to_string(wallet_path).unwrap();
    assert!(
        !sealed.contains(&secret_hex),
        "the account key is in the clear"
    );
    assert!(sealed.contains("\"argon2id\""), "{sealed}");

    // Without it, or with a wrong one, nothing opens and nothing changes.
    let error = fails(&["--wallet", wallet, "balance"]).await;
    assert!(error.contains("protected by a passphrase"), "{error}");
    assert!(error.contains("MILLICENT_PASSPHRASE"), "{error}");
    let wrong = with_passphrase("wrong", &["--wallet", wallet, "balance"]).await;
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("does not open"), "{stderr}");
    assert_eq!(std::fs::read_to_string(wallet_path).unwrap(), sealed);

    // A passphrase file others can read is refused like such a wallet file.
    let file = funded.dir.path().join("passphrase");
    std::fs::write(&file, "correct horse battery\n").unwrap();
    let file_arg = file.to_str().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = fails(&["--passphrase-file", file_arg, "--wallet", wallet, "balance"]).await;
        assert!(error.contains("chmod 600"), "{error}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    ok_json(&["--passphrase-file", file_arg, "--wallet", wallet, "balance"]).await;

    // With it, the wallet pays and stays protected.
    let paid = with_passphrase(
        "correct horse battery",
        &[
            "--json",
            "--wallet",
            wallet,
            "pay",
            "--vendor",
            vendor,
            "--item",
            "article-1",
        ],
    )
    .await;
    assert!(paid.status.success(), "{paid:?}");
    let paid: Value = serde_json::from_slice(&paid.stdout).unwrap();
    assert_eq!(paid["change"], 90);
    assert!(
        std::fs::read_to_string(wallet_path)
            .unwrap()
            .contains("\"argon2id\"")
    );

    // Removing the protection leaves a plain, private file.
    let removed = with_passphrase(
        "correct horse battery",
        &["--wallet", wallet, "passphrase", "--remove"],
    )
    .await;
    assert!(removed.status.success(), "{removed:?}");
    let balance = ok_json(&["--wallet", wallet, "balance"]).await;
    assert_eq!(balance["vendors"][0]["scrip"]["value"], 90, "{balance}");

    funded.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_over_a_limit_are_refused_before_anything_is_spent() {
    let funded = Funded::new().await;
    let (vendor, wallet) = (&funded.vendor, funded.wallet.as_str());
    let pay = [
        "--wallet",
        wallet,
        "pay",
        "--vendor",
        vendor,
        "--item",
        "article-1",
    ];

    let settings = ok_json(&["--wallet", wallet, "limits"]).await;
    assert_eq!(settings["max_price"], 100, "{settings}");
    assert_eq!(settings["daily_limit"], 1000, "{settings}");
    assert_eq!(settings["top_up"], 100, "{settings}");

    // Over the per-payment limit: refused before any exchange.
    ok_json(&[
        "--wallet",
        wallet,
        "limits",
        "--max-price",
        "5",
        "--top-up",
        "30",
    ])
    .await;
    let error = fails_json(&pay).await;
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("per-payment limit of 5"),
        "{error}"
    );
    let balance = ok_json(&["--wallet", wallet, "balance"]).await;
    assert_eq!(balance["brokers"][0]["scrip"]["value"], 500, "{balance}");
    assert_eq!(balance["vendors"], Value::Array(vec![]), "{balance}");

    // A vendor's own daily limit: two payments of 10 fit in 25, a third not.
    ok_json(&[
        "--wallet",
        wallet,
        "limits",
        "--max-price",
        "off",
        "--vendor-limit",
        "news.example=25",
    ])
    .await;
    let paid = ok_json(&pay).await;
    assert_eq!(
        paid["exchange"]["value"], 30,
        "the top-up setting is used: {paid}"
    );
    ok_json(&pay).await;
    let error = fails_json(&pay).await;
    let text = error["error"].as_str().unwrap();
    assert!(
        text.contains("daily limit at this vendor of 25 (20 spent"),
        "{text}"
    );
    assert!(text.contains("--vendor-limit news.example=N"), "{text}");
    let balance = ok_json(&["--wallet", wallet, "balance"]).await;
    assert_eq!(balance["vendors"][0]["scrip"]["value"], 10, "{balance}");

    let settings = ok_json(&["--wallet", wallet, "limits"]).await;
    assert_eq!(settings["max_price"], Value::Null, "{settings}");
    assert_eq!(settings["vendor_limits"]["news.example"], 25, "{settings}");
    assert_eq!(settings["paid_last_24h"], 20, "{settings}");

    funded.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unspent_broker_scrip_is_refunded_into_the_account_once() {
    let funded = Funded::new().await;
    let wallet = funded.wallet.as_str();
    // An exchange leaves broker change: 400 of the 500 bought.
    ok_json(&[
        "--wallet",
        wallet,
        "pay",
        "--vendor",
        &funded.vendor,
        "--item",
        "article-1",
    ])
    .await;

    // A broker the wallet has not joined: refused, nothing changes.
    let error = fails(&["--wallet", wallet, "refund", "--broker", "nobody.example"]).await;
    assert!(error.contains("nobody.example"), "{error}");
    let balance = ok_json(&["--wallet", wallet, "balance"]).await;
    assert_eq!(balance["brokers"][0]["scrip"]["value"], 400, "{balance}");

    let refunds = ok_json(&["--wallet", wallet, "refund"]).await;
    assert_eq!(refunds[0]["pieces"], 1, "{refunds}");
    assert_eq!(refunds[0]["credited"], 400, "{refunds}");
    assert_eq!(refunds[0]["balance"], 900, "{refunds}");

    let balance = ok_json(&["--wallet", wallet, "balance"]).await;
    assert_eq!(balance["brokers"][0]["balance"], 900, "{balance}");
    assert_eq!(balance["brokers"][0]["scrip"]["value"], 0, "{balance}");
    // Vendor scrip is not refunded.
    assert_eq!(balance["vendors"][0]["scrip"]["value"], 90, "{balance}");
    let history = ok_json(&["--wallet", wallet, "history"]).await;
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "refund", "{last}");
    assert_eq!(last["price"], 400, "{last}");
    assert_eq!(last["outcome"], "ok", "{last}");

    // Nothing is left to refund, and the account is not credited again.
    let again = ok_json(&["--wallet", wallet, "refund"]).await;
    assert_eq!(again[0]["pieces"], 0, "{again}");
    assert!(again[0]["balance"].is_null(), "{again}");
    let balance = ok_json(&["--wallet", wallet, "balance"]).await;
    assert_eq!(balance["brokers"][0]["balance"], 900, "{balance}");
    funded.shutdown().await;
}
