#!/usr/bin/env bash
# deploy/demo.sh: from a DNS answer to a route in bird, on this machine.
#
# Starts nsd (an authoritative server for demo.test), unbound (a resolver
# sending dnstap to dnsbgpd), bird (a router) and dnsbgpd on loopback, in
# a temporary directory, on addresses of their own in 127/8 and free ports.
# Resolves www.demo.test (listed) with dig, then prints the route as bird
# sees it (birdc show route all) and as `dnsbgpd ctl routes` shows it.
# Everything it started is stopped and the directory removed on exit, also
# on Ctrl-C. It installs nothing: missing Debian packages are named.
#
#   deploy/demo.sh              # builds dnsbgpd (cargo build --release) if needed
#   DNSBGPD=/usr/bin/dnsbgpd deploy/demo.sh
#   KEEP=1 deploy/demo.sh       # leave everything running until Ctrl-C
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
root=$(cd "$(dirname "$0")/.." && pwd)

say() { printf '\n== %s\n' "$*"; }
die() {
    echo "demo: $*" >&2
    exit 1
}

# What is needed, and from which Debian package.
missing=()
for pair in nsd:nsd unbound:unbound bird:bird2 birdc:bird2 dig:bind9-dnsutils; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [[ " ${missing[*]-} " == *" ${pair#*:} "* ]] || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
    die "missing Debian packages: ${missing[*]} (apt-get install ${missing[*]})"
fi

if [[ -z ${DNSBGPD:-} ]]; then
    target=${CARGO_TARGET_DIR:-$root/target}
    if [[ ! -x $target/release/dnsbgpd ]]; then
        say "building dnsbgpd (cargo build --release)"
        (cd "$root" && cargo build --release --bin dnsbgpd)
    fi
    DNSBGPD=$target/release/dnsbgpd
fi
[[ -x $DNSBGPD ]] || die "$DNSBGPD is not an executable"

dir=$(mktemp -d /tmp/dnsbgpd-demo.XXXXXX)
pids=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        # Up to ~5 s for each to go, then KILL.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    if ((rc != 0)) && [[ -d $dir ]]; then
        for log in "$dir"/*.log; do
            [[ -s $log ]] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
        done
    fi
    rm -rf "$dir"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Addresses of our own in 127/8 (one third octet for this run) and ports
# free on them.
net=127.77.$((RANDOM % 250 + 2))
nsd_ip=$net.1 unbound_ip=$net.2 bird_ip=$net.3 dnsbgpd_ip=$net.4
in_use() { ss -Hltun 2>/dev/null | awk '{print $5}' | grep -q ":$1\$"; }
port() {
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 30000))
        in_use "$p" || { echo "$p"; return; }
    done
    die "no free port"
}
nsd_port=$(port) unbound_port=$(port) bird_port=$(port) api_port=$(port)
wait_for() { # wait_for SECONDS WHAT COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out waiting for $what"
        sleep 0.2
    done
}

say "nsd on $nsd_ip:$nsd_port (authoritative for demo.test)"
cat >"$dir/demo.test.zone" <<EOF
\$ORIGIN demo.test.
\$TTL 300
@    IN SOA ns.demo.test. hostmaster.demo.test. 1 3600 600 86400 60
@    IN NS  ns.demo.test.
ns   IN A   $nsd_ip
www  IN A   198.51.100.80
www  IN AAAA 2001:db8::80
EOF
cat >"$dir/nsd.conf" <<EOF
server:
    ip-address: $nsd_ip@$nsd_port
    do-ip6: no
    server-count: 1
    reuseport: no
    username: ""
    chroot: ""
    zonesdir: "$dir"
    database: ""
    zonelistfile: "$dir/zone.list"
    pidfile: "$dir/nsd.pid"
    xfrdfile: "$dir/xfrd.state"
    xfrdir: "$dir"
    cookie-secret-file: "$dir/cookiesecrets.txt"
    zonefiles-write: 0
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: "demo.test"
    zonefile: "demo.test.zone"
EOF
nsd -d -c "$dir/nsd.conf" >"$dir/nsd.log" 2>&1 &
pids+=($!)

say "dnsbgpd: dnstap on $dir/dnstap.sock, API on $dnsbgpd_ip:$api_port, BGP to bird"
echo "www.demo.test" >"$dir/demo.txt"
cat >"$dir/dnsbgpd.toml" <<EOF
[dnstap]
socket = "$dir/dnstap.sock"
socket_mode = "0600"

[routes]
store = "$dir/store"
min_ttl = "10m"

[[list]]
name = "demo"
file = "demo.txt"
communities = ["65010:100"]

[bgp]
local_as = 65010
router_id = "192.0.2.10"
batch_interval = "20ms"

[[bgp.neighbor]]
name = "bird"
address = "$bird_ip"
port = $bird_port
remote_as = 65000
local_address = "$dnsbgpd_ip"
connect_retry = "200ms"
next_hop_v6 = "2001:db8::10"

[api]
listen = "$dnsbgpd_ip:$api_port"
EOF
"$DNSBGPD" check --config "$dir/dnsbgpd.toml" >/dev/null
ctl() { "$DNSBGPD" ctl --api "http://$dnsbgpd_ip:$api_port" "$@"; }

say "bird on $bird_ip:$bird_port (AS 65000)"
cat >"$dir/bird.conf" <<EOF
log "$dir/bird-log.txt" all;
router id 192.0.2.1;
protocol device { scan time 10; }
protocol bgp dnsbgpd {
    local $bird_ip port $bird_port as 65000;
    neighbor $dnsbgpd_ip as 65010;
    strict bind on;
    multihop;                  # loopback: the next hop is not on a link
    passive on;
    ipv4 { import all; export none; };
    ipv6 { import all; export none; };
}
EOF
bird -f -c "$dir/bird.conf" -s "$dir/bird.ctl" -P "$dir/bird.pid" >"$dir/bird.log" 2>&1 &
pids+=($!)
wait_for 10 "bird" birdc -s "$dir/bird.ctl" show status

"$DNSBGPD" --log-level warn run --config "$dir/dnsbgpd.toml" >"$dir/dnsbgpd.log" 2>&1 &
pids+=($!)
wait_for 20 "dnsbgpd" ctl status
wait_for 20 "the BGP session" bash -c "birdc -s '$dir/bird.ctl' show protocols dnsbgpd | grep -q Established"

say "unbound on $unbound_ip:$unbound_port (resolver, dnstap to dnsbgpd)"
cat >"$dir/unbound.conf" <<EOF
server:
    interface: $unbound_ip
    port: $unbound_port
    do-ip6: no
    num-threads: 1
    so-reuseport: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$dir"
    pidfile: "$dir/unbound.pid"
    logfile: ""
    use-syslog: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "iterator"
    auto-trust-anchor-file: ""
    local-zone: "test." nodefault
    domain-insecure: "test."
remote-control:
    control-enable: no
stub-zone:
    name: "demo.test."
    stub-addr: $nsd_ip@$nsd_port
dnstap:
    dnstap-enable: yes
    dnstap-socket-path: "$dir/dnstap.sock"
    dnstap-log-client-response-messages: yes
EOF
unbound -d -c "$dir/unbound.conf" >"$dir/unbound.log" 2>&1 &
pids+=($!)
wait_for 10 "unbound" dig +short +time=1 +tries=1 -p "$unbound_port" "@$unbound_ip" ns.demo.test A

say "dig @$unbound_ip -p $unbound_port www.demo.test A and AAAA"
dig +short -p "$unbound_port" "@$unbound_ip" www.demo.test A
dig +short -p "$unbound_port" "@$unbound_ip" www.demo.test AAAA

# unbound hands dnstap over in batches (up to ~1 s), then BGP is fast.
wait_for 20 "the route in bird" bash -c "birdc -s '$dir/bird.ctl' show route 198.51.100.80/32 | grep -q 198.51.100.80"
wait_for 10 "the IPv6 route in bird" bash -c "birdc -s '$dir/bird.ctl' show route 2001:db8::80/128 | grep -q 2001:db8::80"

say "bird: birdc show route all"
birdc -s "$dir/bird.ctl" show route all

say "dnsbgpd: dnsbgpd ctl routes"
ctl routes

say "dnsbgpd: dnsbgpd ctl neighbors"
ctl neighbors

if [[ -n ${KEEP:-} ]]; then
    say "running in $dir; Ctrl-C stops everything"
    echo "  birdc -s $dir/bird.ctl show route all"
    echo "  $DNSBGPD ctl --api http://$dnsbgpd_ip:$api_port status"
    echo "  dig -p $unbound_port @$unbound_ip www.demo.test"
    while :; do
        sleep 3600 &
        wait $! || true
    done
fi
say "done: the name's addresses are routes in bird"
