//! The wire boundary: protobuf messages to protocol values and back.
//!
//! Every field a client sends is checked here (presence, lengths, enum
//! values, the size of the request, the length of each stamp for the scrip's
//! suite), so the protocol core and the rest of the node only ever see
//! well-formed values. Nothing else in the crate reads a wire message.

use millicent_core::payment::MAX_REQUEST_LEN;
use millicent_core::{Amount, Error, Mac, Payment, PaymentReply, Scrip, Variant, VendorName};
use millicent_proto as wire;

use crate::VendorError;
use crate::config::Catalogue;
use crate::keys::LicenceKeys;

/// Longest broker name accepted in a licence request, in bytes.
pub(crate) const MAX_BROKER_LEN: usize = 64;

/// A payment as the core expects it, from a `PayRequest`.
pub(crate) fn payment(request: wire::PayRequest) -> Result<Payment, Error> {
    let wire::PayRequest {
        scrip,
        variant,
        request,
        request_stamp,
    } = request;
    let scrip = scrip_from_wire(scrip.ok_or(Error::Malformed {
        what: "payment",
        detail: "no scrip",
    })?)?;
    let variant = variant_from_wire(variant)?;
    if request.len() > MAX_REQUEST_LEN {
        return Err(Error::TooLarge {
            what: "request",
            actual: request.len(),
            max: MAX_REQUEST_LEN,
        });
    }
    let request_stamp = match (variant, request_stamp.is_empty()) {
        (Variant::Clear, true) => None,
        (Variant::Clear, false) => {
            return Err(Error::VariantMismatch(
                "the clear variant carries no request stamp",
            ));
        }
        (_, true) => {
            return Err(Error::VariantMismatch(
                "a stamped variant needs a request stamp",
            ));
        }
        (_, false) => Some(Mac::parse(scrip.suite(), "request stamp", &request_stamp)?),
    };
    Ok(Payment {
        scrip,
        variant,
        request,
        request_stamp,
    })
}

/// The sequence number and payment of one `PayStream` element. An element
/// without a payment yields an empty one, which [`payment`] refuses as
/// malformed like any other payment without scrip, so that it is answered
/// and counted on the same path.
pub(crate) fn stream_element(element: wire::PayStreamRequest) -> (u64, wire::PayRequest) {
    (element.sequence, element.payment.unwrap_or_default())
}

/// The answer to the `PayStream` element numbered `sequence`: the reply, or
/// the refusal that `Pay` would have returned as a status.
pub(crate) fn stream_reply(
    sequence: u64,
    result: Result<wire::PayReply, VendorError>,
) -> wire::PayStreamReply {
    let result = match result {
        Ok(reply) => wire::pay_stream_reply::Result::Reply(reply),
        Err(error) => wire::pay_stream_reply::Result::Refusal(wire::Refusal {
            // gRPC codes are the numbers 0 to 16.
            code: error.code() as i32 as u32,
            reason: error.reason().to_owned(),
            message: error.to_string(),
        }),
    };
    wire::PayStreamReply {
        sequence,
        result: Some(result),
    }
}

/// The answer to the `PayStream` element numbered `sequence` whose payment
/// took longer than `timeout`: what a unary call gets from the server's
/// timeout, CANCELLED with no `millicent-reason`.
pub(crate) fn stream_timeout(sequence: u64, timeout: std::time::Duration) -> wire::PayStreamReply {
    let refusal = wire::Refusal {
        code: tonic::Code::Cancelled as i32 as u32,
        reason: String::new(),
        message: format!(
            "the payment took longer than {} s; it may have been accepted: send the identical \
             payment again to learn its outcome",
            timeout.as_secs_f64()
        ),
    };
    wire::PayStreamReply {
        sequence,
        result: Some(wire::pay_stream_reply::Result::Refusal(refusal)),
    }
}

/// Scrip from its wire form: the canonical body and the certificate.
pub(crate) fn scrip_from_wire(scrip: wire::Scrip) -> Result<Scrip, Error> {
    Scrip::decode(&scrip.body, &scrip.certificate)
}

/// The wire form of scrip.
pub(crate) fn scrip_to_wire(scrip: &Scrip) -> wire::Scrip {
    wire::Scrip {
        body: scrip.encoded_body().to_vec(),
        certificate: scrip.certificate().as_bytes().to_vec(),
    }
}

/// A variant from its wire number; the unspecified value and numbers this
/// build does not know are refused.
pub(crate) fn variant_from_wire(number: i32) -> Result<Variant, Error> {
    match wire::Variant::try_from(number) {
        Ok(wire::Variant::Clear) => Ok(Variant::Clear),
        Ok(wire::Variant::Secure) => Ok(Variant::Secure),
        Ok(wire::Variant::Private) => Ok(Variant::Private),
        Ok(wire::Variant::Unspecified) => Err(Error::Malformed {
            what: "variant",
            detail: "unspecified",
        }),
        Err(_) => Err(Error::Malformed {
            what: "variant",
            detail: "unknown value",
        }),
    }
}

/// The wire number of a variant.
pub(crate) fn variant_to_wire(variant: Variant) -> i32 {
    match variant {
        Variant::Clear => wire::Variant::Clear as i32,
        Variant::Secure => wire::Variant::Secure as i32,
        Variant::Private => wire::Variant::Private as i32,
    }
}

/// The wire form of a vendor's reply.
pub(crate) fn reply_to_wire(reply: &PaymentReply) -> wire::PayReply {
    wire::PayReply {
        goods: reply.goods.clone(),
        change: reply.change.as_ref().map(scrip_to_wire),
        reply_stamp: reply
            .reply_stamp
            .map(|stamp| stamp.as_bytes().to_vec())
            .unwrap_or_default(),
        price: reply.price.units(),
    }
}

/// What a licence request asks for: a vendor and the broker to license.
pub(crate) struct LicenceRequest {
    pub(crate) vendor: VendorName,
    pub(crate) broker: String,
}

/// Checks a `GrantLicenceRequest`. The broker's name follows the rules of
/// names in scrip, since brokers issue scrip of their own under it.
pub(crate) fn licence_request(request: wire::GrantLicenceRequest) -> Result<LicenceRequest, Error> {
    Ok(LicenceRequest {
        vendor: VendorName::new(&request.vendor)?,
        broker: broker_name(request.broker)?,
    })
}

/// A broker's name, checked like a name in scrip.
fn broker_name(broker: String) -> Result<String, Error> {
    if broker.len() > MAX_BROKER_LEN {
        return Err(Error::TooLarge {
            what: "broker name",
            actual: broker.len(),
            max: MAX_BROKER_LEN,
        });
    }
    if VendorName::new(&broker).is_err() {
        return Err(Error::Malformed {
            what: "broker name",
            detail: "must be 1 to 64 characters of a-z, 0-9, '.', '-', '_' and ':'",
        });
    }
    Ok(broker)
}

/// The wire form of a licence: its series and customer selector, with the
/// two master secrets, and how many ID#s of the series it covers.
pub(crate) fn licence_to_wire(
    vendor: &VendorName,
    licence: &LicenceKeys,
    id_limit: u64,
) -> wire::Licence {
    wire::Licence {
        vendor: vendor.as_str().to_owned(),
        suite: u32::from(licence.series.suite.id()),
        series: licence.series.series,
        expires_at: licence.series.expires_at,
        master_scrip_secret: licence.series.secret.expose_bytes().to_vec(),
        customer_selector: u32::from(licence.customer.selector),
        master_customer_secret: licence.customer.secret.expose_bytes().to_vec(),
        id_limit,
    }
}

/// What a block sale asks for.
pub(crate) struct BlockRequest {
    pub(crate) vendor: VendorName,
    pub(crate) broker: String,
    pub(crate) count: u32,
    pub(crate) value: Amount,
}

/// Checks a `SellScripBlockRequest`: a vendor, a broker, 1 to
/// [`MAX_BLOCK`](crate::blocks::MAX_BLOCK) pieces of a value of at least 1.
pub(crate) fn block_request(request: wire::SellScripBlockRequest) -> Result<BlockRequest, Error> {
    let vendor = VendorName::new(&request.vendor)?;
    let broker = broker_name(request.broker)?;
    if request.count == 0 || request.value == 0 {
        return Err(Error::Malformed {
            what: "scrip block request",
            detail: "count and value must be at least 1",
        });
    }
    if request.count > crate::blocks::MAX_BLOCK {
        return Err(Error::TooLarge {
            what: "scrip block",
            actual: request.count as usize,
            max: crate::blocks::MAX_BLOCK as usize,
        });
    }
    Ok(BlockRequest {
        vendor,
        broker,
        count: request.count,
        value: Amount::new(request.value),
    })
}

/// The wire form of a block sold, with each piece's customer secret.
pub(crate) fn block_to_wire(vendor: &VendorName, block: &crate::blocks::Block) -> wire::ScripBlock {
    wire::ScripBlock {
        vendor: vendor.as_str().to_owned(),
        series: block.series,
        expires_at: block.expires_at,
        pieces: block
            .pieces
            .iter()
            .map(|(scrip, secret)| wire::BlockPiece {
                scrip: Some(scrip_to_wire(scrip)),
                customer_secret: secret.expose_bytes().to_vec(),
            })
            .collect(),
    }
}

/// What a redemption report asks for: series with the first sequence
/// number wanted of each.
pub(crate) struct RedemptionsQuery {
    pub(crate) vendor: VendorName,
    pub(crate) broker: String,
    pub(crate) series: Vec<(u32, u32)>,
}

/// Checks a `RedemptionsRequest`: at most
/// [`MAX_SERIES`](crate::redemptions::MAX_SERIES) series, each starting on
/// a multiple of 64.
pub(crate) fn redemptions_query(
    request: wire::RedemptionsRequest,
) -> Result<RedemptionsQuery, Error> {
    let vendor = VendorName::new(&request.vendor)?;
    let broker = broker_name(request.broker)?;
    if request.series.len() > crate::redemptions::MAX_SERIES {
        return Err(Error::TooLarge {
            what: "series in a redemption report",
            actual: request.series.len(),
            max: crate::redemptions::MAX_SERIES,
        });
    }
    let mut series = Vec::with_capacity(request.series.len());
    for query in request.series {
        if query.first_seq % 64 != 0 {
            return Err(Error::Malformed {
                what: "redemption query",
                detail: "first_seq must be a multiple of 64",
            });
        }
        series.push((query.series, query.first_seq));
    }
    Ok(RedemptionsQuery {
        vendor,
        broker,
        series,
    })
}

/// The wire form of what a vendor sells and how it may be paid.
pub(crate) fn offer(catalogue: &Catalogue) -> wire::VendorOffer {
    wire::VendorOffer {
        vendor: catalogue.name.as_str().to_owned(),
        items: catalogue
            .items
            .iter()
            .map(|item| wire::Item {
                name: item.name.clone(),
                price: item.price.units(),
                variants: catalogue.variants_for(item).map(variant_to_wire).collect(),
            })
            .collect(),
        variants: catalogue
            .variants
            .iter()
            .map(|variant| variant_to_wire(*variant))
            .collect(),
        suites: catalogue
            .accepted_suites
            .iter()
            .map(|suite| u32::from(suite.id()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use millicent_core::scrip::{CustId, ScripBody, ScripId};
    use millicent_core::{Amount, KeyRing, MasterSecret, Properties, SeriesKey, Suite};

    fn scrip() -> wire::Scrip {
        let vendor = VendorName::new("news.example").unwrap();
        let mut keys = KeyRing::new(vendor.clone());
        keys.add_series(SeriesKey {
            series: 1,
            suite: Suite::Classic,
            expires_at: 100,
            secret: MasterSecret::new(Suite::Classic, [1; 32]),
        });
        let scrip = keys
            .mint(ScripBody {
                suite: Suite::Classic,
                vendor,
                value: Amount::new(5),
                id: ScripId::new(1, 1),
                cust_id: CustId::new(1, 1).unwrap(),
                expires_at: 100,
                properties: Properties::default(),
            })
            .unwrap();
        scrip_to_wire(&scrip)
    }

    fn request(variant: wire::Variant, stamp: Vec<u8>) -> wire::PayRequest {
        wire::PayRequest {
            scrip: Some(scrip()),
            variant: variant as i32,
            request: b"item".to_vec(),
            request_stamp: stamp,
        }
    }

    #[test]
    fn well_formed_payments_convert() {
        let clear = payment(request(wire::Variant::Clear, vec![])).unwrap();
        assert_eq!(clear.variant, Variant::Clear);
        assert_eq!(clear.request_stamp, None);
        let secure = payment(request(wire::Variant::Secure, vec![7; 16])).unwrap();
        assert_eq!(secure.request_stamp, Some(Mac::from_slice(&[7; 16])));
    }

    #[test]
    fn every_bad_field_is_refused() {
        let reason = |request| payment(request).unwrap_err().reason();
        assert_eq!(
            reason(request(wire::Variant::Unspecified, vec![])),
            "malformed"
        );
        let mut unknown = request(wire::Variant::Clear, vec![]);
        unknown.variant = 9;
        assert_eq!(reason(unknown), "malformed");
        assert_eq!(
            reason(request(wire::Variant::Clear, vec![1; 16])),
            "variant_mismatch"
        );
        assert_eq!(
            reason(request(wire::Variant::Private, vec![])),
            "variant_mismatch"
        );
        assert_eq!(
            reason(request(wire::Variant::Secure, vec![1; 15])),
            "malformed"
        );
        let mut big = request(wire::Variant::Clear, vec![]);
        big.request = vec![b'x'; MAX_REQUEST_LEN + 1];
        assert_eq!(reason(big), "too_large");
        let mut missing = request(wire::Variant::Clear, vec![]);
        missing.scrip = None;
        assert_eq!(reason(missing), "malformed");
        let mut short = request(wire::Variant::Clear, vec![]);
        if let Some(scrip) = short.scrip.as_mut() {
            scrip.body.pop();
        }
        assert_eq!(reason(short), "malformed");
    }

    #[test]
    fn a_stream_refusal_carries_what_a_status_would() {
        let (sequence, request) = stream_element(wire::PayStreamRequest {
            sequence: 42,
            payment: None,
        });
        assert_eq!(sequence, 42);
        let error = VendorError::from(payment(request).unwrap_err());
        let reply = stream_reply(sequence, Err(error));
        assert_eq!(reply.sequence, 42);
        let Some(wire::pay_stream_reply::Result::Refusal(refusal)) = reply.result else {
            panic!("not a refusal: {reply:?}");
        };
        assert_eq!(refusal.code, tonic::Code::InvalidArgument as i32 as u32);
        assert_eq!(refusal.reason, "malformed");
        assert!(refusal.message.contains("no scrip"), "{}", refusal.message);

        let late = stream_timeout(43, std::time::Duration::from_secs(10));
        let Some(wire::pay_stream_reply::Result::Refusal(refusal)) = late.result else {
            panic!("not a refusal: {late:?}");
        };
        assert_eq!((late.sequence, refusal.code), (43, 1));
        assert!(refusal.reason.is_empty());
        assert!(refusal.message.contains("identical"), "{}", refusal.message);
    }

    #[test]
    fn block_and_report_requests_are_checked() {
        let block = |count, value| {
            block_request(wire::SellScripBlockRequest {
                vendor: "news.example".into(),
                broker: "broker-1".into(),
                count,
                value,
            })
            .map(|request| (request.count, request.value))
        };
        assert_eq!(block(10, 5).unwrap(), (10, Amount::new(5)));
        assert_eq!(block(0, 5).err().map(|e| e.reason()), Some("malformed"));
        assert_eq!(block(1, 0).err().map(|e| e.reason()), Some("malformed"));
        assert_eq!(block(4097, 5).err().map(|e| e.reason()), Some("too_large"));

        let query = |series: Vec<(u32, u32)>| {
            redemptions_query(wire::RedemptionsRequest {
                vendor: "news.example".into(),
                broker: "broker-1".into(),
                series: series
                    .into_iter()
                    .map(|(series, first_seq)| wire::SeriesQuery { series, first_seq })
                    .collect(),
            })
            .map(|query| query.series)
        };
        assert_eq!(query(vec![(3, 128)]).unwrap(), [(3, 128)]);
        assert_eq!(
            query(vec![(3, 100)]).err().map(|e| e.reason()),
            Some("malformed")
        );
        assert_eq!(
            query(vec![(3, 0); 65]).err().map(|e| e.reason()),
            Some("too_large")
        );
    }

    #[test]
    fn broker_names_are_checked() {
        let ask = |broker: &str| {
            licence_request(wire::GrantLicenceRequest {
                vendor: "news.example".into(),
                broker: broker.into(),
            })
        };
        assert!(ask("broker-1").is_ok());
        assert_eq!(ask("").err().map(|e| e.reason()), Some("malformed"));
        assert_eq!(ask("Broker").err().map(|e| e.reason()), Some("malformed"));
        assert_eq!(
            ask(&"b".repeat(65)).err().map(|e| e.reason()),
            Some("too_large")
        );
    }
}
