//! How the Millicent services reach each other and show that they are
//! alive: TLS for every gRPC server and client, the gRPC health-checking
//! service, and the files holding private keys.
//!
//! - [`tls`]: the `[tls]` and `[client_tls]` tables of the services'
//!   configurations, turned into tonic's rustls settings; [`tls::endpoint`]
//!   is the one way a client of this workspace dials a URL, with TLS for
//!   `https://` and never for `http://`.
//! - [`health`]: liveness and readiness as the standard
//!   `grpc.health.v1.Health` service, which Kubernetes probes natively.
//! - [`probe`]: the plain HTTP listener of `/metrics`, `/healthz` and
//!   `/readyz`.
//! - [`secret_file`]: reading a file that holds a secret (a private key, a
//!   wallet), refused when users other than its owner can read it.
//! - [`options`]: the TLS options of the command-line clients.
//! - [`dev_ca`]: a development certificate authority that issues server
//!   and client certificates for a local or test network.
//!
//! Nothing here knows the Millicent protocol; the services decide what to
//! serve and whom to call, this crate only how.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod dev_ca;
pub mod health;
pub mod options;
pub mod probe;
pub mod secret_file;
pub mod tls;

pub use options::TlsOptions;
pub use tls::{ClientTls, ClientTlsFiles, ServerTlsFiles, TlsError};
