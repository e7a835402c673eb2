//! Configuration of a vendor node: a TOML file, then environment overrides.
//!
//! Every key has a default, so a node starts with no file at all and serves
//! the demonstration vendor `news.example` from `data/vendor-1`. A file that
//! leaves out `[[vendors]]` gets that demonstration vendor too.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use millicent_core::payment::MAX_REQUEST_LEN;
use millicent_core::{Amount, Suite, Variant, VendorName};
use serde::Deserialize;

use crate::VendorError;

/// Environment variable overriding [`VendorConfig::listen`].
pub const ENV_LISTEN: &str = "MILLICENT_VENDOR_LISTEN";
/// Environment variable overriding [`VendorConfig::data_dir`].
pub const ENV_DATA_DIR: &str = "MILLICENT_VENDOR_DATA_DIR";
/// Environment variable overriding [`VendorConfig::metrics_listen`].
pub const ENV_METRICS_LISTEN: &str = "MILLICENT_VENDOR_METRICS_LISTEN";
/// Environment variable overriding [`VendorConfig::licence_token`].
pub const ENV_LICENCE_TOKEN: &str = "MILLICENT_LICENCE_TOKEN";

/// Shortest series lifetime accepted: the node checks once a minute whether
/// its change series needs replacing, so a shorter lifetime could lapse
/// between two checks.
pub const MIN_SERIES_LIFETIME_SECS: u64 = 600;

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
    /// Most requests one connection may have in flight; further ones are
    /// refused at once with `RESOURCE_EXHAUSTED` rather than queued.
    pub max_requests_per_connection: usize,
    /// Longest a request may take before it is abandoned, in seconds.
    pub request_timeout_secs: u64,
    /// The vendors this node takes payments for.
    pub vendors: Vec<VendorSpec>,
}

/// One vendor served by the node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorSpec {
    /// The vendor's name as it appears in scrip.
    pub name: String,
    /// Cipher suite of the vendor's scrip: `classic`.
    #[serde(default = "default_suite")]
    pub suite: String,
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
    Suite::Classic.name().to_owned()
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
            max_requests_per_connection: 1024,
            request_timeout_secs: 10,
            vendors: vec![VendorSpec {
                name: "news.example".to_owned(),
                suite: default_suite(),
                variants: default_variants(),
                clear_max_price: None,
                items: vec![
                    item("headline", 1, "Millicent makes tiny payments cheap."),
                    item("article-1", 10, "The text of article 1"),
                    item("article-2", 25, "The text of article 2"),
                    item("archive", 100, "The whole archive"),
                ],
            }],
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
            .field(
                "max_requests_per_connection",
                &self.max_requests_per_connection,
            )
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("vendors", &self.vendors)
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
        Ok(())
    }

    /// Checks every value and turns names into protocol types.
    pub(crate) fn validate(&self) -> Result<Vec<Catalogue>, VendorError> {
        VendorName::new(&self.node)
            .map_err(|error| config_error(format!("node name {:?}: {error}", self.node)))?;
        if self.series_lifetime_secs < MIN_SERIES_LIFETIME_SECS {
            return Err(config_error(format!(
                "series_lifetime_secs is {}, it must be at least {MIN_SERIES_LIFETIME_SECS}",
                self.series_lifetime_secs
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
        Ok(catalogues)
    }
}

/// A vendor's validated configuration: what it sells and how it is paid.
#[derive(Clone, Debug)]
pub(crate) struct Catalogue {
    pub(crate) name: VendorName,
    pub(crate) suite: Suite,
    pub(crate) variants: Vec<Variant>,
    /// The highest price the clear variant pays for, if limited.
    pub(crate) clear_max_price: Option<Amount>,
    pub(crate) items: Vec<Item>,
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
        let suite = Suite::from_name(&self.suite).ok_or_else(|| {
            let known: Vec<&str> = Suite::ALL.iter().map(|suite| suite.name()).collect();
            config_error(format!(
                "vendor {name}: unknown suite {:?}; known suites: {}",
                self.suite,
                known.join(", ")
            ))
        })?;

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
            variants,
            clear_max_price: self.clear_max_price.map(Amount::new),
            items,
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
        let catalogues = config.validate().unwrap();
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
        assert_eq!(config.vendors[0].suite, "classic");
        let catalogue = &config.validate().unwrap()[0];
        assert_eq!(catalogue.variants, vec![Variant::Secure]);

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
        assert!(refused(&|c| c.vendors[0].suite = "modern".into()).contains("unknown suite"));
        assert!(refused(&|c| c.vendors[0].variants = vec![]).contains("no payment variant"));
        assert!(refused(&|c| c.vendors[0].items[0].price = 0).contains("price 0"));
        assert!(refused(&|c| c.vendors[0].name = "News".into()).contains("vendor name"));
        assert!(refused(&|c| c.vendors.push(c.vendors[0].clone())).contains("twice"));
        assert!(refused(&|c| c.series_lifetime_secs = 5).contains("series_lifetime_secs"));
    }

    #[test]
    fn the_clear_limit_takes_clear_away_from_dearer_items() {
        let mut config = VendorConfig::default();
        config.vendors[0].clear_max_price = Some(10);
        let catalogue = config.validate().unwrap().remove(0);
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
