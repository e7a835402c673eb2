//! Conversion between wire messages and protocol types, in one place.
//!
//! Every field a server sends is checked here (lengths, enum values, names)
//! before the rest of the client sees it, so the protocol functions work
//! only with well-formed scrip, stamps and amounts.

use millicent_core::suite::Mac;
use millicent_core::{Amount, PaymentReply, Scrip, Suite, Variant, VendorName};
use millicent_proto as wire;

use crate::ClientError;
use crate::protocol::{ItemPrice, VendorOfferSummary};

/// Longest price list accepted from a vendor node, in offers and items per offer.
const MAX_PRICE_LIST_ENTRIES: usize = 10_000;

/// Scrip as it travels: canonical body and certificate.
pub fn scrip_to_wire(scrip: &Scrip) -> wire::Scrip {
    wire::Scrip {
        body: scrip.encoded_body().to_vec(),
        certificate: scrip.certificate().as_bytes().to_vec(),
    }
}

/// Scrip received from a server: decodes the body strictly and checks the
/// certificate's length. Whether the certificate is genuine only the vendor
/// (or its broker) can tell.
pub fn scrip_from_wire(scrip: &wire::Scrip) -> Result<Scrip, ClientError> {
    Ok(Scrip::decode(&scrip.body, &scrip.certificate)?)
}

/// The wire value of a payment variant.
pub fn variant_to_wire(variant: Variant) -> wire::Variant {
    match variant {
        Variant::Clear => wire::Variant::Clear,
        Variant::Secure => wire::Variant::Secure,
        Variant::Private => wire::Variant::Private,
    }
}

/// The payment variant of a wire value; `None` for values this client does
/// not know (including `VARIANT_UNSPECIFIED`).
pub fn variant_from_wire(value: i32) -> Option<Variant> {
    match wire::Variant::try_from(value).ok()? {
        wire::Variant::Clear => Some(Variant::Clear),
        wire::Variant::Secure => Some(Variant::Secure),
        wire::Variant::Private => Some(Variant::Private),
        wire::Variant::Unspecified => None,
    }
}

/// A required message field, or an error naming the call and field.
pub(crate) fn required<T>(
    field: Option<T>,
    call: &'static str,
    name: &'static str,
) -> Result<T, ClientError> {
    field.ok_or_else(|| ClientError::BadReply {
        call,
        detail: format!("has no {name}"),
    })
}

/// A stamp that may be absent (empty on the wire), of `suite`'s length
/// otherwise.
pub(crate) fn optional_stamp(
    suite: Suite,
    what: &'static str,
    bytes: &[u8],
) -> Result<Option<Mac>, ClientError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    Ok(Some(Mac::parse(suite, what, bytes)?))
}

/// A vendor's reply to a payment with scrip of `suite`, as the core checks it.
pub(crate) fn payment_reply_from_wire(
    suite: Suite,
    reply: &wire::PayReply,
) -> Result<PaymentReply, ClientError> {
    let change = reply.change.as_ref().map(scrip_from_wire).transpose()?;
    Ok(PaymentReply {
        goods: reply.goods.clone(),
        change,
        reply_stamp: optional_stamp(suite, "reply stamp", &reply.reply_stamp)?,
        price: Amount::new(reply.price),
    })
}

/// A vendor node's price list. Variants and suites this client does not
/// know are left out rather than refused: a newer node may offer more.
pub(crate) fn price_list_from_wire(
    list: wire::PriceList,
) -> Result<Vec<VendorOfferSummary>, ClientError> {
    check_entries("price list", list.vendors.len())?;
    list.vendors
        .into_iter()
        .map(|offer| {
            check_entries("vendor offer", offer.items.len())?;
            let vendor =
                VendorName::new(&offer.vendor).map_err(|source| ClientError::BadReply {
                    call: "GetPrices",
                    detail: format!(
                        "names vendor {:?}, which is not a vendor name ({source})",
                        offer.vendor
                    ),
                })?;
            let items = offer
                .items
                .into_iter()
                .map(|item| ItemPrice {
                    name: item.name,
                    price: Amount::new(item.price),
                })
                .collect();
            let variants = offer
                .variants
                .into_iter()
                .filter_map(variant_from_wire)
                .collect();
            let suites = offer
                .suites
                .into_iter()
                .filter_map(|id| u8::try_from(id).ok())
                .filter_map(|id| Suite::from_id(id).ok())
                .collect();
            Ok(VendorOfferSummary {
                vendor,
                items,
                variants,
                suites,
            })
        })
        .collect()
}

fn check_entries(what: &'static str, len: usize) -> Result<(), ClientError> {
    if len > MAX_PRICE_LIST_ENTRIES {
        return Err(ClientError::BadReply {
            call: "GetPrices",
            detail: format!("has a {what} of {len} entries, more than {MAX_PRICE_LIST_ENTRIES}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_round_trip_and_unknown_values_are_none() {
        for variant in Variant::ALL {
            assert_eq!(
                variant_from_wire(variant_to_wire(variant) as i32),
                Some(variant)
            );
        }
        assert_eq!(variant_from_wire(0), None);
        assert_eq!(variant_from_wire(99), None);
        assert_eq!(wire::Variant::Clear as i32, 1);
        assert_eq!(wire::Variant::Secure as i32, 2);
        assert_eq!(wire::Variant::Private as i32, 3);
    }

    #[test]
    fn malformed_scrip_from_a_server_is_a_protocol_error() {
        let scrip = wire::Scrip {
            body: vec![1, 2, 3],
            certificate: vec![0; 16],
        };
        assert!(matches!(
            scrip_from_wire(&scrip),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn a_price_list_keeps_known_variants_and_suites_and_refuses_bad_names() {
        let list = wire::PriceList {
            vendors: vec![wire::VendorOffer {
                vendor: "news.example".into(),
                items: vec![wire::Item {
                    name: "article-1".into(),
                    price: 30,
                    ..Default::default()
                }],
                variants: vec![0, 2, 7],
                suites: vec![1, 300, 99],
            }],
        };
        let offers = price_list_from_wire(list).unwrap();
        assert_eq!(offers[0].vendor.as_str(), "news.example");
        assert_eq!(offers[0].items[0].price, Amount::new(30));
        assert_eq!(offers[0].variants, vec![Variant::Secure]);
        assert_eq!(offers[0].suites, vec![Suite::Classic]);

        let bad = wire::PriceList {
            vendors: vec![wire::VendorOffer {
                vendor: "Not A Name".into(),
                ..Default::default()
            }],
        };
        assert!(matches!(
            price_list_from_wire(bad),
            Err(ClientError::BadReply { .. })
        ));
    }
}
