//! Configuration of a vendor node: a TOML file, then environment overrides.
//!
//! Every key has a default, so a node starts with no file at all and serves
//! the demonstration vendor `news.example` from `data/vendor-1`. A file that
//! leaves out `[[vendors]]` gets that demonstration vendor too.
//!
//! [`VendorConfig::validate`] turns the file's values into the node's
//! settings and is the one place that refuses a bad configuration, with a
//! message saying which key is wrong and why.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use millicent_core::payment::MAX_REQUEST_LEN;
use millicent_core::{Amount, Suite, Variant, VendorName};
use millicent_ledger::Durability;
use millicent_transport::ServerTlsFiles;
use serde::Deserialize;

use crate::VendorError;
use crate::cluster::{ClusterMap, Peer, SeriesRange};
use crate::gateway::{GatewaySettings, GatewaySpec, WebPrices};

/// Environment variable overriding [`VendorConfig::listen`].
pub const ENV_LISTEN: &str = "MILLICENT_VENDOR_LISTEN";
/// Environment variable overriding [`VendorConfig::data_dir`].
pub const ENV_DATA_DIR: &str = "MILLICENT_VENDOR_DATA_DIR";
/// Environment variable overriding [`VendorConfig::metrics_listen`].
pub const ENV_METRICS_LISTEN: &str = "MILLICENT_VENDOR_METRICS_LISTEN";
/// Environment variable overriding [`VendorConfig::licence_token`].
pub const ENV_LICENCE_TOKEN: &str = "MILLICENT_LICENCE_TOKEN";
/// Environment variable overriding [`VendorConfig::health_listen`].
pub const ENV_HEALTH_LISTEN: &str = "MILLICENT_VENDOR_HEALTH_LISTEN";
/// Environment variable overriding `cert` of [`VendorConfig::tls`].
pub const ENV_TLS_CERT: &str = "MILLICENT_VENDOR_TLS_CERT";
/// Environment variable overriding `key` of [`VendorConfig::tls`].
pub const ENV_TLS_KEY: &str = "MILLICENT_VENDOR_TLS_KEY";
/// Environment variable overriding `client_ca` of [`VendorConfig::tls`].
pub const ENV_TLS_CLIENT_CA: &str = "MILLICENT_VENDOR_TLS_CLIENT_CA";

/// Shortest series lifetime accepted: the node checks once a minute whether
/// its change series needs replacing, so a shorter lifetime could lapse
/// between two checks.
pub const MIN_SERIES_LIFETIME_SECS: u64 = 600;

/// The series a node allocates when its configuration names none.
pub const DEFAULT_SERIES_RANGE: [u32; 2] = [1, 1_000_000];

/// Default time between checkpoints with `durability = "relaxed"`.
pub const DEFAULT_CHECKPOINT_INTERVAL_MS: u64 = 200;

/// Longest checkpoint interval accepted: a minute of acknowledged spends
/// is already a great deal to lose in a crash.
pub const MAX_CHECKPOINT_INTERVAL_MS: u64 = 60_000;

/// Everything a vendor node needs to start.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VendorConfig {
    /// Name of this node; recorded as the owner of the series it creates.
    pub node: String,
    /// Address the gRPC service listens on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory of the node's store. Created with mode 0700; the node
    /// refuses to start if it is readable by group or others, because it
    /// holds master secrets.
    pub data_dir: PathBuf,
    /// Address of the Prometheus endpoint. Only the `millicent-vendor`
    /// binary uses it: a library user installs its own metrics recorder.
    pub metrics_listen: SocketAddr,
    /// Bearer token a broker or operator must present to be granted a
    /// licence. Without one, every licence request is refused.
    pub licence_token: Option<String>,
    /// How long a retried identical payment gets the identical reply, in
    /// seconds. After that a retry is answered as a double spend.
    pub retry_window_secs: u64,
    /// Lifetime of every new series (the node's own change series and each
    /// licensed series), in seconds.
    pub series_lifetime_secs: u64,
    /// How many ID#s each licence lets a broker mint: sequence numbers 0 to
    /// `licence_ids - 1` of its series. 0 means the whole series (2^32).
    pub licence_ids: u64,
    /// Most requests one connection may have in flight; further ones are
    /// refused at once with `RESOURCE_EXHAUSTED` rather than queued.
    pub max_requests_per_connection: usize,
    /// Longest a request may take before it is abandoned, in seconds.
    pub request_timeout_secs: u64,
    /// How spends are made durable. Only `strict` guarantees that no scrip
    /// is accepted twice across a crash.
    pub durability: DurabilityMode,
    /// Time between checkpoints with `durability = "relaxed"`, in
    /// milliseconds; ignored in strict mode.
    pub checkpoint_interval_ms: u64,
    /// The series numbers `[first, last]` this node allocates for its own
    /// change series and the licences it grants. Nodes sharing a vendor
    /// must have ranges that do not overlap.
    pub series_range: [u32; 2],
    /// The other nodes of the same vendors, each with the series it owns;
    /// scrip of their series is refused here with a pointer to them.
    pub peers: Vec<PeerSpec>,
    /// The vendors this node takes payments for.
    pub vendors: Vec<VendorSpec>,
    /// An HTTP 402 gateway selling web resources for one of the vendors.
    pub gateway: Option<GatewaySpec>,
    /// TLS on the gRPC address: the node's certificate and key, and the
    /// authority whose client certificates it demands. Without it the
    /// node serves plain text.
    pub tls: Option<ServerTlsFiles>,
    /// A plain-text address serving only the gRPC health service, for
    /// probes that cannot speak TLS.
    pub health_listen: Option<SocketAddr>,
}

/// How a node makes spends durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// A payment is answered only once its spend is on disk; concurrent
    /// payments share one flush. No scrip is ever accepted twice, across
    /// any crash.
    #[default]
    Strict,
    /// Payments are answered before their spends are on disk, and the store
    /// is flushed every `checkpoint_interval_ms`. A crash loses the spends
    /// of up to that interval, so already-spent scrip can then be accepted
    /// a second time. Keys, licences and change-ID reservations are still
    /// flushed before use.
    Relaxed,
}

/// Another node serving the same vendors, as configured in `[[peers]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    /// The peer's node name (its `node` key).
    pub node: String,
    /// The URL its clients use, for example `http://10.0.0.2:7200`; sent to
    /// a client whose payment belongs there.
    pub url: String,
    /// The series numbers `[first, last]` the peer allocates.
    pub series_range: [u32; 2],
}

/// One vendor served by the node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorSpec {
    /// The vendor's name as it appears in scrip.
    pub name: String,
    /// Cipher suite of the vendor's new scrip: `modern` (the default) or
    /// `classic`.
    #[serde(default = "default_suite")]
    pub suite: String,
    /// Suites whose scrip is accepted; must include `suite`. Empty means
    /// `suite` alone. A vendor moving to another suite lists both for as
    /// long as scrip of the older suite is live.
    #[serde(default)]
    pub accept_suites: Vec<String>,
    /// Payment variants accepted: any of `clear`, `secure`, `private`.
    #[serde(default = "default_variants")]
    pub variants: Vec<String>,
    /// The highest price payable in the clear variant; above it an item
    /// must be paid with a stamped variant. Without it, clear pays for any
    /// item (if `variants` lists it).
    #[serde(default)]
    pub clear_max_price: Option<u64>,
    /// What the vendor sells.
    #[serde(default)]
    pub items: Vec<ItemSpec>,
}

/// One item on sale.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemSpec {
    /// The item's name: the request a customer sends to buy it.
    pub name: String,
    /// Its price in the smallest unit; at least 1.
    pub price: u64,
    /// The goods returned when it is paid for.
    #[serde(default)]
    pub content: String,
}

fn default_suite() -> String {
    Suite::DEFAULT.name().to_owned()
}

fn default_variants() -> Vec<String> {
    Variant::ALL.iter().map(|v| v.name().to_owned()).collect()
}

impl Default for VendorConfig {
    fn default() -> VendorConfig {
        let item = |name: &str, price: u64, content: &str| ItemSpec {
            name: name.to_owned(),
            price,
            content: content.to_owned(),
        };
        VendorConfig {
            node: "vendor-1".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7200)),
            data_dir: PathBuf::from("data/vendor-1"),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9200)),
            licence_token: None,
            retry_window_secs: 600,
            series_lifetime_secs: 30 * 24 * 3600,
            licence_ids: 0,
            max_requests_per_connection: 1024,
            request_timeout_secs: 10,
            durability: DurabilityMode::Strict,
            checkpoint_interval_ms: DEFAULT_CHECKPOINT_INTERVAL_MS,
            series_range: DEFAULT_SERIES_RANGE,
            peers: Vec::new(),
            vendors: vec![VendorSpec {
                name: "news.example".to_owned(),
                suite: default_suite(),
                accept_suites: Vec::new(),
                variants: default_variants(),
                clear_max_price: None,
                items: vec![
                    item("headline", 1, "Millicent makes tiny payments cheap."),
                    item("article-1", 10, "The text of article 1"),
                    item("article-2", 25, "The text of article 2"),
                    item("archive", 100, "The whole archive"),
                ],
            }],
            gateway: None,
            tls: None,
            health_listen: None,
        }
    }
}

impl std::fmt::Debug for VendorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The licence token is a credential: show only whether one is set.
        f.debug_struct("VendorConfig")
            .field("node", &self.node)
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("metrics_listen", &self.metrics_listen)
            .field("licence_token", &self.licence_token.as_ref().map(|_| ".."))
            .field("retry_window_secs", &self.retry_window_secs)
            .field("series_lifetime_secs", &self.series_lifetime_secs)
            .field("licence_ids", &self.licence_ids)
            .field(
                "max_requests_per_connection",
                &self.max_requests_per_connection,
            )
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("durability", &self.durability)
            .field("checkpoint_interval_ms", &self.checkpoint_interval_ms)
            .field("series_range", &self.series_range)
            .field("peers", &self.peers)
            .field("vendors", &self.vendors)
            .field("gateway", &self.gateway)
            .field("tls", &self.tls)
            .field("health_listen", &self.health_listen)
            .finish()
    }
}

impl VendorConfig {
    /// Reads the TOML file at `path` (defaults when `None`), then applies the
    /// environment overrides `MILLICENT_VENDOR_LISTEN`,
    /// `MILLICENT_VENDOR_DATA_DIR`, `MILLICENT_VENDOR_METRICS_LISTEN` and
    /// `MILLICENT_LICENCE_TOKEN`.
    pub fn load(path: Option<&Path>) -> anyhow::Result<VendorConfig> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                VendorConfig::from_toml(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => VendorConfig::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Parses a configuration from TOML text, with defaults for missing keys.
    pub fn from_toml(text: &str) -> anyhow::Result<VendorConfig> {
        Ok(toml::from_str(text)?)
    }

    /// Applies overrides from `lookup` (the environment, in
    /// [`VendorConfig::load`]); a variable that is set but empty is ignored.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
        if let Some(value) = get(ENV_LISTEN) {
            self.listen = parse_addr(ENV_LISTEN, &value)?;
        }
        if let Some(value) = get(ENV_DATA_DIR) {
            self.data_dir = PathBuf::from(value);
        }
        if let Some(value) = get(ENV_METRICS_LISTEN) {
            self.metrics_listen = parse_addr(ENV_METRICS_LISTEN, &value)?;
        }
        if let Some(value) = get(ENV_LICENCE_TOKEN) {
            self.licence_token = Some(value);
        }
        if let Some(value) = get(ENV_HEALTH_LISTEN) {
            self.health_listen = Some(parse_addr(ENV_HEALTH_LISTEN, &value)?);
        }
        self.tls = ServerTlsFiles::overridden(
            self.tls.take(),
            get(ENV_TLS_CERT),
            get(ENV_TLS_KEY),
            get(ENV_TLS_CLIENT_CA),
            [ENV_TLS_CERT, ENV_TLS_KEY, ENV_TLS_CLIENT_CA],
        )
        .map_err(anyhow::Error::msg)?;
        Ok(())
    }

    /// Checks the configuration as the node does when it starts, naming
    /// the first key that is wrong; nothing is opened or bound.
    pub fn check(&self) -> Result<(), VendorError> {
        self.validate().map(drop)
    }

    /// Checks every value and turns names into protocol types.
    pub(crate) fn validate(&self) -> Result<Settings, VendorError> {
        VendorName::new(&self.node)
            .map_err(|error| config_error(format!("node name {:?}: {error}", self.node)))?;
        if self.series_lifetime_secs < MIN_SERIES_LIFETIME_SECS {
            return Err(config_error(format!(
                "series_lifetime_secs is {}, it must be at least {MIN_SERIES_LIFETIME_SECS}",
                self.series_lifetime_secs
            )));
        }
        if self.licence_ids > 1 << 32 {
            return Err(config_error(format!(
                "licence_ids is {}, more than the 4294967296 ID#s of a series",
                self.licence_ids
            )));
        }
        if self.max_requests_per_connection == 0 || self.request_timeout_secs == 0 {
            return Err(config_error(
                "max_requests_per_connection and request_timeout_secs must be at least 1",
            ));
        }
        if self.vendors.is_empty() {
            return Err(config_error("no [[vendors]] configured: nothing to sell"));
        }
        let mut names = HashSet::new();
        let mut catalogues = Vec::with_capacity(self.vendors.len());
        for spec in &self.vendors {
            let catalogue = spec.validate()?;
            if !names.insert(catalogue.name.clone()) {
                return Err(config_error(format!(
                    "vendor {} is configured twice",
                    spec.name
                )));
            }
            catalogues.push(catalogue);
        }
        let gateway = match &self.gateway {
            Some(spec) => Some(spec.validate(&mut catalogues)?),
            None => None,
        };
        Ok(Settings {
            gateway,
            catalogues,
            cluster: self.cluster_map()?,
            durability: self.durability_setting()?,
        })
    }

    fn cluster_map(&self) -> Result<ClusterMap, VendorError> {
        let own = series_range("series_range", self.series_range)?;
        let mut names = HashSet::from([self.node.as_str()]);
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
            check_peer_url(peer)?;
            peers.push(Peer {
                node: peer.node.clone(),
                url: peer.url.clone(),
                series: series_range(
                    &format!("series_range of peer {}", peer.node),
                    peer.series_range,
                )?,
            });
        }
        ClusterMap::new(own, peers).map_err(config_error)
    }

    fn durability_setting(&self) -> Result<Durability, VendorError> {
        match self.durability {
            DurabilityMode::Strict => Ok(Durability::Strict),
            DurabilityMode::Relaxed => {
                if !(1..=MAX_CHECKPOINT_INTERVAL_MS).contains(&self.checkpoint_interval_ms) {
                    return Err(config_error(format!(
                        "checkpoint_interval_ms is {}, it must be 1 to {}",
                        self.checkpoint_interval_ms, MAX_CHECKPOINT_INTERVAL_MS
                    )));
                }
                Ok(Durability::Relaxed {
                    interval: Duration::from_millis(self.checkpoint_interval_ms),
                })
            }
        }
    }
}

/// A configuration checked and turned into the node's own types.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) catalogues: Vec<Catalogue>,
    pub(crate) cluster: ClusterMap,
    pub(crate) durability: Durability,
    pub(crate) gateway: Option<GatewaySettings>,
}

/// A vendor's validated configuration: what it sells and how it is paid.
#[derive(Clone, Debug)]
pub(crate) struct Catalogue {
    pub(crate) name: VendorName,
    /// The suite of new series and change.
    pub(crate) suite: Suite,
    /// The suites whose scrip is accepted, `suite` first.
    pub(crate) accepted_suites: Vec<Suite>,
    pub(crate) variants: Vec<Variant>,
    /// The highest price the clear variant pays for, if limited.
    pub(crate) clear_max_price: Option<Amount>,
    pub(crate) items: Vec<Item>,
    /// The prices of web requests, when the node's HTTP gateway sells for
    /// this vendor.
    pub(crate) web: Option<WebPrices>,
}

impl Catalogue {
    /// The variants that may pay for `item`: the vendor's, less clear when
    /// the item costs more than the clear limit.
    pub(crate) fn variants_for(&self, item: &Item) -> impl Iterator<Item = Variant> {
        let clear_allowed = self.clear_limit_under(item).is_none();
        self.variants
            .iter()
            .copied()
            .filter(move |variant| *variant != Variant::Clear || clear_allowed)
    }

    /// The clear-variant limit, if `item` costs more than it.
    pub(crate) fn clear_limit_under(&self, item: &Item) -> Option<Amount> {
        self.clear_max_price.filter(|limit| item.price > *limit)
    }
}

/// An item with its price and goods.
#[derive(Clone, Debug)]
pub(crate) struct Item {
    pub(crate) name: String,
    pub(crate) price: Amount,
    pub(crate) goods: Vec<u8>,
}

impl VendorSpec {
    fn validate(&self) -> Result<Catalogue, VendorError> {
        let name = VendorName::new(&self.name)
            .map_err(|error| config_error(format!("vendor name {:?}: {error}", self.name)))?;
        let parse_suite = |suite: &str| {
            Suite::from_name(suite).ok_or_else(|| {
                let known: Vec<&str> = Suite::ALL.iter().map(|suite| suite.name()).collect();
                config_error(format!(
                    "vendor {name}: unknown suite {suite:?}; known suites: {}",
                    known.join(", ")
                ))
            })
        };
        let suite = parse_suite(&self.suite)?;
        let mut accepted_suites = vec![suite];
        for listed in &self.accept_suites {
            let listed = parse_suite(listed)?;
            if !accepted_suites.contains(&listed) {
                accepted_suites.push(listed);
            }
        }
        if !self.accept_suites.is_empty() && !self.accept_suites.contains(&self.suite) {
            return Err(config_error(format!(
                "vendor {name}: accept_suites must include the vendor's suite {:?}",
                self.suite
            )));
        }

        let mut variants = Vec::new();
        for variant in &self.variants {
            let parsed = Variant::from_name(variant).ok_or_else(|| {
                config_error(format!(
                    "vendor {name}: unknown variant {variant:?}; use clear, secure or private"
                ))
            })?;
            if !variants.contains(&parsed) {
                variants.push(parsed);
            }
        }
        if variants.is_empty() {
            return Err(config_error(format!(
                "vendor {name}: no payment variant accepted"
            )));
        }

        let mut seen = HashSet::new();
        let mut items = Vec::with_capacity(self.items.len());
        for item in &self.items {
            if item.name.is_empty() || item.name.len() > MAX_REQUEST_LEN / 2 {
                return Err(config_error(format!(
                    "vendor {name}: item names must be 1 to {} bytes",
                    MAX_REQUEST_LEN / 2
                )));
            }
            if item.price == 0 {
                return Err(config_error(format!(
                    "vendor {name}: item {:?} has price 0; prices start at 1",
                    item.name
                )));
            }
            if !seen.insert(item.name.as_str()) {
                return Err(config_error(format!(
                    "vendor {name}: item {:?} is listed twice",
                    item.name
                )));
            }
            items.push(Item {
                name: item.name.clone(),
                price: Amount::new(item.price),
                goods: item.content.as_bytes().to_vec(),
            });
        }

        if let Some(limit) = self.clear_max_price {
            if !variants.contains(&Variant::Clear) {
                return Err(config_error(format!(
                    "vendor {name}: clear_max_price is set but variants does not list clear"
                )));
            }
            if limit == 0 {
                return Err(config_error(format!(
                    "vendor {name}: clear_max_price is 0, which no price meets; to refuse the \
                     clear variant, leave it out of variants"
                )));
            }
        }
        let catalogue = Catalogue {
            name,
            suite,
            accepted_suites,
            variants,
            clear_max_price: self.clear_max_price.map(Amount::new),
            items,
            web: None,
        };
        if let Some(item) = catalogue
            .items
            .iter()
            .find(|item| catalogue.variants_for(item).next().is_none())
        {
            return Err(config_error(format!(
                "vendor {}: item {:?} costs {}, above clear_max_price, and clear is the only \
                 variant accepted, so it cannot be paid for; add secure or private to variants",
                catalogue.name,
                item.name,
                item.price.units()
            )));
        }
        Ok(catalogue)
    }
}

/// A series range from its configured `[first, last]`.
fn series_range(key: &str, [first, last]: [u32; 2]) -> Result<SeriesRange, VendorError> {
    SeriesRange::new(first, last).ok_or_else(|| {
        config_error(format!(
            "{key} is [{first}, {last}]; it must be [first, last] with 1 <= first <= last <= {}",
            u32::MAX - 1
        ))
    })
}

/// Checks that a peer's URL is an absolute http or https URL that can be
/// sent to clients in a metadata entry (visible ASCII).
fn check_peer_url(peer: &PeerSpec) -> Result<(), VendorError> {
    let bad = |why: &str| {
        config_error(format!(
            "[[peers]] node {}: url {:?} {why}; write it like http://10.0.0.2:7200",
            peer.node, peer.url
        ))
    };
    let uri: tonic::transport::Uri = peer.url.parse().map_err(|_| bad("is not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(bad("is not an http:// or https:// URL with a host"));
    }
    if !peer.url.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(bad("has characters other than visible ASCII"));
    }
    Ok(())
}

fn parse_addr(variable: &str, value: &str) -> anyhow::Result<SocketAddr> {
    value
        .parse()
        .with_context(|| format!("{variable}={value:?} is not an address like 127.0.0.1:7200"))
}

fn config_error(detail: impl Into<String>) -> VendorError {
    VendorError::Config {
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_a_working_demo_node() {
        let config = VendorConfig::default();
        let settings = config.validate().unwrap();
        assert_eq!(settings.durability, Durability::Strict);
        assert_eq!(
            settings.cluster.own(),
            SeriesRange::new(1, 1_000_000).unwrap()
        );
        let catalogues = settings.catalogues;
        assert_eq!(catalogues.len(), 1);
        assert_eq!(catalogues[0].name.as_str(), "news.example");
        assert_eq!(catalogues[0].variants, Variant::ALL.to_vec());
        assert!(
            catalogues[0]
                .items
                .iter()
                .all(|item| (1..=100).contains(&item.price.units()))
        );
    }

    #[test]
    fn a_file_overrides_defaults_and_env_overrides_the_file() {
        let mut config = VendorConfig::from_toml(
            r#"
            node = "vendor-7"
            listen = "127.0.0.1:7300"
            [[vendors]]
            name = "shop.example"
            variants = ["secure"]
            [[vendors.items]]
            name = "pencil"
            price = 3
            content = "a pencil"
            "#,
        )
        .unwrap();
        assert_eq!(config.node, "vendor-7");
        assert_eq!(config.retry_window_secs, 600);
        assert_eq!(config.vendors[0].suite, "modern");
        let catalogue = &config.validate().unwrap().catalogues[0];
        assert_eq!(catalogue.variants, vec![Variant::Secure]);
        assert_eq!(catalogue.accepted_suites, vec![Suite::Modern]);

        config
            .apply_env(|name| match name {
                ENV_LISTEN => Some("127.0.0.1:7400".to_owned()),
                ENV_DATA_DIR => Some("/tmp/elsewhere".to_owned()),
                ENV_LICENCE_TOKEN => Some("a-token-long-enough".to_owned()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.listen.port(), 7400);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/elsewhere"));
        assert_eq!(config.metrics_listen.port(), 9200);
        assert!(!format!("{config:?}").contains("a-token-long-enough"));

        let bad = config.apply_env(|name| (name == ENV_LISTEN).then(|| "nowhere".to_owned()));
        assert!(bad.unwrap_err().to_string().contains(ENV_LISTEN));
    }

    #[test]
    fn mistakes_are_refused_with_a_clear_message() {
        assert!(VendorConfig::from_toml("lisen = \"127.0.0.1:1\"").is_err());

        let refused = |edit: &dyn Fn(&mut VendorConfig)| {
            let mut config = VendorConfig::default();
            edit(&mut config);
            config.validate().unwrap_err().to_string()
        };
        assert!(refused(&|c| c.vendors[0].suite = "sha1".into()).contains("unknown suite"));
        assert!(
            refused(&|c| c.vendors[0].accept_suites = vec!["classic".into(), "rot13".into()])
                .contains("unknown suite \"rot13\"")
        );
        assert!(
            refused(&|c| c.vendors[0].accept_suites = vec!["classic".into()])
                .contains("accept_suites must include")
        );
        assert!(refused(&|c| c.vendors[0].variants = vec![]).contains("no payment variant"));
        assert!(refused(&|c| c.vendors[0].items[0].price = 0).contains("price 0"));
        assert!(refused(&|c| c.vendors[0].name = "News".into()).contains("vendor name"));
        assert!(refused(&|c| c.vendors.push(c.vendors[0].clone())).contains("twice"));
        assert!(refused(&|c| c.series_lifetime_secs = 5).contains("series_lifetime_secs"));
    }

    #[test]
    fn the_example_file_is_valid() {
        let config = VendorConfig::from_toml(include_str!("../../deploy/vendor.toml")).unwrap();
        let settings = config.validate().unwrap();
        assert_eq!(settings.durability, Durability::Strict);
        assert_eq!(
            settings.catalogues[0].clear_max_price,
            Some(Amount::new(10))
        );
    }

    #[test]
    fn the_example_gateway_file_is_valid() {
        let text = include_str!("../../deploy/vendor-gateway.toml");
        let settings = VendorConfig::from_toml(text).unwrap().validate().unwrap();
        let gateway = settings.gateway.unwrap();
        assert_eq!(gateway.listen.port(), 8402);
        let web = settings.catalogues[0].web.as_ref().unwrap();
        let item = web.item_for(b"GET 127.0.0.1:8402/articles/1.html").unwrap();
        assert_eq!(item.price, Amount::new(10));
    }

    #[test]
    fn peers_and_series_ranges_are_checked() {
        let config = VendorConfig::from_toml(
            r#"
            node = "vendor-1"
            series_range = [1, 1000]
            [[peers]]
            node = "vendor-2"
            url = "http://10.0.0.2:7200"
            series_range = [1001, 2000]
            "#,
        )
        .unwrap();
        let cluster = config.validate().unwrap().cluster;
        assert_eq!(cluster.own(), SeriesRange::new(1, 1000).unwrap());
        let owner = cluster.owner_of(1500).unwrap();
        assert_eq!(
            (owner.node.as_str(), owner.url.as_str()),
            ("vendor-2", "http://10.0.0.2:7200")
        );

        let refused = |edit: &dyn Fn(&mut VendorConfig)| {
            let mut config = config.clone();
            edit(&mut config);
            config.validate().unwrap_err().to_string()
        };
        assert!(refused(&|c| c.peers[0].series_range = [900, 1100]).contains("overlaps"));
        assert!(refused(&|c| c.series_range = [0, 10]).contains("series_range is [0, 10]"));
        assert!(refused(&|c| c.series_range = [10, 9]).contains("first <= last"));
        assert!(refused(&|c| c.peers[0].series_range = [5, 1]).contains("peer vendor-2"));
        assert!(refused(&|c| c.peers[0].node = "vendor-1".into()).contains("this node"));
        assert!(refused(&|c| c.peers[0].node = "Vendor 2".into()).contains("node name"));
        assert!(refused(&|c| c.peers[0].url = "10.0.0.2:7200".into()).contains("http://"));
        assert!(refused(&|c| c.peers[0].url = "http://a b".into()).contains("url"));
        assert!(refused(&|c| c.peers.push(c.peers[0].clone())).contains("listed twice"));
        assert!(VendorConfig::from_toml("series_range = [1, -1]").is_err());
    }

    #[test]
    fn durability_is_strict_unless_relaxed_is_asked_for() {
        let config = VendorConfig::from_toml("durability = \"relaxed\"").unwrap();
        assert_eq!(
            config.validate().unwrap().durability,
            Durability::Relaxed {
                interval: Duration::from_millis(200)
            }
        );
        let config =
            VendorConfig::from_toml("durability = \"relaxed\"\ncheckpoint_interval_ms = 50")
                .unwrap();
        assert_eq!(
            config.validate().unwrap().durability,
            Durability::Relaxed {
                interval: Duration::from_millis(50)
            }
        );
        let config = VendorConfig::from_toml("checkpoint_interval_ms = 50").unwrap();
        assert_eq!(config.validate().unwrap().durability, Durability::Strict);

        let config =
            VendorConfig::from_toml("durability = \"relaxed\"\ncheckpoint_interval_ms = 0")
                .unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("checkpoint_interval_ms")
        );
        assert!(VendorConfig::from_toml("durability = \"fast\"").is_err());
    }

    #[test]
    fn the_clear_limit_takes_clear_away_from_dearer_items() {
        let mut config = VendorConfig::default();
        config.vendors[0].clear_max_price = Some(10);
        let catalogue = config.validate().unwrap().catalogues.remove(0);
        let variants = |name: &str| {
            let item = catalogue
                .items
                .iter()
                .find(|item| item.name == name)
                .unwrap();
            catalogue.variants_for(item).collect::<Vec<_>>()
        };
        assert_eq!(variants("article-1"), Variant::ALL.to_vec());
        assert_eq!(
            variants("article-2"),
            vec![Variant::Secure, Variant::Private]
        );

        let refused = |edit: &dyn Fn(&mut VendorSpec)| {
            let mut config = config.clone();
            edit(&mut config.vendors[0]);
            config.validate().unwrap_err().to_string()
        };
        assert!(refused(&|v| v.clear_max_price = Some(0)).contains("clear_max_price is 0"));
        assert!(refused(&|v| v.variants = vec!["secure".into()]).contains("does not list clear"));
        assert!(refused(&|v| v.variants = vec!["clear".into()]).contains("cannot be paid for"));
    }
}
