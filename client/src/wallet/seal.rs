//! Passphrase protection of a wallet file.
//!
//! A protected wallet file is a JSON envelope (format version 2) around the
//! ordinary wallet file, encrypted with ChaCha20-Poly1305 under a key that
//! Argon2id derives from the passphrase and a random salt:
//!
//! ```json
//! { "version": 2,
//!   "kdf": { "algorithm": "argon2id", "memory_kib": 19456, "iterations": 2,
//!            "parallelism": 1, "salt": "<16 bytes, hex>" },
//!   "cipher": "chacha20poly1305", "nonce": "<12 bytes, hex>",
//!   "ciphertext": "<hex>" }
//! ```
//!
//! The associated data is the ASCII text `millicent-wallet-v2`. Every save
//! draws a fresh nonce and keeps the salt, so the key is derived once per
//! passphrase and salt; [`Passphrase`] keeps the derived key for a process
//! that opens the wallet many times (the proxy). A program that does not
//! know version 2 refuses the file rather than mistaking it for an empty
//! wallet.

use std::path::Path;
use std::sync::Mutex;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ClientError;

/// The format version of a protected wallet file.
pub(crate) const SEALED_VERSION: u32 = 2;
const ASSOCIATED_DATA: &[u8] = b"millicent-wallet-v2";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
/// The costs of new files: Argon2's recommended defaults.
const MEMORY_KIB: u32 = Params::DEFAULT_M_COST;
const ITERATIONS: u32 = Params::DEFAULT_T_COST;
const PARALLELISM: u32 = Params::DEFAULT_P_COST;
/// Highest costs accepted from a file, so that a damaged one cannot make
/// the wallet allocate without bound.
const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
const MAX_ITERATIONS: u32 = 64;

/// The passphrase that opens a wallet file, and the key last derived from
/// it. Never printed; zeroised when dropped.
pub struct Passphrase {
    text: Zeroizing<String>,
    derived: Mutex<Option<FileKey>>,
}

impl Passphrase {
    /// A passphrase; it must not be empty.
    pub fn new(text: impl Into<String>) -> Passphrase {
        Passphrase {
            text: Zeroizing::new(text.into()),
            derived: Mutex::new(None),
        }
    }

    /// The key for the file whose key derivation is `kdf`: the one derived
    /// last, if it was derived for the same salt and costs.
    fn key_for(&self, kdf: &KdfRecord) -> Result<FileKey, String> {
        let mut derived = self.derived.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = derived.as_ref().filter(|key| key.kdf == *kdf) {
            return Ok(key.clone());
        }
        let key = FileKey::derive(&self.text, kdf.clone())?;
        *derived = Some(key.clone());
        Ok(key)
    }

    /// A key for a new file: a fresh salt and the default costs.
    pub(crate) fn new_key(&self) -> Result<FileKey, ClientError> {
        let mut salt = [0u8; SALT_LEN];
        rand::fill(&mut salt);
        let kdf = KdfRecord {
            algorithm: "argon2id".to_owned(),
            memory_kib: MEMORY_KIB,
            iterations: ITERATIONS,
            parallelism: PARALLELISM,
            salt: hex::encode(salt),
        };
        let key =
            FileKey::derive(&self.text, kdf).map_err(|detail| ClientError::WalletCorrupt {
                path: Default::default(),
                detail,
            })?;
        *self.derived.lock().unwrap_or_else(|p| p.into_inner()) = Some(key.clone());
        Ok(key)
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// A key that encrypts one wallet file, with how it was derived.
#[derive(Clone)]
pub(crate) struct FileKey {
    key: Zeroizing<[u8; 32]>,
    kdf: KdfRecord,
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(..)")
    }
}

impl FileKey {
    fn derive(passphrase: &str, kdf: KdfRecord) -> Result<FileKey, String> {
        if kdf.algorithm != "argon2id" {
            return Err(format!("unknown key derivation {:?}", kdf.algorithm));
        }
        if kdf.memory_kib > MAX_MEMORY_KIB || kdf.iterations > MAX_ITERATIONS {
            return Err("the key derivation costs more than this program allows".to_owned());
        }
        let salt = hex::decode(&kdf.salt)
            .ok()
            .filter(|salt| salt.len() == SALT_LEN)
            .ok_or("the salt is not 16 bytes of hex")?;
        let params = Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
            .map_err(|error| format!("bad key derivation costs ({error})"))?;
        let mut key = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase.as_bytes(), &salt, &mut key[..])
            .map_err(|error| format!("the key derivation failed ({error})"))?;
        Ok(FileKey { key, kdf })
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&(*self.key).into())
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfRecord {
    algorithm: String,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedRecord {
    version: u32,
    kdf: KdfRecord,
    cipher: String,
    nonce: String,
    ciphertext: String,
}

/// The protected file holding the wallet file `plaintext`.
pub(crate) fn seal(key: &FileKey, plaintext: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce);
    let payload = Payload {
        msg: plaintext,
        aad: ASSOCIATED_DATA,
    };
    let ciphertext =
        key.cipher()
            .encrypt(&nonce.into(), payload)
            .map_err(|_| ClientError::Limit {
                what: "wallet file",
                actual: plaintext.len() as u64,
                max: super::store::MAX_WALLET_LEN,
            })?;
    let record = SealedRecord {
        version: SEALED_VERSION,
        kdf: key.kdf.clone(),
        cipher: "chacha20poly1305".to_owned(),
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(ciphertext),
    };
    let mut text = serde_json::to_vec_pretty(&record).unwrap_or_default();
    text.push(b'\n');
    Ok(text)
}

/// The wallet file inside the protected file `contents`, and its key.
pub(crate) fn open(
    path: &Path,
    contents: &[u8],
    passphrase: &Passphrase,
) -> Result<(Zeroizing<Vec<u8>>, FileKey), ClientError> {
    let corrupt = |detail: String| ClientError::WalletCorrupt {
        path: path.to_owned(),
        detail,
    };
    let record: SealedRecord = serde_json::from_slice(contents)
        .map_err(|error| corrupt(format!("not a protected wallet file ({error})")))?;
    if record.cipher != "chacha20poly1305" {
        return Err(corrupt(format!("unknown cipher {:?}", record.cipher)));
    }
    let nonce: [u8; NONCE_LEN] = hex::decode(&record.nonce)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| corrupt("the nonce is not 12 bytes of hex".to_owned()))?;
    let ciphertext = hex::decode(&record.ciphertext)
        .map_err(|_| corrupt("the ciphertext is not hex".to_owned()))?;
    let key = passphrase.key_for(&record.kdf).map_err(corrupt)?;
    let payload = Payload {
        msg: &ciphertext,
        aad: ASSOCIATED_DATA,
    };
    let plaintext =
        key.cipher()
            .decrypt(&nonce.into(), payload)
            .map_err(|_| ClientError::WrongPassphrase {
                path: path.to_owned(),
            })?;
    Ok((Zeroizing::new(plaintext), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_file_opens_with_its_passphrase_only() {
        let passphrase = Passphrase::new("correct horse");
        let key = passphrase.new_key().unwrap();
        let sealed = seal(&key, b"{\"version\":1}").unwrap();
        let text = String::from_utf8(sealed.clone()).unwrap();
        assert!(!text.contains("version\\\":1"), "{text}");

        let reopened = Passphrase::new("correct horse");
        let (plain, _) = open(Path::new("w"), &sealed, &reopened).unwrap();
        assert_eq!(&plain[..], b"{\"version\":1}");
        assert!(matches!(
            open(Path::new("w"), &sealed, &Passphrase::new("wrong")),
            Err(ClientError::WrongPassphrase { .. })
        ));
        let tampered = text.replacen("\"ciphertext\": \"", "\"ciphertext\": \"00", 1);
        assert!(open(Path::new("w"), tampered.as_bytes(), &reopened).is_err());
        assert_eq!(format!("{reopened:?}"), "Passphrase(..)");
    }
}
