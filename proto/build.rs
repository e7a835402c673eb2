//! Generates the Rust code for `proto/millicent.proto`.
//!
//! `protoc` comes from the `protoc-bin-vendored` crate so that a build needs
//! nothing beyond the Rust toolchain; a `PROTOC` environment variable wins.

/// Messages with a field that holds a secret in the clear.
const SECRET_MESSAGES: [&str; 4] = [
    ".millicent.v1.Licence",
    ".millicent.v1.OpenAccountReply",
    ".millicent.v1.BlockPiece",
    ".millicent.v1.PeerExchangeReply",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=PROTOC");

    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => std::path::PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Messages carrying secrets in the clear get a `Debug` that leaves
        // them out, written in `src/lib.rs`.
        .skip_debug(SECRET_MESSAGES)
        .compile_with_config(config, &["proto/millicent.proto"], &["proto"])?;
    Ok(())
}
