//! What a load run saw: per operation, outcomes and an HDR histogram of
//! latency; per second of the run, throughput and payment latency.
//!
//! Customers record into a few shards (each behind its own lock, a
//! customer always into the same one), merged once at the end. Operations
//! that start before the warm-up is over go into the per-second timeline
//! only, never into the totals, except attacks that were accepted: those
//! always count.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::mix::Operation;

/// Shards of the recorder: customers on different shards never wait for
/// each other's lock.
const SHARDS: usize = 4;
/// Largest latency a histogram holds exactly, in microseconds; longer ones
/// count as this long.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Largest latency the per-second histograms hold, in microseconds.
const MAX_SECOND_LATENCY_US: u64 = 10_000_000;

/// How one operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// Done as it should be: an operation that succeeded, or an attack
    /// refused with the reason it must get.
    Done,
    /// Refused for this reason (for an attack: another reason than the
    /// one it must get).
    Refused(&'a str),
    /// No answer came (a transport error or a timeout): the outcome is
    /// unknown.
    Lost,
    /// An attack that the network accepted.
    Breach,
}

/// The totals of one operation over the measured part of a run.
#[derive(Clone, Debug)]
pub struct OperationFigures {
    /// Done as it should be.
    pub done: u64,
    /// Refusals by reason.
    pub refused: BTreeMap<String, u64>,
    /// Tries that got no answer.
    pub lost: u64,
    /// Attacks accepted, warm-up included: a breach is never left out.
    pub breaches: u64,
    /// Latency of the operations done, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl OperationFigures {
    fn new() -> OperationFigures {
        OperationFigures {
            done: 0,
            refused: BTreeMap::new(),
            lost: 0,
            breaches: 0,
            latency_us: new_histogram(MAX_LATENCY_US, 3),
        }
    }

    /// Every try, whatever its outcome.
    pub fn attempted(&self) -> u64 {
        self.done + self.refused.values().sum::<u64>() + self.lost + self.breaches
    }

    /// Tries that did not end as they should: refused, lost or breaches.
    pub fn errors(&self) -> u64 {
        self.attempted() - self.done
    }

    fn add(&mut self, other: &OperationFigures) {
        self.done += other.done;
        self.lost += other.lost;
        self.breaches += other.breaches;
        for (reason, count) in &other.refused {
            *self.refused.entry(reason.clone()).or_default() += count;
        }
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
    }
}

/// One second of a run.
#[derive(Clone, Debug)]
pub struct Second {
    /// Operations answered in this second, whatever the answer.
    pub operations: u64,
    /// Payments accepted.
    pub payments: u64,
    /// Operations that did not end as they should.
    pub errors: u64,
    /// Latency of the payments accepted, in microseconds.
    pub payment_latency_us: Histogram<u32>,
}

impl Default for Second {
    fn default() -> Second {
        Second::new()
    }
}

impl Second {
    /// A second in which nothing happened.
    pub fn new() -> Second {
        Second {
            operations: 0,
            payments: 0,
            errors: 0,
            payment_latency_us: new_histogram(MAX_SECOND_LATENCY_US, 2),
        }
    }

    fn add(&mut self, other: &Second) {
        self.operations += other.operations;
        self.payments += other.payments;
        self.errors += other.errors;
        let _ = self.payment_latency_us.add(&other.payment_latency_us);
    }
}

#[derive(Clone, Debug)]
struct Figures {
    operations: Vec<OperationFigures>,
    timeline: Vec<Second>,
}

impl Figures {
    fn new() -> Figures {
        Figures {
            operations: Operation::ALL
                .iter()
                .map(|_| OperationFigures::new())
                .collect(),
            timeline: Vec::new(),
        }
    }
}

/// Where the customers of a run record what they see.
pub struct Recorder {
    started: Instant,
    measured_from: Instant,
    shards: Vec<Mutex<Figures>>,
}

impl Recorder {
    /// A recorder for a run starting now whose first `warm_up` is left out
    /// of the totals.
    pub fn new(warm_up: Duration) -> Recorder {
        let started = Instant::now();
        Recorder {
            started,
            measured_from: started + warm_up,
            shards: (0..SHARDS).map(|_| Mutex::new(Figures::new())).collect(),
        }
    }

    /// When the run started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// When the warm-up ends.
    pub fn measured_from(&self) -> Instant {
        self.measured_from
    }

    /// Records that `operation`, started at `sent` by customer `customer`,
    /// ended now with `outcome`.
    pub fn record(&self, customer: usize, operation: Operation, sent: Instant, outcome: Outcome) {
        let now = Instant::now();
        let latency_us = now.saturating_duration_since(sent).as_micros() as u64;
        let second = now.saturating_duration_since(self.started).as_secs() as usize;
        let mut figures = self.lock(customer);

        if figures.timeline.len() <= second {
            figures.timeline.resize_with(second + 1, Second::new);
        }
        let slot = &mut figures.timeline[second];
        if outcome != Outcome::Lost {
            slot.operations += 1;
        }
        if outcome != Outcome::Done {
            slot.errors += 1;
        }
        if operation == Operation::Pay && outcome == Outcome::Done {
            slot.payments += 1;
            slot.payment_latency_us.saturating_record(latency_us);
        }

        let totals = &mut figures.operations[operation.index()];
        if outcome == Outcome::Breach {
            totals.breaches += 1;
            return;
        }
        if sent < self.measured_from {
            return;
        }
        match outcome {
            Outcome::Done => {
                totals.done += 1;
                totals.latency_us.saturating_record(latency_us);
            }
            Outcome::Refused(reason) => match totals.refused.get_mut(reason) {
                Some(count) => *count += 1,
                None => {
                    totals.refused.insert(reason.to_owned(), 1);
                }
            },
            Outcome::Lost => totals.lost += 1,
            Outcome::Breach => {}
        }
    }

    /// The running totals of every shard: done operations, payments
    /// accepted, errors and breaches so far, warm-up included.
    pub fn progress(&self) -> Progress {
        let mut progress = Progress::default();
        for shard in &self.shards {
            let figures = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for second in &figures.timeline {
                progress.operations += second.operations;
                progress.payments += second.payments;
                progress.errors += second.errors;
            }
            progress.breaches += figures
                .operations
                .iter()
                .map(|operation| operation.breaches)
                .sum::<u64>();
        }
        progress
    }

    /// The merged figures: one entry per operation of [`Operation::ALL`],
    /// and the timeline.
    pub fn finish(self) -> (Vec<OperationFigures>, Vec<Second>) {
        let mut merged = Figures::new();
        for shard in self.shards {
            let figures = shard
                .into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (total, part) in merged.operations.iter_mut().zip(&figures.operations) {
                total.add(part);
            }
            if merged.timeline.len() < figures.timeline.len() {
                merged
                    .timeline
                    .resize_with(figures.timeline.len(), Second::new);
            }
            for (total, part) in merged.timeline.iter_mut().zip(&figures.timeline) {
                total.add(part);
            }
        }
        (merged.operations, merged.timeline)
    }

    fn lock(&self, customer: usize) -> MutexGuard<'_, Figures> {
        // Recording takes nanoseconds and cannot panic half-way through a
        // change, so a poisoned lock still holds good figures.
        self.shards[customer % SHARDS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Running totals for the progress bar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Operations answered.
    pub operations: u64,
    /// Payments accepted.
    pub payments: u64,
    /// Operations that did not end as they should.
    pub errors: u64,
    /// Attacks accepted.
    pub breaches: u64,
}

fn new_histogram<T: hdrhistogram::Counter>(max: u64, significant_figures: u8) -> Histogram<T> {
    Histogram::new_with_bounds(1, max, significant_figures)
        .unwrap_or_else(|_| unreachable!("the histogram bounds are valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warm_up_counts_in_the_timeline_but_not_in_the_totals() {
        let recorder = Recorder::new(Duration::from_secs(3600));
        let sent = Instant::now();
        recorder.record(0, Operation::Pay, sent, Outcome::Done);
        recorder.record(1, Operation::Tamper, sent, Outcome::Breach);
        assert_eq!(
            recorder.progress(),
            Progress {
                operations: 2,
                payments: 1,
                errors: 1,
                breaches: 1,
            }
        );
        let (operations, timeline) = recorder.finish();
        assert_eq!(operations[Operation::Tamper.index()].breaches, 1);
        assert_eq!(operations[Operation::Pay.index()].attempted(), 0);
        assert_eq!(timeline.len(), 1);
        assert_eq!(timeline[0].payments, 1);
        assert_eq!(timeline[0].payment_latency_us.len(), 1);
    }

    #[test]
    fn totals_after_the_warm_up_merge_over_shards() {
        let recorder = Recorder::new(Duration::ZERO);
        let sent = Instant::now();
        for customer in 0..8 {
            recorder.record(customer, Operation::Pay, sent, Outcome::Done);
        }
        recorder.record(2, Operation::Pay, sent, Outcome::Refused("double_spend"));
        recorder.record(5, Operation::Pay, sent, Outcome::Refused("double_spend"));
        recorder.record(3, Operation::Pay, sent, Outcome::Lost);
        recorder.record(6, Operation::Replay, sent, Outcome::Done);
        recorder.record(7, Operation::Expired, sent, Outcome::Breach);
        assert_eq!(recorder.progress().breaches, 1);

        let (operations, timeline) = recorder.finish();
        let pay = &operations[Operation::Pay.index()];
        assert_eq!(
            (pay.done, pay.lost, pay.attempted(), pay.errors()),
            (8, 1, 11, 3)
        );
        assert_eq!(pay.refused.get("double_spend"), Some(&2));
        assert_eq!(pay.latency_us.len(), 8);
        assert_eq!(operations[Operation::Replay.index()].done, 1);
        assert_eq!(operations[Operation::Expired.index()].breaches, 1);
        let second: u64 = timeline.iter().map(|second| second.operations).sum();
        // A lost try is an error, not an answered operation.
        assert_eq!(second, 12);
        assert_eq!(timeline.iter().map(|second| second.errors).sum::<u64>(), 4);
    }
}
