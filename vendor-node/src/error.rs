//! The one error type of the vendor node, and how each error goes on the wire.
//!
//! Every refusal becomes a gRPC status whose code says what kind of failure
//! it is and whose `millicent-reason` metadata entry names it in snake_case,
//! for programs. Messages are for people; none contains secret material.

use std::net::SocketAddr;

use millicent_core::ErrorClass;
use millicent_core::{Amount, ScripId, Variant, VendorName};
use millicent_ledger::{DataDirError, LedgerError};
use tonic::{Code, Status};

/// Metadata key of the machine-readable reason of a refusal.
pub const REASON_KEY: &str = "millicent-reason";
/// Metadata key naming the node that owns the scrip's series, on a
/// `wrong_node` refusal.
pub const OWNER_NODE_KEY: &str = "millicent-owner-node";
/// Metadata key giving the URL of the node that owns the scrip's series, on
/// a `wrong_node` refusal.
pub const OWNER_URL_KEY: &str = "millicent-owner-url";

/// Everything a vendor node can fail at or refuse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VendorError {
    /// The configuration is unusable.
    #[error("configuration: {detail}")]
    Config {
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// The data directory cannot be created or read, or other users can
    /// reach the master secrets in it.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {detail}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's reason.
        detail: String,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {detail}")]
    Random {
        /// Its description of the failure.
        detail: String,
    },
    /// Stored key material cannot be read back.
    #[error("stored key record {what} is unreadable: {detail}")]
    CorruptKeys {
        /// Which record.
        what: String,
        /// What is wrong with it.
        detail: &'static str,
    },
    /// The store failed; nothing is accepted until it recovers.
    #[error("storage failed ({0}); payments and licences are refused until the store recovers")]
    Storage(#[from] LedgerError),
    /// The node did not stop cleanly.
    #[error("shutdown: {detail}")]
    Shutdown {
        /// What did not finish.
        detail: String,
    },

    /// The protocol core refused the input.
    #[error("{0}")]
    Protocol(#[from] millicent_core::Error),
    /// The scrip's ID# was already spent by a different request, or its
    /// reply is past the retry window.
    #[error("scrip {id} has already been spent")]
    DoubleSpend {
        /// The ID# of the scrip.
        id: ScripId,
    },
    /// No vendor of that name is served here.
    #[error("vendor {vendor:?} is not served by this node; GetPrices lists the vendors")]
    UnknownVendor {
        /// The name asked for.
        vendor: String,
    },
    /// The vendor sells no item of the requested name. The name itself is
    /// left out: in the private variant it was sent sealed.
    #[error("vendor {vendor} sells no such item; GetPrices lists the items")]
    UnknownItem {
        /// The vendor.
        vendor: VendorName,
    },
    /// The vendor does not take payments in this variant.
    #[error(
        "vendor {vendor} does not accept the {} variant; GetPrices lists the accepted ones",
        variant.name()
    )]
    VariantNotAccepted {
        /// The vendor.
        vendor: VendorName,
        /// The variant used.
        variant: Variant,
    },
    /// The item costs more than the vendor accepts in the clear variant.
    #[error(
        "vendor {vendor} accepts the clear variant only for prices up to {}, and this item \
         costs {}; pay in a stamped variant (GetPrices lists each item's variants)",
        limit.units(),
        price.units()
    )]
    ClearAboveLimit {
        /// The vendor.
        vendor: VendorName,
        /// The item's price.
        price: Amount,
        /// The vendor's `clear_max_price`.
        limit: Amount,
    },
    /// The scrip's series belongs to another node of the vendor.
    #[error("series {series} belongs to node {node} at {url}; send the payment there")]
    WrongNode {
        /// The scrip's series.
        series: u32,
        /// The node that owns it.
        node: String,
        /// Where that node is reached.
        url: String,
    },
    /// The call needs a credential it did not carry.
    #[error("{detail}")]
    Unauthenticated {
        /// What was missing or wrong.
        detail: &'static str,
    },
    /// A numbering space of the vendor is used up.
    #[error("vendor {vendor} has run out of {what}")]
    Exhausted {
        /// The vendor.
        vendor: VendorName,
        /// What ran out.
        what: &'static str,
    },
    /// A `PayStream` batch holds more payments than a batch may.
    #[error(
        "a PayStream batch holds {payments} payments, more than the limit of {max}; \
         send them in smaller batches"
    )]
    BatchTooLarge {
        /// Payments in the batch.
        payments: usize,
        /// The limit.
        max: usize,
    },
    /// Every series number of the node's `series_range` is used.
    #[error(
        "vendor {vendor} has used every series number of this node's series_range \
         [{first}, {last}]; give the node a further range that no other node owns"
    )]
    SeriesExhausted {
        /// The vendor.
        vendor: VendorName,
        /// The first series of the range.
        first: u32,
        /// The last series of the range.
        last: u32,
    },
}

impl VendorError {
    /// The stable snake_case reason sent as `millicent-reason` and used as
    /// the `outcome` label of metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            VendorError::Protocol(error) => error.reason(),
            VendorError::DoubleSpend { .. } => "double_spend",
            VendorError::UnknownVendor { .. } => "unknown_vendor",
            VendorError::UnknownItem { .. } => "unknown_item",
            VendorError::VariantNotAccepted { .. } | VendorError::ClearAboveLimit { .. } => {
                "variant_not_accepted"
            }
            VendorError::WrongNode { .. } => "wrong_node",
            VendorError::Unauthenticated { .. } => "unauthenticated",
            VendorError::Storage(_) => "storage",
            VendorError::BatchTooLarge { .. } => "too_large",
            VendorError::Exhausted { .. } | VendorError::SeriesExhausted { .. } => "exhausted",
            VendorError::Config { .. }
            | VendorError::DataDir(_)
            | VendorError::Bind { .. }
            | VendorError::Random { .. }
            | VendorError::CorruptKeys { .. }
            | VendorError::Shutdown { .. } => "internal",
        }
    }

    /// The gRPC status code that fits the error.
    pub fn code(&self) -> Code {
        match self {
            VendorError::Protocol(error) => protocol_code(error),
            VendorError::DoubleSpend { .. } => Code::AlreadyExists,
            VendorError::UnknownVendor { .. } | VendorError::UnknownItem { .. } => Code::NotFound,
            VendorError::VariantNotAccepted { .. }
            | VendorError::ClearAboveLimit { .. }
            | VendorError::WrongNode { .. } => Code::FailedPrecondition,
            VendorError::Unauthenticated { .. } => Code::Unauthenticated,
            VendorError::Storage(_) => Code::Unavailable,
            VendorError::BatchTooLarge { .. } => Code::InvalidArgument,
            VendorError::Exhausted { .. } | VendorError::SeriesExhausted { .. } => {
                Code::ResourceExhausted
            }
            _ => Code::Internal,
        }
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

impl From<VendorError> for Status {
    fn from(error: VendorError) -> Status {
        let mut status = Status::new(error.code(), error.to_string());
        let metadata = status.metadata_mut();
        if let Ok(value) = error.reason().parse() {
            metadata.insert(REASON_KEY, value);
        }
        // Node names and URLs are checked to be visible ASCII when the
        // configuration is loaded, so both always parse.
        if let VendorError::WrongNode { node, url, .. } = &error {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_code_and_reason() {
        let status = Status::from(VendorError::Protocol(millicent_core::Error::BadCertificate));
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(
            status.metadata().get(REASON_KEY).unwrap(),
            "bad_certificate"
        );

        let status = Status::from(VendorError::Protocol(millicent_core::Error::Expired {
            expires_at: 1,
            now: 2,
        }));
        assert_eq!(status.code(), Code::FailedPrecondition);

        let status = Status::from(VendorError::Storage(LedgerError::Closed));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status
                .message()
                .contains("refused until the store recovers")
        );
        assert_eq!(status.metadata().get(REASON_KEY).unwrap(), "storage");

        let status = Status::from(VendorError::WrongNode {
            series: 1_000_001,
            node: "vendor-2".to_owned(),
            url: "http://10.0.0.2:7200".to_owned(),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.metadata().get(REASON_KEY).unwrap(), "wrong_node");
        assert_eq!(status.metadata().get(OWNER_NODE_KEY).unwrap(), "vendor-2");
        assert_eq!(
            status.metadata().get(OWNER_URL_KEY).unwrap(),
            "http://10.0.0.2:7200"
        );
        assert!(
            status
                .message()
                .contains("node vendor-2 at http://10.0.0.2:7200")
        );
    }
}
