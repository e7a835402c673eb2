//! The end-of-run summaries of `demo` and `load`: a table on stdout and, on
//! request, JSON.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::LoadResult;
use crate::mix::Operation;
use crate::plot::Point;
use crate::record::OperationFigures;
use crate::traffic::{TrafficPlan, TrafficResult};

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

/// The figures of one operation of a load run, as written by `--report`.
#[derive(Debug, Serialize)]
pub struct OperationReport {
    /// Tries, whatever their outcome.
    pub attempted: u64,
    /// Done as they should be (for an attack: refused for its reason).
    pub done: u64,
    /// Refused (for an attack: for another reason than its own).
    pub refused: u64,
    /// Refusals by reason.
    pub refused_by_reason: BTreeMap<String, u64>,
    /// Tries that got no answer.
    pub lost: u64,
    /// Attacks accepted (warm-up included).
    pub accepted_attacks: u64,
    /// Operations done per second of the measured part.
    pub per_second: f64,
    /// Latency of the operations done.
    #[serde(flatten)]
    pub latency: Latency,
}

impl OperationReport {
    fn new(figures: &OperationFigures, seconds: f64) -> OperationReport {
        OperationReport {
            attempted: figures.attempted(),
            done: figures.done,
            refused: figures.refused.values().sum(),
            refused_by_reason: figures.refused.clone(),
            lost: figures.lost,
            accepted_attacks: figures.breaches,
            per_second: round(figures.done as f64 / seconds),
            latency: Latency::of(&figures.latency_us),
        }
    }
}

/// The figures of a `load` run, as written by `--report`: the keys of a
/// demo's report (about payments), then the other operations, the attacks
/// and the run second by second.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    /// The payments, under the keys a demo's report has.
    #[serde(flatten)]
    pub payments: Report,
    /// Length of the warm-up, left out of every figure.
    pub warm_up_secs: f64,
    /// The target rate of operations per second, if the run had one.
    pub target_rate: Option<f64>,
    /// Operations of every kind done per second of the measured part.
    pub operations_per_second: f64,
    /// The mix of operations.
    pub mix: String,
    /// Per operation.
    pub operations: BTreeMap<String, OperationReport>,
    /// Attacks sent, of every kind.
    pub attacks_attempted: u64,
    /// Attacks refused for the reason they must get.
    pub attacks_refused: u64,
    /// Attacks accepted: any value but zero is a breach.
    pub attacks_accepted: u64,
    /// Scrip ID#s accepted more than once during the run.
    pub duplicate_spends: u64,
    /// Double spends found in all: ID#s accepted twice, and replays of
    /// spent scrip accepted after the run.
    pub double_spends_found: u64,
    /// Brokers driven.
    pub brokers: usize,
    /// Vendor nodes driven.
    pub vendor_nodes: usize,
    /// The run second by second, warm-up included.
    pub timeline: Vec<Point>,
}

/// What a load run was asked to do, for its report.
pub struct LoadSettings<'a> {
    /// Simulated customers.
    pub customers: usize,
    /// Payment variant.
    pub variant: &'a str,
    /// `unary` or `stream`.
    pub mode: &'a str,
    /// The mix, as written.
    pub mix: String,
    /// Target operations per second, if any.
    pub rate: Option<f64>,
    /// Brokers driven.
    pub brokers: usize,
    /// Vendor nodes driven.
    pub vendor_nodes: usize,
}

impl LoadSettings<'static> {
    /// The settings of a run of `plan`.
    pub fn of(plan: &TrafficPlan) -> LoadSettings<'static> {
        LoadSettings {
            customers: plan.customers,
            variant: plan.variant.name(),
            mode: if plan.stream { "stream" } else { "unary" },
            mix: plan.mix.to_string(),
            rate: plan.rate,
            brokers: plan.brokers.len(),
            vendor_nodes: plan.vendors.len(),
        }
    }
}

impl LoadReport {
    /// Summarises a load run.
    pub fn new(result: &TrafficResult, settings: &LoadSettings<'_>) -> LoadReport {
        let seconds = result.measured.as_secs_f64().max(1e-9);
        let pay = result.of(Operation::Pay);
        let payments = Report {
            accepted: pay.done,
            rejected: pay.refused.values().sum(),
            rejected_by_reason: pay.refused.clone(),
            payments_per_second: round(pay.done as f64 / seconds),
            latency: Latency::of(&pay.latency_us),
            replays_attempted: result.replays.attempted,
            replays_refused: result.replays.refused,
            replays_inconclusive: result.replays.inconclusive,
            double_spends_accepted: result.replays.accepted,
            answers_lost: result.operations.iter().map(|figures| figures.lost).sum(),
            payments_recovered_after_lost_answer: result.recovered,
            customers_stopped_early: result.stopped.len(),
            first_stop_reason: result.stopped.first().cloned(),
            duration_secs: seconds,
            customers: settings.customers,
            variant: settings.variant.to_owned(),
            mode: settings.mode.to_owned(),
            vendor: result.vendors.join(","),
            suite: result
                .suite
                .map_or("unknown", |suite| suite.name())
                .to_owned(),
            item: result.items.join(","),
        };
        let attacks = || {
            Operation::ALL
                .into_iter()
                .filter(|operation| operation.is_attack())
                .map(|operation| result.of(operation))
        };
        let done: u64 = result.operations.iter().map(|figures| figures.done).sum();
        LoadReport {
            payments,
            warm_up_secs: result.warm_up.as_secs_f64(),
            target_rate: settings.rate,
            operations_per_second: round(done as f64 / seconds),
            mix: settings.mix.clone(),
            operations: Operation::ALL
                .into_iter()
                .map(|operation| {
                    let figures = result.of(operation);
                    (
                        operation.name().to_owned(),
                        OperationReport::new(figures, seconds),
                    )
                })
                .collect(),
            attacks_attempted: attacks().map(OperationFigures::attempted).sum(),
            attacks_refused: attacks().map(|figures| figures.done).sum(),
            attacks_accepted: result.breaches(),
            duplicate_spends: result.duplicate_spends,
            double_spends_found: result.duplicate_spends + result.replays.accepted,
            brokers: settings.brokers,
            vendor_nodes: settings.vendor_nodes,
            timeline: crate::plot::points(&result.timeline, result.warm_up + result.measured),
        }
    }

    /// What went wrong: an attack accepted, scrip spent twice, and whatever
    /// a demo would call a problem.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.attacks_accepted > 0 {
            let kinds: Vec<String> = self
                .operations
                .iter()
                .filter(|(_, figures)| figures.accepted_attacks > 0)
                .map(|(name, figures)| format!("{} {name}", figures.accepted_attacks))
                .collect();
            problems.push(format!(
                "the network accepted {} attacks ({})",
                self.attacks_accepted,
                kinds.join(", ")
            ));
        }
        if self.duplicate_spends > 0 {
            problems.push(format!(
                "{} scrip ID#s were accepted more than once during the run",
                self.duplicate_spends
            ));
        }
        problems.extend(self.payments.problems());
        problems
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut text = format!(
            "  {:<10} {:>10} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8}\n",
            "operation", "done", "errors", "per second", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms"
        );
        let in_order = || {
            Operation::ALL
                .into_iter()
                .filter_map(|operation| self.operations.get_key_value(operation.name()))
        };
        for (name, figures) in in_order() {
            if figures.attempted == 0 {
                continue;
            }
            let latency = &figures.latency;
            text.push_str(&format!(
                "  {:<10} {:>10} {:>8} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}\n",
                name,
                figures.done,
                figures.attempted - figures.done,
                figures.per_second,
                latency.p50_ms,
                latency.p90_ms,
                latency.p99_ms,
                latency.p999_ms
            ));
        }
        text.push('\n');
        text.push_str(&format!(
            "  {:<10} {:>10} {:>14} {:>17} {:>9} {:>6}\n",
            "attack", "tried", "refused as due", "refused otherwise", "ACCEPTED", "lost"
        ));
        for (operation, (name, figures)) in Operation::ALL.into_iter().zip(in_order()) {
            if !operation.is_attack() || figures.attempted == 0 {
                continue;
            }
            text.push_str(&format!(
                "  {:<10} {:>10} {:>14} {:>17} {:>9} {:>6}\n",
                name,
                figures.attempted,
                figures.done,
                figures.refused,
                figures.accepted_attacks,
                figures.lost
            ));
        }
        text.push('\n');

        let mut table = Table::default();
        for (name, figures) in in_order() {
            for (reason, count) in &figures.refused_by_reason {
                table.line(&format!("{name} refused: {reason}"), count);
            }
            if figures.lost > 0 && figures.done + figures.refused > 0 {
                table.line(&format!("{name} lost answers"), figures.lost);
            }
        }
        table.line(
            "operations per second",
            match self.target_rate {
                Some(rate) => format!("{:.0} (target {rate:.0})", self.operations_per_second),
                None => format!("{:.0} (closed loop)", self.operations_per_second),
            },
        );
        table.line(
            "double spends found",
            format!(
                "{} ({} ID#s accepted twice; replays after the run: {} tried, {} refused, {} \
                 accepted, {} inconclusive)",
                self.double_spends_found,
                self.duplicate_spends,
                self.payments.replays_attempted,
                self.payments.replays_refused,
                self.payments.double_spends_accepted,
                self.payments.replays_inconclusive
            ),
        );
        if let Some(reason) = &self.payments.first_stop_reason {
            table.line(
                "customers stopped early",
                format!("{}, first: {reason}", self.payments.customers_stopped_early),
            );
        }
        table.line(
            "measured, warm-up",
            format!(
                "{:.1} s, {:.1} s",
                self.payments.duration_secs, self.warm_up_secs
            ),
        );
        table.line(
            "customers, variant, mode",
            format!(
                "{}, {}, {}",
                self.payments.customers, self.payments.variant, self.payments.mode
            ),
        );
        table.line(
            "brokers, vendor nodes",
            format!("{}, {}", self.brokers, self.vendor_nodes),
        );
        text.push_str(&table.finish());
        text
    }
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::load::ReplayCheck;
    use crate::record::{Outcome, Recorder};

    fn result(
        record: impl Fn(&Recorder, Instant),
        duplicate_spends: u64,
        replays: ReplayCheck,
    ) -> TrafficResult {
        let recorder = Recorder::new(Duration::ZERO);
        record(&recorder, Instant::now());
        let (operations, timeline) = recorder.finish();
        TrafficResult {
            operations,
            timeline,
            measured: Duration::from_secs(1),
            warm_up: Duration::ZERO,
            replays,
            duplicate_spends,
            recovered: 0,
            stopped: Vec::new(),
            vendors: vec!["news.example".to_owned()],
            items: vec!["article".to_owned()],
            suite: None,
        }
    }

    fn report(result: &TrafficResult) -> LoadReport {
        LoadReport::new(
            result,
            &LoadSettings {
                customers: 1,
                variant: "secure",
                mode: "unary",
                mix: "pay=1,tamper=1".to_owned(),
                rate: None,
                brokers: 1,
                vendor_nodes: 1,
            },
        )
    }

    fn clean_replays() -> ReplayCheck {
        ReplayCheck {
            attempted: 1,
            refused: 1,
            ..ReplayCheck::default()
        }
    }

    #[test]
    fn a_run_whose_attacks_were_all_refused_has_no_problems() {
        let result = result(
            |recorder, sent| {
                recorder.record(0, Operation::Pay, sent, Outcome::Done);
                recorder.record(0, Operation::Tamper, sent, Outcome::Done);
            },
            0,
            clean_replays(),
        );
        let report = report(&result);
        assert_eq!(report.problems(), Vec::<String>::new());
        assert_eq!((report.attacks_attempted, report.attacks_refused), (1, 1));
    }

    #[test]
    fn an_accepted_attack_is_a_problem_naming_its_kind() {
        let result = result(
            |recorder, sent| {
                recorder.record(0, Operation::Tamper, sent, Outcome::Done);
                recorder.record(0, Operation::Tamper, sent, Outcome::Breach);
            },
            0,
            clean_replays(),
        );
        let report = report(&result);
        assert_eq!(report.attacks_accepted, 1);
        assert_eq!(
            report.problems(),
            vec!["the network accepted 1 attacks (1 tamper)".to_owned()]
        );
    }

    #[test]
    fn scrip_accepted_twice_or_replayed_after_the_run_is_a_double_spend() {
        let replays = ReplayCheck {
            attempted: 2,
            refused: 1,
            accepted: 1,
            inconclusive: 0,
        };
        let result = result(|_, _| {}, 3, replays);
        let report = report(&result);
        assert_eq!(report.double_spends_found, 4);
        let problems = report.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("3 scrip ID#s were accepted more than once"));
        assert!(problems[1].contains("accepted 1 replays of spent scrip"));
    }
}
