//! The plain HTTP listener of a service's metrics and probes: Prometheus
//! text at `/metrics`, liveness at `/healthz` and readiness at `/readyz`,
//! the paths Kubernetes' HTTP probes and Prometheus' scrapes ask for.
//!
//! `/healthz` answers `200 ok` whenever the process answers at all;
//! `/readyz` answers `200 ready` while the node's [`Health`] is ready and
//! `503 not ready` before its store is open and from the moment it starts
//! draining. The listener runs in the background until its process
//! exits, so a prober sees the drain rather than a refused connection.
//! It serves HTTP/1.1 without TLS: what it tells (counters, whether the
//! node is up) is for the operator's network, never secrets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::health::Health;

/// Path of the Prometheus text.
pub const METRICS_PATH: &str = "/metrics";
/// Path of the liveness probe.
pub const LIVENESS_PATH: &str = "/healthz";
/// Path of the readiness probe.
pub const READINESS_PATH: &str = "/readyz";

/// How often the exporter's histograms are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Buckets of every `*_seconds` histogram: a durable answer takes from
/// tens of microseconds (a cached reply, a batched flush) to seconds (a
/// slow disk).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];

/// Buckets of every `*_commit_batch_size` histogram: writes made durable
/// by one flush.
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// A Prometheus builder with the histogram buckets every binary of the
/// project uses, so that dashboards read them alike.
pub fn prometheus_builder() -> Result<PrometheusBuilder, ProbeError> {
    let invalid = |error: metrics_exporter_prometheus::BuildError| ProbeError::Recorder {
        detail: error.to_string(),
    };
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
        .map_err(invalid)?
        .set_buckets_for_metric(
            Matcher::Suffix("_commit_batch_size".to_owned()),
            BATCH_BUCKETS,
        )
        .map_err(invalid)
}

/// Renders the Prometheus text of the process's metrics.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Installs `builder`'s recorder as the process's metrics recorder and
/// serves its text and the probes of `health` on `addr` (see [`serve`]).
pub async fn serve_prometheus(
    addr: SocketAddr,
    builder: PrometheusBuilder,
    health: Health,
) -> Result<SocketAddr, ProbeError> {
    let handle = builder
        .install_recorder()
        .map_err(|error| ProbeError::Recorder {
            detail: error.to_string(),
        })?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        // Histograms are folded into their buckets here, not on every
        // record, so memory stays bounded between scrapes.
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    serve(addr, Arc::new(move || handle.render()), health)
        .await
        .map_err(|error| ProbeError::Bind { addr, error })
}

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Another recorder is installed, or the builder is invalid.
    #[error("cannot install the metrics recorder: {detail}")]
    Recorder {
        /// The exporter's reason.
        detail: String,
    },
    /// The address cannot be bound.
    #[error("cannot serve metrics and probes on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's reason.
        error: std::io::Error,
    },
}

/// Binds `addr` and serves metrics rendered by `render` and the probes of
/// `health` on it, in the background. Returns the address bound (with the
/// real port if `addr` asked for port 0).
pub async fn serve(
    addr: SocketAddr,
    render: RenderMetrics,
    health: Health,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "the metrics listener cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let render = render.clone();
            let health = health.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let reply = answer(&request, &render, &health);
                    async move { Ok::<_, Infallible>(reply) }
                });
                // A prober that hangs up early is no error of ours.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn answer(
    request: &Request<Incoming>,
    render: &RenderMetrics,
    health: &Health,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".to_owned());
    }
    match request.uri().path() {
        METRICS_PATH => {
            let mut reply = text(StatusCode::OK, render());
            reply.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            reply
        }
        LIVENESS_PATH => text(StatusCode::OK, "ok\n".to_owned()),
        READINESS_PATH if health.is_ready() => text(StatusCode::OK, "ready\n".to_owned()),
        READINESS_PATH => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned()),
        _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}
