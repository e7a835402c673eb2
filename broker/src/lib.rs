//! The Millicent broker: customer accounts, broker scrip, vendor scrip
//! minted under licence, resold from a warehouse or bought from another
//! broker, refunds and renewals, settlement, and double-entry books.
//!
//! A customer opens an account, which the operator credits after a
//! heavyweight payment (a card charge, a bank transfer). The customer turns
//! balance into *broker scrip*: scrip whose vendor is the broker itself. When
//! the customer first needs to pay a vendor, it *exchanges* broker scrip for
//! that vendor's scrip: a secure-variant payment to the broker whose goods
//! are the vendor scrip and its customer secret, sealed for the customer,
//! with change in broker scrip. The broker has the vendor scrip in one of
//! three ways: it mints it under a licence from the vendor's node (one
//! series of the vendor's scrip and one customer selector, with their
//! master secrets), it resells pieces from blocks it bought from the
//! vendor's node (a scrip warehouse), or it buys it from another broker
//! that has one of those (the broker network). Unspent broker scrip can be
//! refunded to an account; vendor scrip that expired unspent can be
//! renewed. Vendor nodes report which scrip they accepted, and the broker
//! settles with them and with other brokers.
//!
//! Accounts are split into shards (by the top byte of the account ID), each
//! with its own store, kept by one node of the broker: several shards may
//! share a process, and several processes share the work according to a
//! cluster map in the configuration. No customer operation needs two
//! shards.
//!
//! # Entry points
//!
//! - [`RunningBroker::start`] serves the gRPC `BrokerService` from a
//!   [`BrokerConfig`]; [`RunningBroker::shutdown`] stops it cleanly. The
//!   `millicent-broker` binary is a thin shell around these two calls and
//!   the operator commands of [`admin`].
//! - [`audit::audit_data_dir`] audits a stopped broker's stores.
//!
//! # Code map
//!
//! - `config`: the TOML configuration, environment overrides and validation;
//! - `cluster`: which node keeps which shard;
//! - `server`: start, serve, background maintenance, shutdown;
//! - `service`: the gRPC handlers, each decode → route → check → persist →
//!   encode;
//! - `shard`: one shard's store and what it holds;
//! - `books`: the double-entry journal and balances;
//! - `accounts`: balances, history, credit references and call replies;
//! - `exchange`: the exchange of broker scrip for vendor scrip;
//! - `stream`: many exchanges on one `ExchangeStream` call;
//! - `refund`: refunds of broker scrip and renewals of expired vendor scrip;
//! - `licences`: licences from vendor nodes, and minting under them;
//! - `warehouse`: blocks of vendor scrip bought and resold;
//! - `network`: buying from and selling to other brokers;
//! - `settlement`: redemption reports, statements and payouts;
//! - [`audit`]: the proof of conservation;
//! - `links`: calls to vendor nodes and other brokers;
//! - `convert`: every conversion between wire messages and core types, with
//!   every field validated there and nowhere else;
//! - [`input`]: the checks of `convert` callable on their own, for fuzzing;
//! - `auth`: operator tokens and the authentication of account calls;
//! - `keys`: the shard's own secrets and broker-scrip series;
//! - `allocate`: dense, never-reused ID# and Cust ID# numbers;
//! - [`admin`]: the operator commands of the binary, as a client;
//! - `telemetry`: metric names and recording.
//!
//! # Invariants
//!
//! - All state lives in the ledger (`millicent-ledger`), one store per
//!   shard; a reply is sent only after `Ledger::commit` has returned for
//!   the writes its request made.
//! - Every operation that moves value is one balanced journal transaction,
//!   written in the same atomic write as the state it describes.
//! - A refused request changes no balance, spends no scrip, and answers with
//!   a gRPC status carrying a `millicent-reason` metadata entry.
//! - The library installs no metrics recorder and no log subscriber; the
//!   binary does.
//!
//! # What the broker does not do yet
//!
//! Vendor scrip that expires unsold in the warehouse, or sold and never
//! redeemed nor renewed, stays in the books at its value: nothing writes it
//! off yet.

#![forbid(unsafe_code)]

mod accounts;
pub mod admin;
mod allocate;
pub mod audit;
mod auth;
mod books;
mod cluster;
mod config;
mod convert;
mod error;
mod exchange;
pub mod input;
mod keys;
mod licences;
mod links;
mod network;
mod refund;
mod server;
mod service;
mod settlement;
mod shard;
mod stream;
mod telemetry;
mod warehouse;

pub use config::{BrokerConfig, BrokerPeerConfig, PeerConfig, VendorConfig};
pub use error::{BrokerError, OWNER_NODE_KEY, OWNER_URL_KEY};
pub use server::{READINESS_SERVICE, RunningBroker};

/// The current time as Unix seconds and milliseconds. A system clock set
/// before 1970 reads as the epoch; that is a misconfigured host, not
/// something a request can cause.
fn unix_now() -> (u64, u64) {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (elapsed.as_secs(), elapsed.as_millis() as u64)
}
