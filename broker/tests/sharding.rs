//! A broker split over two nodes by shard: each node keeps its own
//! accounts and broker scrip, refuses those of the other with `wrong_node`
//! naming it, and clients that follow the cluster map (or the refusal) get
//! their calls answered wherever they send them.

// In test code a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use millicent_broker::{BrokerConfig, PeerConfig, RunningBroker};
use millicent_client::protocol;
use millicent_core::Amount;
use millicent_core::broker::{account_shard, scrip_shard};
use millicent_proto as proto;
use support::*;
use tonic::Code;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn each_node_keeps_its_shards_and_names_the_owner_of_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = TestVendor::start().await;
    let ports = [free_port(), free_port()];
    let url = |index: usize| format!("http://127.0.0.1:{}", ports[index]);
    let node = |index: usize| {
        let other = 1 - index;
        BrokerConfig {
            node: format!("broker-{}", index + 1),
            shards: vec![index as u8],
            listen: format!("127.0.0.1:{}", ports[index]).parse().unwrap(),
            data_dir: dir.path().join(format!("node-{index}")),
            peers: vec![PeerConfig {
                node: format!("broker-{}", other + 1),
                url: url(other),
                shards: vec![other as u8],
            }],
            ..config(dir.path(), Some(&vendor))
        }
    };
    let first = RunningBroker::start(node(0)).await.unwrap();
    let second = RunningBroker::start(node(1)).await.unwrap();
    let mut at_first = connect(first.addr()).await;
    let mut at_second = connect(second.addr()).await;

    // Accounts opened at a node are of its shard.
    let here = open_account(&mut at_first).await;
    let there = open_account(&mut at_second).await;
    assert_eq!(account_shard(here.id), 0);
    assert_eq!(account_shard(there.id), 1);

    // The other node's accounts are refused with a pointer to it, and the
    // refusal changes nothing.
    let wrong = credit_with(&mut at_first, Some(OPERATOR_TOKEN), there.id, 10, "r").await;
    let status = wrong.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::FailedPrecondition, "wrong_node")
    );
    assert_eq!(
        status.metadata().get("millicent-owner-node").unwrap(),
        "broker-2"
    );
    assert_eq!(
        status.metadata().get("millicent-owner-url").unwrap(),
        url(1).as_str()
    );
    assert_eq!(balance(&mut at_second, &there).await, 0);
    let refused = at_first
        .get_account(proto::GetAccountRequest {
            auth: Some(auth(&there, "GetAccount", &[], now_ms(), random_nonce())),
        })
        .await;
    assert_refused(refused, Code::FailedPrecondition, "wrong_node");

    // The cluster map says the same, and clients route by it.
    let mut client = protocol::connect_broker(&url(0)).await.unwrap();
    let info = protocol::broker_info(&mut client).await.unwrap();
    assert_eq!(info.cluster.url_of_account(there.id), Some(url(1).as_str()));
    assert_eq!(info.cluster.url_of_account(here.id), Some(url(0).as_str()));
    let mut routed = protocol::connect_broker_for_account(&url(0), there.id)
        .await
        .unwrap();
    protocol::credit(&mut routed, OPERATOR_TOKEN, there.id, Amount::new(50), "r1")
        .await
        .unwrap();

    // A client sent to the wrong node follows the refusal there.
    let key = millicent_core::AccountKey::from_slice(info.suite, &there.key).unwrap();
    let mut client = protocol::connect_broker(&url(0)).await.unwrap();
    let bought = protocol::buy_broker_scrip(
        &mut client,
        info.suite,
        there.id,
        key.expose_bytes(),
        Amount::new(30),
    )
    .await
    .unwrap();
    assert_eq!(bought.balance, Amount::new(20));
    assert_eq!(scrip_shard(bought.scrip.id()), 1);
    let mut client = protocol::connect_broker(&url(0)).await.unwrap();
    let vendor_name = millicent_core::VendorName::new(VENDOR).unwrap();
    let exchanged = protocol::exchange(
        &mut client,
        &bought.scrip,
        &bought.secret,
        &vendor_name,
        Amount::new(10),
    )
    .await
    .unwrap();
    assert_eq!(exchanged.change.unwrap().value(), Amount::new(20));
    // Broker scrip of the other shard sent to the wrong node, raw.
    let (request, _) = exchange_request(
        &Held {
            scrip: bought.scrip.clone(),
            secret: bought.secret.clone(),
        },
        VENDOR,
        1,
    );
    assert_refused(
        at_first.exchange(request).await,
        Code::FailedPrecondition,
        "wrong_node",
    );

    let report = assert_live_audit_clean(&mut at_second).await;
    assert_eq!(report.shards[0].shard, 1);
    assert_live_audit_clean(&mut at_first).await;
    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
    for index in 0..2 {
        let report =
            millicent_broker::audit::audit_data_dir(&dir.path().join(format!("node-{index}")))
                .await
                .unwrap();
        assert!(report.is_clean(), "{:?}", report.discrepancy);
        assert_eq!(report.shards[0].shard, index as u8);
    }
}
