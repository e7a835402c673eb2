//! What a spend record keeps of a reply: the few values that, with the
//! payment itself, make the same reply again.
//!
//! A reply is a function of the payment (scrip, variant, request), the
//! vendor's keys, the price, the change slot, the goods and, in the private
//! variant, the nonce the goods were sealed with. A retry brings the same
//! payment, and the keys of its series and of its change series outlive the
//! retry window, so a record keeps only the price, the change slot and the
//! nonce: about 30 bytes instead of the reply's 200 or more, which is most
//! of what the store writes per payment. The retry's reply is made again
//! from them and is the reply first sent, with the same change; only if the
//! operator changed the item's content in between do its goods differ.
//!
//! Layout: `version (1) = 1 ‖ price (8) ‖ change flag (1) ‖ [change ID# (8)
//! ‖ change expiry (8)] ‖ nonce length (1) ‖ nonce`, integers big-endian.

use millicent_core::payment::ChangeSlot;
use millicent_core::{Amount, ScripId};

const VERSION: u8 = 1;
/// The longest nonce a suite takes.
pub(crate) const MAX_NONCE: usize = 32;

/// The values a reply was made from, besides the payment and the goods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Recipe {
    pub(crate) price: Amount,
    pub(crate) change: Option<ChangeSlot>,
    /// The nonce the goods were sealed with; empty unless private.
    pub(crate) nonce: Vec<u8>,
}

impl Recipe {
    /// The record's bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 + 1 + 16 + 1 + self.nonce.len());
        out.push(VERSION);
        out.extend_from_slice(&self.price.units().to_be_bytes());
        match self.change {
            Some(slot) => {
                out.push(1);
                out.extend_from_slice(&slot.id.as_u64().to_be_bytes());
                out.extend_from_slice(&slot.expires_at.to_be_bytes());
            }
            None => out.push(0),
        }
        // Nonces are at most MAX_NONCE bytes (checked where they are made).
        out.push(self.nonce.len() as u8);
        out.extend_from_slice(&self.nonce);
        out
    }

    /// The recipe in a record, or `None` if the bytes are not one.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Recipe> {
        let mut reader = Reader(bytes);
        if reader.byte()? != VERSION {
            return None;
        }
        let price = Amount::new(reader.u64()?);
        let change = match reader.byte()? {
            0 => None,
            1 => Some(ChangeSlot {
                id: ScripId::from_u64(reader.u64()?),
                expires_at: reader.u64()?,
            }),
            _ => return None,
        };
        let nonce_len = usize::from(reader.byte()?);
        if nonce_len > MAX_NONCE {
            return None;
        }
        let nonce = reader.take(nonce_len)?.to_vec();
        reader.0.is_empty().then_some(Recipe {
            price,
            change,
            nonce,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.0.len() < len {
            return None;
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(taken)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|bytes| bytes[0])
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recipe_survives_its_encoding_and_bad_bytes_are_refused() {
        let recipes = [
            Recipe {
                price: Amount::new(10),
                change: Some(ChangeSlot {
                    id: ScripId::new(3, 77),
                    expires_at: 1_900_000_000,
                }),
                nonce: vec![9; 12],
            },
            Recipe {
                price: Amount::new(u64::MAX),
                change: None,
                nonce: Vec::new(),
            },
        ];
        for recipe in &recipes {
            let bytes = recipe.encode();
            assert_eq!(Recipe::decode(&bytes).as_ref(), Some(recipe));
            for len in 0..bytes.len() {
                assert_eq!(Recipe::decode(&bytes[..len]), None, "cut at {len}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(Recipe::decode(&longer), None);
        }
        let mut other_version = recipes[1].encode();
        other_version[0] = 2;
        assert_eq!(Recipe::decode(&other_version), None);
        assert_eq!(recipes[0].encode().len(), 1 + 8 + 1 + 16 + 1 + 12);
    }
}
