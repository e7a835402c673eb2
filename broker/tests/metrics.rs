//! The real `millicent-broker` binary's metrics endpoint, after purchases,
//! exchanges and a refused call, passes `promtool check metrics` (Debian
//! package `prometheus`, installed by `scripts/test`) and holds the call,
//! group-commit and ledger-balance metrics.

// A test: any surprise should stop it at once, with the value in the message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../vendor-node/tests/common/process.rs"]
mod process;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use millicent_proto as proto;
use process::{ServiceProcess, assert_promtool_accepts, free_port, http_get};
use support::*;
use tonic::Code;

#[tokio::test]
async fn the_binarys_metrics_pass_promtool_after_exchanges() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = TestVendor::start().await;
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = binary_config(dir.path(), listen, metrics, &vendor);
    let mut broker = ServiceProcess::start(
        "the broker",
        env!("CARGO_BIN_EXE_millicent-broker"),
        &config,
        &[
            "MILLICENT_BROKER_LISTEN",
            "MILLICENT_BROKER_DATA_DIR",
            "MILLICENT_BROKER_METRICS_LISTEN",
            "MILLICENT_OPERATOR_TOKEN",
            "MILLICENT_LICENCE_TOKEN",
        ],
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut client = loop {
        broker.check_running();
        if let Ok(mut client) =
            millicent_proto::broker_service_client::BrokerServiceClient::connect(format!(
                "http://{listen}"
            ))
            .await
            && client
                .get_broker_info(proto::GetBrokerInfoRequest {})
                .await
                .is_ok()
        {
            break client;
        }
        assert!(Instant::now() < deadline, "the broker did not serve");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let (_, held) = funded(&mut client, 1_000, 0).await;
    let (request, _) = exchange_request(&held, VENDOR, 10);
    client.exchange(request.clone()).await.unwrap();
    // The same broker scrip in a different exchange is a double spend.
    let (again, _) = exchange_request(&held, VENDOR, 20);
    assert_refused(
        client.exchange(again).await,
        Code::AlreadyExists,
        "double_spend",
    );

    // Ledger balances are published by a periodic task; wait for them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let scrape = loop {
        let scrape = http_get(metrics, "/metrics").unwrap();
        if scrape.contains("millicent_broker_ledger_balance{") || Instant::now() > deadline {
            break scrape;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_promtool_accepts(&scrape);
    for line in [
        "millicent_broker_operations_total{operation=\"exchange\",outcome=\"ok\"} 1",
        "millicent_broker_operations_total{operation=\"exchange\",outcome=\"double_spend\"} 1",
        "# TYPE millicent_broker_operation_seconds histogram",
        "# TYPE millicent_broker_commit_batch_size histogram",
        "# HELP millicent_broker_ledger_balance",
        "millicent_broker_ledger_balance{",
    ] {
        assert!(scrape.contains(line), "no {line:?} in\n{scrape}");
    }
}
