#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the yamux session fuzz target (tests/fuzz/corpus/yamux_session).
Each input is one role byte (odd: we are the client, even: the server; bit 1: we read a 64 KiB shared
ring, so RingData frames are valid) followed by frames a peer sends."""
import os
import struct

DATA, WINDOW, PING, GOAWAY, RING = 0, 1, 2, 3, 0x80
SYN, ACK, FIN, RST = 1, 2, 4, 8


def frame(kind, flags, sid, length, payload=b"", version=0):
    return struct.pack(">BBHII", version, kind, flags, sid, length) + payload


def data(sid, payload, flags=0):
    return frame(DATA, flags, sid, len(payload), payload)


SERVER, CLIENT, CLIENT_RING = b"\x00", b"\x01", b"\x03"
seeds = {
    "open_data_fin": SERVER + data(1, b"hello", SYN) + frame(WINDOW, FIN, 1, 0),
    "window_syn_then_data": SERVER + frame(WINDOW, SYN, 1, 0) + data(1, b"x" * 300) + data(1, b"y", FIN),
    "two_streams_interleaved": SERVER + data(1, b"a", SYN) + data(3, b"b", SYN) + data(1, b"c") + data(3, b"d", FIN),
    "window_growth": SERVER + frame(WINDOW, SYN, 1, 1 << 20) + data(1, b"z" * 1000),
    "reset": SERVER + data(1, b"abc", SYN) + frame(WINDOW, RST, 1, 0),
    "ping": SERVER + frame(PING, SYN, 0, 7) + frame(PING, ACK, 0, 1),
    "go_away_normal": SERVER + data(1, b"q", SYN) + frame(GOAWAY, 0, 0, 0) + data(3, b"r", SYN),
    "go_away_error": SERVER + frame(GOAWAY, 0, 0, 1),
    "bad_version": SERVER + frame(PING, SYN, 0, 1, version=1),
    "bad_type": SERVER + frame(9, 0, 0, 0),
    "duplicate_syn": SERVER + frame(WINDOW, SYN, 1, 0) + frame(WINDOW, SYN, 1, 0),
    "unknown_stream": SERVER + data(77, b"lost") + frame(WINDOW, 0, 79, 100),
    "window_overrun": SERVER + data(1, b"o" * 200000, SYN) + data(1, b"o" * 100000),
    "client_role_peer_opens_even": CLIENT + data(2, b"from server", SYN) + frame(WINDOW, ACK, 1, 0),
    "client_role_ack_and_data": CLIENT + frame(WINDOW, ACK, 1, 4096) + data(1, b"reply", FIN),
    "partial_header": SERVER + frame(WINDOW, SYN, 1, 0)[:7],
    "ring_spans_wrap_and_fin": CLIENT_RING + frame(WINDOW, ACK, 1, 0) + frame(RING, 0, 1, 40000) + data(1, b"inline")
    + frame(RING, 0, 1, 40000) + frame(RING, FIN, 1, 30000),
    "ring_too_long": CLIENT_RING + frame(WINDOW, ACK, 1, 0) + frame(RING, 0, 1, 65537),
    "ring_without_ring": CLIENT + frame(WINDOW, ACK, 1, 0) + frame(RING, 0, 1, 100),
    "ring_reset_stream": CLIENT_RING + frame(WINDOW, ACK, 1, 0) + frame(RING, RST, 1, 20000) + frame(RING, 0, 1, 20000),
    "backlog_flood": SERVER + b"".join(frame(WINDOW, SYN, 2 * i + 1, 0) for i in range(20)),
}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "yamux_session")
os.makedirs(out, exist_ok=True)
for name, body in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(body)
print(f"wrote {len(seeds)} seeds to {out}")
