//! The wallet's settings: how much vendor scrip a top-up buys, and the
//! limits on what the wallet pays.
//!
//! Limits count payments to vendors, not exchanges: vendor scrip bought and
//! not spent is still the customer's. A payment counts from the moment it
//! is recorded in flight, so an answer that was lost still counts, and the
//! daily limits look at the 24 hours before the payment.

use std::collections::BTreeMap;

use millicent_core::{Amount, VendorName};
use serde::{Deserialize, Serialize};

use super::{HistoryKind, InFlight, Outcome, Wallet};
use crate::ClientError;

/// One day, in milliseconds: the window of the daily limits.
pub const DAY_MS: u64 = 24 * 3600 * 1000;

/// What a wallet is set to do, kept in its file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// How much vendor scrip to ask for when broker scrip must be exchanged.
    #[serde(with = "super::file::amount")]
    pub top_up: Amount,
    /// The largest price paid in one payment, if limited.
    #[serde(with = "super::file::optional_amount")]
    pub max_price: Option<Amount>,
    /// The most paid to all vendors together in 24 hours, if limited.
    #[serde(with = "super::file::optional_amount")]
    pub daily_limit: Option<Amount>,
    /// The most paid to any one vendor in 24 hours, if limited.
    #[serde(with = "super::file::optional_amount")]
    pub vendor_daily_limit: Option<Amount>,
    /// Limits for particular vendors, replacing `vendor_daily_limit`.
    pub vendor_limits: BTreeMap<String, u64>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            top_up: Amount::new(100),
            max_price: Some(Amount::new(100)),
            daily_limit: Some(Amount::new(1000)),
            vendor_daily_limit: None,
            vendor_limits: BTreeMap::new(),
        }
    }
}

impl Settings {
    /// The daily limit of `vendor`: its own, else the one for every vendor.
    pub fn limit_for(&self, vendor: &VendorName) -> Option<Amount> {
        self.vendor_limits
            .get(vendor.as_str())
            .map(|units| Amount::new(*units))
            .or(self.vendor_daily_limit)
    }
}

impl Wallet {
    /// The wallet's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Replaces the wallet's settings and saves the wallet.
    pub fn set_settings(&mut self, settings: Settings) -> Result<(), ClientError> {
        self.settings = settings;
        self.save()
    }

    /// What was paid to `vendor` (to every vendor, if `None`) since
    /// `since_ms`, counting payments whose answer is still awaited.
    pub fn paid_since(&self, vendor: Option<&VendorName>, since_ms: u64) -> Amount {
        let wanted = |name: &str| vendor.is_none_or(|v| v.as_str() == name);
        let settled = self
            .history
            .iter()
            .filter(|entry| entry.kind == HistoryKind::Pay && entry.outcome == Outcome::Ok)
            .filter(|entry| entry.time_ms >= since_ms)
            .filter(|entry| entry.vendor.as_deref().is_some_and(wanted))
            .filter_map(|entry| entry.price);
        let pending = self.vendor_scrip.iter().filter_map(|held| {
            let price = match held.in_flight.as_ref()? {
                InFlight::Pay { price, .. } => (*price)?,
                InFlight::Web { price, .. } => *price,
                InFlight::Exchange { .. } | InFlight::Refund { .. } => return None,
            };
            wanted(held.scrip.body().vendor.as_str()).then_some(price)
        });
        settled.chain(pending).fold(Amount::ZERO, plus)
    }

    /// Fails with [`ClientError::OverLimit`] if paying `price` to `vendor`
    /// at `now_ms` would go over a limit.
    pub fn check_limits(
        &self,
        vendor: &VendorName,
        price: Amount,
        now_ms: u64,
    ) -> Result<(), ClientError> {
        let over = |limit_name, limit, spent, flag: String| ClientError::OverLimit {
            vendor: vendor.to_string(),
            price,
            limit_name,
            limit,
            spent,
            flag,
        };
        if let Some(max) = self.settings.max_price
            && price > max
        {
            return Err(over(
                "per-payment limit",
                max,
                Amount::ZERO,
                "--max-price N".to_owned(),
            ));
        }
        let since = now_ms.saturating_sub(DAY_MS);
        if let Some(limit) = self.settings.daily_limit {
            let spent = self.paid_since(None, since);
            if plus(spent, price) > limit {
                return Err(over("daily limit", limit, spent, "--daily N".to_owned()));
            }
        }
        if let Some(limit) = self.settings.limit_for(vendor) {
            let spent = self.paid_since(Some(vendor), since);
            if plus(spent, price) > limit {
                let flag = if self.settings.vendor_limits.contains_key(vendor.as_str()) {
                    format!("--vendor-limit {vendor}=N")
                } else {
                    "--per-vendor N".to_owned()
                };
                return Err(over("daily limit at this vendor", limit, spent, flag));
            }
        }
        Ok(())
    }
}

/// `a + b`, at most the largest amount: a sum that large is over any limit.
fn plus(a: Amount, b: Amount) -> Amount {
    Amount::new(a.units().saturating_add(b.units()))
}
