//! Many payments on one `PayStream` call, for gateways and heavy clients.
//!
//! A [`PaymentStream`] is shared by any number of concurrent payers: each
//! [`PaymentStream::pay`] tags its payment with a fresh sequence number and
//! waits for the reply carrying it, so replies may come back in any order.
//! Every reply is checked exactly as a unary [`pay`](crate::protocol::pay)
//! checks it.
//!
//! Payments travel in batches: a task sends whatever payments are waiting
//! as one `PayBatch` message (at most [`MAX_BATCH`] payments, well within
//! the node's message limit), so batches grow with the load and a lone
//! payment leaves at once.
//!
//! When the call ends (the node restarted, the connection dropped), the
//! payments waiting on it fail with an unknown outcome, and the next
//! payment opens a new call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use millicent_core::{CustomerSecret, Scrip, Variant};
use millicent_proto as wire;
use millicent_proto::vendor_service_client::VendorServiceClient;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::ClientError;
use crate::convert::payment_reply_from_wire;
use crate::protocol::{Paid, prepare_payment};

/// Payments sent but not yet answered, by sequence number, and whether the
/// call they went out on has ended.
#[derive(Default)]
struct Waiting {
    replies: HashMap<u64, oneshot::Sender<wire::PayStreamReply>>,
    ended: bool,
}

type Pending = Arc<Mutex<Waiting>>;

/// How many payments may wait to be sent on the stream.
const SEND_QUEUE: usize = 1024;
/// Most payments in one batch: the vendor node's limit.
pub const MAX_BATCH: usize = 256;
/// Most bytes of payments in one batch, under the node's 64 KiB limit on a
/// message (a payment takes at most about 1.5 KiB).
const MAX_BATCH_BYTES: usize = 48 * 1024;
/// Batches handed to the transport and not yet sent.
const BATCH_QUEUE: usize = 4;

/// Payments to one vendor node on a `PayStream` call, opened again on the
/// next payment after the call ends (the node restarted, the connection
/// dropped).
pub struct PaymentStream {
    client: VendorServiceClient<Channel>,
    link: tokio::sync::Mutex<Arc<Link>>,
    next_sequence: AtomicU64,
}

/// One `PayStream` call and the tasks that feed and read it.
struct Link {
    requests: mpsc::Sender<wire::PayStreamRequest>,
    pending: Pending,
    reader: tokio::task::JoinHandle<()>,
    batcher: tokio::task::JoinHandle<()>,
}

impl PaymentStream {
    /// Opens a stream on `client`'s connection.
    pub async fn open(
        client: &mut VendorServiceClient<Channel>,
    ) -> Result<PaymentStream, ClientError> {
        let link = Link::open(client.clone()).await?;
        Ok(PaymentStream {
            client: client.clone(),
            link: tokio::sync::Mutex::new(Arc::new(link)),
            next_sequence: AtomicU64::new(0),
        })
    }

    /// Pays for `item` with `scrip` on the stream and checks the reply, like
    /// [`pay`](crate::protocol::pay). If the stream breaks before the reply,
    /// the error has no reason and the payment's outcome is unknown: send the
    /// same payment again, which goes out on a new call.
    pub async fn pay(
        &self,
        scrip: &Scrip,
        secret: &CustomerSecret,
        variant: Variant,
        item: &str,
    ) -> Result<Paid, ClientError> {
        let (payment, request) = prepare_payment(scrip, secret, variant, item)?;
        let link = self.live_link().await?;
        let sequence = self.next_sequence.fetch_add(1, Ordering::Relaxed);
        let (waiter, answer) = oneshot::channel();
        {
            // The reader marks the call ended under this lock, so a payment
            // either is in the map it wakes or sees the call ended.
            let mut waiting = lock(&link.pending);
            if waiting.ended {
                return Err(stream_broken());
            }
            waiting.replies.insert(sequence, waiter);
        }
        let request = wire::PayStreamRequest {
            sequence,
            payment: Some(request),
        };
        if link.requests.send(request).await.is_err() {
            lock(&link.pending).replies.remove(&sequence);
            return Err(stream_broken());
        }
        let reply = answer.await.map_err(|_| stream_broken())?;

        match reply.result {
            Some(wire::pay_stream_reply::Result::Reply(reply)) => {
                let checked = payment_reply_from_wire(scrip.suite(), &reply)?;
                let goods = checked.open(&payment, secret)?;
                Ok(Paid {
                    goods,
                    change: checked.change,
                    price: checked.price,
                })
            }
            Some(wire::pay_stream_reply::Result::Refusal(refusal)) => Err(ClientError::Refused {
                reason: refusal.reason,
                code: tonic::Code::from(refusal.code as i32),
                message: refusal.message,
            }),
            None => Err(ClientError::BadReply {
                call: "PayStream",
                detail: "carries neither a reply nor a refusal".to_owned(),
            }),
        }
    }

    /// The current call, or a new one if it has ended. Payers that find it
    /// ended together open one call between them.
    async fn live_link(&self) -> Result<Arc<Link>, ClientError> {
        let mut link = self.link.lock().await;
        if lock(&link.pending).ended {
            *link = Arc::new(Link::open(self.client.clone()).await?);
        }
        Ok(link.clone())
    }
}

impl Link {
    async fn open(mut client: VendorServiceClient<Channel>) -> Result<Link, ClientError> {
        let (requests, queued) = mpsc::channel(SEND_QUEUE);
        let (batches, outgoing) = mpsc::channel(BATCH_QUEUE);
        let batcher = tokio::spawn(send_batches(queued, batches));
        let stop_batcher = batcher.abort_handle();
        let mut replies = match client.pay_stream(ReceiverStream::new(outgoing)).await {
            Ok(replies) => replies.into_inner(),
            Err(status) => {
                batcher.abort();
                return Err(status.into());
            }
        };
        let pending: Pending = Arc::default();
        let dispatch = pending.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(batch)) = replies.message().await {
                let mut waiting = lock(&dispatch);
                for reply in batch.replies {
                    if let Some(waiter) = waiting.replies.remove(&reply.sequence) {
                        // A payer that gave up no longer needs its reply.
                        let _ = waiter.send(reply);
                    }
                }
            }
            // The call ended: wake every payer still waiting, so that it
            // sees the outcome as unknown instead of waiting for ever, and
            // stop taking payments, so that none waits on a dead call.
            let mut waiting = lock(&dispatch);
            waiting.ended = true;
            waiting.replies.clear();
            stop_batcher.abort();
        });
        Ok(Link {
            requests,
            pending,
            reader,
            batcher,
        })
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
        self.batcher.abort();
    }
}

/// Sends the queued payments as batches: each batch takes every payment
/// waiting when it is made, up to the limits.
async fn send_batches(
    mut queued: mpsc::Receiver<wire::PayStreamRequest>,
    batches: mpsc::Sender<wire::PayBatch>,
) {
    let mut carried = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match queued.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut bytes = first.encoded_len();
        let mut payments = vec![first];
        while payments.len() < MAX_BATCH {
            let Ok(next) = queued.try_recv() else { break };
            bytes += next.encoded_len();
            if bytes > MAX_BATCH_BYTES {
                carried = Some(next);
                break;
            }
            payments.push(next);
        }
        if batches.send(wire::PayBatch { payments }).await.is_err() {
            return;
        }
    }
}

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, Waiting> {
    // Only inserts and removes happen under the lock; a panic cannot leave
    // the map half-changed.
    pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn stream_broken() -> ClientError {
    ClientError::Rpc {
        code: tonic::Code::Unavailable,
        message: "the payment stream broke before the reply; the payment may or may not have \
                  been accepted: send the same payment again"
            .to_owned(),
    }
}
