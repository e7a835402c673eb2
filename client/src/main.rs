//! `millicent`: a Millicent wallet on the command line.
//!
//! Each subcommand is one wallet operation from `millicent_client`; this
//! file only parses arguments and prints results, as text for people or as
//! JSON with `--json`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use millicent_client::protocol::{self, connect_broker, connect_vendor};
use millicent_client::wallet::{
    Balances, HistoryEntry, HistoryKind, Outcome, PayOrder, Purchase, ScripTotal, Wallet,
};
use millicent_client::{ClientError, VendorOfferSummary};
use millicent_core::{Amount, Variant, VendorName};
use serde_json::json;

const AFTER_HELP: &str = "\
Getting started:
  millicent create
  millicent join --broker http://127.0.0.1:7100
  (the broker's operator credits the account: millicent credit ...)
  millicent buy --amount 1000
  millicent prices --vendor http://127.0.0.1:7200
  millicent pay --vendor http://127.0.0.1:7200 --item article-1

Amounts are whole numbers of the deployment's smallest unit. URLs are plain
http:// (or host:port): TLS is not available yet.

One command at a time uses a wallet: a second command on the same wallet
waits for the first to finish.";

/// The wallet used when none is named.
const DEFAULT_WALLET: &str = "wallet.json";

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

    /// Operator only: credit money to a customer's account at a broker.
    ///
    /// Stands in for a real payment into the account. Needs the broker's
    /// operator token, not a wallet. Repeating a reference credits nothing
    /// more, so a credit can be retried safely.
    Credit {
        /// The broker's URL.
        #[arg(long, value_name = "URL")]
        broker: String,
        /// The account to credit.
        #[arg(long, value_name = "ID")]
        account: u64,
        /// How much to credit.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
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
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        amount: u64,
        /// The broker to buy from, by name; by default the first one joined.
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
        #[arg(long, value_name = "N", default_value_t = 100)]
        top_up: u64,
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
    History {
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

/// Opens the wallet at `path`, waiting (and saying so) while another
/// command holds it.
fn open_wallet(path: &Path) -> Result<Wallet, ClientError> {
    match Wallet::try_open(path) {
        Err(ClientError::WalletBusy { .. }) => {
            eprintln!(
                "waiting for another millicent command using {} to finish...",
                path.display()
            );
            Wallet::open(path)
        }
        other => other,
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output { json: cli.json };
    let before = cli.wallet.as_deref();
    match cli.command {
        Command::Create { wallet } => {
            let wallet = Wallet::create(wallet_path(before, wallet))?;
            out.print(
                json!({ "wallet": wallet.path() }),
                format!("created wallet {}", wallet.path().display()),
            )
        }
        Command::Join { broker, wallet } => {
            let mut wallet = open_wallet(&wallet_path(before, wallet))?;
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
        Command::Credit {
            broker,
            account,
            amount,
            reference,
            operator_token,
        } => {
            let mut client = connect_broker(&broker).await?;
            let balance = protocol::credit(
                &mut client,
                &operator_token,
                account,
                Amount::new(amount),
                &reference,
            )
            .await?;
            out.print(
                json!({ "account_id": account, "balance": balance.units() }),
                format!("credited account {account}: balance {balance}"),
            )
        }
        Command::Buy {
            amount,
            broker,
            wallet,
        } => {
            let mut wallet = open_wallet(&wallet_path(before, wallet))?;
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
                top_up: Amount::new(top_up),
            };
            let mut wallet = open_wallet(&wallet_path(before, wallet))?;
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
            let wallet = open_wallet(&wallet_path(before, wallet))?;
            let balances = wallet.balances().await?;
            remind(&wallet);
            print_balances(out, &balances)
        }
        Command::History { wallet } => {
            let wallet = open_wallet(&wallet_path(before, wallet))?;
            if out.json {
                return out.print(json!(wallet.history()), String::new());
            }
            if wallet.history().is_empty() {
                return out.print(json!([]), "no history yet".to_owned());
            }
            let lines: Vec<String> = wallet.history().iter().map(history_line).collect();
            out.print(json!(null), lines.join("\n"))
        }
        Command::Recover { wallet } => {
            let mut wallet = open_wallet(&wallet_path(before, wallet))?;
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

/// Tells the user on standard error about calls left unsettled by an
/// earlier failure, which only `millicent recover` finishes.
fn remind(wallet: &Wallet) {
    if wallet.has_unsettled_calls() {
        eprintln!(
            "note: the wallet holds calls whose answer was lost; \
             run `millicent recover` to finish them"
        );
    }
}

/// Where results go: text or JSON on standard output.
#[derive(Clone, Copy)]
struct Output {
    json: bool,
}

impl Output {
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

fn history_line(entry: &HistoryEntry) -> String {
    let kind = match entry.kind {
        HistoryKind::Buy => "buy",
        HistoryKind::Exchange => "exchange",
        HistoryKind::Pay => "pay",
    };
    let mut line = format!("{}  {kind:8}", utc_time(entry.time_ms));
    let fields = [
        ("broker", entry.broker.clone()),
        ("vendor", entry.vendor.clone()),
        ("item", entry.item.clone()),
        ("price", entry.price.map(|a| a.to_string())),
        ("change", entry.change.map(|a| a.to_string())),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            line.push_str(&format!(" {name}={value}"));
        }
    }
    if entry.outcome != Outcome::Ok
        && let Some(url) = &entry.url
    {
        line.push_str(&format!(" at={url}"));
    }
    let outcome = match &entry.outcome {
        Outcome::Ok => "ok".to_owned(),
        Outcome::Refused { reason } => format!("refused: {reason}"),
        Outcome::Failed { reason } => format!("failed: {reason}"),
        Outcome::Interrupted => "interrupted".to_owned(),
    };
    line.push_str(&format!("  {outcome}"));
    line
}

/// `ms` since the Unix epoch as an ISO 8601 UTC time, to the second.
fn utc_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from a day count (proleptic Gregorian calendar), by eras of
    // 400 years, which all have the same number of days.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
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
            top_up: 500,
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
            let (Command::Balance { wallet } | Command::History { wallet }) = cli.command else {
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
        for command in ["credit", "prices"] {
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
