"""Facts read straight from a capture, to check that an expected failure's reason is still true.

c2scribe's own records cannot prove that a capture lacks a SYN or has a hole in its sequence
space (that is exactly what the engine may get wrong), so these helpers read the packets with
scapy, independently of c2scribe. Each ``check_*`` returns None when the fact holds, else a
short text saying what was found instead; expectations.py attaches them to its entries.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

Check = Callable[["Ctx"], "str | None"]


@dataclass(frozen=True)
class Seg:
    frame: int
    src: str          # "ip:port" / "[ip6]:port"
    dst: str
    flags: str        # scapy flag letters, e.g. "S", "SA", "PA", "FA"
    seq: int
    ack: int
    payload: bytes
    ipver: int
    layers: tuple[str, ...]

    @property
    def syn(self) -> bool:
        return "S" in self.flags and "A" not in self.flags

    @property
    def synack(self) -> bool:
        return "S" in self.flags and "A" in self.flags


def _ep(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@functools.lru_cache(maxsize=16)
def tcp_segments(path: str) -> tuple[Seg, ...]:
    """Every TCP segment of a capture (innermost TCP header; frames numbered from 1)."""
    try:
        from scapy.all import IP, TCP, IPv6, PcapNgReader, PcapReader  # noqa: F401
        from scapy.error import Scapy_Exception
    except ImportError as e:                      # pragma: no cover - scapy is a test dependency
        raise RuntimeError(f"scapy is needed to check expectations: {e}") from None
    out = []
    try:
        reader = PcapReader(path)
    except Scapy_Exception:
        reader = PcapNgReader(path)
    with reader:
        for n, pkt in enumerate(reader, 1):
            tcp = pkt.getlayer(TCP, nb=_count(pkt, TCP))
            if tcp is None:
                pkt = _redecode(pkt, IP, IPv6)
                tcp = pkt.getlayer(TCP, nb=_count(pkt, TCP)) if pkt is not None else None
            if tcp is None:
                continue
            ip = tcp.underlayer
            if ip is None or not hasattr(ip, "src"):
                continue
            ipver = 6 if ip.__class__.__name__ == "IPv6" else 4
            payload = bytes(tcp.payload)
            if ipver == 4 and hasattr(ip, "len") and ip.len:
                # drop Ethernet padding: the TCP payload ends where the IP datagram ends
                room = ip.len - ip.ihl * 4 - tcp.dataofs * 4
                payload = payload[:max(room, 0)]
            layers = tuple(layer.__name__ for layer in pkt.layers())
            out.append(Seg(n, _ep(ip.src, tcp.sport), _ep(ip.dst, tcp.dport), str(tcp.flags),
                           tcp.seq, tcp.ack, payload, ipver, layers))
    return tuple(out)


def _redecode(pkt, IP, IPv6):
    """scapy leaves some link layers undecoded (e.g. BSD loopback with AF 24/28/30 for IPv6):
    find the IP header in the first Raw payload by its version nibble."""
    from scapy.all import Raw
    raw = pkt.getlayer(Raw)
    if raw is None:
        return None
    b = bytes(raw.load)
    try:
        if b and b[0] >> 4 == 6:
            return IPv6(b)
        if b and b[0] >> 4 == 4:
            return IP(b)
    except Exception:                     # not an IP header after all
        return None
    return None


def _count(pkt, layer) -> int:
    n = 0
    while pkt.getlayer(layer, nb=n + 1) is not None:
        n += 1
    return max(n, 1)


def conn_segments(segs: Iterable[Seg], a: str | None = None, b: str | None = None) -> list[Seg]:
    """Segments of one connection (either direction); a/b None = every segment."""
    if a is None:
        return list(segs)
    pair = {a, b} if b else None
    return [s for s in segs if (pair and {s.src, s.dst} == pair) or (not pair and a in (s.src, s.dst))]


def connections(segs: Iterable[Seg]) -> dict[frozenset, list[Seg]]:
    out: dict[frozenset, list[Seg]] = {}
    for s in segs:
        out.setdefault(frozenset((s.src, s.dst)), []).append(s)
    return out


def holes(segs: list[Seg], src: str) -> list[tuple[int, int, int]]:
    """Sequence ranges never seen in the direction sent by src: (from, to, frame after the hole),
    relative to the first sequence number of that direction."""
    data = [s for s in segs if s.src == src and s.payload]
    if not data:
        return []
    syn = [s for s in segs if s.src == src and "S" in s.flags]
    base = (syn[0].seq + 1) if syn else min(s.seq for s in data)
    ivs = sorted(((s.seq - base) % (1 << 32), (s.seq - base) % (1 << 32) + len(s.payload), s.frame)
                 for s in data)
    out, covered = [], 0 if syn else ivs[0][0]
    for lo, hi, fr in ivs:
        if lo > covered:
            out.append((covered, lo, fr))
        covered = max(covered, hi)
    return out


def differing_overlaps(segs: list[Seg]) -> list[tuple[int, int]]:
    """Pairs of frames whose payloads cover the same sequence numbers with different bytes."""
    out = []
    data = [s for s in segs if s.payload]
    for i, x in enumerate(data):
        for y in data[i + 1:]:
            if x.src != y.src:
                continue
            lo = max(x.seq, y.seq)
            hi = min(x.seq + len(x.payload), y.seq + len(y.payload))
            if lo < hi and x.payload[lo - x.seq:hi - x.seq] != y.payload[lo - y.seq:hi - y.seq]:
                out.append((x.frame, y.frame))
    return out


# --------------------------------------------------------------------------- context

@dataclass
class Ctx:
    root: Path
    capture: str
    run: object               # oracles.Run (kept untyped to avoid an import cycle)

    @property
    def segs(self) -> tuple[Seg, ...]:
        return tcp_segments(str(self.root / self.capture))

    def oracle_checks(self) -> list[dict]:
        """The capture's translated upstream checks (ORACLES.jsonl)."""
        return _oracle_lines(str(self.root)).get(self.capture, {}).get("checks") or []


@functools.lru_cache(maxsize=2)
def _oracle_lines(root: str) -> dict[str, dict]:
    import json
    with open(Path(root) / "ORACLES.jsonl", encoding="utf-8") as f:
        return {d["capture"]: d for d in map(json.loads, filter(str.strip, f))}


def _describe(segs: list[Seg], n: int = 4) -> str:
    return ", ".join(f"#{s.frame} {s.src}>{s.dst} [{s.flags}] len {len(s.payload)}" for s in segs[:n])


# --------------------------------------------------------------------------- checks

def _pick(ctx: Ctx, conn: tuple[str, str] | None) -> dict[frozenset, list[Seg]]:
    conns = connections(ctx.segs)
    if conn is None:
        return {k: v for k, v in conns.items() if any(s.payload for s in v)}
    key = frozenset(conn)
    return {key: conns.get(key, [])}


def check_no_syn(conn: tuple[str, str] | None = None) -> Check:
    """Some (or the given) data-carrying connection has no SYN from its client."""
    def check(ctx: Ctx) -> str | None:
        found = []
        for k, v in _pick(ctx, conn).items():
            if v and not any(s.syn for s in v):
                found.append(v)
        if found:
            return None
        firsts = [v[0] for v in _pick(ctx, conn).values() if v]
        return f"every data connection has a SYN ({_describe(firsts)})"
    check.__doc__ = f"no SYN on {conn or 'a data connection'}"
    return check


def check_no_synack(conn: tuple[str, str] | None = None) -> Check:
    def check(ctx: Ctx) -> str | None:
        for k, v in _pick(ctx, conn).items():
            if any(s.syn for s in v) and not any(s.synack for s in v):
                return None
        return "a SYN-ACK is present"
    check.__doc__ = f"SYN but no SYN-ACK on {conn or 'a data connection'}"
    return check


def check_syn_with_data() -> Check:
    def check(ctx: Ctx) -> str | None:
        if any(s.syn and s.payload for s in ctx.segs):
            return None
        return "no SYN carries payload"
    check.__doc__ = "a SYN carries payload (TCP Fast Open)"
    return check


def check_split_handshake() -> Check:
    def check(ctx: Ctx) -> str | None:
        for v in connections(ctx.segs).values():
            senders = {s.src for s in v if s.syn}
            if len(senders) == 2:
                return None
        return "no connection where both sides send a bare SYN"
    check.__doc__ = "both endpoints send a bare SYN (split handshake)"
    return check


def check_data_before_handshake_ack() -> Check:
    """The server sends data right after its SYN-ACK and the client's first ACK already covers
    it, so no ACK of exactly ISN+1 ever completes the handshake."""
    def check(ctx: Ctx) -> str | None:
        for v in connections(ctx.segs).values():
            sa = [s for s in v if s.synack]
            if not sa:
                continue
            server, isn = sa[0].src, sa[0].seq
            client_acks = [s.ack for s in v if s.src != server and "A" in s.flags]
            early = [s for s in v if s.src == server and s.payload and s.frame < min(
                [x.frame for x in v if x.src != server and "A" in x.flags] or [1 << 30])]
            if early and (isn + 1) not in client_acks:
                return None
        return "no connection with server data ahead of the handshake's final ACK"
    check.__doc__ = "server data before the handshake completes"
    return check


def check_one_sided() -> Check:
    def check(ctx: Ctx) -> str | None:
        for v in connections(ctx.segs).values():
            if len({s.src for s in v}) == 1 and any(s.payload for s in v):
                return None
        return "every data connection has packets in both directions"
    check.__doc__ = "packets of only one direction"
    return check


def check_seq_hole(conn: tuple[str, str] | None = None) -> Check:
    def check(ctx: Ctx) -> str | None:
        for k, v in _pick(ctx, conn).items():
            for src in {s.src for s in v}:
                h = holes(v, src)
                if h:
                    return None
        return "no sequence hole in any direction"
    check.__doc__ = "a direction misses bytes (sequence hole)"
    return check


def check_overlap_differs() -> Check:
    def check(ctx: Ctx) -> str | None:
        for v in connections(ctx.segs).values():
            if differing_overlaps(v):
                return None
        return "no overlapping segments with different bytes"
    check.__doc__ = "overlapping segments carry different bytes"
    return check


def check_ipv6() -> Check:
    def check(ctx: Ctx) -> str | None:
        if any(s.ipver == 6 and s.payload for s in ctx.segs):
            return None
        return "no IPv6 TCP payload in the capture"
    check.__doc__ = "HTTP over IPv6"
    return check


def check_client_first_bytes(prefixes: tuple[bytes, ...], what: str) -> Check:
    """The client's first payload starts with one of prefixes (e.g. a SOCKS version byte)."""
    def check(ctx: Ctx) -> str | None:
        seen = []
        for v in connections(ctx.segs).values():
            syn = [s for s in v if s.syn]
            client = syn[0].src if syn else v[0].src
            data = [s for s in v if s.src == client and s.payload]
            if data:
                seen.append(data[0].payload[:8])
                if data[0].payload.startswith(prefixes):
                    return None
        return f"no client stream starts with {what} (first bytes seen: {seen[:3]})"
    check.__doc__ = f"client stream starts with {what}"
    return check


def check_request_lines(ports: Iterable[int], pred: Callable[[bytes], bool], what: str) -> Check:
    """For each client port, the first request line satisfies pred."""
    ports = tuple(ports)

    def check(ctx: Ctx) -> str | None:
        first: dict[int, bytes] = {}
        for s in ctx.segs:
            if s.payload:
                port = int(s.src.rsplit(":", 1)[1])
                if port in ports and port not in first:
                    first[port] = s.payload.split(b"\n", 1)[0]
        bad = [f"{p}: {first.get(p)!r}" for p in ports if p not in first or not pred(first[p])]
        return None if not bad else f"request line is not {what}: {'; '.join(bad[:3])}"
    check.__doc__ = f"request lines of ports {ports[:3]}... are {what}"
    return check


def check_server_first_bytes_not_status(conn: tuple[str, str] | None = None) -> Check:
    def check(ctx: Ctx) -> str | None:
        for v in _pick(ctx, conn).values():
            syn = [s for s in v if s.syn]
            client = syn[0].src if syn else v[0].src
            data = [s for s in v if s.src != client and s.payload]
            if data and not data[0].payload.startswith(b"HTTP/"):
                return None
        return "the server's reply starts with a status line"
    check.__doc__ = "the server's reply has no status line"
    return check


def check_layer(name: str) -> Check:
    def check(ctx: Ctx) -> str | None:
        if any(name in s.layers for s in ctx.segs if s.payload):
            return None
        return f"no {name} layer under the TCP payload"
    check.__doc__ = f"TCP carried inside {name}"
    return check


def check_run(pred: Callable[[object], bool], what: str) -> Check:
    """A fact about c2scribe's own records (for definitional entries)."""
    def check(ctx: Ctx) -> str | None:
        return None if pred(ctx.run) else f"c2scribe's records no longer show: {what}"
    check.__doc__ = what
    return check
