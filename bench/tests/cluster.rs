//! `millicent-bench cluster` as an operator runs it: a cluster of separate
//! processes with mutual TLS from a small file, a real payment through it
//! with the `millicent` command line, then SIGTERM, after which every
//! process it started has exited.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The folder of the built binaries; the broker's, the vendor node's and
/// the wallet's are built there first if needed.
fn bin_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let built = Command::new(cargo)
        .args(["build", "--quiet", "--bins"])
        .args([
            "-p",
            "millicent-broker",
            "-p",
            "millicent-vendor",
            "-p",
            "millicent-client",
        ])
        .status()
        .unwrap();
    assert!(built.success(), "cannot build the binaries");
    Path::new(env!("CARGO_BIN_EXE_millicent-bench"))
        .parent()
        .unwrap()
        .to_owned()
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn cluster_file(dir: &Path, ports: &[u16]) -> String {
    format!(
        r#"
data_dir = "{data}"
operator_token = "operator-token-for-tests"
licence_token = "licence-token-for-tests"
tls = "mutual"
prometheus = "127.0.0.1:{p8}"

[broker]
name = "broker.test"

[[broker.nodes]]
node = "broker-1"
listen = "127.0.0.1:{p0}"
metrics_listen = "127.0.0.1:{p1}"
shards = [0]

[[broker.nodes]]
node = "broker-2"
listen = "127.0.0.1:{p2}"
metrics_listen = "127.0.0.1:{p3}"
shards = [1]

[[vendor_nodes]]
node = "vendor-1"
listen = "127.0.0.1:{p4}"
metrics_listen = "127.0.0.1:{p5}"
series_range = [1, 999]
[[vendor_nodes.vendors]]
name = "news.example"
suite = "modern"
variants = ["secure"]
items = [{{ name = "article-1", price = 10, content = "An article" }}]

[[vendor_nodes]]
node = "vendor-2"
listen = "127.0.0.1:{p6}"
metrics_listen = "127.0.0.1:{p7}"
series_range = [1000, 1999]
[[vendor_nodes.vendors]]
name = "maps.example"
suite = "modern"
variants = ["secure"]
items = [{{ name = "tile", price = 2, content = "A tile" }}]
"#,
        data = dir.join("cluster").display(),
        p0 = ports[0],
        p1 = ports[1],
        p2 = ports[2],
        p3 = ports[3],
        p4 = ports[4],
        p5 = ports[5],
        p6 = ports[6],
        p7 = ports[7],
        p8 = ports[8],
    )
}

/// Runs `millicent --json` with the cluster's client certificate.
fn millicent(bin: &Path, tls: &Path, args: &[&str]) -> Value {
    let output = Command::new(bin.join("millicent"))
        .arg("--json")
        .arg("--tls-ca")
        .arg(tls.join("ca.pem"))
        .arg("--tls-cert")
        .arg(tls.join("client.pem"))
        .arg("--tls-key")
        .arg(tls.join("client.key"))
        .args(args)
        .env_remove("MILLICENT_WALLET")
        .env_remove("MILLICENT_OPERATOR_TOKEN")
        .env_remove("MILLICENT_PASSPHRASE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "millicent {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_cluster_pays_over_mutual_tls_and_leaves_no_process_behind() {
    let bin = bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(9);
    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, cluster_file(dir.path(), &ports)).unwrap();

    let mut cluster = Command::new(env!("CARGO_BIN_EXE_millicent-bench"))
        .arg("cluster")
        .arg("--config")
        .arg(&config)
        .arg("--bin-dir")
        .arg(&bin)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(cluster.stdout.take().unwrap()).lines();
    let mut pids = Vec::new();
    let mut printed = String::new();
    loop {
        let Some(line) = lines.next() else {
            panic!("the cluster stopped before it was ready:\n{printed}");
        };
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("cluster ready") {
            break;
        }
        if let Some(pid) = line.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            pids.push(pid);
        }
    }
    // Four nodes, and Prometheus if it is installed.
    assert!(pids.len() >= 4, "{printed}");
    assert!(pids.iter().all(|&pid| alive(pid)), "{printed}");
    assert!(
        printed.contains(&format!("https://127.0.0.1:{}", ports[0])),
        "{printed}"
    );

    let tls = dir.path().join("cluster").join("tls");
    let wallet = dir.path().join("wallet.json");
    let wallet = wallet.to_str().unwrap();
    let broker = format!("https://127.0.0.1:{}", ports[0]);
    millicent(&bin, &tls, &["--wallet", wallet, "create"]);
    let joined = millicent(
        &bin,
        &tls,
        &["--wallet", wallet, "join", "--broker", &broker],
    );
    let account = joined["account_id"].as_u64().unwrap().to_string();
    let credit = [
        "credit",
        "--broker",
        &broker,
        "--account",
        &account,
        "--amount",
        "1000",
        "--reference",
        "deposit-1",
        "--operator-token",
        "operator-token-for-tests",
    ];
    millicent(&bin, &tls, &credit);
    millicent(&bin, &tls, &["--wallet", wallet, "buy", "--amount", "500"]);
    let news = format!("https://127.0.0.1:{}", ports[4]);
    let paid = millicent(
        &bin,
        &tls,
        &[
            "--wallet",
            wallet,
            "pay",
            "--vendor",
            &news,
            "--item",
            "article-1",
        ],
    );
    assert_eq!(paid["change"], 90);
    let maps = format!("https://127.0.0.1:{}", ports[6]);
    let paid = millicent(
        &bin,
        &tls,
        &[
            "--wallet", wallet, "pay", "--vendor", &maps, "--item", "tile",
        ],
    );
    assert_eq!(paid["change"], 98);

    // SIGTERM, as a service manager sends it.
    let pid = rustix::process::Pid::from_raw(cluster.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = cluster.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the cluster did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    let rest: Vec<String> = lines.map(|line| line.unwrap()).collect();
    assert!(status.success(), "{status}: {rest:?}");
    for pid in &pids {
        assert!(!alive(*pid), "process {pid} outlived the cluster");
        assert!(
            rest.iter()
                .any(|line| line.contains(&format!("(pid {pid}) stopped"))),
            "{rest:?}"
        );
    }
}

#[test]
fn dev_ca_writes_owner_only_certificates_a_server_can_use() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tls");
    let status = Command::new(env!("CARGO_BIN_EXE_millicent-bench"))
        .args(["dev-ca", "--out"])
        .arg(&out)
        .args([
            "--names",
            "broker-1,vendor-1",
            "--hosts",
            "vendor.example,10.0.0.7",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), 0o700);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let expected = [
        "broker-1.key",
        "broker-1.pem",
        "ca.key",
        "ca.pem",
        "client.key",
        "client.pem",
        "vendor-1.key",
        "vendor-1.pem",
    ];
    assert_eq!(names, expected);
    for name in &names {
        assert_eq!(mode(&out.join(name)), 0o600, "{name}");
    }
    let server = millicent_transport::ServerTlsFiles {
        cert: out.join("vendor-1.pem"),
        key: out.join("vendor-1.key"),
        client_ca: Some(out.join("ca.pem")),
    };
    assert!(server.load().is_ok());

    // A host that is neither a DNS name nor an address is refused.
    let status = Command::new(env!("CARGO_BIN_EXE_millicent-bench"))
        .args(["dev-ca", "--out"])
        .arg(dir.path().join("bad"))
        .args(["--names", "node", "--hosts", "not a host"])
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
}
