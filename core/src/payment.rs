//! Paying a vendor: the three variants, request and reply stamps, change.
//!
//! The customer sends scrip, a request (the item's name) and, except in the
//! clear variant, a *request stamp*: the suite's keyed hash, under the
//! customer secret, of the label `MC1-REQS`, the scrip body, the certificate
//! and the request. The vendor recomputes the certificate and the customer
//! secret, checks the stamp, checks spending and price (the spent-ID check is
//! the caller's, since it is state), and answers with the goods, change scrip
//! worth value minus price under the same Cust ID#, and a *reply stamp*: the
//! keyed hash under the same customer secret of the label `MC1-REPS`, the
//! request stamp, a byte saying whether change follows, the change's body and
//! certificate, and the goods as sent.
//!
//! In the private variant the request and the goods are additionally sealed
//! under the customer secret ([`SealPurpose::Request`], [`SealPurpose::Goods`]);
//! stamps cover the plaintext request and the sealed goods.

use crate::amount::Amount;
use crate::keys::KeyRing;
use crate::scrip::{Scrip, ScripBody, ScripId};
use crate::secret::CustomerSecret;
use crate::suite::{Mac, PreparedKey, SealPurpose, Suite};
use crate::{Error, Result};

/// Longest request (sealed or not), in bytes.
pub const MAX_REQUEST_LEN: usize = 1024;
/// Domain label of request stamps.
pub const REQUEST_STAMP_LABEL: &[u8] = b"MC1-REQS";
/// Domain label of reply stamps.
pub const REPLY_STAMP_LABEL: &[u8] = b"MC1-REPS";

/// How a payment is protected; chosen per vendor or per price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// Scrip in the clear: no stamps. Anyone who sees the scrip can spend it
    /// first, so it suits only the smallest values.
    Clear,
    /// Secure without encryption: request and reply stamps.
    Secure,
    /// Private and secure: stamps, and request and goods sealed.
    Private,
}

impl Variant {
    /// Every variant, cheapest first.
    pub const ALL: [Variant; 3] = [Variant::Clear, Variant::Secure, Variant::Private];

    /// The variant's name in configuration files and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Variant::Clear => "clear",
            Variant::Secure => "secure",
            Variant::Private => "private",
        }
    }

    /// The variant named `name`.
    pub fn from_name(name: &str) -> Option<Variant> {
        Variant::ALL
            .into_iter()
            .find(|variant| variant.name() == name)
    }

    fn is_stamped(self) -> bool {
        !matches!(self, Variant::Clear)
    }
}

/// The request stamp over `scrip` and the plaintext `request`.
pub fn request_stamp(secret: &CustomerSecret, scrip: &Scrip, request: &[u8]) -> Mac {
    request_stamp_with(
        &scrip.suite().prepare(secret.expose_bytes()),
        scrip,
        request,
    )
}

/// [`request_stamp`] with the customer secret already prepared as a key.
fn request_stamp_with(key: &PreparedKey, scrip: &Scrip, request: &[u8]) -> Mac {
    key.mac(&[
        REQUEST_STAMP_LABEL,
        scrip.encoded_body(),
        scrip.certificate().as_bytes(),
        request,
    ])
}

/// The reply stamp over a reply to the payment with `request_stamp`.
pub fn reply_stamp(
    suite: Suite,
    secret: &CustomerSecret,
    request_stamp: &Mac,
    change: Option<&Scrip>,
    goods: &[u8],
) -> Mac {
    reply_stamp_with(
        &suite.prepare(secret.expose_bytes()),
        request_stamp,
        change,
        goods,
    )
}

/// [`reply_stamp`] with the customer secret already prepared as a key.
fn reply_stamp_with(
    key: &PreparedKey,
    request_stamp: &Mac,
    change: Option<&Scrip>,
    goods: &[u8],
) -> Mac {
    let (flag, body, certificate): (&[u8], &[u8], &[u8]) = match change {
        Some(change) => (&[1], change.encoded_body(), change.certificate().as_bytes()),
        None => (&[0], &[], &[]),
    };
    key.mac(&[
        REPLY_STAMP_LABEL,
        request_stamp.as_bytes(),
        flag,
        body,
        certificate,
        goods,
    ])
}

/// A payment as it arrives at a vendor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// The scrip paid with.
    pub scrip: Scrip,
    /// The variant the customer chose.
    pub variant: Variant,
    /// The request: plaintext, or sealed in the private variant.
    pub request: Vec<u8>,
    /// The request stamp; `None` in the clear variant.
    pub request_stamp: Option<Mac>,
}

impl Payment {
    /// What a customer sends: builds the stamp and, for the private variant,
    /// seals the request with `nonce` ([`Suite::nonce_len`] random bytes).
    /// `secret` is the scrip's customer secret; the clear variant ignores it.
    pub fn prepare(
        scrip: Scrip,
        secret: &CustomerSecret,
        variant: Variant,
        request: &[u8],
        nonce: &[u8],
    ) -> Result<Payment> {
        check_request_len(request.len() + scrip.suite().seal_overhead(request.len()))?;
        let (request_bytes, request_stamp) = match variant {
            Variant::Clear => (request.to_vec(), None),
            Variant::Secure => (
                request.to_vec(),
                Some(request_stamp(secret, &scrip, request)),
            ),
            Variant::Private => {
                let sealed = scrip.suite().seal(
                    secret.expose_bytes(),
                    SealPurpose::Request,
                    nonce,
                    request,
                )?;
                (sealed, Some(request_stamp(secret, &scrip, request)))
            }
        };
        Ok(Payment {
            scrip,
            variant,
            request: request_bytes,
            request_stamp,
        })
    }

    /// Vendor side: checks the certificate, expiry, customer secret and
    /// request stamp, and opens a private request. Spending and price are
    /// checked by the caller with the returned value.
    pub fn verify(self, keys: &KeyRing, now: u64) -> Result<VerifiedPayment> {
        check_request_len(self.request.len())?;
        keys.verify(&self.scrip, now)?;
        if self.variant.is_stamped() != self.request_stamp.is_some() {
            return Err(Error::VariantMismatch(if self.variant.is_stamped() {
                "a stamped variant needs a request stamp"
            } else {
                "the clear variant carries no request stamp"
            }));
        }
        let Some(stamp) = self.request_stamp else {
            return Ok(VerifiedPayment {
                scrip: self.scrip,
                variant: Variant::Clear,
                request: self.request,
                customer_secret: None,
                stamp_key: None,
                request_stamp: None,
            });
        };

        let body = self.scrip.body();
        let secret = keys.customer_secret(body.suite, body.cust_id)?;
        let request = match self.variant {
            Variant::Private => {
                body.suite
                    .open(secret.expose_bytes(), SealPurpose::Request, &self.request)?
            }
            _ => self.request,
        };
        // Both stamps are keyed by the customer secret: prepare it once.
        let stamp_key = body.suite.prepare(secret.expose_bytes());
        if request_stamp_with(&stamp_key, &self.scrip, &request) != stamp {
            return Err(Error::BadRequestStamp);
        }
        Ok(VerifiedPayment {
            scrip: self.scrip,
            variant: self.variant,
            request,
            customer_secret: Some(secret),
            stamp_key: Some(stamp_key),
            request_stamp: Some(stamp),
        })
    }
}

fn check_request_len(len: usize) -> Result<()> {
    if len > MAX_REQUEST_LEN {
        return Err(Error::TooLarge {
            what: "request",
            actual: len,
            max: MAX_REQUEST_LEN,
        });
    }
    Ok(())
}

/// A payment whose scrip, customer and request have been checked.
#[derive(Debug)]
pub struct VerifiedPayment {
    scrip: Scrip,
    variant: Variant,
    request: Vec<u8>,
    /// The customer secret prepared as the stamps' key.
    stamp_key: Option<PreparedKey>,
    customer_secret: Option<CustomerSecret>,
    request_stamp: Option<Mac>,
}

/// Where change scrip goes: a fresh ID# and its expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeSlot {
    /// A never-issued ID# in a series the vendor holds.
    pub id: ScripId,
    /// Expiry of the change, at most that of its series.
    pub expires_at: u64,
}

impl VerifiedPayment {
    /// The scrip paid with.
    pub fn scrip(&self) -> &Scrip {
        &self.scrip
    }

    /// The variant used.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The plaintext request.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// The request stamp, for recognising a retried payment.
    pub fn request_stamp(&self) -> Option<&Mac> {
        self.request_stamp.as_ref()
    }

    /// The customer secret, in stamped variants.
    pub fn customer_secret(&self) -> Option<&CustomerSecret> {
        self.customer_secret.as_ref()
    }

    /// Value left after paying `price`; an error if the scrip is worth less.
    pub fn change_value(&self, price: Amount) -> Result<Amount> {
        let value = self.scrip.value();
        value
            .checked_sub(price)
            .map_err(|_| Error::InsufficientValue {
                value: value.units(),
                price: price.units(),
            })
    }

    /// The vendor's answer: mints change into `slot` (needed only when the
    /// change is worth something), seals the goods in the private variant
    /// with `nonce`, and stamps the reply.
    pub fn reply(
        &self,
        keys: &KeyRing,
        price: Amount,
        slot: Option<ChangeSlot>,
        goods: &[u8],
        nonce: &[u8],
    ) -> Result<PaymentReply> {
        let change_value = self.change_value(price)?;
        let change = if change_value.is_zero() {
            None
        } else {
            let slot = slot.ok_or(Error::Malformed {
                what: "reply",
                detail: "change is due but no change slot was given",
            })?;
            let body = ScripBody {
                value: change_value,
                id: slot.id,
                expires_at: slot.expires_at,
                ..self.scrip.body().clone()
            };
            Some(keys.mint(body)?)
        };

        let suite = self.scrip.suite();
        let goods = match (&self.variant, &self.customer_secret) {
            (Variant::Private, Some(secret)) => {
                suite.seal(secret.expose_bytes(), SealPurpose::Goods, nonce, goods)?
            }
            _ => goods.to_vec(),
        };
        let reply_stamp = match (&self.stamp_key, &self.request_stamp) {
            (Some(key), Some(request)) => {
                Some(reply_stamp_with(key, request, change.as_ref(), &goods))
            }
            _ => None,
        };
        Ok(PaymentReply {
            goods,
            change,
            reply_stamp,
            price,
        })
    }
}

/// A vendor's answer to a payment, as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentReply {
    /// The goods: plaintext, or sealed in the private variant.
    pub goods: Vec<u8>,
    /// Change scrip, if the scrip was worth more than the price.
    pub change: Option<Scrip>,
    /// The reply stamp; `None` in the clear variant.
    pub reply_stamp: Option<Mac>,
    /// The price charged.
    pub price: Amount,
}

impl PaymentReply {
    /// Customer side: checks that the reply answers `payment` (stamp, change
    /// for the same customer and worth value minus price) and returns the
    /// plaintext goods.
    pub fn open(&self, payment: &Payment, secret: &CustomerSecret) -> Result<Vec<u8>> {
        let paid = payment.scrip.body();
        let expected_change =
            paid.value
                .checked_sub(self.price)
                .map_err(|_| Error::InsufficientValue {
                    value: paid.value.units(),
                    price: self.price.units(),
                })?;
        match &self.change {
            Some(change) => {
                let body = change.body();
                if body.vendor != paid.vendor
                    || body.cust_id != paid.cust_id
                    || body.suite != paid.suite
                    || body.value != expected_change
                {
                    return Err(Error::Malformed {
                        what: "reply",
                        detail: "change does not match the payment",
                    });
                }
            }
            None if !expected_change.is_zero() => {
                return Err(Error::Malformed {
                    what: "reply",
                    detail: "change is missing",
                });
            }
            None => {}
        }

        let Some(request_stamp) = &payment.request_stamp else {
            return Ok(self.goods.clone());
        };
        let expected = reply_stamp(
            paid.suite,
            secret,
            request_stamp,
            self.change.as_ref(),
            &self.goods,
        );
        if self.reply_stamp != Some(expected) {
            return Err(Error::BadReplyStamp);
        }
        match payment.variant {
            Variant::Private => {
                paid.suite
                    .open(secret.expose_bytes(), SealPurpose::Goods, &self.goods)
            }
            _ => Ok(self.goods.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::{NOW, body, key_ring};

    const NONCE: [u8; 8] = [9; 8];

    fn secret_for(keys: &KeyRing, scrip: &Scrip) -> CustomerSecret {
        keys.customer_secret(scrip.suite(), scrip.body().cust_id)
            .unwrap()
    }

    fn pay(variant: Variant, value: u64, price: u64) -> Result<(Payment, PaymentReply)> {
        let keys = key_ring();
        let scrip = keys.mint(body(value))?;
        let secret = secret_for(&keys, &scrip);
        let payment = Payment::prepare(scrip, &secret, variant, b"article-1", &NONCE)?;
        let verified = payment.clone().verify(&keys, NOW)?;
        assert_eq!(verified.request(), b"article-1");
        let slot = ChangeSlot {
            id: ScripId::new(7, 2),
            expires_at: NOW + 60,
        };
        let reply = verified.reply(&keys, Amount::new(price), Some(slot), b"text", &NONCE)?;
        Ok((payment, reply))
    }

    #[test]
    fn every_variant_pays_and_the_customer_can_check_the_reply() {
        let keys = key_ring();
        for variant in Variant::ALL {
            let (payment, reply) = pay(variant, 100, 30).unwrap();
            let secret = secret_for(&keys, &payment.scrip);
            assert_eq!(
                reply.open(&payment, &secret).unwrap(),
                b"text",
                "{variant:?}"
            );
            let change = reply.change.as_ref().unwrap();
            assert_eq!(change.value(), Amount::new(70));
            assert_eq!(change.body().cust_id, payment.scrip.body().cust_id);
            assert_eq!(keys.verify(change, NOW), Ok(()));
            assert_eq!(reply.reply_stamp.is_some(), variant != Variant::Clear);
            assert_eq!(reply.goods == b"text", variant != Variant::Private);
        }
    }

    #[test]
    fn exact_payment_has_no_change_and_short_payment_is_refused() {
        let (_, reply) = pay(Variant::Secure, 30, 30).unwrap();
        assert_eq!(reply.change, None);
        let err = pay(Variant::Secure, 29, 30).unwrap_err();
        assert_eq!(
            err,
            Error::InsufficientValue {
                value: 29,
                price: 30
            }
        );
    }

    #[test]
    fn a_wrong_customer_secret_or_tampered_request_is_refused() {
        let keys = key_ring();
        let scrip = keys.mint(body(100)).unwrap();
        let wrong = CustomerSecret::from_slice(Suite::Classic, &[0; 16]).unwrap();
        let payment = Payment::prepare(scrip.clone(), &wrong, Variant::Secure, b"a", &NONCE);
        assert_eq!(
            payment.unwrap().verify(&keys, NOW).unwrap_err(),
            Error::BadRequestStamp
        );

        let secret = secret_for(&keys, &scrip);
        let mut payment = Payment::prepare(scrip, &secret, Variant::Secure, b"a", &NONCE).unwrap();
        payment.request = b"b".to_vec();
        assert_eq!(
            payment.verify(&keys, NOW).unwrap_err(),
            Error::BadRequestStamp
        );
    }

    #[test]
    fn a_missing_or_surplus_stamp_is_a_variant_mismatch() {
        let keys = key_ring();
        let scrip = keys.mint(body(100)).unwrap();
        let secret = secret_for(&keys, &scrip);
        let mut payment = Payment::prepare(scrip, &secret, Variant::Secure, b"a", &NONCE).unwrap();
        payment.request_stamp = None;
        assert!(matches!(
            payment.clone().verify(&keys, NOW),
            Err(Error::VariantMismatch(_))
        ));
        payment.variant = Variant::Clear;
        payment.request_stamp = Some(Mac::from_slice(&[0; 16]));
        assert!(matches!(
            payment.verify(&keys, NOW),
            Err(Error::VariantMismatch(_))
        ));
    }

    #[test]
    fn a_reply_changed_in_transit_is_refused_by_the_customer() {
        let keys = key_ring();
        let (payment, reply) = pay(Variant::Secure, 100, 30).unwrap();
        let secret = secret_for(&keys, &payment.scrip);
        let mut bad = reply.clone();
        bad.goods = b"fake".to_vec();
        assert_eq!(bad.open(&payment, &secret), Err(Error::BadReplyStamp));
        let mut bad = reply;
        bad.change = None;
        assert!(bad.open(&payment, &secret).is_err());
    }

    #[test]
    fn an_oversized_request_is_refused_before_any_work() {
        let keys = key_ring();
        let scrip = keys.mint(body(100)).unwrap();
        let secret = secret_for(&keys, &scrip);
        let big = vec![b'x'; MAX_REQUEST_LEN + 1];
        let err = Payment::prepare(scrip, &secret, Variant::Clear, &big, &NONCE).unwrap_err();
        assert!(matches!(
            err,
            Error::TooLarge {
                what: "request",
                ..
            }
        ));
    }
}
