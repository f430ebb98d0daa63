#!/usr/bin/env python3
r"""Synthetic HTTP/1.1 capture generator for the c2scribe benchmarks.

Writes a classic pcap (Ethernet link type, microsecond timestamps, optionally
gzip-compressed) of many interleaved HTTP/1.1 connections with real TCP: a
three-way handshake, MSS-sized segments with correct sequence and ACK numbers,
the peer's pure ACKs (one per two data segments, plus a delayed one at the end
of a flight) and a FIN teardown on both sides.  IPv4 header checksums are
correct; TCP checksums are 0 (as in captures with checksum offload) unless
``--tcp-checksum`` is given.

Usage::

    python bench/gen_captures.py --profile large --size 1G --out /tmp/large.pcap
    python bench/gen_captures.py --profile small --size 200M --out s.pcap.gz \
        --seed 7 --concurrency 64 --drop-rate 0.001 --split-mb 100
    python bench/gen_captures.py --profile small --size 200M --out lossy.pcap \
        --drop-data 0.001 --drop-seed 2 --manifest-full

Sizes are decimal (1G = 10**9 bytes; Ki/Mi/Gi are binary) and count the
uncompressed pcap bytes.  The output is a pure function of the arguments: the
same seed gives the same bytes.  A lossy variant (``--drop-rate``: each data
packet with that probability; ``--drop-data``: exactly that fraction of them, at
places drawn from ``--drop-seed``) draws its drops from a separate random
stream, so it holds exactly the packets of the loss-free capture minus the
dropped ones; the manifest then lists every dropped packet and the transactions
it touches (``drops``, ``dropped_list``).

Beside the capture, ``OUT.manifest.json`` tells what is inside: profile, seed,
files, bytes, packets, connections, transactions and dropped packets; with
``--manifest-full`` also one record per transaction (4-tuple, method, URI,
Host, status and the decoded request/response body lengths and SHA-256).

Only the standard library is used, and the hot loop is written for speed:
bodies and header values are built once into pools, each frame is one
struct.pack of Ethernet+IPv4+TCP (the IPv4 checksum updated incrementally) plus
its payload slice, and the output is joined and written in 1 MB blocks.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import random
import re
import struct
import sys
import time

# Bump when the same arguments would give different bytes (run_bench.py then regenerates its cache).
GENERATOR_VERSION = 2
MSS = 1448
M32 = 0xFFFFFFFF
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
WINDOW = 65535          # no window scaling: the raw 16-bit window
T0_US = 1705312800 * 1_000_000   # 2024-01-15 10:00:00 UTC

PCAP_MAGIC_US = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144
PCAP_GLOBAL_HEADER = struct.pack("<IHHiIII", PCAP_MAGIC_US, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)
PCAP_RECORD = struct.Struct("<IIII")
# Ethernet header (14 bytes, passed whole) + IPv4 (20) + TCP without options (20).
FRAME = struct.Struct("!14sHHHHHH4s4sHHIIHHHH")
FRAME_OVERHEAD = PCAP_RECORD.size + FRAME.size        # 70 bytes per packet on disk
SYN_OPTIONS = bytes([2, 4, 0x05, 0xB4, 1, 1, 4, 2])   # MSS 1460, NOP, NOP, SACK permitted
GATEWAY_MAC = bytes.fromhex("00005e000101")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


# --------------------------------------------------------------------------- profiles

PROFILES = {
    # Large bodies: keep-alive connections carrying 0.2-80 KB responses in every framing.
    "large": dict(
        tx_per_conn=(1, 8),
        pipeline_prob=0.12,          # of connections with >= 2 transactions
        pipeline_depth=(2, 4),
        post_prob=0.20,
        server_close_prob=0.2,
        resp_size=(200, 80_000),
        resp_pool=160,
        req_size=(100, 64_000),
        req_pool=48,
        req_gzip_prob=0.25,          # of text-like POST bodies
        # framing weights for text-like / binary bodies: identity+CL, chunked, gzip+CL, gzip+chunked
        text_framing=(30, 20, 25, 25),
        binary_framing=(70, 30, 0, 0),
        dt_us=(1, 60),
        burst=(1, 6),
    ),
    # Small transactions: short connections of 1-3 transactions with 50-1200 B bodies.
    "small": dict(
        tx_per_conn=(1, 3),
        pipeline_prob=0.10,
        pipeline_depth=(2, 3),
        post_prob=0.15,
        server_close_prob=0.3,
        resp_size=(50, 1200),
        resp_pool=400,
        req_size=(50, 1200),
        req_pool=100,
        req_gzip_prob=0.15,
        text_framing=(70, 15, 10, 5),
        binary_framing=(85, 15, 0, 0),
        dt_us=(1, 40),
        burst=(1, 4),
    ),
}

USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/119.0.0.0 Safari/537.36",
    "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.1; Trident/7.0)",
    "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; WOW64; Trident/6.0)",
    "curl/8.5.0",
    "python-requests/2.31.0",
    "Go-http-client/1.1",
    "Microsoft-CryptoAPI/10.0",
]
ACCEPTS = [
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "*/*",
    "application/json, text/plain, */*",
    "image/avif,image/webp,image/apng,image/*,*/*;q=0.8",
    "text/css,*/*;q=0.1",
]
SERVER_SOFTWARE = ["nginx/1.24.0", "Apache/2.4.57 (Debian)", "Microsoft-IIS/10.0",
                   "gunicorn", "openresty", "lighttpd/1.4.69"]
SYLLABLES = ["ka", "lo", "mi", "ra", "te", "su", "ne", "vo", "pi", "da", "ri", "ko", "ma",
             "zu", "be", "to", "la", "se", "no", "fi", "gu", "he", "ja", "qu", "wi", "xe",
             "yo", "ce", "an", "el", "or", "in", "st", "tr"]
COMMON_WORDS = ["the", "of", "and", "to", "in", "is", "for", "on", "with", "that", "by",
                "this", "from", "at", "as", "are", "be", "or", "an", "was", "it", "not",
                "data", "user", "page", "item", "value", "result", "name", "id", "time"]
REASONS = {200: "OK", 201: "Created", 204: "No Content", 302: "Found", 304: "Not Modified",
           404: "Not Found", 500: "Internal Server Error"}
# Kinds of body: (content type, text-like?)
KINDS = {
    "html": ("text/html; charset=utf-8", True),
    "json": ("application/json", True),
    "js": ("application/javascript", True),
    "css": ("text/css", True),
    "text": ("text/plain; charset=utf-8", True),
    "b64json": ("application/json", True),
    "binary": ("application/octet-stream", False),
    # Random bytes, so no type with a Wireshark dissector (image/jpeg would fail to dissect).
    "image": ("image/webp", False),
}
RESP_KIND_WEIGHTS = {"html": 22, "json": 18, "js": 10, "css": 5, "text": 5, "b64json": 12,
                     "binary": 13, "image": 15}
REQ_KINDS = {
    "form": "application/x-www-form-urlencoded",
    "json": "application/json",
    "b64json": "application/json",
    "binary": "application/octet-stream",
}
REQ_KIND_WEIGHTS = {"form": 30, "json": 35, "b64json": 15, "binary": 20}


def parse_size(text: str) -> int:
    """'1G' -> 10**9, '200M' -> 2*10**8, '64Mi' -> 64*2**20, '12345' -> 12345."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?)[bB]?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (use e.g. 1G, 200M, 64Mi)")
    num, unit, binary = m.groups()
    power = " KMGT".index(unit.upper() or " ")
    return int(float(num) * ((1024 if binary else 1000) ** power))


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _weighted(rng: random.Random, weights: dict):
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


# --------------------------------------------------------------------------- bodies

class TextMaker:
    """Text-like content from a Zipf-weighted vocabulary: compresses about like real HTML."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        words = list(COMMON_WORDS)
        seen = set(words)
        while len(words) < 3000:
            w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4)))
            if w not in seen:
                seen.add(w)
                words.append(w)
        self.words = words
        cum, acc = [], 0.0
        for i in range(len(words)):
            acc += 1.0 / (i + 1)
            cum.append(acc)
        self.cum = cum

    def words_n(self, n: int) -> list:
        return self.rng.choices(self.words, cum_weights=self.cum, k=n)

    def sentence(self, n: int) -> str:
        return " ".join(self.words_n(n))

    def make(self, kind: str, size: int) -> bytes:
        rng = self.rng
        parts = []
        total = 0
        if kind == "html":
            head = (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                    f"<title>{self.sentence(4)}</title>\n"
                    f"<link rel=\"stylesheet\" href=\"/static/{self.words_n(1)[0]}.css\">\n"
                    f"</head>\n<body>\n")
            tail = "</body>\n</html>\n"
            parts.append(head)
            total = len(head) + len(tail)
            while total < size:
                tag = rng.choice(("p", "div", "li", "span", "h2"))
                w = self.words_n(2)
                s = (f"<{tag} class=\"{w[0]}-{w[1]}\">{self.sentence(rng.randint(5, 40))}</{tag}>\n"
                     if rng.random() < 0.8 else
                     f"<a href=\"/{w[0]}/{w[1]}.html\">{self.sentence(3)}</a>\n")
                parts.append(s)
                total += len(s)
            parts.append(tail)
        elif kind in ("json", "text", "css", "js"):
            if kind == "json":
                parts.append("[")
                total = 2
            while total < size:
                w = self.words_n(6)
                if kind == "json":
                    s = (f"{{\"id\":{rng.randint(1, 10**6)},\"name\":\"{w[0]} {w[1]}\","
                         f"\"{w[2]}\":\"{self.sentence(rng.randint(2, 12))}\","
                         f"\"tags\":[\"{w[3]}\",\"{w[4]}\"],\"score\":{rng.random():.4f},"
                         f"\"active\":{'true' if rng.random() < 0.5 else 'false'}}},")
                elif kind == "css":
                    s = (f".{w[0]}-{w[1]} {{ margin: {rng.randint(0, 40)}px; color: #{rng.getrandbits(24):06x};"
                         f" font-family: {w[2]}; }}\n")
                elif kind == "js":
                    s = (f"function {w[0]}_{w[1]}({w[2]},{w[3]}){{var {w[4]}={w[2]}.{w[5]}"
                         f"(\"{self.sentence(4)}\");return {w[4]}+{rng.randint(0, 999)};}}\n")
                else:
                    s = self.sentence(rng.randint(8, 30)) + ".\n"
                parts.append(s)
                total += len(s)
            if kind == "json":
                parts[-1] = parts[-1].rstrip(",")
                parts.append("]")
        elif kind == "b64json":
            raw = rng.randbytes(max(1, (size - 60) * 3 // 4))
            parts.append(f"{{\"id\":\"{rng.getrandbits(64):016x}\",\"cmd\":\"{self.words_n(1)[0]}\","
                         f"\"data\":\"{base64.b64encode(raw).decode()}\"}}")
        elif kind == "form":
            while total < size:
                w = self.words_n(3)
                s = f"{w[0]}={w[1]}+{w[2]}&"
                parts.append(s)
                total += len(s)
            parts[-1] = parts[-1].rstrip("&")
        else:
            raise ValueError(kind)
        return "".join(parts).encode("utf-8")


def chunk_body(rng: random.Random, data: bytes) -> bytes:
    """Chunked transfer coding with varied chunk sizes (fixed, random, tiny or one chunk)."""
    style = rng.choice(("fixed", "random", "random", "tiny", "single"))
    fmt = b"%X\r\n" if rng.random() < 0.3 else b"%x\r\n"
    out = []
    pos, n = 0, len(data)
    fixed = rng.choice((512, 1024, 4096, 8000, 8192, 16384))
    while pos < n:
        if style == "fixed":
            k = fixed
        elif style == "random":
            k = rng.randint(1, 20000)
        elif style == "tiny":
            k = rng.randint(1, 300)
        else:
            k = n
        piece = data[pos:pos + k]
        pos += len(piece)
        out.append(fmt % len(piece))
        out.append(piece)
        out.append(b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)


class Entity:
    """A body ready for the wire: framing headers + encoded bytes, and what decodes out of it."""

    __slots__ = ("kind", "ctype", "headers", "wire", "dec_len", "dec_sha", "framing", "coding")

    def __init__(self, kind, ctype, headers, wire, dec_len, dec_sha, framing, coding):
        self.kind, self.ctype, self.headers, self.wire = kind, ctype, headers, wire
        self.dec_len, self.dec_sha, self.framing, self.coding = dec_len, dec_sha, framing, coding


class BodyPool:
    """Every body of a run, built once: response entities in all framings, and POST bodies."""

    FRAMINGS = (("length", ""), ("chunked", ""), ("length", "gzip"), ("chunked", "gzip"))

    def __init__(self, prof: dict, rng: random.Random):
        self.rng = rng
        text = TextMaker(rng)
        self.text = text
        lo, hi = prof["resp_size"]
        # Response entities by kind of body, so URIs can match content; every kind at least once.
        self.by_kind = {}
        n = prof["resp_pool"]
        kinds = list(RESP_KIND_WEIGHTS)
        kinds += [_weighted(rng, RESP_KIND_WEIGHTS) for _ in range(n - len(kinds))]
        for kind in kinds:
            ctype, textlike = KINDS[kind]
            size = rng.randint(lo, hi)
            body = text.make(kind, size) if textlike else rng.randbytes(size)
            weights = prof["text_framing"] if textlike else prof["binary_framing"]
            variants = [self._entity(kind, ctype, body, framing, coding)
                        for (framing, coding), w in zip(self.FRAMINGS, weights) if w]
            vweights = [w for w in weights if w]
            self.by_kind.setdefault(kind, []).append((variants, vweights))
        self.kinds = list(self.by_kind)
        self.kind_weights = [RESP_KIND_WEIGHTS[k] for k in self.kinds]
        # Small bodies for error/redirect statuses.
        self.errors = {}
        for status in (302, 404, 500):
            msg = f"<html><head><title>{status} {REASONS[status]}</title></head><body><h1>{REASONS[status]}</h1>" \
                  f"<p>{text.sentence(12)}</p></body></html>\n"
            self.errors[status] = self._entity("html", "text/html", msg.encode(), "length", "")
        # POST bodies.
        rlo, rhi = prof["req_size"]
        self.requests = []
        for _ in range(prof["req_pool"]):
            kind = _weighted(rng, REQ_KIND_WEIGHTS)
            size = rng.randint(rlo, rhi)
            if kind == "form":
                size = min(size, 4000)
            body = rng.randbytes(size) if kind == "binary" else text.make(kind, size)
            coding = "gzip" if kind != "binary" and rng.random() < prof["req_gzip_prob"] else ""
            self.requests.append(self._entity(kind, REQ_KINDS[kind], body, "length", coding))

    def _entity(self, kind, ctype, body, framing, coding):
        wire = body
        headers = []
        if coding == "gzip":
            wire = gzip.compress(body, compresslevel=self.rng.choice((1, 6, 9)), mtime=0)
            headers.append("Content-Encoding: gzip\r\n")
        if framing == "chunked":
            wire = chunk_body(self.rng, wire)
            headers.append("Transfer-Encoding: chunked\r\n")
        else:
            headers.append(f"Content-Length: {len(wire)}\r\n")
        return Entity(kind, ctype, "".join(headers), wire, len(body),
                      hashlib.sha256(body).hexdigest(), framing, coding)


# --------------------------------------------------------------------------- packets

def _ones_sum_mod(words_sum: int, payload) -> int:
    """Fold a TCP checksum: payload summed as one big-endian integer (== its 16-bit word sum mod 0xFFFF)."""
    s = words_sum
    if payload:
        v = int.from_bytes(payload, "big")
        s += (v << 8) if len(payload) & 1 else v
    r = s % 0xFFFF
    return 0xFFFF - r if r else 0xFFFF


def frame_factory(eth: bytes, src4: bytes, dst4: bytes, sport: int, dport: int,
                  ipid: int, tcp_checksum: bool):
    """Return frame(flags, seq, ack, payload) -> Ethernet+IPv4+TCP frame bytes for one direction.

    The IPv4 checksum is computed incrementally from a per-direction constant sum; the IP ID
    counts up per packet.  payload is b"" for packets without data.
    """
    src = int.from_bytes(src4, "big")
    dst = int.from_bytes(dst4, "big")
    ip_base = 0x4500 + 0x4000 + 0x4006 + (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
    pack = FRAME.pack

    if not tcp_checksum:
        def frame(flags, seq, ack, payload):
            nonlocal ipid
            tot = 40 + len(payload)
            i = ipid = (ipid + 1) & 0xFFFF
            s = ip_base + tot + i
            s = (s & 0xFFFF) + (s >> 16)
            s = (s & 0xFFFF) + (s >> 16)
            return pack(eth, 0x4500, tot, i, 0x4000, 0x4006, s ^ 0xFFFF, src4, dst4,
                        sport, dport, seq & M32, ack & M32, 0x5000 | flags, WINDOW, 0, 0) + payload
    else:
        pseudo = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + 6 + sport + dport + WINDOW

        def frame(flags, seq, ack, payload):
            nonlocal ipid
            plen = len(payload)
            tot = 40 + plen
            i = ipid = (ipid + 1) & 0xFFFF
            s = ip_base + tot + i
            s = (s & 0xFFFF) + (s >> 16)
            s = (s & 0xFFFF) + (s >> 16)
            seq &= M32
            ack &= M32
            c = _ones_sum_mod(pseudo + 20 + plen + (0x5000 | flags) + (seq >> 16) + (seq & 0xFFFF)
                              + (ack >> 16) + (ack & 0xFFFF), payload)
            return pack(eth, 0x4500, tot, i, 0x4000, 0x4006, s ^ 0xFFFF, src4, dst4,
                        sport, dport, seq, ack, 0x5000 | flags, WINDOW, c, 0) + payload

    return frame


_SYN_OPT_SUM = sum(struct.unpack("!4H", SYN_OPTIONS))


def syn_frame(eth: bytes, src4: bytes, dst4: bytes, sport: int, dport: int, ipid: int,
              flags: int, seq: int, ack: int, tcp_checksum: bool) -> bytes:
    """A SYN or SYN-ACK frame with TCP options MSS 1460, NOP, NOP, SACK permitted."""
    src = int.from_bytes(src4, "big")
    dst = int.from_bytes(dst4, "big")
    tot = 40 + len(SYN_OPTIONS)
    s = 0x4500 + 0x4000 + 0x4006 + (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + tot + ipid
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    seq &= M32
    ack &= M32
    c = 0
    if tcp_checksum:
        c = _ones_sum_mod((src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + 6 + 28
                          + sport + dport + (seq >> 16) + (seq & 0xFFFF) + (ack >> 16) + (ack & 0xFFFF)
                          + (0x7000 | flags) + WINDOW + _SYN_OPT_SUM, None)
    return FRAME.pack(eth, 0x4500, tot, ipid, 0x4000, 0x4006, s ^ 0xFFFF, src4, dst4,
                      sport, dport, seq, ack, 0x7000 | flags, WINDOW, c, 0) + SYN_OPTIONS


def _segments(tx, rx, seq, rseq, data, unacked):
    """Send `data` from tx (next seq `seq`) in MSS segments; rx sends a pure ACK every 2nd segment.

    Yields frames; returns (next seq, rx's count of unacknowledged segments).
    """
    mv = memoryview(data)
    n = len(data)
    off = 0
    # Never end a message with a segment of 1-4 bytes: Wireshark 4.0 fails ("Malformed Packet")
    # on a chunked body whose final "0\r\n\r\n" is split that way.  Such a tail takes 16
    # bytes from the segment before it.
    short_at = n - n % MSS - MSS if 0 < n % MSS < 5 and n > MSS else -1
    while off < n:
        chunk = mv[off:off + (MSS - 16 if off == short_at else MSS)]
        k = len(chunk)
        off += k
        yield tx(ACK | PSH if off >= n else ACK, seq, rseq, chunk)
        seq += k
        unacked += 1
        if unacked == 2:
            yield rx(ACK, rseq, seq, b"")
            unacked = 0
    return seq, unacked


def connection_frames(syn, synack, fc, fs, isn_c, isn_s, groups, teardown):
    """All frames of one connection in causal order (the SYN and SYN-ACK come prebuilt).

    fc/fs build client/server frames; isn_c/isn_s are the initial sequence numbers.
    groups: list of lists of (request bytes, response bytes); the requests of a group are
    sent back to back before its responses (pipelining when a group has several).
    teardown: 0 client closes (3 packets), 1 client closes (4 packets), 2 server closes.
    """
    cs, ss = isn_c + 1, isn_s + 1
    yield syn
    yield synack
    yield fc(ACK, cs, ss, b"")
    un_s = 0    # client segments the server has not acknowledged yet
    un_c = 0    # server segments the client has not acknowledged yet
    for group in groups:
        for req, _ in group:
            if len(req) <= MSS:        # fast path: one segment, no sub-generator
                yield fc(ACK | PSH, cs, ss, req)
                cs += len(req)
                un_s += 1
                if un_s == 2:
                    yield fs(ACK, ss, cs, b"")
                    un_s = 0
            else:
                cs, un_s = yield from _segments(fc, fs, cs, ss, req, un_s)
        un_s = 0                       # the response carries the ACK
        for _, resp in group:
            if len(resp) <= MSS:
                yield fs(ACK | PSH, ss, cs, resp)
                ss += len(resp)
                un_c += 1
                if un_c == 2:
                    yield fc(ACK, cs, ss, b"")
                    un_c = 0
            else:
                ss, un_c = yield from _segments(fs, fc, ss, cs, resp, un_c)
        if un_c:                       # delayed ACK at the end of the flight
            yield fc(ACK, cs, ss, b"")
            un_c = 0
    if teardown == 2:
        yield fs(FIN | ACK, ss, cs, b"")
        ss += 1
        yield fc(FIN | ACK, cs, ss, b"")
        cs += 1
        yield fs(ACK, ss, cs, b"")
    else:
        yield fc(FIN | ACK, cs, ss, b"")
        cs += 1
        if teardown == 1:
            yield fs(ACK, ss, cs, b"")
        yield fs(FIN | ACK, ss, cs, b"")
        ss += 1
        yield fc(ACK, cs, ss, b"")


def message_cost(n: int) -> int:
    """Bytes on disk for a message of n bytes: its segments and the peer's ACK per two of them."""
    segs = (n + MSS - 1) // MSS
    return n + (segs + segs // 2) * FRAME_OVERHEAD


CONNECTION_COST = 7 * FRAME_OVERHEAD + 2 * len(SYN_OPTIONS)    # handshake + teardown


# --------------------------------------------------------------------------- output

class PcapOutput:
    """One pcap file, or a tcpdump -C style rotation OUT.000, OUT.001, ... of about split bytes."""

    def __init__(self, out: str, split_bytes: int = 0, gzip_level: int = 1):
        self.out = out
        self.gz = out.endswith(".gz")
        self.gzip_level = gzip_level
        self.split = split_bytes
        self.files = []      # [{"path", "bytes", "packets"}]
        self.f = None
        self.raw = None
        self._open()

    def _path(self, n: int) -> str:
        if not self.split:
            return self.out
        if self.gz:
            return f"{self.out[:-3]}.{n:03d}.gz"
        return f"{self.out}.{n:03d}"

    def _open(self):
        path = self._path(len(self.files))
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        self.raw = open(path, "wb", buffering=0)
        if self.gz:
            self.f = gzip.GzipFile(filename="", mode="wb", fileobj=self.raw,
                                   compresslevel=self.gzip_level, mtime=0)
        else:
            self.f = self.raw
        self.f.write(PCAP_GLOBAL_HEADER)
        self.files.append({"path": path, "bytes": len(PCAP_GLOBAL_HEADER), "packets": 0})

    def write(self, chunks, nbytes: int, npackets: int):
        self.f.write(b"".join(chunks))
        cur = self.files[-1]
        cur["bytes"] += nbytes
        cur["packets"] += npackets
        if self.split and cur["bytes"] >= self.split:
            self._close()
            self._open()

    def _close(self):
        if self.gz:
            self.f.close()
        self.raw.close()
        self.files[-1]["disk_bytes"] = os.path.getsize(self.files[-1]["path"])

    def close(self):
        self._close()
        if self.split and len(self.files) > 1 and self.files[-1]["packets"] == 0:
            # The last rotation was opened but nothing came: drop it, like tcpdump -C.
            os.unlink(self.files[-1]["path"])
            self.files.pop()


# --------------------------------------------------------------------------- generator

class CaptureGenerator:
    def __init__(self, profile: str, seed: int = 1, concurrency: int = 64,
                 drop_rate: float = 0.0, tcp_checksum: bool = False,
                 manifest_full: bool = False, drop_data: float = 0.0, drop_seed=None):
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}")
        self.profile = profile
        self.prof = PROFILES[profile]
        self.seed = seed
        self.concurrency = max(1, concurrency)
        self.drop_rate = drop_rate
        self.tcp_checksum = tcp_checksum
        self.manifest_full = manifest_full
        self.rng = random.Random(f"c2scribe-bench/traffic/{profile}/{seed}")
        self.drop_rng = random.Random(f"c2scribe-bench/drops/{seed}")
        if drop_rate and drop_data:
            raise ValueError("give drop_rate or drop_data, not both")
        # --drop-data: exactly that fraction of the data packets (stratified: one drop at a
        # random place in each run of 1/fraction data packets), from its own stream.
        self.drop_data = drop_data
        self.drop_seed = seed if drop_seed is None else drop_seed
        self.drop_data_rng = random.Random(f"c2scribe-bench/drop-data/{self.drop_seed}")
        # Where each dropped packet falls (connection, direction, message, offset): only
        # tracked for lossy captures.
        self.track_drops = bool(drop_rate or drop_data)
        self.drop_list = []
        self._drop_strata = 0
        self._conn_info = None
        self.pool = BodyPool(self.prof, random.Random(f"c2scribe-bench/bodies/{profile}/{seed}"))
        self.text = self.pool.text
        rng = self.rng
        # Hosts: clients 10.x.y.z, each with an ephemeral port counter; servers on TEST-NETs.
        clients = set()
        while len(clients) < 2048:
            clients.add((10, rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254)))
        self.clients = [bytes(c) for c in sorted(clients)]
        self.client_port = [rng.randint(32768, 60999) for _ in self.clients]
        self.servers = []
        for i in range(64):
            addr = bytes((192, 0, 2, i + 1)) if i < 44 else bytes((198, 51, 100, i - 43))
            port = 80 if i < 44 else 8080
            w = self.text.words_n(2)
            zone = rng.choice(("example.com", "example.net", "example.org", "test"))
            sub = rng.choice(("www.", "api.", "cdn.", "static.", "", "update."))
            name = f"{sub}{w[0]}{w[1]}.{zone}"
            host = name if port == 80 else f"{name}:{port}"
            self.servers.append((addr, port, host, rng.choice(SERVER_SOFTWARE)))
        self.stats = dict(packets=0, bytes=0, connections=0, transactions=0, dropped_packets=0,
                          data_packets=0, pipelined_connections=0, post_requests=0)
        self.counts = {}         # framing/coding/status counts
        self.tx_records = []
        self._date_sec = -1
        self._date = ""
        self._build_pools()

    # --- HTTP messages

    def _date_header(self, t_us: int) -> str:
        sec = t_us // 1_000_000
        if sec != self._date_sec:
            self._date_sec = sec
            self._date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(sec))
        return self._date

    def _build_pools(self, n: int = 1024):
        """Header values drawn per transaction, made once so a transaction costs a few picks."""
        rng = self.pool.rng
        words = self.text.words_n
        self.uris = {}
        for kind in self.pool.kinds:
            lst = []
            for _ in range(n):
                w = words(3)
                k = rng.randint(1, 99999)
                if kind == "html":
                    u = rng.choice((f"/{w[0]}/{w[1]}-{w[2]}.html", "/", f"/news/2024/{k % 12 + 1:02d}/{w[0]}-{w[1]}",
                                    f"/index.php?page={w[0]}&id={k}"))
                elif kind in ("json", "b64json"):
                    u = rng.choice((f"/api/v1/{w[0]}/{k}", f"/api/v2/{w[0]}?q={w[1]}&limit={k % 100}",
                                    f"/{w[0]}/gate.php?id={rng.getrandbits(32):08x}", f"/rpc/{w[0]}.json"))
                elif kind == "js":
                    u = f"/static/js/{w[0]}.{rng.getrandbits(32):08x}.js"
                elif kind == "css":
                    u = f"/static/css/{w[0]}-{w[1]}.css"
                elif kind == "image":
                    u = rng.choice((f"/images/{w[0]}-{k}.webp", f"/img/{w[0]}/{w[1]}.webp?v={k}"))
                elif kind == "binary":
                    u = rng.choice((f"/download/{w[0]}-{k}.bin", f"/updates/{w[0]}/{w[1]}.dat",
                                    f"/{rng.getrandbits(64):016x}"))
                else:
                    u = f"/{w[0]}/{w[1]}.txt"
                lst.append(u)
            self.uris[kind] = lst
        self.post_uris = []
        for _ in range(n):
            w = words(2)
            self.post_uris.append(rng.choice((f"/api/v1/{w[0]}", f"/submit.php?id={rng.getrandbits(32):08x}",
                                              f"/{w[0]}/upload", f"/{w[0]}/{w[1]}.php", "/gate.php")))
        self.cookies = [f"Cookie: sid={rng.getrandbits(128):032x}; _ga=GA1.2.{rng.randint(10**8, 10**9)}."
                        f"{rng.randint(1600000000, 1700000000)}\r\n" for _ in range(n)]
        self.set_cookies = [f"Set-Cookie: sid={rng.getrandbits(128):032x}; Path=/; HttpOnly\r\n"
                            for _ in range(n)]
        self.etags = [f"ETag: \"{rng.getrandbits(48):012x}\"\r\nCache-Control: max-age=3600\r\n"
                      for _ in range(n)]
        self.if_none_match = [f"If-None-Match: \"{rng.getrandbits(48):012x}\"\r\n" for _ in range(n)]
        self.locations = [f"/{w}/" for w in words(n)]
        # Entities flattened by weight, so a weighted pick is one index.
        self.kinds_flat = [k for k in self.pool.kinds for _ in range(RESP_KIND_WEIGHTS[k])]
        self.entities = {}
        for kind, bodies in self.pool.by_kind.items():
            flat = []
            for variants, weights in bodies:
                g = 0
                for w in weights:
                    g = w if g == 0 else _gcd(g, w)
                for v, w in zip(variants, weights):
                    flat.extend([v] * (w // g))
            self.entities[kind] = flat

    def _transaction(self, host: str, server_sw: str, t_us: int, allow_post: bool, close: bool):
        R = self.rng.random
        pool = self.pool
        is_post = allow_post and R() < self.prof["post_prob"]
        cookie = self.cookies[int(R() * len(self.cookies))] if R() < 0.35 else ""
        ua = USER_AGENTS[int(R() * len(USER_AGENTS))]
        req_ent = None
        conditional = ""
        if is_post:
            req_ent = pool.requests[int(R() * len(pool.requests))]
            uri = self.post_uris[int(R() * len(self.post_uris))]
            r = R()
            status = 200 if r < 0.7 else (201 if r < 0.85 else 204)
            resp_kind = "json"
            body_hdrs = f"Content-Type: {req_ent.ctype}\r\n{req_ent.headers}"
            accept = "application/json, text/plain, */*"
        else:
            r = R()
            status = 200 if r < 0.90 else 404 if r < 0.94 else 302 if r < 0.97 else 304 if r < 0.99 else 500
            resp_kind = self.kinds_flat[int(R() * len(self.kinds_flat))]
            uris = self.uris[resp_kind]
            uri = uris[int(R() * len(uris))]
            body_hdrs = ""
            accept = ACCEPTS[int(R() * len(ACCEPTS))]
            if status == 304:
                conditional = self.if_none_match[int(R() * len(self.if_none_match))]
        method = "POST" if is_post else "GET"
        req_head = (f"{method} {uri} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nAccept: {accept}\r\n"
                    f"Accept-Encoding: gzip, deflate\r\nAccept-Language: en-US,en;q=0.9\r\n"
                    f"{cookie}{conditional}{body_hdrs}Connection: keep-alive\r\n\r\n").encode("latin-1")
        req = req_head + req_ent.wire if req_ent is not None else req_head

        if status == 200 or status == 201:
            ents = self.entities[resp_kind]
            ent = ents[int(R() * len(ents))]
        elif status == 204 or status == 304:
            ent = None
        else:
            ent = pool.errors[status]
        extra = ""
        if status == 302:
            extra = f"Location: http://{host}{self.locations[int(R() * len(self.locations))]}\r\n"
        if status == 304 or (status == 200 and R() < 0.3):
            extra += self.etags[int(R() * len(self.etags))]
        if ent is not None and ent.coding:
            extra += "Vary: Accept-Encoding\r\n"
        if R() < 0.1:
            extra += self.set_cookies[int(R() * len(self.set_cookies))]
        body_hdrs = f"Content-Type: {ent.ctype}\r\n{ent.headers}" if ent is not None else ""
        conn_hdr = "Connection: close\r\n" if close else "Connection: keep-alive\r\nKeep-Alive: timeout=5, max=100\r\n"
        resp_head = (f"HTTP/1.1 {status} {REASONS[status]}\r\nDate: {self._date_header(t_us)}\r\n"
                     f"Server: {server_sw}\r\n{body_hdrs}{extra}{conn_hdr}\r\n").encode("latin-1")
        resp = resp_head + ent.wire if ent is not None else resp_head

        self.stats["transactions"] += 1
        c = self.counts
        if is_post:
            self.stats["post_requests"] += 1
            if req_ent.coding:
                c["request_gzip"] = c.get("request_gzip", 0) + 1
        key = status if ent is None else (status, ent.framing, ent.coding)
        c[key] = c.get(key, 0) + 1
        meta = None
        if self.manifest_full:
            meta = {
                "method": method, "uri": uri, "host": host, "status": status,
                "request_body_len": req_ent.dec_len if req_ent else 0,
                "request_body_sha256": req_ent.dec_sha if req_ent else EMPTY_SHA256,
                "request_content_encoding": req_ent.coding if req_ent else "",
                "response_body_len": ent.dec_len if ent else 0,
                "response_body_sha256": ent.dec_sha if ent else EMPTY_SHA256,
                "response_framing": ent.framing if ent else "none",
                "response_content_encoding": ent.coding if ent else "",
            }
        return req, resp, meta

    # --- connections

    def new_connection(self, t_us: int):
        """Plan a connection and return (packet generator, estimated bytes on disk)."""
        R = self.rng.random
        getrandbits = self.rng.getrandbits
        prof = self.prof
        ci = int(R() * len(self.clients))
        caddr = self.clients[ci]
        port = self.client_port[ci] + 1
        if port > 60999:
            port = 32768
        self.client_port[ci] = port
        saddr, sport, host, server_sw = self.servers[int(R() * len(self.servers))]
        lo, hi = prof["tx_per_conn"]
        ntx = lo + int(R() * (hi - lo + 1))
        pipelined = ntx >= 2 and R() < prof["pipeline_prob"]
        teardown = 2 if R() < prof["server_close_prob"] else int(R() * 2)
        if pipelined:
            sizes = []
            left = ntx
            dlo, dhi = prof["pipeline_depth"]
            while left:
                k = min(left, dlo + int(R() * (dhi - dlo + 1)))
                sizes.append(k)
                left -= k
            self.stats["pipelined_connections"] += 1
        else:
            sizes = [1] * ntx
        conn_id = self.stats["connections"]
        self.stats["connections"] += 1
        groups = []
        done = 0
        cost = CONNECTION_COST + len(sizes) * (FRAME_OVERHEAD // 2)
        track = self.track_drops
        txinfo = []
        req_off = resp_off = 0
        for k in sizes:
            group = []
            for _ in range(k):
                done += 1
                close = teardown == 2 and done == ntx
                tx_index = self.stats["transactions"]
                req, resp, meta = self._transaction(host, server_sw, t_us, not pipelined, close)
                group.append((req, resp))
                if track:
                    line = req[:req.index(b"\r\n")].decode("latin-1").split(" ")
                    txinfo.append((tx_index, done, line[0], line[1], int(resp[9:12]),
                                   req_off, len(req), req.index(b"\r\n\r\n") + 4,
                                   resp_off, len(resp), resp.index(b"\r\n\r\n") + 4))
                    req_off += len(req)
                    resp_off += len(resp)
                cost += message_cost(len(req)) + message_cost(len(resp))
                if meta is not None:
                    meta["connection"] = conn_id
                    meta["client"] = [".".join(map(str, caddr)), port]
                    meta["server"] = [".".join(map(str, saddr)), sport]
                    meta["pipelined"] = pipelined
                    self.tx_records.append(meta)
            groups.append(group)
        cmac = b"\x02\x00" + caddr
        eth_c = GATEWAY_MAC + cmac + b"\x08\x00"
        eth_s = cmac + GATEWAY_MAC + b"\x08\x00"
        isn_c, isn_s = getrandbits(32), getrandbits(32)
        ipid_c, ipid_s = getrandbits(16), getrandbits(16)
        if track:
            self._conn_info = (conn_id, ".".join(map(str, caddr)), port, ".".join(map(str, saddr)), sport,
                               isn_c, isn_s, pipelined, txinfo)
        csum = self.tcp_checksum
        syn = syn_frame(eth_c, caddr, saddr, port, sport, ipid_c, SYN, isn_c, 0, csum)
        synack = syn_frame(eth_s, saddr, caddr, sport, port, ipid_s, SYN | ACK, isn_s, isn_c + 1, csum)
        fc = frame_factory(eth_c, caddr, saddr, port, sport, ipid_c, csum)
        fs = frame_factory(eth_s, saddr, caddr, sport, port, ipid_s, csum)
        gen = connection_frames(syn, synack, fc, fs, isn_c, isn_s, groups, teardown)
        return gen, cost

    # --- the main loop

    def run(self, target_bytes: int, out: PcapOutput, flush_bytes: int = 1 << 20):
        rng = self.rng
        prof = self.prof
        # Cyclic tables of inter-packet gaps and burst lengths: deterministic and cheap.
        dts = [rng.randint(*prof["dt_us"]) for _ in range(4096)]
        bursts = [rng.randint(*prof["burst"]) for _ in range(4096)]
        di = bi = 0
        drop_rate = self.drop_rate
        drop_random = self.drop_rng.random
        drop_data = self.drop_data
        dropping = bool(drop_rate or drop_data)
        next_drop = self._next_data_drop(-1) if drop_data else -1
        record_drop = self._record_drop
        infos = []           # the tracked connection of each generator in `active` (drops only)
        rec = PCAP_RECORD.pack
        chunks = []
        append = chunks.append
        buf_bytes = buf_packets = 0
        total_bytes = len(PCAP_GLOBAL_HEADER)
        packets = data_packets = dropped = 0
        sec, usec = divmod(T0_US, 1_000_000)
        committed = len(PCAP_GLOBAL_HEADER)
        active = []
        R = rng.random
        for _ in range(self.concurrency):
            if committed >= target_bytes:
                break
            g, est = self.new_connection(sec * 1_000_000 + usec)
            active.append(g)
            infos.append(self._conn_info)
            committed += est
        while active:
            i = int(R() * len(active))
            g = active[i]
            n = bursts[bi]
            bi = (bi + 1) & 4095
            while n:
                n -= 1
                try:
                    f = next(g)
                except StopIteration:
                    if committed < target_bytes:
                        g, est = self.new_connection(sec * 1_000_000 + usec)
                        active[i] = g
                        infos[i] = self._conn_info
                        committed += est
                    else:
                        active[i] = active[-1]
                        active.pop()
                        infos[i] = infos[-1]
                        infos.pop()
                    break
                usec += dts[di]
                di = (di + 1) & 4095
                if usec >= 1_000_000:
                    sec += 1
                    usec -= 1_000_000
                caplen = len(f)
                if caplen > 54 and not f[47] & SYN:    # carries data
                    data_packets += 1
                    if dropping:
                        if drop_data:
                            hit = data_packets - 1 == next_drop
                            if hit:
                                next_drop = self._next_data_drop(next_drop)
                        else:
                            hit = drop_random() < drop_rate
                        if hit:
                            kept = packets + buf_packets
                            record_drop(infos[i], f, kept + dropped + 1, kept, sec, usec)
                            dropped += 1
                            continue
                append(rec(sec, usec, caplen, caplen))
                append(f)
                buf_bytes += caplen + 16
                buf_packets += 1
            if buf_bytes >= flush_bytes:
                out.write(chunks, buf_bytes, buf_packets)
                chunks.clear()
                total_bytes += buf_bytes
                packets += buf_packets
                buf_bytes = buf_packets = 0
        if chunks:
            out.write(chunks, buf_bytes, buf_packets)
            total_bytes += buf_bytes
            packets += buf_packets
        out.close()
        self.stats.update(packets=packets, bytes=total_bytes, data_packets=data_packets,
                          dropped_packets=dropped)
        self.first_ts_us = T0_US + dts[0]        # the first packet is a SYN: never dropped
        self.last_ts_us = sec * 1_000_000 + usec

    # --- drops

    def _next_data_drop(self, last: int) -> int:
        """Index (0-based, among data packets) of the next --drop-data drop after `last`.

        The k-th drop falls at floor((k + u) / fraction) with u uniform in [0, 1): one drop in
        each run of 1/fraction data packets, at a random place, so the count is exact to +-1.
        """
        k = self._drop_strata
        self._drop_strata = k + 1
        return max(last + 1, int((k + self.drop_data_rng.random()) / self.drop_data))

    def _record_drop(self, info, frame: bytes, frame_no: int, kept_before: int, sec: int, usec: int):
        """Note where a dropped data packet falls: its connection, direction, message and offset."""
        conn_id, cip, cport, sip, sport, isn_c, isn_s, pipelined, txinfo = info
        src_port, seq = struct.unpack_from("!HxxI", frame, 34)
        plen = len(frame) - FRAME.size
        to_server = src_port == cport
        rel = (seq - isn_c - 1 if to_server else seq - isn_s - 1) & M32
        end = rel + plen
        touches = []
        for (gi, idx, method, uri, status, q_off, q_len, q_head, r_off, r_len, r_head) in txinfo:
            start, length, head = (q_off, q_len, q_head) if to_server else (r_off, r_len, r_head)
            if end <= start or rel >= start + length:
                continue
            a, b = max(rel, start) - start, min(end, start + length) - start
            part = "head" if b <= head else "body" if a >= head else "head+body"
            touches.append({"tx": gi, "index": idx, "method": method, "uri": uri, "status": status,
                            "message": "request" if to_server else "response",
                            "offset": a, "len": b - a, "message_len": length, "head_len": head,
                            "part": part, "first_byte": a == 0, "last_byte": b == length})
            if self.manifest_full:
                self.tx_records[gi].setdefault("dropped", []).append(
                    {"message": touches[-1]["message"], "offset": a, "len": b - a, "part": part})
        self.drop_list.append({
            "frame": frame_no, "after_lossy_frame": kept_before, "ts": f"{sec}.{usec:06d}",
            "connection": conn_id, "client": [cip, cport], "server": [sip, sport],
            "direction": "client_to_server" if to_server else "server_to_client",
            "seq": seq, "offset": rel, "len": plen, "pipelined": pipelined, "touches": touches})

    def drop_summary(self) -> dict:
        """What the drops hit: counts of packets, bytes, connections, transactions and messages."""
        drops = self.drop_list
        touches = [t for d in drops for t in d["touches"]]
        req = {t["tx"] for t in touches if t["message"] == "request"}
        resp = {t["tx"] for t in touches if t["message"] == "response"}
        return {
            "mode": "drop_data (exact fraction, stratified)" if self.drop_data else "drop_rate (Bernoulli)",
            "fraction": self.drop_data or self.drop_rate,
            "seed": self.drop_seed if self.drop_data else self.seed,
            "dropped_packets": len(drops),
            "dropped_payload_bytes": sum(d["len"] for d in drops),
            "client_to_server": sum(d["direction"] == "client_to_server" for d in drops),
            "server_to_client": sum(d["direction"] == "server_to_client" for d in drops),
            "connections_touched": len({d["connection"] for d in drops}),
            "transactions_touched": len(req | resp),
            "requests_touched": len(req),
            "responses_touched": len(resp),
            "request_heads_touched": len({t["tx"] for t in touches
                                          if t["message"] == "request" and t["part"] != "body"}),
            "response_heads_touched": len({t["tx"] for t in touches
                                           if t["message"] == "response" and t["part"] != "body"}),
            "request_lines_lost": len({t["tx"] for t in touches
                                       if t["message"] == "request" and t["first_byte"]}),
            "status_lines_lost": len({t["tx"] for t in touches
                                      if t["message"] == "response" and t["first_byte"]}),
            "packets_spanning_messages": sum(len(d["touches"]) > 1 for d in drops),
        }

    def manifest(self, out: PcapOutput, args: dict, elapsed: float) -> dict:
        m = {
            "generator": "c2scribe bench/gen_captures.py",
            "generator_version": GENERATOR_VERSION,
            "format": "pcap (classic, microsecond, Ethernet)" + (", gzip" if out.gz else ""),
            "profile": self.profile,
            "seed": self.seed,
            "arguments": args,
            "files": out.files,
            "split": bool(out.split),
        }
        m.update(self.stats)
        counts = {}
        for key, n in self.counts.items():
            if isinstance(key, tuple):
                status, framing, coding = key
                key = f"{status} {framing}{'+' + coding if coding else ''}"
            elif isinstance(key, int):
                key = f"{key} no body"
            counts[key] = n
        m["counts"] = dict(sorted(counts.items()))
        m["first_timestamp"] = self.first_ts_us / 1e6
        m["last_timestamp"] = self.last_ts_us / 1e6
        m["tcp_checksum"] = "computed" if self.tcp_checksum else "zero"
        if self.track_drops:
            m["drops"] = self.drop_summary()
            m["transactions_touched_by_drops"] = m["drops"]["transactions_touched"]
            m["dropped_list"] = self.drop_list
        m["generation_seconds"] = round(elapsed, 3)
        m["generation_mb_per_s"] = round(self.stats["bytes"] / 1e6 / elapsed, 1) if elapsed else None
        return m


def write_manifest(path: str, manifest: dict, tx_records=None):
    """The manifest as indented JSON; its long lists (dropped_list, transaction_list) one item a line."""
    lists = {}
    manifest = dict(manifest)
    if "dropped_list" in manifest:
        lists["dropped_list"] = manifest.pop("dropped_list")
    if tx_records is not None:
        lists["transaction_list"] = tx_records
    text = json.dumps(manifest, indent=2)
    with open(path, "w") as f:
        if not lists:
            f.write(text + "\n")
            return
        f.write(text[:-2])
        for name, items in lists.items():
            f.write(f',\n  "{name}": [' + ("\n" if items else ""))
            last = len(items) - 1
            for k, rec in enumerate(items):
                f.write("    " + json.dumps(rec, separators=(",", ":")) + (",\n" if k < last else "\n"))
            f.write("  ]" if items else "]")
        f.write("\n}\n")


def manifest_path(out: str) -> str:
    return out + ".manifest.json"


def generate(profile: str, size: int, out: str, seed: int = 1, concurrency: int = 64,
             drop_rate: float = 0.0, split_mb: float = 0, manifest_full: bool = False,
             tcp_checksum: bool = False, gzip_level: int = 1, quiet: bool = True,
             drop_data: float = 0.0, drop_seed=None) -> dict:
    """Write the capture and its manifest; return the manifest (without the transaction list).

    drop_rate leaves out each data packet with that probability (a stream seeded by `seed`);
    drop_data leaves out exactly that fraction of them, at places drawn from `drop_seed`
    (default: `seed`).  Either way the lossy capture is the loss-free one of the same seed
    minus the dropped packets, and the manifest lists them (``drops``, ``dropped_list``).
    """
    start = time.perf_counter()
    gen = CaptureGenerator(profile, seed, concurrency, drop_rate, tcp_checksum, manifest_full,
                           drop_data=drop_data, drop_seed=drop_seed)
    split_bytes = int(split_mb * 1_000_000) if split_mb else 0
    flush = 1 << 20
    if split_bytes:
        flush = max(4096, min(flush, split_bytes // 32))
    output = PcapOutput(out, split_bytes, gzip_level)
    gen.run(size, output, flush)
    elapsed = time.perf_counter() - start
    args = dict(profile=profile, size=size, seed=seed, concurrency=concurrency, drop_rate=drop_rate,
                split_mb=split_mb, manifest_full=manifest_full, tcp_checksum=tcp_checksum)
    if drop_data:
        args.update(drop_data=drop_data, drop_seed=gen.drop_seed)
    man = gen.manifest(output, args, elapsed)
    write_manifest(manifest_path(out), man, gen.tx_records if manifest_full else None)
    if not quiet:
        s = gen.stats
        print(f"{out}: {s['bytes'] / 1e6:.1f} MB in {len(output.files)} file(s), {s['packets']} packets, "
              f"{s['connections']} connections, {s['transactions']} transactions, "
              f"{s['dropped_packets']} dropped; {elapsed:.2f} s = {s['bytes'] / 1e6 / elapsed:.1f} MB/s",
              file=sys.stderr)
    return man


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), required=True)
    ap.add_argument("--size", type=parse_size, required=True,
                    help="pcap bytes to write (uncompressed): 1G = 10^9, 200M, 64Mi, ...")
    ap.add_argument("--out", required=True, help="output file; a .gz suffix compresses")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=64, help="connections open at once")
    ap.add_argument("--drop-rate", type=float, default=0.0,
                    help="leave out each data-carrying packet with this probability (lossy variant)")
    ap.add_argument("--drop-data", type=float, default=0.0, metavar="FRACTION",
                    help="leave out exactly this fraction of the data-carrying packets, at places "
                    "drawn from --drop-seed (lossy variant; the manifest lists each drop)")
    ap.add_argument("--drop-seed", type=int, default=None,
                    help="seed of --drop-data's choice of packets (default: --seed)")
    ap.add_argument("--split-mb", type=float, default=0,
                    help="rotate output into OUT.000, OUT.001, ... of about this many MB")
    ap.add_argument("--manifest-full", action="store_true",
                    help="list every transaction in the manifest")
    ap.add_argument("--tcp-checksum", action="store_true",
                    help="compute TCP checksums (default: 0, as with checksum offload)")
    ap.add_argument("--gzip-level", type=int, default=1, help="compression level for .gz output")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)
    if not 0 <= a.drop_rate < 1:
        ap.error("--drop-rate must be in [0, 1)")
    if not 0 <= a.drop_data < 1:
        ap.error("--drop-data must be in [0, 1)")
    if a.drop_rate and a.drop_data:
        ap.error("give --drop-rate or --drop-data, not both")
    if a.drop_seed is not None and not a.drop_data:
        ap.error("--drop-seed goes with --drop-data")
    generate(a.profile, a.size, a.out, a.seed, a.concurrency, a.drop_rate, a.split_mb,
             a.manifest_full, a.tcp_checksum, a.gzip_level, quiet=a.quiet,
             drop_data=a.drop_data, drop_seed=a.drop_seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
