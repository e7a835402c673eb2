//! Group commit: many callers wait on one flush.
//!
//! Callers send a waiter to a single committer task. The task takes every
//! waiter queued so far, flushes sled once on a blocking thread, and wakes
//! them all with the result. A write made before its caller queued a waiter
//! is therefore covered by the flush that wakes it.

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

pub(crate) struct Committer {
    queue: mpsc::UnboundedSender<Waiter>,
    task: tokio::task::JoinHandle<()>,
    durability: Durability,
}

impl Committer {
    pub(crate) fn start(db: sled::Db, durability: Durability) -> Committer {
        let (queue, waiters) = mpsc::unbounded_channel();
        let task = match durability {
            Durability::Strict => tokio::spawn(run_group_commit(db, waiters)),
            Durability::Relaxed { interval } => {
                tracing::warn!(
                    interval_ms = interval.as_millis() as u64,
                    "relaxed durability: a crash can lose acknowledged writes from the last \
                     checkpoint interval; a vendor node may accept such scrip a second time"
                );
                tokio::spawn(run_checkpoints(db, interval, waiters))
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

async fn run_group_commit(db: sled::Db, mut queue: mpsc::UnboundedReceiver<Waiter>) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, usize::MAX).await > 0 {
        // Give writers already on their way a moment to join this flush:
        // a flush costs about the same for one waiter as for hundreds.
        tokio::time::sleep(GATHER).await;
        while let Ok(waiter) = queue.try_recv() {
            batch.push(waiter);
        }
        let started = Instant::now();
        let flushing = db.clone();
        let result = match tokio::task::spawn_blocking(move || flushing.flush()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(LedgerError::storage("flush", error)),
            Err(error) => Err(LedgerError::storage("flush", error)),
        };
        metrics::histogram!("millicent_ledger_flush_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("millicent_ledger_commit_batch_size").record(batch.len() as f64);
        metrics::counter!("millicent_ledger_flushes_total").increment(1);
        if let Err(error) = &result {
            metrics::counter!("millicent_ledger_flush_errors_total").increment(1);
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
    interval: Duration,
    mut closed: mpsc::UnboundedReceiver<Waiter>,
) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = closed.recv() => break,
        }
        let flushing = db.clone();
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || flushing.flush()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "checkpoint failed"),
            Err(error) => tracing::error!(%error, "checkpoint task failed"),
        }
        metrics::histogram!("millicent_ledger_flush_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("millicent_ledger_flushes_total").increment(1);
    }
    if let Err(error) = db.flush() {
        tracing::error!(%error, "final checkpoint failed");
    }
}
