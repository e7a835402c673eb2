//! `millicent proxy`: a local HTTP forward proxy that pays for priced
//! resources, and a page showing the wallet.
//!
//! A request sent through the proxy (`curl -x http://127.0.0.1:8480 URL`,
//! or a browser set to use it) goes to its server unchanged. When the
//! server answers `402 Payment Required` with a Millicent offer, the proxy
//! opens the wallet, and if the offer is well-formed, within the wallet's
//! limits and from a vendor whose scrip the wallet can get, pays and sends
//! the request again ([`Wallet::pay_web`]); the client gets the paid
//! answer, with a `millicent-paid` header naming the price. Any other
//! offer is refused, nothing spent, with a `402` whose body says why and
//! whose `millicent-declined` header names the reason.
//!
//! The wallet is opened for each payment and closed after it, so other
//! `millicent` commands can use it while the proxy runs.
//!
//! HTTPS: a `CONNECT` tunnel is passed through byte for byte. The proxy
//! cannot see inside it, so it pays for nothing there: a 402 from an HTTPS
//! site reaches the client as the site sent it.
//!
//! Requests for the proxy itself (`http://127.0.0.1:PORT/`) get the wallet
//! page: balances, scrip per vendor, recent purchases and limits, or the
//! same as JSON at `/wallet.json`. Only requests naming the proxy's own
//! address as host are answered, so a web page cannot read the wallet
//! through another name for it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use millicent_core::Amount;
use millicent_core::web::HOP_BY_HOP_HEADERS;
use serde_json::json;
use tokio::sync::watch;

use crate::ClientError;
use crate::wallet::{
    Balances, DAY_MS, HistoryEntry, HistoryKind, Outcome, Passphrase, Wallet, WebOrder,
};
use crate::web::{self, HttpClient, OfferBody};

/// Header of a paid answer naming the price paid.
pub const PAID_HEADER: &str = "millicent-paid";
/// Header of a refused offer naming why the proxy refused it.
pub const DECLINED_HEADER: &str = "millicent-declined";
/// Largest request body the proxy passes on.
pub const MAX_REQUEST_BODY: usize = 16 << 20;
/// How many purchases the wallet page lists.
const RECENT: usize = 20;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// What the proxy needs.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Where to listen; loopback unless every user of the network may
    /// spend from the wallet.
    pub listen: SocketAddr,
    /// The wallet paid from.
    pub wallet: PathBuf,
    /// Its passphrase, if the file is protected.
    pub passphrase: Option<Arc<Passphrase>>,
    /// Vendor scrip bought per exchange; `None` takes the wallet's setting.
    pub top_up: Option<Amount>,
}

/// A running proxy.
#[derive(Debug)]
pub struct RunningProxy {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct Proxy {
    config: ProxyConfig,
    addr: SocketAddr,
    client: HttpClient,
}

impl RunningProxy {
    /// Binds the address and serves until [`RunningProxy::shutdown`].
    pub async fn start(config: ProxyConfig) -> Result<RunningProxy, ClientError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|error| ClientError::HttpUnreachable {
                url: config.listen.to_string(),
                detail: format!("cannot listen there ({error})"),
            })?;
        let addr = listener
            .local_addr()
            .map_err(|error| ClientError::HttpUnreachable {
                url: config.listen.to_string(),
                detail: error.to_string(),
            })?;
        let proxy = Arc::new(Proxy {
            config,
            addr,
            client: web::http_client(),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept(listener, proxy, stopped));
        Ok(RunningProxy { addr, stop, task })
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept(
    listener: tokio::net::TcpListener,
    proxy: Arc<Proxy>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let proxy = proxy.clone();
                        async move { Ok::<_, Infallible>(proxy.handle(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .header_read_timeout(Duration::from_secs(30))
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
            _ = stopped.changed() => return,
        }
    }
}

impl Proxy {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        if request.method() == Method::CONNECT {
            return tunnel(request);
        }
        let for_us = match request.uri().authority() {
            Some(authority) => self.is_own(authority.as_str()),
            None => {
                let host = request.headers().get(header::HOST);
                match host.and_then(|h| h.to_str().ok()) {
                    Some(host) if self.is_own(host) => true,
                    _ => {
                        let message = "this is a proxy: send absolute http:// URLs, or ask for \
                                       the wallet page at the proxy's own address";
                        return text(StatusCode::BAD_REQUEST, message);
                    }
                }
            }
        };
        if for_us {
            return self.page(request.uri().path()).await;
        }
        match request.uri().scheme_str() {
            Some("http") => self.forward(request).await,
            _ => text(
                StatusCode::BAD_GATEWAY,
                "only http:// URLs are fetched through the proxy; https:// goes through a \
                 CONNECT tunnel, where the proxy cannot pay",
            ),
        }
    }

    /// Whether `host` names the proxy itself.
    fn is_own(&self, host: &str) -> bool {
        let port = self.addr.port();
        let host = host.to_ascii_lowercase();
        host == format!("127.0.0.1:{port}")
            || host == format!("localhost:{port}")
            || host == self.addr.to_string()
    }

    async fn forward(&self, request: Request<Incoming>) -> Response<Body> {
        let (mut parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the request body is too large",
                );
            }
        };
        strip_hop_by_hop(&mut parts.headers);
        web::strip_payment_headers(&mut parts.headers);
        let url = parts.uri.clone();
        let method = parts.method.clone();
        let headers = parts.headers.clone();
        let first = Request::from_parts(parts, Full::new(body));

        let response = match self.client.request(first).await {
            Ok(response) => response,
            Err(error) => {
                let message = format!("cannot reach {url}: {error}");
                return text(StatusCode::BAD_GATEWAY, &message);
            }
        };
        let response =
            if method == Method::HEAD && response.status() == StatusCode::PAYMENT_REQUIRED {
                self.offer_for_head(&url, &headers, response).await
            } else {
                response
            };
        if !web::may_be_offer(&response) {
            return relay(response);
        }
        let (parts, body) = response.into_parts();
        let offer = match web::read_offer(body).await {
            Ok(OfferBody::Offer(offer)) => offer,
            Ok(OfferBody::Other(bytes)) => {
                let mut response = Response::from_parts(parts, full(bytes));
                strip_hop_by_hop(response.headers_mut());
                return response;
            }
            Ok(OfferBody::Malformed(detail)) => {
                let error = ClientError::BadOffer {
                    url: url.to_string(),
                    detail,
                };
                return declined(&error);
            }
            Err(error) => return declined(&error),
        };

        let order = WebOrder {
            url: url.clone(),
            method,
            headers,
            offer,
            top_up: self.config.top_up,
        };
        match self.pay(order).await {
            Ok(purchase) => {
                eprintln!(
                    "paid {} to {} for {url}; change {}{}",
                    purchase.price,
                    purchase.vendor,
                    purchase.change,
                    purchase
                        .exchange
                        .as_ref()
                        .map(|e| format!(" (exchanged broker scrip for {} first)", e.value))
                        .unwrap_or_default()
                );
                let mut response = relay(purchase.response);
                if let Ok(value) = HeaderValue::try_from(purchase.price.units().to_string()) {
                    response
                        .headers_mut()
                        .insert(HeaderName::from_static(PAID_HEADER), value);
                }
                response
            }
            Err(error) => {
                eprintln!("did not pay for {url}: {error}");
                declined(&error)
            }
        }
    }

    /// The offer for a resource whose HEAD was answered 402: that answer has
    /// no body to carry the offer, so the proxy asks for it with an unpaid
    /// GET, which a Millicent gateway answers with the same offer without
    /// reaching its upstream. The HEAD's own answer stands if the GET brings
    /// no offer.
    async fn offer_for_head(
        &self,
        url: &hyper::Uri,
        headers: &hyper::HeaderMap,
        head: Response<Incoming>,
    ) -> Response<Incoming> {
        let mut get = Request::new(Full::new(Bytes::new()));
        *get.method_mut() = Method::GET;
        *get.uri_mut() = url.clone();
        *get.headers_mut() = headers.clone();
        match self.client.request(get).await {
            Ok(offer) if web::may_be_offer(&offer) => offer,
            _ => head,
        }
    }

    /// Opens the wallet (waiting for other commands), finishes calls left
    /// unsettled, and pays.
    async fn pay(&self, order: WebOrder) -> Result<crate::WebPurchase, ClientError> {
        let mut wallet = self.open_wallet().await?;
        if wallet.has_unsettled_calls() {
            let recovery = wallet.recover().await?;
            for settled in &recovery.settled {
                eprintln!(
                    "finished a call whose answer was lost: {:?}",
                    settled.entry.outcome
                );
            }
        }
        wallet.pay_web(&self.client, order).await
    }

    async fn open_wallet(&self) -> Result<Wallet, ClientError> {
        let path = self.config.wallet.clone();
        let passphrase = self.config.passphrase.clone();
        tokio::task::spawn_blocking(move || Wallet::open_with(path, passphrase.as_deref()))
            .await
            .map_err(|error| ClientError::Wallet {
                path: PathBuf::new(),
                action: "open",
                error: std::io::Error::other(error),
            })?
    }

    async fn page(&self, path: &str) -> Response<Body> {
        let wallet = match self.open_wallet().await {
            Ok(wallet) => wallet,
            Err(error) => {
                let message = format!("cannot open the wallet: {error}");
                return text(StatusCode::SERVICE_UNAVAILABLE, &message);
            }
        };
        let balances = match wallet.balances().await {
            Ok(balances) => balances,
            Err(error) => {
                let message = format!("cannot count the wallet's scrip: {error}");
                return text(StatusCode::INTERNAL_SERVER_ERROR, &message);
            }
        };
        let view = WalletView::new(&wallet, &balances);
        drop(wallet);
        match path {
            "/" | "/index.html" => {
                let mut response = Response::new(full(view.html()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                no_store(response)
            }
            "/wallet.json" => {
                let mut response = Response::new(full(view.json().to_string()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                no_store(response)
            }
            _ => text(StatusCode::NOT_FOUND, "the wallet page is at /"),
        }
    }
}

/// What the wallet page shows, read from an open wallet.
struct WalletView {
    spendable: u64,
    brokers: Vec<(String, u64, Option<u64>, u64)>,
    vendors: Vec<(String, u64, usize, u64)>,
    purchases: Vec<HistoryEntry>,
    limits: Vec<(&'static str, String)>,
}

impl WalletView {
    fn new(wallet: &Wallet, balances: &Balances) -> WalletView {
        let brokers: Vec<_> = balances
            .brokers
            .iter()
            .map(|b| {
                let account = b.account.as_ref().ok().map(|a| a.units());
                (
                    b.broker.to_string(),
                    b.account_id,
                    account,
                    b.scrip.value.units(),
                )
            })
            .collect();
        let vendors: Vec<_> = balances
            .vendors
            .iter()
            .map(|v| {
                let scrip = &v.scrip;
                (
                    v.vendor.to_string(),
                    scrip.value.units(),
                    scrip.pieces,
                    scrip.in_flight.units(),
                )
            })
            .collect();
        let spendable = brokers
            .iter()
            .map(|b| b.3)
            .chain(vendors.iter().map(|v| v.1))
            .sum();
        let purchases = wallet
            .history()
            .iter()
            .rev()
            .filter(|entry| entry.kind == HistoryKind::Pay)
            .take(RECENT)
            .cloned()
            .collect();
        let settings = wallet.settings();
        let show = |limit: Option<Amount>| limit.map_or("none".to_owned(), |a| a.to_string());
        let since = crate::protocol::now_ms().saturating_sub(DAY_MS);
        let limits = vec![
            ("per payment", show(settings.max_price)),
            ("per day", show(settings.daily_limit)),
            ("per vendor and day", show(settings.vendor_daily_limit)),
            (
                "paid in the last 24 hours",
                wallet.paid_since(None, since).to_string(),
            ),
            ("top-up", settings.top_up.to_string()),
        ];
        WalletView {
            spendable,
            brokers,
            vendors,
            purchases,
            limits,
        }
    }

    fn html(&self) -> String {
        let mut page = String::from(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"refresh\" content=\"10\"><title>Millicent wallet</title>\
             <style>body{font-family:sans-serif;margin:2em;max-width:60em}\
             table{border-collapse:collapse;margin-bottom:1.5em}\
             td,th{border-bottom:1px solid #ccc;padding:.3em .8em;text-align:left}\
             .n{text-align:right}</style></head><body>\n<h1>Millicent wallet</h1>\n",
        );
        page.push_str(&format!(
            "<p>Spendable scrip: <strong id=\"balance\">{}</strong></p>\n",
            self.spendable
        ));
        page.push_str(
            "<h2>Brokers</h2>\n<table id=\"brokers\"><tr><th>broker</th><th>account</th>\
                       <th>account balance</th><th>broker scrip</th></tr>\n",
        );
        for (name, account, balance, scrip) in &self.brokers {
            let balance = balance.map_or("unknown".to_owned(), |b| b.to_string());
            page.push_str(&format!(
                "<tr><td>{}</td><td class=\"n\">{account}</td><td class=\"n\">{balance}</td>\
                 <td class=\"n\">{scrip}</td></tr>\n",
                escape(name)
            ));
        }
        page.push_str(
            "</table>\n<h2>Scrip per vendor</h2>\n<table id=\"vendors\"><tr>\
                       <th>vendor</th><th>scrip</th><th>pieces</th><th>in unsettled calls</th>\
                       </tr>\n",
        );
        for (name, value, pieces, in_flight) in &self.vendors {
            page.push_str(&format!(
                "<tr><td>{}</td><td class=\"n\">{value}</td><td class=\"n\">{pieces}</td>\
                 <td class=\"n\">{in_flight}</td></tr>\n",
                escape(name)
            ));
        }
        page.push_str(
            "</table>\n<h2>Recent purchases</h2>\n<table id=\"purchases\"><tr>\
                       <th>time</th><th>vendor</th><th>item</th><th>price</th><th>change</th>\
                       <th>outcome</th></tr>\n",
        );
        for entry in &self.purchases {
            let amount = |a: Option<Amount>| a.map_or(String::new(), |a| a.to_string());
            page.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td>{}</td></tr>\n",
                crate::wallet::utc_time(entry.time_ms),
                escape(entry.vendor.as_deref().unwrap_or("")),
                escape(entry.item.as_deref().unwrap_or("")),
                amount(entry.price),
                amount(entry.change),
                escape(&outcome_text(&entry.outcome)),
            ));
        }
        page.push_str("</table>\n<h2>Limits</h2>\n<table id=\"limits\">\n");
        for (name, value) in &self.limits {
            page.push_str(&format!(
                "<tr><td>{name}</td><td class=\"n\">{}</td></tr>\n",
                escape(value)
            ));
        }
        page.push_str("</table>\n</body></html>\n");
        page
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "spendable": self.spendable,
            "brokers": self.brokers.iter().map(|(name, account, balance, scrip)| json!({
                "broker": name, "account_id": account, "balance": balance, "scrip": scrip,
            })).collect::<Vec<_>>(),
            "vendors": self.vendors.iter().map(|(name, value, pieces, in_flight)| json!({
                "vendor": name, "scrip": value, "pieces": pieces, "in_flight": in_flight,
            })).collect::<Vec<_>>(),
            "purchases": self.purchases,
            "limits": self.limits.iter().map(|(name, value)| (name.to_string(), json!(value)))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// A history outcome in words.
pub fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok => "ok".to_owned(),
        Outcome::Refused { reason } => format!("refused: {reason}"),
        Outcome::Failed { reason } => format!("failed: {reason}"),
        Outcome::Interrupted => "interrupted".to_owned(),
    }
}

/// Text made safe to place in HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Passes a `CONNECT` tunnel through: the proxy cannot pay inside it.
fn tunnel(request: Request<Incoming>) -> Response<Body> {
    let Some(authority) = request.uri().authority().map(|a| a.to_string()) else {
        return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(request).await else {
            return;
        };
        let Ok(mut server) = tokio::net::TcpStream::connect(&authority).await else {
            return;
        };
        let mut client = TokioIo::new(upgraded);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    Response::new(full(Bytes::new()))
}

/// An upstream answer as the client gets it.
fn relay(response: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.map_err(Into::into).boxed())
}

/// The 402 by which the proxy refuses to pay: nothing was spent.
fn declined(error: &ClientError) -> Response<Body> {
    let reason = error
        .declined()
        .or_else(|| error.reason().map(|_| "refused"));
    let status = if reason.is_some() {
        StatusCode::PAYMENT_REQUIRED
    } else {
        StatusCode::BAD_GATEWAY
    };
    let mut response = text(status, &format!("millicent proxy: {error}"));
    let value = error.declined().or(error.reason()).unwrap_or("failed");
    if let Ok(value) = HeaderValue::try_from(value) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(DECLINED_HEADER), value);
    }
    response
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP_HEADERS {
        headers.remove(*name);
    }
}

fn no_store(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape("<b a='1'>&\""), "&lt;b a=&#39;1&#39;&gt;&amp;&quot;");
    }
}
