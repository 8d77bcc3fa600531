#!/usr/bin/env bash
# Soak (issue 10; not in CI): dnsbgpd under steady dnstap load with a
# churning list, a flapping BGP neighbor (bird) and a sync peer that
# restarts every minute; RSS, open fds, threads and per-key state
# (routes, CNAME targets) sampled every 10 s must end flat.
#
#   scripts/soak.sh [MINUTES] [FRAMES_PER_SECOND]     default 30 50000
#
# Binaries from BIN (default target/release; build them first with
#   cargo build --release --bin dnsbgpd --example dnstap-load).
# SOAK_NAMES (100000): distinct names of dnstap-load's mix.
# Writes OUT (default target/soak): samples.csv, soak.svg, the logs, and
# prints a summary (first and last quarter means of each series).
# Loopback only; every process it starts is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$PATH:/usr/sbin:/sbin"
MINUTES=${1:-30}
RATE=${2:-50000}
BIN=${BIN:-$root/target/release}
NAMES=${SOAK_NAMES:-100000}
OUT=${OUT:-$root/target/soak}
for b in "$BIN/dnsbgpd" "$BIN/examples/dnstap-load"; do
    [[ -x $b ]] || { echo "soak.sh: $b missing (cargo build --release --bin dnsbgpd --example dnstap-load)" >&2; exit 1; }
done
for c in bird birdc python3 curl; do
    command -v "$c" >/dev/null || { echo "soak.sh: $c missing" >&2; exit 1; }
done
rm -rf "$OUT"
mkdir -p "$OUT/a" "$OUT/b" "$OUT/bird"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API_A=$(port)
API_B=$(port)
BIRD_PORT=$(port)
TOKEN=soak-token-0123456789abcdef
pids=()
A= B= BIRD=
cleanup() {
    for p in $A $B $BIRD "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 1
    for p in $A $B $BIRD "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# The list: what dnstap-load's mix has listed (10 % of NAMES names).
"$BIN/examples/dnstap-load" --names "$NAMES" --listed-percent 10 --list-out "$OUT/list.full" >/dev/null 2>&1 || true
[[ -s $OUT/list.full ]] || { echo "soak.sh: dnstap-load wrote no list" >&2; exit 1; }
awk 'NR % 2 == 0' "$OUT/list.full" >"$OUT/list.half"
cp "$OUT/list.full" "$OUT/a/list.txt"
cp "$OUT/list.full" "$OUT/b/list.txt"

conf() { # NAME API PEER_API
    cat <<EOF
[dnstap]
socket = "$OUT/$1/dnstap.sock"
[routes]
store = "$OUT/$1/store"
min_ttl = "30s"
max_ttl = "10m"
[[list]]
name = "soak"
file = "$OUT/$1/list.txt"
[api]
listen = "127.0.0.1:$2"
[sync]
token = "$TOKEN"
[[sync.peer]]
name = "peer"
url = "http://127.0.0.1:$3"
token = "$TOKEN"
EOF
}
conf a "$API_A" "$API_B" >"$OUT/a/dnsbgpd.toml"
cat >>"$OUT/a/dnsbgpd.toml" <<EOF
[bgp]
local_as = 65010
router_id = "192.0.2.10"
[[bgp.neighbor]]
name = "bird"
address = "127.0.0.1"
port = $BIRD_PORT
remote_as = 65000
connect_retry = "1s"
EOF
conf b "$API_B" "$API_A" >"$OUT/b/dnsbgpd.toml"
cat >"$OUT/bird/bird.conf" <<EOF
router id 192.0.2.1;
protocol device {}
protocol bgp dnsbgpd {
    local 127.0.0.1 port $BIRD_PORT as 65000;
    neighbor 127.0.0.1 as 65010;
    multihop;
    passive;
    ipv4 { import all; export none; };
    ipv6 { import all; export none; };
}
EOF

bird -f -c "$OUT/bird/bird.conf" -s "$OUT/bird/bird.ctl" >"$OUT/bird/bird.log" 2>&1 &
BIRD=$!
start() { # NAME API -> pid
    "$BIN/dnsbgpd" --log-level warn run --config "$OUT/$1/dnsbgpd.toml" >>"$OUT/$1/dnsbgpd.log" 2>&1 &
    local pid=$!
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$2/api/v1/status" >/dev/null 2>&1 && break; sleep 0.05; done
    echo "$pid"
}
A=$(start a "$API_A")
B=$(start b "$API_B")

# Load: RATE frames a second, in half-second batches (each batch waits for
# the daemon's FINISH, so the load never queues up unbounded). Seed 1 each
# time: the names the list was written for, so answers keep refreshing the
# routes of the names the list currently holds.
(
    while :; do
        t0=$(date +%s%N)
        "$BIN/examples/dnstap-load" --socket "$OUT/a/dnstap.sock" --frames $((RATE / 2)) --names "$NAMES" \
            --listed-percent 10 --seed 1 >/dev/null 2>&1 || true
        left=$(((500000000 - ($(date +%s%N) - t0)) / 1000000))
        ((left > 0)) && sleep "0.$(printf '%03d' "$left")"
    done
) &
pids+=($!)

end=$((SECONDS + MINUTES * 60))
echo "t,rss_kib,fds,threads,routes,cname_targets,frames,bgp_established" >"$OUT/samples.csv"
tick=0
while ((SECONDS < end)); do
    sleep 10
    tick=$((tick + 1))
    # Churn: the list flips between all and half of its names every 10 s.
    if ((tick % 2)); then cp "$OUT/list.half" "$OUT/a/list.txt.new"; else cp "$OUT/list.full" "$OUT/a/list.txt.new"; fi
    mv "$OUT/a/list.txt.new" "$OUT/a/list.txt"
    # The BGP neighbor flaps every 30 s.
    if ((tick % 3 == 0)); then
        birdc -s "$OUT/bird/bird.ctl" disable dnsbgpd >/dev/null 2>&1 || true
        sleep 1
        birdc -s "$OUT/bird/bird.ctl" enable dnsbgpd >/dev/null 2>&1 || true
    fi
    # The sync peer restarts every minute.
    if ((tick % 6 == 0)); then
        kill -TERM "$B" 2>/dev/null || true
        wait "$B" 2>/dev/null || true
        B=$(start b "$API_B")
    fi
    kill -0 "$A" || { echo "soak.sh: dnsbgpd exited; see $OUT/a/dnsbgpd.log" >&2; exit 1; }
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$A/status")
    threads=$(awk '/^Threads/ {print $2}' "/proc/$A/status")
    fds=$(find "/proc/$A/fd" -mindepth 1 -maxdepth 1 | wc -l)
    status=$(curl -sf "http://127.0.0.1:$API_A/api/v1/status" || echo '{}')
    routes=$(python3 -c 'import json,sys; print(json.load(sys.stdin).get("routes",""))' <<<"$status")
    cnames=$(python3 -c 'import json,sys; print(json.load(sys.stdin).get("cname_targets",""))' <<<"$status")
    frames=$(curl -sf "http://127.0.0.1:$API_A/metrics" | awk '/^dnsbgpd_dnstap_frames_total\{type="CLIENT_RESPONSE"\}/ {print $2}')
    bgp=$(birdc -s "$OUT/bird/bird.ctl" show protocols dnsbgpd 2>/dev/null | grep -c Established || true)
    echo "$((tick * 10)),$rss,$fds,$threads,$routes,$cnames,${frames:-},$bgp" | tee -a "$OUT/samples.csv"
done

python3 - "$OUT" <<'EOF'
import csv, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(out + "/samples.csv")))
series = ["rss_kib", "fds", "threads", "routes", "cname_targets"]
def col(k): return [float(r[k] or 0) for r in rows]
t = col("t")
n = len(rows)
print("soak: %d samples over %d s; frames handled %s; BGP established in %d of %d samples"
      % (n, t[-1] if t else 0, rows[-1]["frames"] if rows else "?", sum(1 for r in rows if r["bgp_established"] == "1"), n))
for k in series:
    v = col(k)
    q = max(1, n // 4)
    a, b = sum(v[q:2*q]) / max(1, len(v[q:2*q])), sum(v[-q:]) / q
    print("  %-14s min %10.0f max %10.0f  2nd-quarter mean %10.1f  last-quarter mean %10.1f  change %+.1f%%"
          % (k, min(v), max(v), a, b, (b - a) / a * 100 if a else 0))
# A small SVG: one panel per series.
W, H, P = 640, 120, 30
svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (W, H * len(series))]
for i, k in enumerate(series):
    v = col(k)
    lo, hi = min(v), max(v)
    span = (hi - lo) or 1
    y0 = i * H
    pts = " ".join("%.1f,%.1f" % (P + (W - 2 * P) * (tt / (t[-1] or 1)), y0 + H - P / 2 - (H - P * 1.5) * (vv - lo) / span) for tt, vv in zip(t, v))
    svg.append('<text x="%d" y="%d">%s (%.0f .. %.0f)</text>' % (P, y0 + 14, k, lo, hi))
    svg.append('<polyline fill="none" stroke="black" points="%s"/>' % pts)
svg.append("</svg>")
open(out + "/soak.svg", "w").write("\n".join(svg))
print("soak: wrote %s/samples.csv and %s/soak.svg" % (out, out))
EOF
