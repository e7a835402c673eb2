//! Liveness and readiness of a node: the HTTP probes of its metrics
//! listener and the gRPC health service on its own address, before the
//! store opens, while it serves, and once it drains.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::config;
use millicent_transport::health::Health;
use millicent_transport::probe;
use millicent_vendor::{READINESS_SERVICE, RunningVendor};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Status code and body of `GET path` at `addr`.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap();
    let body = reply
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

async fn grpc_status(addr: SocketAddr, service: &str) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_ready_only_between_opening_its_store_and_draining() {
    let dir = tempfile::tempdir().unwrap();
    let health = Health::new(READINESS_SERVICE).await;
    let render: probe::RenderMetrics = Arc::new(|| "millicent_test_total 3\n".to_owned());
    let probes = probe::serve("127.0.0.1:0".parse().unwrap(), render, health.clone())
        .await
        .unwrap();

    // Before the store is open: alive, not ready.
    assert_eq!(get(probes, probe::LIVENESS_PATH).await.0, 200);
    assert_eq!(get(probes, probe::READINESS_PATH).await.0, 503);
    let (status, body) = get(probes, probe::METRICS_PATH).await;
    assert_eq!((status, body.as_str()), (200, "millicent_test_total 3\n"));
    assert_eq!(get(probes, "/other").await.0, 404);
    let (stop_early, early_stopped) = tokio::sync::oneshot::channel::<()>();
    let early =
        millicent_transport::health::serve_plain("127.0.0.1:0".parse().unwrap(), &health, async {
            let _ = early_stopped.await;
        })
        .await
        .unwrap();
    assert_eq!(grpc_status(early.addr(), "").await, SERVING);
    assert_eq!(
        grpc_status(early.addr(), READINESS_SERVICE).await,
        NOT_SERVING
    );
    let _ = stop_early.send(());
    early.stopped().await;

    let mut node_config = config(dir.path());
    node_config.health_listen = Some("127.0.0.1:0".parse().unwrap());
    let node = RunningVendor::start_with_health(node_config, health.clone())
        .await
        .unwrap();
    assert_eq!(
        get(probes, probe::READINESS_PATH).await,
        (200, "ready\n".to_owned())
    );
    for addr in [node.addr(), node.health_addr().unwrap()] {
        assert_eq!(grpc_status(addr, "").await, SERVING);
        assert_eq!(grpc_status(addr, READINESS_SERVICE).await, SERVING);
    }

    // Draining: not ready any more, though the probe still answers.
    node.shutdown().await.unwrap();
    assert!(!health.is_ready());
    assert_eq!(get(probes, probe::READINESS_PATH).await.0, 503);
    assert_eq!(get(probes, probe::LIVENESS_PATH).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_never_reports_ready() {
    let dir = tempfile::tempdir().unwrap();
    let health = Health::new(READINESS_SERVICE).await;
    let mut bad = config(dir.path());
    bad.vendors.clear();
    assert!(
        RunningVendor::start_with_health(bad, health.clone())
            .await
            .is_err()
    );
    assert!(!health.is_ready());
}
