"""The C IP defragmenter (c2scribe/reassembly/ipfrag.c), on its own (tests/c).

`make ipfrag-check` builds tests/c/test_ipfrag with AddressSanitizer and UBSan and runs its
self-test: every order, duplicates, IPv4 options, IPv6 extension headers, atomic fragments,
a table of overlaps for every policy, timers in capture time, limits, malformed input,
randomized datagrams and garbage.

The cross-check with scapy then builds IPv4 and IPv6 datagrams with scapy (TCP and UDP,
IPv4 options, IPv6 Hop-by-Hop / Destination Options / Routing headers before the Fragment
header), fragments them with scapy's fragment() and fragment6() and by hand (out of order,
duplicated, overlapping with conflicting bytes), writes them to pcap files (Ethernet with
padding and VLAN tags, raw IP, big-endian/nanosecond, and a file written by scapy itself) and
has the driver (`test_ipfrag --pcap FILE`) reassemble them. Every datagram must come back as
scapy built it; for conflicting overlaps the bytes must be those of a byte-by-byte model of
the policy written here.
"""
from __future__ import annotations

import random
import struct
import subprocess
from pathlib import Path

import pytest

from helpers import C_TESTS, assert_selftest_passed, make_c

try:
    from scapy.all import (IP, TCP, UDP, Ether, IPOption_NOP, IPOption_RR, IPv6,
                           IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
                           IPv6ExtHdrRouting, Raw, fragment, fragment6, raw, wrpcap)
    SCAPY = True
except ImportError:  # pragma: no cover - depends on the environment
    SCAPY = False

DRIVER = C_TESTS / "test_ipfrag"
POLICIES = ["first", "last", "bsd", "linux", "windows", "solaris"]

needs_scapy = pytest.mark.skipif(not SCAPY, reason="scapy is not importable (pip install scapy)")


def test_c_ipfrag_selftest_under_sanitizers():
    assert_selftest_passed(make_c("ipfrag-check"))


@pytest.fixture(scope="module")
def driver() -> Path:
    p = make_c("test_ipfrag", 600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return DRIVER


# ---- pcap files and the driver ---------------------------------------------------------------

def write_pcap(path: Path, linktype: int, frames, endian: str = "<", nano: bool = False):
    """frames: (time in microseconds, frame bytes)."""
    magic = 0xa1b23c4d if nano else 0xa1b2c3d4
    with open(path, "wb") as f:
        f.write(struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype))
        for ts, b in frames:
            frac = ts % 1_000_000 * (1000 if nano else 1)
            f.write(struct.pack(endian + "IIII", ts // 1_000_000, frac, len(b), len(b)))
            f.write(b)


def ethernet(ip: bytes, vlan: bool = False) -> bytes:
    etype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    hdr = bytes.fromhex("020000000002020000000001")
    if vlan:
        hdr += struct.pack(">HH", 0x8100, 42)
    return hdr + struct.pack(">H", etype) + ip


def run_driver(drv: Path, pcap: Path, *opts: str):
    p = subprocess.run([str(drv), *opts, "--pcap", str(pcap)], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    out, stats = [], {}
    for line in p.stdout.splitlines():
        if line.startswith("# stats "):
            stats = {k: int(v) for k, v in (kv.split("=") for kv in line[8:].split())}
        elif line and line[0] in "PD":
            kind, hexed = line.split(" ", 1) if " " in line else (line, "")
            out.append((kind, bytes.fromhex(hexed)))
    return out, stats


# ---- what a packet is, and when a datagram completes ------------------------------------------

def frag_info(ip: bytes):
    """None for a packet that is not a fragment, else (key, offset, length, more)."""
    if ip[0] >> 4 == 4:
        ihl = (ip[0] & 15) * 4
        tot = min(struct.unpack(">H", ip[2:4])[0], len(ip))
        ff = struct.unpack(">H", ip[6:8])[0]
        if not ff & 0x3FFF:
            return None
        key = (4, ip[12:16], ip[16:20], ip[4:6], ip[9])
        return key, (ff & 0x1FFF) * 8, tot - ihl, bool(ff & 0x2000)
    end = min(40 + struct.unpack(">H", ip[4:6])[0], len(ip))
    nh, off = ip[6], 40
    while nh in (0, 43, 60):
        nh, off = ip[off], off + (ip[off + 1] + 1) * 8
    if nh != 44:
        return None
    fo = struct.unpack(">H", ip[off + 2:off + 4])[0]
    key = (6, ip[8:24], ip[24:40], ip[off + 4:off + 8])
    return key, fo & 0xFFF8, end - off - 8, bool(fo & 1)


class Oracle:
    """Expected driver output: a plain packet passes as it is; a datagram comes out when the
    fragments seen cover it and the last one was seen (atomic fragments at once)."""

    def __init__(self):
        self.state = {}
        self.expect = []

    def packet(self, ip_written: bytes, datagram: bytes | None):
        info = frag_info(ip_written)
        if info is None:
            self.expect.append(("P", ip_written))
            return
        key, off, length, more = info
        if off == 0 and not more:
            self.expect.append(("D", datagram))
            return
        have, final = self.state.setdefault(key, [set(), False])
        have.update(range(off // 8, (off + length + 7) // 8))
        final = final or not more
        self.state[key][1] = final
        if final and len(have) == (len(datagram) - header_len(datagram) + 7) // 8:
            self.expect.append(("D", datagram))
            del self.state[key]


def header_len(ip: bytes) -> int:
    if ip[0] >> 4 == 4:
        return (ip[0] & 15) * 4
    nh, off = ip[6], 40
    while nh in (0, 43, 60):
        nh, off = ip[off], off + (ip[off + 1] + 1) * 8
    return off


def ipv4_checksum_ok(h: bytes) -> bool:
    s = sum(struct.unpack(">%dH" % (len(h) // 2), h))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


def check_v4_fields(got: bytes, orig: bytes):
    """The header fields reassembly must restore, then the payload."""
    hl = (orig[0] & 15) * 4
    assert got[0] == orig[0], "version / header length"
    assert got[1] == orig[1], "TOS"
    assert struct.unpack(">H", got[2:4])[0] == len(orig) == len(got), "total length"
    assert got[4:6] == orig[4:6], "identification"
    assert struct.unpack(">H", got[6:8])[0] & 0x3FFF == 0, "MF / offset not cleared"
    assert got[6] & 0xC0 == orig[6] & 0xC0, "DF / reserved bit"
    assert got[8:10] == orig[8:10], "TTL / protocol"
    assert got[12:20] == orig[12:20], "addresses"
    assert got[20:hl] == orig[20:hl], "options"
    assert ipv4_checksum_ok(got[:hl]), "header checksum"
    assert got[hl:] == orig[hl:], "payload"


def check_v6_fields(got: bytes, orig: bytes):
    assert struct.unpack(">H", got[4:6])[0] == len(got) - 40, "payload length"
    assert IPv6ExtHdrFragment not in IPv6(got), "Fragment header still there"
    assert got == orig


def compare(out, expect, what: str):
    assert len(out) == len(expect), f"{what}: {len(out)} packets out, {len(expect)} expected"
    for i, ((kind, got), (ekind, exp)) in enumerate(zip(out, expect)):
        assert kind == ekind, f"{what}: packet {i}: {kind}, expected {ekind}"
        if kind == "D" and exp[0] >> 4 == 4:
            check_v4_fields(got, exp)
        elif kind == "D":
            check_v6_fields(got, exp)
        assert got == exp, f"{what}: packet {i} differs"


# ---- datagrams built by scapy, fragmented by scapy ---------------------------------------------

V4_OPTIONS = [[], [IPOption_RR()], [IPOption_NOP()] * 4, [IPOption_RR(routers=["1.2.3.4"] * 3)]]
V6_CHAINS = [[], [IPv6ExtHdrHopByHop], [IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt],
             [IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting], [IPv6ExtHdrDestOpt]]


def upper(rng: random.Random, size: int):
    data = Raw(bytes(rng.getrandbits(8) for _ in range(size))) if size else None
    l4 = TCP(sport=rng.randrange(1024, 65535), dport=443, seq=rng.getrandbits(32),
             flags="PA") if rng.random() < 0.5 else UDP(sport=rng.randrange(1024, 65535),
                                                          dport=40000)
    return l4 / data if data else l4


def scapy_datagrams(rng: random.Random):
    """(original datagram bytes, list of fragment IP packets as bytes)."""
    sizes = [0, 1, 7, 8, 9, 13, 100, 575, 1000, 1472, 1473, 2999, 8000, 20000]
    out = []
    ident = 1000
    for size in sizes + [rng.randrange(1, 9000) for _ in range(12)] + [60000]:
        for _ in range(2):
            ident += 1
            opts = rng.choice(V4_OPTIONS)
            pkt = IP(src="192.0.2.%d" % rng.randrange(1, 4), dst="198.51.100.7", id=ident,
                     ttl=rng.randrange(1, 255), tos=rng.choice([0, 0x10, 0xB8]),
                     options=opts) / upper(rng, size)
            orig = raw(pkt)
            hl = (orig[0] & 15) * 4
            least = -(-(len(orig) - hl) // 200 // 8) * 8  # at most ~200 fragments
            fragsize = max(rng.choice([8, 16, 24, 64, 512, 1480]), least)
            out.append((orig, [raw(f) for f in fragment(pkt, fragsize=fragsize)]))
        for _ in range(2):
            ident += 1
            chain = rng.choice(V6_CHAINS)
            base = IPv6(src="2001:db8::%x" % rng.randrange(1, 4), dst="2001:db8::99",
                        hlim=rng.randrange(1, 255), fl=rng.getrandbits(20))
            exp = base.copy()
            for h in chain:
                exp = exp / h()
            exp = exp / upper(rng, min(size, 60000))
            orig = raw(exp)
            hl = header_len(orig)
            withfrag = base.copy()
            for h in chain:
                withfrag = withfrag / h()
            withfrag = withfrag / IPv6ExtHdrFragment(id=ident, nh=upper_nh(orig)) / Raw(orig[hl:])
            least = hl + 8 + -(-(len(orig) - hl) // 200 // 8) * 8
            fragsize = max(rng.choice([hl + 16, hl + 64, 576, 1280, 1500]), least)
            out.append((orig, [raw(f) for f in fragment6(withfrag, fragsize)]))
    return out


def upper_nh(ip6: bytes) -> int:
    nh, off = ip6[6], 40
    while nh in (0, 43, 60):
        nh, off = ip6[off], off + (ip6[off + 1] + 1) * 8
    return nh


def arrange(rng: random.Random, datagrams):
    """Order the fragments: scapy's order, reversed, shuffled, with duplicates, and two
    datagrams interleaved. Returns (fragment bytes, original) in feeding order."""
    seq = []
    i = 0
    while i < len(datagrams):
        orig, frags = datagrams[i]
        items = [(f, orig) for f in frags]
        how = rng.randrange(5)
        if how == 1:
            items.reverse()
        elif how == 2:
            rng.shuffle(items)
        elif how == 3 and len(items) > 1:
            items = items[:-1] + rng.sample(items[:-1], min(3, len(items) - 1)) + items[-1:]
        elif how == 4 and i + 1 < len(datagrams):
            o2, f2 = datagrams[i + 1]
            items += [(f, o2) for f in f2]
            rng.shuffle(items)
            i += 1
        seq += items
        i += 1
    return seq


@needs_scapy
def test_scapy_fragments_reassemble_to_the_original_datagrams(driver, tmp_path):
    rng = random.Random(20240611)
    seq = arrange(rng, scapy_datagrams(rng))
    n_frags = sum(1 for f, _ in seq if frag_info(f))
    assert n_frags > 500
    files = []
    # Ethernet (frames padded to 60 bytes, some VLAN-tagged): the padding is captured after
    # the IP total length and must not end up in a datagram
    frames, oracle = [], Oracle()
    for k, (ip, orig) in enumerate(seq):
        vlan = k % 7 == 3
        frame = ethernet(ip, vlan)
        if len(frame) < 60:
            frame += b"\0" * (60 - len(frame))
        frames.append((1_700_000_000_000_000 + 1000 * k, frame))
        oracle.packet(frame[18 if vlan else 14:], orig)
    write_pcap(tmp_path / "eth.pcap", 1, frames)
    files.append(("eth.pcap", oracle.expect))
    # raw IP, little-endian; raw IP, big-endian with nanoseconds
    oracle = Oracle()
    for ip, orig in seq:
        oracle.packet(ip, orig)
    frames = [(1_700_000_000_000_000 + 1000 * k, ip) for k, (ip, _) in enumerate(seq)]
    write_pcap(tmp_path / "raw.pcap", 101, frames)
    write_pcap(tmp_path / "raw-be-ns.pcap", 101, frames, endian=">", nano=True)
    files += [("raw.pcap", oracle.expect), ("raw-be-ns.pcap", oracle.expect)]
    # the same packets written by scapy's own pcap writer
    pkts = []
    for k, (ip, _) in enumerate(seq):
        p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02",
                  type=0x0800 if ip[0] >> 4 == 4 else 0x86DD) / Raw(ip)
        p.time = 1_700_000_000 + k / 1000
        pkts.append(p)
    wrpcap(str(tmp_path / "scapy.pcap"), pkts)
    files.append(("scapy.pcap", oracle.expect))

    n_done = sum(1 for kind, _ in oracle.expect if kind == "D")
    assert n_done >= 80
    for name, expect in files:
        out, stats = run_driver(driver, tmp_path / name)
        compare(out, expect, name)
        assert stats["fragments"] == n_frags, name
        assert stats["reassembled"] + stats["atomic"] == n_done, name
        assert stats["overlap_conflicts"] == 0 and stats["malformed"] == 0, (name, stats)
        assert stats["timeouts"] == 0 and stats["evicted"] == 0, (name, stats)


# ---- overlapping fragments by hand, against a byte-by-byte model of each policy -----------------

def new_wins(policy: str, ns: int, ne: int, hs: int, he: int) -> bool:
    return {"first": False, "last": True, "bsd": ns < hs, "linux": ns <= hs,
            "windows": ns < hs and ne > he, "solaris": ns < hs and ne >= he}[policy]


def overlap_case(rng: random.Random, ident: int, v6: bool):
    """Random fragments of one datagram (random bytes each, so overlaps conflict), ending with
    a pass that covers it. Returns ([(offset, end, more, bytes)], payload length)."""
    size = rng.randrange(9, 700)
    frags = []
    for _ in range(rng.randrange(1, 12)):
        s = 8 * rng.randrange((size + 7) // 8)
        blocks = (size - s) // 8
        if blocks == 0 or rng.random() < 0.25:
            e, more = size, False
        else:
            e, more = s + 8 * rng.randrange(1, min(blocks, 10) + 1), True
        if s == 0 and e == size:
            e, more = 8, True
        if rng.random() < 0.15 and frags:
            frags.append(frags[rng.randrange(len(frags))])   # exact duplicate
        frags.append((s, e, more, bytes(rng.getrandbits(8) for _ in range(e - s))))
    s = 0
    while s < size:
        e = min(s + 8 * rng.randrange(1, 6), size)
        if s == 0 and e == size:
            e = 8
        frags.append((s, e, e < size, bytes(rng.getrandbits(8) for _ in range(e - s))))
        s = e
    return frags, size


def model(policy: str, frags, size: int):
    """Feed fragments until complete; returns (bytes, how many fed, overlaps, conflicts)."""
    val = [None] * size
    ext = [None] * size
    final = False
    overlaps = conflicts = 0
    for n, (s, e, more, data) in enumerate(frags, 1):
        ov = cf = False
        for b in range(s, e):
            if val[b] is None:
                val[b], ext[b] = data[b - s], (s, e)
                continue
            ov = True
            cf |= val[b] != data[b - s]
            if new_wins(policy, s, e, *ext[b]):
                val[b], ext[b] = data[b - s], (s, e)
        overlaps += ov
        conflicts += cf
        final |= not more
        if final and None not in val:
            return bytes(val), n, overlaps, conflicts
    raise AssertionError("never complete")


@needs_scapy
@pytest.mark.parametrize("policy", POLICIES)
def test_overlapping_fragments_follow_the_policy(driver, tmp_path, policy):
    rng = random.Random(7 + POLICIES.index(policy))
    frames, expect = [], []
    overlaps = conflicts = 0
    for ident in range(1, 121):
        v6 = ident % 2 == 0
        hbh = v6 and ident % 4 == 0
        frags, size = overlap_case(rng, ident, v6)
        payload, n, ov, cf = model(policy, frags, size)
        overlaps, conflicts = overlaps + ov, conflicts + cf
        for s, e, more, data in frags[:n]:
            if v6:
                p = IPv6(src="2001:db8::1", dst="2001:db8::2")
                if hbh:
                    p = p / IPv6ExtHdrHopByHop()
                p = p / IPv6ExtHdrFragment(nh=17, offset=s // 8, m=int(more), id=ident) / Raw(data)
            else:
                p = IP(src="10.1.1.1", dst="10.1.1.2", id=ident, proto=17, ttl=33,
                       flags="MF" if more else 0, frag=s // 8) / Raw(data)
            frames.append((1_000_000 * ident + len(frames), raw(p)))
        if v6:
            exp = IPv6(src="2001:db8::1", dst="2001:db8::2", nh=0 if hbh else 17)
            if hbh:
                exp = exp / IPv6ExtHdrHopByHop(nh=17)
            expect.append(("D", raw(exp / Raw(payload))))
        else:
            expect.append(("D", raw(IP(src="10.1.1.1", dst="10.1.1.2", id=ident, proto=17,
                                       ttl=33) / Raw(payload))))
    write_pcap(tmp_path / "overlaps.pcap", 101, frames)
    out, stats = run_driver(driver, tmp_path / "overlaps.pcap", "--policy", policy)
    compare(out, expect, policy)
    assert stats["overlaps"] == overlaps and stats["overlap_conflicts"] == conflicts, stats
    assert conflicts > 50
    assert stats["held_datagrams"] == 0 and stats["malformed"] == 0, stats


# ---- timers in capture time --------------------------------------------------------------------

@needs_scapy
def test_fragments_further_apart_than_the_timeout_are_not_joined(driver, tmp_path):
    rng = random.Random(3)
    pa = IP(src="10.0.0.1", dst="10.0.0.2", id=1) / upper(rng, 3000)
    pb = IP(src="10.0.0.1", dst="10.0.0.2", id=2) / upper(rng, 3000)
    fa, fb = fragment(pa, 1480), fragment(pb, 1480)
    t0 = 1_600_000_000_000_000
    frames = [(t0, raw(fa[0])), (t0 + 30_000_000, raw(fa[1])),
              (t0 + 59_999_999, raw(fa[2])),           # within 60 s of the first: joined
              (t0 + 100_000_000, raw(fb[0])), (t0 + 130_000_000, raw(fb[1])),
              (t0 + 129_000_000, raw(fb[2])),          # slightly back in time: fine
              (t0 + 200_000_000, raw(fa[0])),
              (t0 + 260_000_000, raw(fa[1])),          # exactly 60 s after the first: the
              (t0 + 260_000_000, raw(fa[2]))]          # first is dropped, these two held
    write_pcap(tmp_path / "timers.pcap", 101, frames)
    out, stats = run_driver(driver, tmp_path / "timers.pcap")
    compare(out, [("D", raw(pa)), ("D", raw(pb))], "timers")
    assert stats["timeouts"] == 1 and stats["held_datagrams"] == 1, stats
    out, stats = run_driver(driver, tmp_path / "timers.pcap", "--timeout-us", "10000000")
    # with a 10 s timeout nothing is joined: A, A', A'', B, B' (which took the late fb[2]) and
    # the third A expire; the last two fragments of A stay held
    assert out == [] and stats["timeouts"] == 6 and stats["held_datagrams"] == 1, stats


# ---- malformed fragments -------------------------------------------------------------------------

@needs_scapy
def test_malformed_fragments_are_dropped_and_counted(driver, tmp_path):
    def v4(ident, off, data, more):
        return raw(IP(src="10.0.0.1", dst="10.0.0.2", id=ident, proto=17,
                      flags="MF" if more else 0, frag=off // 8) / Raw(data))

    def v6(ident, off, data, more):
        return raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrDestOpt() /
                   IPv6ExtHdrFragment(nh=17, offset=off // 8, m=int(more), id=ident) / Raw(data))

    frames = []
    malformed = 0
    for mk in (v4, v6):
        base = 100 if mk is v4 else 200
        pkts = [
            mk(base + 1, 8, b"x" * 13, True),                        # odd middle fragment
            mk(base + 2, 65528, b"x" * 16, False),                   # offset + length > 65535
            mk(base + 3, 16, b"x" * 8, False), mk(base + 3, 24, b"x" * 8, True),  # past the end
            mk(base + 4, 16, b"x" * 8, False), mk(base + 4, 16, b"x" * 16, False),  # two ends
        ]
        malformed += 4
        # what is left of datagrams 3 and 4 was dropped: their first fragments complete nothing
        pkts += [mk(base + 3, 0, b"y" * 16, True), mk(base + 4, 0, b"y" * 16, True)]
        frames += [(1_000_000 + len(frames), p) for p in pkts]
    write_pcap(tmp_path / "malformed.pcap", 101, frames)
    out, stats = run_driver(driver, tmp_path / "malformed.pcap")
    assert out == [], out
    assert stats["malformed"] == malformed and stats["reassembled"] == 0, stats
    assert stats["held_datagrams"] == 4, stats
