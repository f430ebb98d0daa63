"""Captures for the native engine's edge cases, built packet by packet with scapy.

A Conv is one TCP conversation with explicit sequence numbers: each side's send() advances
its sequence number whether or not the segment is kept in the capture, so dropping a
segment (capture loss) or reordering is exact. Checksums are scapy's (correct).
"""
from __future__ import annotations

import pytest

scapy = pytest.importorskip("scapy.all")
from scapy.all import IP, TCP, Ether, IPv6, Raw, wrpcap  # noqa: E402

T0 = 1_700_000_000.0


MAC = {"c": "02:00:00:00:00:01", "s": "02:00:00:00:00:02"}


def ether(who: str = "c"):
    """An Ethernet header with both addresses given: without a destination, scapy resolves
    one (an IPv6 neighbour solicitation, sent and waited for, on every packet)."""
    return Ether(src=MAC[who], dst=MAC["s" if who == "c" else "c"])


class Conv:
    """One TCP conversation; packets are appended in capture order."""

    def __init__(self, cli=("10.0.0.1", 40000), srv=("10.0.0.2", 80), *, isn_c=1000,
                 isn_s=500000, t0=T0, step=0.001, pkts=None):
        self.ip = {"c": cli[0], "s": srv[0]}
        self.port = {"c": cli[1], "s": srv[1]}
        self.seq = {"c": isn_c, "s": isn_s}
        self.t = t0
        self.step = step
        self.pkts = [] if pkts is None else pkts

    def _l3(self, who):
        other = "s" if who == "c" else "c"
        eth = ether(who)
        if ":" in self.ip[who]:
            return eth / IPv6(src=self.ip[who], dst=self.ip[other])
        return eth / IP(src=self.ip[who], dst=self.ip[other])

    def packet(self, who, flags, data=b"", *, seq=None, ack=None, keep=True, dt=None):
        other = "s" if who == "c" else "c"
        s = self.seq[who] if seq is None else seq
        a = self.seq[other] if ack is None else ack
        p = self._l3(who) / TCP(sport=self.port[who], dport=self.port[other], flags=flags,
                                seq=s & 0xFFFFFFFF, ack=a & 0xFFFFFFFF, window=65535)
        if data:
            p = p / Raw(data)
        self.t += self.step if dt is None else dt
        p.time = self.t
        if keep:
            self.pkts.append(p)
        return p

    def handshake(self):
        self.packet("c", "S", ack=0)
        self.seq["c"] += 1
        self.packet("s", "SA")
        self.seq["s"] += 1
        self.packet("c", "A")
        return self

    def send(self, who, data, *, keep=True, flags="PA", mss=1400, ack=True):
        """data from who, cut at mss; each segment kept unless keep is False (or a set of
        segment numbers to keep); the other side acknowledges everything after (ack)."""
        segs = [data[i:i + mss] for i in range(0, len(data), mss)] or [b""]
        for n, chunk in enumerate(segs):
            k = keep if isinstance(keep, bool) else n in keep
            self.packet(who, flags, chunk, keep=k)
            self.seq[who] += len(chunk)
        if ack:
            self.packet("s" if who == "c" else "c", "A")
        return self

    def close(self):
        self.packet("c", "FA")
        self.seq["c"] += 1
        self.packet("s", "FA")
        self.seq["s"] += 1
        self.packet("c", "A")
        return self

    def write(self, path):
        wrpcap(str(path), self.pkts)
        return path


def http_response(body: bytes, *, chunked: bool = False, extra: bytes = b"") -> bytes:
    if chunked:
        out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + extra + b"\r\n"
        for i in range(0, len(body), 3000):
            part = body[i:i + 3000]
            out += b"%x\r\n" % len(part) + part + b"\r\n"
        return out + b"0\r\n\r\n"
    return (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n" + body)


def http_get(path: str, host: str = "example.test") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
