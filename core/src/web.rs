//! Paying for HTTP resources: the request a web payment stamps, the header
//! values that carry scrip, stamps and change, and the offer a vendor sends
//! with `402 Payment Required`.
//!
//! A web payment is an ordinary payment (see [`crate::payment`]) whose
//! request is the *web request* `METHOD SP host path-and-query`, built by
//! [`web_request`] from the HTTP request alone. The vendor's gateway builds
//! it from the request it received and the customer from the URL it asked
//! for, so the request stamp binds the payment to one method, host and
//! resource: a payment made for one page cannot buy another, and a payment
//! made for one host is refused by a gateway that serves other hosts.
//!
//! Byte strings travel in headers as unpadded base64url (RFC 4648,
//! section 5) of their canonical bytes: scrip as `body ‖ certificate`,
//! stamps as the raw MAC. Everything here is pure; the gateway and the
//! wallet do the HTTP.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::payment::MAX_REQUEST_LEN;
use crate::scrip::MAX_BODY_LEN;
use crate::{Amount, Error, Mac, Scrip, Suite, Variant, VendorName};

/// Header carrying the scrip paid with: base64url of `body ‖ certificate`.
pub const SCRIP_HEADER: &str = "millicent-scrip";
/// Header naming the payment variant: `clear` or `secure`.
pub const VARIANT_HEADER: &str = "millicent-variant";
/// Header carrying the request stamp (secure variant): base64url of the MAC.
pub const REQUEST_STAMP_HEADER: &str = "millicent-request-stamp";
/// Reply header carrying the change scrip: base64url of `body ‖ certificate`.
pub const CHANGE_HEADER: &str = "millicent-change";
/// Reply header carrying the reply stamp (secure variant).
pub const REPLY_STAMP_HEADER: &str = "millicent-reply-stamp";
/// Reply header carrying the price charged, in decimal.
pub const PRICE_HEADER: &str = "millicent-price";
/// Header of a refusal naming its machine-readable reason.
pub const REASON_HEADER: &str = "millicent-reason";

/// Headers that concern one connection only (RFC 9110, section 7.6.1),
/// which a gateway or proxy never passes on, in lower case.
pub const HOP_BY_HOP_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The media type of a 402 offer.
pub const OFFER_MEDIA_TYPE: &str = "application/json";
/// The value of the offer's `millicent` field: the version of this format.
pub const OFFER_VERSION: u32 = 1;
/// Longest offer accepted, in bytes.
pub const MAX_OFFER_LEN: usize = 16 * 1024;
/// Most brokers, variants or suites an offer may list.
pub const MAX_OFFER_ENTRIES: usize = 32;
/// Longest HTTP method accepted in a web request.
pub const MAX_METHOD_LEN: usize = 16;
/// Longest host accepted in a web request.
pub const MAX_HOST_LEN: usize = 255;
/// Longest broker URL accepted in an offer.
pub const MAX_URL_LEN: usize = 512;
/// Longest header value of scrip: base64url of the longest scrip.
pub const MAX_SCRIP_HEADER_LEN: usize = (MAX_BODY_LEN + 64).div_ceil(3) * 4;

/// The web request `METHOD SP host path-and-query` that a payment for an
/// HTTP resource stamps.
///
/// `method` is an HTTP method of upper-case letters; `host` is the
/// request's host, lower-cased and without the default port `:80`
/// ([`normalize_host`]); `path_and_query` starts with `/` and holds visible
/// ASCII only (it is sent percent-encoded). The whole is at most
/// [`MAX_REQUEST_LEN`] bytes.
pub fn web_request(method: &str, host: &str, path_and_query: &str) -> Result<String, Error> {
    let malformed = |detail| Error::Malformed {
        what: "web request",
        detail,
    };
    if method.is_empty()
        || method.len() > MAX_METHOD_LEN
        || !method.bytes().all(|b| b.is_ascii_uppercase())
    {
        return Err(malformed("the method must be 1 to 16 upper-case letters"));
    }
    let host = normalize_host(host).ok_or(malformed("the host is not a host name"))?;
    if !path_and_query.starts_with('/') || !path_and_query.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(malformed("the path must start with / and be visible ASCII"));
    }
    let request = format!("{method} {host}{path_and_query}");
    if request.len() > MAX_REQUEST_LEN {
        return Err(Error::TooLarge {
            what: "web request",
            actual: request.len(),
            max: MAX_REQUEST_LEN,
        });
    }
    Ok(request)
}

/// A host as web requests name it: lower-case, without `:80`. `None` if it
/// is empty, too long, or holds anything but letters, digits, `.`, `-`,
/// `_`, `:`, `[` and `]` (for IPv6 literals).
pub fn normalize_host(host: &str) -> Option<String> {
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix(":80").unwrap_or(&host);
    let allowed =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']');
    if host.is_empty() || host.len() > MAX_HOST_LEN || !host.bytes().all(allowed) {
        return None;
    }
    Some(host.to_owned())
}

/// The parts of a web request, as [`parse_web_request`] finds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebRequest<'a> {
    /// The method.
    pub method: &'a str,
    /// The normalized host.
    pub host: &'a str,
    /// The path, without the query.
    pub path: &'a str,
}

/// Splits a request in the form [`web_request`] makes; `None` for any
/// other request (an item name of a vendor's price list, for instance).
pub fn parse_web_request(request: &[u8]) -> Option<WebRequest<'_>> {
    let text = std::str::from_utf8(request).ok()?;
    let (method, rest) = text.split_once(' ')?;
    let slash = rest.find('/')?;
    let (host, path_and_query) = rest.split_at(slash);
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(path, _)| path);
    let well_formed = !method.is_empty()
        && method.len() <= MAX_METHOD_LEN
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && normalize_host(host).as_deref() == Some(host)
        && path_and_query.bytes().all(|b| b.is_ascii_graphic());
    well_formed.then_some(WebRequest { method, host, path })
}

/// Scrip as a header value: base64url of `body ‖ certificate`.
pub fn encode_scrip(scrip: &Scrip) -> String {
    URL_SAFE_NO_PAD.encode(scrip.encode())
}

/// Scrip from a header value, decoded strictly.
pub fn decode_scrip(value: &str) -> Result<Scrip, Error> {
    if value.len() > MAX_SCRIP_HEADER_LEN {
        return Err(Error::TooLarge {
            what: "scrip header",
            actual: value.len(),
            max: MAX_SCRIP_HEADER_LEN,
        });
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| Error::Malformed {
            what: "scrip header",
            detail: "not unpadded base64url",
        })?;
    Scrip::decode_concatenated(&bytes)
}

/// A stamp as a header value: base64url of the MAC.
pub fn encode_mac(mac: &Mac) -> String {
    URL_SAFE_NO_PAD.encode(mac.as_bytes())
}

/// A stamp of `suite` from a header value.
pub fn decode_mac(suite: Suite, what: &'static str, value: &str) -> Result<Mac, Error> {
    if value.len() > 64 {
        return Err(Error::TooLarge {
            what,
            actual: value.len(),
            max: 64,
        });
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| Error::Malformed {
            what,
            detail: "not unpadded base64url",
        })?;
    Mac::parse(suite, what, &bytes)
}

/// A broker that sells a vendor's scrip, as an offer names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferBroker {
    /// The broker's name.
    pub name: VendorName,
    /// Where its gRPC service answers.
    pub url: String,
}

/// Why a payment sent with a request was refused, in a 402 offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferRefusal {
    /// The refusal's reason, as in `millicent-reason`.
    pub reason: String,
    /// A message for people.
    pub message: String,
}

/// What a vendor asks for a resource: the body of its `402 Payment
/// Required` reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The vendor whose scrip pays.
    pub vendor: VendorName,
    /// The price.
    pub price: Amount,
    /// The web request the payment must stamp.
    pub request: String,
    /// The variants that pay for this resource (clear and secure only).
    pub variants: Vec<Variant>,
    /// The suites of scrip the vendor accepts.
    pub suites: Vec<Suite>,
    /// Brokers that sell the vendor's scrip.
    pub brokers: Vec<OfferBroker>,
    /// How long an identical retried payment gets the identical reply.
    pub retry_window_secs: u64,
    /// Why the payment sent with the request, if any, was refused.
    pub refused: Option<OfferRefusal>,
}

/// The offer as JSON. Amounts are decimal strings, as in the test vectors.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OfferRecord {
    millicent: u32,
    vendor: String,
    price: String,
    request: String,
    variants: Vec<String>,
    suites: Vec<String>,
    brokers: Vec<OfferBrokerRecord>,
    retry_window_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refused: Option<OfferRefusal>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OfferBrokerRecord {
    name: String,
    url: String,
}

impl Offer {
    /// The offer's JSON text.
    pub fn encode(&self) -> Vec<u8> {
        let record = OfferRecord {
            millicent: OFFER_VERSION,
            vendor: self.vendor.as_str().to_owned(),
            price: self.price.units().to_string(),
            request: self.request.clone(),
            variants: self.variants.iter().map(|v| v.name().to_owned()).collect(),
            suites: self.suites.iter().map(|s| s.name().to_owned()).collect(),
            brokers: self
                .brokers
                .iter()
                .map(|b| OfferBrokerRecord {
                    name: b.name.as_str().to_owned(),
                    url: b.url.clone(),
                })
                .collect(),
            retry_window_secs: self.retry_window_secs,
            refused: self.refused.clone(),
        };
        // A record of strings, numbers and lists always serializes.
        serde_json::to_vec(&record).unwrap_or_default()
    }

    /// An offer from its JSON text, checked field by field. Variants and
    /// suites this build does not know are left out; an offer left with no
    /// variant it can pay is refused.
    pub fn decode(bytes: &[u8]) -> Result<Offer, Error> {
        let malformed = |detail| Error::Malformed {
            what: "offer",
            detail,
        };
        if bytes.len() > MAX_OFFER_LEN {
            return Err(Error::TooLarge {
                what: "offer",
                actual: bytes.len(),
                max: MAX_OFFER_LEN,
            });
        }
        let record: OfferRecord =
            serde_json::from_slice(bytes).map_err(|_| malformed("not an offer in JSON"))?;
        if record.millicent != OFFER_VERSION {
            return Err(malformed("not an offer of version 1"));
        }
        if record.variants.len() > MAX_OFFER_ENTRIES
            || record.suites.len() > MAX_OFFER_ENTRIES
            || record.brokers.len() > MAX_OFFER_ENTRIES
        {
            return Err(malformed("lists more than 32 variants, suites or brokers"));
        }
        let vendor = VendorName::new(&record.vendor)?;
        let price = record
            .price
            .parse::<u64>()
            .ok()
            .filter(|price| *price > 0 && record.price == price.to_string())
            .map(Amount::new)
            .ok_or(malformed("the price is not a positive decimal number"))?;
        if parse_web_request(record.request.as_bytes()).is_none()
            || record.request.len() > MAX_REQUEST_LEN
        {
            return Err(malformed("the request is not a web request"));
        }
        let variants: Vec<Variant> = record
            .variants
            .iter()
            .filter_map(|name| Variant::from_name(name))
            .filter(|variant| *variant != Variant::Private)
            .collect();
        if variants.is_empty() {
            return Err(malformed("no variant an HTTP client can pay"));
        }
        let suites = record
            .suites
            .iter()
            .filter_map(|name| Suite::from_name(name))
            .collect();
        let mut brokers = Vec::with_capacity(record.brokers.len());
        for broker in record.brokers {
            let url_ok =
                broker.url.len() <= MAX_URL_LEN && broker.url.bytes().all(|b| b.is_ascii_graphic());
            if !url_ok {
                return Err(malformed("a broker URL is not a URL"));
            }
            brokers.push(OfferBroker {
                name: VendorName::new(&broker.name)?,
                url: broker.url,
            });
        }
        let refused = match record.refused {
            Some(refusal) if refusal.reason.len() > 64 || refusal.message.len() > 1024 => {
                return Err(malformed("the refusal is too long"));
            }
            refused => refused,
        };
        Ok(Offer {
            vendor,
            price,
            request: record.request,
            variants,
            suites,
            brokers,
            retry_window_secs: record.retry_window_secs,
            refused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_requests_are_normalized_and_bounded() {
        assert_eq!(
            web_request("GET", "News.Example:80", "/a?b=1").unwrap(),
            "GET news.example/a?b=1"
        );
        assert_eq!(
            web_request("HEAD", "127.0.0.1:8402", "/").unwrap(),
            "HEAD 127.0.0.1:8402/"
        );
        assert!(web_request("get", "h", "/").is_err());
        assert!(web_request("GET", "a b", "/").is_err());
        assert!(web_request("GET", "h", "relative").is_err());
        assert!(web_request("GET", "h", "/a b").is_err());
        let long = format!("/{}", "x".repeat(MAX_REQUEST_LEN));
        assert_eq!(
            web_request("GET", "h", &long).unwrap_err().reason(),
            "too_large"
        );
    }

    #[test]
    fn web_requests_parse_back_and_item_names_do_not() {
        let request = web_request("GET", "h.example:8402", "/docs/1?x=y").unwrap();
        assert_eq!(
            parse_web_request(request.as_bytes()),
            Some(WebRequest {
                method: "GET",
                host: "h.example:8402",
                path: "/docs/1"
            })
        );
        for item in [
            "article-1",
            "GET",
            "GET /x",
            "get h/x",
            "GET H/x",
            "GET h/x y",
        ] {
            assert_eq!(parse_web_request(item.as_bytes()), None, "{item}");
        }
    }

    #[test]
    fn offers_round_trip_and_bad_ones_are_refused() {
        let offer = Offer {
            vendor: VendorName::new("news.example").unwrap(),
            price: Amount::new(10),
            request: "GET news.example/a".to_owned(),
            variants: vec![Variant::Secure, Variant::Clear],
            suites: vec![Suite::Modern],
            brokers: vec![OfferBroker {
                name: VendorName::new("broker.local").unwrap(),
                url: "http://127.0.0.1:7100".to_owned(),
            }],
            retry_window_secs: 600,
            refused: None,
        };
        let bytes = offer.encode();
        assert_eq!(Offer::decode(&bytes).unwrap(), offer);

        let edit = |from: &str, to: &str| {
            let text = String::from_utf8(bytes.clone()).unwrap().replace(from, to);
            Offer::decode(text.as_bytes())
        };
        assert!(edit("\"10\"", "\"0\"").is_err());
        assert!(edit("\"10\"", "\"010\"").is_err());
        assert!(edit("\"10\"", "10").is_err());
        assert!(edit("\"millicent\":1", "\"millicent\":2").is_err());
        assert!(edit("news.example\"", "News\"").is_err());
        assert!(edit("GET news.example/a", "article-1").is_err());
        assert!(edit("[\"secure\",\"clear\"]", "[\"private\"]").is_err());
        assert!(
            edit(
                "\"retry_window_secs\"",
                "\"surprise\":1,\"retry_window_secs\""
            )
            .is_err()
        );
        assert!(Offer::decode(b"<html>402</html>").is_err());
        assert!(Offer::decode(&vec![b' '; MAX_OFFER_LEN + 1]).is_err());
        // Unknown variants and suites are left out, not refused.
        let newer = edit("\"modern\"", "\"modern\",\"quantum\"").unwrap();
        assert_eq!(newer.suites, vec![Suite::Modern]);
    }

    /// The example of docs/PROTOCOL.md, section 14: the scrip of the test
    /// vector `certificate[0]` paying 10 for a web request.
    #[test]
    fn the_documented_example_is_what_the_code_computes() {
        use crate::payment::{reply_stamp, request_stamp};
        use crate::{
            CustId, CustomerSecret, KeyRing, MasterSecret, Properties, ScripBody, ScripId,
            SeriesKey,
        };

        let hex = |text: &str| {
            (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        };
        let vendor = VendorName::new("news.example").unwrap();
        let mut keys = KeyRing::new(vendor.clone());
        let secret = "10171e252c333a41484f565d646b727980878e959ca3aab1b8bfc6cdd4dbe2e9";
        keys.add_series(SeriesKey {
            series: 5,
            suite: Suite::Classic,
            expires_at: 1_900_000_000,
            secret: MasterSecret::from_slice(Suite::Classic, &hex(secret)).unwrap(),
        });
        let body = |value, sequence| ScripBody {
            suite: Suite::Classic,
            vendor: vendor.clone(),
            value: Amount::new(value),
            id: ScripId::new(5, sequence),
            cust_id: CustId::new(3, 77).unwrap(),
            expires_at: 1_900_000_000,
            properties: Properties::default(),
        };
        let scrip = keys.mint(body(1000, 1)).unwrap();
        let change = keys.mint(body(990, 2)).unwrap();
        let customer =
            CustomerSecret::from_slice(Suite::Classic, &hex("fa4a0687da35ab386fbe2e08ad3fc79f"))
                .unwrap();

        let request = web_request("GET", "news.example", "/articles/1").unwrap();
        let stamp = request_stamp(&customer, &scrip, request.as_bytes());
        let reply = reply_stamp(Suite::Classic, &customer, &stamp, Some(&change), b"");
        assert_eq!(
            encode_scrip(&scrip),
            "AQxuZXdzLmV4YW1wbGUAAAAAAAAD6AAAAAUAAAABAAMAAAAAAE0AAAAAcT-zAAAAdP0n7GganHRRRsQ8pcA3cQ"
        );
        assert_eq!(encode_mac(&stamp), "ZKAquTjO7j9v6z5gLzanTw");
        assert_eq!(
            encode_scrip(&change),
            "AQxuZXdzLmV4YW1wbGUAAAAAAAAD3gAAAAUAAAACAAMAAAAAAE0AAAAAcT-zAAAAphAGsUrG4S9_ZuXKB9z_rw"
        );
        assert_eq!(encode_mac(&reply), "X4FE7iRJ_5P2ONVLuFmZKg");
    }

    #[test]
    fn header_values_are_unpadded_base64url() {
        assert!(decode_scrip("!!!").is_err());
        assert!(decode_scrip(&"A".repeat(MAX_SCRIP_HEADER_LEN + 1)).is_err());
        let mac = Mac::from_slice(&[0xfb; 16]);
        assert_eq!(encode_mac(&mac), "-_v7-_v7-_v7-_v7-_v7-w");
        assert_eq!(
            decode_mac(Suite::Classic, "stamp", "-_v7-_v7-_v7-_v7-_v7-w").unwrap(),
            mac
        );
        assert!(decode_mac(Suite::Classic, "stamp", "-_v7-_v7-_v7-_v7-_v7-w==").is_err());
        assert!(decode_mac(Suite::Modern, "stamp", "-_v7-_v7-_v7-_v7-_v7-w").is_err());
    }
}
