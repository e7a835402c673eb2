//! The broker's exchange of broker scrip for vendor scrip.
//!
//! An exchange is a secure-variant payment to the broker, paid in broker
//! scrip, whose request is an [`ExchangeRequest`] and whose goods are the
//! vendor scrip followed by that scrip's customer secret sealed under the
//! broker scrip's customer secret ([`exchange_goods`]). The reply stamp over
//! those goods lets the customer know the broker made them.

use zeroize::Zeroizing;

use crate::amount::Amount;
use crate::scrip::{Reader, Scrip, VendorName};
use crate::secret::CustomerSecret;
use crate::suite::{SealPurpose, Suite};
use crate::{Error, Result};

/// What the customer asks of the broker: vendor scrip of `value` for `vendor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeRequest {
    /// The vendor whose scrip is wanted.
    pub vendor: VendorName,
    /// The value of vendor scrip wanted.
    pub value: Amount,
}

impl ExchangeRequest {
    /// Canonical encoding: vendor name length (1 byte), vendor name, value
    /// (8 bytes, big-endian).
    pub fn encode(&self) -> Vec<u8> {
        let vendor = self.vendor.as_str().as_bytes();
        let mut out = Vec::with_capacity(1 + vendor.len() + 8);
        out.push(vendor.len() as u8);
        out.extend_from_slice(vendor);
        out.extend_from_slice(&self.value.units().to_be_bytes());
        out
    }

    /// Decodes the canonical encoding; nothing may follow it.
    pub fn decode(bytes: &[u8]) -> Result<ExchangeRequest> {
        let mut reader = Reader {
            bytes,
            what: "exchange request",
        };
        let vendor_len = reader.u8()? as usize;
        let vendor = std::str::from_utf8(reader.take(vendor_len)?)
            .map_err(|_| Error::Malformed {
                what: "vendor name",
                detail: "not UTF-8",
            })
            .and_then(VendorName::new)?;
        let value = Amount::new(reader.u64()?);
        if !reader.bytes.is_empty() {
            return Err(Error::Malformed {
                what: "exchange request",
                detail: "trailing bytes",
            });
        }
        Ok(ExchangeRequest { vendor, value })
    }
}

/// Seals the customer secret `secret` of a piece of scrip for the holder of
/// `sealing` (the customer secret of the broker scrip that paid for it).
pub fn seal_customer_secret(
    suite: Suite,
    sealing: &CustomerSecret,
    nonce: &[u8],
    secret: &CustomerSecret,
) -> Result<Vec<u8>> {
    suite.seal(
        sealing.expose_bytes(),
        SealPurpose::CustomerSecret,
        nonce,
        secret.expose_bytes(),
    )
}

/// Opens what [`seal_customer_secret`] sealed; `secret_suite` is the suite of
/// the scrip the secret belongs to.
pub fn open_customer_secret(
    suite: Suite,
    sealing: &CustomerSecret,
    sealed: &[u8],
    secret_suite: Suite,
) -> Result<CustomerSecret> {
    let bytes =
        Zeroizing::new(suite.open(sealing.expose_bytes(), SealPurpose::CustomerSecret, sealed)?);
    CustomerSecret::from_slice(secret_suite, &bytes)
}

/// The goods of an exchange reply, as covered by its reply stamp: the vendor
/// scrip's length (2 bytes, big-endian), the vendor scrip (body then
/// certificate), then the sealed customer secret.
pub fn exchange_goods(vendor_scrip: &Scrip, sealed_secret: &[u8]) -> Vec<u8> {
    let scrip = vendor_scrip.encode();
    let mut out = Vec::with_capacity(2 + scrip.len() + sealed_secret.len());
    out.extend_from_slice(&(scrip.len() as u16).to_be_bytes());
    out.extend_from_slice(&scrip);
    out.extend_from_slice(sealed_secret);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_strictly() {
        let request = ExchangeRequest {
            vendor: VendorName::new("news").unwrap(),
            value: Amount::new(5),
        };
        let bytes = request.encode();
        assert_eq!(ExchangeRequest::decode(&bytes).unwrap(), request);
        for len in 0..bytes.len() {
            assert!(ExchangeRequest::decode(&bytes[..len]).is_err());
        }
        let mut longer = bytes;
        longer.push(1);
        assert!(ExchangeRequest::decode(&longer).is_err());
    }

    #[test]
    fn sealed_customer_secret_opens_only_with_the_sealing_secret() {
        let sealing = CustomerSecret::from_slice(Suite::Classic, &[1; 16]).unwrap();
        let secret = CustomerSecret::from_slice(Suite::Classic, &[2; 16]).unwrap();
        let sealed = seal_customer_secret(Suite::Classic, &sealing, &[3; 8], &secret).unwrap();
        let opened = open_customer_secret(Suite::Classic, &sealing, &sealed, Suite::Classic);
        assert_eq!(opened.unwrap(), secret);
        let other = CustomerSecret::from_slice(Suite::Classic, &[4; 16]).unwrap();
        assert!(open_customer_secret(Suite::Classic, &other, &sealed, Suite::Classic).is_err());
    }
}
