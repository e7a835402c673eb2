//! TLS for gRPC: what a server presents and whom it accepts, whom a client
//! trusts and what it presents, read from PEM files named in the services'
//! configurations.
//!
//! A server configured with a `[tls]` table serves only TLS on its gRPC
//! address; with `client_ca` it also demands a client certificate signed by
//! that authority (mutual TLS) and closes connections that offer none. A
//! client dials `https://` URLs with TLS, trusting only the authorities it
//! is given (there is no built-in list of public ones), and `http://` URLs
//! in plain text; an `https://` URL without an authority to trust is
//! refused rather than dialled without checking whom it reaches.
//!
//! The rustls stack uses the `ring` crypto provider. Private keys are read
//! through [`crate::secret_file`], so a key file others can read stops the
//! service at start, and never appear in logs or errors.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::secret_file::{SecretFileError, read_secret};

/// Why TLS cannot be set up, or a URL cannot be dialled.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A private key file is unusable (readable by others, missing, ...).
    #[error(transparent)]
    Key(#[from] SecretFileError),
    /// A certificate file cannot be read.
    #[error("cannot read the certificate file {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The files do not hold what TLS needs.
    #[error("{what}: {detail}")]
    Invalid {
        /// Which files, and what they should hold.
        what: String,
        /// rustls' or tonic's reason.
        detail: String,
    },
    /// A certificate without its key, or a key without its certificate.
    #[error("a client certificate needs its key and a key its certificate: give both or neither")]
    HalfIdentity,
    /// An `https://` URL, but no authority to check the server against.
    #[error(
        "{url} is an https:// URL, but no certificate authority to trust is configured \
         (client_tls.ca, or --tls-ca / MILLICENT_TLS_CA)"
    )]
    NoTrust {
        /// The URL.
        url: String,
    },
    /// Not a URL tonic can dial.
    #[error("URL {url}: {detail}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why not.
        detail: String,
    },
}

/// The `[tls]` table of a server: its certificate chain and key, and the
/// authority whose client certificates it demands (mutual TLS).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsFiles {
    /// PEM file of the server's certificate, followed by any intermediate
    /// certificates.
    pub cert: PathBuf,
    /// PEM file of its private key; refused if others can read it.
    pub key: PathBuf,
    /// PEM file of the authorities whose client certificates are accepted;
    /// when set, a client without such a certificate cannot connect.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

impl ServerTlsFiles {
    /// Reads the files and checks that they make a TLS server.
    pub fn load(&self) -> Result<ServerTlsConfig, TlsError> {
        let identity = identity(&self.cert, &self.key)?;
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(client_ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read_public(client_ca)?));
        }
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|error| TlsError::Invalid {
                what: format!(
                    "{} and {} must hold a PEM certificate and its private key{}",
                    self.cert.display(),
                    self.key.display(),
                    match &self.client_ca {
                        Some(ca) => format!(", and {} PEM certificates", ca.display()),
                        None => String::new(),
                    }
                ),
                detail: chain(&error),
            })?;
        Ok(config)
    }
}

/// The `[client_tls]` table of a service that calls others, and the TLS
/// options of the command-line clients: the authorities trusted for
/// `https://` URLs and an optional client certificate with its key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTlsFiles {
    /// PEM file of the authorities whose server certificates are trusted.
    pub ca: Option<PathBuf>,
    /// PEM file of the client certificate presented to servers that ask.
    pub cert: Option<PathBuf>,
    /// PEM file of its private key; refused if others can read it.
    pub key: Option<PathBuf>,
}

impl ClientTlsFiles {
    /// Reads the files. With none given, the result dials `http://` only.
    pub fn load(&self) -> Result<ClientTls, TlsError> {
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(identity(cert, key)?),
            (None, None) => None,
            _ => return Err(TlsError::HalfIdentity),
        };
        let Some(ca) = &self.ca else {
            // A client identity is only ever sent to a server checked
            // against a trusted authority.
            return match identity {
                Some(_) => Err(TlsError::Invalid {
                    what: "a client certificate".to_owned(),
                    detail: "needs a certificate authority to trust (ca) as well".to_owned(),
                }),
                None => Ok(ClientTls::default()),
            };
        };
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_public(ca)?));
        if let Some(identity) = identity {
            config = config.identity(identity);
        }
        Endpoint::from_static("https://localhost")
            .tls_config(config.clone())
            .map_err(|error| TlsError::Invalid {
                what: format!(
                    "{} must hold PEM certificates{}",
                    ca.display(),
                    match (&self.cert, &self.key) {
                        (Some(cert), Some(key)) => format!(
                            ", and {} and {} a certificate and its private key",
                            cert.display(),
                            key.display()
                        ),
                        _ => String::new(),
                    }
                ),
                detail: chain(&error),
            })?;
        Ok(ClientTls {
            config: Some(Arc::new(config)),
        })
    }
}

/// Loaded client settings: how `https://` URLs are dialled. The default
/// dials `http://` URLs only.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    config: Option<Arc<ClientTlsConfig>>,
}

impl ClientTls {
    /// An endpoint for `url`: TLS with these settings for `https://`,
    /// plain text for `http://`. Timeouts are the caller's to set.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, TlsError> {
        let bad_url = |detail: String| TlsError::BadUrl {
            url: url.to_owned(),
            detail,
        };
        let https = url
            .split_once("://")
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("https"));
        let endpoint = if https {
            let config = self.config.as_deref().ok_or_else(|| TlsError::NoTrust {
                url: url.to_owned(),
            })?;
            // `from_shared` would install an empty set of roots for an
            // https URL; the configured authorities replace it.
            Endpoint::from_shared(url.to_owned())
                .map_err(|error| bad_url(chain(&error)))?
                .tls_config(config.clone())
                .map_err(|error| bad_url(chain(&error)))?
        } else {
            Endpoint::from_shared(url.to_owned()).map_err(|error| bad_url(chain(&error)))?
        };
        Ok(endpoint)
    }

    /// Whether `https://` URLs can be dialled.
    pub fn is_configured(&self) -> bool {
        self.config.is_some()
    }
}

static PROCESS_CLIENT_TLS: OnceLock<ClientTls> = OnceLock::new();

/// Sets how this process dials `https://` URLs, once, at start. The wallet
/// library's calls follow cluster maps and `wrong_node` refusals to URLs
/// learnt at run time, so whom the process trusts, and which certificate it
/// presents, belongs to the process, like the system's trust store; a
/// binary installs it from its options before its first call. Returns the
/// settings back if some were installed already.
pub fn install_process_client_tls(tls: ClientTls) -> Result<(), ClientTls> {
    PROCESS_CLIENT_TLS.set(tls)
}

/// The settings installed by [`install_process_client_tls`], or the
/// default (plain `http://` only).
pub fn process_client_tls() -> &'static ClientTls {
    PROCESS_CLIENT_TLS.get_or_init(ClientTls::default)
}

/// [`ClientTls::endpoint`] with this process's settings.
pub fn endpoint(url: &str) -> Result<Endpoint, TlsError> {
    process_client_tls().endpoint(url)
}

fn identity(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let chain = read_public(cert)?;
    let key = read_secret(key)?;
    Ok(Identity::from_pem(chain, key.as_slice()))
}

fn read_public(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Unreadable {
        path: path.to_owned(),
        source,
    })
}

/// `error` and its causes, which tonic keeps out of its own message.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl ServerTlsFiles {
    /// `table` (the file's `[tls]`) with the files named by environment
    /// variables put in its place: `cert` and `key` make a table where the
    /// file has none, and `client_ca` can only add to one. `names` are the
    /// variables' names, for the error.
    pub fn overridden(
        table: Option<ServerTlsFiles>,
        cert: Option<String>,
        key: Option<String>,
        client_ca: Option<String>,
        names: [&str; 3],
    ) -> Result<Option<ServerTlsFiles>, String> {
        let mut table = match (table, cert, key) {
            (Some(mut table), cert, key) => {
                if let Some(cert) = cert {
                    table.cert = PathBuf::from(cert);
                }
                if let Some(key) = key {
                    table.key = PathBuf::from(key);
                }
                table
            }
            (None, Some(cert), Some(key)) => ServerTlsFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
                client_ca: None,
            },
            (None, None, None) if client_ca.is_none() => return Ok(None),
            (None, ..) => {
                return Err(format!(
                    "{} and {} must both be set to serve TLS ({} alone is not enough)",
                    names[0], names[1], names[2]
                ));
            }
        };
        if let Some(client_ca) = client_ca {
            table.client_ca = Some(PathBuf::from(client_ca));
        }
        Ok(Some(table))
    }
}

impl ClientTlsFiles {
    /// These files with those named by environment variables put in their
    /// place.
    pub fn overridden(
        mut self,
        ca: Option<String>,
        cert: Option<String>,
        key: Option<String>,
    ) -> ClientTlsFiles {
        if let Some(ca) = ca {
            self.ca = Some(PathBuf::from(ca));
        }
        if let Some(cert) = cert {
            self.cert = Some(PathBuf::from(cert));
        }
        if let Some(key) = key {
            self.key = Some(PathBuf::from(key));
        }
        self
    }
}
