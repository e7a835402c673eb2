//! A network running mutual TLS on loopback: a broker and a vendor node
//! that each demand a client certificate of the development authority, the
//! broker calling the vendor node with its own certificate, and the
//! `millicent` command line paying through both. Clients without a
//! certificate, or with one of another authority, are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use millicent_broker::{BrokerConfig, RunningBroker};
use millicent_transport::dev_ca::{self, DevCaFiles};
use millicent_transport::{ClientTlsFiles, ServerTlsFiles};
use millicent_vendor::{RunningVendor, VendorConfig};
use support::{LICENCE_TOKEN, OPERATOR_TOKEN, fails_json, ok_json};

mod support;

fn path(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

/// `--tls-ca`, and `--tls-cert` and `--tls-key` of `client` if given.
fn tls_args(ca: &DevCaFiles, client: Option<(&DevCaFiles, &str)>) -> Vec<String> {
    let mut args = vec!["--tls-ca".to_owned(), path(&ca.ca())];
    if let Some((issuer, name)) = client {
        args.extend([
            "--tls-cert".to_owned(),
            path(&issuer.cert(name)),
            "--tls-key".to_owned(),
            path(&issuer.key(name)),
        ]);
    }
    args
}

async fn json(tls: &[String], args: &[&str]) -> serde_json::Value {
    let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    ok_json(&all).await
}

async fn refused(tls: &[String], args: &[&str]) -> String {
    let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    fails_json(&all).await["error"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_pays_over_mutual_tls_and_strangers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["broker-1".to_owned(), "vendor-1".to_owned()];
    let ca = dev_ca::write(&dir.path().join("tls"), &names, &[], &["wallet".to_owned()]).unwrap();
    let other = dev_ca::write(
        &dir.path().join("other"),
        &names,
        &[],
        &["wallet".to_owned()],
    )
    .unwrap();
    let serving = |name: &str| ServerTlsFiles {
        cert: ca.cert(name),
        key: ca.key(name),
        client_ca: Some(ca.ca()),
    };

    let vendor = RunningVendor::start(VendorConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir: dir.path().join("vendor"),
        licence_token: Some(LICENCE_TOKEN.to_owned()),
        tls: Some(serving("vendor-1")),
        ..VendorConfig::default()
    })
    .await
    .unwrap();
    let vendor_url = format!("https://localhost:{}", vendor.addr().port());
    let broker = RunningBroker::start(BrokerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir: dir.path().join("broker"),
        operator_token: Some(OPERATOR_TOKEN.to_owned()),
        tls: Some(serving("broker-1")),
        client_tls: ClientTlsFiles {
            ca: Some(ca.ca()),
            cert: Some(ca.cert("broker-1")),
            key: Some(ca.key("broker-1")),
        },
        vendors: vec![millicent_broker::VendorConfig {
            name: "news.example".to_owned(),
            node: vendor_url.clone(),
            licence_token: Some(LICENCE_TOKEN.to_owned()),
            ..millicent_broker::VendorConfig::default()
        }],
        ..BrokerConfig::default()
    })
    .await
    .unwrap();
    let broker_url = format!("https://127.0.0.1:{}", broker.addr().port());

    let trusted = tls_args(&ca, Some((&ca, "wallet")));
    let wallet = path(&dir.path().join("my.wallet"));
    json(&trusted, &["--wallet", &wallet, "create"]).await;
    let joined = json(
        &trusted,
        &["--wallet", &wallet, "join", "--broker", &broker_url],
    )
    .await;
    let account = joined["account_id"].as_u64().unwrap().to_string();
    json(
        &trusted,
        &[
            "credit",
            "--broker",
            &broker_url,
            "--account",
            &account,
            "--amount",
            "1000",
            "--reference",
            "deposit-1",
            "--operator-token",
            OPERATOR_TOKEN,
        ],
    )
    .await;
    json(&trusted, &["--wallet", &wallet, "buy", "--amount", "500"]).await;
    // The exchange makes the broker ask the vendor node for a licence over
    // mutual TLS; the payment then goes to the vendor node directly.
    let pay = [
        "--wallet",
        &wallet,
        "pay",
        "--vendor",
        &vendor_url,
        "--item",
        "article-1",
    ];
    let paid = json(&trusted, &pay).await;
    assert_eq!(paid["price"], 10);
    assert_eq!(paid["change"], 90);
    assert_eq!(paid["goods"], "The text of article 1");

    // A client without a certificate, with one of another authority, or
    // trusting another authority gets nothing from either server, and
    // nothing is spent.
    let prices = ["prices", "--vendor", &vendor_url];
    let join = ["--wallet", &wallet, "join", "--broker", &broker_url];
    for tls in [
        tls_args(&ca, None),
        tls_args(&ca, Some((&other, "wallet"))),
        tls_args(&other, Some((&other, "wallet"))),
    ] {
        for args in [&prices[..], &join[..], &pay[..]] {
            let error = refused(&tls, args).await;
            // Under TLS 1.3 a server refusing the client's certificate
            // may close the connection after the client's side of the
            // handshake, so the client sees either the alert or the
            // connection closed.
            assert!(
                error.contains("call failed") || error.contains("cannot reach"),
                "{error}"
            );
        }
    }
    // Without an authority to trust, an https:// URL is not dialled.
    let error = refused(&[], &prices).await;
    assert!(
        error.contains("no certificate authority to trust"),
        "{error}"
    );
    // Plain text to a TLS server gets no answer either.
    let plain = vendor_url.replace("https://", "http://");
    let error = refused(&trusted, &["prices", "--vendor", &plain]).await;
    assert!(
        error.contains("call failed") || error.contains("cannot reach"),
        "{error}"
    );

    // The refused attempts spent nothing: the next payment spends the
    // change of the first.
    let paid_again = json(&trusted, &pay).await;
    assert_eq!(paid_again["change"], 80);

    broker.shutdown().await.unwrap();
    vendor.shutdown().await.unwrap();
}
