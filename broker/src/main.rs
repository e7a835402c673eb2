//! `millicent-broker`: runs a Millicent broker until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use millicent_broker::{BrokerConfig, RunningBroker};

/// Group-commit batch sizes: how many operations share one flush.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Latency buckets, in seconds: from a cached reply to a slow disk flush.
const SECONDS_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Parser)]
#[command(
    name = "millicent-broker",
    version,
    about = "Run a Millicent broker: customer accounts, broker scrip, and vendor scrip \
             minted under licence.",
    long_about = "Run a Millicent broker: customer accounts, broker scrip, and vendor scrip \
                  minted under licence.\n\n\
                  The broker serves gRPC (millicent.v1.BrokerService) and Prometheus metrics. \
                  Settings come from the configuration file, then from the environment, then \
                  from the options below; with no file at all it starts a local broker named \
                  broker.local on 127.0.0.1:7100 with its store in data/broker.",
    after_help = "ENVIRONMENT:\n  \
                  MILLICENT_BROKER_LISTEN          gRPC address (overrides `listen`)\n  \
                  MILLICENT_BROKER_DATA_DIR        store directory (overrides `data_dir`)\n  \
                  MILLICENT_BROKER_METRICS_LISTEN  metrics address (overrides `metrics_listen`)\n  \
                  MILLICENT_OPERATOR_TOKEN         token of the Credit call (`operator_token`)\n  \
                  MILLICENT_LICENCE_TOKEN          licence token of every configured vendor\n  \
                  RUST_LOG                         log filter, for example `info` or \
                  `millicent_broker=debug` (default: info)"
)]
struct Cli {
    /// TOML configuration file; keys left out take their defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address to serve gRPC on, for example 0.0.0.0:7100 (port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Directory of the broker's store and secrets; created with mode 0700.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Address to serve Prometheus metrics on (path /metrics).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

// Payments make many small, short-lived buffers (gRPC frames, sled nodes,
// scrip), freed on other threads than they were made on; jemalloc serves
// them at a fraction of glibc malloc's cost.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let mut config = BrokerConfig::load(cli.config.as_deref())?;
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(data_dir) = cli.data_dir {
        config.data_dir = data_dir;
    }
    if let Some(metrics_listen) = cli.metrics_listen {
        config.metrics_listen = metrics_listen;
    }

    PrometheusBuilder::new()
        .with_http_listener(config.metrics_listen)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
        .context("invalid histogram buckets")?
        .set_buckets_for_metric(
            Matcher::Full("millicent_ledger_commit_batch_size".to_owned()),
            BATCH_BUCKETS,
        )
        .context("invalid histogram buckets")?
        .install()
        .with_context(|| format!("cannot serve metrics on {}", config.metrics_listen))?;
    tracing::info!(addr = %config.metrics_listen, "metrics served");

    let broker = RunningBroker::start(config).await?;
    shutdown_signal().await?;
    broker.shutdown().await?;
    Ok(())
}

/// Waits for Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C")?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    tracing::info!("shutdown requested");
    Ok(())
}
