#!/usr/bin/env bash
# Random-subdomain floods into the release daemon pinned to one core.
#
#   benches/flood.sh ANSWERS SUFFIXES      # e.g. 1000000 1  or  1000000 1000
#
# The list holds SUFFIXES names s{j}.bench.test; bgp-bench fill answers
# r{i}.s{i % SUFFIXES}.bench.test, every answer a name never seen, with
# the address of its suffix (so ANSWERS answers make SUFFIXES routes). The
# daemon (taskset -c 0) answers FINISH only once every frame is handled.
# Prints answers/s, the daemon's CPU-seconds per million answers
# (utime+stime from /proc/PID/stat) and its RSS; BIN= picks the binaries
# (default target/release; DAEMON= the dnsbgpd to measure).
set -euo pipefail
ANSWERS=${1:-1000000}
SUFFIXES=${2:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
DAEMON=${DAEMON:-$BIN/dnsbgpd}
DIR=$(mktemp -d /tmp/dnsbgpd-flood.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TICK=$(getconf CLK_TCK)
PID=
cleanup() {
    if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" || true; fi
    rm -rf "$DIR"
}
trap cleanup EXIT
"$BIN/examples/bgp-bench" fill --routes 0 --flood-suffixes "$SUFFIXES" --list-out "$DIR/list.txt" >/dev/null 2>&1
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
taskset -c 0 "$DAEMON" --log-level warn run --config "$DIR/dnsbgpd.toml" &
PID=$!
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/api/v1/status" >/dev/null 2>&1 && break; sleep 0.05; done
cpu() { awk -v t="$TICK" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$PID/stat"; }
C0=$(cpu)
T0=$(date +%s.%N)
taskset -c 1 "$BIN/examples/bgp-bench" fill --socket "$DIR/dnstap.sock" --routes "$ANSWERS" --flood-suffixes "$SUFFIXES" --ttl 3600 >/dev/null
T1=$(date +%s.%N)
C1=$(cpu)
# The status call must answer at once after the flood too.
S0=$(date +%s.%N); curl -sf "http://127.0.0.1:$PORT/api/v1/status" >/dev/null; S1=$(date +%s.%N)
awk -v c0="$C0" -v c1="$C1" -v t0="$T0" -v t1="$T1" -v n="$ANSWERS" -v s0="$S0" -v s1="$S1" 'BEGIN {
    printf "answers %d  wall %.2f s  answers/s %.0f  daemon CPU-s per M %.3f  status %.1f ms\n",
        n, t1 - t0, n / (t1 - t0), (c1 - c0) / n * 1e6, (s1 - s0) * 1000 }'
awk '/^(VmRSS|VmHWM)/ { printf "%s %.1f MiB  ", $1, $2 / 1024 } END { print "" }' "/proc/$PID/status"
curl -sf "http://127.0.0.1:$PORT/metrics" | grep -E '^dnsbgpd_(routes_in_table|route_names_dropped_total|dnstap_frames_total\{type="CLIENT_RESPONSE"\})' | tr '\n' ' '; echo
