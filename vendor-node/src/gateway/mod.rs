//! The HTTP 402 gateway: the node in front of an upstream HTTP server, or a
//! folder of files, selling what it serves for one vendor's scrip.
//!
//! # A request, step by step
//!
//! 1. The `Host` (or the authority of an absolute request target) must be
//!    one the gateway serves, else `421 Misdirected Request`.
//! 2. The path picks a route: free (passed on), priced, or neither (`404`,
//!    passed on to no one).
//! 3. A priced request without payment headers is answered `402 Payment
//!    Required` with the offer: vendor, price, the web request to stamp,
//!    variants, suites, brokers.
//! 4. A request with payment headers is checked in `headers`, which builds
//!    the `PayRequest` a gRPC client would send, with the web request made
//!    from the HTTP request itself. Its body is read (bounded) before the
//!    payment is taken, so a body too large is refused without charge.
//! 5. The payment takes the node's one payment path, `Node::pay`: the same
//!    checks, the same durable spend before any answer, the same retries
//!    and double-spend refusals as `Pay`. A refusal is `402` again, with
//!    the offer and the reason; the upstream is not called.
//! 6. Only then does the request go to the upstream; its answer goes back
//!    with the change, reply stamp and price in headers. An upstream that
//!    fails gets `502`, still with the change: the payment was taken, and
//!    sending the identical request again within the retry window gets the
//!    same change and tries the upstream again.
//!
//! The upstream never sees a request the gateway has not been paid for (or
//! that is free), nor any `millicent-*` header.

mod config;
mod files;
mod headers;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use millicent_core::Variant;
use millicent_core::web::{
    OFFER_MEDIA_TYPE, Offer, OfferBroker, OfferRefusal, REASON_HEADER, normalize_host, web_request,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub(crate) use config::{GatewaySettings, WebPrices};
pub use config::{GatewaySpec, MIN_HEADER_BYTES, OfferBrokerSpec, PriceSpec};
use config::{Origin, Route};
pub(crate) use headers::payment as payment_request;

use crate::VendorError;
use crate::config::Item;
use crate::node::Node;

/// The body of every response the gateway sends.
type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// How long shutdown waits for HTTP requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running gateway, stopped by [`RunningGateway::shutdown`].
#[derive(Debug)]
pub(crate) struct RunningGateway {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// What every request of the gateway shares.
struct Gateway {
    node: Arc<Node>,
    /// The vendor's position in the node, checked at start.
    vendor: usize,
    settings: GatewaySettings,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl RunningGateway {
    /// Binds the gateway's address and serves until shut down.
    pub(crate) async fn start(
        settings: GatewaySettings,
        node: Arc<Node>,
    ) -> Result<RunningGateway, VendorError> {
        let vendor = node.vendor_index(&settings.vendor)?;
        if let Origin::Files(folder) = &settings.origin
            && !folder.is_dir()
        {
            return Err(VendorError::Config {
                detail: format!(
                    "[gateway] files: {} is not a folder (paths are relative to the folder the \
                     node is started from)",
                    folder.display()
                ),
            });
        }
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|error| VendorError::Bind {
                addr: settings.listen,
                detail: error.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|error| VendorError::Bind {
            addr: settings.listen,
            detail: error.to_string(),
        })?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.upstream_timeout));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        tracing::info!(
            listen = %addr,
            vendor = %settings.vendor,
            origin = %match &settings.origin {
                Origin::Upstream(uri) => uri.to_string(),
                Origin::Files(folder) => folder.display().to_string(),
            },
            "HTTP 402 gateway serving"
        );
        let gateway = Arc::new(Gateway {
            node,
            vendor,
            settings,
            client,
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept(listener, gateway, stopped));
        Ok(RunningGateway { addr, stop, task })
    }

    /// The address the gateway listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish, and returns once no
    /// connection holds the node any more.
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "the HTTP gateway task failed");
        }
    }
}

async fn accept(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                connections.spawn(serve_connection(stream, gateway.clone(), stopped.clone()));
            }
            _ = stopped.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    drop(gateway);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        tracing::warn!("HTTP requests still in flight after the drain timeout");
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    gateway: Arc<Gateway>,
    mut stopped: watch::Receiver<bool>,
) {
    let max_header_bytes = gateway.settings.max_header_bytes;
    let service = hyper::service::service_fn(move |request| {
        let gateway = gateway.clone();
        async move { Ok::<_, Infallible>(gateway.handle(request).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .max_buf_size(max_header_bytes)
        .header_read_timeout(Duration::from_secs(30))
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stopped.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

impl Gateway {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let (outcome, response) = self.serve(request).await;
        metrics::counter!("millicent_gateway_requests_total", "outcome" => outcome).increment(1);
        response
    }

    fn web(&self) -> Option<(&WebPrices, &crate::vendor::Vendor)> {
        let vendor = self.node.vendor_at(self.vendor)?;
        Some((vendor.catalogue.web.as_ref()?, vendor))
    }

    async fn serve(&self, request: Request<Incoming>) -> (&'static str, Response<Body>) {
        let Some((web, vendor)) = self.web() else {
            return (
                "internal",
                text(StatusCode::INTERNAL_SERVER_ERROR, "no web prices"),
            );
        };
        let host = request
            .uri()
            .authority()
            .map(|authority| authority.as_str().to_owned())
            .or_else(|| {
                let value = request.headers().get(header::HOST)?;
                Some(value.to_str().ok()?.to_owned())
            })
            .and_then(|host| normalize_host(&host));
        let Some(host) = host else {
            return (
                "malformed",
                text(StatusCode::BAD_REQUEST, "the request names no valid Host"),
            );
        };
        if !web.serves_host(&host) {
            let message = format!("this gateway does not serve the host {host}");
            return (
                "misdirected",
                text(StatusCode::MISDIRECTED_REQUEST, &message),
            );
        }

        let path = request.uri().path().to_owned();
        let item = match web.route(&path) {
            Route::Unknown => {
                let message = "nothing is sold or served at this path";
                return ("not_found", text(StatusCode::NOT_FOUND, message));
            }
            Route::Free => None,
            Route::Priced(item) => Some(item),
        };
        let file = match &self.settings.origin {
            Origin::Files(root) => match files::resolve(root, &path).await {
                Some(file) => Some(file),
                None => return ("not_found", text(StatusCode::NOT_FOUND, "no such file")),
            },
            Origin::Upstream(_) => None,
        };
        let Some(item) = item else {
            let request = match self.read_body(request).await {
                Ok(request) => request,
                Err(response) => return ("too_large", response),
            };
            return match self.pass_on(request, file.as_deref()).await {
                Ok(response) => ("free", response),
                Err(response) => ("upstream_failed", response),
            };
        };

        let target = request
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let web_request = match web_request(request.method().as_str(), &host, &target) {
            Ok(web_request) => web_request,
            Err(error) => {
                let status = match error.reason() {
                    "too_large" => StatusCode::URI_TOO_LONG,
                    _ => StatusCode::BAD_REQUEST,
                };
                return ("malformed", text(status, &error.to_string()));
            }
        };
        let payment = match headers::payment(request.headers(), vendor.name(), &web_request) {
            None => return ("offered", self.offer(vendor, item, web_request, None)),
            Some(Err(error)) => {
                return ("refused", self.refused(vendor, item, web_request, &error));
            }
            Some(Ok(payment)) => payment,
        };

        let request = match self.read_body(request).await {
            Ok(request) => request,
            Err(response) => return ("too_large", response),
        };
        let reply = match self.node.pay(payment).await {
            Ok(reply) => reply,
            Err(error) => return ("refused", self.refused(vendor, item, web_request, &error)),
        };
        let (outcome, mut response) = match self.pass_on(request, file.as_deref()).await {
            Ok(response) => ("paid", response),
            Err(response) => ("upstream_failed", response),
        };
        headers::add_reply(response.headers_mut(), &reply);
        (outcome, response)
    }

    /// The 402 answer to a priced request.
    fn offer(
        &self,
        vendor: &crate::vendor::Vendor,
        item: &Item,
        request: String,
        refused: Option<OfferRefusal>,
    ) -> Response<Body> {
        let catalogue = &vendor.catalogue;
        let offer = Offer {
            vendor: vendor.name().clone(),
            price: item.price,
            request,
            variants: catalogue
                .variants_for(item)
                .filter(|variant| *variant != Variant::Private)
                .collect(),
            suites: catalogue.accepted_suites.clone(),
            brokers: self
                .settings
                .brokers
                .iter()
                .map(|(name, url)| OfferBroker {
                    name: name.clone(),
                    url: url.clone(),
                })
                .collect(),
            retry_window_secs: self.node.retry_window_secs,
            refused,
        };
        let mut response = Response::new(full(offer.encode()));
        *response.status_mut() = StatusCode::PAYMENT_REQUIRED;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(OFFER_MEDIA_TYPE),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(refused) = &offer.refused
            && let Ok(reason) = HeaderValue::try_from(refused.reason.as_str())
        {
            headers.insert(REASON_HEADER, reason);
        }
        response
    }

    /// The answer to a refused payment: the offer again with the reason, or
    /// 503 when the node could not take payments at all (the payment may be
    /// sent again unchanged).
    fn refused(
        &self,
        vendor: &crate::vendor::Vendor,
        item: &Item,
        request: String,
        error: &VendorError,
    ) -> Response<Body> {
        let refusal = OfferRefusal {
            reason: error.reason().to_owned(),
            message: error.to_string(),
        };
        match error.code() {
            tonic::Code::Unavailable | tonic::Code::ResourceExhausted | tonic::Code::Internal => {
                let mut response = text(StatusCode::SERVICE_UNAVAILABLE, &refusal.message);
                if let Ok(reason) = HeaderValue::try_from(refusal.reason.as_str()) {
                    response.headers_mut().insert(REASON_HEADER, reason);
                }
                response
            }
            _ => self.offer(vendor, item, request, Some(refusal)),
        }
    }

    /// The request with its body read, if it is at most `max_body_bytes`;
    /// otherwise the `413` to answer, before anything is charged or passed
    /// on.
    async fn read_body(
        &self,
        request: Request<Incoming>,
    ) -> Result<Request<Full<Bytes>>, Response<Body>> {
        let (parts, body) = request.into_parts();
        let limit = self.settings.max_body_bytes;
        match Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(Request::from_parts(parts, Full::new(collected.to_bytes()))),
            Err(_) => {
                let message =
                    format!("the request body is larger than {limit} bytes; nothing was charged");
                Err(text(StatusCode::PAYLOAD_TOO_LARGE, &message))
            }
        }
    }

    /// Sends a request the gateway may pass on (free or paid) to the
    /// origin: its answer, or the gateway's own when the origin failed.
    async fn pass_on(
        &self,
        request: Request<Full<Bytes>>,
        file: Option<&Path>,
    ) -> Result<Response<Body>, Response<Body>> {
        match (&self.settings.origin, file) {
            (Origin::Files(_), Some(file)) => Ok(serve_file(request.method(), file).await),
            (Origin::Files(_), None) => Err(text(StatusCode::NOT_FOUND, "no such file")),
            (Origin::Upstream(upstream), _) => {
                self.forward(upstream, request).await.map_err(|message| {
                    tracing::warn!(%message, "the upstream did not answer");
                    text(StatusCode::BAD_GATEWAY, &message)
                })
            }
        }
    }

    async fn forward(
        &self,
        upstream: &hyper::Uri,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Body>, String> {
        let (mut parts, body) = request.into_parts();
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let authority = upstream.authority().map_or("", |a| a.as_str());
        parts.uri = format!("http://{authority}{target}")
            .parse()
            .map_err(|_| "the request target cannot be sent upstream".to_owned())?;
        parts.version = hyper::Version::HTTP_11;
        strip(&mut parts.headers);
        let request = Request::from_parts(parts, body);

        let answer =
            tokio::time::timeout(self.settings.upstream_timeout, self.client.request(request));
        let response = match answer.await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(format!("the upstream failed: {error}")),
            Err(_) => return Err("the upstream took too long to answer".to_owned()),
        };
        let (mut parts, body) = response.into_parts();
        strip(&mut parts.headers);
        Ok(Response::from_parts(
            parts,
            body.map_err(Into::into).boxed(),
        ))
    }
}

/// Removes hop-by-hop and payment headers from a message passed on.
fn strip(headers: &mut hyper::HeaderMap) {
    let names: Vec<_> = headers
        .keys()
        .filter(|name| headers::is_hop_by_hop(name) || headers::is_millicent(name))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

async fn serve_file(method: &Method, file: &Path) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "files are read with GET or HEAD",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let contents = match tokio::fs::read(file).await {
        Ok(contents) => contents,
        Err(_) => return text(StatusCode::NOT_FOUND, "no such file"),
    };
    let length = contents.len();
    let mut response = Response::new(if method == Method::HEAD {
        full(Vec::new())
    } else {
        full(contents)
    });
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(files::media_type(file)),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(full(format!("{message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
