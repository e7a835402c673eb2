//! One vendor sharded by series across two nodes in this process: each node
//! takes only the series it holds, points payments of its peer's series to
//! the peer, and allocates series only from its own range.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::*;
use millicent_core::Variant;
use millicent_proto as wire;
use millicent_proto::pay_stream_reply::Result as Answer;
use millicent_vendor::{OWNER_NODE_KEY, OWNER_URL_KEY, PeerSpec, RunningVendor, VendorConfig};
use tonic::Code;

/// An address that was free a moment ago, for a configuration that must
/// name its peer's address before the peer starts.
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn shard(
    dir: &Path,
    node: &str,
    listen: SocketAddr,
    own: [u32; 2],
    peer: (&str, SocketAddr, [u32; 2]),
) -> VendorConfig {
    VendorConfig {
        node: node.to_owned(),
        listen,
        series_range: own,
        peers: vec![PeerSpec {
            node: peer.0.to_owned(),
            url: format!("http://{}", peer.1),
            series_range: peer.2,
        }],
        ..config(&dir.join(node))
    }
}

fn metadata<'a>(status: &'a tonic::Status, key: &str) -> &'a str {
    status.metadata().get(key).unwrap().to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_takes_its_own_series_and_points_to_the_owner_of_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let a_url = format!("http://{a_addr}");
    let b_url = format!("http://{b_addr}");
    let a_config = shard(
        dir.path(),
        "vendor-1",
        a_addr,
        [1, 1000],
        ("vendor-2", b_addr, [1001, 2000]),
    );
    let b_config = shard(
        dir.path(),
        "vendor-2",
        b_addr,
        [1001, 2000],
        ("vendor-1", a_addr, [1, 1000]),
    );
    let Harness {
        node: a,
        client: mut at_a,
    } = start(a_config).await;
    let Harness {
        node: b,
        client: mut at_b,
    } = start(b_config).await;

    // Each node allocates its change series and licences from its range.
    let mut a_broker = Broker::licensed(&mut at_a, "news.example").await;
    let mut b_broker = Broker::licensed(&mut at_b, "news.example").await;
    assert_eq!((a_broker.series, b_broker.series), (2, 1002));

    // Scrip of A's series at B is refused with a pointer to A, and spends
    // nothing; at A it pays, and so does its change (A's series 1).
    let scrip = a_broker.mint(100);
    let secret = a_broker.secret(&scrip);
    let payment = a_broker.payment(&scrip, Variant::Secure, "article-1");
    let status = at_b.pay(pay_request(&payment)).await.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::FailedPrecondition, "wrong_node")
    );
    assert_eq!(metadata(&status, OWNER_NODE_KEY), "vendor-1");
    assert_eq!(metadata(&status, OWNER_URL_KEY), a_url);
    assert!(
        status.message().contains("vendor-1") && status.message().contains(&a_url),
        "{}",
        status.message()
    );
    let (_, _, change) = pay_ok(&mut at_a, &payment, &secret).await;
    let change = change.unwrap();
    assert_eq!(change.id().series(), 1);
    let payment = a_broker.payment(&change, Variant::Clear, "headline");
    let status = at_b.pay(pay_request(&payment)).await.unwrap_err();
    assert_eq!(reason(&status), "wrong_node");
    pay_ok(&mut at_a, &payment, &secret).await;

    // And the other way round.
    let scrip = b_broker.mint(100);
    let payment = b_broker.payment(&scrip, Variant::Private, "headline");
    let status = at_a.pay(pay_request(&payment)).await.unwrap_err();
    assert_eq!(reason(&status), "wrong_node");
    assert_eq!(metadata(&status, OWNER_NODE_KEY), "vendor-2");
    assert_eq!(metadata(&status, OWNER_URL_KEY), b_url);
    pay_ok(&mut at_b, &payment, &b_broker.secret(&scrip)).await;

    // On a stream the refusal carries the same code, reason and message.
    let scrip = a_broker.mint(100);
    let payment = a_broker.payment(&scrip, Variant::Secure, "headline");
    let element = wire::PayStreamRequest {
        sequence: 1,
        payment: Some(pay_request(&payment)),
    };
    let batch = wire::PayBatch {
        payments: vec![element],
    };
    let mut replies = at_b
        .pay_stream(tokio_stream::iter([batch]))
        .await
        .unwrap()
        .into_inner();
    let mut answers = replies.message().await.unwrap().unwrap().replies;
    assert_eq!(answers.len(), 1);
    let reply = answers.remove(0);
    let Some(Answer::Refusal(refusal)) = reply.result else {
        panic!("not refused: {reply:?}");
    };
    assert_eq!(refusal.code, Code::FailedPrecondition as i32 as u32);
    assert_eq!(refusal.reason, "wrong_node");
    assert!(refusal.message.contains(&a_url), "{}", refusal.message);
    assert!(replies.message().await.unwrap().is_none());

    // A series nobody owns is unknown everywhere; one in A's range that A
    // never allocated is unknown at A, and B still points to A.
    let licence = ask_licence(&mut at_a, "news.example", Some(TOKEN))
        .await
        .unwrap();
    for (series, at_a_reason, at_b_reason) in [
        (5000, "unknown_series", "unknown_series"),
        (500, "unknown_series", "wrong_node"),
    ] {
        let mut stray = Broker::from_licence(&wire::Licence {
            series,
            ..licence.clone()
        });
        let scrip = stray.mint(100);
        let request = pay_request(&stray.payment(&scrip, Variant::Secure, "headline"));
        let status = at_a.pay(request.clone()).await.unwrap_err();
        assert_eq!(reason(&status), at_a_reason, "series {series} at A");
        let status = at_b.pay(request).await.unwrap_err();
        assert_eq!(reason(&status), at_b_reason, "series {series} at B");
    }

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_are_allocated_only_inside_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let narrow = VendorConfig {
        series_range: [7, 8],
        ..config(dir.path())
    };
    let Harness { node, mut client } = start(narrow.clone()).await;

    // The change series takes 7 and the first licence 8; then the range
    // is used up and a licence is refused.
    let licence = ask_licence(&mut client, "news.example", Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(licence.series, 8);
    let status = ask_licence(&mut client, "news.example", Some(TOKEN))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::ResourceExhausted, "exhausted")
    );
    assert!(status.message().contains("[7, 8]"), "{}", status.message());
    node.shutdown().await.unwrap();

    // Given a further range, the node continues there, and still takes
    // the series it already holds.
    let wider = VendorConfig {
        series_range: [20, 30],
        ..narrow
    };
    let Harness { node, mut client } = start(wider).await;
    let next = ask_licence(&mut client, "news.example", Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(next.series, 20);
    let mut broker = Broker::from_licence(&licence);
    let scrip = broker.mint(100);
    let payment = broker.payment(&scrip, Variant::Secure, "headline");
    let (_, _, change) = pay_ok(&mut client, &payment, &broker.secret(&scrip)).await;
    assert_eq!(change.unwrap().id().series(), 7);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn overlapping_ranges_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let overlapping = shard(
        dir.path(),
        "vendor-1",
        "127.0.0.1:0".parse().unwrap(),
        [1, 1000],
        ("vendor-2", "127.0.0.1:7201".parse().unwrap(), [1000, 2000]),
    );
    let error = RunningVendor::start(overlapping).await.unwrap_err();
    assert_eq!(error.reason(), "internal");
    assert!(error.to_string().contains("overlaps"), "{error}");
    assert!(!dir.path().join("vendor-1").exists());
}
