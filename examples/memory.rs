//! Memory and load time of the parts that grow with the data: a list of N
//! domains, a route table of N routes, and (with `--store DIR`) the sled
//! store holding them. Prints VmRSS after each step; see BENCHMARKS.md.
//!
//! ```text
//! cargo run --release --example memory -- [--routes N] [--domains N] [--names N] [--store DIR [--backend sled|redb] [--cache BYTES] [--batch N] [--shuffle] [--reload]]
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dnsbgpd::config::Settings;
use dnsbgpd::lists::Lists;
use dnsbgpd::routes::redb_store::RedbStore;
use dnsbgpd::routes::store::{RouteStore, SledStore};
use dnsbgpd::routes::{Clock, RouteEvent, RouteTable, Source};

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The `i`-th domain: 1-3 labels under a handful of TLDs, ~20 bytes.
fn domain(i: usize) -> String {
    const TLDS: [&str; 6] = ["com", "net", "org", "io", "de", "co.uk"];
    let prefix = ["", "www.", "cdn.", "api."][i % 4];
    format!("{prefix}site{i:x}q.{}", TLDS[i / 4 % TLDS.len()])
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let routes: usize = arg(&args, "--routes", 1_000_000);
    let domains: usize = arg(&args, "--domains", 1_000_000);
    // Distinct domain names among the routes (the table interns them).
    let names: usize = arg(&args, "--names", domains);
    let cache: usize = arg(&args, "--cache", 16 << 20);
    // Routes per SledStore::write call (the store writer's batch is 50 000).
    let batch: usize = arg(&args, "--batch", 50_000);
    let store: Option<PathBuf> =
        args.iter().position(|a| a == "--store").and_then(|i| args.get(i + 1)).map(PathBuf::from);

    println!("start: VmRSS {:.1} MiB", rss_mib());

    // A list file of `domains` lines, loaded as the daemon does.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("list.txt");
    let mut text = String::with_capacity(domains * 24);
    for i in 0..domains {
        text.push_str(&domain(i));
        text.push('\n');
    }
    std::fs::write(&file, &text)?;
    drop(text);
    let config =
        format!("[dnstap]\nsocket = \"x.sock\"\n[[list]]\nname = \"bench\"\nfile = {:?}\n", file.display().to_string());
    let settings = Settings::parse(&config, Path::new("memory.toml"), Path::new(""), None)?;
    let before = rss_mib();
    let started = Instant::now();
    let (lists, problems) = Lists::load(&settings.lists)?;
    let took = started.elapsed();
    anyhow::ensure!(problems.is_empty(), "{} problems", problems.len());
    println!(
        "Lists::load of {domains} domains: {:.3} s, {} MiB of matcher, VmRSS {:.1} MiB (+{:.1})",
        took.as_secs_f64(),
        lists.heap_bytes() >> 20,
        rss_mib(),
        rss_mib() - before
    );

    // `routes` routes, one attribution each, as the pipeline makes them:
    // a fresh Arc<str> for the domain, the list's shared name. 3 in 4
    // IPv4, 1 in 4 IPv6.
    let table = RouteTable::new(Clock::new(), Duration::from_secs(3600), Duration::from_secs(86400));
    let list: Arc<str> = Arc::from("bench");
    let before = rss_mib();
    let started = Instant::now();
    for i in 0..routes {
        let addr = if i % 4 == 3 {
            IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | i as u128))
        } else {
            IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | i as u32))
        };
        let d: Arc<str> = Arc::from(domain(i % names.max(1)).as_str());
        table.upsert(addr, &d, &list, table.expiry_for_ttl(300), Source::Dns);
    }
    println!(
        "RouteTable with {} routes: {:.2} s, VmRSS {:.1} MiB (+{:.1}, {:.0} bytes/route)",
        table.len(),
        started.elapsed().as_secs_f64(),
        rss_mib(),
        rss_mib() - before,
        (rss_mib() - before) * 1048576.0 / routes.max(1) as f64
    );
    let parts = table.heap_bytes();
    let total: usize = parts.iter().map(|(_, b)| b).sum();
    println!(
        "  table heap by part ({} names): {} = {:.0} bytes/route",
        table.names_len(),
        parts.iter().map(|(p, b)| format!("{p} {:.1} MiB", *b as f64 / 1048576.0)).collect::<Vec<_>>().join(", "),
        total as f64 / routes.max(1) as f64
    );

    let backend = args.iter().position(|a| a == "--backend").and_then(|i| args.get(i + 1)).cloned();
    let backend = backend.unwrap_or_else(|| "sled".into());
    let open = |path: &Path| -> anyhow::Result<Box<dyn RouteStore>> {
        Ok(match backend.as_str() {
            "redb" => Box::new(RedbStore::open(path, cache)?),
            "sled" => Box::new(SledStore::open(path, cache)?),
            other => anyhow::bail!("--backend {other}: sled or redb"),
        })
    };
    if let Some(path) = store {
        let s = open(&path)?;
        let before = rss_mib();
        let started = Instant::now();
        // As the store writer: write calls of `batch` routes (one sled
        // batch each), one flush per 50 000.
        let mut all = table.snapshot();
        if args.iter().any(|a| a == "--shuffle") {
            // In no particular key order, as the store writer wrote before
            // it sorted (hash order of the changed set): Fisher-Yates with
            // a fixed xorshift, so runs compare.
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            for i in (1..all.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                all.swap(i, (x % (i as u64 + 1)) as usize);
            }
        }
        for chunk in all.chunks(50_000) {
            for part in chunk.chunks(batch.max(1)) {
                let events: Vec<RouteEvent> = part.iter().cloned().map(RouteEvent::Added).collect();
                s.write(&events)?;
            }
            s.flush()?;
        }
        drop(all);
        println!(
            "{backend} (cache {} MiB, {batch} routes per write) after writing {} routes: {:.2} s, VmRSS {:.1} MiB (+{:.1})",
            cache >> 20,
            table.len(),
            started.elapsed().as_secs_f64(),
            rss_mib(),
            rss_mib() - before
        );
        std::thread::sleep(Duration::from_secs(2));
        println!("  2 s later: VmRSS {:.1} MiB", rss_mib());
        drop(s);
        if !args.iter().any(|a| a == "--reload") {
            return Ok(());
        }
        let before = rss_mib();
        // sled's threads may hold its files a moment after the drop.
        let deadline = Instant::now() + Duration::from_secs(10);
        let s = loop {
            match open(&path) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(e),
            }
        };
        let started = Instant::now();
        let (loaded, bad) = s.load()?;
        println!(
            "{backend} reopened and loaded {} routes ({bad} bad): {:.2} s, VmRSS {:.1} MiB (+{:.1})",
            loaded.len(),
            started.elapsed().as_secs_f64(),
            rss_mib(),
            rss_mib() - before
        );
    }
    Ok(())
}
