//! Scrip: the body, its canonical encoding, and the identifiers it carries.
//!
//! The canonical body encoding (all integers big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | suite |
//! | 1 | vendor name length `n`, 1 to 64 |
//! | n | vendor name, ASCII `a-z 0-9 . - _ :` |
//! | 8 | value, in the smallest unit |
//! | 8 | ID#: series (4 bytes) then sequence number (4 bytes) |
//! | 8 | Cust ID#: customer selector (2 bytes) then number (6 bytes) |
//! | 8 | expiry, Unix seconds |
//! | 2 | properties length `p`, 0 to 256 |
//! | p | properties, opaque bytes |
//!
//! Decoding is strict: every body has exactly one encoding, so a
//! certificate computed over the received bytes is a certificate over the
//! decoded fields.

use crate::amount::Amount;
use crate::suite::{Mac, Suite};
use crate::{Error, Result};

/// Longest vendor name, in bytes.
pub const MAX_VENDOR_LEN: usize = 64;
/// Longest properties field, in bytes.
pub const MAX_PROPERTIES_LEN: usize = 256;
/// Longest possible scrip body, in bytes.
pub const MAX_BODY_LEN: usize = 1 + 1 + MAX_VENDOR_LEN + 32 + 2 + MAX_PROPERTIES_LEN;

/// A scrip's ID#: a series, which selects the master scrip secret (and with
/// it the expiry epoch and the node that owns the series), and a sequence
/// number within the series. IDs are issued densely within a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScripId(u64);

impl ScripId {
    /// The ID# with `seq` in `series`.
    pub const fn new(series: u32, seq: u32) -> ScripId {
        ScripId(((series as u64) << 32) | seq as u64)
    }

    /// The ID# from its 64-bit wire form.
    pub const fn from_u64(raw: u64) -> ScripId {
        ScripId(raw)
    }

    /// The 64-bit wire form.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The series: the top 32 bits.
    pub const fn series(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The sequence number within the series: the low 32 bits.
    pub const fn seq(self) -> u32 {
        self.0 as u32
    }
}

impl std::fmt::Display for ScripId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.series(), self.seq())
    }
}

/// A Cust ID#: the customer selector (top 16 bits), which selects the
/// master customer secret, and a 48-bit number. Change keeps the Cust ID# of
/// the scrip it was made from, so the customer secret stays the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CustId(u64);

impl CustId {
    /// Largest number within one selector.
    pub const MAX_NUMBER: u64 = (1 << 48) - 1;

    /// The Cust ID# with `number` under `selector`, if `number` fits in 48 bits.
    pub fn new(selector: u16, number: u64) -> Result<CustId> {
        if number > CustId::MAX_NUMBER {
            return Err(Error::Malformed {
                what: "cust id",
                detail: "number exceeds 48 bits",
            });
        }
        Ok(CustId(((selector as u64) << 48) | number))
    }

    /// The Cust ID# from its 64-bit wire form.
    pub const fn from_u64(raw: u64) -> CustId {
        CustId(raw)
    }

    /// The 64-bit wire form.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The selector of the master customer secret: the top 16 bits.
    pub const fn selector(self) -> u16 {
        (self.0 >> 48) as u16
    }

    /// The number within the selector: the low 48 bits.
    pub const fn number(self) -> u64 {
        self.0 & CustId::MAX_NUMBER
    }
}

/// A vendor's (or broker's) name as it appears in scrip.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VendorName(String);

impl VendorName {
    /// Checks that `name` is 1 to 64 characters of `a-z 0-9 . - _ :`.
    pub fn new(name: &str) -> Result<VendorName> {
        if name.is_empty() {
            return Err(Error::Malformed {
                what: "vendor name",
                detail: "empty",
            });
        }
        if name.len() > MAX_VENDOR_LEN {
            return Err(Error::TooLarge {
                what: "vendor name",
                actual: name.len(),
                max: MAX_VENDOR_LEN,
            });
        }
        let allowed = |b: u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b':');
        if !name.bytes().all(allowed) {
            return Err(Error::Malformed {
                what: "vendor name",
                detail: "only a-z, 0-9, '.', '-', '_' and ':' are allowed",
            });
        }
        Ok(VendorName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for VendorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Opaque properties a vendor attaches to scrip (for example a customer's
/// region or age band); at most 256 bytes, covered by the certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Properties(Vec<u8>);

impl Properties {
    /// Checks the length of `bytes`.
    pub fn new(bytes: Vec<u8>) -> Result<Properties> {
        if bytes.len() > MAX_PROPERTIES_LEN {
            return Err(Error::TooLarge {
                what: "properties",
                actual: bytes.len(),
                max: MAX_PROPERTIES_LEN,
            });
        }
        Ok(Properties(bytes))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The fields of a piece of scrip that its certificate covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScripBody {
    /// Cipher suite of the certificate and stamps.
    pub suite: Suite,
    /// The only vendor at which the scrip is valid.
    pub vendor: VendorName,
    /// Value in the smallest unit.
    pub value: Amount,
    /// Unique serial number; its series selects the master scrip secret.
    pub id: ScripId,
    /// Customer identifier; its selector selects the master customer secret.
    pub cust_id: CustId,
    /// The scrip is valid strictly before this time (Unix seconds).
    pub expires_at: u64,
    /// Vendor-defined properties.
    pub properties: Properties,
}

impl ScripBody {
    /// Length of the canonical encoding.
    pub fn encoded_len(&self) -> usize {
        1 + 1 + self.vendor.0.len() + 32 + 2 + self.properties.0.len()
    }

    /// Appends the canonical encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.push(self.suite.id());
        out.push(self.vendor.0.len() as u8);
        out.extend_from_slice(self.vendor.0.as_bytes());
        out.extend_from_slice(&self.value.units().to_be_bytes());
        out.extend_from_slice(&self.id.as_u64().to_be_bytes());
        out.extend_from_slice(&self.cust_id.as_u64().to_be_bytes());
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        out.extend_from_slice(&(self.properties.0.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.properties.0);
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Decodes a canonical body; `bytes` must hold exactly one body.
    pub fn decode(bytes: &[u8]) -> Result<ScripBody> {
        if bytes.len() > MAX_BODY_LEN {
            return Err(Error::TooLarge {
                what: "scrip body",
                actual: bytes.len(),
                max: MAX_BODY_LEN,
            });
        }
        let mut reader = Reader {
            bytes,
            what: "scrip body",
        };
        let suite = Suite::from_id(reader.u8()?)?;
        let vendor_len = reader.u8()? as usize;
        let vendor_bytes = reader.take(vendor_len)?;
        let vendor = std::str::from_utf8(vendor_bytes)
            .map_err(|_| Error::Malformed {
                what: "vendor name",
                detail: "not UTF-8",
            })
            .and_then(VendorName::new)?;
        let value = Amount::new(reader.u64()?);
        let id = ScripId::from_u64(reader.u64()?);
        let cust_id = CustId::from_u64(reader.u64()?);
        let expires_at = reader.u64()?;
        let properties_len = reader.u16()? as usize;
        let properties = Properties::new(reader.take(properties_len)?.to_vec())?;
        if !reader.bytes.is_empty() {
            return Err(Error::Malformed {
                what: "scrip body",
                detail: "trailing bytes",
            });
        }
        Ok(ScripBody {
            suite,
            vendor,
            value,
            id,
            cust_id,
            expires_at,
            properties,
        })
    }
}

/// A piece of scrip: a body and its certificate.
///
/// The body's canonical bytes are kept beside the decoded fields, so the
/// certificate is checked over exactly the bytes that arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scrip {
    body: ScripBody,
    encoded_body: Vec<u8>,
    certificate: Mac,
}

impl Scrip {
    /// Scrip from a decoded body and the certificate computed over it.
    pub(crate) fn from_body(body: ScripBody, certificate: Mac) -> Scrip {
        Scrip {
            encoded_body: body.encode(),
            body,
            certificate,
        }
    }

    /// Scrip received from outside: decodes the body and checks the
    /// certificate's length for the body's suite. The certificate itself is
    /// checked by [`KeyRing::verify`](crate::KeyRing::verify).
    pub fn decode(body: &[u8], certificate: &[u8]) -> Result<Scrip> {
        let decoded = ScripBody::decode(body)?;
        let certificate = Mac::parse(decoded.suite, "certificate", certificate)?;
        Ok(Scrip {
            body: decoded,
            encoded_body: body.to_vec(),
            certificate,
        })
    }

    /// The decoded body.
    pub fn body(&self) -> &ScripBody {
        &self.body
    }

    /// The canonical body bytes.
    pub fn encoded_body(&self) -> &[u8] {
        &self.encoded_body
    }

    /// The certificate.
    pub fn certificate(&self) -> &Mac {
        &self.certificate
    }

    /// Shorthand for `body().suite`.
    pub fn suite(&self) -> Suite {
        self.body.suite
    }

    /// Shorthand for `body().id`.
    pub fn id(&self) -> ScripId {
        self.body.id
    }

    /// Shorthand for `body().value`.
    pub fn value(&self) -> Amount {
        self.body.value
    }

    /// Body followed by certificate: the scrip as it enters stamps.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_body.len() + self.certificate.len());
        out.extend_from_slice(&self.encoded_body);
        out.extend_from_slice(self.certificate.as_bytes());
        out
    }

    /// Decodes what [`Scrip::encode`] produced.
    pub fn decode_concatenated(bytes: &[u8]) -> Result<Scrip> {
        let suite = Suite::from_id(*bytes.first().ok_or(Error::Malformed {
            what: "scrip",
            detail: "empty",
        })?)?;
        let split = bytes
            .len()
            .checked_sub(suite.mac_len())
            .ok_or(Error::Malformed {
                what: "scrip",
                detail: "shorter than a certificate",
            })?;
        let (body, certificate) = bytes.split_at(split);
        Scrip::decode(body, certificate)
    }
}

/// A cursor over untrusted bytes that fails instead of panicking.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < len {
            return Err(Error::Malformed {
                what: self.what,
                detail: "truncated",
            });
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        let mut buf = [0u8; 2];
        buf.copy_from_slice(self.take(2)?);
        Ok(u16::from_be_bytes(buf))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_body() -> ScripBody {
        ScripBody {
            suite: Suite::Classic,
            vendor: VendorName::new("news.example").unwrap(),
            value: Amount::new(1000),
            id: ScripId::new(7, 42),
            cust_id: CustId::new(3, 99).unwrap(),
            expires_at: 1_900_000_000,
            properties: Properties::new(b"region=eu".to_vec()).unwrap(),
        }
    }

    #[test]
    fn body_round_trips_and_is_canonical() {
        let body = sample_body();
        let bytes = body.encode();
        assert_eq!(bytes.len(), body.encoded_len());
        assert_eq!(ScripBody::decode(&bytes).unwrap(), body);
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let bytes = sample_body().encode();
        for len in 0..bytes.len() {
            assert!(
                ScripBody::decode(&bytes[..len]).is_err(),
                "truncated to {len}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            ScripBody::decode(&longer),
            Err(Error::Malformed {
                what: "scrip body",
                detail: "trailing bytes"
            })
        );
    }

    #[test]
    fn bad_fields_are_refused() {
        let mut bytes = sample_body().encode();
        bytes[0] = 0xee;
        assert_eq!(ScripBody::decode(&bytes), Err(Error::UnknownSuite(0xee)));

        let mut bytes = sample_body().encode();
        bytes[2] = b'N';
        assert!(matches!(
            ScripBody::decode(&bytes),
            Err(Error::Malformed { .. })
        ));

        assert!(VendorName::new("").is_err());
        assert!(VendorName::new(&"a".repeat(65)).is_err());
        assert!(Properties::new(vec![0; 257]).is_err());
        assert!(CustId::new(1, 1 << 48).is_err());
        assert!(ScripBody::decode(&vec![1; MAX_BODY_LEN + 1]).is_err());
    }

    #[test]
    fn id_layout() {
        let id = ScripId::new(0x0102_0304, 0x0506_0708);
        assert_eq!(id.as_u64(), 0x0102_0304_0506_0708);
        assert_eq!((id.series(), id.seq()), (0x0102_0304, 0x0506_0708));
        let cust = CustId::new(0xabcd, 5).unwrap();
        assert_eq!(cust.as_u64(), 0xabcd_0000_0000_0005);
        assert_eq!((cust.selector(), cust.number()), (0xabcd, 5));
    }
}
