//! The broker's checks of outside input, callable without a running broker.
//!
//! Each function here runs exactly the conversion the service runs on a
//! message (the one in `convert`) and returns the core value it produced, or
//! the refusal the caller would get. They are public so that the fuzz
//! targets in `fuzz-targets/` can feed them arbitrary messages; they read no
//! state, check no MAC and consult no key.

use millicent_core::broker::RefundRequest;
use millicent_core::exchange::ExchangeRequest;
use millicent_core::{Amount, Payment, Scrip, Suite, VendorName};
use millicent_proto as proto;

use crate::accounts::Method;
use crate::config::Warehousing;
use crate::{BrokerError, convert, network, warehouse};

/// An `ExchangeRequest` as the secure-variant payment `Exchange` verifies.
pub fn exchange(request: proto::ExchangeRequest) -> Result<Payment, BrokerError> {
    convert::payment_from_wire(request)
}

/// What an exchange asks for, from the plaintext request of a verified
/// exchange payment.
pub fn exchange_plaintext(request: &[u8]) -> Result<ExchangeRequest, BrokerError> {
    convert::exchange_request_from_plaintext(request)
}

/// Checks a `BuyBrokerScripRequest` as `BuyBrokerScrip` does before it
/// looks at the account, for a broker whose scrip is of `suite`.
pub fn buy_broker_scrip(
    request: proto::BuyBrokerScripRequest,
    suite: Suite,
) -> Result<(), BrokerError> {
    convert::purchase_from_wire(request, suite).map(drop)
}

/// Checks a `GetAccountRequest` as `GetAccount` does before it looks at the
/// account, for a broker whose account MACs are of `suite`.
pub fn get_account(request: proto::GetAccountRequest, suite: Suite) -> Result<(), BrokerError> {
    convert::account_call_from_wire(request.auth, Method::GetAccount, suite).map(drop)
}

/// Checks a `CreditRequest` as `Credit` does once the operator token is
/// accepted.
pub fn credit(request: proto::CreditRequest) -> Result<(), BrokerError> {
    convert::credit_from_wire(request).map(drop)
}

/// Checks a licence a vendor node granted for `vendor`, at `now` (Unix
/// seconds), as the broker does before it mints under it.
pub fn licence(
    licence: proto::Licence,
    vendor: &VendorName,
    now: u64,
) -> Result<(), millicent_core::Error> {
    convert::licence_from_wire(licence, vendor, now).map(drop)
}

/// A `RefundRequest` as the secure-variant payment `Refund` verifies.
pub fn refund(request: proto::RefundRequest) -> Result<Payment, BrokerError> {
    convert::refund_from_wire(request)
}

/// What a refund asks for, from the plaintext request of a verified refund
/// payment.
pub fn refund_plaintext(request: &[u8]) -> Result<RefundRequest, BrokerError> {
    convert::refund_request_from_plaintext(request)
}

/// A `RenewRequest` as `RenewVendorScrip` checks it before it looks up the
/// scrip: the shard and the expired scrip.
pub fn renewal(request: proto::RenewRequest) -> Result<(u8, Scrip), BrokerError> {
    convert::renewal_from_wire(request).map(|renewal| (renewal.shard, renewal.scrip))
}

/// A `PeerExchangeRequest` as `PeerExchange` checks it once the other
/// broker's token is accepted: the request ID, vendor and value.
pub fn peer_purchase(
    request: proto::PeerExchangeRequest,
) -> Result<([u8; 16], VendorName, Amount), BrokerError> {
    convert::peer_purchase_from_wire(request)
        .map(|purchase| (purchase.request_id, purchase.vendor, purchase.value))
}

/// A `PayoutRequest` as `RecordPayout` checks it once the operator token
/// is accepted.
pub fn payout(request: proto::PayoutRequest) -> Result<(), BrokerError> {
    convert::payout_from_wire(request).map(drop)
}

/// A block a vendor node sold for `vendor`, as the warehouse checks it
/// before storing it: `count` pieces of `value`, at `now`; the pieces.
pub fn scrip_block(
    block: &proto::ScripBlock,
    vendor: &VendorName,
    value: Amount,
    count: u32,
    now: u64,
) -> Result<Vec<Scrip>, String> {
    let settings = Warehousing {
        value,
        block: count,
        low_water: 0,
    };
    warehouse::check_block(block, vendor, settings, now)
        .map(|pieces| pieces.into_iter().map(|piece| piece.scrip).collect())
}

/// What another broker sold, as the buying broker checks it: `value` of
/// `vendor`'s scrip for at most `max_fee` on top, at `now`; the scrip and
/// the price.
pub fn peer_reply(
    reply: proto::PeerExchangeReply,
    vendor: &VendorName,
    value: Amount,
    max_fee: Amount,
    now: u64,
) -> Result<(Scrip, Amount), String> {
    let seller = VendorName::new("seller").map_err(|error| error.to_string())?;
    network::check_bought(reply, &seller, vendor, value, max_fee, now)
        .map(|bought| (bought.scrip, bought.price))
}
