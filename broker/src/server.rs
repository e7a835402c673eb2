//! Starting, serving and stopping a broker.
//!
//! Start: validate the configuration, prepare the data directory, open the
//! ledger, load (or create) keys, accounts, spent scrip and licences, bind
//! the listener, then serve. Shutdown is the same path backwards: stop
//! accepting, let requests in flight finish, stop the maintenance task,
//! flush, and release the data directory so it can be opened again.
//!
//! Limits on every call, as tower layers around the service rather than in
//! the handlers: a deadline, a cap on concurrent calls per connection with
//! load shedding (excess calls fail fast with `RESOURCE_EXHAUSTED`), and a
//! cap on message size.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use millicent_ledger::{Durability, Ledger, SpendStore};
use millicent_proto::broker_service_server::BrokerServiceServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::accounts::Accounts;
use crate::config::{BrokerConfig, Settings};
use crate::keys::BrokerKeys;
use crate::licences::Licences;
use crate::service::{Broker, BrokerState};
use crate::{BrokerError, telemetry, unix_now};

/// Longest time a call may take before it is cancelled.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Calls one connection may have in flight; more are shed.
const CALLS_PER_CONNECTION: usize = 4096;
/// Largest request accepted; the largest valid one (an exchange) is about
/// 1.5 KiB.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// How often reply records are pruned and series rotated.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);
/// Longest wait for calls in flight at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker serving gRPC on a local address.
pub struct RunningBroker {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    maintenance: JoinHandle<()>,
    state: Arc<BrokerState>,
}

impl RunningBroker {
    /// Starts a broker and returns once it accepts connections. The data
    /// directory is created with mode 0700 if needed, and refused if others
    /// can reach it; a listen port of 0 picks a free one (see
    /// [`RunningBroker::addr`]).
    pub async fn start(config: BrokerConfig) -> Result<RunningBroker, BrokerError> {
        let settings = config.validate()?;
        millicent_ledger::prepare_data_dir(&config.data_dir)?;
        let ledger = Ledger::open(&config.data_dir, Durability::Strict)?;
        let state = match open_state(settings, &ledger).await {
            Ok(state) => Arc::new(state),
            Err(error) => {
                release(ledger).await;
                return Err(error);
            }
        };

        let (listener, addr) = match bind(config.listen).await {
            Ok(bound) => bound,
            Err(error) => {
                release_state(state).await;
                return Err(BrokerError::Bind {
                    addr: config.listen,
                    detail: error.to_string(),
                });
            }
        };

        let (stop, _) = watch::channel(false);
        let service = BrokerServiceServer::new(Broker::new(state.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let mut stopped = stop.subscribe();
        let server = tokio::spawn(
            Server::builder()
                .timeout(CALL_TIMEOUT)
                .concurrency_limit_per_connection(CALLS_PER_CONNECTION)
                .load_shed(true)
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

        let settings = &state.settings;
        if settings.operator_token.is_none() {
            tracing::warn!("no operator token is configured: every Credit call is refused");
        }
        tracing::info!(
            broker = %settings.name,
            %addr,
            data_dir = %config.data_dir.display(),
            suite = settings.suite.name(),
            vendors = settings.vendors.len(),
            "broker started"
        );
        Ok(RunningBroker {
            addr,
            stop,
            server,
            maintenance,
            state,
        })
    }

    /// The address the broker listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, lets calls in flight finish (for up to
    /// ten seconds), flushes the ledger and releases the data directory.
    pub async fn shutdown(self) -> Result<(), BrokerError> {
        let RunningBroker {
            addr,
            stop,
            mut server,
            maintenance,
            state,
        } = self;
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
        // reported, but the store is closed all the same.
        let maintained = maintenance.await.map_err(|error| BrokerError::Server {
            detail: format!("maintenance task failed: {error}"),
        });

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

/// Loads everything the broker keeps in `ledger`.
async fn open_state(settings: Settings, ledger: &Ledger) -> Result<BrokerState, BrokerError> {
    let (now, _) = unix_now();
    let keys_table = ledger.table("keys")?;
    let ids = ledger.table("ids")?;
    let keys = BrokerKeys::open(
        &keys_table,
        &ids,
        &settings.name,
        settings.suite,
        settings.scrip_lifetime_secs,
        now,
    )?;
    let accounts = Accounts::open(ledger)?;
    let spends = SpendStore::open(ledger, "spends", settings.retry_window_secs)?;
    let licences = Licences::open(
        &settings.name,
        &settings.vendors,
        ledger,
        &keys_table,
        &ids,
        now,
    )?;
    // Keys made on a first start are durable before anything uses them.
    ledger.commit().await?;

    telemetry::describe();
    telemetry::accounts(accounts.count()?);
    Ok(BrokerState {
        settings,
        ledger: ledger.clone(),
        accounts,
        keys,
        licences,
        spends,
    })
}

/// Every minute: prunes call and reply records past their windows, starts
/// a new broker-scrip series when due and retires expired ones.
async fn maintain(state: Arc<BrokerState>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(MAINTENANCE_INTERVAL);
    // The first tick fires at once; start has just done this work.
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let working = state.clone();
        let result = tokio::task::spawn_blocking(move || maintain_once(&working)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "maintenance failed; retrying next minute"),
            Err(error) => tracing::warn!(%error, "maintenance task failed"),
        }
        if let Err(error) = state.ledger.commit().await {
            tracing::warn!(%error, "commit after maintenance failed");
        }
    }
}

fn maintain_once(state: &BrokerState) -> Result<(), BrokerError> {
    let (now, now_ms) = unix_now();
    let window_ms = state.settings.clock_window_secs.saturating_mul(1000);
    state.accounts.prune_calls(now_ms, window_ms)?;
    state.spends.prune_replies(now)?;
    state.keys.rotate_if_due(now)?;
    state.keys.retire_expired(now, &state.spends)?;
    Ok(())
}

/// Waits for the last other handle on the state to go (connection tasks
/// finish shortly after the server stops), then closes the ledger.
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
    let ledger = state.into_ledger();
    ledger.close().await.map_err(BrokerError::from)
}

async fn release_state(state: Arc<BrokerState>) {
    if let Err(error) = close_state(state).await {
        tracing::warn!(%error, "could not release the data directory");
    }
}

async fn release(ledger: Ledger) {
    if let Err(error) = ledger.close().await {
        tracing::warn!(%error, "could not release the data directory");
    }
}
