//! The real `millicent-vendor` binary's metrics endpoint, after payments
//! accepted and refused, passes `promtool check metrics` (Debian package
//! `prometheus`, installed by `scripts/test`) and holds the payment,
//! spent-set and group-commit metrics.

// A test: any surprise should stop it at once, with the value in the message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/process.rs"]
mod process;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use millicent_core::Variant;
use millicent_proto as wire;
use millicent_proto::vendor_service_client::VendorServiceClient;
use process::{ServiceProcess, assert_promtool_accepts, free_port, http_get};

#[tokio::test]
async fn the_binarys_metrics_pass_promtool_after_payments() {
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let store = dir.path().join("store");
    let config = dir.path().join("vendor.toml");
    std::fs::write(
        &config,
        format!(
            r#"
node = "vendor-1"
listen = "{listen}"
metrics_listen = "{metrics}"
data_dir = {store}
licence_token = "{TOKEN}"

[[vendors]]
name = "news.example"
variants = ["secure"]

[[vendors.items]]
name = "article-1"
price = 10
content = "The text of article 1"

[[vendors.items]]
name = "article-2"
price = 10
content = "The text of article 2"
"#,
            store = toml::Value::String(store.to_str().unwrap().to_owned()),
        ),
    )
    .unwrap();
    let mut node = ServiceProcess::start(
        "the node",
        env!("CARGO_BIN_EXE_millicent-vendor"),
        &config,
        &[
            "MILLICENT_VENDOR_LISTEN",
            "MILLICENT_VENDOR_DATA_DIR",
            "MILLICENT_VENDOR_METRICS_LISTEN",
            "MILLICENT_LICENCE_TOKEN",
        ],
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut client = loop {
        node.check_running();
        if let Ok(mut client) = VendorServiceClient::connect(format!("http://{listen}")).await
            && client.get_prices(wire::GetPricesRequest {}).await.is_ok()
        {
            break client;
        }
        assert!(Instant::now() < deadline, "the node did not serve");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let mut broker = Broker::licensed(&mut client, "news.example").await;
    for _ in 0..5 {
        let scrip = broker.mint(100);
        let secret = broker.secret(&scrip);
        let payment = broker.payment(&scrip, Variant::Secure, "article-1");
        pay_ok(&mut client, &payment, &secret).await;
        let replay = broker.payment(&scrip, Variant::Secure, "article-2");
        let (_, why) = pay_refused(&mut client, pay_request(&replay)).await;
        assert_eq!(why, "double_spend");
    }

    let scrape = http_get(metrics, "/metrics").unwrap();
    assert_promtool_accepts(&scrape);
    for line in [
        "millicent_vendor_payments_total{vendor=\"news.example\",outcome=\"accepted\"} 5",
        "millicent_vendor_payments_total{vendor=\"news.example\",outcome=\"double_spend\"} 5",
        "# TYPE millicent_vendor_payment_seconds histogram",
        "# TYPE millicent_ledger_commit_batch_size histogram",
        "# TYPE millicent_vendor_spent_ids gauge",
        "# HELP millicent_vendor_spent_memory_bytes",
    ] {
        assert!(scrape.contains(line), "no {line:?} in\n{scrape}");
    }
}
