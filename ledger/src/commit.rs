//! Group commit: many callers wait on one flush.
//!
//! Callers send a waiter to a single committer task. The task takes every
//! waiter queued so far, writes out what the [staged](Staged) parts of the
//! store hold in memory, flushes sled once on a blocking thread, and wakes
//! them all with the result. A write made (or staged) before its caller
//! queued a waiter is therefore covered by the flush that wakes it.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::LedgerError;

/// How writes reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every commit waits for the flush that covers it. The default.
    Strict,
    /// Commits return at once and the store is flushed every `interval`.
    /// A crash loses up to `interval` of acknowledged writes: a vendor may
    /// then accept scrip again that it had already accepted.
    Relaxed {
        /// Time between checkpoints.
        interval: Duration,
    },
}

/// How long the committer waits for more writers before a flush.
const GATHER: Duration = Duration::from_millis(1);

type Waiter = oneshot::Sender<Result<(), LedgerError>>;

/// A part of the store that gathers small writes in memory and writes them
/// out together just before a flush, so that a flush shared by hundreds of
/// callers also shares their writes.
pub(crate) trait Staged: Send + Sync {
    /// Writes everything staged so far to the store, not yet flushed. On
    /// failure nothing staged is lost: it is written by the next call.
    fn write_staged(&self) -> Result<(), LedgerError>;
}

/// The staged parts of one store.
#[derive(Default)]
pub(crate) struct Staging {
    parts: Mutex<Vec<Weak<dyn Staged>>>,
}

impl Staging {
    /// Adds `part`; it is dropped from the list once it is gone.
    pub(crate) fn register(&self, part: Weak<dyn Staged>) {
        self.lock().push(part);
    }

    /// Writes out every part; returns the first failure, after trying all.
    pub(crate) fn write_all(&self) -> Result<(), LedgerError> {
        let parts: Vec<Arc<dyn Staged>> = {
            let mut parts = self.lock();
            parts.retain(|part| part.strong_count() > 0);
            parts.iter().filter_map(Weak::upgrade).collect()
        };
        let mut result = Ok(());
        for part in parts {
            if let Err(error) = part.write_staged() {
                result = result.and(Err(error));
            }
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<dyn Staged>>> {
        // The list is only pushed to and filtered, never left half-changed.
        self.parts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Writes out the staged parts, then flushes: what a commit waits for.
pub(crate) fn write_and_flush(db: &sled::Db, staging: &Staging) -> Result<(), LedgerError> {
    let staged = staging.write_all();
    db.flush()
        .map_err(|error| LedgerError::storage("flush", error))?;
    staged
}

/// Under which names a store's committer reports its flushes: the metric
/// names start with `prefix` (`PREFIX_commit_batch_size`,
/// `PREFIX_flush_seconds`, `PREFIX_flushes_total`,
/// `PREFIX_flush_errors_total`) and carry `labels`.
#[derive(Clone, Debug)]
pub struct CommitMetrics {
    prefix: &'static str,
    labels: Vec<metrics::Label>,
}

impl CommitMetrics {
    /// Metrics named `prefix_...` with the given labels.
    pub fn new(prefix: &'static str, labels: &[(&'static str, String)]) -> CommitMetrics {
        CommitMetrics {
            prefix,
            labels: labels
                .iter()
                .map(|(key, value)| metrics::Label::new(*key, value.clone()))
                .collect(),
        }
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.prefix)
    }

    fn flushed(&self, started: Instant, waiters: usize, failed: bool) {
        let labels = self.labels.clone();
        metrics::histogram!(self.name("flush_seconds"), labels.clone())
            .record(started.elapsed().as_secs_f64());
        if waiters > 0 {
            metrics::histogram!(self.name("commit_batch_size"), labels.clone())
                .record(waiters as f64);
        }
        metrics::counter!(self.name("flushes_total"), labels.clone()).increment(1);
        if failed {
            metrics::counter!(self.name("flush_errors_total"), labels).increment(1);
        }
    }
}

impl Default for CommitMetrics {
    /// The names of a store's own metrics: `millicent_ledger_...`, no labels.
    fn default() -> CommitMetrics {
        CommitMetrics::new("millicent_ledger", &[])
    }
}

pub(crate) struct Committer {
    queue: mpsc::UnboundedSender<Waiter>,
    task: tokio::task::JoinHandle<()>,
    durability: Durability,
}

impl Committer {
    pub(crate) fn start(
        db: sled::Db,
        staging: Arc<Staging>,
        durability: Durability,
        metrics: CommitMetrics,
    ) -> Committer {
        let (queue, waiters) = mpsc::unbounded_channel();
        let task = match durability {
            Durability::Strict => tokio::spawn(run_group_commit(db, staging, waiters, metrics)),
            Durability::Relaxed { interval } => {
                tracing::warn!(
                    interval_ms = interval.as_millis() as u64,
                    "relaxed durability: a crash can lose acknowledged writes from the last \
                     checkpoint interval; a vendor node may accept such scrip a second time"
                );
                tokio::spawn(run_checkpoints(db, staging, interval, waiters, metrics))
            }
        };
        Committer {
            queue,
            task,
            durability,
        }
    }

    /// Stops the committer once no caller can queue a waiter any more, and
    /// waits for it to release the store.
    pub(crate) async fn stop(self) {
        drop(self.queue);
        let _ = self.task.await;
    }

    pub(crate) fn durability(&self) -> Durability {
        self.durability
    }

    pub(crate) async fn commit(&self) -> Result<(), LedgerError> {
        if let Durability::Relaxed { .. } = self.durability {
            return Ok(());
        }
        let (waiter, done) = oneshot::channel();
        self.queue.send(waiter).map_err(|_| LedgerError::Closed)?;
        done.await.map_err(|_| LedgerError::Closed)?
    }
}

async fn run_group_commit(
    db: sled::Db,
    staging: Arc<Staging>,
    mut queue: mpsc::UnboundedReceiver<Waiter>,
    metrics: CommitMetrics,
) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, usize::MAX).await > 0 {
        // Give writers already on their way a moment to join this flush:
        // a flush costs about the same for one waiter as for hundreds.
        tokio::time::sleep(GATHER).await;
        while let Ok(waiter) = queue.try_recv() {
            batch.push(waiter);
        }
        let started = Instant::now();
        let (flushing, staged) = (db.clone(), staging.clone());
        let result =
            match tokio::task::spawn_blocking(move || write_and_flush(&flushing, &staged)).await {
                Ok(result) => result,
                Err(error) => Err(LedgerError::storage("flush", error)),
            };
        metrics.flushed(started, batch.len(), result.is_err());
        if let Err(error) = &result {
            tracing::error!(%error, waiters = batch.len(), "flush failed");
        }
        for waiter in batch.drain(..) {
            // A waiter whose caller went away no longer needs the answer.
            let _ = waiter.send(result.clone());
        }
    }
}

async fn run_checkpoints(
    db: sled::Db,
    staging: Arc<Staging>,
    interval: Duration,
    mut closed: mpsc::UnboundedReceiver<Waiter>,
    metrics: CommitMetrics,
) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = closed.recv() => break,
        }
        let (flushing, staged) = (db.clone(), staging.clone());
        let started = Instant::now();
        let failed =
            match tokio::task::spawn_blocking(move || write_and_flush(&flushing, &staged)).await {
                Ok(Ok(())) => false,
                Ok(Err(error)) => {
                    tracing::error!(%error, "checkpoint failed");
                    true
                }
                Err(error) => {
                    tracing::error!(%error, "checkpoint task failed");
                    true
                }
            };
        metrics.flushed(started, 0, failed);
    }
    if let Err(error) = write_and_flush(&db, &staging) {
        tracing::error!(%error, "final checkpoint failed");
    }
}
