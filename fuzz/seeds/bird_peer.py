#!/usr/bin/env python3
"""A minimal passive BGP peer that records what bird sends.

usage: bird_peer.py PORT OUT_DIR SECONDS

Accepts one connection on 127.0.0.1:PORT, answers bird's OPEN with its own
(AS 65000, 4-octet AS, IPv4 and IPv6 unicast, route refresh), a KEEPALIVE
and, after a while, a ROUTE-REFRESH, then records every message bird sends
for SECONDS: OUT_DIR/bird-N (one message each) and OUT_DIR/bird-stream
(the first messages as received, under 8 KiB).
"""
import os
import socket
import struct
import sys
import time

port, out, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
os.makedirs(out, exist_ok=True)


def msg(kind, body):
    return b"\xff" * 16 + struct.pack(">HB", 19 + len(body), kind) + body


def cap(code, value):
    return bytes([code, len(value)]) + value


caps = cap(1, b"\x00\x01\x00\x01") + cap(1, b"\x00\x02\x00\x01") + cap(2, b"") + cap(65, struct.pack(">I", 65000))
params = bytes([2, len(caps)]) + caps
open_body = struct.pack(">BHH4sB", 4, 65000, 90, socket.inet_aton("192.0.2.1"), len(params)) + params

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(1)
srv.settimeout(20)
conn, _ = srv.accept()
conn.settimeout(0.5)
buf = b""
stream = b""
n = 0
sent_refresh = False
start = time.time()
conn.sendall(msg(1, open_body) + msg(4, b""))
while time.time() - start < seconds:
    if not sent_refresh and time.time() - start > seconds / 2:
        conn.sendall(msg(5, b"\x00\x01\x00\x01") + msg(5, b"\x00\x02\x00\x01"))
        sent_refresh = True
    try:
        data = conn.recv(65536)
    except socket.timeout:
        conn.sendall(msg(4, b""))
        continue
    if not data:
        break
    if len(stream) < 8192:
        stream += data
    buf += data
    while len(buf) >= 19:
        (length,) = struct.unpack(">H", buf[16:18])
        if len(buf) < length:
            break
        open(os.path.join(out, "bird-%d" % n), "wb").write(buf[:length])
        n += 1
        buf = buf[length:]
# A NOTIFICATION (cease, administrative shutdown) ends it; bird's answer, if any, is recorded too.
conn.sendall(msg(3, b"\x06\x02"))
open(os.path.join(out, "bird-stream"), "wb").write(stream[:8192])
print("bird: %d messages" % n)
