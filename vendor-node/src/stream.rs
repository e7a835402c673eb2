//! Payment streams: many payments on one `PayStream` call, in batches.
//!
//! A unary call per payment costs a round trip, a gRPC call and a commit
//! each; a stream pays for the call once, and each message on it carries a
//! batch of payments that share their checks' overhead and one commit.
//! Every batch goes through [`Node::pay_all`], the path of a unary `Pay`,
//! so its checks, its spends, its durability and its metrics are exactly
//! those of `Pay`: an answer leaves only once its spend is durable.
//!
//! # Concurrency and order
//!
//! The batches of one stream are paid concurrently, up to
//! [`MAX_IN_FLIGHT`] payments at a time, so that one stream keeps the group
//! commit's flushes full whatever the size of its batches. Each batch is answered by one message, once all
//! of its payments are settled; answers of different batches leave as
//! their batches finish, hence in any order, and each answer carries the
//! sequence number of the payment it answers.
//!
//! # Back-pressure
//!
//! A batch read waits until its payments fit under [`MAX_IN_FLIGHT`], and
//! the next is read only once it has started; a finished batch holds its
//! places until its answers fit in the outgoing queue. A client that stops reading answers therefore
//! stops the node reading its payments, and HTTP/2 flow control pushes back
//! on the client; a stream never holds more than a bounded amount of work.
//!
//! # Refusals and the end of a stream
//!
//! A refused payment, malformed ones included, is answered with a
//! `Refusal` and the stream goes on; so is every payment of a batch larger
//! than [`MAX_BATCH`], none of which is paid. A batch still unfinished
//! after the node's request timeout is answered as unary calls would be,
//! CANCELLED without a reason, so that one stuck commit cannot hold its
//! place for ever; like a unary call that timed out, each of its payments
//! may have been accepted, and its identical retry says which. Only a
//! message that cannot be read at all (it does not decode as a `PayBatch`,
//! or is over the message size limit) ends the stream, since its payments
//! have no sequence numbers to answer with: the batches in flight are
//! answered first, then the stream ends with that message's status. A
//! client that goes away stops the reading; payments already started still
//! complete and stay spent, and their retries get their replies.

use std::sync::Arc;
use std::time::Duration;

use millicent_proto as wire;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::Status;

use crate::VendorError;
use crate::convert;
use crate::node::Node;

/// Most payments in one batch.
pub const MAX_BATCH: usize = 256;
/// Most payments of one stream in flight at once.
pub(crate) const MAX_IN_FLIGHT: usize = 8 * MAX_BATCH;
/// Answers waiting to be sent, in batches.
const REPLY_QUEUE: usize = 16;

/// What a `PayStream` call sends back.
pub(crate) type Replies = ReceiverStream<Result<wire::PayBatchReply, Status>>;

/// Starts paying the batches of `inbound`, each for at most `timeout`, and
/// returns the stream of answers.
pub(crate) fn serve<S>(
    node: Arc<Node>,
    inbound: S,
    timeout: Duration,
    draining: watch::Receiver<bool>,
) -> Replies
where
    S: Stream<Item = Result<wire::PayBatch, Status>> + Send + Unpin + 'static,
{
    let (replies, outbound) = mpsc::channel(REPLY_QUEUE);
    tokio::spawn(read(node, inbound, timeout, replies, draining));
    ReceiverStream::new(outbound)
}

/// Reads batches and starts paying each, until the client stops sending,
/// goes away, sends something unreadable, or the node starts shutting
/// down; then answers what it read and ends.
async fn read<S>(
    node: Arc<Node>,
    mut inbound: S,
    timeout: Duration,
    replies: mpsc::Sender<Result<wire::PayBatchReply, Status>>,
    mut draining: watch::Receiver<bool>,
) where
    S: Stream<Item = Result<wire::PayBatch, Status>> + Unpin,
{
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let ended = loop {
        let batch = tokio::select! {
            batch = inbound.next() => batch,
            () = replies.closed() => return,
            _ = draining.wait_for(|draining| *draining) => {
                break Status::unavailable(
                    "the vendor node is shutting down; send unanswered payments again",
                );
            }
        };
        let batch = match batch {
            None => return,
            Some(Err(status)) => break status,
            Some(Ok(batch)) => batch,
        };
        // A batch over the limit takes one place: it is only refused.
        let places = batch.payments.len().clamp(1, MAX_BATCH);
        let places = u32::try_from(places).unwrap_or(1);
        let places = tokio::select! {
            places = in_flight.clone().acquire_many_owned(places) => places,
            () = replies.closed() => return,
        };
        // The semaphore is never closed, so places always come.
        let Ok(places) = places else { return };
        tokio::spawn(pay(node.clone(), batch, timeout, replies.clone(), places));
    };

    // Every batch read so far is answered before the stream ends.
    let all = u32::try_from(MAX_IN_FLIGHT).unwrap_or(u32::MAX);
    tokio::select! {
        _ = in_flight.acquire_many(all) => {
            // The client may have gone already; then nobody needs the status.
            let _ = replies.send(Err(ended)).await;
        }
        () = replies.closed() => {}
    }
}

/// Pays one batch and queues its answers; its places are freed once they
/// are queued.
async fn pay(
    node: Arc<Node>,
    batch: wire::PayBatch,
    timeout: Duration,
    replies: mpsc::Sender<Result<wire::PayBatchReply, Status>>,
    places: OwnedSemaphorePermit,
) {
    let (sequences, requests): (Vec<u64>, Vec<wire::PayRequest>) = batch
        .payments
        .into_iter()
        .map(convert::stream_element)
        .unzip();
    let answers = if requests.len() > MAX_BATCH {
        let refusal = || VendorError::BatchTooLarge {
            payments: requests.len(),
            max: MAX_BATCH,
        };
        sequences
            .into_iter()
            .map(|sequence| convert::stream_reply(sequence, Err(refusal())))
            .collect()
    } else {
        match tokio::time::timeout(timeout, node.pay_all(requests)).await {
            Ok(results) => sequences
                .into_iter()
                .zip(results)
                .map(|(sequence, result)| convert::stream_reply(sequence, result))
                .collect(),
            Err(_) => sequences
                .into_iter()
                .map(|sequence| convert::stream_timeout(sequence, timeout))
                .collect(),
        }
    };
    // A client that has gone away needs no answers; the payments stand, and
    // their retries get the same replies.
    let _ = replies
        .send(Ok(wire::PayBatchReply { replies: answers }))
        .await;
    drop(places);
}
