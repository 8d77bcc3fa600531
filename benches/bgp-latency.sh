#!/usr/bin/env bash
# BGP speaker latency: from a new answer written into dnsbgpd's dnstap
# socket to the UPDATE announcing its route read by the neighbor, at a fixed
# answer rate, for several batch intervals. `bgp-bench latency` is the
# neighbor (dnsbgpd connects to it) and the dnstap client at once, so both
# instants come from one clock. Loopback only; the daemon is stopped by PID
# on exit and the temp dir removed.
#
#   benches/bgp-latency.sh                          # 10 000/s for 10 s; 50ms, 5ms, 1ms
#   BATCHES=default benches/bgp-latency.sh          # no batch_interval in the config
#   RATE=10000 SECONDS_=10 BATCHES="5ms" RUNS=3 PREFILL=1000000 benches/bgp-latency.sh
#
# PREFILL routes are put in the table first (and sent to the neighbor before
# End-of-RIB), so the measurement runs against a large table.
set -euo pipefail

RATE=${RATE:-10000}
SECONDS_=${SECONDS_:-10}
BATCHES=${BATCHES:-"50ms 5ms 1ms"}
RUNS=${RUNS:-1}
PREFILL=${PREFILL:-0}

cd "$(dirname "$0")/.."
# BIN= runs binaries built elsewhere (no build here).
if [ -z "${BIN:-}" ]; then
    nice -n 5 cargo build --release --bin dnsbgpd --example bgp-bench >&2
fi
BIN=${BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release}

TMP=$(mktemp -d /tmp/bgp-latency.XXXXXX)
DAEMON_PID=""
stop_pid() {
    local p=$1
    [ -n "$p" ] || return 0
    kill "$p" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
cleanup() {
    stop_pid "$DAEMON_PID"
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "# $(nproc) cores, $(rustc --version), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# rate=$RATE/s seconds=$SECONDS_ prefill=$PREFILL"
for batch in $BATCHES; do
    for run in $(seq "$RUNS"); do
        dir="$TMP/$batch-$run"
        mkdir -p "$dir"
        bgp_port=$("$BIN/examples/bgp-bench" port)
        api_port=$("$BIN/examples/bgp-bench" port)
        "$BIN/examples/bgp-bench" fill --list-out "$dir/list.txt" --routes 0 >/dev/null 2>&1
        cat >"$dir/dnsbgpd.toml" <<EOF
[dnstap]
socket = "$dir/dnstap.sock"
[routes]
store = "$dir/store"
min_ttl = "1h"
max_ttl = "24h"
[api]
listen = "127.0.0.1:$api_port"
[[list]]
name = "bench"
file = "$dir/list.txt"
[bgp]
local_as = 65010
router_id = "192.0.2.10"
$([ "$batch" = default ] || echo "batch_interval = \"$batch\"")
[[bgp.neighbor]]
name = "bench"
address = "127.0.0.1"
port = $bgp_port
remote_as = 65001
connect_retry = "100ms"
next_hop_v6 = "2001:db8::10"
EOF
        "$BIN/dnsbgpd" --log-level warn run --config "$dir/dnsbgpd.toml" >"$dir/dnsbgpd.log" 2>&1 &
        DAEMON_PID=$!
        for _ in $(seq 200); do [ -S "$dir/dnstap.sock" ] && curl -sf "http://127.0.0.1:$api_port/api/v1/status" >/dev/null && break; sleep 0.05; done
        if [ "$PREFILL" -gt 0 ]; then
            "$BIN/examples/bgp-bench" fill --socket "$dir/dnstap.sock" --routes "$PREFILL" >/dev/null
        fi
        echo "== batch_interval=$batch run $run load $(cut -d' ' -f1 /proc/loadavg)"
        cpu0=$(awk '{print $14 + $15}' "/proc/$DAEMON_PID/stat")
        "$BIN/examples/bgp-bench" latency --socket "$dir/dnstap.sock" --bgp-listen "127.0.0.1:$bgp_port" \
            --rate "$RATE" --seconds "$SECONDS_" ${SAMPLES_DIR:+--samples-out "$SAMPLES_DIR/$batch-$run.txt"} 2>&1 |
            grep -v '^waiting for\|^epoch'
        cpu1=$(awk '{print $14 + $15}' "/proc/$DAEMON_PID/stat")
        # (includes the End-of-RIB of a PREFILL table and the dnstap/store work)
        echo "daemon CPU-seconds during the run: $(awk -v a="$cpu0" -v b="$cpu1" -v t="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", (b - a) / t}')"
        stop_pid "$DAEMON_PID"
        DAEMON_PID=""
        rm -rf "$dir"
    done
done
