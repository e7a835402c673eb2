//! How fast one core validates a payment and mints its change.
//!
//! `cargo bench -p millicent-core --bench payment`
//!
//! Each iteration is the vendor's whole share of a secure-variant payment:
//! decode the scrip bytes as they arrive, check certificate, expiry,
//! customer secret and request stamp, then mint the change and stamp the
//! reply. The spent-ID check is measured separately, as is the customer's
//! share, and so is the suite's keyed hash alone: one MAC of a message
//! short enough for one block, two compressions of the hash (the inner and
//! the outer one), which is the unit a payment's cost is made of. Every
//! suite is measured in the same run, so the figures compare side by side.
//! Results are recorded in docs/BENCHMARKS.md.

// Set-up that fails is a broken benchmark: unwrapping says so at once.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use millicent_core::payment::ChangeSlot;
use millicent_core::{
    Amount, CustId, CustomerKey, KeyRing, MasterSecret, Payment, Properties, Scrip, ScripBody,
    ScripId, SeriesKey, SpentSet, Suite, Variant, VendorName,
};

const NOW: u64 = 1_800_000_000;

fn key_ring(suite: Suite) -> KeyRing {
    let mut keys = KeyRing::new(VendorName::new("news.example").unwrap());
    keys.add_series(SeriesKey {
        series: 1,
        suite,
        expires_at: NOW + 86_400,
        secret: MasterSecret::new(suite, [0x11; 32]),
    });
    keys.add_customer_key(CustomerKey {
        selector: 1,
        suite,
        secret: MasterSecret::new(suite, [0x22; 32]),
    });
    keys
}

fn scrip(keys: &KeyRing, suite: Suite, seq: u32) -> Scrip {
    keys.mint(ScripBody {
        suite,
        vendor: keys.vendor().clone(),
        value: Amount::new(1_000_000),
        id: ScripId::new(1, seq),
        cust_id: CustId::new(1, 42).unwrap(),
        expires_at: NOW + 3_600,
        properties: Properties::default(),
    })
    .unwrap()
}

fn validate_and_change(c: &mut Criterion) {
    for &suite in Suite::ALL {
        payment_in_suite(c, suite);
    }
}

fn payment_in_suite(c: &mut Criterion, suite: Suite) {
    let nonce = vec![0u8; suite.nonce_len()];
    let keys = key_ring(suite);
    let paid = scrip(&keys, suite, 7);
    let secret = keys.customer_secret(suite, paid.body().cust_id).unwrap();
    let payment = Payment::prepare(paid, &secret, Variant::Secure, b"article-1", &nonce).unwrap();
    let (body, certificate) = (
        payment.scrip.encoded_body().to_vec(),
        payment.scrip.certificate().as_bytes().to_vec(),
    );
    let stamp = payment.request_stamp;
    let slot = ChangeSlot {
        id: ScripId::new(1, 8),
        expires_at: NOW + 3_600,
    };

    let mut group = c.benchmark_group(suite.name());
    group.throughput(Throughput::Elements(1));
    group.bench_function("vendor: validate payment and mint change", |b| {
        b.iter(|| {
            let received = Payment {
                scrip: Scrip::decode(black_box(&body), black_box(&certificate)).unwrap(),
                variant: Variant::Secure,
                request: b"article-1".to_vec(),
                request_stamp: stamp,
            };
            let verified = received.verify(&keys, NOW).unwrap();
            let reply = verified
                .reply(
                    &keys,
                    Amount::new(10),
                    Some(slot),
                    b"The text of article 1",
                    &[],
                )
                .unwrap();
            black_box(reply)
        })
    });
    group.bench_function("vendor: validate payment only", |b| {
        b.iter(|| {
            let received = Payment {
                scrip: Scrip::decode(black_box(&body), black_box(&certificate)).unwrap(),
                variant: Variant::Secure,
                request: b"article-1".to_vec(),
                request_stamp: stamp,
            };
            black_box(received.verify(&keys, NOW).unwrap())
        })
    });
    group.bench_function("customer: prepare payment and check reply", |b| {
        let reply = payment
            .clone()
            .verify(&keys, NOW)
            .unwrap()
            .reply(
                &keys,
                Amount::new(10),
                Some(slot),
                b"The text of article 1",
                &[],
            )
            .unwrap();
        b.iter(|| {
            let sent = Payment::prepare(
                payment.scrip.clone(),
                &secret,
                Variant::Secure,
                b"article-1",
                &nonce,
            )
            .unwrap();
            black_box(reply.open(&sent, &secret).unwrap())
        })
    });
    group.finish();
}

fn keyed_hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("keyed hash");
    group.throughput(Throughput::Elements(1));
    for &suite in Suite::ALL {
        let key = suite.prepare(&[0x33; 32]);
        let message = [0x44u8; 32];
        group.bench_function(
            format!("{}: one MAC of 32 bytes, prepared key", suite.name()),
            |b| b.iter(|| black_box(key.mac(&[black_box(&message)]))),
        );
    }
    group.finish();
}

fn spent_set(c: &mut Criterion) {
    let set = SpentSet::new();
    let mut seq = 0u32;
    let mut group = c.benchmark_group("spent set");
    group.throughput(Throughput::Elements(1));
    group.bench_function("insert a fresh ID#", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            black_box(set.insert(ScripId::new(1, seq)))
        })
    });
    group.finish();
}

criterion_group!(benches, validate_and_change, keyed_hash, spent_set);
criterion_main!(benches);
