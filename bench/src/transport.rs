//! The gRPC ceiling of this machine: how many unary calls a vendor node
//! answers when each does next to nothing.
//!
//! `GetPrices` checks nothing and writes nothing; its reply is about the
//! size of a payment's. Calling it the way the demo's customers call `Pay`
//! (closed loop, the same concurrency over the same number of connections,
//! client and node on the same cores) gives the rate that one unary call per
//! payment can never exceed here, to set beside the payment rate measured in
//! the same sitting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use millicent_client::protocol::connect;
use millicent_proto as wire;
use millicent_proto::vendor_service_client::VendorServiceClient;
use serde::Serialize;

/// What a transport run measured.
#[derive(Debug, Serialize)]
pub struct TransportFigures {
    /// Calls answered.
    pub calls: u64,
    /// Calls answered per second.
    pub calls_per_second: f64,
    /// Latency percentiles, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Concurrent callers.
    pub callers: usize,
    /// Connections they share.
    pub channels: usize,
    /// Length of the run.
    pub duration_secs: f64,
}

/// Calls `GetPrices` on `vendor` from `callers` concurrent loops sharing
/// `channels` connections, for `duration`.
pub async fn run(
    vendor: &str,
    callers: usize,
    channels: usize,
    duration: Duration,
) -> anyhow::Result<TransportFigures> {
    let mut clients = Vec::new();
    for _ in 0..channels.max(1) {
        let channel = connect(vendor)
            .await
            .context("connecting to the vendor node")?;
        clients.push(VendorServiceClient::new(channel));
    }
    let calls = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut loops = tokio::task::JoinSet::new();
    for index in 0..callers.max(1) {
        let mut client = clients[index % clients.len()].clone();
        let calls = calls.clone();
        loops.spawn(async move {
            let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2)?;
            while Instant::now() < deadline {
                let sent = Instant::now();
                client
                    .get_prices(wire::GetPricesRequest {})
                    .await
                    .context("GetPrices failed")?;
                latency_us.saturating_record(sent.elapsed().as_micros() as u64);
                calls.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(latency_us)
        });
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2)?;
    while let Some(result) = loops.join_next().await {
        latency_us.add(result.context("caller task")??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let calls = calls.load(Ordering::Relaxed);
    let ms = |quantile: f64| latency_us.value_at_quantile(quantile) as f64 / 1000.0;
    Ok(TransportFigures {
        calls,
        calls_per_second: (calls as f64 / elapsed * 10.0).round() / 10.0,
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        callers,
        channels,
        duration_secs: elapsed,
    })
}
