//! The operator's side of the broker: settlement statements, payouts and
//! live audits over gRPC, as the `millicent-broker` binary runs them.
//!
//! Each command is given one node's URL. It asks that node for the cluster
//! map (`GetBrokerInfo`) and then calls every node that keeps a shard the
//! command is about, so an operator needs to know only one address.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use millicent_proto as proto;
use millicent_proto::broker_service_client::BrokerServiceClient;
use tonic::transport::Channel;

/// Where the broker is and the operator's token.
#[derive(Clone)]
pub struct Operator {
    /// URL of any node of the broker.
    pub url: String,
    /// The broker's operator token.
    pub token: String,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("url", &self.url)
            .field("token", &"..")
            .finish()
    }
}

/// A payout to record.
#[derive(Clone, Debug)]
pub struct PayoutOrder {
    /// The shard whose books it settles.
    pub shard: u8,
    /// A vendor or another broker.
    pub counterparty: String,
    /// Money received from another broker rather than paid.
    pub receive: bool,
    /// The amount, in the smallest unit.
    pub amount: u64,
    /// The operator's reference, unique per shard.
    pub reference: String,
}

/// The statements of every shard of the broker; with `refresh`, each
/// node first asks the vendor nodes for redemption reports.
pub async fn statement(
    operator: &Operator,
    refresh: bool,
) -> anyhow::Result<Vec<proto::ShardSettlement>> {
    let mut shards = Vec::new();
    for owner in cluster(operator).await? {
        let mut client = connect(&owner.url).await?;
        let request = authorized(proto::GetSettlementRequest { refresh }, &operator.token)?;
        let settlement = client
            .get_settlement(request)
            .await
            .with_context(|| format!("node {} refused the statement", owner.node))?
            .into_inner();
        shards.extend(settlement.shards);
    }
    shards.sort_by_key(|shard| shard.shard);
    Ok(shards)
}

/// Records `order` at the node keeping its shard; returns what is owed to
/// the counterparty after it, and whether the reference had recorded it
/// already.
pub async fn payout(operator: &Operator, order: &PayoutOrder) -> anyhow::Result<(i64, bool)> {
    let owners = cluster(operator).await?;
    let owner = owners
        .iter()
        .find(|owner| owner.shards.contains(&u32::from(order.shard)))
        .with_context(|| format!("no node of the broker keeps shard {}", order.shard))?;
    let mut client = connect(&owner.url).await?;
    let direction = if order.receive {
        proto::PayoutDirection::Receive
    } else {
        proto::PayoutDirection::Pay
    };
    let request = authorized(
        proto::PayoutRequest {
            shard: u32::from(order.shard),
            counterparty: order.counterparty.clone(),
            direction: direction as i32,
            amount: order.amount,
            reference: order.reference.clone(),
        },
        &operator.token,
    )?;
    let reply = client
        .record_payout(request)
        .await
        .map_err(refusal)
        .context("the payout was refused")?;
    let reply = reply.into_inner();
    Ok((reply.owed, reply.repeated))
}

/// Audits every node of the broker while it runs; one report per node.
pub async fn audit(operator: &Operator) -> anyhow::Result<Vec<(String, proto::AuditReport)>> {
    let mut reports = Vec::new();
    for owner in cluster(operator).await? {
        let mut client = connect(&owner.url).await?;
        let request = authorized(proto::AuditRequest {}, &operator.token)?;
        let report = client
            .audit(request)
            .await
            .map_err(refusal)
            .with_context(|| format!("node {} refused the audit", owner.node))?
            .into_inner();
        reports.push((owner.node, report));
    }
    Ok(reports)
}

/// The statements as a table for people.
pub fn format_statement(shards: &[proto::ShardSettlement]) -> String {
    let mut out = String::new();
    for shard in shards {
        let _ = writeln!(
            out,
            "shard {}: cash {}, fees earned {}",
            shard.shard, shard.cash, shard.fees
        );
        for vendor in &shard.vendors {
            let _ = writeln!(
                out,
                "  vendor {:<24} owed {:>12}  accrued {:>12}  paid {:>12}  outstanding {:>12}  \
                 stock {:>10}  reported {}",
                vendor.vendor,
                vendor.payable,
                vendor.accrued,
                vendor.paid,
                vendor.outstanding,
                vendor.stock,
                vendor.reported_at
            );
        }
        for broker in &shard.brokers {
            let (side, amount) = if broker.balance >= 0 {
                ("owes us", broker.balance)
            } else {
                ("is owed", -broker.balance)
            };
            let _ = writeln!(out, "  broker {:<24} {side} {amount}", broker.broker);
        }
    }
    out
}

/// The nodes of the broker, from the node at `operator.url`.
async fn cluster(operator: &Operator) -> anyhow::Result<Vec<proto::ShardOwner>> {
    let mut client = connect(&operator.url).await?;
    let info = client
        .get_broker_info(proto::GetBrokerInfoRequest {})
        .await
        .with_context(|| format!("asking {} for the broker's nodes", operator.url))?
        .into_inner();
    if info.cluster.is_empty() {
        bail!("{} names no node keeping any shard", operator.url);
    }
    Ok(info.cluster)
}

async fn connect(url: &str) -> anyhow::Result<BrokerServiceClient<Channel>> {
    let endpoint = millicent_transport::tls::endpoint(url)
        .with_context(|| format!("{url} is not a URL like http://127.0.0.1:7100"))?;
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach the broker at {url}"))?;
    Ok(BrokerServiceClient::new(channel))
}

fn authorized<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .context("the operator token may hold only visible ASCII")?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

fn refusal(status: tonic::Status) -> anyhow::Error {
    let reason = status
        .metadata()
        .get("millicent-reason")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    anyhow::anyhow!("{} ({reason})", status.message())
}
