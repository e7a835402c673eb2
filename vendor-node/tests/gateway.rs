//! The HTTP 402 gateway against a real upstream HTTP server, spoken to over
//! raw HTTP/1.1 so that every header is exactly what the test wrote.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::{Broker, config, start};
use millicent_core::web::{self, Offer};
use millicent_core::{Amount, Payment, PaymentReply, Variant};
use millicent_vendor::{GatewaySpec, PriceSpec};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What the upstream saw: one request head per request.
type Seen = Arc<Mutex<Vec<String>>>;

/// An HTTP/1.1 server that answers every request with its path and
/// remembers the request heads.
async fn upstream() -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                record.lock().unwrap().push(head);
                let body = format!("upstream page {path}");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn offer(&self) -> Offer {
        assert_eq!(self.status, 402, "{}", String::from_utf8_lossy(&self.body));
        Offer::decode(&self.body).unwrap()
    }
}

/// Sends one request with `headers` (written as given) and reads the reply.
async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, String)]) -> Reply {
    send(addr, method, path, headers, "").await
}

/// As [`http`], with `body` after the head.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn payment_headers(payment: &Payment) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        (web::SCRIP_HEADER, web::encode_scrip(&payment.scrip)),
        (web::VARIANT_HEADER, payment.variant.name().to_owned()),
    ];
    if let Some(stamp) = &payment.request_stamp {
        headers.push((web::REQUEST_STAMP_HEADER, web::encode_mac(stamp)));
    }
    headers
}

fn gateway(upstream: SocketAddr) -> GatewaySpec {
    GatewaySpec {
        listen: "127.0.0.1:0".parse().unwrap(),
        vendor: Some("news.example".to_owned()),
        upstream: Some(format!("http://{upstream}")),
        hosts: vec!["127.0.0.1".to_owned()],
        prices: vec![PriceSpec {
            path: "/articles/*".to_owned(),
            price: 10,
        }],
        free: vec!["/free".to_owned()],
        max_body_bytes: 1000,
        ..GatewaySpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_requests_reach_the_upstream_and_bad_ones_never_do() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream_addr, seen) = upstream().await;
    let mut config = config(dir.path());
    config.gateway = Some(gateway(upstream_addr));
    let mut harness = start(config).await;
    let addr = harness.node.gateway_addr().unwrap();
    let mut broker = Broker::licensed(&mut harness.client, "news.example").await;
    let calls = || seen.lock().unwrap().len();

    // No payment: the offer, and the upstream is not called.
    let reply = http(addr, "GET", "/articles/1", &[]).await;
    let offer = reply.offer();
    assert_eq!(offer.vendor.as_str(), "news.example");
    assert_eq!(offer.price, Amount::new(10));
    assert_eq!(offer.request, format!("GET {addr}/articles/1"));
    assert_eq!(offer.variants, vec![Variant::Clear, Variant::Secure]);
    assert_eq!(offer.retry_window_secs, 600);
    assert_eq!(offer.refused, None);
    assert_eq!(calls(), 0);

    // A secure payment: the upstream's page, with change and reply stamp.
    let scrip = broker.mint(100);
    let payment = broker.payment(&scrip, Variant::Secure, &offer.request);
    let paid = http(addr, "GET", "/articles/1", &payment_headers(&payment)).await;
    assert_eq!(paid.status, 200);
    assert_eq!(paid.body, b"upstream page /articles/1");
    assert_eq!(paid.header(web::PRICE_HEADER), Some("10"));
    let change = web::decode_scrip(paid.header(web::CHANGE_HEADER).unwrap()).unwrap();
    assert_eq!(change.value(), Amount::new(90));
    let reply_stamp = web::decode_mac(
        scrip.suite(),
        "reply stamp",
        paid.header(web::REPLY_STAMP_HEADER).unwrap(),
    )
    .unwrap();
    let checked = PaymentReply {
        goods: Vec::new(),
        change: Some(change.clone()),
        reply_stamp: Some(reply_stamp),
        price: Amount::new(10),
    };
    checked.open(&payment, &broker.secret(&scrip)).unwrap();
    assert_eq!(calls(), 1);
    let head = seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.starts_with("get /articles/1 http/1.1"), "{head}");
    assert!(
        !head.contains("millicent-"),
        "the upstream saw payment headers: {head}"
    );

    // The identical request again is a retry: the same change, and the page.
    let again = http(addr, "GET", "/articles/1", &payment_headers(&payment)).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.header(web::CHANGE_HEADER),
        paid.header(web::CHANGE_HEADER)
    );
    assert_eq!(calls(), 2);

    // The same headers on another page: the stamp does not cover it.
    let moved = http(addr, "GET", "/articles/2", &payment_headers(&payment)).await;
    let refused = moved.offer().refused.unwrap();
    assert_eq!(refused.reason, "bad_request_stamp");
    assert_eq!(moved.header(web::REASON_HEADER), Some("bad_request_stamp"));

    // Spent scrip, stamped for another page: a double spend.
    let other = format!("GET {addr}/articles/2");
    let spent = broker.payment(&scrip, Variant::Secure, &other);
    let reply = http(addr, "GET", "/articles/2", &payment_headers(&spent)).await;
    assert_eq!(reply.offer().refused.unwrap().reason, "double_spend");

    // Headers that do not decode.
    let garbage = [
        (web::SCRIP_HEADER, "not base64!".to_owned()),
        (web::VARIANT_HEADER, "secure".to_owned()),
    ];
    let reply = http(addr, "GET", "/articles/3", &garbage).await;
    assert_eq!(reply.offer().refused.unwrap().reason, "malformed");
    let fifty = broker.mint(50);
    let private = broker.payment(&fifty, Variant::Secure, &format!("GET {addr}/articles/3"));
    let mut headers = payment_headers(&private);
    headers[1].1 = "private".to_owned();
    let reply = http(addr, "GET", "/articles/3", &headers).await;
    assert_eq!(
        reply.offer().refused.unwrap().reason,
        "variant_not_accepted"
    );
    // Scrip worth less than the price.
    let small = broker.mint(5);
    let poor = broker.payment(&small, Variant::Secure, &format!("GET {addr}/articles/3"));
    let reply = http(addr, "GET", "/articles/3", &payment_headers(&poor)).await;
    assert_eq!(reply.offer().refused.unwrap().reason, "insufficient_value");
    assert_eq!(
        calls(),
        2,
        "the upstream saw a request that was not paid for"
    );

    // Oversized headers and bodies are refused before any payment.
    let huge = [("x-padding", "a".repeat(20_000))];
    assert_eq!(http(addr, "GET", "/articles/1", &huge).await.status, 431);
    let fresh = broker.mint(100);
    let post = broker.payment(&fresh, Variant::Secure, &format!("POST {addr}/articles/4"));
    let mut headers = payment_headers(&post);
    headers.push(("content-length", "5000".to_owned()));
    let body = "b".repeat(5000);
    let reply = send(addr, "POST", "/articles/4", &headers, &body).await;
    assert_eq!(reply.status, 413);
    // The scrip of the refused body was not spent.
    let get = broker.payment(&fresh, Variant::Secure, &format!("GET {addr}/articles/4"));
    assert_eq!(
        http(addr, "GET", "/articles/4", &payment_headers(&get))
            .await
            .status,
        200
    );
    assert_eq!(calls(), 3);

    // Other hosts, unknown paths; free paths go through unpaid.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /articles/1 HTTP/1.1\r\nhost: evil.example\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    assert!(
        raw.starts_with(b"HTTP/1.1 421"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(http(addr, "GET", "/elsewhere", &[]).await.status, 404);
    assert_eq!(calls(), 3);
    let huge_free = [("content-length", "5000".to_owned())];
    assert_eq!(
        send(addr, "POST", "/free", &huge_free, &body).await.status,
        413
    );
    assert_eq!(calls(), 3);
    let free = http(addr, "GET", "/free", &[]).await;
    assert_eq!(
        (free.status, free.body.as_slice()),
        (200, &b"upstream page /free"[..])
    );
    assert_eq!(calls(), 4);

    harness.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_files_is_sold_by_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("articles")).unwrap();
    std::fs::write(site.join("articles/1.html"), "<p>one</p>").unwrap();
    let mut config = config(dir.path());
    config.gateway = Some(GatewaySpec {
        upstream: None,
        files: Some(site),
        ..gateway("127.0.0.1:1".parse().unwrap())
    });
    let mut harness = start(config).await;
    let addr = harness.node.gateway_addr().unwrap();
    let mut broker = Broker::licensed(&mut harness.client, "news.example").await;

    assert_eq!(
        http(addr, "GET", "/articles/missing.html", &[])
            .await
            .status,
        404
    );
    let offer = http(addr, "GET", "/articles/1.html", &[]).await.offer();
    let scrip = broker.mint(10);
    let payment = broker.payment(&scrip, Variant::Clear, &offer.request);
    let paid = http(addr, "GET", "/articles/1.html", &payment_headers(&payment)).await;
    assert_eq!(paid.status, 200);
    assert_eq!(paid.body, b"<p>one</p>");
    assert_eq!(
        paid.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        paid.header(web::CHANGE_HEADER),
        None,
        "scrip worth the price has no change"
    );
    assert_eq!(paid.header(web::REPLY_STAMP_HEADER), None);

    harness.node.shutdown().await.unwrap();
}
