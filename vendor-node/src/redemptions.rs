//! Redemption reports: which scrip of a broker's series the node has
//! accepted, so that the broker can settle with the vendor.
//!
//! # Design
//!
//! The report is the spent-ID bitmap of each series asked for, read from
//! the bitmaps the spend store keeps in memory anyway. The broker knows the
//! value of every piece it sold, so it turns the bits into money itself:
//! the node adds nothing to the payment path (no counter, no lock, no
//! write), and a report is idempotent, since it says which pieces are
//! spent rather than how much was spent since last time. A lost or repeated
//! report therefore never settles anything twice.
//!
//! Only series held for the asking broker are reported; any other series
//! is reported as unknown, so one broker learns nothing of another's.
//!
//! # Finality
//!
//! Bits in memory include spends whose commit is still under way, so the
//! node commits before answering: everything a report says is durable. The
//! report's `as_of` is the time the bitmaps were read less the longest a
//! payment may take, because a payment checks expiry when it starts: scrip
//! that expired before `as_of` can no longer be accepted after the read,
//! so its bit in the report is final.

use millicent_proto as wire;

use crate::keys::Holder;
use crate::node::Node;
use crate::{VendorError, convert};

/// Most words of one series in one report: 2^19 sequence numbers, 64 KiB.
pub(crate) const MAX_WORDS_PER_SERIES: usize = 1 << 13;
/// Most series in one report.
pub(crate) const MAX_SERIES: usize = 64;

/// Reads the report `request` asks for, as of `now`, for payments that
/// take at most `payment_timeout_secs`.
pub(crate) async fn report(
    node: &Node,
    request: convert::RedemptionsQuery,
    now: u64,
    payment_timeout_secs: u64,
) -> Result<wire::RedemptionReport, VendorError> {
    let vendor = node.vendor(&request.vendor)?;
    let mut series = Vec::with_capacity(request.series.len());
    for (number, first_seq) in request.series {
        let held = matches!(
            vendor.series_holder(number)?,
            Some(Holder::Broker(broker)) if broker == request.broker
        ) && vendor.key_ring().series(number).is_some();
        if !held {
            series.push(wire::SeriesRedemptions {
                series: number,
                ..wire::SeriesRedemptions::default()
            });
            continue;
        }
        let words =
            node.spends
                .spent_words(vendor.name(), number, first_seq / 64, MAX_WORDS_PER_SERIES);
        let more = words.len() == MAX_WORDS_PER_SERIES
            && u64::from(first_seq) + (MAX_WORDS_PER_SERIES as u64) * 64 < 1 << 32;
        let mut spent: Vec<u8> = words.iter().flat_map(|word| word.to_le_bytes()).collect();
        while spent.last() == Some(&0) {
            spent.pop();
        }
        series.push(wire::SeriesRedemptions {
            series: number,
            known: true,
            first_seq,
            spent,
            more,
        });
    }
    // Everything read above is on disk before anyone is told.
    node.ledger.commit().await?;
    metrics::counter!(
        "millicent_vendor_redemption_reports_total",
        "vendor" => vendor.name().as_str().to_owned()
    )
    .increment(1);
    Ok(wire::RedemptionReport {
        vendor: vendor.name().as_str().to_owned(),
        as_of: now.saturating_sub(payment_timeout_secs),
        series,
    })
}
