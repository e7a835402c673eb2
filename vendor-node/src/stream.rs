//! Payment streams: many payments on one `PayStream` call.
//!
//! A unary call per payment costs a round trip and a gRPC call each; a
//! stream pays for them once. Every element still goes through
//! [`Node::pay`], the path of a unary `Pay`, so its checks, its spend, its
//! durability and its metrics are exactly those of `Pay`: a reply leaves
//! only once its spend is durable.
//!
//! # Concurrency and order
//!
//! The elements of one stream are paid concurrently, up to
//! [`MAX_IN_FLIGHT`] at a time, so that one stream fills the group commit's
//! flushes as many unary callers would. Replies leave as their payments
//! finish, hence in any order; each carries the sequence number of the
//! element it answers.
//!
//! # Back-pressure
//!
//! The next element is read only when fewer than [`MAX_IN_FLIGHT`] are in
//! flight, and a finished payment holds its place until its reply fits in
//! the outgoing queue. A client that stops reading replies therefore stops
//! the node reading its payments, and HTTP/2 flow control pushes back on
//! the client; a stream never holds more than a bounded amount of work.
//!
//! # Refusals and the end of a stream
//!
//! A refused element, malformed ones included, is answered with a
//! `Refusal` and the stream goes on. A payment still unfinished after the
//! node's request timeout is answered as a unary call would be, CANCELLED
//! without a reason, so that one stuck payment cannot hold its place for
//! ever; like a unary call that timed out, it may have been accepted, and
//! its identical retry says which. Only an element that cannot be read at
//! all (it does not decode as a `PayStreamRequest`, or is over the message
//! size limit) ends the stream, since it has no sequence number to answer
//! with: the elements in flight are answered first, then the stream ends
//! with that element's status. A client that goes away stops the reading;
//! payments already started still complete and stay spent, and their
//! retries get their replies.

use std::sync::Arc;
use std::time::Duration;

use millicent_proto as wire;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::Status;

use crate::convert;
use crate::node::Node;

/// Most payments of one stream in flight at once.
pub(crate) const MAX_IN_FLIGHT: usize = 256;

/// What a `PayStream` call sends back.
pub(crate) type Replies = ReceiverStream<Result<wire::PayStreamReply, Status>>;

/// Starts paying the elements of `inbound`, each for at most `timeout`,
/// and returns the stream of replies.
pub(crate) fn serve<S>(node: Arc<Node>, inbound: S, timeout: Duration) -> Replies
where
    S: Stream<Item = Result<wire::PayStreamRequest, Status>> + Send + Unpin + 'static,
{
    let (replies, outbound) = mpsc::channel(MAX_IN_FLIGHT);
    tokio::spawn(read(node, inbound, timeout, replies));
    ReceiverStream::new(outbound)
}

/// Reads elements and starts a payment for each, until the client stops
/// sending, goes away, or sends something unreadable.
async fn read<S>(
    node: Arc<Node>,
    mut inbound: S,
    timeout: Duration,
    replies: mpsc::Sender<Result<wire::PayStreamReply, Status>>,
) where
    S: Stream<Item = Result<wire::PayStreamRequest, Status>> + Unpin,
{
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let unreadable = loop {
        // A place first, so that no element is read that cannot start.
        let place = tokio::select! {
            place = in_flight.clone().acquire_owned() => place,
            () = replies.closed() => return,
        };
        // The semaphore is never closed, so a place always comes.
        let Ok(place) = place else { return };
        let element = tokio::select! {
            element = inbound.next() => element,
            () = replies.closed() => return,
        };
        match element {
            None => return,
            Some(Err(status)) => break status,
            Some(Ok(element)) => {
                let payment = pay(node.clone(), element, timeout, replies.clone(), place);
                tokio::spawn(payment);
            }
        }
    };

    // Every element read so far is answered before the stream ends.
    let all = u32::try_from(MAX_IN_FLIGHT).unwrap_or(u32::MAX);
    tokio::select! {
        _ = in_flight.acquire_many(all) => {
            // The client may have gone already; then nobody needs the status.
            let _ = replies.send(Err(unreadable)).await;
        }
        () = replies.closed() => {}
    }
}

/// Pays one element and queues its reply; its place is freed once the
/// reply is queued.
async fn pay(
    node: Arc<Node>,
    element: wire::PayStreamRequest,
    timeout: Duration,
    replies: mpsc::Sender<Result<wire::PayStreamReply, Status>>,
    place: OwnedSemaphorePermit,
) {
    let (sequence, request) = convert::stream_element(element);
    let answer = match tokio::time::timeout(timeout, node.pay(request)).await {
        Ok(result) => convert::stream_reply(sequence, result),
        Err(_) => convert::stream_timeout(sequence, timeout),
    };
    // A client that has gone away needs no reply; the payment stands, and
    // its retry gets the same reply.
    let _ = replies.send(Ok(answer)).await;
    drop(place);
}
