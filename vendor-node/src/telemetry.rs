//! Descriptions of the vendor node's metrics, and of those its store
//! reports, for the Prometheus exporter.
//!
//! Names follow Prometheus conventions: `_total` for counters, base units
//! (`_seconds`, `_bytes`), values in the currency's smallest unit. Metrics
//! are recorded where the work is done; this module only says what each
//! one means.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Registers the descriptions with the installed recorder (none is
/// needed: without one this does nothing).
pub(crate) fn describe() {
    describe_counter!(
        "millicent_vendor_payments_total",
        "Payments by vendor and outcome (\"accepted\", \"retried\" for a resent payment \
         answered again, or the refusal's reason)"
    );
    describe_histogram!(
        "millicent_vendor_payment_seconds",
        Unit::Seconds,
        "Time from a payment's arrival to its answer, including the durable spend"
    );
    describe_counter!(
        "millicent_vendor_value_redeemed_total",
        "Value of the payments accepted (the prices paid), by vendor, smallest units"
    );
    describe_counter!(
        "millicent_vendor_scrip_issued_total",
        "Change scrip minted by this node, by vendor"
    );
    describe_counter!(
        "millicent_vendor_scrip_issued_value_total",
        "Value of the change scrip minted by this node, by vendor, smallest units"
    );
    describe_counter!(
        "millicent_vendor_scrip_blocks_sold_total",
        "Blocks of scrip sold to brokers' warehouses, by vendor"
    );
    describe_counter!(
        "millicent_vendor_licences_granted_total",
        "Licences to mint scrip granted to brokers, by vendor"
    );
    describe_counter!(
        "millicent_vendor_redemption_reports_total",
        "Redemption reports handed to brokers, by vendor"
    );
    describe_gauge!(
        "millicent_vendor_spent_ids",
        "Spent ID#s held, over every vendor and live series"
    );
    describe_gauge!(
        "millicent_vendor_spent_memory_bytes",
        Unit::Bytes,
        "Memory of the in-memory spent-ID bitmaps"
    );
    describe_counter!(
        "millicent_gateway_requests_total",
        "Requests to the HTTP payment gateway, by outcome"
    );
    describe_histogram!(
        "millicent_ledger_commit_batch_size",
        "Writes made durable by one flush of the node's store (group commit)"
    );
    describe_histogram!(
        "millicent_ledger_flush_seconds",
        Unit::Seconds,
        "Time to flush the node's store"
    );
    describe_counter!(
        "millicent_ledger_flushes_total",
        "Flushes of the node's store"
    );
    describe_counter!(
        "millicent_ledger_flush_errors_total",
        "Flushes of the node's store that failed"
    );
    millicent_ledger::describe_spend_metrics();
}
