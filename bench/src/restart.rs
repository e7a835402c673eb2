//! How long a vendor node holding many spent IDs takes to serve again, and
//! how much memory its spent-ID bitmaps take.
//!
//! The run starts a vendor node once to create its keys, stops it, records
//! `spent` spends of dense ID#s through the same `SpendStore::spend` path a
//! payment takes, dated evenly over the hour before now (as on a node that
//! has served steadily for an hour, so that most reply records are past the
//! retry window and pruned), and then times a fresh start of the node until
//! it answers a call. The restart is a new `millicent-vendor` process, as
//! after a crash, found next to this program.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use millicent_client::protocol::{connect_vendor, prices};
use millicent_core::{ScripId, VendorName};
use millicent_ledger::{Durability, Ledger, SpendStore};
use millicent_vendor::{RunningVendor, VendorConfig};

use serde::Serialize;

/// The table the vendor node keeps its spends in.
const SPENDS_TABLE: &str = "spends";
/// The series the recorded spends belong to.
const SERIES: u32 = 1;

/// What a restart run measured.
#[derive(Debug, Serialize)]
pub struct RestartReport {
    /// Spent IDs the node held.
    pub spent_ids: u64,
    /// Time to record them.
    pub populate_secs: f64,
    /// Size of the store on disk.
    pub store_bytes: u64,
    /// Memory of the spent-ID bitmaps, per spent ID.
    pub memory_bytes_per_spent_id: f64,
    /// From the start call until the node answered `GetPrices`.
    pub restart_to_serving_secs: f64,
}

/// Runs the measurement in `dir`, which must be empty or absent.
pub async fn run(dir: &Path, spent: u32) -> anyhow::Result<RestartReport> {
    let config = VendorConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.join("vendor"),
        ..VendorConfig::default()
    };
    let vendor = config
        .vendors
        .first()
        .context("the default config has a vendor")?;
    let vendor = VendorName::new(&vendor.name)?;
    RunningVendor::start(config.clone())
        .await?
        .shutdown()
        .await?;

    eprintln!("recording {spent} spends ...");
    let started = Instant::now();
    let ledger = Ledger::open(&config.data_dir, Durability::Strict)?;
    let store = std::sync::Arc::new(SpendStore::open(&ledger, SPENDS_TABLE, 600)?);
    let now = millicent_client::protocol::now_ms() / 1000;
    let an_hour_ago = now - 3600;
    let threads = 2u32;
    let mut workers = Vec::new();
    for thread in 0..threads {
        let (store, vendor) = (store.clone(), vendor.clone());
        workers.push(std::thread::spawn(move || -> anyhow::Result<()> {
            for seq in (thread..spent).step_by(threads as usize) {
                let id = ScripId::new(SERIES, seq);
                let at = an_hour_ago + u64::from(seq) * 3600 / u64::from(spent.max(1));
                store
                    .spend(&vendor, id, &seq.to_be_bytes(), at, || {
                        Ok::<_, std::convert::Infallible>(Vec::new())
                    })
                    .map_err(|_| anyhow::anyhow!("recording spend {id} failed"))?;
            }
            Ok(())
        }));
    }
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("a recording thread panicked"))??;
    }
    eprintln!(
        "recorded in {:.1} s; pruning reply records ...",
        started.elapsed().as_secs_f64()
    );
    store.prune_replies(now)?;
    ledger.commit().await?;
    let populate_secs = started.elapsed().as_secs_f64();
    let memory = store.memory_bytes() as f64 / f64::from(spent.max(1));
    let store_bytes = ledger.size_on_disk()?;
    drop(store);
    ledger.close().await?;

    eprintln!("restarting the vendor node ...");
    let restart = time_process_restart(&config).await?;

    Ok(RestartReport {
        spent_ids: u64::from(spent),
        populate_secs,
        store_bytes,
        memory_bytes_per_spent_id: memory,
        restart_to_serving_secs: round_ms(restart),
    })
}

/// Starts the `millicent-vendor` binary on the node's store and times it
/// until it answers `GetPrices`; then stops it.
async fn time_process_restart(config: &VendorConfig) -> anyhow::Result<Duration> {
    let binary = std::env::current_exe()?
        .parent()
        .context("this program has no directory")?
        .join("millicent-vendor");
    if !binary.exists() {
        anyhow::bail!(
            "{} not found: build it first with `cargo build --release -p millicent-vendor`",
            binary.display()
        );
    }
    let listen = free_port()?;
    let url = format!("http://{listen}");
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&binary)
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--metrics-listen")
        .arg(free_port()?.to_string())
        .arg("--data-dir")
        .arg(&config.data_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let serving = loop {
        if let Ok(mut client) = connect_vendor(&url).await
            && prices(&mut client).await.is_ok()
        {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("the restarted vendor node did not serve within two minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    child.kill().await?;
    Ok(serving)
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?)
}

fn round_ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}
