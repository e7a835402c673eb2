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
            BrokerError::UnknownAccount { .. } | BrokerError::UnknownVendor { .. } => {
                Code::NotFound
            }
            BrokerError::InsufficientFunds { .. } => Code::FailedPrecondition,
            BrokerError::DoubleSpend { .. } => Code::AlreadyExists,
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
        status
            .metadata_mut()
            .insert(REASON_KEY, MetadataValue::from_static(self.reason()));
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
        ];
        for (error, code, reason) in cases {
            let status = error.to_status();
            assert_eq!(status.code(), code, "{error}");
            assert_eq!(reason_of(&status), reason);
        }
    }
}
