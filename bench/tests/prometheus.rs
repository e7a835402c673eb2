//! The metrics of a running network as Prometheus sees them: a scrape
//! taken while `millicent-bench load` drives a local broker and vendor
//! node passes `promtool check metrics`; a real Prometheus server scraping
//! it computes a payment rate above zero; and every metric the shipped
//! dashboard and scrape configuration name is in the scrape.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package,
//! which `scripts/test` installs when they are missing.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

#[path = "../../vendor-node/tests/common/process.rs"]
mod process;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use process::{assert_promtool_accepts, free_port, http_get};

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `millicent-bench load` on a local network for `seconds`, serving
/// its metrics at the address returned.
fn start_load(seconds: u64) -> (Running, SocketAddr) {
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let child = Command::new(env!("CARGO_BIN_EXE_millicent-bench"))
        .args([
            "load",
            "--customers",
            "8",
            "--channels",
            "1",
            "--warm-up",
            "0",
        ])
        .args(["--duration", &seconds.to_string()])
        .args(["--metrics-listen", &metrics.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Running(child), metrics)
}

/// Scrapes `metrics` until the payments counter shows accepted payments
/// and every family of `wanted` is served (some gauges are set by periodic
/// tasks), or a minute has passed: then the last scrape.
fn scrape_holding(metrics: SocketAddr, wanted: &BTreeSet<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(text) = http_get(metrics, "/metrics") {
            let paid = text.contains("millicent_vendor_payments_total{")
                && text.contains("outcome=\"accepted\"");
            if paid && wanted.is_subset(&families(&text)) {
                return text;
            }
            last = text;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    last
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|name| (*name).to_owned()).collect()
}

/// The metric families of a scrape: the names of its `# TYPE` lines.
fn families(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

#[test]
fn a_running_networks_metrics_pass_promtool() {
    let (_load, metrics) = start_load(30);
    // The broker's, the vendor node's and their stores' metrics.
    let wanted = names(&[
        "millicent_vendor_payments_total",
        "millicent_vendor_payment_seconds",
        "millicent_vendor_spent_ids",
        "millicent_broker_operations_total",
        "millicent_broker_ledger_balance",
        "millicent_ledger_commit_batch_size",
        "millicent_broker_commit_batch_size",
    ]);
    let scrape = scrape_holding(metrics, &wanted);
    let served = families(&scrape);
    let missing: Vec<_> = wanted.difference(&served).collect();
    assert!(missing.is_empty(), "{missing:?} not served in\n{scrape}");

    assert_promtool_accepts(&scrape);

    // Latencies are histograms with buckets, for histogram_quantile.
    assert!(scrape.contains("# TYPE millicent_vendor_payment_seconds histogram"));
    assert!(scrape.contains("millicent_vendor_payment_seconds_bucket{le=\"0.001\"}"));
}

#[test]
fn every_metric_of_the_dashboard_and_scrape_configuration_is_served() {
    let (_load, metrics) = start_load(30);
    let wanted = referenced_metrics();
    assert!(
        wanted.len() >= 10,
        "the dashboard names too few metrics: {wanted:?}"
    );
    let scrape = scrape_holding(metrics, &wanted);
    let served = families(&scrape);
    let missing: Vec<_> = wanted.difference(&served).collect();
    assert!(missing.is_empty(), "named but never served: {missing:?}");
}

/// The metric families named in deploy/grafana/millicent.json and
/// deploy/prometheus.yml: `millicent_` names, with the `_bucket`, `_sum`
/// and `_count` series of a histogram taken back to the histogram.
fn referenced_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in ["grafana/millicent.json", "prometheus.yml"] {
        let text = std::fs::read_to_string(deploy(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("millicent_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            names.insert(family.to_owned());
        }
    }
    // The dashboard must parse as JSON with panels, each with a query.
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/millicent.json")).unwrap())
            .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 5);
    for panel in panels {
        assert!(
            !panel["targets"][0]["expr"].as_str().unwrap().is_empty(),
            "{panel}"
        );
    }
    names
}

#[test]
fn a_prometheus_server_scraping_a_network_sees_payments_flow() {
    let (_load, metrics) = start_load(60);
    scrape_holding(metrics, &BTreeSet::new());

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: millicent\n    static_configs:\n      \
             - targets: [\"{metrics}\"]\n"
        ),
    )
    .unwrap();
    let web: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Running(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package prometheus) must be installed: run scripts/test"),
    );

    let query = "/api/v1/query?query=sum%28rate%28millicent_vendor_payments_total%7B\
                 outcome%3D%22accepted%22%7D%5B10s%5D%29%29";
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut last = String::new();
    let rate = loop {
        if let Ok(body) = http_get(web, query) {
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(answer["status"], "success", "{body}");
            if let Some(value) = answer["data"]["result"][0]["value"][1].as_str() {
                let rate: f64 = value.parse().unwrap();
                if rate > 0.0 {
                    break rate;
                }
            }
            last = body;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus saw no payment rate in 45 s; last answer: {last}\nlog:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // Eight customers on loopback pay far more than once a second.
    assert!(rate > 1.0, "payment rate {rate}/s");
}
