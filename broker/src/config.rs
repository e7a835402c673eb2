//! The broker's configuration: a TOML file, then environment overrides,
//! then validation into the settings the service runs with.
//!
//! Every key has a default that starts a working local broker, so an empty
//! file (or none) is a valid configuration. Tokens are credentials: they are
//! never printed, not even by `Debug`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use millicent_core::{Amount, Suite, VendorName};
use serde::Deserialize;

use crate::BrokerError;

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

/// The broker's configuration, as read from TOML.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// The broker's name: the vendor field of its broker scrip. 1 to 64
    /// characters of `a-z 0-9 . - _ :`.
    pub name: String,
    /// Address of the gRPC listener; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory of the broker's store; created with mode 0700. The broker
    /// refuses to start if group or others may access it.
    pub data_dir: PathBuf,
    /// Address of the Prometheus endpoint (served by the binary only).
    pub metrics_listen: SocketAddr,
    /// Bearer token of the `Credit` operator call. Without one, every
    /// credit is refused.
    pub operator_token: Option<String>,
    /// Cipher suite of the broker's scrip, by name (`classic`).
    pub suite: String,
    /// Fee added to the vendor scrip's value in every exchange, in the
    /// smallest unit.
    pub exchange_fee: u64,
    /// Lifetime of broker scrip bought from an account, in seconds.
    pub broker_scrip_lifetime_secs: u64,
    /// How far an account call's timestamp may be from the broker's clock,
    /// in seconds; also how long call replies are kept for retries.
    pub clock_window_secs: u64,
    /// How long the reply to an exchange is kept, in seconds, so that a
    /// retried exchange gets the same reply instead of a double-spend error.
    pub retry_window_secs: u64,
    /// Vendors whose scrip this broker mints under licence.
    pub vendors: Vec<VendorConfig>,
}

/// A vendor whose scrip the broker sells, and where to get its licence.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorConfig {
    /// The vendor's name, as in its scrip.
    pub name: String,
    /// URL of the vendor's node (`http://host:port`), which grants licences.
    pub node: String,
    /// Bearer token of `GrantLicence` on that node.
    #[serde(default)]
    pub licence_token: Option<String>,
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            name: "broker.local".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7100)),
            data_dir: PathBuf::from("data/broker"),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            operator_token: None,
            suite: Suite::Classic.name().to_owned(),
            exchange_fee: 0,
            broker_scrip_lifetime_secs: 7 * 24 * 60 * 60,
            clock_window_secs: 300,
            retry_window_secs: 600,
            vendors: Vec::new(),
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
        ] {
            if value == 0 {
                return Err(config_error(format!("{key} must be at least 1")));
            }
        }
        // Series last twice the scrip lifetime, and that must fit in a u64
        // next to any plausible clock.
        if self.broker_scrip_lifetime_secs > u64::MAX / 4 {
            return Err(config_error(
                "broker_scrip_lifetime_secs is too large".to_owned(),
            ));
        }

        let operator_token = self
            .operator_token
            .clone()
            .filter(|token| !token.is_empty());
        if let Some(token) = &operator_token {
            check_token("operator_token", token)?;
        }

        let mut seen = BTreeSet::new();
        let mut vendors = Vec::with_capacity(self.vendors.len());
        for vendor in &self.vendors {
            vendors.push(vendor.validate(&name, &mut seen)?);
        }

        Ok(Settings {
            name,
            suite,
            operator_token,
            exchange_fee: Amount::new(self.exchange_fee),
            scrip_lifetime_secs: self.broker_scrip_lifetime_secs,
            clock_window_secs: self.clock_window_secs,
            retry_window_secs: self.retry_window_secs,
            vendors,
        })
    }
}

impl VendorConfig {
    fn validate(
        &self,
        broker: &VendorName,
        seen: &mut BTreeSet<VendorName>,
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
        let node = self.node.trim();
        let scheme_ok = node.starts_with("http://") || node.starts_with("https://");
        if !scheme_ok || node.parse::<tonic::transport::Uri>().is_err() {
            return Err(config_error(format!(
                "vendor {name}: node {node:?} is not a URL like http://127.0.0.1:7200"
            )));
        }
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
        Ok(VendorSettings {
            name,
            node: node.to_owned(),
            licence_token,
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
            .field("vendors", &self.vendors)
            .finish()
    }
}

impl std::fmt::Debug for VendorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VendorConfig")
            .field("name", &self.name)
            .field("node", &self.node)
            .field("licence_token", &redacted(&self.licence_token))
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
    pub(crate) vendors: Vec<VendorSettings>,
}

/// A vendor entry that passed validation.
#[derive(Clone)]
pub(crate) struct VendorSettings {
    pub(crate) name: VendorName,
    pub(crate) node: String,
    pub(crate) licence_token: String,
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
        assert_eq!(settings.suite, Suite::Classic);
        assert!(settings.operator_token.is_none());
    }

    #[test]
    fn a_full_file_parses() {
        let config = BrokerConfig::from_toml(
            r#"
            name = "bank.example"
            listen = "127.0.0.1:7101"
            data_dir = "/tmp/b"
            metrics_listen = "127.0.0.1:9101"
            operator_token = "op"
            suite = "classic"
            exchange_fee = 3
            broker_scrip_lifetime_secs = 60
            clock_window_secs = 10
            retry_window_secs = 20
            [[vendors]]
            name = "news.example"
            node = "http://127.0.0.1:7200"
            licence_token = "lic"
            "#,
        )
        .unwrap();
        let settings = config.validate().unwrap();
        assert_eq!(settings.name.as_str(), "bank.example");
        assert_eq!(settings.exchange_fee, Amount::new(3));
        assert_eq!(settings.vendors.len(), 1);
        assert_eq!(settings.vendors[0].licence_token, "lic");
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
        let vendor = |name: &str, node: &str, token: Option<&str>| VendorConfig {
            name: name.into(),
            node: node.into(),
            licence_token: token.map(str::to_owned),
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
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut config = BrokerConfig {
            vendors: vec![VendorConfig {
                name: "news".into(),
                node: "http://127.0.0.1:1".into(),
                licence_token: None,
            }],
            ..BrokerConfig::default()
        };
        let env: HashMap<&str, &str> = HashMap::from([
            (ENV_LISTEN, "127.0.0.1:1234"),
            (ENV_DATA_DIR, "/var/lib/broker"),
            (ENV_METRICS_LISTEN, "127.0.0.1:4321"),
            (ENV_OPERATOR_TOKEN, "op"),
            (ENV_LICENCE_TOKEN, "lic"),
        ]);
        config
            .apply_env(|name| env.get(name).map(|value| value.to_string()))
            .unwrap();
        assert_eq!(config.listen.port(), 1234);
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/broker"));
        assert_eq!(config.metrics_listen.port(), 4321);
        assert_eq!(config.operator_token.as_deref(), Some("op"));
        assert_eq!(config.vendors[0].licence_token.as_deref(), Some("lic"));

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
            }],
            ..BrokerConfig::default()
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret") && !printed.contains("l1cence"));
    }
}
