//! A complete local network in this process: one vendor node and one broker
//! licensed to sell its scrip, both serving real gRPC on loopback ports
//! chosen by the system, with their stores in one data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use millicent_broker::{BrokerConfig, RunningBroker};
use millicent_core::Suite;
use millicent_vendor::{RunningVendor, VendorConfig};

/// A running broker and vendor node.
pub struct LocalNetwork {
    vendor: RunningVendor,
    broker: RunningBroker,
    operator_token: String,
    licence_token: String,
    data_dir: PathBuf,
    /// Removes the data directory on drop when it was temporary.
    _temporary: Option<tempfile::TempDir>,
}

impl LocalNetwork {
    /// Starts the vendor node, then the broker, both using `suite` for
    /// their scrip. Storage goes under `data_dir`, or a temporary directory
    /// removed when the network is.
    pub async fn start(data_dir: Option<PathBuf>, suite: Suite) -> anyhow::Result<LocalNetwork> {
        LocalNetwork::start_with(data_dir, suite, 1).await
    }

    /// As [`LocalNetwork::start`], with a broker keeping `shards` shards
    /// (numbered from 0) in its one process.
    pub async fn start_with(
        data_dir: Option<PathBuf>,
        suite: Suite,
        shards: u8,
    ) -> anyhow::Result<LocalNetwork> {
        LocalNetwork::start_with_series(data_dir, suite, shards, None).await
    }

    /// As [`LocalNetwork::start_with`], with the vendor node allocating
    /// its series from `series_range` (`[first, last]`) instead of the
    /// default range, so that two local networks serving the same vendor
    /// never issue the same ID#s.
    pub async fn start_with_series(
        data_dir: Option<PathBuf>,
        suite: Suite,
        shards: u8,
        series_range: Option<[u32; 2]>,
    ) -> anyhow::Result<LocalNetwork> {
        let (data_dir, temporary) = match data_dir {
            Some(dir) => (dir, None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("millicent-demo-")
                    .tempdir()
                    .context("creating a temporary data directory")?;
                (dir.path().to_path_buf(), Some(dir))
            }
        };
        let licence_token = random_token();
        let operator_token = random_token();
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();

        let mut vendor_config = VendorConfig {
            listen: loopback,
            data_dir: data_dir.join("vendor"),
            licence_token: Some(licence_token.clone()),
            ..VendorConfig::default()
        };
        for vendor in &mut vendor_config.vendors {
            vendor.suite = suite.name().to_owned();
        }
        if let Some(range) = series_range {
            vendor_config.series_range = range;
        }
        let vendor_names: Vec<String> = vendor_config
            .vendors
            .iter()
            .map(|vendor| vendor.name.clone())
            .collect();
        let vendor = RunningVendor::start(vendor_config)
            .await
            .context("starting the vendor node")?;

        let broker_config = BrokerConfig {
            listen: loopback,
            data_dir: data_dir.join("broker"),
            operator_token: Some(operator_token.clone()),
            suite: suite.name().to_owned(),
            shards: (0..shards.max(1)).collect(),
            vendors: vendor_names
                .into_iter()
                .map(|name| millicent_broker::VendorConfig {
                    name,
                    node: format!("http://{}", vendor.addr()),
                    licence_token: Some(licence_token.clone()),
                    ..millicent_broker::VendorConfig::default()
                })
                .collect(),
            ..BrokerConfig::default()
        };
        let broker = RunningBroker::start(broker_config)
            .await
            .context("starting the broker")?;
        Ok(LocalNetwork {
            vendor,
            broker,
            operator_token,
            licence_token,
            data_dir,
            _temporary: temporary,
        })
    }

    /// The broker's gRPC URL.
    pub fn broker_url(&self) -> String {
        format!("http://{}", self.broker.addr())
    }

    /// The vendor node's gRPC URL.
    pub fn vendor_url(&self) -> String {
        format!("http://{}", self.vendor.addr())
    }

    /// The operator token the broker was started with.
    pub fn operator_token(&self) -> &str {
        &self.operator_token
    }

    /// The token brokers present to the vendor node for a licence.
    pub fn licence_token(&self) -> &str {
        &self.licence_token
    }

    /// Where the stores are.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the broker, then the vendor node, each draining and flushing.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.broker
            .shutdown()
            .await
            .context("stopping the broker")?;
        self.vendor
            .shutdown()
            .await
            .context("stopping the vendor node")?;
        Ok(())
    }
}

/// A fresh random token, so a demo network accepts no outside credentials.
fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
