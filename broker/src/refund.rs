//! Refunds of broker scrip and renewals of expired vendor scrip: both
//! turn a piece of scrip that will not be spent into value again, once.
//!
//! A **refund** is a secure-variant payment in broker scrip whose request
//! names an account of the same shard; its price is the scrip's whole
//! value, which is credited to the account. Like an exchange it spends the
//! scrip through the `SpendStore`, so it happens at most once and a retry
//! gets the same reply, and the spend, the balance, the account's history
//! entry and the journal entry are one atomic write made under the
//! account's lock.
//!
//! A **renewal** takes vendor scrip this shard sold (minted under licence
//! or from its warehouse) that expired less than `renewal_grace_secs` ago,
//! unspent, and gives fresh scrip of the same value. The customer proves
//! the scrip is theirs with a request stamp over it and the fixed request
//! `MC1-RENEW`, which the shard checks with the scrip's customer secret.
//! Whether the vendor accepted the scrip before it expired only the vendor
//! knows, so the shard needs a redemption report of the series whose
//! `as_of` is past the scrip's expiry (the bit of expired scrip can no
//! longer change), asking the vendor node for one if it has none. The
//! old piece is then spent in the shard's own `SpendStore`, under the
//! vendor's name, which makes the renewal single-use and its retry safe.
//!
//! In the books the old piece is retired (what was owed for it is no
//! longer owed: `vendor_scrip/V` for scrip owed at redemption, `payable/V`
//! for scrip owed at sale or bought in a block, which the vendor credits
//! back) and the new one issued as in an exchange.

use std::sync::Arc;

use millicent_core::broker::{RENEWAL_REQUEST, account_shard, refund_goods};
use millicent_core::exchange::{exchange_goods, seal_customer_secret};
use millicent_core::payment::{reply_stamp, request_stamp};
use millicent_core::{CustomerSecret, Payment};
use millicent_ledger::{SpendError, SpendOutcome, Writes};
use millicent_proto as proto;
use prost::Message;

use crate::accounts::EntryKind;
use crate::books::{Account, ScripRole, Transaction, TxKind};
use crate::config::Contract;
use crate::convert::{self, Renewal};
use crate::exchange::Supply;
use crate::service::BrokerState;
use crate::settlement::SeriesKind;
use crate::shard::Shard;
use crate::warehouse::PieceState;
use crate::{BrokerError, unix_now};

/// Refunds the broker scrip of `payment`, issued by `shard`, to the
/// account its request names.
pub(crate) async fn refund(
    _state: &Arc<BrokerState>,
    shard: &Shard,
    payment: Payment,
) -> Result<proto::RefundReply, BrokerError> {
    let (now, now_ms) = unix_now();
    let broker = shard.broker_name();
    let ring = shard.keys.ring();
    let verified = payment.verify(&ring, now)?;
    let request = convert::refund_request_from_plaintext(verified.request())?;
    let account_id = request.account_id;
    if account_shard(account_id) != shard.id {
        return Err(BrokerError::OtherShard {
            account_id,
            shard: shard.id,
        });
    }
    let Some(stamp) = verified.request_stamp() else {
        return Err(BrokerError::InvalidArgument {
            what: "refund",
            detail: "a refund is a secure-variant payment and needs a request stamp",
        });
    };
    let paid = verified.scrip().clone();
    let value = paid.value();
    let reference = format!("refund of broker scrip {}", paid.id());

    let mut made: Option<(proto::RefundReply, Transaction)> = None;
    let reply = {
        let _account = shard.accounts.lock(account_id);
        let _writing = shard.books.writing();
        let outcome = shard
            .spends
            .spend_with(broker, paid.id(), stamp.as_bytes(), now, || {
                let mut writes = Writes::new();
                let balance = shard.accounts.book(
                    &mut writes,
                    account_id,
                    EntryKind::Refund,
                    value,
                    &reference,
                    now_ms,
                )?;
                let goods = refund_goods(account_id, value.units(), balance.units());
                let reply = verified.reply(&ring, value, None, &goods, &[])?;
                let tx = Transaction::new(TxKind::Refund, now_ms, &reference)
                    .debit(Account::BrokerScrip, value)
                    .credit(Account::Customer(account_id), value)
                    .scrip(ScripRole::Spent, None, paid.id(), value);
                shard.books.stage(&mut writes, &tx)?;
                let wire = proto::RefundReply {
                    account_id,
                    credited: value.units(),
                    balance: balance.units(),
                    reply_stamp: reply
                        .reply_stamp
                        .map(|stamp| stamp.as_bytes().to_vec())
                        .unwrap_or_default(),
                };
                let bytes = wire.encode_to_vec();
                made = Some((wire, tx));
                Ok((bytes, writes))
            });
        spent_reply(shard, outcome, made, "refund", paid.id())?
    };
    shard.ledger.commit().await?;
    Ok(reply)
}

/// Renews the expired vendor scrip of `renewal`, sold by `shard`.
pub(crate) async fn renew(
    state: &Arc<BrokerState>,
    shard: &Shard,
    renewal: Renewal,
) -> Result<proto::RenewReply, BrokerError> {
    let (now, now_ms) = unix_now();
    let Renewal { scrip, stamp, .. } = renewal;
    let body = scrip.body();
    let (vendor, id, value, expires_at) = (&body.vendor, body.id, body.value, body.expires_at);
    let settings = state
        .settings
        .vendor(vendor)
        .ok_or_else(|| BrokerError::UnknownVendor {
            vendor: vendor.to_string(),
        })?;
    let unknown = || BrokerError::Protocol(millicent_core::Error::UnknownSeries(id.series()));
    let record = shard
        .settlement
        .series(vendor, id.series())?
        .ok_or_else(unknown)?;

    // The scrip is genuine and the customer holds its customer secret.
    let secret: CustomerSecret = match record.kind {
        SeriesKind::Licence(_) => {
            let licence = shard
                .licences
                .find(vendor, id.series())
                .ok_or_else(unknown)?;
            // Checked as of just before it expired: certificate, series.
            licence
                .ring()
                .verify(&scrip, expires_at.saturating_sub(1))?;
            licence
                .ring()
                .customer_secret(scrip.suite(), body.cust_id)?
        }
        SeriesKind::Warehouse => match shard.warehouse.piece(vendor, id)? {
            Some((PieceState::Sold, piece)) if piece.scrip == scrip => piece.secret,
            Some((PieceState::Sold, _)) => return Err(millicent_core::Error::BadCertificate.into()),
            _ => return Err(unknown()),
        },
    };
    if request_stamp(&secret, &scrip, RENEWAL_REQUEST) != stamp {
        return Err(millicent_core::Error::BadRequestStamp.into());
    }
    if now < expires_at {
        return Err(BrokerError::NotExpired { expires_at, now });
    }
    if now >= expires_at.saturating_add(state.settings.renewal_grace_secs) {
        return Err(millicent_core::Error::Expired { expires_at, now }.into());
    }

    let supply = if shard.spends.is_spent(vendor, id) {
        None
    } else {
        shard
            .settlement
            .ensure_final(shard, settings, &record, expires_at)
            .await?;
        if shard.settlement.is_redeemed(vendor, id)? {
            return Err(BrokerError::SpentAtVendor {
                vendor: vendor.to_string(),
                id,
            });
        }
        Some(Supply::prepare(state, shard, &settings.source, vendor, value, [0; 16], now).await?)
    };
    let retired = match record.kind {
        SeriesKind::Licence(Contract::Redeemed) => Account::VendorScrip(vendor.clone()),
        SeriesKind::Licence(Contract::Sold) | SeriesKind::Warehouse => {
            Account::Payable(vendor.clone())
        }
    };
    let mut seal_nonce = vec![0u8; scrip.suite().nonce_len()];
    rand::fill(&mut seal_nonce[..]);

    let mut made: Option<(proto::RenewReply, Transaction)> = None;
    let mut unsold = None;
    let reply = {
        let _writing = shard.books.writing();
        let outcome = shard
            .spends
            .spend_with(vendor, id, stamp.as_bytes(), now, || {
                let supply = supply.ok_or_else(|| BrokerError::VendorUnavailable {
                    vendor: vendor.to_string(),
                    detail: "nothing to renew with is at hand; try again".to_owned(),
                })?;
                let mut writes = Writes::new();
                let issued = supply.issue(shard, &mut writes, vendor, value, now)?;
                unsold = issued.piece.clone();
                let sealed =
                    seal_customer_secret(scrip.suite(), &secret, &seal_nonce, &issued.secret)?;
                let goods = exchange_goods(&issued.scrip, &sealed);
                let stamp = reply_stamp(scrip.suite(), &secret, &stamp, None, &goods);
                let tx = Transaction::new(
                    TxKind::Renewal,
                    now_ms,
                    &format!("renewal of {vendor} scrip {id}"),
                )
                .debit(retired, value)
                .credit(issued.account, issued.cost)
                .scrip(ScripRole::Retired, Some(vendor), id, value)
                .scrip(ScripRole::Issued, Some(vendor), issued.scrip.id(), value);
                shard.books.stage(&mut writes, &tx)?;
                let wire = proto::RenewReply {
                    vendor_scrip: Some(convert::scrip_to_wire(&issued.scrip)),
                    sealed_customer_secret: sealed,
                    reply_stamp: stamp.as_bytes().to_vec(),
                };
                let bytes = wire.encode_to_vec();
                made = Some((wire, tx));
                Ok((bytes, writes))
            });
        spent_reply(shard, outcome, made, "renewal", id)
    };
    crate::exchange::restock_if_low(state, shard, vendor);
    let reply = match reply {
        Ok(reply) => reply,
        Err(error) => {
            if let Some(piece) = unsold {
                shard.warehouse.put_back(vendor, piece);
            }
            return Err(error);
        }
    };
    shard.ledger.commit().await?;
    Ok(reply)
}

/// The reply of a spend: the one `made` for a fresh spend, whose journal
/// entry is applied to the books here (call it while writers are held off,
/// so that no checkpoint sees the entry without its balances), or the one
/// on record for a retry.
fn spent_reply<W: Message + Default>(
    shard: &Shard,
    outcome: Result<SpendOutcome, SpendError<BrokerError>>,
    made: Option<(W, Transaction)>,
    what: &'static str,
    id: millicent_core::ScripId,
) -> Result<W, BrokerError> {
    match outcome {
        Ok(SpendOutcome::Fresh(bytes)) => match made {
            Some((wire, tx)) => {
                shard.books.applied(&tx);
                Ok(wire)
            }
            None => convert::decode_stored(&bytes, what),
        },
        Ok(SpendOutcome::Retry(bytes)) => convert::decode_stored(&bytes, what),
        Err(SpendError::DoubleSpend) => Err(BrokerError::DoubleSpend { id }),
        Err(SpendError::Reply(error)) => Err(error),
        Err(SpendError::Storage(error)) => Err(error.into()),
    }
}
