//! The TLS options of the command-line clients (`millicent`, the
//! operator's commands of `millicent-broker`, `millicent-bench`): which
//! authority to trust for `https://` URLs and which certificate to present
//! to servers that demand one.

use std::path::PathBuf;

use crate::tls::{ClientTlsFiles, TlsError, install_process_client_tls};

/// `--tls-ca`, `--tls-cert` and `--tls-key`, with their environment
/// variables.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsOptions {
    /// PEM file of the certificate authorities trusted for https:// URLs;
    /// without it, https:// URLs are refused.
    #[arg(long, global = true, env = "MILLICENT_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// PEM file of a client certificate, for servers that demand one
    /// (mutual TLS); needs --tls-key.
    #[arg(long, global = true, env = "MILLICENT_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file of the client certificate's private key; it must be
    /// readable by its owner only.
    #[arg(long, global = true, env = "MILLICENT_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

impl TlsOptions {
    /// The files named, as the transport reads them.
    pub fn files(&self) -> ClientTlsFiles {
        ClientTlsFiles {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
        }
    }

    /// Reads the files and makes them how this process dials `https://`
    /// URLs. Call once, before the first connection.
    pub fn install(&self) -> Result<(), TlsError> {
        let tls = self.files().load()?;
        // A second installation keeps the first: the process has one
        // identity.
        let _ = install_process_client_tls(tls);
        Ok(())
    }
}
