//! The scrip warehouse of one shard: vendor scrip bought from a vendor
//! node in blocks and resold piece by piece.
//!
//! For a vendor configured with `source = "warehouse"`, the shard buys
//! blocks of `warehouse_block` pieces worth `warehouse_value` each
//! (`SellScripBlock`), and an exchange for that vendor hands out one piece
//! of exactly that value. A block is paid for when bought: one transaction
//! puts its value in `warehouse/V` (stock, an asset) and owes it in
//! `payable/V`; each sale then takes a piece's value out of the stock.
//!
//! A block is checked like any outside input before anything is written:
//! every piece must be the vendor's, of the value and series asked for,
//! with its own ID#, expiring with the block, and with a customer secret
//! of its suite's length. The pieces, the block's series and the purchase
//! are then written in one atomic write. When fewer than
//! `warehouse_low_water` pieces are left a new block is bought in the
//! background; an exchange that finds the stock empty is refused with
//! `vendor_unavailable` and starts one.
//!
//! Pieces that expire in stock stay in the books at their cost: writing
//! them off is not done yet, so `warehouse/V` counts them until then.
//!
//! # Keys (table `warehouse`; `vendor` is its length (1) then its name)
//!
//! - `p ‖ vendor ‖ ID# (8)` → state (1: 0 in stock, 1 sold, 2 lost) ‖
//!   scrip length (2) ‖ scrip (body ‖ certificate) ‖ secret length (1) ‖
//!   customer secret

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use millicent_core::{Amount, CustomerSecret, Scrip, ScripId, VendorName};
use millicent_ledger::{LedgerError, Table, Writes};
use millicent_proto as proto;
use zeroize::Zeroizing;

use crate::books::{Account, Transaction, TxKind};
use crate::config::{Source, VendorSettings, Warehousing};
use crate::settlement::{self, SeriesKind};
use crate::shard::Shard;
use crate::{BrokerError, links, telemetry};

/// Name of the warehouse table.
pub(crate) const TABLE: &str = "warehouse";

const PIECE_PREFIX: u8 = b'p';
/// A piece is sold only if it is valid for at least this long.
const MIN_REMAINING_SECS: u64 = 60 * 60;

/// One piece of vendor scrip with its customer secret.
#[derive(Clone, Debug)]
pub(crate) struct Piece {
    pub(crate) scrip: Scrip,
    pub(crate) secret: CustomerSecret,
}

/// Where a piece is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PieceState {
    Stock = 0,
    Sold = 1,
    Lost = 2,
}

/// The stock of one warehouse vendor.
struct Stock {
    settings: Warehousing,
    pieces: Mutex<VecDeque<Piece>>,
    restocking: AtomicBool,
}

/// The warehouse of one shard.
pub(crate) struct Warehouse {
    table: Table,
    stocks: BTreeMap<VendorName, Stock>,
}

impl Warehouse {
    /// Loads the pieces in stock of every warehouse vendor.
    pub(crate) fn open(table: Table, vendors: &[VendorSettings]) -> Result<Warehouse, BrokerError> {
        let mut stocks = BTreeMap::new();
        for vendor in vendors {
            let Source::Warehouse(settings) = vendor.source else {
                continue;
            };
            let mut pieces = Vec::new();
            for entry in table.scan_prefix(vendor_key(&vendor.name)) {
                let (_, value) = entry?;
                let value = Zeroizing::new(value);
                let (state, piece) = decode_piece(&value).ok_or_else(|| unreadable("piece"))?;
                if state == PieceState::Stock && piece.scrip.value() == settings.value {
                    pieces.push(piece);
                }
            }
            pieces.sort_by_key(|piece| piece.scrip.body().expires_at);
            stocks.insert(
                vendor.name.clone(),
                Stock {
                    settings,
                    pieces: Mutex::new(pieces.into()),
                    restocking: AtomicBool::new(false),
                },
            );
        }
        Ok(Warehouse { table, stocks })
    }

    /// The warehouse table.
    pub(crate) fn table(&self) -> &Table {
        &self.table
    }

    /// Takes a piece of `vendor` worth `value` from the stock, the one
    /// expiring first among those valid long enough. Put it back with
    /// [`Warehouse::put_back`] if it is not sold after all.
    pub(crate) fn take(
        &self,
        vendor: &VendorName,
        value: Amount,
        now: u64,
    ) -> Result<Piece, BrokerError> {
        let stock = self.stock(vendor)?;
        if value != stock.settings.value {
            return Err(BrokerError::WrongValue {
                vendor: vendor.to_string(),
                asked: value.units(),
                sold: stock.settings.value.units(),
            });
        }
        let mut pieces = stock.pieces.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(piece) = pieces.pop_front() {
            if piece.scrip.body().expires_at > now.saturating_add(MIN_REMAINING_SECS) {
                return Ok(piece);
            }
        }
        Err(links::unavailable(
            vendor,
            "the warehouse is out of this vendor's scrip; a new block is being bought, try \
             again shortly"
                .to_owned(),
        ))
    }

    /// Returns a piece taken but not sold.
    pub(crate) fn put_back(&self, vendor: &VendorName, piece: Piece) {
        if let Some(stock) = self.stocks.get(vendor) {
            stock
                .pieces
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_front(piece);
        }
    }

    /// Adds the sale of `piece` to `writes`.
    pub(crate) fn record_sold(&self, writes: &mut Writes, piece: &Piece) {
        writes.insert(
            &self.table,
            piece_key(&piece.scrip.body().vendor, piece.scrip.id()),
            encode_piece(PieceState::Sold, piece),
        );
    }

    /// Adds to `writes` that piece `id` of `vendor` is back in stock, if it
    /// is marked sold: for an exchange that did not happen.
    pub(crate) fn unsell(
        &self,
        writes: &mut Writes,
        vendor: &VendorName,
        id: ScripId,
    ) -> Result<(), BrokerError> {
        if let Some((PieceState::Sold, piece)) = self.piece(vendor, id)? {
            writes.insert(
                &self.table,
                piece_key(vendor, id),
                encode_piece(PieceState::Stock, &piece),
            );
        }
        Ok(())
    }

    /// Puts piece `id` of `vendor` back into the stock in memory, if the
    /// table has it in stock and memory does not.
    pub(crate) fn restore(&self, vendor: &VendorName, id: ScripId) {
        let Some(stock) = self.stocks.get(vendor) else {
            return;
        };
        if let Ok(Some((PieceState::Stock, piece))) = self.piece(vendor, id) {
            let mut pieces = stock.pieces.lock().unwrap_or_else(PoisonError::into_inner);
            if !pieces.iter().any(|held| held.scrip.id() == id) {
                pieces.push_front(piece);
            }
        }
    }

    /// Adds to `writes` that piece `id` of `vendor`, in stock, was lost.
    pub(crate) fn mark_lost(&self, writes: &mut Writes, vendor: &VendorName, id: ScripId) {
        if let Ok(Some((_, piece))) = self.piece(vendor, id) {
            writes.insert(
                &self.table,
                piece_key(vendor, id),
                encode_piece(PieceState::Lost, &piece),
            );
        }
    }

    /// Drops piece `id` of `vendor` from the stock in memory.
    pub(crate) fn forget(&self, vendor: &VendorName, id: ScripId) {
        if let Some(stock) = self.stocks.get(vendor) {
            stock
                .pieces
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|piece| piece.scrip.id() != id);
        }
    }

    /// Piece `id` of `vendor` and where it is, if the shard ever held it.
    pub(crate) fn piece(
        &self,
        vendor: &VendorName,
        id: ScripId,
    ) -> Result<Option<(PieceState, Piece)>, BrokerError> {
        match self.table.get(piece_key(vendor, id))? {
            None => Ok(None),
            Some(value) => {
                let value = Zeroizing::new(value);
                decode_piece(&value)
                    .map(Some)
                    .ok_or_else(|| unreadable("piece"))
            }
        }
    }

    /// Pieces of `vendor` in stock.
    pub(crate) fn in_stock(&self, vendor: &VendorName) -> usize {
        self.stocks.get(vendor).map_or(0, |stock| {
            stock
                .pieces
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
        })
    }

    /// Whether `vendor`'s stock is below its low water and no block is
    /// being bought; if so, the caller is to buy one, and must call
    /// [`Warehouse::restocked`] when done.
    pub(crate) fn begin_restock(&self, vendor: &VendorName) -> bool {
        let Some(stock) = self.stocks.get(vendor) else {
            return false;
        };
        self.in_stock(vendor) < stock.settings.low_water as usize
            && !stock.restocking.swap(true, Ordering::AcqRel)
    }

    /// Ends what [`Warehouse::begin_restock`] began.
    pub(crate) fn restocked(&self, vendor: &VendorName) {
        if let Some(stock) = self.stocks.get(vendor) {
            stock.restocking.store(false, Ordering::Release);
        }
    }

    /// Buys a block of `vendor`'s scrip from its node and puts it in stock.
    pub(crate) async fn buy_block(
        &self,
        shard: &Shard,
        vendor: &VendorSettings,
        now: u64,
        now_ms: u64,
    ) -> Result<usize, BrokerError> {
        let stock = self.stock(&vendor.name)?;
        let settings = stock.settings;
        let request = links::bearer(
            proto::SellScripBlockRequest {
                vendor: vendor.name.to_string(),
                broker: shard.broker_name().to_string(),
                count: settings.block,
                value: settings.value.units(),
            },
            &vendor.licence_token,
            &vendor.name,
        )?;
        let block = links::vendor_node(vendor)
            .await?
            .sell_scrip_block(request)
            .await
            .map_err(|status| links::refused(vendor, "a block of scrip", &status))?
            .into_inner();
        let pieces = check_block(&block, &vendor.name, settings, now).map_err(|detail| {
            links::unavailable(
                &vendor.name,
                format!("the vendor node sent an unusable block: {detail}"),
            )
        })?;

        let total = Amount::new(settings.value.units() * u64::from(settings.block));
        let mut writes = Writes::new();
        for piece in &pieces {
            writes.insert(
                &self.table,
                piece_key(&vendor.name, piece.scrip.id()),
                encode_piece(PieceState::Stock, piece),
            );
        }
        settlement::register_series(
            &mut writes,
            shard.settlement.table(),
            &vendor.name,
            block.series,
            SeriesKind::Warehouse,
            block.expires_at,
        );
        let tx = Transaction::new(
            TxKind::WarehousePurchase,
            now_ms,
            &format!("block of series {}", block.series),
        )
        .debit(Account::Warehouse(vendor.name.clone()), total)
        .credit(Account::Payable(vendor.name.clone()), total);
        shard.books.post(writes, &tx)?;
        shard.ledger.commit().await?;

        let count = pieces.len();
        stock
            .pieces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(pieces);
        telemetry::block_bought(vendor.name.as_str());
        tracing::info!(
            vendor = %vendor.name,
            shard = shard.id,
            series = block.series,
            pieces = count,
            "warehouse block bought"
        );
        Ok(count)
    }

    fn stock(&self, vendor: &VendorName) -> Result<&Stock, BrokerError> {
        self.stocks
            .get(vendor)
            .ok_or_else(|| BrokerError::UnknownVendor {
                vendor: vendor.to_string(),
            })
    }
}

/// The pieces of `block` if it is what was asked for.
pub(crate) fn check_block(
    block: &proto::ScripBlock,
    vendor: &VendorName,
    settings: Warehousing,
    now: u64,
) -> Result<Vec<Piece>, String> {
    if block.vendor != vendor.as_str() {
        return Err(format!("it is of vendor {:?}", block.vendor));
    }
    if block.pieces.len() != settings.block as usize {
        return Err(format!(
            "it holds {} pieces, not the {} asked for",
            block.pieces.len(),
            settings.block
        ));
    }
    if block.expires_at <= now {
        return Err("it has expired".to_owned());
    }
    let mut ids = HashSet::with_capacity(block.pieces.len());
    let mut pieces = Vec::with_capacity(block.pieces.len());
    for wire in &block.pieces {
        let scrip = wire
            .scrip
            .as_ref()
            .ok_or("a piece has no scrip")
            .and_then(|scrip| {
                Scrip::decode(&scrip.body, &scrip.certificate)
                    .map_err(|_| "a piece does not decode")
            })?;
        let body = scrip.body();
        if body.vendor != *vendor
            || body.value != settings.value
            || body.id.series() != block.series
            || body.expires_at != block.expires_at
            || !ids.insert(body.id)
        {
            return Err(format!("piece {} is not what was asked for", body.id));
        }
        let secret = Zeroizing::new(wire.customer_secret.clone());
        let secret = CustomerSecret::from_slice(scrip.suite(), &secret).map_err(|_| {
            format!(
                "piece {} has a customer secret of the wrong length",
                body.id
            )
        })?;
        pieces.push(Piece { scrip, secret });
    }
    Ok(pieces)
}

/// Every piece of the warehouse table, for audits.
pub(crate) fn all_pieces(
    table: &Table,
) -> impl Iterator<Item = Result<(PieceState, Piece), BrokerError>> + use<> {
    table.scan_prefix([PIECE_PREFIX]).map(|entry| {
        let (_, value) = entry?;
        let value = Zeroizing::new(value);
        decode_piece(&value).ok_or_else(|| unreadable("piece"))
    })
}

fn vendor_key(vendor: &VendorName) -> Vec<u8> {
    crate::shard::name_key(&[PIECE_PREFIX], vendor, 8)
}

fn piece_key(vendor: &VendorName, id: ScripId) -> Vec<u8> {
    let mut key = vendor_key(vendor);
    key.extend_from_slice(&id.as_u64().to_be_bytes());
    key
}

fn encode_piece(state: PieceState, piece: &Piece) -> Zeroizing<Vec<u8>> {
    let scrip = piece.scrip.encode();
    let secret = piece.secret.expose_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(4 + scrip.len() + secret.len()));
    out.push(state as u8);
    out.extend_from_slice(&(scrip.len() as u16).to_be_bytes());
    out.extend_from_slice(&scrip);
    out.push(secret.len() as u8);
    out.extend_from_slice(secret);
    out
}

fn decode_piece(bytes: &[u8]) -> Option<(PieceState, Piece)> {
    let state = match *bytes.first()? {
        0 => PieceState::Stock,
        1 => PieceState::Sold,
        2 => PieceState::Lost,
        _ => return None,
    };
    let scrip_len = u16::from_be_bytes(bytes.get(1..3)?.try_into().ok()?) as usize;
    let scrip = Scrip::decode_concatenated(bytes.get(3..3 + scrip_len)?).ok()?;
    let rest = bytes.get(3 + scrip_len..)?;
    let secret_len = *rest.first()? as usize;
    if rest.len() != 1 + secret_len {
        return None;
    }
    let secret = CustomerSecret::from_slice(scrip.suite(), &rest[1..]).ok()?;
    Some((state, Piece { scrip, secret }))
}

fn unreadable(what: &str) -> BrokerError {
    BrokerError::Storage(LedgerError::Storage {
        operation: "read warehouse",
        detail: format!("stored {what} is unreadable"),
    })
}

#[cfg(test)]
mod tests {
    use millicent_core::{CustId, KeyRing, MasterSecret, Properties, ScripBody, SeriesKey, Suite};

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn block(count: u32, value: u64) -> proto::ScripBlock {
        let vendor = VendorName::new("news.example").unwrap();
        let mut ring = KeyRing::new(vendor.clone());
        ring.add_series(SeriesKey {
            series: 9,
            suite: Suite::Classic,
            expires_at: NOW + 10_000,
            secret: MasterSecret::new(Suite::Classic, [3; 32]),
        });
        let pieces = (0..count)
            .map(|seq| {
                let scrip = ring
                    .mint(ScripBody {
                        suite: Suite::Classic,
                        vendor: vendor.clone(),
                        value: Amount::new(value),
                        id: ScripId::new(9, seq),
                        cust_id: CustId::new(4, u64::from(seq)).unwrap(),
                        expires_at: NOW + 10_000,
                        properties: Properties::default(),
                    })
                    .unwrap();
                proto::BlockPiece {
                    scrip: Some(proto::Scrip {
                        body: scrip.encoded_body().to_vec(),
                        certificate: scrip.certificate().as_bytes().to_vec(),
                    }),
                    customer_secret: vec![seq as u8; 16],
                }
            })
            .collect();
        proto::ScripBlock {
            vendor: vendor.to_string(),
            series: 9,
            expires_at: NOW + 10_000,
            pieces,
        }
    }

    fn settings(block: u32) -> Warehousing {
        Warehousing {
            value: Amount::new(5),
            block,
            low_water: 1,
        }
    }

    #[test]
    fn a_block_is_checked_piece_by_piece() {
        let vendor = VendorName::new("news.example").unwrap();
        let pieces = check_block(&block(3, 5), &vendor, settings(3), NOW).unwrap();
        assert_eq!(pieces.len(), 3);
        let other = VendorName::new("other").unwrap();
        assert!(check_block(&block(3, 5), &other, settings(3), NOW).is_err());
        assert!(check_block(&block(3, 6), &vendor, settings(3), NOW).is_err());
        assert!(check_block(&block(2, 5), &vendor, settings(3), NOW).is_err());
        assert!(check_block(&block(3, 5), &vendor, settings(3), NOW + 10_000).is_err());
        let mut twice = block(3, 5);
        twice.pieces[2] = twice.pieces[1].clone();
        assert!(check_block(&twice, &vendor, settings(3), NOW).is_err());
        let mut short = block(3, 5);
        short.pieces[0].customer_secret.pop();
        assert!(check_block(&short, &vendor, settings(3), NOW).is_err());
    }

    #[test]
    fn pieces_round_trip() {
        let vendor = VendorName::new("news.example").unwrap();
        let piece = check_block(&block(1, 5), &vendor, settings(1), NOW)
            .unwrap()
            .remove(0);
        let bytes = encode_piece(PieceState::Sold, &piece);
        let (state, decoded) = decode_piece(&bytes).unwrap();
        assert_eq!(state, PieceState::Sold);
        assert_eq!(decoded.scrip, piece.scrip);
        assert_eq!(decoded.secret, piece.secret);
        assert!(decode_piece(&bytes[..bytes.len() - 1]).is_none());
    }
}
