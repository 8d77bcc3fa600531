//! Benchmarks of the dnstap hot path (see BENCHMARKS.md for results).
//!
//! * `framestream/decode`: the Frame Streams decoder on a buffer of many frames;
//! * `pipeline/handle/{10k,1M}`: `Pipeline::handle` on the realistic mix of
//!   `examples/dnstap-load/mix.rs` with lists of 10 k and 1 M domains;
//! * `server/unix`: a whole connection (`Server::connection`) reading the same
//!   frames from a unix socket pair, Framed buffer and all;
//! * `matcher/lookup/{10k,1M}`: `DomainMatcher::lookup` alone;
//! * `lists/{compile,load}/1M`: compiling and loading a 1 M-domain list.
//!
//! Times are CPU time of the benchmarking thread (`CLOCK_THREAD_CPUTIME_ID`),
//! not wall time: the benchmark machine is shared, and time spent
//! preempted by other processes must not count. `DNSBGPD_BENCH_WALL=1`
//! switches to wall time.
//!
//! Before the benches, an allocation audit (a counting global allocator)
//! prints heap allocations per frame of each stage.
//!
//! `cargo bench --bench pipeline [-- FILTER]`; `DNSBGPD_BENCH_QUICK=1`
//! shortens every measurement (a smoke run).

#[path = "../examples/dnstap-load/mix.rs"]
mod mix;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BatchSize, Criterion, Throughput};
use dnsbgpd::config::{ListSettings, Settings};
use dnsbgpd::dnstap::framestream::{ControlFrame, ControlType, DNSTAP_CONTENT_TYPE, FrameCodec, control_bytes};
use dnsbgpd::dnstap::server::Server;
use dnsbgpd::dnstap::{FrameOutcome, MessageType, Pipeline};
use dnsbgpd::lists::Lists;
use dnsbgpd::metrics::Metrics;
use dnsbgpd::names::NameBuf;
use dnsbgpd::routes::ingest::Ingest;
use dnsbgpd::routes::{Clock, RouteTable};
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

use mix::{Mix, Rng};

/// Counts heap allocations (not frees) so the audit can show per-frame
/// allocations. One relaxed atomic add per allocation: negligible.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    if std::env::var_os("DNSBGPD_BENCH_WALL").is_some() {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        return START.get_or_init(Instant::now).elapsed();
    }
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Criterion measurement: CPU time of the benchmarking thread.
struct ThreadCpu;

impl Measurement for ThreadCpu {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        thread_cpu()
    }
    fn end(&self, started: Duration) -> Duration {
        thread_cpu().saturating_sub(started)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = match ns {
            x if x < 1e3 => (1.0, "ns"),
            x if x < 1e6 => (1e-3, "µs"),
            x if x < 1e9 => (1e-6, "ms"),
            _ => (1e-9, "s"),
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }

    fn scale_throughputs(&self, typical: f64, throughput: &Throughput, values: &mut [f64]) -> &'static str {
        let per_iter = match *throughput {
            Throughput::Elements(n) | Throughput::ElementsAndBytes { elements: n, .. } => n as f64,
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => n as f64,
            Throughput::Bits(n) => n as f64,
        };
        let rate = per_iter * 1e9 / typical;
        let (div, unit) = match rate {
            x if x < 1e3 => (1.0, " elem/s"),
            x if x < 1e6 => (1e3, "Kelem/s"),
            x if x < 1e9 => (1e6, "Melem/s"),
            _ => (1e9, "Gelem/s"),
        };
        values.iter_mut().for_each(|v| *v = per_iter * 1e9 / *v / div);
        unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

const SEED: u64 = 1;
/// Distinct names in the traffic; 10 % listed gives ~5 k listed domains.
const NAMES: usize = 50_000;
const LISTED_PERCENT: f64 = 10.0;
/// Frames handled per iteration of the pipeline benches.
const BATCH: usize = 16_384;

fn quick() -> bool {
    std::env::var_os("DNSBGPD_BENCH_QUICK").is_some()
}

/// One list called "bench" in `file` (from a config, so that fields added
/// to `ListSettings` later keep their defaults).
fn settings_for(file: &Path) -> Vec<ListSettings> {
    let text =
        format!("[dnstap]\nsocket = \"x.sock\"\n[[list]]\nname = \"bench\"\nfile = {:?}\n", file.display().to_string());
    Settings::parse(&text, Path::new("bench.toml"), Path::new(""), None).expect("bench config").lists
}

fn settings() -> Vec<ListSettings> {
    settings_for(Path::new("bench.txt"))
}

fn lists(mix: &Mix, size: usize) -> Lists {
    let (lists, problems) = Lists::compile(&settings(), &[mix.list_text(size)]);
    assert!(problems.is_empty(), "{:?}", &problems[..problems.len().min(3)]);
    lists
}

fn pipeline(lists: Lists) -> Pipeline {
    let table = Arc::new(RouteTable::new(Clock::new(), Duration::from_secs(3600), Duration::from_secs(86400)));
    Pipeline::new(
        Arc::new(ArcSwap::from_pointee(lists)),
        Arc::new(Ingest::new(table)),
        Arc::new(Metrics::new()),
        &[MessageType::ClientResponse],
    )
}

/// `n` frames of the mix in random order (uniform over the names). As in
/// the daemon, where frames are split off the connection's read buffer,
/// they are slices of one buffer (one shared reference count, frames
/// next to each other in memory).
fn stream(mix: &Mix, n: usize, seed: u64) -> Vec<Bytes> {
    let mut rng = Rng::new(seed);
    let picks: Vec<&Bytes> = (0..n).map(|_| &mix.payloads[rng.below(mix.payloads.len())]).collect();
    let mut buf = BytesMut::with_capacity(picks.iter().map(|p| p.len()).sum());
    let mut ends = Vec::with_capacity(n);
    for p in picks {
        buf.extend_from_slice(p);
        ends.push(buf.len());
    }
    let buf = buf.freeze();
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let f = buf.slice(start..end);
            start = end;
            f
        })
        .collect()
}

/// Frame Streams encoding of `frames`, optionally between START and STOP.
fn encoded(frames: &[Bytes], control: bool) -> BytesMut {
    let mut codec = FrameCodec::new(usize::MAX);
    let mut out = BytesMut::new();
    if control {
        out.extend_from_slice(&control_bytes(&ControlFrame::with_content_type(
            ControlType::Start,
            DNSTAP_CONTENT_TYPE,
        )));
    }
    for f in frames {
        codec.encode(f.clone(), &mut out).expect("encodable");
    }
    if control {
        out.extend_from_slice(&control_bytes(&ControlFrame::new(ControlType::Stop)));
    }
    out
}

/// Runs one whole Frame Streams connection over a unix socket pair: a
/// writer thread sends `bytes`, the server handles it on a current-thread
/// runtime. Returns the CPU time of the server (this thread).
fn serve_once(rt: &tokio::runtime::Runtime, server: &Server, bytes: &Bytes) -> Duration {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let data = bytes.clone();
    let writer = std::thread::spawn(move || {
        let mut w = theirs;
        w.write_all(&data).expect("write");
        w.shutdown(std::net::Shutdown::Write).expect("shutdown");
        // Keep our end open until the server is done.
        let _ = std::io::Read::read_to_end(&mut w, &mut Vec::new());
    });
    ours.set_nonblocking(true).expect("nonblocking");
    let started = thread_cpu();
    rt.block_on(async {
        let stream = tokio::net::UnixStream::from_std(ours).expect("tokio stream");
        server.connection(stream, "bench", CancellationToken::new()).await;
    });
    let took = thread_cpu() - started;
    writer.join().expect("writer");
    took
}

/// Heap allocations per frame of each stage, printed before the benches.
fn audit(mix: &Mix) {
    let frames = stream(mix, 200_000, 7);
    let n = frames.len() as f64;

    let buf = encoded(&frames, false);
    let mut codec = FrameCodec::new(64 * 1024);
    let mut b = buf.clone();
    let before = allocs();
    while let Some(f) = codec.decode(&mut b).expect("valid") {
        black_box(f);
    }
    let decode = (allocs() - before) as f64 / n;

    let p = pipeline(lists(mix, 10_000));
    let mut name = NameBuf::new();
    // First pass: routes and CNAME links are created (allocations expected
    // for matched frames); second pass: steady state.
    let mut outcomes = [0usize; 5];
    let before = allocs();
    for f in &frames {
        outcomes[p.handle(f.clone(), &mut name) as usize] += 1;
    }
    let first = (allocs() - before) as f64 / n;
    let unmatched: Vec<Bytes> =
        frames.iter().filter(|f| p.handle((*f).clone(), &mut name) == FrameOutcome::NoMatch).cloned().collect();
    let matched: Vec<Bytes> =
        frames.iter().filter(|f| p.handle((*f).clone(), &mut name) == FrameOutcome::Matched).cloned().collect();
    let before = allocs();
    for f in &frames {
        p.handle(f.clone(), &mut name);
    }
    let steady = (allocs() - before) as f64 / n;
    let before = allocs();
    for f in &unmatched {
        p.handle(f.clone(), &mut name);
    }
    let nomatch = (allocs() - before) as f64 / unmatched.len().max(1) as f64;
    let before = allocs();
    for f in &matched {
        p.handle(f.clone(), &mut name);
    }
    let matched_allocs = (allocs() - before) as f64 / matched.len().max(1) as f64;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let server = Server::new(Arc::new(pipeline(lists(mix, 10_000))), 64 * 1024, 8);
    let unmatched_stream = encoded(&unmatched, true).freeze();
    let _ = serve_once(&rt, &server, &unmatched_stream); // warm: routes, buffers
    let before = allocs();
    let _ = serve_once(&rt, &server, &unmatched_stream);
    let server_allocs = (allocs() - before) as f64 / unmatched.len().max(1) as f64;

    println!("allocation audit ({} frames of the mix, {NAMES} names, {LISTED_PERCENT}% listed):", frames.len());
    println!(
        "  outcomes: ignored {} no-match {} matched {} bad-dnstap {} bad-dns {}",
        outcomes[0], outcomes[1], outcomes[2], outcomes[3], outcomes[4]
    );
    println!("  framestream decode:              {decode:.3} allocations/frame");
    println!("  pipeline, first pass:            {first:.3} allocations/frame");
    println!("  pipeline, steady state:          {steady:.3} allocations/frame");
    println!("  pipeline, unmatched frames:      {nomatch:.3} allocations/frame");
    println!("  pipeline, matched frames:        {matched_allocs:.3} allocations/frame");
    println!(
        "  server over a unix socket pair:  {server_allocs:.4} allocations/frame (unmatched frames, thread and socket setup included)"
    );
}

fn bench_framestream(c: &mut Criterion<ThreadCpu>, mix: &Mix) {
    let frames = stream(mix, BATCH, 11);
    let buf = encoded(&frames, false).freeze();
    let mut g = c.benchmark_group("framestream");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("decode", |b| {
        let mut codec = FrameCodec::new(64 * 1024);
        b.iter_batched(
            || BytesMut::from(&buf[..]),
            |mut buf| {
                while let Some(f) = codec.decode(&mut buf).expect("valid") {
                    black_box(f);
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_pipeline(
    c: &mut Criterion<ThreadCpu>,
    mix: &Mix,
    lists_10k: &dyn Fn() -> Lists,
    lists_1m: &dyn Fn() -> Lists,
) {
    let frames = stream(mix, 1 << 18, 13);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (label, make) in [("10k", lists_10k), ("1M", lists_1m)] {
        let p = pipeline(make());
        let mut name = NameBuf::new();
        // Warm: routes exist, as in a running daemon.
        for f in &frames {
            p.handle(f.clone(), &mut name);
        }
        let mut at = 0;
        g.bench_function(format!("handle/{label}"), |b| {
            b.iter(|| {
                let batch = &frames[at..at + BATCH];
                at = (at + BATCH) % frames.len();
                for f in batch {
                    black_box(p.handle(f.clone(), &mut name));
                }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("server");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let server = Server::new(Arc::new(pipeline(lists_10k())), 64 * 1024, 8);
    let conn = stream(mix, 1 << 17, 17);
    let bytes = encoded(&conn, true).freeze();
    let _ = serve_once(&rt, &server, &bytes);
    g.throughput(Throughput::Elements(conn.len() as u64));
    g.sample_size(10);
    g.bench_function("unix/10k", |b| b.iter_custom(|iters| (0..iters).map(|_| serve_once(&rt, &server, &bytes)).sum()));
    g.finish();
}

fn bench_matcher(c: &mut Criterion<ThreadCpu>, mix: &Mix, lists_10k: &Lists, lists_1m: &Lists) {
    // Every name the scan hands to the matcher: question names and CNAME
    // targets, in traffic order.
    let mut rng = Rng::new(19);
    let mut names = Vec::with_capacity(4096);
    while names.len() < 4096 {
        let e = mix.entity(rng.below(NAMES));
        names.push(NameBuf::from_text(&e.qname).expect("valid"));
        for t in &e.cnames {
            names.push(NameBuf::from_text(t).expect("valid"));
        }
    }
    let hits = names.iter().filter(|n| lists_10k.lookup(n) != 0).count();
    let hits_1m = names.iter().filter(|n| lists_1m.lookup(n) != 0).count();
    assert_eq!(hits, hits_1m, "both lists claim the same traffic names");
    println!("matcher: {} names, {hits} claimed", names.len());
    let mut g = c.benchmark_group("matcher");
    g.throughput(Throughput::Elements(names.len() as u64));
    for (label, lists) in [("10k", lists_10k), ("1M", lists_1m)] {
        g.bench_function(format!("lookup/{label}"), |b| {
            b.iter(|| {
                let mut m = 0;
                for n in &names {
                    m |= lists.lookup(n);
                }
                black_box(m)
            })
        });
    }
    g.finish();
}

fn bench_lists(c: &mut Criterion<ThreadCpu>, mix: &Mix) {
    let text = mix.list_text(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings_for(&dir.path().join("list.txt"));
    std::fs::write(&s[0].file, &text).expect("write list");
    let mut g = c.benchmark_group("lists");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1_000_000));
    let texts = [text];
    g.bench_function("compile/1M", |b| b.iter(|| black_box(Lists::compile(&s, &texts))));
    g.bench_function("load/1M", |b| b.iter(|| black_box(Lists::load(&s).expect("load"))));
    g.finish();
}

fn main() {
    let started = Instant::now();
    let mix = Mix::build(SEED, NAMES, LISTED_PERCENT);
    println!("mix: {NAMES} names, {} listed, built in {:.2?}", mix.list.len(), started.elapsed());
    let lists_10k = lists(&mix, 10_000);
    let compiled = Instant::now();
    let lists_1m = lists(&mix, 1_000_000);
    println!("1M-domain list compiled in {:.2?}, {} MiB of matcher", compiled.elapsed(), lists_1m.heap_bytes() >> 20);

    let mut c = Criterion::default().with_measurement(ThreadCpu).configure_from_args();
    c = if quick() {
        c.warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_millis(500))
    } else {
        c.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
    };
    if !quick() || std::env::var_os("DNSBGPD_BENCH_AUDIT").is_some() {
        audit(&mix);
    }
    bench_framestream(&mut c, &mix);
    bench_pipeline(&mut c, &mix, &|| lists(&mix, 10_000), &|| lists(&mix, 1_000_000));
    bench_matcher(&mut c, &mix, &lists_10k, &lists_1m);
    bench_lists(&mut c, &mix);
    c.final_summary();
}
