//! The one error type of the client: what went wrong, and what to do about it.
//!
//! A refusal by a broker or vendor arrives as a gRPC status whose
//! `millicent-reason` metadata entry names the reason in snake_case; it
//! becomes [`ClientError::Refused`] and keeps that reason for callers that
//! decide on it (the wallet drops spent scrip on `double_spend`, the load
//! generator counts outcomes by reason). Every message is one line that a
//! person can act on, and none carries secret material.

use std::path::PathBuf;

use millicent_core::Amount;

/// The gRPC metadata entry in which servers name the reason for a refusal.
pub const REASON_METADATA_KEY: &str = "millicent-reason";

/// Longest reason accepted from a server; anything longer is not a reason.
const MAX_REASON_LEN: usize = 64;

/// Everything a client call or wallet operation can fail with.
///
/// Each message includes its cause, so the variants report no separate
/// `source()`; the cause is a field for programs that need it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server understood the call and refused it for a named reason.
    #[error("refused ({reason}): {message}; {}", refusal_hint(reason))]
    Refused {
        /// Machine-readable reason from the `millicent-reason` metadata entry.
        reason: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// The call failed with a gRPC status that names no Millicent reason:
    /// the connection broke, a deadline passed, or a proxy answered.
    #[error("call failed ({code:?}): {message}; {}", status_hint(*code))]
    Rpc {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// No connection could be made to a server.
    #[error(
        "cannot reach {url}: {}; check the URL and that the server is running",
        innermost(error)
    )]
    Transport {
        /// The URL that was dialled.
        url: String,
        /// What the transport reported.
        error: tonic::transport::Error,
    },
    /// A server's reply failed the protocol's checks (a bad reply stamp,
    /// change that does not match, malformed scrip). The server is
    /// misbehaving or something altered the reply on the way.
    #[error("the reply failed its checks: {0}; do not trust this server's answer")]
    Protocol(millicent_core::Error),
    /// A server's reply was well-formed but is not what was asked for.
    #[error("the {call} reply {detail}; do not trust this server's answer")]
    BadReply {
        /// The call that was answered.
        call: &'static str,
        /// What is wrong with the reply.
        detail: String,
    },
    /// An argument given by the caller is not acceptable.
    #[error("{what} {value:?} is not valid: {error}")]
    InvalidArgument {
        /// What the argument is.
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it was refused.
        error: millicent_core::Error,
    },
    /// An input is larger than the protocol or the wallet allows.
    #[error("{what} is {actual} bytes, more than the limit of {max}")]
    Limit {
        /// What was too large.
        what: &'static str,
        /// Its size.
        actual: u64,
        /// The limit.
        max: u64,
    },
    /// Reading or writing the wallet file failed.
    #[error("cannot {action} wallet {}: {error}", path.display())]
    Wallet {
        /// The wallet file.
        path: PathBuf,
        /// What was being done: "read", "write", ...
        action: &'static str,
        /// What the operating system reported.
        error: std::io::Error,
    },
    /// There is no wallet file at the path given.
    #[error("no wallet at {}; create one with `millicent create` or give --wallet", path.display())]
    WalletNotFound {
        /// The path looked at.
        path: PathBuf,
    },
    /// A wallet is to be created where a file already exists.
    #[error("{} already exists; refusing to overwrite it, choose another path", path.display())]
    WalletExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The wallet file does not hold a wallet this program can read.
    #[error("wallet {} is damaged: {detail}; restore it from a backup", path.display())]
    WalletCorrupt {
        /// The wallet file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The wallet has joined no broker, or none of the given name.
    #[error("{detail}; join a broker with `millicent join --broker URL`")]
    NoBroker {
        /// Which broker was looked for and which are known.
        detail: String,
    },
    /// The wallet holds no scrip that can pay, and cannot get any.
    #[error("no scrip to pay {vendor} {needed}: {detail}")]
    NoScrip {
        /// The vendor to be paid.
        vendor: String,
        /// The amount needed.
        needed: Amount,
        /// Why none is available, and what to do.
        detail: String,
    },
    /// The vendor does not accept the payment variant asked for.
    #[error(
        "vendor {vendor} does not accept the {variant} variant (it accepts {accepted}); \
        choose another with --variant"
    )]
    VariantNotAccepted {
        /// The vendor.
        vendor: String,
        /// The variant asked for.
        variant: &'static str,
        /// The variants it accepts.
        accepted: String,
    },
    /// The vendor node does not sell the item asked for.
    #[error("{vendor_url} does not sell {item:?}{}; see `millicent prices --vendor {vendor_url}`",
        vendor.as_deref().map(|v| format!(" from vendor {v}")).unwrap_or_default())]
    NoSuchItem {
        /// The vendor node.
        vendor_url: String,
        /// The vendor asked for, if one was named.
        vendor: Option<String>,
        /// The item asked for.
        item: String,
    },
}

impl ClientError {
    /// The error for a failed gRPC call: [`ClientError::Refused`] when the
    /// status carries a well-formed `millicent-reason`, [`ClientError::Rpc`]
    /// otherwise.
    pub fn from_status(status: tonic::Status) -> ClientError {
        let reason = status
            .metadata()
            .get(REASON_METADATA_KEY)
            .and_then(|value| value.to_str().ok())
            .filter(|reason| is_reason(reason));
        match reason {
            Some(reason) => ClientError::Refused {
                reason: reason.to_owned(),
                code: status.code(),
                message: status.message().to_owned(),
            },
            None => ClientError::Rpc {
                code: status.code(),
                message: status.message().to_owned(),
            },
        }
    }

    /// The server's machine-readable reason, if the server refused the call.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClientError::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Whether the outcome of the call is unknown: it may have reached the
    /// server and taken effect, with the reply lost. Such a call is safe to
    /// repeat with the same scrip and stamp, and must not be forgotten.
    pub fn outcome_unknown(&self) -> bool {
        use tonic::Code;
        matches!(
            self,
            ClientError::Rpc {
                code: Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Cancelled
                    | Code::Unknown
                    | Code::Internal
                    | Code::Aborted
                    | Code::DataLoss,
                ..
            }
        )
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> ClientError {
        ClientError::from_status(status)
    }
}

impl From<millicent_core::Error> for ClientError {
    fn from(error: millicent_core::Error) -> ClientError {
        ClientError::Protocol(error)
    }
}

/// The message of the last error in `error`'s source chain: for a failed
/// connection, the operating system's reason rather than "transport error".
fn innermost(error: &dyn std::error::Error) -> String {
    let mut last = error;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// Whether `reason` looks like a reason: short snake_case ASCII.
fn is_reason(reason: &str) -> bool {
    !reason.is_empty()
        && reason.len() <= MAX_REASON_LEN
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// What a person can do about a refusal.
fn refusal_hint(reason: &str) -> &'static str {
    match reason {
        "double_spend" => "this scrip was already spent and cannot be used again",
        "expired" => "this scrip has expired; a broker may exchange it for fresh scrip",
        "bad_certificate" => "the scrip is not genuine or was issued under another key",
        "insufficient_funds" => "credit the account or ask for less",
        "insufficient_value" => "the scrip is worth too little; buy more scrip or ask for less",
        "unauthenticated" | "bad_account_mac" => "check the account key kept in the wallet",
        "stale_timestamp" | "clock_skew" => "check this computer's clock",
        "overloaded" | "resource_exhausted" => "the server is busy; try again shortly",
        "wrong_shard" => "the server named the node to ask instead",
        "unknown_item" => "see the vendor's items with `millicent prices`",
        "unknown_vendor" => "this server does not serve that vendor; see `millicent prices`",
        "variant_not_accepted" => "choose a variant the vendor accepts with --variant",
        "unknown_account" => "check the account ID, or join the broker again",
        _ => "see the server's message",
    }
}

/// What a person can do about a failure without a reason.
fn status_hint(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Unavailable => "check the URL and that the server is running, then try again",
        Code::DeadlineExceeded | Code::Cancelled => {
            "the call took too long; it may or may not have taken effect, try again"
        }
        Code::ResourceExhausted => "the server is busy; try again shortly",
        Code::Unauthenticated | Code::PermissionDenied => "check the credentials given",
        Code::Unimplemented => "the server does not offer this call; check the URL",
        _ => "the server gave no reason; see its logs",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::{MetadataMap, MetadataValue};

    fn status_with_reason(code: tonic::Code, reason: &'static str) -> tonic::Status {
        let mut metadata = MetadataMap::new();
        metadata.insert(REASON_METADATA_KEY, MetadataValue::from_static(reason));
        tonic::Status::with_metadata(code, "scrip 7:1 was spent before", metadata)
    }

    #[test]
    fn a_status_with_a_reason_becomes_a_refusal() {
        let status = status_with_reason(tonic::Code::FailedPrecondition, "double_spend");
        let error = ClientError::from(status);
        assert_eq!(error.reason(), Some("double_spend"));
        assert!(matches!(
            &error,
            ClientError::Refused { code: tonic::Code::FailedPrecondition, message, .. }
                if message == "scrip 7:1 was spent before"
        ));
        assert!(!error.outcome_unknown());
        let text = error.to_string();
        assert!(text.contains("double_spend"), "{text}");
        assert!(text.contains("already spent"), "{text}");
    }

    #[test]
    fn a_status_without_a_reason_is_an_rpc_failure_of_unknown_outcome() {
        let error = ClientError::from(tonic::Status::unavailable("connection reset"));
        assert_eq!(error.reason(), None);
        assert!(matches!(
            error,
            ClientError::Rpc {
                code: tonic::Code::Unavailable,
                ..
            }
        ));
        assert!(error.outcome_unknown());
    }

    #[test]
    fn a_reason_that_is_not_snake_case_is_ignored() {
        let status = status_with_reason(tonic::Code::Internal, "Not A Reason");
        assert_eq!(ClientError::from(status).reason(), None);
    }
}
