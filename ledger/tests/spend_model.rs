//! The spent-ID store against a model: no accepted payment without a
//! durable spend.
//!
//! Each case runs a random sequence of operations on a [`SpendStore`] in a
//! temporary directory, with the clock moving forward between them: spends
//! of random (issuer, ID#) pairs, often of an ID# already spent, with the
//! same request (a retry) or another one (a double spend); spends whose
//! reply cannot be made; commits; pruning of old reply records; and three
//! ways of stopping and reopening the store. A plain model (a map from
//! issuer and ID# to the request, reply and time of its spend, and whether a
//! commit has covered it since) says what every answer must be:
//!
//! - a spend of an ID# never spent is fresh; a spend of a spent ID# is never
//!   fresh: with the same request within the retry window it gets the first
//!   reply back, with another request it is a double spend;
//! - a spend whose reply fails changes nothing;
//! - after any reopen every spend a commit covered is still spent (and its
//!   reply still on record within the retry window), and nothing is spent
//!   that was never spent.
//!
//! # Crashes
//!
//! A process crash cannot be reproduced faithfully in-process: sled flushes
//! everything when its last handle is dropped, so dropping the store loses
//! nothing. The test simulates what it can:
//!
//! - **crash**: the store is reopened from a copy of its directory taken
//!   when the last commit returned, as if the process died before any later
//!   write reached the disk (the most a crash may lose). The copy is of a
//!   store still open, never closed, so reopening it runs recovery.
//! - **drop**: every handle is dropped without closing and the store is
//!   reopened from the same directory.
//! - **close**: a graceful close, which must keep even uncommitted spends.
//!
//! After a crash or a drop a spend that no commit covered may or may not be
//! there; the model learns which and carries on. `kill -9` of the real
//! vendor node, with writes in flight, is in vendor-node/tests/crash.rs.

// A test: a failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use millicent_core::{ScripId, VendorName};
use millicent_ledger::{Durability, Ledger, SpendError, SpendOutcome, SpendStore};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tempfile::TempDir;

/// Cases to run; each opens sled several times, so a few dozen take seconds.
const CASES: u32 = 32;
/// Longest sequence of operations in a case.
const MAX_STEPS: usize = 60;
/// The clock at the start of every case (Unix seconds).
const START: u64 = 1_800_000_000;
/// A few segments long (a segment lasts a few seconds), so that the clock
/// often passes it and retries land on both sides of its end.
const RETRY_WINDOW_SECS: u64 = 12;
const TABLE: &str = "spends";
const ISSUERS: [&str; 2] = ["news.example", "broker.example"];

#[derive(Clone, Debug)]
enum Op {
    /// Spend `id` of issuer `issuer` for the request with `fingerprint`.
    Spend {
        issuer: usize,
        id: ScripId,
        fingerprint: u8,
    },
    /// Spend again, for the same request, the ID# spent `back` spends ago
    /// (counting only those still spent): a customer whose reply was lost.
    Retry { back: usize },
    /// Spend `id` of issuer `issuer`, but making the reply fails.
    SpendWithoutReply {
        issuer: usize,
        id: ScripId,
        fingerprint: u8,
    },
    /// Wait for a commit covering everything written so far.
    Commit,
    /// Drop reply records past the retry window.
    Prune,
    /// Reopen from the disk as it was when the last commit returned.
    Crash,
    /// Drop every handle without closing, and reopen.
    Drop,
    /// Close gracefully, and reopen.
    Close,
}

#[derive(Clone, Debug)]
struct Step {
    /// Seconds the clock moves before the operation.
    wait: u64,
    op: Op,
}

/// ID#s from few series and few sequence numbers, so that one is often
/// spent twice; some at the edge of a bitmap chunk, some anywhere.
fn id() -> impl Strategy<Value = ScripId> + Clone {
    let seq = prop_oneof![4 => 0..16u32, 1 => 4090..4100u32, 1 => any::<u32>()];
    (0..3u32, seq).prop_map(|(series, seq)| ScripId::new(series, seq))
}

fn step() -> impl Strategy<Value = Step> {
    let spend = (0..ISSUERS.len(), id(), 0..2u8);
    let op = prop_oneof![
        12 => spend.clone().prop_map(|(issuer, id, fingerprint)| Op::Spend {
            issuer,
            id,
            fingerprint,
        }),
        4 => (0..8usize).prop_map(|back| Op::Retry { back }),
        1 => spend.prop_map(|(issuer, id, fingerprint)| Op::SpendWithoutReply {
            issuer,
            id,
            fingerprint,
        }),
        5 => Just(Op::Commit),
        1 => Just(Op::Prune),
        1 => Just(Op::Crash),
        1 => Just(Op::Drop),
        1 => Just(Op::Close),
    ];
    let wait = prop_oneof![4 => 0..3u64, 1 => 0..20u64];
    (wait, op).prop_map(|(wait, op)| Step { wait, op })
}

/// What the model knows of one spend.
#[derive(Clone, Debug)]
struct Spent {
    fingerprint: u8,
    reply: Vec<u8>,
    at: u64,
    /// A commit has returned since the spend.
    durable: bool,
}

type Model = BTreeMap<(usize, ScripId), Spent>;

type TestResult = Result<(), TestCaseError>;

/// An open store and the directory it lives in.
struct Node {
    store: SpendStore,
    ledger: Ledger,
    dir: TempDir,
}

fn open(dir: TempDir) -> Result<Node, TestCaseError> {
    let ledger = Ledger::open(dir.path(), Durability::Strict)?;
    let store = SpendStore::open(&ledger, TABLE, RETRY_WINDOW_SECS)?;
    Ok(Node { store, ledger, dir })
}

/// Opens `dir` once the store that had it open has let go of it: the
/// committer of a dropped ledger releases sled on its own task.
async fn reopen_when_released(dir: TempDir) -> Result<Node, TestCaseError> {
    for _ in 0..400 {
        match Ledger::open(dir.path(), Durability::Strict) {
            Ok(ledger) => {
                let store = SpendStore::open(&ledger, TABLE, RETRY_WINDOW_SECS)?;
                return Ok(Node { store, ledger, dir });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    Err(TestCaseError::fail(
        "the dropped store never released its directory",
    ))
}

/// A copy of the store's files as they are on disk now.
fn copy_dir(from: &Path) -> Result<TempDir, TestCaseError> {
    fn copy(from: &Path, to: &Path) -> std::io::Result<()> {
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let target = to.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                std::fs::create_dir(&target)?;
                copy(&entry.path(), &target)?;
            } else {
                std::fs::copy(entry.path(), &target)?;
            }
        }
        Ok(())
    }
    let to = tempfile::tempdir()?;
    copy(from, to.path())?;
    Ok(to)
}

fn issuer(index: usize) -> VendorName {
    VendorName::new(ISSUERS[index]).unwrap()
}

/// Checks a spend's outcome against the model and records a fresh one.
fn check_spend(
    node: &Node,
    model: &mut Model,
    index: usize,
    id: ScripId,
    fingerprint: u8,
    now: u64,
    reply: Option<Vec<u8>>,
) -> TestResult {
    let made = reply.clone();
    let outcome = node
        .store
        .spend(&issuer(index), id, &[fingerprint], now, move || {
            made.ok_or("no reply")
        });
    let key = (index, id);
    match (model.get(&key), outcome) {
        (None, Ok(SpendOutcome::Fresh(sent))) => {
            let Some(reply) = reply else {
                return Err(TestCaseError::fail("a spend without a reply was fresh"));
            };
            prop_assert_eq!(&sent, &reply);
            model.insert(
                key,
                Spent {
                    fingerprint,
                    reply,
                    at: now,
                    durable: false,
                },
            );
        }
        (None, Err(SpendError::Reply(_))) => {
            prop_assert!(reply.is_none(), "the reply was made");
            prop_assert!(!node.store.is_spent(&issuer(index), id), "{} spent", id);
        }
        (Some(spent), Ok(SpendOutcome::Retry(sent))) => {
            prop_assert_eq!(
                spent.fingerprint,
                fingerprint,
                "{} retried by another request",
                id
            );
            prop_assert_eq!(&sent, &spent.reply, "{}: not the first reply", id);
        }
        (Some(spent), Err(SpendError::DoubleSpend)) => {
            let retry_in_window =
                spent.fingerprint == fingerprint && now <= spent.at + RETRY_WINDOW_SECS;
            prop_assert!(
                !retry_in_window,
                "{} retried {} s after its spend at {} was refused",
                id,
                now - spent.at,
                spent.at
            );
        }
        (expected, outcome) => {
            return Err(TestCaseError::fail(format!(
                "{id} of issuer {index} at {now}: {outcome:?}, but the model has {expected:?}"
            )));
        }
    }
    Ok(())
}

/// After a reopen: every durable spend is there (every spend, after a
/// graceful close), a spend no commit covered is either there or forgotten
/// by the model, and nothing else is spent.
fn check_reopened(node: &Node, model: &mut Model, closed: bool) -> TestResult {
    let mut lost = Vec::new();
    for (&(index, id), spent) in model.iter_mut() {
        let kept = node.store.is_spent(&issuer(index), id);
        if spent.durable || closed {
            prop_assert!(kept, "{} of issuer {} lost on reopen", id, index);
        }
        if closed {
            spent.durable = true;
        }
        if !kept {
            lost.push((index, id));
        }
    }
    for key in lost {
        model.remove(&key);
    }
    prop_assert_eq!(
        node.store.len(),
        model.len() as u64,
        "spent IDs never spent"
    );
    Ok(())
}

async fn run(steps: Vec<Step>) -> TestResult {
    let mut node = open(tempfile::tempdir()?)?;
    // The store's files as they were when the last commit (or close)
    // returned.
    let mut last_commit: Option<TempDir> = None;
    let mut model = Model::new();
    let mut now = START;

    for (number, Step { wait, op }) in steps.into_iter().enumerate() {
        now += wait;
        match op {
            Op::Spend {
                issuer,
                id,
                fingerprint,
            } => {
                let reply = format!("reply {number}").into_bytes();
                check_spend(&node, &mut model, issuer, id, fingerprint, now, Some(reply))?;
            }
            Op::Retry { back } => {
                let mut latest: Vec<_> = model.iter().collect();
                latest.sort_by_key(|(_, spent)| std::cmp::Reverse(spent.at));
                let picked = latest
                    .get(back)
                    .map(|(key, spent)| (key.0, key.1, spent.fingerprint));
                if let Some((issuer, id, fingerprint)) = picked {
                    let reply = format!("reply {number}").into_bytes();
                    check_spend(&node, &mut model, issuer, id, fingerprint, now, Some(reply))?;
                }
            }
            Op::SpendWithoutReply {
                issuer,
                id,
                fingerprint,
            } => check_spend(&node, &mut model, issuer, id, fingerprint, now, None)?,
            Op::Commit => {
                node.ledger.commit().await?;
                model.values_mut().for_each(|spent| spent.durable = true);
                last_commit = Some(copy_dir(node.dir.path())?);
            }
            Op::Prune => {
                node.store.prune_replies(now)?;
            }
            Op::Crash => {
                drop(node);
                let disk = match &last_commit {
                    Some(snapshot) => copy_dir(snapshot.path())?,
                    None => tempfile::tempdir()?,
                };
                node = open(disk)?;
                check_reopened(&node, &mut model, false)?;
            }
            Op::Drop => {
                let Node { store, ledger, dir } = node;
                drop(store);
                drop(ledger);
                node = reopen_when_released(dir).await?;
                check_reopened(&node, &mut model, false)?;
            }
            Op::Close => {
                let Node { store, ledger, dir } = node;
                drop(store);
                ledger.close().await?;
                // Closing flushed everything: a crash from now on keeps it.
                last_commit = Some(copy_dir(dir.path())?);
                node = open(dir)?;
                check_reopened(&node, &mut model, true)?;
            }
        }

        // Spent exactly where the model says, for both issuers, here and
        // next door.
        for &(_, id) in model.keys() {
            for seq in [id.seq().wrapping_sub(1), id.seq(), id.seq().wrapping_add(1)] {
                for other in 0..ISSUERS.len() {
                    let near = ScripId::new(id.series(), seq);
                    prop_assert_eq!(
                        node.store.is_spent(&issuer(other), near),
                        model.contains_key(&(other, near)),
                        "{} of issuer {} after step {}",
                        near,
                        other,
                        number
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn no_accepted_spend_is_lost_and_none_is_invented(
        steps in proptest::collection::vec(step(), 1..=MAX_STEPS),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(run(steps))?;
    }
}
