//! dnsbgpd: routes from the names a DNS resolver answers.
//!
//! The resolver's dnstap stream ([`dnstap`]) is matched against domain
//! lists ([`lists`]); the addresses of listed names become routes in a
//! table with TTLs and an on-disk store ([`routes`]); the HTTP API
//! ([`api`]) shows them; [`sync`] shares them between instances. [`daemon`]
//! wires the parts; `main.rs` is the CLI.

pub mod api;
pub mod bgp;
pub mod blocking;
pub mod clock;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod dnstap;
pub mod lists;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod observation;
pub mod routes;
pub mod schema;
pub mod store_cli;
pub mod sync;
pub mod tls;
pub mod values;

/// The version shown by `--version` and the API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
