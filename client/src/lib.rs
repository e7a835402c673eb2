//! The Millicent customer side: protocol calls, a wallet, and the
//! `millicent` command line.
//!
//! A customer opens an account at a broker, buys broker scrip from it,
//! exchanges broker scrip for scrip of a vendor, and pays the vendor with
//! that scrip, keeping the change. This crate does each of those steps:
//!
//! - [`protocol`]: one stateless function per call to a broker or vendor
//!   node, which checks the reply the way the protocol requires (stamps,
//!   change, values). The load generator drives these directly.
//! - [`wallet`]: a JSON file of broker accounts, scrip and history, locked
//!   while in use and written atomically with owner-only permissions, and
//!   the operations that spend from it safely across crashes, lost replies
//!   and concurrent commands.
//! - [`web`] and [`Wallet::pay_web`]: paying for HTTP resources from a
//!   vendor's `402 Payment Required` offer.
//! - [`proxy`]: the local HTTP proxy that pays such offers, and the wallet
//!   page.
//! - [`convert`]: the one place where wire messages become protocol types.
//! - [`ClientError`]: every failure, with the server's machine-readable
//!   reason when it refused.
//!
//! # What this crate does not do
//!
//! - It trusts no certificate authority by itself: `https://` URLs are
//!   dialled only once the process has installed the authorities to trust
//!   (and, for mutual TLS, a client certificate), which the command-line
//!   clients do from [`millicent_transport::TlsOptions`].
//! - The wallet file is encrypted at rest only when it is given a
//!   passphrase ([`Passphrase`]); otherwise it relies on owner-only file
//!   permissions, like an SSH key without a passphrase, and refuses a file
//!   that other users can read.
//! - The proxy pays only for plain HTTP: inside an HTTPS tunnel it sees
//!   nothing to pay for.
//! - Only broker scrip is refunded ([`Wallet::refund`]): vendor scrip is
//!   held until it is spent or expires.
//! - An exchange spends one piece of broker scrip, as the protocol has it:
//!   pieces are not combined, so buy broker scrip in amounts at least the
//!   top-up (`millicent limits --top-up`) rather than in many small ones.

#![forbid(unsafe_code)]

pub mod convert;
mod error;
pub mod protocol;
pub mod proxy;
pub mod stream;
pub mod wallet;
pub mod web;

pub use convert::{scrip_from_wire, scrip_to_wire};
pub use error::{ClientError, REASON_METADATA_KEY, ScripFate};
pub use protocol::{
    AccountKey, BoughtScrip, BrokerInfoSummary, ClusterMap, Credited, Exchanged, Paid,
    PreparedExchange, Refunded, Renewed, ShardOwner, VendorOfferSummary, account_auth, broker_info,
    buy_broker_scrip, exchange, open_account, pay, prices, refund, renew_vendor_scrip,
};
pub use wallet::{Passphrase, PayOrder, Wallet, WebOrder, WebPurchase};
