//! The Millicent load generator, as a library for the `millicent-bench`
//! binary and for end-to-end tests.
//!
//! - [`cluster`] runs a local network of separate processes from a file;
//! - [`dev_ca`] writes a development certificate authority;
//! - [`network`] starts a broker and a vendor node in this process;
//! - [`exchange`] buys vendor scrip from a broker as fast as it answers;
//! - [`load`] funds simulated customers and runs payments against any network
//!   (the demo);
//! - [`traffic`] is the load generator: customers doing a [`mix`] of
//!   payments, broker operations and attacks against one or many brokers
//!   and vendor nodes, at a target rate or as fast as they are answered;
//! - [`record`] keeps a run's latency histograms and its timeline, which
//!   [`plot`] draws;
//! - [`report`] summarises a run as a table and as JSON;
//! - [`restart`] times the restart of a vendor node holding many spent IDs;
//! - [`transport`] measures the gRPC ceiling of unary calls on this machine.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cluster;
pub mod dev_ca;
pub mod exchange;
pub mod load;
pub mod mix;
pub mod network;
pub mod plot;
pub mod record;
pub mod report;
pub mod restart;
pub mod traffic;
pub mod transport;
