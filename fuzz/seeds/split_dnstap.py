#!/usr/bin/env python3
"""Splits a Frame Streams file written by fstrm_capture into fuzz seeds.

usage: split_dnstap.py CAPTURE.fstrm PREFIX CORPUS_DIR

Writes CORPUS_DIR/framestream/PREFIX-stream (the file's first frames, cut
below 4 KiB at a frame boundary), CORPUS_DIR/dnstap_peek/PREFIX-N (each data
frame: one Dnstap protobuf) and CORPUS_DIR/dnswire/PREFIX-N-q / -r (the DNS
query and response messages inside). Distinct contents only.
"""
import hashlib
import os
import struct
import sys


def varint(b, i):
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return v, i


def fields(b):
    i = 0
    while i < len(b):
        key, i = varint(b, i)
        tag, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
            yield tag, v
        elif wt == 2:
            n, i = varint(b, i)
            yield tag, b[i:i + n]
            i += n
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
        else:
            return


def main():
    path, prefix, out = sys.argv[1:4]
    data = open(path, "rb").read()
    i = 0
    frames = []
    cut = 0
    while i + 4 <= len(data):
        (n,) = struct.unpack(">I", data[i:i + 4])
        if n == 0:  # control frame: escape, length, body
            (m,) = struct.unpack(">I", data[i + 4:i + 8])
            i += 8 + m
        else:
            frames.append(data[i + 4:i + 4 + n])
            i += 4 + n
        if i < 4096:
            cut = i
    seen = set()

    def put(sub, name, blob):
        h = hashlib.sha1(blob).hexdigest()
        if (sub, h) in seen or not blob:
            return
        seen.add((sub, h))
        os.makedirs(os.path.join(out, sub), exist_ok=True)
        open(os.path.join(out, sub, name), "wb").write(blob)

    put("framestream", prefix + "-stream", data[:cut])
    for k, f in enumerate(frames):
        put("dnstap_peek", "%s-%d" % (prefix, k), f)
        for tag, v in fields(f):
            if tag == 14:
                for t2, v2 in fields(v):
                    if t2 == 10:
                        put("dnswire", "%s-%d-q" % (prefix, k), v2)
                    if t2 == 14:
                        put("dnswire", "%s-%d-r" % (prefix, k), v2)
    print("%s: %d frames" % (path, len(frames)))


main()
