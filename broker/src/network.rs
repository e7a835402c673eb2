//! The broker network: buying vendor scrip from another broker for a
//! customer, and selling it to another broker.
//!
//! A broker that has no licence or warehouse for a vendor may list, in
//! `[[brokers]]`, another broker that sells it. An exchange for that vendor
//! then buys the scrip from the other broker (`PeerExchange`) before its
//! spend, hands the piece to the customer with its customer secret sealed
//! as in any exchange, and owes the other broker the price: the books
//! credit `broker/B`. The customer pays the value, this broker's fee and
//! the other broker's fee. The seller books the same sale from its side:
//! `broker/A` owes it the price. Operators settle the two balances with
//! payouts; `GetSettlement` shows them on both sides.
//!
//! # Trust
//!
//! The two brokers share a token, which the buyer presents as a bearer
//! token and the seller compares in constant time with the token it has
//! for the buyer's name; a call without it learns nothing. Neither trusts
//! the other's messages more than a customer's: the seller checks the
//! request like any input, the buyer checks the piece it gets (vendor,
//! value, expiry, secret) and refuses a price above the `max_fee` it
//! accepts. The customer secret travels in the clear, as a licence's
//! secrets do: run brokers on a private network until TLS is there.
//!
//! # Exactly once
//!
//! The buyer derives the purchase's request ID from the exchange it serves
//! (the shard, the broker scrip's ID# and its request stamp), and the
//! seller keeps the reply of every request ID it answered: an exchange
//! retried after a lost reply buys nothing twice and gets the same piece.
//! A purchase whose exchange then fails (another request spent the broker
//! scrip first) is owed all the same; the buyer books it as a loss, so
//! both brokers' books still agree.

use std::sync::Arc;

use millicent_core::{Amount, CustomerSecret, Mac, Scrip, VendorName};
use millicent_ledger::Writes;
use millicent_proto as proto;
use prost::Message;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::books::{Account, Books, ScripRole, Transaction, TxKind};
use crate::config::{Settings, Source};
use crate::convert::{self, PeerPurchase};
use crate::exchange::Supply;
use crate::service::BrokerState;
use crate::shard::Shard;
use crate::{BrokerError, links, unix_now};

/// A piece of vendor scrip bought from another broker.
#[derive(Debug)]
pub(crate) struct Bought {
    pub(crate) scrip: Scrip,
    pub(crate) secret: CustomerSecret,
    pub(crate) broker: VendorName,
    /// What is owed for it: its value and the seller's fee.
    pub(crate) price: Amount,
    /// The seller's fee.
    pub(crate) fee: Amount,
}

/// The request ID of the purchase serving the exchange of `paid` with
/// `stamp` in `shard`: the shard, the ID#, and the first 7 bytes of the
/// stamp, so that the same exchange always buys with the same ID.
pub(crate) fn request_id(shard: u8, paid: &Scrip, stamp: &Mac) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[0] = shard;
    id[1..9].copy_from_slice(&paid.id().as_u64().to_be_bytes());
    let stamp = stamp.as_bytes();
    let take = stamp.len().min(7);
    id[9..9 + take].copy_from_slice(&stamp[..take]);
    id
}

/// Buys `value` of `vendor`'s scrip from `broker`.
pub(crate) async fn buy(
    state: &BrokerState,
    shard: &Shard,
    broker: &VendorName,
    vendor: &VendorName,
    value: Amount,
    request_id: [u8; 16],
    now: u64,
) -> Result<Bought, BrokerError> {
    let settings = state
        .settings
        .broker(broker)
        .ok_or_else(|| BrokerError::UnknownBroker {
            broker: broker.to_string(),
        })?;
    let mut client = state.brokers.client(broker).ok_or_else(|| {
        links::unavailable(vendor, format!("broker {broker} has no url configured"))
    })?;
    let request = links::bearer(
        proto::PeerExchangeRequest {
            broker: shard.broker_name().to_string(),
            request_id: request_id.to_vec(),
            vendor: vendor.to_string(),
            value: value.units(),
        },
        &settings.token,
        vendor,
    )?;
    let reply = client.peer_exchange(request).await.map_err(|status| {
        links::unavailable(
            vendor,
            format!(
                "broker {broker} did not sell the scrip ({:?}): {}",
                status.code(),
                status.message()
            ),
        )
    })?;
    check_bought(
        reply.into_inner(),
        broker,
        vendor,
        value,
        settings.max_fee,
        now,
    )
    .map_err(|detail| links::unavailable(vendor, format!("broker {broker} sent {detail}")))
}

/// What another broker sold, if it is what was asked for at an acceptable
/// price.
pub(crate) fn check_bought(
    reply: proto::PeerExchangeReply,
    broker: &VendorName,
    vendor: &VendorName,
    value: Amount,
    max_fee: Amount,
    now: u64,
) -> Result<Bought, String> {
    let wire = reply.vendor_scrip.ok_or("a reply without scrip")?;
    let scrip = Scrip::decode(&wire.body, &wire.certificate)
        .map_err(|error| format!("scrip that does not decode: {error}"))?;
    let body = scrip.body();
    if body.vendor != *vendor || body.value != value || body.expires_at <= now {
        return Err(format!(
            "scrip worth {} of {} expiring at {}, not {value} of {vendor}",
            body.value, body.vendor, body.expires_at
        ));
    }
    let secret = Zeroizing::new(reply.customer_secret);
    let secret = CustomerSecret::from_slice(scrip.suite(), &secret)
        .map_err(|_| "a customer secret of the wrong length".to_owned())?;
    let price = Amount::new(reply.price);
    let fee = price
        .checked_sub(value)
        .map_err(|_| format!("a price of {price}, below the value {value}"))?;
    if fee > max_fee {
        return Err(format!(
            "a fee of {fee}, more than the max_fee of {max_fee} accepted from it"
        ));
    }
    Ok(Bought {
        scrip,
        secret,
        broker: broker.clone(),
        price,
        fee,
    })
}

/// Books a purchase from `seller` whose exchange failed: it is owed all
/// the same, and is a loss.
pub(crate) fn book_unused(
    books: &Books,
    seller: &VendorName,
    vendor: &VendorName,
    price: Amount,
    now_ms: u64,
) {
    let tx = unused_purchase(seller, vendor, price, now_ms);
    if let Err(error) = books.post(Writes::new(), &tx) {
        tracing::error!(%error, broker = %seller, "could not book a purchase that was not sold");
    }
}

/// The journal entry of `vendor` scrip bought from `seller` for `price` and
/// not sold: the broker owes the seller, and bears the cost itself.
pub(crate) fn unused_purchase(
    seller: &VendorName,
    vendor: &VendorName,
    price: Amount,
    now_ms: u64,
) -> Transaction {
    Transaction::new(
        TxKind::PeerOrphan,
        now_ms,
        &format!("{vendor} scrip bought from {seller} and not sold"),
    )
    .debit(Account::Fees, price)
    .credit(Account::Broker(seller.clone()), price)
}

/// The broker a `PeerExchange` comes from, if it presented the token
/// shared with it.
pub(crate) fn authenticate(
    settings: &Settings,
    request: &tonic::Request<proto::PeerExchangeRequest>,
) -> Result<VendorName, BrokerError> {
    let refused = || BrokerError::Unauthenticated {
        detail: "PeerExchange needs a broker name this broker deals with and its token as \
                 'authorization: Bearer <token>'",
    };
    let name = VendorName::new(&request.get_ref().broker).map_err(|_| refused())?;
    let peer = settings.broker(&name).ok_or_else(refused)?;
    let presented = request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(refused)?;
    if !bool::from(presented.as_bytes().ct_eq(peer.token.as_bytes())) {
        return Err(refused());
    }
    Ok(name)
}

/// Sells scrip to the broker `buyer`, once per request ID.
pub(crate) async fn sell(
    state: &Arc<BrokerState>,
    buyer: &VendorName,
    purchase: PeerPurchase,
) -> Result<proto::PeerExchangeReply, BrokerError> {
    let (now, now_ms) = unix_now();
    let source = match state.settings.sources.get(&purchase.vendor) {
        Some(source @ (Source::Licence(_) | Source::Warehouse(_))) => source,
        // Scrip bought from a third broker is not resold.
        Some(Source::Broker(_)) | None => {
            return Err(BrokerError::UnknownVendor {
                vendor: purchase.vendor.to_string(),
            });
        }
    };
    // A request ID always lands on the same shard of this node.
    let shards: Vec<&Shard> = state.shards.values().collect();
    let shard = shards
        .get(usize::from(purchase.request_id[0]) % shards.len().max(1))
        .copied()
        .ok_or_else(|| BrokerError::Server {
            detail: "this node keeps no shard".to_owned(),
        })?;
    let key = sale_key(buyer, &purchase.request_id);
    if let Some(reply) = stored_sale(shard, &key)? {
        shard.ledger.commit().await?;
        return Ok(reply);
    }

    let supply = Supply::prepare(
        state,
        shard,
        source,
        &purchase.vendor,
        purchase.value,
        purchase.request_id,
        now,
    )
    .await?;
    let reply = {
        let _selling = shard
            .selling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match stored_sale(shard, &key)? {
            Some(reply) => reply,
            None => record_sale(state, shard, buyer, &purchase, supply, &key, now, now_ms)?,
        }
    };
    shard.ledger.commit().await?;
    Ok(reply)
}

#[allow(clippy::too_many_arguments)]
fn record_sale(
    state: &BrokerState,
    shard: &Shard,
    buyer: &VendorName,
    purchase: &PeerPurchase,
    supply: Supply,
    key: &[u8],
    now: u64,
    now_ms: u64,
) -> Result<proto::PeerExchangeReply, BrokerError> {
    let fee = state.settings.exchange_fee;
    let price = purchase.value.checked_add(fee)?;
    let mut writes = Writes::new();
    let issued = supply.issue(shard, &mut writes, &purchase.vendor, purchase.value, now)?;
    let reply = proto::PeerExchangeReply {
        vendor_scrip: Some(convert::scrip_to_wire(&issued.scrip)),
        customer_secret: issued.secret.expose_bytes().to_vec(),
        price: price.units(),
    };
    let bytes = Zeroizing::new(reply.encode_to_vec());
    writes.insert(&shard.peer_sales, key, bytes.as_slice());
    let tx = Transaction::new(
        TxKind::PeerSale,
        now_ms,
        &format!("{} scrip sold to {buyer}", purchase.vendor),
    )
    .debit(Account::Broker(buyer.clone()), price)
    .credit(issued.account, issued.cost)
    .credit(Account::Fees, fee)
    .scrip(
        ScripRole::Issued,
        Some(&purchase.vendor),
        issued.scrip.id(),
        purchase.value,
    );
    if let Err(error) = shard.books.post(writes, &tx) {
        if let Some(piece) = issued.piece {
            shard.warehouse.put_back(&purchase.vendor, piece);
        }
        return Err(error);
    }
    Ok(reply)
}

fn stored_sale(shard: &Shard, key: &[u8]) -> Result<Option<proto::PeerExchangeReply>, BrokerError> {
    match shard.peer_sales.get(key)? {
        None => Ok(None),
        Some(bytes) => {
            let bytes = Zeroizing::new(bytes);
            convert::decode_stored(&bytes, "peer sale").map(Some)
        }
    }
}

fn sale_key(buyer: &VendorName, request_id: &[u8; 16]) -> Vec<u8> {
    let mut key = crate::shard::name_key(&[], buyer, request_id.len());
    key.extend_from_slice(request_id);
    key
}

#[cfg(test)]
mod tests {
    use millicent_core::{
        CustId, KeyRing, MasterSecret, Properties, ScripBody, ScripId, SeriesKey, Suite,
    };

    use super::*;

    const NOW: u64 = 1_800_000_000;

    /// Scrip of `vendor` worth `value` with ID# `id`, expiring at NOW + 100.
    fn minted(vendor: &str, value: u64, id: ScripId) -> Scrip {
        let vendor = VendorName::new(vendor).unwrap();
        let mut ring = KeyRing::new(vendor.clone());
        ring.add_series(SeriesKey {
            series: id.series(),
            suite: Suite::Classic,
            expires_at: NOW + 100,
            secret: MasterSecret::new(Suite::Classic, [5; 32]),
        });
        ring.mint(ScripBody {
            suite: Suite::Classic,
            vendor,
            value: Amount::new(value),
            id,
            cust_id: CustId::new(1, 1).unwrap(),
            expires_at: NOW + 100,
            properties: Properties::default(),
        })
        .unwrap()
    }

    fn reply(value: u64, price: u64, secret_len: usize) -> proto::PeerExchangeReply {
        let scrip = minted("news.example", value, ScripId::new(4, 0));
        proto::PeerExchangeReply {
            vendor_scrip: Some(convert::scrip_to_wire(&scrip)),
            customer_secret: vec![1; secret_len],
            price,
        }
    }

    #[test]
    fn what_another_broker_sells_is_checked() {
        let broker = VendorName::new("other").unwrap();
        let vendor = VendorName::new("news.example").unwrap();
        let check = |reply, max_fee| {
            check_bought(
                reply,
                &broker,
                &vendor,
                Amount::new(10),
                Amount::new(max_fee),
                NOW,
            )
        };
        let bought = check(reply(10, 12, 16), 2).unwrap();
        assert_eq!(
            (bought.price, bought.fee),
            (Amount::new(12), Amount::new(2))
        );
        assert!(check(reply(10, 13, 16), 2).unwrap_err().contains("max_fee"));
        assert!(check(reply(10, 9, 16), 2).is_err());
        assert!(check(reply(11, 12, 16), 2).is_err());
        assert!(check(reply(10, 12, 15), 2).is_err());
        let other = VendorName::new("shop.example").unwrap();
        let wrong_vendor = check_bought(
            reply(10, 10, 16),
            &broker,
            &other,
            Amount::new(10),
            Amount::ZERO,
            NOW,
        );
        assert!(wrong_vendor.is_err());
        let late = check_bought(
            reply(10, 10, 16),
            &broker,
            &vendor,
            Amount::new(10),
            Amount::ZERO,
            NOW + 100,
        );
        assert!(late.is_err());
    }

    #[test]
    fn a_request_id_depends_on_the_exchange_only() {
        let scrip = minted("broker.local", 10, ScripId::new(1, 9));
        let stamp = Mac::from_slice(&[7; 16]);
        let id = request_id(2, &scrip, &stamp);
        assert_eq!(id, request_id(2, &scrip, &stamp));
        assert_ne!(id, request_id(3, &scrip, &stamp));
        assert_ne!(id, request_id(2, &scrip, &Mac::from_slice(&[8; 16])));
        assert_eq!(id[0], 2);
    }
}
