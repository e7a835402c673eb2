//! `millicent-bench dev-ca`: a development certificate authority and the
//! certificates of a local or test network, for trying TLS and mutual TLS
//! without an authority of one's own. Not for production: the authority's
//! key is written next to what it signs.

use std::path::PathBuf;

use anyhow::Context;
use millicent_transport::dev_ca;

/// Options of `millicent-bench dev-ca`.
#[derive(Debug, clap::Args)]
pub struct DevCaArgs {
    /// Folder to write into (created with mode 0700; every file 0600).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Nodes to certify, comma-separated: each gets NAME.pem and NAME.key,
    /// good for serving and for calling other nodes.
    #[arg(long, value_delimiter = ',', required = true)]
    pub names: Vec<String>,

    /// Further DNS names or IP addresses every node certificate covers,
    /// comma-separated (localhost, 127.0.0.1 and ::1 always are).
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,

    /// Clients to certify (wallets, the load generator), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "client")]
    pub clients: Vec<String>,
}

/// Writes the authority and the certificates, and says where they are.
pub fn run(args: &DevCaArgs) -> anyhow::Result<()> {
    let files = dev_ca::write(&args.out, &args.names, &args.hosts, &args.clients)
        .context("cannot make the development certificate authority")?;
    println!("authority: {}", files.ca().display());
    for name in files.nodes.iter().chain(&files.clients) {
        println!(
            "{name}: {} and {}",
            files.cert(name).display(),
            files.key(name).display()
        );
    }
    Ok(())
}
