//! The gRPC face of the node: `VendorService` over the shared [`Node`].
//!
//! Handlers stay thin: they authenticate where a call needs it, hand the
//! message to [`crate::convert`] and the node, and turn a [`VendorError`]
//! into a status with its `millicent-reason`.

use std::sync::Arc;
use std::time::Duration;

use millicent_proto as wire;
use millicent_proto::vendor_service_server::VendorService;
use subtle::ConstantTimeEq as _;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::node::{Node, unix_now};
use crate::{VendorError, blocks, convert, redemptions, stream};

/// `VendorService` backed by a node.
#[derive(Clone, Debug)]
pub(crate) struct GrpcVendor {
    node: Arc<Node>,
    /// The longest one payment on a stream may take; a unary call is
    /// bounded by the server's request timeout instead.
    payment_timeout: Duration,
    /// Turns true when the node starts shutting down.
    draining: tokio::sync::watch::Receiver<bool>,
}

impl GrpcVendor {
    pub(crate) fn new(
        node: Arc<Node>,
        payment_timeout: Duration,
        draining: tokio::sync::watch::Receiver<bool>,
    ) -> GrpcVendor {
        GrpcVendor {
            node,
            payment_timeout,
            draining,
        }
    }

    /// Checks `authorization: Bearer <licence token>` in constant time: the
    /// credential of every call a broker makes (licences, blocks, reports).
    fn authenticate(&self, metadata: &MetadataMap) -> Result<(), VendorError> {
        let Some(token) = &self.node.licence_token else {
            return Err(VendorError::Unauthenticated {
                detail: "this node grants no licences: it has no licence_token configured",
            });
        };
        let presented = metadata
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(VendorError::Unauthenticated {
                detail: "this call needs the header `authorization: Bearer <licence token>`",
            })?;
        if !bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
            return Err(VendorError::Unauthenticated {
                detail: "the licence token is not the one this node accepts",
            });
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl VendorService for GrpcVendor {
    async fn pay(
        &self,
        request: Request<wire::PayRequest>,
    ) -> Result<Response<wire::PayReply>, Status> {
        let reply = self.node.pay(request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    type PayStreamStream = stream::Replies;

    async fn pay_stream(
        &self,
        request: Request<Streaming<wire::PayBatch>>,
    ) -> Result<Response<Self::PayStreamStream>, Status> {
        let replies = stream::serve(
            self.node.clone(),
            request.into_inner(),
            self.payment_timeout,
            self.draining.clone(),
        );
        Ok(Response::new(replies))
    }

    async fn get_prices(
        &self,
        _request: Request<wire::GetPricesRequest>,
    ) -> Result<Response<wire::PriceList>, Status> {
        let vendors = self
            .node
            .vendors()
            .iter()
            .map(|vendor| convert::offer(&vendor.catalogue))
            .collect();
        Ok(Response::new(wire::PriceList { vendors }))
    }

    async fn grant_licence(
        &self,
        request: Request<wire::GrantLicenceRequest>,
    ) -> Result<Response<wire::Licence>, Status> {
        // Authentication comes first, so that a caller without the token
        // learns nothing, not even which vendors are served.
        self.authenticate(request.metadata())?;
        let wanted = convert::licence_request(request.into_inner()).map_err(VendorError::from)?;
        let vendor = self.node.vendor(&wanted.vendor)?;
        let licence = vendor.grant_licence(&wanted.broker, unix_now()).await?;
        metrics::counter!(
            "millicent_vendor_licences_granted_total",
            "vendor" => vendor.name().as_str().to_owned()
        )
        .increment(1);
        Ok(Response::new(convert::licence_to_wire(
            vendor.name(),
            &licence,
            self.node.licence_ids,
        )))
    }

    async fn sell_scrip_block(
        &self,
        request: Request<wire::SellScripBlockRequest>,
    ) -> Result<Response<wire::ScripBlock>, Status> {
        self.authenticate(request.metadata())?;
        let wanted = convert::block_request(request.into_inner()).map_err(VendorError::from)?;
        let vendor = self.node.vendor(&wanted.vendor)?;
        let block = blocks::sell(
            vendor,
            &wanted.broker,
            wanted.count,
            wanted.value,
            unix_now(),
        )
        .await?;
        Ok(Response::new(convert::block_to_wire(vendor.name(), &block)))
    }

    async fn report_redemptions(
        &self,
        request: Request<wire::RedemptionsRequest>,
    ) -> Result<Response<wire::RedemptionReport>, Status> {
        self.authenticate(request.metadata())?;
        let query = convert::redemptions_query(request.into_inner()).map_err(VendorError::from)?;
        let timeout = self.payment_timeout.as_secs().saturating_add(1);
        let report = redemptions::report(&self.node, query, unix_now(), timeout).await?;
        Ok(Response::new(report))
    }
}
