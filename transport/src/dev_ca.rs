//! A development certificate authority: a fresh CA and the certificates a
//! local or test network needs, written as PEM files readable by their
//! owner only.
//!
//! It is for development and tests, not for production: its key sits next
//! to the certificates it signs, and nothing revokes what it issued. Real
//! deployments take their certificates from their own authority.
//!
//! Keys are ECDSA P-256; certificates are valid from the start of last
//! year to 1 January of the year after next. A *node* certificate is for a server (the names and
//! addresses it is reached by) and also serves as the client certificate
//! that node presents when it calls others (a broker calling vendor nodes
//! or other brokers); a *client* certificate is for clients only.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use zeroize::Zeroizing;

use crate::secret_file::write_secret;

/// The names and addresses every node certificate covers, so that a local
/// network reaches its nodes on loopback.
pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Why a certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum DevCaError {
    /// rcgen refused the parameters (a host that is no DNS name, ...).
    #[error("cannot make the certificate {name}: {detail}")]
    Certificate {
        /// Which certificate.
        name: String,
        /// rcgen's reason.
        detail: String,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// A certificate and its private key, in PEM.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key, wiped when dropped.
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("key_pem", &"..")
            .finish_non_exhaustive()
    }
}

/// A certificate authority held in memory.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field("key", &"..")
            .finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new authority named `name` with a fresh key.
    pub fn new(name: &str) -> Result<DevCa, DevCaError> {
        let failed = |error: rcgen::Error| DevCaError::Certificate {
            name: name.to_owned(),
            detail: error.to_string(),
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params);
        let key = KeyPair::generate().map_err(failed)?;
        let cert = params.self_signed(&key).map_err(failed)?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        Ok(DevCa {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    /// The authority's certificate, which clients and servers trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for a node reached at `hosts` (DNS names or IP
    /// addresses, `*.` wildcards allowed) and at [`LOOPBACK_HOSTS`], good
    /// for serving and for calling other nodes.
    pub fn issue_node(&self, name: &str, hosts: &[String]) -> Result<Issued, DevCaError> {
        let mut names: Vec<String> = LOOPBACK_HOSTS.iter().map(|&host| host.to_owned()).collect();
        for host in hosts {
            if !names.contains(host) {
                names.push(host.clone());
            }
        }
        self.issue(
            name,
            &names,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A certificate for a client only (a wallet, the load generator).
    pub fn issue_client(&self, name: &str) -> Result<Issued, DevCaError> {
        self.issue(name, &[], vec![ExtendedKeyUsagePurpose::ClientAuth])
    }

    fn issue(
        &self,
        name: &str,
        hosts: &[String],
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<Issued, DevCaError> {
        let failed = |detail: String| DevCaError::Certificate {
            name: name.to_owned(),
            detail,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(name);
        for host in hosts {
            let san = match host.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) if !is_dns_name(host) => {
                    return Err(failed(format!(
                        "{host:?} is neither an IP address nor a DNS name"
                    )));
                }
                Err(_) => SanType::DnsName(
                    host.clone()
                        .try_into()
                        .map_err(|error| failed(format!("host {host:?}: {error}")))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usages;
        set_validity(&mut params);
        let key = KeyPair::generate().map_err(|error| failed(error.to_string()))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|error| failed(error.to_string()))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }
}

/// What [`write`] made: the file names, all in one directory.
#[derive(Debug, Clone)]
pub struct DevCaFiles {
    /// The directory.
    pub dir: PathBuf,
    /// The nodes' names: `NAME.pem` and `NAME.key` each.
    pub nodes: Vec<String>,
    /// The clients' names: `NAME.pem` and `NAME.key` each.
    pub clients: Vec<String>,
}

impl DevCaFiles {
    /// The authority's certificate, `ca.pem`.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The certificate of `name`, `NAME.pem`.
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// The private key of `name`, `NAME.key`.
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
}

/// Makes a new authority and writes it (`ca.pem`, `ca.key`), a certificate
/// and key for each of `nodes` reached at `hosts` and loopback, and one for
/// each of `clients`, into `dir` (created with mode 0700). Every file has
/// mode 0600.
pub fn write(
    dir: &Path,
    nodes: &[String],
    hosts: &[String],
    clients: &[String],
) -> Result<DevCaFiles, DevCaError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| DevCaError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let files = DevCaFiles {
        dir: dir.to_owned(),
        nodes: nodes.to_vec(),
        clients: clients.to_vec(),
    };
    let put = |path: PathBuf, contents: &str| {
        write_secret(&path, contents.as_bytes())
            .map_err(|source| DevCaError::Write { path, source })
    };

    let ca = DevCa::new("Millicent development CA")?;
    put(files.ca(), ca.cert_pem())?;
    put(dir.join("ca.key"), &ca.key_pem)?;
    for node in nodes {
        let issued = ca.issue_node(node, hosts)?;
        put(files.cert(node), &issued.cert_pem)?;
        put(files.key(node), &issued.key_pem)?;
    }
    for client in clients {
        let issued = ca.issue_client(client)?;
        put(files.cert(client), &issued.cert_pem)?;
        put(files.key(client), &issued.key_pem)?;
    }
    Ok(files)
}

/// A DNS name, or a `*.` wildcard over one: dot-separated labels of
/// letters, digits and inner hyphens.
fn is_dns_name(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn common_name(name: &str) -> DistinguishedName {
    let mut distinguished = DistinguishedName::new();
    distinguished.push(DnType::CommonName, name);
    distinguished
}

fn set_validity(params: &mut CertificateParams) {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    // Close enough to the calendar year for a validity measured in years.
    let year = 1970 + (seconds / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 2, 1, 1);
}
