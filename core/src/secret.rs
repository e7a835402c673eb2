//! Secret key material: master secrets, customer secrets and account keys.
//!
//! Every type here zeroises its bytes when dropped, prints as `..` under
//! `Debug`, and compares in constant time. None appears in logs or errors.

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::suite::{Mac, PreparedKey, Suite};
use crate::{Error, Result};

/// Length of every master secret, in bytes.
pub const MASTER_SECRET_LEN: usize = 32;

/// A master scrip secret or master customer secret: 32 random bytes, kept
/// with its keyed-hash state prepared for the suite it serves.
#[derive(Clone)]
pub struct MasterSecret {
    bytes: [u8; MASTER_SECRET_LEN],
    prepared: PreparedKey,
}

impl MasterSecret {
    /// A master secret for `suite` from its 32 bytes.
    pub fn new(suite: Suite, bytes: [u8; MASTER_SECRET_LEN]) -> MasterSecret {
        MasterSecret {
            prepared: suite.prepare(&bytes),
            bytes,
        }
    }

    /// A master secret received from outside (a licence, a key file).
    pub fn from_slice(suite: Suite, bytes: &[u8]) -> Result<MasterSecret> {
        let bytes: [u8; MASTER_SECRET_LEN] = bytes.try_into().map_err(|_| Error::Malformed {
            what: "master secret",
            detail: "must be 32 bytes",
        })?;
        Ok(MasterSecret::new(suite, bytes))
    }

    /// The raw bytes, for storing in a key file or handing over in a licence.
    pub fn expose_bytes(&self) -> &[u8; MASTER_SECRET_LEN] {
        &self.bytes
    }

    /// The keyed hash of `parts` under this secret.
    pub fn mac(&self, parts: &[&[u8]]) -> Mac {
        self.prepared.mac(parts)
    }
}

impl Drop for MasterSecret {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl PartialEq for MasterSecret {
    fn eq(&self, other: &MasterSecret) -> bool {
        bool::from(self.bytes.ct_eq(&other.bytes))
    }
}

impl std::fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterSecret(..)")
    }
}

/// The secret shared by a vendor (or broker) and the holder of one Cust ID#.
/// It keys the request and reply stamps and the sealing of private payments.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct CustomerSecret {
    len: u8,
    bytes: [u8; crate::suite::MAX_MAC_LEN],
}

impl CustomerSecret {
    /// A customer secret received from outside; it must be `suite`'s MAC length.
    pub fn from_slice(suite: Suite, bytes: &[u8]) -> Result<CustomerSecret> {
        if bytes.len() != suite.mac_len() {
            return Err(Error::Malformed {
                what: "customer secret",
                detail: "wrong length for the suite",
            });
        }
        Ok(CustomerSecret::from_mac(Mac::from_slice(bytes)))
    }

    pub(crate) fn from_mac(mac: Mac) -> CustomerSecret {
        let mut bytes = [0u8; crate::suite::MAX_MAC_LEN];
        bytes[..mac.len()].copy_from_slice(mac.as_bytes());
        CustomerSecret {
            len: mac.len() as u8,
            bytes,
        }
    }

    /// The raw bytes, for storing in a wallet or sealing for a customer.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl PartialEq for CustomerSecret {
    fn eq(&self, other: &CustomerSecret) -> bool {
        bool::from(self.expose_bytes().ct_eq(other.expose_bytes()))
    }
}

impl Eq for CustomerSecret {}

impl std::fmt::Debug for CustomerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomerSecret(..)")
    }
}

/// The key of one account at a broker. The broker derives it from its master
/// account secret ([`account_key`](crate::account::account_key)) and hands
/// it to the customer once; the wallet keeps it. It keys the MACs of account
/// calls and seals the customer secrets of broker scrip bought from the
/// account.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AccountKey {
    len: u8,
    bytes: [u8; crate::suite::MAX_MAC_LEN],
}

impl AccountKey {
    /// An account key received from outside; it must be `suite`'s MAC length.
    pub fn from_slice(suite: Suite, bytes: &[u8]) -> Result<AccountKey> {
        if bytes.len() != suite.mac_len() {
            return Err(Error::Malformed {
                what: "account key",
                detail: "wrong length for the suite",
            });
        }
        Ok(AccountKey::from_mac(Mac::from_slice(bytes)))
    }

    pub(crate) fn from_mac(mac: Mac) -> AccountKey {
        let mut bytes = [0u8; crate::suite::MAX_MAC_LEN];
        bytes[..mac.len()].copy_from_slice(mac.as_bytes());
        AccountKey {
            len: mac.len() as u8,
            bytes,
        }
    }

    /// The raw bytes, for keying MACs, sending to the customer once and
    /// storing in a wallet.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl PartialEq for AccountKey {
    fn eq(&self, other: &AccountKey) -> bool {
        bool::from(self.expose_bytes().ct_eq(other.expose_bytes()))
    }
}

impl Eq for AccountKey {}

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secret_bytes() {
        let master = MasterSecret::new(Suite::Classic, [0xab; 32]);
        assert_eq!(format!("{master:?}"), "MasterSecret(..)");
        let customer = CustomerSecret::from_slice(Suite::Classic, &[0xcd; 16]).unwrap();
        assert_eq!(format!("{customer:?}"), "CustomerSecret(..)");
        let account = AccountKey::from_slice(Suite::Classic, &[0xef; 16]).unwrap();
        assert_eq!(format!("{account:?}"), "AccountKey(..)");
    }

    #[test]
    fn lengths_are_checked() {
        assert!(MasterSecret::from_slice(Suite::Classic, &[0; 31]).is_err());
        assert!(CustomerSecret::from_slice(Suite::Classic, &[0; 32]).is_err());
        assert!(AccountKey::from_slice(Suite::Classic, &[0; 15]).is_err());
    }

    #[test]
    fn equality_compares_every_byte() {
        let key = |bytes: &[u8]| AccountKey::from_slice(Suite::Classic, bytes).unwrap();
        let mut other = [7u8; 16];
        assert_eq!(key(&[7; 16]), key(&other));
        other[15] = 8;
        assert_ne!(key(&[7; 16]), key(&other));
    }
}
