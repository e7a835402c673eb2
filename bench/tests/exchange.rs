//! `millicent-bench exchange` on its in-process network: a short run of
//! exchanges on two shards, unary and on streams, must spread its
//! customers over both shards, refuse every replay and audit clean.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use millicent_bench::exchange::{ExchangePlan, run};
use millicent_bench::network::LocalNetwork;
use millicent_core::Amount;

async fn run_on_two_shards(stream: bool) {
    let network = LocalNetwork::start_with(None, millicent_core::Suite::DEFAULT, 2)
        .await
        .unwrap();
    let plan = ExchangePlan {
        broker: network.broker_url(),
        operator_token: network.operator_token().to_owned(),
        customers: 8,
        channels: 2,
        duration: Duration::from_millis(700),
        value: Amount::new(1),
        stop: Default::default(),
        stream,
    };
    let report = run(&plan).await.unwrap();
    network.shutdown().await.unwrap();

    assert!(report.problems().is_empty(), "{:?}", report.problems());
    assert!(report.exchanges > 0);
    assert_eq!(report.shards_used, 2);
    assert_eq!(report.replays_attempted, 8);
    assert_eq!(report.replays_refused, 8);
    assert!(report.audit_clean);
    // Every exchange, and each customer's purchase of broker scrip, is a
    // transaction in the books; so is every credit.
    assert!(report.audited_transactions >= report.exchanges + 16);
}

#[tokio::test]
async fn unary_exchanges_on_two_shards_audit_clean() {
    run_on_two_shards(false).await;
}

#[tokio::test]
async fn streamed_exchanges_on_two_shards_audit_clean() {
    run_on_two_shards(true).await;
}
