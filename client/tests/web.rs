//! Paying for web pages with real clients: a real upstream HTTP server
//! (Python's `http.server`), the vendor node's 402 gateway in front of it,
//! a broker, the `millicent proxy` binary, curl through the proxy, and
//! headless Chromium on the wallet page. `scripts/test` installs curl and
//! Chromium when they are missing; a test without them fails, it does not
//! skip.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use millicent_broker::RunningBroker;
use millicent_vendor::{GatewaySpec, PriceSpec, RunningVendor, VendorConfig};
use serde_json::Value;
use support::{LICENCE_TOKEN, ok_json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

mod support;

const ARTICLE: &str = "<html><body><h1>Article one</h1><p>Worth a cent.</p></body></html>\n";

/// A real HTTP server serving `dir`, stopped when dropped.
struct Upstream {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python_http_server(dir: &Path) -> Upstream {
    let mut child = Command::new("python3")
        .args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is needed to run the upstream HTTP server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "Serving HTTP on 127.0.0.1 port 43021 (http://127.0.0.1:43021/) ..."
    let port: u16 = line
        .split(" port ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("unexpected http.server output: {line}"));
    Upstream {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

struct Network {
    dir: tempfile::TempDir,
    _upstream: Upstream,
    vendor: RunningVendor,
    broker: RunningBroker,
    gateway: SocketAddr,
}

impl Network {
    fn wallet(&self) -> String {
        self.dir
            .path()
            .join("my.wallet")
            .to_str()
            .unwrap()
            .to_owned()
    }

    fn page(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }

    async fn shutdown(self) {
        self.broker.shutdown().await.unwrap();
        self.vendor.shutdown().await.unwrap();
    }
}

/// The upstream, a vendor node whose gateway sells `/articles/*` for 10 in
/// front of it, and a broker selling the vendor's scrip.
async fn network() -> Network {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("articles")).unwrap();
    std::fs::write(site.join("articles/1.html"), ARTICLE).unwrap();
    std::fs::write(site.join("articles/2.html"), "two").unwrap();
    std::fs::write(site.join("index.html"), "free front page").unwrap();
    let upstream = python_http_server(&site);

    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let vendor = RunningVendor::start(VendorConfig {
        listen: loopback,
        data_dir: dir.path().join("vendor"),
        licence_token: Some(LICENCE_TOKEN.to_owned()),
        gateway: Some(GatewaySpec {
            listen: loopback,
            upstream: Some(format!("http://{}", upstream.addr)),
            hosts: vec!["127.0.0.1".to_owned()],
            prices: vec![PriceSpec {
                path: "/articles/*".to_owned(),
                price: 10,
            }],
            free: vec!["/".to_owned()],
            ..GatewaySpec::default()
        }),
        ..VendorConfig::default()
    })
    .await
    .unwrap();
    let gateway = vendor.gateway_addr().unwrap();
    let broker = support::start_broker(dir.path(), vendor.addr()).await;
    Network {
        dir,
        _upstream: upstream,
        vendor,
        broker,
        gateway,
    }
}

async fn run(program: &str, args: Vec<String>) -> Output {
    let program = program.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .args(&args)
            .env_remove("MILLICENT_WALLET")
            .env_remove("MILLICENT_PASSPHRASE")
            .output()
            .unwrap_or_else(|error| panic!("cannot run {program}: {error}"))
    })
    .await
    .unwrap()
}

/// A wallet that has joined the broker, been funded with 1000 and bought
/// 500 of broker scrip.
async fn funded_wallet(network: &Network) -> String {
    let wallet = network.wallet();
    support::funded_wallet(&format!("http://{}", network.broker.addr()), &wallet).await;
    wallet
}

/// `millicent proxy` on a free loopback port, killed when dropped.
struct Proxy {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_proxy(wallet: &str) -> Proxy {
    let mut child = Command::new(env!("CARGO_BIN_EXE_millicent"))
        .args([
            "--json",
            "--wallet",
            wallet,
            "proxy",
            "--listen",
            "127.0.0.1:0",
        ])
        .env_remove("MILLICENT_PASSPHRASE")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let started: Value =
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("millicent proxy printed {line:?}"));
    let addr = started["proxy"].as_str().unwrap().parse().unwrap();
    Proxy { child, addr }
}

/// What curl got through the proxy: status, headers and body.
struct Fetched {
    status: u16,
    headers: String,
    body: String,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

async fn curl(proxy: SocketAddr, url: &str) -> Fetched {
    curl_with(proxy, url, &[]).await
}

async fn curl_with(proxy: SocketAddr, url: &str, options: &[&str]) -> Fetched {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let mut args: Vec<String> = options.iter().map(|option| option.to_string()).collect();
    let output = run("curl", {
        args.extend([
            "--silent".into(),
            "--show-error".into(),
            "--max-time".into(),
            "60".into(),
            "--proxy".into(),
            format!("http://{proxy}"),
            "--dump-header".into(),
            headers.to_str().unwrap().into(),
            url.into(),
        ]);
        args
    })
    .await;
    assert!(
        output.status.success(),
        "curl {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // After a CONNECT, curl writes the proxy's answer first: keep the last.
    let all = std::fs::read_to_string(&headers).unwrap();
    let headers = all
        .split("\r\n\r\n")
        .filter(|block| !block.trim().is_empty())
        .last()
        .unwrap_or_default()
        .to_owned();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {headers}"));
    Fetched {
        status,
        headers,
        body: String::from_utf8_lossy(&output.stdout).into_owned(),
    }
}

fn pays(history: &Value) -> Vec<Value> {
    history
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["kind"] == "pay")
        .cloned()
        .collect()
}

/// A server whose every answer is `402` with the body `offer` makes from
/// the server's own address.
async fn rogue_server(offer: impl Fn(SocketAddr) -> String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let offer = offer(addr);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let offer = offer.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let reply = format!(
                    "HTTP/1.1 402 Payment Required\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{offer}",
                    offer.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

fn offer_json(vendor: &str, request: &str) -> String {
    serde_json::json!({
        "millicent": 1,
        "vendor": vendor,
        "price": "10",
        "request": request,
        "variants": ["secure"],
        "suites": ["modern"],
        "brokers": [{ "name": "elsewhere.example", "url": "http://127.0.0.1:1" }],
        "retry_window_secs": 600,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_proxy_buys_a_page_and_bad_offers_spend_nothing() {
    let network = network().await;
    let wallet = funded_wallet(&network).await;
    let proxy = start_proxy(&wallet);

    // A free page passes through unpaid.
    let free = curl(proxy.addr, &network.page("/")).await;
    assert_eq!((free.status, free.body.as_str()), (200, "free front page"));

    // A priced page: the proxy pays 10, exchanging 100 of vendor scrip first.
    let page = curl(proxy.addr, &network.page("/articles/1.html")).await;
    assert_eq!(page.status, 200, "{}{}", page.headers, page.body);
    assert_eq!(page.body, ARTICLE);
    assert_eq!(page.header("millicent-paid").as_deref(), Some("10"));
    assert_eq!(
        page.header("millicent-change"),
        None,
        "the change stays in the wallet"
    );

    let history = ok_json(&["--wallet", &wallet, "history"]).await;
    let paid = pays(&history);
    assert_eq!(paid.len(), 1, "{history}");
    let entry = &paid[0];
    assert_eq!(entry["vendor"], "news.example");
    assert_eq!(
        entry["item"],
        format!("GET {}/articles/1.html", network.gateway)
    );
    assert_eq!(
        (entry["price"].as_u64(), entry["change"].as_u64()),
        (Some(10), Some(90))
    );
    assert_eq!(
        (entry["status"].as_u64(), &entry["outcome"]),
        (Some(200), &Value::from("ok"))
    );

    // The second page is paid from the change, without an exchange.
    let second = curl(proxy.addr, &network.page("/articles/2.html")).await;
    assert_eq!((second.status, second.body.as_str()), (200, "two"));
    let balance = ok_json(&["--wallet", &wallet, "balance"]).await;
    assert_eq!(balance["vendors"][0]["scrip"]["value"], 80, "{balance}");
    assert_eq!(balance["brokers"][0]["scrip"]["value"], 400, "{balance}");

    // Over the per-payment limit: refused, nothing spent.
    ok_json(&["--wallet", &wallet, "limits", "--max-price", "5"]).await;
    let refused = curl(proxy.addr, &network.page("/articles/1.html")).await;
    assert_eq!(refused.status, 402);
    assert_eq!(
        refused.header("millicent-declined").as_deref(),
        Some("over_limit")
    );
    assert!(
        refused.body.contains("per-payment limit of 5"),
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains("nothing was spent"),
        "{}",
        refused.body
    );
    ok_json(&[
        "--wallet",
        &wallet,
        "limits",
        "--max-price",
        "100",
        "--daily",
        "25",
    ])
    .await;
    let refused = curl(proxy.addr, &network.page("/articles/1.html")).await;
    assert_eq!(
        refused.header("millicent-declined").as_deref(),
        Some("over_limit")
    );
    assert!(
        refused.body.contains("daily limit of 25 (20 spent"),
        "{}",
        refused.body
    );
    ok_json(&["--wallet", &wallet, "limits", "--daily", "off"]).await;

    // Malformed offers, offers for another request, vendors no broker sells.
    let malformed =
        rogue_server(|_| r#"{"millicent": 1, "vendor": "Not A Name"}"#.to_owned()).await;
    let fetched = curl(proxy.addr, &format!("http://{malformed}/a")).await;
    assert_eq!(fetched.status, 402);
    assert_eq!(
        fetched.header("millicent-declined").as_deref(),
        Some("bad_offer")
    );
    assert!(
        fetched.body.contains("nothing was spent"),
        "{}",
        fetched.body
    );

    // A site asking to be paid for a page of the real gateway, to relay
    // the payment there: the offer is not for the page asked for.
    let gateway_page = format!("GET {}/articles/1.html", network.gateway);
    let relayed = rogue_server(|_| offer_json("news.example", &gateway_page)).await;
    let fetched = curl(proxy.addr, &format!("http://{relayed}/articles/1.html")).await;
    assert_eq!(
        fetched.header("millicent-declined").as_deref(),
        Some("bad_offer")
    );
    assert!(
        fetched.body.contains("is for the request"),
        "{}",
        fetched.body
    );

    let unserved = rogue_server(|addr| offer_json("other.example", &format!("GET {addr}/x"))).await;
    let fetched = curl(proxy.addr, &format!("http://{unserved}/x")).await;
    assert_eq!(fetched.status, 402);
    assert_eq!(
        fetched.header("millicent-declined").as_deref(),
        Some("vendor_not_served"),
        "{}",
        fetched.body
    );
    assert!(
        fetched
            .body
            .contains("elsewhere.example (http://127.0.0.1:1)"),
        "{}",
        fetched.body
    );

    // Through a CONNECT tunnel the proxy sees nothing and pays nothing: the
    // gateway's 402 reaches the client as it was sent.
    let tunnelled = curl_with(
        proxy.addr,
        &network.page("/articles/1.html"),
        &["--proxytunnel"],
    )
    .await;
    assert_eq!(tunnelled.status, 402, "{}", tunnelled.headers);
    assert!(
        tunnelled.body.contains("\"millicent\":1"),
        "{}",
        tunnelled.body
    );

    // None of the refusals spent anything or was logged as a purchase.
    let balance = ok_json(&["--wallet", &wallet, "balance"]).await;
    assert_eq!(balance["vendors"][0]["scrip"]["value"], 80, "{balance}");
    assert_eq!(balance["brokers"][0]["scrip"]["value"], 400, "{balance}");
    let history = ok_json(&["--wallet", &wallet, "history"]).await;
    assert_eq!(pays(&history).len(), 2, "{history}");

    // The history exports as CSV.
    let output = run(
        env!("CARGO_BIN_EXE_millicent"),
        vec![
            "--wallet".into(),
            wallet.clone(),
            "history".into(),
            "--format".into(),
            "csv".into(),
        ],
    )
    .await;
    let csv = String::from_utf8(output.stdout).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("time,kind,broker,vendor,item,url,price,change,status,outcome")
    );
    let last = lines.last().unwrap();
    assert!(
        last.ends_with(&format!(
            ",pay,,news.example,GET {gw}/articles/2.html,http://{gw}/articles/2.html,10,80,200,ok",
            gw = network.gateway
        )),
        "{csv}"
    );

    // HEAD is paid too: its 402 carries no offer, so the proxy fetches the
    // offer with an unpaid GET and pays for the HEAD.
    ok_json(&["--wallet", &wallet, "limits", "--max-price", "off"]).await;
    let head = curl_with(proxy.addr, &network.page("/articles/1.html"), &["--head"]).await;
    assert_eq!(head.status, 200, "{}", head.headers);
    assert_eq!(head.header("millicent-paid").as_deref(), Some("10"));
    let history = ok_json(&["--wallet", &wallet, "history"]).await;
    let paid = pays(&history);
    assert_eq!(
        paid.last().unwrap()["item"],
        format!("HEAD {}/articles/1.html", network.gateway)
    );
    let balance = ok_json(&["--wallet", &wallet, "balance"]).await;
    assert_eq!(balance["vendors"][0]["scrip"]["value"], 70, "{balance}");

    drop(proxy);
    network.shutdown().await;
}

/// Runs headless Chromium as `scripts/test` expects it on this machine
/// (as root, so without the sandbox) and returns what it printed.
async fn chromium(args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut all: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    .iter()
    .map(|flag| flag.to_string())
    .collect();
    all.push(format!("--user-data-dir={}", profile.path().display()));
    all.extend(args.iter().cloned());
    let output = run("/usr/bin/chromium", all).await;
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_buys_a_page_through_the_proxy_and_the_wallet_page_shows_the_balance() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "headless Chromium is needed: scripts/test installs Debian's chromium package"
    );
    let network = network().await;
    let wallet = funded_wallet(&network).await;
    let proxy = start_proxy(&wallet);

    // A real browser through the proxy (loopback is not bypassed).
    let article = chromium(&[
        format!("--proxy-server=http://{}", proxy.addr),
        "--proxy-bypass-list=<-loopback>".to_owned(),
        "--dump-dom".to_owned(),
        network.page("/articles/1.html"),
    ])
    .await;
    assert!(article.contains("<h1>Article one</h1>"), "{article}");

    // The wallet page: 400 of broker scrip and 90 of vendor scrip.
    let page = chromium(&["--dump-dom".to_owned(), format!("http://{}/", proxy.addr)]).await;
    assert!(
        page.contains("<strong id=\"balance\">490</strong>"),
        "{page}"
    );
    assert!(
        page.contains("<td>news.example</td><td class=\"n\">90</td>"),
        "{page}"
    );
    let item = format!("GET {}/articles/1.html", network.gateway);
    assert!(
        page.contains(&format!("<td>news.example</td><td>{item}</td>")),
        "{page}"
    );
    assert!(page.contains("<td>broker.local</td>"), "{page}");

    drop(proxy);
    network.shutdown().await;
}

/// A TCP relay in front of the gateway. While `hold` is set, the answer to
/// a request carrying a payment is swallowed: the gateway has taken the
/// payment, and the wallet never hears of it.
struct Relay {
    hold: std::sync::atomic::AtomicBool,
    held: std::sync::atomic::AtomicBool,
}

async fn pausing_relay(target: SocketAddr) -> (SocketAddr, std::sync::Arc<Relay>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let relay = Arc::new(Relay {
        hold: AtomicBool::new(true),
        held: AtomicBool::new(false),
    });
    let state = relay.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let server = tokio::net::TcpStream::connect(target).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let paid = Arc::new(AtomicBool::new(false));
            let (state_up, paid_up) = (state.clone(), paid.clone());
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                while let Ok(n) = client_read.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    let chunk = &buffer[..n];
                    if state_up.hold.load(Ordering::SeqCst)
                        && chunk.windows(15).any(|w| w == b"millicent-scrip")
                    {
                        paid_up.store(true, Ordering::SeqCst);
                    }
                    if server_write.write_all(chunk).await.is_err() {
                        break;
                    }
                }
            });
            let state_down = state.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                while let Ok(n) = server_read.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    if paid.load(Ordering::SeqCst) {
                        state_down.held.store(true, Ordering::SeqCst);
                        continue;
                    }
                    if client_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_killed_mid_payment_loses_no_scrip() {
    use std::sync::atomic::Ordering;

    let network = network().await;
    let wallet = funded_wallet(&network).await;
    let (relay_addr, relay) = pausing_relay(network.gateway).await;
    let mut proxy = start_proxy(&wallet);
    let url = format!("http://{relay_addr}/articles/1.html");

    // curl asks; the proxy pays; the gateway takes the payment; its answer
    // is held back, and the proxy is killed while it waits for it.
    let mut fetching = Command::new("curl")
        .args(["--silent", "--max-time", "60", "--proxy"])
        .arg(format!("http://{}", proxy.addr))
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl is needed: scripts/test installs it");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !relay.held.load(Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "the payment never reached the gateway"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let file = std::fs::read_to_string(&wallet).unwrap();
    assert!(
        file.contains("\"kind\": \"web\""),
        "the payment was not journalled: {file}"
    );
    proxy.child.kill().unwrap(); // SIGKILL
    proxy.child.wait().unwrap();
    fetching.wait().unwrap();

    // The next command sends the journalled payment again, identically; the
    // gateway recognises the retry and answers with the change it recorded.
    relay.hold.store(false, Ordering::SeqCst);
    let output = run(
        env!("CARGO_BIN_EXE_millicent"),
        vec![
            "--json".into(),
            "--wallet".into(),
            wallet.clone(),
            "balance".into(),
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("finished:") && stderr.contains("price=10 change=90"),
        "{stderr}"
    );
    let balance: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(balance["vendors"][0]["scrip"]["value"], 90, "{balance}");
    assert_eq!(balance["vendors"][0]["scrip"]["in_flight"], 0, "{balance}");
    assert_eq!(balance["brokers"][0]["scrip"]["value"], 400, "{balance}");
    let history = ok_json(&["--wallet", &wallet, "history"]).await;
    let paid = pays(&history);
    assert_eq!(paid.len(), 1, "{history}");
    assert_eq!(
        (paid[0]["price"].as_u64(), paid[0]["change"].as_u64()),
        (Some(10), Some(90))
    );

    // The change recovered is genuine: the gateway takes it.
    let proxy = start_proxy(&wallet);
    let page = curl(proxy.addr, &url).await;
    assert_eq!(page.status, 200);
    let balance = ok_json(&["--wallet", &wallet, "balance"]).await;
    assert_eq!(balance["vendors"][0]["scrip"]["value"], 80, "{balance}");
    // 500 of broker scrip bought: 400 left, 80 in vendor scrip, 20 paid.
    assert_eq!(balance["brokers"][0]["scrip"]["value"], 400, "{balance}");

    drop(proxy);
    network.shutdown().await;
}
