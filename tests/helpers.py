"""Shared helpers for the tests that compare c2scribe with independent tools on real captures.

Nothing here is a fixture pytest discovers by itself: test modules import what they need.
Every helper that needs something outside the repository (the shared real captures, tshark,
tcpflow, editcap, tcpdump) calls pytest.skip with the reason when it is missing, so a test
that cannot run says so in the summary (-rs) instead of passing silently.
"""
from __future__ import annotations

import base64
import collections
import datetime as dt
import functools
import hashlib
import ipaddress
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from c2scribe.capture import run_chain
from c2scribe.engine import Engine
from c2scribe.schema import (CaptureError, Connection, EngineWarning, HttpTransaction, fields_of,
                             iso)

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# where things are
# --------------------------------------------------------------------------------------------

def find_testdata() -> Path | None:
    """The shared real captures: $C2SCRIBE_TESTDATA, else <repo>/../shared/testdata."""
    env = os.environ.get("C2SCRIBE_TESTDATA")
    p = Path(env) if env else REPO.parent / "shared" / "testdata"
    return p if p.is_dir() else None


def require_testdata() -> Path:
    """The shared testdata folder, or skip the calling test visibly."""
    p = find_testdata()
    if p is None:
        pytest.skip("shared real captures not found (set C2SCRIBE_TESTDATA or provide "
                    "<repo>/../shared/testdata)")
    return p


def capture(rel: str) -> Path:
    """One capture of the shared testdata by its path relative to testdata/, or skip."""
    p = require_testdata() / rel
    if not p.is_file():
        pytest.skip(f"capture {rel} not in the shared testdata")
    return p


def tool(name: str) -> str:
    """Path of an external tool, or skip visibly."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


@functools.lru_cache(maxsize=None)
def oracles() -> list[dict]:
    """The lines of testdata/ORACLES.jsonl (empty when the testdata is absent)."""
    d = find_testdata()
    if d is None or not (d / "ORACLES.jsonl").is_file():
        return []
    with open(d / "ORACLES.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------------------------
# c2scribe
# --------------------------------------------------------------------------------------------

def c2_records(paths, *, body_keep: int = 1 << 20, stream_keep: int = 1 << 24, **opts) -> list:
    """All records of a chain of capture files (one Engine, consumed fully)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    opts.setdefault("stream_keep_http", True)       # every connection's bytes, to compare
    eng = Engine(body_keep=body_keep, stream_keep=stream_keep, **opts)
    return list(run_chain(eng, [str(p) for p in paths]))


def of_type(recs, cls) -> list:
    return [r for r in recs if isinstance(r, cls)]


def norm_ip(a: str) -> str:
    return str(ipaddress.ip_address(a))


def conn_key(ip1: str, port1, ip2: str, port2) -> tuple:
    """A direction-free 4-tuple: the two (address, port) endpoints, sorted."""
    a, b = (norm_ip(ip1), int(port1)), (norm_ip(ip2), int(port2))
    return tuple(sorted((a, b)))


def rec_key(r) -> tuple:
    return conn_key(r.src_ip, r.src_port, r.dst_ip, r.dst_port)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PROVENANCE = ("file_first", "frame_first", "file_last", "frame_last", "file")


def comparable(rec, drop=PROVENANCE) -> tuple:
    """A record as (class name, sorted field items) without the provenance fields.

    Lists (headers, flags) become tuples so the result is hashable and sortable.
    """
    d = {}
    for f in rec.__dataclass_fields__:
        if f in drop:
            continue
        v = getattr(rec, f)
        if isinstance(v, list):
            v = tuple(tuple(x) if isinstance(x, (list, tuple)) else x for x in v)
        d[f] = v
    return (type(rec).__name__, tuple(sorted(d.items(), key=lambda kv: kv[0])))


# --------------------------------------------------------------------------------------------
# tshark
# --------------------------------------------------------------------------------------------

TSHARK_FIELDS = ("frame.number", "tcp.stream", "_ws.col.Source", "_ws.col.Destination",
                 "tcp.srcport", "tcp.dstport", "http.request.method", "http.request.uri",
                 "http.response.code")


def tshark_http(path, extra_args=()) -> list[dict]:
    """HTTP messages as tshark 4 sees them: one dict per request or response message.

    Keys: frame, stream, key (direction-free 4-tuple of the innermost IP/TCP), kind
    ("request"/"response"), method, uri, code. Several messages in one frame give several dicts.
    """
    exe = tool("tshark")
    cmd = [exe, "-n", "-r", str(path), "-o", "tcp.check_checksum:FALSE", *extra_args,
           "-Y", "tcp && (http.request || http.response)", "-T", "json"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    p = subprocess.run(cmd, capture_output=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"tshark failed on {path}: {p.stderr.decode(errors='replace')}")
    out = []
    for pkt in json.loads(p.stdout or b"[]"):
        L = pkt["_source"]["layers"]

        def last(name):
            v = L.get(name)
            return v[-1] if v else None

        src, dst = last("_ws.col.Source"), last("_ws.col.Destination")
        key = conn_key(src, last("tcp.srcport"), dst, last("tcp.dstport"))
        frame, stream = int(last("frame.number")), int(last("tcp.stream"))
        methods, uris = L.get("http.request.method", []), L.get("http.request.uri", [])
        for i, m in enumerate(methods):
            out.append(dict(frame=frame, stream=stream, key=key, kind="request", method=m,
                            uri=uris[i] if i < len(uris) else None, code=None))
        for c in L.get("http.response.code", []):
            out.append(dict(frame=frame, stream=stream, key=key, kind="response", method=None,
                            uri=None, code=int(c)))
    return out


def tshark_http_by_conn(path, extra_args=()) -> dict:
    """{4-tuple: (Counter of (method, uri), Counter of status codes)} from tshark."""
    res: dict = {}
    for m in tshark_http(path, extra_args):
        req, resp = res.setdefault(m["key"], (collections.Counter(), collections.Counter()))
        if m["kind"] == "request":
            req[(m["method"], m["uri"])] += 1
        else:
            resp[m["code"]] += 1
    return res


def tshark_tcp_evidence(path) -> dict:
    """Per direction-free 4-tuple, what tshark says about the TCP connection.

    {key: {"ipv6": bool, "syn": bool, "synack": bool, "lost": bool, "frames": int}} where
    lost means tshark flagged "previous segment not captured" or "ACKed unseen segment"
    (capture loss) on some frame of it.
    """
    exe = tool("tshark")
    cmd = [exe, "-n", "-r", str(path), "-o", "tcp.check_checksum:FALSE", "-Y", "tcp",
           "-T", "fields", "-E", "occurrence=l", "-E", "separator=\t",
           "-e", "_ws.col.Source", "-e", "tcp.srcport", "-e", "_ws.col.Destination",
           "-e", "tcp.dstport", "-e", "tcp.flags.syn", "-e", "tcp.flags.ack",
           "-e", "tcp.analysis.lost_segment", "-e", "tcp.analysis.ack_lost_segment"]
    p = subprocess.run(cmd, capture_output=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"tshark failed on {path}: {p.stderr.decode(errors='replace')}")
    ev: dict = {}
    for line in p.stdout.decode().splitlines():
        f = line.split("\t")
        if len(f) < 8 or not f[1] or not f[3]:
            continue
        try:
            key = conn_key(f[0], f[1], f[2], f[3])
        except ValueError:
            continue
        e = ev.setdefault(key, {"ipv6": ":" in f[0], "syn": False, "synack": False,
                                "lost": False, "frames": 0})
        e["frames"] += 1
        syn, ack = f[4] in ("1", "True"), f[5] in ("1", "True")
        if syn and not ack:
            e["syn"] = True
        if syn and ack:
            e["synack"] = True
        if f[6] or f[7]:
            e["lost"] = True
    return ev


def libnids_limit(key, ev: dict, conns: list) -> str | None:
    """Why libnids could not give this connection's bytes, verified on both sides, else None.

    tshark's view (ev, from tshark_tcp_evidence) must show the cause and c2scribe's
    Connection records for that 4-tuple must show the effect: not reassembled (IPv6, no
    SYN/SYN-ACK) or a reassembled direction shorter than the payload seen (loss).
    """
    e = ev.get(key)
    cs = [c for c in conns if rec_key(c) == key]
    if e is None or not cs:
        return None
    if e["ipv6"] and all(not c.reassembled for c in cs):
        return f"{key}: IPv6 TCP, which the nids engine does not reassemble"
    if not (e["syn"] and e["synack"]) and all(not c.reassembled for c in cs):
        missing = " and ".join(n for n, ok in (("SYN", e["syn"]), ("SYN-ACK", e["synack"]))
                               if not ok)
        return f"{key}: no {missing} in the capture, libnids only follows connections it saw open"
    if e["lost"] and any(c.c2s_bytes < c.src_payload_bytes or c.s2c_bytes < c.dst_payload_bytes
                         for c in cs):
        return (f"{key}: capture loss (tshark: previous segment not captured / ACKed unseen "
                f"segment); libnids stops a direction at the first hole")
    return None


def c2_http_by_conn(recs) -> dict:
    """{4-tuple: (Counter of (method, uri), Counter of status codes)} from c2scribe records.

    A transaction that got a 100 Continue before its final answer counts a 100 response too
    (tshark shows the interim response as a message of its own).
    """
    res: dict = {}
    for t in of_type(recs, HttpTransaction):
        req, resp = res.setdefault(rec_key(t), (collections.Counter(), collections.Counter()))
        if t.method is not None:
            req[(t.method, t.uri)] += 1
        if t.status_code is not None:
            resp[t.status_code] += 1
        if t.continue_100:
            resp[100] += 1
    return res


def diff_http(c2: dict, ts: dict) -> list[str]:
    """Human-readable differences between two per-connection HTTP multisets."""
    return [line for _key, line in diff_http_keyed(c2, ts)]


def diff_http_keyed(c2: dict, ts: dict) -> list[tuple]:
    """(4-tuple, human-readable line) for each difference between two HTTP multisets."""
    out = []
    for key in sorted(set(c2) | set(ts), key=str):
        creq, cresp = c2.get(key, (collections.Counter(), collections.Counter()))
        treq, tresp = ts.get(key, (collections.Counter(), collections.Counter()))
        if creq != treq:
            out.append((key, f"{key} requests: only c2scribe {dict(creq - treq)}, "
                             f"only tshark {dict(treq - creq)}"))
        if cresp != tresp:
            out.append((key, f"{key} responses: only c2scribe {dict(cresp - tresp)}, "
                             f"only tshark {dict(tresp - cresp)}"))
    return out


# --------------------------------------------------------------------------------------------
# classic pcap files, read and written here (for tcpflow's input and for damaged copies)
# --------------------------------------------------------------------------------------------

def read_pcap(path) -> tuple[bytes, str, list[tuple[bytes, bytes]]]:
    """(global header, struct byte order, [(16-byte record header, frame bytes)])."""
    data = Path(path).read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        bo = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        bo = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    out, off = [], 24
    while off + 16 <= len(data):
        hdr = data[off:off + 16]
        incl = struct.unpack(bo + "I", hdr[8:12])[0]
        out.append((hdr, data[off + 16:off + 16 + incl]))
        off += 16 + incl
    return data[:24], bo, out


def record_offsets(path) -> list[int]:
    """Byte offset of each record header of a classic pcap file."""
    data = Path(path).read_bytes()
    _g, bo, _r = read_pcap(path)
    offs, off = [], 24
    while off + 16 <= len(data):
        offs.append(off)
        off += 16 + struct.unpack(bo + "I", data[off + 8:off + 12])[0]
    return offs


def write_pcap(path, ghdr: bytes, bo: str, records) -> None:
    with open(path, "wb") as f:
        f.write(ghdr)
        for hdr, frame in records:
            hdr = hdr[:8] + struct.pack(bo + "I", len(frame)) + hdr[12:]
            f.write(hdr + frame)


def _ip_end(frame: bytes) -> int | None:
    """For an Ethernet frame carrying IPv4/IPv6 (after VLAN/QinQ tags): where IP ends."""
    off, et = 12, None
    while off + 2 <= len(frame):
        et = struct.unpack("!H", frame[off:off + 2])[0]
        if et in (0x8100, 0x88A8, 0x9100):
            off += 4
            continue
        off += 2
        break
    if et == 0x0800 and len(frame) >= off + 4:
        return off + struct.unpack("!H", frame[off + 2:off + 4])[0]
    if et == 0x86DD and len(frame) >= off + 6:
        return off + 40 + struct.unpack("!H", frame[off + 4:off + 6])[0]
    return None


def strip_ethernet_padding(src, dst) -> int:
    """Copy a capture to a classic pcap without the Ethernet trailer after the IP packet.

    tcpflow 1.6.1 takes every captured byte after the TCP header as payload, so the zero
    padding of short Ethernet frames (a bare ACK or FIN is 54 bytes, sent as 60) lands in
    its flow files. c2scribe and libnids use the IP length. Returns frames trimmed.
    pcapng input is first converted with editcap.
    """
    src = Path(src)
    if src.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a":
        conv = Path(str(dst) + ".conv.pcap")
        editcap("-F", "pcap", src, conv)
        src = conv
    ghdr, bo, recs = read_pcap(src)
    linktype = struct.unpack(bo + "I", ghdr[20:24])[0] & 0x0FFFFFFF
    trimmed, out = 0, []
    for hdr, frame in recs:
        if linktype == 1:
            end = _ip_end(frame)
            if end is not None and end < len(frame):
                frame = frame[:end]
                trimmed += 1
        out.append((hdr, frame))
    write_pcap(dst, ghdr, bo, out)
    return trimmed


# --------------------------------------------------------------------------------------------
# tcpflow
# --------------------------------------------------------------------------------------------

def tcpflow_flows(path, outdir) -> list[dict]:
    """Run tcpflow on a capture; one dict per flow file from its DFXML report.xml.

    Keys: src, sport, dst, dport, start (ISO string), file (path), size, sha256, data.
    tcpflow names files %A.%a-%B.%b%V%v%C%c (zero-padded IPv4 octets, 5-digit ports, a
    "cN" suffix for the N-th later flow on the same 4-tuple); the report gives the same
    with the real addresses. Directions that carried no byte have no file (no filename).
    """
    exe = tool("tcpflow")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([exe, "-r", str(path), "-o", str(outdir)], capture_output=True,
                       timeout=120, cwd=outdir)
    if p.returncode != 0:
        raise RuntimeError(f"tcpflow failed on {path}: "
                           f"{(p.stdout + p.stderr).decode(errors='replace')}")
    import xml.etree.ElementTree as ET
    root = ET.parse(outdir / "report.xml").getroot()
    flows = []
    for fo in root.iter():
        if not fo.tag.endswith("fileobject"):
            continue
        fn = next((c.text for c in fo if c.tag.endswith("filename")), None)
        tf = next((c.attrib for c in fo if c.tag.endswith("tcpflow")), None)
        if fn is None or tf is None:
            continue
        fpath = Path(fn) if os.path.isabs(fn) else outdir / Path(fn).name
        data = fpath.read_bytes()
        flows.append(dict(src=norm_ip(tf["src_ipn"]), sport=int(tf["srcport"]),
                          dst=norm_ip(tf["dst_ipn"]), dport=int(tf["dstport"]),
                          start=tf.get("startime"), file=str(fpath), size=len(data),
                          sha256=sha256(data), data=data))
    return flows


# --------------------------------------------------------------------------------------------
# editcap
# --------------------------------------------------------------------------------------------

def editcap(*args) -> None:
    exe = tool("editcap")
    p = subprocess.run([exe, *map(str, args)], capture_output=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"editcap {args} failed: {p.stderr.decode(errors='replace')}")


__all__ = [n for n in dir() if not n.startswith("_")] + [
    "CaptureError", "Connection", "EngineWarning", "HttpTransaction"]


def describe_record_diff(got: list, want: list, limit: int = 8) -> str:
    """Field by field differences between two lists of comparable() tuples (for messages)."""
    out = []
    if len(got) != len(want):
        out.append(f"{len(got)} records instead of {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        if g == w:
            continue
        if g[0] != w[0]:
            out.append(f"#{i}: {g[0]} instead of {w[0]}")
        else:
            gd, wd = dict(g[1]), dict(w[1])
            fields = [k for k in wd if gd.get(k) != wd.get(k)]
            out.append(f"#{i} {g[0]}: " + ", ".join(
                f"{k}={_short(gd.get(k))} (want {_short(wd.get(k))})" for k in fields))
        if len(out) >= limit:
            break
    return "\n".join(out)


def _short(v, n: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= n else s[:n] + f"...({len(v) if hasattr(v, '__len__') else '?'})"


# ------------------------------------------------------------------- Parquet rows as jsonl docs

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def plain(v):
    return json.loads(json.dumps(v))


def _us(v) -> int:
    return (v - _EPOCH) // dt.timedelta(microseconds=1)


def normalise_row(cls, row: dict) -> dict:
    types = {name: t for _a, name, t, _j in fields_of(cls)}
    out = {}
    for k, v in row.items():
        t = types.get(k)
        if v is None:
            pass
        elif t == "ts":
            v = iso(_us(v))
        elif t == "headers":
            v = [[h["name"], h["value"]] for h in v]
        elif t == "json":
            v = json.loads(v)
        elif t == "bytes":
            v = base64.b64encode(v).decode("ascii")
        elif k in ("date", "sensor"):
            v = str(v)                        # DuckDB may read date=YYYY-MM-DD as a DATE
        elif t == "strlist":
            v = list(v)
        out[k] = v
    return plain(out)


def canon(d: dict) -> str:
    return json.dumps(d, sort_keys=True)


C_TESTS = Path(__file__).resolve().parent / "c"


def make_c(target: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`make TARGET` in tests/c (the C self-tests, built with sanitizers); skips without a
    compiler."""
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.skip("make or gcc not installed")
    return subprocess.run(["make", "-s", "-C", str(C_TESTS), target], capture_output=True,
                          text=True, timeout=timeout)


def assert_selftest_passed(p: subprocess.CompletedProcess) -> None:
    """A C self-test ran to its summary line with no failure."""
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert re.search(r"^# selftest: \d+ checks, 0 failures$", p.stdout, re.M), p.stdout[-3000:]
