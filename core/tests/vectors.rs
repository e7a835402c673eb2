//! Recomputes every output in docs/test-vectors/ (one file per suite) from
//! its inputs.
//!
//! The file is the contract with other implementations: if this test fails,
//! either the code or the protocol changed, and docs/PROTOCOL.md with it.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use millicent_core::account::{account_key, account_mac};
use millicent_core::broker;
use millicent_core::exchange::{ExchangeRequest, exchange_goods, open_customer_secret};
use millicent_core::keys::{certificate, customer_secret};
use millicent_core::payment::{ChangeSlot, reply_stamp, request_stamp};
use millicent_core::{
    Amount, CustId, CustomerKey, CustomerSecret, KeyRing, Mac, MasterSecret, Payment, Scrip,
    ScripBody, ScripId, SealPurpose, SeriesKey, Suite, Variant,
};
use serde_json::Value;

/// Every suite's vector file.
const FILES: [(Suite, &str); 2] = [
    (
        Suite::Classic,
        include_str!("../../docs/test-vectors/classic.json"),
    ),
    (
        Suite::Modern,
        include_str!("../../docs/test-vectors/modern.json"),
    ),
];

/// Each suite with its parsed vector file.
fn docs() -> Vec<(Suite, Value)> {
    FILES
        .iter()
        .map(|(suite, text)| {
            (
                *suite,
                serde_json::from_str(text).expect("vector file is JSON"),
            )
        })
        .collect()
}

fn hex_of(value: &Value, key: &str) -> Vec<u8> {
    hex::decode(
        value[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing")),
    )
    .unwrap()
}

fn u64_of(value: &Value, key: &str) -> u64 {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing"))
        .parse()
        .unwrap()
}

fn cases<'a>(doc: &'a Value, name: &str) -> &'a Vec<Value> {
    let cases = doc[name]
        .as_array()
        .unwrap_or_else(|| panic!("{name} missing"));
    assert!(!cases.is_empty(), "{name} has no cases");
    cases
}

fn master(suite: Suite, value: &Value, key: &str) -> MasterSecret {
    MasterSecret::from_slice(suite, &hex_of(value, key)).unwrap()
}

fn customer(suite: Suite, value: &Value, key: &str) -> CustomerSecret {
    CustomerSecret::from_slice(suite, &hex_of(value, key)).unwrap()
}

#[test]
fn every_suite_has_its_file() {
    let docs = docs();
    assert_eq!(docs.len(), Suite::ALL.len());
    for (suite, doc) in docs {
        assert_eq!(doc["suite_id"], suite.id());
        assert_eq!(doc["suite"], suite.name());
    }
}

#[test]
fn scrip_bodies_encode_and_decode() {
    for (_, doc) in docs() {
        for case in cases(&doc, "scrip_body") {
            let encoding = hex_of(case, "encoding");
            let body = ScripBody::decode(&encoding).unwrap();
            assert_eq!(body.encode(), encoding);
            assert_eq!(body.vendor.as_str(), case["vendor"]);
            assert_eq!(body.value.units(), u64_of(case, "value"));
            assert_eq!(body.id.as_u64(), u64_of(case, "id"));
            assert_eq!(body.id.series() as u64, case["series"].as_u64().unwrap());
            assert_eq!(body.id.seq() as u64, case["seq"].as_u64().unwrap());
            assert_eq!(body.cust_id.as_u64(), u64_of(case, "cust_id"));
            assert_eq!(
                body.cust_id.selector() as u64,
                case["customer_selector"].as_u64().unwrap()
            );
            assert_eq!(body.expires_at, u64_of(case, "expires_at"));
            assert_eq!(body.properties.as_bytes(), hex_of(case, "properties"));
        }
    }
}

#[test]
fn certificates() {
    for (suite, doc) in docs() {
        for case in cases(&doc, "certificate") {
            let secret = master(suite, case, "master_scrip_secret");
            let mac = certificate(&secret, &hex_of(case, "body"));
            assert_eq!(mac.as_bytes(), hex_of(case, "certificate"));
        }
    }
}

#[test]
fn customer_secrets() {
    for (suite, doc) in docs() {
        for case in cases(&doc, "customer_secret") {
            let secret = master(suite, case, "master_customer_secret");
            let derived = customer_secret(&secret, CustId::from_u64(u64_of(case, "cust_id")));
            assert_eq!(derived.expose_bytes(), hex_of(case, "customer_secret"));
        }
    }
}

#[test]
fn request_stamps() {
    for (suite, doc) in docs() {
        for case in cases(&doc, "request_stamp") {
            let scrip = Scrip::decode(&hex_of(case, "body"), &hex_of(case, "certificate")).unwrap();
            let stamp = request_stamp(
                &customer(suite, case, "customer_secret"),
                &scrip,
                &hex_of(case, "request"),
            );
            assert_eq!(stamp.as_bytes(), hex_of(case, "request_stamp"));
        }
    }
}

#[test]
fn reply_stamps() {
    for (suite, doc) in docs() {
        for case in cases(&doc, "reply_stamp") {
            let change = case["change_body"].as_str().map(|_| {
                Scrip::decode(
                    &hex_of(case, "change_body"),
                    &hex_of(case, "change_certificate"),
                )
                .unwrap()
            });
            let request = Mac::parse(suite, "stamp", &hex_of(case, "request_stamp")).unwrap();
            let stamp = reply_stamp(
                suite,
                &customer(suite, case, "customer_secret"),
                &request,
                change.as_ref(),
                &hex_of(case, "goods"),
            );
            assert_eq!(stamp.as_bytes(), hex_of(case, "reply_stamp"));
        }
    }
}

#[test]
fn seals() {
    for (suite, doc) in docs() {
        for case in cases(&doc, "seal") {
            let purpose = match case["purpose"].as_u64().unwrap() {
                1 => SealPurpose::CustomerSecret,
                2 => SealPurpose::Request,
                3 => SealPurpose::Goods,
                4 => SealPurpose::BrokerScripSecret,
                other => panic!("unknown purpose {other}"),
            };
            let key = hex_of(case, "key");
            let sealed = hex_of(case, "sealed");
            let made = suite
                .seal(
                    &key,
                    purpose,
                    &hex_of(case, "nonce"),
                    &hex_of(case, "plaintext"),
                )
                .unwrap();
            assert_eq!(made, sealed);
            assert_eq!(
                suite.open(&key, purpose, &sealed).unwrap(),
                hex_of(case, "plaintext")
            );
        }
    }
}

#[test]
fn account_keys_and_macs() {
    for (suite, doc) in docs() {
        for case in cases(&doc, "account_key") {
            let key = account_key(
                &master(suite, case, "master_account_secret"),
                u64_of(case, "account_id"),
            );
            assert_eq!(key.expose_bytes(), hex_of(case, "account_key"));
        }
        for case in cases(&doc, "account_mac") {
            let nonce: [u8; 16] = hex_of(case, "nonce").try_into().unwrap();
            let mac = account_mac(
                suite,
                &hex_of(case, "account_key"),
                case["method"].as_str().unwrap(),
                u64_of(case, "account_id"),
                u64_of(case, "timestamp_ms"),
                &nonce,
                &hex_of(case, "params"),
            );
            assert_eq!(mac.as_bytes(), hex_of(case, "mac"));
        }
    }
}

#[test]
fn exchange_encodings() {
    for (_, doc) in docs() {
        for case in cases(&doc, "exchange_request") {
            let request = ExchangeRequest::decode(&hex_of(case, "encoding")).unwrap();
            assert_eq!(request.vendor.as_str(), case["vendor"]);
            assert_eq!(request.value, Amount::new(u64_of(case, "value")));
            assert_eq!(request.encode(), hex_of(case, "encoding"));
        }
        for case in cases(&doc, "exchange_goods") {
            let scrip = Scrip::decode_concatenated(&hex_of(case, "vendor_scrip")).unwrap();
            let goods = exchange_goods(&scrip, &hex_of(case, "sealed_customer_secret"));
            assert_eq!(goods, hex_of(case, "goods"));
        }
    }
}

#[test]
fn broker_ids_refunds_and_renewals() {
    for (suite, doc) in docs() {
        for case in cases(&doc, "broker_ids") {
            let shard = case["shard"].as_u64().unwrap() as u8;
            let account = broker::account_id(shard, u64_of(case, "account_number")).unwrap();
            assert_eq!(account, u64_of(case, "account_id"));
            assert_eq!(broker::account_shard(account), shard);
            let number = case["series_number"].as_u64().unwrap() as u32;
            let series = broker::broker_series(shard, number).unwrap();
            assert_eq!(u64::from(series), case["series"].as_u64().unwrap());
            assert_eq!(broker::series_shard(series), shard);
        }
        for case in cases(&doc, "refund") {
            let secret = customer(suite, case, "customer_secret");
            let scrip = Scrip::decode(&hex_of(case, "body"), &hex_of(case, "certificate")).unwrap();
            let request = broker::RefundRequest::decode(&hex_of(case, "request")).unwrap();
            assert_eq!(request.account_id, u64_of(case, "account_id"));
            let stamp = request_stamp(&secret, &scrip, &hex_of(case, "request"));
            assert_eq!(stamp.as_bytes(), hex_of(case, "request_stamp"));
            let goods = broker::refund_goods(
                request.account_id,
                u64_of(case, "credited"),
                u64_of(case, "balance"),
            );
            assert_eq!(goods.to_vec(), hex_of(case, "goods"));
            let reply = reply_stamp(suite, &secret, &stamp, None, &goods);
            assert_eq!(reply.as_bytes(), hex_of(case, "reply_stamp"));
        }
        for case in cases(&doc, "renewal") {
            let secret = customer(suite, case, "customer_secret");
            let scrip = Scrip::decode(&hex_of(case, "body"), &hex_of(case, "certificate")).unwrap();
            assert_eq!(hex_of(case, "request"), broker::RENEWAL_REQUEST);
            let stamp = request_stamp(&secret, &scrip, broker::RENEWAL_REQUEST);
            assert_eq!(stamp.as_bytes(), hex_of(case, "request_stamp"));
            let fresh = Scrip::decode_concatenated(&hex_of(case, "fresh_scrip")).unwrap();
            let sealed = hex_of(case, "sealed_customer_secret");
            let opened = open_customer_secret(suite, &secret, &sealed, fresh.suite()).unwrap();
            assert_eq!(opened, customer(suite, case, "fresh_customer_secret"));
            let goods = exchange_goods(&fresh, &sealed);
            assert_eq!(goods, hex_of(case, "goods"));
            let reply = reply_stamp(suite, &secret, &stamp, None, &goods);
            assert_eq!(reply.as_bytes(), hex_of(case, "reply_stamp"));
        }
    }
}

/// A whole payment per variant, from the customer's request to the checked
/// reply, with the vendor's key ring rebuilt from the certificate vector.
#[test]
fn payments() {
    for (suite, doc) in docs() {
        let certificate_case = &cases(&doc, "certificate")[0];
        let customer_case = &cases(&doc, "customer_secret")[0];
        for case in cases(&doc, "payment") {
            let scrip = Scrip::decode(
                &hex_of(case, "scrip_body"),
                &hex_of(case, "scrip_certificate"),
            )
            .unwrap();
            let body = scrip.body();
            let mut keys = KeyRing::new(body.vendor.clone());
            keys.add_series(SeriesKey {
                series: body.id.series(),
                suite,
                expires_at: u64_of(case, "change_expires_at"),
                secret: master(suite, certificate_case, "master_scrip_secret"),
            });
            keys.add_customer_key(CustomerKey {
                selector: body.cust_id.selector(),
                suite,
                secret: master(suite, customer_case, "master_customer_secret"),
            });
            let secret = customer(suite, case, "customer_secret");
            let variant = Variant::from_name(case["variant"].as_str().unwrap()).unwrap();

            let payment = Payment::prepare(
                scrip,
                &secret,
                variant,
                &hex_of(case, "item"),
                &hex_of(case, "request_nonce"),
            )
            .unwrap();
            assert_eq!(payment.request, hex_of(case, "request"));
            let stamp = payment.request_stamp.map(|s| hex::encode(s.as_bytes()));
            assert_eq!(stamp.as_deref(), case["request_stamp"].as_str());

            let verified = payment.clone().verify(&keys, u64_of(case, "now")).unwrap();
            let slot = ChangeSlot {
                id: ScripId::from_u64(u64_of(case, "change_id")),
                expires_at: u64_of(case, "change_expires_at"),
            };
            let reply = verified
                .reply(
                    &keys,
                    Amount::new(u64_of(case, "price")),
                    Some(slot),
                    &hex_of(case, "plain_goods"),
                    &hex_of(case, "reply_nonce"),
                )
                .unwrap();
            assert_eq!(reply.goods, hex_of(case, "goods"));
            let change = reply.change.as_ref().unwrap();
            assert_eq!(change.encoded_body(), hex_of(case, "change_body"));
            assert_eq!(
                change.certificate().as_bytes(),
                hex_of(case, "change_certificate")
            );
            let reply_stamp = reply.reply_stamp.map(|s| hex::encode(s.as_bytes()));
            assert_eq!(reply_stamp.as_deref(), case["reply_stamp"].as_str());
            assert_eq!(
                reply.open(&payment, &secret).unwrap(),
                hex_of(case, "plain_goods")
            );
        }
    }
}
