//! Starting and stopping a node: data directory, store, gRPC server and
//! background task, in that order up and in reverse order down.
//!
//! The gRPC server serves TLS when the configuration has a `[tls]` table
//! (demanding client certificates when it names a `client_ca`), and always
//! serves the gRPC health service next to `VendorService`: the node is live
//! while it answers and ready from the moment its store is open and it
//! accepts calls until shutdown begins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use millicent_ledger::{Durability, Ledger};
use millicent_proto::vendor_service_server::VendorServiceServer;
use millicent_transport::health::{self, Health, PlainHealthListener};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::server::NamedService as _;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::gateway::RunningGateway;
use crate::node::{Node, unix_now};
use crate::service::GrpcVendor;
use crate::{VendorConfig, VendorError, maintenance};

/// Largest gRPC message the node decodes. A payment is well under 2 KiB;
/// the limit stops a client making the node buffer large bodies.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// How long shutdown waits for requests in flight to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A node serving `VendorService`, started by [`RunningVendor::start`].
///
/// Stop it with [`RunningVendor::shutdown`]; dropping it instead leaves the
/// server running until the runtime ends and the store open.
#[derive(Debug)]
pub struct RunningVendor {
    addr: SocketAddr,
    data_dir: PathBuf,
    node: Arc<Node>,
    ledger: Ledger,
    stop_serving: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    stop_maintenance: oneshot::Sender<()>,
    maintenance: JoinHandle<()>,
    gateway: Option<RunningGateway>,
    health: Health,
    health_listener: Option<(PlainHealthListener, oneshot::Sender<()>)>,
    /// Told when shutdown begins, so that payment streams end.
    draining: tokio::sync::watch::Sender<bool>,
}

/// The name under which the node's readiness is reported.
pub const READINESS_SERVICE: &str = VendorServiceServer::<GrpcVendor>::NAME;

impl RunningVendor {
    /// Opens the store in `config.data_dir`, loads or creates every
    /// vendor's keys, binds `config.listen` and returns once the node is
    /// accepting connections. Needs a tokio runtime.
    pub async fn start(config: VendorConfig) -> Result<RunningVendor, VendorError> {
        Self::start_with_health(config, Health::new(READINESS_SERVICE).await).await
    }

    /// [`RunningVendor::start`], reporting readiness through `health`
    /// (made with [`READINESS_SERVICE`]), which a metrics listener
    /// started before the store opens may already serve.
    pub async fn start_with_health(
        config: VendorConfig,
        health: Health,
    ) -> Result<RunningVendor, VendorError> {
        let settings = config.validate()?;
        crate::telemetry::describe();
        let mut builder = Server::builder();
        if let Some(files) = &config.tls {
            let tls_error = |detail: String| VendorError::Config {
                detail: format!("[tls]: {detail}"),
            };
            let tls = files.load().map_err(|error| tls_error(error.to_string()))?;
            builder = builder
                .tls_config(tls)
                .map_err(|error| tls_error(millicent_transport::tls::chain(&error)))?;
        }
        millicent_ledger::prepare_data_dir(&config.data_dir)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|error| VendorError::Bind {
                addr: config.listen,
                detail: error.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|error| VendorError::Bind {
            addr: config.listen,
            detail: error.to_string(),
        })?;
        // Not ready until the store is open and the server accepts calls.
        // A failed start drops the listener's stop signal, which stops it.
        let health_listener = match config.health_listen {
            Some(health_addr) => {
                let (stop, stopped) = oneshot::channel::<()>();
                let listener = health::serve_plain(health_addr, &health, async {
                    let _ = stopped.await;
                })
                .await
                .map_err(|error| VendorError::Bind {
                    addr: health_addr,
                    detail: error.to_string(),
                })?;
                Some((listener, stop))
            }
            None => None,
        };

        let durability = settings.durability;
        let gateway_settings = settings.gateway.clone();
        let ledger = Ledger::open(&config.data_dir, durability)?;
        if let Durability::Relaxed { interval } = durability {
            tracing::warn!(
                interval_ms = interval.as_millis() as u64,
                "durability is relaxed: payments are answered before their spends reach the \
                 disk, so a crash can lose the spends acknowledged in the last checkpoint \
                 interval and the node can then accept already-spent scrip a second time; \
                 set durability = \"strict\" unless that loss is acceptable"
            );
        }
        let node = match Node::open(&config, settings, &ledger, unix_now()).await {
            Ok(node) => Arc::new(node),
            Err(error) => {
                // Release the directory so that a corrected start can open it.
                if let Err(close) = ledger.close().await {
                    tracing::warn!(error = %close, "closing the store after a failed start");
                }
                return Err(error);
            }
        };
        match &config.licence_token {
            None => tracing::warn!(
                "no licence_token configured: every GrantLicence request will be refused; \
                 set licence_token or MILLICENT_LICENCE_TOKEN to license brokers"
            ),
            Some(token) if token.len() < 16 => tracing::warn!(
                "licence_token is shorter than 16 characters; use a long random token"
            ),
            Some(_) => {}
        }

        let request_timeout = Duration::from_secs(config.request_timeout_secs);
        let (draining, drain_signal) = tokio::sync::watch::channel(false);
        let service =
            VendorServiceServer::new(GrpcVendor::new(node.clone(), request_timeout, drain_signal))
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let (stop_serving, serving_stopped) = oneshot::channel::<()>();
        let server = builder
            .load_shed(true)
            .concurrency_limit_per_connection(config.max_requests_per_connection)
            .timeout(request_timeout)
            .add_service(health.service())
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = serving_stopped.await;
            });
        let server = tokio::spawn(server);

        let (stop_maintenance, maintenance_stopped) = oneshot::channel();
        let maintenance = tokio::spawn(maintenance::run(node.clone(), maintenance_stopped));
        let gateway = match gateway_settings {
            Some(settings) => match RunningGateway::start(settings, node.clone()).await {
                Ok(gateway) => Some(gateway),
                Err(error) => {
                    let _ = stop_serving.send(());
                    let _ = stop_maintenance.send(());
                    let _ = server.await;
                    let _ = maintenance.await;
                    drop(node);
                    if let Err(close) = ledger.close().await {
                        tracing::warn!(error = %close, "closing the store after a failed start");
                    }
                    return Err(error);
                }
            },
            None => None,
        };
        health.ready().await;

        let vendors: Vec<&str> = node
            .vendors()
            .iter()
            .map(|vendor| vendor.name().as_str())
            .collect();
        let series = node.cluster.own();
        tracing::info!(
            node = %config.node,
            listen = %addr,
            data_dir = %config.data_dir.display(),
            vendors = %vendors.join(","),
            series_range = %series,
            peers = config.peers.len(),
            tls = match &config.tls {
                None => "off",
                Some(tls) if tls.client_ca.is_some() => "mutual",
                Some(_) => "on",
            },
            durability = match durability {
                Durability::Strict => "strict",
                Durability::Relaxed { .. } => "relaxed",
            },
            "vendor node serving"
        );
        Ok(RunningVendor {
            addr,
            data_dir: config.data_dir,
            node,
            ledger,
            stop_serving,
            server,
            stop_maintenance,
            maintenance,
            gateway,
            health,
            health_listener,
            draining,
        })
    }

    /// The node's liveness and readiness.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The plain-text address serving only health checks, if configured.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener
            .as_ref()
            .map(|(listener, _)| listener.addr())
    }

    /// The address the node listens on (with the real port if the
    /// configuration asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the HTTP 402 gateway listens on, if one is configured.
    pub fn gateway_addr(&self) -> Option<SocketAddr> {
        self.gateway.as_ref().map(RunningGateway::addr)
    }

    /// Stops accepting connections, lets requests in flight finish, stops
    /// the background task, flushes the store and releases its directory,
    /// so that a node can be started on it again in the same process.
    pub async fn shutdown(self) -> Result<(), VendorError> {
        let RunningVendor {
            addr,
            data_dir,
            node,
            ledger,
            stop_serving,
            server,
            stop_maintenance,
            maintenance,
            gateway,
            health,
            health_listener,
            draining,
        } = self;

        health.draining().await;
        tracing::info!(listen = %addr, "stopping: no new connections, draining requests in flight");
        if let Some(gateway) = gateway {
            gateway.shutdown().await;
        }
        // Streams answer what they have read and end, so that their
        // clients go elsewhere or come back, rather than holding the drain.
        let _ = draining.send(true);
        let _ = stop_serving.send(());
        match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "the gRPC server ended with an error"),
            Ok(Err(error)) => tracing::warn!(%error, "the gRPC server task failed"),
            Err(_) => tracing::warn!(
                seconds = DRAIN_TIMEOUT.as_secs(),
                "requests still in flight after the drain timeout"
            ),
        }
        let _ = stop_maintenance.send(());
        if let Err(error) = maintenance.await {
            tracing::warn!(%error, "the background task failed");
        }
        if let Some((listener, stop)) = health_listener {
            let _ = stop.send(());
            listener.stopped().await;
        }

        // Connection tasks drop their handles on the node just after the
        // server reports them closed; the store can only close after that.
        let Some(node) = sole_owner(node, DRAIN_TIMEOUT).await else {
            ledger.flush_blocking()?;
            return Err(VendorError::Shutdown {
                detail: "requests still held the store after the drain timeout; it was \
                         flushed but not closed"
                    .to_owned(),
            });
        };
        tracing::info!("requests drained");
        drop(node);
        ledger.close().await?;
        tracing::info!(data_dir = %data_dir.display(), "store flushed and closed");
        Ok(())
    }
}

/// Waits until `node` is the only handle left, for at most `limit`.
async fn sole_owner(mut node: Arc<Node>, limit: Duration) -> Option<Node> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match Arc::try_unwrap(node) {
            Ok(node) => return Some(node),
            Err(shared) if tokio::time::Instant::now() < deadline => {
                node = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => return None,
        }
    }
}
