"""The njrat decoder: the real njRAT capture against Zeek's transcript, and synthetic streams.

Oracle: keithjjones/zeek-njrat-detector, testing/Baseline/tests.trace/njrat.log: one line per
njRAT frame Zeek's Spicy analyzer decoded (is_orig T = victim -> server), the payload written
with Zeek's log escaping: non-printable bytes as \\xNN and a literal backslash doubled (\\\\).
(ORACLES.jsonl carries the same payload strings; its payload_len counts that doubled
backslash as two bytes, so the CAP screenshot frame's 914 is 913 real bytes: the wire's
length prefix says "913" too. This test reads the log itself and unescapes both forms.)
"""
from __future__ import annotations

import hashlib
import json
import re

import pytest

from helpers import find_testdata

from c2scribe.capture import run_chain
from c2scribe.decoders import DecoderRunner, load
from c2scribe.decoders.api import TO_IMPLANT, TO_OPERATOR, ConnectionHead, Context
from c2scribe.decoders.builtin.njrat import MAX_FRAME, NjRat
from c2scribe.engine import Engine
from c2scribe.schema import C2Message, Connection, DecodeError, StreamChunk

REL = "keithjjones-zeek-njrat-detector/testing"
SEP = b"|'|'|"
C2S, S2C = "client_to_server", "server_to_client"
VICTIM_IP = "10.1.2.3"


def zeek_unescape(s: str) -> bytes:
    """A Zeek ASCII log string field back to its bytes (\\xNN and \\\\ escapes)."""
    return re.sub(rb"\\(x[0-9a-fA-F]{2}|\\)",
                  lambda m: b"\\" if m.group(1) == b"\\" else bytes([int(m.group(1)[1:], 16)]),
                  s.encode("utf-8"))


def njrat_log(path) -> list[tuple[str, bytes]]:
    """(direction, payload bytes) of each njrat.log line, in log order."""
    cols, out = None, []
    for line in path.read_text("utf-8").splitlines():
        if line.startswith("#fields"):
            cols = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            row = dict(zip(cols, line.split("\t")))
            d = {"T": TO_OPERATOR, "F": TO_IMPLANT}[row["is_orig"]]
            out.append((d, b"" if row["payload"] == "(empty)" else zeek_unescape(row["payload"])))
    return out


def decode(records) -> list:
    runner = DecoderRunner([load("njrat")])
    out = []
    for rec in records:
        out += runner.feed(rec)
    return out + runner.finish()


# ------------------------------------------------------------------------------ real capture

@pytest.mark.shared
def test_real_capture_matches_zeek_transcript():
    td = find_testdata()
    if td is None:
        pytest.skip("shared testdata (../shared/testdata) not found: njRAT oracle not checked")
    pcap, log = td / REL / "Traces/njrat.pcap", td / REL / "Baseline/tests.trace/njrat.log"
    if not (pcap.is_file() and log.is_file()):
        pytest.skip(f"{REL} not in the shared testdata")
    want = njrat_log(log)
    assert len(want) == 5

    # ORACLES.jsonl, when present, must hold the same payload strings as the log
    oracles = td / "ORACLES.jsonl"
    if oracles.is_file():
        for line in oracles.read_text("utf-8").splitlines():
            o = json.loads(line)
            if o.get("kind") == "njrat-log":
                assert [(TO_OPERATOR if m["direction"] == "client" else TO_IMPLANT,
                         zeek_unescape(m["payload"])) for m in o["messages"]] == want

    engine_recs = list(run_chain(Engine(stream_chunks=True), [str(pcap)]))
    recs = decode(engine_recs)
    assert not [r for r in recs if isinstance(r, DecodeError)]
    # the server's stream has a hole the client acknowledged past (tshark: "previous segment
    # not captured"): the decoder says so once, and nothing after it is a frame
    (conn,) = [r for r in engine_recs if isinstance(r, Connection)]
    gaps = [r for r in recs if isinstance(r, C2Message) and r.kind == "error"]
    assert [(g.fields["stream_direction"], g.fields["missing_bytes"]) for g in gaps] == \
        [("server_to_client", conn.s2c_missing_bytes)] and conn.s2c_missing_bytes > 0
    msgs = [r for r in recs if isinstance(r, C2Message) and r.kind != "error"]
    # every message of the transcript, in order, same direction and exact bytes; nothing else
    got = [(m.direction, m.fields["payload_len"], m.fields["payload_sha256"]) for m in msgs]
    assert got == [(d, len(p), hashlib.sha256(p).hexdigest()) for d, p in want]
    assert [m.fields["command"] for m in msgs] == ["ll", "inf", "act", "CAP", "CAP"]
    assert [m.kind for m in msgs] == ["checkin", "output", "output", "command", "output"]
    assert {m.agent for m in msgs} == {"HacKed_C4BA3647"}
    assert {m.family for m in msgs} == {"njRAT"}

    ll, inf, act, cap_cmd, cap = msgs
    assert ll.fields["computer"] == "USER-PC" and ll.fields["user"] == "admin"
    assert ll.fields["os"] == "Win 7 Professional SP1 x86"
    assert ll.fields["active_window"] == "Program Manager"
    assert "victim=HacKed_C4BA3647" in ll.text
    assert "7.tcp.eu.ngrok.io:15145" in inf.text
    assert act.text == "act (active window): Program Manager"
    assert cap_cmd.text == "CAP (screenshot): 35 | 23"
    jpeg = want[4][1].split(SEP, 1)[1]
    assert jpeg[:3] == b"\xff\xd8\xff" and jpeg[-2:] == b"\xff\xd9"
    assert cap.attachments == [{"name": "screenshot-1.jpg", "size": len(jpeg),
                                "sha256": hashlib.sha256(jpeg).hexdigest()}]
    assert f"{len(jpeg)} bytes" in cap.text


# ------------------------------------------------------------------------------ synthetic

def frame(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b"\0" + payload


JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(range(256)) + SEP + b"\xff\xd9"   # SEP inside
CLIENT = (frame(b"ll" + SEP + b"SGFjS2VkX0M0QkEzNjQ3" + SEP + b"PC" + SEP + b"bob" + SEP
                + b"23-04-19" + SEP + SEP + b"Win 10" + SEP + b"No" + SEP + b"0.7d" + SEP
                + b".." + SEP + b"UHJvZ3JhbSBNYW5hZ2VyAA==" + SEP)
          + frame(b"act" + SEP + b"UHJvZ3JhbSBNYW5hZ2VyAA==")
          + frame(b"CAP" + SEP + JPEG)
          + frame(b"kl" + SEP + b"aGVsbG8gd29ybGQ="))
SERVER = frame(b"CAP" + SEP + b"35" + SEP + b"23") + frame(b"P")


def chunks(parts, conn="C1"):
    """StreamChunk records of (direction, bytes) parts, offsets counted per direction."""
    off = {C2S: 0, S2C: 0}
    for i, (d, data) in enumerate(parts):
        yield StreamChunk(conn_id=conn, chunk_index=i, direction=d, stream_offset=off[d],
                          ts_us=1_000_000 + i, src_ip=VICTIM_IP, src_port=49228,
                          dst_ip="192.0.2.1", dst_port=1177, file="syn.pcap", frame=i + 1,
                          data=data)
        off[d] += len(data)


def summary(recs):
    assert not [r for r in recs if isinstance(r, DecodeError)]
    return [(m.kind, m.direction, m.agent, m.text, m.fields, m.attachments) for m in recs]


def test_synthetic_stream_decodes():
    got = summary(decode(chunks([(C2S, CLIENT), (S2C, SERVER)])))
    assert [(k, d, a) for k, d, a, *_ in got] == [
        ("checkin", TO_OPERATOR, "HacKed_C4BA3647"), ("output", TO_OPERATOR, "HacKed_C4BA3647"),
        ("output", TO_OPERATOR, "HacKed_C4BA3647"), ("output", TO_OPERATOR, "HacKed_C4BA3647"),
        ("command", TO_IMPLANT, "HacKed_C4BA3647"), ("command", TO_IMPLANT, "HacKed_C4BA3647")]
    assert got[2][5] == [{"name": "screenshot-1.jpg", "size": len(JPEG),
                          "sha256": hashlib.sha256(JPEG).hexdigest()}]
    assert got[3][3] == "kl (keylog): hello world"
    assert got[5][3] == "P (ping)"


def test_agent_before_checkin_is_the_client_address():
    got = summary(decode(chunks([(S2C, SERVER), (C2S, CLIENT)])))
    assert [a for _k, _d, a, *_ in got] == [VICTIM_IP, VICTIM_IP] + ["HacKed_C4BA3647"] * 4


def direct(parts) -> list:
    """Messages of one NjRat instance fed the parts straight (want() is not asked)."""
    dec, ctx, out = NjRat(), Context({}), []
    for ch in chunks(parts):
        out += dec.data(ch, ctx) or []
    return out + (dec.close(ctx) or [])


def test_split_at_every_byte_boundary_gives_the_same_messages():
    whole = direct([(C2S, CLIENT), (S2C, SERVER)])
    assert len(whole) == 6 and not [m for m in whole if m.kind == "error"]
    for k in range(1, len(CLIENT)):
        j = k % len(SERVER)
        parts = [(C2S, CLIENT[:k]), (C2S, CLIENT[k:]), (S2C, SERVER[:j]), (S2C, SERVER[j:])]
        assert direct([p for p in parts if p[1]]) == whole, k
    one_byte = [(C2S, CLIENT[i:i + 1]) for i in range(len(CLIENT))]
    assert direct(one_byte) == [w for w in whole if w.direction == TO_OPERATOR]
    # through the runner too, once want() has seen a frame header and command
    first = [(C2S, CLIENT[:24])] + [(C2S, CLIENT[i:i + 1]) for i in range(24, len(CLIENT))]
    assert summary(decode(chunks(first))) == [
        w for w in summary(decode(chunks([(C2S, CLIENT)])))]


@pytest.mark.parametrize("bad, why", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a decimal number"),
    (b"12x\0abc", "not a decimal number"),
    (b"\0abc", "not a decimal number"),
    (b"1234567890\0abc", "not a decimal number"),           # ten digits: no NUL in time
    (str(MAX_FRAME + 1).encode() + b"\0" + b"A" * 100, "exceeds"),
])
def test_garbage_or_oversized_length_stops_with_one_error(bad, why):
    good = frame(b"act" + SEP + b"UHJvZ3JhbSBNYW5hZ2VyAA==")
    parts = [(C2S, good + bad), (C2S, good), (C2S, bad), (S2C, SERVER)]
    recs = decode(chunks(parts))
    assert not [r for r in recs if isinstance(r, DecodeError)]
    c2s = [r for r in recs if r.direction == TO_OPERATOR]
    assert [m.kind for m in c2s] == ["output", "error"]     # later client bytes: ignored
    assert why in c2s[1].text and c2s[1].fields["stream_offset"] == len(good)
    assert [m.kind for m in recs if m.direction == TO_IMPLANT] == ["command", "command"]


def test_frame_bigger_than_cap_is_not_buffered():
    dec, ctx = NjRat(), Context({})
    ch = next(chunks([(C2S, str(MAX_FRAME + 1).encode() + b"\0" + b"A" * 1000)]))
    msgs = list(dec.data(ch, ctx))
    assert [m.kind for m in msgs] == ["error"] and not dec.buf[C2S]
    assert list(dec.data(ch, ctx) or []) == []


def test_connection_ending_inside_a_frame_says_so():
    recs = decode(chunks([(C2S, CLIENT[:40])]))
    assert [(m.kind, m.direction) for m in recs] == [("error", TO_OPERATOR)]
    assert "ended inside a frame" in recs[0].text


def head(data: bytes, direction=C2S) -> ConnectionHead:
    return ConnectionHead("C1", VICTIM_IP, 49228, "192.0.2.1", 1177, data, direction)


@pytest.mark.parametrize("data, direction", [
    (b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n", C2S),
    (b"POST /gate.php HTTP/1.1\r\nContent-Length: 5\r\n\r\n12345", C2S),
    (b"220 mail.example.com ESMTP Postfix\r\n", S2C),
    (b"EHLO client.example.com\r\n", C2S),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", C2S),
    (b"SSH-2.0-OpenSSH_9.6\r\n", S2C),
    (b"5\0hello", C2S),                                     # framed, but no njRAT command
    (b"", C2S),
])
def test_want_rejects_other_protocols(data, direction):
    assert NjRat().want(head(data, direction)) is False


@pytest.mark.parametrize("data", [
    CLIENT[:60], CLIENT[:12], SERVER, frame(b"P"), b"913\0CAP|'|'|\xff\xd8\xff\xe0",
])
def test_want_accepts_njrat_frames(data):
    assert NjRat().want(head(data)) is True
