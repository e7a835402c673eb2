//! The broker's metrics: names, descriptions and recording.
//!
//! Metrics go to whatever recorder the process installed (the binary
//! installs a Prometheus exporter); without one, recording costs next to
//! nothing. Names follow Prometheus conventions: `_total` for counters,
//! base units (`_seconds`), amounts in the currency's smallest unit.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use millicent_core::Amount;

const OPERATIONS: &str = "millicent_broker_operations_total";
const OPERATION_SECONDS: &str = "millicent_broker_operation_seconds";
const SCRIP_ISSUED: &str = "millicent_broker_scrip_issued_total";
const SCRIP_ISSUED_VALUE: &str = "millicent_broker_scrip_issued_value_total";
const CREDITED_VALUE: &str = "millicent_broker_credited_value_total";
const ACCOUNTS: &str = "millicent_broker_accounts";

/// Which scrip a broker issues.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ScripKind {
    /// Broker scrip bought from an account.
    Broker,
    /// Vendor scrip minted under licence in an exchange.
    Vendor,
}

impl ScripKind {
    fn label(self) -> &'static str {
        match self {
            ScripKind::Broker => "broker",
            ScripKind::Vendor => "vendor",
        }
    }
}

/// Registers the descriptions with the installed recorder.
pub(crate) fn describe() {
    describe_counter!(
        OPERATIONS,
        "Broker calls by operation and outcome (\"ok\" or the refusal's reason)"
    );
    describe_histogram!(
        OPERATION_SECONDS,
        Unit::Seconds,
        "Time to answer a broker call, including the durable commit"
    );
    describe_counter!(
        SCRIP_ISSUED,
        "Scrip issued: broker scrip bought from accounts, vendor scrip minted in exchanges \
         (change is not counted: it replaces value already issued)"
    );
    describe_counter!(
        SCRIP_ISSUED_VALUE,
        "Value of the scrip counted by millicent_broker_scrip_issued_total, smallest units"
    );
    describe_counter!(
        CREDITED_VALUE,
        "Value credited to accounts by the operator, smallest units"
    );
    describe_gauge!(ACCOUNTS, "Accounts opened");
}

/// Counts one call and its latency.
pub(crate) fn operation(operation: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!(OPERATIONS, "operation" => operation, "outcome" => outcome).increment(1);
    histogram!(OPERATION_SECONDS, "operation" => operation).record(elapsed.as_secs_f64());
}

/// Counts one piece of scrip issued.
pub(crate) fn scrip_issued(kind: ScripKind, value: Amount) {
    counter!(SCRIP_ISSUED, "kind" => kind.label()).increment(1);
    counter!(SCRIP_ISSUED_VALUE, "kind" => kind.label()).increment(value.units());
}

/// Counts value credited to an account.
pub(crate) fn credited(value: Amount) {
    counter!(CREDITED_VALUE).increment(value.units());
}

/// Sets the number of accounts.
pub(crate) fn accounts(count: u64) {
    gauge!(ACCOUNTS).set(count as f64);
}

/// Counts one account opened.
pub(crate) fn account_opened() {
    gauge!(ACCOUNTS).increment(1.0);
}
