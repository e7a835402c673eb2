//! The gRPC `BrokerService`: each handler decodes and checks its request
//! (`convert`, `auth`), finds the shard the account or scrip belongs to,
//! does its work there in one atomic write, waits for the shard's commit,
//! and only then answers.
//!
//! Every handler runs inside [`observe`], which counts the call by outcome,
//! times it, and turns a refusal into a status with its reason.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use millicent_core::broker::{account_shard, scrip_shard};
use millicent_core::{Payment, Properties, ScripBody, ScripId, SealPurpose};
use millicent_proto as proto;
use millicent_proto::broker_service_server::BrokerService;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::accounts::{Method, Outcome};
use crate::cluster::Owner;
use crate::config::Settings;
use crate::links::BrokerLinks;
use crate::settlement::{Counterparty, Direction};
use crate::shard::Shard;
use crate::telemetry::{self, ScripKind};
use crate::{BrokerError, audit, auth, convert, exchange, network, refund, stream, unix_now};

/// Everything a running broker holds.
pub(crate) struct BrokerState {
    pub(crate) settings: Settings,
    pub(crate) shards: BTreeMap<u8, Shard>,
    pub(crate) brokers: BrokerLinks,
    /// Where clients reach this node.
    pub(crate) url: String,
    next_shard: AtomicUsize,
}

impl BrokerState {
    pub(crate) fn new(
        settings: Settings,
        shards: BTreeMap<u8, Shard>,
        brokers: BrokerLinks,
        url: String,
    ) -> BrokerState {
        BrokerState {
            settings,
            shards,
            brokers,
            url,
            next_shard: AtomicUsize::new(0),
        }
    }

    /// The shard of account `account_id`, if this node keeps it.
    pub(crate) fn account_shard(&self, account_id: u64) -> Result<&Shard, BrokerError> {
        self.local(account_shard(account_id), || {
            format!("account {account_id}")
        })
        .map_err(|error| match error {
            None => BrokerError::UnknownAccount { account_id },
            Some(error) => error,
        })
    }

    /// The shard that issued the broker scrip `id`, if this node keeps it.
    pub(crate) fn scrip_shard(&self, id: ScripId) -> Result<&Shard, BrokerError> {
        self.local(scrip_shard(id), || format!("broker scrip {id}"))
            .map_err(|error| match error {
                None => BrokerError::Protocol(millicent_core::Error::UnknownSeries(id.series())),
                Some(error) => error,
            })
    }

    /// Shard `shard`, if this node keeps it.
    pub(crate) fn shard(&self, shard: u8) -> Result<&Shard, BrokerError> {
        self.local(shard, || format!("shard {shard}"))
            .map_err(|error| {
                error.unwrap_or(BrokerError::InvalidArgument {
                    what: "shard",
                    detail: "no node of this broker keeps that shard",
                })
            })
    }

    /// The local shard, `Err(Some(wrong node))` when a peer keeps it,
    /// `Err(None)` when nobody does.
    fn local(
        &self,
        shard: u8,
        what: impl FnOnce() -> String,
    ) -> Result<&Shard, Option<BrokerError>> {
        match self.settings.cluster.owner_of(shard) {
            Owner::Here => self.shards.get(&shard).ok_or(None),
            Owner::Peer(peer) => Err(Some(BrokerError::WrongNode {
                what: what(),
                shard,
                node: peer.node.clone(),
                url: peer.url.clone(),
            })),
            Owner::Nobody => Err(None),
        }
    }

    /// The shard a new account goes to: this node's shards in turn.
    fn shard_for_new_account(&self) -> Result<&Shard, BrokerError> {
        let index = self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards.len().max(1);
        self.shards
            .values()
            .nth(index)
            .ok_or_else(|| BrokerError::Server {
                detail: "this node keeps no shard".to_owned(),
            })
    }

    /// Drops everything but the shards, so that each can be closed.
    pub(crate) fn into_shards(self) -> BTreeMap<u8, Shard> {
        self.shards
    }
}

/// The gRPC service over a broker's state.
#[derive(Clone)]
pub(crate) struct Broker {
    state: Arc<BrokerState>,
}

impl Broker {
    pub(crate) fn new(state: Arc<BrokerState>) -> Broker {
        Broker { state }
    }

    fn operator(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), BrokerError> {
        auth::check_bearer(metadata, self.state.settings.operator_token.as_deref())
    }

    async fn open_account(&self) -> Result<proto::OpenAccountReply, BrokerError> {
        let shard = self.state.shard_for_new_account()?;
        let account_id = shard.accounts.open_account()?;
        shard.ledger.commit().await?;
        telemetry::account_opened();
        let account_key = shard.keys.account_key(account_id);
        Ok(convert::open_account_reply(account_id, &account_key))
    }

    async fn credit(
        &self,
        request: Request<proto::CreditRequest>,
    ) -> Result<proto::CreditReply, BrokerError> {
        self.operator(request.metadata())?;
        let credit = convert::credit_from_wire(request.into_inner())?;
        let shard = self.state.account_shard(credit.account_id)?;
        let (_, now_ms) = unix_now();
        let outcome = shard.accounts.credit(
            &shard.books,
            credit.account_id,
            credit.amount,
            &credit.reference,
            now_ms,
        )?;
        shard.ledger.commit().await?;
        if let Outcome::Fresh(_) = outcome {
            telemetry::credited(credit.amount);
        }
        Ok(convert::credit_reply(outcome))
    }

    async fn buy_broker_scrip(
        &self,
        request: proto::BuyBrokerScripRequest,
    ) -> Result<proto::BuyBrokerScripReply, BrokerError> {
        let (now, now_ms) = unix_now();
        let settings = &self.state.settings;
        let suite = settings.suite;
        let purchase = convert::purchase_from_wire(request, suite)?;
        let shard = self.state.account_shard(purchase.call.account_id)?;
        let keys = &shard.keys;
        let account_key = keys.account_key(purchase.call.account_id);
        auth::verify_call(
            suite,
            account_key.expose_bytes(),
            &purchase.call,
            &purchase.amount.units().to_be_bytes(),
            now_ms,
            settings.clock_window_secs,
        )?;

        // Minted and sealed before the operation; a refused or repeated
        // call leaves an unused ID#, which costs one bit at the checker.
        let (id, series_expires_at) = keys.next_scrip_id(now)?;
        let cust_id = keys.next_cust_id()?;
        let ring = keys.ring();
        let scrip = ring.mint(ScripBody {
            suite,
            vendor: keys.name().clone(),
            value: purchase.amount,
            id,
            cust_id,
            expires_at: now
                .saturating_add(settings.scrip_lifetime_secs)
                .min(series_expires_at),
            properties: Properties::default(),
        })?;
        let secret = ring.customer_secret(suite, cust_id)?;
        let mut nonce = vec![0u8; suite.nonce_len()];
        rand::fill(&mut nonce[..]);
        let sealed = suite.seal(
            account_key.expose_bytes(),
            SealPurpose::BrokerScripSecret,
            &nonce,
            secret.expose_bytes(),
        )?;

        let outcome = shard.accounts.buy_broker_scrip(
            &shard.books,
            &purchase.call,
            purchase.amount,
            id,
            &format!("broker scrip {id}"),
            now_ms,
            |balance| convert::buy_reply_to_wire(&scrip, &sealed, balance).encode_to_vec(),
        )?;
        shard.ledger.commit().await?;
        if let Outcome::Fresh(_) = outcome {
            telemetry::scrip_issued(ScripKind::Broker, purchase.amount);
        }
        convert::decode_stored(&outcome.into_inner(), "purchase")
    }

    async fn get_account(
        &self,
        request: proto::GetAccountRequest,
    ) -> Result<proto::AccountStatement, BrokerError> {
        let (_, now_ms) = unix_now();
        let settings = &self.state.settings;
        let call =
            convert::account_call_from_wire(request.auth, Method::GetAccount, settings.suite)?;
        let shard = self.state.account_shard(call.account_id)?;
        auth::verify_call(
            settings.suite,
            shard.keys.account_key(call.account_id).expose_bytes(),
            &call,
            &[],
            now_ms,
            settings.clock_window_secs,
        )?;
        let outcome = shard.accounts.statement(&shard.books, &call, |statement| {
            convert::statement_to_wire(statement).encode_to_vec()
        })?;
        shard.ledger.commit().await?;
        convert::decode_stored(&outcome.into_inner(), "statement")
    }

    /// The shard of a payment in broker scrip: the one that issued it.
    fn paid_shard(&self, payment: &Payment) -> Result<&Shard, BrokerError> {
        let broker = &self.state.settings.name;
        let vendor = &payment.scrip.body().vendor;
        if vendor != broker {
            return Err(millicent_core::Error::WrongVendor {
                scrip_vendor: vendor.as_str().to_owned(),
                expected: broker.as_str().to_owned(),
            }
            .into());
        }
        self.state.scrip_shard(payment.scrip.id())
    }

    async fn exchange(
        &self,
        request: proto::ExchangeRequest,
    ) -> Result<proto::ExchangeReply, BrokerError> {
        let payment = convert::payment_from_wire(request)?;
        let shard = self.paid_shard(&payment)?;
        exchange::exchange(&self.state, shard, payment).await
    }

    /// An exchange as the unary call makes it, counted and timed: what each
    /// element of an exchange stream goes through.
    pub(crate) async fn observed_exchange(
        &self,
        request: proto::ExchangeRequest,
    ) -> Result<proto::ExchangeReply, Status> {
        observe("exchange", Broker::exchange(self, request))
            .await
            .map(Response::into_inner)
    }

    async fn refund(
        &self,
        request: proto::RefundRequest,
    ) -> Result<proto::RefundReply, BrokerError> {
        let payment = convert::refund_from_wire(request)?;
        let shard = self.paid_shard(&payment)?;
        refund::refund(&self.state, shard, payment).await
    }

    async fn renew(&self, request: proto::RenewRequest) -> Result<proto::RenewReply, BrokerError> {
        let renewal = convert::renewal_from_wire(request)?;
        let shard = self.state.shard(renewal.shard)?;
        refund::renew(&self.state, shard, renewal).await
    }

    async fn peer_exchange(
        &self,
        request: Request<proto::PeerExchangeRequest>,
    ) -> Result<proto::PeerExchangeReply, BrokerError> {
        let buyer = network::authenticate(&self.state.settings, &request)?;
        let purchase = convert::peer_purchase_from_wire(request.into_inner())?;
        network::sell(&self.state, &buyer, purchase).await
    }

    async fn settlement(
        &self,
        request: Request<proto::GetSettlementRequest>,
    ) -> Result<proto::Settlement, BrokerError> {
        self.operator(request.metadata())?;
        let settings = &self.state.settings;
        if request.get_ref().refresh {
            for shard in self.state.shards.values() {
                for vendor in &settings.vendors {
                    shard.settlement.settle(shard, vendor).await?;
                }
            }
        }
        let mut shards = Vec::with_capacity(self.state.shards.len());
        for shard in self.state.shards.values() {
            shards.push(
                shard
                    .settlement
                    .statement(shard, &settings.vendors, &settings.brokers)?,
            );
        }
        Ok(proto::Settlement { shards })
    }

    async fn payout(
        &self,
        request: Request<proto::PayoutRequest>,
    ) -> Result<proto::PayoutReply, BrokerError> {
        self.operator(request.metadata())?;
        let payout = convert::payout_from_wire(request.into_inner())?;
        let settings = &self.state.settings;
        let counterparty = if settings.vendor(&payout.counterparty).is_some() {
            Counterparty::Vendor(payout.counterparty)
        } else if settings.broker(&payout.counterparty).is_some() {
            Counterparty::Broker(payout.counterparty)
        } else {
            return Err(BrokerError::UnknownVendor {
                vendor: payout.counterparty.to_string(),
            });
        };
        let shard = self.state.shard(payout.shard)?;
        let (_, now_ms) = unix_now();
        let (owed, repeated) = shard.settlement.payout(
            shard,
            &counterparty,
            payout.direction,
            payout.amount,
            &payout.reference,
            now_ms,
        )?;
        shard.ledger.commit().await?;
        Ok(proto::PayoutReply {
            owed: owed.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
            repeated,
        })
    }

    async fn audit(
        &self,
        request: Request<proto::AuditRequest>,
    ) -> Result<proto::AuditReport, BrokerError> {
        self.operator(request.metadata())?;
        let state = self.state.clone();
        let report = tokio::task::spawn_blocking(move || audit::audit_live(&state))
            .await
            .map_err(|error| BrokerError::Server {
                detail: format!("the audit task failed: {error}"),
            })??;
        Ok(convert::audit_report_to_wire(&report))
    }

    fn broker_info(&self) -> proto::BrokerInfo {
        convert::broker_info(&self.state.settings, &self.state.url)
    }
}

/// What a payout settles, as checked by `convert`.
pub(crate) struct Payout {
    pub(crate) shard: u8,
    pub(crate) counterparty: millicent_core::VendorName,
    pub(crate) direction: Direction,
    pub(crate) amount: millicent_core::Amount,
    pub(crate) reference: String,
}

/// Runs one handler: counts it by outcome, times it, logs storage failures
/// and turns a refusal into a status.
async fn observe<T>(
    operation: &'static str,
    work: impl Future<Output = Result<T, BrokerError>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = work.await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(error) => error.reason(),
    };
    telemetry::operation(operation, outcome, started.elapsed());
    if let Err(error @ BrokerError::Storage(_)) = &result {
        tracing::error!(operation, %error, "storage failed");
    }
    result.map(Response::new).map_err(|error| error.to_status())
}

#[tonic::async_trait]
impl BrokerService for Broker {
    async fn open_account(
        &self,
        _request: Request<proto::OpenAccountRequest>,
    ) -> Result<Response<proto::OpenAccountReply>, Status> {
        observe("open_account", Broker::open_account(self)).await
    }

    async fn credit(
        &self,
        request: Request<proto::CreditRequest>,
    ) -> Result<Response<proto::CreditReply>, Status> {
        observe("credit", Broker::credit(self, request)).await
    }

    async fn buy_broker_scrip(
        &self,
        request: Request<proto::BuyBrokerScripRequest>,
    ) -> Result<Response<proto::BuyBrokerScripReply>, Status> {
        observe(
            "buy_broker_scrip",
            Broker::buy_broker_scrip(self, request.into_inner()),
        )
        .await
    }

    async fn exchange(
        &self,
        request: Request<proto::ExchangeRequest>,
    ) -> Result<Response<proto::ExchangeReply>, Status> {
        observe("exchange", Broker::exchange(self, request.into_inner())).await
    }

    type ExchangeStreamStream = stream::Replies;

    async fn exchange_stream(
        &self,
        request: Request<tonic::Streaming<proto::ExchangeStreamRequest>>,
    ) -> Result<Response<Self::ExchangeStreamStream>, Status> {
        Ok(Response::new(stream::serve(
            self.clone(),
            request.into_inner(),
            crate::server::CALL_TIMEOUT,
        )))
    }

    async fn get_account(
        &self,
        request: Request<proto::GetAccountRequest>,
    ) -> Result<Response<proto::AccountStatement>, Status> {
        observe(
            "get_account",
            Broker::get_account(self, request.into_inner()),
        )
        .await
    }

    async fn get_broker_info(
        &self,
        _request: Request<proto::GetBrokerInfoRequest>,
    ) -> Result<Response<proto::BrokerInfo>, Status> {
        observe("get_broker_info", async { Ok(self.broker_info()) }).await
    }

    async fn refund(
        &self,
        request: Request<proto::RefundRequest>,
    ) -> Result<Response<proto::RefundReply>, Status> {
        observe("refund", Broker::refund(self, request.into_inner())).await
    }

    async fn renew_vendor_scrip(
        &self,
        request: Request<proto::RenewRequest>,
    ) -> Result<Response<proto::RenewReply>, Status> {
        observe(
            "renew_vendor_scrip",
            Broker::renew(self, request.into_inner()),
        )
        .await
    }

    async fn peer_exchange(
        &self,
        request: Request<proto::PeerExchangeRequest>,
    ) -> Result<Response<proto::PeerExchangeReply>, Status> {
        observe("peer_exchange", Broker::peer_exchange(self, request)).await
    }

    async fn get_settlement(
        &self,
        request: Request<proto::GetSettlementRequest>,
    ) -> Result<Response<proto::Settlement>, Status> {
        observe("get_settlement", Broker::settlement(self, request)).await
    }

    async fn record_payout(
        &self,
        request: Request<proto::PayoutRequest>,
    ) -> Result<Response<proto::PayoutReply>, Status> {
        observe("record_payout", Broker::payout(self, request)).await
    }

    async fn audit(
        &self,
        request: Request<proto::AuditRequest>,
    ) -> Result<Response<proto::AuditReport>, Status> {
        observe("audit", Broker::audit(self, request)).await
    }
}
