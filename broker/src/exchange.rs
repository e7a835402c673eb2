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
//!    journal entry of the exchange and the record of the sale are
//!    written, before the spend record that stores the encoded reply for
//!    retries (see [`happened`] for why that order is enough);
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
use millicent_core::{Amount, CustomerSecret, Payment, Scrip, ScripId, VendorName};
use millicent_ledger::{SpendError, SpendOutcome, SpendStore, Writes};
use millicent_proto as proto;
use prost::Message;

use crate::books::{Account, Books, Dropped, ScripRole, Transaction, TxKind};
use crate::config::{Contract, Source};
use crate::licences::Licence;
use crate::network::{self, Bought};
use crate::service::BrokerState;
use crate::settlement::Settlement;
use crate::shard::Shard;
use crate::telemetry::{self, ScripKind};
use crate::warehouse::{Piece, Warehouse};
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
    // Refused before anything is bought: the dearest the price can be,
    // with the most another broker may charge on top, so that a piece
    // bought from it is never left unpaid for by a scrip worth too little.
    let most_extra = match source {
        Source::Broker(seller) => state
            .settings
            .broker(seller)
            .map_or(Amount::ZERO, |seller| seller.max_fee),
        Source::Licence(_) | Source::Warehouse(_) => Amount::ZERO,
    };
    verified.change_value(wanted.value.checked_add(fee)?.checked_add(most_extra)?)?;

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

    let mut made: Option<(proto::ExchangeReply, Transaction, u64)> = None;
    let mut unsold: Option<Piece> = None;
    let outcome = {
        let _writing = shard.books.writing();
        let outcome = shard
            .spends
            .spend(broker, paid.id(), request_stamp.as_bytes(), now, || {
                let supply = supply.ok_or_else(|| BrokerError::VendorUnavailable {
                    vendor: wanted.vendor.to_string(),
                    detail: "nothing to sell is at hand; try again".to_owned(),
                })?;
                let mut writes = Writes::new();
                let issued = supply.issue(shard, &mut writes, &wanted.vendor, wanted.value, now)?;
                unsold = issued.piece.clone();
                let sealed =
                    seal_customer_secret(paid.suite(), broker_secret, &seal_nonce, &issued.secret)?;
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
                let wire = convert::exchange_reply_to_wire(&issued.scrip, sealed, &reply);
                let bytes = wire.encode_to_vec();
                // The journal entry, then the record of the sale, each a
                // plain write, then (by the spend store) the spend record:
                // see `recover` for why no atomic batch is needed.
                let seq = shard.books.write_now(&tx)?;
                if let Err(error) = shard.ledger.apply_in_order(writes) {
                    undo_writes(&shard.books, &shard.settlement, &shard.warehouse, seq, &tx);
                    return Err(error.into());
                }
                made = Some((wire, tx, seq));
                Ok(bytes)
            });
        match (&outcome, &made) {
            // Applied while writers are still held off, so that no
            // checkpoint sees the entry without its balances.
            (Ok(SpendOutcome::Fresh(_)), Some((_, tx, _))) => shard.books.applied(tx),
            // The spend record failed after the entry was written.
            (Err(SpendError::Storage(_)), Some((_, tx, seq))) => {
                undo_writes(&shard.books, &shard.settlement, &shard.warehouse, *seq, tx)
            }
            _ => {}
        }
        outcome
    };

    restock_if_low(state, shard, &wanted.vendor);
    let reply = match outcome {
        Ok(SpendOutcome::Fresh(bytes)) => match made {
            Some((wire, _, _)) => {
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
                network::book_unused(&shard.books, &seller, &wanted.vendor, price, now_ms);
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

/// Whether the exchange `tx` records happened: its broker scrip is spent.
///
/// An exchange writes its journal entry, then the record of the sale,
/// then the spend record, each as a plain write rather than one atomic
/// batch, which would cost the store several times the bytes. The store
/// recovers a prefix of its writes, so after a crash the spend record
/// implies the rest; an entry without its spend record is of an exchange
/// that was never answered (the answer waits for the commit covering the
/// spend record), so [`recover`] drops it when the shard opens and undoes
/// what was written after it.
pub(crate) fn happened(tx: &Transaction, broker: &VendorName, spends: &SpendStore) -> bool {
    if tx.kind != TxKind::Exchange {
        return true;
    }
    tx.scrip
        .iter()
        .filter(|line| line.role == ScripRole::Spent && line.issuer.is_none())
        .all(|line| spends.is_spent(broker, line.id))
}

/// Undoes exchanges whose entries the books dropped on opening (see
/// [`happened`]): the record of the sale goes, a warehouse piece goes back
/// into stock, and a piece bought from another broker is still owed.
pub(crate) fn recover(
    books: &Books,
    settlement: &Settlement,
    warehouse: &Warehouse,
    dropped: &[Dropped],
) {
    for (seq, tx) in dropped {
        // What the exchange wrote goes, the entry with it, and a piece
        // bought from another broker is booked as owed, all in one atomic
        // write: a crash on the way leaves the entry, dropped again at the
        // next opening, and nothing undone twice.
        let orphans: Vec<Transaction> = tx
            .postings
            .iter()
            .filter_map(|posting| match (&posting.account, posting.amount < 0) {
                (Account::Broker(seller), true) => {
                    let vendor =
                        sold(tx).map_or_else(|| seller.clone(), |(vendor, _)| vendor.clone());
                    let price = Amount::new(posting.amount.unsigned_abs() as u64);
                    Some(network::unused_purchase(
                        seller,
                        &vendor,
                        price,
                        tx.timestamp_ms,
                    ))
                }
                _ => None,
            })
            .collect();
        let undone = (|| -> Result<(), BrokerError> {
            let mut writes = undo(books, settlement, warehouse, *seq, tx)?;
            let _writing = books.writing();
            for orphan in &orphans {
                books.stage(&mut writes, orphan)?;
            }
            books.ledger().apply(writes)?;
            for orphan in &orphans {
                books.applied(orphan);
            }
            Ok(())
        })();
        if let Err(error) = undone {
            tracing::error!(%error, entry = seq, "could not undo an exchange cut short");
            continue;
        }
        if let Some((vendor, id)) = sold(tx) {
            warehouse.restore(vendor, id);
        }
        tracing::warn!(
            entry = seq,
            "an exchange cut short by a crash before its answer was undone"
        );
    }
}

/// The vendor scrip an exchange sold.
fn sold(tx: &Transaction) -> Option<(&VendorName, ScripId)> {
    // The broker's own change is issued too, without a vendor.
    tx.scrip
        .iter()
        .filter(|line| line.role == ScripRole::Issued)
        .find_map(|line| line.issuer.as_ref().map(|vendor| (vendor, line.id)))
}

/// Removes what an exchange that did not happen wrote, its journal entry
/// and the record of its sale, in one atomic write. Failures are logged:
/// the shard's next opening finds the entry and removes what is left.
fn undo_writes(
    books: &Books,
    settlement: &Settlement,
    warehouse: &Warehouse,
    seq: u64,
    tx: &Transaction,
) {
    let undone = undo(books, settlement, warehouse, seq, tx)
        .and_then(|writes| Ok(books.ledger().apply(writes)?));
    if let Err(error) = undone {
        tracing::error!(%error, entry = seq, "could not undo an exchange");
    }
}

/// The writes that undo an exchange: its sale record goes, a warehouse
/// piece goes back into stock, and its journal entry goes.
fn undo(
    books: &Books,
    settlement: &Settlement,
    warehouse: &Warehouse,
    seq: u64,
    tx: &Transaction,
) -> Result<Writes, BrokerError> {
    let mut writes = Writes::new();
    if let Some((vendor, id)) = sold(tx) {
        settlement.forget_sold(&mut writes, vendor, id);
        warehouse.unsell(&mut writes, vendor, id)?;
    }
    books.discard(&mut writes, seq);
    Ok(writes)
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

#[cfg(test)]
mod tests {
    use millicent_core::ScripId;
    use millicent_ledger::Writes;

    use super::*;
    use crate::config::BrokerConfig;
    use crate::settlement::{self, SeriesKind};

    /// An exchange whose journal entry and record of sale were written,
    /// and whose spend record was not: what a crash can leave.
    fn interrupted(shard: &Shard, vendor: &VendorName) -> Transaction {
        let tx = Transaction::new(TxKind::Exchange, 1, "")
            .debit(Account::BrokerScrip, Amount::new(10))
            .credit(Account::VendorScrip(vendor.clone()), Amount::new(10))
            .scrip(ScripRole::Spent, None, ScripId::new(1, 3), Amount::new(10))
            .scrip(
                ScripRole::Issued,
                Some(vendor),
                ScripId::new(7, 0),
                Amount::new(10),
            );
        let mut writes = Writes::new();
        settlement::register_series(
            &mut writes,
            shard.settlement.table(),
            vendor,
            7,
            SeriesKind::Licence(crate::config::Contract::Redeemed),
            u64::MAX,
        );
        shard
            .settlement
            .record_sold(&mut writes, vendor, ScripId::new(7, 0), Amount::new(10));
        shard.ledger.apply(writes).unwrap();
        shard.books.write_now(&tx).unwrap();
        tx
    }

    #[tokio::test]
    async fn an_exchange_cut_short_before_its_spend_record_is_undone_on_opening() {
        let dir = tempfile::tempdir().unwrap();
        let settings = BrokerConfig::default().validate().unwrap();
        let vendor = VendorName::new("news.example").unwrap();
        {
            let shard = Shard::open(&settings, dir.path(), 0).await.unwrap();
            interrupted(&shard, &vendor);
            assert_eq!(
                settlement::sold_pieces(shard.settlement.table())
                    .unwrap()
                    .len(),
                1
            );
            shard.ledger.commit().await.unwrap();
            shard.close().await.unwrap();
        }
        let shard = Shard::open(&settings, dir.path(), 0).await.unwrap();
        assert_eq!(crate::books::entries(shard.books.table()).count(), 0);
        assert!(
            settlement::sold_pieces(shard.settlement.table())
                .unwrap()
                .is_empty()
        );
        assert_eq!(shard.books.balance(&Account::BrokerScrip), 0);
        shard.close().await.unwrap();
    }
}
