"""The decoder API end to end, on traffic made here with real TCP framing.

Two commands in flight at once on two connections through an HTTP proxy land in one agent
timeline in time order; a decoder that raises does not stop the run; `new-decoder` writes a
decoder whose generated test passes unmodified; decoders are validated when loaded.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap

import pytest

from c2scribe.decoders import (TO_IMPLANT, TO_OPERATOR, DecoderRunner, HttpDecoder, Message,
                               load)
from c2scribe.decoders.registry import DecoderValidationError
from c2scribe.engine import Engine
from c2scribe.samples import Conversation, _write_pcap
from c2scribe.schema import C2Message, DecodeError

PROXY = ("10.0.0.1", 3128)
T0 = 1_700_000_000.0


def b64json(obj) -> bytes:
    return base64.b64encode(json.dumps(obj).encode())


def proxied_post(url: str, host: str, body: bytes) -> bytes:
    return (f"POST {url} HTTP/1.1\r\nHost: {host}\r\nProxy-Connection: keep-alive\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def reply(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


class ProxiedC2(HttpDecoder):
    """Selects by Host (through a proxy the IPs are the proxy's), absolute-URI requests."""
    name = "test-proxied"
    version = "1.0"

    def want(self, head):
        return head.host == "c2.example" and head.path == "/b"

    def request(self, tx, ctx):
        beacon = json.loads(base64.b64decode(tx.request_body))
        self.agent = beacon["id"]
        out = [Message("checkin", TO_OPERATOR, "check-in", agent=self.agent)]
        for r in beacon.get("results", []):
            out.append(Message("output", TO_OPERATOR, r["out"], agent=self.agent,
                               command_id=str(r["task"])))
        return out

    def response(self, tx, ctx):
        tasks = json.loads(base64.b64decode(tx.response_body)).get("tasks", [])
        return [Message("command", TO_IMPLANT, t["cmd"], agent=self.agent,
                        command_id=str(t["task"])) for t in tasks]


def run(decoders, convs, mode="records", **engine_kw):
    """mode "records": the engine gives every record as an object (transcript); "select":
    columnar batches, and objects only of the transactions the runner's select() chose
    (c2scribe run's Parquet path)."""
    runner = DecoderRunner(decoders)
    if mode == "select":
        engine_kw.update(columns=True, with_records=True, select=runner.select)
    engine = Engine(body_keep=1 << 20, **engine_kw)
    out = []
    packets = sorted((p for c in convs for p in c.packets), key=lambda p: p[0])

    def feed(recs):
        for rec in recs:
            if not hasattr(rec, "num_rows"):           # batches are for storage only
                out.extend(runner.feed(rec))
    for t, frame in packets:
        feed(engine.feed_packet(int(round(t * 1e6)), 1, frame))
    feed(engine.finish())
    return out + runner.finish()


MODES = pytest.mark.parametrize("mode", ["records", "select"])


def proxy_conversations():
    """Agent A runs two commands at once over two connections through the proxy."""
    a = Conversation("10.0.0.5", 50001, *PROXY, T0).handshake()
    b = Conversation("10.0.0.5", 50002, *PROXY, T0 + 0.3).handshake()
    decoy = Conversation("10.0.0.5", 50003, *PROXY, T0 + 0.1).handshake()
    a.t, b.t = T0 + 1.0, T0 + 1.5
    a.send(0, proxied_post("http://c2.example/b", "c2.example", b64json({"id": "A"})))
    b.send(0, proxied_post("http://c2.example/b", "c2.example", b64json({"id": "A"})))
    a.t, b.t = T0 + 2.0, T0 + 2.5
    a.send(1, reply(b64json({"tasks": [{"task": 1, "cmd": "whoami"}]})))
    b.send(1, reply(b64json({"tasks": [{"task": 2, "cmd": "ipconfig /all"}]})))
    b.t, a.t = T0 + 4.0, T0 + 5.0          # the second command's output comes back first
    b.send(0, proxied_post("http://c2.example/b", "c2.example",
                           b64json({"id": "A", "results": [{"task": 2, "out": "IPv4 ..."}]})))
    a.send(0, proxied_post("http://c2.example/b", "c2.example",
                           b64json({"id": "A", "results": [{"task": 1, "out": "corp\\bob"}]})))
    b.send(1, reply(b64json({})))
    a.send(1, reply(b64json({})))
    decoy.t = T0 + 3.0
    decoy.send(0, proxied_post("http://www.example.org/b", "www.example.org", b64json({"id": "Z"})))
    decoy.send(1, reply(b64json({"tasks": [{"task": 9, "cmd": "not c2"}]})))
    for c in (a, b, decoy):
        c.close()
    return [a, b, decoy]


@MODES
def test_two_commands_in_flight_through_a_proxy_form_one_timeline(mode):
    msgs = [m for m in run([ProxiedC2], proxy_conversations(), mode)
            if isinstance(m, C2Message)]
    assert {m.agent for m in msgs} == {"A"}                # the decoy host was not selected
    assert len({m.conn_id for m in msgs}) == 2
    timeline = sorted(msgs, key=lambda m: m.ts_us)
    assert [(m.kind, m.command_id) for m in timeline] == [
        ("checkin", None), ("checkin", None), ("command", "1"), ("command", "2"),
        ("checkin", None), ("output", "2"), ("checkin", None), ("output", "1")]
    assert all(m.dst_ip == PROXY[0] and m.tx_id for m in msgs)
    by_id = {m.command_id: m.text for m in msgs if m.kind == "output"}
    assert by_id == {"1": "corp\\bob", "2": "IPv4 ..."}


def test_timeline_cli_through_a_proxy(tmp_path):
    pcap = tmp_path / "proxy.pcap"
    _write_pcap(str(pcap), [p for c in proxy_conversations() for p in c.packets])
    dec = tmp_path / "proxied.py"
    dec.write_text(textwrap.dedent('''
        import base64, json
        from c2scribe.decoders import TO_IMPLANT, TO_OPERATOR, HttpDecoder, Message

        class Proxied(HttpDecoder):
            name = "proxied"
            version = "2.0"
            def want(self, head):
                return head.host == "c2.example"
            def response(self, tx, ctx):
                tasks = json.loads(base64.b64decode(tx.response_body)).get("tasks", [])
                return [Message("command", TO_IMPLANT, t["cmd"], agent="A",
                                command_id=str(t["task"])) for t in tasks]
        '''))
    p = subprocess.run([sys.executable, "-m", "c2scribe", "transcript", "--decoder", str(dec),
                        str(pcap)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "=== agent A  [proxied 2.0]  2 messages over 2 connection(s)" in p.stdout
    assert p.stdout.index("whoami") < p.stdout.index("ipconfig /all")
    p = subprocess.run([sys.executable, "-m", "c2scribe", "transcript", "--format", "jsonl",
                        "--decoder", str(dec), str(pcap)], capture_output=True, text=True)
    docs = [json.loads(line) for line in p.stdout.splitlines()]
    c2 = [d for d in docs if d["event.dataset"] == "c2scribe.c2"]
    assert [d["message"] for d in c2] == ["whoami", "ipconfig /all"]
    assert all(d["c2scribe.c2.agent"] == "A" and d["c2scribe.decoder.version"] == "2.0" for d in c2)


class Raises(HttpDecoder):
    name = "raises"
    version = "0.1"

    def request(self, tx, ctx):
        raise ValueError("decoder bug")

    def response(self, tx, ctx):
        return 42          # not messages


@MODES
def test_a_raising_decoder_does_not_stop_the_run(mode):
    out = run([Raises, ProxiedC2], proxy_conversations(), mode)
    errors = [r for r in out if isinstance(r, DecodeError)]
    msgs = [r for r in out if isinstance(r, C2Message)]
    assert len(msgs) == 8                      # the other decoder still works
    assert len(errors) == 2 * 5                # 5 transactions: request raised, response wrong type
    raised = [e for e in errors if e.hook == "request"]
    assert all(e.error_type == "ValueError" and "decoder bug" in e.traceback for e in raised)
    assert all(e.decoder == "raises" and e.decoder_version == "0.1" and e.tx_id for e in errors)
    wrong = [e for e in errors if e.hook == "response"]
    assert wrong and "returned int; a hook returns Message objects" in wrong[0].message


class BadWant(HttpDecoder):
    """want() raises for the connection from port 50002 and for the decoy's Host."""
    name = "bad-want"

    def __init__(self):
        self.seen = 0

    def want(self, head):
        if head.src_port == 50002:
            raise LookupError("no state for this port")
        if head.host == "www.example.org":
            raise KeyError(head.host)
        self.seen += 1
        return self.seen == 1                  # only the first transaction of a connection

    def request(self, tx, ctx):
        return Message("checkin", TO_OPERATOR, tx.uri, agent=tx.src_ip)


@MODES
def test_errors_in_want_are_reported_and_the_run_goes_on(mode):
    out = run([BadWant, ProxiedC2], proxy_conversations(), mode)
    errors = sorted((r for r in out if isinstance(r, DecodeError)), key=lambda e: e.error_type)
    assert [(e.hook, e.error_type) for e in errors] == [
        ("want", "KeyError"), ("want", "LookupError"), ("want", "LookupError")]
    assert errors[1].conn_id == errors[2].conn_id != errors[0].conn_id
    assert errors[1].tx_id != errors[2].tx_id
    assert all(e.decoder == "bad-want" and e.tx_id and e.frame for e in errors)
    mine = [m for m in out if isinstance(m, C2Message) and m.decoder == "bad-want"]
    assert [m.text for m in mine] == ["http://c2.example/b"]     # first tx of port 50001 only
    assert len([m for m in out if isinstance(m, C2Message) and m.decoder == "test-proxied"]) == 8


def test_select_gives_the_same_messages_and_errors_as_records():
    def key(r):
        return (type(r).__name__, r.to_json(bodies=True) if isinstance(r, C2Message) else
                (r.decoder, r.hook, r.error_type, r.message, r.tx_id, r.file, r.frame))
    for decoders in ([ProxiedC2], [Raises, ProxiedC2], [BadWant, ProxiedC2]):
        want = sorted(map(key, run(decoders, proxy_conversations())), key=repr)
        assert want and sorted(map(key, run(decoders, proxy_conversations(), "select")),
                               key=repr) == want


def test_raising_decoder_cli_reports_and_exits_1(tmp_path):
    pcap = tmp_path / "p.pcap"
    _write_pcap(str(pcap), [p for c in proxy_conversations() for p in c.packets])
    dec = tmp_path / "bad.py"
    dec.write_text("from c2scribe.decoders import HttpDecoder\n"
                   "class Bad(HttpDecoder):\n    name = 'bad'\n    version = '1'\n"
                   "    def request(self, tx, ctx):\n        raise RuntimeError('boom')\n")
    p = subprocess.run([sys.executable, "-m", "c2scribe", "transcript", "--decoder", str(dec),
                        str(pcap)], capture_output=True, text=True)
    assert p.returncode == 1
    assert "5 decoder errors" in p.stderr
    assert p.stdout.count("!! decoder error: bad 1 in request") == 5


def test_new_decoder_passes_its_own_test(tmp_path):
    p = subprocess.run([sys.executable, "-m", "c2scribe", "new-decoder", "acme-rat", "--dir",
                        str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    t = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(tmp_path / "test_acme_rat.py")], capture_output=True, text=True,
                       cwd=tmp_path)
    assert t.returncode == 0, t.stdout + t.stderr
    assert "2 passed" in t.stdout
    assert load(str(tmp_path / "acme_rat.py")).name == "acme-rat"


@pytest.mark.parametrize("source,error", [
    ("x = 1\n", "exactly one HttpDecoder or StreamDecoder subclass (found 0)"),
    ("from c2scribe.decoders import HttpDecoder\nclass A(HttpDecoder):\n    name = ''\n",
     "name must be a non-empty str"),
    ("from c2scribe.decoders import HttpDecoder\nclass A(HttpDecoder):\n    name = 'a'\n"
     "    def request(self):\n        pass\n", "request must take (self, arg, arg)"),
    ("raise ImportError('nope')\n", "importing it failed: ImportError: nope"),
])
def test_bad_decoder_files_are_refused_with_a_clear_message(tmp_path, source, error):
    f = tmp_path / "d.py"
    f.write_text(source)
    with pytest.raises(DecoderValidationError) as e:
        load(str(f))
    assert str(f) in str(e.value) and error in str(e.value)


def test_decoders_command_lists_builtins():
    p = subprocess.run([sys.executable, "-m", "c2scribe", "decoders"], capture_output=True,
                       text=True)
    assert p.returncode == 0
    assert any(line.split()[:2] == ["http", "1.0"] for line in p.stdout.splitlines())


def test_unknown_decoder_name_is_a_usage_error():
    p = subprocess.run([sys.executable, "-m", "c2scribe", "transcript", "--decoder", "nope",
                        os.devnull], capture_output=True, text=True)
    assert p.returncode == 2 and "unknown decoder 'nope'" in p.stderr


def test_stream_want_sees_enough_bytes_even_when_they_trickle_in():
    """want() decides on the first 64 bytes of the first direction (or all there was), and
    every held chunk then reaches data() in order."""
    from c2scribe.decoders import StreamDecoder
    from c2scribe.schema import Connection, StreamChunk

    class Magic(StreamDecoder):
        name = "magic"
        version = "1"

        def want(self, head):
            return head.first.startswith(b"HELLO-MAGIC-PROTOCOL")

        def data(self, chunk, ctx):
            return Message("other", TO_OPERATOR, chunk.data.decode(), agent="m")

    payload = b"HELLO-MAGIC-PROTOCOL v1 " + b"x" * 60

    def chunk(i, data, direction="client_to_server"):
        return StreamChunk(conn_id="C1", chunk_index=i, direction=direction, stream_offset=i,
                           ts_us=1_000_000 + i, src_ip="10.0.0.1", src_port=1, dst_ip="10.0.0.2",
                           dst_port=2, file="f", frame=i + 1, data=data)

    runner = DecoderRunner([Magic])
    out = []
    for i, b in enumerate(payload):
        out += runner.feed(chunk(i, bytes([b])))
    out += runner.feed(chunk(len(payload), b"reply", "server_to_client"))
    conn = Connection.__new__(Connection)
    conn.conn_id = "C1"
    out += runner.feed(conn)
    text = "".join(m.text for m in out if isinstance(m, C2Message))
    assert text == payload.decode() + "reply"
    assert not [m for m in out if isinstance(m, DecodeError)]


def test_engine_holds_chunks_until_the_stream_decoders_decide():
    """Engine(stream_select=runner.stream_select): the engine holds a connection's chunks
    and asks want() once, by the runner's own rule (64 bytes of the first direction, or what
    it sent before the other side spoke, or all there was); declined connections give no
    chunk at all. Messages, errors and connection records are those of the runner holding
    the chunks itself."""
    from c2scribe.decoders import StreamDecoder
    from c2scribe.schema import Connection, StreamChunk

    asked = []

    class Picky(StreamDecoder):
        name = "picky"

        def want(self, head):
            asked.append((head.src_port, head.first, head.first_direction))
            if head.src_port == 40004:
                raise ValueError("want() bug")
            return head.first.startswith(b"MAGIC")

        def data(self, chunk, ctx):
            return Message("other", TO_OPERATOR, chunk.data.decode(), agent=chunk.conn_id)

    class Never(StreamDecoder):
        name = "never"

    def convs():
        out = []
        plans = {40001: [(0, b"MAGIC hello " * 8)] + [(i % 2, b"%d more " % i) for i in range(5)],
                 40002: [(0, b"GET / HTTP/1.1\r\n" * 8), (1, b"HTTP/1.1 200 OK\r\n\r\n")],
                 40003: [(0, b"MAG"), (0, b"IC, in small pieces"), (1, b"ok")],
                 40004: [(0, b"MAGIC but want() raises" * 4)],
                 40005: [(0, b"MAGIC short")]}          # ends before 64 bytes: decided at close
        for port, plan in plans.items():
            c = Conversation("10.0.0.5", port, "10.0.0.9", 7000, T0 + port % 10).handshake()
            for side, data in plan:
                c.send(side, data)
            out.append(c.close())
        return out

    def run_with(decoders, select: bool):
        runner = DecoderRunner(decoders)
        engine = Engine(stream_chunks=True,
                        stream_select=runner.stream_select if select else None)
        chunks, conns, out = {}, [], []
        packets = sorted((p for c in convs() for p in c.packets), key=lambda p: p[0])
        recs = [r for t, frame in packets
                for r in engine.feed_packet(int(round(t * 1e6)), 1, frame)] + engine.finish()
        for rec in recs:
            if isinstance(rec, StreamChunk):
                chunks[rec.src_port] = chunks.get(rec.src_port, 0) + 1
            elif isinstance(rec, Connection):
                conns.append(rec)
            out += runner.feed(rec)
        out += runner.finish()
        return chunks, conns, out

    def key(r):
        return (r.decoder, r.conn_id, r.message if isinstance(r, DecodeError) else r.text,
                type(r).__name__, getattr(r, "frame", None) or getattr(r, "frame_first", None))

    held_chunks, held_conns, held_out = run_with([Picky, Never], select=False)
    held_asked, asked[:] = list(asked), []
    chunks, conns, out = run_with([Picky, Never], select=True)
    assert asked == held_asked and len(asked) == 5
    assert {port: first[:5] for port, first, _d in asked} == {
        40001: b"MAGIC", 40002: b"GET /", 40003: b"MAGIC", 40004: b"MAGIC", 40005: b"MAGIC"}
    assert set(held_chunks) == {40001, 40002, 40003, 40004, 40005}
    assert chunks == {p: n for p, n in held_chunks.items() if p in (40001, 40003, 40005)}
    assert conns == held_conns
    assert sorted(map(key, out)) == sorted(map(key, held_out))
    errors = [r for r in out if isinstance(r, DecodeError)]
    assert [(e.hook, e.error_type) for e in errors] == [("want", "ValueError")]
    assert run_with([Never], select=True)[0] == {}


def test_carve_writes_attachments_under_safe_names(tmp_path):
    from helpers import find_testdata
    data = find_testdata()
    if data is None:
        pytest.skip("../shared/testdata not present")
    import hashlib
    cap = data / "keithjjones-zeek-njrat-detector/testing/Traces/njrat.pcap"
    out = tmp_path / "carved"
    p = subprocess.run([sys.executable, "-m", "c2scribe", "transcript", "--decoder", "njrat",
                        "--carve", str(out), str(cap)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    files = list(out.iterdir())
    assert [f.name.split("-", 1)[1] for f in files] == ["screenshot-1.jpg"]
    blob = files[0].read_bytes()
    assert blob.startswith(b"\xff\xd8\xff") and files[0].name.startswith(
        hashlib.sha256(blob).hexdigest()[:16])
    assert "1 file(s) carved" in p.stderr
