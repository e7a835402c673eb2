//! The broker's configuration: a TOML file, then environment overrides,
//! then validation into the settings the service runs with.
//!
//! Every key has a default that starts a working local broker, so an empty
//! file (or none) is a valid configuration. Tokens are credentials: they are
//! never printed, not even by `Debug`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use millicent_core::{Amount, Suite, VendorName};
use millicent_transport::{ClientTls, ClientTlsFiles, ServerTlsFiles};
use serde::Deserialize;

use crate::BrokerError;
use crate::accounts::MAX_ENTRY_AMOUNT;
use crate::cluster::{ClusterMap, PeerNode};

/// Environment variable overriding [`BrokerConfig::listen`].
pub(crate) const ENV_LISTEN: &str = "MILLICENT_BROKER_LISTEN";
/// Environment variable overriding [`BrokerConfig::data_dir`].
pub(crate) const ENV_DATA_DIR: &str = "MILLICENT_BROKER_DATA_DIR";
/// Environment variable overriding [`BrokerConfig::metrics_listen`].
pub(crate) const ENV_METRICS_LISTEN: &str = "MILLICENT_BROKER_METRICS_LISTEN";
/// Environment variable overriding [`BrokerConfig::operator_token`].
pub(crate) const ENV_OPERATOR_TOKEN: &str = "MILLICENT_OPERATOR_TOKEN";
/// Environment variable overriding the licence token of every vendor.
pub(crate) const ENV_LICENCE_TOKEN: &str = "MILLICENT_LICENCE_TOKEN";
/// Environment variable overriding the token of every other broker.
pub(crate) const ENV_BROKER_TOKEN: &str = "MILLICENT_BROKER_TOKEN";
/// Environment variable overriding [`BrokerConfig::health_listen`].
pub(crate) const ENV_HEALTH_LISTEN: &str = "MILLICENT_BROKER_HEALTH_LISTEN";
/// Environment variables overriding the files of [`BrokerConfig::tls`].
pub(crate) const ENV_TLS: [&str; 3] = [
    "MILLICENT_BROKER_TLS_CERT",
    "MILLICENT_BROKER_TLS_KEY",
    "MILLICENT_BROKER_TLS_CLIENT_CA",
];
/// Environment variables overriding the files of
/// [`BrokerConfig::client_tls`]: `ca`, `cert`, `key`.
pub(crate) const ENV_CLIENT_TLS: [&str; 3] = [
    "MILLICENT_BROKER_CLIENT_TLS_CA",
    "MILLICENT_BROKER_CLIENT_TLS_CERT",
    "MILLICENT_BROKER_CLIENT_TLS_KEY",
];

/// Largest number of pieces the broker buys in one block.
pub(crate) const MAX_WAREHOUSE_BLOCK: u32 = 4096;

/// The broker's configuration, as read from TOML.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// The broker's name: the vendor field of its broker scrip, the same on
    /// every node of the broker. 1 to 64 characters of `a-z 0-9 . - _ :`.
    pub name: String,
    /// This node's name, unique among the broker's nodes.
    pub node: String,
    /// The shards (0 to 255) this node keeps.
    pub shards: Vec<u8>,
    /// Where clients reach this node (`http://host:port`); by default
    /// `http://` and the address the node listens on.
    pub advertise_url: Option<String>,
    /// The broker's other nodes and the shards they keep.
    pub peers: Vec<PeerConfig>,
    /// Address of the gRPC listener; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory of the broker's stores, one per shard (`shard-N`);
    /// created with mode 0700. The broker refuses to start if group or
    /// others may access it.
    pub data_dir: PathBuf,
    /// Address of the Prometheus endpoint (served by the binary only).
    pub metrics_listen: SocketAddr,
    /// Bearer token of the operator calls (credits, settlement, payouts,
    /// audits). Without one, every operator call is refused.
    pub operator_token: Option<String>,
    /// Cipher suite of the broker's scrip and account calls, by name:
    /// `modern` (the default) or `classic`.
    pub suite: String,
    /// Fee added to the vendor scrip's value in every exchange, in the
    /// smallest unit; also what other brokers pay on top of the value.
    pub exchange_fee: u64,
    /// Lifetime of broker scrip bought from an account, in seconds.
    pub broker_scrip_lifetime_secs: u64,
    /// How far an account call's timestamp may be from the broker's clock,
    /// in seconds; also how long call replies are kept for retries.
    pub clock_window_secs: u64,
    /// How long the reply to an exchange is kept, in seconds, so that a
    /// retried exchange gets the same reply instead of a double-spend error.
    pub retry_window_secs: u64,
    /// How long after its expiry unspent vendor scrip may be renewed, in
    /// seconds.
    pub renewal_grace_secs: u64,
    /// Seconds between two redemption reports asked of each vendor node.
    pub settlement_interval_secs: u64,
    /// Vendors whose scrip this broker sells itself.
    pub vendors: Vec<VendorConfig>,
    /// Other brokers: those this broker buys vendor scrip from for its
    /// customers, and those it sells to.
    pub brokers: Vec<BrokerPeerConfig>,
    /// TLS on the gRPC address: the node's certificate and key, and the
    /// authority whose client certificates it demands. Without it the
    /// node serves plain text.
    pub tls: Option<ServerTlsFiles>,
    /// How this node dials the `https://` URLs of vendor nodes and other
    /// brokers: the authority it trusts and the certificate it presents.
    pub client_tls: ClientTlsFiles,
    /// A plain-text address serving only the gRPC health service, for
    /// probes that cannot speak TLS.
    pub health_listen: Option<SocketAddr>,
}

/// Another node of the same broker.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its node name.
    pub node: String,
    /// Where clients reach it, for example `http://10.0.0.2:7100`.
    pub url: String,
    /// The shards it keeps.
    pub shards: Vec<u8>,
}

/// A vendor whose scrip the broker sells, and where to get it.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorConfig {
    /// The vendor's name, as in its scrip.
    pub name: String,
    /// URL of the vendor's node (`http://host:port`), which grants licences,
    /// sells blocks and reports redemptions.
    pub node: String,
    /// Bearer token of the calls to that node.
    #[serde(default)]
    pub licence_token: Option<String>,
    /// `licence` (mint under licence, the default) or `warehouse` (resell
    /// blocks bought from the vendor node).
    #[serde(default)]
    pub source: Option<String>,
    /// For `licence`: when the vendor is owed for scrip sold, `redeemed`
    /// (once the vendor reports it spent, the default) or `sold` (at once).
    #[serde(default)]
    pub contract: Option<String>,
    /// For `warehouse`: the value of every piece bought.
    #[serde(default)]
    pub warehouse_value: Option<u64>,
    /// For `warehouse`: pieces bought at a time (1 to 4096, default 1000).
    #[serde(default)]
    pub warehouse_block: Option<u32>,
    /// For `warehouse`: buy the next block when fewer pieces are left
    /// (default a quarter of a block).
    #[serde(default)]
    pub warehouse_low_water: Option<u32>,
}

/// Another broker of the network.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerPeerConfig {
    /// Its name (the vendor name of its broker scrip).
    pub name: String,
    /// Where to reach it; needed only to buy from it.
    #[serde(default)]
    pub url: Option<String>,
    /// The bearer token shared with it: presented when buying from it, and
    /// expected when it buys from this broker.
    #[serde(default)]
    pub token: Option<String>,
    /// Vendors whose scrip this broker buys from it.
    #[serde(default)]
    pub vendors: Vec<String>,
    /// The largest fee it may charge per purchase (default 0).
    #[serde(default)]
    pub max_fee: u64,
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            name: "broker.local".to_owned(),
            node: "broker-1".to_owned(),
            shards: vec![0],
            advertise_url: None,
            peers: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7100)),
            data_dir: PathBuf::from("data/broker"),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            operator_token: None,
            suite: Suite::DEFAULT.name().to_owned(),
            exchange_fee: 0,
            broker_scrip_lifetime_secs: 7 * 24 * 60 * 60,
            clock_window_secs: 300,
            retry_window_secs: 600,
            renewal_grace_secs: 24 * 60 * 60,
            settlement_interval_secs: 60,
            vendors: Vec::new(),
            brokers: Vec::new(),
            tls: None,
            client_tls: ClientTlsFiles::default(),
            health_listen: None,
        }
    }
}

impl BrokerConfig {
    /// Reads `path` (or starts from the defaults when there is none),
    /// applies the `MILLICENT_*` environment overrides and validates the
    /// result.
    pub fn load(path: Option<&Path>) -> anyhow::Result<BrokerConfig> {
        let in_file = |error: BrokerError| match path {
            Some(path) => anyhow::anyhow!("{}: {error}", path.display()),
            None => anyhow::anyhow!("{error}"),
        };
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| {
                    anyhow::anyhow!("cannot read configuration {}: {error}", path.display())
                })?;
                BrokerConfig::from_toml(&text).map_err(in_file)?
            }
            None => BrokerConfig::default(),
        };
        config
            .apply_env(|name| std::env::var(name).ok())
            .map_err(in_file)?;
        config.validate().map_err(in_file)?;
        Ok(config)
    }

    /// Parses a configuration from TOML text; absent keys take defaults.
    pub fn from_toml(text: &str) -> Result<BrokerConfig, BrokerError> {
        toml::from_str(text).map_err(|error| BrokerError::Config {
            detail: error.to_string(),
        })
    }

    /// Applies the environment overrides found by `lookup`.
    fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), BrokerError> {
        if let Some(value) = lookup(ENV_LISTEN) {
            self.listen = parse_addr(ENV_LISTEN, &value)?;
        }
        if let Some(value) = lookup(ENV_DATA_DIR) {
            self.data_dir = PathBuf::from(value);
        }
        if let Some(value) = lookup(ENV_METRICS_LISTEN) {
            self.metrics_listen = parse_addr(ENV_METRICS_LISTEN, &value)?;
        }
        if let Some(value) = lookup(ENV_OPERATOR_TOKEN) {
            self.operator_token = Some(value);
        }
        if let Some(value) = lookup(ENV_LICENCE_TOKEN) {
            for vendor in &mut self.vendors {
                vendor.licence_token = Some(value.clone());
            }
        }
        if let Some(value) = lookup(ENV_BROKER_TOKEN) {
            for broker in &mut self.brokers {
                broker.token = Some(value.clone());
            }
        }
        let file = |name: &str| lookup(name).filter(|value| !value.is_empty());
        if let Some(value) = file(ENV_HEALTH_LISTEN) {
            self.health_listen = Some(parse_addr(ENV_HEALTH_LISTEN, &value)?);
        }
        self.tls = ServerTlsFiles::overridden(
            self.tls.take(),
            file(ENV_TLS[0]),
            file(ENV_TLS[1]),
            file(ENV_TLS[2]),
            ENV_TLS,
        )
        .map_err(config_error)?;
        self.client_tls = std::mem::take(&mut self.client_tls).overridden(
            file(ENV_CLIENT_TLS[0]),
            file(ENV_CLIENT_TLS[1]),
            file(ENV_CLIENT_TLS[2]),
        );
        Ok(())
    }

    /// Checks the configuration as the broker does when it starts, naming
    /// the first key that is wrong; nothing is opened or bound.
    pub fn check(&self) -> Result<(), BrokerError> {
        self.validate().map(drop)
    }

    /// Checks every value and returns the settings the service runs with.
    pub(crate) fn validate(&self) -> Result<Settings, BrokerError> {
        let name = VendorName::new(&self.name)
            .map_err(|error| config_error(format!("name {:?}: {error}", self.name)))?;
        let suite = Suite::from_name(&self.suite).ok_or_else(|| {
            let known: Vec<&str> = Suite::ALL.iter().map(|suite| suite.name()).collect();
            config_error(format!(
                "suite {:?} is unknown; known suites: {}",
                self.suite,
                known.join(", ")
            ))
        })?;
        for (key, value) in [
            (
                "broker_scrip_lifetime_secs",
                self.broker_scrip_lifetime_secs,
            ),
            ("clock_window_secs", self.clock_window_secs),
            ("retry_window_secs", self.retry_window_secs),
            ("settlement_interval_secs", self.settlement_interval_secs),
        ] {
            if value == 0 {
                return Err(config_error(format!("{key} must be at least 1")));
            }
        }
        // Series last twice the scrip lifetime, and that must fit in a u64
        // next to any plausible clock.
        if self.broker_scrip_lifetime_secs > u64::MAX / 4 || self.renewal_grace_secs > u64::MAX / 4
        {
            return Err(config_error(
                "broker_scrip_lifetime_secs or renewal_grace_secs is too large".to_owned(),
            ));
        }
        if self.exchange_fee > MAX_ENTRY_AMOUNT {
            return Err(config_error(format!(
                "exchange_fee must be at most {MAX_ENTRY_AMOUNT}"
            )));
        }

        let operator_token = self
            .operator_token
            .clone()
            .filter(|token| !token.is_empty());
        if let Some(token) = &operator_token {
            check_token("operator_token", token)?;
        }
        let cluster = self.cluster_map()?;
        if let Some(url) = &self.advertise_url {
            check_url("advertise_url", url)?;
        }

        let client_tls = self
            .client_tls
            .load()
            .map_err(|error| config_error(format!("[client_tls]: {error}")))?;

        let mut seen = BTreeSet::new();
        let mut vendors = Vec::with_capacity(self.vendors.len());
        for vendor in &self.vendors {
            vendors.push(vendor.validate(&name, &mut seen, &client_tls)?);
        }
        let mut brokers = Vec::with_capacity(self.brokers.len());
        let mut broker_names = BTreeSet::new();
        for broker in &self.brokers {
            brokers.push(broker.validate(&name, &mut broker_names, &mut seen, &client_tls)?);
        }

        let mut sources = BTreeMap::new();
        for vendor in &vendors {
            sources.insert(vendor.name.clone(), vendor.source.clone());
        }
        for broker in &brokers {
            for vendor in &broker.vendors {
                sources.insert(vendor.clone(), Source::Broker(broker.name.clone()));
            }
        }

        Ok(Settings {
            name,
            suite,
            operator_token,
            exchange_fee: Amount::new(self.exchange_fee),
            scrip_lifetime_secs: self.broker_scrip_lifetime_secs,
            clock_window_secs: self.clock_window_secs,
            retry_window_secs: self.retry_window_secs,
            renewal_grace_secs: self.renewal_grace_secs,
            settlement_interval_secs: self.settlement_interval_secs,
            cluster,
            advertise_url: self.advertise_url.clone(),
            vendors,
            brokers,
            sources,
        })
    }

    fn cluster_map(&self) -> Result<ClusterMap, BrokerError> {
        VendorName::new(&self.node)
            .map_err(|error| config_error(format!("node name {:?}: {error}", self.node)))?;
        let own = shard_set(&format!("shards of node {}", self.node), &self.shards)?;
        let mut names = BTreeSet::from([self.node.as_str()]);
        let mut peers = Vec::with_capacity(self.peers.len());
        for peer in &self.peers {
            VendorName::new(&peer.node).map_err(|error| {
                config_error(format!("[[peers]] node name {:?}: {error}", peer.node))
            })?;
            if !names.insert(peer.node.as_str()) {
                return Err(config_error(format!(
                    "[[peers]] node {} is this node or is listed twice",
                    peer.node
                )));
            }
            check_url(&format!("url of peer {}", peer.node), &peer.url)?;
            peers.push(PeerNode {
                node: peer.node.clone(),
                url: peer.url.trim().to_owned(),
                shards: shard_set(&format!("shards of peer {}", peer.node), &peer.shards)?,
            });
        }
        ClusterMap::new(self.node.clone(), own, peers).map_err(config_error)
    }
}

fn shard_set(key: &str, shards: &[u8]) -> Result<BTreeSet<u8>, BrokerError> {
    let set: BTreeSet<u8> = shards.iter().copied().collect();
    if set.len() != shards.len() {
        return Err(config_error(format!("{key} lists a shard twice")));
    }
    if set.is_empty() {
        return Err(config_error(format!("{key} is empty")));
    }
    Ok(set)
}

impl VendorConfig {
    fn validate(
        &self,
        broker: &VendorName,
        seen: &mut BTreeSet<VendorName>,
        client_tls: &ClientTls,
    ) -> Result<VendorSettings, BrokerError> {
        let name = VendorName::new(&self.name)
            .map_err(|error| config_error(format!("vendor name {:?}: {error}", self.name)))?;
        if name == *broker {
            return Err(config_error(format!(
                "vendor {name} has the broker's own name; pick different names"
            )));
        }
        if !seen.insert(name.clone()) {
            return Err(config_error(format!("vendor {name} is listed twice")));
        }
        check_url(&format!("vendor {name}: node"), &self.node)?;
        let licence_token = self
            .licence_token
            .clone()
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                config_error(format!(
                    "vendor {name} has no licence_token; set it in the file or in \
                     {ENV_LICENCE_TOKEN}"
                ))
            })?;
        check_token(&format!("vendor {name}: licence_token"), &licence_token)?;

        let contract = match self.contract.as_deref() {
            None | Some("redeemed") => Contract::Redeemed,
            Some("sold") => Contract::Sold,
            Some(other) => {
                return Err(config_error(format!(
                    "vendor {name}: contract {other:?} is unknown; use \"redeemed\" or \"sold\""
                )));
            }
        };
        let source = match self.source.as_deref() {
            None | Some("licence") => {
                if self.warehouse_value.is_some()
                    || self.warehouse_block.is_some()
                    || self.warehouse_low_water.is_some()
                {
                    return Err(config_error(format!(
                        "vendor {name}: warehouse_* keys need source = \"warehouse\""
                    )));
                }
                Source::Licence(contract)
            }
            Some("warehouse") => {
                if self.contract.is_some() {
                    return Err(config_error(format!(
                        "vendor {name}: warehouse scrip is paid for when bought; contract is \
                         for source = \"licence\" only"
                    )));
                }
                let value = self.warehouse_value.filter(|value| *value >= 1).ok_or_else(|| {
                    config_error(format!(
                        "vendor {name}: source = \"warehouse\" needs warehouse_value of at least 1"
                    ))
                })?;
                let block = self.warehouse_block.unwrap_or(1000);
                if !(1..=MAX_WAREHOUSE_BLOCK).contains(&block) {
                    return Err(config_error(format!(
                        "vendor {name}: warehouse_block must be 1 to {MAX_WAREHOUSE_BLOCK}"
                    )));
                }
                let total = u64::from(block)
                    .checked_mul(value)
                    .filter(|total| *total <= MAX_ENTRY_AMOUNT);
                if total.is_none() {
                    return Err(config_error(format!(
                        "vendor {name}: a block of {block} pieces of {value} is worth too much"
                    )));
                }
                let low_water = self.warehouse_low_water.unwrap_or(block / 4).min(block);
                Source::Warehouse(Warehousing {
                    value: Amount::new(value),
                    block,
                    low_water,
                })
            }
            Some(other) => {
                return Err(config_error(format!(
                    "vendor {name}: source {other:?} is unknown; use \"licence\" or \"warehouse\""
                )));
            }
        };
        Ok(VendorSettings {
            name,
            node: self.node.trim().to_owned(),
            licence_token,
            source,
            client_tls: client_tls.clone(),
        })
    }
}

impl BrokerPeerConfig {
    fn validate(
        &self,
        broker: &VendorName,
        names: &mut BTreeSet<VendorName>,
        vendors_seen: &mut BTreeSet<VendorName>,
        client_tls: &ClientTls,
    ) -> Result<BrokerPeerSettings, BrokerError> {
        let name = VendorName::new(&self.name)
            .map_err(|error| config_error(format!("[[brokers]] name {:?}: {error}", self.name)))?;
        if name == *broker || !names.insert(name.clone()) {
            return Err(config_error(format!(
                "[[brokers]] {name} is this broker or is listed twice"
            )));
        }
        let token = self
            .token
            .clone()
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                config_error(format!(
                    "broker {name} has no token; set it in the file or in {ENV_BROKER_TOKEN}"
                ))
            })?;
        check_token(&format!("broker {name}: token"), &token)?;
        if let Some(url) = &self.url {
            check_url(&format!("broker {name}: url"), url)?;
        }
        let mut vendors = Vec::with_capacity(self.vendors.len());
        for vendor in &self.vendors {
            let vendor = VendorName::new(vendor).map_err(|error| {
                config_error(format!("broker {name}: vendor {vendor:?}: {error}"))
            })?;
            if vendor == *broker || !vendors_seen.insert(vendor.clone()) {
                return Err(config_error(format!(
                    "vendor {vendor} of broker {name} is this broker, or is sold by this broker \
                     or another one already; each vendor has one source"
                )));
            }
            vendors.push(vendor);
        }
        if !vendors.is_empty() && self.url.is_none() {
            return Err(config_error(format!(
                "broker {name} sells vendors to this broker but has no url"
            )));
        }
        if self.max_fee > MAX_ENTRY_AMOUNT {
            return Err(config_error(format!(
                "broker {name}: max_fee must be at most {MAX_ENTRY_AMOUNT}"
            )));
        }
        Ok(BrokerPeerSettings {
            name,
            url: self.url.as_ref().map(|url| url.trim().to_owned()),
            token,
            vendors,
            max_fee: Amount::new(self.max_fee),
            client_tls: client_tls.clone(),
        })
    }
}

/// Tokens travel in an `authorization` header: visible ASCII only.
fn check_token(key: &str, token: &str) -> Result<(), BrokerError> {
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(config_error(format!(
            "{key} may hold only visible ASCII characters (no spaces)"
        )));
    }
    Ok(())
}

fn check_url(key: &str, url: &str) -> Result<(), BrokerError> {
    let url = url.trim();
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    if !scheme_ok || url.parse::<tonic::transport::Uri>().is_err() {
        return Err(config_error(format!(
            "{key} {url:?} is not a URL like http://127.0.0.1:7200"
        )));
    }
    Ok(())
}

fn parse_addr(variable: &str, value: &str) -> Result<SocketAddr, BrokerError> {
    value.parse().map_err(|_| {
        config_error(format!(
            "{variable}={value:?} is not an address like 127.0.0.1:7100"
        ))
    })
}

fn config_error(detail: String) -> BrokerError {
    BrokerError::Config { detail }
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("name", &self.name)
            .field("node", &self.node)
            .field("shards", &self.shards)
            .field("advertise_url", &self.advertise_url)
            .field("peers", &self.peers)
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("metrics_listen", &self.metrics_listen)
            .field("operator_token", &redacted(&self.operator_token))
            .field("suite", &self.suite)
            .field("exchange_fee", &self.exchange_fee)
            .field(
                "broker_scrip_lifetime_secs",
                &self.broker_scrip_lifetime_secs,
            )
            .field("clock_window_secs", &self.clock_window_secs)
            .field("retry_window_secs", &self.retry_window_secs)
            .field("renewal_grace_secs", &self.renewal_grace_secs)
            .field("settlement_interval_secs", &self.settlement_interval_secs)
            .field("vendors", &self.vendors)
            .field("brokers", &self.brokers)
            .field("tls", &self.tls)
            .field("client_tls", &self.client_tls)
            .field("health_listen", &self.health_listen)
            .finish()
    }
}

impl std::fmt::Debug for VendorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VendorConfig")
            .field("name", &self.name)
            .field("node", &self.node)
            .field("licence_token", &redacted(&self.licence_token))
            .field("source", &self.source)
            .field("contract", &self.contract)
            .field("warehouse_value", &self.warehouse_value)
            .field("warehouse_block", &self.warehouse_block)
            .field("warehouse_low_water", &self.warehouse_low_water)
            .finish()
    }
}

impl std::fmt::Debug for BrokerPeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerPeerConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("token", &redacted(&self.token))
            .field("vendors", &self.vendors)
            .field("max_fee", &self.max_fee)
            .finish()
    }
}

fn redacted(token: &Option<String>) -> Option<&'static str> {
    token.as_ref().map(|_| "..")
}

/// A configuration that passed validation.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) name: VendorName,
    pub(crate) suite: Suite,
    pub(crate) operator_token: Option<String>,
    pub(crate) exchange_fee: Amount,
    pub(crate) scrip_lifetime_secs: u64,
    pub(crate) clock_window_secs: u64,
    pub(crate) retry_window_secs: u64,
    pub(crate) renewal_grace_secs: u64,
    pub(crate) settlement_interval_secs: u64,
    pub(crate) cluster: ClusterMap,
    pub(crate) advertise_url: Option<String>,
    pub(crate) vendors: Vec<VendorSettings>,
    pub(crate) brokers: Vec<BrokerPeerSettings>,
    /// How each vendor's scrip is had, for every vendor sold.
    pub(crate) sources: BTreeMap<VendorName, Source>,
}

impl Settings {
    /// The settings of vendor `name`, if this broker sells it itself.
    pub(crate) fn vendor(&self, name: &VendorName) -> Option<&VendorSettings> {
        self.vendors.iter().find(|vendor| vendor.name == *name)
    }

    /// The settings of the other broker `name`, if configured.
    pub(crate) fn broker(&self, name: &VendorName) -> Option<&BrokerPeerSettings> {
        self.brokers.iter().find(|broker| broker.name == *name)
    }
}

/// When a vendor is owed for scrip minted under its licence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Contract {
    /// Once the vendor reports the scrip spent.
    Redeemed = 1,
    /// As soon as it is sold.
    Sold = 2,
}

impl Contract {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Contract::Redeemed => "redeemed",
            Contract::Sold => "sold",
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Option<Contract> {
        match byte {
            1 => Some(Contract::Redeemed),
            2 => Some(Contract::Sold),
            _ => None,
        }
    }
}

/// How the broker buys a warehouse vendor's scrip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Warehousing {
    pub(crate) value: Amount,
    pub(crate) block: u32,
    pub(crate) low_water: u32,
}

/// Where the broker gets a vendor's scrip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Minted under licence.
    Licence(Contract),
    /// Resold from blocks bought from the vendor node.
    Warehouse(Warehousing),
    /// Bought from another broker.
    Broker(VendorName),
}

/// A vendor entry that passed validation.
#[derive(Clone)]
pub(crate) struct VendorSettings {
    pub(crate) name: VendorName,
    pub(crate) node: String,
    pub(crate) licence_token: String,
    pub(crate) source: Source,
    /// How `node` is dialled when it is an `https://` URL.
    pub(crate) client_tls: ClientTls,
}

/// Another broker, validated.
#[derive(Clone)]
pub(crate) struct BrokerPeerSettings {
    pub(crate) name: VendorName,
    pub(crate) url: Option<String>,
    pub(crate) token: String,
    pub(crate) vendors: Vec<VendorName>,
    pub(crate) max_fee: Amount,
    /// How `url` is dialled when it is an `https://` URL.
    pub(crate) client_tls: ClientTls,
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn defaults_are_valid_and_an_empty_file_means_defaults() {
        let config = BrokerConfig::from_toml("").unwrap();
        assert_eq!(config.name, "broker.local");
        assert_eq!(config.listen, BrokerConfig::default().listen);
        let settings = config.validate().unwrap();
        assert_eq!(settings.suite, Suite::Modern);
        assert!(settings.operator_token.is_none());
        assert_eq!(settings.cluster.own(), &BTreeSet::from([0]));
    }

    #[test]
    fn the_example_file_is_valid() {
        let config = BrokerConfig::from_toml(include_str!("../../deploy/broker.toml")).unwrap();
        let settings = config.validate().unwrap();
        assert_eq!(settings.renewal_grace_secs, 86_400);
        assert_eq!(
            settings.vendors[0].source,
            Source::Licence(Contract::Redeemed)
        );
    }

    #[test]
    fn a_full_file_parses() {
        let config = BrokerConfig::from_toml(
            r#"
            name = "bank.example"
            node = "bank-1"
            shards = [0, 1]
            advertise_url = "http://10.0.0.1:7101"
            listen = "127.0.0.1:7101"
            data_dir = "/tmp/b"
            metrics_listen = "127.0.0.1:9101"
            operator_token = "op"
            suite = "classic"
            exchange_fee = 3
            broker_scrip_lifetime_secs = 60
            clock_window_secs = 10
            retry_window_secs = 20
            renewal_grace_secs = 30
            settlement_interval_secs = 5
            [[peers]]
            node = "bank-2"
            url = "http://10.0.0.2:7101"
            shards = [2]
            [[vendors]]
            name = "news.example"
            node = "http://127.0.0.1:7200"
            licence_token = "lic"
            contract = "sold"
            [[vendors]]
            name = "shop.example"
            node = "http://127.0.0.1:7201"
            licence_token = "lic"
            source = "warehouse"
            warehouse_value = 50
            warehouse_block = 200
            [[brokers]]
            name = "other.example"
            url = "http://10.0.1.1:7100"
            token = "peer"
            vendors = ["api.example"]
            max_fee = 2
            "#,
        )
        .unwrap();
        let settings = config.validate().unwrap();
        assert_eq!(settings.name.as_str(), "bank.example");
        assert_eq!(settings.exchange_fee, Amount::new(3));
        assert_eq!(settings.vendors.len(), 2);
        assert_eq!(settings.vendors[0].licence_token, "lic");
        assert_eq!(settings.vendors[0].source, Source::Licence(Contract::Sold));
        assert_eq!(
            settings.vendors[1].source,
            Source::Warehouse(Warehousing {
                value: Amount::new(50),
                block: 200,
                low_water: 50
            })
        );
        let api = VendorName::new("api.example").unwrap();
        assert_eq!(
            settings.sources[&api],
            Source::Broker(VendorName::new("other.example").unwrap())
        );
        assert_eq!(settings.cluster.peers()[0].shards, BTreeSet::from([2]));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_key_named() {
        assert!(BrokerConfig::from_toml("nme = \"x\"").is_err());
        let bad = |edit: fn(&mut BrokerConfig)| {
            let mut config = BrokerConfig::default();
            edit(&mut config);
            config.validate().err().map(|error| error.to_string())
        };
        assert!(bad(|c| c.name = "Broker".into()).unwrap().contains("name"));
        assert!(bad(|c| c.suite = "md4".into()).unwrap().contains("classic"));
        assert!(
            bad(|c| c.clock_window_secs = 0)
                .unwrap()
                .contains("clock_window_secs")
        );
        assert!(bad(|c| c.shards = vec![]).unwrap().contains("shards"));
        assert!(bad(|c| c.shards = vec![1, 1]).unwrap().contains("twice"));
        assert!(
            bad(|c| c.peers = vec![PeerConfig {
                node: "broker-2".into(),
                url: "http://x:1".into(),
                shards: vec![0],
            }])
            .unwrap()
            .contains("shard 0")
        );
        let vendor = |name: &str, node: &str, token: Option<&str>| VendorConfig {
            name: name.into(),
            node: node.into(),
            licence_token: token.map(str::to_owned),
            ..VendorConfig::default()
        };
        let mut config = BrokerConfig {
            vendors: vec![vendor("news", "127.0.0.1:1", Some("t"))],
            ..BrokerConfig::default()
        };
        assert!(config.validate().is_err());
        config.vendors = vec![vendor("news", "http://127.0.0.1:1", None)];
        assert!(config.validate().is_err());
        config.vendors = vec![vendor("broker.local", "http://127.0.0.1:1", Some("t"))];
        assert!(config.validate().is_err());
        config.vendors = vec![
            vendor("news", "http://127.0.0.1:1", Some("t")),
            vendor("news", "http://127.0.0.1:2", Some("t")),
        ];
        assert!(config.validate().is_err());

        let warehouse = |value, contract: Option<&str>| VendorConfig {
            source: Some("warehouse".into()),
            warehouse_value: value,
            contract: contract.map(str::to_owned),
            ..vendor("news", "http://127.0.0.1:1", Some("t"))
        };
        config.vendors = vec![warehouse(None, None)];
        assert!(
            config
                .validate()
                .err()
                .unwrap()
                .to_string()
                .contains("warehouse_value")
        );
        config.vendors = vec![warehouse(Some(5), Some("sold"))];
        assert!(
            config
                .validate()
                .err()
                .unwrap()
                .to_string()
                .contains("contract")
        );
        config.vendors = vec![warehouse(Some(5), None)];
        assert!(config.validate().is_ok());

        config.brokers = vec![BrokerPeerConfig {
            name: "other".into(),
            token: Some("t".into()),
            vendors: vec!["news".into()],
            url: Some("http://127.0.0.1:3".into()),
            ..BrokerPeerConfig::default()
        }];
        assert!(
            config
                .validate()
                .err()
                .unwrap()
                .to_string()
                .contains("one source")
        );
        config.brokers[0].vendors = vec!["api".into()];
        config.brokers[0].url = None;
        assert!(
            config
                .validate()
                .err()
                .unwrap()
                .to_string()
                .contains("no url")
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut config = BrokerConfig {
            vendors: vec![VendorConfig {
                name: "news".into(),
                node: "http://127.0.0.1:1".into(),
                ..VendorConfig::default()
            }],
            brokers: vec![BrokerPeerConfig {
                name: "other".into(),
                ..BrokerPeerConfig::default()
            }],
            ..BrokerConfig::default()
        };
        let env: HashMap<&str, &str> = HashMap::from([
            (ENV_LISTEN, "127.0.0.1:1234"),
            (ENV_DATA_DIR, "/var/lib/broker"),
            (ENV_METRICS_LISTEN, "127.0.0.1:4321"),
            (ENV_OPERATOR_TOKEN, "op"),
            (ENV_LICENCE_TOKEN, "lic"),
            (ENV_BROKER_TOKEN, "peer"),
        ]);
        config
            .apply_env(|name| env.get(name).map(|value| value.to_string()))
            .unwrap();
        assert_eq!(config.listen.port(), 1234);
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/broker"));
        assert_eq!(config.metrics_listen.port(), 4321);
        assert_eq!(config.operator_token.as_deref(), Some("op"));
        assert_eq!(config.vendors[0].licence_token.as_deref(), Some("lic"));
        assert_eq!(config.brokers[0].token.as_deref(), Some("peer"));

        let error = config
            .apply_env(|name| (name == ENV_LISTEN).then(|| "nowhere".to_owned()))
            .unwrap_err();
        assert!(error.to_string().contains(ENV_LISTEN));
    }

    #[test]
    fn debug_never_shows_tokens() {
        let config = BrokerConfig {
            operator_token: Some("s3cret".into()),
            vendors: vec![VendorConfig {
                name: "news".into(),
                node: "http://127.0.0.1:1".into(),
                licence_token: Some("l1cence".into()),
                ..VendorConfig::default()
            }],
            brokers: vec![BrokerPeerConfig {
                name: "other".into(),
                token: Some("p33r".into()),
                ..BrokerPeerConfig::default()
            }],
            ..BrokerConfig::default()
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret") && !printed.contains("l1cence"));
        assert!(!printed.contains("p33r"));
    }
}
