//! Fuzz targets: one function for every decoder of outside input.
//!
//! Each target is a `pub fn NAME(data: &[u8])` that hands arbitrary bytes to
//! the code the services and the wallet really run on that input and, where
//! the input is accepted, checks something that must then hold (an encoding
//! that round-trips, a reply the customer accepts, a limit that was
//! enforced). A refusal is a typed error and is fine; a panic is a bug.
//!
//! The same functions run in two places:
//!
//! - `fuzz/fuzz_targets/NAME.rs`, one thin cargo-fuzz wrapper each, which
//!   `scripts/fuzz` runs with coverage guidance;
//! - `tests/corpus.rs`, which replays every file of `fuzz/corpus/NAME/` and
//!   `fuzz/regressions/NAME/` through them on every `cargo test`, with no
//!   fuzzer installed.
//!
//! Keys and the clock are fixed (those of `docs/test-vectors/classic.json`,
//! with one series and one customer selector per suite), so that a valid
//! payment in the corpus stays valid and the fuzzer can explore what lies
//! behind the certificate and stamp checks.
//!
//! # Not covered
//!
//! - Replies the client receives from brokers and vendor nodes: the client
//!   checks them inside its network calls, which take no bytes alone.
//! - The services' own stores: they are written only by the service itself.

use std::path::Path;
use std::sync::LazyLock;

use millicent_core::exchange::ExchangeRequest;
use millicent_core::payment::{ChangeSlot, MAX_REQUEST_LEN};
use millicent_core::scrip::MAX_BODY_LEN;
use millicent_core::{
    Amount, CustomerKey, CustomerSecret, Error, KeyRing, MasterSecret, Scrip, ScripBody, ScripId,
    SealPurpose, SeriesKey, Suite, VendorName,
};
use millicent_proto as wire;
use prost::Message;

/// A fuzz target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory and cargo-fuzz target.
pub const TARGETS: &[(&str, Target)] = &[
    ("scrip", scrip),
    ("payment", payment),
    ("licence_request", licence_request),
    ("broker_calls", broker_calls),
    ("settlement_calls", settlement_calls),
    ("sealed", sealed),
    ("config", config),
    ("wallet", wallet),
    ("payment_header", payment_header),
    ("offer", offer),
];

/// The web request the payment header target pays for.
pub const WEB_REQUEST: &str = "GET news.example/articles/1";

/// The vendor of the fixed vendor key ring.
pub const VENDOR: &str = "news.example";
/// The broker of the fixed broker key ring.
pub const BROKER: &str = "broker.local";
/// The time every payment is checked at (Unix seconds).
pub const NOW: u64 = 1_899_990_000;
/// When the fixed series expire (Unix seconds).
pub const SERIES_EXPIRES_AT: u64 = 1_900_000_000;
/// The key sealed data is opened with.
pub const SEAL_KEY: [u8; 16] = [
    0x70, 0x77, 0x7e, 0x85, 0x8c, 0x93, 0x9a, 0xa1, 0xa8, 0xaf, 0xb6, 0xbd, 0xc4, 0xcb, 0xd2, 0xd9,
];
/// What a vendor sells in the payment target.
pub const GOODS: &[u8] = b"The text of article 1";

/// Every sealing purpose, for the sealed target.
pub const PURPOSES: [SealPurpose; 4] = [
    SealPurpose::CustomerSecret,
    SealPurpose::Request,
    SealPurpose::Goods,
    SealPurpose::BrokerScripSecret,
];

/// Fails to compile when a purpose is added, so that [`PURPOSES`] is kept
/// complete.
const fn _every_purpose_is_listed(purpose: SealPurpose) {
    match purpose {
        SealPurpose::CustomerSecret
        | SealPurpose::Request
        | SealPurpose::Goods
        | SealPurpose::BrokerScripSecret => {}
    }
}

/// The series of scrip of `suite` in the fixed key rings: 5 for the first
/// suite, as in the test vectors, then one more for each further suite.
pub fn series_of(suite: Suite) -> u32 {
    5 + suite_index(suite) as u32
}

/// The customer selector of `suite` in the fixed key rings: 3 for the first
/// suite, as in the test vectors, then one more for each further suite.
pub fn selector_of(suite: Suite) -> u16 {
    3 + suite_index(suite) as u16
}

fn suite_index(suite: Suite) -> usize {
    Suite::ALL
        .iter()
        .position(|known| *known == suite)
        .unwrap_or(Suite::ALL.len())
}

/// The master secret the test vectors derive from `seed`.
fn master_secret(suite: Suite, seed: u8) -> MasterSecret {
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = seed.wrapping_add(i as u8 * 7);
    }
    MasterSecret::new(suite, bytes)
}

/// A key ring of `name` holding, for every suite, one series and one
/// customer selector with the master secrets of the test vectors.
fn key_ring(name: &str) -> KeyRing {
    let Ok(name) = VendorName::new(name) else {
        unreachable!("the fixed names are valid")
    };
    let mut ring = KeyRing::new(name);
    for &suite in Suite::ALL {
        ring.add_series(SeriesKey {
            series: series_of(suite),
            suite,
            expires_at: SERIES_EXPIRES_AT,
            secret: master_secret(suite, 0x10),
        });
        ring.add_customer_key(CustomerKey {
            selector: selector_of(suite),
            suite,
            secret: master_secret(suite, 0x40),
        });
    }
    ring
}

static VENDOR_KEYS: LazyLock<KeyRing> = LazyLock::new(|| key_ring(VENDOR));
static BROKER_KEYS: LazyLock<KeyRing> = LazyLock::new(|| key_ring(BROKER));

/// The fixed key ring of the vendor [`VENDOR`].
pub fn vendor_keys() -> &'static KeyRing {
    &VENDOR_KEYS
}

/// The fixed key ring of the broker [`BROKER`], for its broker scrip.
pub fn broker_keys() -> &'static KeyRing {
    &BROKER_KEYS
}

/// Scrip bodies and whole scrip (body then certificate), as stored in
/// wallets and carried in exchange goods: both decoders are strict, so what
/// decodes encodes to the same bytes.
pub fn scrip(data: &[u8]) {
    if let Ok(body) = ScripBody::decode(data) {
        assert!(data.len() <= MAX_BODY_LEN);
        assert_eq!(body.encoded_len(), data.len());
        assert_eq!(body.encode(), data, "a scrip body has one encoding");
    }
    if let Ok(scrip) = Scrip::decode_concatenated(data) {
        assert_eq!(scrip.encode(), data, "scrip has one encoding");
        let again = Scrip::decode(scrip.encoded_body(), scrip.certificate().as_bytes());
        assert_eq!(again.as_ref(), Ok(&scrip));
    }
}

/// A `Pay` request as the vendor node converts it, then verified against
/// the fixed vendor key ring. A payment that verifies must get a reply that
/// its customer accepts.
pub fn payment(data: &[u8]) {
    let Ok(request) = wire::PayRequest::decode(data) else {
        return;
    };
    let Ok(payment) = millicent_vendor::input::pay_request(request.clone()) else {
        return;
    };
    let Some(wire_scrip) = &request.scrip else {
        panic!("a payment without scrip was accepted");
    };
    assert_eq!(payment.scrip.encoded_body(), wire_scrip.body);
    assert_eq!(
        payment.scrip.certificate().as_bytes(),
        wire_scrip.certificate
    );
    assert!(payment.request.len() <= MAX_REQUEST_LEN);

    let keys = vendor_keys();
    let Ok(verified) = payment.clone().verify(keys, NOW) else {
        return;
    };
    assert_eq!(verified.scrip(), &payment.scrip);
    let suite = payment.scrip.suite();
    let change = ChangeSlot {
        id: ScripId::new(payment.scrip.id().series(), u32::MAX),
        expires_at: payment.scrip.body().expires_at,
    };
    let nonce = vec![0x5a; suite.nonce_len()];
    let reply = match verified.reply(keys, Amount::new(1), Some(change), GOODS, &nonce) {
        Ok(reply) => reply,
        Err(Error::InsufficientValue { .. }) => return,
        Err(error) => panic!("a verified payment got no reply: {error}"),
    };
    // The clear variant has no customer secret, and opening its reply needs none.
    let secret = match verified.customer_secret() {
        Some(secret) => secret.clone(),
        None => unused_secret(suite),
    };
    assert_eq!(reply.open(&payment, &secret).as_deref(), Ok(GOODS));
}

fn unused_secret(suite: Suite) -> CustomerSecret {
    match CustomerSecret::from_slice(suite, &vec![0; suite.mac_len()]) {
        Ok(secret) => secret,
        Err(error) => unreachable!("a MAC's length is a customer secret's: {error}"),
    }
}

/// A `GrantLicence` request as the vendor node checks it.
pub fn licence_request(data: &[u8]) {
    let Ok(request) = wire::GrantLicenceRequest::decode(data) else {
        return;
    };
    if let Ok(vendor) = millicent_vendor::input::licence_request(request.clone()) {
        assert_eq!(vendor.as_str(), request.vendor);
        assert!(VendorName::new(&request.broker).is_ok());
    }
}

/// Calls to the broker, and the licences it receives from vendor nodes, as
/// the broker converts them. The first byte chooses the message; the rest
/// is its protobuf encoding.
pub fn broker_calls(data: &[u8]) {
    let Some((&kind, message)) = data.split_first() else {
        return;
    };
    match kind % 5 {
        0 => exchange_call(message),
        1 => buy_broker_scrip_call(message),
        2 => get_account_call(message),
        3 => credit_call(message),
        _ => licence(message),
    }
}

fn exchange_call(message: &[u8]) {
    let Ok(request) = wire::ExchangeRequest::decode(message) else {
        return;
    };
    // The plaintext request is decoded only once the stamp over it has been
    // checked; fuzz its decoder directly too, as a forger cannot reach it.
    exchange_plaintext(&request.request);
    let Ok(payment) = millicent_broker::input::exchange(request) else {
        return;
    };
    assert!(payment.request_stamp.is_some(), "an exchange is stamped");
    if let Ok(verified) = payment.verify(broker_keys(), NOW) {
        exchange_plaintext(verified.request());
    }
}

fn exchange_plaintext(request: &[u8]) {
    if let Ok(wanted) = millicent_broker::input::exchange_plaintext(request) {
        assert!(!wanted.value.is_zero());
        assert_eq!(
            wanted.encode(),
            request,
            "an exchange request has one encoding"
        );
        assert_eq!(ExchangeRequest::decode(request).as_ref(), Ok(&wanted));
    }
}

fn buy_broker_scrip_call(message: &[u8]) {
    let Ok(request) = wire::BuyBrokerScripRequest::decode(message) else {
        return;
    };
    for &suite in Suite::ALL {
        if millicent_broker::input::buy_broker_scrip(request.clone(), suite).is_ok() {
            assert!(request.amount >= 1);
            assert_auth_checked(request.auth.as_ref(), suite);
        }
    }
}

fn get_account_call(message: &[u8]) {
    let Ok(request) = wire::GetAccountRequest::decode(message) else {
        return;
    };
    for &suite in Suite::ALL {
        if millicent_broker::input::get_account(request.clone(), suite).is_ok() {
            assert_auth_checked(request.auth.as_ref(), suite);
        }
    }
}

fn assert_auth_checked(auth: Option<&wire::AccountAuth>, suite: Suite) {
    let Some(auth) = auth else {
        panic!("an account call without auth was accepted");
    };
    assert_eq!(auth.nonce.len(), millicent_core::account::NONCE_LEN);
    assert_eq!(auth.mac.len(), suite.mac_len());
}

fn credit_call(message: &[u8]) {
    let Ok(request) = wire::CreditRequest::decode(message) else {
        return;
    };
    if millicent_broker::input::credit(request.clone()).is_ok() {
        assert!(request.amount >= 1);
        assert!(!request.reference.is_empty());
    }
}

fn licence(message: &[u8]) {
    let Ok(licence) = wire::Licence::decode(message) else {
        return;
    };
    let Ok(vendor) = VendorName::new(VENDOR) else {
        unreachable!("the fixed names are valid")
    };
    if millicent_broker::input::licence(licence.clone(), &vendor, NOW).is_ok() {
        assert_eq!(licence.vendor, VENDOR);
        assert!(licence.expires_at > NOW);
        assert_eq!(licence.master_scrip_secret.len(), 32);
        assert_eq!(licence.master_customer_secret.len(), 32);
    }
}

/// The calls of refunds, renewals, the broker network and settlement, at
/// the broker and at the vendor node, and what the broker receives from
/// vendor nodes and other brokers for them. The first byte chooses the
/// message; the rest is its protobuf encoding.
pub fn settlement_calls(data: &[u8]) {
    let Some((&kind, message)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => refund_call(message),
        1 => renewal_call(message),
        2 => peer_purchase_call(message),
        3 => payout_call(message),
        4 => block_request_call(message),
        5 => redemptions_request_call(message),
        6 => scrip_block(message),
        _ => peer_reply(message),
    }
}

fn refund_call(message: &[u8]) {
    let Ok(request) = wire::RefundRequest::decode(message) else {
        return;
    };
    refund_plaintext(&request.request);
    let Ok(payment) = millicent_broker::input::refund(request) else {
        return;
    };
    assert!(payment.request_stamp.is_some(), "a refund is stamped");
    if let Ok(verified) = payment.verify(broker_keys(), NOW) {
        refund_plaintext(verified.request());
    }
}

fn refund_plaintext(request: &[u8]) {
    if let Ok(wanted) = millicent_broker::input::refund_plaintext(request) {
        assert_eq!(
            wanted.encode(),
            request,
            "a refund request has one encoding"
        );
    }
}

fn renewal_call(message: &[u8]) {
    let Ok(request) = wire::RenewRequest::decode(message) else {
        return;
    };
    if let Ok((shard, scrip)) = millicent_broker::input::renewal(request.clone()) {
        assert_eq!(u32::from(shard), request.shard);
        assert_eq!(request.request_stamp.len(), scrip.suite().mac_len());
    }
}

fn peer_purchase_call(message: &[u8]) {
    let Ok(request) = wire::PeerExchangeRequest::decode(message) else {
        return;
    };
    if let Ok((id, vendor, value)) = millicent_broker::input::peer_purchase(request.clone()) {
        assert_eq!(id.as_slice(), request.request_id);
        assert_eq!(vendor.as_str(), request.vendor);
        assert!(!value.is_zero());
    }
}

fn payout_call(message: &[u8]) {
    let Ok(request) = wire::PayoutRequest::decode(message) else {
        return;
    };
    if millicent_broker::input::payout(request.clone()).is_ok() {
        assert!(request.shard <= 255 && request.amount >= 1);
        assert!(!request.reference.is_empty());
    }
}

fn block_request_call(message: &[u8]) {
    let Ok(request) = wire::SellScripBlockRequest::decode(message) else {
        return;
    };
    if let Ok((_, count, value)) = millicent_vendor::input::block_request(request) {
        assert!((1..=4096).contains(&count) && !value.is_zero());
    }
}

fn redemptions_request_call(message: &[u8]) {
    let Ok(request) = wire::RedemptionsRequest::decode(message) else {
        return;
    };
    if let Ok(series) = millicent_vendor::input::redemptions_request(request) {
        assert!(series.len() <= 64);
        assert!(series.iter().all(|(_, first)| first % 64 == 0));
    }
}

fn scrip_block(message: &[u8]) {
    let Ok(block) = wire::ScripBlock::decode(message) else {
        return;
    };
    let Ok(vendor) = VendorName::new(VENDOR) else {
        unreachable!("the fixed names are valid")
    };
    let count = block.pieces.len() as u32;
    if let Ok(pieces) =
        millicent_broker::input::scrip_block(&block, &vendor, Amount::new(5), count, NOW)
    {
        assert!(pieces.iter().all(|piece| piece.value() == Amount::new(5)
            && piece.id().series() == block.series
            && piece.body().expires_at > NOW));
    }
}

fn peer_reply(message: &[u8]) {
    let Ok(reply) = wire::PeerExchangeReply::decode(message) else {
        return;
    };
    let Ok(vendor) = VendorName::new(VENDOR) else {
        unreachable!("the fixed names are valid")
    };
    let (value, max_fee) = (Amount::new(100), Amount::new(2));
    if let Ok((scrip, price)) =
        millicent_broker::input::peer_reply(reply, &vendor, value, max_fee, NOW)
    {
        assert_eq!(scrip.value(), value);
        assert!(price >= value && price.units() <= 102);
    }
}

/// Sealed data (private requests and goods, handed-out customer secrets)
/// opened under a fixed key by every suite for every purpose. What opens
/// must be exactly what sealing its plaintext with its nonce produces; and
/// the input, read as a nonce and a plaintext, must seal to something that
/// opens for its purpose and no other.
pub fn sealed(data: &[u8]) {
    for &suite in Suite::ALL {
        for purpose in PURPOSES {
            if let Ok(plaintext) = suite.open(&SEAL_KEY, purpose, data) {
                let nonce = data.get(..suite.nonce_len());
                let resealed = nonce.map(|nonce| suite.seal(&SEAL_KEY, purpose, nonce, &plaintext));
                assert_eq!(resealed, Some(Ok(data.to_vec())), "{suite:?} {purpose:?}");
            }
        }

        let Some((nonce, plaintext)) = data.split_at_checked(suite.nonce_len()) else {
            continue;
        };
        for purpose in PURPOSES {
            let Ok(sealed) = suite.seal(&SEAL_KEY, purpose, nonce, plaintext) else {
                panic!("{suite:?} refused to seal {} bytes", plaintext.len());
            };
            assert_eq!(
                sealed.len(),
                plaintext.len() + suite.seal_overhead(plaintext.len())
            );
            for other in PURPOSES {
                let opened = suite.open(&SEAL_KEY, other, &sealed);
                if other == purpose {
                    assert_eq!(opened.as_deref(), Ok(plaintext));
                } else {
                    assert!(opened.is_err(), "{purpose:?} opened as {other:?}");
                }
            }
        }
    }
}

/// Vendor-node and broker configuration files: parsed, then checked as the
/// services check them at start. Bytes that are not UTF-8 are no file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match millicent_vendor::VendorConfig::from_toml(text) {
        Ok(config) => {
            if let Err(error) = config.check() {
                assert!(!error.to_string().is_empty());
            }
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
    match millicent_broker::BrokerConfig::from_toml(text) {
        Ok(config) => {
            if let Err(error) = config.check() {
                assert!(!error.to_string().is_empty());
            }
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
}

/// The wallet file, read as the client opens a wallet. A file that opens
/// must save as a file that opens and saves unchanged.
pub fn wallet(data: &[u8]) {
    let path = Path::new("fuzz.wallet");
    let Ok(saved) = millicent_client::Wallet::reencode_file(path, data) else {
        return;
    };
    match millicent_client::Wallet::reencode_file(path, &saved) {
        Ok(again) => assert_eq!(*again, *saved, "a saved wallet saves unchanged"),
        Err(error) => panic!("a saved wallet does not open: {error}"),
    }
}

/// The payment headers of a request to the vendor node's HTTP gateway, one
/// `name: value` line each, as the gateway turns them into a payment for
/// [`WEB_REQUEST`]. An accepted payment carries exactly that request and
/// the scrip and stamp the headers hold, in their one encoding.
pub fn payment_header(data: &[u8]) {
    let mut headers = hyper::HeaderMap::new();
    for line in data.split(|byte| *byte == b'\n') {
        let Some(colon) = line.iter().position(|byte| *byte == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name),
            hyper::header::HeaderValue::from_bytes(value.trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let Ok(vendor) = VendorName::new(VENDOR) else {
        unreachable!("the fixed names are valid")
    };
    let Some(Ok(payment)) =
        millicent_vendor::input::payment_headers(&headers, &vendor, WEB_REQUEST)
    else {
        return;
    };
    assert_eq!(payment.request, WEB_REQUEST.as_bytes());
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(
        header(millicent_core::web::SCRIP_HEADER),
        Some(millicent_core::web::encode_scrip(&payment.scrip).as_str()),
        "scrip in a header has one encoding"
    );
    let stamp = payment
        .request_stamp
        .as_ref()
        .map(millicent_core::web::encode_mac);
    assert_eq!(
        header(millicent_core::web::REQUEST_STAMP_HEADER),
        stamp.as_deref()
    );
    if let Ok(verified) = payment.verify(vendor_keys(), NOW) {
        assert_eq!(verified.request(), WEB_REQUEST.as_bytes());
    }
}

/// The offer of a `402 Payment Required` answer, as the wallet reads it.
/// An offer that decodes encodes to an offer that decodes to the same.
pub fn offer(data: &[u8]) {
    let Ok(offer) = millicent_core::web::Offer::decode(data) else {
        return;
    };
    assert!(offer.price > Amount::ZERO);
    assert!(!offer.variants.is_empty());
    let again = millicent_core::web::Offer::decode(&offer.encode());
    assert_eq!(again.as_ref(), Ok(&offer), "an offer reads back as written");
}
