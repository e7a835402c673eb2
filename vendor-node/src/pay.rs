//! The payment path: check, spend durably, answer.
//!
//! Safety critical: this is where a vendor decides to give goods for scrip.
//!
//! # Shape
//!
//! 1. The wire message is converted and validated ([`crate::convert`]).
//! 2. The scrip's vendor must be served here and take the chosen variant.
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
//!    ID# spent and records the reply in one atomic write, or finds that
//!    it was spent before: by the same request (a retry, answered with the
//!    recorded reply) or by another (a double spend). The reply, with its
//!    change ID#, is made inside that call, so only a fresh spend takes an
//!    ID# and IDs stay dense.
//! 6. Nothing is answered as accepted, fresh or retried, before
//!    [`Ledger::commit`](millicent_ledger::Ledger::commit) has returned:
//!    the retry of a payment whose first commit failed must not be answered
//!    from a write that is still not durable.
//!
//! A crash after step 5 and before the answer leaves the scrip spent with
//! its reply on record; the customer's retry within the retry window gets
//! that reply. Every refusal before step 5 changes no state at all.

use std::sync::Arc;
use std::time::Instant;

use millicent_core::payment::ChangeSlot;
use millicent_core::{Amount, Error, KeyRing, Payment, Variant, VerifiedPayment};
use millicent_ledger::{LedgerError, SpendError, SpendOutcome};
use millicent_proto as wire;
use prost::Message as _;
use rand::Rng as _;

use crate::VendorError;
use crate::config::Item;
use crate::convert;
use crate::node::{Node, refill_in_background, unix_now};
use crate::vendor::Vendor;

/// How often a payment may find the change IDs used up and wait for more
/// before giving up. Each wait reserves a whole block, so a second one
/// means something else is consuming IDs at an extraordinary rate.
const MAX_CHANGE_WAITS: usize = 3;

/// An accepted payment.
#[derive(Debug)]
pub(crate) struct Paid {
    pub(crate) reply: wire::PayReply,
    /// Whether this answered a retry of a payment accepted before.
    pub(crate) retried: bool,
    /// The value of the change minted for it.
    pub(crate) change: Amount,
}

/// Why making a reply inside the spend failed.
#[derive(Debug)]
enum ReplyError {
    /// The committed block of change IDs is used up.
    NoChangeId,
    /// The core refused to make the reply.
    Refused(Error),
}

impl Node {
    /// Takes one payment and records its metrics.
    pub(crate) async fn pay(
        self: &Arc<Node>,
        request: wire::PayRequest,
    ) -> Result<wire::PayReply, VendorError> {
        let started = Instant::now();
        let now = unix_now();
        let (label, result) = match convert::payment(request) {
            Err(error) => (None, Err(VendorError::from(error))),
            Ok(payment) => match self.vendor_index(&payment.scrip.body().vendor) {
                Err(error) => (None, Err(error)),
                Ok(index) => (Some(index), self.pay_vendor(index, payment, now).await),
            },
        };

        let vendor = label
            .and_then(|index| self.vendor_at(index))
            .map_or("unknown", |vendor| vendor.name().as_str())
            .to_owned();
        match &result {
            Ok(paid) if paid.retried => count(&vendor, "retried"),
            Ok(paid) => {
                count(&vendor, "accepted");
                let labels = [("vendor", vendor)];
                metrics::counter!("millicent_vendor_value_redeemed_total", &labels)
                    .increment(paid.reply.price);
                if !paid.change.is_zero() {
                    metrics::counter!("millicent_vendor_scrip_issued_total", &labels).increment(1);
                    metrics::counter!("millicent_vendor_scrip_issued_value_total", &labels)
                        .increment(paid.change.units());
                }
            }
            Err(error) => {
                if let VendorError::Storage(cause) = error {
                    tracing::error!(%cause, "payment refused: the store failed");
                }
                count(&vendor, error.reason());
            }
        }
        metrics::histogram!("millicent_vendor_payment_seconds")
            .record(started.elapsed().as_secs_f64());
        result.map(|paid| paid.reply)
    }

    async fn pay_vendor(
        self: &Arc<Node>,
        index: usize,
        payment: Payment,
        now: u64,
    ) -> Result<Paid, VendorError> {
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

        // The fingerprint determines the payment exactly: its variant (the
        // same item asked for in another variant is another payment, and
        // the recorded reply would not fit it), then the request stamp,
        // which covers the plaintext request, or for a clear payment the
        // request itself.
        let mut fingerprint = vec![variant_byte(verified.variant())];
        fingerprint.extend_from_slice(match verified.request_stamp() {
            Some(stamp) => stamp.as_bytes(),
            None => verified.request(),
        });
        let fingerprint = fingerprint.as_slice();
        let id = verified.scrip().id();
        for _ in 0..MAX_CHANGE_WAITS {
            let mut running_low = false;
            // A fresh reply is kept as made, saving a decode of its bytes.
            let mut made = None;
            let outcome = self.spends.spend(vendor.name(), id, fingerprint, now, || {
                let slot = if change.is_zero() {
                    None
                } else {
                    let taken = vendor.take_change_id(suite).ok_or(ReplyError::NoChangeId)?;
                    running_low = taken.running_low;
                    Some(taken.slot)
                };
                let reply = make_reply(vendor, &keys, &verified, item, slot)?;
                let bytes = reply.encode_to_vec();
                made = Some(reply);
                Ok(bytes)
            });
            let (reply, retried) = match outcome {
                Ok(SpendOutcome::Fresh(bytes)) => match made {
                    Some(reply) => (reply, false),
                    None => (decode_reply(&bytes)?, false),
                },
                Ok(SpendOutcome::Retry(bytes)) => (decode_reply(&bytes)?, true),
                Err(SpendError::DoubleSpend) => return Err(VendorError::DoubleSpend { id }),
                Err(SpendError::Storage(error)) => return Err(error.into()),
                Err(SpendError::Reply(ReplyError::Refused(error))) => return Err(error.into()),
                Err(SpendError::Reply(ReplyError::NoChangeId)) => {
                    vendor.refill_change_ids(suite, now).await?;
                    continue;
                }
            };
            self.ledger.commit().await?;
            if running_low {
                refill_in_background(self, index, suite, now);
            }
            return Ok(Paid {
                reply,
                retried,
                change,
            });
        }
        Err(VendorError::Exhausted {
            vendor: vendor.name().clone(),
            what: "change IDs for now; retry the payment",
        })
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

/// A reply recorded for a retry.
fn decode_reply(bytes: &[u8]) -> Result<wire::PayReply, VendorError> {
    wire::PayReply::decode(bytes).map_err(|error| {
        VendorError::Storage(LedgerError::Storage {
            operation: "read reply record",
            detail: error.to_string(),
        })
    })
}

/// The reply to a fresh spend.
fn make_reply(
    vendor: &Vendor,
    keys: &Arc<KeyRing>,
    verified: &VerifiedPayment,
    item: &Item,
    slot: Option<ChangeSlot>,
) -> Result<wire::PayReply, ReplyError> {
    // The slot may come from a change series started after `keys` was
    // read; the ring is swapped before the series hands out any ID#, so a
    // fresh read has its key.
    let fresh;
    let keys = match slot {
        Some(slot) if keys.series(slot.id.series()).is_none() => {
            fresh = vendor.key_ring();
            &fresh
        }
        _ => keys,
    };

    let suite = verified.scrip().suite();
    let mut nonce = [0u8; 32];
    let nonce = nonce
        .get_mut(..suite.nonce_len())
        .ok_or(ReplyError::Refused(Error::Malformed {
            what: "nonce",
            detail: "longer than supported",
        }))?;
    if verified.variant() == Variant::Private {
        rand::rng().fill_bytes(nonce);
    }
    let reply = verified
        .reply(keys, item.price, slot, &item.goods, nonce)
        .map_err(ReplyError::Refused)?;
    Ok(convert::reply_to_wire(&reply))
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
