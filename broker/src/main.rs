//! `millicent-broker`: runs a Millicent broker node until Ctrl-C or
//! SIGTERM, and the operator's commands: audits, statements, payouts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use millicent_broker::{BrokerConfig, READINESS_SERVICE, RunningBroker, admin, audit};
use millicent_transport::TlsOptions;
use millicent_transport::health::Health;
use millicent_transport::probe;

#[derive(Parser)]
#[command(
    name = "millicent-broker",
    version,
    about = "Run a Millicent broker node, or audit and settle a broker's books.",
    long_about = "Run a Millicent broker node: customer accounts, broker scrip, and vendor scrip \
                  minted under licence, resold from a warehouse or bought from another broker.\n\n\
                  With no command the node serves gRPC (millicent.v1.BrokerService) and Prometheus \
                  metrics. Settings come from the configuration file, then from the environment, \
                  then from the options below; with no file at all it starts a local broker named \
                  broker.local keeping shard 0 on 127.0.0.1:7100, its store in data/broker.\n\n\
                  The commands audit, statement and payout are for the operator.",
    args_conflicts_with_subcommands = true,
    after_help = "ENVIRONMENT:\n  \
                  MILLICENT_BROKER_LISTEN          gRPC address (overrides `listen`)\n  \
                  MILLICENT_BROKER_DATA_DIR        store directory (overrides `data_dir`)\n  \
                  MILLICENT_BROKER_METRICS_LISTEN  metrics address (overrides `metrics_listen`)\n  \
                  MILLICENT_OPERATOR_TOKEN         token of the operator calls (`operator_token`)\n  \
                  MILLICENT_LICENCE_TOKEN          licence token of every configured vendor\n  \
                  MILLICENT_BROKER_TOKEN           token of every other broker in [[brokers]]\n  \
                  MILLICENT_BROKER_HEALTH_LISTEN   plain-text health-check address (`health_listen`)\n  \
                  MILLICENT_BROKER_TLS_CERT, MILLICENT_BROKER_TLS_KEY, MILLICENT_BROKER_TLS_CLIENT_CA\n    \
                                                   files of [tls]: serve TLS, demand client certificates\n  \
                  MILLICENT_BROKER_CLIENT_TLS_CA, MILLICENT_BROKER_CLIENT_TLS_CERT,\n  \
                  MILLICENT_BROKER_CLIENT_TLS_KEY  files of [client_tls]: how https:// vendor nodes \
                  and brokers are dialled\n  \
                  MILLICENT_TLS_CA, MILLICENT_TLS_CERT, MILLICENT_TLS_KEY\n    \
                                                   the operator commands' --tls-ca, --tls-cert, --tls-key\n  \
                  RUST_LOG                         log filter, for example `info` or \
                  `millicent_broker=debug` (default: info)"
)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file; keys left out take their defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address to serve gRPC on, for example 0.0.0.0:7100 (port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Directory of the broker's stores and secrets; created with mode 0700.
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

#[derive(Subcommand)]
enum Command {
    /// Serve the broker node (the same as giving no command).
    Serve(ServeArgs),

    /// Check a broker's books: every transaction balances, the accounts sum
    /// to zero, and outstanding scrip is what was issued less what was
    /// spent, redeemed or renewed. Exits 1 naming the first discrepancy.
    ///
    /// Offline (--data-dir, or --config for its data_dir) it reads the
    /// stores of a stopped node; with --broker it asks every node of a
    /// running broker to audit itself.
    Audit(AuditArgs),

    /// Show what each shard owes each vendor and other broker, and has paid.
    Statement(StatementArgs),

    /// Record a payment to a vendor or another broker (or, with --receive,
    /// one received from another broker) in one shard's books.
    Payout(PayoutArgs),
}

#[derive(clap::Args)]
struct AuditArgs {
    /// Data directory of a stopped broker node.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "broker"])]
    data_dir: Option<PathBuf>,

    /// Configuration file of a stopped broker node; its data_dir is audited.
    #[arg(long, value_name = "FILE", conflicts_with = "broker")]
    config: Option<PathBuf>,

    /// URL of any node of a running broker: audit it live.
    #[arg(long, value_name = "URL", requires = "operator_token")]
    broker: Option<String>,

    /// The broker's operator token (for --broker).
    #[arg(long, env = "MILLICENT_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,

    #[command(flatten)]
    tls: TlsOptions,
}

#[derive(clap::Args)]
struct OperatorArgs {
    /// URL of any node of the broker.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:7100")]
    broker: String,

    /// The broker's operator token.
    #[arg(long, env = "MILLICENT_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: String,

    #[command(flatten)]
    tls: TlsOptions,
}

#[derive(clap::Args)]
struct StatementArgs {
    #[command(flatten)]
    operator: OperatorArgs,

    /// Ask the vendor nodes for redemption reports first, rather than show
    /// what the last periodic report said.
    #[arg(long)]
    refresh: bool,
}

#[derive(clap::Args)]
struct PayoutArgs {
    #[command(flatten)]
    operator: OperatorArgs,

    /// The shard whose books the payout settles.
    #[arg(long, default_value_t = 0)]
    shard: u8,

    /// A vendor the broker sells, or another broker.
    #[arg(long, value_name = "NAME")]
    to: String,

    /// Amount in the smallest unit.
    #[arg(long)]
    amount: u64,

    /// The operator's reference, unique per shard; repeating it records
    /// nothing more.
    #[arg(long)]
    reference: String,

    /// Money received from another broker, rather than paid.
    #[arg(long)]
    receive: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Audit(args)) => {
            args.tls.install()?;
            audit(args).await
        }
        Some(Command::Statement(args)) => {
            args.operator.tls.install()?;
            let shards = admin::statement(&operator(args.operator), args.refresh).await?;
            print!("{}", admin::format_statement(&shards));
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Payout(args)) => {
            args.operator.tls.install()?;
            let order = admin::PayoutOrder {
                shard: args.shard,
                counterparty: args.to.clone(),
                receive: args.receive,
                amount: args.amount,
                reference: args.reference.clone(),
            };
            let (owed, repeated) = admin::payout(&operator(args.operator), &order).await?;
            if repeated {
                println!(
                    "reference {:?} was recorded already: nothing more recorded; {} was owed \
                     {owed} by shard {} after it",
                    args.reference, args.to, args.shard
                );
            } else {
                println!(
                    "recorded; {} is now owed {owed} by shard {}",
                    args.to, args.shard
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn operator(args: OperatorArgs) -> admin::Operator {
    admin::Operator {
        url: args.broker,
        token: args.operator_token,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = BrokerConfig::load(args.config.as_deref())?;
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
    tracing::info!(addr = %metrics_addr, "metrics at /metrics, probes at /healthz and /readyz");

    let broker = RunningBroker::start_with_health(config, health).await?;
    shutdown_signal().await?;
    broker.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

async fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = args.broker {
        let operator = admin::Operator {
            url,
            token: args.operator_token.unwrap_or_default(),
        };
        let mut clean = true;
        for (node, report) in admin::audit(&operator).await? {
            for shard in &report.shards {
                println!(
                    "node {node} shard {}: {} transactions, {} accounts",
                    shard.shard, shard.transactions, shard.accounts
                );
            }
            if !report.clean {
                println!("discrepancy on node {node}: {}", report.discrepancy);
                clean = false;
            }
        }
        return Ok(verdict(clean));
    }

    let data_dir = match (args.data_dir, args.config) {
        (Some(dir), _) => dir,
        (None, config) => BrokerConfig::load(config.as_deref())?.data_dir,
    };
    let report = audit::audit_data_dir(&data_dir).await?;
    for shard in &report.shards {
        let balances: Vec<String> = shard
            .balances
            .iter()
            .map(|(class, balance)| format!("{class} {balance}"))
            .collect();
        println!(
            "shard {}: {} transactions, {} accounts; {}",
            shard.shard,
            shard.transactions,
            shard.accounts,
            balances.join(", ")
        );
    }
    if let Some(discrepancy) = &report.discrepancy {
        println!("discrepancy: {discrepancy}");
    }
    Ok(verdict(report.is_clean()))
}

fn verdict(clean: bool) -> ExitCode {
    if clean {
        println!("the books balance");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
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
