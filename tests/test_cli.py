"""The command line end to end (subprocess), and Community ID against the communityid package.

* `c2scribe transcript --format jsonl`: one JSON object per line, every one with an
  event.dataset of c2scribe.{connection,http,warning,capture_error}; sha256 fields for the
  bodies of HTTP transactions and for both directions of reassembled connections, and they
  are the sha256 of the bytes (checked against --bodies output).
* text output never carries raw terminal controls (ESC, BEL, CSI 0x9b, other C0/C1
  controls) nor bidi overrides/isolates, even for a capture built to carry them in the URI,
  headers, status line, bodies and raw TCP streams, with invalid UTF-8 too; jsonl output of
  the same capture stays valid, one object per line.
* `c2scribe demo --dir TMP` exits 0 and prints transactions.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import unicodedata

import pytest

from helpers import (Connection, c2_records, capture, find_testdata, of_type)

DATASETS = {"c2scribe.connection", "c2scribe.http", "c2scribe.warning", "c2scribe.capture_error"}


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "c2scribe", *map(str, args)],
                          capture_output=True, timeout=timeout,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})


def _jsonl(stdout: bytes) -> list[dict]:
    text = stdout.decode("utf-8")           # strict: the output is UTF-8
    docs = []
    for i, line in enumerate(text.split("\n")):
        if not line:
            continue
        d = json.loads(line)
        assert isinstance(d, dict), f"line {i + 1} is not an object"
        docs.append(d)
    assert text.endswith("\n") or not text
    return docs


# --------------------------------------------------------------------------------------------
# a capture with hostile bytes, made here
# --------------------------------------------------------------------------------------------

HOSTILE_URI = (b"/x\x1b[2J\x1b]0;owned\x07/\xc2\x9b31m/\x9b1m/\xe2\x80\xaeevil/\xff\xfe/"
               b"\x08\x08?q=\x1b[5m&r=\xe2\x81\xa6iso\xe2\x81\xa9")
HOSTILE_BODY = (b"\x1b[2J\x1b[Hcleared\x07\n\xc2\x9b2Jc1\n\x9b2J raw csi\n\xe2\x80\xaebidi\n"
                b"\xff\xfe invalid\n\x00nul\rCR\x7fDEL\x1bP dcs \x1b\\\n")


def _hostile_capture(path) -> None:
    from c2scribe.samples import Conversation, _write_pcap
    req = (b"POST " + HOSTILE_URI + b" HTTP/1.1\r\nHost: evil\x1b[31m.example\r\n"
           b"User-Agent: \x1b]52;c;cHduZWQ=\x07Mozilla\r\n"
           b"X-\x1b[1mBold: \xe2\x80\xae\xe2\x81\xa6txt.exe\xff\r\n"
           b"Content-Length: " + str(len(HOSTILE_BODY)).encode() + b"\r\n\r\n" + HOSTILE_BODY)
    resp = (b"HTTP/1.1 200 O\x1b[8mK\x9b\r\nServer: \x1b[?1049h\r\nContent-Type: text/plain\r\n"
            b"X-Evil: \x9b6n\xc2\x85\r\nContent-Length: " + str(len(HOSTILE_BODY)).encode()
            + b"\r\n\r\n" + HOSTILE_BODY)
    web = Conversation("10.9.9.9", 50505, "10.8.8.8", 80, 1_700_000_000.0).handshake()
    web.send(0, req)
    web.send(1, resp)
    web.close()
    shell = Conversation("10.9.9.9", 50506, "10.8.8.8", 4444, 1_700_000_001.0).handshake()
    shell.send(1, b"\x1b]0;title\x07\x1b[6n\xe2\x80\xae$ \x9b0c")
    shell.send(0, b"id\x1b[A\r\n" + HOSTILE_BODY)
    shell.close()
    _write_pcap(str(path), web.packets + shell.packets)


def _bad_chars(text: str) -> list[str]:
    """Characters a terminal would act on: C0 except \\n and \\t, DEL, C1, bidi controls."""
    bad = []
    for ch in text:
        o = ord(ch)
        if ch in "\n\t":
            continue
        if o < 0x20 or o == 0x7F or 0x80 <= o <= 0x9F:
            bad.append(ch)
        elif unicodedata.bidirectional(ch) in ("LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI",
                                               "FSI", "PDI") or ch in "\u200e\u200f\u061c":
            bad.append(ch)
    return bad


def test_text_output_is_inert_for_hostile_input(tmp_path):
    cap = tmp_path / "hostile.pcap"
    _hostile_capture(cap)
    p = _cli("transcript", cap)
    assert p.returncode == 0, p.stderr
    raw = p.stdout
    for b in (b"\x1b", b"\x07", b"\x9b", b"\xc2\x9b", b"\xe2\x80\xae", b"\xe2\x81\xa6", b"\x00"):
        assert b not in raw, f"raw {b!r} in text output"
    text = raw.decode("utf-8")
    bad = _bad_chars(text)
    assert not bad, f"control characters in text output: {sorted(set(map(repr, bad)))}"
    # the hostile things are still shown, escaped: the analyst sees them
    assert "owned" in text and "evil" in text and "cleared" in text and "title" in text
    assert "POST" in text
    # stderr (summary, warnings) is inert too
    assert not _bad_chars(p.stderr.decode("utf-8")), p.stderr


@pytest.mark.parametrize("extra", [(), ("--bodies",)])
def test_jsonl_of_hostile_input_is_valid(tmp_path, extra):
    cap = tmp_path / "hostile.pcap"
    _hostile_capture(cap)
    p = _cli("transcript", "--format", "jsonl", *extra, cap)
    assert p.returncode == 0, p.stderr
    assert b"\x1b" not in p.stdout and b"\x9b" not in p.stdout  # JSON escapes them
    docs = _jsonl(p.stdout)
    http = [d for d in docs if d["event.dataset"] == "c2scribe.http"]
    assert len(http) == 1
    want_uri = HOSTILE_URI.decode("utf-8", "replace")
    got_uri = http[0]["url.original"]
    # the URI is kept (escaped by JSON), printable parts intact
    assert "owned" in got_uri and "evil" in got_uri
    assert got_uri.startswith("/x\x1b[2J") or got_uri == want_uri or "\\x1b" in got_uri
    if extra:
        for k in ("c2scribe.http.request.body.content", "c2scribe.http.response.body.content"):
            assert base64.b64decode(http[0][k]) == HOSTILE_BODY, k


# --------------------------------------------------------------------------------------------
# jsonl on real captures
# --------------------------------------------------------------------------------------------

REAL = ["zeek/Traces/http/bro.org.pcap", "zeek/Traces/http/get-gzip.pcap",
        "corelight-zeek-caldera-detector/testing/Traces/ragdoll.pcap",
        "keithjjones-zeek-njrat-detector/testing/Traces/njrat.pcap",
        "arkime/http-100-continue.pcap"]   # the last one is IPv6: a warning record


def _real():
    if find_testdata() is None:
        pytest.skip("shared testdata missing")
    return [capture(c) for c in REAL]


def test_jsonl_contract_on_real_captures():
    caps = _real()
    p = _cli("transcript", "--format", "jsonl", *caps)
    assert p.returncode == 0, p.stderr
    docs = _jsonl(p.stdout)
    seen = {d.get("event.dataset") for d in docs}
    assert seen <= DATASETS, seen - DATASETS
    assert {"c2scribe.connection", "c2scribe.http", "c2scribe.warning"} <= seen
    for d in docs:
        assert d.get("@timestamp") is not None or d["event.dataset"] == "c2scribe.warning", d
    http = [d for d in docs if d["event.dataset"] == "c2scribe.http"]
    conns = [d for d in docs if d["event.dataset"] == "c2scribe.connection"]
    assert len(http) >= 20 and len(conns) >= 20
    for d in http:
        for k in ("c2scribe.http.request.body.sha256", "c2scribe.http.response.body.sha256"):
            assert k in d, k
        # a body has a digest unless the capture lost some of it (then it says how much)
        for side in ("request", "response"):
            if d.get(f"http.{side}.body.bytes"):
                sha = d[f"c2scribe.http.{side}.body.sha256"]
                if d[f"c2scribe.http.{side}.missing_bytes"]:
                    assert sha is None
                else:
                    assert len(sha) == 64
    for d in conns:
        for k in ("c2scribe.tcp.client_to_server.sha256", "c2scribe.tcp.server_to_client.sha256"):
            assert k in d, k
        if d.get("c2scribe.connection.reassembled"):
            for side in ("client_to_server", "server_to_client"):
                if d[f"c2scribe.tcp.{side}.stream_bytes"]:
                    sha = d[f"c2scribe.tcp.{side}.sha256"]
                    if d[f"c2scribe.tcp.{side}.missing_bytes"]:
                        assert sha is None            # a direction with a hole: no digest
                    else:
                        assert len(sha) == 64
    # every transaction belongs to a connection of the output
    ids = {d["c2scribe.connection.id"] for d in conns}
    assert {d["c2scribe.connection.id"] for d in http} <= ids


def test_jsonl_sha256_fields_hash_the_bytes():
    """With --bodies the kept bytes come along (base64): their sha256 is the field's."""
    caps = _real()[:2]
    p = _cli("transcript", "--format", "jsonl", "--bodies", "--stream-keep", "64m",
             "--body-keep", "64m", *caps)
    assert p.returncode == 0, p.stderr
    n = 0
    for d in _jsonl(p.stdout):
        pairs = []
        if d["event.dataset"] == "c2scribe.http":
            pairs = [("c2scribe.http.request.body.content", "c2scribe.http.request.body.sha256"),
                     ("c2scribe.http.response.body.content", "c2scribe.http.response.body.sha256")]
        elif d["event.dataset"] == "c2scribe.connection":
            pairs = [("c2scribe.tcp.client_to_server.content", "c2scribe.tcp.client_to_server.sha256"),
                     ("c2scribe.tcp.server_to_client.content", "c2scribe.tcp.server_to_client.sha256")]
        for content, digest in pairs:
            if d.get(content) and d.get(digest):
                assert hashlib.sha256(base64.b64decode(d[content])).hexdigest() == d[digest]
                n += 1
    assert n > 20


def test_demo(tmp_path):
    p = _cli("demo", "--dir", tmp_path / "samples")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode("utf-8")
    assert "GET /index.html" in out and "POST /beacon" in out
    assert not _bad_chars(out)
    assert any((tmp_path / "samples").iterdir())
    # then the pipeline over the same captures, its Parquet read back
    assert (tmp_path / "samples" / "run-output" / "http").is_dir()
    assert "Parquet datasets" in out and "http" in out.split("Parquet datasets")[1]
    assert "c2scribe run: 1 unit(s), 5 file(s): 5 ok" in p.stderr.decode()
    assert "INFO:" not in p.stderr.decode()                  # Beam's chatter filtered


def test_demo_jsonl(tmp_path):
    p = _cli("demo", "--dir", tmp_path / "samples", "--format", "jsonl")
    assert p.returncode == 0, p.stderr
    docs = _jsonl(p.stdout)
    assert {d["event.dataset"] for d in docs} <= DATASETS
    assert sum(d["event.dataset"] == "c2scribe.http" for d in docs) >= 5


# --------------------------------------------------------------------------------------------
# Community ID
# --------------------------------------------------------------------------------------------

COMMUNITY = ["zeek/Traces/http/bro.org.pcap",
             "corelight-zeek-agenttesla-detector/testing/Traces/db9f075c-7879-4957-923a-f79fac957a2d.pcap",
             "keithjjones-zeek-njrat-detector/testing/Traces/njrat.pcap",
             "arkime/http-100-continue.pcap",        # IPv6
             "arkime/arkime_synthetic.pcap"]         # IPv4 and IPv6, many ports


def test_community_id_matches_the_communityid_package():
    communityid = pytest.importorskip("communityid")
    if find_testdata() is None:
        pytest.skip("shared testdata missing")
    cid = communityid.CommunityID(seed=0)
    n = v6 = 0
    for cap in COMMUNITY:
        for c in of_type(c2_records(capture(cap), body_keep=0, stream_keep=0), Connection):
            want = cid.calc(communityid.FlowTuple.make_tcp(c.src_ip, c.dst_ip, c.src_port,
                                                           c.dst_port))
            assert c.community_id == want, (cap, c.src_ip, c.src_port, c.dst_ip, c.dst_port)
            # direction-free: the reverse tuple hashes alike
            assert want == cid.calc(communityid.FlowTuple.make_tcp(c.dst_ip, c.src_ip,
                                                                   c.dst_port, c.src_port))
            n += 1
            v6 += c.ip_version == 6
    assert n > 50 and v6 >= 1


def test_terminal_and_report_hide_the_same_invisible_characters():
    """Every character the HTML report refuses to show as itself is escaped in the terminal
    transcript too (tags, soft hyphen, variation selectors, fillers, ... not only bidi)."""
    from c2scribe.render.safe import safe_line
    from c2scribe.report.escape import esc
    for ch in "\u00ad\u034f\u115f\u180e\u2064\u3164\ufe0f\uffa0\ufffe\U000e0041\U0001d173" \
              "\u202e\u2066\u200b\x1b\x9b":
        shown = safe_line(f"a{ch}b")
        assert ch not in shown and shown.startswith("a\\") and shown.endswith("b"), repr(ch)
        assert ch not in esc(f"a{ch}b"), repr(ch)
    assert safe_line("\U000e0041") == "\\U000e0041"
