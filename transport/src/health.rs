//! Liveness and readiness, served as the standard gRPC health-checking
//! protocol (`grpc.health.v1.Health`), which Kubernetes probes natively.
//!
//! - **Liveness** is the overall status, service name `""`: `SERVING` as
//!   long as the process answers at all, including while it drains.
//! - **Readiness** is the status of the service the node exists for
//!   (`millicent.v1.VendorService`, `millicent.v1.BrokerService`):
//!   `SERVING` once its store is open and its gRPC server accepts calls,
//!   `NOT_SERVING` from the moment shutdown begins, so that a load balancer
//!   stops sending it work before it stops accepting.
//!
//! The HTTP probes of [`crate::probe`] report the same readiness.
//!
//! The same health service is served on the node's gRPC address (with its
//! TLS) and, when configured, on a separate plain-text address that serves
//! nothing else ([`serve_plain`]): Kubernetes' gRPC probes cannot speak
//! TLS, and this address tells a prober nothing but whether the node is
//! up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

/// The health statuses of one node, and the service that answers for them.
#[derive(Clone, Debug)]
pub struct Health {
    reporter: HealthReporter,
    readiness: &'static str,
    ready: Arc<AtomicBool>,
}

impl Health {
    /// Health of a node whose readiness is that of the gRPC service named
    /// `readiness` (its full name, as a prober asks for it). It is not
    /// ready until [`Health::ready`].
    pub async fn new(readiness: &'static str) -> Health {
        let reporter = HealthReporter::new();
        reporter
            .set_service_status(readiness, ServingStatus::NotServing)
            .await;
        Health {
            reporter,
            readiness,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The full name of the gRPC service whose status is the readiness.
    pub fn readiness_service(&self) -> &'static str {
        self.readiness
    }

    /// Whether the node is ready, as the HTTP probe reports it.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// A gRPC service answering for these statuses; any number can be made.
    pub fn service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService::from_health_reporter(self.reporter.clone()))
    }

    /// The store is open and the node accepts calls.
    pub async fn ready(&self) {
        self.ready.store(true, Ordering::Release);
        self.reporter
            .set_service_status(self.readiness, ServingStatus::Serving)
            .await;
    }

    /// Shutdown has begun: the node takes no new work.
    pub async fn draining(&self) {
        self.ready.store(false, Ordering::Release);
        self.reporter
            .set_service_status(self.readiness, ServingStatus::NotServing)
            .await;
    }
}

/// A plain-text gRPC listener serving only `health`, for probes that cannot
/// speak TLS, until `stop` resolves.
#[derive(Debug)]
pub struct PlainHealthListener {
    addr: SocketAddr,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Binds `addr` and serves `health` on it in the background, until `stop`.
pub async fn serve_plain(
    addr: SocketAddr,
    health: &Health,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<PlainHealthListener> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let task = tokio::spawn(
        Server::builder()
            .add_service(health.service())
            .serve_with_incoming_shutdown(incoming, stop),
    );
    Ok(PlainHealthListener { addr, task })
}

impl PlainHealthListener {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for it to stop (its `stop` future must have resolved).
    pub async fn stopped(self) {
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the health listener ended with an error"),
            Err(error) => tracing::warn!(%error, "the health listener task failed"),
        }
    }
}
