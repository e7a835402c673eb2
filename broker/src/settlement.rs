//! Settlement with vendors and other brokers, in one shard: what was sold
//! from which series, what the vendors report redeemed, what is owed, and
//! the payouts that settle it.
//!
//! # Redemption reports
//!
//! Vendor nodes report redemptions as bitmaps of the sequence numbers of a
//! series they have accepted (see `ReportRedemptions`). The shard knows the
//! value of every piece it sold: scrip minted under licence is recorded
//! with its value when it is sold, warehouse pieces are on record in the
//! warehouse. So the shard turns a report into money itself, and a report
//! says which pieces are spent rather than how much was spent since the
//! last one: asking twice, or losing a report, never settles a piece twice.
//!
//! Each report is compared with the bits recorded from the last one. For
//! the newly spent pieces sold under licence with the `redeemed` contract,
//! one transaction moves their value from `vendor_scrip/V` to `payable/V`;
//! pieces owed at sale (`sold`) or bought for the warehouse were owed
//! already, and the transaction only records how much was redeemed. A
//! reported piece the shard never sold is not paid for and is counted in
//! `millicent_broker_unrecognised_redemptions_total`; a warehouse piece
//! reported spent while still in stock was taken by someone else, and is
//! written off from the stock as lost.
//!
//! A report's `as_of` bounds when scrip could still be accepted: the bit
//! of a piece that expired before `as_of` is final. Renewals of expired
//! scrip rely on this.
//!
//! # Keys (table `settlement`; `vendor` is its length (1) then its name)
//!
//! - `m ‖ vendor ‖ series (4)` → the series registry: kind (1: licence,
//!   2: warehouse) ‖ contract (1: redeemed, 2: sold; 0 for warehouse) ‖
//!   expiry, Unix seconds (8)
//! - `i ‖ vendor ‖ ID# (8)` → value (8): each piece sold under licence
//! - `b ‖ vendor ‖ series (4) ‖ chunk (4)` → 512 bytes: the bits of the
//!   latest report recorded, bit `i` of byte `j` being sequence number
//!   `4096 × chunk + 8 × j + i`
//! - `a ‖ vendor ‖ series (4)` → the `as_of` of the latest report recorded (8)

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use millicent_core::spent::CHUNK_BITS;
use millicent_core::{Amount, ScripId, VendorName};
use millicent_ledger::{Ledger, LedgerError, Table, Writes};
use millicent_proto as proto;

use crate::books::{Account, ScripRole, Transaction, TxKind};
use crate::config::{BrokerPeerSettings, Contract, VendorSettings};
use crate::shard::Shard;
use crate::{BrokerError, links, telemetry};

/// Name of the settlement table.
pub(crate) const TABLE: &str = "settlement";

const REGISTRY_PREFIX: u8 = b'm';
const SOLD_PREFIX: u8 = b'i';
const BITS_PREFIX: u8 = b'b';
const AS_OF_PREFIX: u8 = b'a';
const CHUNK_BYTES: usize = CHUNK_BITS as usize / 8;
/// Most series asked about in one report call.
const SERIES_PER_CALL: usize = 64;

/// What a series was sold from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SeriesKind {
    /// Minted by this shard under licence.
    Licence(Contract),
    /// Bought ready-made in a block.
    Warehouse,
}

/// A series the shard sold vendor scrip from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SeriesRecord {
    pub(crate) vendor: VendorName,
    pub(crate) series: u32,
    pub(crate) kind: SeriesKind,
    pub(crate) expires_at: u64,
}

/// Adds the registration of `series` of `vendor` to `writes`.
pub(crate) fn register_series(
    writes: &mut Writes,
    table: &Table,
    vendor: &VendorName,
    series: u32,
    kind: SeriesKind,
    expires_at: u64,
) {
    let (kind_byte, contract) = match kind {
        SeriesKind::Licence(contract) => (1u8, contract as u8),
        SeriesKind::Warehouse => (2u8, 0u8),
    };
    let mut value = vec![kind_byte, contract];
    value.extend_from_slice(&expires_at.to_be_bytes());
    writes.insert(table, series_key(REGISTRY_PREFIX, vendor, series), value);
}

/// Every registered series, for audits.
pub(crate) fn registry(table: &Table) -> Result<Vec<SeriesRecord>, BrokerError> {
    let mut records = Vec::new();
    for entry in table.scan_prefix([REGISTRY_PREFIX]) {
        let (key, value) = entry?;
        records.push(decode_registration(&key, &value).ok_or_else(|| unreadable("registry"))?);
    }
    Ok(records)
}

/// The value of every piece sold under licence, by vendor and ID#, for
/// audits.
pub(crate) fn sold_pieces(
    table: &Table,
) -> Result<BTreeMap<(VendorName, ScripId), Amount>, BrokerError> {
    let mut sold = BTreeMap::new();
    for entry in table.scan_prefix([SOLD_PREFIX]) {
        let (key, value) = entry?;
        let (vendor, rest) = split_vendor(&key[1..]).ok_or_else(|| unreadable("sale key"))?;
        let id = rest
            .try_into()
            .ok()
            .map(u64::from_be_bytes)
            .ok_or_else(|| unreadable("sale key"))?;
        sold.insert((vendor, ScripId::from_u64(id)), decode_amount(&value)?);
    }
    Ok(sold)
}

/// The recorded report bits of every series, for audits: the spent
/// sequence numbers of each.
pub(crate) fn recorded_bits(
    table: &Table,
) -> Result<BTreeMap<(VendorName, u32), Vec<u32>>, BrokerError> {
    let mut bits: BTreeMap<(VendorName, u32), Vec<u32>> = BTreeMap::new();
    for entry in table.scan_prefix([BITS_PREFIX]) {
        let (key, value) = entry?;
        let (vendor, rest) = split_vendor(&key[1..]).ok_or_else(|| unreadable("report key"))?;
        let (series, chunk) = match rest {
            [a, b, c, d, e, f, g, h] => (
                u32::from_be_bytes([*a, *b, *c, *d]),
                u32::from_be_bytes([*e, *f, *g, *h]),
            ),
            _ => return Err(unreadable("report key")),
        };
        let seqs = bits.entry((vendor, series)).or_default();
        for (byte_index, byte) in value.iter().enumerate() {
            for bit in 0..8 {
                if byte & (1 << bit) != 0 {
                    seqs.push(chunk * CHUNK_BITS + byte_index as u32 * 8 + bit);
                }
            }
        }
    }
    Ok(bits)
}

/// The settlement state of one shard.
pub(crate) struct Settlement {
    table: Table,
    /// Serialises the recording of reports, which compare with what was
    /// recorded before.
    reporting: tokio::sync::Mutex<()>,
    /// Serialises payouts, which check what is owed before paying it.
    payouts: Mutex<()>,
}

/// What a payout settles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Money paid to a vendor or broker.
    Pay,
    /// Money received from a broker.
    Receive,
}

/// Whom a payout is with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Counterparty {
    Vendor(VendorName),
    Broker(VendorName),
}

impl Counterparty {
    fn name(&self) -> &VendorName {
        match self {
            Counterparty::Vendor(name) | Counterparty::Broker(name) => name,
        }
    }
}

impl Settlement {
    pub(crate) fn open(ledger: &Ledger) -> Result<Settlement, LedgerError> {
        Ok(Settlement {
            table: ledger.table(TABLE)?,
            reporting: tokio::sync::Mutex::new(()),
            payouts: Mutex::new(()),
        })
    }

    /// The settlement table.
    pub(crate) fn table(&self) -> &Table {
        &self.table
    }

    /// Adds the sale of licence scrip `id` of `vendor`, worth `value`, to
    /// `writes`.
    pub(crate) fn record_sold(
        &self,
        writes: &mut Writes,
        vendor: &VendorName,
        id: ScripId,
        value: Amount,
    ) {
        let mut key = vendor_key(SOLD_PREFIX, vendor);
        key.extend_from_slice(&id.as_u64().to_be_bytes());
        writes.insert(&self.table, key, value.units().to_be_bytes());
    }

    /// Removes the sale of licence scrip `id` of `vendor`, for an exchange
    /// that did not happen; nothing if there is none.
    pub(crate) fn forget_sold(&self, writes: &mut Writes, vendor: &VendorName, id: ScripId) {
        let mut key = vendor_key(SOLD_PREFIX, vendor);
        key.extend_from_slice(&id.as_u64().to_be_bytes());
        writes.remove(&self.table, key);
    }

    /// The registered series of `vendor`.
    pub(crate) fn series_of(&self, vendor: &VendorName) -> Result<Vec<SeriesRecord>, BrokerError> {
        let mut records = Vec::new();
        for entry in self.table.scan_prefix(vendor_key(REGISTRY_PREFIX, vendor)) {
            let (key, value) = entry?;
            records.push(decode_registration(&key, &value).ok_or_else(|| unreadable("registry"))?);
        }
        Ok(records)
    }

    /// The registration of `series` of `vendor`, if any.
    pub(crate) fn series(
        &self,
        vendor: &VendorName,
        series: u32,
    ) -> Result<Option<SeriesRecord>, BrokerError> {
        let key = series_key(REGISTRY_PREFIX, vendor, series);
        match self.table.get(&key)? {
            None => Ok(None),
            Some(value) => decode_registration(&key, &value)
                .map(Some)
                .ok_or_else(|| unreadable("registry")),
        }
    }

    /// The `as_of` of the latest report recorded for `series`, 0 if none.
    pub(crate) fn reported_at(&self, vendor: &VendorName, series: u32) -> Result<u64, BrokerError> {
        match self.table.get(series_key(AS_OF_PREFIX, vendor, series))? {
            None => Ok(0),
            Some(bytes) => Ok(decode_amount(&bytes)?.units()),
        }
    }

    /// Whether the latest report recorded says `id` of `vendor` was spent.
    pub(crate) fn is_redeemed(
        &self,
        vendor: &VendorName,
        id: ScripId,
    ) -> Result<bool, BrokerError> {
        let chunk = id.seq() / CHUNK_BITS;
        let within = (id.seq() % CHUNK_BITS) as usize;
        let key = chunk_key(vendor, id.series(), chunk);
        Ok(self.table.get(key)?.is_some_and(|bits| {
            bits.get(within / 8)
                .is_some_and(|b| b & (1 << (within % 8)) != 0)
        }))
    }

    /// Asks `vendor`'s node for a report on every series not yet final, and
    /// records it.
    pub(crate) async fn settle(
        &self,
        shard: &Shard,
        vendor: &VendorSettings,
    ) -> Result<(), BrokerError> {
        let mut open = Vec::new();
        for record in self.series_of(&vendor.name)? {
            if self.reported_at(&vendor.name, record.series)? < record.expires_at {
                open.push(record);
            }
        }
        for batch in open.chunks(SERIES_PER_CALL) {
            self.report(shard, vendor, batch).await?;
        }
        Ok(())
    }

    /// Makes sure the report recorded for `record` is final for scrip
    /// expiring at `expires_at`, asking the vendor node if it is not.
    pub(crate) async fn ensure_final(
        &self,
        shard: &Shard,
        vendor: &VendorSettings,
        record: &SeriesRecord,
        expires_at: u64,
    ) -> Result<(), BrokerError> {
        if self.reported_at(&vendor.name, record.series)? >= expires_at {
            return Ok(());
        }
        self.report(shard, vendor, std::slice::from_ref(record))
            .await?;
        if self.reported_at(&vendor.name, record.series)? >= expires_at {
            return Ok(());
        }
        Err(links::unavailable(
            &vendor.name,
            "the vendor node has not yet reported which of this scrip was spent; try again \
             in a few seconds"
                .to_owned(),
        ))
    }

    /// Asks for one report on `records` (all of one vendor), page by page,
    /// and records it.
    async fn report(
        &self,
        shard: &Shard,
        vendor: &VendorSettings,
        records: &[SeriesRecord],
    ) -> Result<(), BrokerError> {
        let mut client = links::vendor_node(vendor).await?;
        let mut pending: Vec<(SeriesRecord, u32)> =
            records.iter().map(|record| (record.clone(), 0)).collect();
        let mut pages: BTreeMap<u32, (Vec<u8>, bool)> = BTreeMap::new();
        let mut as_of = u64::MAX;
        while !pending.is_empty() {
            let request = links::bearer(
                proto::RedemptionsRequest {
                    vendor: vendor.name.to_string(),
                    broker: shard.broker_name().to_string(),
                    series: pending
                        .iter()
                        .map(|(record, first_seq)| proto::SeriesQuery {
                            series: record.series,
                            first_seq: *first_seq,
                        })
                        .collect(),
                },
                &vendor.licence_token,
                &vendor.name,
            )?;
            let report = client
                .report_redemptions(request)
                .await
                .map_err(|status| links::refused(vendor, "a redemption report", &status))?
                .into_inner();
            if report.vendor != vendor.name.as_str() || report.series.len() != pending.len() {
                return Err(links::unavailable(
                    &vendor.name,
                    "the vendor node sent a report for other series".to_owned(),
                ));
            }
            as_of = as_of.min(report.as_of);
            let mut next = Vec::new();
            for ((record, first_seq), answer) in pending.into_iter().zip(report.series) {
                if answer.series != record.series
                    || (answer.known && answer.first_seq != first_seq)
                    || answer.spent.len() > (1 << 20)
                {
                    return Err(links::unavailable(
                        &vendor.name,
                        "the vendor node sent a report that does not answer the request".to_owned(),
                    ));
                }
                let page = pages.entry(record.series).or_default();
                page.1 |= !answer.known;
                page.0.extend_from_slice(&answer.spent);
                if answer.known && answer.more {
                    let read = u32::try_from(answer.spent.len() * 8).unwrap_or(u32::MAX);
                    if let Some(next_seq) = first_seq.checked_add(read) {
                        next.push((record, next_seq));
                    }
                }
            }
            pending = next;
        }

        let _recording = self.reporting.lock().await;
        for record in records {
            let (bits, unknown) = pages.remove(&record.series).unwrap_or_default();
            if unknown {
                // The node no longer holds the series (forgotten after
                // expiry, or never this broker's): what was recorded stands.
                tracing::warn!(
                    vendor = %vendor.name,
                    series = record.series,
                    "the vendor node does not know this series; the last report recorded stands"
                );
                continue;
            }
            self.record(shard, record, &bits, as_of)?;
        }
        telemetry::redemption_report(vendor.name.as_str());
        Ok(())
    }

    /// Records the bits of one series as of `as_of`, with a transaction for
    /// what became redeemed since the last report.
    fn record(
        &self,
        shard: &Shard,
        record: &SeriesRecord,
        bits: &[u8],
        as_of: u64,
    ) -> Result<(), BrokerError> {
        let vendor = &record.vendor;
        let mut writes = Writes::new();
        let (mut redeemed, mut lost, mut unrecognised) = (Amount::ZERO, Amount::ZERO, 0u64);
        let mut lost_pieces = Vec::new();
        for (chunk, reported) in bits.chunks(CHUNK_BYTES).enumerate() {
            let chunk = chunk as u32;
            let key = chunk_key(vendor, record.series, chunk);
            let mut stored = self.table.get(&key)?.unwrap_or_default();
            stored.resize(CHUNK_BYTES, 0);
            let mut changed = false;
            for (index, byte) in reported.iter().enumerate() {
                let new = byte & !stored[index];
                for bit in (0..8).filter(|bit| new & (1 << bit) != 0) {
                    let seq = chunk * CHUNK_BITS + index as u32 * 8 + bit;
                    let id = ScripId::new(record.series, seq);
                    match self.value_of(shard, record, id)? {
                        Sale::Sold(value) => redeemed = redeemed.checked_add(value)?,
                        Sale::InStock(value) => {
                            lost = lost.checked_add(value)?;
                            lost_pieces.push(id);
                        }
                        Sale::Unknown => unrecognised += 1,
                    }
                }
                if new != 0 {
                    stored[index] |= new;
                    changed = true;
                }
            }
            if changed {
                writes.insert(&self.table, key, &stored);
            }
        }
        if unrecognised > 0 {
            tracing::warn!(
                vendor = %vendor,
                series = record.series,
                pieces = unrecognised,
                "the vendor reports scrip this shard never sold as redeemed; it is not paid for"
            );
            telemetry::unrecognised_redemptions(vendor.as_str(), unrecognised);
        }
        writes.insert(
            &self.table,
            series_key(AS_OF_PREFIX, vendor, record.series),
            as_of.to_be_bytes(),
        );
        if redeemed.is_zero() && lost.is_zero() {
            shard.ledger.apply(writes)?;
            return Ok(());
        }

        let mut tx = Transaction::new(
            TxKind::Redemption,
            as_of.saturating_mul(1000),
            &format!("series {} reported as of {as_of}", record.series),
        );
        if record.kind == SeriesKind::Licence(Contract::Redeemed) {
            tx = tx
                .debit(Account::VendorScrip(vendor.clone()), redeemed)
                .credit(Account::Payable(vendor.clone()), redeemed);
        }
        let series_line = ScripId::new(record.series, 0);
        if !redeemed.is_zero() {
            tx = tx.scrip(ScripRole::Redeemed, Some(vendor), series_line, redeemed);
        }
        if !lost.is_zero() {
            tracing::warn!(
                vendor = %vendor,
                series = record.series,
                pieces = lost_pieces.len(),
                "warehouse scrip still in stock was spent by someone else; written off as lost"
            );
            tx = tx
                .debit(Account::Fees, lost)
                .credit(Account::Warehouse(vendor.clone()), lost)
                .scrip(ScripRole::Lost, Some(vendor), series_line, lost);
            for id in &lost_pieces {
                shard.warehouse.mark_lost(&mut writes, vendor, *id);
            }
        }
        shard.books.post(writes, &tx)?;
        for id in &lost_pieces {
            shard.warehouse.forget(vendor, *id);
        }
        telemetry::redeemed(vendor.as_str(), redeemed);
        Ok(())
    }

    /// What the shard knows of piece `id` of `record`'s series.
    fn value_of(
        &self,
        shard: &Shard,
        record: &SeriesRecord,
        id: ScripId,
    ) -> Result<Sale, BrokerError> {
        match record.kind {
            SeriesKind::Licence(_) => {
                let mut key = vendor_key(SOLD_PREFIX, &record.vendor);
                key.extend_from_slice(&id.as_u64().to_be_bytes());
                match self.table.get(key)? {
                    Some(value) => Ok(Sale::Sold(decode_amount(&value)?)),
                    None => Ok(Sale::Unknown),
                }
            }
            SeriesKind::Warehouse => Ok(match shard.warehouse.piece(&record.vendor, id)? {
                Some((crate::warehouse::PieceState::Sold, piece)) => {
                    Sale::Sold(piece.scrip.value())
                }
                Some((crate::warehouse::PieceState::Stock, piece)) => {
                    Sale::InStock(piece.scrip.value())
                }
                Some((crate::warehouse::PieceState::Lost, _)) | None => Sale::Unknown,
            }),
        }
    }

    /// The statement of the shard: what is owed to and by every vendor and
    /// broker it deals with.
    pub(crate) fn statement(
        &self,
        shard: &Shard,
        vendors: &[VendorSettings],
        brokers: &[BrokerPeerSettings],
    ) -> Result<proto::ShardSettlement, BrokerError> {
        let books = &shard.books;
        let mut vendor_lines = Vec::with_capacity(vendors.len());
        for vendor in vendors {
            let name = &vendor.name;
            let payable = books.sides(&Account::Payable(name.clone()));
            let mut reported_at = 0;
            for record in self.series_of(name)? {
                reported_at = reported_at.max(self.reported_at(name, record.series)?);
            }
            vendor_lines.push(proto::VendorSettlement {
                vendor: name.to_string(),
                payable: clamp(-payable.balance()),
                accrued: payable.credits.min(u128::from(u64::MAX)) as u64,
                paid: payable.debits.min(u128::from(u64::MAX)) as u64,
                outstanding: clamp(-books.balance(&Account::VendorScrip(name.clone()))),
                stock: clamp(books.balance(&Account::Warehouse(name.clone()))),
                reported_at,
            });
        }
        let broker_lines = brokers
            .iter()
            .map(|broker| proto::BrokerSettlement {
                broker: broker.name.to_string(),
                balance: clamp(books.balance(&Account::Broker(broker.name.clone()))),
            })
            .collect();
        Ok(proto::ShardSettlement {
            shard: u32::from(shard.id),
            vendors: vendor_lines,
            brokers: broker_lines,
            cash: clamp(books.balance(&Account::Cash)),
            fees: clamp(-books.balance(&Account::Fees)),
        })
    }

    /// Records a payout of `amount` with `counterparty`, once per
    /// `reference`; returns what is owed to the counterparty after it
    /// (negative when the counterparty owes the shard), and whether the
    /// reference had recorded this payout already.
    pub(crate) fn payout(
        &self,
        shard: &Shard,
        counterparty: &Counterparty,
        direction: Direction,
        amount: Amount,
        reference: &str,
        now_ms: u64,
    ) -> Result<(i128, bool), BrokerError> {
        let _paying = self.payouts.lock().unwrap_or_else(PoisonError::into_inner);
        let books = &shard.books;
        let stored_reference = format!("payout/{reference}");
        // What the reference records: the payout itself, so that reusing
        // it for another is refused rather than taken for a retry.
        let what = format!(
            "a payout of {amount} {} {}",
            match direction {
                Direction::Pay => "to",
                Direction::Receive => "from",
            },
            counterparty.name()
        );
        if let Some(reply) = books.reply_for(&stored_reference)? {
            let (owed, recorded) = reply
                .split_first_chunk::<16>()
                .ok_or_else(|| unreadable("payout reply"))?;
            let recorded = String::from_utf8_lossy(recorded);
            if recorded != what {
                return Err(BrokerError::ReferenceReused {
                    reference: reference.to_owned(),
                    recorded: recorded.into_owned(),
                    asked: what,
                });
            }
            return Ok((i128::from_be_bytes(*owed), true));
        }
        let (account, name) = match counterparty {
            Counterparty::Vendor(name) => (Account::Payable(name.clone()), name),
            Counterparty::Broker(name) => (Account::Broker(name.clone()), name),
        };
        // What is owed to the counterparty before and after.
        let owed = -books.balance(&account);
        let units = i128::from(amount.units());
        let (within, tx) = match (counterparty, direction) {
            (_, Direction::Pay) => (
                owed >= units,
                Transaction::new(TxKind::Payout, now_ms, reference)
                    .debit(account, amount)
                    .credit(Account::Cash, amount),
            ),
            (Counterparty::Broker(_), Direction::Receive) => (
                -owed >= units,
                Transaction::new(TxKind::Payout, now_ms, reference)
                    .debit(Account::Cash, amount)
                    .credit(account, amount),
            ),
            (Counterparty::Vendor(_), Direction::Receive) => {
                return Err(BrokerError::InvalidArgument {
                    what: "direction",
                    detail: "vendors are paid, never paid back, through a payout",
                });
            }
        };
        if !within {
            return Err(BrokerError::ExceedsOwed {
                counterparty: name.to_string(),
                owed: if direction == Direction::Pay {
                    owed
                } else {
                    -owed
                },
                amount: amount.units(),
            });
        }
        let after = match direction {
            Direction::Pay => owed - units,
            Direction::Receive => owed + units,
        };
        let mut writes = Writes::new();
        let mut reply = after.to_be_bytes().to_vec();
        reply.extend_from_slice(what.as_bytes());
        books.record_reply(&mut writes, &stored_reference, &reply);
        books.post(writes, &tx)?;
        Ok((after, false))
    }
}

/// What a shard knows of a piece of vendor scrip a vendor reports spent.
enum Sale {
    /// Sold to a customer, worth this.
    Sold(Amount),
    /// Still in the warehouse's stock, worth this.
    InStock(Amount),
    /// Never sold by this shard.
    Unknown,
}

fn clamp(value: i128) -> i64 {
    value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn vendor_key(kind: u8, vendor: &VendorName) -> Vec<u8> {
    crate::shard::name_key(&[kind], vendor, 12)
}

fn series_key(kind: u8, vendor: &VendorName, series: u32) -> Vec<u8> {
    let mut key = vendor_key(kind, vendor);
    key.extend_from_slice(&series.to_be_bytes());
    key
}

fn chunk_key(vendor: &VendorName, series: u32, chunk: u32) -> Vec<u8> {
    let mut key = series_key(BITS_PREFIX, vendor, series);
    key.extend_from_slice(&chunk.to_be_bytes());
    key
}

/// The vendor at the start of `rest` (length byte, name) and what follows.
fn split_vendor(rest: &[u8]) -> Option<(VendorName, &[u8])> {
    let len = *rest.first()? as usize;
    let name = std::str::from_utf8(rest.get(1..1 + len)?).ok()?;
    Some((VendorName::new(name).ok()?, rest.get(1 + len..)?))
}

fn decode_registration(key: &[u8], value: &[u8]) -> Option<SeriesRecord> {
    let (vendor, rest) = split_vendor(key.get(1..)?)?;
    let series = u32::from_be_bytes(rest.try_into().ok()?);
    let kind = match (value.first()?, value.get(1)?) {
        (1, contract) => SeriesKind::Licence(Contract::from_byte(*contract)?),
        (2, 0) => SeriesKind::Warehouse,
        _ => return None,
    };
    let expires_at = u64::from_be_bytes(value.get(2..10)?.try_into().ok()?);
    Some(SeriesRecord {
        vendor,
        series,
        kind,
        expires_at,
    })
}

fn decode_amount(bytes: &[u8]) -> Result<Amount, BrokerError> {
    bytes
        .try_into()
        .map(|bytes| Amount::new(u64::from_be_bytes(bytes)))
        .map_err(|_| unreadable("amount"))
}

fn unreadable(what: &str) -> BrokerError {
    BrokerError::Storage(LedgerError::Storage {
        operation: "read settlement",
        detail: format!("stored {what} is unreadable"),
    })
}

#[cfg(test)]
mod tests {
    use millicent_ledger::Durability;

    use super::*;

    #[tokio::test]
    async fn the_registry_and_sales_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Durability::Strict).unwrap();
        let settlement = Settlement::open(&ledger).unwrap();
        let vendor = VendorName::new("news.example").unwrap();
        let mut writes = Writes::new();
        register_series(
            &mut writes,
            settlement.table(),
            &vendor,
            7,
            SeriesKind::Licence(Contract::Sold),
            99,
        );
        register_series(
            &mut writes,
            settlement.table(),
            &vendor,
            8,
            SeriesKind::Warehouse,
            100,
        );
        settlement.record_sold(&mut writes, &vendor, ScripId::new(7, 3), Amount::new(40));
        ledger.apply(writes).unwrap();

        let series = settlement.series_of(&vendor).unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].kind, SeriesKind::Licence(Contract::Sold));
        assert_eq!(series[1].expires_at, 100);
        assert_eq!(registry(settlement.table()).unwrap(), series);
        assert_eq!(
            settlement.series(&vendor, 8).unwrap(),
            Some(series[1].clone())
        );
        assert_eq!(settlement.series(&vendor, 9).unwrap(), None);
        let sold = sold_pieces(settlement.table()).unwrap();
        assert_eq!(sold[&(vendor.clone(), ScripId::new(7, 3))], Amount::new(40));
        assert_eq!(settlement.reported_at(&vendor, 7).unwrap(), 0);
        assert!(!settlement.is_redeemed(&vendor, ScripId::new(7, 3)).unwrap());
    }
}
