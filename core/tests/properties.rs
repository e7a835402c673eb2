//! Property tests of the payment protocol, for every suite in [`Suite::ALL`]
//! and every variant.
//!
//! Each case draws the vendor's master secrets and a piece of scrip (vendor,
//! value, ID#, Cust ID#, expiry, properties), a price no higher than its
//! value, a request and goods, then checks that:
//!
//! - every encoding the core exposes decodes to what was encoded, and
//!   decoding is canonical: bytes that decode at all re-encode to themselves;
//! - any single flipped bit in the scrip (body or certificate), the request
//!   or the request stamp makes the vendor refuse the payment with an
//!   [`Error`], and any single flipped bit in the reply stamp, the change,
//!   the goods or the price makes the customer refuse the reply. Each case
//!   flips one bit in every byte of every field (every bit of the price);
//!   which bit of a byte varies from case to case;
//! - change is worth the value less the price, exactly; a price above the
//!   value is refused; amount arithmetic fails instead of wrapping.
//!
//! Payments and replies are tampered with as they travel: as the byte fields
//! of the gRPC messages, decoded the way the vendor node and the wallet
//! decode them.
//!
//! # What the clear variant protects
//!
//! The clear variant has no stamps. The vendor still checks the
//! certificate, so the scrip cannot be altered: every flipped bit of body or
//! certificate is refused. Nothing binds the request to the scrip, so a
//! changed request is served as changed. The customer checks that the change
//! is for the same vendor, suite and Cust ID# and is worth the value less the
//! price, which also pins the price. It can check neither the goods nor the
//! change's ID#, expiry, properties or certificate, for that takes the
//! vendor's master secret: change altered there is accepted by the customer
//! and refused by the vendor when it is spent. The tests assert both halves.

// A test: a failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use millicent_core::exchange::{
    ExchangeRequest, exchange_goods, open_customer_secret, seal_customer_secret,
};
use millicent_core::payment::{ChangeSlot, request_stamp};
use millicent_core::scrip::MAX_PROPERTIES_LEN;
use millicent_core::{
    Amount, CustId, CustomerKey, CustomerSecret, Error, ErrorClass, KeyRing, Mac, MasterSecret,
    Payment, PaymentReply, Properties, Scrip, ScripBody, ScripId, SealPurpose, SeriesKey, SpentSet,
    Suite, Variant, VendorName, VerifiedPayment,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// The vendor's clock in every case.
const NOW: u64 = 1_800_000_000;
/// Cases per property. Each case tampers with every byte of every field
/// for every suite and variant, so a few dozen cases are thousands of
/// tampered payments.
const CASES: u32 = 32;
/// Longest request drawn; sealed, it stays under the protocol's limit.
const MAX_DRAWN_REQUEST: usize = 200;
/// Longest goods drawn.
const MAX_DRAWN_GOODS: usize = 200;

const ALL_PURPOSES: [SealPurpose; 4] = [
    SealPurpose::CustomerSecret,
    SealPurpose::Request,
    SealPurpose::Goods,
    SealPurpose::BrokerScripSecret,
];

/// Everything one case draws at random.
#[derive(Clone, Debug)]
struct Drawn {
    vendor: String,
    value: u64,
    price: u64,
    series: u32,
    seq: u32,
    selector: u16,
    number: u64,
    /// Seconds from `NOW` past the first second the scrip is still valid.
    expires_in: u64,
    /// How much longer than the scrip its series is valid.
    series_outlives_scrip: u64,
    properties: Vec<u8>,
    request: Vec<u8>,
    goods: Vec<u8>,
    scrip_secret: [u8; 32],
    customer_secret: [u8; 32],
    nonce_seed: u8,
    change_seq: u32,
    /// Chooses which bit of each byte the tampering tests flip.
    bit_seed: u8,
}

/// A value, biased towards small amounts and the largest one, and a price
/// no higher than it, biased towards nothing and everything.
fn value_and_price() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![any::<u64>(), 0..10_000u64, Just(u64::MAX)]
        .prop_flat_map(|value| (Just(value), prop_oneof![Just(0), Just(value), 0..=value]))
}

prop_compose! {
    fn drawn()(
        vendor in "[a-z0-9._:-]{1,64}",
        (value, price) in value_and_price(),
        series in any::<u32>(),
        seq in any::<u32>(),
        selector in any::<u16>(),
        number in 0..=CustId::MAX_NUMBER,
        expires_in in prop_oneof![Just(0), 0..1_000_000_000u64],
        series_outlives_scrip in prop_oneof![Just(0), 0..1_000_000u64],
        properties in proptest::collection::vec(any::<u8>(), 0..=MAX_PROPERTIES_LEN),
        request in proptest::collection::vec(any::<u8>(), 0..=MAX_DRAWN_REQUEST),
        goods in proptest::collection::vec(any::<u8>(), 0..=MAX_DRAWN_GOODS),
        scrip_secret in any::<[u8; 32]>(),
        customer_secret in any::<[u8; 32]>(),
        nonce_seed in any::<u8>(),
        change_seq in any::<u32>(),
        bit_seed in any::<u8>(),
    ) -> Drawn {
        Drawn {
            vendor, value, price, series, seq, selector, number, expires_in,
            series_outlives_scrip, properties, request, goods, scrip_secret,
            customer_secret, nonce_seed, change_seq, bit_seed,
        }
    }
}

/// A vendor holding the drawn keys in one suite, and the scrip it minted.
struct World {
    keys: KeyRing,
    scrip: Scrip,
    secret: CustomerSecret,
    nonce: Vec<u8>,
    slot: ChangeSlot,
}

fn world(drawn: &Drawn, suite: Suite) -> World {
    let vendor = VendorName::new(&drawn.vendor).unwrap();
    let expires_at = NOW + 1 + drawn.expires_in;
    let mut keys = KeyRing::new(vendor.clone());
    keys.add_series(SeriesKey {
        series: drawn.series,
        suite,
        expires_at: expires_at + drawn.series_outlives_scrip,
        secret: MasterSecret::new(suite, drawn.scrip_secret),
    });
    keys.add_customer_key(CustomerKey {
        selector: drawn.selector,
        suite,
        secret: MasterSecret::new(suite, drawn.customer_secret),
    });
    let cust_id = CustId::new(drawn.selector, drawn.number).unwrap();
    let scrip = keys
        .mint(ScripBody {
            suite,
            vendor,
            value: Amount::new(drawn.value),
            id: ScripId::new(drawn.series, drawn.seq),
            cust_id,
            expires_at,
            properties: Properties::new(drawn.properties.clone()).unwrap(),
        })
        .unwrap();
    let secret = keys.customer_secret(suite, cust_id).unwrap();
    let nonce = (0..suite.nonce_len())
        .map(|i| drawn.nonce_seed.wrapping_add(i as u8))
        .collect();
    let slot = ChangeSlot {
        id: ScripId::new(drawn.series, drawn.change_seq),
        expires_at,
    };
    World {
        keys,
        scrip,
        secret,
        nonce,
        slot,
    }
}

impl World {
    fn pay(&self, drawn: &Drawn, variant: Variant) -> Payment {
        Payment::prepare(
            self.scrip.clone(),
            &self.secret,
            variant,
            &drawn.request,
            &self.nonce,
        )
        .unwrap()
    }
}

/// A payment as the vendor receives it: the fields of `PayRequest`.
#[derive(Clone, Debug)]
struct Sent {
    body: Vec<u8>,
    certificate: Vec<u8>,
    variant: Variant,
    request: Vec<u8>,
    /// Empty when absent, as on the wire.
    stamp: Vec<u8>,
}

impl Sent {
    fn of(payment: &Payment) -> Sent {
        Sent {
            body: payment.scrip.encoded_body().to_vec(),
            certificate: payment.scrip.certificate().as_bytes().to_vec(),
            variant: payment.variant,
            request: payment.request.clone(),
            stamp: payment
                .request_stamp
                .map_or_else(Vec::new, |stamp| stamp.as_bytes().to_vec()),
        }
    }

    /// The vendor's side: decode every field, then check the payment.
    fn verify(&self, keys: &KeyRing) -> Result<VerifiedPayment, Error> {
        let scrip = Scrip::decode(&self.body, &self.certificate)?;
        let request_stamp = if self.stamp.is_empty() {
            None
        } else {
            Some(Mac::parse(scrip.suite(), "request stamp", &self.stamp)?)
        };
        Payment {
            scrip,
            variant: self.variant,
            request: self.request.clone(),
            request_stamp,
        }
        .verify(keys, NOW)
    }
}

/// A reply as the customer receives it: the fields of `PayReply`.
#[derive(Clone, Debug)]
struct Answer {
    goods: Vec<u8>,
    /// Body and certificate.
    change: Option<(Vec<u8>, Vec<u8>)>,
    /// Empty when absent, as on the wire.
    stamp: Vec<u8>,
    price: u64,
}

impl Answer {
    fn of(reply: &PaymentReply) -> Answer {
        Answer {
            goods: reply.goods.clone(),
            change: reply.change.as_ref().map(|change| {
                (
                    change.encoded_body().to_vec(),
                    change.certificate().as_bytes().to_vec(),
                )
            }),
            stamp: reply
                .reply_stamp
                .map_or_else(Vec::new, |stamp| stamp.as_bytes().to_vec()),
            price: reply.price.units(),
        }
    }

    /// The customer's side: decode every field, then check the reply
    /// against the payment it answers.
    fn open(&self, payment: &Payment, secret: &CustomerSecret) -> Result<Vec<u8>, Error> {
        let change = self
            .change
            .as_ref()
            .map(|(body, certificate)| Scrip::decode(body, certificate))
            .transpose()?;
        let reply_stamp = if self.stamp.is_empty() {
            None
        } else {
            Some(Mac::parse(
                payment.scrip.suite(),
                "reply stamp",
                &self.stamp,
            )?)
        };
        PaymentReply {
            goods: self.goods.clone(),
            change,
            reply_stamp,
            price: Amount::new(self.price),
        }
        .open(payment, secret)
    }
}

/// `bytes` with bit `bit` inverted.
fn flipped(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

/// Every single-bit change of `bytes`, with the bit's index.
fn every_flip(bytes: &[u8]) -> impl Iterator<Item = (usize, Vec<u8>)> + '_ {
    (0..bytes.len() * 8).map(|bit| (bit, flipped(bytes, bit)))
}

/// One single-bit change in each byte of `bytes`, with the bit's index.
/// Which bit of a byte is flipped depends on the byte's position and on
/// `seed`, so that over the cases every bit of every field is flipped while
/// each case stays cheap enough to check every suite and variant.
fn flip_in_each_byte(bytes: &[u8], seed: u8) -> impl Iterator<Item = (usize, Vec<u8>)> + '_ {
    (0..bytes.len()).map(move |at| {
        let bit = 8 * at + (usize::from(seed) + 3 * at) % 8;
        (bit, flipped(bytes, bit))
    })
}

/// Whether byte `at` of a canonical body with a vendor name of `vendor_len`
/// bytes is a field the customer compares with the scrip it paid (suite,
/// vendor, value, Cust ID#) or one whose change breaks the decoding (the two
/// lengths). The others (ID#, expiry, properties) only the certificate
/// protects.
fn customer_checks_byte(at: usize, vendor_len: usize) -> bool {
    let value = 2 + vendor_len..10 + vendor_len;
    let cust_id = 18 + vendor_len..26 + vendor_len;
    let properties_len = 34 + vendor_len..36 + vendor_len;
    at < 2 + vendor_len
        || value.contains(&at)
        || cust_id.contains(&at)
        || properties_len.contains(&at)
}

fn check_encodings(drawn: &Drawn, suite: Suite) -> Result<(), TestCaseError> {
    let w = world(drawn, suite);
    let body = w.scrip.body();
    let encoded = body.encode();
    prop_assert_eq!(encoded.as_slice(), w.scrip.encoded_body());
    prop_assert_eq!(encoded.len(), body.encoded_len());
    prop_assert_eq!(&ScripBody::decode(&encoded)?, body);

    // Every prefix and every extension of a body is refused.
    for len in 0..encoded.len() {
        prop_assert!(ScripBody::decode(&encoded[..len]).is_err(), "prefix {len}");
    }
    let mut longer = encoded.clone();
    longer.push(drawn.nonce_seed);
    prop_assert!(ScripBody::decode(&longer).is_err());

    // Scrip, as two fields and concatenated.
    let certificate = w.scrip.certificate().as_bytes();
    prop_assert_eq!(certificate.len(), suite.mac_len());
    prop_assert_eq!(&Scrip::decode(&encoded, certificate)?, &w.scrip);
    let concatenated = w.scrip.encode();
    prop_assert_eq!(concatenated.len(), encoded.len() + suite.mac_len());
    prop_assert_eq!(&Scrip::decode_concatenated(&concatenated)?, &w.scrip);
    for wrong_len in [suite.mac_len() - 1, suite.mac_len() + 1] {
        let mut wrong = certificate.to_vec();
        wrong.resize(wrong_len, 0);
        let refused = Scrip::decode(&encoded, &wrong).err();
        prop_assert!(
            matches!(refused, Some(Error::Malformed { .. })),
            "certificate of {} bytes: {:?}",
            wrong_len,
            refused
        );
    }

    // Identifiers split into their fields and back.
    prop_assert_eq!(body.id, ScripId::from_u64(body.id.as_u64()));
    prop_assert_eq!((body.id.series(), body.id.seq()), (drawn.series, drawn.seq));
    prop_assert_eq!(body.cust_id, CustId::from_u64(body.cust_id.as_u64()));
    prop_assert_eq!(
        (body.cust_id.selector(), body.cust_id.number()),
        (drawn.selector, drawn.number)
    );

    // Stamps and secrets as received bytes.
    prop_assert_eq!(
        &Mac::parse(suite, "certificate", certificate)?,
        w.scrip.certificate()
    );
    prop_assert_eq!(
        &CustomerSecret::from_slice(suite, w.secret.expose_bytes())?,
        &w.secret
    );

    // The exchange request and goods.
    let exchange = ExchangeRequest {
        vendor: body.vendor.clone(),
        value: body.value,
    };
    prop_assert_eq!(&ExchangeRequest::decode(&exchange.encode())?, &exchange);
    let sealed_secret = seal_customer_secret(suite, &w.secret, &w.nonce, &w.secret)?;
    prop_assert_eq!(
        &open_customer_secret(suite, &w.secret, &sealed_secret, suite)?,
        &w.secret
    );
    let goods = exchange_goods(&w.scrip, &sealed_secret);
    let scrip_len = u16::from_be_bytes([goods[0], goods[1]]) as usize;
    prop_assert_eq!(scrip_len, concatenated.len());
    prop_assert_eq!(
        &Scrip::decode_concatenated(&goods[2..2 + scrip_len])?,
        &w.scrip
    );
    prop_assert_eq!(&goods[2 + scrip_len..], sealed_secret.as_slice());

    // Sealing, under every purpose: it opens under its own purpose only.
    for purpose in ALL_PURPOSES {
        let sealed = suite.seal(w.secret.expose_bytes(), purpose, &w.nonce, &drawn.goods)?;
        prop_assert_eq!(
            sealed.len(),
            drawn.goods.len() + suite.seal_overhead(drawn.goods.len())
        );
        prop_assert_eq!(
            suite.open(w.secret.expose_bytes(), purpose, &sealed)?,
            drawn.goods.clone()
        );
        for other in ALL_PURPOSES.into_iter().filter(|other| *other != purpose) {
            let opened = suite.open(w.secret.expose_bytes(), other, &sealed);
            prop_assert_eq!(opened.map_err(|error| error.reason()), Err("bad_seal"));
        }
    }

    // Names and wire bytes of suites and variants.
    prop_assert_eq!(Suite::from_id(suite.id())?, suite);
    prop_assert_eq!(Suite::from_name(suite.name()), Some(suite));
    for variant in Variant::ALL {
        prop_assert_eq!(Variant::from_name(variant.name()), Some(variant));
    }
    Ok(())
}

fn check_canonical_decoding(
    drawn: &Drawn,
    suite: Suite,
    noise: &[u8],
) -> Result<(), TestCaseError> {
    let w = world(drawn, suite);

    // A body one bit away from a valid one either is refused or is another
    // body whose encoding is exactly those bytes.
    for (bit, bytes) in every_flip(w.scrip.encoded_body()) {
        if let Ok(body) = ScripBody::decode(&bytes) {
            prop_assert_eq!(body.encode(), bytes, "bit {}", bit);
        }
    }
    for (bit, bytes) in every_flip(&w.scrip.encode()) {
        if let Ok(scrip) = Scrip::decode_concatenated(&bytes) {
            prop_assert_eq!(scrip.encode(), bytes, "bit {}", bit);
        }
    }
    let exchange = ExchangeRequest {
        vendor: w.scrip.body().vendor.clone(),
        value: w.scrip.value(),
    }
    .encode();
    for (bit, bytes) in every_flip(&exchange) {
        if let Ok(request) = ExchangeRequest::decode(&bytes) {
            prop_assert_eq!(request.encode(), bytes, "bit {}", bit);
        }
    }

    // Arbitrary bytes: an error or a canonical decoding, never a panic; and
    // no arbitrary bytes open as a sealed value.
    if let Ok(body) = ScripBody::decode(noise) {
        prop_assert_eq!(body.encode(), noise);
    }
    if let Ok(scrip) = Scrip::decode_concatenated(noise) {
        prop_assert_eq!(scrip.encode(), noise);
    }
    if let Ok(request) = ExchangeRequest::decode(noise) {
        prop_assert_eq!(request.encode(), noise);
    }
    for purpose in ALL_PURPOSES {
        let opened = suite.open(w.secret.expose_bytes(), purpose, noise);
        prop_assert_eq!(opened.map_err(|error| error.reason()), Err("bad_seal"));
    }
    Ok(())
}

fn check_scrip_flips(drawn: &Drawn, suite: Suite, variant: Variant) -> Result<(), TestCaseError> {
    let w = world(drawn, suite);
    let payment = w.pay(drawn, variant);
    let sent = Sent::of(&payment);
    prop_assert!(sent.verify(&w.keys).is_ok(), "the untouched payment pays");

    // A changed body is refused as malformed or as not authentic, never for
    // a reason that would let the customer think the scrip itself is fine.
    for (bit, body) in flip_in_each_byte(&sent.body, drawn.bit_seed) {
        let tampered = Sent {
            body,
            ..sent.clone()
        };
        let Err(error) = tampered.verify(&w.keys) else {
            return Err(TestCaseError::fail(format!("body bit {bit} accepted")));
        };
        prop_assert!(
            matches!(error.class(), ErrorClass::Invalid | ErrorClass::Denied),
            "body bit {}: {:?}",
            bit,
            error
        );
    }
    for (bit, certificate) in flip_in_each_byte(&sent.certificate, drawn.bit_seed) {
        let tampered = Sent {
            certificate,
            ..sent.clone()
        };
        let refused = tampered.verify(&w.keys).err();
        prop_assert_eq!(
            refused,
            Some(Error::BadCertificate),
            "certificate bit {}",
            bit
        );
    }

    // The same, where scrip travels as body followed by certificate.
    for (bit, bytes) in flip_in_each_byte(&w.scrip.encode(), drawn.bit_seed) {
        let verified = Scrip::decode_concatenated(&bytes).and_then(|scrip| {
            let request_stamp = payment
                .request_stamp
                .map(|stamp| Mac::parse(scrip.suite(), "request stamp", stamp.as_bytes()))
                .transpose()?;
            Payment {
                scrip,
                request_stamp,
                ..payment.clone()
            }
            .verify(&w.keys, NOW)
        });
        prop_assert!(verified.is_err(), "concatenated scrip bit {} accepted", bit);
    }
    Ok(())
}

fn check_request_flips(drawn: &Drawn, suite: Suite, variant: Variant) -> Result<(), TestCaseError> {
    let w = world(drawn, suite);
    let sent = Sent::of(&w.pay(drawn, variant));
    let verified = sent.verify(&w.keys)?;
    prop_assert_eq!(verified.request(), drawn.request.as_slice());

    match variant {
        Variant::Clear => {
            // Unprotected: the vendor serves whatever request arrives.
            for (bit, request) in flip_in_each_byte(&sent.request, drawn.bit_seed) {
                let tampered = Sent {
                    request: request.clone(),
                    ..sent.clone()
                };
                let verified = tampered.verify(&w.keys);
                prop_assert!(verified.is_ok(), "request bit {}: {:?}", bit, verified);
                let served = verified?;
                prop_assert_eq!(served.request(), request.as_slice());
            }
            // A stamp, even a genuine one, makes it no longer clear.
            let genuine = request_stamp(&w.secret, &w.scrip, &drawn.request);
            let stamped = Sent {
                stamp: genuine.as_bytes().to_vec(),
                ..sent.clone()
            };
            prop_assert_eq!(
                stamped.verify(&w.keys).err().map(|error| error.reason()),
                Some("variant_mismatch")
            );
        }
        Variant::Secure | Variant::Private => {
            prop_assert_ne!(
                sent.request == drawn.request,
                variant == Variant::Private,
                "only the private variant seals the request"
            );
            let request_refusal = match variant {
                Variant::Private => "bad_seal",
                _ => "bad_request_stamp",
            };
            for (bit, request) in flip_in_each_byte(&sent.request, drawn.bit_seed) {
                let tampered = Sent {
                    request,
                    ..sent.clone()
                };
                let refused = tampered.verify(&w.keys).err().map(|error| error.reason());
                prop_assert_eq!(refused, Some(request_refusal), "request bit {}", bit);
            }
            for (bit, stamp) in flip_in_each_byte(&sent.stamp, drawn.bit_seed) {
                let tampered = Sent {
                    stamp,
                    ..sent.clone()
                };
                let refused = tampered.verify(&w.keys).err();
                prop_assert_eq!(refused, Some(Error::BadRequestStamp), "stamp bit {}", bit);
            }
            // A stamp cut short, made longer or taken away.
            for stamp in [
                sent.stamp[..sent.stamp.len() - 1].to_vec(),
                [sent.stamp.as_slice(), &[0]].concat(),
            ] {
                let tampered = Sent {
                    stamp,
                    ..sent.clone()
                };
                let refused = tampered.verify(&w.keys).err();
                prop_assert!(
                    matches!(refused, Some(Error::Malformed { .. })),
                    "stamp of {} bytes: {:?}",
                    tampered.stamp.len(),
                    refused
                );
            }
            let unstamped = Sent {
                stamp: Vec::new(),
                ..sent.clone()
            };
            prop_assert_eq!(
                unstamped.verify(&w.keys).err().map(|error| error.reason()),
                Some("variant_mismatch")
            );
        }
    }

    // The variant cannot be changed on the way either.
    for other in Variant::ALL.into_iter().filter(|other| *other != variant) {
        let tampered = Sent {
            variant: other,
            ..sent.clone()
        };
        prop_assert!(
            tampered.verify(&w.keys).is_err(),
            "{:?} sent as {:?}",
            variant,
            other
        );
    }
    Ok(())
}

fn check_reply_flips(drawn: &Drawn, suite: Suite, variant: Variant) -> Result<(), TestCaseError> {
    let w = world(drawn, suite);
    let payment = w.pay(drawn, variant);
    let verified = Sent::of(&payment).verify(&w.keys)?;
    let reply = verified.reply(
        &w.keys,
        Amount::new(drawn.price),
        Some(w.slot),
        &drawn.goods,
        &w.nonce,
    )?;
    let answer = Answer::of(&reply);
    prop_assert_eq!(answer.open(&payment, &w.secret)?, drawn.goods.clone());
    let stamped = variant != Variant::Clear;
    prop_assert_eq!(answer.stamp.is_empty(), !stamped);

    for (bit, stamp) in flip_in_each_byte(&answer.stamp, drawn.bit_seed) {
        let tampered = Answer {
            stamp,
            ..answer.clone()
        };
        let refused = tampered.open(&payment, &w.secret).err();
        prop_assert_eq!(refused, Some(Error::BadReplyStamp), "stamp bit {}", bit);
    }

    for (bit, goods) in flip_in_each_byte(&answer.goods, drawn.bit_seed) {
        let tampered = Answer {
            goods: goods.clone(),
            ..answer.clone()
        };
        let opened = tampered.open(&payment, &w.secret);
        if stamped {
            prop_assert_eq!(
                opened.err(),
                Some(Error::BadReplyStamp),
                "goods bit {}",
                bit
            );
        } else {
            prop_assert_eq!(opened?, goods, "clear goods are not protected");
        }
    }

    // The price is not stamped, but the change must be worth value less
    // price, so a changed price never goes unnoticed.
    for bit in 0..64 {
        let tampered = Answer {
            price: answer.price ^ (1 << bit),
            ..answer.clone()
        };
        let refused = tampered.open(&payment, &w.secret);
        prop_assert!(refused.is_err(), "price bit {}", bit);
        if tampered.price > drawn.value {
            prop_assert_eq!(
                refused.err().map(|error| error.reason()),
                Some("insufficient_value")
            );
        }
    }

    let Some((body, certificate)) = &answer.change else {
        prop_assert_eq!(drawn.price, drawn.value, "change is missing");
        return Ok(());
    };
    let removed = Answer {
        change: None,
        ..answer.clone()
    };
    prop_assert!(removed.open(&payment, &w.secret).is_err(), "change removed");

    let vendor_len = body[1] as usize;
    for (bit, flipped_body) in flip_in_each_byte(body, drawn.bit_seed) {
        let change = (flipped_body.clone(), certificate.clone());
        let tampered = Answer {
            change: Some(change),
            ..answer.clone()
        };
        let opened = tampered.open(&payment, &w.secret);
        if customer_checks_byte(bit / 8, vendor_len) {
            prop_assert!(opened.is_err(), "change body bit {}", bit);
        } else if stamped {
            prop_assert_eq!(
                opened.err(),
                Some(Error::BadReplyStamp),
                "change bit {}",
                bit
            );
        } else {
            // Clear: the customer cannot tell, the vendor can.
            prop_assert!(opened.is_ok(), "clear change bit {}: {:?}", bit, opened);
            let change = Scrip::decode(&flipped_body, certificate)?;
            prop_assert!(w.keys.verify(&change, NOW).is_err(), "change bit {}", bit);
        }
    }
    for (bit, flipped_certificate) in flip_in_each_byte(certificate, drawn.bit_seed) {
        let tampered = Answer {
            change: Some((body.clone(), flipped_certificate.clone())),
            ..answer.clone()
        };
        let opened = tampered.open(&payment, &w.secret);
        if stamped {
            prop_assert_eq!(
                opened.err(),
                Some(Error::BadReplyStamp),
                "certificate bit {}",
                bit
            );
        } else {
            prop_assert!(
                opened.is_ok(),
                "clear certificate bit {}: {:?}",
                bit,
                opened
            );
            let change = Scrip::decode(body, &flipped_certificate)?;
            prop_assert_eq!(w.keys.verify(&change, NOW), Err(Error::BadCertificate));
        }
    }
    Ok(())
}

fn check_change(
    drawn: &Drawn,
    suite: Suite,
    variant: Variant,
    excess: u64,
) -> Result<(), TestCaseError> {
    let w = world(drawn, suite);
    let payment = w.pay(drawn, variant);
    let verified = Sent::of(&payment).verify(&w.keys)?;
    let (value, price) = (Amount::new(drawn.value), Amount::new(drawn.price));

    let change_value = verified.change_value(price)?;
    prop_assert_eq!(change_value.checked_add(price), Ok(value));

    let reply = verified.reply(&w.keys, price, Some(w.slot), &drawn.goods, &w.nonce)?;
    prop_assert_eq!(reply.price, price);
    match &reply.change {
        None => prop_assert_eq!(price, value, "only an exact payment has no change"),
        Some(change) => {
            prop_assert_eq!(change.value().checked_add(price), Ok(value));
            let (paid, made) = (w.scrip.body(), change.body());
            prop_assert_eq!(made.suite, paid.suite);
            prop_assert_eq!(&made.vendor, &paid.vendor);
            prop_assert_eq!(made.cust_id, paid.cust_id);
            prop_assert_eq!(&made.properties, &paid.properties);
            prop_assert_eq!((made.id, made.expires_at), (w.slot.id, w.slot.expires_at));
            prop_assert_eq!(w.keys.verify(change, NOW), Ok(()));
            // Change pays the next payment with the same customer secret.
            let next =
                Payment::prepare(change.clone(), &w.secret, variant, &drawn.request, &w.nonce)?;
            prop_assert!(next.verify(&w.keys, NOW).is_ok());
        }
    }

    // A price above the value, when one exists, is refused by the vendor and
    // by a customer whose reply claims it.
    if drawn.value < u64::MAX {
        let above = value.units().saturating_add(excess);
        let refusal = Error::InsufficientValue {
            value: value.units(),
            price: above,
        };
        prop_assert_eq!(
            verified.change_value(Amount::new(above)),
            Err(refusal.clone())
        );
        let reply = verified.reply(
            &w.keys,
            Amount::new(above),
            Some(w.slot),
            &drawn.goods,
            &w.nonce,
        );
        prop_assert_eq!(reply, Err(refusal.clone()));
        let claimed = Answer {
            price: above,
            change: None,
            ..Answer::of(&verified.reply(&w.keys, value, None, &drawn.goods, &w.nonce)?)
        };
        prop_assert_eq!(claimed.open(&payment, &w.secret), Err(refusal));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn encodings_round_trip(drawn in drawn()) {
        for &suite in Suite::ALL {
            check_encodings(&drawn, suite)?;
        }
    }

    #[test]
    fn decoding_is_canonical_and_never_panics(
        drawn in drawn(),
        noise in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        for &suite in Suite::ALL {
            check_canonical_decoding(&drawn, suite, &noise)?;
        }
    }

    #[test]
    fn a_flipped_bit_in_the_scrip_is_refused(drawn in drawn()) {
        for &suite in Suite::ALL {
            for variant in Variant::ALL {
                check_scrip_flips(&drawn, suite, variant)?;
            }
        }
    }

    #[test]
    fn a_flipped_bit_in_the_request_or_its_stamp_is_refused(drawn in drawn()) {
        for &suite in Suite::ALL {
            for variant in Variant::ALL {
                check_request_flips(&drawn, suite, variant)?;
            }
        }
    }

    #[test]
    fn a_flipped_bit_in_the_reply_is_refused_by_the_customer(drawn in drawn()) {
        for &suite in Suite::ALL {
            for variant in Variant::ALL {
                check_reply_flips(&drawn, suite, variant)?;
            }
        }
    }

    #[test]
    fn change_and_price_add_up_to_the_value(drawn in drawn(), excess in 1..=u64::MAX) {
        for &suite in Suite::ALL {
            for variant in Variant::ALL {
                check_change(&drawn, suite, variant, excess)?;
            }
        }
    }

    #[test]
    fn amount_arithmetic_is_exact_or_an_error(
        a in prop_oneof![any::<u64>(), u64::MAX - 1000..=u64::MAX, 0..1000u64],
        b in prop_oneof![any::<u64>(), u64::MAX - 1000..=u64::MAX, 0..1000u64],
    ) {
        let sum = u128::from(a) + u128::from(b);
        let expected_sum = u64::try_from(sum).map(Amount::new).map_err(|_| Error::AmountOverflow);
        prop_assert_eq!(Amount::new(a).checked_add(Amount::new(b)), expected_sum);
        let expected_difference = a.checked_sub(b).map(Amount::new).ok_or(Error::AmountOverflow);
        prop_assert_eq!(Amount::new(a).checked_sub(Amount::new(b)), expected_difference);
    }

    #[test]
    fn the_spent_set_agrees_with_a_model(
        ids in proptest::collection::vec(
            (0..4u32, prop_oneof![0..200u32, any::<u32>()]),
            0..200,
        ),
    ) {
        let set = SpentSet::new();
        let mut model = BTreeSet::new();
        for (series, seq) in ids {
            let id = ScripId::new(series, seq);
            prop_assert_eq!(set.insert(id), model.insert(id), "{}", id);
            prop_assert!(set.contains(id));
        }
        prop_assert_eq!(set.len(), model.len() as u64);

        // The persisted words rebuild exactly the same set.
        let rebuilt = SpentSet::new();
        for id in &model {
            let index = millicent_core::spent::word_index(*id);
            rebuilt.load_word(id.series(), index, set.word_of(*id))?;
        }
        prop_assert_eq!(rebuilt.len(), model.len() as u64);
        for id in &model {
            let neighbours = [id.seq().wrapping_sub(1), id.seq(), id.seq().wrapping_add(1)];
            for seq in neighbours {
                let near = ScripId::new(id.series(), seq);
                prop_assert_eq!(set.contains(near), model.contains(&near), "{}", near);
                prop_assert_eq!(rebuilt.contains(near), model.contains(&near), "{}", near);
            }
        }
    }
}
