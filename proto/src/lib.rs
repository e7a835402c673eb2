//! The wire format of the Millicent network: gRPC services and messages.
//!
//! This crate holds the `.proto` schema and the code generated from it, and
//! nothing else. Scrip travels as its canonical bytes (see docs/PROTOCOL.md),
//! so the only place that gives those bytes meaning is `millicent-core`; the
//! services convert and validate every field in one `convert` module each.
//!
//! Four messages carry secrets in the clear: a [`Licence`] (two master
//! secrets), an [`OpenAccountReply`] (an account key), and a
//! [`BlockPiece`] and a [`PeerExchangeReply`] (a customer secret each).
//! Their `Debug` prints those fields as `..`, so a message logged by
//! mistake leaks nothing.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Version 1 of the Millicent services.
pub mod v1 {
    tonic::include_proto!("millicent.v1");
}

pub use v1::*;

impl std::fmt::Debug for Licence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Licence")
            .field("vendor", &self.vendor)
            .field("suite", &self.suite)
            .field("series", &self.series)
            .field("expires_at", &self.expires_at)
            .field("master_scrip_secret", &Redacted)
            .field("customer_selector", &self.customer_selector)
            .field("master_customer_secret", &Redacted)
            .field("id_limit", &self.id_limit)
            .finish()
    }
}

impl std::fmt::Debug for OpenAccountReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAccountReply")
            .field("account_id", &self.account_id)
            .field("account_key", &Redacted)
            .finish()
    }
}

impl std::fmt::Debug for BlockPiece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockPiece")
            .field("scrip", &self.scrip)
            .field("customer_secret", &Redacted)
            .finish()
    }
}

impl std::fmt::Debug for PeerExchangeReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerExchangeReply")
            .field("vendor_scrip", &self.vendor_scrip)
            .field("customer_secret", &Redacted)
            .field("price", &self.price)
            .finish()
    }
}

/// Stands in for a secret field under `Debug`.
struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_leaves_out_secrets() {
        let licence = Licence {
            vendor: "news.example".to_owned(),
            master_scrip_secret: vec![0xab; 32],
            master_customer_secret: vec![0xcd; 32],
            ..Licence::default()
        };
        let reply = OpenAccountReply {
            account_id: 7,
            account_key: vec![0xef; 16],
        };
        let piece = BlockPiece {
            scrip: None,
            customer_secret: vec![0x9a; 16],
        };
        let peer = PeerExchangeReply {
            vendor_scrip: None,
            customer_secret: vec![0x7b; 16],
            price: 3,
        };
        let text = format!(
            "{licence:?} {licence:#?} {reply:?} {reply:#?} {piece:?} {piece:#?} {peer:?} {peer:#?}"
        );
        for byte in [0xabu8, 0xcd, 0xef, 0x9a, 0x7b] {
            assert!(!text.contains(&format!("{byte}")), "{text}");
            assert!(!text.contains(&format!("{byte:x}")), "{text}");
        }
        assert!(text.contains("news.example") && text.contains("account_id: 7"));
    }
}
