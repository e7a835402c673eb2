//! The Millicent broker: customer accounts, broker scrip, and vendor scrip
//! minted under licence.
//!
//! A customer opens an account, which the operator credits after a
//! heavyweight payment (a card charge, a bank transfer). The customer turns
//! balance into *broker scrip*: scrip whose vendor is the broker itself. When
//! the customer first needs to pay a vendor, it *exchanges* broker scrip for
//! that vendor's scrip: a secure-variant payment to the broker whose goods
//! are the vendor scrip and its customer secret, sealed for the customer,
//! with change in broker scrip. The broker mints the vendor scrip itself,
//! under a licence it obtains from the vendor's node: one series of the
//! vendor's scrip and one customer selector, with their master secrets.
//!
//! # Entry points
//!
//! - [`RunningBroker::start`] serves the gRPC `BrokerService` from a
//!   [`BrokerConfig`]; [`RunningBroker::shutdown`] stops it cleanly. The
//!   `millicent-broker` binary is a thin shell around these two calls.
//!
//! # Code map
//!
//! - `config`: the TOML configuration, environment overrides and validation;
//! - `server`: start, serve, background maintenance, shutdown;
//! - `service`: the gRPC handlers, each decode → check → persist → encode;
//! - `exchange`: the exchange of broker scrip for vendor scrip;
//! - `convert`: every conversion between wire messages and core types, with
//!   every field validated there and nowhere else;
//! - [`input`]: the checks of `convert` callable on their own, for fuzzing;
//! - `auth`: operator tokens and the authentication of account calls;
//! - `accounts`: balances, history, credit references and call replies;
//! - `keys`: the broker's own secrets and broker-scrip series;
//! - `licences`: licences from vendor nodes, and minting under them;
//! - `allocate`: dense, never-reused ID# and Cust ID# numbers;
//! - `telemetry`: metric names and recording.
//!
//! # Invariants
//!
//! - All state lives in the ledger (`millicent-ledger`); a reply is sent only
//!   after `Ledger::commit` has returned for the writes its request made.
//! - A refused request changes no balance, spends no scrip, and answers with
//!   a gRPC status carrying a `millicent-reason` metadata entry.
//! - The library installs no metrics recorder and no log subscriber; the
//!   binary does.
//!
//! # What the broker does not do yet
//!
//! It mints vendor scrip only under licence: there is no scrip warehouse, no
//! settlement with vendors, no refunds, no trade between brokers and no
//! double-entry audit. Accounts are not sharded: one process owns them all.

#![forbid(unsafe_code)]

mod accounts;
mod allocate;
mod auth;
mod config;
mod convert;
mod error;
mod exchange;
pub mod input;
mod keys;
mod licences;
mod server;
mod service;
mod telemetry;

pub use config::{BrokerConfig, VendorConfig};
pub use error::BrokerError;
pub use server::RunningBroker;

/// The current time as Unix seconds and milliseconds. A system clock set
/// before 1970 reads as the epoch; that is a misconfigured host, not
/// something a request can cause.
fn unix_now() -> (u64, u64) {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (elapsed.as_secs(), elapsed.as_millis() as u64)
}
