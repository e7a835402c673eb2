//! The node's checks of outside input, callable without a running node.
//!
//! Each function here runs exactly the conversion the service runs on a
//! message (the one in `convert`), and returns the core value it produced,
//! or the refusal the caller would get. They are public so that the fuzz
//! targets in `fuzz-targets/` can feed them arbitrary messages; they read
//! no state and consult no key, so nothing here is a second payment path.

use millicent_core::{Amount, Error, Payment, VendorName};
use millicent_proto as wire;

use crate::{VendorError, convert, gateway};

/// A `PayRequest` as `Pay` and `PayStream` turn it into a payment, before
/// the vendor's keys, prices or spent IDs are consulted.
pub fn pay_request(request: wire::PayRequest) -> Result<Payment, Error> {
    convert::payment(request)
}

/// Checks a `GrantLicenceRequest` as `GrantLicence` does, before the
/// licence token and the vendors served are consulted; returns the vendor
/// asked for.
pub fn licence_request(request: wire::GrantLicenceRequest) -> Result<VendorName, Error> {
    convert::licence_request(request).map(|wanted| wanted.vendor)
}

/// The payment headers of an HTTP request to the gateway, as the gateway
/// turns them into a payment of `vendor`'s scrip for the web request
/// `request`, before keys, prices or spent IDs are consulted; `None` when
/// the request carries no payment header.
pub fn payment_headers(
    headers: &hyper::HeaderMap,
    vendor: &VendorName,
    request: &str,
) -> Option<Result<Payment, VendorError>> {
    let request = gateway::payment_request(headers, vendor, request)?;
    Some(request.and_then(|request| Ok(convert::payment(request)?)))
}

/// Checks a `SellScripBlockRequest` as `SellScripBlock` does once the
/// licence token is accepted; returns the vendor, count and value.
pub fn block_request(
    request: wire::SellScripBlockRequest,
) -> Result<(VendorName, u32, Amount), Error> {
    convert::block_request(request).map(|wanted| (wanted.vendor, wanted.count, wanted.value))
}

/// Checks a `RedemptionsRequest` as `ReportRedemptions` does once the
/// licence token is accepted; returns the series and first sequence
/// numbers asked for.
pub fn redemptions_request(request: wire::RedemptionsRequest) -> Result<Vec<(u32, u32)>, Error> {
    convert::redemptions_query(request).map(|query| query.series)
}
