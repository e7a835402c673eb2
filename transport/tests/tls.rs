//! TLS and mutual TLS between a real tonic server and clients on loopback,
//! with certificates from the development authority; the health service is
//! the gRPC service called.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;

use millicent_transport::dev_ca;
use millicent_transport::health::{self, Health};
use millicent_transport::{ClientTlsFiles, ServerTlsFiles, TlsError};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const READINESS: &str = "millicent.v1.VendorService";

fn authority(dir: &Path) -> dev_ca::DevCaFiles {
    dev_ca::write(dir, &["node".to_owned()], &[], &["client".to_owned()]).unwrap()
}

/// Serves the health service with `tls` on a free loopback port.
async fn serve(tls: &ServerTlsFiles, health: &Health) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = Server::builder()
        .tls_config(tls.load().unwrap())
        .unwrap()
        .add_service(health.service())
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    format!("https://localhost:{port}")
}

async fn status(client: &ClientTlsFiles, url: &str, service: &str) -> Result<i32, String> {
    let endpoint = client
        .load()
        .map_err(|e| e.to_string())?
        .endpoint(url)
        .map_err(|e| e.to_string())?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| millicent_transport::tls::chain(&e))?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|status| status.to_string())?;
    Ok(reply.into_inner().status)
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_of_the_authority() {
    let dir = tempfile::tempdir().unwrap();
    let ca = authority(&dir.path().join("ca"));
    let other = authority(&dir.path().join("other"));
    let server_tls = ServerTlsFiles {
        cert: ca.cert("node"),
        key: ca.key("node"),
        client_ca: Some(ca.ca()),
    };
    let health = Health::new(READINESS).await;
    let url = serve(&server_tls, &health).await;

    let good = ClientTlsFiles {
        ca: Some(ca.ca()),
        cert: Some(ca.cert("client")),
        key: Some(ca.key("client")),
    };
    // Live at once; ready only once told.
    assert_eq!(status(&good, &url, "").await, Ok(1));
    assert_eq!(status(&good, &url, READINESS).await, Ok(2));
    health.ready().await;
    assert_eq!(status(&good, &url, READINESS).await, Ok(1));
    health.draining().await;
    assert_eq!(status(&good, &url, READINESS).await, Ok(2));

    // No client certificate: the server ends the handshake.
    let anonymous = ClientTlsFiles {
        ca: Some(ca.ca()),
        cert: None,
        key: None,
    };
    assert!(status(&anonymous, &url, "").await.is_err());

    // A certificate of another authority: refused too.
    let stranger = ClientTlsFiles {
        ca: Some(ca.ca()),
        cert: Some(other.cert("client")),
        key: Some(other.key("client")),
    };
    assert!(status(&stranger, &url, "").await.is_err());

    // A client trusting another authority refuses the server.
    let misled = ClientTlsFiles {
        ca: Some(other.ca()),
        cert: Some(other.cert("client")),
        key: Some(other.key("client")),
    };
    let error = status(&misled, &url, "").await.unwrap_err();
    assert!(error.contains("certificate"), "{error}");

    // Plain text to a TLS server gets no answer.
    let plain = url.replace("https://", "http://");
    assert!(status(&good, &plain, "").await.is_err());
}

#[tokio::test]
async fn a_server_without_client_ca_takes_clients_without_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = authority(dir.path());
    let server_tls = ServerTlsFiles {
        cert: ca.cert("node"),
        key: ca.key("node"),
        client_ca: None,
    };
    let health = Health::new(READINESS).await;
    let url = serve(&server_tls, &health).await;
    let anonymous = ClientTlsFiles {
        ca: Some(ca.ca()),
        cert: None,
        key: None,
    };
    assert_eq!(status(&anonymous, &url, "").await, Ok(1));
    // The node certificate names 127.0.0.1 as well as localhost.
    let by_address = url.replace("localhost", "127.0.0.1");
    assert_eq!(status(&anonymous, &by_address, "").await, Ok(1));
}

#[tokio::test]
async fn the_plain_health_listener_answers_without_tls() {
    let health = Health::new(READINESS).await;
    health.ready().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = health::serve_plain("127.0.0.1:0".parse().unwrap(), &health, async {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let url = format!("http://{}", listener.addr());
    assert_eq!(
        status(&ClientTlsFiles::default(), &url, READINESS).await,
        Ok(1)
    );
    let _ = stop.send(());
    listener.stopped().await;
    assert!(status(&ClientTlsFiles::default(), &url, "").await.is_err());
}

#[test]
fn https_needs_an_authority_and_keys_must_be_private() {
    let error = ClientTlsFiles::default()
        .load()
        .unwrap()
        .endpoint("https://localhost:1")
        .unwrap_err();
    assert!(matches!(error, TlsError::NoTrust { .. }), "{error}");
    assert!(
        ClientTlsFiles::default()
            .load()
            .unwrap()
            .endpoint("http://localhost:1")
            .is_ok()
    );

    let dir = tempfile::tempdir().unwrap();
    let ca = authority(dir.path());
    let half = ClientTlsFiles {
        ca: Some(ca.ca()),
        cert: Some(ca.cert("client")),
        key: None,
    };
    assert!(matches!(half.load(), Err(TlsError::HalfIdentity)));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for name in [
            "ca.pem",
            "ca.key",
            "node.pem",
            "node.key",
            "client.pem",
            "client.key",
        ] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        std::fs::set_permissions(ca.key("node"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let server = ServerTlsFiles {
            cert: ca.cert("node"),
            key: ca.key("node"),
            client_ca: None,
        };
        let error = server.load().unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
        assert!(!error.contains("PRIVATE KEY"), "{error}");
    }

    // A certificate file that holds no certificate is named.
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let server = ServerTlsFiles {
        cert: bogus.clone(),
        key: ca.key("client"),
        client_ca: None,
    };
    let error = server.load().unwrap_err().to_string();
    assert!(error.contains("bogus.pem"), "{error}");
}

#[test]
fn environment_overrides_make_add_to_or_refuse_a_tls_table() {
    let names = ["CERT", "KEY", "CLIENT_CA"];
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        ServerTlsFiles::overridden(None, None, None, None, names),
        Ok(None)
    );
    let made = ServerTlsFiles::overridden(None, some("c.pem"), some("k.pem"), None, names)
        .unwrap()
        .unwrap();
    assert_eq!(made.cert, Path::new("c.pem"));
    assert_eq!(made.key, Path::new("k.pem"));
    assert_eq!(made.client_ca, None);

    // A client authority, or half an identity, makes no table on its own.
    for (cert, key, ca) in [
        (None, None, some("ca.pem")),
        (some("c.pem"), None, None),
        (None, some("k.pem"), None),
    ] {
        let error = ServerTlsFiles::overridden(None, cert, key, ca, names).unwrap_err();
        assert!(error.contains("CERT and KEY must both be set"), "{error}");
    }

    let added = ServerTlsFiles::overridden(
        Some(made.clone()),
        None,
        some("k2.pem"),
        some("ca.pem"),
        names,
    )
    .unwrap()
    .unwrap();
    assert_eq!(added.cert, made.cert);
    assert_eq!(added.key, Path::new("k2.pem"));
    assert_eq!(added.client_ca.as_deref(), Some(Path::new("ca.pem")));

    let client = ClientTlsFiles::default().overridden(some("ca.pem"), None, some("k.pem"));
    assert_eq!(client.ca.as_deref(), Some(Path::new("ca.pem")));
    assert_eq!(client.cert, None);
    assert_eq!(client.key.as_deref(), Some(Path::new("k.pem")));
}
