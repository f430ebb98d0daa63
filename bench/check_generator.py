#!/usr/bin/env python3
"""Self-check of bench/gen_captures.py: are the synthetic captures what the manifest says?

Generates small captures of both profiles (20 MB by default) and checks them:

1. an independent pure-Python decoder (pcap -> IPv4/TCP reassembly -> HTTP/1.1 with
   Content-Length, chunked and gzip) finds exactly the manifest's transactions, with the same
   method, URI, Host, status and decoded body lengths and SHA-256; every IPv4 header checksum
   is right and no TCP stream has a gap, overlap or missing handshake/teardown;
2. tshark finds as many HTTP requests and responses as the manifest has transactions, and its
   expert info shows no malformed packet, no warning or error, no "previous segment not captured";
3. tcpflow writes one flow per direction of every connection;
4. --split-mb gives several files that mergecap joins back into the unsplit capture;
5. --drop-rate leaves out exactly the dropped data packets (and tshark notices the gaps);
6. the same seed gives the same bytes; .gz output decompresses to the same capture;
7. --tcp-checksum gives TCP checksums that tshark and the decoder both accept.

Usage: python bench/check_generator.py [--size 20M] [--seed 3] [--keep DIR] [--no-tools]
Exit status 0 when every check passes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_captures  # noqa: E402

FAILURES = []


def check(ok: bool, what: str, detail: str = ""):
    print(f"  [{'PASS' if ok else 'FAIL'}] {what}{'  (' + detail + ')' if detail else ''}", flush=True)
    if not ok:
        FAILURES.append(what)
    return ok


# --------------------------------------------------------------------------- pcap + TCP

def read_pcap(path: str):
    """Yield (ts_sec, ts_usec, frame bytes) from a classic microsecond pcap (optionally .gz)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", data, 0)
    if magic != 0xA1B2C3D4 or linktype != 1:
        raise ValueError(f"{path}: not a little-endian microsecond Ethernet pcap")
    off, n = 24, len(data)
    unpack = struct.Struct("<IIII").unpack_from
    while off < n:
        sec, usec, caplen, wirelen = unpack(data, off)
        off += 16
        yield sec, usec, data[off:off + caplen]
        off += caplen


def ones_complement_ok(buf: bytes) -> bool:
    if len(buf) & 1:
        buf += b"\0"
    s = sum(struct.unpack(f"!{len(buf) // 2}H", buf))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


class Stream:
    __slots__ = ("client", "server", "data", "next", "syn", "synack", "fin", "problems", "order")

    def __init__(self, client, server, order):
        self.client, self.server, self.order = client, server, order
        self.data = {0: bytearray(), 1: bytearray()}      # 0 client->server, 1 server->client
        self.next = {0: None, 1: None}
        self.syn = self.synack = False
        self.fin = {0: False, 1: False}
        self.problems = []


def reassemble(paths, tcp_checksum=False):
    """Strict in-order TCP reassembly: returns (streams in order of first SYN, stats)."""
    streams = {}
    stats = dict(packets=0, bytes=24 * len(paths), bad_ip_checksum=0, bad_tcp_checksum=0,
                 data_packets=0, last_ts=(0, 0), time_order=True)
    last = (0, 0)
    for path in paths:
        for sec, usec, fr in read_pcap(path):
            stats["packets"] += 1
            stats["bytes"] += 16 + len(fr)
            if (sec, usec) < last:
                stats["time_order"] = False
            last = (sec, usec)
            if fr[12:14] != b"\x08\x00":
                continue
            ihl = (fr[14] & 15) * 4
            ip = fr[14:14 + ihl]
            if not ones_complement_ok(ip):
                stats["bad_ip_checksum"] += 1
            tot = struct.unpack_from("!H", fr, 16)[0]
            src, dst = fr[26:30], fr[30:34]
            t = 14 + ihl
            sport, dport, seq, ack, offflags = struct.unpack_from("!HHIIH", fr, t)
            doff = (offflags >> 12) * 4
            flags = offflags & 0x3F
            payload = fr[t + doff:14 + tot]
            if tcp_checksum:
                seg = fr[t:14 + tot]
                pseudo = src + dst + struct.pack("!BBH", 0, 6, len(seg))
                if not ones_complement_ok(pseudo + seg):
                    stats["bad_tcp_checksum"] += 1
            a, b = (src, sport), (dst, dport)
            key = (a, b) if a < b else (b, a)
            st = streams.get(key)
            if flags & 0x02 and not flags & 0x10:          # SYN
                if st is not None:
                    st.problems.append("4-tuple reused")
                st = streams[key] = Stream(a, b, len(streams))
                st.syn = True
                st.next[0] = (seq + 1) & 0xFFFFFFFF
                continue
            if st is None:
                continue
            d = 0 if (src, sport) == st.client else 1
            if flags & 0x02:                                  # SYN-ACK
                st.synack = True
                st.next[1] = (seq + 1) & 0xFFFFFFFF
                continue
            if payload:
                stats["data_packets"] += 1
                if seq != st.next[d]:
                    st.problems.append(f"dir {d}: seq {seq} != expected {st.next[d]}")
                    st.next[d] = seq
                st.data[d] += payload
                st.next[d] = (st.next[d] + len(payload)) & 0xFFFFFFFF
            if flags & 0x01:
                if seq != st.next[d]:
                    st.problems.append(f"dir {d}: FIN seq {seq} != expected {st.next[d]}")
                st.fin[d] = True
                st.next[d] = (seq + len(payload) + 1) & 0xFFFFFFFF
    stats["last_ts"] = last
    return sorted(streams.values(), key=lambda s: s.order), stats


# --------------------------------------------------------------------------- HTTP/1.1

def _headers(block: bytes):
    lines = block.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return lines[0], fields


def _body(buf: bytes, pos: int, fields: dict, has_body: bool):
    """Return (decoded body, position after the message)."""
    if not has_body:
        return b"", pos
    if fields.get("transfer-encoding", "").lower() == "chunked":
        out = []
        while True:
            eol = buf.index(b"\r\n", pos)
            size = int(buf[pos:eol].split(b";")[0], 16)
            pos = eol + 2
            if size == 0:
                end = buf.index(b"\r\n", pos)                 # no trailers are generated
                pos = end + 2
                break
            out.append(buf[pos:pos + size])
            if buf[pos + size:pos + size + 2] != b"\r\n":
                raise ValueError("chunk not followed by CRLF")
            pos += size + 2
        body = b"".join(out)
    else:
        n = int(fields.get("content-length", "0"))
        body = buf[pos:pos + n]
        if len(body) != n:
            raise ValueError("body shorter than Content-Length")
        pos += n
    if fields.get("content-encoding", "").lower() == "gzip":
        body = zlib.decompress(body, 31)
    return body, pos


def parse_messages(buf: bytes, requests: bool):
    msgs = []
    pos = 0
    while pos < len(buf):
        end = buf.index(b"\r\n\r\n", pos)
        start_line, fields = _headers(buf[pos:end])
        pos = end + 4
        if requests:
            method, uri, version = start_line.split(" ")
            body, pos = _body(buf, pos, fields, "content-length" in fields or
                              "transfer-encoding" in fields)
            msgs.append(dict(method=method, uri=uri, host=fields.get("host"), body=body))
        else:
            status = int(start_line.split(" ")[1])
            body, pos = _body(buf, pos, fields, status not in (204, 304) and status >= 200)
            msgs.append(dict(status=status, body=body))
    return msgs


def decoded_transactions(streams):
    """Per connection (client ip, port, server ip, port): list of decoded transactions."""
    out = {}
    for st in streams:
        reqs = parse_messages(bytes(st.data[0]), True)
        resps = parse_messages(bytes(st.data[1]), False)
        key = (".".join(map(str, st.client[0])), st.client[1], ".".join(map(str, st.server[0])), st.server[1])
        txs = []
        for i in range(max(len(reqs), len(resps))):
            q = reqs[i] if i < len(reqs) else {}
            r = resps[i] if i < len(resps) else {}
            txs.append(dict(method=q.get("method"), uri=q.get("uri"), host=q.get("host"),
                            status=r.get("status"),
                            request_body_len=len(q.get("body", b"")),
                            request_body_sha256=hashlib.sha256(q.get("body", b"")).hexdigest(),
                            response_body_len=len(r.get("body", b"")),
                            response_body_sha256=hashlib.sha256(r.get("body", b"")).hexdigest()))
        out[key] = txs
    return out


FIELDS = ("method", "uri", "host", "status", "request_body_len", "request_body_sha256",
          "response_body_len", "response_body_sha256")


def check_against_manifest(paths, manifest: dict, tcp_checksum=False):
    streams, stats = reassemble(paths, tcp_checksum)
    check(stats["packets"] == manifest["packets"], "decoder: packet count = manifest",
          f"{stats['packets']} vs {manifest['packets']}")
    check(stats["bytes"] == manifest["bytes"] + 24 * (len(paths) - 1), "decoder: byte count = manifest",
          f"{stats['bytes']} vs {manifest['bytes']}")
    check(stats["time_order"], "timestamps never go back")
    check(stats["bad_ip_checksum"] == 0, "every IPv4 header checksum is right",
          f"{stats['bad_ip_checksum']} bad")
    if tcp_checksum:
        check(stats["bad_tcp_checksum"] == 0, "every TCP checksum is right",
              f"{stats['bad_tcp_checksum']} bad")
    check(len(streams) == manifest["connections"], "decoder: connections = manifest",
          f"{len(streams)} vs {manifest['connections']}")
    bad = [s for s in streams if s.problems or not (s.syn and s.synack and s.fin[0] and s.fin[1])]
    check(not bad, "every stream has a handshake, both FINs and no gap or overlap",
          f"{len(bad)} bad" + (f", first: {bad[0].problems[:2]}" if bad else ""))
    try:
        decoded = decoded_transactions(streams)
    except Exception as e:        # noqa: BLE001 - reported as a failed check
        check(False, "decoder parses every HTTP message", repr(e))
        return
    expected = {}
    for tx in manifest["transaction_list"]:
        key = (tx["client"][0], tx["client"][1], tx["server"][0], tx["server"][1])
        expected.setdefault(key, []).append({k: tx[k] for k in FIELDS})
    n_dec = sum(len(v) for v in decoded.values())
    check(n_dec == manifest["transactions"], "decoder: transactions = manifest",
          f"{n_dec} vs {manifest['transactions']}")
    mismatches = [k for k in set(expected) | set(decoded) if expected.get(k) != decoded.get(k)]
    detail = f"{len(mismatches)} connections differ"
    if mismatches:
        k = mismatches[0]
        detail += f"; e.g. {k}: manifest {expected.get(k, [])[:1]} decoded {decoded.get(k, [])[:1]}"
    check(not mismatches, "decoder: every transaction's method/URI/Host/status/body length+sha256 match",
          detail)


# --------------------------------------------------------------------------- external tools

def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def tshark_count(path: str, display_filter: str) -> int:
    r = run(["tshark", "-n", "-r", path, "-o", "tcp.check_checksum:FALSE", "-Y", display_filter])
    return len(r.stdout.splitlines())


def tshark_expert(path: str, check_checksum=False) -> str:
    r = run(["tshark", "-n", "-r", path, "-o", f"tcp.check_checksum:{'TRUE' if check_checksum else 'FALSE'}",
             "-q", "-z", "expert"])
    return r.stdout


def expert_problems(text: str):
    """Lines of tshark's expert summary that are warnings, errors or malformed-group entries."""
    bad = []
    section = ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith(("Errors (", "Warns (", "Warnings (", "Notes (", "Chats (", "Comments (")):
            section = s.split(" ")[0]
            continue
        if not s or s.startswith(("=", "Frequency")):
            continue
        if section in ("Errors", "Warns", "Warnings") or "Malformed" in s or "not captured" in s:
            bad.append(s)
    return bad


def tools_checks(path: str, manifest: dict, tmp: str):
    n = manifest["transactions"]
    nreq = tshark_count(path, "http.request")
    check(nreq == n, "tshark -Y http.request finds every transaction", f"{nreq} vs {n}")
    nresp = tshark_count(path, "http.response")
    check(nresp == n, "tshark -Y http.response finds every transaction", f"{nresp} vs {n}")
    bad = expert_problems(tshark_expert(path))
    check(not bad, "tshark expert: no malformed packet, warning, error or missing segment",
          "; ".join(bad[:3]))
    out = os.path.join(tmp, "tcpflow-out")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    r = run(["tcpflow", "-r", path, "-o", out])
    flows = [f for f in os.listdir(out) if f != "report.xml"]
    pairs = set()
    for f in flows:
        a, _, b = f.partition("-")
        pairs.add(tuple(sorted((a, b[:21]))))
    conns = manifest["connections"]
    check(r.returncode == 0 and len(flows) == 2 * conns and len(pairs) == conns,
          "tcpflow: one flow per direction of every connection",
          f"{len(flows)} flow files, {len(pairs)} connections vs {conns}")
    shutil.rmtree(out, ignore_errors=True)


def records_digest(paths) -> tuple:
    h = hashlib.sha256()
    n = 0
    for path in paths:
        with open(path, "rb") as f:
            f.seek(24)
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                h.update(b)
    for path in paths:
        n += sum(1 for _ in read_pcap(path))
    return n, h.hexdigest()


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=gen_captures.parse_size, default=gen_captures.parse_size("20M"))
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--keep", help="write the captures here and keep them")
    ap.add_argument("--no-tools", action="store_true", help="skip the tshark/tcpflow/mergecap checks")
    a = ap.parse_args(argv)
    tmp = a.keep or tempfile.mkdtemp(prefix="c2scribe-gencheck-")
    os.makedirs(tmp, exist_ok=True)
    tools = not a.no_tools
    for tool in ("tshark", "tcpflow", "mergecap"):
        if tools and not shutil.which(tool):
            print(f"{tool} not found: use --no-tools to skip the tool checks", file=sys.stderr)
            return 2
    try:
        for profile in ("small", "large"):
            print(f"== {profile} profile, {a.size / 1e6:.0f} MB, seed {a.seed}")
            path = os.path.join(tmp, f"{profile}.pcap")
            man = gen_captures.generate(profile, a.size, path, seed=a.seed, manifest_full=True)
            print(f"  generated {man['bytes'] / 1e6:.1f} MB: {man['packets']} packets, "
                  f"{man['connections']} connections, {man['transactions']} transactions, "
                  f"{man['generation_mb_per_s']} MB/s")
            with open(gen_captures.manifest_path(path)) as f:
                full = json.load(f)
            check(abs(man["bytes"] - a.size) < max(0.05 * a.size, 2e6), "size is about --size",
                  f"{man['bytes']} vs {a.size}")
            check_against_manifest([path], full)
            if tools:
                tools_checks(path, man, tmp)

            # Determinism and gzip output.
            again = os.path.join(tmp, f"{profile}-again.pcap.gz")
            gen_captures.generate(profile, a.size, again, seed=a.seed)
            with open(path, "rb") as f1, gzip.open(again, "rb") as f2:
                same = hashlib.sha256(f1.read()).digest() == hashlib.sha256(f2.read()).digest()
            check(same, "same seed gives the same bytes; .gz decompresses to the same capture")
            os.unlink(again)
            os.unlink(gen_captures.manifest_path(again))

            # Rotation.
            split_mb = max(1.0, min(10.0, a.size / 4e6))
            base = os.path.join(tmp, f"{profile}-split.pcap")
            sman = gen_captures.generate(profile, a.size, base, seed=a.seed, split_mb=split_mb)
            files = [f["path"] for f in sman["files"]]
            check(len(files) >= 3 and all(os.path.exists(p) for p in files),
                  f"--split-mb {split_mb:g} writes several files", f"{len(files)} files")
            n_full, d_full = records_digest([path])
            n_split, d_split = records_digest(files)
            check((n_split, d_split) == (n_full, d_full) and sman["packets"] == n_full,
                  "the rotation holds exactly the unsplit capture's packets", f"{n_split} vs {n_full}")
            if tools:
                merged = os.path.join(tmp, "merged.pcap")
                r = run(["mergecap", "-F", "pcap", "-w", merged] + files)
                n_merged, d_merged = records_digest([merged]) if r.returncode == 0 else (-1, "")
                check(n_merged == n_full and d_merged == d_full,
                      "mergecap of the rotation = the unsplit capture", f"{n_merged} vs {n_full} packets")
                for p in [merged] + files:
                    os.unlink(p)
            else:
                for p in files:
                    os.unlink(p)

            # Lossy variant.
            lossy = os.path.join(tmp, f"{profile}-lossy.pcap")
            lman = gen_captures.generate(profile, a.size, lossy, seed=a.seed, drop_rate=0.01)
            check(lman["dropped_packets"] > 0 and lman["packets"] + lman["dropped_packets"] == man["packets"],
                  "--drop-rate 0.01 leaves out exactly the dropped data packets",
                  f"{lman['dropped_packets']} dropped of {lman['data_packets']} data packets")
            if tools:
                text = tshark_expert(lossy).lower()
                gaps = "previous segment" in text and "not captured" in text
                check(gaps, "tshark sees the gaps of the lossy variant")
            os.unlink(lossy)
            os.unlink(gen_captures.manifest_path(lossy))
            if not a.keep:
                os.unlink(path)

        print("== --tcp-checksum (small profile, 3 MB)")
        path = os.path.join(tmp, "csum.pcap")
        gen_captures.generate("small", 3_000_000, path, seed=a.seed, manifest_full=True, tcp_checksum=True)
        with open(gen_captures.manifest_path(path)) as f:
            full = json.load(f)
        check_against_manifest([path], full, tcp_checksum=True)
        if tools:
            text = tshark_expert(path, check_checksum=True)
            check("checksum" not in text.lower(), "tshark with tcp.check_checksum:TRUE finds no bad checksum")
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print("FAILED: " + "; ".join(FAILURES) if FAILURES else "all checks passed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
