#!/usr/bin/env bash
# One-core throughput and memory of the release daemon under dnstap-load.
#
#   benches/daemon-load.sh [FRAMES] [NAMES] [LISTED_PERCENT] [LIST_SIZE] [-- extra dnstap-load args]
#
# Runs target/release/dnsbgpd pinned to core 0 (taskset -c 0) with a unix
# dnstap socket, a store and the API in a temporary directory, and
# target/release/examples/dnstap-load pinned to core 1. Reports the daemon's CPU
# time (utime+stime from /proc/PID/stat) over the load, frames/s, CPU-µs
# per frame, what /metrics counted, and VmRSS/VmHWM. Build first:
#   cargo build --release --bin dnsbgpd --example dnstap-load
#
# Environment: BIN (directory of the binaries, default target/release),
# STORE_CACHE ([routes] store_cache in bytes), PERF (arguments of a `perf`
# attached to the daemon during the load), LOAD_WRAP (command prefix for
# dnstap-load, e.g. "/usr/bin/time -v"), WAIT_STORE=1 (before measuring
# memory, wait until the store writer has written every route),
# RESTART=1 (then restart the daemon on its store and report the time
# to ready and its memory).
set -euo pipefail

FRAMES=${1:-10000000}
NAMES=${2:-100000}
LISTED=${3:-10}
LIST_SIZE=${4:-0}
shift $(($# < 4 ? $# : 4))
[[ ${1:-} == -- ]] && shift
EXTRA=("$@")

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
DIR=$(mktemp -d /tmp/dnsbgpd-load.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TICK=$(getconf CLK_TCK)
PID=

cleanup() {
    if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID"
        wait "$PID" || true
    fi
    rm -rf "$DIR"
}
trap cleanup EXIT

"$BIN/examples/dnstap-load" --names "$NAMES" --listed-percent "$LISTED" --list-size "$LIST_SIZE" \
    --list-out "$DIR/list.txt" "${EXTRA[@]}"

cat >"$DIR/dnsbgpd.toml" <<EOF
[dnstap]
socket = "$DIR/dnstap.sock"

[routes]
store = "$DIR/store"
min_ttl = "1h"
max_ttl = "24h"
${STORE_CACHE:+store_cache = $STORE_CACHE}

[[list]]
name = "bench"
file = "$DIR/list.txt"

[api]
listen = "127.0.0.1:$PORT"
EOF

cpu() { awk -v t="$TICK" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$PID/stat"; }
rss() { awk '/^(VmRSS|VmHWM)/ { printf "%s %.1f MiB  ", $1, $2 / 1024 }' "/proc/$PID/status"; }
metric() { curl -sf "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" 'index($0, m) == 1 { print $2 }'; }

taskset -c 0 "$BIN/dnsbgpd" --log-level warn run --config "$DIR/dnsbgpd.toml" &
PID=$!
for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$PORT/api/v1/status" >/dev/null 2>&1 && break
    sleep 0.05
done
echo "daemon ready: pid $PID, threads $(ls /proc/$PID/task | wc -l); $(rss)"

CPU0=$(cpu)
if [[ -n ${PERF:-} ]]; then
    # e.g. PERF="record -g -o /tmp/perf.data" or PERF="stat -e task-clock,context-switches"
    perf $PERF -p "$PID" &
    PERF_PID=$!
fi
T0=$(date +%s.%N)
${LOAD_WRAP:-} taskset -c 1 "$BIN/examples/dnstap-load" --socket "$DIR/dnstap.sock" --frames "$FRAMES" --names "$NAMES" \
    --listed-percent "$LISTED" "${EXTRA[@]}"
T1=$(date +%s.%N)
CPU1=$(cpu)
if [[ -n ${PERF:-} ]]; then
    kill -INT "$PERF_PID"
    wait "$PERF_PID" || true
fi
# The store writer flushes once a second: let it catch up before measuring memory.
sleep 3
CPU2=$(cpu)
if [[ -n ${WAIT_STORE:-} ]]; then
    echo "after the load: $(rss)routes $(metric 'dnsbgpd_routes_in_table '), written $(metric 'dnsbgpd_store_writes_total')"
    W0=$(date +%s)
    for _ in $(seq 600); do
        [[ $(metric 'dnsbgpd_store_writes_total') == "$(metric 'dnsbgpd_routes_in_table ')" ]] && break
        sleep 1
    done
    sleep 2
    echo "store writer caught up $(($(date +%s) - W0)) s later (daemon CPU $(cpu) s in total)"
fi
FRAMES_SEEN=$(metric 'dnsbgpd_dnstap_frames_total{type="CLIENT_RESPONSE"}')
ROUTES=$(metric 'dnsbgpd_routes_in_table ')
echo "metrics: frames_total{CLIENT_RESPONSE} $FRAMES_SEEN, routes_in_table $ROUTES," \
    "dns_parse_errors $(metric 'dnsbgpd_dns_parse_errors_total')," \
    "store_writes $(metric 'dnsbgpd_store_writes_total')"
awk -v c0="$CPU0" -v c1="$CPU1" -v c2="$CPU2" -v t0="$T0" -v t1="$T1" -v f="$FRAMES" 'BEGIN {
    cpu = c1 - c0
    printf "daemon CPU during load: %.2f s over %.2f s wall (%.0f%% of one core); +%.2f s in the 3 s after\n",
        cpu, t1 - t0, 100 * cpu / (t1 - t0), c2 - c1
    printf "CPU-seconds per million frames: %.3f  (%.0f ns/frame, %.0f frames per CPU-second)\n",
        cpu / f * 1e6, cpu / f * 1e9, f / cpu
}'
echo "daemon memory: $(rss)"
echo "store on disk: $(du -sh "$DIR/store" | cut -f1)"
if [[ -n ${RESTART:-} ]]; then
    ROUTES_BEFORE=$(metric 'dnsbgpd_routes_in_table ')
    kill -TERM "$PID"
    wait "$PID" || true
    R0=$(date +%s.%N)
    taskset -c 0 "$BIN/dnsbgpd" --log-level warn run --config "$DIR/dnsbgpd.toml" &
    PID=$!
    for _ in $(seq 1200); do
        curl -sf "http://127.0.0.1:$PORT/api/v1/status" 2>/dev/null | grep -q '"ready":true' && break
        sleep 0.1
    done
    R1=$(date +%s.%N)
    echo "restart: ready after $(awk -v a="$R0" -v b="$R1" 'BEGIN { printf "%.1f", b - a }') s with" \
        "$(metric 'dnsbgpd_routes_in_table ') routes (had $ROUTES_BEFORE); $(rss)"
fi
if [[ $FRAMES_SEEN != "$FRAMES" ]]; then
    echo "MISMATCH: sent $FRAMES frames, daemon counted $FRAMES_SEEN" >&2
    exit 1
fi
