//! `millicent`: a Millicent wallet on the command line.
//!
//! Each subcommand is one wallet operation from `millicent_client`; this
//! file only parses arguments and prints results, as text for people or as
//! JSON with `--json`.

use std::io::{IsTerminal as _, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use millicent_client::protocol::{self, connect_broker, connect_vendor};
use millicent_client::proxy::{ProxyConfig, RunningProxy, outcome_text};
use millicent_client::wallet::{
    Balances, HistoryEntry, HistoryKind, Passphrase, PayOrder, Purchase, ScripTotal, Wallet,
    utc_time,
};
use millicent_client::{ClientError, VendorOfferSummary};
use millicent_core::{Amount, Variant, VendorName};
use millicent_transport::TlsOptions;
use serde_json::json;

const AFTER_HELP: &str = "\
Getting started:
  millicent create
  millicent join --broker http://127.0.0.1:7100
  (the broker's operator funds the account: millicent fund ...)
  millicent buy --amount 1000
  millicent prices --vendor http://127.0.0.1:7200
  millicent pay --vendor http://127.0.0.1:7200 --item article-1
  millicent proxy        (then: curl -x http://127.0.0.1:8480 URL)
  millicent history

Amounts are whole numbers of the deployment's smallest unit. URLs are
http:// (or host:port) or https://; an https:// URL needs --tls-ca, the
authority to trust, and a server that demands a client certificate needs
--tls-cert and --tls-key too.

One command at a time uses a wallet: a second command on the same wallet
waits for the first to finish.";

/// The wallet used when none is named.
const DEFAULT_WALLET: &str = "wallet.json";

/// The largest amount a broker books: its ledger keeps signed 64-bit sums.
const MAX_AMOUNT: u64 = i64::MAX as u64;

/// Pay for things on the network with Millicent scrip.
///
/// A wallet file holds your accounts at brokers, the scrip you have bought
/// and what you did with it. Brokers sell broker scrip from your account;
/// the wallet exchanges it for a vendor's scrip when you first pay that
/// vendor, and keeps the change for next time.
#[derive(Debug, Parser)]
#[command(name = "millicent", version, after_help = AFTER_HELP)]
struct Cli {
    /// The wallet file, for the commands that use one [default: wallet.json].
    /// It holds secrets: keep it private and back it up.
    #[arg(long, env = "MILLICENT_WALLET", value_name = "PATH")]
    wallet: Option<PathBuf>,

    /// Print results as JSON, for scripts; an error is printed as
    /// {"error": ..., "reason": ...} on standard output.
    #[arg(long, global = true)]
    json: bool,

    /// Read the passphrase of a protected wallet from this file (its first
    /// line). Otherwise it is taken from MILLICENT_PASSPHRASE, or asked for
    /// in the terminal.
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,

    #[command(flatten)]
    tls: TlsOptions,

    #[command(subcommand)]
    command: Command,
}

/// The `--wallet` option of the commands that use a wallet. It may also be
/// given before the command; given here, it wins.
#[derive(Debug, Args)]
struct WalletArg {
    /// The wallet file to use, named here or before the command [default:
    /// $MILLICENT_WALLET, or wallet.json]. It holds secrets: keep it private
    /// and back it up.
    #[arg(long = "wallet", value_name = "PATH")]
    path: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new, empty wallet file.
    ///
    /// Refuses to overwrite an existing file. The file is readable by you
    /// only.
    Create {
        /// Protect the file with a passphrase (asked for in the terminal,
        /// or taken from MILLICENT_PASSPHRASE or --passphrase-file). It is
        /// then needed by every command; it cannot be recovered if lost.
        #[arg(long)]
        protect: bool,
        #[command(flatten)]
        wallet: WalletArg,
    },

    /// Open an account at a broker and keep its key in the wallet.
    ///
    /// Prints the account ID: give it to the broker's operator to fund the
    /// account. Joining a broker the wallet already knows only refreshes
    /// its address and the list of vendors it serves.
    Join {
        /// The broker's URL, for example http://127.0.0.1:7100.
        #[arg(long, value_name = "URL")]
        broker: String,
        #[command(flatten)]
        wallet: WalletArg,
    },

    /// Operator only: fund a customer's account at a broker.
    ///
    /// Stands in for a real payment into the account (a card or bank
    /// transfer). Needs the broker's operator token, not a wallet.
    /// Repeating a reference credits nothing more, so it can be retried
    /// safely. `credit` is another name for it.
    #[command(visible_alias = "credit")]
    Fund {
        /// The broker's URL.
        #[arg(long, value_name = "URL")]
        broker: String,
        /// The account to credit.
        #[arg(long, value_name = "ID")]
        account: u64,
        /// How much to credit.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_AMOUNT))]
        amount: u64,
        /// Your reference for the payment, unique per account.
        #[arg(long, value_name = "REF")]
        reference: String,
        /// The broker's operator token.
        #[arg(
            long,
            env = "MILLICENT_OPERATOR_TOKEN",
            hide_env_values = true,
            value_name = "TOKEN"
        )]
        operator_token: String,
    },

    /// Buy broker scrip from your account's balance.
    ///
    /// The scrip is kept in the wallet until a payment needs it.
    Buy {
        /// How much broker scrip to buy.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_AMOUNT))]
        amount: u64,
        /// The broker to buy from, by name; by default the first one joined.
        #[arg(long, value_name = "NAME")]
        broker: Option<String>,
        #[command(flatten)]
        wallet: WalletArg,
    },

    /// Turn unspent broker scrip back into account balance.
    ///
    /// Refunds every piece of spendable broker scrip held for the broker,
    /// each credited in full to the wallet's account there. Vendor scrip is
    /// not refunded: spend it, or let it expire.
    Refund {
        /// The broker, by name; by default every broker joined.
        #[arg(long, value_name = "NAME")]
        broker: Option<String>,
        #[command(flatten)]
        wallet: WalletArg,
    },

    /// Pay for an item at a vendor node and print what it sells you.
    ///
    /// Uses vendor scrip held for the vendor if any covers the price;
    /// otherwise exchanges broker scrip for vendor scrip first. Prints the
    /// goods, then the price and the change kept.
    ///
    /// Scrip the vendor node refuses stays in the wallet, unless the node
    /// says it was spent already or this computer's clock says it has
    /// expired: a node may refuse genuine scrip that another node issued.
    Pay {
        /// The vendor node's URL, for example http://127.0.0.1:7200.
        #[arg(long, value_name = "URL")]
        vendor: String,
        /// The item to buy, as listed by `millicent prices`.
        #[arg(long, value_name = "NAME")]
        item: String,
        /// How to protect the payment: clear (no stamps, for the smallest
        /// prices), secure (stamped) or private (stamped and encrypted).
        /// By default secure, if the vendor accepts it.
        #[arg(long, value_enum)]
        variant: Option<VariantArg>,
        /// When no vendor scrip held covers the price and an exchange is
        /// needed, get this much vendor scrip (or the price, if more), so
        /// that the next payments to this vendor need none. With less broker
        /// scrip than that, the exchange gets what the scrip allows.
        /// [default: the wallet's setting, see `millicent limits`]
        #[arg(long, value_name = "N")]
        top_up: Option<u64>,
        /// The vendor to pay, when the node serves several selling the item.
        #[arg(long, value_name = "NAME")]
        vendor_name: Option<String>,
        #[command(flatten)]
        wallet: WalletArg,
    },

    /// List the vendors a vendor node serves, their items and prices.
    Prices {
        /// The vendor node's URL.
        #[arg(long, value_name = "URL")]
        vendor: String,
    },

    /// Show account balances at brokers and the scrip held.
    ///
    /// Account balances are asked of each broker; scrip is counted from the
    /// wallet.
    Balance {
        #[command(flatten)]
        wallet: WalletArg,
    },

    /// Show everything done with the wallet, oldest first.
    ///
    /// Each line has the time, what was done, the broker or vendor, the
    /// item (for a web page, its method, host and path), the price, the
    /// change and how it ended. `--format csv` or `--format json` exports
    /// it, for example `millicent history --format csv > history.csv`.
    History {
        /// text (for people), csv or json [default: text, or json with --json]
        #[arg(long, value_enum)]
        format: Option<HistoryFormat>,
        /// Only the last N entries.
        #[arg(long, value_name = "N")]
        last: Option<usize>,
        #[command(flatten)]
        wallet: WalletArg,
    },

    /// Show or change the spending limits and the top-up amount.
    ///
    /// Limits count what is paid to vendors (not what is exchanged for
    /// vendor scrip), over the 24 hours before each payment. A payment over
    /// a limit is refused before anything is spent, by `pay` and by the
    /// proxy. Give `off` instead of a number to remove a limit. Without
    /// options, prints the settings.
    Limits {
        /// The largest price of one payment.
        #[arg(long, value_name = "N|off")]
        max_price: Option<LimitArg>,
        /// The most paid to all vendors together in a day.
        #[arg(long, value_name = "N|off")]
        daily: Option<LimitArg>,
        /// The most paid to any one vendor in a day.
        #[arg(long, value_name = "N|off")]
        per_vendor: Option<LimitArg>,
        /// A daily limit for one vendor, replacing --per-vendor for it:
        /// VENDOR=N, or VENDOR=off to remove it. May be repeated.
        #[arg(long, value_name = "VENDOR=N|off")]
        vendor_limit: Vec<String>,
        /// How much vendor scrip an exchange asks for when a payment needs
        /// one.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_AMOUNT))]
        top_up: Option<u64>,
        #[command(flatten)]
        wallet: WalletArg,
    },

    /// Protect the wallet file with a new passphrase, or remove it.
    ///
    /// The new passphrase is asked for twice in the terminal (or taken from
    /// MILLICENT_NEW_PASSPHRASE); the current one, if the file has one, as
    /// for any command.
    Passphrase {
        /// Remove the protection instead: the file is then kept in the
        /// clear, readable by its owner only.
        #[arg(long)]
        remove: bool,
        #[command(flatten)]
        wallet: WalletArg,
    },

    /// Run a local HTTP proxy that pays for priced web pages.
    ///
    /// Point an HTTP client at it (curl -x http://127.0.0.1:8480 URL). When
    /// a server answers 402 Payment Required with a Millicent offer within
    /// your limits, from a vendor a broker you joined sells, the proxy pays
    /// from the wallet, fetches the page again and logs the purchase in the
    /// history. Other offers are refused with a 402 saying why; nothing is
    /// spent. HTTPS (CONNECT) is passed through unpaid: the proxy cannot
    /// see inside it. Open http://127.0.0.1:8480/ for the wallet page.
    /// Runs until Ctrl-C.
    Proxy {
        /// Where to listen. Anyone who can reach the address spends from
        /// the wallet: keep it on loopback.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8480")]
        listen: SocketAddr,
        /// Vendor scrip per exchange [default: the wallet's setting].
        #[arg(long, value_name = "N")]
        top_up: Option<u64>,
        #[command(flatten)]
        wallet: WalletArg,
    },

    /// Finish calls whose answer was lost to a crash or a network failure.
    ///
    /// Repeats each such call exactly as it was made; brokers and vendors
    /// recognise a repeat and answer it without charging twice.
    Recover {
        #[command(flatten)]
        wallet: WalletArg,
    },
}

/// The formats of `history`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum HistoryFormat {
    Text,
    Csv,
    Json,
}

/// A limit on the command line: a number, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LimitArg(Option<Amount>);

impl std::str::FromStr for LimitArg {
    type Err = String;

    fn from_str(text: &str) -> Result<LimitArg, String> {
        if text == "off" {
            return Ok(LimitArg(None));
        }
        text.parse::<u64>()
            .map(|units| LimitArg(Some(Amount::new(units))))
            .map_err(|_| format!("{text:?} is neither a whole number nor `off`"))
    }
}

/// The payment variants, as named on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum VariantArg {
    Clear,
    Secure,
    Private,
}

impl From<VariantArg> for Variant {
    fn from(arg: VariantArg) -> Variant {
        match arg {
            VariantArg::Clear => Variant::Clear,
            VariantArg::Secure => Variant::Secure,
            VariantArg::Private => Variant::Private,
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output { json: cli.json };
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            out.error(&error);
            ExitCode::FAILURE
        }
    }
}

/// The wallet a command uses: its own `--wallet`, else the one given before
/// the command (or in `MILLICENT_WALLET`), else the default.
fn wallet_path(before: Option<&Path>, arg: WalletArg) -> PathBuf {
    arg.path
        .or_else(|| before.map(Path::to_owned))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_WALLET))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output { json: cli.json };
    cli.tls.install()?;
    let keys = Keys::new(cli.passphrase_file.clone());
    let before = cli.wallet.as_deref();
    match cli.command {
        Command::Create { protect, wallet } => {
            let path = wallet_path(before, wallet);
            let passphrase = if protect {
                Some(keys.new_passphrase(&path, Keys::CURRENT_ENV)?)
            } else {
                None
            };
            let wallet = Wallet::create_with(path, passphrase.as_deref())?;
            let protected = if wallet.is_protected() {
                ", protected by a passphrase"
            } else {
                ""
            };
            out.print(
                json!({ "wallet": wallet.path(), "protected": wallet.is_protected() }),
                format!("created wallet {}{protected}", wallet.path().display()),
            )
        }
        Command::Join { broker, wallet } => {
            let mut wallet = keys.open(&wallet_path(before, wallet))?;
            let joined = wallet.join_broker(&broker).await?;
            let text = if joined.new_account {
                format!(
                    "joined broker {}: account {}",
                    joined.broker, joined.account_id
                )
            } else {
                format!(
                    "already a customer of broker {}: account {}; its vendor list is refreshed",
                    joined.broker, joined.account_id
                )
            };
            out.print(
                json!({
                    "broker": joined.broker.as_str(),
                    "account_id": joined.account_id,
                    "new_account": joined.new_account,
                }),
                text,
            )
        }
        Command::Fund {
            broker,
            account,
            amount,
            reference,
            operator_token,
        } => {
            let mut client = connect_broker(&broker).await?;
            let credited = protocol::credit(
                &mut client,
                &operator_token,
                account,
                Amount::new(amount),
                &reference,
            )
            .await?;
            let balance = credited.balance;
            let text = if credited.repeated {
                format!(
                    "reference {reference:?} was credited already: nothing more credited; \
                     account {account}'s balance after that credit was {balance}"
                )
            } else {
                format!("credited account {account}: balance {balance}")
            };
            out.print(
                json!({
                    "account_id": account,
                    "balance": balance.units(),
                    "repeated": credited.repeated,
                }),
                text,
            )
        }
        Command::Buy {
            amount,
            broker,
            wallet,
        } => {
            let mut wallet = keys.open(&wallet_path(before, wallet))?;
            settle_first(out, &mut wallet).await;
            let bought = wallet.buy(broker.as_deref(), Amount::new(amount)).await?;
            remind(&wallet);
            out.print(
                json!({
                    "broker": bought.broker.as_str(),
                    "value": bought.value.units(),
                    "balance": bought.balance.units(),
                }),
                format!(
                    "bought {} of broker scrip from {}; account balance {}",
                    bought.value, bought.broker, bought.balance
                ),
            )
        }
        Command::Refund { broker, wallet } => {
            let mut wallet = keys.open(&wallet_path(before, wallet))?;
            settle_first(out, &mut wallet).await;
            let names: Vec<String> = match broker {
                Some(name) => vec![name],
                None => wallet
                    .brokers()
                    .iter()
                    .map(|b| b.name.to_string())
                    .collect(),
            };
            if names.is_empty() {
                anyhow::bail!("the wallet has joined no broker; join one with `millicent join`");
            }
            let mut refunds = Vec::with_capacity(names.len());
            for name in &names {
                refunds.push(wallet.refund(name).await?);
            }
            remind(&wallet);
            let lines: Vec<String> = refunds
                .iter()
                .map(|refund| match refund.balance {
                    Some(balance) => format!(
                        "refunded {} piece(s) of broker scrip worth {} at {}; account balance {balance}",
                        refund.pieces, refund.credited, refund.broker
                    ),
                    None => format!("no spendable broker scrip of {} to refund", refund.broker),
                })
                .collect();
            out.print(
                json!(
                    refunds
                        .iter()
                        .map(|refund| json!({
                            "broker": refund.broker.as_str(),
                            "pieces": refund.pieces,
                            "credited": refund.credited.units(),
                            "balance": refund.balance.map(Amount::units),
                        }))
                        .collect::<Vec<_>>()
                ),
                lines.join("\n"),
            )
        }
        Command::Pay {
            vendor,
            item,
            variant,
            top_up,
            vendor_name,
            wallet,
        } => {
            let vendor_name = vendor_name
                .map(|name| {
                    VendorName::new(&name)
                        .with_context(|| format!("--vendor-name {name:?} is not a vendor name"))
                })
                .transpose()?;
            let order = PayOrder {
                vendor_url: vendor,
                vendor: vendor_name,
                item,
                variant: variant.map(Variant::from),
                top_up: top_up.map(Amount::new),
            };
            let mut wallet = keys.open(&wallet_path(before, wallet))?;
            settle_first(out, &mut wallet).await;
            out.progress(&format!(
                "paying for {} at {}...",
                order.item, order.vendor_url
            ));
            let purchase = wallet.pay(&order).await?;
            remind(&wallet);
            print_purchase(out, &purchase)
        }
        Command::Prices { vendor } => {
            let mut client = connect_vendor(&vendor).await?;
            let offers = protocol::prices(&mut client).await?;
            print_prices(out, &offers)
        }
        Command::Balance { wallet } => {
            let mut wallet = keys.open(&wallet_path(before, wallet))?;
            settle_first(out, &mut wallet).await;
            out.progress(&format!(
                "asking {} broker(s) for account balances...",
                wallet.brokers().len()
            ));
            let balances = wallet.balances().await?;
            remind(&wallet);
            print_balances(out, &balances)
        }
        Command::History {
            format,
            last,
            wallet,
        } => {
            let wallet = keys.open(&wallet_path(before, wallet))?;
            let history = wallet.history();
            let entries = &history[history.len().saturating_sub(last.unwrap_or(usize::MAX))..];
            let format = format.unwrap_or(if out.json {
                HistoryFormat::Json
            } else {
                HistoryFormat::Text
            });
            let text = match format {
                HistoryFormat::Json => serde_json::to_string(entries)?,
                HistoryFormat::Csv => history_csv(entries),
                HistoryFormat::Text if entries.is_empty() => "no history yet".to_owned(),
                HistoryFormat::Text => {
                    let lines: Vec<String> = entries.iter().map(history_line).collect();
                    lines.join("\n")
                }
            };
            let mut stdout = std::io::stdout().lock();
            write!(stdout, "{text}")?;
            if !text.ends_with('\n') {
                writeln!(stdout)?;
            }
            Ok(())
        }
        Command::Limits {
            max_price,
            daily,
            per_vendor,
            vendor_limit,
            top_up,
            wallet,
        } => {
            let mut wallet = keys.open(&wallet_path(before, wallet))?;
            let mut settings = wallet.settings().clone();
            let changed = max_price.is_some()
                || daily.is_some()
                || per_vendor.is_some()
                || top_up.is_some()
                || !vendor_limit.is_empty();
            if let Some(LimitArg(limit)) = max_price {
                settings.max_price = limit;
            }
            if let Some(LimitArg(limit)) = daily {
                settings.daily_limit = limit;
            }
            if let Some(LimitArg(limit)) = per_vendor {
                settings.vendor_daily_limit = limit;
            }
            if let Some(top_up) = top_up {
                settings.top_up = Amount::new(top_up);
            }
            for assignment in &vendor_limit {
                let (vendor, limit) = assignment.split_once('=').with_context(|| {
                    format!("--vendor-limit {assignment:?} is not VENDOR=N or VENDOR=off")
                })?;
                VendorName::new(vendor)
                    .with_context(|| format!("--vendor-limit: {vendor:?} is not a vendor name"))?;
                match limit.parse::<LimitArg>().map_err(anyhow::Error::msg)? {
                    LimitArg(Some(limit)) => settings
                        .vendor_limits
                        .insert(vendor.to_owned(), limit.units()),
                    LimitArg(None) => settings.vendor_limits.remove(vendor),
                };
            }
            if changed {
                wallet.set_settings(settings)?;
            }
            print_settings(out, &wallet)
        }
        Command::Passphrase { remove, wallet } => {
            let mut wallet = keys.open(&wallet_path(before, wallet))?;
            if remove {
                wallet.set_passphrase(None)?;
                return out.print(
                    json!({ "wallet": wallet.path(), "protected": false }),
                    format!(
                        "wallet {} is no longer protected by a passphrase; it stays readable \
                         by you only",
                        wallet.path().display()
                    ),
                );
            }
            let passphrase = keys.new_passphrase(wallet.path(), Keys::NEW_ENV)?;
            wallet.set_passphrase(Some(&passphrase))?;
            out.print(
                json!({ "wallet": wallet.path(), "protected": true }),
                format!(
                    "wallet {} is protected by the new passphrase",
                    wallet.path().display()
                ),
            )
        }
        Command::Proxy {
            listen,
            top_up,
            wallet,
        } => {
            let path = wallet_path(before, wallet);
            let mut opened = keys.open(&path)?;
            settle_first(out, &mut opened).await;
            let protected = opened.is_protected();
            drop(opened);
            let config = ProxyConfig {
                listen,
                wallet: path.clone(),
                passphrase: if protected { keys.current()? } else { None },
                top_up: top_up.map(Amount::new),
            };
            let proxy = RunningProxy::start(config).await?;
            let addr = proxy.addr();
            out.print(
                json!({ "proxy": addr.to_string(), "wallet": path }),
                format!(
                    "paying proxy on http://{addr} for wallet {}\n\
                     fetch through it with: curl -x http://{addr} URL\n\
                     wallet page: http://{addr}/\n\
                     stop it with Ctrl-C",
                    path.display()
                ),
            )?;
            tokio::signal::ctrl_c()
                .await
                .context("cannot wait for Ctrl-C")?;
            proxy.shutdown().await;
            Ok(())
        }
        Command::Recover { wallet } => {
            let mut wallet = keys.open(&wallet_path(before, wallet))?;
            if !wallet.has_unsettled_calls() {
                return out.print(
                    json!({ "settled": [], "unsettled": [] }),
                    "nothing to recover".to_owned(),
                );
            }
            let recovery = wallet.recover().await?;
            let mut lines: Vec<String> = recovery
                .settled
                .iter()
                .map(|settled| {
                    let mut line = history_line(&settled.entry);
                    if let Some(goods) = &settled.goods {
                        line.push('\n');
                        line.push_str(&String::from_utf8_lossy(goods));
                    }
                    line
                })
                .collect();
            let unsettled: Vec<String> = recovery.unsettled.iter().map(|e| e.to_string()).collect();
            lines.extend(unsettled.iter().map(|e| format!("still unsettled: {e}")));
            out.print(
                json!({
                    "settled": recovery.settled.iter().map(|s| json!({
                        "entry": s.entry,
                        "goods": s.goods.as_ref().map(|g| String::from_utf8_lossy(g).into_owned()),
                    })).collect::<Vec<_>>(),
                    "unsettled": unsettled,
                }),
                lines.join("\n"),
            )?;
            if !recovery.unsettled.is_empty() {
                anyhow::bail!(
                    "{} call(s) are still unsettled; run `millicent recover` again later",
                    recovery.unsettled.len()
                );
            }
            Ok(())
        }
    }
}

/// Finishes the calls whose answers a crash or a network failure lost
/// before a command spends, saying on standard error what became of them.
/// A call that still gets no answer stays recorded; the command goes on.
async fn settle_first(out: Output, wallet: &mut Wallet) {
    if !wallet.has_unsettled_calls() {
        return;
    }
    out.progress("finishing calls whose answers were lost...");
    match wallet.recover().await {
        Ok(recovery) => {
            for settled in &recovery.settled {
                eprintln!("finished: {}", history_line(&settled.entry));
            }
            for error in &recovery.unsettled {
                eprintln!("still unsettled: {error}");
            }
        }
        Err(error) => eprintln!("could not finish the calls whose answers were lost: {error}"),
    }
}

/// Where the passphrase of a protected wallet comes from, and the one
/// given or typed, once known.
struct Keys {
    file: Option<PathBuf>,
    known: std::cell::RefCell<Option<Arc<Passphrase>>>,
}

impl Keys {
    /// The variable holding the passphrase of the wallet used.
    const CURRENT_ENV: &'static str = "MILLICENT_PASSPHRASE";
    /// The variable holding a new passphrase, for `millicent passphrase`.
    const NEW_ENV: &'static str = "MILLICENT_NEW_PASSPHRASE";

    fn new(file: Option<PathBuf>) -> Keys {
        Keys {
            file,
            known: std::cell::RefCell::new(None),
        }
    }

    /// The passphrase typed before, or given by file or environment, if any.
    fn current(&self) -> anyhow::Result<Option<Arc<Passphrase>>> {
        if let Some(known) = self.known.borrow().as_ref() {
            return Ok(Some(known.clone()));
        }
        if let Some(file) = &self.file {
            check_passphrase_file(file)?;
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read --passphrase-file {}", file.display()))?;
            let line = text.lines().next().unwrap_or("").to_owned();
            return Ok(Some(Arc::new(Passphrase::new(line))));
        }
        Ok(std::env::var(Keys::CURRENT_ENV)
            .ok()
            .filter(|text| !text.is_empty())
            .map(|text| Arc::new(Passphrase::new(text))))
    }

    /// Opens the wallet at `path`, waiting (and saying so) while another
    /// command holds it, and asking for its passphrase in the terminal if
    /// it is protected and none was given.
    fn open(&self, path: &Path) -> anyhow::Result<Wallet> {
        let given = self.current()?;
        match open_waiting(path, given.as_deref()) {
            Err(ClientError::PassphraseNeeded { .. }) if std::io::stdin().is_terminal() => {
                let text = rpassword::prompt_password(format!(
                    "passphrase of wallet {}: ",
                    path.display()
                ))
                .context("cannot read the passphrase")?;
                let typed = Arc::new(Passphrase::new(text));
                let wallet = open_waiting(path, Some(&typed))?;
                *self.known.borrow_mut() = Some(typed);
                Ok(wallet)
            }
            other => Ok(other?),
        }
    }

    /// A new passphrase: from `variable` or the passphrase file if set,
    /// else asked twice in the terminal.
    fn new_passphrase(&self, path: &Path, variable: &str) -> anyhow::Result<Arc<Passphrase>> {
        let given = match variable {
            Keys::CURRENT_ENV => self.current()?,
            _ => std::env::var(variable)
                .ok()
                .filter(|text| !text.is_empty())
                .map(|text| Arc::new(Passphrase::new(text))),
        };
        if let Some(passphrase) = given {
            return Ok(passphrase);
        }
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "a new passphrase for {} is needed: set {variable} or run the command in a \
                 terminal",
                path.display()
            );
        }
        let first = rpassword::prompt_password(format!("new passphrase for {}: ", path.display()))
            .context("cannot read the passphrase")?;
        let second =
            rpassword::prompt_password("the same again: ").context("cannot read the passphrase")?;
        if first != second {
            anyhow::bail!("the two passphrases differ; nothing was changed");
        }
        if first.is_empty() {
            anyhow::bail!("an empty passphrase protects nothing; nothing was changed");
        }
        Ok(Arc::new(Passphrase::new(first)))
    }
}

/// Opens the wallet at `path`, waiting (and saying so) while another
/// command holds it.
fn open_waiting(path: &Path, passphrase: Option<&Passphrase>) -> Result<Wallet, ClientError> {
    match Wallet::try_open_with(path, passphrase) {
        Err(ClientError::WalletBusy { .. }) => {
            eprintln!(
                "waiting for another millicent command using {} to finish...",
                path.display()
            );
            Wallet::open_with(path, passphrase)
        }
        other => other,
    }
}

/// Tells the user on standard error about calls whose answer is still
/// awaited, which the next command (or `millicent recover`) finishes.
fn remind(wallet: &Wallet) {
    if wallet.has_unsettled_calls() {
        eprintln!(
            "note: the wallet holds calls whose answer was lost; the next command, or \
             `millicent recover`, sends them again"
        );
    }
}

/// Where results go: text or JSON on standard output.
#[derive(Clone, Copy)]
struct Output {
    json: bool,
}

impl Output {
    /// Says what a command is doing, on standard error, when a person is
    /// watching: not with --json, and not when standard error is a file.
    fn progress(self, step: &str) {
        if !self.json && std::io::stderr().is_terminal() {
            eprintln!("{step}");
        }
    }

    fn print(self, json: serde_json::Value, text: String) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        if self.json {
            writeln!(stdout, "{json}")?;
        } else {
            writeln!(stdout, "{text}")?;
        }
        Ok(())
    }

    /// Reports a failed command: on standard error for people, or as JSON
    /// on standard output with the server's reason, if it gave one.
    fn error(self, error: &anyhow::Error) {
        let text = format!("{error:#}");
        if self.json {
            let reason = error
                .chain()
                .find_map(|cause| cause.downcast_ref::<ClientError>())
                .and_then(ClientError::reason);
            let json = json!({ "error": text, "reason": reason });
            // Nothing is left to report a failed write to.
            let _ = writeln!(std::io::stdout().lock(), "{json}");
        } else {
            eprintln!("error: {text}");
        }
    }
}

fn print_purchase(out: Output, purchase: &Purchase) -> anyhow::Result<()> {
    let goods = String::from_utf8_lossy(&purchase.goods);
    let mut text = goods.trim_end_matches('\n').to_owned();
    text.push('\n');
    if let Some(exchange) = &purchase.exchange {
        text.push_str(&format!(
            "exchanged broker scrip at {} for {} of {} scrip, costing {}\n",
            exchange.broker, exchange.value, purchase.vendor, exchange.price
        ));
    }
    text.push_str(&format!(
        "paid {} to {} for {} ({}); change {}",
        purchase.price,
        purchase.vendor,
        purchase.item,
        purchase.variant.name(),
        purchase.change
    ));
    out.print(
        json!({
            "vendor": purchase.vendor.as_str(),
            "item": purchase.item,
            "variant": purchase.variant.name(),
            "goods": goods,
            "price": purchase.price.units(),
            "change": purchase.change.units(),
            "exchange": purchase.exchange.as_ref().map(|e| json!({
                "broker": e.broker.as_str(),
                "value": e.value.units(),
                "price": e.price.units(),
            })),
        }),
        text,
    )
}

fn print_prices(out: Output, offers: &[VendorOfferSummary]) -> anyhow::Result<()> {
    let names = |list: Vec<&str>| list.join(", ");
    let mut lines = Vec::new();
    for offer in offers {
        lines.push(format!(
            "{} (variants: {}; suites: {})",
            offer.vendor,
            names(offer.variants.iter().map(|v| v.name()).collect()),
            names(offer.suites.iter().map(|s| s.name()).collect()),
        ));
        let width = offer.items.iter().map(|i| i.name.len()).max().unwrap_or(0);
        for item in &offer.items {
            lines.push(format!("  {:width$}  {}", item.name, item.price));
        }
    }
    if lines.is_empty() {
        lines.push("this node lists no vendors".to_owned());
    }
    let json = offers
        .iter()
        .map(|offer| {
            json!({
                "vendor": offer.vendor.as_str(),
                "items": offer.items.iter().map(|i| json!({
                    "name": i.name, "price": i.price.units()
                })).collect::<Vec<_>>(),
                "variants": offer.variants.iter().map(|v| v.name()).collect::<Vec<_>>(),
                "suites": offer.suites.iter().map(|s| s.name()).collect::<Vec<_>>(),
            })
        })
        .collect::<Vec<_>>();
    out.print(json!(json), lines.join("\n"))
}

fn print_balances(out: Output, balances: &Balances) -> anyhow::Result<()> {
    let total_json = |total: &ScripTotal| {
        json!({
            "value": total.value.units(),
            "pieces": total.pieces,
            "in_flight": total.in_flight.units(),
            "expired": total.expired.units(),
        })
    };
    let total_text = |total: &ScripTotal| {
        let mut text = format!(
            "{} in {} piece{}",
            total.value,
            total.pieces,
            if total.pieces == 1 { "" } else { "s" }
        );
        if !total.expired.is_zero() {
            text.push_str(&format!(", and {} expired", total.expired));
        }
        if !total.in_flight.is_zero() {
            text.push_str(&format!(
                ", and {} in unsettled calls (run `millicent recover`)",
                total.in_flight
            ));
        }
        text
    };

    let mut lines = Vec::new();
    for broker in &balances.brokers {
        let account = match &broker.account {
            Ok(balance) => format!("account balance {balance}"),
            Err(error) => format!("account balance unknown ({error})"),
        };
        lines.push(format!(
            "broker {} (account {}): {account}; broker scrip {}",
            broker.broker,
            broker.account_id,
            total_text(&broker.scrip)
        ));
    }
    for vendor in &balances.vendors {
        lines.push(format!(
            "vendor {}: scrip {}",
            vendor.vendor,
            total_text(&vendor.scrip)
        ));
    }
    if lines.is_empty() {
        lines.push("the wallet has joined no broker and holds no scrip".to_owned());
    }

    let json = json!({
        "brokers": balances.brokers.iter().map(|b| json!({
            "broker": b.broker.as_str(),
            "account_id": b.account_id,
            "balance": b.account.as_ref().ok().map(|a| a.units()),
            "balance_error": b.account.as_ref().err().map(|e| e.to_string()),
            "scrip": total_json(&b.scrip),
        })).collect::<Vec<_>>(),
        "vendors": balances.vendors.iter().map(|v| json!({
            "vendor": v.vendor.as_str(),
            "scrip": total_json(&v.scrip),
        })).collect::<Vec<_>>(),
    });
    out.print(json, lines.join("\n"))
}

fn kind_name(kind: HistoryKind) -> &'static str {
    match kind {
        HistoryKind::Buy => "buy",
        HistoryKind::Exchange => "exchange",
        HistoryKind::Pay => "pay",
        HistoryKind::Refund => "refund",
    }
}

fn history_line(entry: &HistoryEntry) -> String {
    let mut line = format!("{}  {:8}", utc_time(entry.time_ms), kind_name(entry.kind));
    let item = entry.item.as_ref().map(|item| {
        if item.contains(' ') {
            format!("{item:?}")
        } else {
            item.clone()
        }
    });
    let fields = [
        ("broker", entry.broker.clone()),
        ("vendor", entry.vendor.clone()),
        ("item", item),
        ("price", entry.price.map(|a| a.to_string())),
        ("change", entry.change.map(|a| a.to_string())),
        ("status", entry.status.map(|s| s.to_string())),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            line.push_str(&format!(" {name}={value}"));
        }
    }
    if entry.outcome != millicent_client::wallet::Outcome::Ok
        && let Some(url) = &entry.url
    {
        line.push_str(&format!(" at={url}"));
    }
    line.push_str(&format!("  {}", outcome_text(&entry.outcome)));
    line
}

/// The history as CSV (RFC 4180), one header line then one line per entry.
fn history_csv(entries: &[HistoryEntry]) -> String {
    let mut csv = String::from("time,kind,broker,vendor,item,url,price,change,status,outcome\r\n");
    for entry in entries {
        let amount = |a: Option<Amount>| a.map_or(String::new(), |a| a.units().to_string());
        let fields = [
            utc_time(entry.time_ms),
            kind_name(entry.kind).to_owned(),
            entry.broker.clone().unwrap_or_default(),
            entry.vendor.clone().unwrap_or_default(),
            entry.item.clone().unwrap_or_default(),
            entry.url.clone().unwrap_or_default(),
            amount(entry.price),
            amount(entry.change),
            entry.status.map(|s| s.to_string()).unwrap_or_default(),
            outcome_text(&entry.outcome),
        ];
        let quoted: Vec<String> = fields.iter().map(|field| csv_field(field)).collect();
        csv.push_str(&quoted.join(","));
        csv.push_str("\r\n");
    }
    csv
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

fn print_settings(out: Output, wallet: &Wallet) -> anyhow::Result<()> {
    let settings = wallet.settings();
    let show = |limit: Option<Amount>| limit.map_or("off".to_owned(), |a| a.to_string());
    let since = protocol::now_ms().saturating_sub(millicent_client::wallet::DAY_MS);
    let paid = wallet.paid_since(None, since);
    let mut lines = vec![
        format!("top-up per exchange: {}", settings.top_up),
        format!("largest payment:     {}", show(settings.max_price)),
        format!(
            "per day:             {} (paid in the last 24 hours: {paid})",
            show(settings.daily_limit)
        ),
        format!("per vendor and day:  {}", show(settings.vendor_daily_limit)),
    ];
    for (vendor, limit) in &settings.vendor_limits {
        lines.push(format!("  {vendor}: {limit} a day"));
    }
    let units = |limit: Option<Amount>| limit.map(Amount::units);
    out.print(
        json!({
            "top_up": settings.top_up.units(),
            "max_price": units(settings.max_price),
            "daily_limit": units(settings.daily_limit),
            "vendor_daily_limit": units(settings.vendor_daily_limit),
            "vendor_limits": settings.vendor_limits,
            "paid_last_24h": paid.units(),
        }),
        lines.join("\n"),
    )
}

/// Refuses a passphrase file that users other than its owner can read or
/// change, as the wallet refuses such a wallet file: the passphrase is
/// the wallet's key.
#[cfg(unix)]
fn check_passphrase_file(file: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let metadata = std::fs::metadata(file)
        .with_context(|| format!("cannot read --passphrase-file {}", file.display()))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "--passphrase-file {} can be read or changed by other users (mode {mode:o}); \
             make it private with `chmod 600 {}`",
            file.display(),
            file.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_passphrase_file(_file: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn utc_times_are_calendar_dates() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc_time(1_800_000_000_999), "2027-01-15T08:00:00Z");
    }

    #[test]
    fn pay_takes_its_options() {
        let cli = Cli::try_parse_from([
            "millicent",
            "--wallet",
            "w.json",
            "pay",
            "--vendor",
            "http://v",
            "--item",
            "a",
            "--variant",
            "private",
            "--top-up",
            "500",
        ])
        .unwrap();
        let Command::Pay {
            variant: Some(VariantArg::Private),
            top_up: Some(500),
            wallet,
            ..
        } = cli.command
        else {
            panic!("{:?}", cli.command);
        };
        assert_eq!(
            wallet_path(cli.wallet.as_deref(), wallet),
            PathBuf::from("w.json")
        );
        assert!(Cli::try_parse_from(["millicent", "buy", "--amount", "0"]).is_err());
    }

    #[test]
    fn the_wallet_is_named_before_or_after_the_command_and_the_later_wins() {
        let path = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let (Command::Balance { wallet } | Command::History { wallet, .. }) = cli.command
            else {
                panic!("{:?}", cli.command);
            };
            wallet_path(cli.wallet.as_deref(), wallet)
        };
        assert_eq!(
            path(&["millicent", "balance"]),
            PathBuf::from(DEFAULT_WALLET)
        );
        assert_eq!(
            path(&["millicent", "--wallet", "a", "history"]),
            PathBuf::from("a")
        );
        assert_eq!(
            path(&["millicent", "history", "--wallet", "b"]),
            PathBuf::from("b")
        );
        assert_eq!(
            path(&["millicent", "--wallet", "a", "balance", "--wallet", "b"]),
            PathBuf::from("b")
        );
    }

    #[test]
    fn commands_without_a_wallet_take_no_wallet_option() {
        for command in ["fund", "prices"] {
            let mut cli = Cli::command();
            let help = cli
                .find_subcommand_mut(command)
                .unwrap()
                .render_long_help()
                .to_string();
            assert!(!help.contains("--wallet"), "{command}: {help}");
        }
        let help = Cli::command()
            .find_subcommand_mut("pay")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("--wallet"), "{help}");
        assert!(
            Cli::try_parse_from(["millicent", "prices", "--vendor", "v", "--wallet", "w.json"])
                .is_err()
        );
    }

    #[test]
    fn help_examples_use_the_default_ports() {
        let mut cli = Cli::command();
        let help = cli.render_long_help().to_string();
        let join = cli
            .find_subcommand_mut("join")
            .unwrap()
            .render_long_help()
            .to_string();
        for text in [&help, &join] {
            assert!(!text.contains(":7001") && !text.contains(":7002"), "{text}");
        }
        assert!(help.contains("127.0.0.1:7100") && help.contains("127.0.0.1:7200"));
        assert!(join.contains("127.0.0.1:7100"), "{join}");
    }
}
