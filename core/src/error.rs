//! The one error type of the protocol core.

/// Everything the protocol can refuse, each with a machine-readable
/// [`reason`](Error::reason).
///
/// Messages name what was wrong and never include secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes that do not decode as the named structure.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// The structure being decoded.
        what: &'static str,
        /// What was wrong with it.
        detail: &'static str,
    },
    /// A field or message longer than the protocol allows.
    #[error("{what} is {actual} bytes, more than the limit of {max}")]
    TooLarge {
        /// The field.
        what: &'static str,
        /// Its length.
        actual: usize,
        /// The limit.
        max: usize,
    },
    /// A suite byte that names no known cipher suite.
    #[error("unknown cipher suite {0}")]
    UnknownSuite(u8),
    /// A known suite that this party does not accept for this scrip.
    #[error("cipher suite {got} is not the suite {expected} used here")]
    WrongSuite {
        /// Suite identifier carried by the input.
        got: u8,
        /// Suite identifier expected.
        expected: u8,
    },
    /// A known suite that this party's configuration does not accept.
    #[error("cipher suite {0} is not accepted here")]
    SuiteNotAccepted(u8),
    /// Scrip issued for a different vendor.
    #[error("scrip is for vendor {scrip_vendor:?}, not {expected:?}")]
    WrongVendor {
        /// Vendor named in the scrip.
        scrip_vendor: String,
        /// Vendor that received it.
        expected: String,
    },
    /// The scrip's series is not one whose master secret is held here.
    #[error("series {0} is unknown here")]
    UnknownSeries(u32),
    /// The Cust ID#'s selector names no master customer secret held here.
    #[error("customer selector {0} is unknown here")]
    UnknownCustomerSelector(u16),
    /// The certificate does not match the scrip body: forged or tampered.
    #[error("certificate does not match the scrip")]
    BadCertificate,
    /// The request stamp does not match: wrong customer secret or tampered request.
    #[error("request stamp does not match the scrip and request")]
    BadRequestStamp,
    /// The reply stamp does not match: the reply was not made by the vendor.
    #[error("reply stamp does not match the reply")]
    BadReplyStamp,
    /// Sealed data failed authentication or decryption.
    #[error("sealed {0} failed authentication")]
    BadSeal(&'static str),
    /// The scrip expired.
    #[error("scrip expired at {expires_at}, it is now {now} (Unix seconds)")]
    Expired {
        /// Expiry carried by the scrip.
        expires_at: u64,
        /// Time of the check.
        now: u64,
    },
    /// The scrip claims to be valid after its series expires. Only a holder
    /// of the series' secret (a licensed broker) could have certified it; it
    /// is refused because the series' spent IDs are forgotten at expiry.
    #[error("scrip expires at {expires_at}, after its series ({series_expires_at})")]
    OutlivesSeries {
        /// Expiry carried by the scrip.
        expires_at: u64,
        /// Expiry of its series.
        series_expires_at: u64,
    },
    /// The scrip's value does not cover the price.
    #[error("scrip value {value} is less than the price {price}")]
    InsufficientValue {
        /// Value of the scrip.
        value: u64,
        /// Price asked.
        price: u64,
    },
    /// An amount calculation left the range of a 64-bit unsigned integer.
    #[error("amount out of range")]
    AmountOverflow,
    /// A variant that needs a stamp arrived without one, or the reverse.
    #[error("{0}")]
    VariantMismatch(&'static str),
}

/// What kind of fault an [`Error`] is, for services that must tell their
/// callers whether to fix the request, give up on the scrip, or try later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The input does not decode or breaks a limit: fix the request.
    Invalid,
    /// The input decodes but is not authentic (forged, tampered, for
    /// someone else, unknown keys): it will never be accepted.
    Denied,
    /// The input is authentic but cannot be accepted as it stands
    /// (expired, worth too little).
    Precondition,
}

impl Error {
    /// The class of the error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Malformed { .. }
            | Error::TooLarge { .. }
            | Error::UnknownSuite(_)
            | Error::VariantMismatch(_)
            | Error::AmountOverflow => ErrorClass::Invalid,
            Error::WrongSuite { .. }
            | Error::SuiteNotAccepted(_)
            | Error::WrongVendor { .. }
            | Error::UnknownSeries(_)
            | Error::UnknownCustomerSelector(_)
            | Error::BadCertificate
            | Error::BadRequestStamp
            | Error::BadReplyStamp
            | Error::BadSeal(_)
            | Error::OutlivesSeries { .. } => ErrorClass::Denied,
            Error::Expired { .. } | Error::InsufficientValue { .. } => ErrorClass::Precondition,
        }
    }

    /// A stable snake_case name for the error, sent on the wire and used as a
    /// metric label. docs/PROTOCOL.md lists them.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Malformed { .. } => "malformed",
            Error::TooLarge { .. } => "too_large",
            Error::UnknownSuite(_) => "unknown_suite",
            Error::WrongSuite { .. } => "wrong_suite",
            Error::SuiteNotAccepted(_) => "suite_not_accepted",
            Error::WrongVendor { .. } => "wrong_vendor",
            Error::UnknownSeries(_) => "unknown_series",
            Error::UnknownCustomerSelector(_) => "unknown_customer_selector",
            Error::BadCertificate => "bad_certificate",
            Error::BadRequestStamp => "bad_request_stamp",
            Error::BadReplyStamp => "bad_reply_stamp",
            Error::BadSeal(_) => "bad_seal",
            Error::Expired { .. } => "expired",
            Error::OutlivesSeries { .. } => "outlives_series",
            Error::InsufficientValue { .. } => "insufficient_value",
            Error::AmountOverflow => "amount_overflow",
            Error::VariantMismatch(_) => "variant_mismatch",
        }
    }
}
