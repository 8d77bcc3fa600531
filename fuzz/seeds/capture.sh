#!/usr/bin/env bash
# Regenerates the dnstap seeds in fuzz/corpus/{framestream,dnstap_peek,dnswire}
# from real resolvers: unbound 1.17 (local-data answers: A, AAAA, CNAME
# chains, NXDOMAIN, NODATA) and BIND 9.18 (an authoritative test zone),
# each logging client queries and responses over dnstap to fstrm_capture.
# Loopback only, free ports, everything it starts is stopped by PID.
# usage: fuzz/seeds/capture.sh   (root not needed)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
work=$(mktemp -d /tmp/dnsbgpd-seeds.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
queries() {
    local p=$1
    for q in "www.example.com A" "www.example.com AAAA" "cdn.example.com A" "chain.example.com A" \
        "chain.example.com AAAA" "missing.example.com A" "www.example.com MX" "WWW.EXAMPLE.NET A" \
        "x.y.z.example.net A" "www.example.com TXT" "www.example.com ANY"; do
        # shellcheck disable=SC2086
        dig +tries=1 +time=2 -p "$p" @127.0.0.1 $q >/dev/null || true
    done
    dig +tcp +tries=1 +time=2 -p "$p" @127.0.0.1 www.example.com A >/dev/null || true
}

# unbound
u="$work/unbound"; mkdir -p "$u"
fstrm_capture -t protobuf:dnstap.Dnstap -u "$u/dnstap.sock" -w "$u/capture.fstrm" >"$u/fstrm.log" 2>&1 &
pids+=($!)
uport=$(port)
cat >"$u/unbound.conf" <<CONF
server:
    interface: 127.0.0.1
    port: $uport
    do-ip6: no
    num-threads: 1
    so-reuseport: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$u"
    pidfile: "$u/unbound.pid"
    use-syslog: no
    logfile: ""
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    local-zone: "example.com." static
    local-data: "www.example.com. 300 IN A 198.51.100.7"
    local-data: "www.example.com. 300 IN AAAA 2001:db8::7"
    local-data: "www.example.com. 300 IN MX 10 mail.example.com."
    local-data: "www.example.com. 300 IN TXT \"hello\""
    local-data: "cdn.example.com. 60 IN CNAME edge.cdn.example.com."
    local-data: "edge.cdn.example.com. 60 IN A 203.0.113.9"
    local-data: "chain.example.com. 60 IN CNAME a.example.com."
    local-data: "a.example.com. 60 IN CNAME b.example.com."
    local-data: "b.example.com. 60 IN A 198.51.100.8"
    local-data: "b.example.com. 60 IN AAAA 2001:db8::8"
    local-zone: "example.net." static
    local-data: "www.example.net. 30 IN A 198.51.100.9"
remote-control:
    control-enable: no
dnstap:
    dnstap-enable: yes
    dnstap-socket-path: "$u/dnstap.sock"
    dnstap-send-identity: yes
    dnstap-send-version: yes
    dnstap-log-client-query-messages: yes
    dnstap-log-client-response-messages: yes
CONF
sleep 0.5
unbound -d -c "$u/unbound.conf" >"$u/unbound.log" 2>&1 &
upid=$!; pids+=("$upid")
sleep 1.5
queries "$uport"
kill -TERM "$upid"; wait "$upid" 2>/dev/null || true
sleep 1

# BIND
b="$work/bind"; mkdir -p "$b"
fstrm_capture -t protobuf:dnstap.Dnstap -u "$b/dnstap.sock" -w "$b/capture.fstrm" >"$b/fstrm.log" 2>&1 &
pids+=($!)
bport=$(port)
cat >"$b/example.com.zone" <<ZONE
\$TTL 300
@ IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 60
@ IN NS ns.example.com.
ns IN A 198.51.100.53
www IN A 198.51.100.7
www IN AAAA 2001:db8::7
www IN MX 10 mail.example.com.
www IN TXT "hello"
cdn IN CNAME edge.cdn.example.com.
edge.cdn IN A 203.0.113.9
chain IN CNAME a.example.com.
a IN CNAME b.example.com.
b IN A 198.51.100.8
b IN AAAA 2001:db8::8
ZONE
cat >"$b/named.conf" <<CONF
options {
    directory "$b";
    pid-file "$b/named.pid";
    session-keyfile "$b/session.key";
    listen-on port $bport { 127.0.0.1; };
    listen-on-v6 { none; };
    recursion no;
    dnssec-validation no;
    dnstap { client; };
    dnstap-output unix "$b/dnstap.sock";
    dnstap-identity "bind-seed";
};
zone "example.com" { type primary; file "$b/example.com.zone"; };
CONF
sleep 0.5
named -g -4 -n 1 -c "$b/named.conf" >"$b/named.log" 2>&1 &
bpid=$!; pids+=("$bpid")
sleep 2
queries "$bport"
sleep 1
kill -TERM "$bpid"; wait "$bpid" 2>/dev/null || true
sleep 1
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
sleep 1
python3 seeds/split_dnstap.py "$u/capture.fstrm" unbound corpus
python3 seeds/split_dnstap.py "$b/capture.fstrm" bind corpus
