//! The HTTP face of a payment: the headers a paid request carries, the
//! headers of the reply, and the 402 offer.
//!
//! This is the gateway's wire boundary, as `convert` is the gRPC one: every
//! header a client sends is checked here (one value each, ASCII, lengths,
//! base64url, the stamp's length for the scrip's suite) and becomes the
//! same `PayRequest` a gRPC client would send, which then takes the node's
//! one payment path.

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use millicent_core::web::{
    CHANGE_HEADER, PRICE_HEADER, REPLY_STAMP_HEADER, REQUEST_STAMP_HEADER, SCRIP_HEADER,
    VARIANT_HEADER, decode_mac, decode_scrip,
};
use millicent_core::{Error, Variant, VendorName};
use millicent_proto as wire;

use crate::VendorError;
use crate::convert::{scrip_to_wire, variant_to_wire};

/// The `PayRequest` a paid request carries for the web request `request`;
/// `None` if it carries no payment at all.
pub(crate) fn payment(
    headers: &HeaderMap,
    vendor: &VendorName,
    request: &str,
) -> Option<Result<wire::PayRequest, VendorError>> {
    let present = [SCRIP_HEADER, VARIANT_HEADER, REQUEST_STAMP_HEADER]
        .iter()
        .any(|name| headers.contains_key(*name));
    if !present {
        return None;
    }
    Some(decode_payment(headers, vendor, request))
}

fn decode_payment(
    headers: &HeaderMap,
    vendor: &VendorName,
    request: &str,
) -> Result<wire::PayRequest, VendorError> {
    let scrip = one_value(headers, SCRIP_HEADER)?.ok_or(Error::Malformed {
        what: "payment headers",
        detail: "millicent-scrip is missing",
    })?;
    let scrip = decode_scrip(scrip)?;
    let variant = match one_value(headers, VARIANT_HEADER)? {
        None => {
            return Err(Error::Malformed {
                what: "payment headers",
                detail: "millicent-variant is missing",
            }
            .into());
        }
        Some(name) => Variant::from_name(name).ok_or(Error::Malformed {
            what: "millicent-variant",
            detail: "not clear or secure",
        })?,
    };
    if variant == Variant::Private {
        // The private variant seals the request, and the gateway builds
        // the request from the HTTP request line itself.
        return Err(VendorError::VariantNotAccepted {
            vendor: vendor.clone(),
            variant,
        });
    }
    let stamp = match (variant, one_value(headers, REQUEST_STAMP_HEADER)?) {
        (Variant::Clear, None) => Vec::new(),
        (Variant::Clear, Some(_)) => {
            return Err(
                Error::VariantMismatch("the clear variant carries no request stamp").into(),
            );
        }
        (_, None) => {
            return Err(Error::VariantMismatch("a stamped variant needs a request stamp").into());
        }
        (_, Some(value)) => decode_mac(scrip.suite(), "millicent-request-stamp", value)?
            .as_bytes()
            .to_vec(),
    };
    Ok(wire::PayRequest {
        scrip: Some(scrip_to_wire(&scrip)),
        variant: variant_to_wire(variant),
        request: request.as_bytes().to_vec(),
        request_stamp: stamp,
    })
}

/// The one value of header `name`, if present; two values, or one that is
/// not visible ASCII, are malformed.
fn one_value<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, Error> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::Malformed {
            what: "payment headers",
            detail: "a millicent header is given twice",
        });
    }
    value
        .to_str()
        .map(|text| Some(text.trim()))
        .map_err(|_| Error::Malformed {
            what: "payment headers",
            detail: "a millicent header is not visible ASCII",
        })
}

/// Adds the reply of an accepted payment to a response's headers: change,
/// reply stamp and price. The goods of a web payment are empty, and the
/// reply stamp covers them as such.
pub(crate) fn add_reply(headers: &mut HeaderMap, reply: &wire::PayReply) {
    let mut add = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    if let Some(change) = &reply.change {
        let mut bytes = change.body.clone();
        bytes.extend_from_slice(&change.certificate);
        add(CHANGE_HEADER, base64url(&bytes));
    }
    if !reply.reply_stamp.is_empty() {
        add(REPLY_STAMP_HEADER, base64url(&reply.reply_stamp));
    }
    add(PRICE_HEADER, reply.price.to_string());
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether a header is one of the payment's, which the upstream never sees
/// and a client never gets from it.
pub(crate) fn is_millicent(name: &HeaderName) -> bool {
    name.as_str().starts_with("millicent-")
}

/// Whether a header concerns one connection only.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    millicent_core::web::HOP_BY_HOP_HEADERS.contains(&name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vendor() -> VendorName {
        VendorName::new("news.example").unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn a_request_without_payment_headers_carries_no_payment() {
        assert!(payment(&headers(&[("accept", "*/*")]), &vendor(), "GET h/").is_none());
    }

    #[test]
    fn bad_payment_headers_are_refused_with_a_reason() {
        let reason = |pairs: &[(&'static str, &str)]| {
            payment(&headers(pairs), &vendor(), "GET h/")
                .unwrap()
                .unwrap_err()
                .reason()
        };
        assert_eq!(reason(&[(VARIANT_HEADER, "secure")]), "malformed");
        assert_eq!(reason(&[(SCRIP_HEADER, "not base64!")]), "malformed");
        assert_eq!(reason(&[(SCRIP_HEADER, &"A".repeat(4000))]), "too_large");
        assert_eq!(
            reason(&[(SCRIP_HEADER, "AAAA"), (SCRIP_HEADER, "AAAA")]),
            "malformed"
        );
    }
}
