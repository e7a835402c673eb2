//! The load generator: a population of simulated customers doing a mix of
//! operations against a network of one or more brokers and vendor nodes.
//!
//! Each customer belongs to one broker (customers are dealt round the
//! brokers) and pays one vendor that its broker sells (dealt round the
//! vendors each broker sells, over every vendor node serving them). It
//! opens an account, is credited by the operator, buys one large piece of
//! broker scrip and exchanges some of it for vendor scrip; then, until the
//! time is up, it picks operations at random from the [`Mix`]:
//!
//! - `pay`: pays with its vendor scrip and keeps the change; when the
//!   scrip is used up it first exchanges broker scrip for more (counted as
//!   an exchange);
//! - `exchange`: exchanges broker scrip for fresh vendor scrip;
//! - `buy`: buys a small piece of broker scrip from its balance;
//! - `refund`: turns such a piece back into balance (buying one first if it
//!   holds none);
//! - attacks, each of which must be refused with its own reason: `replay`
//!   (scrip the vendor accepted earlier, in a new payment: `double_spend`),
//!   `tamper` (its current scrip with the value raised: `bad_certificate`)
//!   and `expired` (scrip minted correctly under a licence the load
//!   generator obtains from the vendor node, but expired: `expired`).
//!
//! In a closed loop each customer starts its next operation when the last
//! one is answered. With a target rate (open loop) each customer starts
//! operations on a fixed schedule and an operation's latency runs from its
//! scheduled start, so a network that falls behind shows it in latency
//! instead of hiding it; a customer has one operation in flight at a time,
//! so the population must be large enough for the rate.
//!
//! Where one vendor is served by several nodes (each owning some series),
//! a customer whose payment is refused as `wrong_node` or `unknown_series`
//! (which changes nothing) tries the next node serving that vendor.
//!
//! At the end the run proves that nothing was spent twice: every scrip ID#
//! accepted during the run must be unique, and each customer's first spent
//! scrip, presented again in a new payment, must be refused as a double
//! spend.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use millicent_client::ClientError;
use millicent_client::protocol::{self, Paid, VendorOfferSummary, connect};
use millicent_core::{
    Amount, CustId, CustomerKey, CustomerSecret, KeyRing, MasterSecret, Properties, Scrip,
    ScripBody, ScripId, SeriesKey, Suite, Variant, VendorName,
};
use millicent_proto as wire;
use millicent_proto::broker_service_client::BrokerServiceClient;
use millicent_proto::vendor_service_client::VendorServiceClient;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use tonic::transport::Channel;

use crate::load::{
    Funded, Payer, RETRY_PAUSE, ReplayCheck, Until, open_funded_account, other_stamped_variant,
    replay_spent, set_up_all,
};
use crate::mix::{Mix, Operation};
use crate::record::{OperationFigures, Outcome, Recorder, Second};

/// What each customer is credited with: enough for any run's exchanges,
/// purchases and refunds.
const CREDIT: Amount = Amount::new(1 << 40);
/// The broker scrip each customer buys at the start, to exchange from.
const BROKER_SCRIP: Amount = Amount::new(1 << 39);
/// The value of each piece of broker scrip bought by a `buy`.
const SMALL_PIECE: Amount = Amount::new(10);
/// How far in the past expired attack scrip expired.
const EXPIRED_BY_SECS: u64 = 3600;
/// The broker name under which the load generator asks for the licence it
/// mints expired scrip with.
const ATTACKER: &str = "millicent-bench-attacks";

/// Where and how hard to push.
#[derive(Clone, Debug)]
pub struct TrafficPlan {
    /// Broker gRPC URLs.
    pub brokers: Vec<String>,
    /// Vendor node gRPC URLs.
    pub vendors: Vec<String>,
    /// Operator tokens of the brokers, to credit accounts: one for all, or
    /// one per broker in the order of `brokers`.
    pub operator_tokens: Vec<String>,
    /// Licence tokens of the vendor nodes, needed for `expired` attacks:
    /// none, one for all, or one per vendor node in the order of `vendors`.
    pub licence_tokens: Vec<String>,
    /// Simulated customers.
    pub customers: usize,
    /// gRPC connections to each node.
    pub channels: usize,
    /// The measured part of the run, after the warm-up.
    pub duration: Duration,
    /// The first part of the run, left out of the figures.
    pub warm_up: Duration,
    /// Operations per second of all customers together (open loop); none
    /// for as fast as the network answers (closed loop).
    pub rate: Option<f64>,
    /// The operations and their shares.
    pub mix: Mix,
    /// Payment variant.
    pub variant: Variant,
    /// Pay on `PayStream` calls (one per connection) instead of one unary
    /// call per payment.
    pub stream: bool,
    /// Value of vendor scrip bought by each exchange.
    pub scrip_value: Amount,
    /// Set to end the run early.
    pub stop: Arc<AtomicBool>,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

/// What a run measured.
#[derive(Debug)]
pub struct TrafficResult {
    /// Per operation of [`Operation::ALL`], the figures of the measured
    /// part.
    pub operations: Vec<OperationFigures>,
    /// The run second by second, warm-up included.
    pub timeline: Vec<Second>,
    /// Length of the measured part.
    pub measured: Duration,
    /// Length of the warm-up.
    pub warm_up: Duration,
    /// The replay of every customer's first spent scrip after the run.
    pub replays: ReplayCheck,
    /// Scrip ID#s the vendor nodes accepted more than once during the run.
    pub duplicate_spends: u64,
    /// Payments accepted on a retry after their first answer was lost.
    pub recovered: u64,
    /// Why customers stopped before the end, one entry per customer.
    pub stopped: Vec<String>,
    /// The vendors paid.
    pub vendors: Vec<String>,
    /// The items bought.
    pub items: Vec<String>,
    /// The suite of the first vendor's scrip.
    pub suite: Option<Suite>,
}

impl TrafficResult {
    /// The figures of `operation`.
    pub fn of(&self, operation: Operation) -> &OperationFigures {
        &self.operations[operation.index()]
    }

    /// Attacks accepted, of every kind.
    pub fn breaches(&self) -> u64 {
        self.operations.iter().map(|figures| figures.breaches).sum()
    }
}

/// One vendor at one vendor node, as customers pay it.
struct Target {
    node: usize,
    vendor: VendorName,
    item: String,
    price: Amount,
    /// A payment that differs from the customers' (in variant or item), to
    /// replay spent scrip with.
    replay: (Variant, String),
    /// Mints expired scrip, when the mix has `expired` attacks.
    expired: Option<Arc<ExpiredMint>>,
}

/// A broker and the targets its customers pay.
struct Broker {
    clients: Vec<BrokerServiceClient<Channel>>,
    operator_token: String,
    suite: Suite,
    targets: Vec<usize>,
}

/// Runs the plan: sets up the customers, runs the mix for the warm-up and
/// the duration, then checks that nothing was spent twice.
pub async fn run(plan: &TrafficPlan) -> anyhow::Result<TrafficResult> {
    if plan.brokers.is_empty() || plan.vendors.is_empty() {
        bail!("a load run needs at least one broker and one vendor node");
    }
    let channels = plan.channels.max(1);
    let mut nodes = Vec::new();
    let mut targets = Vec::new();
    let mut suite = None;
    for (index, url) in plan.vendors.iter().enumerate() {
        let mut node_channels = Vec::with_capacity(channels);
        for _ in 0..channels {
            node_channels.push(
                connect(url)
                    .await
                    .with_context(|| format!("connecting to the vendor node {url}"))?,
            );
        }
        let mut client = VendorServiceClient::new(node_channels[0].clone());
        let offers = protocol::prices(&mut client)
            .await
            .with_context(|| format!("asking the vendor node {url} for prices"))?;
        for offer in &offers {
            suite = suite.or(offer.suites.first().copied());
            targets.push(target(plan, index, offer, &mut client).await?);
        }
        nodes.push(node_channels);
    }

    if plan.operator_tokens.is_empty() {
        bail!("a load run needs the brokers' operator token");
    }
    let mut brokers = Vec::new();
    for (index, url) in plan.brokers.iter().enumerate() {
        let token = &plan.operator_tokens[index % plan.operator_tokens.len()];
        brokers.push(broker(url, token, channels, &targets).await?);
    }

    eprintln!(
        "setting up {} customers (brokers: {}, vendor nodes: {}, vendors at them: {}) ...",
        plan.customers,
        brokers.len(),
        nodes.len(),
        targets.len()
    );
    let targets = Arc::new(targets);
    let brokers = Arc::new(brokers);
    let customers = set_up_all(plan.customers, |index| {
        let (targets, brokers) = (targets.clone(), brokers.clone());
        let value = plan.scrip_value;
        async move { Customer::set_up(index, &brokers, &targets, value).await }
    })
    .await?;

    let mut payers = Vec::with_capacity(nodes.len());
    for node_channels in &nodes {
        payers.push(Payer::open_all(node_channels, plan.stream).await?);
    }
    let payers = Arc::new(payers);
    let recorder = Arc::new(Recorder::new(plan.warm_up));
    let until = Arc::new(Until {
        deadline: recorder.started() + plan.warm_up + plan.duration,
        stop: plan.stop.clone(),
    });
    let interval = plan
        .rate
        .filter(|rate| *rate > 0.0)
        .map(|rate| Duration::from_secs_f64(plan.customers as f64 / rate));

    let mut tasks = tokio::task::JoinSet::new();
    for customer in customers {
        let context = Shared {
            targets: targets.clone(),
            brokers: brokers.clone(),
            payers: payers.clone(),
            recorder: recorder.clone(),
            variant: plan.variant,
            scrip_value: plan.scrip_value,
            open_loop: interval.is_some(),
        };
        let (until, mix) = (until.clone(), plan.mix.clone());
        tasks.spawn(async move { customer.run(&context, &mix, interval, &until).await });
    }
    let progress = plan
        .progress
        .then(|| tokio::spawn(show_progress(recorder.clone(), plan.warm_up, plan.duration)));

    let mut finished = Vec::new();
    while let Some(result) = tasks.join_next().await {
        finished.push(result.context("customer task")?);
    }
    let ended = Instant::now();
    if let Some(progress) = progress {
        progress.abort();
        let _ = progress.await;
    }

    let measured = ended.saturating_duration_since(recorder.measured_from());
    let warm_up = recorder.measured_from() - recorder.started();
    let recorder = Arc::try_unwrap(recorder)
        .map_err(|_| anyhow::anyhow!("a customer still holds the recorder"))?;
    let (operations, timeline) = recorder.finish();

    let mut accepted = Vec::new();
    let (mut stopped, mut recovered) = (Vec::new(), 0);
    let mut first_spent: Vec<Vec<(Scrip, CustomerSecret)>> =
        targets.iter().map(|_| Vec::new()).collect();
    for outcome in finished {
        accepted.extend(outcome.accepted);
        stopped.extend(outcome.stopped);
        recovered += outcome.recovered;
        if let Some((target, scrip, secret)) = outcome.first_spent {
            first_spent[target].push((scrip, secret));
        }
    }
    let duplicate_spends = duplicates(&mut accepted);

    let mut replays = ReplayCheck::default();
    for (target, spent) in targets.iter().zip(&first_spent) {
        let mut client = VendorServiceClient::new(nodes[target.node][0].clone());
        let (variant, item) = &target.replay;
        let check = replay_spent(&mut client, spent, *variant, item).await;
        replays.attempted += check.attempted;
        replays.refused += check.refused;
        replays.accepted += check.accepted;
        replays.inconclusive += check.inconclusive;
    }

    let vendors: BTreeSet<String> = targets
        .iter()
        .map(|target| target.vendor.as_str().to_owned())
        .collect();
    let items: BTreeSet<String> = targets.iter().map(|target| target.item.clone()).collect();
    Ok(TrafficResult {
        operations,
        timeline,
        measured,
        warm_up,
        replays,
        duplicate_spends,
        recovered,
        stopped,
        vendors: vendors.into_iter().collect(),
        items: items.into_iter().collect(),
        suite,
    })
}

/// How customers pay the vendor `offer` of vendor node `node`.
async fn target(
    plan: &TrafficPlan,
    node: usize,
    offer: &VendorOfferSummary,
    client: &mut VendorServiceClient<Channel>,
) -> anyhow::Result<Target> {
    let url = &plan.vendors[node];
    if !offer.variants.contains(&plan.variant) {
        bail!(
            "vendor {} at {url} does not accept the {} variant",
            offer.vendor,
            plan.variant.name()
        );
    }
    let mut items = offer.items.clone();
    items.sort_by_key(|item| item.price);
    let cheapest = items
        .first()
        .with_context(|| format!("vendor {} at {url} sells nothing", offer.vendor))?;
    // A replay must be another payment than the one that spent the scrip:
    // another stamped variant, or else another item.
    let other_variant = other_stamped_variant(plan.variant, &offer.variants);
    let replay = match (other_variant, items.get(1)) {
        (Some(variant), _) => (variant, cheapest.name.clone()),
        (None, Some(second)) => (plan.variant, second.name.clone()),
        (None, None) => bail!(
            "vendor {} at {url} takes one variant and sells one item, so spent scrip cannot be \
             replayed in a different payment; take replay out of the mix",
            offer.vendor
        ),
    };
    let expired = if plan.mix.includes(Operation::Expired) {
        let token = plan
            .licence_tokens
            .get(node % plan.licence_tokens.len().max(1))
            .context(
                "expired-scrip attacks need the vendor nodes' licence token (--licence-token or \
             MILLICENT_LICENCE_TOKEN) to mint scrip that is genuine but expired; or take expired \
             out of the mix",
            )?;
        Some(Arc::new(
            ExpiredMint::obtain(client, &offer.vendor, token)
                .await
                .with_context(|| {
                    format!(
                        "asking {url} for a licence to mint expired scrip of {}",
                        offer.vendor
                    )
                })?,
        ))
    } else {
        None
    };
    Ok(Target {
        node,
        vendor: offer.vendor.clone(),
        item: cheapest.name.clone(),
        price: cheapest.price,
        replay,
        expired,
    })
}

/// Connects to the broker at `url` and finds the targets it sells.
async fn broker(
    url: &str,
    operator_token: &str,
    channels: usize,
    targets: &[Target],
) -> anyhow::Result<Broker> {
    let mut clients = Vec::with_capacity(channels);
    for _ in 0..channels {
        clients.push(BrokerServiceClient::new(
            connect(url)
                .await
                .with_context(|| format!("connecting to the broker {url}"))?,
        ));
    }
    let info = protocol::broker_info(&mut clients[0])
        .await
        .with_context(|| format!("asking the broker {url} for its info"))?;
    let sold: Vec<usize> = targets
        .iter()
        .enumerate()
        .filter(|(_, target)| {
            info.vendors
                .iter()
                .any(|name| name == target.vendor.as_str())
        })
        .map(|(index, _)| index)
        .collect();
    if sold.is_empty() {
        bail!(
            "the broker {url} sells none of the vendors served by the vendor nodes given (it \
             sells {})",
            info.vendors.join(", ")
        );
    }
    Ok(Broker {
        clients,
        operator_token: operator_token.to_owned(),
        suite: info.suite,
        targets: sold,
    })
}

/// A licence held only to mint scrip that is genuine in every way but its
/// expiry.
struct ExpiredMint {
    keys: KeyRing,
    suite: Suite,
    series: u32,
    selector: u16,
    id_limit: u64,
}

impl ExpiredMint {
    async fn obtain(
        client: &mut VendorServiceClient<Channel>,
        vendor: &VendorName,
        token: &str,
    ) -> anyhow::Result<ExpiredMint> {
        let mut request = tonic::Request::new(wire::GrantLicenceRequest {
            vendor: vendor.as_str().to_owned(),
            broker: ATTACKER.to_owned(),
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}")
                .parse()
                .context("the licence token is not a valid header")?,
        );
        let licence = client
            .grant_licence(request)
            .await
            .map_err(ClientError::from_status)?
            .into_inner();
        let suite = u8::try_from(licence.suite)
            .ok()
            .and_then(|id| Suite::from_id(id).ok())
            .context("the licence names a suite this program does not know")?;
        let selector = u16::try_from(licence.customer_selector)
            .context("the licence's selector is too big")?;
        let mut keys = KeyRing::new(vendor.clone());
        keys.add_series(SeriesKey {
            series: licence.series,
            suite,
            expires_at: licence.expires_at,
            secret: MasterSecret::from_slice(suite, &licence.master_scrip_secret)?,
        });
        keys.add_customer_key(CustomerKey {
            selector,
            suite,
            secret: MasterSecret::from_slice(suite, &licence.master_customer_secret)?,
        });
        Ok(ExpiredMint {
            keys,
            suite,
            series: licence.series,
            selector,
            id_limit: licence.id_limit,
        })
    }

    /// A piece worth `value` that expired an hour ago, with its customer
    /// secret.
    fn mint(
        &self,
        vendor: &VendorName,
        value: Amount,
        rng: &mut StdRng,
    ) -> anyhow::Result<(Scrip, CustomerSecret)> {
        let ids = if self.id_limit == 0 {
            1 << 20
        } else {
            self.id_limit.min(1 << 20)
        };
        let seq = rng.random_range(0..ids) as u32;
        let cust_id = CustId::new(self.selector, rng.random_range(0..1u64 << 32))?;
        let now = protocol::now_ms() / 1000;
        let scrip = self.keys.mint(ScripBody {
            suite: self.suite,
            vendor: vendor.clone(),
            value,
            id: ScripId::new(self.series, seq),
            cust_id,
            expires_at: now - EXPIRED_BY_SECS,
            properties: Properties::default(),
        })?;
        let secret = self.keys.customer_secret(self.suite, cust_id)?;
        Ok((scrip, secret))
    }
}

/// What every customer of a run shares.
struct Shared {
    targets: Arc<Vec<Target>>,
    brokers: Arc<Vec<Broker>>,
    payers: Arc<Vec<Vec<Payer>>>,
    recorder: Arc<Recorder>,
    variant: Variant,
    scrip_value: Amount,
    /// Whether latency runs from each operation's scheduled start.
    open_loop: bool,
}

/// One simulated customer.
struct Customer {
    index: usize,
    broker: usize,
    /// The target it pays; another node of the same vendor after a
    /// `wrong_node` refusal.
    target: usize,
    client: BrokerServiceClient<Channel>,
    suite: Suite,
    account: Funded,
    /// Small pieces of broker scrip bought, waiting to be refunded.
    spares: Vec<(Scrip, CustomerSecret)>,
    /// Vendor scrip to pay with, if it holds any.
    vendor_scrip: Option<Scrip>,
    vendor_secret: CustomerSecret,
    /// The last vendor scrip the vendor accepted, to replay.
    last_spent: Option<(Scrip, CustomerSecret)>,
    /// The first vendor scrip accepted, to replay after the run.
    first_spent: Option<(usize, Scrip, CustomerSecret)>,
    /// Every (target, ID#) accepted.
    accepted: Vec<(u32, ScripId)>,
    /// Whether the current vendor scrip's last payment got no answer, so
    /// that an acceptance now is a recovery.
    retrying: bool,
    recovered: u64,
    rng: StdRng,
}

/// What a customer hands back at the end.
struct Finished {
    accepted: Vec<(u32, ScripId)>,
    first_spent: Option<(usize, Scrip, CustomerSecret)>,
    stopped: Option<String>,
    recovered: u64,
}

/// Why a customer cannot go on.
struct Stop(String);

impl Customer {
    async fn set_up(
        index: usize,
        brokers: &[Broker],
        targets: &[Target],
        scrip_value: Amount,
    ) -> anyhow::Result<Customer> {
        let broker_index = index % brokers.len();
        let broker = &brokers[broker_index];
        let target = broker.targets[(index / brokers.len()) % broker.targets.len()];
        let mut client = broker.clients[index % broker.clients.len()].clone();
        let reference = format!("load-{:016x}-{index}", rand::random::<u64>());
        let account = open_funded_account(
            &mut client,
            broker.suite,
            &broker.operator_token,
            CREDIT,
            BROKER_SCRIP,
            &reference,
        )
        .await?;
        let mut customer = Customer {
            index,
            broker: broker_index,
            target,
            client,
            suite: broker.suite,
            vendor_secret: account.broker_secret.clone(),
            account,
            spares: Vec::new(),
            vendor_scrip: None,
            last_spent: None,
            first_spent: None,
            accepted: Vec::new(),
            retrying: false,
            recovered: 0,
            rng: StdRng::seed_from_u64(rand::random()),
        };
        let vendor = targets[target].vendor.clone();
        customer
            .exchange_for(&vendor, scrip_value)
            .await
            .map_err(|error| {
                anyhow::anyhow!("exchanging broker scrip for vendor scrip: {error}")
            })?;
        Ok(customer)
    }

    /// Picks and performs operations until the run ends or the customer
    /// cannot go on.
    async fn run(
        mut self,
        context: &Shared,
        mix: &Mix,
        interval: Option<Duration>,
        until: &Until,
    ) -> Finished {
        // Open-loop customers start spread over one interval.
        let mut next =
            interval.map(|interval| Instant::now() + interval.mul_f64(self.rng.random::<f64>()));
        let mut stopped = None;
        while until.going() {
            let scheduled = match (&mut next, interval) {
                (Some(next), Some(interval)) => {
                    let at = *next;
                    *next += interval;
                    tokio::time::sleep_until(at.into()).await;
                    if !until.going() {
                        break;
                    }
                    at
                }
                _ => Instant::now(),
            };
            let operation = mix.pick(self.rng.random::<f64>());
            if let Err(Stop(reason)) = self.perform(context, operation, scheduled).await {
                stopped = Some(reason);
                break;
            }
        }
        Finished {
            accepted: self.accepted,
            first_spent: self.first_spent,
            stopped,
            recovered: self.recovered,
        }
    }

    async fn perform(
        &mut self,
        context: &Shared,
        operation: Operation,
        started: Instant,
    ) -> Result<(), Stop> {
        match operation {
            Operation::Pay => self.pay(context, started).await,
            Operation::Exchange => {
                let vendor = context.targets[self.target].vendor.clone();
                let outcome = self.exchange_for(&vendor, context.scrip_value).await;
                self.settle(context, Operation::Exchange, started, outcome)
                    .await
            }
            Operation::Buy => {
                let outcome = self.buy().await;
                context
                    .recorder
                    .record(self.index, Operation::Buy, started, outcome.as_outcome());
                Ok(())
            }
            Operation::Refund => self.refund(context, started).await,
            Operation::Replay => match self.last_spent.clone() {
                Some((scrip, secret)) => {
                    let (variant, item) = &context.targets[self.target].replay;
                    self.attack(
                        context,
                        Operation::Replay,
                        started,
                        &scrip,
                        &secret,
                        *variant,
                        item,
                    )
                    .await;
                    Ok(())
                }
                // Nothing spent yet to replay: pay instead.
                None => self.pay(context, started).await,
            },
            Operation::Tamper => {
                self.ensure_vendor_scrip(context).await?;
                let Some(scrip) = self.vendor_scrip.clone() else {
                    return Ok(());
                };
                let raised = ScripBody {
                    value: Amount::new(scrip.value().units().saturating_add(1_000_000)),
                    ..scrip.body().clone()
                };
                let tampered = match Scrip::decode(&raised.encode(), scrip.certificate().as_bytes())
                {
                    Ok(tampered) => tampered,
                    Err(error) => {
                        return Err(Stop(format!("cannot build tampered scrip: {error}")));
                    }
                };
                let secret = self.vendor_secret.clone();
                let target = &context.targets[self.target];
                self.attack(
                    context,
                    Operation::Tamper,
                    started,
                    &tampered,
                    &secret,
                    context.variant,
                    &target.item,
                )
                .await;
                Ok(())
            }
            Operation::Expired => {
                let target = &context.targets[self.target];
                let Some(mint) = target.expired.clone() else {
                    return Ok(());
                };
                let value = target
                    .price
                    .checked_add(target.price)
                    .unwrap_or(target.price);
                let (scrip, secret) = mint
                    .mint(&target.vendor, value, &mut self.rng)
                    .map_err(|error| Stop(format!("cannot mint expired scrip: {error:#}")))?;
                let item = target.item.clone();
                self.attack(
                    context,
                    Operation::Expired,
                    started,
                    &scrip,
                    &secret,
                    context.variant,
                    &item,
                )
                .await;
                Ok(())
            }
        }
    }

    /// Records the outcome of an exchange. A refusal that leaves the broker
    /// scrip unusable stops the customer; after any other failure it
    /// pauses before going on.
    async fn settle(
        &self,
        context: &Shared,
        operation: Operation,
        started: Instant,
        outcome: Result<(), ClientError>,
    ) -> Result<(), Stop> {
        context
            .recorder
            .record(self.index, operation, started, outcome.as_outcome());
        let Err(error) = outcome else {
            return Ok(());
        };
        if matches!(
            error.reason(),
            Some("double_spend" | "expired" | "insufficient_value" | "bad_certificate")
        ) {
            return Err(Stop(format!("{operation} refused: {error}")));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
        Ok(())
    }

    async fn pay(&mut self, context: &Shared, scheduled: Instant) -> Result<(), Stop> {
        self.ensure_vendor_scrip(context).await?;
        let Some(scrip) = self.vendor_scrip.clone() else {
            return Ok(());
        };
        // In a closed loop a payment's latency leaves out the exchange that
        // may have come first; in an open loop it runs from the schedule.
        let started = if context.open_loop {
            scheduled
        } else {
            Instant::now()
        };
        let target = &context.targets[self.target];
        let payer = &context.payers[target.node][self.index % context.payers[target.node].len()];
        let secret = self.vendor_secret.clone();
        let result = payer
            .clone()
            .pay(&scrip, &secret, context.variant, &target.item)
            .await;
        context
            .recorder
            .record(self.index, Operation::Pay, started, result.as_outcome());
        match result {
            Ok(Paid { change, .. }) => {
                self.recovered += u64::from(std::mem::take(&mut self.retrying));
                self.accepted.push((self.target as u32, scrip.id()));
                if self.first_spent.is_none() {
                    self.first_spent = Some((self.target, scrip.clone(), secret.clone()));
                }
                self.last_spent = Some((scrip, secret));
                self.vendor_scrip = change;
            }
            // The answer was lost: the same payment goes again next time,
            // and gets the recorded reply if it was accepted.
            Err(error) if error.reason().is_none() => {
                self.retrying = true;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => {
                let reason = error.reason().unwrap_or_default();
                if matches!(reason, "wrong_node" | "unknown_series")
                    && let Some(other) = self.other_node(context)
                {
                    // Nothing changed; the scrip belongs to another node.
                    self.target = other;
                } else {
                    // The scrip is of no more use; the next payment gets
                    // fresh scrip.
                    self.vendor_scrip = None;
                }
            }
        }
        Ok(())
    }

    /// The next target of the same vendor at another node, if any.
    fn other_node(&self, context: &Shared) -> Option<usize> {
        let vendor = &context.targets[self.target].vendor;
        let count = context.targets.len();
        (1..count)
            .map(|step| (self.target + step) % count)
            .find(|index| {
                let target = &context.targets[*index];
                target.vendor == *vendor && context.brokers[self.broker].targets.contains(index)
            })
    }

    /// Gets vendor scrip by exchange if the customer holds none that pays
    /// for its item.
    async fn ensure_vendor_scrip(&mut self, context: &Shared) -> Result<(), Stop> {
        let target = &context.targets[self.target];
        if self
            .vendor_scrip
            .as_ref()
            .is_some_and(|scrip| scrip.value() >= target.price)
        {
            return Ok(());
        }
        let vendor = target.vendor.clone();
        let started = Instant::now();
        let outcome = self.exchange_for(&vendor, context.scrip_value).await;
        self.settle(context, Operation::Exchange, started, outcome)
            .await
    }

    async fn exchange_for(
        &mut self,
        vendor: &VendorName,
        value: Amount,
    ) -> Result<(), ClientError> {
        let exchanged = protocol::exchange(
            &mut self.client,
            &self.account.broker_scrip,
            &self.account.broker_secret,
            vendor,
            value,
        )
        .await?;
        match exchanged.change {
            Some(change) => self.account.broker_scrip = change,
            None => {
                return Err(ClientError::Refused {
                    reason: "insufficient_value".to_owned(),
                    code: tonic::Code::FailedPrecondition,
                    message: "the customer's broker scrip is used up".to_owned(),
                });
            }
        }
        self.vendor_scrip = Some(exchanged.vendor_scrip);
        self.vendor_secret = exchanged.vendor_secret;
        self.retrying = false;
        Ok(())
    }

    async fn buy(&mut self) -> Result<(), ClientError> {
        let bought = protocol::buy_broker_scrip(
            &mut self.client,
            self.suite,
            self.account.account,
            self.account.key.expose_bytes(),
            SMALL_PIECE,
        )
        .await?;
        self.spares.push((bought.scrip, bought.secret));
        Ok(())
    }

    async fn refund(&mut self, context: &Shared, started: Instant) -> Result<(), Stop> {
        if self.spares.is_empty() {
            let bought_at = Instant::now();
            let outcome = self.buy().await;
            context
                .recorder
                .record(self.index, Operation::Buy, bought_at, outcome.as_outcome());
            if outcome.is_err() {
                return Ok(());
            }
        }
        let Some((scrip, secret)) = self.spares.pop() else {
            return Ok(());
        };
        let result =
            protocol::refund(&mut self.client, &scrip, &secret, self.account.account).await;
        if matches!(&result, Err(error) if error.reason().is_none()) {
            // Unknown outcome: refunding the same piece again is safe.
            self.spares.push((scrip, secret));
        }
        context.recorder.record(
            self.index,
            Operation::Refund,
            started,
            result.map(|_| ()).as_outcome(),
        );
        Ok(())
    }

    /// Sends an attack payment, which must be refused for the attack's
    /// reason.
    #[allow(clippy::too_many_arguments)]
    async fn attack(
        &mut self,
        context: &Shared,
        operation: Operation,
        started: Instant,
        scrip: &Scrip,
        secret: &CustomerSecret,
        variant: Variant,
        item: &str,
    ) {
        let target = &context.targets[self.target];
        let payer = &context.payers[target.node][self.index % context.payers[target.node].len()];
        let result = payer.clone().pay(scrip, secret, variant, item).await;
        let expected = operation.expected_refusal();
        let outcome = match &result {
            Ok(_) => Outcome::Breach,
            Err(error) => match error.reason() {
                None => Outcome::Lost,
                Some(reason) if Some(reason) == expected => Outcome::Done,
                Some(reason) => Outcome::Refused(reason),
            },
        };
        context
            .recorder
            .record(self.index, operation, started, outcome);
        if result.is_ok() {
            // The network took it, so its scrip counts as accepted: a second
            // acceptance shows as a double spend.
            self.accepted.push((self.target as u32, scrip.id()));
        }
    }
}

/// The outcome of a call, as recorded.
trait AsOutcome {
    fn as_outcome(&self) -> Outcome<'_>;
}

impl<T> AsOutcome for Result<T, ClientError> {
    fn as_outcome(&self) -> Outcome<'_> {
        match self {
            Ok(_) => Outcome::Done,
            Err(error) => match error.reason() {
                Some(reason) => Outcome::Refused(reason),
                None => Outcome::Lost,
            },
        }
    }
}

/// Sorts `accepted` and counts the entries equal to the one before.
fn duplicates(accepted: &mut [(u32, ScripId)]) -> u64 {
    accepted.sort_unstable();
    accepted
        .windows(2)
        .filter(|pair| pair[0] == pair[1])
        .count() as u64
}

/// Draws the progress bar until aborted.
async fn show_progress(recorder: Arc<Recorder>, warm_up: Duration, duration: Duration) {
    let total = (warm_up + duration).as_secs().max(1);
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos:>4}/{len}s {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut last = (recorder.progress(), Instant::now());
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let progress = recorder.progress();
        let seconds = now.duration_since(last.1).as_secs_f64().max(1e-9);
        let rate = |count: u64, before: u64| (count - before) as f64 / seconds;
        let phase = if now < recorder.measured_from() {
            "warm-up  "
        } else {
            "measuring"
        };
        bar.set_position(now.duration_since(recorder.started()).as_secs().min(total));
        bar.set_message(format!(
            "{phase} {:>8.0} ops/s {:>8.0} payments/s  errors {}  attacks accepted {}",
            rate(progress.operations, last.0.operations),
            rate(progress.payments, last.0.payments),
            progress.errors,
            progress.breaches,
        ));
        last = (progress, now);
        if now >= recorder.measured_from() + duration {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_accepted_twice_at_one_target_is_a_duplicate_spend() {
        let id = |seq| ScripId::new(7, seq);
        let mut accepted = vec![(0, id(1)), (1, id(1)), (0, id(2)), (0, id(1)), (0, id(3))];
        // The same ID# at two targets is two different pieces of scrip.
        assert_eq!(duplicates(&mut accepted), 1);
        assert_eq!(duplicates(&mut []), 0);
    }
}
