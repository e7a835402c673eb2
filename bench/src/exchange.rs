//! Sustained vendor-scrip purchases: simulated customers exchanging broker
//! scrip for vendor scrip at a broker as fast as it answers.
//!
//! Each customer opens an account (the broker spreads new accounts over
//! its shards), is credited, buys one large piece of broker scrip, and then
//! exchanges it for a little vendor scrip again and again, each exchange
//! paying with the broker-scrip change of the previous one. Every exchange
//! is a durable commit at the broker: its spend, its journal entry and its
//! record of sale are on disk before the customer gets the answer. At the
//! end every customer's first broker scrip is presented again, for another
//! exchange, and must be refused as a double spend; then the broker audits
//! its books while running and must find them balanced.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use millicent_client::ClientError;
use millicent_client::protocol::{self, PreparedExchange, connect};
use millicent_core::{Amount, CustomerSecret, Scrip, VendorName};
use millicent_proto as wire;
use millicent_proto::broker_service_client::BrokerServiceClient;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::load::open_funded_account;
use crate::report::{Latency, Table};

/// Where and how hard to push.
#[derive(Clone, Debug)]
pub struct ExchangePlan {
    /// Broker gRPC URL.
    pub broker: String,
    /// Operator token for crediting accounts and auditing.
    pub operator_token: String,
    /// Concurrent customers.
    pub customers: usize,
    /// gRPC channels shared by the customers.
    pub channels: usize,
    /// How long to exchange for.
    pub duration: Duration,
    /// Value of vendor scrip bought by each exchange.
    pub value: Amount,
    /// Set to end early.
    pub stop: Arc<AtomicBool>,
    /// Exchange on `ExchangeStream` calls (one per channel) instead of one
    /// unary `Exchange` call per exchange.
    pub stream: bool,
}

/// How a customer's exchanges travel.
#[derive(Clone)]
enum Exchanger {
    Unary(BrokerServiceClient<Channel>),
    Stream(Arc<ExchangeStream>),
}

impl Exchanger {
    async fn exchange(
        &mut self,
        scrip: &Scrip,
        secret: &CustomerSecret,
        vendor: &VendorName,
        value: Amount,
    ) -> Result<protocol::Exchanged, ClientError> {
        match self {
            Exchanger::Unary(client) => {
                protocol::exchange(client, scrip, secret, vendor, value).await
            }
            Exchanger::Stream(stream) => {
                let prepared = PreparedExchange::new(scrip, secret, vendor, value)?;
                let reply = stream.send(prepared.request().clone()).await?;
                prepared.check(secret, &reply)
            }
        }
    }
}

/// Replies awaited on a stream, by sequence number.
type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<wire::ExchangeStreamReply>>>>;

/// One `ExchangeStream` call shared by many customers.
struct ExchangeStream {
    requests: mpsc::Sender<wire::ExchangeStreamRequest>,
    waiting: Waiting,
    next: AtomicU64,
}

impl ExchangeStream {
    async fn open(client: &mut BrokerServiceClient<Channel>) -> anyhow::Result<ExchangeStream> {
        let (requests, outgoing) = mpsc::channel(1024);
        let mut replies = client
            .exchange_stream(ReceiverStream::new(outgoing))
            .await
            .context("opening an exchange stream")?
            .into_inner();
        let waiting: Waiting = Arc::default();
        let dispatch = waiting.clone();
        tokio::spawn(async move {
            while let Ok(Some(reply)) = replies.message().await {
                let waiter = dispatch
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&reply.sequence);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(reply);
                }
            }
        });
        Ok(ExchangeStream {
            requests,
            waiting,
            next: AtomicU64::new(0),
        })
    }

    async fn send(
        &self,
        exchange: wire::ExchangeRequest,
    ) -> Result<wire::ExchangeReply, ClientError> {
        let sequence = self.next.fetch_add(1, Ordering::Relaxed);
        let (waiter, answer) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(sequence, waiter);
        let broken = || ClientError::Rpc {
            code: tonic::Code::Unavailable,
            message: "the exchange stream broke".to_owned(),
        };
        let element = wire::ExchangeStreamRequest {
            sequence,
            exchange: Some(exchange),
        };
        self.requests.send(element).await.map_err(|_| broken())?;
        match answer.await.map_err(|_| broken())?.result {
            Some(wire::exchange_stream_reply::Result::Reply(reply)) => Ok(reply),
            Some(wire::exchange_stream_reply::Result::Refusal(refusal)) => {
                Err(ClientError::Refused {
                    reason: refusal.reason,
                    code: tonic::Code::from(refusal.code as i32),
                    message: refusal.message,
                })
            }
            None => Err(broken()),
        }
    }
}

/// What the run measured.
#[derive(Debug, Serialize)]
pub struct ExchangeReport {
    /// Exchanges answered with vendor scrip.
    pub exchanges: u64,
    /// Exchanges refused.
    pub rejected: u64,
    /// Refusals by reason.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Exchanges per second of the exchanging phase.
    pub exchanges_per_second: f64,
    /// Latency percentiles of exchanges.
    #[serde(flatten)]
    pub latency: Latency,
    /// Replays of spent broker scrip tried after the run.
    pub replays_attempted: u64,
    /// Replays refused as double spends, as they must be.
    pub replays_refused: u64,
    /// Whether the broker's live audit found its books balanced.
    pub audit_clean: bool,
    /// The audit's first discrepancy, if any.
    pub audit_discrepancy: Option<String>,
    /// Journal transactions the audit read, over all shards.
    pub audited_transactions: u64,
    /// Shards the customers' accounts landed in.
    pub shards_used: usize,
    /// Length of the exchanging phase.
    pub duration_secs: f64,
    /// Concurrent customers.
    pub customers: usize,
    /// Vendor whose scrip was bought.
    pub vendor: String,
    /// `unary` (one call per exchange) or `stream` (`ExchangeStream`).
    pub mode: String,
}

impl ExchangeReport {
    /// What went wrong, if anything did.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.replays_refused != self.replays_attempted {
            problems.push(format!(
                "{} of {} replays of spent broker scrip were not refused as double spends",
                self.replays_attempted - self.replays_refused,
                self.replays_attempted
            ));
        }
        if !self.audit_clean {
            problems.push(format!(
                "the audit found a discrepancy: {}",
                self.audit_discrepancy.as_deref().unwrap_or("(none given)")
            ));
        }
        if self.rejected > 0 {
            problems.push(format!("{} exchanges were refused", self.rejected));
        }
        problems
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut table = Table::default();
        table.line("exchanges", self.exchanges.to_string());
        table.line("exchanges refused", self.rejected.to_string());
        for (reason, count) in &self.rejected_by_reason {
            table.line(&format!("  {reason}"), count.to_string());
        }
        table.line(
            "exchanges per second",
            format!("{:.0}", self.exchanges_per_second),
        );
        table.latency(&self.latency);
        table.line(
            "replays of spent scrip",
            format!(
                "{} tried: {} refused as double spends",
                self.replays_attempted, self.replays_refused
            ),
        );
        table.line(
            "audit",
            if self.audit_clean {
                format!("clean, {} transactions", self.audited_transactions)
            } else {
                format!(
                    "DISCREPANCY: {}",
                    self.audit_discrepancy.as_deref().unwrap_or("")
                )
            },
        );
        table.line(
            "customers, shards, mode",
            format!("{}, {}, {}", self.customers, self.shards_used, self.mode),
        );
        table.finish()
    }
}

/// One customer holding broker scrip.
struct Customer {
    scrip: Scrip,
    secret: CustomerSecret,
    first: Scrip,
}

/// Funds the customers, exchanges for `plan.duration`, replays spent
/// scrip and audits.
pub async fn run(plan: &ExchangePlan) -> anyhow::Result<ExchangeReport> {
    let mut channels = Vec::new();
    for _ in 0..plan.channels.max(1) {
        channels.push(
            connect(&plan.broker)
                .await
                .context("connecting to the broker")?,
        );
    }
    let mut client = BrokerServiceClient::new(channels[0].clone());
    let info = protocol::broker_info(&mut client)
        .await
        .context("asking the broker for its info")?;
    let vendor = info
        .vendors
        .first()
        .map(|name| VendorName::new(name))
        .transpose()?
        .context("the broker sells no vendor's scrip")?;

    eprintln!("funding {} customers ...", plan.customers);
    let customers = crate::load::set_up_all(plan.customers, |index| {
        let mut client = BrokerServiceClient::new(channels[index % channels.len()].clone());
        let (token, suite) = (plan.operator_token.clone(), info.suite);
        async move {
            let fund = Amount::new(1 << 50);
            let reference = format!("exchange-bench-{index}");
            let funded =
                open_funded_account(&mut client, suite, &token, fund, fund, &reference).await?;
            Ok(Customer {
                first: funded.broker_scrip.clone(),
                scrip: funded.broker_scrip,
                secret: funded.broker_secret,
            })
        }
    })
    .await?;
    let shards_used = customers
        .iter()
        .map(|customer| millicent_core::broker::scrip_shard(customer.scrip.id()))
        .collect::<std::collections::BTreeSet<u8>>()
        .len();

    let exchanged = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + plan.duration;
    let mut exchangers = Vec::with_capacity(channels.len());
    for channel in &channels {
        let mut client = BrokerServiceClient::new(channel.clone());
        exchangers.push(if plan.stream {
            Exchanger::Stream(Arc::new(ExchangeStream::open(&mut client).await?))
        } else {
            Exchanger::Unary(client)
        });
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (index, customer) in customers.into_iter().enumerate() {
        let client = exchangers[index % exchangers.len()].clone();
        let (vendor, exchanged, stop) = (vendor.clone(), exchanged.clone(), plan.stop.clone());
        let value = plan.value;
        tasks.spawn(async move {
            exchange_until(
                client, customer, &vendor, value, deadline, &stop, &exchanged,
            )
            .await
        });
    }
    let progress = tokio::spawn(show_progress(exchanged.clone(), started, deadline));
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut firsts = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let outcome = result.context("customer task")?;
        latency_us.add(&outcome.latency_us)?;
        if let Some(reason) = outcome.refused {
            *reasons.entry(reason).or_default() += 1;
        }
        firsts.push(outcome.first);
    }
    let elapsed = started.elapsed();
    progress.abort();
    eprintln!();

    // Every first piece was spent: another exchange with it must fail.
    let mut refused = 0;
    for (scrip, secret) in &firsts {
        let result = protocol::exchange(&mut client, scrip, secret, &vendor, Amount::new(2)).await;
        if matches!(&result, Err(error) if error.reason() == Some("double_spend")) {
            refused += 1;
        }
    }

    let audit = audit(&channels[0], &plan.operator_token).await?;
    let exchanges = exchanged.load(Ordering::Relaxed);
    let seconds = elapsed.as_secs_f64().max(1e-9);
    Ok(ExchangeReport {
        exchanges,
        rejected: reasons.values().sum(),
        rejected_by_reason: reasons,
        exchanges_per_second: (exchanges as f64 / seconds * 10.0).round() / 10.0,
        latency: Latency::of(&latency_us),
        replays_attempted: firsts.len() as u64,
        replays_refused: refused,
        audit_clean: audit.clean,
        audit_discrepancy: (!audit.clean).then_some(audit.discrepancy),
        audited_transactions: audit.shards.iter().map(|shard| shard.transactions).sum(),
        shards_used,
        duration_secs: seconds,
        customers: plan.customers,
        vendor: vendor.to_string(),
        mode: if plan.stream { "stream" } else { "unary" }.to_owned(),
    })
}

struct Outcome {
    latency_us: Histogram<u64>,
    /// Why the customer stopped early, if a refusal stopped it.
    refused: Option<String>,
    first: (Scrip, CustomerSecret),
}

async fn exchange_until(
    mut client: Exchanger,
    customer: Customer,
    vendor: &VendorName,
    value: Amount,
    deadline: Instant,
    stop: &AtomicBool,
    exchanged: &AtomicU64,
) -> Outcome {
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| unreachable!("the histogram bounds are valid"));
    let Customer {
        mut scrip,
        secret,
        first,
    } = customer;
    let mut refused = None;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        match client.exchange(&scrip, &secret, vendor, value).await {
            Ok(done) => {
                latency_us.saturating_record(sent.elapsed().as_micros() as u64);
                exchanged.fetch_add(1, Ordering::Relaxed);
                match done.change {
                    Some(change) => scrip = change,
                    None => break,
                }
            }
            Err(error) => {
                refused = Some(error.reason().unwrap_or("transport").to_owned());
                break;
            }
        }
    }
    Outcome {
        latency_us,
        refused,
        first: (first, secret),
    }
}

async fn audit(channel: &Channel, token: &str) -> anyhow::Result<wire::AuditReport> {
    let mut client = BrokerServiceClient::new(channel.clone());
    let mut request = tonic::Request::new(wire::AuditRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the operator token is not a valid header")?,
    );
    let report = client
        .audit(request)
        .await
        .context("asking the broker to audit itself")?
        .into_inner();
    if report.clean && report.shards.is_empty() {
        bail!("the broker audited no shard");
    }
    Ok(report)
}

async fn show_progress(exchanged: Arc<AtomicU64>, started: Instant, deadline: Instant) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut last = (0u64, Instant::now());
    loop {
        ticker.tick().await;
        let now = Instant::now();
        if now > deadline {
            return;
        }
        let count = exchanged.load(Ordering::Relaxed);
        let rate = (count - last.0) as f64 / now.duration_since(last.1).as_secs_f64().max(1e-9);
        last = (count, now);
        eprint!(
            "\r  {:>4.0}s  exchanges {:>10}  rate {:>9.0}/s  ({}s left)   ",
            now.duration_since(started).as_secs_f64(),
            count,
            rate,
            deadline.saturating_duration_since(now).as_secs()
        );
    }
}
