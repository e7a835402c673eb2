//! Paying for HTTP resources: the HTTP side of a web payment.
//!
//! A vendor's gateway answers a priced request without payment with `402
//! Payment Required` and an [`Offer`]; the same request sent again with
//! the payment headers of docs/PROTOCOL.md gets the resource, with the
//! change and reply stamp in headers. This module reads offers from
//! responses, writes payment headers and reads reply headers, checking
//! every field, so that the wallet ([`crate::Wallet::pay_web`]) and the
//! proxy see only well-formed values.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use millicent_core::web::{
    CHANGE_HEADER, MAX_OFFER_LEN, Offer, PRICE_HEADER, REASON_HEADER, REPLY_STAMP_HEADER,
    REQUEST_STAMP_HEADER, SCRIP_HEADER, VARIANT_HEADER, decode_mac, decode_scrip, encode_mac,
    encode_scrip, web_request,
};
use millicent_core::{Amount, Payment, PaymentReply, Suite};

use crate::ClientError;
use crate::protocol::CONNECT_TIMEOUT;

/// The HTTP client the wallet pays with.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A new HTTP client for plain `http://` origins.
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// The web request a payment for `method` on `url` stamps; `url` must be
/// an absolute `http://` URL.
pub fn request_for(method: &Method, url: &Uri) -> Result<String, ClientError> {
    let bad = |detail: String| ClientError::BadOffer {
        url: url.to_string(),
        detail,
    };
    if url.scheme_str() != Some("http") {
        return Err(bad("only http:// resources can be paid for".to_owned()));
    }
    let host = url
        .authority()
        .ok_or_else(|| bad("the URL has no host".to_owned()))?;
    let target = url.path_and_query().map_or("/", |pq| pq.as_str());
    web_request(method.as_str(), host.as_str(), target).map_err(|error| bad(error.to_string()))
}

/// Whether a 402 response claims to carry a Millicent offer: its body is
/// JSON. Other 402 answers are not for the wallet.
pub fn may_be_offer(response: &Response<hyper::body::Incoming>) -> bool {
    response.status() == StatusCode::PAYMENT_REQUIRED
        && response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.trim_start().starts_with("application/json"))
}

/// What a 402 body holds.
#[derive(Debug)]
pub enum OfferBody {
    /// A Millicent offer, checked.
    Offer(Offer),
    /// JSON that says it is a Millicent offer but is not a valid one.
    Malformed(String),
    /// Something else, handed back unchanged.
    Other(Bytes),
}

/// Reads a 402 body (at most [`MAX_OFFER_LEN`] bytes) and tells an offer
/// from anything else: a JSON object with a `millicent` member is an offer,
/// and must be a valid one.
pub async fn read_offer(body: hyper::body::Incoming) -> Result<OfferBody, ClientError> {
    let bytes = match Limited::new(body, MAX_OFFER_LEN).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return Ok(OfferBody::Malformed(format!(
                "the 402 body could not be read within {MAX_OFFER_LEN} bytes ({error})"
            )));
        }
    };
    let claims_offer = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .is_some_and(|value| value.get("millicent").is_some());
    if !claims_offer {
        return Ok(OfferBody::Other(bytes));
    }
    Ok(match Offer::decode(&bytes) {
        Ok(offer) => OfferBody::Offer(offer),
        Err(error) => OfferBody::Malformed(error.to_string()),
    })
}

/// Adds `payment`'s headers to `headers`.
pub fn add_payment_headers(headers: &mut HeaderMap, payment: &Payment) {
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set(SCRIP_HEADER, encode_scrip(&payment.scrip));
    set(VARIANT_HEADER, payment.variant.name().to_owned());
    if let Some(stamp) = &payment.request_stamp {
        set(REQUEST_STAMP_HEADER, encode_mac(stamp));
    }
}

/// Whether a response carries the reply to a payment (a price header).
pub fn carries_reply(headers: &HeaderMap) -> bool {
    headers.contains_key(PRICE_HEADER)
}

/// The reply to a payment in scrip of `suite`, from a response's headers.
/// The goods of a web payment are empty: the body is the resource.
pub fn reply_from_headers(suite: Suite, headers: &HeaderMap) -> Result<PaymentReply, ClientError> {
    let bad = |detail: &str| ClientError::BadReply {
        call: "web payment",
        detail: detail.to_owned(),
    };
    let value = |name: &'static str| -> Result<Option<&str>, ClientError> {
        let mut values = headers.get_all(name).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(bad("repeats a millicent header"));
        }
        first
            .map(|v| {
                v.to_str()
                    .map_err(|_| bad("has a millicent header that is not ASCII"))
            })
            .transpose()
    };
    let price = value(PRICE_HEADER)?
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| bad("has no valid millicent-price"))?;
    let change = value(CHANGE_HEADER)?
        .map(decode_scrip)
        .transpose()
        .map_err(ClientError::Protocol)?;
    let reply_stamp = value(REPLY_STAMP_HEADER)?
        .map(|text| decode_mac(suite, "reply stamp", text))
        .transpose()
        .map_err(ClientError::Protocol)?;
    Ok(PaymentReply {
        goods: Vec::new(),
        change,
        reply_stamp,
        price: Amount::new(price),
    })
}

/// The reason in a refusal's `millicent-reason` header, if well-formed.
pub fn reason_header(headers: &HeaderMap) -> Option<String> {
    let reason = headers.get(REASON_HEADER)?.to_str().ok()?;
    let ok = !reason.is_empty()
        && reason.len() <= 64
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    ok.then(|| reason.to_owned())
}

/// Removes every `millicent-*` header: what the wallet keeps (change) is
/// no business of the program that asked for the page.
pub fn strip_payment_headers(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("millicent-"))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_made_from_the_url() {
        let url: Uri = "http://News.Example/a?b=1".parse().unwrap();
        assert_eq!(
            request_for(&Method::GET, &url).unwrap(),
            "GET news.example/a?b=1"
        );
        let https: Uri = "https://news.example/a".parse().unwrap();
        assert!(request_for(&Method::GET, &https).is_err());
    }

    #[test]
    fn reply_headers_are_checked() {
        let mut headers = HeaderMap::new();
        assert!(reply_from_headers(Suite::Classic, &headers).is_err());
        headers.insert(PRICE_HEADER, HeaderValue::from_static("10"));
        let reply = reply_from_headers(Suite::Classic, &headers).unwrap();
        assert_eq!(
            (reply.price, reply.change, reply.reply_stamp),
            (Amount::new(10), None, None)
        );
        headers.insert(CHANGE_HEADER, HeaderValue::from_static("AAAA"));
        assert!(reply_from_headers(Suite::Classic, &headers).is_err());
        headers.remove(CHANGE_HEADER);
        headers.insert(REPLY_STAMP_HEADER, HeaderValue::from_static("AAAA"));
        assert!(reply_from_headers(Suite::Classic, &headers).is_err());
        headers.append(PRICE_HEADER, HeaderValue::from_static("10"));
        assert!(reply_from_headers(Suite::Classic, &headers).is_err());
    }
}
