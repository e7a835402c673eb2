//! Cipher suites: the keyed hash behind certificates and stamps, and the
//! sealing (authenticated encryption) behind the private variant and
//! handed-out customer secrets.
//!
//! A suite is a value carried in the first byte of every scrip body, so a
//! party can tell which suite a piece of scrip uses before doing anything
//! else with it. Callers never name an algorithm: they hold a [`Suite`] and
//! call its methods.

use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, Payload};
use hmac::{Hmac, KeyInit, Mac as _};
use md5::Md5;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::{Error, Result};

/// The longest MAC any suite produces, in bytes.
pub const MAX_MAC_LEN: usize = 32;

/// A cipher suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Suite {
    /// The suite of the original Millicent design: HMAC-MD5 for certificates,
    /// stamps and key derivation; DES-CBC with PKCS#7 padding, then HMAC-MD5
    /// over nonce and ciphertext, for sealing. Both primitives are broken by
    /// today's standards; the suite exists to be faithful and interoperable.
    Classic = 1,
    /// The suite for new deployments: HMAC-SHA-256 for certificates, stamps
    /// and key derivation; ChaCha20-Poly1305 for sealing, under a key
    /// derived from the sealing key, with the purpose as associated data.
    Modern = 2,
}

impl Suite {
    /// Every suite this build knows.
    pub const ALL: &'static [Suite] = &[Suite::Classic, Suite::Modern];

    /// The suite a configuration gets when it names none.
    pub const DEFAULT: Suite = Suite::Modern;

    /// The suite's byte on the wire.
    pub const fn id(self) -> u8 {
        self as u8
    }

    /// The suite with wire byte `id`.
    pub fn from_id(id: u8) -> Result<Suite> {
        match id {
            1 => Ok(Suite::Classic),
            2 => Ok(Suite::Modern),
            other => Err(Error::UnknownSuite(other)),
        }
    }

    /// The suite's name in configuration files.
    pub const fn name(self) -> &'static str {
        match self {
            Suite::Classic => "classic",
            Suite::Modern => "modern",
        }
    }

    /// The suite named `name` in configuration.
    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::ALL
            .iter()
            .copied()
            .find(|suite| suite.name() == name)
    }

    /// Length of certificates, stamps and customer secrets, in bytes.
    pub const fn mac_len(self) -> usize {
        match self {
            Suite::Classic => 16,
            Suite::Modern => 32,
        }
    }

    /// Length of the nonce a caller must supply to [`Suite::seal`].
    pub const fn nonce_len(self) -> usize {
        match self {
            Suite::Classic => 8,
            Suite::Modern => 12,
        }
    }

    /// Bytes [`Suite::seal`] adds to a plaintext of `len` bytes.
    pub const fn seal_overhead(self, len: usize) -> usize {
        match self {
            // nonce, PKCS#7 padding to the next 8-byte block, tag
            Suite::Classic => 8 + (8 - len % 8) + 16,
            // nonce, Poly1305 tag
            Suite::Modern => 12 + 16,
        }
    }

    /// Prepares `key` for many MACs: the keyed state is computed once.
    pub fn prepare(self, key: &[u8]) -> PreparedKey {
        match self {
            Suite::Classic => PreparedKey::HmacMd5(
                Hmac::<Md5>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac()),
            ),
            Suite::Modern => PreparedKey::HmacSha256(
                Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac()),
            ),
        }
    }

    /// The keyed hash of the concatenation of `parts` under `key`.
    pub fn mac(self, key: &[u8], parts: &[&[u8]]) -> Mac {
        self.prepare(key).mac(parts)
    }

    /// Encrypts and authenticates `plaintext` under `key` for `purpose`.
    ///
    /// `nonce` must be [`Suite::nonce_len`] bytes and must not repeat under
    /// one key; callers draw it at random. The result is
    /// `nonce || ciphertext || tag`.
    pub fn seal(
        self,
        key: &[u8],
        purpose: SealPurpose,
        nonce: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        if nonce.len() != self.nonce_len() {
            return Err(Error::Malformed {
                what: "nonce",
                detail: "wrong length for the suite",
            });
        }
        match self {
            Suite::Classic => {
                let (enc_key, mac_key) = classic_seal_keys(key);
                let iv: [u8; 8] = nonce
                    .try_into()
                    .map_err(|_| Error::BadSeal(purpose.what()))?;
                let ciphertext = cbc::Encryptor::<des::Des>::new(&enc_key.into(), &iv.into())
                    .encrypt_padded_vec::<Pkcs7>(plaintext);
                let tag = self.mac(&mac_key, &[&[purpose as u8], nonce, &ciphertext]);
                let mut sealed = Vec::with_capacity(nonce.len() + ciphertext.len() + tag.len());
                sealed.extend_from_slice(nonce);
                sealed.extend_from_slice(&ciphertext);
                sealed.extend_from_slice(tag.as_bytes());
                Ok(sealed)
            }
            Suite::Modern => {
                let aead = modern_seal_cipher(key);
                let nonce_array = nonce
                    .try_into()
                    .map_err(|_| Error::BadSeal(purpose.what()))?;
                let payload = Payload {
                    msg: plaintext,
                    aad: &[purpose as u8],
                };
                let ciphertext = aead
                    .encrypt(&nonce_array, payload)
                    .map_err(|_| Error::BadSeal(purpose.what()))?;
                let mut sealed = Vec::with_capacity(nonce.len() + ciphertext.len());
                sealed.extend_from_slice(nonce);
                sealed.extend_from_slice(&ciphertext);
                Ok(sealed)
            }
        }
    }

    /// Checks and decrypts what [`Suite::seal`] produced for `purpose`.
    pub fn open(self, key: &[u8], purpose: SealPurpose, sealed: &[u8]) -> Result<Vec<u8>> {
        match self {
            Suite::Classic => {
                let (nonce_len, tag_len) = (self.nonce_len(), self.mac_len());
                let body_len = sealed.len().checked_sub(nonce_len + tag_len);
                let Some(body_len) = body_len.filter(|len| *len >= 8 && len % 8 == 0) else {
                    return Err(Error::BadSeal(purpose.what()));
                };
                let (nonce, rest) = sealed.split_at(nonce_len);
                let (ciphertext, tag) = rest.split_at(body_len);
                let (enc_key, mac_key) = classic_seal_keys(key);
                let expected = self.mac(&mac_key, &[&[purpose as u8], nonce, ciphertext]);
                if !expected.ct_eq_bytes(tag) {
                    return Err(Error::BadSeal(purpose.what()));
                }
                let iv: [u8; 8] = nonce
                    .try_into()
                    .map_err(|_| Error::BadSeal(purpose.what()))?;
                cbc::Decryptor::<des::Des>::new(&enc_key.into(), &iv.into())
                    .decrypt_padded_vec::<Pkcs7>(ciphertext)
                    .map_err(|_| Error::BadSeal(purpose.what()))
            }
            Suite::Modern => {
                let nonce_len = self.nonce_len();
                if sealed.len() < nonce_len + 16 {
                    return Err(Error::BadSeal(purpose.what()));
                }
                let (nonce, ciphertext) = sealed.split_at(nonce_len);
                let nonce_array = nonce
                    .try_into()
                    .map_err(|_| Error::BadSeal(purpose.what()))?;
                let payload = Payload {
                    msg: ciphertext,
                    aad: &[purpose as u8],
                };
                modern_seal_cipher(key)
                    .decrypt(&nonce_array, payload)
                    .map_err(|_| Error::BadSeal(purpose.what()))
            }
        }
    }
}

/// The AEAD keyed for sealing under `key`: its 32-byte key is the suite's
/// keyed hash of the label `MC2-SEAL` under the sealing key.
fn modern_seal_cipher(key: &[u8]) -> ChaCha20Poly1305 {
    let mut derived = Suite::Modern.mac(key, &[b"MC2-SEAL"]);
    let mut key_array = [0u8; 32];
    key_array.copy_from_slice(derived.as_bytes());
    let cipher = ChaCha20Poly1305::new(&key_array.into());
    key_array.zeroize();
    derived.bytes.zeroize();
    cipher
}

/// DES key and MAC key for sealing, derived from the sealing key.
fn classic_seal_keys(key: &[u8]) -> ([u8; 8], [u8; 16]) {
    let enc = Suite::Classic.mac(key, &[b"MC1-SEAL-ENC"]);
    let mac = Suite::Classic.mac(key, &[b"MC1-SEAL-MAC"]);
    let mut enc_key = [0u8; 8];
    enc_key.copy_from_slice(&enc.as_bytes()[..8]);
    let mut mac_key = [0u8; 16];
    mac_key.copy_from_slice(mac.as_bytes());
    (enc_key, mac_key)
}

/// HMAC accepts keys of any length, so keying it cannot fail.
#[cold]
fn unreachable_hmac() -> ! {
    unreachable!("HMAC accepts keys of every length")
}

/// What a sealed byte string is for. The purpose is authenticated with the
/// ciphertext, so a sealed value cannot be replayed in another role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SealPurpose {
    /// A vendor scrip's customer secret, sealed by a broker under the
    /// customer secret of the broker scrip that paid for it.
    CustomerSecret = 1,
    /// A private-variant request.
    Request = 2,
    /// Private-variant goods.
    Goods = 3,
    /// A broker scrip's customer secret, sealed under the account key.
    BrokerScripSecret = 4,
}

impl SealPurpose {
    fn what(self) -> &'static str {
        match self {
            SealPurpose::CustomerSecret => "customer secret",
            SealPurpose::Request => "request",
            SealPurpose::Goods => "goods",
            SealPurpose::BrokerScripSecret => "broker scrip secret",
        }
    }
}

/// A key with its keyed-hash state computed once, for the hot path.
#[derive(Clone)]
pub enum PreparedKey {
    /// HMAC-MD5.
    HmacMd5(Hmac<Md5>),
    /// HMAC-SHA-256.
    HmacSha256(Hmac<Sha256>),
}

impl PreparedKey {
    /// The keyed hash of the concatenation of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> Mac {
        match self {
            PreparedKey::HmacMd5(keyed) => {
                let mut state = keyed.clone();
                for part in parts {
                    state.update(part);
                }
                Mac::from_slice(&state.finalize().into_bytes())
            }
            PreparedKey::HmacSha256(keyed) => {
                let mut state = keyed.clone();
                for part in parts {
                    state.update(part);
                }
                Mac::from_slice(&state.finalize().into_bytes())
            }
        }
    }
}

impl std::fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreparedKey(..)")
    }
}

/// A certificate, stamp or derived key: the output of a suite's keyed hash.
///
/// Equality is constant-time, so comparing a received stamp with the
/// expected one leaks nothing about where they differ.
#[derive(Clone, Copy)]
pub struct Mac {
    len: u8,
    bytes: [u8; MAX_MAC_LEN],
}

impl Mac {
    /// A MAC holding `bytes`; at most [`MAX_MAC_LEN`] bytes are kept.
    pub fn from_slice(bytes: &[u8]) -> Mac {
        let len = bytes.len().min(MAX_MAC_LEN);
        let mut mac = Mac {
            len: len as u8,
            bytes: [0; MAX_MAC_LEN],
        };
        mac.bytes[..len].copy_from_slice(&bytes[..len]);
        mac
    }

    /// A MAC received from outside, which must be `suite`'s length.
    pub fn parse(suite: Suite, what: &'static str, bytes: &[u8]) -> Result<Mac> {
        if bytes.len() != suite.mac_len() {
            return Err(Error::Malformed {
                what,
                detail: "wrong length for the suite",
            });
        }
        Ok(Mac::from_slice(bytes))
    }

    /// The MAC's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether it is empty (never, for a MAC a suite produced).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Constant-time comparison with received bytes.
    pub fn ct_eq_bytes(&self, other: &[u8]) -> bool {
        bool::from(self.as_bytes().ct_eq(other))
    }
}

impl PartialEq for Mac {
    fn eq(&self, other: &Mac) -> bool {
        self.ct_eq_bytes(other.as_bytes())
    }
}

impl Eq for Mac {}

impl std::fmt::Debug for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mac(")?;
        for byte in self.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_md5_matches_rfc_2104_vector() {
        // RFC 2104, test case 2.
        let mac = Suite::Classic.mac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(format!("{mac:?}"), "Mac(750c783e6ab0b503eaa86e310a5db738)");
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231_vector() {
        // RFC 4231, test case 2.
        let mac = Suite::Modern.mac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            format!("{mac:?}"),
            "Mac(5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843)"
        );
    }

    #[test]
    fn suites_round_trip_through_their_wire_byte_and_name() {
        for &suite in Suite::ALL {
            assert_eq!(Suite::from_id(suite.id()), Ok(suite));
            assert_eq!(Suite::from_name(suite.name()), Some(suite));
            assert_eq!(suite.mac(b"k", &[b"x"]).len(), suite.mac_len());
        }
        assert_eq!(Suite::from_id(0), Err(Error::UnknownSuite(0)));
        assert_eq!(Suite::from_name("des"), None);
        assert_eq!(Suite::DEFAULT, Suite::Modern);
    }

    #[test]
    fn seal_round_trips_and_rejects_tampering() {
        for &suite in Suite::ALL {
            let key = vec![7u8; suite.mac_len()];
            let nonce = vec![1u8; suite.nonce_len()];
            for plaintext in [&b""[..], b"article", b"exactly 16 bytes"] {
                let sealed = suite
                    .seal(&key, SealPurpose::Goods, &nonce, plaintext)
                    .unwrap();
                let len = plaintext.len();
                assert_eq!(sealed.len(), len + suite.seal_overhead(len), "{suite:?}");
                let opened = suite.open(&key, SealPurpose::Goods, &sealed).unwrap();
                assert_eq!(opened, plaintext);

                for i in 0..sealed.len() {
                    let mut bad = sealed.clone();
                    bad[i] ^= 0x01;
                    assert_eq!(
                        suite.open(&key, SealPurpose::Goods, &bad),
                        Err(Error::BadSeal("goods")),
                        "{suite:?} byte {i}"
                    );
                }
                assert!(suite.open(&key, SealPurpose::Request, &sealed).is_err());
                assert!(suite.open(&[8u8; 16], SealPurpose::Goods, &sealed).is_err());
                for cut in 0..sealed.len() {
                    assert!(
                        suite
                            .open(&key, SealPurpose::Goods, &sealed[..cut])
                            .is_err()
                    );
                }
            }
        }
    }

    #[test]
    fn one_suite_cannot_open_what_another_sealed() {
        let key = [7u8; 32];
        let sealed = Suite::Modern
            .seal(&key, SealPurpose::Goods, &[1; 12], b"article")
            .unwrap();
        assert!(
            Suite::Classic
                .open(&key, SealPurpose::Goods, &sealed)
                .is_err()
        );
    }

    #[test]
    fn seal_refuses_a_nonce_of_the_wrong_length() {
        for &suite in Suite::ALL {
            let nonce = vec![0u8; suite.nonce_len() - 1];
            let result = suite.seal(&[0; 16], SealPurpose::Goods, &nonce, b"x");
            assert!(matches!(
                result,
                Err(Error::Malformed { what: "nonce", .. })
            ));
        }
    }
}
