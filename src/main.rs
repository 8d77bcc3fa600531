//! The `dnsbgpd` command line: parse flags, load the config, hand over.
//!
//! Exit status: 0 success, 1 a problem (config, lists, runtime error; each
//! printed once with its context), 2 a usage error.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use dnsbgpd::config::{Problem, Settings};
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
    Ctl {
        /// API address (default: [api] listen of --config, else 127.0.0.1:9153).
        #[arg(long)]
        api: Option<SocketAddr>,
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: CtlAction,
    },
}

#[derive(Subcommand)]
enum CtlAction {
    /// Show the daemon's status.
    Status,
    /// List the routes (JSON).
    Routes {
        #[arg(long)]
        list: Option<String>,
    },
    /// Reload the lists.
    Reload,
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
        Command::Ctl { api, config, action } => ctl(api, config, action),
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

/// A minimal HTTP/1.1 client: the API is on loopback and speaks plain JSON.
fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    Ok((code, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn ctl(api: Option<SocketAddr>, config: Option<PathBuf>, action: CtlAction) -> ExitCode {
    let addr = match (api, config) {
        (Some(a), _) => a,
        (None, Some(c)) => match Settings::load(&c) {
            Ok(s) => dnsbgpd::daemon::api_address(&s),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        (None, None) => dnsbgpd::daemon::api_address(&Settings::embedded_default()),
    };
    let (method, path) = match &action {
        CtlAction::Status => ("GET", "/api/v1/status".to_string()),
        CtlAction::Routes { list: None } => ("GET", "/api/v1/routes".to_string()),
        CtlAction::Routes { list: Some(l) } => ("GET", format!("/api/v1/routes?list={l}")),
        CtlAction::Reload => ("POST", "/api/v1/reload".to_string()),
    };
    match http(addr, method, &path) {
        Ok((code, body)) => {
            let pretty = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(body);
            println!("{pretty}");
            if (200..300).contains(&code) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("dnsbgpd ctl: cannot reach the API at {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
