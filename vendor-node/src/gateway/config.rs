//! The `[gateway]` table of a vendor node's configuration, and the prices
//! of web requests it gives the gateway's vendor.
//!
//! The gateway's routes become part of its vendor's catalogue as
//! [`WebPrices`], so that a payment for a web request is priced on the
//! node's one payment path like any item: `Vendor::item` asks
//! [`WebPrices::item_for`] when the request has the form of a web request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use millicent_core::web::{normalize_host, parse_web_request};
use millicent_core::{Amount, VendorName};
use serde::Deserialize;

use crate::VendorError;
use crate::config::{Catalogue, Item};

/// Smallest `max_header_bytes` accepted: hyper reads no less at once.
pub const MIN_HEADER_BYTES: usize = 8192;

/// The `[gateway]` table: an HTTP 402 gateway in front of an upstream
/// server or a folder of files.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySpec {
    /// Address the HTTP gateway listens on.
    pub listen: SocketAddr,
    /// The vendor whose scrip pays; may be left out when the node serves
    /// one vendor.
    pub vendor: Option<String>,
    /// The HTTP server paid requests are passed to, as `http://host:port`.
    pub upstream: Option<String>,
    /// A folder whose files are served to paid requests, instead of an
    /// upstream.
    pub files: Option<PathBuf>,
    /// The host names (as in the `Host` header) the gateway answers to. A
    /// name without a port matches it on any port. Requests for other hosts
    /// are refused with 421, so a payment made for one site cannot be
    /// relayed to this one.
    pub hosts: Vec<String>,
    /// Brokers that sell the vendor's scrip, named in every offer.
    pub brokers: Vec<OfferBrokerSpec>,
    /// Prices of paths, first match wins.
    pub prices: Vec<PriceSpec>,
    /// Path patterns passed on without payment.
    pub free: Vec<String>,
    /// Largest request head (request line and headers), in bytes; at least
    /// 8192. A larger one is refused with 431.
    pub max_header_bytes: usize,
    /// Largest request body passed to the upstream, in bytes. A larger one
    /// is refused with 413 before any payment is taken.
    pub max_body_bytes: usize,
    /// Longest the upstream may take to answer, in seconds.
    pub upstream_timeout_secs: u64,
}

/// A broker named in offers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferBrokerSpec {
    /// Its name, as in its broker scrip.
    pub name: String,
    /// Its gRPC URL.
    pub url: String,
}

/// The price of the paths matching a pattern.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    /// A path, or a path ending in `*`, which matches any rest.
    pub path: String,
    /// The price of each request; at least 1.
    pub price: u64,
}

impl Default for GatewaySpec {
    fn default() -> GatewaySpec {
        GatewaySpec {
            listen: SocketAddr::from(([127, 0, 0, 1], 8402)),
            vendor: None,
            upstream: None,
            files: None,
            hosts: Vec::new(),
            brokers: Vec::new(),
            prices: Vec::new(),
            free: Vec::new(),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            upstream_timeout_secs: 30,
        }
    }
}

/// Where paid requests go.
#[derive(Clone, Debug)]
pub(crate) enum Origin {
    /// An HTTP server, by its authority (`host:port`).
    Upstream(hyper::Uri),
    /// A folder of files.
    Files(PathBuf),
}

/// The gateway's checked settings.
#[derive(Clone, Debug)]
pub(crate) struct GatewaySettings {
    pub(crate) listen: SocketAddr,
    pub(crate) vendor: VendorName,
    pub(crate) origin: Origin,
    pub(crate) brokers: Vec<(VendorName, String)>,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_body_bytes: usize,
    pub(crate) upstream_timeout: Duration,
}

/// A path pattern: a path, or a prefix when it ends in `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PathPattern(String);

impl PathPattern {
    fn parse(pattern: &str) -> Result<PathPattern, String> {
        let ok = pattern.starts_with('/')
            && pattern.bytes().all(|b| b.is_ascii_graphic())
            && !pattern.trim_end_matches('*').contains('*');
        if !ok {
            return Err(format!(
                "path pattern {pattern:?} must start with / and may hold one * only at its end"
            ));
        }
        Ok(PathPattern(pattern.to_owned()))
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == self.0,
        }
    }
}

/// How a vendor prices web requests: the hosts it answers to, the priced
/// routes and the free ones.
#[derive(Clone, Debug)]
pub(crate) struct WebPrices {
    hosts: Vec<String>,
    routes: Vec<(PathPattern, Item)>,
    free: Vec<PathPattern>,
}

/// What the gateway does with a path.
#[derive(Debug)]
pub(crate) enum Route<'a> {
    /// Passed on without payment.
    Free,
    /// Paid for at the item's price.
    Priced(&'a Item),
    /// Neither priced nor free: refused.
    Unknown,
}

impl WebPrices {
    /// Whether requests for `host` (normalized) are served.
    pub(crate) fn serves_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|served| {
            served == host
                || (!served.contains(':')
                    && host
                        .strip_prefix(served.as_str())
                        .is_some_and(|port| port.starts_with(':')))
        })
    }

    /// What `path` costs; priced routes are looked at before free ones.
    pub(crate) fn route(&self, path: &str) -> Route<'_> {
        if let Some((_, item)) = self.routes.iter().find(|(p, _)| p.matches(path)) {
            return Route::Priced(item);
        }
        if self.free.iter().any(|p| p.matches(path)) {
            return Route::Free;
        }
        Route::Unknown
    }

    /// The item a payment's plaintext request buys, if it is a web request
    /// for a host served and a priced path.
    pub(crate) fn item_for(&self, request: &[u8]) -> Option<&Item> {
        let web = parse_web_request(request)?;
        if !self.serves_host(web.host) {
            return None;
        }
        match self.route(web.path) {
            Route::Priced(item) => Some(item),
            Route::Free | Route::Unknown => None,
        }
    }
}

impl GatewaySpec {
    /// Checks the table and gives the gateway's vendor in `catalogues` its
    /// web prices.
    pub(crate) fn validate(
        &self,
        catalogues: &mut [Catalogue],
    ) -> Result<GatewaySettings, VendorError> {
        let vendor = match &self.vendor {
            Some(name) => VendorName::new(name)
                .map_err(|error| config_error(format!("vendor {name:?}: {error}")))?,
            None if catalogues.len() == 1 => catalogues[0].name.clone(),
            None => {
                return Err(config_error(
                    "the node serves several vendors: name the one whose scrip pays in vendor",
                ));
            }
        };
        let catalogue = catalogues
            .iter_mut()
            .find(|catalogue| catalogue.name == vendor)
            .ok_or_else(|| config_error(format!("vendor {vendor} is not in [[vendors]]")))?;

        let origin = match (&self.upstream, &self.files) {
            (Some(url), None) => Origin::Upstream(upstream_uri(url)?),
            (None, Some(folder)) => Origin::Files(folder.clone()),
            _ => {
                return Err(config_error(
                    "give exactly one of upstream (an http:// URL) and files (a folder)",
                ));
            }
        };
        if self.hosts.is_empty() {
            return Err(config_error(
                "hosts is empty: list the host names the gateway answers to, for example \
                 [\"127.0.0.1\", \"localhost\"]",
            ));
        }
        let hosts = self
            .hosts
            .iter()
            .map(|host| {
                normalize_host(host)
                    .ok_or_else(|| config_error(format!("hosts: {host:?} is not a host name")))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut routes = Vec::with_capacity(self.prices.len());
        for spec in &self.prices {
            let pattern = PathPattern::parse(&spec.path).map_err(config_error)?;
            if spec.price == 0 {
                return Err(config_error(format!(
                    "prices: {:?} has price 0; list free paths in free instead",
                    spec.path
                )));
            }
            let item = Item {
                name: spec.path.clone(),
                price: Amount::new(spec.price),
                goods: Vec::new(),
            };
            if catalogue
                .variants_for(&item)
                .all(|v| v == millicent_core::Variant::Private)
            {
                return Err(config_error(format!(
                    "prices: {:?} can be paid only in the private variant, which HTTP clients \
                     cannot use; accept secure (or clear up to clear_max_price)",
                    spec.path
                )));
            }
            routes.push((pattern, item));
        }
        let free = self
            .free
            .iter()
            .map(|pattern| PathPattern::parse(pattern).map_err(config_error))
            .collect::<Result<Vec<_>, _>>()?;

        let mut brokers = Vec::with_capacity(self.brokers.len());
        for broker in &self.brokers {
            let name = VendorName::new(&broker.name).map_err(|error| {
                config_error(format!("brokers: name {:?}: {error}", broker.name))
            })?;
            let uri: hyper::Uri = broker
                .url
                .parse()
                .map_err(|_| config_error(format!("brokers: {:?} is not a URL", broker.url)))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
                return Err(config_error(format!(
                    "brokers: url {:?} must be an http:// or https:// URL with a host",
                    broker.url
                )));
            }
            brokers.push((name, broker.url.clone()));
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(config_error(format!(
                "max_header_bytes is {}, it must be at least {MIN_HEADER_BYTES}",
                self.max_header_bytes
            )));
        }
        if self.upstream_timeout_secs == 0 {
            return Err(config_error("upstream_timeout_secs must be at least 1"));
        }

        catalogue.web = Some(WebPrices {
            hosts,
            routes,
            free,
        });
        Ok(GatewaySettings {
            listen: self.listen,
            vendor,
            origin,
            brokers,
            max_header_bytes: self.max_header_bytes,
            max_body_bytes: self.max_body_bytes,
            upstream_timeout: Duration::from_secs(self.upstream_timeout_secs),
        })
    }
}

fn upstream_uri(url: &str) -> Result<hyper::Uri, VendorError> {
    let bad = || {
        config_error(format!(
            "upstream {url:?} must be an http:// URL with a host and no path, like \
             http://127.0.0.1:8080"
        ))
    };
    let uri: hyper::Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http")
        || uri.authority().is_none()
        || !matches!(uri.path(), "" | "/")
    {
        return Err(bad());
    }
    Ok(uri)
}

fn config_error(detail: impl Into<String>) -> VendorError {
    VendorError::Config {
        detail: format!("[gateway] {}", detail.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VendorConfig;

    fn config(gateway: &str) -> Result<crate::config::Settings, VendorError> {
        let text = format!("[gateway]\n{gateway}");
        VendorConfig::from_toml(&text).unwrap().validate()
    }

    const GOOD: &str = r#"
        upstream = "http://127.0.0.1:8080"
        hosts = ["news.example", "127.0.0.1", "Shop.Example:8402"]
        free = ["/", "/static/*"]
        prices = [{ path = "/articles/*", price = 10 }, { path = "/archive", price = 100 }]
    "#;

    #[test]
    fn routes_price_web_requests_of_the_hosts_served() {
        let settings = config(GOOD).unwrap();
        let web = settings.catalogues[0].web.as_ref().unwrap();
        let price = |request: &str| web.item_for(request.as_bytes()).map(|i| i.price.units());
        assert_eq!(price("GET news.example/articles/1"), Some(10));
        assert_eq!(price("GET 127.0.0.1:8402/articles/1?x=1"), Some(10));
        assert_eq!(price("POST news.example/archive"), Some(100));
        assert_eq!(price("GET news.example/archive/2"), None);
        assert_eq!(price("GET news.example/static/a.css"), None);
        assert_eq!(price("GET evil.example/articles/1"), None);
        assert_eq!(price("GET news.example:8080/articles/1"), Some(10));
        assert_eq!(price("GET shop.example:8402/articles/1"), Some(10));
        assert_eq!(price("GET shop.example:9000/articles/1"), None);
        assert_eq!(price("GET shop.example/articles/1"), None);
        assert_eq!(price("articles"), None);
        assert!(matches!(web.route("/"), Route::Free));
        assert!(matches!(web.route("/other"), Route::Unknown));
    }

    #[test]
    fn mistakes_name_the_key() {
        let refused = |text: &str| config(text).unwrap_err().to_string();
        assert!(refused("hosts = [\"a\"]").contains("exactly one of upstream"));
        assert!(refused("upstream = \"http://a:1/x\"\nhosts = [\"a\"]").contains("no path"));
        assert!(refused("upstream = \"https://a:1\"\nhosts = [\"a\"]").contains("http://"));
        assert!(refused("upstream = \"http://a:1\"").contains("hosts is empty"));
        assert!(
            refused(
                "upstream = \"http://a:1\"\nhosts = [\"a\"]\nprices = [{path = \"x\", price = 1}]"
            )
            .contains("must start with /")
        );
        assert!(
            refused(
                "upstream = \"http://a:1\"\nhosts = [\"a\"]\nprices = [{path = \"/x\", price = 0}]"
            )
            .contains("price 0")
        );
        assert!(
            refused("upstream = \"http://a:1\"\nhosts = [\"a\"]\nvendor = \"other.example\"")
                .contains("not in [[vendors]]")
        );
        assert!(
            refused("upstream = \"http://a:1\"\nhosts = [\"a\"]\nmax_header_bytes = 100")
                .contains("max_header_bytes")
        );
    }
}
