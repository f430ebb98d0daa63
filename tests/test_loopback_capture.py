"""A real capture made by the test: tcpdump on the loopback interface while a local HTTP/1.1
server (keep-alive) answers two clients, one of them running in parallel.

Everything the server wrote on each connection and everything each client sent is recorded
(the server's wfile is teed; the client's HTTPConnection.send is), so the expectations come
from the two ends of the sockets, not from c2scribe or from another decoder:
* every transaction, in order, on the right connection: method, URI, status, and the sha256
  of the decoded bodies (Content-Length text, chunked, gzip, gzip+chunked, POST echo);
* every connection: handshake seen, ended by FIN, and the reassembled bytes of each direction
  equal to what was sent.
Loopback frames carry offloaded TCP checksums (the kernel never fills them in): c2scribe must
decode them anyway; a second test rewrites every TCP checksum to a wrong value on purpose.

Needs tcpdump and the right to capture (root or CAP_NET_RAW): skipped, with the reason,
otherwise.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import http.server
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from helpers import (Connection, HttpTransaction, c2_records, comparable, of_type, read_pcap,
                     write_pcap)

pytestmark = pytest.mark.loopback

TEXT = ("c2scribe loopback test: plain text body with Content-Length.\n" * 40).encode()
CHUNKS = [b"first chunk\n", b"x" * 3000 + b"\n", b"last chunk, then the zero-size one\n"]
GZ_TEXT = ("compressed with gzip, sent with Content-Encoding: gzip\n" * 300).encode()
GZ_CHUNKED_TEXT = ("gzip and chunked together\n" * 500).encode()
BIG_POST = bytes(range(256)) * 400      # 100 KiB, several segments even on lo


class _Tee:
    """A write-only file that writes through and keeps a copy."""

    def __init__(self, f, sink: list):
        self._f, self._sink = f, sink

    def write(self, b):
        self._sink.append(bytes(b))
        return self._f.write(b)

    def flush(self):
        return self._f.flush()

    def __getattr__(self, name):
        return getattr(self._f, name)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    written: dict = {}           # client port -> [bytes written by the server]

    def setup(self):
        super().setup()
        self.wfile = _Tee(self.wfile, self.written.setdefault(self.client_address[1], []))

    def log_message(self, *args):   # quiet
        pass

    def _send(self, status: int, body: bytes, ctype="text/plain", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunked(self, parts, extra=()):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for p in parts:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(p), p))
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self):
        if self.path == "/text":
            self._send(200, TEXT)
        elif self.path == "/chunked":
            self._chunked(CHUNKS)
        elif self.path == "/gzip":
            self._send(200, gzip.compress(GZ_TEXT, mtime=0),
                       extra=[("Content-Encoding", "gzip")])
        elif self.path == "/gzip-chunked":
            z = gzip.compress(GZ_CHUNKED_TEXT, mtime=0)
            self._chunked([z[i:i + 500] for i in range(0, len(z), 500)],
                          extra=[("Content-Encoding", "gzip")])
        else:
            self._send(404, b"not here\n")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(n)
        self._send(201 if self.path == "/echo" else 404, data, "application/octet-stream")


class RecordingConnection(http.client.HTTPConnection):
    """HTTPConnection that keeps every byte it sends."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sent: list[bytes] = []

    def send(self, data):
        self.sent.append(bytes(data))
        return super().send(data)


# (method, path, request body, expected status, expected decoded response body)
PLAN_A = [("GET", "/text", None, 200, TEXT),
          ("GET", "/chunked", None, 200, b"".join(CHUNKS)),
          ("GET", "/gzip", None, 200, GZ_TEXT),
          ("POST", "/echo", b"name=alice&cmd=whoami\n", 201, b"name=alice&cmd=whoami\n"),
          ("GET", "/gzip-chunked", None, 200, GZ_CHUNKED_TEXT),
          ("GET", "/missing?x=1", None, 404, b"not here\n")]
PLAN_B = [("POST", "/echo", BIG_POST, 201, BIG_POST),
          ("GET", "/gzip", None, 200, GZ_TEXT),
          ("GET", "/text", None, 200, TEXT)]


def _run_client(port, plan, out: dict, barrier: threading.Barrier):
    conn = RecordingConnection("127.0.0.1", port, timeout=10)
    conn.connect()
    cport = conn.sock.getsockname()[1]
    barrier.wait(timeout=10)           # both connections open before any request: parallel
    got = []
    for method, path, body, _st, _want in plan:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        got.append((r.status, data, r.getheader("Content-Encoding")))
    conn.close()
    out[cport] = (conn.sent, got)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_tcpdump(path, port):
    exe = shutil.which("tcpdump")
    if exe is None:
        pytest.skip("tcpdump is not installed")
    # --immediate-mode: packets reach tcpdump as they come (not in blocks on a timer), and -U
    # writes each one to the file at once, so a file that stopped growing is complete; -B:
    # a 64 MiB ring, loopback segments are up to 64 KiB and a small ring drops some
    p = subprocess.Popen([exe, "-i", "lo", "--immediate-mode", "-U", "-s", "0", "-n", "-B", "65536",
                          "-w", str(path), f"tcp port {port}"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    # tcpdump says "listening on lo, ..." once the capture runs
    deadline = time.monotonic() + 10
    line = b""
    while time.monotonic() < deadline:
        if p.poll() is not None:
            err = p.stderr.read().decode(errors="replace")
            if any(s in err.lower() for s in ("permission", "not permitted",
                                              "you don't have", "no such device")):
                pytest.skip(f"cannot capture on lo: {err.strip()}")
            raise RuntimeError(f"tcpdump exited: {err}")
        line = p.stderr.readline()
        if b"listening on" in line:
            return p
    p.kill()
    raise RuntimeError(f"tcpdump did not start: {line!r}")


def _stop_tcpdump(p, path):
    """Wait until the file stops growing (-U writes each packet as it comes), then SIGINT."""
    last, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        size = os.path.getsize(path) if os.path.exists(path) else 0
        if size != last:
            last, stable_since = size, time.monotonic()
        elif time.monotonic() - stable_since > 0.5:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    summary = p.stderr.read().decode(errors="replace")
    counts = {m.group(2): int(m.group(1))
              for m in re.finditer(r"(\d+) packets? (captured|received by filter|dropped by kernel)",
                                   summary)}
    assert counts.get("dropped by kernel", 0) == 0, summary
    # (on lo "received by filter" counts each packet twice, outgoing and incoming; libpcap
    # keeps one copy, so it is not compared with "captured")
    assert counts.get("captured", 0) > 0, summary


@pytest.fixture(scope="module")
def loopback_capture(tmp_path_factory):
    # whether this process may capture (root or CAP_NET_RAW) is for tcpdump to say: a refusal
    # skips the tests with tcpdump's message (see _start_tcpdump)
    d = tmp_path_factory.mktemp("loopback")
    pcap = d / "lo.pcap"
    port = _free_port()
    Handler.written = {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    st = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                          daemon=True)
    st.start()
    tcpdump = None
    try:
        tcpdump = _start_tcpdump(pcap, port)
        results: dict = {}
        barrier = threading.Barrier(2)
        ta = threading.Thread(target=_run_client, args=(port, PLAN_A, results, barrier))
        tb = threading.Thread(target=_run_client, args=(port, PLAN_B, results, barrier))
        ta.start()
        tb.start()
        ta.join(30)
        tb.join(30)
        assert len(results) == 2, "a client failed"
        # let the server see the clients' FIN and close its side
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and threading.active_count() > 2:
            time.sleep(0.05)
        _stop_tcpdump(tcpdump, pcap)
        tcpdump = None
    finally:
        if tcpdump is not None:
            tcpdump.kill()
            tcpdump.wait()
        server.shutdown()
        server.server_close()
    plans = {}
    ports = sorted(results)
    for cport in ports:
        sent, got = results[cport]
        plan = PLAN_A if len(got) == len(PLAN_A) else PLAN_B
        # the server's answers as the client decoded them must be what the plan says
        for (m, path, body, st_, want), (status, data, enc) in zip(plan, got):
            if enc == "gzip":            # http.client does not decode Content-Encoding
                data = gzip.decompress(data)
            assert status == st_ and data == want, (m, path)
        plans[cport] = dict(plan=plan, sent=b"".join(sent),
                            written=b"".join(Handler.written.get(cport, [])))
    return pcap, port, plans


def _check(recs, port, plans):
    conns = of_type(recs, Connection)
    txs = of_type(recs, HttpTransaction)
    assert len(conns) == 2, [(c.src_port, c.dst_port, c.history) for c in conns]
    for c in conns:
        assert c.dst_port == port and c.src_ip == "127.0.0.1" and c.dst_ip == "127.0.0.1"
        exp = plans[c.src_port]
        assert c.handshake is True and c.reassembled is True, c.history
        assert c.end_reason == "fin", (c.end_reason, c.history)
        assert c.c2s_data == exp["sent"], "client->server bytes differ from what the client sent"
        assert c.s2c_data == exp["written"], "server->client bytes differ from what the server wrote"
        assert c.c2s_bytes == len(exp["sent"]) and c.s2c_bytes == len(exp["written"])
        assert c.c2s_sha256 == hashlib.sha256(exp["sent"]).hexdigest()
        assert c.s2c_sha256 == hashlib.sha256(exp["written"]).hexdigest()
        assert c.http_transactions == len(exp["plan"])
        mine = sorted((t for t in txs if t.conn_id == c.conn_id), key=lambda t: t.index)
        assert [t.index for t in mine] == list(range(1, len(exp["plan"]) + 1))
        for t, (method, path, body, status, want) in zip(mine, exp["plan"]):
            where = f"{c.src_port} tx {t.index} {method} {path}"
            assert (t.method, t.uri, t.status_code) == (method, path, status), where
            assert (t.src_port, t.dst_port) == (c.src_port, port), where
            assert t.state == "complete", (where, t.state, t.flags)
            assert t.hostname == "127.0.0.1" and t.url_port == port, (where, t.hostname)
            assert t.response_body_sha256 == hashlib.sha256(want).hexdigest(), where
            assert t.response_body_bytes == len(want), where
            assert t.response_body == want, where
            if body is not None:
                assert t.request_body_sha256 == hashlib.sha256(body).hexdigest(), where
                assert t.request_body == body, where
            else:
                assert not t.request_body_bytes, where
    assert len(txs) == sum(len(p["plan"]) for p in plans.values())


def test_loopback_capture_decodes_every_transaction(loopback_capture):
    pcap, port, plans = loopback_capture
    recs = c2_records(pcap, body_keep=1 << 20, stream_keep=1 << 24)
    _check(recs, port, plans)


def _tcp_checksum_ok(frame: bytes) -> bool | None:
    """Verify the TCP checksum of an Ethernet/IPv4 frame (None when not IPv4/TCP)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    ihl = (frame[14] & 15) * 4
    total = struct.unpack("!H", frame[16:18])[0]
    seg = frame[14 + ihl:14 + total]
    pseudo = frame[26:34] + struct.pack("!BBH", 0, 6, len(seg))
    data = pseudo + seg + (b"\0" if len(seg) % 2 else b"")
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


def test_loopback_checksums_are_not_checked(loopback_capture, tmp_path):
    """Offloaded checksums are what a loopback capture has; and with every TCP checksum made
    wrong on purpose, c2scribe still gives the same records."""
    pcap, port, plans = loopback_capture
    ghdr, bo, recs = read_pcap(pcap)
    oks = [_tcp_checksum_ok(f) for _h, f in recs]
    print(f"loopback capture: {len(recs)} frames, {oks.count(False)} with a wrong TCP checksum "
          f"(offloaded), {oks.count(True)} right")
    broken = []
    for h, f in recs:
        if _tcp_checksum_ok(f) is not None:
            ihl = (f[14] & 15) * 4
            off = 14 + ihl + 16
            c = struct.unpack("!H", f[off:off + 2])[0] ^ 0x5A5A
            f = f[:off] + struct.pack("!H", c) + f[off + 2:]
            assert _tcp_checksum_ok(f) is False
        broken.append((h, f))
    bad = tmp_path / "bad-checksums.pcap"
    write_pcap(bad, ghdr, bo, broken)
    r_bad = c2_records(bad, body_keep=1 << 20, stream_keep=1 << 24)
    _check(r_bad, port, plans)
    r_ok = c2_records(pcap, body_keep=1 << 20, stream_keep=1 << 24)
    names = ("file_first", "file_last", "file", "conn_id", "tx_id")
    assert [comparable(r, names) for r in r_bad] == [comparable(r, names) for r in r_ok]
