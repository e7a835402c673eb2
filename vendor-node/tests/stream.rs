//! Payments on a `PayStream` call over real gRPC: many at once, refusals
//! among them without ending the stream, double spends, and retries that
//! get the identical reply on the stream and off it.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use millicent_core::{Payment, Scrip, Variant};
use millicent_proto as wire;
use millicent_proto::pay_stream_reply::Result as Answer;
use millicent_proto::vendor_service_client::VendorServiceClient;
use tonic::Code;
use tonic::transport::Channel;

/// Payments per batch the tests send.
const BATCH: usize = 50;

/// Sends `elements` on one stream in batches of [`BATCH`], then closes it;
/// returns the answers by sequence number and how the stream ended.
async fn stream(
    client: &mut VendorServiceClient<Channel>,
    elements: Vec<wire::PayStreamRequest>,
) -> (HashMap<u64, Answer>, Result<(), tonic::Status>) {
    let batches: Vec<wire::PayBatch> = elements
        .chunks(BATCH)
        .map(|payments| wire::PayBatch {
            payments: payments.to_vec(),
        })
        .collect();
    send(client, batches).await
}

/// Sends `batches` on one stream, then closes it; returns the answers by
/// sequence number and how the stream ended.
async fn send(
    client: &mut VendorServiceClient<Channel>,
    batches: Vec<wire::PayBatch>,
) -> (HashMap<u64, Answer>, Result<(), tonic::Status>) {
    let mut replies = client
        .pay_stream(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    let mut answers = HashMap::new();
    loop {
        match replies.message().await {
            Ok(Some(batch)) => {
                for reply in batch.replies {
                    let previous = answers.insert(reply.sequence, reply.result.unwrap());
                    assert!(
                        previous.is_none(),
                        "sequence {} answered twice",
                        reply.sequence
                    );
                }
            }
            Ok(None) => return (answers, Ok(())),
            Err(status) => return (answers, Err(status)),
        }
    }
}

fn element(sequence: u64, payment: wire::PayRequest) -> wire::PayStreamRequest {
    wire::PayStreamRequest {
        sequence,
        payment: Some(payment),
    }
}

fn accepted(answer: &Answer) -> &wire::PayReply {
    match answer {
        Answer::Reply(reply) => reply,
        Answer::Refusal(refusal) => panic!("refused: {refusal:?}"),
    }
}

fn refused(answer: &Answer) -> (u32, &str) {
    match answer {
        Answer::Refusal(refusal) => (refusal.code, refusal.reason.as_str()),
        Answer::Reply(reply) => panic!("accepted: {reply:?}"),
    }
}

fn code(code: Code) -> u32 {
    code as i32 as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_payments_on_one_stream_with_refusals_among_them() {
    let dir = tempfile::tempdir().unwrap();
    let Harness { node, mut client } = start(config(dir.path())).await;
    let mut broker = Broker::licensed(&mut client, "news.example").await;

    // Scrip spent before the stream starts.
    let spent = broker.mint(100);
    pay_ok(
        &mut client,
        &broker.payment(&spent, Variant::Secure, "headline"),
        &broker.secret(&spent),
    )
    .await;

    // 600 good payments in every variant, with bad elements among them.
    // Sequence numbers need not be dense or ordered.
    let mut good: HashMap<u64, Payment> = HashMap::new();
    let mut elements = Vec::new();
    for index in 0..600u64 {
        let sequence = 1_000 + 3 * index;
        let scrip = broker.mint(50);
        let payment = broker.payment(&scrip, Variant::ALL[index as usize % 3], "article-1");
        elements.push(element(sequence, pay_request(&payment)));
        good.insert(sequence, payment);
    }
    let (one, two) = (broker.mint(50), broker.mint(50));
    let mut forged = pay_request(&broker.payment(&one, Variant::Clear, "headline"));
    forged.scrip.as_mut().unwrap().certificate = vec![0; 16];
    let mut truncated = pay_request(&broker.payment(&two, Variant::Clear, "headline"));
    truncated.scrip.as_mut().unwrap().body.truncate(10);
    let double = pay_request(&broker.payment(&spent, Variant::Secure, "archive"));
    let bad = [
        (7, Some(forged), Code::PermissionDenied, "bad_certificate"),
        (8, Some(truncated), Code::InvalidArgument, "malformed"),
        (9, None, Code::InvalidArgument, "malformed"),
        (10, Some(double), Code::AlreadyExists, "double_spend"),
    ];
    for (position, (sequence, payment, _, _)) in bad.iter().enumerate() {
        let element = wire::PayStreamRequest {
            sequence: *sequence,
            payment: payment.clone(),
        };
        elements.insert(100 * (position + 1), element);
    }

    // One scrip twice on the stream with different requests: exactly one
    // is accepted, whichever the node reaches first.
    let contested = broker.mint(100);
    let first = broker.payment(&contested, Variant::Secure, "headline");
    let second = broker.payment(&contested, Variant::Secure, "article-1");
    elements.push(element(20, pay_request(&first)));
    elements.push(element(21, pay_request(&second)));

    // An identical payment twice on the stream: both get the same reply.
    let twice = broker.mint(100);
    let repeated = broker.payment(&twice, Variant::Private, "archive");
    elements.push(element(30, pay_request(&repeated)));
    elements.push(element(31, pay_request(&repeated)));

    let (answers, end) = stream(&mut client, elements).await;
    end.unwrap();
    assert_eq!(answers.len(), 600 + bad.len() + 4);

    // Every good payment is accepted with a reply its customer accepts,
    // and all change ID#s are distinct.
    let mut change_ids = HashSet::new();
    for (sequence, payment) in &good {
        let reply = accepted(&answers[sequence]);
        let goods = reply_from_wire(reply)
            .open(payment, &broker.secret(&payment.scrip))
            .unwrap();
        assert_eq!(goods, b"The text of article 1");
        let change = reply.change.as_ref().unwrap();
        let change = Scrip::decode(&change.body, &change.certificate).unwrap();
        assert!(
            change_ids.insert(change.id()),
            "change ID# {} twice",
            change.id()
        );
    }
    for (sequence, _, expected_code, expected_reason) in &bad {
        assert_eq!(
            refused(&answers[sequence]),
            (code(*expected_code), *expected_reason),
            "sequence {sequence}"
        );
    }
    let contest = [&answers[&20], &answers[&21]];
    let winners: Vec<&wire::PayReply> = contest
        .iter()
        .filter_map(|answer| match answer {
            Answer::Reply(reply) => Some(reply),
            Answer::Refusal(_) => None,
        })
        .collect();
    assert_eq!(winners.len(), 1);
    assert!(contest.iter().any(|answer| matches!(
        answer,
        Answer::Refusal(refusal) if refusal.reason == "double_spend"
    )));
    assert_eq!(accepted(&answers[&30]), accepted(&answers[&31]));

    // Retries, off the stream and on a new one, get the identical replies.
    let again = client
        .pay(pay_request(&repeated))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&again, accepted(&answers[&30]));
    let retries = good
        .iter()
        .map(|(sequence, payment)| element(*sequence, pay_request(payment)))
        .collect();
    let (retried, end) = stream(&mut client, retries).await;
    end.unwrap();
    for sequence in good.keys() {
        assert_eq!(accepted(&retried[sequence]), accepted(&answers[sequence]));
    }

    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_limit_is_refused_whole_and_spends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Harness { node, mut client } = start(config(dir.path())).await;
    let mut broker = Broker::licensed(&mut client, "news.example").await;

    let mut scrip = Vec::new();
    let mut payments = Vec::new();
    for sequence in 0..=millicent_vendor::MAX_BATCH as u64 {
        let one = broker.mint(10);
        let payment = broker.payment(&one, Variant::Secure, "headline");
        payments.push(element(sequence, pay_request(&payment)));
        scrip.push((one, payment));
    }
    let (answers, end) = send(&mut client, vec![wire::PayBatch { payments }]).await;
    end.unwrap();
    assert_eq!(answers.len(), millicent_vendor::MAX_BATCH + 1);
    assert!(
        answers
            .values()
            .all(|answer| refused(answer) == (code(Code::InvalidArgument), "too_large"))
    );

    // Nothing was spent: the same payments pay, in batches within the limit.
    let (first, payment) = &scrip[0];
    pay_ok(&mut client, payment, &broker.secret(first)).await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_batch_ends_the_stream_after_the_ones_before_it_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let Harness { node, mut client } = start(config(dir.path())).await;
    let mut broker = Broker::licensed(&mut client, "news.example").await;

    let mut elements = Vec::new();
    for sequence in 0..50 {
        let scrip = broker.mint(10);
        let payment = broker.payment(&scrip, Variant::Secure, "headline");
        elements.push(element(sequence, pay_request(&payment)));
    }
    let scrip = broker.mint(10);
    let mut huge = pay_request(&broker.payment(&scrip, Variant::Clear, "headline"));
    huge.request = vec![b'x'; millicent_vendor::MAX_MESSAGE_BYTES + 1];
    elements.push(element(50, huge));
    let after = broker.mint(10);
    let payment = broker.payment(&after, Variant::Secure, "headline");
    elements.push(element(51, pay_request(&payment)));

    let (answers, end) = stream(&mut client, elements).await;
    assert_eq!(end.unwrap_err().code(), Code::OutOfRange);
    assert_eq!(answers.len(), 50);
    assert!(
        answers
            .values()
            .all(|answer| matches!(answer, Answer::Reply(_)))
    );

    // The batch holding the unreadable payment was never read, so the
    // payment after it is unspent.
    pay_ok(&mut client, &payment, &broker.secret(&after)).await;
    node.shutdown().await.unwrap();
}
