//! Blocks of scrip sold to brokers in bulk: the vendor's side of a scrip
//! warehouse.
//!
//! A broker that does not mint a vendor's scrip under licence can buy it
//! ready-made: the node creates a new series and customer selector held for
//! that broker, exactly as for a licence, but keeps both master secrets and
//! mints the pieces itself, sequence numbers `0 .. count` with Cust IDs
//! `0 .. count` under the new selector, each expiring with the series. The
//! broker gets the pieces and their customer secrets, never a master
//! secret, and resells them one by one.
//!
//! The series is committed, and in the key ring, before the block is
//! answered, so every piece is accepted from the moment the broker has it.
//! Payments with the pieces then go through the ordinary payment path;
//! nothing here runs per payment.

use millicent_core::{
    Amount, CustId, CustomerSecret, KeyRing, Properties, Scrip, ScripBody, ScripId,
};

use crate::VendorError;
use crate::vendor::Vendor;

/// Most pieces in one block: about 600 KiB of reply.
pub(crate) const MAX_BLOCK: u32 = 4096;

/// A block as sold: its series, expiry and pieces with their secrets.
pub(crate) struct Block {
    pub(crate) series: u32,
    pub(crate) expires_at: u64,
    pub(crate) pieces: Vec<(Scrip, CustomerSecret)>,
}

/// Sells `broker` a block of `count` pieces of `value` of `vendor`'s scrip.
pub(crate) async fn sell(
    vendor: &Vendor,
    broker: &str,
    count: u32,
    value: Amount,
    now: u64,
) -> Result<Block, VendorError> {
    let keys = vendor
        .create_held_series(broker, now, "scrip block sold")
        .await?;
    let mut ring = KeyRing::new(vendor.name().clone());
    ring.add_series(keys.series.clone());
    ring.add_customer_key(keys.customer.clone());

    let (series, expires_at, suite) = (
        keys.series.series,
        keys.series.expires_at,
        keys.series.suite,
    );
    let mut pieces = Vec::with_capacity(count as usize);
    for seq in 0..count {
        let cust_id = CustId::new(keys.customer.selector, u64::from(seq))?;
        let scrip = ring.mint(ScripBody {
            suite,
            vendor: vendor.name().clone(),
            value,
            id: ScripId::new(series, seq),
            cust_id,
            expires_at,
            properties: Properties::default(),
        })?;
        let secret = ring.customer_secret(suite, cust_id)?;
        pieces.push((scrip, secret));
    }
    metrics::counter!(
        "millicent_vendor_scrip_blocks_sold_total",
        "vendor" => vendor.name().as_str().to_owned()
    )
    .increment(1);
    Ok(Block {
        series,
        expires_at,
        pieces,
    })
}
