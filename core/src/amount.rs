//! Amounts of money in the smallest unit of a deployment's currency.

use crate::{Error, Result};

/// A non-negative amount in the smallest unit (for example a thousandth of a
/// cent). Arithmetic is checked: it fails with [`Error::AmountOverflow`]
/// instead of wrapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(u64);

impl Amount {
    /// Nothing.
    pub const ZERO: Amount = Amount(0);

    /// An amount of `units` smallest units.
    pub const fn new(units: u64) -> Amount {
        Amount(units)
    }

    /// The amount in smallest units.
    pub const fn units(self) -> u64 {
        self.0
    }

    /// Whether the amount is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `self + other`, or an error if the sum does not fit.
    pub fn checked_add(self, other: Amount) -> Result<Amount> {
        self.0
            .checked_add(other.0)
            .map(Amount)
            .ok_or(Error::AmountOverflow)
    }

    /// `self - other`, or an error if `other` is larger.
    pub fn checked_sub(self, other: Amount) -> Result<Amount> {
        self.0
            .checked_sub(other.0)
            .map(Amount)
            .ok_or(Error::AmountOverflow)
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_checked() {
        let max = Amount::new(u64::MAX);
        assert_eq!(max.checked_add(Amount::new(1)), Err(Error::AmountOverflow));
        assert_eq!(
            Amount::new(1).checked_sub(Amount::new(2)),
            Err(Error::AmountOverflow)
        );
        assert_eq!(
            Amount::new(5).checked_sub(Amount::new(2)),
            Ok(Amount::new(3))
        );
        assert_eq!(
            Amount::new(5).checked_add(Amount::new(2)),
            Ok(Amount::new(7))
        );
    }
}
