//! The gRPC `BrokerService`: each handler decodes and checks its request
//! (`convert`, `auth`), does its work in one ledger transaction or spend,
//! waits for the ledger commit, and only then answers.
//!
//! Every handler runs inside [`observe`], which counts the call by outcome,
//! times it, and turns a refusal into a status with its reason.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use millicent_core::{Properties, ScripBody, SealPurpose};
use millicent_ledger::{Ledger, SpendStore};
use millicent_proto as proto;
use millicent_proto::broker_service_server::BrokerService;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::accounts::{Accounts, Method, Outcome};
use crate::config::Settings;
use crate::keys::BrokerKeys;
use crate::licences::Licences;
use crate::telemetry::{self, ScripKind};
use crate::{BrokerError, auth, convert, exchange, unix_now};

/// Everything a running broker holds.
pub(crate) struct BrokerState {
    pub(crate) settings: Settings,
    pub(crate) ledger: Ledger,
    pub(crate) accounts: Accounts,
    pub(crate) keys: BrokerKeys,
    pub(crate) licences: Licences,
    pub(crate) spends: SpendStore,
}

impl BrokerState {
    /// Drops every table handle and returns the ledger, so that it can be
    /// closed.
    pub(crate) fn into_ledger(self) -> Ledger {
        let BrokerState {
            settings,
            ledger,
            accounts,
            keys,
            licences,
            spends,
        } = self;
        drop((settings, accounts, keys, licences, spends));
        ledger
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

    async fn open_account(&self) -> Result<proto::OpenAccountReply, BrokerError> {
        let account_id = self.state.accounts.open_account()?;
        self.state.ledger.commit().await?;
        telemetry::account_opened();
        let account_key = self.state.keys.account_key(account_id);
        Ok(convert::open_account_reply(account_id, &account_key))
    }

    async fn credit(
        &self,
        request: Request<proto::CreditRequest>,
    ) -> Result<proto::CreditReply, BrokerError> {
        auth::check_bearer(
            request.metadata(),
            self.state.settings.operator_token.as_deref(),
        )?;
        let credit = convert::credit_from_wire(request.into_inner())?;
        let (_, now_ms) = unix_now();
        let outcome = self.state.accounts.credit(
            credit.account_id,
            credit.amount,
            &credit.reference,
            now_ms,
        )?;
        self.state.ledger.commit().await?;
        if let Outcome::Fresh(_) = outcome {
            telemetry::credited(credit.amount);
        }
        Ok(convert::credit_reply(outcome.into_inner()))
    }

    async fn buy_broker_scrip(
        &self,
        request: proto::BuyBrokerScripRequest,
    ) -> Result<proto::BuyBrokerScripReply, BrokerError> {
        let (now, now_ms) = unix_now();
        let keys = &self.state.keys;
        let suite = keys.suite();
        let purchase = convert::purchase_from_wire(request, suite)?;
        let account_key = keys.account_key(purchase.call.account_id);
        auth::verify_call(
            suite,
            account_key.expose_bytes(),
            &purchase.call,
            &purchase.amount.units().to_be_bytes(),
            now_ms,
            self.state.settings.clock_window_secs,
        )?;

        // Minted and sealed before the transaction, whose body may run more
        // than once; a refused or repeated call leaves an unused ID#, which
        // costs one bit at the checker.
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
                .saturating_add(self.state.settings.scrip_lifetime_secs)
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

        let outcome = self.state.accounts.buy_broker_scrip(
            &purchase.call,
            purchase.amount,
            &format!("broker scrip {id}"),
            now_ms,
            |balance| convert::buy_reply_to_wire(&scrip, &sealed, balance).encode_to_vec(),
        )?;
        self.state.ledger.commit().await?;
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
        let keys = &self.state.keys;
        let call = convert::account_call_from_wire(request.auth, Method::GetAccount, keys.suite())?;
        auth::verify_call(
            keys.suite(),
            keys.account_key(call.account_id).expose_bytes(),
            &call,
            &[],
            now_ms,
            self.state.settings.clock_window_secs,
        )?;
        let outcome = self.state.accounts.statement(&call, |statement| {
            convert::statement_to_wire(statement).encode_to_vec()
        })?;
        self.state.ledger.commit().await?;
        convert::decode_stored(&outcome.into_inner(), "statement")
    }

    fn broker_info(&self) -> proto::BrokerInfo {
        let keys = &self.state.keys;
        convert::broker_info(keys.name(), keys.suite(), self.state.licences.vendors())
    }
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
        observe(
            "exchange",
            exchange::exchange(&self.state, request.into_inner()),
        )
        .await
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
}
