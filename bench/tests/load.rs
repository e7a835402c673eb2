//! `millicent-bench load` on in-process networks: short mixed runs, unary
//! and streamed, closed loop and at a target rate, against one network and
//! against two brokers and two vendor nodes of one vendor. Every attack
//! must be refused for its own reason, no scrip accepted twice, and the
//! warm-up left out of the figures.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use millicent_bench::mix::{Mix, Operation};
use millicent_bench::network::LocalNetwork;
use millicent_bench::report::{LoadReport, LoadSettings};
use millicent_bench::traffic::{TrafficPlan, TrafficResult, run};
use millicent_core::{Amount, Suite, Variant};

/// A mix with every operation, heavy on attacks so that a short run sends
/// many of each.
const EVERYTHING: &str = "pay=50,exchange=10,buy=8,refund=8,replay=8,tamper=8,expired=8";

fn plan(networks: &[&LocalNetwork], mix: &str) -> TrafficPlan {
    TrafficPlan {
        brokers: networks
            .iter()
            .map(|network| network.broker_url())
            .collect(),
        vendors: networks
            .iter()
            .map(|network| network.vendor_url())
            .collect(),
        operator_tokens: networks
            .iter()
            .map(|network| network.operator_token().to_owned())
            .collect(),
        licence_tokens: networks
            .iter()
            .map(|network| network.licence_token().to_owned())
            .collect(),
        customers: 8,
        channels: 2,
        duration: Duration::from_millis(1500),
        warm_up: Duration::from_millis(300),
        rate: None,
        mix: mix.parse().unwrap(),
        variant: Variant::Secure,
        stream: false,
        scrip_value: Amount::new(50),
        stop: Default::default(),
        progress: false,
    }
}

fn report(plan: &TrafficPlan, result: &TrafficResult) -> LoadReport {
    LoadReport::new(result, &LoadSettings::of(plan))
}

/// Every operation of the mix was done, every attack refused as it must
/// be, nothing spent twice.
fn assert_clean(plan: &TrafficPlan, result: &TrafficResult) -> LoadReport {
    let report = report(plan, result);
    assert!(report.problems().is_empty(), "{:?}", report.problems());
    for operation in Operation::ALL {
        let figures = result.of(operation);
        assert!(
            figures.done > 0,
            "{operation}: nothing done ({figures:?})\n{}",
            report.table()
        );
        if operation.is_attack() {
            // Each refused for its own reason, none accepted, none lost.
            assert_eq!(
                figures.done,
                figures.attempted(),
                "{operation}: {figures:?}"
            );
        }
    }
    assert_eq!(report.attacks_accepted, 0);
    assert_eq!(report.attacks_refused, report.attacks_attempted);
    assert_eq!(report.double_spends_found, 0);
    assert_eq!(report.payments.replays_attempted, plan.customers as u64);
    assert_eq!(report.payments.replays_refused, plan.customers as u64);
    assert_eq!(report.payments.accepted, result.of(Operation::Pay).done);
    report
}

#[tokio::test]
async fn a_mixed_unary_run_refuses_every_attack_and_leaves_out_the_warm_up() {
    let network = LocalNetwork::start(None, Suite::DEFAULT).await.unwrap();
    let plan = plan(&[&network], EVERYTHING);
    let result = run(&plan).await.unwrap();
    network.shutdown().await.unwrap();

    let report = assert_clean(&plan, &result);
    // The timeline holds the warm-up too, the totals do not.
    let in_timeline: u64 = result.timeline.iter().map(|second| second.payments).sum();
    assert!(in_timeline > report.payments.accepted);
    // The report's timeline holds whole seconds only.
    let whole = (result.warm_up + result.measured).as_secs() as usize;
    assert_eq!(report.timeline.len(), whole);
    assert!(result.timeline.len() >= whole);
    assert!(result.measured >= Duration::from_millis(1400));
    assert_eq!(result.warm_up, Duration::from_millis(300));
    // The JSON keeps the keys of a demo's report.
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "accepted",
        "rejected",
        "payments_per_second",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "double_spends_accepted",
        "replays_refused",
        "customers",
        "mode",
    ] {
        assert!(json.get(key).is_some(), "the report lacks {key}");
    }
    assert_eq!(json["operations"]["tamper"]["accepted_attacks"], 0);
}

#[tokio::test]
async fn a_streamed_run_at_a_target_rate_keeps_to_the_rate() {
    let network = LocalNetwork::start(None, Suite::DEFAULT).await.unwrap();
    let mut plan = plan(&[&network], EVERYTHING);
    plan.stream = true;
    plan.customers = 16;
    plan.rate = Some(400.0);
    plan.duration = Duration::from_secs(2);
    let result = run(&plan).await.unwrap();
    network.shutdown().await.unwrap();

    let report = assert_clean(&plan, &result);
    // An open loop starts no more than the rate, and this network keeps up.
    assert!(
        (200.0..=440.0).contains(&report.operations_per_second),
        "{}",
        report.table()
    );
}

#[tokio::test]
async fn customers_of_two_brokers_find_the_vendor_node_that_holds_their_series() {
    // Two networks serving the same vendor, each vendor node with series of
    // its own: each broker's scrip pays only at its own network's node.
    let first = LocalNetwork::start(None, Suite::DEFAULT).await.unwrap();
    let second =
        LocalNetwork::start_with_series(None, Suite::DEFAULT, 1, Some([2_000_001, 3_000_000]))
            .await
            .unwrap();
    // No warm-up, so that the first payments count; no attack that could
    // be a customer's first payment at the other node.
    let mut plan = plan(&[&first, &second], "pay=80,exchange=10,replay=10");
    plan.warm_up = Duration::ZERO;
    let result = run(&plan).await.unwrap();
    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();

    let report = report(&plan, &result);
    assert!(report.problems().is_empty(), "{:?}", report.problems());
    assert_eq!((report.brokers, report.vendor_nodes), (2, 2));
    assert!(result.of(Operation::Replay).done > 0);
    assert_eq!(result.breaches(), 0);
    // Customers are dealt round the brokers, then round the nodes of the
    // vendor: half of them (4 of 8) were first sent to the other
    // network's node, which refused their unknown series, changing
    // nothing, and they moved on.
    let pay = result.of(Operation::Pay);
    assert_eq!(
        pay.refused.get("unknown_series"),
        Some(&4),
        "{}",
        report.table()
    );
    assert_eq!(pay.refused.values().sum::<u64>(), 4, "{}", report.table());
    assert!(pay.done > 0);
}

/// The command as an operator runs it: a bounded local run with attacks,
/// its JSON report and its plot, and a zero exit status.
#[test]
fn the_load_command_writes_its_report_and_plot_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (json_path, svg_path) = (dir.path().join("run.json"), dir.path().join("run.svg"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_millicent-bench"))
        .args(["load", "--customers", "8", "--channels", "2"])
        .args(["--duration", "2", "--warm-up", "1", "--mix", EVERYTHING])
        .arg("--report")
        .arg(&json_path)
        .arg("--plot")
        .arg(&svg_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    for operation in Operation::ALL {
        assert!(
            stdout.contains(operation.name()),
            "the table lacks {operation}"
        );
    }

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    for key in [
        "accepted",
        "rejected",
        "payments_per_second",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p999_ms",
        "double_spends_accepted",
        "replays_attempted",
        "replays_refused",
        "customers",
        "variant",
        "mode",
        "operations",
        "attacks_attempted",
        "timeline",
    ] {
        assert!(json.get(key).is_some(), "the report lacks {key}");
    }
    assert!(json["accepted"].as_u64().unwrap() > 0);
    assert!(json["attacks_attempted"].as_u64().unwrap() > 0);
    assert_eq!(json["attacks_refused"], json["attacks_attempted"]);
    assert_eq!(json["attacks_accepted"], 0);
    assert_eq!(json["double_spends_found"], 0);
    assert_eq!(json["replays_refused"], json["replays_attempted"]);
    assert_eq!(json["timeline"].as_array().unwrap().len(), 3);

    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg"));
    assert!(svg.contains("<polyline"));
}

#[test]
fn the_default_mix_is_a_valid_mix() {
    let mix: Mix = Mix::DEFAULT.parse().unwrap();
    assert!(mix.includes(Operation::Expired));
}
