//! What a vendor node tells and sells brokers for settlement: blocks of
//! ready-made scrip (the broker's warehouse), and reports of which scrip of
//! a broker's series it accepted. Both need the licence token; a report
//! shows a broker only its own series; licences carry their ID limit.

// In test code a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use millicent_core::{CustomerSecret, Scrip, Variant};
use millicent_proto as wire;
use millicent_proto::vendor_service_client::VendorServiceClient;
use tonic::transport::Channel;

fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn report(
    client: &mut VendorServiceClient<Channel>,
    broker: &str,
    series: &[u32],
) -> wire::RedemptionReport {
    let request = wire::RedemptionsRequest {
        vendor: "news.example".to_owned(),
        broker: broker.to_owned(),
        series: series
            .iter()
            .map(|series| wire::SeriesQuery {
                series: *series,
                first_seq: 0,
            })
            .collect(),
    };
    client
        .report_redemptions(authorized(request, TOKEN))
        .await
        .unwrap()
        .into_inner()
}

fn spent_seqs(series: &wire::SeriesRedemptions) -> Vec<u32> {
    let mut seqs = Vec::new();
    for (index, byte) in series.spent.iter().enumerate() {
        for bit in 0..8 {
            if byte & (1 << bit) != 0 {
                seqs.push(series.first_seq + index as u32 * 8 + bit);
            }
        }
    }
    seqs
}

#[tokio::test]
async fn a_report_shows_a_broker_which_of_its_scrip_was_spent() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = start(config(dir.path())).await;
    let client = &mut harness.client;
    let mut broker = Broker::licensed(client, "news.example").await;
    let paid = [broker.mint(50), broker.mint(50), broker.mint(50)];
    for scrip in [&paid[0], &paid[2]] {
        let payment = broker.payment(scrip, Variant::Secure, "article-1");
        pay_ok(client, &payment, &broker.secret(scrip)).await;
    }

    let seen = report(client, "broker-1", &[broker.series, broker.series + 500]).await;
    assert_eq!(seen.vendor, "news.example");
    assert!(seen.as_of > 0 && seen.as_of <= now());
    let ours = &seen.series[0];
    assert!(ours.known && !ours.more);
    assert_eq!(spent_seqs(ours), [paid[0].id().seq(), paid[2].id().seq()]);
    // A series the node does not have is unknown, not empty.
    assert!(!seen.series[1].known);

    // Another broker learns nothing of this one's series.
    let other = report(client, "broker-2", &[broker.series]).await;
    assert!(!other.series[0].known && other.series[0].spent.is_empty());

    let unauthorized = client
        .report_redemptions(wire::RedemptionsRequest {
            vendor: "news.example".to_owned(),
            broker: "broker-1".to_owned(),
            series: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&unauthorized), "unauthenticated");
    let misaligned = client
        .report_redemptions(authorized(
            wire::RedemptionsRequest {
                vendor: "news.example".to_owned(),
                broker: "broker-1".to_owned(),
                series: vec![wire::SeriesQuery {
                    series: broker.series,
                    first_seq: 3,
                }],
            },
            TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&misaligned), "malformed");
    harness.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_block_of_scrip_is_sold_in_a_series_of_its_own_and_pays_like_any_scrip() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = start(config(dir.path())).await;
    let client = &mut harness.client;
    let request = wire::SellScripBlockRequest {
        vendor: "news.example".to_owned(),
        broker: "broker-1".to_owned(),
        count: 5,
        value: 40,
    };
    let refused = client.sell_scrip_block(request.clone()).await.unwrap_err();
    assert_eq!(reason(&refused), "unauthenticated");
    let too_big = client
        .sell_scrip_block(authorized(
            wire::SellScripBlockRequest {
                count: 5000,
                ..request.clone()
            },
            TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&too_big), "too_large");

    let block = client
        .sell_scrip_block(authorized(request, TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(block.pieces.len(), 5);
    let pieces: Vec<(Scrip, CustomerSecret)> = block
        .pieces
        .iter()
        .map(|piece| {
            let wire = piece.scrip.as_ref().unwrap();
            let scrip = Scrip::decode(&wire.body, &wire.certificate).unwrap();
            let secret = CustomerSecret::from_slice(scrip.suite(), &piece.customer_secret).unwrap();
            (scrip, secret)
        })
        .collect();
    for (seq, (scrip, _)) in pieces.iter().enumerate() {
        assert_eq!(scrip.id().series(), block.series);
        assert_eq!(scrip.id().seq(), seq as u32);
        assert_eq!(scrip.value().units(), 40);
        assert_eq!(scrip.body().expires_at, block.expires_at);
    }

    // A piece pays at the node, with change, and is then spent.
    let (scrip, secret) = &pieces[1];
    let payment = millicent_core::Payment::prepare(
        scrip.clone(),
        secret,
        Variant::Secure,
        b"article-1",
        &nonce(scrip.suite()),
    )
    .unwrap();
    let (_, goods, change) = pay_ok(client, &payment, secret).await;
    assert_eq!(goods, b"The text of article 1");
    assert_eq!(change.unwrap().value().units(), 30);
    let seen = report(client, "broker-1", &[block.series]).await;
    assert_eq!(spent_seqs(&seen.series[0]), [1]);
    harness.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_licence_names_how_many_id_numbers_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = start(millicent_vendor::VendorConfig {
        licence_ids: 1000,
        ..config(dir.path())
    })
    .await;
    let licence = ask_licence(&mut harness.client, "news.example", Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(licence.id_limit, 1000);
    harness.node.shutdown().await.unwrap();

    let bad = millicent_vendor::VendorConfig {
        licence_ids: (1 << 32) + 1,
        ..config(dir.path())
    };
    assert!(bad.check().unwrap_err().to_string().contains("licence_ids"));
}
