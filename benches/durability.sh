#!/usr/bin/env bash
# Durability after a burst: how many of N new routes survive a kill -9
# some time after the burst was handled.
#
#   benches/durability.sh [ROUTES] [WAIT]      # default 200000 routes, kill 2 s after the burst
#
# The release daemon (default flush_interval, 1 s) is filled by
# `bgp-bench fill` (every answer a new address, TTL 1 day; FINISH means
# every frame was handled), then WAIT seconds later killed with SIGKILL
# and restarted on its store; prints the routes before and after, and the
# store writer's progress at the kill. Loopback only; everything started
# here is stopped by PID and the temp dir removed on exit.
# BIN= picks the binaries (default $CARGO_TARGET_DIR/release or target/release).
set -euo pipefail
ROUTES=${1:-200000}
WAIT=${2:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
DIR=$(mktemp -d /tmp/dnsbgpd-durability.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PID=
cleanup() {
    if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" || true; fi
    rm -rf "$DIR"
}
trap cleanup EXIT
"$BIN/examples/bgp-bench" fill --routes 0 --list-out "$DIR/list.txt" >/dev/null 2>&1
cat >"$DIR/dnsbgpd.toml" <<EOC
[dnstap]
socket = "$DIR/dnstap.sock"
[routes]
store = "$DIR/store"
min_ttl = "1h"
[[list]]
name = "bench"
file = "$DIR/list.txt"
[api]
listen = "127.0.0.1:$PORT"
EOC
metric() { curl -sf "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" 'index($0, m) == 1 { print $2 }'; }
start() {
    taskset -c 0 "$BIN/dnsbgpd" --log-level warn run --config "$DIR/dnsbgpd.toml" &
    PID=$!
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:$PORT/api/v1/status" 2>/dev/null | grep -q '"ready":true' && return
        sleep 0.05
    done
}
start
T0=$(date +%s.%N)
taskset -c 1 "$BIN/examples/bgp-bench" fill --socket "$DIR/dnstap.sock" --routes "$ROUTES" --ttl 86400 >/dev/null
T1=$(date +%s.%N)
sleep "$WAIT"
IN_TABLE=$(metric 'dnsbgpd_routes_in_table ')
WRITTEN=$(metric 'dnsbgpd_store_writes_total')
FLUSHES=$(metric 'dnsbgpd_store_flushes_total')
kill -KILL "$PID"
wait "$PID" 2>/dev/null || true
PID=
start
AFTER=$(metric 'dnsbgpd_routes_in_table ')
awk -v t0="$T0" -v t1="$T1" -v w="$WAIT" -v n="$IN_TABLE" -v wr="$WRITTEN" -v fl="$FLUSHES" -v a="$AFTER" 'BEGIN {
    printf "burst of %d routes handled in %.2f s; SIGKILL %s s later: store writer had written %d (%d flushes)\n",
        n, t1 - t0, w, wr, fl
    printf "after restart: %d routes (%.1f %% of the table lost)\n", a, 100 * (n - a) / n }'
