//! The broker's checks of outside input, callable without a running broker.
//!
//! Each function here runs exactly the conversion the service runs on a
//! message (the one in `convert`) and returns the core value it produced, or
//! the refusal the caller would get. They are public so that the fuzz
//! targets in `fuzz-targets/` can feed them arbitrary messages; they read no
//! state, check no MAC and consult no key.

use millicent_core::exchange::ExchangeRequest;
use millicent_core::{Payment, Suite, VendorName};
use millicent_proto as proto;

use crate::accounts::Method;
use crate::{BrokerError, convert};

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
