//! `millicent-bench cluster`: a local network of separate processes,
//! described by one file (`deploy/cluster.toml`): the nodes of one broker
//! keeping its shards, vendor nodes each owning its own series range, and
//! Prometheus scraping them all if it is installed.
//!
//! The command writes each node's configuration (and, with TLS, a
//! development authority and every node's certificate) under the cluster's
//! data directory, starts the built binaries, waits until every node
//! answers `/readyz`, prints the endpoints, and runs until Ctrl-C or
//! SIGTERM. Then it stops every child the way an operator would: SIGTERM,
//! brokers first, then vendor nodes, each given time to drain and flush,
//! and SIGKILL only for a child that does not exit in that time. A child
//! that exits by itself stops the cluster with an error. Nothing is left
//! running: children are also killed if this process fails.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use millicent_transport::dev_ca;
use millicent_transport::probe::READINESS_PATH;
use millicent_transport::secret_file::write_secret;
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

/// How long every node has to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child has to exit after SIGTERM before it is killed; longer
/// than the longest drain of a node (30 s for a vendor node).
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// Options of `millicent-bench cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// The cluster file.
    #[arg(long, default_value = "deploy/cluster.toml", value_name = "FILE")]
    pub config: PathBuf,

    /// Where the millicent-broker and millicent-vendor binaries are
    /// (default: next to this one, as `cargo build --release` leaves them).
    #[arg(long, env = "MILLICENT_BIN_DIR", value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
}

/// The cluster file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Where every node keeps its configuration, store and log, one
    /// folder each (created with mode 0700).
    pub data_dir: PathBuf,
    /// The operator token of the broker.
    pub operator_token: String,
    /// The token brokers present to vendor nodes.
    pub licence_token: String,
    /// `off`, `on` (servers present certificates) or `mutual` (vendor
    /// nodes and broker nodes also demand client certificates).
    #[serde(default)]
    pub tls: TlsMode,
    /// Address of a Prometheus server scraping every node, started if the
    /// `prometheus` binary is installed.
    #[serde(default)]
    pub prometheus: Option<SocketAddr>,
    /// The broker.
    pub broker: BrokerSpec,
    /// The vendor nodes.
    pub vendor_nodes: Vec<VendorNodeSpec>,
}

/// TLS in the cluster.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain gRPC.
    #[default]
    Off,
    /// Servers present certificates of a development authority.
    On,
    /// And demand client certificates of it.
    Mutual,
}

/// The broker and its nodes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSpec {
    /// The broker's name.
    pub name: String,
    /// Its nodes, each keeping some of its shards.
    pub nodes: Vec<NodeSpec>,
}

/// A broker node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Its name.
    pub node: String,
    /// Its gRPC address.
    pub listen: SocketAddr,
    /// Its metrics and probe address.
    pub metrics_listen: SocketAddr,
    /// The shards it keeps.
    pub shards: Vec<u8>,
}

/// A vendor node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorNodeSpec {
    /// Its name.
    pub node: String,
    /// Its gRPC address.
    pub listen: SocketAddr,
    /// Its metrics and probe address.
    pub metrics_listen: SocketAddr,
    /// The series numbers it allocates, `[first, last]`.
    pub series_range: [u64; 2],
    /// Its `[[vendors]]` tables, as in a vendor node's configuration.
    pub vendors: Vec<toml::Table>,
}

impl ClusterFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> anyhow::Result<ClusterFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the cluster file {}", path.display()))?;
        let file: ClusterFile =
            toml::from_str(&text).with_context(|| format!("cluster file {}", path.display()))?;
        file.check()?;
        Ok(file)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.broker.nodes.is_empty() || self.vendor_nodes.is_empty() {
            bail!("a cluster needs at least one broker node and one vendor node");
        }
        let mut names = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        let nodes = self
            .broker
            .nodes
            .iter()
            .map(|n| (&n.node, n.listen, n.metrics_listen));
        let vendors = self
            .vendor_nodes
            .iter()
            .map(|n| (&n.node, n.listen, n.metrics_listen));
        for (name, listen, metrics) in nodes.chain(vendors) {
            if names.insert(name.clone(), ()).is_some() {
                bail!("node name {name} is used twice");
            }
            for addr in [listen, metrics] {
                if let Some(other) = addrs.insert(addr, name.clone()) {
                    bail!("{addr} is the address of both {other} and {name}");
                }
            }
        }
        for vendor in &self.vendor_nodes {
            if vendor.vendors.is_empty() {
                bail!("vendor node {} serves no vendor", vendor.node);
            }
        }
        Ok(())
    }

    fn scheme(&self) -> &'static str {
        match self.tls {
            TlsMode::Off => "http",
            TlsMode::On | TlsMode::Mutual => "https",
        }
    }

    fn url(&self, listen: SocketAddr) -> String {
        format!("{}://{listen}", self.scheme())
    }
}

/// A started child.
struct Running {
    name: String,
    child: Child,
    pid: u32,
    /// Where it answers `/readyz`, if it does.
    probe: Option<SocketAddr>,
    log: PathBuf,
}

/// Runs the cluster described by `args.config` until Ctrl-C or SIGTERM.
pub async fn run(args: &ClusterArgs) -> anyhow::Result<()> {
    let file = ClusterFile::load(&args.config)?;
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .context("cannot find this program's folder")?
            .parent()
            .context("cannot find this program's folder")?
            .to_owned(),
    };
    let binary = |name: &str| -> anyhow::Result<PathBuf> {
        let path = bin_dir.join(name);
        if !path.is_file() {
            bail!(
                "{} is missing; build the binaries first (cargo build --release) \
                 or give --bin-dir",
                path.display()
            );
        }
        Ok(path)
    };
    let broker_bin = binary("millicent-broker")?;
    let vendor_bin = binary("millicent-vendor")?;

    private_dir(&file.data_dir)?;
    let tls_files = match file.tls {
        TlsMode::Off => None,
        TlsMode::On | TlsMode::Mutual => {
            let names: Vec<String> = file
                .broker
                .nodes
                .iter()
                .map(|n| n.node.clone())
                .chain(file.vendor_nodes.iter().map(|n| n.node.clone()))
                .collect();
            let dir = file.data_dir.join("tls");
            Some(
                dev_ca::write(&dir, &names, &[], &["client".to_owned()])
                    .context("cannot make the development certificate authority")?,
            )
        }
    };

    let mut running: Vec<Running> = Vec::new();
    let started = start_all(
        &file,
        tls_files.as_ref(),
        &broker_bin,
        &vendor_bin,
        &mut running,
    )
    .await;
    let outcome = match started {
        Ok(()) => {
            print!("{}", endpoints(&file, tls_files.as_ref(), &running));
            println!("cluster ready; Ctrl-C or SIGTERM stops it");
            watch(&mut running).await
        }
        Err(error) => Err(error),
    };
    let stopped = stop_all(running).await;
    outcome?;
    stopped
}

async fn start_all(
    file: &ClusterFile,
    tls: Option<&dev_ca::DevCaFiles>,
    broker_bin: &Path,
    vendor_bin: &Path,
    running: &mut Vec<Running>,
) -> anyhow::Result<()> {
    // Vendor nodes first: brokers ask them for licences.
    for vendor in &file.vendor_nodes {
        let dir = file.data_dir.join(&vendor.node);
        private_dir(&dir)?;
        let config = vendor_config(file, vendor, &dir, tls)?;
        running.push(spawn(
            &vendor.node,
            vendor_bin,
            &dir,
            &config,
            Some(vendor.metrics_listen),
        )?);
    }
    for node in &file.broker.nodes {
        let dir = file.data_dir.join(&node.node);
        private_dir(&dir)?;
        let config = broker_config(file, node, &dir, tls)?;
        running.push(spawn(
            &node.node,
            broker_bin,
            &dir,
            &config,
            Some(node.metrics_listen),
        )?);
    }
    for child in running.iter_mut() {
        wait_ready(child).await?;
    }
    if let Some(addr) = file.prometheus {
        match start_prometheus(file, addr).await? {
            Some(child) => running.push(child),
            None => println!("prometheus is not installed; the cluster runs without it"),
        }
    }
    Ok(())
}

fn vendor_config(
    file: &ClusterFile,
    vendor: &VendorNodeSpec,
    dir: &Path,
    tls: Option<&dev_ca::DevCaFiles>,
) -> anyhow::Result<String> {
    let mut table = toml::Table::new();
    table.insert("node".into(), vendor.node.clone().into());
    table.insert("listen".into(), vendor.listen.to_string().into());
    table.insert(
        "metrics_listen".into(),
        vendor.metrics_listen.to_string().into(),
    );
    table.insert("data_dir".into(), path_value(&dir.join("data"))?);
    table.insert("licence_token".into(), file.licence_token.clone().into());
    let range = vendor.series_range.map(|n| toml::Value::Integer(n as i64));
    table.insert("series_range".into(), toml::Value::Array(range.to_vec()));
    let vendors = vendor
        .vendors
        .iter()
        .cloned()
        .map(toml::Value::Table)
        .collect();
    table.insert("vendors".into(), toml::Value::Array(vendors));
    if let Some(tls) = tls {
        table.insert("tls".into(), server_tls(file, tls, &vendor.node)?);
    }
    Ok(toml::to_string(&table)?)
}

fn broker_config(
    file: &ClusterFile,
    node: &NodeSpec,
    dir: &Path,
    tls: Option<&dev_ca::DevCaFiles>,
) -> anyhow::Result<String> {
    let mut table = toml::Table::new();
    table.insert("name".into(), file.broker.name.clone().into());
    table.insert("node".into(), node.node.clone().into());
    table.insert("shards".into(), shards(&node.shards));
    table.insert("advertise_url".into(), file.url(node.listen).into());
    table.insert("listen".into(), node.listen.to_string().into());
    table.insert(
        "metrics_listen".into(),
        node.metrics_listen.to_string().into(),
    );
    table.insert("data_dir".into(), path_value(&dir.join("data"))?);
    table.insert("operator_token".into(), file.operator_token.clone().into());
    let peers = file
        .broker
        .nodes
        .iter()
        .filter(|other| other.node != node.node)
        .map(|other| {
            let mut peer = toml::Table::new();
            peer.insert("node".into(), other.node.clone().into());
            peer.insert("url".into(), file.url(other.listen).into());
            peer.insert("shards".into(), shards(&other.shards));
            toml::Value::Table(peer)
        })
        .collect();
    table.insert("peers".into(), toml::Value::Array(peers));
    // Each vendor is sold from the first node that serves it.
    let mut vendors = BTreeMap::new();
    for vendor_node in &file.vendor_nodes {
        for vendor in &vendor_node.vendors {
            let Some(name) = vendor.get("name").and_then(toml::Value::as_str) else {
                bail!("a vendor of {} has no name", vendor_node.node);
            };
            vendors
                .entry(name.to_owned())
                .or_insert_with(|| file.url(vendor_node.listen));
        }
    }
    let vendors = vendors
        .into_iter()
        .map(|(name, url)| {
            let mut vendor = toml::Table::new();
            vendor.insert("name".into(), name.into());
            vendor.insert("node".into(), url.into());
            vendor.insert("licence_token".into(), file.licence_token.clone().into());
            toml::Value::Table(vendor)
        })
        .collect();
    table.insert("vendors".into(), toml::Value::Array(vendors));
    if let Some(tls) = tls {
        table.insert("tls".into(), server_tls(file, tls, &node.node)?);
        let mut client = toml::Table::new();
        client.insert("ca".into(), path_value(&tls.ca())?);
        client.insert("cert".into(), path_value(&tls.cert(&node.node))?);
        client.insert("key".into(), path_value(&tls.key(&node.node))?);
        table.insert("client_tls".into(), toml::Value::Table(client));
    }
    Ok(toml::to_string(&table)?)
}

fn server_tls(
    file: &ClusterFile,
    tls: &dev_ca::DevCaFiles,
    node: &str,
) -> anyhow::Result<toml::Value> {
    let mut table = toml::Table::new();
    table.insert("cert".into(), path_value(&tls.cert(node))?);
    table.insert("key".into(), path_value(&tls.key(node))?);
    if file.tls == TlsMode::Mutual {
        table.insert("client_ca".into(), path_value(&tls.ca())?);
    }
    Ok(toml::Value::Table(table))
}

fn shards(shards: &[u8]) -> toml::Value {
    toml::Value::Array(
        shards
            .iter()
            .map(|&s| toml::Value::Integer(s.into()))
            .collect(),
    )
}

/// `path` made absolute, as the nodes start in their own folders.
fn path_value(path: &Path) -> anyhow::Result<toml::Value> {
    let absolute = std::path::absolute(path)
        .with_context(|| format!("cannot make {} absolute", path.display()))?;
    let text = absolute
        .to_str()
        .with_context(|| format!("{} is not UTF-8", absolute.display()))?;
    Ok(text.to_owned().into())
}

fn private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Writes `config` (it holds tokens: owner-only) and starts `binary` on
/// it in `dir`, its output going to `dir/log`.
fn spawn(
    name: &str,
    binary: &Path,
    dir: &Path,
    config: &str,
    probe: Option<SocketAddr>,
) -> anyhow::Result<Running> {
    let config_path = std::path::absolute(dir.join("config.toml"))?;
    write_secret(&config_path, config.as_bytes())
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let log_path = dir.join("log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let child = Command::new(binary)
        .arg("--config")
        .arg(&config_path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let pid = child.id().context("the child exited at once")?;
    Ok(Running {
        name: name.to_owned(),
        child,
        pid,
        probe,
        log: log_path,
    })
}

async fn wait_ready(child: &mut Running) -> anyhow::Result<()> {
    let Some(probe) = child.probe else {
        return Ok(());
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.child.try_wait()? {
            bail!(
                "{} exited ({status}) before it was ready; its log, {}, ends:\n{}",
                child.name,
                child.log.display(),
                log_tail(&child.log)
            );
        }
        if http_status(probe, READINESS_PATH).await == Some(200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} was not ready after {:?}; see its log, {}",
                child.name,
                READY_TIMEOUT,
                child.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status of `GET path` at `addr`, if it answers.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = vec![0; 64];
        let read = stream.read(&mut head).await.ok()?;
        let head = std::str::from_utf8(&head[..read]).ok()?;
        head.split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn start_prometheus(file: &ClusterFile, addr: SocketAddr) -> anyhow::Result<Option<Running>> {
    let Some(binary) = find_on_path("prometheus") else {
        return Ok(None);
    };
    let dir = file.data_dir.join("prometheus");
    private_dir(&dir)?;
    let targets: Vec<String> = file
        .vendor_nodes
        .iter()
        .map(|n| format!("\"{}\"", n.metrics_listen))
        .chain(
            file.broker
                .nodes
                .iter()
                .map(|n| format!("\"{}\"", n.metrics_listen)),
        )
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 5s\nscrape_configs:\n  - job_name: millicent\n    \
         static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    let config_path = std::path::absolute(dir.join("prometheus.yml"))?;
    std::fs::write(&config_path, config)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let log_path = dir.join("log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start prometheus")?;
    let pid = child.id().context("prometheus exited at once")?;
    let mut running = Running {
        name: "prometheus".to_owned(),
        child,
        pid,
        probe: None,
        log: log_path,
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    while http_status(addr, "/-/ready").await != Some(200) {
        if let Some(status) = running.child.try_wait()? {
            bail!(
                "prometheus exited ({status}); its log, {}, ends:\n{}",
                running.log.display(),
                log_tail(&running.log)
            );
        }
        if Instant::now() > deadline {
            bail!("prometheus was not ready after {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(Some(running))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

fn endpoints(file: &ClusterFile, tls: Option<&dev_ca::DevCaFiles>, running: &[Running]) -> String {
    let pid = |name: &str| running.iter().find(|r| r.name == name).map_or(0, |r| r.pid);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<8} {:<28} {:<22} what",
        "node", "pid", "gRPC", "metrics"
    );
    for node in &file.broker.nodes {
        let shards: Vec<String> = node.shards.iter().map(u8::to_string).collect();
        let _ = writeln!(
            out,
            "{:<12} {:<8} {:<28} {:<22} broker {} shards {}",
            node.node,
            pid(&node.node),
            file.url(node.listen),
            node.metrics_listen,
            file.broker.name,
            shards.join(",")
        );
    }
    for vendor in &file.vendor_nodes {
        let names: Vec<&str> = vendor
            .vendors
            .iter()
            .filter_map(|v| v.get("name").and_then(toml::Value::as_str))
            .collect();
        let _ = writeln!(
            out,
            "{:<12} {:<8} {:<28} {:<22} vendors {} series {}-{}",
            vendor.node,
            pid(&vendor.node),
            file.url(vendor.listen),
            vendor.metrics_listen,
            names.join(","),
            vendor.series_range[0],
            vendor.series_range[1]
        );
    }
    if let Some(addr) = file.prometheus
        && pid("prometheus") != 0
    {
        let _ = writeln!(
            out,
            "{:<12} {:<8} http://{addr}",
            "prometheus",
            pid("prometheus")
        );
    }
    if let Some(tls) = tls {
        let _ = writeln!(
            out,
            "TLS: trust {}; client certificate {} and key {}",
            tls.ca().display(),
            tls.cert("client").display(),
            tls.key("client").display()
        );
    }
    out
}

/// Runs until Ctrl-C or SIGTERM (`Ok`) or until a child exits (`Err`).
async fn watch(running: &mut [Running]) -> anyhow::Result<()> {
    let exited = async {
        loop {
            for child in running.iter_mut() {
                if let Some(status) = child.child.try_wait()? {
                    return Ok::<_, anyhow::Error>((child.name.clone(), status, child.log.clone()));
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        signal = shutdown_signal() => {
            signal?;
            println!("stopping the cluster");
            Ok(())
        }
        exited = exited => {
            let (name, status, log) = exited?;
            bail!("{name} exited ({status}); see its log, {}", log.display())
        }
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C")?,
            _ = terminate.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")
}

/// Stops every child, last started first: SIGTERM, then SIGKILL after
/// [`STOP_TIMEOUT`]. Fails if any child did not exit cleanly.
async fn stop_all(running: Vec<Running>) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for mut child in running.into_iter().rev() {
        match stop(&mut child).await {
            Ok(status) if status.success() => {
                println!("{} (pid {}) stopped", child.name, child.pid);
            }
            Ok(status) => failures.push(format!("{} exited with {status}", child.name)),
            Err(error) => failures.push(format!("{}: {error:#}", child.name)),
        }
    }
    if !failures.is_empty() {
        bail!("not every node stopped cleanly: {}", failures.join("; "));
    }
    Ok(())
}

async fn stop(child: &mut Running) -> anyhow::Result<ExitStatus> {
    if let Some(status) = child.child.try_wait()? {
        return Ok(status);
    }
    terminate(child.pid);
    match tokio::time::timeout(STOP_TIMEOUT, child.child.wait()).await {
        Ok(status) => Ok(status?),
        Err(_) => {
            child.child.kill().await?;
            bail!("did not stop within {STOP_TIMEOUT:?} of SIGTERM and was killed")
        }
    }
}

#[cfg(unix)]
fn terminate(pid: u32) {
    use rustix::process::{Pid, Signal, kill_process};
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        // A child that exited meanwhile is reaped by the wait that follows.
        let _ = kill_process(pid, Signal::TERM);
    }
}

#[cfg(not(unix))]
fn terminate(_pid: u32) {}
