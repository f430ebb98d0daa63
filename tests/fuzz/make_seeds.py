#!/usr/bin/env python3
"""Write the seed captures of the packet fuzzer (tests/fuzz/fuzz_packets.c) into a directory.

    python3 tests/fuzz/make_seeds.py DIR

Small (< 4 KiB), varied pcap and pcapng files built with the standard library only: an HTTP
exchange with its handshake, IPv6 with an extension header, IPv4 and IPv6 fragments (out of
order, overlapping, conflicting), a hole in a stream, overlapping and conflicting segments,
a connection picked up mid-stream across the sequence-number wrap, VLAN / QinQ, Linux cooked
captures (SLL, SLL2), tunnels, a pcapng file with two sections and three kinds of packet
block, a big-endian nanosecond pcap, and many small connections against the caps.

Each file also sets the harness's eight knob bytes (pcap: thiszone + sigfigs; pcapng: the
section length), which choose how the file is cut into feed() chunks, the overlap policies,
the caps and the timers (see "knobs" in fuzz_packets.c).
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
MAX_SEED = 4096


# ---------- headers ----------

def csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f">{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def v4addr(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def v6addr(a: str) -> bytes:
    head, _, tail = a.partition("::")
    h = [int(x, 16) for x in head.split(":") if x]
    t = [int(x, 16) for x in tail.split(":") if x]
    return struct.pack(">8H", *(h + [0] * (8 - len(h) - len(t)) + t))


def tcp(sport, dport, seq, ack, flags, data=b"", *, window=65535, urp=0) -> bytes:
    return struct.pack(">HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                       5 << 4, flags, window, 0, urp) + data


def udp(sport, dport, data: bytes) -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(data), 0) + data


def ipv4(src, dst, proto, payload, *, ident=1, mf=False, frag_off=0, df=False,
         total=None) -> bytes:
    flags = (0x4000 if df else 0) | (0x2000 if mf else 0) | (frag_off // 8)
    tot = 20 + len(payload) if total is None else total
    h = struct.pack(">BBHHHBBH4s4s", 0x45, 0, tot, ident, flags, 64, proto, 0,
                    v4addr(src), v4addr(dst))
    return h[:10] + struct.pack(">H", csum(h)) + h[12:] + payload


def ipv6(src, dst, nh, payload) -> bytes:
    return struct.pack(">IHBB16s16s", 0x60000000, len(payload), nh, 64, v6addr(src),
                       v6addr(dst)) + payload


def v6_frag(nh, off, more, ident, data) -> bytes:
    return struct.pack(">BBHI", nh, 0, off | (1 if more else 0), ident) + data


def v6_hopopt(nh) -> bytes:
    return struct.pack(">BB", nh, 0) + b"\x01\x04\0\0\0\0"      # PadN to 8 bytes


def ether(payload, etype=0x0800, vlans=()) -> bytes:
    h = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01"
    for tpid, vid in vlans:
        h += struct.pack(">H", tpid) + struct.pack(">H", vid)
    return h + struct.pack(">H", etype) + payload


def sll(payload, proto=0x0800) -> bytes:
    return struct.pack(">HHH8sH", 0, 1, 6, b"\x02\0\0\0\0\x01\0\0", proto) + payload


def sll2(payload, proto=0x0800) -> bytes:
    return struct.pack(">HHIHBB8s", proto, 0, 2, 1, 0, 6, b"\x02\0\0\0\0\x01\0\0") + payload


# ---------- a TCP connection ----------

class Conn:
    """Segments of one connection, both ways, with sequence and acknowledgement numbers kept."""

    def __init__(self, cli, srv, *, v6=False, isn_c=1000, isn_s=5000, wrap=None):
        self.a, self.b = cli, srv          # (address, port)
        self.v6 = v6
        self.seq = {0: isn_c, 1: isn_s}
        self.wrap = wrap or (lambda ip: ip)

    def ip(self, who, seg):
        src, dst = (self.a, self.b) if who == 0 else (self.b, self.a)
        if self.v6:
            return self.wrap(ipv6(src[0], dst[0], 6, seg))
        return self.wrap(ipv4(src[0], dst[0], 6, seg))

    def seg(self, who, flags, data=b"", *, seq=None, advance=True, urp=0):
        src, dst = (self.a, self.b) if who == 0 else (self.b, self.a)
        s = self.seq[who] if seq is None else seq
        ack = self.seq[1 - who] if flags & ACK else 0
        raw = tcp(src[1], dst[1], s, ack, flags, data, urp=urp)
        if advance and seq is None:
            self.seq[who] = (self.seq[who] + len(data) + (1 if flags & (SYN | FIN) else 0)) \
                & 0xFFFFFFFF
        return raw

    def handshake(self):
        return [self.ip(0, self.seg(0, SYN)), self.ip(1, self.seg(1, SYN | ACK)),
                self.ip(0, self.seg(0, ACK))]

    def send(self, who, data, mss=400):
        out = []
        for i in range(0, len(data), mss):
            out.append(self.ip(who, self.seg(who, PSH | ACK, data[i:i + mss])))
        out.append(self.ip(1 - who, self.seg(1 - who, ACK)))
        return out

    def close(self):
        return [self.ip(0, self.seg(0, FIN | ACK)), self.ip(1, self.seg(1, FIN | ACK)),
                self.ip(0, self.seg(0, ACK))]


REQ = b"GET /index.html HTTP/1.1\r\nHost: example.test\r\nUser-Agent: fuzz\r\n\r\n"
BODY = b"<html><body>" + b"hello, world " * 20 + b"</body></html>"
RESP = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
        + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


# ---------- files ----------

def pcap(linktype, frames, knobs=bytes(8), *, big=False, nsec=False, t0=1700000000) -> bytes:
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nsec else 0xA1B2C3D4
    out = struct.pack(e + "IHH", magic, 2, 4) + knobs + struct.pack(e + "II", 65535, linktype)
    for i, f in enumerate(frames):
        ts, data = (f if isinstance(f, tuple) else (i * 0.01, f))
        sec = t0 + int(ts)
        frac = int(round((ts - int(ts)) * (1e9 if nsec else 1e6)))
        out += struct.pack(e + "IIII", sec, frac, len(data), len(data)) + data
    return out


def pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def block(e, btype, body) -> bytes:
    n = 12 + len(body)
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def shb(e, knobs) -> bytes:
    return block(e, 0x0A0D0D0A, struct.pack(e + "IHH", 0x1A2B3C4D, 1, 0) + knobs)


def idb(e, linktype, tsresol=None, tsoffset=None) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += struct.pack(e + "HH", 9, 1) + bytes([tsresol, 0, 0, 0])
    if tsoffset is not None:
        opts += struct.pack(e + "HHq", 14, 8, tsoffset)
    if opts:
        opts += struct.pack(e + "HH", 0, 0)
    return block(e, 1, struct.pack(e + "HHI", linktype, 0, 0) + opts)


def epb(e, ifid, ticks, data) -> bytes:
    return block(e, 6, struct.pack(e + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF,
                                   len(data), len(data)) + pad4(data))


def pb(e, ifid, ticks, data) -> bytes:
    return block(e, 2, struct.pack(e + "HHIIII", ifid, 0, ticks >> 32, ticks & 0xFFFFFFFF,
                                   len(data), len(data)) + pad4(data))


def spb(e, data) -> bytes:
    return block(e, 3, struct.pack(e + "I", len(data)) + pad4(data))


def knobs(*b) -> bytes:
    return bytes(b) + bytes(8 - len(b))


# ---------- the seeds ----------

def seed_http_v4():
    c = Conn(("10.0.0.1", 40000), ("10.0.0.2", 80))
    pk = c.handshake() + c.send(0, REQ) + c.send(1, RESP) + c.close()
    return pcap(1, [ether(p) for p in pk])


def seed_http_v6():
    def hop(ip6):      # insert a hop-by-hop header in front of TCP
        nh_tcp = ip6[6]
        payload = v6_hopopt(nh_tcp) + ip6[40:]
        return ipv6_from(ip6, 0, payload)
    c = Conn(("2001:db8::1", 40001), ("2001:db8::2", 8080), v6=True, wrap=hop)
    pk = c.handshake() + c.send(0, REQ) + c.send(1, RESP[:300]) + c.close()
    return pcap(1, [ether(p, 0x86DD) for p in pk], knobs(0x12, 0x34, 0x03, 2, 3))


def ipv6_from(ip6, nh, payload):
    return ip6[:4] + struct.pack(">HB", len(payload), nh) + ip6[7:40] + payload


def seed_frag_v4():
    """A TCP segment in 4 fragments (out of order, one overlapping with other bytes, one
    duplicated), a fragmented UDP datagram, and a datagram that never completes."""
    c = Conn(("10.1.0.1", 41000), ("10.1.0.2", 80))
    pk = c.handshake()
    seg = c.seg(0, PSH | ACK, REQ + b"X" * 40)        # 20 + 108 bytes of TCP
    parts = [(0, seg[:32]), (32, seg[32:64]), (64, seg[64:96]), (96, seg[96:])]
    frags = []
    for off, data in parts:
        frags.append(ipv4("10.1.0.1", "10.1.0.2", 6, data, ident=77, mf=off != 96, frag_off=off))
    overlap = ipv4("10.1.0.1", "10.1.0.2", 6, b"Z" * 24, ident=77, mf=True, frag_off=40)
    pk += [frags[2], frags[0], overlap, frags[3], frags[0], frags[1]]
    pk += [c.ip(1, c.seg(1, ACK))]
    u = udp(5353, 53, b"q" * 60)
    pk += [ipv4("10.1.0.1", "10.1.0.9", 17, u[32:], ident=9, frag_off=32),
           ipv4("10.1.0.1", "10.1.0.9", 17, u[:32], ident=9, mf=True)]
    pk += [ipv4("10.1.0.1", "10.1.0.9", 17, b"w" * 16, ident=10, mf=True, frag_off=8)]
    pk += c.close()
    return pcap(1, [ether(p) for p in pk], knobs(0, 0, 0, 0, 0, 0x20 | 0x40, 0x41, 0x0C))


def seed_frag_v6():
    """IPv6 fragments of a TCP segment, out of order and overlapping; an atomic fragment."""
    src, dst = "2001:db8::a", "2001:db8::b"
    c = Conn((src, 42000), (dst, 80), v6=True)
    pk = c.handshake()
    seg = c.seg(0, PSH | ACK, REQ + b"Y" * 60)
    cut = [0, 48, 96, len(seg)]
    fr = [ipv6(src, dst, 44, v6_frag(6, cut[i], i < 2, 0xABCD, seg[cut[i]:cut[i + 1]]))
          for i in range(3)]
    dup = ipv6(src, dst, 44, v6_frag(6, 40, True, 0xABCD, b"Q" * 16))
    pk += [fr[1], dup, fr[2], fr[0]]
    pk += [c.ip(1, c.seg(1, ACK))]
    resp = c.seg(1, PSH | ACK, b"HTTP/1.1 204 No Content\r\n\r\n")
    pk += [ipv6(dst, src, 44, v6_frag(6, 0, False, 0x1234, resp))]       # atomic
    pk += c.close()
    return pcap(1, [ether(p, 0x86DD) for p in pk], knobs(0x77, 0x01, 0x04, 3, 1, 0x60, 0, 0))


def seed_gap():
    """Client bytes missing from the capture but acknowledged; a hole on the server side."""
    c = Conn(("10.2.0.1", 43000), ("10.2.0.2", 80))
    pk = c.handshake()
    a = c.seg(0, PSH | ACK, REQ[:30])
    c.seg(0, PSH | ACK, REQ[30:50])                   # lost
    b = c.seg(0, PSH | ACK, REQ[50:])
    pk += [c.ip(0, a), c.ip(0, b), c.ip(1, c.seg(1, ACK))]
    r1 = c.seg(1, PSH | ACK, RESP[:100])
    c.seg(1, PSH | ACK, RESP[100:200])                # lost, never acknowledged
    r3 = c.seg(1, PSH | ACK, RESP[200:300])
    pk += [c.ip(1, r1), c.ip(1, r3)]
    frames = [(i * 0.01, ether(p)) for i, p in enumerate(pk)]
    frames.append((9.0, ether(c.ip(0, c.seg(0, ACK)))))   # after the hole timeout
    frames += [(9.5 + i * 0.01, ether(p)) for i, p in enumerate(c.close())]
    return pcap(1, frames, knobs(0x01, 0x00, 0x05))


def seed_overlap():
    """Retransmissions and overlapping segments carrying other bytes, both ways."""
    c = Conn(("10.3.0.1", 44000), ("10.3.0.2", 80))
    pk = c.handshake()
    base = c.seq[0]
    data = REQ
    pk += [c.ip(0, c.seg(0, PSH | ACK, data[20:40], seq=base + 20)),
           c.ip(0, c.seg(0, PSH | ACK, b"A" * 30, seq=base + 10)),
           c.ip(0, c.seg(0, PSH | ACK, data[:25], seq=base)),
           c.ip(0, c.seg(0, PSH | ACK, b"B" * 20, seq=base + 20, urp=2)),
           c.ip(0, c.seg(0, PSH | ACK | URG, data[30:], seq=base + 30, urp=5))]
    c.seq[0] = base + len(data)
    pk += [c.ip(1, c.seg(1, ACK))]
    sb = c.seq[1]
    pk += [c.ip(1, c.seg(1, PSH | ACK, RESP[:60], seq=sb)),
           c.ip(1, c.seg(1, PSH | ACK, RESP[:60], seq=sb)),
           c.ip(1, c.seg(1, PSH | ACK, b"C" * 80, seq=sb + 40))]
    c.seq[1] = sb + 120
    pk += [c.ip(0, c.seg(0, ACK))] + c.close()
    return pcap(1, [ether(p) for p in pk], knobs(0x02, 0x02, 0x02, 2, 5, 0x01))


def seed_midstream():
    """No handshake; sequence numbers wrap past 2^32; the response comes first."""
    c = Conn(("10.4.0.1", 45000), ("10.4.0.2", 80), isn_c=0xFFFFFF00, isn_s=0xFFFFFFF0)
    pk = [c.ip(1, c.seg(1, PSH | ACK, RESP[:120]))]
    base = c.seq[0]
    pk += [c.ip(0, c.seg(0, PSH | ACK, REQ)), c.ip(0, c.seg(0, PSH | ACK, REQ, seq=base))]
    pk += c.send(1, RESP[120:], mss=200)
    pk += [c.ip(0, c.seg(0, RST))]
    return pcap(1, [ether(p) for p in pk], knobs(0x33, 0x33, 0x13, 1, 1, 0x08, 0x04 | 0x10))


def seed_vlan():
    c = Conn(("10.5.0.1", 46000), ("10.5.0.2", 80))
    pk = c.handshake() + c.send(0, REQ) + c.send(1, RESP[:200]) + c.close()
    frames = []
    for i, p in enumerate(pk):
        vl = [(0x8100, 100)] if i % 2 else [(0x88A8, 10), (0x8100, 200)]
        frames.append(ether(p, 0x0800, vl))
    return pcap(1, frames, knobs(0x05, 0x06, 0x01))


def seed_sll():
    c = Conn(("10.6.0.1", 47000), ("10.6.0.2", 80))
    pk = c.handshake() + c.send(0, REQ) + c.send(1, RESP[:250]) + c.close()
    return pcap(113, [sll(p) for p in pk], knobs(0x09, 0, 0x06, 4, 4, 0x0C))


def seed_sll2_v6():
    c = Conn(("2001:db8::6", 47001), ("2001:db8::7", 80), v6=True)
    pk = c.handshake() + c.send(0, REQ) + c.send(1, RESP[:100]) + c.close()
    return pcap(276, [sll2(p, 0x86DD) for p in pk], knobs(0x0A, 0x0B, 0x04, 6, 7))


def seed_tunnels():
    """Raw IP (linktype 101): GRE, VXLAN, IP-in-IP and 6in4, each carrying TCP."""
    frames = []
    c = Conn(("192.168.1.1", 48000), ("192.168.1.2", 80),
             wrap=lambda ip: ipv4("172.16.0.1", "172.16.0.2", 47, struct.pack(">HH", 0, 0x0800) + ip))
    frames += c.handshake()[:2] + c.send(0, REQ[:40])
    c = Conn(("192.168.2.1", 48001), ("192.168.2.2", 80),
             wrap=lambda ip: ipv4("172.16.1.1", "172.16.1.2", 17,
                                  udp(50000, 4789, struct.pack(">II", 0x08000000, 0x100) + ether(ip))))
    frames += c.send(0, REQ[:50])
    c = Conn(("192.168.3.1", 48002), ("192.168.3.2", 80),
             wrap=lambda ip: ipv4("172.16.2.1", "172.16.2.2", 4, ip))
    frames += c.send(1, RESP[:60])
    c = Conn(("2001:db8::31", 48003), ("2001:db8::32", 80), v6=True,
             wrap=lambda ip: ipv4("172.16.3.1", "172.16.3.2", 41, ip))
    frames += c.send(0, REQ[:30])
    return pcap(101, frames, knobs(0x0C, 0x0D, 0x05))


def seed_pcapng():
    """Two sections (little-, then big-endian); an Ethernet interface with nanosecond
    timestamps and a raw IP one; enhanced, simple and obsolete packet blocks."""
    c = Conn(("10.7.0.1", 49000), ("10.7.0.2", 80))
    pk = c.handshake() + c.send(0, REQ) + c.send(1, RESP[:200])
    e = "<"
    out = shb(e, knobs(0x10, 0x20, 0x33, 3, 2, 0x02))
    out += idb(e, 1, tsresol=9) + idb(e, 101)
    t = 1700000000 * 10**9
    for i, p in enumerate(pk):
        if i % 3 == 0:
            out += epb(e, 0, t + i * 1000, ether(p))
        elif i % 3 == 1:
            out += epb(e, 1, (t // 1000) + i, p)
        else:
            out += pb(e, 0, t + i * 1000, ether(p))
    out += spb(e, ether(c.ip(0, c.seg(0, ACK))))
    e = ">"
    out += shb(e, knobs(0x10, 0x20, 0x33))
    out += idb(e, 101)
    for i, p in enumerate(c.close()):
        out += epb(e, 0, (t // 1000) + 100 + i, p)
    return out


def seed_nsec_be():
    """Big-endian nanosecond pcap: an exchange ended by RST, then the 4-tuple used again."""
    frames = []
    c = Conn(("10.8.0.1", 50000), ("10.8.0.2", 80))
    frames += c.handshake() + c.send(0, REQ[:40]) + [c.ip(1, c.seg(1, RST | ACK))]
    c = Conn(("10.8.0.1", 50000), ("10.8.0.2", 80), isn_c=900000, isn_s=123)
    frames += c.handshake() + c.send(0, REQ[:40]) + c.send(1, RESP[:80]) + c.close()
    return pcap(1, [ether(p) for p in frames], knobs(0x0E, 0x0F, 0x02, 0, 0, 0, 0x04),
                big=True, nsec=True)


def seed_many_small():
    """Twelve connections of small out-of-order segments: caps, evictions."""
    frames = []
    for i in range(12):
        c = Conn((f"10.9.0.{i + 1}", 51000 + i), ("10.9.1.1", 80))
        base = c.seq[0]
        frames.append(c.ip(0, c.seg(0, SYN)))
        base += 1
        frames.append(c.ip(0, c.seg(0, PSH, b"bb", seq=base + 4)))
        frames.append(c.ip(0, c.seg(0, PSH, b"cc", seq=base + 8)))
        frames.append(c.ip(0, c.seg(0, PSH, b"aaaa", seq=base)))
    return pcap(101, frames, knobs(0x07, 0x07, 0x02, 1, 2, 0x03 | 0x08, 0x01, 0x01))


def seed_linktypes():
    """One pcapng interface per link type / encapsulation, each with a segment of one
    connection: MPLS, PPPoE, 802.3 LLC/SNAP, Cisco MetaData, NSH, PPTP GRE, ERSPAN, Geneve,
    NULL, LOOP, PPP, Cisco HDLC, raw IPv4/IPv6, 802.11, radiotap, NFLOG, SLL with LLC."""
    c = Conn(("10.10.0.1", 52000), ("10.10.0.2", 80))
    c6 = Conn(("2001:db8::a1", 52001), ("2001:db8::a2", 80), v6=True)
    llc_snap = b"\xaa\xaa\x03\x00\x00\x00\x08\x00"
    def seg(who=0, data=b"x"):
        return c.ip(who, c.seg(who, PSH | ACK, data))
    def gre(proto, inner, flags=0, extra=b""):
        return ipv4("172.20.0.1", "172.20.0.2", 47, struct.pack(">HH", flags, proto) + extra + inner)
    wlan_data = struct.pack("<BBH6s6s6sH", 0x08, 0x01, 0, b"\x02" * 6, b"\x04" * 6,
                            b"\x06" * 6, 0)
    wlan_qos = struct.pack("<BBH6s6s6sHH", 0x88, 0x02, 0, b"\x02" * 6, b"\x04" * 6,
                           b"\x06" * 6, 0, 0)
    def pppoe(ppp):
        return struct.pack(">BBHH", 0x11, 0, 1, len(ppp)) + ppp
    def dot3(payload):          # 802.3: a length where the ethertype would be
        return ether(payload)[:12] + struct.pack(">H", len(payload)) + payload
    def nflog(ip):              # a packet-header TLV, then the payload TLV
        return (b"\x02\x00\x00\x00" + struct.pack("<HH", 8, 1) + b"\0" * 4
                + struct.pack("<HH", 4 + len(ip), 9) + pad4(ip))
    frames = [
        (1, ether(struct.pack(">II", 100 << 12, (200 << 12) | 0x100 | 64) + seg(), 0x8847)),
        (1, ether(pppoe(b"\x00\x21" + seg()), 0x8864)),
        (1, dot3(llc_snap + seg())),
        (1, ether(b"\x01\x01\x00\x01\x00\x10" + b"\x08\x00" + seg(), 0x8909)),
        (1, ether(struct.pack(">BBBB", 0, 2, 0, 1) + b"\0\0\0\0" + seg(), 0x894F)),
        (101, gre(0x880B, b"\xff\x03\x00\x21" + seg(1), 0x3081,
                  struct.pack(">HHII", 40, 7, 1, 1))),
        (101, gre(0x88BE, b"\0" * 8 + ether(seg()), 0x1000, struct.pack(">I", 5))),
        (101, ipv4("172.20.1.1", "172.20.1.2", 17,
                   udp(50001, 6081, struct.pack(">BBHI", 0, 0, 0x6558, 0x100) + ether(seg())))),
        (0, struct.pack("<I", 2) + seg()),
        (108, struct.pack(">I", 24) + c6.ip(0, c6.seg(0, SYN))),
        (9, b"\xff\x03\x00\x21" + seg(1)),
        (104, b"\x0f\x00\x08\x00" + seg()),
        (50, b"\x8f\x00\x86\xdd" + c6.ip(1, c6.seg(1, SYN | ACK))),
        (228, seg()),
        (229, c6.ip(0, c6.seg(0, ACK))),
        (105, wlan_data + llc_snap + seg(1)),
        (127, struct.pack("<BBHI", 0, 0, 8, 0) + wlan_qos + llc_snap + seg()),
        (239, nflog(seg())),
        (113, struct.pack(">HHH8sH", 0, 1, 6, b"\x02" * 8, 4) + llc_snap + seg(1)),
    ]
    e = "<"
    out = shb(e, knobs(0x21, 0x43, 0x05, 1, 2, 0x02))
    for i, (lt, _) in enumerate(frames):
        out += idb(e, lt)
    for i, (_, data) in enumerate(frames):
        out += epb(e, i, 1700000000 * 10**6 + i * 1000, data)
    return out


def seed_timestamps():
    """pcapng timestamp forms: 2^-24 and 2^-40 s ticks, milliseconds, if_tsoffset (one
    interface an hour ahead, one far in the past), fragments and segments across them."""
    c = Conn(("10.11.0.1", 53000), ("10.11.0.2", 80))
    pk = c.handshake() + c.send(0, REQ[:60]) + c.send(1, RESP[:90])
    u = udp(5353, 53, b"t" * 40)
    frag_a = ipv4("10.11.0.1", "10.11.0.9", 17, u[:24], ident=5, mf=True)
    frag_b = ipv4("10.11.0.1", "10.11.0.9", 17, u[24:], ident=5, frag_off=24)
    e = "<"
    out = shb(e, knobs(0x31, 0x07, 0x04, 0, 0, 0x04, 0x01, 0x04))
    out += idb(e, 101, tsresol=0x98) + idb(e, 101, tsresol=0xA8) + idb(e, 101, tsresol=3)
    out += idb(e, 101, tsoffset=3600) + idb(e, 101, tsoffset=-(1 << 40))
    t = 1700000000
    ifaces = [(0, t << 24), (1, 12345 << 40), (2, t * 1000), (3, t * 10**6), (4, t * 10**6)]
    for i, p in enumerate(pk + [frag_a, frag_b]):
        ifid, base = ifaces[i % len(ifaces)]
        out += epb(e, ifid, base + i * 7, p)
    return out


SEEDS = {
    "http_v4.pcap": seed_http_v4,
    "http_v6_hopopt.pcap": seed_http_v6,
    "frag_v4.pcap": seed_frag_v4,
    "frag_v6.pcap": seed_frag_v6,
    "gap.pcap": seed_gap,
    "overlap.pcap": seed_overlap,
    "midstream_wrap.pcap": seed_midstream,
    "vlan_qinq.pcap": seed_vlan,
    "sll.pcap": seed_sll,
    "sll2_v6.pcap": seed_sll2_v6,
    "tunnels.pcap": seed_tunnels,
    "two_sections.pcapng": seed_pcapng,
    "nsec_be_rst_reuse.pcap": seed_nsec_be,
    "many_small.pcap": seed_many_small,
    "linktypes.pcapng": seed_linktypes,
    "timestamps.pcapng": seed_timestamps,
}


def write_seeds(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in SEEDS.items():
        data = make()
        assert len(data) < MAX_SEED, (name, len(data))
        p = out / name
        p.write_bytes(data)
        paths.append(p)
    return paths


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} DIR", file=sys.stderr)
        return 2
    paths = write_seeds(Path(argv[1]))
    print(f"make_seeds: {len(paths)} seeds in {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
