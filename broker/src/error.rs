//! The broker's one error type, and how each error goes on the wire.
//!
//! Every refusal becomes a gRPC status whose code says what kind of failure
//! it is and whose `millicent-reason` metadata entry names it in snake_case
//! for programs; the message is for people. No message carries a secret,
//! a token or key material.

use std::net::SocketAddr;

use millicent_core::ErrorClass;
use millicent_core::ScripId;
use millicent_ledger::{DataDirError, LedgerError};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// The gRPC metadata key that names the reason of a refusal.
pub(crate) const REASON_KEY: &str = "millicent-reason";
/// The metadata key naming the node that keeps the shard, on `wrong_node`.
pub const OWNER_NODE_KEY: &str = "millicent-owner-node";
/// The metadata key giving that node's URL, on `wrong_node`.
pub const OWNER_URL_KEY: &str = "millicent-owner-url";

/// Everything the broker can fail at or refuse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The configuration is invalid.
    #[error("invalid configuration: {detail}")]
    Config {
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// The data directory cannot be created or read, or other users can
    /// reach the secrets in it.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The gRPC listener could not be bound.
    #[error("cannot listen on {addr}: {detail}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        detail: String,
    },
    /// The server stopped with an error, or did not stop cleanly.
    #[error("server failed: {detail}")]
    Server {
        /// What happened.
        detail: String,
    },
    /// The durable store failed.
    #[error(transparent)]
    Storage(#[from] LedgerError),
    /// The protocol core refused the input (malformed, forged, expired ...).
    #[error(transparent)]
    Protocol(#[from] millicent_core::Error),
    /// A request field is missing or out of range.
    #[error("invalid {what}: {detail}")]
    InvalidArgument {
        /// The field.
        what: &'static str,
        /// What is wrong with it.
        detail: &'static str,
    },
    /// An amount larger than one account entry can record.
    #[error("{what} of {amount} is more than the limit of {max}")]
    AmountTooLarge {
        /// The field.
        what: &'static str,
        /// The amount asked for.
        amount: u64,
        /// The largest amount allowed.
        max: u64,
    },
    /// The caller did not prove who it is.
    #[error("unauthenticated: {detail}")]
    Unauthenticated {
        /// What was missing or wrong.
        detail: &'static str,
    },
    /// An account call's timestamp is outside the broker's clock window.
    #[error(
        "timestamp {timestamp_ms} ms is more than {window_secs} s from the broker's clock \
         ({now_ms} ms); check the client's clock"
    )]
    StaleTimestamp {
        /// The call's timestamp.
        timestamp_ms: u64,
        /// The broker's time.
        now_ms: u64,
        /// The allowed difference.
        window_secs: u64,
    },
    /// No account has this ID.
    #[error("account {account_id} does not exist")]
    UnknownAccount {
        /// The ID asked for.
        account_id: u64,
    },
    /// The broker does not sell scrip of this vendor.
    #[error("this broker does not sell scrip of vendor {vendor:?}")]
    UnknownVendor {
        /// The vendor asked for.
        vendor: String,
    },
    /// The account's balance does not cover the amount.
    #[error("balance {balance} does not cover {amount}")]
    InsufficientFunds {
        /// The balance.
        balance: u64,
        /// The amount asked for.
        amount: u64,
    },
    /// The broker scrip was already spent on a different exchange.
    #[error("broker scrip {id} was already spent")]
    DoubleSpend {
        /// The scrip's ID#.
        id: ScripId,
    },
    /// No licence for the vendor's scrip is held and none could be obtained.
    #[error("cannot mint scrip of vendor {vendor}: {detail}")]
    VendorUnavailable {
        /// The vendor.
        vendor: String,
        /// Why no licence is available.
        detail: String,
    },
    /// The account or scrip belongs to a shard another node keeps.
    #[error("{what} belongs to shard {shard}, kept by node {node} at {url}; send the call there")]
    WrongNode {
        /// What the call was about: "account 7", "broker scrip 1:2".
        what: String,
        /// Its shard.
        shard: u8,
        /// The node that keeps the shard.
        node: String,
        /// Where that node is reached.
        url: String,
    },
    /// A refund names an account of another shard than the scrip's.
    #[error(
        "broker scrip of shard {shard} can only be refunded to an account of shard {shard},          not to account {account_id}"
    )]
    OtherShard {
        /// The account named.
        account_id: u64,
        /// The shard of the scrip.
        shard: u8,
    },
    /// Vendor scrip presented for renewal has not expired yet.
    #[error("scrip expires at {expires_at}, it is now {now}: pay with it instead of renewing it")]
    NotExpired {
        /// The scrip's expiry.
        expires_at: u64,
        /// The broker's time.
        now: u64,
    },
    /// The vendor reported the scrip presented for renewal as spent.
    #[error("vendor scrip {id} of {vendor} was spent at the vendor and cannot be renewed")]
    SpentAtVendor {
        /// The vendor.
        vendor: String,
        /// The scrip's ID#.
        id: ScripId,
    },
    /// The vendor's scrip is sold only in pieces of one value.
    #[error("vendor {vendor}'s scrip is sold in pieces of {sold}, not {asked}")]
    WrongValue {
        /// The vendor.
        vendor: String,
        /// The value asked for.
        asked: u64,
        /// The value of every piece.
        sold: u64,
    },
    /// A payout larger than what is owed.
    #[error("{counterparty} is owed {owed}; a payout of {amount} would pay more than that")]
    ExceedsOwed {
        /// The vendor or broker.
        counterparty: String,
        /// What is owed in the direction of the payout.
        owed: i128,
        /// The payout asked for.
        amount: u64,
    },
    /// An operator reference used before for a different credit or payout.
    #[error(
        "reference {reference:?} was used before for {recorded}, not {asked}; \
         nothing changed: give a new payment a new reference"
    )]
    ReferenceReused {
        /// The reference.
        reference: String,
        /// What was recorded under it.
        recorded: String,
        /// What this call asked for.
        asked: String,
    },
    /// No such other broker is configured.
    #[error("broker {broker:?} is not one this broker deals with")]
    UnknownBroker {
        /// The name given.
        broker: String,
    },
}

impl BrokerError {
    /// The snake_case reason sent in `millicent-reason` and used as the
    /// `outcome` label of metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            BrokerError::Protocol(error) => error.reason(),
            BrokerError::InvalidArgument { .. } => "malformed",
            BrokerError::AmountTooLarge { .. } => "too_large",
            BrokerError::Unauthenticated { .. } => "unauthenticated",
            BrokerError::StaleTimestamp { .. } => "stale_timestamp",
            BrokerError::UnknownAccount { .. } => "unknown_account",
            BrokerError::UnknownVendor { .. } => "unknown_vendor",
            BrokerError::InsufficientFunds { .. } => "insufficient_funds",
            BrokerError::DoubleSpend { .. } => "double_spend",
            BrokerError::VendorUnavailable { .. } => "vendor_unavailable",
            BrokerError::WrongNode { .. } => "wrong_node",
            BrokerError::OtherShard { .. } => "other_shard",
            BrokerError::NotExpired { .. } => "not_expired",
            BrokerError::SpentAtVendor { .. } => "double_spend",
            BrokerError::WrongValue { .. } => "wrong_value",
            BrokerError::ExceedsOwed { .. } => "exceeds_owed",
            BrokerError::ReferenceReused { .. } => "reference_reused",
            BrokerError::UnknownBroker { .. } => "unknown_broker",
            BrokerError::Storage(_) => "storage",
            BrokerError::Config { .. } => "config",
            BrokerError::DataDir(_) => "data_dir",
            BrokerError::Bind { .. } => "bind",
            BrokerError::Server { .. } => "server",
        }
    }

    /// The gRPC status code of the error.
    pub fn code(&self) -> Code {
        match self {
            BrokerError::Protocol(error) => protocol_code(error),
            BrokerError::InvalidArgument { .. } | BrokerError::AmountTooLarge { .. } => {
                Code::InvalidArgument
            }
            BrokerError::Unauthenticated { .. } | BrokerError::StaleTimestamp { .. } => {
                Code::Unauthenticated
            }
            BrokerError::UnknownAccount { .. }
            | BrokerError::UnknownVendor { .. }
            | BrokerError::UnknownBroker { .. } => Code::NotFound,
            BrokerError::InsufficientFunds { .. }
            | BrokerError::WrongNode { .. }
            | BrokerError::OtherShard { .. }
            | BrokerError::NotExpired { .. }
            | BrokerError::WrongValue { .. }
            | BrokerError::ExceedsOwed { .. } => Code::FailedPrecondition,
            BrokerError::DoubleSpend { .. }
            | BrokerError::SpentAtVendor { .. }
            | BrokerError::ReferenceReused { .. } => Code::AlreadyExists,
            BrokerError::VendorUnavailable { .. } | BrokerError::Storage(_) => Code::Unavailable,
            BrokerError::Config { .. }
            | BrokerError::DataDir(_)
            | BrokerError::Bind { .. }
            | BrokerError::Server { .. } => Code::Internal,
        }
    }

    /// The error as a gRPC status with its reason attached.
    pub fn to_status(&self) -> Status {
        let mut status = Status::new(self.code(), self.to_string());
        let metadata = status.metadata_mut();
        metadata.insert(REASON_KEY, MetadataValue::from_static(self.reason()));
        // Node names and URLs are checked to be visible ASCII when the
        // configuration is loaded, so both always parse.
        if let BrokerError::WrongNode { node, url, .. } = self {
            if let Ok(value) = node.parse() {
                metadata.insert(OWNER_NODE_KEY, value);
            }
            if let Ok(value) = url.parse() {
                metadata.insert(OWNER_URL_KEY, value);
            }
        }
        status
    }
}

/// The gRPC code of a protocol error, by its class.
fn protocol_code(error: &millicent_core::Error) -> Code {
    match error.class() {
        ErrorClass::Invalid => Code::InvalidArgument,
        ErrorClass::Denied => Code::PermissionDenied,
        ErrorClass::Precondition => Code::FailedPrecondition,
    }
}

impl From<BrokerError> for Status {
    fn from(error: BrokerError) -> Status {
        error.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason_of(status: &Status) -> &str {
        status
            .metadata()
            .get(REASON_KEY)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }

    #[test]
    fn every_refusal_carries_its_code_and_reason() {
        let cases = [
            (
                BrokerError::Protocol(millicent_core::Error::BadCertificate),
                Code::PermissionDenied,
                "bad_certificate",
            ),
            (
                BrokerError::Protocol(millicent_core::Error::AmountOverflow),
                Code::InvalidArgument,
                "amount_overflow",
            ),
            (
                BrokerError::Protocol(millicent_core::Error::Expired {
                    expires_at: 1,
                    now: 2,
                }),
                Code::FailedPrecondition,
                "expired",
            ),
            (
                BrokerError::Protocol(millicent_core::Error::InsufficientValue {
                    value: 1,
                    price: 2,
                }),
                Code::FailedPrecondition,
                "insufficient_value",
            ),
            (
                BrokerError::StaleTimestamp {
                    timestamp_ms: 0,
                    now_ms: 1,
                    window_secs: 2,
                },
                Code::Unauthenticated,
                "stale_timestamp",
            ),
            (
                BrokerError::DoubleSpend {
                    id: ScripId::new(1, 2),
                },
                Code::AlreadyExists,
                "double_spend",
            ),
            (
                BrokerError::Storage(LedgerError::Closed),
                Code::Unavailable,
                "storage",
            ),
            (
                BrokerError::NotExpired {
                    expires_at: 2,
                    now: 1,
                },
                Code::FailedPrecondition,
                "not_expired",
            ),
            (
                BrokerError::ExceedsOwed {
                    counterparty: "news".into(),
                    owed: 1,
                    amount: 2,
                },
                Code::FailedPrecondition,
                "exceeds_owed",
            ),
            (
                BrokerError::ReferenceReused {
                    reference: "deposit-1".into(),
                    recorded: "a credit of 5".into(),
                    asked: "a credit of 6".into(),
                },
                Code::AlreadyExists,
                "reference_reused",
            ),
        ];
        for (error, code, reason) in cases {
            let status = error.to_status();
            assert_eq!(status.code(), code, "{error}");
            assert_eq!(reason_of(&status), reason);
        }
    }

    #[test]
    fn wrong_node_names_the_owner() {
        let status = BrokerError::WrongNode {
            what: "account 7".into(),
            shard: 2,
            node: "broker-2".into(),
            url: "http://10.0.0.2:7100".into(),
        }
        .to_status();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason_of(&status), "wrong_node");
        assert_eq!(status.metadata().get(OWNER_NODE_KEY).unwrap(), "broker-2");
        assert_eq!(
            status.metadata().get(OWNER_URL_KEY).unwrap(),
            "http://10.0.0.2:7100"
        );
        assert!(status.message().contains("shard 2"));
    }
}
