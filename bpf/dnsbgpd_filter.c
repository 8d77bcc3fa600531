// SPDX-License-Identifier: MIT OR Apache-2.0
//
// dnsbgpd's kernel filter: drops packets to the resolver that the blocking
// engine says must not reach it. Two entry points share one matcher:
//
//   dnsbgpd_socket   socket filter, SO_ATTACH_BPF on the resolver's own
//                    UDP sockets and TCP listeners (returns 0 = drop,
//                    skb->len = keep);
//   dnsbgpd_cgroup   cgroup_skb/ingress on the resolver's cgroup; it also
//                    sees the resolver's upstream traffic, so it checks the
//                    destination port first (returns 0 = drop, 1 = keep).
//
// Per packet: the source address against exact v4/v6 hash maps, then the
// v4/v6 LPM tries (each skipped while dnsbgpd says that map is empty,
// config.empty); for UDP the question name, one lookup per suffix (most
// specific first), each lookup behind a one-byte counting-filter slot (an
// array indexed by the suffix hash, inlined by the JIT) so that a name with
// no entry costs no hash lookup at all. The name is parsed and its suffix
// hashes folded by plain bounded loops in one global function (scan_name).
// Every entry carries its expiry in CLOCK_BOOTTIME ns and a hit counter; the
// clock is read only once an entry is found (clock_of). Whatever cannot be
// parsed passes.
//
// Name keys: every label is hashed (eight lowercased bytes at a time, see
// label_step, seeded from the `config` map), suffix hashes are folded from the right
// (H(root) = seed, H(label.rest) = mix(rotl(H(rest), 23) ^ h(label))), and
// the key is {hash, wire length of the suffix, kind, qtype}. The userspace
// twin is `NameHasher` in src/blocking/filter.rs; tests/bpf_filter.rs checks
// they agree. All loads are relative to the network header, so the same code
// runs on a socket filter (data at the transport header), on cgroup_skb and
// under BPF_PROG_TEST_RUN (data at the network header).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#define MAX_LABELS 128
#define NAME_MAX_WIRE 255
#define BUF_SIZE 512
#define QOFF 12 // the question's offset in scratch.buf (after the DNS header)

#define VERDICT_DROP 0
#define VERDICT_ALLOW 1

#define KIND_EXACT 1
#define KIND_SUFFIX 2
#define KIND_BELOW 3

#define QTYPE_ANY 255

#define REASON_SOURCE 0
#define REASON_QNAME 1
#define REASON_SUFFIX 2
#define REASONS 3

#define FNV_PRIME 0x100000001b3ULL

struct entry {
	__u64 expires_ns; // CLOCK_BOOTTIME; the entry stops matching at it
	__u64 hits;       // packets matched (atomic add)
	__u32 verdict;    // VERDICT_*
	__u32 prefixlen;  // source ranges: the range's length (LPM retry)
};

struct name_key {
	__u64 hash;
	__u8 len;   // wire length of the suffix, root label included
	__u8 kind;  // KIND_*
	__u16 qtype;
	__u32 pad;  // zero
};

// One per name (hash + length) that has any entry: a bitmask of the
// (kind, qtype-specific or ANY) combinations present, so that a name with
// no entry costs one lookup per suffix instead of four.
struct suffix_key {
	__u64 hash;
	__u8 len;
	__u8 pad[7]; // zero
};

#define HAS(kind, specific) (1u << (((kind) - 1) * 2 + (specific)))

struct lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};

struct config {
	__u64 seed;
	__u32 port;  // cgroup mode: the resolver's port (host order)
	__u32 names; // non-zero when any name entry exists (else no name parse)
	__u32 slot_mask; // suffix_slots has slot_mask + 1 slots (a power of two)
	__u32 empty; // EMPTY_* bits: source maps known to be empty (lookups skipped)
};

#define EMPTY_SRC_V4 1
#define EMPTY_SRC_V6 2
#define EMPTY_NET_V4 4
#define EMPTY_NET_V6 8

// Per-CPU packet state: the DNS header and question (too large for the
// stack) and what scan_name found in them.
struct scratch {
	__u32 pos;   // offset in buf of the name's root label
	__u32 n;     // labels of the name
	__u8 buf[BUF_SIZE]; // DNS header, then the question at QOFF
	__u64 lh[MAX_LABELS];  // per-label hash
	__u64 sh[MAX_LABELS];  // suffix hash from label k to the end
	__u8 off[MAX_LABELS];  // offset of label k's length byte in the name
	__u8 slot[MAX_LABELS]; // non-zero: suffix k may have an entry
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct entry);
} src_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u8[16]);
	__type(value, struct entry);
} src_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4);
	__type(value, struct entry);
} net_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v6);
	__type(value, struct entry);
} net_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct name_key);
	__type(value, struct entry);
} names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct suffix_key);
	__type(value, __u32);
} suffixes SEC(".maps");

// Counting filter in front of `suffixes`: slot (hash & slot_mask) counts the
// presence keys whose hash falls there (saturating at 255 in the kernel
// copy; the exact count is kept by dnsbgpd). Zero: no entry for that
// suffix, skip the hash lookups. Sized by dnsbgpd (a power of two).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} suffix_slots SEC(".maps");

// Userspace only: the presentation text of each name entry (the kernel map
// holds hashes), so that a restarted dnsbgpd that reuses pinned maps can
// list and reconcile the entries it finds. Byte 0 is the length.
struct name_text {
	__u8 text[256];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct name_key);
	__type(value, struct name_text);
} name_texts SEC(".maps");

// Userspace only: socket inodes dnsbgpd attached the filter to, so that a
// restart (with pinned maps) tells its own filter from another program's.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} attached SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REASONS);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

enum decision { PASS = 0, DROP = 1 };

static __always_inline __u64 fmix64(__u64 x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

// Eight label bytes at a time (little-endian, zero-padded): ASCII
// uppercase folded to lowercase in all eight lanes at once, then a
// multiply-xorshift step. `NameHasher` does the same per byte.
static __always_inline __u64 label_step(__u64 h, __u64 w)
{
	__u64 t = w & 0x7f7f7f7f7f7f7f7fULL;
	__u64 ge_a = t + 0x3f3f3f3f3f3f3f3fULL; // lane bit 7: low 7 bits >= 'A'
	__u64 gt_z = t + 0x2525252525252525ULL; // lane bit 7: low 7 bits > 'Z'
	__u64 upper = ge_a & ~gt_z & ~w & 0x8080808080808080ULL;
	w |= upper >> 2; // 0x80 >> 2 = 0x20
	h = (h ^ w) * FNV_PRIME;
	return h ^ (h >> 32);
}

static __always_inline void count_drop(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&drops, &reason);
	if (c)
		*c += 1; // per-CPU: no atomics needed
}

// The kernel clock, read once per packet and only when an entry is found
// (bpf_ktime_get_boot_ns costs ~45 ns on the VMs we measured on: more than
// the rest of a miss).
static __always_inline __u64 clock_of(__u64 *now)
{
	if (*now == 0)
		*now = bpf_ktime_get_boot_ns();
	return *now;
}

// A live entry's verdict, counting the hit; -1 when absent or expired.
static __always_inline int apply(struct entry *e, __u64 *now)
{
	if (!e || e->expires_ns <= clock_of(now))
		return -1;
	__sync_fetch_and_add(&e->hits, 1);
	return e->verdict == VERDICT_DROP ? DROP : PASS;
}

static __always_inline int check_v4(struct __sk_buff *skb, __u64 *now, __u32 empty, __u32 *ihl, __u8 *proto, __u32 *total)
{
	__u8 h[20];
	if (bpf_skb_load_bytes_relative(skb, 0, h, sizeof(h), BPF_HDR_START_NET))
		return -2;
	if ((h[0] >> 4) != 4)
		return -2;
	*ihl = (h[0] & 0x0f) * 4;
	*proto = h[9];
	*total = ((__u32)h[2] << 8) | h[3];
	// A fragment other than the first carries no transport header.
	if (((h[6] & 0x1f) | h[7]) != 0)
		*proto = 0;
	int v;
	if (!(empty & EMPTY_SRC_V4)) {
		__u32 addr;
		__builtin_memcpy(&addr, &h[12], 4);
		v = apply(bpf_map_lookup_elem(&src_v4, &addr), now);
		if (v >= 0)
			return v;
	}
	if (empty & EMPTY_NET_V4)
		return -1;
	struct lpm_v4 k = { .prefixlen = 32 };
	__builtin_memcpy(k.addr, &h[12], 4);
	// The longest range may have expired; try a few shorter ones.
#pragma unroll
	for (int i = 0; i < 4; i++) {
		struct entry *e = bpf_map_lookup_elem(&net_v4, &k);
		if (!e)
			return -1;
		v = apply(e, now);
		if (v >= 0)
			return v;
		if (e->prefixlen == 0)
			return -1;
		k.prefixlen = e->prefixlen - 1;
	}
	return -1;
}

static __always_inline int check_v6(struct __sk_buff *skb, __u64 *now, __u32 empty, __u32 *ihl, __u8 *proto, __u32 *total)
{
	__u8 h[40];
	if (bpf_skb_load_bytes_relative(skb, 0, h, sizeof(h), BPF_HDR_START_NET))
		return -2;
	if ((h[0] >> 4) != 6)
		return -2;
	*ihl = 40;
	*proto = h[6]; // extension headers: not parsed, no name check
	*total = 40 + (((__u32)h[4] << 8) | h[5]);
	int v;
	if (!(empty & EMPTY_SRC_V6)) {
		v = apply(bpf_map_lookup_elem(&src_v6, &h[8]), now);
		if (v >= 0)
			return v;
	}
	if (empty & EMPTY_NET_V6)
		return -1;
	struct lpm_v6 k = { .prefixlen = 128 };
	__builtin_memcpy(k.addr, &h[8], 16);
#pragma unroll
	for (int i = 0; i < 4; i++) {
		struct entry *e = bpf_map_lookup_elem(&net_v6, &k);
		if (!e)
			return -1;
		v = apply(e, now);
		if (v >= 0)
			return v;
		if (e->prefixlen == 0)
			return -1;
		k.prefixlen = e->prefixlen - 1;
	}
	return -1;
}

// The question name from QOFF in s->buf, in one call: first label by label
// from the left (per label its hash in s->lh, its offset in s->off), then
// the suffix hashes from the right (s->sh) with their counting-filter slots
// (s->slot). Leaves the label count in s->n and the root label's offset in
// s->pos. Returns -1 when the name cannot be parsed, 0 when no suffix can
// have an entry (the common miss), 1 when some may.
//
// Plain bounded loops, no bpf_loop: a callback round per label cost ~12 ns
// more. This is a global function so that the verifier checks it once on
// its own: inlined, every exit of the loops would re-walk the rest of the
// program (over the 1 M instruction limit).
__attribute__((noinline)) int scan_name(struct scratch *s, struct config *cfg, __u32 avail)
{
	if (!s || !cfg)
		return -1;
	__u64 seed = cfg->seed;
	__u32 pos = QOFF;
	__u32 nl = 0;
	for (__u32 n = 0; n <= MAX_LABELS; n++) {
		if (pos >= avail || pos > QOFF + NAME_MAX_WIRE)
			return -1;
		__u8 len = s->buf[pos & (BUF_SIZE - 1)];
		if (len == 0) {
			if (pos + 1 - QOFF > NAME_MAX_WIRE)
				return -1;
			nl = n;
			break;
		}
		// Compression pointers (and the reserved 0x40/0x80 types) are not
		// followed: a question name in a query has nothing to point back to.
		if (len & 0xc0)
			return -1;
		if (pos + 1 + len >= avail || n >= MAX_LABELS)
			return -1;
		__u64 h = seed ^ len;
		for (__u32 j = 0; j < 8; j++) {
			__u32 at = j * 8;
			if (at >= len)
				break;
			__u32 off = pos + 1 + at;
			if (off > BUF_SIZE - 8)
				break; // cannot happen (pos <= QOFF + 255); bounds the load for the verifier
			__u64 w = *(__u64 *)(s->buf + off); // unaligned: fine on the JITs we run on
			__u32 rest = len - at;
			if (rest < 8)
				w &= (1ULL << (rest * 8)) - 1;
			h = label_step(h, w);
		}
		s->lh[n & (MAX_LABELS - 1)] = h;
		s->off[n & (MAX_LABELS - 1)] = pos - QOFF;
		// The length byte read again, from memory: the inner loop's exits
		// narrowed what the verifier knows of `len` in eight different ways,
		// and each would go on into the next label as a state of its own.
		len = *(volatile __u8 *)&s->buf[pos & (BUF_SIZE - 1)];
		pos += 1 + len;
	}
	if (nl == 0)
		return -1; // the root alone, or no root within the bound
	s->n = nl;
	s->pos = pos;
	// Read back from memory, where the verifier does not track it: the
	// loop below then looks the same whatever the label count, and the
	// verifier walks it once instead of once per count.
	nl = *(volatile __u32 *)&s->n;

	__u64 h = seed;
	__u32 mask = cfg->slot_mask;
	__u32 maybe = 0;
	for (__u32 i = 0; i < MAX_LABELS; i++) {
		if (i >= nl)
			break;
		__u32 k = (nl - 1 - i) & (MAX_LABELS - 1);
		h = fmix64(((h << 23) | (h >> 41)) ^ s->lh[k]);
		s->sh[k] = h;
		__u32 idx = (__u32)h & mask;
		__u8 *slot = bpf_map_lookup_elem(&suffix_slots, &idx);
		__u8 m = slot && *slot;
		s->slot[k] = m;
		maybe |= m;
	}
	return maybe != 0;
}

struct lookup_ctx {
	struct scratch *s;
	__u64 now;
	__u32 n;
	__u32 namelen; // wire length of the whole name
	__u16 qtype;
	int verdict; // -1 none yet
	__u32 reason;
};

static __always_inline int lookup_name(struct lookup_ctx *c, __u64 hash, __u8 len, __u8 kind, __u16 qtype)
{
	struct name_key k = { .hash = hash, .len = len, .kind = kind, .qtype = qtype, .pad = 0 };
	return apply(bpf_map_lookup_elem(&names, &k), &c->now);
}

// Suffix `index`: label index to the end; index 0 is the whole name.
static long lookup_suffix(__u64 index, void *arg)
{
	struct lookup_ctx *c = arg;
	struct scratch *s = c->s;
	__u32 k = index & (MAX_LABELS - 1);
	if (k >= c->n)
		return 1;
	if (!s->slot[k])
		return 0;
	__u64 h = s->sh[k];
	__u8 len = c->namelen - s->off[k];
	__u16 q = c->qtype;
	int v;
	struct suffix_key sk = { .hash = h, .len = len };
	__u32 *present = bpf_map_lookup_elem(&suffixes, &sk);
	if (!present)
		return 0;
	__u32 m = *present;
	int specific = q != QTYPE_ANY;
	if (k == 0) {
		if (specific && (m & HAS(KIND_EXACT, 1)) && (v = lookup_name(c, h, len, KIND_EXACT, q)) >= 0)
			goto found_exact;
		if ((m & HAS(KIND_EXACT, 0)) && (v = lookup_name(c, h, len, KIND_EXACT, QTYPE_ANY)) >= 0)
			goto found_exact;
	} else {
		if (specific && (m & HAS(KIND_BELOW, 1)) && (v = lookup_name(c, h, len, KIND_BELOW, q)) >= 0)
			goto found_suffix;
		if ((m & HAS(KIND_BELOW, 0)) && (v = lookup_name(c, h, len, KIND_BELOW, QTYPE_ANY)) >= 0)
			goto found_suffix;
	}
	if (specific && (m & HAS(KIND_SUFFIX, 1)) && (v = lookup_name(c, h, len, KIND_SUFFIX, q)) >= 0)
		goto found_suffix;
	if ((m & HAS(KIND_SUFFIX, 0)) && (v = lookup_name(c, h, len, KIND_SUFFIX, QTYPE_ANY)) >= 0)
		goto found_suffix;
	return 0;
found_exact:
	c->verdict = v;
	c->reason = REASON_QNAME;
	return 1;
found_suffix:
	c->verdict = v;
	c->reason = REASON_SUFFIX;
	return 1;
}

static __always_inline int check_name(struct __sk_buff *skb, struct config *cfg, __u64 now, __u32 l4, __u32 total,
				      __u32 *reason)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return -1;
	// DNS header and question in one load, after the 8-byte UDP header:
	// one helper call fewer than loading them apart.
	__u32 doff = l4 + 8;
	if (total <= doff + 12)
		return -1;
	__u32 avail = total - doff;
	if (avail > 12 + NAME_MAX_WIRE + 4)
		avail = 12 + NAME_MAX_WIRE + 4;
	if (avail < 12 + 5)
		return -1;
	if (bpf_skb_load_bytes_relative(skb, doff, s->buf, avail, BPF_HDR_START_NET))
		return -1;
	if (s->buf[2] & 0x80) // QR: a response
		return -1;
	if (s->buf[4] == 0 && s->buf[5] == 0) // QDCOUNT 0: no question
		return -1;

	int found = scan_name(s, cfg, avail);
	if (found < 0)
		return -1;
	__u32 nl = s->n;
	if (nl == 0 || nl > MAX_LABELS)
		return -1;
	__u32 namelen = s->pos + 1 - QOFF;
	if (namelen > NAME_MAX_WIRE)
		return -1;
	// Keeps clang from rebuilding qt from s->pos (unbounded for the verifier).
	asm volatile("" : "+r"(namelen));
	__u32 qt = namelen + QOFF;
	if (qt + 2 > avail)
		return -1; // no room for QTYPE
	if (found == 0)
		return -1; // no suffix has an entry: the common miss
	__u16 qtype = ((__u16)s->buf[qt & (BUF_SIZE - 1)] << 8) | s->buf[(qt + 1) & (BUF_SIZE - 1)];

	struct lookup_ctx l = { .s = s, .now = now, .n = nl, .namelen = namelen, .qtype = qtype, .verdict = -1 };
	bpf_loop(MAX_LABELS, lookup_suffix, &l, 0);
	*reason = l.reason;
	return l.verdict;
}

static __always_inline int decide(struct __sk_buff *skb, struct config *cfg, __u32 want_port)
{
	__u64 now = 0; // read when first needed (clock_of)
	__u32 ihl = 0, total = 0;
	__u8 proto = 0;
	__u32 empty = cfg->empty;
	int v;
	if (skb->protocol == __constant_htons(ETH_P_IP))
		v = check_v4(skb, &now, empty, &ihl, &proto, &total);
	else if (skb->protocol == __constant_htons(ETH_P_IPV6))
		v = check_v6(skb, &now, empty, &ihl, &proto, &total);
	else
		return PASS;
	if (v == -2)
		return PASS;
	if (want_port) {
		// cgroup mode: only packets to the resolver's port.
		__u8 ports[4];
		if (proto != IPPROTO_UDP && proto != IPPROTO_TCP)
			return PASS;
		if (bpf_skb_load_bytes_relative(skb, ihl, ports, sizeof(ports), BPF_HDR_START_NET))
			return PASS;
		if ((((__u32)ports[2] << 8) | ports[3]) != want_port)
			return PASS;
	}
	if (v >= 0) {
		if (v == DROP)
			count_drop(REASON_SOURCE);
		return v;
	}
	if (proto != IPPROTO_UDP || cfg->names == 0)
		return PASS;
	__u32 reason = 0;
	v = check_name(skb, cfg, now, ihl, total, &reason);
	if (v == DROP) {
		count_drop(reason);
		return DROP;
	}
	return PASS;
}

SEC("socket")
int dnsbgpd_socket(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return skb->len;
	return decide(skb, cfg, 0) == DROP ? 0 : skb->len;
}

SEC("cgroup_skb/ingress")
int dnsbgpd_cgroup(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || cfg->port == 0)
		return 1;
	return decide(skb, cfg, cfg->port) == DROP ? 0 : 1;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
