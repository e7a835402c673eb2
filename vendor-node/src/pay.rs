//! The payment path: check, spend durably, answer.
//!
//! Safety critical: this is where a vendor decides to give goods for scrip.
//!
//! # Shape
//!
//! Payments come one at a time (a unary `Pay`) or many together (a message
//! of a `PayStream` call); both go through [`Node::pay_all`], so their
//! checks, spends, durability and metrics are the same. For each payment:
//!
//! 1. The wire message is converted and validated ([`crate::convert`]).
//! 2. The scrip's vendor must be served here and take its suite and the
//!    chosen variant.
//! 3. The core checks the certificate, expiry, customer secret, request
//!    stamp and, in the private variant, opens the request. It also refuses
//!    scrip that expires after its series: a licence holder knows the
//!    series' secret and could certify such scrip, and a series' spent IDs
//!    are forgotten once it has expired. A series not held here that a
//!    peer owns is refused as `wrong_node`, naming the peer: only the
//!    owner of a series holds its spent IDs (see [`crate::cluster`]).
//! 4. The request names an item; its price must be covered, and a clear
//!    payment must be within the vendor's clear limit.
//! 5. [`SpendStore::spend`](millicent_ledger::SpendStore::spend) marks the
//!    ID# spent and stages the record of the reply, or finds that it was
//!    spent before: by the same request (a retry, answered with the
//!    recorded reply) or by another (a double spend). The reply, with its
//!    change ID#, is made inside that call, so only a fresh spend takes an
//!    ID# and IDs stay dense.
//!
//! Then one [`Ledger::commit`](millicent_ledger::Ledger::commit) covers
//! every payment of the batch, and nothing is answered as accepted, fresh
//! or retried, before it has returned: the retry of a payment whose first
//! commit failed must not be answered from a write that is still not
//! durable. A failed commit refuses every payment of the batch with
//! `storage`; their records stay staged, and identical retries get the
//! recorded replies once the store recovers.
//!
//! A crash after step 5 and before the commit returns may or may not keep
//! the spend: nothing was answered, and the customer's identical retry
//! either gets the recorded reply or is accepted afresh. Every refusal
//! before step 5 changes no state at all.

use std::sync::Arc;
use std::time::Instant;

use millicent_core::{Amount, Error, KeyRing, Payment, Suite, Variant, VerifiedPayment};
use millicent_ledger::{LedgerError, SpendError, SpendOutcome};
use millicent_proto as wire;
use rand::Rng as _;

use crate::VendorError;
use crate::config::Item;
use crate::convert;
use crate::node::{Node, refill_in_background, unix_now};
use crate::recipe::{MAX_NONCE, Recipe};
use crate::vendor::Vendor;

/// How often a payment may find the change IDs used up and wait for more
/// before giving up. Each wait reserves a whole block, so a second one
/// means something else is consuming IDs at an extraordinary rate.
const MAX_CHANGE_WAITS: usize = 3;

/// An accepted payment.
#[derive(Debug)]
struct Paid {
    reply: wire::PayReply,
    /// Whether this answered a retry of a payment accepted before.
    retried: bool,
    /// The value of the change minted for it.
    change: Amount,
}

/// Why making a reply inside the spend failed.
#[derive(Debug)]
enum ReplyError {
    /// The committed block of change IDs is used up.
    NoChangeId,
    /// The core refused to make the reply.
    Refused(Error),
}

/// A payment that passed every check before its spend.
struct Checked<'a> {
    vendor: &'a Vendor,
    keys: Arc<KeyRing>,
    verified: VerifiedPayment,
    item: &'a Item,
    change: Amount,
    /// Determines the payment exactly, for telling a retry from a double
    /// spend: its variant (the same item asked for in another variant is
    /// another payment, and the recorded reply would not fit it), then the
    /// request stamp, which covers the plaintext request, or for a clear
    /// payment the request itself.
    fingerprint: Vec<u8>,
}

/// Where one payment of a batch stands.
enum Settled<'a> {
    /// Spent (or found spent by the same request), waiting for the commit.
    Spent {
        vendor: usize,
        paid: Paid,
        /// The change IDs of this suite are running low.
        refill: Option<Suite>,
    },
    /// The change IDs were used up: waits for more, then spends again.
    NeedsChange {
        vendor: usize,
        checked: Box<Checked<'a>>,
    },
    /// Refused; nothing changed.
    Refused {
        vendor: Option<usize>,
        error: VendorError,
    },
}

impl Node {
    /// Takes one payment: [`Node::pay_all`] of one.
    pub(crate) async fn pay(
        self: &Arc<Node>,
        request: wire::PayRequest,
    ) -> Result<wire::PayReply, VendorError> {
        let mut answers = self.pay_all(vec![request]).await;
        answers
            .pop()
            .unwrap_or_else(|| unreachable!("pay_all answers every payment it is given"))
    }

    /// Takes many payments at once, answering each as a unary `Pay` would,
    /// in the order given. Their spends share one commit.
    pub(crate) async fn pay_all(
        self: &Arc<Node>,
        requests: Vec<wire::PayRequest>,
    ) -> Vec<Result<wire::PayReply, VendorError>> {
        let started = Instant::now();
        let now = unix_now();
        let mut settled: Vec<Settled<'_>> = requests
            .into_iter()
            .map(|request| self.settle_request(request, now))
            .collect();

        for _ in 0..MAX_CHANGE_WAITS {
            let waited;
            (settled, waited) = self.wait_for_change(settled, now).await;
            if !waited {
                break;
            }
        }

        let spent_any = settled
            .iter()
            .any(|payment| matches!(payment, Settled::Spent { .. }));
        if spent_any && let Err(error) = self.ledger.commit().await {
            for payment in &mut settled {
                if let Settled::Spent { vendor, .. } = payment {
                    *payment = Settled::Refused {
                        vendor: Some(*vendor),
                        error: VendorError::Storage(error.clone()),
                    };
                }
            }
        }

        let elapsed = started.elapsed().as_secs_f64();
        let latency = metrics::histogram!("millicent_vendor_payment_seconds");
        settled
            .into_iter()
            .map(|payment| {
                latency.record(elapsed);
                self.answer(payment, now)
            })
            .collect()
    }

    /// The payments of `settled` that found no change ID wait for the next
    /// block of their vendor and suite, then spend again. Also returns
    /// whether any was waiting.
    async fn wait_for_change<'a>(
        &'a self,
        settled: Vec<Settled<'a>>,
        now: u64,
    ) -> (Vec<Settled<'a>>, bool) {
        let mut waiting: Vec<(usize, Suite)> = settled
            .iter()
            .filter_map(|payment| match payment {
                Settled::NeedsChange { vendor, checked } => {
                    Some((*vendor, checked.verified.scrip().suite()))
                }
                _ => None,
            })
            .collect();
        if waiting.is_empty() {
            return (settled, false);
        }
        waiting.sort_unstable_by_key(|(vendor, suite)| (*vendor, suite.id()));
        waiting.dedup();
        let mut failed = Vec::new();
        for (index, suite) in waiting {
            if let Some(vendor) = self.vendor_at(index)
                && let Err(error) = vendor.refill_change_ids(suite, now).await
            {
                failed.push((index, suite, error));
            }
        }

        let settled = settled
            .into_iter()
            .map(|payment| {
                let Settled::NeedsChange { vendor, checked } = payment else {
                    return payment;
                };
                let suite = checked.verified.scrip().suite();
                match failed
                    .iter()
                    .find(|(index, failed_suite, _)| *index == vendor && *failed_suite == suite)
                {
                    Some((_, _, error)) => Settled::Refused {
                        vendor: Some(vendor),
                        error: refill_refusal(error, checked.vendor),
                    },
                    None => self.spend(vendor, *checked, now),
                }
            })
            .collect();
        (settled, true)
    }

    /// Converts, routes and spends one payment.
    fn settle_request(&self, request: wire::PayRequest, now: u64) -> Settled<'_> {
        let payment = match convert::payment(request) {
            Ok(payment) => payment,
            Err(error) => {
                return Settled::Refused {
                    vendor: None,
                    error: error.into(),
                };
            }
        };
        let index = match self.vendor_index(&payment.scrip.body().vendor) {
            Ok(index) => index,
            Err(error) => {
                return Settled::Refused {
                    vendor: None,
                    error,
                };
            }
        };
        match self.check(index, payment, now) {
            Ok(checked) => self.spend(index, checked, now),
            Err(error) => Settled::Refused {
                vendor: Some(index),
                error,
            },
        }
    }

    /// Every check of a payment before its spend (steps 2 to 4).
    fn check(&self, index: usize, payment: Payment, now: u64) -> Result<Checked<'_>, VendorError> {
        let vendor = self
            .vendor_at(index)
            .ok_or_else(|| VendorError::UnknownVendor {
                vendor: payment.scrip.body().vendor.as_str().to_owned(),
            })?;
        let suite = payment.scrip.suite();
        if !vendor.accepts_suite(suite) {
            return Err(Error::SuiteNotAccepted(suite.id()).into());
        }
        if !vendor.accepts(payment.variant) {
            return Err(VendorError::VariantNotAccepted {
                vendor: vendor.name().clone(),
                variant: payment.variant,
            });
        }

        let keys = vendor.key_ring();
        let verified = payment
            .verify(&keys, now)
            .map_err(|error| self.redirect(error))?;
        let item = vendor.item(verified.request())?;
        let clear_limit = match verified.variant() {
            Variant::Clear => vendor.catalogue.clear_limit_under(item),
            Variant::Secure | Variant::Private => None,
        };
        if let Some(limit) = clear_limit {
            return Err(VendorError::ClearAboveLimit {
                vendor: vendor.name().clone(),
                price: item.price,
                limit,
            });
        }
        let change = verified.change_value(item.price)?;

        let mut fingerprint = vec![variant_byte(verified.variant())];
        fingerprint.extend_from_slice(match verified.request_stamp() {
            Some(stamp) => stamp.as_bytes(),
            None => verified.request(),
        });
        Ok(Checked {
            vendor,
            keys,
            verified,
            item,
            change,
            fingerprint,
        })
    }

    /// Step 5: spends a checked payment (not yet committed).
    fn spend<'a>(&self, index: usize, checked: Checked<'a>, now: u64) -> Settled<'a> {
        let vendor = checked.vendor;
        let suite = checked.verified.scrip().suite();
        let id = checked.verified.scrip().id();
        let mut running_low = false;
        // A fresh reply is kept as made; the record holds its recipe.
        let mut made = None;
        let outcome = self
            .spends
            .spend(vendor.name(), id, &checked.fingerprint, now, || {
                let change = if checked.change.is_zero() {
                    None
                } else {
                    let taken = vendor.take_change_id(suite).ok_or(ReplyError::NoChangeId)?;
                    running_low = taken.running_low;
                    Some(taken.slot)
                };
                let mut nonce = Vec::new();
                if checked.verified.variant() == Variant::Private {
                    nonce.resize(suite.nonce_len().min(MAX_NONCE), 0);
                    rand::rng().fill_bytes(&mut nonce);
                }
                let recipe = Recipe {
                    price: checked.item.price,
                    change,
                    nonce,
                };
                made = Some(make_reply(&checked, &recipe)?);
                Ok(recipe.encode())
            });
        let refused = |error: VendorError| Settled::Refused {
            vendor: Some(index),
            error,
        };
        let (reply, retried) = match outcome {
            Ok(SpendOutcome::Fresh(recipe)) => match made {
                Some(reply) => (reply, false),
                None => match remake_reply(&checked, &recipe) {
                    Ok(reply) => (reply, false),
                    Err(error) => return refused(error),
                },
            },
            Ok(SpendOutcome::Retry(recipe)) => match remake_reply(&checked, &recipe) {
                Ok(reply) => (reply, true),
                Err(error) => return refused(error),
            },
            Err(SpendError::DoubleSpend) => return refused(VendorError::DoubleSpend { id }),
            Err(SpendError::Storage(error)) => return refused(error.into()),
            Err(SpendError::Reply(ReplyError::Refused(error))) => return refused(error.into()),
            Err(SpendError::Reply(ReplyError::NoChangeId)) => {
                return Settled::NeedsChange {
                    vendor: index,
                    checked: Box::new(checked),
                };
            }
        };
        Settled::Spent {
            vendor: index,
            paid: Paid {
                reply,
                retried,
                change: checked.change,
            },
            refill: running_low.then_some(suite),
        }
    }

    /// The answer to one payment of a batch, counted in the metrics.
    fn answer(
        self: &Arc<Node>,
        payment: Settled<'_>,
        now: u64,
    ) -> Result<wire::PayReply, VendorError> {
        let (index, result) = match payment {
            Settled::Spent {
                vendor,
                paid,
                refill,
            } => {
                if let Some(suite) = refill {
                    refill_in_background(self, vendor, suite, now);
                }
                (Some(vendor), Ok(paid))
            }
            Settled::NeedsChange { vendor, checked } => (
                Some(vendor),
                Err(VendorError::Exhausted {
                    vendor: checked.vendor.name().clone(),
                    what: "change IDs for now; retry the payment",
                }),
            ),
            Settled::Refused { vendor, error } => (vendor, Err(error)),
        };

        let vendor = index.and_then(|index| self.vendor_at(index));
        match (&result, vendor) {
            (Ok(paid), Some(vendor)) if paid.retried => vendor.counters.retried.increment(1),
            (Ok(paid), Some(vendor)) => {
                let counters = &vendor.counters;
                counters.accepted.increment(1);
                counters.value_redeemed.increment(paid.reply.price);
                if !paid.change.is_zero() {
                    counters.scrip_issued.increment(1);
                    counters.scrip_issued_value.increment(paid.change.units());
                }
            }
            // Only a vendor served here accepts payments.
            (Ok(_), None) => {}
            (Err(error), _) => {
                if let VendorError::Storage(cause) = error {
                    tracing::error!(%cause, "payment refused: the store failed");
                }
                let vendor = vendor.map_or("unknown", |vendor| vendor.name().as_str());
                count(vendor, error.reason());
            }
        }
        result.map(|paid| paid.reply)
    }

    /// Points a payment in a series a peer owns to that peer; any other
    /// refusal of the core stays as it is.
    fn redirect(&self, error: Error) -> VendorError {
        let Error::UnknownSeries(series) = error else {
            return error.into();
        };
        match self.cluster.owner_of(series) {
            Some(peer) => VendorError::WrongNode {
                series,
                node: peer.node.clone(),
                url: peer.url.clone(),
            },
            None => error.into(),
        }
    }
}

/// The reply recorded for a retry, made again from its recipe.
fn remake_reply(checked: &Checked<'_>, record: &[u8]) -> Result<wire::PayReply, VendorError> {
    let recipe = Recipe::decode(record).ok_or_else(|| {
        VendorError::Storage(LedgerError::Storage {
            operation: "read reply record",
            detail: "not a reply recipe".to_owned(),
        })
    })?;
    make_reply(checked, &recipe).map_err(|error| match error {
        ReplyError::Refused(error) => error.into(),
        ReplyError::NoChangeId => VendorError::Exhausted {
            vendor: checked.vendor.name().clone(),
            what: "change IDs for now; retry the payment",
        },
    })
}

/// The reply to a payment, made from `recipe`.
fn make_reply(checked: &Checked<'_>, recipe: &Recipe) -> Result<wire::PayReply, ReplyError> {
    // The slot may come from a change series started after `keys` was
    // read; the ring is swapped before the series hands out any ID#, so a
    // fresh read has its key.
    let fresh;
    let keys = match recipe.change {
        Some(slot) if checked.keys.series(slot.id.series()).is_none() => {
            fresh = checked.vendor.key_ring();
            &fresh
        }
        _ => &checked.keys,
    };
    let suite = checked.verified.scrip().suite();
    let unsealed = vec![0; suite.nonce_len()];
    let nonce = match checked.verified.variant() {
        Variant::Private => recipe.nonce.as_slice(),
        // Only sealing reads the nonce.
        Variant::Clear | Variant::Secure => unsealed.as_slice(),
    };
    let reply = checked
        .verified
        .reply(
            keys,
            recipe.price,
            recipe.change,
            &checked.item.goods,
            nonce,
        )
        .map_err(ReplyError::Refused)?;
    Ok(convert::reply_to_wire(&reply))
}

/// The refusal of each payment of a batch that waited on one failed
/// reservation of change IDs for `vendor`.
fn refill_refusal(error: &VendorError, vendor: &Vendor) -> VendorError {
    match error {
        VendorError::Storage(cause) => VendorError::Storage(cause.clone()),
        VendorError::SeriesExhausted {
            vendor,
            first,
            last,
        } => VendorError::SeriesExhausted {
            vendor: vendor.clone(),
            first: *first,
            last: *last,
        },
        _ => VendorError::Exhausted {
            vendor: vendor.name().clone(),
            what: "change IDs for now; retry the payment",
        },
    }
}

fn count(vendor: &str, outcome: &'static str) {
    metrics::counter!(
        "millicent_vendor_payments_total",
        "vendor" => vendor.to_owned(),
        "outcome" => outcome
    )
    .increment(1);
}

/// The variant's byte in a spend fingerprint: its wire value.
fn variant_byte(variant: Variant) -> u8 {
    match variant {
        Variant::Clear => 1,
        Variant::Secure => 2,
        Variant::Private => 3,
    }
}
