//! The one error type of the client: what went wrong, and what to do about it.
//!
//! A refusal by a broker or vendor arrives as a gRPC status whose
//! `millicent-reason` metadata entry names the reason in snake_case; it
//! becomes [`ClientError::Refused`] and keeps that reason for callers that
//! decide on it (the wallet drops spent scrip on `double_spend`, the load
//! generator counts outcomes by reason). The wallet adds what it knows to a
//! refusal: which node refused which scrip, and whether it kept the scrip.
//! Every message is one line that a person can act on, and none carries
//! secret material.

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
    #[error("refused ({reason}): {message}{}", refusal_hint(reason))]
    Refused {
        /// Machine-readable reason from the `millicent-reason` metadata entry.
        reason: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// A broker or vendor node refused scrip the wallet paid with. Only
    /// `double_spend`, or an expiry the wallet's own clock confirms, makes
    /// the wallet drop the scrip: any other refusal comes from one node,
    /// which may simply not be the node that knows the scrip.
    #[error(
        "{node} refused {issuer} scrip worth {value} ({reason}): {message}{}; {fate}",
        refusal_hint(reason)
    )]
    ScripRefused {
        /// The URL of the broker or vendor node that refused.
        node: String,
        /// The issuer named in the scrip: a broker or a vendor.
        issuer: String,
        /// The scrip's value.
        value: Amount,
        /// Machine-readable reason from the `millicent-reason` metadata entry.
        reason: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
        /// What the wallet did with the scrip.
        fate: ScripFate,
    },
    /// A broker refused an operator call because of its operator token.
    #[error(
        "refused (unauthenticated): {message}; check --operator-token or \
        MILLICENT_OPERATOR_TOKEN"
    )]
    OperatorTokenRefused {
        /// The server's message.
        message: String,
    },
    /// A call the wallet had recorded before making it got no answer. It may
    /// have taken effect, so the wallet keeps it until
    /// [`Wallet::recover`](crate::Wallet::recover) repeats it.
    #[error(
        "the {call} got no answer ({code:?}: {message}); it may have gone through, so the \
        wallet kept it: run `millicent recover` to finish it"
    )]
    Unsettled {
        /// What was called: "payment", "exchange", "purchase".
        call: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
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
    /// TLS cannot be set up for a URL: no authority to trust for an
    /// `https://` URL, or unusable certificate or key files. Nothing was
    /// sent.
    #[error(transparent)]
    Tls(#[from] millicent_transport::TlsError),
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
    /// A URL names a scheme other than `http` and `https`. Nothing was sent.
    #[error(
        "{url} is a {scheme}:// URL, but this client speaks only http:// and https://; \
        give such a URL (or host:port, for plain http)"
    )]
    UnsupportedUrl {
        /// The URL given.
        url: String,
        /// Its scheme.
        scheme: String,
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
    /// Another `Wallet` (usually another `millicent` command) holds the
    /// wallet's lock. [`Wallet::open`](crate::Wallet::open) waits for it
    /// instead.
    #[error("wallet {} is in use by another millicent command", path.display())]
    WalletBusy {
        /// The wallet file.
        path: PathBuf,
    },
    /// The wallet file can be read or changed by users other than its owner.
    #[error(
        "wallet {} can be read or changed by other users (mode {mode:03o}), and it holds \
        secrets that spend its scrip; make it private with `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    WalletNotPrivate {
        /// The wallet file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The wallet file was written by a newer program, in a format this one
    /// cannot read.
    #[error(
        "wallet {} is in format version {version}, newer than this program reads \
        (version {supported}); use a newer millicent",
        path.display()
    )]
    WalletTooNew {
        /// The wallet file.
        path: PathBuf,
        /// The file's format version.
        version: u64,
        /// The newest version this program reads.
        supported: u32,
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
    /// A vendor's 402 offer cannot be paid as it stands. Nothing was spent.
    #[error("the offer of {url} was refused, nothing was spent: {detail}")]
    BadOffer {
        /// The resource whose offer it was.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Paying would go over one of the wallet's spending limits. Nothing
    /// was spent.
    #[error(
        "paying {price} to {vendor} would go over your {limit_name} of {limit} ({spent} spent \
        already); nothing was spent. Change the limit with `millicent limits {flag}`"
    )]
    OverLimit {
        /// The vendor to be paid.
        vendor: String,
        /// The price asked.
        price: Amount,
        /// Which limit: "per-payment limit", "daily limit", ...
        limit_name: &'static str,
        /// The limit.
        limit: Amount,
        /// What counts against it already.
        spent: Amount,
        /// The `millicent limits` option that changes it.
        flag: String,
    },
    /// No broker the wallet has joined sells the vendor's scrip. Nothing
    /// was spent.
    #[error(
        "no broker this wallet has joined sells scrip of {vendor}, so nothing was spent{}",
        if brokers.is_empty() { String::new() } else {
            format!("; the vendor names these brokers: {brokers}; join one with \
                `millicent join --broker URL` if you trust it")
        }
    )]
    VendorNotServed {
        /// The vendor.
        vendor: String,
        /// The brokers the vendor's offer names, as `name (url)`.
        brokers: String,
    },
    /// The wallet pays only for GET and HEAD requests, which can be sent
    /// again safely if the answer is lost.
    #[error(
        "a {method} request is not paid for automatically: only GET and HEAD can be repeated \
        safely if the answer is lost; nothing was spent"
    )]
    MethodNotPaid {
        /// The method.
        method: String,
    },
    /// An HTTP request could not be made: nothing was sent.
    #[error("cannot reach {url}: {detail}; check the URL and that the server is running")]
    HttpUnreachable {
        /// The URL.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// An HTTP request carrying a payment got no usable answer; the
    /// payment may have been taken, so the wallet keeps it to send again.
    #[error(
        "the payment to {url} got no answer ({detail}); it may have gone through, so the \
        wallet kept it: the next millicent command sends it again"
    )]
    HttpLost {
        /// The URL.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The wallet file is protected by a passphrase and none was given.
    #[error(
        "wallet {} is protected by a passphrase; set MILLICENT_PASSPHRASE, give \
        --passphrase-file, or run the command in a terminal to be asked for it",
        path.display()
    )]
    PassphraseNeeded {
        /// The wallet file.
        path: PathBuf,
    },
    /// The passphrase given does not open the wallet file.
    #[error("the passphrase does not open wallet {}; nothing was changed", path.display())]
    WrongPassphrase {
        /// The wallet file.
        path: PathBuf,
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
            None => {
                // A broken connection or a failed TLS handshake says why in
                // the status's source, not in its message.
                let mut message = status.message().to_owned();
                if let Some(source) = std::error::Error::source(&status) {
                    let causes = millicent_transport::tls::chain(source);
                    if !message.contains(&causes) {
                        message.push_str(": ");
                        message.push_str(&causes);
                    }
                }
                ClientError::Rpc {
                    code: status.code(),
                    message,
                }
            }
        }
    }

    /// The server's machine-readable reason, if the server refused the call.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClientError::Refused { reason, .. } | ClientError::ScripRefused { reason, .. } => {
                Some(reason)
            }
            ClientError::OperatorTokenRefused { .. } => Some("unauthenticated"),
            _ => None,
        }
    }

    /// For a payment the wallet declined before anything was sent, a
    /// machine-readable name of why: `bad_offer`, `over_limit`,
    /// `vendor_not_served` or `method_not_paid`.
    pub fn declined(&self) -> Option<&'static str> {
        match self {
            ClientError::BadOffer { .. } => Some("bad_offer"),
            ClientError::OverLimit { .. } => Some("over_limit"),
            ClientError::VendorNotServed { .. } => Some("vendor_not_served"),
            ClientError::MethodNotPaid { .. } => Some("method_not_paid"),
            ClientError::NoScrip { .. } => Some("no_scrip"),
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
            ClientError::Unsettled { .. } | ClientError::HttpLost { .. }
        ) || matches!(
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

/// What the wallet did with scrip a server refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScripFate {
    /// The scrip is still in the wallet, free to be spent.
    Kept,
    /// The scrip was removed from the wallet: it can never be spent.
    Dropped,
}

impl std::fmt::Display for ScripFate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScripFate::Kept => "the scrip is kept in the wallet",
            ScripFate::Dropped => "the scrip was dropped from the wallet",
        })
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

/// What a person can do about a refusal, after a `; `, or nothing when the
/// server's message is all there is to say.
fn refusal_hint(reason: &str) -> String {
    hint(reason).map_or_else(String::new, |hint| format!("; {hint}"))
}

fn hint(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "double_spend" => "it cannot be used again",
        "expired" => "this scrip has expired; a broker may exchange it for fresh scrip",
        "bad_certificate" => {
            "this node does not recognise the scrip: it was issued for another node, or forged"
        }
        "unknown_series" => "this node does not know the scrip's series: it is for another node",
        "wrong_vendor" => "the scrip is for a vendor this node does not serve",
        "wrong_node" => "the scrip belongs to another node of this vendor, named in the message",
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
        _ => return None,
    })
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
        Code::Unimplemented => {
            "the server does not offer this call: check that the URL is of a broker (join, buy, \
             refund) or of a vendor node (prices, pay), not of the other kind"
        }
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
        assert!(text.contains("cannot be used again"), "{text}");
        // A reason without advice adds nothing to the server's message.
        let unknown = ClientError::from(tonic::Status::with_metadata(
            tonic::Code::FailedPrecondition,
            "some refusal",
            {
                let mut metadata = tonic::metadata::MetadataMap::new();
                metadata.insert(REASON_METADATA_KEY, "some_reason".parse().unwrap());
                metadata
            },
        ));
        assert_eq!(unknown.to_string(), "refused (some_reason): some refusal");
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
    fn only_a_call_the_wallet_kept_is_sent_to_recover() {
        let timeout = ClientError::from(tonic::Status::deadline_exceeded("timed out"));
        let text = timeout.to_string();
        assert!(
            text.contains("try again") && !text.contains("recover"),
            "{text}"
        );

        let kept = ClientError::Unsettled {
            call: "payment",
            code: tonic::Code::DeadlineExceeded,
            message: "timed out".into(),
        };
        assert!(kept.outcome_unknown());
        let text = kept.to_string();
        assert!(text.contains("run `millicent recover`"), "{text}");
        assert!(!text.contains("try again"), "{text}");
    }

    #[test]
    fn a_refused_operator_token_is_not_blamed_on_the_account_key() {
        let account = ClientError::from(status_with_reason(
            tonic::Code::Unauthenticated,
            "unauthenticated",
        ));
        assert!(account.to_string().contains("account key"), "{account}");

        let operator = ClientError::OperatorTokenRefused {
            message: "bad token".into(),
        };
        assert_eq!(operator.reason(), Some("unauthenticated"));
        let text = operator.to_string();
        assert!(
            text.contains("--operator-token") && !text.contains("account key"),
            "{text}"
        );
    }

    #[test]
    fn refused_scrip_says_which_node_refused_it_and_where_it_is() {
        let refused = |fate| ClientError::ScripRefused {
            node: "http://127.0.0.1:7201".into(),
            issuer: "news.example".into(),
            value: Amount::new(90),
            reason: "bad_certificate".into(),
            code: tonic::Code::PermissionDenied,
            message: "certificate does not match".into(),
            fate,
        };
        let kept = refused(ScripFate::Kept);
        assert_eq!(kept.reason(), Some("bad_certificate"));
        assert_eq!(
            kept.to_string(),
            "http://127.0.0.1:7201 refused news.example scrip worth 90 (bad_certificate): \
             certificate does not match; this node does not recognise the scrip: it was issued \
             for another node, or forged; the scrip is kept in the wallet"
        );
        let dropped = refused(ScripFate::Dropped).to_string();
        assert!(
            dropped.ends_with("the scrip was dropped from the wallet"),
            "{dropped}"
        );
    }

    #[test]
    fn a_reason_that_is_not_snake_case_is_ignored() {
        let status = status_with_reason(tonic::Code::Internal, "Not A Reason");
        assert_eq!(ClientError::from(status).reason(), None);
    }
}
