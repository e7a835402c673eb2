//! The broker's calls to other services: vendor nodes (licences, blocks,
//! redemption reports) and other brokers (purchases for customers).
//!
//! `https://` URLs are dialled with the `[client_tls]` settings (the
//! authority trusted, the certificate presented for mutual TLS). Every
//! such call carries a bearer token and has a deadline, and every
//! failure becomes a [`BrokerError::VendorUnavailable`] naming the vendor,
//! so that an exchange that needed the call is refused as
//! `vendor_unavailable` and can be retried. What comes back is checked by
//! the caller like any outside input.

use std::collections::BTreeMap;
use std::time::Duration;

use millicent_core::VendorName;
use millicent_proto::broker_service_client::BrokerServiceClient;
use millicent_proto::vendor_service_client::VendorServiceClient;
use millicent_transport::ClientTls;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::BrokerError;
use crate::config::{BrokerPeerSettings, VendorSettings};

/// Longest wait for a vendor node or another broker to answer.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of `settings`'s vendor node, connected now.
pub(crate) async fn vendor_node(
    settings: &VendorSettings,
) -> Result<VendorServiceClient<Channel>, BrokerError> {
    let endpoint = endpoint(&settings.client_tls, &settings.node)
        .map_err(|detail| unavailable(&settings.name, detail))?;
    let channel = endpoint.connect().await.map_err(|error| {
        unavailable(
            &settings.name,
            format!("cannot reach the vendor node at {}: {error}", settings.node),
        )
    })?;
    Ok(VendorServiceClient::new(channel))
}

/// `message` with `authorization: Bearer <token>`; a failure names `vendor`.
pub(crate) fn bearer<T>(
    message: T,
    token: &str,
    vendor: &VendorName,
) -> Result<tonic::Request<T>, BrokerError> {
    let mut request = tonic::Request::new(message);
    let value = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| unavailable(vendor, "the token is not a valid header value".to_owned()))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// A refusal from the vendor node of `settings` to a call named `what`.
pub(crate) fn refused(
    settings: &VendorSettings,
    what: &str,
    status: &tonic::Status,
) -> BrokerError {
    unavailable(
        &settings.name,
        format!(
            "the vendor node at {} refused {what} ({:?}): {}",
            settings.node,
            status.code(),
            status.message()
        ),
    )
}

/// The vendor `vendor` cannot be served now, for `detail`.
pub(crate) fn unavailable(vendor: &VendorName, detail: String) -> BrokerError {
    BrokerError::VendorUnavailable {
        vendor: vendor.to_string(),
        detail,
    }
}

/// Clients of the other brokers this broker buys from, connected on first
/// use and reconnected by the channel when a connection drops.
pub(crate) struct BrokerLinks {
    clients: BTreeMap<VendorName, BrokerServiceClient<Channel>>,
}

impl BrokerLinks {
    /// Clients of every broker in `brokers` that has a URL.
    pub(crate) fn new(brokers: &[BrokerPeerSettings]) -> Result<BrokerLinks, BrokerError> {
        let mut clients = BTreeMap::new();
        for broker in brokers {
            let Some(url) = &broker.url else { continue };
            let endpoint =
                endpoint(&broker.client_tls, url).map_err(|detail| BrokerError::Config {
                    detail: format!("broker {}: {detail}", broker.name),
                })?;
            clients.insert(
                broker.name.clone(),
                BrokerServiceClient::new(endpoint.connect_lazy()),
            );
        }
        Ok(BrokerLinks { clients })
    }

    /// The client of broker `name`, if it has a URL.
    pub(crate) fn client(&self, name: &VendorName) -> Option<BrokerServiceClient<Channel>> {
        self.clients.get(name).cloned()
    }
}

fn endpoint(tls: &ClientTls, url: &str) -> Result<Endpoint, String> {
    Ok(tls
        .endpoint(url)
        .map_err(|error| error.to_string())?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true))
}
