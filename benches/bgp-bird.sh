#!/usr/bin/env bash
# BGP speaker → bird2: time from Established to the last of N routes
# installed in bird, UPDATE bytes per prefix, UPDATE messages, and the
# CPU-seconds of dnsbgpd and bird, with RFC 8654 extended messages on and
# off. Loopback only; everything it starts is stopped by PID on exit and
# its temp dir is removed.
#
#   benches/bgp-bird.sh                       # 1 000 000 IPv4 routes, ext on and off
#   ROUTES=100000 V6_PERCENT=20 MODES=on RUNS=3 benches/bgp-bird.sh
#   PERF_OUT=/tmp/bgp.perf MODES=on benches/bgp-bird.sh   # perf record the daemon
#
# Per run: start dnsbgpd (neighbor = bird on a free port, which is not
# running yet), fill the table through the dnstap socket with `bgp-bench
# fill` (FINISH = every frame handled), then start bird (`passive on`,
# `multihop`, import all / export none) and poll `birdc show route count`
# every 50 ms until it shows all routes. "Established" is the daemon's
# `state_since` of its Established state (/api/v1/neighbors, ms);
# "installed" is the wall clock right after the first `birdc` poll that
# shows all routes (so up to ~50 ms + one birdc call late).
set -euo pipefail

ROUTES=${ROUTES:-1000000}
V6_PERCENT=${V6_PERCENT:-0}
MODES=${MODES:-"on off"}
RUNS=${RUNS:-1}
BATCH=${BATCH:-50ms}
TIMEOUT=${TIMEOUT:-120}

cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then
    nice -n 5 cargo build --release --bin dnsbgpd --example bgp-bench >&2
fi
BIN=${BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release}
command -v bird >/dev/null && command -v birdc >/dev/null || { echo "bird2 is needed (apt-get install bird2)" >&2; exit 1; }

TMP=$(mktemp -d /tmp/bgp-bird.XXXXXX)
DAEMON_PID=""
BIRD_PID=""
stop_pid() { # PID: TERM, wait up to 10 s, then KILL
    local p=$1
    [ -n "$p" ] || return 0
    kill "$p" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
cleanup() {
    stop_pid "$BIRD_PID"
    stop_pid "$DAEMON_PID"
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mb() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
now() { date +%s.%N; }
metric() { # NAME{labels} → value (0 if absent)
    { curl -s "http://$API/metrics" || true; } | awk -v k="$1" '$1 == k {print $2; f=1} END {if (!f) print 0}'
}

run_one() { # MODE(on|off) RUN
    local mode=$1 run=$2 dir="$TMP/$1-$2"
    mkdir -p "$dir"
    local bird_port api_port
    bird_port=$("$BIN/examples/bgp-bench" port)
    api_port=$("$BIN/examples/bgp-bench" port)
    API=127.0.0.1:$api_port
    "$BIN/examples/bgp-bench" fill --list-out "$dir/list.txt" --routes 0 >/dev/null 2>&1
    local ext=true ext_bird=on
    [ "$mode" = off ] && ext=false && ext_bird=off
    cat >"$dir/dnsbgpd.toml" <<EOF
[dnstap]
socket = "$dir/dnstap.sock"
[routes]
store = "$dir/store"
min_ttl = "1h"
max_ttl = "24h"
[api]
listen = "$API"
[[list]]
name = "bench"
file = "$dir/list.txt"
[bgp]
local_as = 65010
router_id = "192.0.2.10"
batch_interval = "$BATCH"
extended_messages = $ext
[[bgp.neighbor]]
name = "bird"
address = "127.0.0.1"
port = $bird_port
remote_as = 65001
connect_retry = "100ms"
next_hop_v6 = "2001:db8::10"
EOF
    "$BIN/dnsbgpd" --log-level info run --config "$dir/dnsbgpd.toml" >"$dir/dnsbgpd.log" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 200); do curl -sf "http://$API/api/v1/status" >/dev/null && break; sleep 0.05; done
    curl -sf "http://$API/api/v1/status" >/dev/null || { echo "dnsbgpd did not become ready" >&2; tail "$dir/dnsbgpd.log" >&2; exit 1; }

    local fill_out
    fill_out=$("$BIN/examples/bgp-bench" fill --socket "$dir/dnstap.sock" --routes "$ROUTES" --v6-percent "$V6_PERCENT")
    local in_table
    in_table=$(metric dnsbgpd_routes_in_table)
    [ "${in_table%.*}" -eq "$ROUTES" ] || { echo "table has $in_table routes, expected $ROUTES" >&2; exit 1; }
    # Let the store writer persist the fill (it batches once per second) and
    # the daemon go idle, so that its CPU below is the BGP work.
    for _ in $(seq 600); do
        [ "$(metric dnsbgpd_store_writes_total | cut -d. -f1)" -ge "$ROUTES" ] && break
        sleep 0.1
    done
    local c0 c1
    c0=$(cpu_ticks "$DAEMON_PID")
    for _ in $(seq 100); do
        sleep 0.3
        c1=$(cpu_ticks "$DAEMON_PID")
        [ $((c1 - c0)) -le 1 ] && break
        c0=$c1
    done

    cat >"$dir/bird.conf" <<EOF
log "$dir/bird.log" all;
router id 192.0.2.1;
protocol device { scan time 1; }
protocol bgp dnsbgpd {
  local 127.0.0.1 port $bird_port as 65001;
  neighbor 127.0.0.1 as 65010;
  strict bind on;
  multihop;
  passive on;
  hold time 90;
  enable extended messages $ext_bird;
  ipv4 { import all; export none; };
  ipv6 { import all; export none; };
}
EOF
    local d_cpu0 t_bird
    d_cpu0=$(cpu_ticks "$DAEMON_PID")
    local rss0
    rss0=$(rss_mb "$DAEMON_PID")
    local perf_pid=""
    if [ -n "${PERF_OUT:-}" ]; then
        perf record -q --call-graph dwarf,32768 -F 999 -p "$DAEMON_PID" -o "$PERF_OUT.$mode-$run" 2>/dev/null &
        perf_pid=$!
        sleep 0.5
    fi
    t_bird=$(now)
    bird -f -c "$dir/bird.conf" -s "$dir/bird.ctl" -P "$dir/bird.pid" >"$dir/bird.out" 2>&1 &
    BIRD_PID=$!
    local deadline=$(($(date +%s) + TIMEOUT)) count=0 t_done=""
    while [ "$(date +%s)" -le "$deadline" ]; do
        # (birdc fails until bird's control socket is up)
        count=$({ birdc -s "$dir/bird.ctl" show route count 2>/dev/null || true; } |
            awk '$2 == "of" && $4 == "routes" {n += $1} END {print n + 0}')
        if [ "$count" -ge "$ROUTES" ]; then t_done=$(now); break; fi
        sleep 0.05
    done
    [ -n "$t_done" ] || { echo "bird has $count of $ROUTES routes after ${TIMEOUT}s" >&2; tail "$dir/bird.log" "$dir/dnsbgpd.log" >&2; exit 1; }
    local d_cpu1 b_cpu
    d_cpu1=$(cpu_ticks "$DAEMON_PID")
    b_cpu=$(cpu_ticks "$BIRD_PID")
    local rss1 bird_rss
    rss1=$(rss_mb "$DAEMON_PID")
    bird_rss=$(rss_mb "$BIRD_PID")
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
    local since est
    since=$(curl -s "http://$API/api/v1/neighbors" | jq -r '.[0].state_since')
    [ "$(curl -s "http://$API/api/v1/neighbors" | jq -r '.[0].state')" = Established ] || { echo "session not Established" >&2; exit 1; }
    est=$(date -d "$since" +%s.%N)
    local bytes msgs sent_ms
    bytes=$(metric 'dnsbgpd_bgp_update_bytes_total{neighbor="bird"}')
    msgs=$(metric 'dnsbgpd_bgp_messages_total{neighbor="bird",direction="out",type="update"}')
    sent_ms=$(sed 's/\x1b\[[0-9;]*m//g' "$dir/dnsbgpd.log" | grep 'End-of-RIB' | grep -o 'elapsed_ms=[0-9]*' | tail -1 | cut -d= -f2 || true)
    awk -v mode="$mode" -v run="$run" -v routes="$ROUTES" -v est="$est" -v tb="$t_bird" -v td="$t_done" \
        -v d0="$d_cpu0" -v d1="$d_cpu1" -v bc="$b_cpu" -v tck="$TCK" -v bytes="$bytes" -v msgs="$msgs" \
        -v sent="${sent_ms:-?}" -v rss0="$rss0" -v rss1="$rss1" -v brss="$bird_rss" -v fill="$(echo "$fill_out" | awk '/^seconds/ {print $2}')" 'BEGIN {
        printf "%-4s %3d %9d %8.3f %8.3f %10s %8.2f %8.2f %7d %12d %6.2f %8.3f %6d %6d %6d\n", mode, run, routes,
            est - tb, td - est, sent, (d1 - d0) / tck, bc / tck, msgs, bytes, bytes / routes, fill, rss0, rss1, brss
    }'
    stop_pid "$BIRD_PID"
    BIRD_PID=""
    stop_pid "$DAEMON_PID"
    DAEMON_PID=""
    rm -rf "$dir"
}

echo "# $(nproc) cores, $(rustc --version), bird $(bird --version 2>&1 | awk '{print $3}'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# routes=$ROUTES v6_percent=$V6_PERCENT batch_interval=$BATCH"
echo "# columns: ext run routes bird_start→Established_s Established→all_in_bird_s daemon_table_sent_ms daemon_cpu_s bird_cpu_s update_msgs update_bytes bytes_per_prefix fill_s daemon_rss_before_MB daemon_rss_after_MB bird_rss_MB"
for mode in $MODES; do
    for run in $(seq "$RUNS"); do
        run_one "$mode" "$run"
    done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
