//! Starting, serving and stopping a broker node.
//!
//! Start: validate the configuration, prepare the data directory, open the
//! store of every shard the node keeps (each loading its keys, accounts,
//! books, spent scrip, licences and warehouse), bind the listener, then
//! serve. Shutdown is the same path backwards: stop accepting, let requests
//! in flight finish, stop the maintenance task, flush, and release every
//! store so that it can be opened again.
//!
//! Limits on every call, as tower layers around the service rather than in
//! the handlers: a deadline, a cap on concurrent calls per connection with
//! load shedding (excess calls fail fast with `RESOURCE_EXHAUSTED`), and a
//! cap on message size. [`server_builder`] is the one place the server is
//! built, with TLS when the configuration has a `[tls]` table (and client
//! certificates demanded when it names a `client_ca`).
//!
//! The gRPC health service is served next to `BrokerService`: the node is
//! live while it answers, and ready from the moment every shard's store is
//! open and it accepts calls until shutdown begins. A `health_listen`
//! address serves it in plain text too, for probes that cannot speak TLS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use millicent_proto::broker_service_server::BrokerServiceServer;
use millicent_transport::ServerTlsFiles;
use millicent_transport::health::{self, Health, PlainHealthListener};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::server::NamedService as _;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::books::Class;
use crate::config::{BrokerConfig, Source};
use crate::links::BrokerLinks;
use crate::service::{Broker, BrokerState};
use crate::shard::Shard;
use crate::{BrokerError, telemetry, unix_now};

/// Longest time a call (or one exchange on a stream) may take before it is
/// cancelled.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Calls one connection may have in flight; more are shed.
const CALLS_PER_CONNECTION: usize = 4096;
/// Largest request accepted; the largest valid one (an exchange) is about
/// 1.5 KiB.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// How often the books are checkpointed and their gauges set.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// How often reply records are pruned, series rotated and stocks checked.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);
/// Longest wait for calls in flight at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker node serving gRPC on a local address.
pub struct RunningBroker {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    maintenance: JoinHandle<()>,
    state: Arc<BrokerState>,
    health: Health,
    health_listener: Option<(PlainHealthListener, oneshot::Sender<()>)>,
}

/// The name under which the node's readiness is reported.
pub const READINESS_SERVICE: &str = BrokerServiceServer::<Broker>::NAME;

/// The gRPC server with the broker's limits, serving TLS with `tls`.
fn server_builder(tls: Option<&ServerTlsFiles>) -> Result<Server, BrokerError> {
    let mut builder = Server::builder();
    if let Some(files) = tls {
        let tls_error = |detail: String| BrokerError::Config {
            detail: format!("[tls]: {detail}"),
        };
        let config = files.load().map_err(|error| tls_error(error.to_string()))?;
        builder = builder
            .tls_config(config)
            .map_err(|error| tls_error(millicent_transport::tls::chain(&error)))?;
    }
    Ok(builder
        .timeout(CALL_TIMEOUT)
        .concurrency_limit_per_connection(CALLS_PER_CONNECTION)
        .load_shed(true))
}

impl RunningBroker {
    /// Starts a broker node and returns once it accepts connections. The
    /// data directory and each shard's directory in it are created with
    /// mode 0700 if needed, and refused if others can reach them; a listen
    /// port of 0 picks a free one (see [`RunningBroker::addr`]).
    pub async fn start(config: BrokerConfig) -> Result<RunningBroker, BrokerError> {
        Self::start_with_health(config, Health::new(READINESS_SERVICE).await).await
    }

    /// [`RunningBroker::start`], reporting readiness through `health`
    /// (made with [`READINESS_SERVICE`]), which a metrics listener
    /// started before the shards open may already serve.
    pub async fn start_with_health(
        config: BrokerConfig,
        health: Health,
    ) -> Result<RunningBroker, BrokerError> {
        let settings = config.validate()?;
        let builder = server_builder(config.tls.as_ref())?;
        millicent_ledger::prepare_data_dir(&config.data_dir)?;
        let brokers = BrokerLinks::new(&settings.brokers)?;
        let mut shards = BTreeMap::new();
        for id in settings.cluster.own().iter().copied() {
            match Shard::open(&settings, &config.data_dir, id).await {
                Ok(shard) => {
                    shards.insert(id, shard);
                }
                Err(error) => {
                    close_shards(shards).await;
                    return Err(error);
                }
            }
        }

        let (listener, addr) = match bind(config.listen).await {
            Ok(bound) => bound,
            Err(error) => {
                close_shards(shards).await;
                return Err(BrokerError::Bind {
                    addr: config.listen,
                    detail: error.to_string(),
                });
            }
        };
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let url = settings
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{addr}"));
        // Not ready until the server accepts calls. A failed start drops
        // the listener's stop signal, which stops it.
        let health_listener = match config.health_listen {
            Some(health_addr) => {
                let (stop, stopped) = oneshot::channel::<()>();
                match health::serve_plain(health_addr, &health, async {
                    let _ = stopped.await;
                })
                .await
                {
                    Ok(listener) => Some((listener, stop)),
                    Err(error) => {
                        close_shards(shards).await;
                        return Err(BrokerError::Bind {
                            addr: health_addr,
                            detail: error.to_string(),
                        });
                    }
                }
            }
            None => None,
        };
        telemetry::describe();
        let mut accounts = 0;
        for shard in shards.values() {
            accounts += shard.accounts.count()?;
        }
        telemetry::accounts(accounts);
        let state = Arc::new(BrokerState::new(settings, shards, brokers, url));

        let (stop, _) = watch::channel(false);
        let service = BrokerServiceServer::new(Broker::new(state.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let mut stopped = stop.subscribe();
        let mut builder = builder;
        let server = tokio::spawn(
            builder
                .add_service(health.service())
                .add_service(service)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async move {
                        // A dropped sender stops the server as well.
                        let _ = stopped.wait_for(|stop| *stop).await;
                    },
                ),
        );
        let maintenance = tokio::spawn(maintain(state.clone(), stop.subscribe()));
        health.ready().await;

        let settings = &state.settings;
        if settings.operator_token.is_none() {
            tracing::warn!("no operator token is configured: every operator call is refused");
        }
        let shards: Vec<String> = state.shards.keys().map(u8::to_string).collect();
        tracing::info!(
            broker = %settings.name,
            node = settings.cluster.node(),
            shards = %shards.join(","),
            %addr,
            url = %state.url,
            tls = match &config.tls {
                None => "off",
                Some(tls) if tls.client_ca.is_some() => "mutual",
                Some(_) => "on",
            },
            data_dir = %config.data_dir.display(),
            suite = settings.suite.name(),
            vendors = settings.sources.len(),
            "broker started"
        );
        Ok(RunningBroker {
            addr,
            stop,
            server,
            maintenance,
            state,
            health,
            health_listener,
        })
    }

    /// The address the broker listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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

    /// Stops accepting connections, lets calls in flight finish (for up to
    /// ten seconds), flushes every shard's store and releases it.
    pub async fn shutdown(self) -> Result<(), BrokerError> {
        let RunningBroker {
            addr,
            stop,
            mut server,
            maintenance,
            state,
            health,
            health_listener,
        } = self;
        health.draining().await;
        tracing::info!(%addr, "broker stopping: no new connections, draining calls in flight");
        stop.send_replace(true);

        let served = match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(BrokerError::Server {
                detail: error.to_string(),
            }),
            Ok(Err(error)) => Err(BrokerError::Server {
                detail: error.to_string(),
            }),
            Err(_) => {
                server.abort();
                let _ = server.await;
                Err(BrokerError::Server {
                    detail: format!(
                        "calls still in flight after {} s were cancelled",
                        DRAIN_TIMEOUT.as_secs()
                    ),
                })
            }
        };
        // The maintenance task stops at the signal; a panic in it is
        // reported, but the stores are closed all the same.
        let maintained = maintenance.await.map_err(|error| BrokerError::Server {
            detail: format!("maintenance task failed: {error}"),
        });
        if let Some((listener, stop)) = health_listener {
            let _ = stop.send(());
            listener.stopped().await;
        }

        let closed = close_state(state).await;
        tracing::info!(%addr, "broker stopped");
        served.and(maintained).and(closed)
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Every few seconds: checkpoints the books and sets the balance gauges.
/// Every minute: prunes call and reply records past their windows, starts
/// new broker-scrip series when due and retires expired ones, forgets
/// licences past their renewal grace, and tops up warehouse stocks. Every
/// settlement interval: asks each vendor node for a redemption report.
async fn maintain(state: Arc<BrokerState>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(CHECKPOINT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ticks_per_minute = (MAINTENANCE_INTERVAL.as_secs() / CHECKPOINT_INTERVAL.as_secs()).max(1);
    let ticks_per_settlement =
        (state.settings.settlement_interval_secs / CHECKPOINT_INTERVAL.as_secs()).max(1);
    let mut tick: u64 = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let working = state.clone();
        let minute = tick % ticks_per_minute == ticks_per_minute - 1;
        let result = tokio::task::spawn_blocking(move || upkeep(&working, minute)).await;
        if let Err(error) = result {
            tracing::warn!(%error, "maintenance task failed");
        }
        if tick.is_multiple_of(ticks_per_settlement) {
            settle(&state).await;
        }
        if minute {
            restock(&state).await;
        }
        for shard in state.shards.values() {
            if let Err(error) = shard.ledger.commit().await {
                tracing::warn!(%error, shard = shard.id, "commit after maintenance failed");
            }
        }
        tick = tick.wrapping_add(1);
    }
}

fn upkeep(state: &BrokerState, minute: bool) {
    let (now, now_ms) = unix_now();
    let window_ms = state.settings.clock_window_secs.saturating_mul(1000);
    for shard in state.shards.values() {
        let _upkeep = shard
            .upkeep
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(error) = shard.books.checkpoint() {
            tracing::warn!(%error, shard = shard.id, "checkpointing the books failed");
        }
        let balances = shard.books.balances().by_class();
        for class in Class::ALL {
            telemetry::ledger_balance(shard.id, class, balances.get(&class).copied().unwrap_or(0));
        }
        if !minute {
            continue;
        }
        let result = (|| -> Result<(), BrokerError> {
            shard.accounts.prune_calls(now_ms, window_ms)?;
            shard.spends.prune_replies(now)?;
            shard.keys.rotate_if_due(now)?;
            shard.keys.retire_expired(now, &shard.spends)?;
            shard
                .licences
                .prune(now, state.settings.renewal_grace_secs)?;
            Ok(())
        })();
        if let Err(error) = result {
            tracing::warn!(%error, shard = shard.id, "maintenance failed; retrying next minute");
        }
    }
}

/// Asks every vendor node for a report on each shard's series.
async fn settle(state: &BrokerState) {
    for shard in state.shards.values() {
        for vendor in &state.settings.vendors {
            if let Err(error) = shard.settlement.settle(shard, vendor).await {
                tracing::warn!(vendor = %vendor.name, shard = shard.id, %error, "redemption report failed");
            }
        }
    }
}

/// Buys a block for every warehouse stock below its low water.
async fn restock(state: &BrokerState) {
    let (now, now_ms) = unix_now();
    for shard in state.shards.values() {
        for vendor in &state.settings.vendors {
            if !matches!(vendor.source, Source::Warehouse(_)) {
                continue;
            }
            telemetry::warehouse_stock(
                shard.id,
                vendor.name.as_str(),
                shard.warehouse.in_stock(&vendor.name),
            );
            if !shard.warehouse.begin_restock(&vendor.name) {
                continue;
            }
            if let Err(error) = shard.warehouse.buy_block(shard, vendor, now, now_ms).await {
                tracing::warn!(vendor = %vendor.name, shard = shard.id, %error, "buying a warehouse block failed");
            }
            shard.warehouse.restocked(&vendor.name);
        }
    }
}

/// Waits for the last other handle on the state to go (connection tasks
/// finish shortly after the server stops), then closes every shard.
async fn close_state(mut state: Arc<BrokerState>) -> Result<(), BrokerError> {
    const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
    let deadline = tokio::time::Instant::now() + RELEASE_TIMEOUT;
    let state = loop {
        match Arc::try_unwrap(state) {
            Ok(state) => break state,
            Err(shared) if tokio::time::Instant::now() < deadline => {
                state = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                return Err(BrokerError::Server {
                    detail: "the store is still in use after the server stopped".to_owned(),
                });
            }
        }
    };
    let mut result = Ok(());
    for (_, shard) in state.into_shards() {
        // The books are checkpointed on the way out: the next start
        // replays nothing.
        if let Err(error) = shard.books.checkpoint() {
            tracing::warn!(%error, shard = shard.id, "final checkpoint failed");
        }
        if let Err(error) = shard.close().await {
            result = Err(BrokerError::from(error));
        }
    }
    result
}

async fn close_shards(shards: BTreeMap<u8, Shard>) {
    for (_, shard) in shards {
        if let Err(error) = shard.close().await {
            tracing::warn!(%error, "could not release the data directory");
        }
    }
}
