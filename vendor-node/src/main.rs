//! `millicent-vendor`: runs a vendor validation node until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use millicent_transport::health::Health;
use millicent_transport::probe;
use millicent_vendor::{READINESS_SERVICE, RunningVendor, VendorConfig};
use tracing_subscriber::EnvFilter;

/// Runs a Millicent vendor validation node.
///
/// The node takes payments in vendor scrip over gRPC (VendorService), checks
/// each one locally, records spent scrip durably before answering, and
/// licenses brokers to mint the vendors' scrip.
///
/// Settings come from the configuration file, then from the environment
/// (MILLICENT_VENDOR_LISTEN, MILLICENT_VENDOR_DATA_DIR,
/// MILLICENT_VENDOR_METRICS_LISTEN, MILLICENT_LICENCE_TOKEN,
/// MILLICENT_VENDOR_HEALTH_LISTEN, MILLICENT_VENDOR_TLS_CERT,
/// MILLICENT_VENDOR_TLS_KEY, MILLICENT_VENDOR_TLS_CLIENT_CA), then from the
/// flags below. With no file the node serves the demonstration vendor
/// news.example on 127.0.0.1:7200 from data/vendor-1.
///
/// The file holds: node, listen, data_dir, metrics_listen, licence_token,
/// retry_window_secs, series_lifetime_secs, max_requests_per_connection,
/// request_timeout_secs, durability ("strict", the default, or "relaxed"),
/// checkpoint_interval_ms (relaxed only), series_range = [first, last] (the
/// series this node allocates), one [[peers]] table per other node of the
/// same vendors (node, url, series_range), and one [[vendors]] table per
/// vendor (name, suite, variants, clear_max_price) with [[vendors.items]]
/// (name, price, content), a [tls] table (cert, key, and client_ca to
/// demand client certificates) and health_listen (a plain-text address
/// serving only gRPC health checks).
///
/// Log detail is set with RUST_LOG (default: info). Ctrl-C or SIGTERM stops
/// the node cleanly: it stops accepting, finishes requests in flight,
/// flushes its store and exits.
#[derive(Debug, Parser)]
#[command(name = "millicent-vendor", version, verbatim_doc_comment)]
struct Args {
    /// TOML configuration file; keys it leaves out keep their defaults
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address for gRPC, for example 0.0.0.0:7200
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Directory of the node's store; created with mode 0700
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Address of the Prometheus endpoint (/metrics)
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

// Payments make many small, short-lived buffers (gRPC frames, sled nodes,
// scrip), freed on other threads than they were made on; jemalloc serves
// them at a fraction of glibc malloc's cost.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = VendorConfig::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    if let Some(metrics_listen) = args.metrics_listen {
        config.metrics_listen = metrics_listen;
    }

    let builder = probe::prometheus_builder()?;
    let health = Health::new(READINESS_SERVICE).await;
    let metrics_addr = probe::serve_prometheus(config.metrics_listen, builder, health.clone())
        .await
        .map_err(|error| anyhow::anyhow!("{error}; choose another --metrics-listen"))?;
    tracing::info!(listen = %metrics_addr, "metrics at /metrics, probes at /healthz and /readyz");

    let node = RunningVendor::start_with_health(config, health).await?;
    shutdown_signal().await?;
    tracing::info!("shutdown requested");
    node.shutdown().await?;
    tracing::info!("vendor node stopped");
    Ok(())
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot listen for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C")?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    Ok(())
}
