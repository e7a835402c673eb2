//! The exchange of broker scrip for vendor scrip.
//!
//! An exchange is a secure-variant payment to the broker, in broker scrip,
//! whose request names a vendor and a value. The shard that issued the
//! broker scrip checks it like any vendor checks a payment (certificate,
//! expiry, customer secret, request stamp), prices it at the value plus the
//! exchange fee (plus the selling broker's fee, for a vendor bought from
//! another broker), and spends the broker scrip through the ledger's
//! `SpendStore`, which makes the reply at most once per piece of scrip:
//!
//! 1. everything that can be refused is refused before the spend, so a
//!    refusal spends nothing;
//! 2. the vendor scrip's source is made ready before the spend, because
//!    that may need the network and the spend holds a lock: a licence is
//!    obtained, or a warehouse is found stocked, or the scrip is bought
//!    from the broker that sells it (with a request ID derived from the
//!    payment, so that a retry buys nothing twice);
//! 3. inside the spend, and only for a fresh one, the vendor scrip is
//!    minted (or taken from the warehouse, or the bought piece used), its
//!    customer secret is sealed under the broker scrip's, change is minted
//!    in the shard's current series with the same Cust ID#, and the
//!    journal entry of the exchange is staged; the encoded reply is what
//!    the spend stores for retries, and the spend record, the journal
//!    entry and the record of the sale are written in one atomic write;
//! 4. the reply is sent after the ledger commit that makes all of it, and
//!    the ID reservations, durable.
//!
//! A crash before the commit loses nothing the customer has seen; a crash
//! after it leaves the scrip spent, the exchange in the books and its
//! reply on record, so the customer's retry (same scrip, same request
//! stamp) gets the same reply.

use std::sync::Arc;

use millicent_core::exchange::{exchange_goods, seal_customer_secret};
use millicent_core::payment::ChangeSlot;
use millicent_core::{Amount, CustomerSecret, Payment, Scrip, VendorName};
use millicent_ledger::{SpendError, SpendOutcome, Writes};
use millicent_proto as proto;
use prost::Message;

use crate::books::{Account, ScripRole, Transaction, TxKind};
use crate::config::{Contract, Source};
use crate::licences::Licence;
use crate::network::{self, Bought};
use crate::service::BrokerState;
use crate::shard::Shard;
use crate::telemetry::{self, ScripKind};
use crate::warehouse::Piece;
use crate::{BrokerError, convert, unix_now};

/// Where the vendor scrip of one exchange comes from, made ready before
/// the spend.
pub(crate) enum Supply {
    Licence(Arc<Licence>),
    Warehouse,
    Broker(Box<Bought>),
}

/// The vendor scrip an exchange hands out, and how the books see it.
pub(crate) struct Issued {
    pub(crate) scrip: Scrip,
    pub(crate) secret: CustomerSecret,
    /// The account credited with the scrip's value (or, for a purchase
    /// from another broker, with its price).
    pub(crate) account: Account,
    pub(crate) cost: Amount,
    /// The warehouse piece sold, to put back if the sale fails.
    pub(crate) piece: Option<Piece>,
}

impl Supply {
    /// Makes the vendor scrip of `vendor` worth `value` ready to be handed
    /// out by `shard`, as `source` says.
    pub(crate) async fn prepare(
        state: &BrokerState,
        shard: &Shard,
        source: &Source,
        vendor: &VendorName,
        value: Amount,
        request_id: [u8; 16],
        now: u64,
    ) -> Result<Supply, BrokerError> {
        match source {
            Source::Licence(_) => Ok(Supply::Licence(shard.licences.get(vendor, now).await?)),
            Source::Warehouse(warehousing) => {
                if value != warehousing.value {
                    return Err(BrokerError::WrongValue {
                        vendor: vendor.to_string(),
                        asked: value.units(),
                        sold: warehousing.value.units(),
                    });
                }
                Ok(Supply::Warehouse)
            }
            Source::Broker(broker) => {
                let bought =
                    network::buy(state, shard, broker, vendor, value, request_id, now).await?;
                Ok(Supply::Broker(Box::new(bought)))
            }
        }
    }

    /// What the selling broker charges on top of the value, if any.
    pub(crate) fn extra_fee(&self) -> Amount {
        match self {
            Supply::Broker(bought) => bought.fee,
            Supply::Licence(_) | Supply::Warehouse => Amount::ZERO,
        }
    }

    /// Hands out the scrip: mints it, takes it from the warehouse or uses
    /// the piece bought, adding the record of the sale to `writes`.
    pub(crate) fn issue(
        self,
        shard: &Shard,
        writes: &mut Writes,
        vendor: &VendorName,
        value: Amount,
        now: u64,
    ) -> Result<Issued, BrokerError> {
        match self {
            Supply::Licence(licence) => {
                let (scrip, secret) = licence.mint(value, now)?;
                shard
                    .settlement
                    .record_sold(writes, vendor, scrip.id(), value);
                let account = match licence.contract() {
                    Contract::Redeemed => Account::VendorScrip(vendor.clone()),
                    Contract::Sold => Account::Payable(vendor.clone()),
                };
                Ok(Issued {
                    scrip,
                    secret,
                    account,
                    cost: value,
                    piece: None,
                })
            }
            Supply::Warehouse => {
                let piece = shard.warehouse.take(vendor, value, now)?;
                shard.warehouse.record_sold(writes, &piece);
                Ok(Issued {
                    scrip: piece.scrip.clone(),
                    secret: piece.secret.clone(),
                    account: Account::Warehouse(vendor.clone()),
                    cost: value,
                    piece: Some(piece),
                })
            }
            Supply::Broker(bought) => {
                let Bought {
                    scrip,
                    secret,
                    broker,
                    price,
                    ..
                } = *bought;
                Ok(Issued {
                    scrip,
                    secret,
                    account: Account::Broker(broker),
                    cost: price,
                    piece: None,
                })
            }
        }
    }
}

/// Exchanges the broker scrip of `payment`, issued by `shard`, for vendor
/// scrip.
pub(crate) async fn exchange(
    state: &Arc<BrokerState>,
    shard: &Shard,
    payment: Payment,
) -> Result<proto::ExchangeReply, BrokerError> {
    let (now, now_ms) = unix_now();
    let broker = shard.broker_name();

    let verified = payment.verify(&shard.keys.ring(), now)?;
    let wanted = convert::exchange_request_from_plaintext(verified.request())?;
    let source =
        state
            .settings
            .sources
            .get(&wanted.vendor)
            .ok_or_else(|| BrokerError::UnknownVendor {
                vendor: wanted.vendor.to_string(),
            })?;
    let paid = verified.scrip().clone();
    let (Some(request_stamp), Some(broker_secret)) =
        (verified.request_stamp(), verified.customer_secret())
    else {
        return Err(BrokerError::InvalidArgument {
            what: "exchange",
            detail: "an exchange is a secure-variant payment and needs a request stamp",
        });
    };
    let fee = state.settings.exchange_fee;
    // Refused before anything is bought: the cheapest the price can be.
    verified.change_value(wanted.value.checked_add(fee)?)?;

    // Spent scrip is answered from the reply record (or refused) without
    // supplying anything, so it needs no licence, stock or other broker: a
    // retry still works while they are unreachable.
    let supply = if shard.spends.is_spent(broker, paid.id()) {
        None
    } else {
        let request_id = network::request_id(shard.id, &paid, request_stamp);
        Some(
            Supply::prepare(
                state,
                shard,
                source,
                &wanted.vendor,
                wanted.value,
                request_id,
                now,
            )
            .await?,
        )
    };
    let bought_price = match &supply {
        Some(Supply::Broker(bought)) => Some((bought.broker.clone(), bought.price)),
        _ => None,
    };
    let extra_fee = supply.as_ref().map_or(Amount::ZERO, Supply::extra_fee);
    let price = wanted.value.checked_add(fee)?.checked_add(extra_fee)?;
    let change_value = verified.change_value(price)?;
    let mut seal_nonce = vec![0u8; paid.suite().nonce_len()];
    rand::fill(&mut seal_nonce[..]);

    let mut made: Option<(proto::ExchangeReply, Transaction)> = None;
    let mut unsold: Option<Piece> = None;
    let outcome = {
        let _writing = shard.books.writing();
        let outcome =
            shard
                .spends
                .spend_with(broker, paid.id(), request_stamp.as_bytes(), now, || {
                    let supply = supply.ok_or_else(|| BrokerError::VendorUnavailable {
                        vendor: wanted.vendor.to_string(),
                        detail: "nothing to sell is at hand; try again".to_owned(),
                    })?;
                    let mut writes = Writes::new();
                    let issued =
                        supply.issue(shard, &mut writes, &wanted.vendor, wanted.value, now)?;
                    unsold = issued.piece.clone();
                    let sealed = seal_customer_secret(
                        paid.suite(),
                        broker_secret,
                        &seal_nonce,
                        &issued.secret,
                    )?;
                    let goods = exchange_goods(&issued.scrip, &sealed);
                    let slot = change_slot(shard, change_value, paid.body().expires_at, now)?;
                    // Taken after the change's ID#, which may have started a series.
                    let ring = shard.keys.ring();
                    // The secure variant seals nothing, so the goods nonce is unused.
                    let reply = verified.reply(&ring, price, slot, &goods, &[])?;

                    let mut tx = Transaction::new(TxKind::Exchange, now_ms, "")
                        .debit(Account::BrokerScrip, paid.value())
                        .credit(Account::BrokerScrip, change_value)
                        .credit(issued.account, issued.cost)
                        .credit(Account::Fees, fee)
                        .scrip(ScripRole::Spent, None, paid.id(), paid.value());
                    if let Some(change) = &reply.change {
                        tx = tx.scrip(ScripRole::Issued, None, change.id(), change_value);
                    }
                    tx = tx.scrip(
                        ScripRole::Issued,
                        Some(&wanted.vendor),
                        issued.scrip.id(),
                        wanted.value,
                    );
                    shard.books.stage(&mut writes, &tx)?;
                    let wire = convert::exchange_reply_to_wire(&issued.scrip, sealed, &reply);
                    let bytes = wire.encode_to_vec();
                    made = Some((wire, tx));
                    Ok((bytes, writes))
                });
        // Applied while writers are still held off, so that no checkpoint
        // sees the entry without its balances.
        if let (Ok(SpendOutcome::Fresh(_)), Some((_, tx))) = (&outcome, &made) {
            shard.books.applied(tx);
        }
        outcome
    };

    restock_if_low(state, shard, &wanted.vendor);
    let reply = match outcome {
        Ok(SpendOutcome::Fresh(bytes)) => match made {
            Some((wire, _)) => {
                telemetry::scrip_issued(ScripKind::Vendor, wanted.value);
                wire
            }
            None => convert::decode_stored(&bytes, "exchange")?,
        },
        Ok(SpendOutcome::Retry(bytes)) => convert::decode_stored(&bytes, "exchange")?,
        Err(error) => {
            if let Some(piece) = unsold {
                shard.warehouse.put_back(&wanted.vendor, piece);
            }
            if let Some((seller, price)) = bought_price {
                network::book_unused(shard, &seller, &wanted.vendor, price, now_ms);
            }
            return Err(match error {
                SpendError::DoubleSpend => BrokerError::DoubleSpend { id: paid.id() },
                SpendError::Reply(error) => error,
                SpendError::Storage(error) => error.into(),
            });
        }
    };
    // A retry may have arrived before the first reply's commit finished:
    // it too waits for durability before answering.
    shard.ledger.commit().await?;
    Ok(reply)
}

/// Where the change goes: a fresh ID# in the shard's current series,
/// expiring with the scrip it replaces (never after its series).
pub(crate) fn change_slot(
    shard: &Shard,
    change_value: Amount,
    paid_expires_at: u64,
    now: u64,
) -> Result<Option<ChangeSlot>, BrokerError> {
    if change_value.is_zero() {
        return Ok(None);
    }
    let (id, series_expires_at) = shard.keys.next_scrip_id(now)?;
    Ok(Some(ChangeSlot {
        id,
        expires_at: paid_expires_at.min(series_expires_at),
    }))
}

/// Buys the next warehouse block of `vendor` in the background when its
/// stock runs low.
pub(crate) fn restock_if_low(state: &Arc<BrokerState>, shard: &Shard, vendor: &VendorName) {
    if !shard.warehouse.begin_restock(vendor) {
        return;
    }
    let Some(settings) = state.settings.vendor(vendor).cloned() else {
        shard.warehouse.restocked(vendor);
        return;
    };
    let (state, shard_id) = (state.clone(), shard.id);
    tokio::spawn(async move {
        if let Some(shard) = state.shards.get(&shard_id) {
            let (now, now_ms) = unix_now();
            if let Err(error) = shard
                .warehouse
                .buy_block(shard, &settings, now, now_ms)
                .await
            {
                tracing::warn!(
                    vendor = %settings.name,
                    shard = shard_id,
                    %error,
                    "buying a warehouse block failed"
                );
            }
            shard.warehouse.restocked(&settings.name);
        }
    });
}
