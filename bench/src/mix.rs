//! The operations a load run mixes, and their shares.
//!
//! A mix is written `pay=90,exchange=3,buy=2,refund=2,replay=1,tamper=1,expired=1`:
//! each customer picks its next operation at random with these weights
//! (they need not add up to 100). The last three are attacks, which the
//! network must refuse.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// One kind of operation a simulated customer performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Pay the vendor node with vendor scrip, taking the change.
    Pay,
    /// Exchange broker scrip for vendor scrip at the broker.
    Exchange,
    /// Buy broker scrip from the account's balance.
    Buy,
    /// Turn unspent broker scrip back into account balance.
    Refund,
    /// Attack: spend scrip the vendor already accepted, with a new request.
    Replay,
    /// Attack: raise the value of good scrip, keeping its certificate.
    Tamper,
    /// Attack: scrip with a valid certificate whose expiry has passed.
    Expired,
}

impl Operation {
    /// Every operation, in the order of reports.
    pub const ALL: [Operation; 7] = [
        Operation::Pay,
        Operation::Exchange,
        Operation::Buy,
        Operation::Refund,
        Operation::Replay,
        Operation::Tamper,
        Operation::Expired,
    ];

    /// The name used in mixes and reports.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Pay => "pay",
            Operation::Exchange => "exchange",
            Operation::Buy => "buy",
            Operation::Refund => "refund",
            Operation::Replay => "replay",
            Operation::Tamper => "tamper",
            Operation::Expired => "expired",
        }
    }

    /// Whether this is a deliberate attack that must be refused.
    pub fn is_attack(self) -> bool {
        self.expected_refusal().is_some()
    }

    /// The reason the network must give when it refuses this attack.
    pub fn expected_refusal(self) -> Option<&'static str> {
        match self {
            Operation::Replay => Some("double_spend"),
            Operation::Tamper => Some("bad_certificate"),
            Operation::Expired => Some("expired"),
            _ => None,
        }
    }

    /// The position of this operation in [`Operation::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The shares of the operations in a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    /// Weight of each operation, indexed by [`Operation::index`].
    weights: [f64; Operation::ALL.len()],
    /// Running sums of the weights, for picking.
    cumulative: [f64; Operation::ALL.len()],
}

impl Mix {
    /// The default mix: mostly payments, some broker traffic and 3 %
    /// attacks.
    pub const DEFAULT: &'static str =
        "pay=90,exchange=3,buy=2,refund=2,replay=1,tamper=1,expired=1";

    /// A mix of the given weights, at least one of which is positive.
    pub fn new(weights: [f64; Operation::ALL.len()]) -> Result<Mix, MixError> {
        if weights
            .iter()
            .any(|weight| !(weight.is_finite() && *weight >= 0.0))
        {
            return Err(MixError::BadWeight);
        }
        let mut cumulative = [0.0; Operation::ALL.len()];
        let mut sum = 0.0;
        for (running, weight) in cumulative.iter_mut().zip(weights) {
            sum += weight;
            *running = sum;
        }
        if sum <= 0.0 {
            return Err(MixError::Empty);
        }
        Ok(Mix {
            weights,
            cumulative,
        })
    }

    /// Payments only.
    pub fn payments_only() -> Mix {
        let mut weights = [0.0; Operation::ALL.len()];
        weights[Operation::Pay.index()] = 1.0;
        Mix::new(weights).unwrap_or_else(|_| unreachable!("one positive weight"))
    }

    /// The share of `operation`, from 0 to 1.
    pub fn share(&self, operation: Operation) -> f64 {
        self.weights[operation.index()] / self.total()
    }

    /// The share of all attacks together.
    pub fn attack_share(&self) -> f64 {
        Operation::ALL
            .iter()
            .filter(|operation| operation.is_attack())
            .map(|operation| self.share(*operation))
            .sum()
    }

    /// Whether the mix has any of `operation`.
    pub fn includes(&self, operation: Operation) -> bool {
        self.weights[operation.index()] > 0.0
    }

    /// The operation that `draw`, uniform in [0, 1), picks.
    pub fn pick(&self, draw: f64) -> Operation {
        let target = draw * self.total();
        let index = self
            .cumulative
            .iter()
            .position(|running| target < *running)
            .unwrap_or(Operation::ALL.len() - 1);
        // Zero weights never win: a draw on their boundary goes on to the
        // next operation with a weight.
        Operation::ALL[index..]
            .iter()
            .copied()
            .find(|operation| self.includes(*operation))
            .unwrap_or(Operation::Pay)
    }

    fn total(&self) -> f64 {
        self.cumulative[Operation::ALL.len() - 1]
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Operation::ALL
            .iter()
            .filter(|operation| self.includes(**operation))
            .map(|operation| format!("{operation}={}", self.weights[operation.index()]))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Why a mix could not be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum MixError {
    /// A part is not `operation=weight`.
    #[error("{part:?} is not operation=weight (for example pay=90)")]
    NotAPair {
        /// The part as written.
        part: String,
    },
    /// An operation name that is not known.
    #[error(
        "unknown operation {name:?}: use pay, exchange, buy, refund, replay, tamper or expired"
    )]
    UnknownOperation {
        /// The name as written.
        name: String,
    },
    /// The same operation twice.
    #[error("{name} is given twice")]
    Repeated {
        /// The operation.
        name: &'static str,
    },
    /// A weight that is negative, not a number or infinite.
    #[error("weights must be numbers of at least 0")]
    BadWeight,
    /// Every weight is zero.
    #[error("the mix has no operation with a weight above 0")]
    Empty,
}

impl FromStr for Mix {
    type Err = MixError;

    fn from_str(text: &str) -> Result<Mix, MixError> {
        let mut weights = [0.0; Operation::ALL.len()];
        let mut given = [false; Operation::ALL.len()];
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let (name, weight) = part.split_once('=').ok_or_else(|| MixError::NotAPair {
                part: part.to_owned(),
            })?;
            let operation = Operation::ALL
                .into_iter()
                .find(|operation| operation.name() == name.trim())
                .ok_or_else(|| MixError::UnknownOperation {
                    name: name.trim().to_owned(),
                })?;
            let weight: f64 = weight.trim().parse().map_err(|_| MixError::BadWeight)?;
            if std::mem::replace(&mut given[operation.index()], true) {
                return Err(MixError::Repeated {
                    name: operation.name(),
                });
            }
            weights[operation.index()] = weight;
        }
        Mix::new(weights)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_mix_reads_back_and_is_three_percent_attacks() {
        let mix: Mix = Mix::DEFAULT
            .parse()
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(mix.to_string(), Mix::DEFAULT);
        assert!((mix.attack_share() - 0.03).abs() < 1e-9);
        assert!((mix.share(Operation::Pay) - 0.90).abs() < 1e-9);
    }

    #[test]
    fn picks_follow_the_weights_and_never_choose_a_zero_weight() {
        let mix: Mix = "pay=1,refund=0,tamper=3"
            .parse()
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(mix.pick(0.0), Operation::Pay);
        assert_eq!(mix.pick(0.2499), Operation::Pay);
        // The boundary of the zero-weight refund goes on to tamper.
        assert_eq!(mix.pick(0.25), Operation::Tamper);
        assert_eq!(mix.pick(0.9999), Operation::Tamper);
        let picks: Vec<Operation> = (0..1000).map(|i| mix.pick(i as f64 / 1000.0)).collect();
        let tampers = picks.iter().filter(|op| **op == Operation::Tamper).count();
        assert_eq!(tampers, 750);
        assert!(!picks.contains(&Operation::Refund));
    }

    #[test]
    fn bad_mixes_are_refused_with_the_reason() {
        let error = |text: &str| text.parse::<Mix>().err();
        assert_eq!(
            error("pay"),
            Some(MixError::NotAPair {
                part: "pay".to_owned()
            })
        );
        assert_eq!(
            error("pay=1,steal=2"),
            Some(MixError::UnknownOperation {
                name: "steal".to_owned()
            })
        );
        assert_eq!(
            error("pay=1,pay=2"),
            Some(MixError::Repeated { name: "pay" })
        );
        assert_eq!(error("pay=-1"), Some(MixError::BadWeight));
        assert_eq!(error("pay=NaN"), Some(MixError::BadWeight));
        assert_eq!(error("pay=0,buy=0"), Some(MixError::Empty));
        assert_eq!(error(""), Some(MixError::Empty));
    }

    #[test]
    fn attacks_name_the_refusal_they_must_get() {
        for operation in Operation::ALL {
            assert_eq!(
                operation.is_attack(),
                matches!(
                    operation,
                    Operation::Replay | Operation::Tamper | Operation::Expired
                )
            );
            assert_eq!(Operation::ALL[operation.index()], operation);
        }
        assert_eq!(
            Operation::Tamper.expected_refusal(),
            Some("bad_certificate")
        );
    }
}
