//! The exchange of broker scrip for vendor scrip.
//!
//! An exchange is a secure-variant payment to the broker, in broker scrip,
//! whose request names a vendor and a value. The broker checks it like any
//! vendor checks a payment (certificate, expiry, customer secret, request
//! stamp), prices it at the value plus the exchange fee, and spends the
//! broker scrip through the ledger's `SpendStore`, which makes the reply at
//! most once per piece of scrip:
//!
//! 1. everything that can be refused is refused before the spend, so a
//!    refusal spends nothing;
//! 2. the licence is obtained before the spend, because that may need the
//!    network, and the spend holds a lock;
//! 3. inside the spend, and only for a fresh one, the vendor scrip is minted
//!    with a newly allocated ID# and Cust ID#, its customer secret is sealed
//!    under the broker scrip's, and change is minted in the broker's current
//!    series with the same Cust ID#; the encoded reply is what the spend
//!    stores for retries;
//! 4. the reply is sent after the ledger commit that makes the spend, the
//!    reply record and the ID reservations durable.
//!
//! A crash before the commit loses nothing the customer has seen; a crash
//! after it leaves the scrip spent and its reply on record, so the
//! customer's retry (same scrip, same request stamp) gets the same reply.

use millicent_core::Amount;
use millicent_core::exchange::{exchange_goods, seal_customer_secret};
use millicent_core::payment::ChangeSlot;
use millicent_ledger::{SpendError, SpendOutcome};
use millicent_proto as proto;
use prost::Message;

use crate::service::BrokerState;
use crate::telemetry::{self, ScripKind};
use crate::{BrokerError, convert, unix_now};

/// Exchanges the broker scrip in `request` for vendor scrip.
pub(crate) async fn exchange(
    state: &BrokerState,
    request: proto::ExchangeRequest,
) -> Result<proto::ExchangeReply, BrokerError> {
    let (now, _) = unix_now();
    let broker = state.keys.name();

    let payment = convert::payment_from_wire(request)?;
    let verified = payment.verify(&state.keys.ring(), now)?;
    let wanted = convert::exchange_request_from_plaintext(verified.request())?;
    if !state.licences.sells(&wanted.vendor) {
        return Err(BrokerError::UnknownVendor {
            vendor: wanted.vendor.to_string(),
        });
    }
    let price = wanted.value.checked_add(state.settings.exchange_fee)?;
    let change_value = verified.change_value(price)?;
    let paid = verified.scrip().clone();
    let (Some(request_stamp), Some(broker_secret)) =
        (verified.request_stamp(), verified.customer_secret())
    else {
        return Err(BrokerError::InvalidArgument {
            what: "exchange",
            detail: "an exchange is a secure-variant payment and needs a request stamp",
        });
    };

    // Spent scrip is answered from the reply record (or refused) without
    // minting, so it needs no licence: a retry still works while the
    // vendor's node is down.
    let licence = if state.spends.is_spent(broker, paid.id()) {
        None
    } else {
        Some(state.licences.get(&wanted.vendor, now).await?)
    };
    let mut seal_nonce = vec![0u8; paid.suite().nonce_len()];
    rand::fill(&mut seal_nonce[..]);

    let make_reply = || -> Result<Vec<u8>, BrokerError> {
        let licence = licence.ok_or_else(|| BrokerError::VendorUnavailable {
            vendor: wanted.vendor.to_string(),
            detail: "no licence is at hand; try again".to_owned(),
        })?;
        let (vendor_scrip, vendor_secret) = licence.mint(wanted.value, now)?;
        let sealed =
            seal_customer_secret(paid.suite(), broker_secret, &seal_nonce, &vendor_secret)?;
        let goods = exchange_goods(&vendor_scrip, &sealed);
        let slot = change_slot(state, change_value, paid.body().expires_at, now)?;
        // Taken after the change's ID#, which may have started a series.
        let ring = state.keys.ring();
        // The secure variant seals nothing, so the goods nonce is unused.
        let reply = verified.reply(&ring, price, slot, &goods, &[])?;
        Ok(convert::exchange_reply_to_wire(&vendor_scrip, sealed, &reply).encode_to_vec())
    };
    let outcome = state
        .spends
        .spend(broker, paid.id(), request_stamp.as_bytes(), now, make_reply);

    let (reply, fresh) = match outcome {
        Ok(SpendOutcome::Fresh(reply)) => (reply, true),
        Ok(SpendOutcome::Retry(reply)) => (reply, false),
        Err(SpendError::DoubleSpend) => return Err(BrokerError::DoubleSpend { id: paid.id() }),
        Err(SpendError::Reply(error)) => return Err(error),
        Err(SpendError::Storage(error)) => return Err(error.into()),
    };
    // A retry may have arrived before the first reply's commit finished:
    // it too waits for durability before answering.
    state.ledger.commit().await?;
    if fresh {
        telemetry::scrip_issued(ScripKind::Vendor, wanted.value);
    }
    convert::decode_stored(&reply, "exchange")
}

/// Where the change goes: a fresh ID# in the broker's current series,
/// expiring with the scrip it replaces (never after its series).
fn change_slot(
    state: &BrokerState,
    change_value: Amount,
    paid_expires_at: u64,
    now: u64,
) -> Result<Option<ChangeSlot>, BrokerError> {
    if change_value.is_zero() {
        return Ok(None);
    }
    let (id, series_expires_at) = state.keys.next_scrip_id(now)?;
    Ok(Some(ChangeSlot {
        id,
        expires_at: paid_expires_at.min(series_expires_at),
    }))
}
