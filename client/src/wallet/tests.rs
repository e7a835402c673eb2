use std::fs;

use millicent_core::scrip::{CustId, Properties, ScripBody};
use millicent_core::{CustomerKey, KeyRing, MasterSecret, SeriesKey};
use tempfile::TempDir;
use tonic::metadata::{MetadataMap, MetadataValue};

use super::*;
use crate::protocol::ItemPrice;

const NOW_S: u64 = 1_800_000_000;
const SECRET_BYTE: u8 = 0x5c;
const KEY_BYTE: u8 = 0xa7;

fn name(text: &str) -> VendorName {
    VendorName::new(text).unwrap()
}

/// Scrip of `vendor` worth `value` with sequence number `seq`, minted by a
/// throwaway key ring, and a customer secret for it.
fn scrip(vendor: &str, value: u64, seq: u32, expires_at: u64) -> HeldScrip {
    let mut ring = KeyRing::new(name(vendor));
    ring.add_series(SeriesKey {
        series: 1,
        suite: Suite::Classic,
        expires_at: u64::MAX,
        secret: MasterSecret::new(Suite::Classic, [1; 32]),
    });
    ring.add_customer_key(CustomerKey {
        selector: 0,
        suite: Suite::Classic,
        secret: MasterSecret::new(Suite::Classic, [2; 32]),
    });
    let minted = ring
        .mint(ScripBody {
            suite: Suite::Classic,
            vendor: name(vendor),
            value: Amount::new(value),
            id: ScripId::new(1, seq),
            cust_id: CustId::new(0, 9).unwrap(),
            expires_at,
            properties: Properties::default(),
        })
        .unwrap();
    let secret = CustomerSecret::from_slice(Suite::Classic, &[SECRET_BYTE; 16]).unwrap();
    HeldScrip::new(minted, secret, None)
}

fn new_wallet() -> (TempDir, Wallet) {
    let dir = tempfile::tempdir().unwrap();
    let wallet = Wallet::create(dir.path().join("wallet.json")).unwrap();
    (dir, wallet)
}

/// A wallet holding one of everything the file format has.
fn full_wallet() -> (TempDir, Wallet) {
    let (dir, mut wallet) = new_wallet();
    wallet.brokers.push(BrokerAccount {
        name: name("broker.example"),
        url: "http://127.0.0.1:7001".into(),
        suite: Suite::Classic,
        account_id: 41,
        key: AccountKey::from_bytes(&[KEY_BYTE; 16]),
        vendors: vec!["news.example".into()],
    });
    let mut exchanging = scrip("broker.example", 500, 1, NOW_S + 60);
    exchanging.in_flight = Some(InFlight::Exchange {
        vendor: name("news.example"),
        value: Amount::new(100),
        vendor_url: Some("http://127.0.0.1:7002".into()),
    });
    wallet.broker_scrip.push(exchanging);
    wallet
        .broker_scrip
        .push(scrip("broker.example", 300, 2, NOW_S + 60));
    let mut paying = scrip("news.example", 100, 3, NOW_S + 60);
    paying.vendor_url = Some("http://127.0.0.1:7002".into());
    paying.in_flight = Some(InFlight::Pay {
        variant: Variant::Private,
        item: "article-1".into(),
        vendor_url: "http://127.0.0.1:7002".into(),
    });
    wallet.vendor_scrip.push(paying);
    wallet.pending_buys.push(PendingBuy {
        broker: name("broker.example"),
        amount: Amount::new(250),
        call: AccountCallId {
            timestamp_ms: 1_800_000_000_123,
            nonce: [7; 16],
        },
    });
    wallet.history.push(HistoryEntry {
        time_ms: 1_800_000_000_456,
        kind: HistoryKind::Pay,
        broker: None,
        vendor: Some("news.example".into()),
        item: Some("article-0".into()),
        price: Some(Amount::new(30)),
        change: Some(Amount::new(70)),
        outcome: Outcome::Refused {
            reason: "double_spend".into(),
        },
    });
    wallet.save().unwrap();
    (dir, wallet)
}

fn refusal(reason: &'static str) -> ClientError {
    let mut metadata = MetadataMap::new();
    metadata.insert(
        crate::REASON_METADATA_KEY,
        MetadataValue::from_static(reason),
    );
    tonic::Status::with_metadata(tonic::Code::FailedPrecondition, "no", metadata).into()
}

fn keys(held: &[HeldScrip]) -> Vec<(String, u64)> {
    held.iter()
        .map(|h| (h.scrip.body().vendor.to_string(), h.scrip.value().units()))
        .collect()
}

#[test]
fn a_new_wallet_is_empty_and_reopens() {
    let (_dir, wallet) = new_wallet();
    let reopened = Wallet::open(wallet.path()).unwrap();
    assert!(reopened.brokers().is_empty());
    assert!(reopened.history().is_empty());
    assert!(!reopened.has_unsettled_calls());
}

#[test]
fn create_refuses_to_overwrite_a_wallet() {
    let (_dir, wallet) = full_wallet();
    let before = fs::read(wallet.path()).unwrap();
    assert!(matches!(
        Wallet::create(wallet.path()),
        Err(ClientError::WalletExists { .. })
    ));
    assert_eq!(fs::read(wallet.path()).unwrap(), before);
}

#[test]
fn everything_survives_a_save_and_open() {
    let (_dir, wallet) = full_wallet();
    let reopened = Wallet::open(wallet.path()).unwrap();

    let broker = &reopened.brokers()[0];
    assert_eq!(broker.name, name("broker.example"));
    assert_eq!(broker.url, "http://127.0.0.1:7001");
    assert_eq!(broker.account_id, 41);
    assert_eq!(broker.key().expose_bytes(), [KEY_BYTE; 16]);
    assert!(broker.sells_for(&name("news.example")));

    for (old, new) in wallet.broker_scrip.iter().zip(&reopened.broker_scrip) {
        assert_eq!(old.scrip(), new.scrip());
        assert_eq!(old.secret(), new.secret());
        assert_eq!(old.in_flight(), new.in_flight());
    }
    assert_eq!(reopened.broker_scrip.len(), 2);
    let paying = &reopened.vendor_scrip()[0];
    assert_eq!(paying.scrip(), wallet.vendor_scrip[0].scrip());
    assert_eq!(paying.vendor_url(), Some("http://127.0.0.1:7002"));
    assert_eq!(paying.in_flight(), wallet.vendor_scrip[0].in_flight());
    assert_eq!(reopened.pending_buys(), wallet.pending_buys());
    assert_eq!(reopened.history(), wallet.history());
    assert!(reopened.has_unsettled_calls());
}

#[test]
fn debug_output_shows_no_secret() {
    let (_dir, wallet) = full_wallet();
    let text = format!("{wallet:?}");
    assert!(text.contains("CustomerSecret(..)"));
    assert!(text.contains("AccountKey(..)"));
    for secret in [SECRET_BYTE, KEY_BYTE] {
        assert!(!text.contains(&hex::encode([secret; 4])));
        assert!(!text.contains(&format!("{secret}, {secret}")));
        assert!(!text.contains(&format!("0x{secret:x}")));
    }
}

#[cfg(unix)]
#[test]
fn the_file_is_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;

    let (_dir, wallet) = full_wallet();
    let mode = fs::metadata(wallet.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_damaged_file_is_refused_whole() {
    let (_dir, wallet) = full_wallet();
    let text = fs::read_to_string(wallet.path()).unwrap();
    let damaged = [
        "not json".to_owned(),
        text.replace("\"version\": 1", "\"version\": 2"),
        text.replace(
            "\"broker\": \"broker.example\"",
            "\"broker\": \"other.example\"",
        ),
        text.replace("\"suite\": \"classic\"", "\"suite\": \"rot13\""),
        text.replace("\"variant\": \"private\"", "\"variant\": \"loud\""),
    ];
    for contents in damaged {
        fs::write(wallet.path(), &contents).unwrap();
        match Wallet::open(wallet.path()) {
            Err(ClientError::WalletCorrupt { detail, .. }) => {
                assert!(!detail.contains(&hex::encode([SECRET_BYTE; 4])), "{detail}");
            }
            other => panic!("{contents:.40}: {other:?}"),
        }
    }
}

#[test]
fn a_missing_wallet_says_how_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let error = Wallet::open(dir.path().join("none.json")).unwrap_err();
    assert!(error.to_string().contains("millicent create"), "{error}");
}

#[test]
fn the_smallest_sufficient_spendable_vendor_scrip_is_picked() {
    let (_dir, mut wallet) = new_wallet();
    let mut in_flight = scrip("news.example", 40, 1, NOW_S + 60);
    in_flight.in_flight = Some(InFlight::Pay {
        variant: Variant::Secure,
        item: "a".into(),
        vendor_url: "http://v".into(),
    });
    wallet.vendor_scrip.extend([
        in_flight,
        scrip("news.example", 45, 2, NOW_S),
        scrip("news.example", 100, 3, NOW_S + 60),
        scrip("news.example", 50, 4, NOW_S + 60),
        scrip("news.example", 20, 5, NOW_S + 60),
        scrip("other.example", 35, 6, NOW_S + 60),
    ]);
    let picked = wallet.pick_vendor_scrip(&name("news.example"), Amount::new(30), NOW_S);
    assert_eq!(picked.map(|key| key.id), Some(ScripId::new(1, 4)));
    let none = wallet.pick_vendor_scrip(&name("news.example"), Amount::new(101), NOW_S);
    assert_eq!(none, None);
}

#[test]
fn a_refusal_drops_scrip_that_can_never_be_spent_and_releases_the_rest() {
    let (_dir, mut wallet) = new_wallet();
    for seq in 1..=3 {
        let mut held = scrip("news.example", 10 * u64::from(seq), seq, NOW_S + 60);
        held.in_flight = Some(InFlight::Pay {
            variant: Variant::Secure,
            item: "a".into(),
            vendor_url: "http://v".into(),
        });
        wallet.vendor_scrip.push(held);
    }
    let key = |seq| ScripKey {
        vendor: name("news.example"),
        id: ScripId::new(1, seq),
    };

    let mut entry = HistoryEntry::new(HistoryKind::Pay);
    wallet
        .record_failure(Purse::Vendor, &key(1), &mut entry, &refusal("double_spend"))
        .unwrap();
    assert_eq!(
        entry.outcome,
        Outcome::Refused {
            reason: "double_spend".into()
        }
    );

    let mut entry = HistoryEntry::new(HistoryKind::Pay);
    wallet
        .record_failure(
            Purse::Vendor,
            &key(2),
            &mut entry,
            &refusal("insufficient_value"),
        )
        .unwrap();

    let mut entry = HistoryEntry::new(HistoryKind::Pay);
    let lost = ClientError::from(tonic::Status::unavailable("connection reset"));
    wallet
        .record_failure(Purse::Vendor, &key(3), &mut entry, &lost)
        .unwrap();
    assert_eq!(entry.outcome, Outcome::Interrupted);

    let reopened = Wallet::open(wallet.path()).unwrap();
    assert_eq!(
        keys(reopened.vendor_scrip()),
        vec![("news.example".into(), 20), ("news.example".into(), 30)]
    );
    assert_eq!(reopened.vendor_scrip()[0].in_flight(), None);
    assert!(reopened.vendor_scrip()[1].in_flight().is_some());
    assert_eq!(
        reopened.history().len(),
        2,
        "an interrupted call is not final"
    );
}

fn offer(vendor: &str, items: &[(&str, u64)], variants: &[Variant]) -> VendorOfferSummary {
    VendorOfferSummary {
        vendor: name(vendor),
        items: items
            .iter()
            .map(|(item, price)| ItemPrice {
                name: (*item).into(),
                price: Amount::new(*price),
            })
            .collect(),
        variants: variants.to_vec(),
        suites: vec![Suite::Classic],
    }
}

fn order(item: &str, vendor: Option<&str>, variant: Option<Variant>) -> PayOrder {
    PayOrder {
        vendor_url: "http://v".into(),
        vendor: vendor.map(name),
        item: item.into(),
        variant,
        top_up: Amount::ZERO,
    }
}

#[test]
fn the_offer_is_the_first_vendor_selling_the_item_unless_one_is_named() {
    let offers = [
        offer("a.example", &[("x", 5)], &[]),
        offer("b.example", &[("y", 7), ("x", 6)], &[Variant::Clear]),
    ];
    let chosen = choose_offer(&offers, &order("x", None, None), "http://v").unwrap();
    assert_eq!(chosen, (name("a.example"), Amount::new(5), Variant::Secure));
    let chosen = choose_offer(&offers, &order("x", Some("b.example"), None), "http://v").unwrap();
    assert_eq!(chosen, (name("b.example"), Amount::new(6), Variant::Clear));

    assert!(matches!(
        choose_offer(&offers, &order("z", None, None), "http://v"),
        Err(ClientError::NoSuchItem { .. })
    ));
    assert!(matches!(
        choose_offer(&offers, &order("y", Some("a.example"), None), "http://v"),
        Err(ClientError::NoSuchItem { .. })
    ));
    assert!(matches!(
        choose_offer(
            &offers,
            &order("y", None, Some(Variant::Private)),
            "http://v"
        ),
        Err(ClientError::VariantNotAccepted { .. })
    ));
}

#[test]
fn failures_are_recorded_with_a_snake_case_reason() {
    assert_eq!(
        failure_outcome(&refusal("expired")),
        Outcome::Refused {
            reason: "expired".into()
        }
    );
    assert_eq!(
        failure_outcome(&ClientError::Protocol(millicent_core::Error::BadReplyStamp)),
        Outcome::Failed {
            reason: "bad_reply_stamp".into()
        }
    );
    let status = tonic::Status::invalid_argument("bad");
    assert_eq!(
        failure_outcome(&ClientError::from(status)),
        Outcome::Failed {
            reason: "invalid_argument".into()
        }
    );
}

#[test]
fn history_entries_have_a_stable_json_form() {
    let entry = HistoryEntry {
        time_ms: 5,
        kind: HistoryKind::Exchange,
        broker: Some("b".into()),
        vendor: Some("v".into()),
        item: None,
        price: Some(Amount::new(12)),
        change: None,
        outcome: Outcome::Refused {
            reason: "insufficient_value".into(),
        },
    };
    let json = serde_json::to_string(&entry).unwrap();
    assert_eq!(
        json,
        r#"{"time_ms":5,"kind":"exchange","broker":"b","vendor":"v","price":12,"change":null,"outcome":{"refused":{"reason":"insufficient_value"}}}"#
    );
    assert_eq!(serde_json::from_str::<HistoryEntry>(&json).unwrap(), entry);
}
