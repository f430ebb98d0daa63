"""The sans-IO engine on captures it makes itself (no shared data needed).

Feeding the same bytes whole, in odd chunks and byte by byte must give identical records;
the schema contract must hold between the C engine, the records and the jsonl documents.
"""
from __future__ import annotations

import gzip
import hashlib
import struct
import zlib

import pytest

from c2scribe import samples
from c2scribe.capture import run_chain
from c2scribe.engine import Engine
from c2scribe.errors import ConfigError
from c2scribe.schema import (CaptureError, Connection, EngineWarning, HttpTransaction,
                             fields_of, from_core, json_from_core)


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("samples")
    return samples.write_samples(str(d))


def run_bytes(chunks, **kw):
    e = Engine(body_keep=1 << 20, stream_keep=1 << 20, **kw)
    e.open_file("mem.pcap")
    out = []
    for c in chunks:
        out += e.feed(c)
    out += e.close_file()
    out += e.finish()
    return out


def comparable(recs):
    return [r.to_json(bodies=True) for r in recs]


def test_whole_chunked_and_bytewise_feeds_agree(sample_dir):
    data = open(sample_dir[0], "rb").read()
    whole = comparable(run_bytes([data]))
    odd = comparable(run_bytes([data[i:i + 97] for i in range(0, len(data), 97)]))
    bytewise = comparable(run_bytes([data[i:i + 1] for i in range(len(data))]))
    assert whole == odd == bytewise
    assert sum(1 for r in whole if r["event.dataset"] == "c2scribe.http") == 3


def test_sample_web_transactions(sample_dir):
    recs = list(run_chain(Engine(body_keep=1 << 20), [sample_dir[0]]))
    txs = [r for r in recs if isinstance(r, HttpTransaction)]
    assert [(t.index, t.method, t.uri, t.status_code) for t in txs] == [
        (1, "GET", "/index.html", 200), (2, "GET", "/api/status", 200), (3, "POST", "/login", 302)]
    # the gzip+chunked JSON body comes out decoded
    body = b'{"status": "ok", "items": [' + b"1," * 500 + b"2]}"
    assert txs[1].response_body == body
    assert txs[1].response_body_sha256 == hashlib.sha256(body).hexdigest()
    assert txs[1].response_body_wire_bytes > 0 and txs[1].response_body_wire_bytes != len(body)
    assert txs[2].request_body == b"user=alice&pass=hunter2"
    assert txs[0].url_full == "http://www.example.com/index.html"
    assert all(t.state == "complete" for t in txs)
    (conn,) = [r for r in recs if isinstance(r, Connection)]
    assert conn.handshake and conn.reassembled and conn.end_reason == "fin"
    assert conn.http_transactions == 3 and conn.app_protocol == "http"
    assert conn.history == "ShADadFf"
    assert {t.conn_id for t in txs} == {conn.conn_id}


def test_stream_bytes_and_hashes_match_what_was_sent(sample_dir):
    convs = samples.conversations()
    shell = convs["beacon"][1]
    sent = [b"", b""]
    for _t, frame in shell.packets:
        ihl = (frame[14] & 15) * 4
        tcp = frame[14 + ihl:]
        payload = tcp[(tcp[12] >> 4) * 4:]
        sport = struct.unpack("!H", tcp[:2])[0]
        sent[0 if sport == 51002 else 1] += payload
    recs = list(run_chain(Engine(stream_keep=1 << 20), [sample_dir[1]]))
    (c,) = [r for r in recs if isinstance(r, Connection) and r.dst_port == 4444]
    assert c.app_protocol is None and c.http_transactions == 0
    assert c.c2s_data == sent[0] and c.s2c_data == sent[1]
    assert c.c2s_sha256 == hashlib.sha256(sent[0]).hexdigest()
    assert c.s2c_sha256 == hashlib.sha256(sent[1]).hexdigest()


def test_rotation_chain_gives_one_whole_connection(sample_dir):
    recs = list(run_chain(Engine(body_keep=1 << 20), sample_dir[3:5]))
    (tx,) = [r for r in recs if isinstance(r, HttpTransaction)]
    (conn,) = [r for r in recs if isinstance(r, Connection)]
    assert tx.response_body == bytes(range(256)) * 400
    assert tx.file_first.endswith("rotation.pcap0") and tx.file_last.endswith("rotation.pcap1")
    assert conn.file_first.endswith("rotation.pcap0") and conn.file_last.endswith("rotation.pcap1")
    assert conn.end_reason == "fin"


def test_gzip_capture_equals_plain(sample_dir, tmp_path):
    plain = tmp_path / sample_dir[1].rsplit("/", 1)[1]     # same base name: same ids
    with gzip.open(sample_dir[1], "rb") as f:
        plain.write_bytes(f.read())
    a = [r.to_json() for r in run_chain(Engine(), [sample_dir[1]])]
    b = [r.to_json() for r in run_chain(Engine(), [str(plain)])]
    for d in a + b:
        d.pop("c2scribe.capture.file", None)
        d.pop("c2scribe.capture.file_last", None)
    assert a == b and a


def test_one_engine_per_process():
    e = Engine()
    with pytest.raises(ConfigError, match="one global"):
        Engine()
    e.finish()
    Engine().finish()          # a finished engine released libnids


@pytest.mark.parametrize("bodies", [False, True])
def test_documents_equal_records(sample_dir, bodies):
    """The jsonl fast paths (Python documents, C-written JSON) and Record.to_json agree."""
    import json
    kw = dict(body_keep=100, stream_keep=100)
    recs = [r.to_json(bodies=bodies) for r in run_chain(Engine(**kw), sample_dir)]
    docs = list(run_chain(Engine(documents=True, bodies=bodies, **kw), sample_dir))
    lines = list(run_chain(Engine(jsonl=True, bodies=bodies, **kw), sample_dir))
    assert docs == recs
    assert [json.loads(b) for _ds, b in lines] == json.loads(json.dumps(recs))
    assert [ds for ds, _b in lines] == [r["event.dataset"] for r in recs]


def test_every_schema_field_comes_from_the_engine(sample_dir):
    """A field the C engine stopped setting (or a renamed one) fails here, not in production."""
    e = Engine(stream_keep=64, body_keep=64)
    e.open_file(sample_dir[0])
    raw = e._core.feed(open(sample_dir[0], "rb").read()) + e._core.finish()
    kinds = {k for k, _ in raw}
    assert kinds == {"http", "connection"}
    for kind, d in raw:
        rec = from_core(kind, dict(d))
        doc = json_from_core(kind, dict(d))
        assert set(doc) == set(rec.to_json())
    e._finished = True


def test_field_names_are_unique_per_record():
    for cls in (Connection, HttpTransaction, CaptureError, EngineWarning):
        names = [n for _a, n, _t, _j in fields_of(cls)]
        assert len(names) == len(set(names)), cls


def test_truncated_file_reports_offset_and_keeps_earlier_records(sample_dir):
    data = open(sample_dir[0], "rb").read()
    cut = len(data) - 10
    recs = run_bytes([data[:cut]])
    errs = [r for r in recs if isinstance(r, CaptureError)]
    assert len(errs) == 1 and "truncated" in errs[0].message
    assert 0 < errs[0].offset < cut
    assert sum(isinstance(r, HttpTransaction) for r in recs) == 3


def _eth_ip_tcp(src, dst, sport, dport, seq, ack, flags, payload=b""):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 1, 0, 64, 6, 0,
                     bytes(src), bytes(dst))
    return b"\x00" * 12 + b"\x08\x00" + ip + tcp + payload


def test_midstream_connection_is_reported_not_reassembled():
    """libnids (--engine nids) needs the handshake; the native engine's pickup is in
    test_native_engine.py."""
    e = Engine(engine="nids")
    out = []
    a, b = [10, 0, 0, 1], [10, 0, 0, 2]
    for i, (frm, payload) in enumerate([(0, b"GET / HTTP/1.1\r\n\r\n"), (1, b"HTTP/1.1 200 OK\r\n")]):
        src, dst, sp, dp = (a, b, 40000, 80) if frm == 0 else (b, a, 80, 40000)
        out += e.feed_packet(1_000_000 * (i + 1), 1, _eth_ip_tcp(src, dst, sp, dp, 100, 200, 0x18, payload))
    out += e.finish()
    (c,) = [r for r in out if isinstance(r, Connection)]
    assert not c.handshake and not c.reassembled and c.orientation_guessed
    assert (c.src_port, c.dst_port) == (40000, 80)       # the server guessed by its port
    assert c.src_payload_bytes == 18 and c.end_reason == "open_at_end"
    assert any(isinstance(r, EngineWarning) and r.code == "connections_not_reassembled" for r in out)


def test_decompression_bomb_is_bounded():
    """A response that inflates far past the bomb limit is cut, not buffered whole."""
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = bomb.compress(b"\0" * (64 << 20)) + bomb.flush()
    conv = samples.Conversation("10.9.9.9", 40001, "10.9.9.8", 80, 1_700_000_000.0).handshake()
    conv.send(0, b"GET /bomb HTTP/1.1\r\nHost: x\r\n\r\n")
    conv.send(1, b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
              % (len(body), body))
    conv.close()
    e = Engine(bomb_limit=1 << 20, body_keep=1 << 16)
    out = []
    for t, frame in conv.packets:
        out += e.feed_packet(int(t * 1e6), 1, frame)
    out += e.finish()
    (tx,) = [r for r in out if isinstance(r, HttpTransaction)]
    assert tx.response_body_bytes < 64 << 20
    assert tx.response_body_truncated


def test_docs_schema_is_current():
    from pathlib import Path
    from c2scribe.schema import markdown
    doc = Path(__file__).resolve().parent.parent / "docs" / "schema.md"
    assert doc.read_text() == markdown() + "\n", "regenerate: c2scribe schema > docs/schema.md"


def _feed_convs(engine, convs):
    packets = sorted((p for c in convs for p in c.packets), key=lambda p: p[0])
    out = []
    for t, frame in packets:
        out += engine.feed_packet(int(round(t * 1e6)), 1, frame)
    return out + engine.finish()


def _http_conv(cport, t0, *, close=True, sport=80):
    c = samples.Conversation("10.2.0.1", cport, "10.2.0.2", sport, t0).handshake()
    c.send(0, b"GET /p%d HTTP/1.1\r\nHost: h\r\n\r\n" % cport)
    c.send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    return c.close() if close else c


def test_four_tuple_reuse_gives_two_connections():
    first = _http_conv(40100, 1000.0, close=False)      # abandoned: no FIN, no RST
    second = _http_conv(40100, 1100.0)                  # same 4-tuple, 100 s later
    second.seq = [77777, 88888]
    second.packets.clear()
    second.t = 1100.0
    second.handshake()
    second.send(0, b"GET /again HTTP/1.1\r\nHost: h\r\n\r\n")
    second.send(1, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    second.close()
    out = _feed_convs(Engine(), [first, second])
    conns = [r for r in out if isinstance(r, Connection)]
    txs = [r for r in out if isinstance(r, HttpTransaction)]
    assert [c.end_reason for c in conns] == ["reused", "fin"]
    assert all(c.reassembled for c in conns)
    assert [(t.uri, t.status_code) for t in txs] == [("/p40100", 200), ("/again", 404)]
    assert len({c.conn_id for c in conns}) == 2


def test_full_table_evicts_oldest_and_reports_each_connection_once():
    convs = [_http_conv(41000 + i, 2000.0 + i * 0.01, close=False) for i in range(40)]
    out = _feed_convs(Engine(max_flows=16), convs)
    conns = [r for r in out if isinstance(r, Connection)]
    assert sorted(c.src_port for c in conns) == [41000 + i for i in range(40)]
    assert sum(c.end_reason == "evicted" for c in conns) == 40 - 16
    assert sum(c.end_reason == "open_at_end" for c in conns) == 16
    assert sum(isinstance(r, HttpTransaction) for r in out) == 40
    w = [r for r in out if isinstance(r, EngineWarning) and r.code == "flows_evicted"]
    assert w and w[0].count == 24


def test_idle_connection_times_out_in_capture_time():
    idle = _http_conv(42000, 3000.0, close=False)
    later = _http_conv(42001, 3000.0 + 7200, close=True)
    out = _feed_convs(Engine(established_timeout=600), [idle, later])
    conns = {c.src_port: c for c in out if isinstance(c, Connection)}
    assert conns[42000].end_reason == "timeout" and conns[42001].end_reason == "fin"
