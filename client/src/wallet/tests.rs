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
        url: "http://127.0.0.1:7100".into(),
        suite: Suite::Classic,
        account_id: 41,
        key: AccountKey::from_slice(Suite::Classic, &[KEY_BYTE; 16]).unwrap(),
        vendors: vec!["news.example".into()],
    });
    let mut exchanging = scrip("broker.example", 500, 1, NOW_S + 60);
    exchanging.in_flight = Some(InFlight::Exchange {
        vendor: name("news.example"),
        value: Amount::new(100),
        vendor_url: Some("http://127.0.0.1:7200".into()),
    });
    wallet.broker_scrip.push(exchanging);
    wallet
        .broker_scrip
        .push(scrip("broker.example", 300, 2, NOW_S + 60));
    let mut refunding = scrip("broker.example", 200, 5, NOW_S + 60);
    refunding.in_flight = Some(InFlight::Refund { account_id: 41 });
    wallet.broker_scrip.push(refunding);
    let mut paying = scrip("news.example", 100, 3, NOW_S + 60);
    paying.vendor_url = Some("http://127.0.0.1:7200".into());
    paying.in_flight = Some(InFlight::Pay {
        variant: Variant::Private,
        item: "article-1".into(),
        vendor_url: "http://127.0.0.1:7200".into(),
        price: Some(Amount::new(30)),
        sealed_request: Some(vec![1, 2, 3]),
    });
    wallet.vendor_scrip.push(paying);
    let mut fetching = scrip("news.example", 50, 4, NOW_S + 60);
    fetching.in_flight = Some(InFlight::Web {
        url: "http://127.0.0.1:8402/articles/1".into(),
        method: "GET".into(),
        request: "GET 127.0.0.1:8402/articles/1".into(),
        variant: Variant::Secure,
        price: Amount::new(10),
    });
    wallet.vendor_scrip.push(fetching);
    wallet.settings.max_price = None;
    wallet
        .settings
        .vendor_limits
        .insert("news.example".into(), 70);
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
        url: Some("http://127.0.0.1:7200".into()),
        price: Some(Amount::new(30)),
        change: Some(Amount::new(70)),
        status: Some(200),
        outcome: Outcome::Refused {
            reason: "double_spend".into(),
        },
    });
    wallet.save().unwrap();
    (dir, wallet)
}

/// Releases `wallet`'s lock and opens its file again, as the next command
/// would.
fn reopen(wallet: Wallet) -> Wallet {
    let path = wallet.path().to_owned();
    drop(wallet);
    Wallet::open(path).unwrap()
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
    let reopened = reopen(wallet);
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
    let (broker_scrip, vendor_scrip) = (wallet.broker_scrip.clone(), wallet.vendor_scrip.clone());
    let (pending_buys, history) = (wallet.pending_buys.clone(), wallet.history.clone());
    let reopened = reopen(wallet);

    let broker = &reopened.brokers()[0];
    assert_eq!(broker.name, name("broker.example"));
    assert_eq!(broker.url, "http://127.0.0.1:7100");
    assert_eq!(broker.account_id, 41);
    assert_eq!(broker.key().expose_bytes(), [KEY_BYTE; 16]);
    assert!(broker.sells_for(&name("news.example")));

    for (old, new) in broker_scrip.iter().zip(&reopened.broker_scrip) {
        assert_eq!(old.scrip(), new.scrip());
        assert_eq!(old.secret(), new.secret());
        assert_eq!(old.in_flight(), new.in_flight());
    }
    assert_eq!(reopened.broker_scrip.len(), 3);
    let paying = &reopened.vendor_scrip()[0];
    assert_eq!(paying.scrip(), vendor_scrip[0].scrip());
    assert_eq!(paying.vendor_url(), Some("http://127.0.0.1:7200"));
    assert_eq!(paying.in_flight(), vendor_scrip[0].in_flight());
    assert_eq!(reopened.pending_buys(), pending_buys);
    assert_eq!(reopened.history(), history);
    assert!(reopened.has_unsettled_calls());
}

#[test]
fn debug_output_shows_no_secret() {
    let (_dir, wallet) = full_wallet();
    let text = format!("{wallet:?} {wallet:#?}");
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
fn a_second_wallet_on_one_file_waits_for_the_first() {
    let (_dir, wallet) = new_wallet();
    let path = wallet.path().to_owned();
    assert!(matches!(
        Wallet::try_open(&path),
        Err(ClientError::WalletBusy { .. })
    ));

    let waiter = {
        let path = path.clone();
        std::thread::spawn(move || Wallet::open(path).map(|w| w.history().len()))
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(
        !waiter.is_finished(),
        "open waits while the wallet is in use"
    );
    drop(wallet);
    assert_eq!(waiter.join().unwrap().unwrap(), 0);
    assert!(Wallet::try_open(&path).is_ok());
}

#[test]
fn opening_a_missing_wallet_leaves_no_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.json");
    assert!(matches!(
        Wallet::open(&path),
        Err(ClientError::WalletNotFound { .. })
    ));
    assert!(matches!(
        Wallet::try_open(&path),
        Err(ClientError::WalletNotFound { .. })
    ));
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[cfg(unix)]
#[test]
fn a_wallet_other_users_can_read_is_refused_with_how_to_fix_it_and_left_alone() {
    use std::os::unix::fs::PermissionsExt;

    // A copy has no lock file yet: the refusal must not make one.
    let (dir, wallet) = full_wallet();
    let path = dir.path().join("copy.json");
    fs::copy(wallet.path(), &path).unwrap();
    drop(wallet);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let contents = fs::read(&path).unwrap();
    let listing = || {
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = listing();

    for open in [Wallet::open, Wallet::try_open] {
        let error = open(path.clone()).unwrap_err();
        assert!(
            matches!(&error, ClientError::WalletNotPrivate { path: seen, mode: 0o644 } if seen == &path),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(text.contains("mode 644"), "{text}");
        assert!(
            text.contains(&format!("chmod 600 {}", path.display())),
            "{text}"
        );
    }
    assert_eq!(listing(), before);
    assert_eq!(fs::read(&path).unwrap(), contents);
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);

    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Wallet::open(&path).is_ok());
}

#[test]
fn a_wallet_of_a_newer_format_says_so() {
    let (_dir, wallet) = full_wallet();
    let path = wallet.path().to_owned();
    drop(wallet);
    let text = fs::read_to_string(&path).unwrap();
    let newer = text
        .replace("\"version\": 1", "\"version\": 3")
        .replace("\"brokers\"", "\"accounts\"");
    fs::write(&path, newer).unwrap();
    let error = Wallet::open(&path).unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::WalletTooNew {
                version: 3,
                supported: 2,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("newer millicent"), "{error}");
}

#[test]
fn a_damaged_file_is_refused_whole() {
    let (_dir, wallet) = full_wallet();
    let path = wallet.path().to_owned();
    drop(wallet);
    let text = fs::read_to_string(&path).unwrap();
    let key = hex::encode([KEY_BYTE; 16]);
    let damaged = [
        "not json".to_owned(),
        text.replace("\"version\": 1", "\"version\": 0"),
        text.replace(&key, &key[..30]),
        text.replace(&key, &format!("{key}00")),
        text.replace(
            "\"broker\": \"broker.example\"",
            "\"broker\": \"other.example\"",
        ),
        text.replace("\"suite\": \"classic\"", "\"suite\": \"rot13\""),
        text.replace("\"variant\": \"private\"", "\"variant\": \"loud\""),
    ];
    for contents in damaged {
        fs::write(&path, &contents).unwrap();
        match Wallet::open(&path) {
            Err(ClientError::WalletCorrupt { detail, .. }) => {
                assert!(!detail.contains(&hex::encode([SECRET_BYTE; 4])), "{detail}");
                assert!(!detail.contains(&hex::encode([KEY_BYTE; 4])), "{detail}");
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
        price: None,
        sealed_request: None,
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
fn only_a_double_spend_or_the_wallets_own_clock_drops_refused_scrip() {
    let (_dir, mut wallet) = new_wallet();
    let live = protocol::now_ms() / 1000 + 3600;
    // (reason refused with, scrip expiry); `None` is a lost answer.
    let cases = [
        (Some("double_spend"), live),
        (Some("insufficient_value"), live),
        (None, live),
        (Some("bad_certificate"), live),
        (Some("unknown_series"), live),
        (Some("wrong_vendor"), live),
        (Some("expired"), live),
        (Some("expired"), 1),
        (Some("bad_certificate"), 1),
    ];
    for (seq, (_, expires_at)) in (1..).zip(cases) {
        let mut held = scrip("news.example", u64::from(seq), seq, expires_at);
        held.in_flight = Some(InFlight::Pay {
            variant: Variant::Secure,
            item: "a".into(),
            vendor_url: "http://other-node".into(),
            price: None,
            sealed_request: None,
        });
        wallet.vendor_scrip.push(held);
    }

    let mut fates = Vec::new();
    for (seq, (reason, _)) in (1..).zip(cases) {
        let key = ScripKey {
            vendor: name("news.example"),
            id: ScripId::new(1, seq),
        };
        let mut entry = HistoryEntry::new(HistoryKind::Pay);
        entry.url = Some("http://other-node".into());
        let error = match reason {
            Some(reason) => refusal(reason),
            None => ClientError::from(tonic::Status::unavailable("connection reset")),
        };
        let error = wallet
            .record_failure(Purse::Vendor, &key, &mut entry, error)
            .unwrap();
        match &error {
            ClientError::ScripRefused {
                node, reason, fate, ..
            } => {
                assert_eq!(node, "http://other-node");
                assert_eq!(
                    entry.outcome,
                    Outcome::Refused {
                        reason: reason.clone()
                    }
                );
                let text = error.to_string();
                assert!(text.starts_with("http://other-node refused"), "{text}");
                assert!(text.contains(&fate.to_string()), "{text}");
                fates.push(Some(*fate));
            }
            _ => {
                assert!(error.outcome_unknown(), "{error}");
                assert_eq!(entry.outcome, Outcome::Interrupted);
                fates.push(None);
            }
        }
    }
    use ScripFate::{Dropped, Kept};
    assert_eq!(
        fates,
        [
            Some(Dropped),
            Some(Kept),
            None,
            Some(Kept),
            Some(Kept),
            Some(Kept),
            Some(Kept),
            Some(Dropped),
            Some(Dropped)
        ]
    );

    let reopened = reopen(wallet);
    let values: Vec<u64> = keys(reopened.vendor_scrip())
        .into_iter()
        .map(|(_, value)| value)
        .collect();
    assert_eq!(values, [2, 3, 4, 5, 6, 7]);
    let in_flight: Vec<bool> = reopened
        .vendor_scrip()
        .iter()
        .map(|held| held.in_flight().is_some())
        .collect();
    assert_eq!(in_flight, [false, true, false, false, false, false]);
    assert_eq!(
        reopened.history().len(),
        cases.len() - 1,
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
        top_up: Some(Amount::ZERO),
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
        url: None,
        price: Some(Amount::new(12)),
        change: None,
        status: None,
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
