"""The caldera-sandcat / caldera-ragdoll decoders (MITRE Caldera agents over HTTP).

Real captures: corelight-zeek-caldera-detector testing/Traces/{sandcat,ragdoll}.pcap (the Zeek
detector's own test traces); the counts the decoder must reach are computed here
independently, from the HttpTransaction records and, when installed, from tshark.
Synthetic transactions check the edges: garbage bodies, binary output, absolute-URI requests.
"""
from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import io
import json
import shutil
import tarfile

import pytest

from c2scribe.decoders import DecoderRunner, load
from c2scribe.decoders.api import RequestHead
from c2scribe.schema import C2Message, DecodeError, HttpTransaction
from helpers import (c2_records, capture, of_type, rec_key, tshark_http,
                     tshark_tcp_evidence)

TRACES = "corelight-zeek-caldera-detector/testing/Traces"


def decode(name, recs):
    runner = DecoderRunner([load(name)])
    out = []
    for r in recs:
        out += runner.feed(r)
    out += runner.finish()
    errors = of_type(out, DecodeError)
    assert not errors, [e.message for e in errors]
    return of_type(out, C2Message)


def b64json(obj) -> bytes:
    return base64.b64encode(json.dumps(obj).encode())


def unb64json(data: bytes):
    return json.loads(base64.b64decode(data))


def pairing(msgs):
    """(commands, {command_id: [outputs]}) and the lists the assertions print."""
    cmds = [m for m in msgs if m.kind == "command"]
    outs = collections.defaultdict(list)
    for m in msgs:
        if m.kind == "output":
            outs[m.command_id].append(m)
    return cmds, outs


def check_pairs(msgs, beacons):
    """Every command has exactly one output, every output a command; a command left without
    output is only accepted when no later beacon of its agent exists (the capture ended)."""
    cmds, outs = pairing(msgs)
    ids = [c.command_id for c in cmds]
    assert len(ids) == len(set(ids)), f"link ids sent twice: {collections.Counter(ids)}"
    unanswered = [c for c in cmds if not outs.get(c.command_id)]
    late = [c for c in unanswered
            if any(b.start_us > c.ts_us for b in beacons)]      # a later beacon could carry it
    assert not late, "commands without output although the agent beaconed again: " + "; ".join(
        f"{c.command_id} {c.text!r} at {c.ts_us}" for c in late)
    doubled = {k: len(v) for k, v in outs.items() if len(v) != 1}
    assert not doubled, f"command ids with several outputs: {doubled}"
    orphans = sorted(set(outs) - set(ids))
    assert not orphans, f"outputs without a command: {orphans}"
    for c in cmds:
        for o in outs.get(c.command_id, []):
            assert o.ts_us > c.ts_us, f"output of {c.command_id} before its command"
            assert o.agent == c.agent
    return cmds, unanswered


# ------------------------------------------------------------------------------- sandcat

@pytest.fixture(scope="module")
def sandcat():
    path = capture(f"{TRACES}/sandcat.pcap")
    recs = c2_records(path, body_keep=64 << 20)
    return path, recs, decode("caldera-sandcat", recs)


@pytest.mark.shared
def test_sandcat_commands_pair_with_outputs(sandcat):
    path, recs, msgs = sandcat
    beacons = [t for t in of_type(recs, HttpTransaction)
               if t.method == "POST" and t.url_path == "/beacon"]
    cmds, unanswered = check_pairs(msgs, beacons)
    # independently: the link ids in the server's answers and in the agent's results
    sent, answered = [], set()
    for t in beacons:
        answer = unb64json(t.response_body)
        sent += [json.loads(i)["id"] for i in json.loads(answer["instructions"])]
        answered |= {r["id"] for r in unb64json(t.request_body).get("results") or []}
    assert [c.command_id for c in cmds] == sent
    assert set(sent) == answered
    assert (len(cmds), len(unanswered)) == (23, 0), [c.command_id for c in unanswered]
    by_id = {c.command_id: c for c in cmds}
    assert by_id["11baa3a1-300d-4924-b556-1bf14d282e16"].text == "whoami"
    outs = {m.command_id: m for m in msgs if m.kind == "output"}
    assert outs["11baa3a1-300d-4924-b556-1bf14d282e16"].text == "root\n"
    assert all(c.fields["executor"] == "sh" for c in cmds)


@pytest.mark.shared
def test_sandcat_checkins_one_per_beacon(sandcat):
    path, recs, msgs = sandcat
    n_rec = sum(1 for t in of_type(recs, HttpTransaction)
                if t.method == "POST" and t.url_path == "/beacon")
    checkins = [m for m in msgs if m.kind == "checkin"]
    assert len(checkins) == n_rec == 58
    if shutil.which("tshark"):
        n_ts = sum(1 for m in tshark_http(path)
                   if m["kind"] == "request" and m["method"] == "POST" and m["uri"] == "/beacon")
        assert len(checkins) == n_ts


@pytest.mark.shared
def test_sandcat_agent_is_the_paw(sandcat):
    path, recs, msgs = sandcat
    paws = set()
    for t in of_type(recs, HttpTransaction):
        if t.url_path == "/beacon":
            paws |= {unb64json(t.request_body).get("paw"), unb64json(t.response_body)["paw"]}
    paws.discard("")                    # the first beacon registers: the server assigns it
    assert paws == {"ytbpag"}
    beacon_msgs = [m for m in msgs if m.kind != "download"]
    assert {m.agent for m in beacon_msgs} == paws
    first = min((m for m in msgs if m.kind == "checkin"), key=lambda m: m.ts_us)
    assert first.fields["registration"] is True and first.fields["paw"] == ""
    assert first.fields["host"] == "2652f848e1b8" and first.fields["platform"] == "linux"


@pytest.mark.shared
def test_sandcat_commands_in_time_order(sandcat):
    _path, _recs, msgs = sandcat
    ts = [m.ts_us for m in msgs if m.kind == "command"]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)


@pytest.mark.shared
def test_sandcat_download_is_attached_and_flagged_partial(sandcat):
    path, recs, msgs = sandcat
    (dl,) = [m for m in msgs if m.kind == "download"]
    (tx,) = [t for t in of_type(recs, HttpTransaction) if t.url_path == "/file/download"]
    assert dl.fields["file"] == "sandcat.go" and dl.fields["platform"] == "linux"
    assert dl.attachments[0]["name"] == "sandcat.go"
    assert dl.attachments[0]["sha256"] == hashlib.sha256(tx.response_body).hexdigest()
    assert tx.response_body[:4] == b"\x7fELF"
    # the capture holds only part of the 7 MB body (segments missing before the server's
    # FIN, acknowledged by the client): the engine keeps the holes as zeros and counts them,
    # the decoder attaches the body as it is and says it is partial
    assert dl.fields["partial"] is True and dl.fields["expected_bytes"] == 7077888
    assert dl.fields["missing_bytes"] == tx.response_missing_bytes > 0
    assert dl.fields["received_bytes"] == tx.response_body_bytes - tx.response_missing_bytes
    assert dl.attachments[0]["size"] == dl.fields["kept_bytes"] == len(tx.response_body)
    assert dl.ts_us == tx.start_us
    if shutil.which("tshark"):          # evidence: segments of it were never captured
        ev = tshark_tcp_evidence(path)
        assert ev[rec_key(tx)]["lost"], ev[rec_key(tx)]


# ------------------------------------------------------------------------------- ragdoll

@pytest.mark.shared
def test_ragdoll_same_family():
    path = capture(f"{TRACES}/ragdoll.pcap")
    recs = c2_records(path, body_keep=64 << 20)
    msgs = decode("caldera-ragdoll", recs)
    beacons = [t for t in of_type(recs, HttpTransaction)
               if t.method == "POST" and t.url_path == "/weather"]
    assert sum(m.kind == "checkin" for m in msgs) == len(beacons) == 9
    cmds, unanswered = check_pairs(msgs, beacons)
    assert (len(cmds), len(unanswered)) == (4, 0)
    assert {m.agent for m in msgs if m.kind in ("checkin", "command", "output", "upload")} \
        == {"tiwmbm"}
    (up,) = [m for m in msgs if m.kind == "upload"]
    (utx,) = [t for t in of_type(recs, HttpTransaction) if t.url_path.endswith("/file/upload")]
    assert up.fields["status"] == 404 and up.attachments[0]["name"] == "staged.tar.gz"
    body = utx.request_body
    data = body[body.index(b"\r\n\r\n") + 4:body.rindex(b"\r\n--")]
    assert up.attachments[0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert tarfile.open(fileobj=io.BytesIO(data)).getnames() == ["/root/staged"]
    assert [m.fields["file"] for m in msgs if m.kind == "download"] == ["ragdoll.py"] * 2
    # sandcat's decoder leaves the /weather beacons alone
    assert {m.kind for m in decode("caldera-sandcat", recs)} == {"download", "upload"}


# ----------------------------------------------------------------------------- synthetic

def make_tx(n=1, method="POST", uri="/beacon", req=b"", resp=b"", status=200, headers=(),
            rheaders=(), state="complete"):
    """A complete HttpTransaction as the engine would give it (fields not set are None)."""
    path = "/" + uri.split("://", 1)[1].split("/", 1)[1] if "://" in uri else uri
    kw = {f.name: None for f in dataclasses.fields(HttpTransaction)}
    kw.update(conn_id="C1", tx_id=f"C1-{n}", index=n, start_us=n * 1000, end_us=n * 1000 + 10,
              src_ip="10.0.0.1", src_port=4000, dst_ip="10.0.0.2", dst_port=8888,
              method=method, uri=uri, url_path=path, request_headers=list(headers),
              request_body=req, request_body_bytes=len(req), status_code=status,
              response_headers=list(rheaders), response_body=resp, response_body_bytes=len(resp),
              state=state, response_body_truncated=False)
    return HttpTransaction(**kw)


def run(name, txs):
    return decode(name, txs)


def test_garbage_bodies_give_error_messages_not_exceptions():
    txs = [make_tx(1, req=b"not base64 {{{", resp=b"\x00\xff" * 10),
           make_tx(2, req=b"eyJwYXci", resp=base64.b64encode(b"[1, 2]")),     # cut base64
           make_tx(3, req=b64json({"paw": "p", "results": "nope"}),
                   resp=b64json({"paw": "p", "instructions": "{not json"})),
           make_tx(4, req=b64json({"paw": "p", "results": [{"id": 7, "output": "%%%"}, 5]}),
                   resp=b64json({"paw": "p", "instructions": [1, 2]})),
           make_tx(5, req=b"", resp=b"", status=500)]
    msgs = run("caldera-sandcat", txs)
    kinds = [m.kind for m in msgs]
    assert kinds == ["error", "error",            # 1: neither body is base64 JSON
                     "error", "error",            # 2: cut base64; a JSON list, not an object
                     "checkin", "error",          # 3: results not a list; instructions garbled
                     "checkin", "output", "error",  # 4: one good result; instructions not objects
                     "error", "error"], kinds     # 5: empty request, empty 500 answer
    out = [m for m in msgs if m.kind == "output"][0]
    assert out.command_id == "7" and out.text == "%%%" and out.fields["output_encoding"] == "raw"


def test_synthetic_session_binary_output_and_registration():
    cmd = {"id": "L1", "command": base64.b64encode(b"cat /bin/ls").decode(), "executor": "sh",
           "timeout": 60, "payloads": ["x.exe"], "sleep": 1}
    answer = {"paw": "abc", "sleep": 30, "watchdog": 0,
              "instructions": json.dumps([json.dumps(cmd)])}
    binary = b"\x7fELF\x00\xff\xfe tail"
    txs = [make_tx(1, req=b64json({"paw": "", "host": "h", "platform": "linux"}),
                   resp=b64json(answer)),
           make_tx(2, uri="http://c2.example:8888/beacon",          # via a proxy
                   req=b64json({"paw": "abc", "host": "h", "results": [
                       {"id": "L1", "output": base64.b64encode(binary).decode(), "status": 0}]}),
                   resp=b64json({"paw": "abc", "instructions": "[]"})),
           make_tx(3, uri="/file/download", headers=[("file", "../../x.exe"),
                                                     ("platform", "windows")],
                   resp=b"MZ" + b"\x00" * 98, rheaders=[("Content-Length", "100")])]
    msgs = run("caldera-sandcat", txs)
    assert [m.kind for m in msgs] == ["checkin", "command", "checkin", "output", "download"]
    assert {m.agent for m in msgs[:4]} == {"abc"}
    assert msgs[1].command_id == msgs[3].command_id == "L1"
    assert msgs[1].text == "cat /bin/ls" and msgs[1].fields["payloads"] == ["x.exe"]
    assert msgs[3].text == binary.decode("utf-8", "replace")
    assert msgs[3].fields["output_bytes"] == len(binary)
    assert msgs[3].fields["command"] == "cat /bin/ls"
    dl = msgs[4]
    assert dl.attachments[0]["name"] == "x.exe" and dl.fields["partial"] is False
    assert dl.attachments[0]["size"] == 100


def test_want_selects_by_path_and_method_not_address():
    dec = load("caldera-sandcat")()
    rag = load("caldera-ragdoll")()

    def head(method, uri):
        return RequestHead.of(make_tx(method=method, uri=uri))

    assert dec.want(head("POST", "/beacon"))
    assert dec.want(head("POST", "http://203.0.113.9:8888/beacon"))
    assert dec.want(head("POST", "/file/download")) and dec.want(head("GET", "/file/download"))
    assert not dec.want(head("GET", "/beacon")) and not dec.want(head("POST", "/weather"))
    assert rag.want(head("POST", "/weather")) and not rag.want(head("POST", "/beacon"))
    assert rag.want(head("POST", "/weather/file/upload"))


def test_ragdoll_envelope_in_html():
    env = b64json({"paw": "rd", "sleep": 5, "instructions": json.dumps([json.dumps(
        {"id": "x1", "command": base64.b64encode(b"id").decode(), "executor": "sh"})])})
    page = b"<html><p id=\"instructions\" style=\"display:none\">" + env + b"</p></html>"
    msgs = run("caldera-ragdoll", [make_tx(1, uri="/weather", resp=page),
                                   make_tx(2, uri="/weather", resp=b"<html/>")])
    assert [(m.kind, m.agent, m.command_id, m.text) for m in msgs] == [
        ("error", None, None, msgs[0].text), ("command", "rd", "x1", "id"),
        ("error", None, None, msgs[2].text), ("error", None, None, msgs[3].text)]
    assert "not a Caldera beacon" in msgs[0].text and "holds no instructions" in msgs[3].text
