//! Paying for HTTP resources from the wallet.
//!
//! A web payment has the shape of every other spend of the wallet: the
//! payment about to be sent is recorded in flight (the scrip, the URL,
//! method, web request and variant) and saved before the request leaves,
//! and the change is stored and saved before the payment is reported done.
//! A payment whose answer is lost is sent again identically by
//! [`Wallet::recover`]: the stamp is a function of the scrip and the web
//! request, so the gateway recognises the retry and answers with the
//! change it recorded (and the resource once more).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Method, Request, Response, StatusCode, Uri};
use millicent_core::web::Offer;
use millicent_core::{Amount, Payment, Variant, VendorName};

use super::{
    ExchangeSummary, HeldScrip, HistoryEntry, HistoryKind, InFlight, Outcome, Purse, ScripKey,
    Settled, Wallet, change_value,
};
use crate::ClientError;
use crate::protocol::{self, now_ms};
use crate::web::{self as http, HttpClient, OfferBody};

/// What to pay for, for [`Wallet::pay_web`].
#[derive(Debug)]
pub struct WebOrder {
    /// The resource: an absolute `http://` URL.
    pub url: Uri,
    /// GET or HEAD.
    pub method: Method,
    /// Headers to send with the request (the payment's are added).
    pub headers: HeaderMap,
    /// The vendor's offer, from its 402 answer to the same request.
    pub offer: Offer,
    /// Vendor scrip to ask for if an exchange is needed; `None` takes the
    /// wallet's setting.
    pub top_up: Option<Amount>,
}

/// A web payment that went through.
#[derive(Debug)]
pub struct WebPurchase {
    /// The answer of the vendor's gateway, payment headers removed.
    pub response: Response<Incoming>,
    /// The vendor paid.
    pub vendor: VendorName,
    /// The price charged.
    pub price: Amount,
    /// The change kept.
    pub change: Amount,
    /// The exchange made to get vendor scrip, if one was needed.
    pub exchange: Option<ExchangeSummary>,
}

impl Wallet {
    /// Pays for an HTTP resource as its vendor's offer asks, and fetches it.
    ///
    /// Refuses, spending nothing, a method other than GET and HEAD, an
    /// offer for another request than `order`'s (a HEAD takes the offer of
    /// a GET of the same resource), one over the wallet's
    /// limits, and one from a vendor whose scrip the wallet neither holds
    /// nor can buy from a broker it has joined.
    pub async fn pay_web(
        &mut self,
        client: &HttpClient,
        order: WebOrder,
    ) -> Result<WebPurchase, ClientError> {
        let WebOrder {
            url,
            method,
            headers,
            offer,
            top_up,
        } = order;
        if method != Method::GET && method != Method::HEAD {
            return Err(ClientError::MethodNotPaid {
                method: method.to_string(),
            });
        }
        let request = http::request_for(&method, &url)?;
        // A 402 to HEAD has no body, so a HEAD is paid from the offer of a
        // GET of the same resource; the stamp covers the HEAD itself.
        let offered_for_get =
            method == Method::HEAD && offer.request == http::request_for(&Method::GET, &url)?;
        if offer.request != request && !offered_for_get {
            return Err(ClientError::BadOffer {
                url: url.to_string(),
                detail: format!("it is for the request {:?}, not {request:?}", offer.request),
            });
        }
        let variant = [Variant::Secure, Variant::Clear]
            .into_iter()
            .find(|v| offer.variants.contains(v))
            .ok_or_else(|| ClientError::BadOffer {
                url: url.to_string(),
                detail: "it accepts no variant this wallet pays in".to_owned(),
            })?;
        self.check_limits(&offer.vendor, offer.price, now_ms())?;
        if !self.can_get_scrip_of(&offer.vendor).await? {
            let brokers: Vec<String> = offer
                .brokers
                .iter()
                .map(|b| format!("{} ({})", b.name, b.url))
                .collect();
            return Err(ClientError::VendorNotServed {
                vendor: offer.vendor.to_string(),
                brokers: brokers.join(", "),
            });
        }

        let origin = origin_of(&url);
        let top_up = top_up.unwrap_or(self.settings.top_up);
        let (key, exchange) = self
            .vendor_scrip_for(&offer.vendor, offer.price, top_up, &origin)
            .await?;
        let in_flight = InFlight::Web {
            url: url.to_string(),
            method: method.to_string(),
            request,
            variant,
            price: offer.price,
        };
        self.mark_in_flight(Purse::Vendor, &key, in_flight)?;
        let settled = self.settle_web(client, &key, headers).await?;
        let (response, price, change) = self.finish(settled)?;
        Ok(WebPurchase {
            response,
            vendor: offer.vendor,
            price,
            change,
            exchange,
        })
    }

    /// Sends again a web payment whose answer was lost, for
    /// [`Wallet::recover`]; the resource is not kept.
    pub(super) async fn resend_web(
        &mut self,
        client: &HttpClient,
        held: &HeldScrip,
    ) -> Result<Settled<()>, ClientError> {
        let settled = self
            .settle_web(client, &held.key(), HeaderMap::new())
            .await?;
        Ok(Settled {
            entry: settled.entry,
            result: settled.result.map(drop),
        })
    }

    /// Sends the web payment recorded in flight with the vendor scrip `key`
    /// and records its answer.
    async fn settle_web(
        &mut self,
        client: &HttpClient,
        key: &ScripKey,
        mut headers: HeaderMap,
    ) -> Result<Settled<(Response<Incoming>, Amount, Amount)>, ClientError> {
        let held = self.held(Purse::Vendor, key)?.clone();
        let Some(InFlight::Web {
            url,
            method,
            request,
            variant,
            price,
        }) = held.in_flight.clone()
        else {
            return Err(super::missing(key));
        };
        let mut entry = HistoryEntry::new(HistoryKind::Pay);
        entry.vendor = Some(key.vendor.to_string());
        entry.item = Some(request.clone());
        entry.url = Some(url.clone());

        let (payment, _) = protocol::prepare_payment(&held.scrip, &held.secret, variant, &request)?;
        http::add_payment_headers(&mut headers, &payment);
        let result = send(client, &url, &method, headers).await;
        let result = match result {
            Ok(response) => answer(&url, &payment, &held, response, price).await,
            Err(error) => Err(error),
        };
        let (mut response, reply) = match result {
            Ok(answered) => answered,
            Err(error) => return self.settle_failure(Purse::Vendor, key, entry, error),
        };

        self.take(Purse::Vendor, key);
        let change = change_value(reply.change.as_ref());
        entry.price = Some(reply.price);
        entry.change = Some(change);
        entry.status = Some(response.status().as_u16());
        entry.outcome = Outcome::Ok;
        if let Some(scrip) = reply.change {
            self.vendor_scrip.push(HeldScrip::new(
                scrip,
                held.secret.clone(),
                Some(origin_of_text(&url)),
            ));
        }
        self.record(&entry)?;
        http::strip_payment_headers(response.headers_mut());
        Ok(Settled {
            entry,
            result: Ok((response, reply.price, change)),
        })
    }
}

/// Sends a GET or HEAD request with `headers` and no body. A request that
/// could not be sent at all is [`ClientError::HttpUnreachable`], its
/// payment not made; any later failure leaves its outcome unknown.
async fn send(
    client: &HttpClient,
    url: &str,
    method: &str,
    headers: HeaderMap,
) -> Result<Response<Incoming>, ClientError> {
    let unreachable = |detail: String| ClientError::HttpUnreachable {
        url: url.to_owned(),
        detail,
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|e| unreachable(e.to_string()))?;
    // The gateway builds the web request from the Host it receives: it must
    // be the URL's, which the stamp covers.
    let host = url
        .parse::<Uri>()
        .ok()
        .and_then(|uri| uri.authority().map(|a| a.as_str().to_owned()))
        .and_then(|authority| hyper::header::HeaderValue::try_from(authority).ok())
        .ok_or_else(|| unreachable("the URL has no host".to_owned()))?;
    let mut headers = headers;
    headers.insert(hyper::header::HOST, host);
    let mut request = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::new()))
        .map_err(|error| unreachable(error.to_string()))?;
    *request.headers_mut() = headers;
    let sent = tokio::time::timeout(protocol::CALL_TIMEOUT, client.request(request)).await;
    match sent {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) if error.is_connect() => Err(unreachable(error.to_string())),
        Ok(Err(error)) => Err(ClientError::HttpLost {
            url: url.to_owned(),
            detail: error.to_string(),
        }),
        Err(_) => Err(ClientError::HttpLost {
            url: url.to_owned(),
            detail: "no answer in time".to_owned(),
        }),
    }
}

/// The checked reply to `payment` in `response`: a response carrying a
/// price header is the payment's reply, whatever its status; a 402 or 503
/// is a refusal (nothing was spent unless it says `double_spend`); any
/// other answer of an HTTP server's failure leaves the outcome unknown.
async fn answer(
    url: &str,
    payment: &Payment,
    held: &HeldScrip,
    response: Response<Incoming>,
    offered: Amount,
) -> Result<(Response<Incoming>, millicent_core::PaymentReply), ClientError> {
    if http::carries_reply(response.headers()) {
        let reply = http::reply_from_headers(held.scrip.suite(), response.headers())?;
        reply.open(payment, &held.secret)?;
        if reply.price > offered {
            return Err(ClientError::BadReply {
                call: "web payment",
                detail: format!("charges {} where the offer said {offered}", reply.price),
            });
        }
        return Ok((response, reply));
    }
    let status = response.status();
    let header_reason = http::reason_header(response.headers());
    if status == StatusCode::PAYMENT_REQUIRED {
        let (reason, message) = match http::read_offer(response.into_body()).await? {
            OfferBody::Offer(Offer {
                refused: Some(refused),
                ..
            }) => (refused.reason, refused.message),
            _ => (
                header_reason.unwrap_or_else(|| "not_paid".to_owned()),
                "the vendor asked for payment again without taking this one".to_owned(),
            ),
        };
        return Err(ClientError::Refused {
            reason,
            code: tonic::Code::FailedPrecondition,
            message,
        });
    }
    match header_reason {
        Some(reason) if status == StatusCode::SERVICE_UNAVAILABLE => Err(ClientError::Refused {
            reason,
            code: tonic::Code::Unavailable,
            message: format!("{url} could not take payments ({status})"),
        }),
        _ if status.is_server_error() => Err(ClientError::HttpLost {
            url: url.to_owned(),
            detail: format!("it answered {status} without the payment's reply"),
        }),
        _ => Err(ClientError::BadReply {
            call: "web payment",
            detail: format!("answered {status} without the payment's reply"),
        }),
    }
}

/// `http://host:port` of a URL: where the vendor's gateway answers.
fn origin_of(url: &Uri) -> String {
    let authority = url.authority().map_or("", |a| a.as_str());
    format!("http://{authority}")
}

fn origin_of_text(url: &str) -> String {
    url.parse::<Uri>()
        .map_or_else(|_| url.to_owned(), |uri| origin_of(&uri))
}
