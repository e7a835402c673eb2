//! `millicent-bench`: the Millicent load generator and quick-start demo.
//!
//! `millicent-bench demo` starts a broker and a vendor node on loopback with
//! storage in a temporary directory, funds simulated customers through the
//! broker, and has them pay the vendor as fast as it answers for a set
//! time. Given `--broker` and `--vendor`, it drives running services
//! instead. `millicent-bench exchange` does the same for purchases of
//! vendor scrip at the broker. `millicent-bench load` is the full load
//! generator: a mix of payments, broker operations and attacks against one
//! or many brokers and vendor nodes, with a report and a plot.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use millicent_bench::mix::Mix;
use millicent_bench::{exchange, load, network, plot, report, restart, traffic, transport};
use millicent_core::{Amount, Suite, Variant};

/// Load generator and demo for the Millicent micropayment network.
#[derive(Parser, Debug)]
#[command(name = "millicent-bench", version, about, long_about = None)]
struct Cli {
    /// How https:// URLs of running services are dialled.
    #[command(flatten)]
    tls: millicent_transport::TlsOptions,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a local broker and vendor node (or use running ones) and run
    /// payments at full speed, then print throughput and latency.
    ///
    /// Every customer opens an account, is credited by the operator, buys
    /// broker scrip, exchanges it for vendor scrip and then pays the vendor
    /// with its change, over and over. At the end each customer's first
    /// (spent) scrip is presented again and must be refused.
    Demo(DemoArgs),

    /// Load-test a network: simulated customers doing a mix of payments,
    /// exchanges, purchases and refunds of broker scrip, and attacks
    /// (replayed, tampered and expired scrip, which must all be refused),
    /// for a warm-up and then a measured duration, in a closed loop or at
    /// a target rate.
    ///
    /// Without --broker and --vendor it starts a local broker and vendor
    /// node; with them it drives running services, any number of each. It
    /// prints a table of throughput, latency and errors per operation and
    /// of the attacks, can write a JSON report and an SVG plot of the run,
    /// and exits non-zero if any attack was accepted or any scrip was
    /// accepted twice.
    Load(LoadArgs),

    /// Measure how long a vendor node holding many spent IDs takes to serve
    /// again after a restart, and the memory its spent-ID bitmaps use.
    Restart(RestartArgs),

    /// Start a local broker (with one or more shards in its process) and a
    /// vendor node, or use a running broker, and buy vendor scrip from the
    /// broker as fast as it answers: exchanges of broker scrip for vendor
    /// scrip, each made durable before its answer.
    ///
    /// Every customer opens an account, is credited, buys broker scrip and
    /// then exchanges it for vendor scrip over and over, paying each time
    /// with the change of the last exchange. At the end each customer's
    /// first (spent) broker scrip is presented again and must be refused,
    /// and the broker audits its books, which must balance.
    Exchange(ExchangeArgs),

    /// Measure the gRPC ceiling of unary calls here: a local vendor node
    /// (or a running one) answering `GetPrices`, which does no work, from
    /// callers that call it as the demo's customers call `Pay`.
    Transport(TransportArgs),

    /// Start a local network of separate processes from a cluster file
    /// (broker nodes keeping its shards, vendor nodes, Prometheus if
    /// installed), print the endpoints, and stop every process cleanly on
    /// Ctrl-C or SIGTERM.
    Cluster(millicent_bench::cluster::ClusterArgs),

    /// Write a development certificate authority and certificates for the
    /// nodes and clients named, for TLS and mutual TLS in a local or test
    /// network.
    DevCa(millicent_bench::dev_ca::DevCaArgs),
}

#[derive(clap::Args, Debug)]
struct TransportArgs {
    /// Seconds of calling.
    #[arg(long, default_value_t = 20)]
    duration: u64,

    /// Concurrent callers.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    customers: u32,

    /// gRPC connections the callers share.
    #[arg(long, default_value_t = 4)]
    channels: usize,

    /// Vendor node URL of a running network (default: start one here).
    #[arg(long)]
    vendor: Option<String>,

    /// Write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

/// What `demo` and `exchange` share.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Concurrent simulated customers.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    customers: u32,

    /// gRPC connections the customers share.
    #[arg(long, default_value_t = 4)]
    channels: usize,

    /// Write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    /// Directory for the local network's storage (default: a temporary
    /// directory removed at exit).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Where the local network serves Prometheus metrics.
    #[arg(long, default_value = "127.0.0.1:9300")]
    metrics_listen: SocketAddr,

    /// Cipher suite of the local network's scrip: modern (HMAC-SHA-256,
    /// ChaCha20-Poly1305) or classic (HMAC-MD5, DES-CBC). Running services
    /// use the suite they are configured with.
    #[arg(long, default_value = Suite::DEFAULT.name(), value_parser = parse_suite)]
    suite: Suite,
}

#[derive(clap::Args, Debug)]
struct ExchangeArgs {
    #[command(flatten)]
    run: RunArgs,

    /// Seconds of exchanging.
    #[arg(long, default_value_t = 20)]
    duration: u64,

    /// Shards of the local broker, all in its one process (1 to 255).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..))]
    shards: u8,

    /// Value of vendor scrip bought by each exchange, in the smallest unit.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    value: u64,

    /// Exchange on streams (`ExchangeStream`, one per connection) instead
    /// of one unary call per exchange.
    #[arg(long)]
    stream: bool,

    /// URL of a running broker (needs --operator-token); --shards is then
    /// that broker's business.
    #[arg(long, requires = "operator_token")]
    broker: Option<String>,

    /// Operator token of the running broker.
    #[arg(long, env = "MILLICENT_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,
}

#[derive(clap::Args, Debug)]
struct LoadArgs {
    #[command(flatten)]
    run: RunArgs,

    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 60)]
    duration: u64,

    /// Seconds of load before the measured part, left out of the figures.
    #[arg(long, default_value_t = 5)]
    warm_up: u64,

    /// Target operations per second, all customers together (open loop:
    /// latency counts from each operation's scheduled start). Without it,
    /// each customer starts its next operation when the last is answered.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,

    /// The operations and their weights: pay, exchange, buy, refund and
    /// the attacks replay, tamper and expired.
    #[arg(long, default_value = Mix::DEFAULT)]
    mix: Mix,

    /// Payment variant: clear, secure or private.
    #[arg(long, default_value = "secure", value_parser = parse_variant)]
    variant: Variant,

    /// Pay on streams (`PayStream`, one per connection) instead of one
    /// unary call per payment.
    #[arg(long)]
    stream: bool,

    /// Value of vendor scrip bought by each exchange, in the smallest unit.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    scrip_value: u64,

    /// Shards of the local broker, all in its one process (1 to 255).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..))]
    shards: u8,

    /// URL of a running broker; repeat for several (needs --vendor and
    /// --operator-token).
    #[arg(long = "broker", value_name = "URL", requires_all = ["vendors", "operator_token"])]
    brokers: Vec<String>,

    /// URL of a running vendor node; repeat for several.
    #[arg(long = "vendor", value_name = "URL", requires = "brokers")]
    vendors: Vec<String>,

    /// Operator token of the running brokers, to credit customer accounts.
    #[arg(long, env = "MILLICENT_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,

    /// Licence token of the running vendor nodes: expired-scrip attacks
    /// mint their scrip under a licence asked for with it.
    #[arg(long, env = "MILLICENT_LICENCE_TOKEN", hide_env_values = true)]
    licence_token: Option<String>,

    /// Write a plot of throughput and latency, second by second, to this
    /// SVG file.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct RestartArgs {
    /// Spent IDs the node holds when it restarts.
    #[arg(long, default_value_t = 10_000_000)]
    spent: u32,

    /// Directory for the node's store (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    #[command(flatten)]
    run: RunArgs,

    /// Seconds of paying.
    #[arg(long, default_value_t = 20)]
    duration: u64,

    /// Payment variant: clear, secure or private.
    #[arg(long, default_value = "secure", value_parser = parse_variant)]
    variant: Variant,

    /// Pay on streams (`PayStream`, one per connection) instead of one
    /// unary call per payment.
    #[arg(long)]
    stream: bool,

    /// Value of vendor scrip each customer buys, in the smallest unit.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    scrip_value: u64,

    /// Broker URL of a running network (needs --vendor and --operator-token).
    #[arg(long, requires_all = ["vendor", "operator_token"])]
    broker: Option<String>,

    /// Vendor node URL of a running network.
    #[arg(long, requires = "broker")]
    vendor: Option<String>,

    /// Operator token of the running broker, to credit customer accounts.
    #[arg(long, env = "MILLICENT_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,
}

fn parse_suite(name: &str) -> Result<Suite, String> {
    Suite::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = Suite::ALL.iter().map(|suite| suite.name()).collect();
        format!("unknown suite {name:?}: use {}", known.join(" or "))
    })
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a rate: give operations per second, above 0"
        )),
    }
}

fn parse_variant(name: &str) -> Result<Variant, String> {
    Variant::from_name(name)
        .ok_or_else(|| format!("unknown variant {name:?}: use clear, secure or private"))
}

// Payments make many small, short-lived buffers (gRPC frames, sled nodes,
// scrip), freed on other threads than they were made on; jemalloc serves
// them at a fraction of glibc malloc's cost.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(error) = cli.tls.install() {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Demo(args) => runtime.block_on(demo(args)),
        Command::Load(args) => runtime.block_on(load(args)),
        Command::Restart(args) => runtime.block_on(restart(args)),
        Command::Transport(args) => runtime.block_on(transport(args)),
        Command::Exchange(args) => runtime.block_on(exchange(args)),
        Command::Cluster(args) => runtime
            .block_on(millicent_bench::cluster::run(&args))
            .map(|()| ExitCode::SUCCESS),
        Command::DevCa(args) => millicent_bench::dev_ca::run(&args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let local = match (&args.broker, &args.vendor, &args.operator_token) {
        (Some(_), Some(_), Some(_)) => None,
        _ => Some(start_local(&args.run, 1).await?),
    };
    let plan = load::LoadPlan {
        broker: args
            .broker
            .clone()
            .or(local.as_ref().map(|n| n.broker_url()))
            .context("no broker")?,
        vendor: args
            .vendor
            .clone()
            .or(local.as_ref().map(|n| n.vendor_url()))
            .context("no vendor")?,
        operator_token: args
            .operator_token
            .clone()
            .or(local.as_ref().map(|n| n.operator_token().to_owned()))
            .context("no operator token")?,
        customers: args.run.customers as usize,
        channels: args.run.channels.max(1),
        duration: Duration::from_secs(args.duration),
        variant: args.variant,
        scrip_value: Amount::new(args.scrip_value),
        stop: Default::default(),
        stream: args.stream,
    };

    stop_on_ctrl_c(plan.stop.clone());

    let result = load::run(&plan).await;
    if let Some(network) = local {
        network.shutdown().await?;
    }
    let result = result?;

    let mode = if plan.stream { "stream" } else { "unary" };
    let report = report::Report::new(&result, plan.customers, plan.variant.name(), mode);
    conclude(
        &report.table(),
        &report,
        args.run.report.as_deref(),
        &report.problems(),
    )
}

async fn load(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let local = if args.brokers.is_empty() {
        Some(start_local(&args.run, args.shards).await?)
    } else {
        None
    };
    let plan = traffic::TrafficPlan {
        brokers: match &local {
            Some(network) => vec![network.broker_url()],
            None => args.brokers.clone(),
        },
        vendors: match &local {
            Some(network) => vec![network.vendor_url()],
            None => args.vendors.clone(),
        },
        operator_tokens: match &local {
            Some(network) => vec![network.operator_token().to_owned()],
            None => vec![args.operator_token.clone().context("no operator token")?],
        },
        licence_tokens: match &local {
            Some(network) => vec![network.licence_token().to_owned()],
            None => args.licence_token.iter().cloned().collect(),
        },
        customers: args.run.customers as usize,
        channels: args.run.channels.max(1),
        duration: Duration::from_secs(args.duration),
        warm_up: Duration::from_secs(args.warm_up),
        rate: args.rate,
        mix: args.mix.clone(),
        variant: args.variant,
        stream: args.stream,
        scrip_value: Amount::new(args.scrip_value),
        stop: Default::default(),
        progress: true,
    };
    stop_on_ctrl_c(plan.stop.clone());

    let result = traffic::run(&plan).await;
    if let Some(network) = local {
        network.shutdown().await?;
    }
    let result = result?;

    let settings = report::LoadSettings::of(&plan);
    let report = report::LoadReport::new(&result, &settings);
    if let Some(path) = &args.plot {
        let title = format!(
            "millicent-bench load: {} customers, {}, {}",
            plan.customers, settings.mode, settings.mix
        );
        plot::draw(path, &title, &report.timeline, report.warm_up_secs)?;
        println!("plot written to {}", path.display());
    }
    conclude(
        &report.table(),
        &report,
        args.run.report.as_deref(),
        &report.problems(),
    )
}

async fn exchange(args: ExchangeArgs) -> anyhow::Result<ExitCode> {
    let local = match (&args.broker, &args.operator_token) {
        (Some(_), Some(_)) => None,
        _ => Some(start_local(&args.run, args.shards).await?),
    };
    let plan = exchange::ExchangePlan {
        broker: args
            .broker
            .clone()
            .or(local.as_ref().map(|n| n.broker_url()))
            .context("no broker")?,
        operator_token: args
            .operator_token
            .clone()
            .or(local.as_ref().map(|n| n.operator_token().to_owned()))
            .context("no operator token")?,
        customers: args.run.customers as usize,
        channels: args.run.channels.max(1),
        duration: Duration::from_secs(args.duration),
        value: Amount::new(args.value),
        stop: Default::default(),
        stream: args.stream,
    };
    stop_on_ctrl_c(plan.stop.clone());

    let result = exchange::run(&plan).await;
    if let Some(network) = local {
        network.shutdown().await?;
    }
    let report = result?;
    conclude(
        &report.table(),
        &report,
        args.run.report.as_deref(),
        &report.problems(),
    )
}

/// Starts the in-process network, its broker keeping `shards` shards, and
/// says where its parts are.
async fn start_local(run: &RunArgs, shards: u8) -> anyhow::Result<network::LocalNetwork> {
    let metrics_listen = run.metrics_listen;
    install_metrics(metrics_listen)?;
    let network =
        network::LocalNetwork::start_with(run.data_dir.clone(), run.suite, shards).await?;
    if shards > 1 {
        println!("broker       {} ({shards} shards)", network.broker_url());
    } else {
        println!("broker       {}", network.broker_url());
    }
    println!("vendor node  {}", network.vendor_url());
    println!("metrics      http://{metrics_listen}/metrics");
    println!("storage      {}", network.data_dir().display());
    println!("suite        {}", run.suite.name());
    Ok(network)
}

/// Ends the run early on Ctrl-C; the summary and the clean-up still run.
fn stop_on_ctrl_c(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nstopping early ...");
            stop.store(true, Ordering::Relaxed);
        }
    });
}

/// Prints the summary `table`, writes `report` as JSON to `path` if asked,
/// and fails the run if there are `problems`.
fn conclude(
    table: &str,
    report: &impl serde::Serialize,
    path: Option<&Path>,
    problems: &[String],
) -> anyhow::Result<ExitCode> {
    println!("\n{table}");
    if let Some(path) = path {
        let json = serde_json::to_string_pretty(report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("writing the report to {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    for problem in problems {
        eprintln!("error: {problem}");
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn restart(args: RestartArgs) -> anyhow::Result<ExitCode> {
    let temporary = tempfile::Builder::new()
        .prefix("millicent-restart-")
        .tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    let figures = restart::run(&dir, args.spent).await?;
    println!("  spent IDs                {}", figures.spent_ids);
    println!("  recorded in              {:.1} s", figures.populate_secs);
    println!(
        "  store on disk            {:.1} MiB",
        figures.store_bytes as f64 / 1048576.0
    );
    println!(
        "  bitmap memory per ID     {:.3} bytes",
        figures.memory_bytes_per_spent_id
    );
    println!(
        "  restart to serving       {:.3} s",
        figures.restart_to_serving_secs
    );
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&figures)? + "\n")
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn transport(args: TransportArgs) -> anyhow::Result<ExitCode> {
    let local = match &args.vendor {
        Some(_) => None,
        None => Some(network::LocalNetwork::start(None, Suite::DEFAULT).await?),
    };
    let vendor = args
        .vendor
        .clone()
        .or(local.as_ref().map(|network| network.vendor_url()))
        .context("no vendor")?;
    let duration = Duration::from_secs(args.duration);
    let figures = transport::run(&vendor, args.customers as usize, args.channels, duration).await;
    if let Some(network) = local {
        network.shutdown().await?;
    }
    let figures = figures?;
    println!("  GetPrices calls          {}", figures.calls);
    println!("  calls per second         {:.0}", figures.calls_per_second);
    println!(
        "  latency p50/p99          {:.2} / {:.2} ms",
        figures.p50_ms, figures.p99_ms
    );
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&figures)? + "\n")
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Serves the local network's metrics as the broker and vendor node
/// binaries do, histograms included.
fn install_metrics(listen: SocketAddr) -> anyhow::Result<()> {
    millicent_transport::probe::prometheus_builder()?
        .with_http_listener(listen)
        .install()
        .with_context(|| {
            format!("serving metrics on {listen} (is the port in use? try --metrics-listen)")
        })
}
