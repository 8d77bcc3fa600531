#!/usr/bin/env bash
# Regenerates the BGP seeds in fuzz/corpus/bgp_decode from bird2: bird
# announces static IPv4 and IPv6 routes with communities and large
# communities to fuzz/seeds/bird_peer.py, which records every message
# (OPEN, KEEPALIVE, UPDATEs, End-of-RIB, the re-sent routes after a
# ROUTE-REFRESH). Loopback only; bird is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
work=$(mktemp -d /tmp/dnsbgpd-bird-seeds.XXXXXX)
bpid=
cleanup() { [[ -n $bpid ]] && kill "$bpid" 2>/dev/null; sleep 0.3; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/bird.conf" <<CONF
router id 192.0.2.2;
protocol device {}
protocol static s4 {
    ipv4;
    route 198.51.100.7/32 blackhole;
    route 198.51.100.8/32 blackhole { bgp_community.add((65010,100)); bgp_large_community.add((65010,0,100)); };
    route 203.0.113.0/24 blackhole { bgp_community.add((65535,666)); };
}
protocol static s6 {
    ipv6;
    route 2001:db8::7/128 blackhole;
    route 2001:db8:1::/48 blackhole { bgp_community.add((65010,200)); };
}
protocol bgp peer {
    local 127.0.0.1 as 65001;
    neighbor 127.0.0.1 port $port as 65000;
    multihop;
    ipv4 { import none; export all; next hop self; };
    ipv6 { import none; export all; next hop address 2001:db8::1; };
}
CONF
python3 seeds/bird_peer.py "$port" corpus/bgp_decode 6 &
ppid=$!
sleep 0.3
bird -f -c "$work/bird.conf" -s "$work/bird.ctl" >"$work/bird.log" 2>&1 &
bpid=$!
wait "$ppid"
