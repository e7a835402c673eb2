//! Sustained payment load: simulated customers that fund themselves through
//! a broker and then pay a vendor as fast as the vendor answers.
//!
//! Each customer is a task with its own chain of change: it pays with its
//! vendor scrip, takes the change, and pays with that, so every payment
//! depends on the vendor having answered the previous one. Customers share a
//! few gRPC channels, as a gateway in front of many users would.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use millicent_client::protocol::{self, connect};
use millicent_client::stream::PaymentStream;
use millicent_core::{Amount, CustomerSecret, Scrip, Suite, Variant, VendorName};
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
    /// Set to end the paying phase before its deadline.
    pub stop: Arc<AtomicBool>,
    /// Pay on `PayStream` calls (one per channel) instead of one unary
    /// `Pay` call per payment.
    pub stream: bool,
}

/// How a customer's payments travel.
#[derive(Clone)]
pub(crate) enum Payer {
    /// One unary `Pay` call per payment.
    Unary(VendorServiceClient<Channel>),
    /// A stream shared with the other customers on the same channel.
    Stream(Arc<PaymentStream>),
}

impl Payer {
    /// Payers for `channels`: one `PayStream` call on each if `stream`,
    /// else one unary client on each.
    pub(crate) async fn open_all(channels: &[Channel], stream: bool) -> anyhow::Result<Vec<Payer>> {
        let mut payers = Vec::with_capacity(channels.len());
        for channel in channels {
            let mut client = VendorServiceClient::new(channel.clone());
            payers.push(if stream {
                let stream = PaymentStream::open(&mut client)
                    .await
                    .context("opening a payment stream")?;
                Payer::Stream(Arc::new(stream))
            } else {
                Payer::Unary(client)
            });
        }
        Ok(payers)
    }

    pub(crate) async fn pay(
        &mut self,
        scrip: &Scrip,
        secret: &CustomerSecret,
        variant: Variant,
        item: &str,
    ) -> Result<protocol::Paid, millicent_client::ClientError> {
        match self {
            Payer::Unary(client) => protocol::pay(client, scrip, secret, variant, item).await,
            Payer::Stream(stream) => stream.pay(scrip, secret, variant, item).await,
        }
    }
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
    /// The replay of every customer's first, spent scrip after the run.
    pub replays: ReplayCheck,
    /// Payments accepted on a retry after their first answer was lost.
    pub recovered: u64,
    /// Tries whose answer was lost and that were sent again.
    pub lost: u64,
    /// Why customers stopped before the deadline, one entry per customer.
    pub stopped: Vec<String>,
    /// Vendor the load was sent to.
    pub vendor: VendorName,
    /// The suite of the vendor's scrip (the first its offer lists).
    pub suite: Option<Suite>,
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
    let suite = offer.suites.first().copied();
    // The replays at the end must be other payments than the ones that
    // spent the scrip, or the node rightly answers them as retries: another
    // stamped variant of the same item.
    let replay_variant =
        other_stamped_variant(plan.variant, &offer.variants).with_context(|| {
            format!(
                "vendor {} accepts no stamped variant besides {}, so spent scrip cannot be \
                 replayed in another payment",
                offer.vendor,
                plan.variant.name()
            )
        })?;

    eprintln!(
        "funding {} customers through the broker ...",
        plan.customers
    );
    let info = protocol::broker_info(&mut BrokerServiceClient::new(broker_channel.clone()))
        .await
        .context("asking the broker for its info")?;
    let customers = set_up_all(plan.customers, |index| {
        let broker = BrokerServiceClient::new(broker_channel.clone());
        let (plan, vendor) = (plan.clone(), vendor.clone());
        async move { fund_customer(broker, &plan, info.suite, &vendor, index).await }
    })
    .await?;

    let accepted = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + plan.duration;
    let payers_by_channel = Payer::open_all(&channels, plan.stream).await?;
    // One histogram for all: a customer's own would be an allocation of a
    // quarter of a megabyte each.
    let latency_us = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let mut payers = tokio::task::JoinSet::new();
    for (index, customer) in customers.into_iter().enumerate() {
        let client = payers_by_channel[index % payers_by_channel.len()].clone();
        let (accepted, rejected) = (accepted.clone(), rejected.clone());
        let latency_us = latency_us.clone();
        let (item, variant) = (item.clone(), plan.variant);
        let until = Until {
            deadline,
            stop: plan.stop.clone(),
        };
        payers.spawn(async move {
            let counters = Counters {
                accepted: &accepted,
                rejected: &rejected,
                latency_us: &latency_us,
            };
            pay_until(client, customer, &item, variant, &until, counters).await
        });
    }

    let progress = tokio::spawn(show_progress(
        accepted.clone(),
        rejected.clone(),
        started,
        deadline,
    ));
    let mut reasons: std::collections::BTreeMap<String, u64> = Default::default();
    let mut spent = Vec::new();
    let (mut stopped, mut recovered, mut lost) = (Vec::new(), 0, 0);
    while let Some(result) = payers.join_next().await {
        let outcome = result.context("payer task")?;
        stopped.extend(outcome.stopped);
        recovered += outcome.recovered;
        lost += outcome.lost;
        for (reason, count) in outcome.reasons {
            *reasons.entry(reason).or_default() += count;
        }
        spent.extend(outcome.first_scrip);
    }
    let elapsed = started.elapsed();
    progress.abort();
    eprintln!();

    let mut client = VendorServiceClient::new(channels[0].clone());
    let replays = replay_spent(&mut client, &spent, replay_variant, &item).await;

    Ok(LoadResult {
        accepted: accepted.load(Ordering::Relaxed),
        rejected: rejected.load(Ordering::Relaxed),
        rejected_by_reason: reasons.into_iter().collect(),
        elapsed,
        latency_us: Arc::try_unwrap(latency_us)
            .map_err(|_| anyhow::anyhow!("a payer still holds the latency histogram"))?
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
        replays,
        recovered,
        lost,
        stopped,
        vendor,
        suite,
        item,
    })
}

/// Most customers set up at once. Each setup is a few calls to a broker;
/// thousands of them started together queue more calls on one connection
/// than a node takes at a time, and the last ones fail.
pub(crate) const SETUP_CONCURRENCY: usize = 32;

/// Runs `setup(index)` for every index below `count`, at most
/// [`SETUP_CONCURRENCY`] at a time, and returns the results in index
/// order; the first failure fails the whole.
pub(crate) async fn set_up_all<T, F, Fut>(count: usize, setup: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
    let mut next = 0;
    while next < count || !tasks.is_empty() {
        while next < count && tasks.len() < SETUP_CONCURRENCY {
            let (index, setup) = (next, setup(next));
            tasks.spawn(async move { (index, setup.await) });
            next += 1;
        }
        if let Some(joined) = tasks.join_next().await {
            let (index, result) = joined.context("customer setup task")?;
            results[index] = Some(result?);
        }
    }
    Ok(results.into_iter().flatten().collect())
}

/// A customer's account at a broker, credited and holding broker scrip.
pub(crate) struct Funded {
    pub(crate) account: u64,
    pub(crate) key: protocol::AccountKey,
    pub(crate) broker_scrip: Scrip,
    pub(crate) broker_secret: CustomerSecret,
}

/// Opens an account at `broker` (whose suite is `suite`), has the
/// operator credit it with `credit` and buys broker scrip worth `scrip`
/// from it. `reference` makes the credit unique.
pub(crate) async fn open_funded_account(
    broker: &mut BrokerServiceClient<Channel>,
    suite: Suite,
    operator_token: &str,
    credit: Amount,
    scrip: Amount,
    reference: &str,
) -> anyhow::Result<Funded> {
    let (account, key) = protocol::open_account(broker, suite)
        .await
        .context("opening an account")?;
    let reference = format!("{reference}-{account}");
    protocol::credit(broker, operator_token, account, credit, &reference)
        .await
        .context("crediting a customer account (is the operator token right?)")?;
    let bought = protocol::buy_broker_scrip(broker, suite, account, key.expose_bytes(), scrip)
        .await
        .context("buying broker scrip")?;
    Ok(Funded {
        account,
        key,
        broker_scrip: bought.scrip,
        broker_secret: bought.secret,
    })
}

async fn fund_customer(
    mut broker: BrokerServiceClient<Channel>,
    plan: &LoadPlan,
    suite: Suite,
    vendor: &VendorName,
    index: usize,
) -> anyhow::Result<Customer> {
    let fund = plan.scrip_value.checked_add(plan.scrip_value)?;
    let bought = open_funded_account(
        &mut broker,
        suite,
        &plan.operator_token,
        fund,
        fund,
        &format!("bench-{index}"),
    )
    .await?;
    let exchanged = protocol::exchange(
        &mut broker,
        &bought.broker_scrip,
        &bought.broker_secret,
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

/// When the paying phase ends: at the deadline or when stopped.
pub(crate) struct Until {
    pub(crate) deadline: Instant,
    pub(crate) stop: Arc<AtomicBool>,
}

impl Until {
    pub(crate) fn going(&self) -> bool {
        Instant::now() < self.deadline && !self.stop.load(Ordering::Relaxed)
    }
}

/// Where customers count what they see.
struct Counters<'a> {
    accepted: &'a AtomicU64,
    rejected: &'a AtomicU64,
    latency_us: &'a Mutex<Histogram<u64>>,
}

struct PayerOutcome {
    reasons: Vec<(String, u64)>,
    /// The customer's first scrip, if the vendor accepted it (so it is spent).
    first_scrip: Option<(Scrip, CustomerSecret)>,
    /// Why the customer stopped before the deadline, if it did.
    stopped: Option<String>,
    /// Payments accepted on a retry after the answer to the first try was lost.
    recovered: u64,
    /// Tries whose answer was lost (no answer, or a transport error).
    lost: u64,
}

/// How long a customer waits before resending a payment whose answer was lost.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(200);

async fn pay_until(
    mut client: Payer,
    customer: Customer,
    item: &str,
    variant: Variant,
    until: &Until,
    counters: Counters<'_>,
) -> PayerOutcome {
    let Counters {
        accepted,
        rejected,
        latency_us,
    } = counters;
    let mut reasons: std::collections::BTreeMap<String, u64> = Default::default();
    let Customer {
        mut scrip,
        secret,
        first_scrip,
    } = customer;
    let (mut paid_any, mut stopped, mut recovered, mut retrying) = (false, None, 0, false);
    let mut lost = 0;
    while until.going() {
        let sent = Instant::now();
        match client.pay(&scrip, &secret, variant, item).await {
            Ok(paid) => {
                // Recording takes nanoseconds, so the lock is hardly ever
                // contended; a poisoned one still holds counts.
                latency_us
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .saturating_record(sent.elapsed().as_micros() as u64);
                accepted.fetch_add(1, Ordering::Relaxed);
                paid_any = true;
                recovered += u64::from(retrying);
                retrying = false;
                match paid.change {
                    Some(change) => scrip = change,
                    None => {
                        stopped = Some("ran out of scrip (use a larger --scrip-value)".to_owned());
                        break;
                    }
                }
            }
            // The answer was lost (the node may have died): the outcome is
            // unknown, so the customer sends the same payment again, which
            // the vendor answers with the recorded reply if it was accepted.
            Err(error) if error.reason().is_none() => {
                lost += 1;
                retrying = true;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => {
                rejected.fetch_add(1, Ordering::Relaxed);
                let reason = error.reason().unwrap_or("unknown").to_owned();
                *reasons.entry(reason.clone()).or_default() += 1;
                // Any other refusal leaves the scrip unusable for this run:
                // the customer stops and says why.
                stopped = Some(format!("refused: {error}"));
                break;
            }
        }
    }
    PayerOutcome {
        reasons: reasons.into_iter().collect(),
        first_scrip: paid_any.then_some((first_scrip, secret)),
        stopped,
        recovered,
        lost,
    }
}

/// What the replay check found.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayCheck {
    /// Replays sent.
    pub attempted: u64,
    /// Replays the vendor refused as double spends: the only right answer.
    pub refused: u64,
    /// Replays accepted: double spends.
    pub accepted: u64,
    /// Replays that got another refusal or no answer: the check could not
    /// be made for them.
    pub inconclusive: u64,
}

/// A stamped variant other than `used` among `accepted`: the node tells a
/// payment in it from one in `used`, so spent scrip presented in it is a
/// replay, not a retry.
pub(crate) fn other_stamped_variant(used: Variant, accepted: &[Variant]) -> Option<Variant> {
    [Variant::Private, Variant::Secure]
        .into_iter()
        .find(|variant| *variant != used && accepted.contains(variant))
}

/// Spends every piece of `spent` again as a payment for `item` in
/// `variant`, which must differ from the payment that spent it (in its
/// variant or its item): each must be refused as a double spend.
pub(crate) async fn replay_spent(
    client: &mut VendorServiceClient<Channel>,
    spent: &[(Scrip, CustomerSecret)],
    variant: Variant,
    item: &str,
) -> ReplayCheck {
    let mut check = ReplayCheck {
        attempted: spent.len() as u64,
        ..ReplayCheck::default()
    };
    for (scrip, secret) in spent {
        match protocol::pay(client, scrip, secret, variant, item).await {
            Ok(_) => check.accepted += 1,
            Err(error) if error.reason() == Some("double_spend") => check.refused += 1,
            Err(_) => check.inconclusive += 1,
        }
    }
    check
}

async fn show_progress(
    accepted: Arc<AtomicU64>,
    rejected: Arc<AtomicU64>,
    started: Instant,
    deadline: Instant,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut last = (0u64, Instant::now());
    loop {
        ticker.tick().await;
        let now = Instant::now();
        if now > deadline {
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn setups_run_a_bounded_number_at_a_time_and_come_back_in_order() {
        let running = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let results = set_up_all(4096, |index| {
            let (running, most) = (running.clone(), most.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(index)
            }
        })
        .await
        .unwrap();
        assert_eq!(results, (0..4096).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), SETUP_CONCURRENCY as u64);
    }

    #[tokio::test]
    async fn the_first_failed_setup_fails_them_all() {
        let result = set_up_all(100, |index| async move {
            if index == 57 {
                anyhow::bail!("customer 57 failed")
            }
            Ok(index)
        })
        .await;
        assert_eq!(result.unwrap_err().to_string(), "customer 57 failed");
    }
}
