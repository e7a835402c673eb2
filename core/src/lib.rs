//! The Millicent protocol, without I/O.
//!
//! Millicent is a micropayment protocol for prices too small for a card
//! payment. Its currency is *scrip*: a certificate-bearing token valid at
//! exactly one vendor, which that vendor checks alone, with a keyed hash and a
//! local lookup, and no call to anyone else.
//!
//! This crate is everything a second implementation would need to
//! interoperate, as pure functions and plain data:
//!
//! - [`scrip`]: the scrip body, its canonical encoding, ID# and Cust ID#;
//! - [`suite`]: the cipher suites (keyed hash and sealing) as values;
//! - [`keys`]: master secrets, certificates and customer secrets;
//! - [`payment`]: request and reply stamps, the three variants, change;
//! - [`exchange`]: the broker's exchange request and sealed customer secrets;
//! - [`broker`]: shards of accounts and broker scrip, refunds, renewals;
//! - [`account`]: authentication of account calls to a broker;
//! - [`spent`]: the spent-ID set, one bitmap per series;
//! - [`amount`]: amounts in the smallest unit, with overflow checked;
//! - [`web`]: paying for HTTP resources: the web request, header values
//!   and the offer of a `402 Payment Required` reply.
//!
//! # What this crate does not do
//!
//! It performs no I/O, spawns no tasks, reads no clock and draws no random
//! numbers: the current time and every nonce are arguments. Storage,
//! durability and the network belong to the services; docs/PROTOCOL.md
//! describes the same bytes for readers who are not using Rust.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod account;
pub mod amount;
pub mod broker;
mod error;
pub mod exchange;
pub mod keys;
pub mod payment;
pub mod scrip;
pub mod secret;
pub mod spent;
pub mod suite;
pub mod web;

pub use amount::Amount;
pub use error::{Error, ErrorClass};
pub use keys::{CustomerKey, KeyRing, SeriesKey};
pub use payment::{Payment, PaymentReply, Variant, VerifiedPayment};
pub use scrip::{CustId, Properties, Scrip, ScripBody, ScripId, VendorName};
pub use secret::{AccountKey, CustomerSecret, MasterSecret};
pub use spent::{SeriesBitmap, SpentSet};
pub use suite::{Mac, SealPurpose, Suite};

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
