//! The end-of-run summary: a table on stdout and, on request, JSON.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::LoadResult;

/// Latency percentiles of a run's calls, in milliseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest call.
    pub max_ms: f64,
}

impl Latency {
    /// The percentiles of `latency_us`, a histogram of microseconds.
    pub fn of(latency_us: &Histogram<u64>) -> Latency {
        let ms = |quantile: f64| latency_us.value_at_quantile(quantile) as f64 / 1000.0;
        Latency {
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: latency_us.max() as f64 / 1000.0,
        }
    }
}

/// The table printed at the end of a run: one labelled line per figure.
#[derive(Default)]
pub struct Table {
    text: String,
}

impl Table {
    /// Adds a line.
    pub fn line(&mut self, label: &str, value: impl std::fmt::Display) {
        self.text.push_str(&format!("  {label:<24} {value}\n"));
    }

    /// Adds the lines of `latency`.
    pub fn latency(&mut self, latency: &Latency) {
        self.line(
            "latency p50/p90/p99",
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                latency.p50_ms, latency.p90_ms, latency.p99_ms
            ),
        );
        self.line(
            "latency p99.9/max",
            format!("{:.2} / {:.2} ms", latency.p999_ms, latency.max_ms),
        );
    }

    /// The table's text.
    pub fn finish(self) -> String {
        self.text
    }
}

/// The figures of one run, as written by `--report`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Payments accepted.
    pub accepted: u64,
    /// Payments refused (deliberate replays are counted separately).
    pub rejected: u64,
    /// Refusals by reason.
    pub rejected_by_reason: std::collections::BTreeMap<String, u64>,
    /// Accepted payments per second of the paying phase.
    pub payments_per_second: f64,
    /// Latency percentiles of accepted payments.
    #[serde(flatten)]
    pub latency: Latency,
    /// Replays of spent scrip tried after the run.
    pub replays_attempted: u64,
    /// Replays refused as double spends, as they must be.
    pub replays_refused: u64,
    /// Replays that got no answer or another refusal, so proved nothing.
    pub replays_inconclusive: u64,
    /// Replays accepted: any value but zero is a double spend.
    pub double_spends_accepted: u64,
    /// Tries whose answer was lost (the node died or the network failed)
    /// and that were sent again unchanged.
    pub answers_lost: u64,
    /// Payments accepted on a retry after their first answer was lost.
    pub payments_recovered_after_lost_answer: u64,
    /// Customers that stopped before the end, and why (first reason).
    pub customers_stopped_early: usize,
    /// The first reason a customer stopped early, if any did.
    pub first_stop_reason: Option<String>,
    /// Length of the paying phase.
    pub duration_secs: f64,
    /// Concurrent customers.
    pub customers: usize,
    /// Payment variant.
    pub variant: String,
    /// `unary` (one call per payment) or `stream` (`PayStream`).
    pub mode: String,
    /// Vendor paid.
    pub vendor: String,
    /// Cipher suite of the vendor's scrip: `modern` or `classic`.
    pub suite: String,
    /// Item bought.
    pub item: String,
}

impl Report {
    /// Summarises a load run.
    pub fn new(result: &LoadResult, customers: usize, variant: &str, mode: &str) -> Report {
        let seconds = result.elapsed.as_secs_f64().max(1e-9);
        Report {
            accepted: result.accepted,
            rejected: result.rejected,
            rejected_by_reason: result.rejected_by_reason.iter().cloned().collect(),
            payments_per_second: (result.accepted as f64 / seconds * 10.0).round() / 10.0,
            latency: Latency::of(&result.latency_us),
            replays_attempted: result.replays.attempted,
            replays_refused: result.replays.refused,
            replays_inconclusive: result.replays.inconclusive,
            double_spends_accepted: result.replays.accepted,
            answers_lost: result.lost,
            payments_recovered_after_lost_answer: result.recovered,
            customers_stopped_early: result.stopped.len(),
            first_stop_reason: result.stopped.first().cloned(),
            duration_secs: seconds,
            customers,
            variant: variant.to_owned(),
            mode: mode.to_owned(),
            vendor: result.vendor.as_str().to_owned(),
            suite: result
                .suite
                .map_or("unknown", |suite| suite.name())
                .to_owned(),
            item: result.item.clone(),
        }
    }

    /// Whether the run proved what it should: no replay accepted, every
    /// replay refused as a double spend, and every customer paid to the end.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.double_spends_accepted > 0 {
            problems.push(format!(
                "the vendor accepted {} replays of spent scrip",
                self.double_spends_accepted
            ));
        }
        if self.replays_inconclusive > 0 {
            problems.push(format!(
                "{} replays got no answer or an unexpected refusal, so the replay check is \
                 incomplete",
                self.replays_inconclusive
            ));
        }
        if let Some(reason) = &self.first_stop_reason {
            problems.push(format!(
                "{} customers stopped before the end; the first {reason}",
                self.customers_stopped_early
            ));
        }
        problems
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut table = Table::default();
        table.line("payments accepted", self.accepted.to_string());
        table.line("payments rejected", self.rejected.to_string());
        for (reason, count) in &self.rejected_by_reason {
            table.line(&format!("  {reason}"), count.to_string());
        }
        table.line(
            "payments per second",
            format!("{:.0}", self.payments_per_second),
        );
        table.latency(&self.latency);
        table.line(
            "replays of spent scrip",
            format!(
                "{} tried: {} refused as double spends, {} accepted, {} inconclusive",
                self.replays_attempted,
                self.replays_refused,
                self.double_spends_accepted,
                self.replays_inconclusive
            ),
        );
        if self.answers_lost > 0 {
            table.line(
                "answers lost, resent",
                format!(
                    "{} tries, {} payments then accepted",
                    self.answers_lost, self.payments_recovered_after_lost_answer
                ),
            );
        }
        if let Some(reason) = &self.first_stop_reason {
            table.line(
                "customers stopped early",
                format!("{}, first: {reason}", self.customers_stopped_early),
            );
        }
        table.line(
            "customers, variant, mode",
            format!("{}, {}, {}", self.customers, self.variant, self.mode),
        );
        table.finish()
    }
}
