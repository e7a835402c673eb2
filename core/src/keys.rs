//! Master secrets, certificates and customer secrets.
//!
//! A vendor holds one master scrip secret per *series* and one master
//! customer secret per *customer selector*. The certificate of a piece of
//! scrip is the suite's keyed hash, under the master scrip secret its ID#'s
//! series selects, of the label `MC1-CERT` and the canonical body. The
//! customer secret of a Cust ID# is the keyed hash, under the master customer
//! secret its selector selects, of the label `MC1-CUST` and the Cust ID# as 8
//! big-endian bytes. Neither needs a per-scrip or per-customer table.

use std::collections::HashMap;

use crate::scrip::{CustId, Scrip, ScripBody, VendorName};
use crate::secret::{CustomerSecret, MasterSecret};
use crate::suite::{Mac, Suite};
use crate::{Error, Result};

/// Domain label of certificates.
pub const CERTIFICATE_LABEL: &[u8] = b"MC1-CERT";
/// Domain label of customer-secret derivation.
pub const CUSTOMER_SECRET_LABEL: &[u8] = b"MC1-CUST";

/// The master scrip secret of one series, with the series' expiry epoch.
#[derive(Clone, Debug)]
pub struct SeriesKey {
    /// The series number (top 32 bits of every ID# in it).
    pub series: u32,
    /// The suite of all scrip in the series.
    pub suite: Suite,
    /// No scrip of the series is valid at or after this time (Unix seconds).
    pub expires_at: u64,
    /// The master scrip secret.
    pub secret: MasterSecret,
}

/// The master customer secret of one customer selector.
#[derive(Clone, Debug)]
pub struct CustomerKey {
    /// The selector (top 16 bits of every Cust ID# it covers).
    pub selector: u16,
    /// The suite customer secrets are derived with.
    pub suite: Suite,
    /// The master customer secret.
    pub secret: MasterSecret,
}

/// The certificate of a canonical scrip body under a master scrip secret.
pub fn certificate(secret: &MasterSecret, encoded_body: &[u8]) -> Mac {
    secret.mac(&[CERTIFICATE_LABEL, encoded_body])
}

/// The customer secret of `cust_id` under a master customer secret.
pub fn customer_secret(secret: &MasterSecret, cust_id: CustId) -> CustomerSecret {
    CustomerSecret::from_mac(secret.mac(&[CUSTOMER_SECRET_LABEL, &cust_id.as_u64().to_be_bytes()]))
}

/// Everything one vendor (or one broker, for its own scrip, or one licence
/// holder, for the series it may mint) knows to mint and check scrip.
#[derive(Clone, Debug)]
pub struct KeyRing {
    vendor: VendorName,
    series: HashMap<u32, SeriesKey>,
    customers: HashMap<u16, CustomerKey>,
}

impl KeyRing {
    /// An empty key ring for `vendor`.
    pub fn new(vendor: VendorName) -> KeyRing {
        KeyRing {
            vendor,
            series: HashMap::new(),
            customers: HashMap::new(),
        }
    }

    /// The vendor whose scrip this key ring mints and checks.
    pub fn vendor(&self) -> &VendorName {
        &self.vendor
    }

    /// Adds (or replaces) a series key.
    pub fn add_series(&mut self, key: SeriesKey) {
        self.series.insert(key.series, key);
    }

    /// Adds (or replaces) a customer key.
    pub fn add_customer_key(&mut self, key: CustomerKey) {
        self.customers.insert(key.selector, key);
    }

    /// The key of `series`, if held.
    pub fn series(&self, series: u32) -> Option<&SeriesKey> {
        self.series.get(&series)
    }

    /// All series keys held.
    pub fn all_series(&self) -> impl Iterator<Item = &SeriesKey> {
        self.series.values()
    }

    /// The key of customer `selector`, if held.
    pub fn customer_key(&self, selector: u16) -> Option<&CustomerKey> {
        self.customers.get(&selector)
    }

    /// All customer keys held.
    pub fn all_customer_keys(&self) -> impl Iterator<Item = &CustomerKey> {
        self.customers.values()
    }

    /// Certifies `body`, which must be for this vendor, in a series held here,
    /// in that series' suite, and expire no later than the series.
    pub fn mint(&self, body: ScripBody) -> Result<Scrip> {
        let key = self.series_key_for(&body)?;
        if body.expires_at > key.expires_at {
            return Err(Error::Malformed {
                what: "scrip body",
                detail: "expires after its series",
            });
        }
        let certificate = certificate(&key.secret, &body.encode());
        Ok(Scrip::from_body(body, certificate))
    }

    /// Checks that `scrip` is this vendor's, that its certificate is genuine,
    /// that it expires no later than its series, and that it has not expired
    /// at `now` (Unix seconds).
    pub fn verify(&self, scrip: &Scrip, now: u64) -> Result<()> {
        let key = self.series_key_for(scrip.body())?;
        let expected = certificate(&key.secret, scrip.encoded_body());
        if expected != *scrip.certificate() {
            return Err(Error::BadCertificate);
        }
        let expires_at = scrip.body().expires_at;
        if expires_at > key.expires_at {
            return Err(Error::OutlivesSeries {
                expires_at,
                series_expires_at: key.expires_at,
            });
        }
        if now >= expires_at {
            return Err(Error::Expired { expires_at, now });
        }
        Ok(())
    }

    /// The customer secret of `cust_id`, for scrip of `suite`.
    pub fn customer_secret(&self, suite: Suite, cust_id: CustId) -> Result<CustomerSecret> {
        let key = self
            .customers
            .get(&cust_id.selector())
            .ok_or(Error::UnknownCustomerSelector(cust_id.selector()))?;
        if key.suite != suite {
            return Err(Error::WrongSuite {
                got: suite.id(),
                expected: key.suite.id(),
            });
        }
        Ok(customer_secret(&key.secret, cust_id))
    }

    fn series_key_for(&self, body: &ScripBody) -> Result<&SeriesKey> {
        if body.vendor != self.vendor {
            return Err(Error::WrongVendor {
                scrip_vendor: body.vendor.as_str().to_owned(),
                expected: self.vendor.as_str().to_owned(),
            });
        }
        let series = body.id.series();
        let key = self
            .series
            .get(&series)
            .ok_or(Error::UnknownSeries(series))?;
        if key.suite != body.suite {
            return Err(Error::WrongSuite {
                got: body.suite.id(),
                expected: key.suite.id(),
            });
        }
        Ok(key)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::amount::Amount;
    use crate::scrip::{Properties, ScripId};

    pub(crate) const NOW: u64 = 1_800_000_000;

    pub(crate) fn key_ring() -> KeyRing {
        let mut ring = KeyRing::new(VendorName::new("news.example").unwrap());
        ring.add_series(SeriesKey {
            series: 7,
            suite: Suite::Classic,
            expires_at: NOW + 3600,
            secret: MasterSecret::new(Suite::Classic, [0x11; 32]),
        });
        ring.add_customer_key(CustomerKey {
            selector: 3,
            suite: Suite::Classic,
            secret: MasterSecret::new(Suite::Classic, [0x22; 32]),
        });
        ring
    }

    pub(crate) fn body(value: u64) -> ScripBody {
        ScripBody {
            suite: Suite::Classic,
            vendor: VendorName::new("news.example").unwrap(),
            value: Amount::new(value),
            id: ScripId::new(7, 1),
            cust_id: CustId::new(3, 99).unwrap(),
            expires_at: NOW + 60,
            properties: Properties::default(),
        }
    }

    #[test]
    fn minted_scrip_verifies() {
        let ring = key_ring();
        let scrip = ring.mint(body(100)).unwrap();
        assert_eq!(ring.verify(&scrip, NOW), Ok(()));
        let received = Scrip::decode(scrip.encoded_body(), scrip.certificate().as_bytes()).unwrap();
        assert_eq!(ring.verify(&received, NOW), Ok(()));
    }

    #[test]
    fn tampered_forged_expired_and_foreign_scrip_is_refused() {
        let ring = key_ring();
        let scrip = ring.mint(body(100)).unwrap();

        let tampered = ScripBody {
            value: Amount::new(1_000_000),
            ..scrip.body().clone()
        };
        let tampered = Scrip::decode(&tampered.encode(), scrip.certificate().as_bytes()).unwrap();
        assert_eq!(ring.verify(&tampered, NOW), Err(Error::BadCertificate));

        let forged = Scrip::decode(scrip.encoded_body(), &[0u8; 16]).unwrap();
        assert_eq!(ring.verify(&forged, NOW), Err(Error::BadCertificate));

        assert!(matches!(
            ring.verify(&scrip, NOW + 60),
            Err(Error::Expired { .. })
        ));

        let other = KeyRing::new(VendorName::new("other.example").unwrap());
        assert!(matches!(
            other.verify(&scrip, NOW),
            Err(Error::WrongVendor { .. })
        ));

        let unknown = ScripBody {
            id: ScripId::new(8, 1),
            ..body(100)
        };
        assert_eq!(ring.mint(unknown), Err(Error::UnknownSeries(8)));

        let too_late = ScripBody {
            expires_at: NOW + 3601,
            ..body(100)
        };
        assert!(ring.mint(too_late).is_err());
    }

    #[test]
    fn customer_secret_depends_on_cust_id_and_selector_must_be_known() {
        let ring = key_ring();
        let a = ring
            .customer_secret(Suite::Classic, CustId::new(3, 1).unwrap())
            .unwrap();
        let b = ring
            .customer_secret(Suite::Classic, CustId::new(3, 2).unwrap())
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(
            ring.customer_secret(Suite::Classic, CustId::new(4, 1).unwrap()),
            Err(Error::UnknownCustomerSelector(4))
        );
    }
}
