//! Conversion between the wire messages of `millicent-proto` and the
//! broker's types.
//!
//! This is the one place where the broker looks inside a request: every
//! field is checked here (presence, lengths, ranges) so that the handlers
//! and the protocol core only ever see well-formed values. Replies are
//! built here too, so the wire format has a single boundary.

use millicent_core::account::NONCE_LEN;
use millicent_core::broker::RefundRequest;
use millicent_core::exchange::ExchangeRequest;
use millicent_core::{
    AccountKey, Amount, Mac, MasterSecret, Payment, PaymentReply, Scrip, Suite, Variant, VendorName,
};
use millicent_proto as proto;
use zeroize::Zeroizing;

use crate::BrokerError;
use crate::accounts::{
    AccountCall, MAX_ENTRY_AMOUNT, MAX_REFERENCE_LEN, Method, Outcome, Statement,
};
use crate::audit::AuditReport;
use crate::config::{Settings, Source};
use crate::licences::LicenceGrant;
use crate::service::Payout;
use crate::settlement::Direction;

/// A credit as the operator asked for it.
pub(crate) struct Credit {
    pub(crate) account_id: u64,
    pub(crate) amount: Amount,
    pub(crate) reference: String,
}

/// A purchase of broker scrip.
pub(crate) struct Purchase {
    pub(crate) call: AccountCall,
    pub(crate) amount: Amount,
}

/// An operator's reference: 1 to `MAX_REFERENCE_LEN` bytes.
fn check_reference(reference: &str) -> Result<(), BrokerError> {
    if reference.is_empty() {
        return Err(invalid("reference", "must not be empty"));
    }
    if reference.len() > MAX_REFERENCE_LEN {
        return Err(millicent_core::Error::TooLarge {
            what: "reference",
            actual: reference.len(),
            max: MAX_REFERENCE_LEN,
        }
        .into());
    }
    Ok(())
}

pub(crate) fn credit_from_wire(request: proto::CreditRequest) -> Result<Credit, BrokerError> {
    check_reference(&request.reference)?;
    Ok(Credit {
        account_id: request.account_id,
        amount: entry_amount("amount", request.amount)?,
        reference: request.reference,
    })
}

pub(crate) fn purchase_from_wire(
    request: proto::BuyBrokerScripRequest,
    suite: Suite,
) -> Result<Purchase, BrokerError> {
    Ok(Purchase {
        call: account_call_from_wire(request.auth, Method::BuyBrokerScrip, suite)?,
        amount: entry_amount("amount", request.amount)?,
    })
}

pub(crate) fn account_call_from_wire(
    auth: Option<proto::AccountAuth>,
    method: Method,
    suite: Suite,
) -> Result<AccountCall, BrokerError> {
    let auth = auth.ok_or(invalid("auth", "an account call needs its auth field"))?;
    let nonce: [u8; NONCE_LEN] = auth
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| invalid("nonce", "must be exactly 16 bytes"))?;
    Ok(AccountCall {
        account_id: auth.account_id,
        timestamp_ms: auth.timestamp_ms,
        nonce,
        mac: Mac::parse(suite, "account call MAC", &auth.mac)?,
        method,
    })
}

/// An amount that a history entry can carry: 1 to 2⁶³ − 1.
fn entry_amount(what: &'static str, amount: u64) -> Result<Amount, BrokerError> {
    if amount == 0 {
        return Err(invalid(what, "must be at least 1"));
    }
    if amount > MAX_ENTRY_AMOUNT {
        return Err(BrokerError::AmountTooLarge {
            what,
            amount,
            max: MAX_ENTRY_AMOUNT,
        });
    }
    Ok(Amount::new(amount))
}

pub(crate) fn scrip_from_wire(scrip: Option<proto::Scrip>) -> Result<Scrip, BrokerError> {
    let scrip = scrip.ok_or(invalid("scrip", "missing"))?;
    Ok(Scrip::decode(&scrip.body, &scrip.certificate)?)
}

pub(crate) fn scrip_to_wire(scrip: &Scrip) -> proto::Scrip {
    proto::Scrip {
        body: scrip.encoded_body().to_vec(),
        certificate: scrip.certificate().as_bytes().to_vec(),
    }
}

/// An exchange as the secure-variant payment it is.
pub(crate) fn payment_from_wire(request: proto::ExchangeRequest) -> Result<Payment, BrokerError> {
    secure_payment(
        request.broker_scrip,
        request.request,
        &request.request_stamp,
    )
}

/// A refund as the secure-variant payment it is.
pub(crate) fn refund_from_wire(request: proto::RefundRequest) -> Result<Payment, BrokerError> {
    secure_payment(
        request.broker_scrip,
        request.request,
        &request.request_stamp,
    )
}

fn secure_payment(
    scrip: Option<proto::Scrip>,
    request: Vec<u8>,
    request_stamp: &[u8],
) -> Result<Payment, BrokerError> {
    let scrip = scrip_from_wire(scrip)?;
    let request_stamp = Mac::parse(scrip.suite(), "request stamp", request_stamp)?;
    Ok(Payment {
        scrip,
        variant: Variant::Secure,
        request,
        request_stamp: Some(request_stamp),
    })
}

/// What a refund asks for, from the verified plaintext request.
pub(crate) fn refund_request_from_plaintext(request: &[u8]) -> Result<RefundRequest, BrokerError> {
    Ok(RefundRequest::decode(request)?)
}

/// A renewal of expired vendor scrip, as asked for.
pub(crate) struct Renewal {
    pub(crate) shard: u8,
    pub(crate) scrip: Scrip,
    pub(crate) stamp: Mac,
}

pub(crate) fn renewal_from_wire(request: proto::RenewRequest) -> Result<Renewal, BrokerError> {
    let shard = u8::try_from(request.shard).map_err(|_| invalid("shard", "must be 0 to 255"))?;
    let scrip = scrip_from_wire(request.vendor_scrip)?;
    let stamp = Mac::parse(scrip.suite(), "request stamp", &request.request_stamp)?;
    Ok(Renewal {
        shard,
        scrip,
        stamp,
    })
}

/// A purchase by another broker, as asked for.
pub(crate) struct PeerPurchase {
    pub(crate) request_id: [u8; 16],
    pub(crate) vendor: VendorName,
    pub(crate) value: Amount,
}

pub(crate) fn peer_purchase_from_wire(
    request: proto::PeerExchangeRequest,
) -> Result<PeerPurchase, BrokerError> {
    let request_id = request
        .request_id
        .as_slice()
        .try_into()
        .map_err(|_| invalid("request_id", "must be exactly 16 bytes"))?;
    Ok(PeerPurchase {
        request_id,
        vendor: VendorName::new(&request.vendor)?,
        value: entry_amount("value", request.value)?,
    })
}

pub(crate) fn payout_from_wire(request: proto::PayoutRequest) -> Result<Payout, BrokerError> {
    let shard = u8::try_from(request.shard).map_err(|_| invalid("shard", "must be 0 to 255"))?;
    let direction = match proto::PayoutDirection::try_from(request.direction) {
        Ok(proto::PayoutDirection::Pay) => Direction::Pay,
        Ok(proto::PayoutDirection::Receive) => Direction::Receive,
        _ => return Err(invalid("direction", "must be PAY or RECEIVE")),
    };
    check_reference(&request.reference)?;
    Ok(Payout {
        shard,
        counterparty: VendorName::new(&request.counterparty)?,
        direction,
        amount: entry_amount("amount", request.amount)?,
        reference: request.reference,
    })
}

pub(crate) fn audit_report_to_wire(report: &AuditReport) -> proto::AuditReport {
    proto::AuditReport {
        clean: report.discrepancy.is_none(),
        discrepancy: report.discrepancy.clone().unwrap_or_default(),
        shards: report
            .shards
            .iter()
            .map(|shard| proto::ShardAudit {
                shard: u32::from(shard.shard),
                transactions: shard.transactions,
                accounts: shard.accounts,
                balances: shard
                    .balances
                    .iter()
                    .map(|(class, balance)| proto::ClassBalance {
                        class: class.clone(),
                        balance: (*balance).clamp(i128::from(i64::MIN), i128::from(i64::MAX))
                            as i64,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// What the customer asked for, from the verified plaintext request.
pub(crate) fn exchange_request_from_plaintext(
    request: &[u8],
) -> Result<ExchangeRequest, BrokerError> {
    let request = ExchangeRequest::decode(request)?;
    if request.value.is_zero() {
        return Err(invalid("exchange request", "the value must be at least 1"));
    }
    Ok(request)
}

pub(crate) fn exchange_reply_to_wire(
    vendor_scrip: &Scrip,
    sealed_customer_secret: Vec<u8>,
    reply: &PaymentReply,
) -> proto::ExchangeReply {
    proto::ExchangeReply {
        vendor_scrip: Some(scrip_to_wire(vendor_scrip)),
        sealed_customer_secret,
        change: reply.change.as_ref().map(scrip_to_wire),
        reply_stamp: reply
            .reply_stamp
            .map(|stamp| stamp.as_bytes().to_vec())
            .unwrap_or_default(),
        price: reply.price.units(),
    }
}

/// The reply to `OpenAccount`. Its copy of the key is the one copy of a
/// secret that is not wiped: tonic owns it until the reply is sent.
pub(crate) fn open_account_reply(
    account_id: u64,
    account_key: &AccountKey,
) -> proto::OpenAccountReply {
    proto::OpenAccountReply {
        account_id,
        account_key: account_key.expose_bytes().to_vec(),
    }
}

pub(crate) fn credit_reply(outcome: Outcome<Amount>) -> proto::CreditReply {
    let repeated = matches!(outcome, Outcome::Repeat(_));
    proto::CreditReply {
        balance: outcome.into_inner().units(),
        repeated,
    }
}

pub(crate) fn broker_info(settings: &Settings, url: &str) -> proto::BrokerInfo {
    let cluster = &settings.cluster;
    let mut owners = vec![proto::ShardOwner {
        node: cluster.node().to_owned(),
        url: url.to_owned(),
        shards: cluster
            .own()
            .iter()
            .map(|shard| u32::from(*shard))
            .collect(),
    }];
    owners.extend(cluster.peers().iter().map(|peer| proto::ShardOwner {
        node: peer.node.clone(),
        url: peer.url.clone(),
        shards: peer.shards.iter().map(|shard| u32::from(*shard)).collect(),
    }));
    let sources = settings
        .sources
        .iter()
        .map(|(vendor, source)| {
            let (kind, value, broker) = match source {
                Source::Licence(_) => ("licence", 0, String::new()),
                Source::Warehouse(warehousing) => {
                    ("warehouse", warehousing.value.units(), String::new())
                }
                Source::Broker(broker) => ("broker", 0, broker.to_string()),
            };
            proto::VendorSource {
                vendor: vendor.to_string(),
                kind: kind.to_owned(),
                value,
                broker,
            }
        })
        .collect();
    proto::BrokerInfo {
        broker: settings.name.to_string(),
        suite: u32::from(settings.suite.id()),
        vendors: settings
            .sources
            .keys()
            .map(|vendor| vendor.to_string())
            .collect(),
        node: cluster.node().to_owned(),
        cluster: owners,
        sources,
    }
}

/// Decodes a reply the broker encoded and kept in the ledger for retries.
pub(crate) fn decode_stored<M: prost::Message + Default>(
    bytes: &[u8],
    what: &'static str,
) -> Result<M, BrokerError> {
    M::decode(bytes).map_err(|_| {
        BrokerError::Storage(millicent_ledger::LedgerError::Storage {
            operation: "read stored reply",
            detail: format!("the stored {what} reply is unreadable"),
        })
    })
}

pub(crate) fn buy_reply_to_wire(
    scrip: &Scrip,
    sealed_customer_secret: &[u8],
    balance: Amount,
) -> proto::BuyBrokerScripReply {
    proto::BuyBrokerScripReply {
        scrip: Some(scrip_to_wire(scrip)),
        sealed_customer_secret: sealed_customer_secret.to_vec(),
        balance: balance.units(),
    }
}

pub(crate) fn statement_to_wire(statement: &Statement) -> proto::AccountStatement {
    let entries = statement
        .entries
        .iter()
        .map(|entry| {
            // Entry amounts are at most i64::MAX (see `entry_amount`).
            let amount = i64::try_from(entry.amount.units()).unwrap_or(i64::MAX);
            let delta = if entry.kind.adds() { amount } else { -amount };
            proto::AccountEntry {
                timestamp_ms: entry.timestamp_ms,
                kind: entry.kind.name().to_owned(),
                delta,
                balance_after: entry.balance_after.units(),
                reference: entry.reference.clone(),
            }
        })
        .collect();
    proto::AccountStatement {
        account_id: statement.account_id,
        balance: statement.balance.units(),
        entries,
    }
}

/// A licence from a vendor node, which is no more trusted than a customer:
/// every field is checked, and a licence for another vendor, of an unknown
/// suite, with secrets of the wrong size or already expired is refused.
pub(crate) fn licence_from_wire(
    licence: proto::Licence,
    vendor: &VendorName,
    now: u64,
) -> Result<LicenceGrant, millicent_core::Error> {
    use millicent_core::Error;
    if licence.vendor != vendor.as_str() {
        return Err(Error::WrongVendor {
            scrip_vendor: licence.vendor,
            expected: vendor.as_str().to_owned(),
        });
    }
    let suite_id = u8::try_from(licence.suite).map_err(|_| Error::Malformed {
        what: "licence",
        detail: "suite out of range",
    })?;
    let suite = Suite::from_id(suite_id)?;
    let selector = u16::try_from(licence.customer_selector).map_err(|_| Error::Malformed {
        what: "licence",
        detail: "customer selector exceeds 16 bits",
    })?;
    if licence.expires_at <= now {
        return Err(Error::Expired {
            expires_at: licence.expires_at,
            now,
        });
    }
    if licence.id_limit > 1 << 32 {
        return Err(Error::Malformed {
            what: "licence",
            detail: "ID limit beyond the series",
        });
    }
    let scrip_secret = Zeroizing::new(licence.master_scrip_secret);
    let customer_secret = Zeroizing::new(licence.master_customer_secret);
    Ok(LicenceGrant {
        suite,
        series: licence.series,
        expires_at: licence.expires_at,
        selector,
        scrip_secret: MasterSecret::from_slice(suite, &scrip_secret)?,
        customer_secret: MasterSecret::from_slice(suite, &customer_secret)?,
        id_limit: licence.id_limit,
    })
}

fn invalid(what: &'static str, detail: &'static str) -> BrokerError {
    BrokerError::InvalidArgument { what, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(nonce_len: usize, mac_len: usize) -> Option<proto::AccountAuth> {
        Some(proto::AccountAuth {
            account_id: 1,
            timestamp_ms: 2,
            nonce: vec![0; nonce_len],
            mac: vec![0; mac_len],
        })
    }

    #[test]
    fn account_calls_need_auth_a_16_byte_nonce_and_a_mac_of_the_suite() {
        let call = |auth| account_call_from_wire(auth, Method::GetAccount, Suite::Classic);
        assert!(call(auth(16, 16)).is_ok());
        for bad in [None, auth(15, 16), auth(17, 16), auth(16, 15), auth(16, 0)] {
            let error = call(bad).err().unwrap();
            assert_eq!(error.reason(), "malformed", "{error}");
        }
    }

    #[test]
    fn credits_need_a_positive_amount_and_a_short_reference() {
        let credit = |amount, reference: &str| {
            credit_from_wire(proto::CreditRequest {
                account_id: 1,
                amount,
                reference: reference.to_owned(),
            })
        };
        assert!(credit(1, "r").is_ok());
        assert_eq!(credit(0, "r").err().unwrap().reason(), "malformed");
        assert_eq!(credit(1, "").err().unwrap().reason(), "malformed");
        assert_eq!(
            credit(1, &"r".repeat(129)).err().unwrap().reason(),
            "too_large"
        );
        assert!(credit(1, &"r".repeat(128)).is_ok());
        assert_eq!(credit(u64::MAX, "r").err().unwrap().reason(), "too_large");
    }

    #[test]
    fn an_exchange_needs_scrip_and_a_stamp_of_the_suite() {
        let request = |scrip, stamp_len| proto::ExchangeRequest {
            broker_scrip: scrip,
            request: vec![],
            request_stamp: vec![0; stamp_len],
        };
        assert!(payment_from_wire(request(None, 16)).is_err());
        let garbage = proto::Scrip {
            body: vec![1, 2, 3],
            certificate: vec![0; 16],
        };
        assert!(payment_from_wire(request(Some(garbage), 16)).is_err());
        assert!(exchange_request_from_plaintext(b"\x01").is_err());
    }

    #[test]
    fn refunds_renewals_purchases_and_payouts_are_checked() {
        assert!(refund_request_from_plaintext(&7u64.to_be_bytes()).is_ok());
        assert!(refund_request_from_plaintext(&[0; 9]).is_err());
        let renewal = |shard| {
            renewal_from_wire(proto::RenewRequest {
                shard,
                vendor_scrip: None,
                request_stamp: vec![0; 16],
            })
        };
        assert_eq!(renewal(256).err().unwrap().reason(), "malformed");
        assert_eq!(renewal(0).err().unwrap().reason(), "malformed");

        let purchase = |id_len, value| {
            peer_purchase_from_wire(proto::PeerExchangeRequest {
                broker: "a".into(),
                request_id: vec![0; id_len],
                vendor: "news".into(),
                value,
            })
        };
        assert!(purchase(16, 5).is_ok());
        assert_eq!(purchase(15, 5).err().unwrap().reason(), "malformed");
        assert_eq!(purchase(16, 0).err().unwrap().reason(), "malformed");

        let payout = |direction: proto::PayoutDirection, reference: &str| {
            payout_from_wire(proto::PayoutRequest {
                shard: 0,
                counterparty: "news".into(),
                direction: direction as i32,
                amount: 5,
                reference: reference.into(),
            })
        };
        assert!(payout(proto::PayoutDirection::Pay, "p1").is_ok());
        assert!(payout(proto::PayoutDirection::Unspecified, "p1").is_err());
        assert!(payout(proto::PayoutDirection::Pay, "").is_err());
        assert!(payout(proto::PayoutDirection::Pay, &"r".repeat(129)).is_err());
    }

    #[test]
    fn a_licence_is_checked_like_any_other_input() {
        let vendor = VendorName::new("news").unwrap();
        let good = proto::Licence {
            vendor: "news".into(),
            suite: 1,
            series: 7,
            expires_at: 100,
            master_scrip_secret: vec![1; 32],
            customer_selector: 3,
            master_customer_secret: vec![2; 32],
            id_limit: 10,
        };
        assert_eq!(
            licence_from_wire(good.clone(), &vendor, 99)
                .unwrap()
                .id_limit,
            10
        );
        let bad = [
            proto::Licence {
                vendor: "other".into(),
                ..good.clone()
            },
            proto::Licence {
                suite: 9,
                ..good.clone()
            },
            proto::Licence {
                customer_selector: 70_000,
                ..good.clone()
            },
            proto::Licence {
                master_scrip_secret: vec![1; 31],
                ..good.clone()
            },
            proto::Licence {
                id_limit: (1 << 32) + 1,
                ..good.clone()
            },
        ];
        for licence in bad {
            assert!(licence_from_wire(licence, &vendor, 99).is_err());
        }
        assert!(licence_from_wire(good, &vendor, 100).is_err());
    }
}
