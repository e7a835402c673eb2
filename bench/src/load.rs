//! Sustained payment load: simulated customers that fund themselves through
//! a broker and then pay a vendor as fast as the vendor answers.
//!
//! Each customer is a task with its own chain of change: it pays with its
//! vendor scrip, takes the change, and pays with that, so every payment
//! depends on the vendor having answered the previous one. Customers share a
//! few gRPC channels, as a gateway in front of many users would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use millicent_client::protocol::{self, connect};
use millicent_core::{Amount, CustomerSecret, Scrip, Variant, VendorName};
use millicent_proto::broker_service_client::BrokerServiceClient;
use millicent_proto::vendor_service_client::VendorServiceClient;
use tonic::transport::Channel;

/// Where and how hard to push.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    /// Broker gRPC URL.
    pub broker: String,
    /// Vendor node gRPC URL.
    pub vendor: String,
    /// Operator token for crediting the customers' accounts.
    pub operator_token: String,
    /// Number of concurrent customers.
    pub customers: usize,
    /// gRPC channels (HTTP/2 connections) shared by the customers.
    pub channels: usize,
    /// How long to pay for.
    pub duration: Duration,
    /// Payment variant.
    pub variant: Variant,
    /// Value of vendor scrip each customer buys.
    pub scrip_value: Amount,
}

/// One customer, funded and holding vendor scrip.
struct Customer {
    scrip: Scrip,
    secret: CustomerSecret,
    /// The first scrip the customer spent, kept to replay it at the end.
    first_scrip: Scrip,
}

/// What a load run measured.
#[derive(Debug)]
pub struct LoadResult {
    /// Payments the vendor accepted.
    pub accepted: u64,
    /// Payments refused (other than deliberate attacks).
    pub rejected: u64,
    /// Refusals by reason.
    pub rejected_by_reason: Vec<(String, u64)>,
    /// Wall time of the paying phase.
    pub elapsed: Duration,
    /// Latency of accepted payments, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Replays of spent scrip attempted after the run.
    pub replays_attempted: u64,
    /// Replays the vendor accepted: must be zero.
    pub double_spends_accepted: u64,
    /// Vendor the load was sent to.
    pub vendor: VendorName,
    /// Item bought.
    pub item: String,
}

/// Funds `plan.customers` customers, runs payments for `plan.duration`
/// with a progress line on stderr, then replays spent scrip to check that
/// the vendor refuses every replay.
pub async fn run(plan: &LoadPlan) -> anyhow::Result<LoadResult> {
    let mut channels = Vec::new();
    for _ in 0..plan.channels.max(1) {
        channels.push(
            connect(&plan.vendor)
                .await
                .context("connecting to the vendor node")?,
        );
    }
    let broker_channel = connect(&plan.broker)
        .await
        .context("connecting to the broker")?;

    let mut vendor_client = VendorServiceClient::new(channels[0].clone());
    let offers = protocol::prices(&mut vendor_client)
        .await
        .context("asking the vendor node for prices")?;
    let offer = offers.first().context("the vendor node serves no vendor")?;
    let cheapest = offer
        .items
        .iter()
        .min_by_key(|item| item.price)
        .context("the vendor sells nothing")?;
    if !offer.variants.contains(&plan.variant) {
        bail!(
            "vendor {} does not accept the {} variant",
            offer.vendor,
            plan.variant.name()
        );
    }
    let (vendor, item) = (offer.vendor.clone(), cheapest.name.clone());

    eprintln!(
        "funding {} customers through the broker ...",
        plan.customers
    );
    let mut setups = tokio::task::JoinSet::new();
    for index in 0..plan.customers {
        let broker = BrokerServiceClient::new(broker_channel.clone());
        let (plan, vendor) = (plan.clone(), vendor.clone());
        setups.spawn(async move { fund_customer(broker, &plan, &vendor, index).await });
    }
    let mut customers = Vec::new();
    while let Some(result) = setups.join_next().await {
        customers.push(result.context("customer setup task")??);
    }

    let accepted = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + plan.duration;
    let mut payers = tokio::task::JoinSet::new();
    for (index, customer) in customers.into_iter().enumerate() {
        let client = VendorServiceClient::new(channels[index % channels.len()].clone());
        let (accepted, rejected) = (accepted.clone(), rejected.clone());
        let (item, variant) = (item.clone(), plan.variant);
        payers.spawn(async move {
            pay_until(
                client, customer, &item, variant, deadline, &accepted, &rejected,
            )
            .await
        });
    }

    let progress = tokio::spawn(show_progress(
        accepted.clone(),
        rejected.clone(),
        started,
        deadline,
    ));
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut reasons: std::collections::BTreeMap<String, u64> = Default::default();
    let mut spent = Vec::new();
    while let Some(result) = payers.join_next().await {
        let outcome = result.context("payer task")?;
        latency_us.add(&outcome.latency_us)?;
        for (reason, count) in outcome.reasons {
            *reasons.entry(reason).or_default() += count;
        }
        spent.extend(outcome.first_scrip);
    }
    let elapsed = started.elapsed();
    progress.abort();
    eprintln!();

    let mut client = VendorServiceClient::new(channels[0].clone());
    let (replays_attempted, double_spends_accepted) =
        replay_spent(&mut client, &spent, &item).await;

    Ok(LoadResult {
        accepted: accepted.load(Ordering::Relaxed),
        rejected: rejected.load(Ordering::Relaxed),
        rejected_by_reason: reasons.into_iter().collect(),
        elapsed,
        latency_us,
        replays_attempted,
        double_spends_accepted,
        vendor,
        item,
    })
}

async fn fund_customer(
    mut broker: BrokerServiceClient<Channel>,
    plan: &LoadPlan,
    vendor: &VendorName,
    index: usize,
) -> anyhow::Result<Customer> {
    let info = protocol::broker_info(&mut broker)
        .await
        .context("asking the broker for its info")?;
    let (account, key) = protocol::open_account(&mut broker)
        .await
        .context("opening an account")?;
    let fund = plan.scrip_value.checked_add(plan.scrip_value)?;
    let reference = format!("bench-{index}-{account}");
    protocol::credit(&mut broker, &plan.operator_token, account, fund, &reference)
        .await
        .context("crediting a customer account (is the operator token right?)")?;
    let bought =
        protocol::buy_broker_scrip(&mut broker, info.suite, account, key.expose_bytes(), fund)
            .await
            .context("buying broker scrip")?;
    let exchanged = protocol::exchange(
        &mut broker,
        &bought.scrip,
        &bought.secret,
        vendor,
        plan.scrip_value,
    )
    .await
    .context("exchanging broker scrip for vendor scrip")?;
    Ok(Customer {
        first_scrip: exchanged.vendor_scrip.clone(),
        scrip: exchanged.vendor_scrip,
        secret: exchanged.vendor_secret,
    })
}

struct PayerOutcome {
    latency_us: Histogram<u64>,
    reasons: Vec<(String, u64)>,
    /// The customer's first scrip, if the vendor accepted it (so it is spent).
    first_scrip: Option<(Scrip, CustomerSecret)>,
}

async fn pay_until(
    mut client: VendorServiceClient<Channel>,
    customer: Customer,
    item: &str,
    variant: Variant,
    deadline: Instant,
    accepted: &AtomicU64,
    rejected: &AtomicU64,
) -> PayerOutcome {
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| unreachable!("the histogram bounds are valid"));
    let mut reasons: std::collections::BTreeMap<String, u64> = Default::default();
    let Customer {
        mut scrip,
        secret,
        first_scrip,
    } = customer;
    let mut paid_any = false;
    while Instant::now() < deadline {
        let sent = Instant::now();
        match protocol::pay(&mut client, &scrip, &secret, variant, item).await {
            Ok(paid) => {
                latency_us.saturating_record(sent.elapsed().as_micros() as u64);
                accepted.fetch_add(1, Ordering::Relaxed);
                paid_any = true;
                match paid.change {
                    Some(change) => scrip = change,
                    None => break,
                }
            }
            Err(error) => {
                rejected.fetch_add(1, Ordering::Relaxed);
                let reason = error.reason().unwrap_or("transport").to_owned();
                *reasons.entry(reason).or_default() += 1;
                // A refused payment leaves the scrip unspent unless it was a
                // double spend; a customer whose scrip is unusable stops.
                if error.reason() == Some("double_spend") || error.reason().is_none() {
                    break;
                }
            }
        }
    }
    PayerOutcome {
        latency_us,
        reasons: reasons.into_iter().collect(),
        first_scrip: paid_any.then_some((first_scrip, secret)),
    }
}

/// Spends every customer's first scrip again as a different payment (the
/// same item in the private variant): each must be refused. Returns
/// (attempted, accepted).
async fn replay_spent(
    client: &mut VendorServiceClient<Channel>,
    spent: &[(Scrip, CustomerSecret)],
    item: &str,
) -> (u64, u64) {
    let mut accepted = 0;
    for (scrip, secret) in spent {
        let replay = protocol::pay(client, scrip, secret, Variant::Private, item).await;
        if replay.is_ok() {
            accepted += 1;
        }
    }
    (spent.len() as u64, accepted)
}

async fn show_progress(
    accepted: Arc<AtomicU64>,
    rejected: Arc<AtomicU64>,
    started: Instant,
    deadline: Instant,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut last = (0u64, Instant::now());
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let count = accepted.load(Ordering::Relaxed);
        let rate = (count - last.0) as f64 / now.duration_since(last.1).as_secs_f64().max(1e-9);
        last = (count, now);
        let left = deadline.saturating_duration_since(now).as_secs();
        eprint!(
            "\r  {:>4.0}s  accepted {:>10}  rate {:>9.0}/s  rejected {:>6}  ({left}s left)   ",
            now.duration_since(started).as_secs_f64(),
            count,
            rate,
            rejected.load(Ordering::Relaxed),
        );
    }
}
