//! The eBPF filter's maps, loaded with aya: the [`Enforcer`] that makes
//! the kernel hold what the engine decided.
//!
//! The object (`bpf/dnsbgpd_filter.o`, built from `bpf/dnsbgpd_filter.c` by
//! `bpf/build.sh` and committed) is embedded in the binary. [`Filter::open`]
//! loads it, sizes the entry maps to `max_blocks` and, with a `pin_path`,
//! pins the maps there (or reuses the ones a previous run pinned, so that
//! blocks in force keep dropping across a restart). Attaching the programs
//! to the resolver is [`super::attach`]'s work; the filter only lends it the
//! program descriptors.
//!
//! Expiry: the kernel compares entries with `bpf_ktime_get_boot_ns`
//! (CLOCK_BOOTTIME, which keeps counting through a suspend); the engine
//! speaks wall-clock milliseconds. Both directions are converted here
//! against a fresh reading of both clocks.
//!
//! Name entries: the kernel map is keyed by a seeded hash of the name
//! ([`NameHasher`], the twin of the C code); a second map keeps the text of
//! every name so that entries found in pinned maps can be listed again.

use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aya::maps::lpm_trie::Key as LpmKey;
use aya::maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray};
use aya::programs::{CgroupSkb, ProgramError, SocketFilter, TestRun, TestRunOptions};
use aya::{Ebpf, EbpfLoader, Pod};
use ipnet::IpNet;

use super::kernel::{DropCounters, EnforceError, Enforcer, FilterStatus, KernelEntry, KernelKey, NameMatch, Verdict};
use crate::clock::UnixMillis;

/// The filter object, built by `bpf/build.sh`.
static OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/dnsbgpd_filter.o");

/// The socket-filter program (SO_ATTACH_BPF).
pub const SOCKET_PROGRAM: &str = "dnsbgpd_socket";
/// The cgroup_skb/ingress program.
pub const CGROUP_PROGRAM: &str = "dnsbgpd_cgroup";

/// Maps sized by `max_blocks`.
const ENTRY_MAPS: [&str; 7] = ["src_v4", "src_v6", "net_v4", "net_v6", "names", "suffixes", "name_texts"];
/// Maps pinned with `pin_path` (the scratch map is per-packet state).
const PINNED_MAPS: [&str; 11] = [
    "src_v4",
    "src_v6",
    "net_v4",
    "net_v6",
    "names",
    "suffixes",
    "suffix_slots",
    "name_texts",
    "drops",
    "config",
    "attached",
];
/// The counting filter in front of `suffixes`.
const SLOTS_MAP: &str = "suffix_slots";

/// Slots of the counting filter for `max_entries` name entries: 16 per
/// entry (rounded up to a power of two), at least 4 Ki, at most 16 Mi
/// (one byte each). With every name map slot used the chance that a suffix
/// without entry still needs its hash lookup is then about 1/16.
pub fn filter_slots(max_entries: u32) -> u32 {
    max_entries.max(1).next_power_of_two().saturating_mul(16).clamp(1 << 12, 1 << 24)
}

const VERDICT_DROP: u32 = 0;
const VERDICT_ALLOW: u32 = 1;
const KIND_EXACT: u8 = 1;
const KIND_SUFFIX: u8 = 2;
const KIND_BELOW: u8 = 3;
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The source maps in the order of their `EMPTY_*` bit in `config.empty`
/// (bit `1 << index`).
const SOURCE_MAPS: [&str; 4] = ["src_v4", "src_v6", "net_v4", "net_v6"];

/// `struct entry` of the C program.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct RawEntry {
    expires_ns: u64,
    hits: u64,
    verdict: u32,
    prefixlen: u32,
}
// SAFETY: plain integers, no padding (24 bytes).
unsafe impl Pod for RawEntry {}

/// `struct name_key` of the C program.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NameKey {
    pub hash: u64,
    /// Wire length of the name, root label included.
    pub len: u8,
    pub kind: u8,
    pub qtype: u16,
    pub pad: u32,
}
// SAFETY: plain integers, explicit padding field (16 bytes).
unsafe impl Pod for NameKey {}

/// `struct suffix_key`: which names have entries at all.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
struct SuffixKey {
    hash: u64,
    len: u8,
    pad: [u8; 7],
}
// SAFETY: plain integers, explicit padding field (16 bytes).
unsafe impl Pod for SuffixKey {}

/// The bit of `HAS(kind, specific)` in the C program.
fn presence_bit(k: &NameKey) -> usize {
    usize::from(k.kind.saturating_sub(1)) * 2 + usize::from(k.qtype != super::kernel::QTYPE_ANY)
}

/// `struct name_text`: byte 0 the length, then the presentation text.
#[repr(C)]
#[derive(Clone, Copy)]
struct NameText {
    text: [u8; 256],
}
// SAFETY: a byte array.
unsafe impl Pod for NameText {}

/// `struct config`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Config {
    seed: u64,
    port: u32,
    /// Non-zero while any name entry exists: the program skips the name
    /// parse otherwise.
    names: u32,
    /// `suffix_slots` has `slot_mask + 1` slots.
    slot_mask: u32,
    /// `EMPTY_*` bits: source maps known to be empty, whose lookups the
    /// program skips. Zero (the value in maps pinned by an older dnsbgpd)
    /// looks everything up.
    empty: u32,
}
// SAFETY: plain integers, explicit padding field.
unsafe impl Pod for Config {}

/// The name hash the C program computes per suffix (see the comment at
/// the top of `bpf/dnsbgpd_filter.c`).
#[derive(Debug, Clone, Copy)]
pub struct NameHasher {
    pub seed: u64,
}

const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

impl NameHasher {
    /// The hash and wire length of `name` (presentation form, no trailing
    /// dot, ASCII letters in any case); `None` for a name the filter can
    /// never see (empty, an empty label, a label over 63 bytes, over 255
    /// bytes on the wire).
    pub fn hash(&self, name: &str) -> Option<(u64, u8)> {
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return None;
        }
        let labels: Vec<&[u8]> = name.split('.').map(str::as_bytes).collect();
        let wire: usize = labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
        if wire > 255 || labels.iter().any(|l| l.is_empty() || l.len() > 63) {
            return None;
        }
        let mut h = self.seed;
        for label in labels.iter().rev() {
            let mut lh = self.seed ^ label.len() as u64;
            for chunk in label.chunks(8) {
                let mut w = [0u8; 8];
                for (d, b) in w.iter_mut().zip(chunk) {
                    *d = b.to_ascii_lowercase();
                }
                lh = (lh ^ u64::from_le_bytes(w)).wrapping_mul(FNV_PRIME);
                lh ^= lh >> 32;
            }
            h = fmix64(h.rotate_left(23) ^ lh);
        }
        Some((h, wire as u8))
    }

    /// The map key of a name entry.
    pub fn key(&self, name: &str, matching: NameMatch, qtype: u16) -> Option<NameKey> {
        let (hash, len) = self.hash(name)?;
        let kind = match matching {
            NameMatch::Exact => KIND_EXACT,
            NameMatch::Suffix => KIND_SUFFIX,
            NameMatch::Below => KIND_BELOW,
        };
        Some(NameKey { hash, len, kind, qtype, pad: 0 })
    }
}

/// Now on both clocks: (CLOCK_BOOTTIME ns, wall ms).
fn clocks() -> (u64, UnixMillis) {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    let boot = (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64);
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as UnixMillis;
    (boot, wall)
}

fn to_kernel(expires: UnixMillis) -> u64 {
    let (boot, wall) = clocks();
    if expires <= wall {
        // Already over: an expiry at "now" never matches again.
        return boot;
    }
    boot.saturating_add((expires - wall).saturating_mul(1_000_000))
}

fn to_wall(expires_ns: u64) -> UnixMillis {
    let (boot, wall) = clocks();
    if expires_ns >= boot {
        wall.saturating_add((expires_ns - boot) / 1_000_000)
    } else {
        wall.saturating_sub((boot - expires_ns).div_ceil(1_000_000))
    }
}

fn map_err(map: &'static str, e: MapError) -> EnforceError {
    if let MapError::SyscallError(s) = &e
        && s.io_error.raw_os_error() == Some(libc::E2BIG)
    {
        return EnforceError::Full { map };
    }
    EnforceError::Map { map, message: e.to_string() }
}

fn verdict_of(v: u32) -> Verdict {
    if v == VERDICT_ALLOW { Verdict::Allow } else { Verdict::Drop }
}

fn raw_verdict(v: Verdict) -> u32 {
    match v {
        Verdict::Drop => VERDICT_DROP,
        Verdict::Allow => VERDICT_ALLOW,
    }
}

struct Maps {
    src_v4: HashMap<MapData, u32, RawEntry>,
    src_v6: HashMap<MapData, [u8; 16], RawEntry>,
    net_v4: LpmTrie<MapData, [u8; 4], RawEntry>,
    net_v6: LpmTrie<MapData, [u8; 16], RawEntry>,
    names: HashMap<MapData, NameKey, RawEntry>,
    suffixes: HashMap<MapData, SuffixKey, u32>,
    /// The counting filter: a byte per slot, non-zero while a presence
    /// key's hash falls there.
    slots: Array<MapData, u8>,
    slot_mask: u32,
    /// Presence keys per non-zero slot (the exact counts; the kernel copy
    /// saturates at 255).
    slot_counts: std::collections::HashMap<u32, u32>,
    /// Name entries per (hash, length) and presence bit: the source of
    /// the `suffixes` masks.
    counts: std::collections::HashMap<(u64, u8), [u32; 6]>,
    texts: HashMap<MapData, NameKey, NameText>,
    drops: PerCpuArray<MapData, u64>,
    config: Array<MapData, Config>,
    attached: HashMap<MapData, u64, u64>,
    /// Entries per source map (`SOURCE_MAPS` order), the source of the
    /// `config.empty` bits.
    source_counts: [u64; 4],
}

impl Maps {
    /// Counts one name entry more (`true`) or less, and rewrites the mask.
    fn bump(&mut self, k: &NameKey, more: bool) -> Result<(), EnforceError> {
        let existed = self.counts.contains_key(&(k.hash, k.len));
        let c = self.counts.entry((k.hash, k.len)).or_default();
        let b = presence_bit(k);
        c[b] = if more { c[b] + 1 } else { c[b].saturating_sub(1) };
        let mask = c.iter().enumerate().fold(0u32, |m, (i, n)| if *n > 0 { m | 1 << i } else { m });
        let sk = SuffixKey { hash: k.hash, len: k.len, pad: [0; 7] };
        if mask == 0 {
            self.counts.remove(&(k.hash, k.len));
            removed("suffixes", self.suffixes.remove(&sk))?;
            if existed {
                self.count_slot(k.hash, false)?;
            }
        } else {
            // Before the flag below: a packet that sees the flag finds the mask.
            self.suffixes.insert(sk, mask, 0).map_err(|e| map_err("suffixes", e))?;
            // After the presence key: the kernel never sees a non-zero slot
            // whose key is missing in a way that loses a match.
            if !existed {
                self.count_slot(k.hash, true)?;
            }
        }
        self.set_names_flag()
    }

    /// The counting-filter slot of a presence key's hash.
    fn slot_of(&self, hash: u64) -> u32 {
        (hash as u32) & self.slot_mask
    }

    /// One presence key more (`true`) or less in `hash`'s slot.
    fn count_slot(&mut self, hash: u64, more: bool) -> Result<(), EnforceError> {
        let slot = self.slot_of(hash);
        let n = self.slot_counts.get(&slot).copied().unwrap_or(0);
        let n = if more { n + 1 } else { n.saturating_sub(1) };
        if n == 0 {
            self.slot_counts.remove(&slot);
        } else {
            self.slot_counts.insert(slot, n);
        }
        self.write_slot(slot, n)
    }

    fn write_slot(&mut self, slot: u32, n: u32) -> Result<(), EnforceError> {
        self.slots.set(slot, n.min(255) as u8, 0).map_err(|e| map_err(SLOTS_MAP, e))
    }

    /// Keeps `config.names` in step with whether any name entry exists.
    fn set_names_flag(&mut self) -> Result<(), EnforceError> {
        let want = u32::from(!self.counts.is_empty());
        let mut cfg = self.config.get(&0, 0).map_err(|e| map_err("config", e))?;
        if cfg.names != want {
            cfg.names = want;
            self.config.set(0, cfg, 0).map_err(|e| map_err("config", e))?;
        }
        Ok(())
    }

    /// One entry more (`true`) or less in source map `index`. An empty
    /// map's bit is cleared before its first entry goes in (call this
    /// before the insert) and set after its last one went (after the
    /// remove), so that no packet skips a map holding a live entry.
    fn count_source(&mut self, index: usize, more: bool) -> Result<(), EnforceError> {
        let n = &mut self.source_counts[index];
        *n = if more { *n + 1 } else { n.saturating_sub(1) };
        let empty = *n == 0;
        self.set_empty_bit(index, empty)
    }

    fn set_empty_bit(&mut self, index: usize, empty: bool) -> Result<(), EnforceError> {
        let bit = 1u32 << index;
        let mut cfg = self.config.get(&0, 0).map_err(|e| map_err("config", e))?;
        let want = if empty { cfg.empty | bit } else { cfg.empty & !bit };
        if cfg.empty != want {
            cfg.empty = want;
            self.config.set(0, cfg, 0).map_err(|e| map_err("config", e))?;
        }
        Ok(())
    }

    /// Counts the entries of the source maps (pinned maps reused) and
    /// writes the `config.empty` bits.
    fn rebuild_source_counts(&mut self) -> Result<(), EnforceError> {
        let counts = [
            self.src_v4.keys().count(),
            self.src_v6.keys().count(),
            self.net_v4.keys().count(),
            self.net_v6.keys().count(),
        ];
        for (i, n) in counts.into_iter().enumerate() {
            self.source_counts[i] = n as u64;
            self.set_empty_bit(i, n == 0)?;
        }
        Ok(())
    }

    /// Recomputes the masks from the name entries (pinned maps reused).
    fn rebuild_presence(&mut self) -> Result<(), EnforceError> {
        let keys: Vec<NameKey> = self.names.keys().collect::<Result<_, _>>().map_err(|e| map_err("names", e))?;
        let stale: Vec<SuffixKey> =
            self.suffixes.keys().collect::<Result<_, _>>().map_err(|e| map_err("suffixes", e))?;
        // Slots the previous run set: they are rewritten below from the
        // entries; those no entry needs any more are cleared after.
        let stale_slots: std::collections::HashSet<u32> = stale.iter().map(|sk| self.slot_of(sk.hash)).collect();
        for sk in stale {
            removed("suffixes", self.suffixes.remove(&sk))?;
        }
        self.counts.clear();
        self.slot_counts.clear();
        for k in keys {
            self.bump(&k, true)?;
        }
        for slot in stale_slots {
            if !self.slot_counts.contains_key(&slot) {
                self.write_slot(slot, 0)?;
            }
        }
        self.set_names_flag()
    }
}

/// Which map holds a source key, and its key there.
enum SourceSlot {
    V4([u8; 4]),
    V6([u8; 16]),
    Net4(LpmKey<[u8; 4]>),
    Net6(LpmKey<[u8; 16]>),
}

fn source_slot(net: &IpNet) -> SourceSlot {
    match net.trunc() {
        IpNet::V4(n) if n.prefix_len() == 32 => SourceSlot::V4(n.addr().octets()),
        IpNet::V6(n) if n.prefix_len() == 128 => SourceSlot::V6(n.addr().octets()),
        IpNet::V4(n) => SourceSlot::Net4(LpmKey::new(u32::from(n.prefix_len()), n.addr().octets())),
        IpNet::V6(n) => SourceSlot::Net6(LpmKey::new(u32::from(n.prefix_len()), n.addr().octets())),
    }
}

/// The loaded filter: programs and maps. Dropping it unloads the programs
/// from this process; sockets they are attached to keep them (and the maps)
/// until detached.
pub struct Filter {
    ebpf: Mutex<Ebpf>,
    maps: Mutex<Maps>,
    hasher: NameHasher,
    pin_path: Option<PathBuf>,
    status: Arc<Mutex<FilterStatus>>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> EnforceError {
    let text = e.to_string();
    let hint = if text.contains("Operation not permitted") || text.contains("EPERM") || text.contains("os error 1)") {
        " (loading eBPF needs CAP_BPF, or root)"
    } else {
        ""
    };
    EnforceError::Unavailable(format!("{what}: {text}{hint}"))
}

/// A chain of error sources as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn is_bpffs(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: zeroed statfs is a valid out-buffer; c is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: writes at most 8 bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    let mut seed = u64::from_ne_bytes(b);
    if n != 8 {
        let (boot, wall) = clocks();
        seed = fmix64(boot ^ wall.rotate_left(32) ^ u64::from(std::process::id()));
    }
    seed | 1
}

impl Filter {
    /// Loads the filter with room for `max_entries` entries per map.
    /// With `pin_path` (a directory on a bpffs, created when missing) the
    /// maps are pinned there, or reused when a previous run left them.
    pub fn open(max_entries: u32, pin_path: Option<&Path>) -> Result<Filter, EnforceError> {
        let max_entries = max_entries.max(1);
        let mut loader = EbpfLoader::new();
        // No CO-RE relocations in the object: skip parsing the kernel's BTF
        // (seconds in a debug build).
        loader.btf(None);
        for m in ENTRY_MAPS {
            loader.map_max_entries(m, max_entries);
        }
        loader.map_max_entries(SLOTS_MAP, filter_slots(max_entries));
        let pins: Vec<(&str, PathBuf)> = match pin_path {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| unavailable(&format!("cannot create pin_path {}", dir.display()), e))?;
                if !is_bpffs(dir) {
                    return Err(EnforceError::Unavailable(format!(
                        "pin_path {} is not on a bpf filesystem (mount one: mount -t bpf bpf /sys/fs/bpf)",
                        dir.display()
                    )));
                }
                PINNED_MAPS.iter().map(|m| (*m, dir.join(m))).collect()
            }
            None => Vec::new(),
        };
        for (m, p) in &pins {
            loader.map_pin_path(m, p.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| unavailable("cannot load the eBPF filter", chain(&e)))?;
        for name in [SOCKET_PROGRAM, CGROUP_PROGRAM] {
            let prog = ebpf
                .program_mut(name)
                .ok_or_else(|| EnforceError::Unavailable(format!("the filter object has no program {name}")))?;
            let loaded = match prog {
                aya::programs::Program::SocketFilter(p) => p.load(),
                aya::programs::Program::CgroupSkb(p) => p.load(),
                _ => Err(ProgramError::NotLoaded),
            };
            loaded.map_err(|e| unavailable(&format!("the kernel refused program {name}"), chain(&e)))?;
        }
        macro_rules! take {
            ($name:literal) => {
                ebpf.take_map($name)
                    .ok_or_else(|| EnforceError::Unavailable(format!("the filter object has no map {}", $name)))?
                    .try_into()
                    .map_err(|e: MapError| EnforceError::Unavailable(format!("map {}: {e}", $name)))?
            };
        }
        let mut maps = Maps {
            src_v4: take!("src_v4"),
            src_v6: take!("src_v6"),
            net_v4: take!("net_v4"),
            net_v6: take!("net_v6"),
            names: take!("names"),
            suffixes: take!("suffixes"),
            slots: take!("suffix_slots"),
            slot_mask: 0,
            slot_counts: Default::default(),
            counts: Default::default(),
            texts: take!("name_texts"),
            drops: take!("drops"),
            config: take!("config"),
            attached: take!("attached"),
            source_counts: [0; 4],
        };
        // Pinned slots keep the size they were made with.
        let slots = maps.slots.len();
        if !slots.is_power_of_two() {
            return Err(EnforceError::Unavailable(format!("map {SLOTS_MAP}: {slots} slots, not a power of two")));
        }
        maps.slot_mask = slots - 1;
        let mut cfg = maps.config.get(&0, 0).map_err(|e| map_err("config", e))?;
        if cfg.slot_mask != maps.slot_mask {
            // Before any slot is counted, so that the kernel never indexes
            // with another mask than the one the counts were made with.
            cfg.slot_mask = maps.slot_mask;
            maps.config.set(0, cfg, 0).map_err(|e| map_err("config", e))?;
        }
        maps.rebuild_presence()?;
        maps.rebuild_source_counts()?;
        let mut cfg = maps.config.get(&0, 0).map_err(|e| map_err("config", e))?;
        if cfg.seed == 0 {
            cfg.seed = random_seed();
            maps.config.set(0, cfg, 0).map_err(|e| map_err("config", e))?;
        }
        Ok(Filter {
            ebpf: Mutex::new(ebpf),
            maps: Mutex::new(maps),
            hasher: NameHasher { seed: cfg.seed },
            pin_path: pin_path.map(Path::to_path_buf),
            status: Arc::new(Mutex::new(FilterStatus { up: false, mode: "none".into(), ..Default::default() })),
        })
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The name hasher with this filter's seed.
    pub fn hasher(&self) -> NameHasher {
        self.hasher
    }

    /// Where the maps are pinned.
    pub fn pin_path(&self) -> Option<&Path> {
        self.pin_path.as_deref()
    }

    /// The shared attachment status the attacher keeps up to date.
    pub fn status_handle(&self) -> Arc<Mutex<FilterStatus>> {
        self.status.clone()
    }

    /// Sets the destination port the cgroup program checks.
    pub fn set_port(&self, port: u16) -> Result<(), EnforceError> {
        let mut maps = self.maps();
        let mut cfg = maps.config.get(&0, 0).map_err(|e| map_err("config", e))?;
        cfg.port = u32::from(port);
        maps.config.set(0, cfg, 0).map_err(|e| map_err("config", e))
    }

    /// Records (or forgets) a socket inode this filter was attached to; kept
    /// in a pinned map so that a restart recognises its own filter.
    pub fn mark_attached(&self, inode: u64, on: bool) {
        let mut m = self.maps();
        let r = if on {
            m.attached.insert(inode, 1, 0).map_err(|e| e.to_string())
        } else {
            m.attached.remove(&inode).map_err(|e| e.to_string())
        };
        if let Err(e) = r {
            tracing::debug!(inode, error = %e, "attached-socket record not updated");
        }
    }

    /// Whether a (previous) run of dnsbgpd attached this filter to `inode`.
    pub fn was_attached(&self, inode: u64) -> bool {
        self.maps().attached.get(&inode, 0).is_ok()
    }

    /// Runs `f` with the descriptor of the socket-filter program (for
    /// SO_ATTACH_BPF on the resolver's sockets).
    pub fn with_socket_program<T>(&self, f: impl FnOnce(BorrowedFd<'_>) -> T) -> Result<T, EnforceError> {
        let ebpf = self.ebpf.lock().unwrap_or_else(|p| p.into_inner());
        let prog: &SocketFilter = ebpf
            .program(SOCKET_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| EnforceError::Unavailable("socket filter program missing".into()))?;
        let fd = prog.fd().map_err(|e| EnforceError::Unavailable(e.to_string()))?;
        Ok(f(fd.as_fd()))
    }

    /// Runs `f` with the cgroup program (to attach it).
    pub fn with_cgroup_program<T>(&self, f: impl FnOnce(&mut CgroupSkb) -> T) -> Result<T, EnforceError> {
        let mut ebpf = self.ebpf.lock().unwrap_or_else(|p| p.into_inner());
        let prog: &mut CgroupSkb = ebpf
            .program_mut(CGROUP_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| EnforceError::Unavailable("cgroup program missing".into()))?;
        Ok(f(prog))
    }

    /// Runs `program` once per `repeat` on `packet` (an Ethernet frame)
    /// with BPF_PROG_TEST_RUN; returns the program's verdict (`0` drop)
    /// and the mean time per run in ns.
    pub fn test_run(&self, program: &str, packet: &[u8], repeat: u32) -> Result<(u32, u64), String> {
        let ebpf = self.ebpf.lock().unwrap_or_else(|p| p.into_inner());
        let opts = TestRunOptions { data_in: Some(packet), repeat: repeat.max(1), ..Default::default() };
        let r = match ebpf.program(program) {
            Some(aya::programs::Program::SocketFilter(p)) => p.test_run(opts),
            Some(aya::programs::Program::CgroupSkb(p)) => p.test_run(opts),
            _ => return Err(format!("no program {program}")),
        }
        .map_err(|e| chain(&e))?;
        Ok((r.return_value, r.duration.as_nanos() as u64))
    }

    fn name_key(&self, name: &str, matching: NameMatch, qtype: u16) -> Result<NameKey, EnforceError> {
        self.hasher.key(name, matching, qtype).ok_or_else(|| EnforceError::Map {
            map: "names",
            message: format!(
                "{name:?} is not a name the filter can match (empty label, label over 63 or name over 255 bytes)"
            ),
        })
    }

    fn upsert_source(&self, net: &IpNet, verdict: Verdict, expires_ns: u64) -> Result<(), EnforceError> {
        let mut m = self.maps();
        let mut e = RawEntry { expires_ns, hits: 0, verdict: raw_verdict(verdict), prefixlen: 0 };
        let slot = source_slot(net);
        // An LPM lookup finds the longest match, maybe another range: only
        // an entry of the same length is this one.
        let (index, old) = match &slot {
            SourceSlot::V4(a) => (0, m.src_v4.get(&u32::from_ne_bytes(*a), 0).ok()),
            SourceSlot::V6(a) => (1, m.src_v6.get(a, 0).ok()),
            SourceSlot::Net4(k) => (2, m.net_v4.get(k, 0).ok().filter(|o| o.prefixlen == k.prefix_len())),
            SourceSlot::Net6(k) => (3, m.net_v6.get(k, 0).ok().filter(|o| o.prefixlen == k.prefix_len())),
        };
        e.hits = old.map_or(0, |o| o.hits);
        if old.is_none() {
            m.count_source(index, true)?;
        }
        let r = match slot {
            SourceSlot::V4(a) => {
                e.prefixlen = 32;
                m.src_v4.insert(u32::from_ne_bytes(a), e, 0)
            }
            SourceSlot::V6(a) => {
                e.prefixlen = 128;
                m.src_v6.insert(a, e, 0)
            }
            SourceSlot::Net4(k) => {
                e.prefixlen = k.prefix_len();
                m.net_v4.insert(&k, e, 0)
            }
            SourceSlot::Net6(k) => {
                e.prefixlen = k.prefix_len();
                m.net_v6.insert(&k, e, 0)
            }
        };
        if let Err(x) = r {
            if old.is_none() {
                m.count_source(index, false)?;
            }
            return Err(map_err(SOURCE_MAPS[index], x));
        }
        Ok(())
    }

    fn get_source(&self, net: &IpNet) -> Option<RawEntry> {
        let m = self.maps();
        match source_slot(net) {
            SourceSlot::V4(a) => m.src_v4.get(&u32::from_ne_bytes(a), 0).ok(),
            SourceSlot::V6(a) => m.src_v6.get(&a, 0).ok(),
            SourceSlot::Net4(k) => m.net_v4.get(&k, 0).ok().filter(|o| o.prefixlen == k.prefix_len()),
            SourceSlot::Net6(k) => m.net_v6.get(&k, 0).ok().filter(|o| o.prefixlen == k.prefix_len()),
        }
    }
}

fn removed(map: &'static str, r: Result<(), MapError>) -> Result<bool, EnforceError> {
    match r {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound | MapError::ElementNotFound) => Ok(false),
        Err(MapError::SyscallError(s)) if s.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(map_err(map, e)),
    }
}

fn text_of(t: &NameText) -> Option<String> {
    let len = usize::from(t.text[0]);
    let bytes = t.text.get(1..1 + len)?;
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

impl Enforcer for Filter {
    fn upsert(&self, key: &KernelKey, verdict: Verdict, expires: UnixMillis) -> Result<(), EnforceError> {
        let expires_ns = to_kernel(expires);
        match key {
            KernelKey::Source(net) => self.upsert_source(net, verdict, expires_ns),
            KernelKey::Name { name, matching, qtype } => {
                let k = self.name_key(name, *matching, *qtype)?;
                let mut m = self.maps();
                let old = m.names.get(&k, 0).ok();
                if old.is_none() {
                    let lower = name.to_ascii_lowercase();
                    let mut t = NameText { text: [0; 256] };
                    let n = lower.len().min(255);
                    t.text[0] = n as u8;
                    t.text[1..1 + n].copy_from_slice(&lower.as_bytes()[..n]);
                    m.texts.insert(k, t, 0).map_err(|x| map_err("name_texts", x))?;
                }
                let e = RawEntry {
                    expires_ns,
                    hits: old.map_or(0, |o| o.hits),
                    verdict: raw_verdict(verdict),
                    prefixlen: 0,
                };
                m.names.insert(k, e, 0).map_err(|x| map_err("names", x))?;
                if old.is_none() {
                    m.bump(&k, true)?;
                }
                Ok(())
            }
        }
    }

    fn remove(&self, key: &KernelKey) -> Result<bool, EnforceError> {
        match key {
            KernelKey::Source(net) => {
                let mut m = self.maps();
                let (index, r) = match source_slot(net) {
                    SourceSlot::V4(a) => (0, removed("src_v4", m.src_v4.remove(&u32::from_ne_bytes(a)))),
                    SourceSlot::V6(a) => (1, removed("src_v6", m.src_v6.remove(&a))),
                    SourceSlot::Net4(k) => (2, removed("net_v4", m.net_v4.remove(&k))),
                    SourceSlot::Net6(k) => (3, removed("net_v6", m.net_v6.remove(&k))),
                };
                if let Ok(true) = r {
                    m.count_source(index, false)?;
                }
                r
            }
            KernelKey::Name { name, matching, qtype } => {
                let Ok(k) = self.name_key(name, *matching, *qtype) else { return Ok(false) };
                let mut m = self.maps();
                let r = removed("names", m.names.remove(&k))?;
                removed("name_texts", m.texts.remove(&k))?;
                if r {
                    m.bump(&k, false)?;
                }
                Ok(r)
            }
        }
    }

    fn entries(&self) -> Result<Vec<KernelEntry>, EnforceError> {
        let mut out = Vec::new();
        let mut orphans = Vec::new();
        {
            let m = self.maps();
            let entry = |key: KernelKey, e: &RawEntry| KernelEntry {
                key,
                verdict: verdict_of(e.verdict),
                expires: to_wall(e.expires_ns),
                hits: e.hits,
            };
            for r in m.src_v4.iter() {
                let (k, e) = r.map_err(|x| map_err("src_v4", x))?;
                let a = std::net::Ipv4Addr::from(k.to_ne_bytes());
                out.push(entry(KernelKey::Source(IpNet::from(IpAddr::V4(a))), &e));
            }
            for r in m.src_v6.iter() {
                let (k, e) = r.map_err(|x| map_err("src_v6", x))?;
                out.push(entry(KernelKey::Source(IpNet::from(IpAddr::V6(k.into()))), &e));
            }
            for r in m.net_v4.iter() {
                let (k, e) = r.map_err(|x| map_err("net_v4", x))?;
                let net = ipnet::Ipv4Net::new(k.data().into(), k.prefix_len() as u8)
                    .map_err(|x| EnforceError::Map { map: "net_v4", message: x.to_string() })?;
                out.push(entry(KernelKey::Source(IpNet::V4(net)), &e));
            }
            for r in m.net_v6.iter() {
                let (k, e) = r.map_err(|x| map_err("net_v6", x))?;
                let net = ipnet::Ipv6Net::new(k.data().into(), k.prefix_len() as u8)
                    .map_err(|x| EnforceError::Map { map: "net_v6", message: x.to_string() })?;
                out.push(entry(KernelKey::Source(IpNet::V6(net)), &e));
            }
            for r in m.names.iter() {
                let (k, e) = r.map_err(|x| map_err("names", x))?;
                let matching = match k.kind {
                    KIND_EXACT => Some(NameMatch::Exact),
                    KIND_SUFFIX => Some(NameMatch::Suffix),
                    KIND_BELOW => Some(NameMatch::Below),
                    _ => None,
                };
                match (matching, m.texts.get(&k, 0).ok().as_ref().and_then(text_of)) {
                    (Some(matching), Some(name)) if self.hasher.key(&name, matching, k.qtype) == Some(k) => {
                        out.push(entry(KernelKey::Name { name: name.into_boxed_str(), matching, qtype: k.qtype }, &e))
                    }
                    // Written by something else, or with another seed:
                    // nobody can name it, so nobody could remove it.
                    _ => orphans.push(k),
                }
            }
        }
        if !orphans.is_empty() {
            let mut m = self.maps();
            for k in &orphans {
                if removed("names", m.names.remove(k))? {
                    m.bump(k, false)?;
                }
                removed("name_texts", m.texts.remove(k))?;
            }
            tracing::warn!(count = orphans.len(), "removed kernel name entries without a readable name");
        }
        Ok(out)
    }

    fn hits(&self, key: &KernelKey) -> Result<Option<u64>, EnforceError> {
        match key {
            KernelKey::Source(net) => Ok(self.get_source(net).map(|e| e.hits)),
            KernelKey::Name { name, matching, qtype } => {
                let Ok(k) = self.name_key(name, *matching, *qtype) else { return Ok(None) };
                Ok(self.maps().names.get(&k, 0).ok().map(|e| e.hits))
            }
        }
    }

    fn drops(&self) -> Result<DropCounters, EnforceError> {
        let m = self.maps();
        let mut sums = [0u64; 3];
        for (i, s) in sums.iter_mut().enumerate() {
            let v = m.drops.get(&(i as u32), 0).map_err(|e| map_err("drops", e))?;
            *s = v.iter().sum();
        }
        Ok(DropCounters { source: sums[0], qname: sums[1], suffix: sums[2] })
    }

    fn status(&self) -> FilterStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_case_and_trailing_dot_and_separates_kinds() {
        let h = NameHasher { seed: 0x1234_5678 };
        assert_eq!(h.hash("WWW.Example.COM"), h.hash("www.example.com."));
        assert_eq!(h.hash("www.example.com").map(|x| x.1), Some(17));
        assert_ne!(h.hash("www.example.com"), h.hash("wwwexample.com"));
        assert_ne!(h.hash("a.bc"), h.hash("ab.c"));
        assert_ne!(h.key("x.y", NameMatch::Exact, 1), h.key("x.y", NameMatch::Suffix, 1));
        assert_ne!(NameHasher { seed: 1 }.hash("x.y"), NameHasher { seed: 3 }.hash("x.y"));
        assert_eq!(h.hash(""), None);
        assert_eq!(h.hash("a..b"), None);
        assert_eq!(h.hash(&"a".repeat(64)), None);
        let long = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "a".repeat(61));
        assert_eq!(h.hash(&long).map(|x| x.1), Some(255));
        assert_eq!(h.hash(&format!("b{long}")), None);
    }

    #[test]
    fn clock_conversion_round_trips_within_a_millisecond() {
        let (_, wall) = clocks();
        let t = wall + 60_000;
        let back = to_wall(to_kernel(t));
        assert!(back.abs_diff(t) <= 2, "{back} vs {t}");
        // Past expiries become "now": they never match again.
        let (boot, _) = clocks();
        assert!(to_kernel(wall.saturating_sub(5_000)) <= boot + 1_000_000);
    }
}
