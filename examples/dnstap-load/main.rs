//! `dnstap-load`: a bounded dnstap load generator for dnsbgpd.
//!
//! Connects to a dnstap unix socket, does the bidirectional Frame Streams
//! handshake (READY → ACCEPT → START), sends `--frames` CLIENT_RESPONSE
//! frames of the realistic mix in `mix.rs` as fast as the socket takes
//! them, then STOP, and waits for FINISH. dnsbgpd handles frames inline on
//! the connection's task and answers STOP only after the frames before it,
//! so FINISH means the daemon has processed every frame sent. Prints frames
//! sent, seconds and frames/s.
//!
//! `--list-out` writes the list file that claims exactly the listed names
//! of the mix (padded with unrelated domains up to `--list-size`).

mod mix;

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use dnsbgpd::dnstap::framestream::FrameCodec;
use dnsbgpd::dnstap::writer::Writer;
use tokio_util::codec::Encoder;

use mix::{Mix, Rng};

#[derive(Parser)]
#[command(name = "dnstap-load", about = "Send a bounded, realistic dnstap load to a Frame Streams unix socket")]
struct Args {
    /// The dnstap unix socket of the daemon.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Frames to send in total (over all connections).
    #[arg(long, default_value_t = 10_000_000)]
    frames: u64,
    /// Distinct question names (entities) in the mix.
    #[arg(long, default_value_t = 100_000)]
    names: usize,
    /// Percentage of names a list claims.
    #[arg(long, default_value_t = 10.0)]
    listed_percent: f64,
    /// Seed of names and of the frame order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Parallel connections, each on its own thread, sharing the frames.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Write the list file that claims the listed names here.
    #[arg(long)]
    list_out: Option<PathBuf>,
    /// Pad the list file with unrelated domains up to this many lines.
    #[arg(long, default_value_t = 0)]
    list_size: usize,
    /// Send every name once, in order, before the random part (so a run
    /// of at least --names frames adds every listed address as a route).
    #[arg(long)]
    sweep: bool,
}

/// Write buffer size: many frames per `write` system call.
const CHUNK: usize = 256 * 1024;

/// Bytes of a STOP control frame (escape, length, type).
const STOP_LEN: u64 = 12;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dnstap-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.names == 0 || args.connections == 0 {
        bail!("--names and --connections must be at least 1");
    }
    if !(0.0..=100.0).contains(&args.listed_percent) {
        bail!("--listed-percent must be between 0 and 100");
    }
    let built = Instant::now();
    let mix = Mix::build(args.seed, args.names, args.listed_percent);
    eprintln!(
        "mix: {} names, {} listed, {} listed addresses, built in {:.2}s",
        args.names,
        mix.list.len(),
        mix.listed_addresses,
        built.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.list_out {
        std::fs::write(path, mix.list_text(args.list_size)).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("list: {} lines written to {}", mix.list.len().max(args.list_size), path.display());
    }
    let Some(socket) = &args.socket else {
        if args.list_out.is_none() {
            bail!("nothing to do: give --socket and/or --list-out");
        }
        return Ok(());
    };

    // Every entity's frame, length prefix included, in one buffer.
    let mut codec = FrameCodec::new(usize::MAX);
    let mut pool = BytesMut::with_capacity(mix.payloads.iter().map(|p| 4 + p.len()).sum());
    let mut offsets = Vec::with_capacity(mix.payloads.len() + 1);
    for p in &mix.payloads {
        offsets.push(pool.len());
        codec.encode(p.clone(), &mut pool).context("encoding a frame")?;
    }
    offsets.push(pool.len());
    let pool: Bytes = pool.freeze();
    drop(mix);

    // Connect and handshake every connection first, then start the clock.
    let mut streams = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let s = UnixStream::connect(socket).with_context(|| format!("connecting to {}", socket.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(600)))?;
        streams.push(Writer::bidirectional(s).context("Frame Streams handshake")?);
    }

    let started = Instant::now();
    let per = args.frames / args.connections as u64;
    let extra = args.frames % args.connections as u64;
    let results: Vec<anyhow::Result<(u64, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(c, s)| {
                let n = per + u64::from((c as u64) < extra);
                let (pool, offsets) = (&pool, &offsets);
                let sweep = args.sweep && c == 0;
                let seed = args.seed ^ ((c as u64 + 1) << 32);
                scope.spawn(move || send(s, n, pool, offsets, seed, sweep))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("sender panicked")))).collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let mut frames = 0;
    let mut bytes = 0;
    for r in results {
        let (f, b) = r?;
        frames += f;
        bytes += b;
    }
    println!("frames sent: {frames}");
    println!("bytes sent: {bytes}");
    println!("seconds: {secs:.3}");
    println!("frames/s: {:.0}", frames as f64 / secs);
    Ok(())
}

/// Sends `n` frames on one connection, then STOP, and waits for FINISH.
/// Returns frames and bytes sent.
fn send(mut w: Writer, n: u64, pool: &[u8], offsets: &[usize], seed: u64, sweep: bool) -> anyhow::Result<(u64, u64)> {
    let names = offsets.len() - 1;
    let mut rng = Rng::new(seed);
    let mut bytes = 0u64;
    for i in 0..n {
        let e = if sweep && (i as usize) < names { i as usize } else { rng.below(names) };
        w.queue_framed(&pool[offsets[e]..offsets[e + 1]]);
        if w.queued() >= CHUNK {
            bytes += w.queued() as u64;
            w.flush().context("sending frames")?;
        }
    }
    // The rest, STOP, and FINISH back.
    bytes += w.queued() as u64 + STOP_LEN;
    w.finish().context("waiting for FINISH")?;
    Ok((n, bytes))
}
