//! The Millicent vendor validation node.
//!
//! A vendor node takes payments in vendor scrip for one or more vendors and
//! checks each one alone: the certificate and customer secret with the
//! vendor's master secrets, double spending with a local lookup of spent
//! ID#s. It answers with the goods, change scrip and a reply stamp, and only
//! once the spend is durable. It also licenses brokers to mint a vendor's
//! scrip, one new series and customer selector per licence.
//!
//! The node serves `VendorService` (see `proto/millicent.proto`) over gRPC.
//! [`RunningVendor`] starts one in-process, which is how the `millicent-vendor`
//! binary, the load generator and the end-to-end tests run it:
//!
//! ```no_run
//! # async fn demo() -> Result<(), millicent_vendor::VendorError> {
//! use millicent_vendor::{RunningVendor, VendorConfig};
//!
//! let config = VendorConfig {
//!     listen: "127.0.0.1:0".parse().unwrap(),
//!     data_dir: "/tmp/millicent-vendor-demo".into(),
//!     ..VendorConfig::default()
//! };
//! let node = RunningVendor::start(config).await?;
//! println!("serving on {}", node.addr());
//! node.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Where things are
//!
//! - `convert`: the wire boundary; every field a client sends is checked
//!   there. [`input`] makes its checks callable on their own, for fuzzing.
//! - `pay`: the payment path and its durability argument.
//! - `stream`: many payments on one `PayStream` call, each on the path of
//!   `pay`.
//! - `cluster`: which node owns which series, when a vendor is sharded
//!   across nodes.
//! - `keys`: master secrets, series and licences in the ledger table `keys`.
//! - `change`: dense, durably reserved ID#s for change.
//! - `gateway`: the HTTP 402 gateway, which sells web resources on the
//!   path of `pay`.
//! - `blocks`: blocks of ready-made scrip sold to brokers (the scrip
//!   warehouse).
//! - `redemptions`: reports to brokers of which of their scrip was spent,
//!   read from the spent-ID bitmaps, for settlement.
//! - `maintenance`: pruning of reply records, forgetting of expired series,
//!   replacement of the change series.
//!
//! # What this crate does not do
//!
//! It installs no metrics recorder: a process runs only one, and a process
//! may host a broker and a vendor node together. It records through the
//! `metrics` macros into whatever recorder the process installed (the
//! binary installs a Prometheus exporter). Its HTTP 402 gateway speaks
//! plain HTTP only (the gRPC server serves TLS with a `[tls]` table): put a
//! TLS-terminating proxy in front of a gateway facing an untrusted network.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod blocks;
mod change;
mod cluster;
mod config;
mod convert;
mod error;
mod gateway;
pub mod input;
mod keys;
mod maintenance;
mod node;
mod pay;
mod recipe;
mod redemptions;
mod server;
mod service;
mod stream;
mod telemetry;
mod vendor;

pub use config::{
    DEFAULT_CHECKPOINT_INTERVAL_MS, DEFAULT_SERIES_RANGE, DurabilityMode, ENV_DATA_DIR,
    ENV_HEALTH_LISTEN, ENV_LICENCE_TOKEN, ENV_LISTEN, ENV_METRICS_LISTEN, ENV_TLS_CERT,
    ENV_TLS_CLIENT_CA, ENV_TLS_KEY, ItemSpec, MAX_CHECKPOINT_INTERVAL_MS, MIN_SERIES_LIFETIME_SECS,
    PeerSpec, VendorConfig, VendorSpec,
};
pub use error::{OWNER_NODE_KEY, OWNER_URL_KEY, REASON_KEY, VendorError};
pub use gateway::{GatewaySpec, MIN_HEADER_BYTES, OfferBrokerSpec, PriceSpec};
pub use server::{MAX_MESSAGE_BYTES, READINESS_SERVICE, RunningVendor};
pub use stream::MAX_BATCH;
