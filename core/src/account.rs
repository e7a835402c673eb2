//! Authentication of account calls to a broker.
//!
//! A broker derives each account's key from a master account secret and the
//! account ID ([`account_key`]), so it stores no key at all. Every account
//! call carries the account ID, a timestamp in milliseconds, a 16-byte random
//! nonce and a MAC: the suite's keyed hash under the account key of the label
//! `MC1-ACCT`, the method name's length (1 byte) and name, the account ID,
//! the timestamp, the nonce and the call's parameters ([`account_mac`]). The
//! broker refuses timestamps outside its clock window and treats a repeated
//! nonce as a retry of the first call.

use crate::secret::{AccountKey, MasterSecret};
use crate::suite::{Mac, Suite};

/// Domain label of account-call MACs.
pub const ACCOUNT_MAC_LABEL: &[u8] = b"MC1-ACCT";
/// Domain label of account-key derivation.
pub const ACCOUNT_KEY_LABEL: &[u8] = b"MC1-AKEY";
/// Length of an account-call nonce.
pub const NONCE_LEN: usize = 16;

/// The key of account `account_id` under the broker's master account secret.
pub fn account_key(master: &MasterSecret, account_id: u64) -> AccountKey {
    AccountKey::from_mac(master.mac(&[ACCOUNT_KEY_LABEL, &account_id.to_be_bytes()]))
}

/// The MAC authenticating one account call.
pub fn account_mac(
    suite: Suite,
    key: &[u8],
    method: &str,
    account_id: u64,
    timestamp_ms: u64,
    nonce: &[u8; NONCE_LEN],
    params: &[u8],
) -> Mac {
    let method = method.as_bytes();
    let method_len = [method.len().min(255) as u8];
    suite.mac(
        key,
        &[
            ACCOUNT_MAC_LABEL,
            &method_len,
            &method[..method_len[0] as usize],
            &account_id.to_be_bytes(),
            &timestamp_ms.to_be_bytes(),
            nonce,
            params,
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_the_mac() {
        let key = [5u8; 16];
        let base = account_mac(Suite::Classic, &key, "BuyBrokerScrip", 1, 2, &[3; 16], b"p");
        let variants = [
            account_mac(
                Suite::Classic,
                &[6; 16],
                "BuyBrokerScrip",
                1,
                2,
                &[3; 16],
                b"p",
            ),
            account_mac(Suite::Classic, &key, "GetAccount", 1, 2, &[3; 16], b"p"),
            account_mac(Suite::Classic, &key, "BuyBrokerScrip", 9, 2, &[3; 16], b"p"),
            account_mac(Suite::Classic, &key, "BuyBrokerScrip", 1, 9, &[3; 16], b"p"),
            account_mac(Suite::Classic, &key, "BuyBrokerScrip", 1, 2, &[9; 16], b"p"),
            account_mac(Suite::Classic, &key, "BuyBrokerScrip", 1, 2, &[3; 16], b"q"),
        ];
        for other in variants {
            assert_ne!(base, other);
        }
    }
}
