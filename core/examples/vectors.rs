//! Prints the protocol test vectors of docs/test-vectors/ as JSON, for the
//! suite named as the only argument:
//!
//! ```text
//! cargo run -p millicent-core --example vectors classic > docs/test-vectors/classic.json
//! cargo run -p millicent-core --example vectors modern > docs/test-vectors/modern.json
//! ```
//!
//! The inputs are fixed, so the output only changes if the protocol does;
//! `core/tests/vectors.rs` recomputes every output from the checked-in file.

use millicent_core::account::{account_key, account_mac};
use millicent_core::broker;
use millicent_core::exchange::{ExchangeRequest, exchange_goods, seal_customer_secret};
use millicent_core::keys::{certificate, customer_secret};
use millicent_core::payment::{ChangeSlot, reply_stamp, request_stamp};
use millicent_core::{
    Amount, CustId, CustomerKey, KeyRing, MasterSecret, Payment, Properties, ScripBody, ScripId,
    SealPurpose, SeriesKey, Suite, Variant, VendorName,
};
use serde_json::{Value, json};

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8 * 7)).collect()
}

fn secret(seed: u8) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&bytes(seed, 32));
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).ok_or("usage: vectors SUITE")?;
    let suite = Suite::from_name(&name).ok_or("unknown suite")?;
    let vendor = VendorName::new("news.example")?;
    let scrip_secret = MasterSecret::new(suite, secret(0x10));
    let customer_master = MasterSecret::new(suite, secret(0x40));
    let expires_at = 1_900_000_000u64;
    let now = 1_899_990_000u64;

    let mut keys = KeyRing::new(vendor.clone());
    keys.add_series(SeriesKey {
        series: 5,
        suite,
        expires_at,
        secret: scrip_secret.clone(),
    });
    keys.add_customer_key(CustomerKey {
        selector: 3,
        suite,
        secret: customer_master.clone(),
    });

    let bodies = [
        ScripBody {
            suite,
            vendor: vendor.clone(),
            value: Amount::new(1000),
            id: ScripId::new(5, 1),
            cust_id: CustId::new(3, 77)?,
            expires_at,
            properties: Properties::default(),
        },
        ScripBody {
            suite,
            vendor: VendorName::new("api.example-2:eu")?,
            value: Amount::new(u64::MAX),
            id: ScripId::new(u32::MAX, u32::MAX),
            cust_id: CustId::new(u16::MAX, CustId::MAX_NUMBER)?,
            expires_at: 0,
            properties: Properties::new(b"region=eu;age=18+".to_vec())?,
        },
    ];
    let scrip_body: Vec<Value> = bodies
        .iter()
        .map(|body| {
            json!({
                "suite": body.suite.id(),
                "vendor": body.vendor.as_str(),
                "value": body.value.units().to_string(),
                "id": body.id.as_u64().to_string(),
                "series": body.id.series(),
                "seq": body.id.seq(),
                "cust_id": body.cust_id.as_u64().to_string(),
                "customer_selector": body.cust_id.selector(),
                "expires_at": body.expires_at.to_string(),
                "properties": hex::encode(body.properties.as_bytes()),
                "encoding": hex::encode(body.encode()),
            })
        })
        .collect();

    let scrip = keys.mint(bodies[0].clone())?;
    let cs = customer_secret(&customer_master, scrip.body().cust_id);
    let certificates = vec![json!({
        "master_scrip_secret": hex::encode(scrip_secret.expose_bytes()),
        "body": hex::encode(scrip.encoded_body()),
        "certificate": hex::encode(certificate(&scrip_secret, scrip.encoded_body()).as_bytes()),
    })];
    let customer_secrets: Vec<Value> = [CustId::new(3, 77)?, CustId::new(3, 78)?]
        .iter()
        .map(|cust_id| {
            json!({
                "master_customer_secret": hex::encode(customer_master.expose_bytes()),
                "cust_id": cust_id.as_u64().to_string(),
                "customer_secret":
                    hex::encode(customer_secret(&customer_master, *cust_id).expose_bytes()),
            })
        })
        .collect();

    let request = b"article-1";
    let stamp = request_stamp(&cs, &scrip, request);
    let request_stamps = vec![json!({
        "customer_secret": hex::encode(cs.expose_bytes()),
        "body": hex::encode(scrip.encoded_body()),
        "certificate": hex::encode(scrip.certificate().as_bytes()),
        "request": hex::encode(request),
        "request_stamp": hex::encode(stamp.as_bytes()),
    })];

    let change = keys.mint(ScripBody {
        value: Amount::new(990),
        id: ScripId::new(5, 2),
        ..bodies[0].clone()
    })?;
    let goods = b"The text of article 1";
    let reply_stamps = vec![
        json!({
            "customer_secret": hex::encode(cs.expose_bytes()),
            "request_stamp": hex::encode(stamp.as_bytes()),
            "change_body": hex::encode(change.encoded_body()),
            "change_certificate": hex::encode(change.certificate().as_bytes()),
            "goods": hex::encode(goods),
            "reply_stamp":
                hex::encode(reply_stamp(suite, &cs, &stamp, Some(&change), goods).as_bytes()),
        }),
        json!({
            "customer_secret": hex::encode(cs.expose_bytes()),
            "request_stamp": hex::encode(stamp.as_bytes()),
            "change_body": null,
            "change_certificate": null,
            "goods": hex::encode(goods),
            "reply_stamp": hex::encode(reply_stamp(suite, &cs, &stamp, None, goods).as_bytes()),
        }),
    ];

    let seal_key = bytes(0x70, 16);
    let purposes = [
        (SealPurpose::CustomerSecret, bytes(0x90, 16)),
        (SealPurpose::Request, b"article-1".to_vec()),
        (SealPurpose::Goods, b"The text of article 1".to_vec()),
        (SealPurpose::BrokerScripSecret, bytes(0xa0, 16)),
        (SealPurpose::Goods, Vec::new()),
    ];
    let mut seals = Vec::new();
    for (i, (purpose, plaintext)) in purposes.iter().enumerate() {
        let nonce = bytes(0x30 + i as u8, suite.nonce_len());
        let sealed = suite.seal(&seal_key, *purpose, &nonce, plaintext)?;
        seals.push(json!({
            "key": hex::encode(&seal_key),
            "purpose": *purpose as u8,
            "nonce": hex::encode(&nonce),
            "plaintext": hex::encode(plaintext),
            "sealed": hex::encode(&sealed),
        }));
    }

    let account_master = MasterSecret::new(suite, secret(0xc0));
    let account = account_key(&account_master, 42);
    let account_keys = vec![json!({
        "master_account_secret": hex::encode(account_master.expose_bytes()),
        "account_id": "42",
        "account_key": hex::encode(account.expose_bytes()),
    })];
    let nonce: [u8; 16] = bytes(0xe0, 16).try_into().map_err(|_| "nonce length")?;
    let account_macs: Vec<Value> = [
        ("BuyBrokerScrip", 500u64.to_be_bytes().to_vec()),
        ("GetAccount", vec![]),
    ]
    .iter()
    .map(|(method, params)| {
        let timestamp_ms = 1_899_990_000_123u64;
        let mac = account_mac(
            suite,
            account.expose_bytes(),
            method,
            42,
            timestamp_ms,
            &nonce,
            params,
        );
        json!({
            "account_key": hex::encode(account.expose_bytes()),
            "method": method,
            "account_id": "42",
            "timestamp_ms": timestamp_ms.to_string(),
            "nonce": hex::encode(nonce),
            "params": hex::encode(params),
            "mac": hex::encode(mac.as_bytes()),
        })
    })
    .collect();

    let exchange = ExchangeRequest {
        vendor: vendor.clone(),
        value: Amount::new(500),
    };
    let exchange_requests = vec![
        json!({ "vendor": vendor.as_str(), "value": "500", "encoding": hex::encode(exchange.encode()) }),
    ];
    let sealed_cs = seal_customer_secret(suite, &cs, &bytes(0x55, suite.nonce_len()), &cs)?;
    let exchange_goods_vectors = vec![json!({
        "vendor_scrip": hex::encode(scrip.encode()),
        "sealed_customer_secret": hex::encode(&sealed_cs),
        "goods": hex::encode(exchange_goods(&scrip, &sealed_cs)),
    })];

    let broker_ids = vec![json!({
        "shard": 3,
        "account_number": "77",
        "account_id": broker::account_id(3, 77)?.to_string(),
        "series_number": 9,
        "series": broker::broker_series(3, 9)?,
    })];
    let refund = broker::RefundRequest { account_id: 42 }.encode();
    let refund_stamp = request_stamp(&cs, &scrip, &refund);
    let refund_goods = broker::refund_goods(42, 1000, 1500);
    let refunds = vec![json!({
        "customer_secret": hex::encode(cs.expose_bytes()),
        "body": hex::encode(scrip.encoded_body()),
        "certificate": hex::encode(scrip.certificate().as_bytes()),
        "account_id": "42",
        "request": hex::encode(refund),
        "request_stamp": hex::encode(refund_stamp.as_bytes()),
        "credited": "1000",
        "balance": "1500",
        "goods": hex::encode(refund_goods),
        "reply_stamp": hex::encode(reply_stamp(suite, &cs, &refund_stamp, None, &refund_goods).as_bytes()),
    })];
    let fresh = keys.mint(ScripBody {
        id: ScripId::new(5, 3),
        cust_id: CustId::new(3, 78)?,
        ..bodies[0].clone()
    })?;
    let fresh_cs = customer_secret(&customer_master, fresh.body().cust_id);
    let renewal_stamp = request_stamp(&cs, &scrip, broker::RENEWAL_REQUEST);
    let sealed_fresh =
        seal_customer_secret(suite, &cs, &bytes(0x66, suite.nonce_len()), &fresh_cs)?;
    let renewal_goods = exchange_goods(&fresh, &sealed_fresh);
    let renewals = vec![json!({
        "customer_secret": hex::encode(cs.expose_bytes()),
        "body": hex::encode(scrip.encoded_body()),
        "certificate": hex::encode(scrip.certificate().as_bytes()),
        "request": hex::encode(broker::RENEWAL_REQUEST),
        "request_stamp": hex::encode(renewal_stamp.as_bytes()),
        "fresh_scrip": hex::encode(fresh.encode()),
        "fresh_customer_secret": hex::encode(fresh_cs.expose_bytes()),
        "seal_nonce": hex::encode(bytes(0x66, suite.nonce_len())),
        "sealed_customer_secret": hex::encode(&sealed_fresh),
        "goods": hex::encode(&renewal_goods),
        "reply_stamp": hex::encode(reply_stamp(suite, &cs, &renewal_stamp, None, &renewal_goods).as_bytes()),
    })];

    let mut payments = Vec::new();
    for variant in Variant::ALL {
        let request_nonce = bytes(0x21, suite.nonce_len());
        let reply_nonce = bytes(0x22, suite.nonce_len());
        let payment = Payment::prepare(scrip.clone(), &cs, variant, request, &request_nonce)?;
        let verified = payment.clone().verify(&keys, now)?;
        let slot = ChangeSlot {
            id: ScripId::new(5, 2),
            expires_at,
        };
        let reply = verified.reply(&keys, Amount::new(10), Some(slot), goods, &reply_nonce)?;
        let change = reply.change.as_ref().ok_or("change expected")?;
        payments.push(json!({
            "variant": variant.name(),
            "now": now.to_string(),
            "scrip_body": hex::encode(scrip.encoded_body()),
            "scrip_certificate": hex::encode(scrip.certificate().as_bytes()),
            "customer_secret": hex::encode(cs.expose_bytes()),
            "item": hex::encode(request),
            "request_nonce": hex::encode(&request_nonce),
            "request": hex::encode(&payment.request),
            "request_stamp": payment.request_stamp.map(|s| hex::encode(s.as_bytes())),
            "price": "10",
            "change_id": ScripId::new(5, 2).as_u64().to_string(),
            "change_expires_at": expires_at.to_string(),
            "plain_goods": hex::encode(goods),
            "reply_nonce": hex::encode(&reply_nonce),
            "goods": hex::encode(&reply.goods),
            "change_body": hex::encode(change.encoded_body()),
            "change_certificate": hex::encode(change.certificate().as_bytes()),
            "reply_stamp": reply.reply_stamp.map(|s| hex::encode(s.as_bytes())),
        }));
    }

    let document = json!({
        "suite": suite.name(),
        "suite_id": suite.id(),
        "scrip_body": scrip_body,
        "certificate": certificates,
        "customer_secret": customer_secrets,
        "request_stamp": request_stamps,
        "reply_stamp": reply_stamps,
        "seal": seals,
        "account_key": account_keys,
        "account_mac": account_macs,
        "exchange_request": exchange_requests,
        "exchange_goods": exchange_goods_vectors,
        "broker_ids": broker_ids,
        "refund": refunds,
        "renewal": renewals,
        "payment": payments,
    });
    println!("{}", serde_json::to_string_pretty(&document)?);
    Ok(())
}
