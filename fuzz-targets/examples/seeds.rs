//! Writes the seed inputs of every fuzz target into `fuzz/corpus/TARGET/`
//! as `seed-*` files: valid inputs from the test vectors, the example
//! configuration files, and scrip minted with the fixed keys for every
//! suite, so that fuzzing starts from inputs that get past every check.
//!
//! `cargo run -p millicent-fuzz-targets --example seeds`
//!
//! The inputs are fixed, so running it again rewrites the same files.

use std::path::{Path, PathBuf};

use millicent_core::account::NONCE_LEN;
use millicent_core::exchange::ExchangeRequest;
use millicent_core::payment::request_stamp;
use millicent_core::{
    Amount, CustId, CustomerSecret, Payment, Properties, Scrip, ScripBody, ScripId, Suite, Variant,
    VendorName,
};
use millicent_fuzz_targets as targets;
use millicent_proto as wire;
use prost::Message;
use serde_json::{Value, json};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const VECTORS: &str = include_str!("../../docs/test-vectors/classic.json");
const VENDOR_TOML: &str = include_str!("../../deploy/vendor.toml");
const BROKER_TOML: &str = include_str!("../../deploy/broker.toml");
const GATEWAY_TOML: &str = include_str!("../../deploy/vendor-gateway.toml");

struct Seeds {
    dir: PathBuf,
}

impl Seeds {
    fn new(target: &str) -> Result<Seeds> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        std::fs::create_dir_all(&dir)?;
        Ok(Seeds { dir })
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        std::fs::write(self.dir.join(format!("seed-{name}")), bytes)?;
        Ok(())
    }
}

fn hex_field(case: &Value, key: &str) -> Result<Vec<u8>> {
    let text = case[key]
        .as_str()
        .ok_or_else(|| format!("test vector field {key} is not a string"))?;
    Ok(hex::decode(text)?)
}

fn cases<'a>(vectors: &'a Value, kind: &str) -> Result<&'a Vec<Value>> {
    Ok(vectors[kind]
        .as_array()
        .ok_or_else(|| format!("test vectors have no {kind}"))?)
}

/// Scrip of the fixed vendor or broker key ring, in `suite`.
fn mint(suite: Suite, broker: bool, value: u64, properties: &[u8]) -> Result<Scrip> {
    let keys = if broker {
        targets::broker_keys()
    } else {
        targets::vendor_keys()
    };
    Ok(keys.mint(ScripBody {
        suite,
        vendor: keys.vendor().clone(),
        value: Amount::new(value),
        id: ScripId::new(targets::series_of(suite), 1),
        cust_id: CustId::new(targets::selector_of(suite), 77)?,
        expires_at: targets::SERIES_EXPIRES_AT,
        properties: Properties::new(properties.to_vec())?,
    })?)
}

fn secret_of(scrip: &Scrip, broker: bool) -> Result<CustomerSecret> {
    let keys = if broker {
        targets::broker_keys()
    } else {
        targets::vendor_keys()
    };
    Ok(keys.customer_secret(scrip.suite(), scrip.body().cust_id)?)
}

fn scrip_to_wire(scrip: &Scrip) -> wire::Scrip {
    wire::Scrip {
        body: scrip.encoded_body().to_vec(),
        certificate: scrip.certificate().as_bytes().to_vec(),
    }
}

fn variant_to_wire(variant: Variant) -> wire::Variant {
    match variant {
        Variant::Clear => wire::Variant::Clear,
        Variant::Secure => wire::Variant::Secure,
        Variant::Private => wire::Variant::Private,
    }
}

fn scrip_seeds(vectors: &Value) -> Result<()> {
    let seeds = Seeds::new("scrip")?;
    for (i, case) in cases(vectors, "scrip_body")?.iter().enumerate() {
        seeds.write(&format!("vector-body-{i}"), &hex_field(case, "encoding")?)?;
    }
    for (i, case) in cases(vectors, "exchange_goods")?.iter().enumerate() {
        seeds.write(
            &format!("vector-scrip-{i}"),
            &hex_field(case, "vendor_scrip")?,
        )?;
    }
    for &suite in Suite::ALL {
        let scrip = mint(suite, false, 1000, b"region=eu")?;
        seeds.write(&format!("{}-body", suite.name()), scrip.encoded_body())?;
        seeds.write(&format!("{}-scrip", suite.name()), &scrip.encode())?;
    }
    Ok(())
}

fn payment_seeds(vectors: &Value) -> Result<()> {
    let seeds = Seeds::new("payment")?;
    for case in cases(vectors, "payment")? {
        let variant = case["variant"]
            .as_str()
            .ok_or("payment vector without variant")?;
        let variant = Variant::from_name(variant).ok_or("payment vector of no variant")?;
        let stamp = case["request_stamp"].as_str().unwrap_or_default();
        let request = wire::PayRequest {
            scrip: Some(wire::Scrip {
                body: hex_field(case, "scrip_body")?,
                certificate: hex_field(case, "scrip_certificate")?,
            }),
            variant: variant_to_wire(variant) as i32,
            request: hex_field(case, "request")?,
            request_stamp: hex::decode(stamp)?,
        };
        seeds.write(
            &format!("vector-{}", variant.name()),
            &request.encode_to_vec(),
        )?;
    }
    for &suite in Suite::ALL {
        for variant in Variant::ALL {
            let scrip = mint(suite, false, 1000, b"")?;
            let secret = secret_of(&scrip, false)?;
            let nonce = vec![0x21; suite.nonce_len()];
            let payment = Payment::prepare(scrip, &secret, variant, b"article-1", &nonce)?;
            let request = wire::PayRequest {
                scrip: Some(scrip_to_wire(&payment.scrip)),
                variant: variant_to_wire(variant) as i32,
                request: payment.request.clone(),
                request_stamp: payment
                    .request_stamp
                    .map(|stamp| stamp.as_bytes().to_vec())
                    .unwrap_or_default(),
            };
            let name = format!("{}-{}", suite.name(), variant.name());
            seeds.write(&name, &request.encode_to_vec())?;
        }
    }
    Ok(())
}

fn licence_request_seeds() -> Result<()> {
    let request = wire::GrantLicenceRequest {
        vendor: targets::VENDOR.to_owned(),
        broker: targets::BROKER.to_owned(),
    };
    Seeds::new("licence_request")?.write("grant", &request.encode_to_vec())
}

fn broker_call_seeds() -> Result<()> {
    let seeds = Seeds::new("broker_calls")?;
    let call = |kind: u8, message: &dyn Fn() -> Vec<u8>| {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&message());
        bytes
    };
    for &suite in Suite::ALL {
        let name = suite.name();
        let scrip = mint(suite, true, 1000, b"")?;
        let secret = secret_of(&scrip, true)?;
        let wanted = ExchangeRequest {
            vendor: VendorName::new(targets::VENDOR)?,
            value: Amount::new(500),
        }
        .encode();
        let exchange = wire::ExchangeRequest {
            broker_scrip: Some(scrip_to_wire(&scrip)),
            request_stamp: request_stamp(&secret, &scrip, &wanted).as_bytes().to_vec(),
            request: wanted,
        };
        seeds.write(
            &format!("{name}-exchange"),
            &call(0, &|| exchange.encode_to_vec()),
        )?;

        let auth = wire::AccountAuth {
            account_id: 42,
            timestamp_ms: targets::NOW * 1000 + 123,
            nonce: vec![0xe0; NONCE_LEN],
            mac: vec![0x90; suite.mac_len()],
        };
        let buy = wire::BuyBrokerScripRequest {
            auth: Some(auth.clone()),
            amount: 500,
        };
        seeds.write(&format!("{name}-buy"), &call(1, &|| buy.encode_to_vec()))?;
        let get = wire::GetAccountRequest { auth: Some(auth) };
        seeds.write(
            &format!("{name}-account"),
            &call(2, &|| get.encode_to_vec()),
        )?;

        let licence = wire::Licence {
            vendor: targets::VENDOR.to_owned(),
            suite: u32::from(suite.id()),
            series: targets::series_of(suite),
            expires_at: targets::SERIES_EXPIRES_AT,
            master_scrip_secret: vec![0x10; 32],
            customer_selector: u32::from(targets::selector_of(suite)),
            master_customer_secret: vec![0x40; 32],
            id_limit: 0,
        };
        seeds.write(
            &format!("{name}-licence"),
            &call(4, &|| licence.encode_to_vec()),
        )?;
    }
    let credit = wire::CreditRequest {
        account_id: 42,
        amount: 500,
        reference: "card-payment-1".to_owned(),
    };
    seeds.write("credit", &call(3, &|| credit.encode_to_vec()))
}

fn settlement_call_seeds() -> Result<()> {
    let seeds = Seeds::new("settlement_calls")?;
    let call = |kind: u8, message: Vec<u8>| {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&message);
        bytes
    };
    for &suite in Suite::ALL {
        let name = suite.name();
        let scrip = mint(suite, true, 1000, b"")?;
        let secret = secret_of(&scrip, true)?;
        let wanted = millicent_core::broker::RefundRequest { account_id: 42 }.encode();
        let refund = wire::RefundRequest {
            broker_scrip: Some(scrip_to_wire(&scrip)),
            request_stamp: request_stamp(&secret, &scrip, &wanted).as_bytes().to_vec(),
            request: wanted.to_vec(),
        };
        seeds.write(&format!("{name}-refund"), &call(0, refund.encode_to_vec()))?;

        let expired = mint(suite, false, 100, b"")?;
        let expired_secret = secret_of(&expired, false)?;
        let stamp = request_stamp(
            &expired_secret,
            &expired,
            millicent_core::broker::RENEWAL_REQUEST,
        );
        let renewal = wire::RenewRequest {
            shard: 0,
            vendor_scrip: Some(scrip_to_wire(&expired)),
            request_stamp: stamp.as_bytes().to_vec(),
        };
        seeds.write(
            &format!("{name}-renewal"),
            &call(1, renewal.encode_to_vec()),
        )?;

        let block = wire::ScripBlock {
            vendor: targets::VENDOR.to_owned(),
            series: targets::series_of(suite),
            expires_at: targets::SERIES_EXPIRES_AT,
            pieces: vec![wire::BlockPiece {
                scrip: Some(scrip_to_wire(&mint(suite, false, 5, b"")?)),
                customer_secret: vec![0x33; suite.mac_len()],
            }],
        };
        seeds.write(&format!("{name}-block"), &call(6, block.encode_to_vec()))?;
        let reply = wire::PeerExchangeReply {
            vendor_scrip: Some(scrip_to_wire(&expired)),
            customer_secret: vec![0x44; suite.mac_len()],
            price: 101,
        };
        seeds.write(
            &format!("{name}-peer-reply"),
            &call(7, reply.encode_to_vec()),
        )?;
    }
    let purchase = wire::PeerExchangeRequest {
        broker: "broker-a.example".to_owned(),
        request_id: vec![0x21; 16],
        vendor: targets::VENDOR.to_owned(),
        value: 100,
    };
    seeds.write("peer-purchase", &call(2, purchase.encode_to_vec()))?;
    let payout = wire::PayoutRequest {
        shard: 0,
        counterparty: targets::VENDOR.to_owned(),
        direction: wire::PayoutDirection::Pay as i32,
        amount: 40,
        reference: "payout-1".to_owned(),
    };
    seeds.write("payout", &call(3, payout.encode_to_vec()))?;
    let block_request = wire::SellScripBlockRequest {
        vendor: targets::VENDOR.to_owned(),
        broker: "broker-a.example".to_owned(),
        count: 100,
        value: 5,
    };
    seeds.write("block-request", &call(4, block_request.encode_to_vec()))?;
    let report = wire::RedemptionsRequest {
        vendor: targets::VENDOR.to_owned(),
        broker: "broker-a.example".to_owned(),
        series: vec![wire::SeriesQuery {
            series: 5,
            first_seq: 64,
        }],
    };
    seeds.write("redemptions-request", &call(5, report.encode_to_vec()))
}

fn sealed_seeds(vectors: &Value) -> Result<()> {
    let seeds = Seeds::new("sealed")?;
    for (i, case) in cases(vectors, "seal")?.iter().enumerate() {
        seeds.write(&format!("vector-{i}"), &hex_field(case, "sealed")?)?;
    }
    for &suite in Suite::ALL {
        for purpose in targets::PURPOSES {
            let nonce = vec![0x30; suite.nonce_len()];
            let sealed = suite.seal(&targets::SEAL_KEY, purpose, &nonce, b"article-1")?;
            seeds.write(&format!("{}-{purpose:?}", suite.name()), &sealed)?;
        }
    }
    Ok(())
}

fn config_seeds() -> Result<()> {
    let seeds = Seeds::new("config")?;
    seeds.write("vendor-toml", VENDOR_TOML.as_bytes())?;
    seeds.write("broker-toml", BROKER_TOML.as_bytes())?;
    seeds.write("vendor-gateway-toml", GATEWAY_TOML.as_bytes())?;
    let sharded = "node = \"vendor-2\"\n\
                   series_range = [1001, 2000]\n\
                   durability = \"relaxed\"\n\
                   checkpoint_interval_ms = 50\n\
                   [[peers]]\n\
                   node = \"vendor-1\"\n\
                   url = \"http://10.0.0.1:7200\"\n\
                   series_range = [1, 1000]\n";
    seeds.write("vendor-sharded", sharded.as_bytes())
}

fn wallet_seeds() -> Result<()> {
    let seeds = Seeds::new("wallet")?;
    let suite = Suite::ALL[0];
    let broker_scrip = mint(suite, true, 900, b"")?;
    let vendor_scrip = mint(suite, false, 120, b"region=eu")?;
    let hex_secret =
        |scrip: &Scrip, broker| secret_of(scrip, broker).map(|s| hex::encode(s.expose_bytes()));
    let wallet = json!({
        "version": 1,
        "brokers": [{
            "name": targets::BROKER,
            "url": "http://127.0.0.1:7100",
            "suite": suite.name(),
            "account_id": 42,
            "account_key": hex::encode(vec![0x16; suite.mac_len()]),
            "vendors": [targets::VENDOR],
        }],
        "broker_scrip": [{
            "broker": targets::BROKER,
            "scrip": hex::encode(broker_scrip.encode()),
            "secret": hex_secret(&broker_scrip, true)?,
            "in_flight": { "kind": "exchange", "vendor": targets::VENDOR, "value": 100,
                           "vendor_url": "http://127.0.0.1:7200" },
        }],
        "vendor_scrip": [{
            "vendor": targets::VENDOR,
            "vendor_url": "http://127.0.0.1:7200",
            "scrip": hex::encode(vendor_scrip.encode()),
            "secret": hex_secret(&vendor_scrip, false)?,
            "in_flight": { "kind": "pay", "variant": "secure", "item": "article-1",
                           "vendor_url": "http://127.0.0.1:7200" },
        }],
        "pending_buys": [{
            "broker": targets::BROKER,
            "amount": 500,
            "timestamp_ms": targets::NOW * 1000,
            "nonce": hex::encode([0xe0; NONCE_LEN]),
        }],
        "history": [
            { "time_ms": targets::NOW * 1000, "kind": "buy", "broker": targets::BROKER,
              "price": 500, "outcome": "ok" },
            { "time_ms": targets::NOW * 1000, "kind": "exchange", "broker": targets::BROKER,
              "vendor": targets::VENDOR, "price": 100, "change": 800,
              "outcome": { "refused": { "reason": "vendor_unavailable" } } },
            { "time_ms": targets::NOW * 1000, "kind": "pay", "vendor": targets::VENDOR,
              "item": "article-1", "url": "http://127.0.0.1:7200", "price": 10,
              "outcome": "interrupted" },
        ],
    });
    seeds.write("full", &serde_json::to_vec_pretty(&wallet)?)?;
    seeds.write("empty", br#"{ "version": 1 }"#)
}

fn payment_header_seeds() -> Result<()> {
    let seeds = Seeds::new("payment_header")?;
    for &suite in Suite::ALL {
        let scrip = mint(suite, false, 100, b"")?;
        let secret = secret_of(&scrip, false)?;
        let stamp = request_stamp(&secret, &scrip, targets::WEB_REQUEST.as_bytes());
        let secure = format!(
            "millicent-scrip: {}\nmillicent-variant: secure\nmillicent-request-stamp: {}\n",
            millicent_core::web::encode_scrip(&scrip),
            millicent_core::web::encode_mac(&stamp)
        );
        seeds.write(&format!("{}-secure", suite.name()), secure.as_bytes())?;
        let clear = format!(
            "millicent-scrip: {}\nmillicent-variant: clear\n",
            millicent_core::web::encode_scrip(&scrip)
        );
        seeds.write(&format!("{}-clear", suite.name()), clear.as_bytes())?;
    }
    Ok(())
}

fn offer_seeds() -> Result<()> {
    let seeds = Seeds::new("offer")?;
    let offer = json!({
        "millicent": 1,
        "vendor": targets::VENDOR,
        "price": "10",
        "request": targets::WEB_REQUEST,
        "variants": ["secure", "clear"],
        "suites": ["modern", "classic"],
        "brokers": [{ "name": targets::BROKER, "url": "http://127.0.0.1:7100" }],
        "retry_window_secs": 600,
        "refused": { "reason": "double_spend", "message": "scrip 5:1 has already been spent" },
    });
    seeds.write("refused", &serde_json::to_vec(&offer)?)?;
    let mut plain = offer;
    if let Some(fields) = plain.as_object_mut() {
        fields.remove("refused");
    }
    seeds.write("plain", &serde_json::to_vec(&plain)?)
}

fn main() -> Result<()> {
    let vectors: Value = serde_json::from_str(VECTORS)?;
    scrip_seeds(&vectors)?;
    payment_seeds(&vectors)?;
    licence_request_seeds()?;
    broker_call_seeds()?;
    settlement_call_seeds()?;
    sealed_seeds(&vectors)?;
    config_seeds()?;
    wallet_seeds()?;
    payment_header_seeds()?;
    offer_seeds()?;
    Ok(())
}
