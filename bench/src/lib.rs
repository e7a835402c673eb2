//! The Millicent load generator, as a library for the `millicent-bench`
//! binary and for end-to-end tests.
//!
//! - [`cluster`] runs a local network of separate processes from a file;
//! - [`dev_ca`] writes a development certificate authority;
//! - [`network`] starts a broker and a vendor node in this process;
//! - [`exchange`] buys vendor scrip from a broker as fast as it answers;
//! - [`load`] funds simulated customers and runs payments against any network;
//! - [`report`] summarises a run as a table and as JSON;
//! - [`restart`] times the restart of a vendor node holding many spent IDs;
//! - [`transport`] measures the gRPC ceiling of unary calls on this machine.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cluster;
pub mod dev_ca;
pub mod exchange;
pub mod load;
pub mod network;
pub mod report;
pub mod restart;
pub mod transport;
