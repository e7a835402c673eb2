//! The wire format of the Millicent network: gRPC services and messages.
//!
//! This crate holds the `.proto` schema and the code generated from it, and
//! nothing else. Scrip travels as its canonical bytes (see docs/PROTOCOL.md),
//! so the only place that gives those bytes meaning is `millicent-core`; the
//! services convert and validate every field in one `convert` module each.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Version 1 of the Millicent services.
pub mod v1 {
    tonic::include_proto!("millicent.v1");
}

pub use v1::*;
