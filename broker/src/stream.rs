//! Exchange streams: many exchanges on one `ExchangeStream` call.
//!
//! A unary call per exchange costs a round trip and a gRPC call each; a
//! stream pays for them once. Every element still goes through the path of
//! a unary `Exchange` (its checks, its spend, its journal entry, its commit
//! and its metrics), so its reply leaves only once it is durable.
//!
//! The elements of one stream are exchanged concurrently, up to
//! [`MAX_IN_FLIGHT`] at a time, so that one stream fills the group commit
//! as many unary callers would; replies leave as exchanges finish, in any
//! order, each with the sequence number of its element. The next element
//! is read only when a place is free, and a finished exchange holds its
//! place until its reply fits in the outgoing queue, so a client that stops
//! reading stops the broker reading. A refused element is answered with a
//! `Refusal`; an element that cannot be read at all ends the stream once
//! the elements read before it are answered.

use std::time::Duration;

use millicent_proto as proto;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::Status;

use crate::service::Broker;

/// Most exchanges of one stream in flight at once.
pub(crate) const MAX_IN_FLIGHT: usize = 256;

/// What an `ExchangeStream` call sends back.
pub(crate) type Replies = ReceiverStream<Result<proto::ExchangeStreamReply, Status>>;

/// Starts exchanging the elements of `inbound`, each for at most
/// `timeout`, and returns the stream of replies.
pub(crate) fn serve<S>(broker: Broker, inbound: S, timeout: Duration) -> Replies
where
    S: Stream<Item = Result<proto::ExchangeStreamRequest, Status>> + Send + Unpin + 'static,
{
    let (replies, outbound) = mpsc::channel(MAX_IN_FLIGHT);
    tokio::spawn(read(broker, inbound, timeout, replies));
    ReceiverStream::new(outbound)
}

async fn read<S>(
    broker: Broker,
    mut inbound: S,
    timeout: Duration,
    replies: mpsc::Sender<Result<proto::ExchangeStreamReply, Status>>,
) where
    S: Stream<Item = Result<proto::ExchangeStreamRequest, Status>> + Unpin,
{
    let places = std::sync::Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let unreadable = loop {
        let place = tokio::select! {
            place = places.clone().acquire_owned() => place,
            () = replies.closed() => return,
        };
        let Ok(place) = place else { return };
        let element = tokio::select! {
            element = inbound.next() => element,
            () = replies.closed() => return,
        };
        match element {
            None => return,
            Some(Err(status)) => break status,
            Some(Ok(element)) => {
                tokio::spawn(exchange(
                    broker.clone(),
                    element,
                    timeout,
                    replies.clone(),
                    place,
                ));
            }
        }
    };
    // Everything read is answered before the stream ends with the error.
    let all = u32::try_from(MAX_IN_FLIGHT).unwrap_or(u32::MAX);
    tokio::select! {
        _ = places.acquire_many(all) => {
            let _ = replies.send(Err(unreadable)).await;
        }
        () = replies.closed() => {}
    }
}

async fn exchange(
    broker: Broker,
    element: proto::ExchangeStreamRequest,
    timeout: Duration,
    replies: mpsc::Sender<Result<proto::ExchangeStreamReply, Status>>,
    place: OwnedSemaphorePermit,
) {
    let sequence = element.sequence;
    let request = element.exchange.unwrap_or_default();
    let result = match tokio::time::timeout(timeout, broker.observed_exchange(request)).await {
        Ok(Ok(reply)) => proto::exchange_stream_reply::Result::Reply(reply),
        Ok(Err(status)) => proto::exchange_stream_reply::Result::Refusal(refusal(&status)),
        // As a unary call cut off by the server's deadline: CANCELLED, no
        // reason; the exchange may have happened, and its retry says so.
        Err(_) => proto::exchange_stream_reply::Result::Refusal(proto::Refusal {
            code: tonic::Code::Cancelled as i32 as u32,
            reason: String::new(),
            message: "the exchange took too long; send it again to learn its outcome".to_owned(),
        }),
    };
    // A client that went away needs no reply; the exchange stands.
    let _ = replies
        .send(Ok(proto::ExchangeStreamReply {
            sequence,
            result: Some(result),
        }))
        .await;
    drop(place);
}

/// A refusal as it travels on a stream: the status's code, reason and
/// message.
fn refusal(status: &Status) -> proto::Refusal {
    proto::Refusal {
        code: status.code() as i32 as u32,
        reason: status
            .metadata()
            .get(crate::error::REASON_KEY)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        message: status.message().to_owned(),
    }
}
