//! The `dnsbgpd` command line: parse flags, load the config, hand over.
//!
//! Exit status: 0 success, 1 a problem (config, lists, runtime error; each
//! printed once with its context), 2 a usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use dnsbgpd::config::{Problem, Settings};
use dnsbgpd::ctl::{self, Client, ClientOptions, CtlError, Endpoint};
use dnsbgpd::lists::Lists;

#[derive(Parser)]
#[command(name = "dnsbgpd", version, about = "Routes from DNS answers: dnstap in, BGP out")]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log level or filter (e.g. `debug`, `dnsbgpd=debug,info`); RUST_LOG wins when set.
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (embedded default config when no --config is given).
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config and every list file it names.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the lists and the blocking rules over a dnstap capture file
    /// (fstrm_capture format) and print the routes and blocks that would
    /// result; touches neither the kernel nor BGP nor the store.
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        /// The capture file.
        capture: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Talk to a running daemon's API.
    Ctl(Box<CtlArgs>),
    /// Check, repair or export the route store of a stopped daemon
    /// (docs/operations.md, "A damaged store").
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Write the man pages and shell completions (for packaging).
    #[command(hide = true)]
    GenerateAssets {
        /// Directory to write `man/*.1` and `completions/*` into.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum StoreAction {
    /// Report undecodable records and read errors; exit 1 when there are any.
    Check(StoreAt),
    /// Remove undecodable records; move a store sled cannot read aside
    /// (STORE.damaged-SECONDS) so that the next start begins empty.
    Repair(StoreAt),
    /// Print every stored route as one JSON object a line.
    Export(StoreAt),
}

#[derive(clap::Args)]
struct StoreAt {
    /// The config whose `[routes] store` to use.
    #[arg(long, short, required_unless_present = "store", conflicts_with = "store")]
    config: Option<PathBuf>,
    /// The store directory itself.
    #[arg(long)]
    store: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CtlArgs {
    /// API URL: http://HOST:PORT, https://HOST:PORT or HOST:PORT (default: [api] of --config, else
    /// http://127.0.0.1:9153).
    #[arg(long, global = true, value_name = "URL")]
    api: Option<String>,
    /// Take the API address, scheme and token from this daemon config.
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// API token, sent as `Authorization: Bearer` (default: [api] token of --config).
    #[arg(long, global = true, value_name = "TOKEN", conflicts_with = "token_file")]
    token: Option<String>,
    /// File holding the API token.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// PEM CA certificates trusted for an https API (default: the system bundle).
    #[arg(long, global = true, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on a request after this long.
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s")]
    timeout: String,
    #[command(subcommand)]
    action: CtlAction,
}

#[derive(Subcommand)]
enum CtlAction {
    /// Version, readiness, uptime, routes and lists.
    Status,
    /// The route table.
    Routes {
        /// Only routes of this list.
        #[arg(long)]
        list: Option<String>,
        /// Only routes attributed to this name.
        #[arg(long)]
        domain: Option<String>,
        /// Only IPv4 (4) or IPv6 (6) routes.
        #[arg(long, value_parser = ["4", "6"])]
        family: Option<String>,
    },
    /// BGP neighbors: state, uptime, prefixes, last error.
    Neighbors,
    /// Peer sync: per peer state, lag, last success and error.
    SyncPeers,
    /// Reload the lists.
    Reload,
    /// The dynamic blocks in force.
    Blocks,
    /// Add a manual block.
    Block {
        /// 198.51.100.7, 198.51.100.0/24, qname:example.com or suffix:example.com.
        key: String,
        /// Only queries of this type (e.g. ANY).
        #[arg(long)]
        qtype: Option<String>,
        /// How long the block lasts (e.g. 10m).
        #[arg(long)]
        duration: Option<String>,
        /// Shown with the block.
        #[arg(long)]
        reason: Option<String>,
        /// Also announce it as an RFC 7999 blackhole route.
        #[arg(long)]
        blackhole: bool,
    },
    /// Remove a block.
    Unblock {
        /// The block's key, as `ctl blocks` shows it.
        key: String,
    },
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            init_logging(cli.log_format, &cli.log_level);
            let settings = match config {
                Some(path) => match Settings::load(&path) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::FAILURE;
                    }
                },
                None => Settings::embedded_default(),
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("dnsbgpd: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(dnsbgpd::daemon::run_until_signal(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("dnsbgpd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => check(&config),
        Command::Replay { config, capture, json } => replay(&config, &capture, json),
        Command::Ctl(args) => ctl(*args),
        Command::Store { action } => store(action),
        Command::GenerateAssets { out } => generate_assets(&out),
    }
}

fn replay(config: &std::path::Path, capture: &std::path::Path, json: bool) -> ExitCode {
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match dnsbgpd::blocking::replay::replay(&settings, capture) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(t) => println!("{t}"),
                    Err(e) => {
                        eprintln!("dnsbgpd replay: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", dnsbgpd::blocking::replay::text(&report));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dnsbgpd replay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn store(action: StoreAction) -> ExitCode {
    use dnsbgpd::store_cli::{self, Repaired};
    let (StoreAction::Check(at) | StoreAction::Repair(at) | StoreAction::Export(at)) = &action;
    let dir = match (&at.store, &at.config) {
        (Some(d), _) => d.clone(),
        (None, Some(c)) => match Settings::load(c) {
            Ok(s) => s.routes.store,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        (None, None) => {
            eprintln!("dnsbgpd store: give --config FILE or --store DIR");
            return ExitCode::from(2);
        }
    };
    match action {
        StoreAction::Check(_) => match store_cli::check(&dir) {
            Ok(report) if report.is_clean() => {
                print!("{}", report.text(&dir));
                ExitCode::SUCCESS
            }
            Ok(report) => {
                print!("{}", report.text(&dir));
                eprintln!(
                    "dnsbgpd store: {} has damaged records; `dnsbgpd store export` saves what is readable, \
                     `dnsbgpd store repair` removes the rest",
                    dir.display()
                );
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("dnsbgpd store check: {e}");
                ExitCode::FAILURE
            }
        },
        StoreAction::Repair(_) => match store_cli::repair(&dir) {
            Ok(Repaired::Clean) => {
                println!("{}: nothing to repair", dir.display());
                ExitCode::SUCCESS
            }
            Ok(Repaired::Removed(routes, changes)) => {
                println!(
                    "{}: removed {routes} undecodable route records and {changes} undecodable change-log records",
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Ok(Repaired::MovedAside(to)) => {
                println!(
                    "{}: the database cannot be read; moved it to {} (nothing deleted). The next start begins \
                     with an empty store; routes come back from DNS answers and sync peers.",
                    dir.display(),
                    to.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dnsbgpd store repair: {e}");
                ExitCode::FAILURE
            }
        },
        StoreAction::Export(_) => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match store_cli::export(&dir, &mut out) {
                Ok((_, 0)) => ExitCode::SUCCESS,
                Ok((_, bad)) => {
                    eprintln!("dnsbgpd store export: {bad} undecodable route records left out");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("dnsbgpd store export: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let settings = match Settings::load(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut problems: Vec<Problem> = Vec::new();
    let mut domains = 0;
    // Each list separately, so an unreadable file does not hide the others.
    for l in &settings.lists {
        match Lists::load_bounded(std::slice::from_ref(l), settings.routes.max_list_size) {
            Ok((lists, p)) => {
                domains += lists.info().iter().map(|i| i.entries + i.exclusions).sum::<usize>();
                problems.extend(p);
            }
            Err(e) => problems.push(Problem {
                file: e.file.clone(),
                line: 0,
                message: format!("cannot read list {:?}: {}", e.name, e.source),
            }),
        }
    }
    for p in &problems {
        eprintln!("{p}");
    }
    if problems.is_empty() {
        println!("{}: OK ({} lists, {} domains)", path.display(), settings.lists.len(), domains);
        ExitCode::SUCCESS
    } else {
        eprintln!("{}: {} problem(s)", path.display(), problems.len());
        ExitCode::FAILURE
    }
}

fn ctl(args: CtlArgs) -> ExitCode {
    match ctl_inner(args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dnsbgpd ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ctl_inner(args: CtlArgs) -> Result<String, CtlError> {
    let settings = match &args.config {
        Some(path) => Some(Settings::load(path).map_err(|e| CtlError::Usage(e.to_string().trim_end().to_string()))?),
        None => None,
    };
    let endpoint = match (&args.api, &settings) {
        (Some(url), _) => Endpoint::parse(url)?,
        (None, Some(s)) => Endpoint::from_listen(s.api.listen, s.api.tls.is_some()),
        (None, None) => Endpoint::from_listen(Settings::embedded_default().api.listen, false),
    };
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| CtlError::Usage(format!("cannot read token file {}: {e}", f.display())))?
                .trim()
                .to_string(),
        ),
        // Without an API token, /api/v1/sync/peers takes the sync token.
        (None, None) => settings
            .as_ref()
            .and_then(|s| s.api.token.as_ref().or(s.sync.as_ref().map(|y| &y.token)))
            .map(|t| t.expose().to_string()),
    };
    let timeout = dnsbgpd::config::parse_duration(&args.timeout)
        .map_err(|e| CtlError::Usage(format!("--timeout {:?}: {e}", args.timeout)))?;
    let options = ClientOptions { token, ca_file: args.ca_file.clone(), timeout, ..ClientOptions::default() };
    let client = Client::new(endpoint, options)?;
    let command = match args.action {
        CtlAction::Status => ctl::Command::Status,
        CtlAction::Routes { list, domain, family } => {
            ctl::Command::Routes { list, domain, family: family.and_then(|f| f.parse().ok()) }
        }
        CtlAction::Neighbors => ctl::Command::Neighbors,
        CtlAction::SyncPeers => ctl::Command::SyncPeers,
        CtlAction::Reload => ctl::Command::Reload,
        CtlAction::Blocks => ctl::Command::Blocks,
        CtlAction::Block { key, qtype, duration, reason, blackhole } => {
            ctl::Command::Block { key, qtype, duration, reason, blackhole }
        }
        CtlAction::Unblock { key } => ctl::Command::Unblock { key },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::Usage(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(ctl::run(&client, &command, args.json))
}

/// Man pages (one per command and subcommand) and bash, zsh and fish
/// completions, from the clap definitions above.
fn generate_assets(out: &std::path::Path) -> ExitCode {
    let result = (|| -> std::io::Result<()> {
        let man = out.join("man");
        let completions = out.join("completions");
        std::fs::create_dir_all(&man)?;
        std::fs::create_dir_all(&completions)?;
        let cmd = Cli::command();
        clap_mangen::generate_to(cmd.clone(), &man)?;
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            clap_complete::generate_to(shell, &mut cmd.clone(), "dnsbgpd", &completions)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dnsbgpd generate-assets: {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}
