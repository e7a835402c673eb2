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

use crate::books::{Class, TxKind};

const OPERATIONS: &str = "millicent_broker_operations_total";
const OPERATION_SECONDS: &str = "millicent_broker_operation_seconds";
const SCRIP_ISSUED: &str = "millicent_broker_scrip_issued_total";
const SCRIP_ISSUED_VALUE: &str = "millicent_broker_scrip_issued_value_total";
const CREDITED_VALUE: &str = "millicent_broker_credited_value_total";
const ACCOUNTS: &str = "millicent_broker_accounts";
const TRANSACTIONS: &str = "millicent_broker_journal_transactions_total";
const LEDGER_BALANCE: &str = "millicent_broker_ledger_balance";
const REPORTS: &str = "millicent_broker_redemption_reports_total";
const REDEEMED_VALUE: &str = "millicent_broker_redeemed_value_total";
const UNRECOGNISED: &str = "millicent_broker_unrecognised_redemptions_total";
const BLOCKS_BOUGHT: &str = "millicent_broker_warehouse_blocks_bought_total";
const WAREHOUSE_STOCK: &str = "millicent_broker_warehouse_stock";

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
    describe_counter!(
        TRANSACTIONS,
        "Journal transactions written, by kind (credit, exchange, refund, renewal, ...)"
    );
    describe_gauge!(
        LEDGER_BALANCE,
        "Balance of the books by shard and account class, smallest units, debits positive \
         (so owed amounts such as customer balances are negative)"
    );
    describe_counter!(REPORTS, "Redemption reports recorded, by vendor");
    describe_counter!(
        REDEEMED_VALUE,
        "Value of vendor scrip sold by this broker that vendors reported redeemed"
    );
    describe_counter!(
        UNRECOGNISED,
        "Pieces vendors reported redeemed that this broker never sold (not paid for)"
    );
    describe_counter!(BLOCKS_BOUGHT, "Warehouse blocks bought, by vendor");
    describe_gauge!(
        WAREHOUSE_STOCK,
        "Warehouse pieces in stock, by shard and vendor"
    );
    describe_histogram!(
        "millicent_broker_commit_batch_size",
        "Operations made durable by one flush of a shard's store (group commit)"
    );
    describe_histogram!(
        "millicent_broker_flush_seconds",
        Unit::Seconds,
        "Time to flush a shard's store"
    );
    describe_counter!(
        "millicent_broker_flushes_total",
        "Flushes of a shard's store"
    );
    describe_counter!(
        "millicent_broker_flush_errors_total",
        "Flushes of a shard's store that failed"
    );
    millicent_ledger::describe_spend_metrics();
}

/// Counts one journal transaction.
pub(crate) fn transaction(kind: TxKind) {
    counter!(TRANSACTIONS, "kind" => kind.name()).increment(1);
}

/// Sets the balance of one class of one shard's books.
pub(crate) fn ledger_balance(shard: u8, class: Class, balance: i128) {
    gauge!(LEDGER_BALANCE, "shard" => shard.to_string(), "class" => class.name())
        .set(balance as f64);
}

/// Counts one redemption report recorded.
pub(crate) fn redemption_report(vendor: &str) {
    counter!(REPORTS, "vendor" => vendor.to_owned()).increment(1);
}

/// Counts value reported redeemed.
pub(crate) fn redeemed(vendor: &str, value: Amount) {
    counter!(REDEEMED_VALUE, "vendor" => vendor.to_owned()).increment(value.units());
}

/// Counts pieces reported redeemed that were never sold.
pub(crate) fn unrecognised_redemptions(vendor: &str, pieces: u64) {
    counter!(UNRECOGNISED, "vendor" => vendor.to_owned()).increment(pieces);
}

/// Counts one warehouse block bought.
pub(crate) fn block_bought(vendor: &str) {
    counter!(BLOCKS_BOUGHT, "vendor" => vendor.to_owned()).increment(1);
}

/// Sets the number of pieces in one warehouse stock.
pub(crate) fn warehouse_stock(shard: u8, vendor: &str, pieces: usize) {
    gauge!(WAREHOUSE_STOCK, "shard" => shard.to_string(), "vendor" => vendor.to_owned())
        .set(pieces as f64);
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
