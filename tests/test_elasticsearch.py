"""Elasticsearch: ECS documents and templates (c2scribe.ecs), the indexer
(transforms.elasticsearch) and `c2scribe index`.

No Elasticsearch server can run where the tests run: the indexer is tested against
tests/fake_es.py, an in-process server that implements the REST contract c2scribe uses (bulk
NDJSON, per-item results, 429s and outages, templates, auth, REST API compatibility headers)
with the answers a real node gives. The request bodies c2scribe sends are checked against the
documented formats here. test_real_cluster runs against a real cluster when ES_URL is set,
and is skipped (with the reason shown) otherwise.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import pickle
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

pytest.importorskip("elasticsearch", reason="the Elasticsearch client is not installed "
                    "(pip install 'c2scribe[es]')")

from c2scribe import ecs  # noqa: E402
from c2scribe.capture import run_chain  # noqa: E402
from c2scribe.engine import Engine  # noqa: E402
from c2scribe.samples import write_samples  # noqa: E402
from c2scribe.schema import (RECORD_TYPES, C2Message, CaptureError, Connection,  # noqa: E402
                             DecodeError, EngineWarning, HttpTransaction, fields_of)
from transforms import elasticsearch as esx  # noqa: E402
from transforms.parquet import dataset_dir  # noqa: E402

from fake_es import FakeElasticsearch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
SECRET_KEY = "kSeCrEt-4f1d9a"
SECRET_PW = "pW-SeCrEt-77c2"
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


# ------------------------------------------------------------------------------ fixtures

def _decoded(recs):
    from c2scribe.decoders import DecoderRunner, load
    runner = DecoderRunner([load("http")])
    out = []
    for r in recs:
        out += runner.feed(r)
        out.append(r)
    return out + runner.finish()


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> list[str]:
    return write_samples(str(tmp_path_factory.mktemp("samples")))


@pytest.fixture(scope="module")
def records(samples) -> list:
    """The samples' records with kept bodies and stream bytes, C2 messages of the http
    decoder, and records of the types the samples lack."""
    recs = _decoded(run_chain(Engine(body_keep=1 << 20, stream_keep=4096), samples))
    return recs + synthetic()


def synthetic() -> list:
    return [
        C2Message(message_id="Cabc-caldera-1", ts_us=1_700_000_100_000_001, decoder="caldera",
                  decoder_version="1.0", family="sandcat", agent="paw\u202eexe",
                  direction="to_operator", kind="output", text="whoami\n\x1b[31mroot\tx",
                  command_id="c1", fields={"link": {"id": 7}, "": 1},
                  attachments=[{"name": "f.bin", "size": 3, "sha256": "00" * 32}],
                  conn_id="Cabc", tx_id="Cabc-1", src_ip="fe80::1", src_port=1234,
                  dst_ip="10.0.0.2", dst_port=80, file="/x.pcap", frame_first=1,
                  frame_last=9),
        DecodeError(decoder="njrat", decoder_version="2", hook="data", error_type="KeyError",
                    message="'x'", traceback="Traceback ...\nKeyError: 'x'", conn_id="Cabc",
                    tx_id=None, file="/x.pcap", frame=3),
        CaptureError(file="/x.pcap", offset=4096, packets_before=12,
                     message="truncated record"),
    ]


@pytest.fixture
def fake():
    with FakeElasticsearch("8.15.0") as f:
        yield f


def cfg(fake_or_url, tmp_path=None, **kw) -> esx.EsConfig:
    url = fake_or_url if isinstance(fake_or_url, str) else fake_or_url.url
    base = dict(initial_backoff=0.01, max_backoff=0.05, transport_retries=1,
                request_timeout=10, connect_timeout=5)
    if tmp_path is not None:
        base["dead_letter"] = str(tmp_path / "dead.jsonl")
    base.update(kw)
    return esx.EsConfig(url=url, **base)


def prepared(fake, tmp_path=None, **kw) -> esx.EsConfig:
    c, info = esx.prepare(cfg(fake, tmp_path, **kw))
    assert info.version == fake.version
    return c


def run_cli(*args, env=None, timeout=120) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("C2SCRIBE_ES_")}
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    return subprocess.run([PY, "-m", "c2scribe", *map(str, args)], capture_output=True,
                          text=True, env=e, cwd=str(REPO), timeout=timeout)


@pytest.fixture(scope="module")
def pipeline_out(samples, tmp_path_factory) -> Path:
    """`c2scribe run` over the samples, with the http decoder: Parquet of every kind."""
    out = tmp_path_factory.mktemp("run") / "out"
    p = run_cli("run", "--input", os.path.join(os.path.dirname(samples[0]), "*"), "--output",
                out, "--workers", "1", "--progress", "never", "--decoder", "http")
    assert p.returncode == 0, p.stderr
    return out


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def leaf_mappings(props: dict, prefix: str = "") -> dict[str, dict]:
    out = {}
    for k, m in props.items():
        if "properties" in m:
            out.update(leaf_mappings(m["properties"], f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = m
    return out


# ------------------------------------------------------------------------------ documents

def test_documents_are_the_jsonl_documents_in_ecs(records):
    assert {type(r) for r in records} == set(RECORD_TYPES)
    fields = ecs.all_fields()
    for rec in records:
        doc = ecs.document(rec, sensor="dmz-1", unit="dmz-1-abc")
        jsonl = rec.to_json()
        # ECS: categorisation, provenance, time
        assert doc["ecs.version"] == ecs.ECS_VERSION
        assert doc["event.module"] == "c2scribe"
        assert doc["event.dataset"] == rec.dataset
        assert doc["event.kind"] in ("event", "pipeline_error")
        if doc["event.kind"] == "event":
            assert doc["event.category"] and doc["event.type"]
        assert doc["observer.name"] == "dmz-1" and doc["observer.type"] == "sensor"
        assert doc["c2scribe.capture.unit"] == "dmz-1-abc"
        assert doc.get("@timestamp") == jsonl["event.start"] if "event.start" in jsonl else \
            "@timestamp" not in doc
        # message: the transcript, one escaped line per line, nothing hostile
        assert isinstance(doc["message"], str) and doc["message"].strip()
        assert not _CONTROL.search(doc["message"]), doc["message"]
        # every jsonl value is there, by the module's rules
        short = ecs.dataset_short(rec.dataset)
        types = {name: t for _a, name, t, _j in fields_of(type(rec))}
        for name, v in jsonl.items():
            if v is None:
                assert name not in doc or name == "@timestamp"
                continue
            t = types.get(name)
            if name == "message":
                assert doc[f"c2scribe.{short}.text"] == v
            elif t == "headers":
                want: dict = {}
                for n, val in v:
                    want.setdefault(ecs.header_key(n), []).append(val)
                assert doc[name] == want
            elif t == "json":
                assert doc[name] == (v if isinstance(v, dict) or (
                    isinstance(v, list) and all(isinstance(x, dict) for x in v))
                    else {"value": v})
            elif name.endswith(".body.truncated"):
                body = getattr(rec, name.split(".")[2] + "_body")
                assert doc[name] == (v or len(body or b"") > ecs.BODY_LIMIT), name
            else:
                assert doc[name] == v, name
        if "source.ip" in doc:
            assert set(doc["related.ip"]) == {doc["source.ip"], doc["destination.ip"]}
        # nothing the templates do not map
        assert set(doc) <= set(fields), set(doc) - set(fields)
        assert None not in doc.values()
        json.dumps(doc, allow_nan=False)


def test_bodies_and_messages(records):
    http = [r for r in records if isinstance(r, HttpTransaction) and r.response_body]
    assert http
    for rec in http:
        doc = ecs.document(rec)
        assert doc["http.response.body.content"] == \
            rec.response_body[:ecs.BODY_LIMIT].decode("utf-8", "replace")
        assert "c2scribe.http.response.body.content" not in doc
    rec = dataclasses.replace(http[0], response_body=b"ab\xffcd" * 100,
                              response_body_truncated=False)
    doc = ecs.document(rec, body_limit=10)
    assert doc["http.response.body.content"] == (b"ab\xffcd" * 2).decode("utf-8", "replace")
    assert doc["c2scribe.http.response.body.truncated"] is True
    # connection bytes kept for the transcript are text too, under their c2scribe names
    conn = next(r for r in records if isinstance(r, Connection) and r.c2s_data)
    assert ecs.document(conn)["c2scribe.tcp.client_to_server.content"] == \
        conn.c2s_data.decode("utf-8", "replace")
    # the transcript line of an HTTP exchange and of a C2 message
    msg = ecs.document(http[0])["message"]
    assert f"{http[0].method} {http[0].uri}" in msg and "HTTP/1.1 200" in msg
    c2 = next(r for r in records if isinstance(r, C2Message) and r.decoder == "caldera")
    m = ecs.document(c2)["message"]
    assert "output #c1" in m and "whoami" in m and "\\x1b[31mroot" in m
    assert ecs.document(c2)["c2scribe.c2.text"] == c2.text        # the raw text stays
    assert ecs.document(c2)["c2scribe.c2.fields"] == {"link": {"id": 7}, "": 1}
    # the hostile sample: escapes stay inert in every document
    hostile = [r for r in records if getattr(r, "file_first", "") and
               "hostile" in r.file_first]
    assert hostile
    for r in hostile:
        assert "\x1b" not in ecs.document(r)["message"]


def test_ids_are_deterministic_and_unique(records, samples):
    again = _decoded(run_chain(Engine(body_keep=1 << 20, stream_keep=4096), samples))
    again += synthetic()
    a = [(ecs.action(r, unit="u")["_index"], ecs.action(r, unit="u")["_id"]) for r in records]
    b = [(ecs.action(r, unit="u")["_index"], ecs.action(r, unit="u")["_id"]) for r in again]
    assert a == b
    assert len(set(a)) == len(a)
    assert all(re.fullmatch(r"[0-9a-f]{40}", i) for _x, i in a)
    # connection, HTTP and C2 ids do not depend on the unit; warnings and errors are per unit
    for r in records:
        same = ecs.doc_id(r, "u1") == ecs.doc_id(r, "u2")
        assert same == isinstance(r, (Connection, HttpTransaction, C2Message)), r
    # dated indices: UTC month of event.start; undated without one
    conn = next(r for r in records if isinstance(r, Connection))
    assert ecs.action(conn)["_index"] == "c2scribe-connection-2023.11"
    warn = next(r for r in records if isinstance(r, EngineWarning))
    assert ecs.action(warn, prefix="x")["_index"] == "x-warning-undated"
    assert ecs.index_name("c2scribe.http", 0) == "c2scribe-http-1970.01"
    # the dataset names are the Parquet directories'
    for d in ecs.DATASET_CLASSES:
        assert ecs.dataset_short(d) == dataset_dir(d)


def test_records_read_back_from_rows_are_the_records(records):
    from c2scribe.arrow import to_arrow_row
    for r in records:
        for bodies in (False, True):
            row = to_arrow_row(r, bodies=bodies)
            back = ecs.record_from_row(row)
            want = r if bodies else dataclasses.replace(
                r, **{a: None for a, _n, t, _j in fields_of(type(r)) if t == "bytes"})
            assert ecs.document(back) == ecs.document(want)
        back = ecs.record_from_row(json.loads(json.dumps(r.to_json(bodies=True))),
                                   parquet=False)
        assert ecs.document(back) == ecs.document(r)


# ------------------------------------------------------------------------------ templates

def test_templates_are_generated_from_the_schema():
    mappings = ecs.mappings()
    assert mappings["dynamic"] is False
    leaves = leaf_mappings(mappings["properties"])
    assert set(leaves) == set(ecs.all_fields())
    expect = {"str": "keyword", "strlist": "keyword", "int": "long", "bool": "boolean",
              "ts": "date_nanos", "ip": "ip", "headers": "flattened", "json": "flattened",
              "bytes": "wildcard", "text": "match_only_text"}
    for cls in RECORD_TYPES:
        for _attr, name, type_, external in ecs.es_fields(cls):
            m = leaves[name]
            if name in ecs.ECS_MAPPINGS:
                assert m == ecs.ECS_MAPPINGS[name]
            else:
                assert m["type"] == expect[type_], name
            if m["type"] == "keyword":
                assert m["ignore_above"] == 1024
    # as ECS 8 maps them
    body = {"type": "wildcard", "fields": {"text": {"type": "match_only_text"}}}
    assert leaves["http.request.body.content"] == body
    assert leaves["http.response.body.content"] == body
    assert leaves["url.original"] == body and leaves["url.full"] == body
    assert leaves["message"] == {"type": "match_only_text"}
    assert leaves["error.message"] == {"type": "match_only_text"}
    assert leaves["c2scribe.c2.text"] == {"type": "match_only_text"}
    assert leaves["user_agent.original"]["fields"]["text"]["type"] == "match_only_text"
    assert leaves["@timestamp"] == {"type": "date_nanos"}
    assert leaves["network.community_id"]["type"] == "keyword"
    assert leaves["source.ip"] == {"type": "ip"}
    # one composable template per dataset, composed of both components
    comps = ecs.component_templates("c2scribe")
    assert set(comps) == {"c2scribe-settings", "c2scribe-mappings"}
    assert comps["c2scribe-mappings"]["template"]["mappings"] == mappings
    idx = ecs.index_templates("c2scribe")
    assert set(idx) == {f"c2scribe-{s}" for s in ("connection", "http", "c2", "decode_error",
                                                   "capture_error", "warning")}
    for name, t in idx.items():
        assert t["index_patterns"] == [f"{name}-*"]
        assert t["composed_of"] == ["c2scribe-settings", "c2scribe-mappings"]
        assert t["priority"] == ecs.TEMPLATE_PRIORITY and t["version"] == ecs.TEMPLATE_VERSION


def test_docs_mapping_table_is_current():
    doc = (REPO / "docs" / "elasticsearch.md").read_text(encoding="utf-8")
    assert ecs.mapping_table() in doc, "regenerate the table: c2scribe.ecs.mapping_table()"


def test_fake_checks_templates_as_a_node_does(fake):
    """The fake refuses what a node refuses, so the templates it accepts are plausible."""
    es = esx.make_client(cfg(fake), server_major=8)
    from elasticsearch import BadRequestError
    bad = {"template": {"mappings": {"properties": {"m": {"type": "match_only_text",
                                                          "ignore_above": 10}}}}}
    with pytest.raises(BadRequestError) as e:
        es.perform_request("PUT", "/_component_template/bad", body=bad,
                           headers={"content-type": "application/json",
                                    "accept": "application/json"})
    assert "unknown parameter [ignore_above] on mapper [m] of type [match_only_text]" in \
        str(e.value.body)
    with pytest.raises(BadRequestError) as e:
        es.perform_request("PUT", "/_index_template/x", body={
            "index_patterns": ["x-*"], "composed_of": ["missing"]},
            headers={"content-type": "application/json", "accept": "application/json"})
    assert e.value.body["error"]["type"] == "invalid_index_template_exception"
    esx.install_templates(cfg(fake), 8)
    assert set(fake.index_templates) == set(ecs.index_templates())
    with pytest.raises(BadRequestError) as e:       # same priority, overlapping patterns
        es.perform_request("PUT", "/_index_template/other", body={
            "index_patterns": ["c2scribe-http-2024*"], "priority": ecs.TEMPLATE_PRIORITY},
            headers={"content-type": "application/json", "accept": "application/json"})
    assert "have the same priority" in str(e.value.body)


# ------------------------------------------------------------------------------- indexing

def test_bulk_requests_follow_the_documented_format(fake, records, tmp_path):
    c = prepared(fake, tmp_path, chunk_size=7)
    res = esx.Indexer(c, sensor="s1", unit="u1").index_records(records)
    assert res.ok and res.indexed == res.created == len(records), res
    assert res.by_dataset == {ecs.dataset_short(d): sum(r.dataset == d for r in records)
                              for d in {r.dataset for r in records}}
    bulks = fake.bulk_requests()
    assert len(bulks) == -(-len(records) // 7)
    want = {a["_id"]: a for a in (ecs.action(r, sensor="s1", unit="u1") for r in records)}
    seen = []
    for b in bulks:
        assert b.method in ("POST", "PUT") and b.path == "/_bulk"
        assert re.match(r"application/(vnd\.elasticsearch\+)?x-ndjson", b.headers["content-type"])
        assert b.body.endswith(b"\n") and not b.body.endswith(b"\n\n")
        lines = b.ndjson()
        assert len(lines) % 2 == 0
        for act, src in zip(lines[::2], lines[1::2]):
            assert list(act) == ["index"] and set(act["index"]) == {"_index", "_id"}
            a = want[act["index"]["_id"]]
            assert act["index"]["_index"] == a["_index"]
            assert src == json.loads(json.dumps(a["_source"]))
            seen.append(act["index"]["_id"])
    assert sorted(seen) == sorted(want)
    assert fake.count() == len(records)
    es = esx.make_client(c)
    got = es.perform_request("GET", "/c2scribe-*/_count",
                             headers={"accept": "application/json"})
    assert got.body["count"] == len(records)
    assert not os.path.exists(tmp_path / "dead.jsonl")
    # every document stored matches its index's mapping, which came from the templates
    for name, idx in fake.indices.items():
        assert idx.template == name.rsplit("-", 1)[0]
        assert idx.mappings["properties"] == ecs.mappings()["properties"]


def test_429_backs_off_then_succeeds(fake, records, tmp_path):
    c = prepared(fake, tmp_path, chunk_size=100)
    fake.bulk_429 = 2                           # whole requests refused
    t0 = time.monotonic()
    res = esx.Indexer(c).index_records(records)
    assert res.ok and res.indexed == len(records)
    # the transport retries once, then streaming_bulk backs off and sends again
    assert len(fake.bulk_requests()) == 3
    assert [r.status for r in fake.bulk_requests()] == [429, 429, 200]
    assert fake.count() == len(records)
    assert time.monotonic() - t0 < 10
    fake.bulk_429 = 0
    fake.bulk_count = 0
    fake.item_429 = 1                           # every item of the first request refused
    for idx in fake.indices.values():
        idx.docs.clear()
    res = esx.Indexer(c).index_records(records)
    assert res.ok and res.indexed == len(records), res
    assert fake.count() == len(records)


def test_outage_mid_run_retries_then_stops_cleanly(fake, records, tmp_path):
    c = prepared(fake, tmp_path, chunk_size=5, max_retries=2)
    fake.outage_after = 1                       # 503 for good after the first request
    ix = esx.Indexer(c)
    res = ix.index_records(records)
    assert res.stopped and not res.ok
    assert "503" in res.reason and "cluster_block_exception" in res.reason
    assert res.indexed == 5 and res.rejected == 0
    assert res.unsent == len(records) - 5
    assert res.indexed + res.rejected + res.unsent == res.documents == len(records)
    # retried (transport and bulk back-off), then nothing more sent
    n = len(fake.bulk_requests())
    assert 3 <= n <= 1 + 2 * 3, n
    assert not os.path.exists(tmp_path / "dead.jsonl")
    assert fake.count() == 5
    # a short outage is ridden out
    fake2 = FakeElasticsearch("8.15.0").start()
    try:
        c2 = prepared(fake2, tmp_path, chunk_size=5, max_retries=3)
        fake2.outage_after, fake2.outage_requests = 1, 2
        res = esx.Indexer(c2).index_records(records)
        assert res.ok and fake2.count() == len(records), res
    finally:
        fake2.stop()


def test_cli_outage_mid_run_stops_cleanly(fake, pipeline_out):
    fake.outage_after = 1
    before = sorted(p.stat().st_mtime_ns for p in pipeline_out.rglob("*.parquet"))
    p = run_cli("index", pipeline_out, "--es-url", fake.url, "--es-chunk-size", "5",
                "--es-max-retries", "1", "--es-backoff", "0.01")
    assert p.returncode == 1, p.stderr
    assert "c2scribe index: stopped: Elasticsearch at" in p.stderr and "answered 503" in p.stderr
    assert "5 indexed" in p.stderr and "not sent" in p.stderr
    assert "Traceback" not in p.stderr
    assert fake.count() == 5
    assert sorted(p.stat().st_mtime_ns for p in pipeline_out.rglob("*.parquet")) == before


def test_lost_connection_mid_run_retries_then_stops_cleanly(fake, records, tmp_path):
    c = prepared(fake, tmp_path, chunk_size=5, max_retries=2)
    fake.drop_after = 1                         # the node stops answering
    res = esx.Indexer(c).index_records(records)
    assert res.stopped and "lost Elasticsearch" in res.reason, res
    assert res.indexed == 5 and res.unsent == len(records) - 5 and res.rejected == 0
    assert res.retries == 3
    # the node comes back after one dropped request
    fake.drop_after, fake.drop_requests = None, None
    for idx in fake.indices.values():
        idx.docs.clear()
    fake._drop_seen = 0
    fake.drop_after, fake.drop_requests = 0, 1
    res = esx.Indexer(c).index_records(records)
    assert res.ok and fake.count() == len(records), res


def test_rejected_documents_go_to_the_dead_letter_file(fake, records, tmp_path):
    c = prepared(fake, tmp_path, chunk_size=50)
    conn = next(r for r in records if isinstance(r, Connection))
    bad_ip = dataclasses.replace(conn, conn_id="Cbad", src_ip="999.0.0.1")
    deep: dict = {}
    node = deep
    for i in range(25):
        node["k"] = node = {}
    bad_json = dataclasses.replace(synthetic()[0], message_id="Cdeep", fields=deep)
    res = esx.Indexer(c, unit="u1").index_records(records + [bad_ip, bad_json])
    assert res.rejected == 2 and res.indexed == len(records) and not res.stopped
    assert not res.ok
    assert res.rejected_reasons == {"document_parsing_exception": 2}
    lines = [json.loads(x) for x in open(tmp_path / "dead.jsonl")]
    assert len(lines) == 2
    by_id = {x["_id"]: x for x in lines}
    ip = by_id[ecs.doc_id(bad_ip)]
    assert ip["status"] == 400 and ip["_index"] == "c2scribe-connection-2023.11"
    assert ip["error"]["type"] == "document_parsing_exception"
    assert "[source.ip] of type [ip]" in ip["error"]["reason"]
    assert "is not an IP string literal" in ip["reason"]
    assert ip["document"] == json.loads(json.dumps(ecs.document(bad_ip, unit="u1")))
    assert ip["dataset"] == "c2scribe.connection" and ip["unit"] == "u1"
    deep_line = by_id[ecs.doc_id(bad_json)]
    assert "depth limit" in deep_line["reason"]
    assert fake.count() == len(records)


def test_cli_exit_status_when_documents_are_rejected(fake, tmp_path):
    from transforms.parquet import write_records
    out = tmp_path / "out"
    good = synthetic()
    bad = dataclasses.replace(good[0], message_id="Cneg", ts_us=-5_000_000)   # before 1970
    write_records(out, good + [bad], sensor="s1", unit="u1")
    p = run_cli("index", out, "--es-url", fake.url)
    assert p.returncode == 1, p.stderr
    assert "1 document(s) rejected (document_parsing_exception 1)" in p.stderr
    dead = out / "_elasticsearch" / "dead-letter.jsonl"
    assert dead.is_file() and "before the epoch" in dead.read_text()
    assert fake.count() == len(good)
    assert "Traceback" not in p.stderr


# ----------------------------------------------------------------------------- auth, TLS

def test_api_key_and_basic_auth_are_sent_and_never_shown(records, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeElasticsearch("8.15.0", users={"elastic": SECRET_PW},
                           api_keys={"kid": SECRET_KEY}) as fake:
        c = prepared(fake, tmp_path, api_key=f"kid:{SECRET_KEY}")
        assert esx.Indexer(c).index_records(records[:5]).ok
        want = "ApiKey " + base64.b64encode(f"kid:{SECRET_KEY}".encode()).decode()
        assert {r.headers.get("authorization") for r in fake.requests} == {want}
        n = len(fake.requests)
        # the encoded form works the same
        c = prepared(fake, tmp_path, api_key=base64.b64encode(f"kid:{SECRET_KEY}".encode())
                     .decode())
        assert esx.Indexer(c).index_records(records[:5]).ok
        # basic auth, from options and from the URL's userinfo
        c = prepared(fake, tmp_path, user="elastic", password=SECRET_PW)
        assert esx.Indexer(c).index_records(records[:5]).ok
        basic = "Basic " + base64.b64encode(f"elastic:{SECRET_PW}".encode()).decode()
        assert {r.headers.get("authorization") for r in fake.requests[n:]} >= {basic}
        u = fake.url.replace("http://", f"http://elastic:{SECRET_PW}@")
        c = esx.EsConfig(url=u)
        assert SECRET_PW not in c.url and SECRET_PW not in c.display_url
        assert esx.check_cluster(c).major == 8
        assert SECRET_PW not in repr(c) and SECRET_KEY not in repr(
            esx.EsConfig(url=fake.url, api_key=SECRET_KEY))
        assert pickle.loads(pickle.dumps(c)) == c
        assert esx.redact_url(u) == fake.url.replace("http://", "http://***@")
        # refused credentials: a clear message, before any work, without the secret
        with pytest.raises(esx.ClusterUnavailable) as e:
            esx.check_cluster(cfg(fake, user="elastic", password="wrong-" + SECRET_PW))
        msg = str(e.value)
        assert "refused the credentials (401)" in msg and "security_exception" in msg
        assert "unable to authenticate user [elastic]" in msg and SECRET_PW not in msg
        with pytest.raises(esx.ClusterUnavailable) as e:
            esx.check_cluster(cfg(fake))
        assert "missing authentication credentials" in str(e.value)
        with pytest.raises(esx.ClusterUnavailable) as e:
            esx.check_cluster(cfg(fake, api_key="nokey:" + SECRET_KEY))
        assert "unable to find apikey with id nokey" in str(e.value)
        assert SECRET_KEY not in str(e.value)
    assert SECRET_PW not in caplog.text and SECRET_KEY not in caplog.text


def test_cli_takes_secrets_from_the_environment_and_never_prints_them(pipeline_out):
    with FakeElasticsearch("8.15.0", users={"elastic": SECRET_PW},
                           api_keys={"kid": SECRET_KEY}) as fake:
        p = run_cli("index", pipeline_out, env={"C2SCRIBE_ES_URL": fake.url,
                                                "C2SCRIBE_ES_API_KEY": f"kid:{SECRET_KEY}"})
        assert p.returncode == 0, p.stderr
        assert SECRET_KEY not in p.stderr + p.stdout
        p = run_cli("index", pipeline_out, "--es-url",
                    fake.url.replace("http://", f"http://elastic:{SECRET_PW}@"))
        assert p.returncode == 0, p.stderr
        assert SECRET_PW not in p.stderr + p.stdout and f"-> {fake.url} (" in p.stderr
        p = run_cli("index", pipeline_out, env={"C2SCRIBE_ES_URL": fake.url,
                                                "C2SCRIBE_ES_USER": "elastic",
                                                "C2SCRIBE_ES_PASSWORD": "bad" + SECRET_PW})
        assert p.returncode == 2
        assert "refused the credentials (401)" in p.stderr and SECRET_PW not in p.stderr
        assert "Traceback" not in p.stderr
        n = len(fake.bulk_requests())
    assert n == 2             # the two good runs; the refused one sent nothing


def test_insecure_warns_loudly(fake, capsys):
    esx._warned_insecure = False
    esx.check_cluster(cfg(fake, verify_certs=False))
    assert "NOT verified" in capsys.readouterr().err


# --------------------------------------------------------------------- fail fast, versions

def test_unreachable_cluster_fails_fast(pipeline_out):
    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(esx.ClusterUnavailable) as e:
        esx.check_cluster(cfg(url))
    assert str(e.value) == f"cannot reach Elasticsearch at {url}: connection refused"
    p = run_cli("index", pipeline_out, "--es-url", url)
    assert p.returncode == 2
    assert f"cannot reach Elasticsearch at {url}: connection refused" in p.stderr
    assert "Traceback" not in p.stderr
    assert time.monotonic() - t0 < 20
    p = run_cli("index", pipeline_out, "--es-url", "es.example.org:9200")
    assert p.returncode == 2 and "must look like https://HOST:9200" in p.stderr
    p = run_cli("index", pipeline_out)
    assert p.returncode == 2 and "no Elasticsearch URL" in p.stderr


def test_old_or_unknown_servers_are_refused():
    with FakeElasticsearch("7.17.9") as old:
        with pytest.raises(esx.ClusterUnavailable, match="needs 8.x or 9.x"):
            esx.check_cluster(cfg(old))


def test_8x_server_refuses_9x_media_types_and_the_indexer_adapts(records, tmp_path):
    import elasticsearch
    with FakeElasticsearch("8.15.0") as fake:
        # what Elasticsearch 8 answers the 9.x client's default headers
        req = urllib.request.Request(fake.url + "/_bulk", method="POST", data=b"\n", headers={
            "accept": "application/vnd.elasticsearch+json; compatible-with=9",
            "content-type": "application/vnd.elasticsearch+x-ndjson; compatible-with=9"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
        assert e.value.code == 400
        body = json.loads(e.value.read())
        assert body["status"] == 400
        err = body["error"]
        assert err["type"] == "media_type_header_exception"
        assert err["root_cause"][0]["type"] == "media_type_header_exception"
        assert err["caused_by"] == {"type": "status_exception", "reason": (
            "Accept version must be either version 8 or 7, but found 9. "
            "Accept=application/vnd.elasticsearch+json; compatible-with=9")}
        if esx.client_major() == 9:
            plain = elasticsearch.Elasticsearch(fake.url)
            with pytest.raises(elasticsearch.BadRequestError, match="media_type_header"):
                plain.info()
        # c2scribe detects the 8.x server and asks for compatible-with=8
        n = len(fake.requests)
        res = esx.Indexer(prepared(fake, tmp_path)).index_records(records)
        assert res.ok and fake.count() == len(records)
        for r in fake.requests[n:]:
            assert r.status == 200, (r.path, r.response)
            for h in ("accept", "content-type"):
                v = r.headers.get(h) or ""
                assert "compatible-with=9" not in v
    with FakeElasticsearch("9.1.0") as fake9:
        res = esx.Indexer(prepared(fake9, tmp_path)).index_records(records)
        assert res.ok and fake9.count() == len(records)
        versions = {re.search(r"compatible-with=(\d+)", r.headers["content-type"]).group(1)
                    for r in fake9.bulk_requests()}
        assert versions == {str(esx.client_major())}


# ------------------------------------------------------------------ the pipeline's output

def test_index_pipeline_output_end_to_end(pipeline_out, samples):
    import pyarrow.parquet as pq
    with FakeElasticsearch("8.15.0") as fake:
        p = run_cli("index", pipeline_out, "--es-url", fake.url)
        assert p.returncode == 0, p.stderr
        assert "0 rejected, 0 not sent" in p.stderr
        rows: dict[str, int] = {}
        for f in pipeline_out.glob("*/date=*/sensor=*/*.parquet"):
            ds = f.relative_to(pipeline_out).parts[0]
            rows[ds] = rows.get(ds, 0) + pq.ParquetFile(f).metadata.num_rows
        assert set(rows) >= {"connection", "http", "c2", "warning"}
        for ds, n in rows.items():
            assert fake.count(f"c2scribe-{ds}-*") == n, ds
        assert fake.count() == sum(rows.values())
        assert set(fake.indices) == {"c2scribe-connection-2023.11", "c2scribe-http-2023.11",
                                     "c2scribe-c2-2023.11", "c2scribe-warning-undated"}
        # the documents are those of the records the run made (same sensor and unit)
        status = [json.loads(x) for f in (pipeline_out / "_status").glob("*.jsonl")
                  for x in open(f)]
        unit = next(s for s in status if s["record"] == "unit")
        from pipeline.work import clip_bodies, engine_options
        recs = _decoded(run_chain(Engine(engine_options(True, 64 << 10)),
                                  [s["file"] for s in status if s["record"] == "file"]))
        want = {}
        for r in recs:
            a = ecs.action(clip_bodies(r, 64 << 10), sensor=unit["sensor"], unit=unit["unit"])
            want[(a["_index"], a["_id"])] = json.loads(json.dumps(a["_source"]))
        assert fake.docs() == want
        doc = next(d for (i, _), d in fake.docs().items() if i.startswith("c2scribe-http"))
        assert doc["observer.name"] == unit["sensor"]
        assert doc["c2scribe.capture.unit"] == unit["unit"]


def test_reindexing_the_same_output_changes_nothing(pipeline_out, tmp_path):
    with FakeElasticsearch("8.15.0") as fake:
        c = prepared(fake, tmp_path)
        first = esx.index_output(str(pipeline_out), c)
        assert first.ok and first.created == first.indexed > 0
        snapshot = fake.docs()
        second = esx.index_output(str(pipeline_out), c)
        assert second.ok and second.indexed == first.indexed
        assert second.created == 0 and second.updated == first.indexed
        assert fake.docs() == snapshot


def test_jsonl_outputs_and_engine_documents_index_the_same(samples, tmp_path):
    """`c2scribe run --format jsonl` output, and the engine's (dataset, JSON) pairs of its
    fast path, give the documents the records give."""
    out = tmp_path / "out"
    p = run_cli("run", "--input", os.path.join(os.path.dirname(samples[0]), "*"), "--output",
                out, "--workers", "1", "--progress", "never", "--format", "jsonl")
    assert p.returncode == 0, p.stderr
    with FakeElasticsearch("9.1.0") as fake:
        c = prepared(fake, tmp_path)
        res = esx.index_output(str(out), c)
        assert res.ok and res.indexed == sum(1 for f in out.glob("*/*.jsonl")
                                          if f.parent.name != "_status" for _ in open(f))
        from_jsonl = fake.docs()
    from c2scribe.engine import STREAM_KEEP       # what `c2scribe run` keeps of raw TCP
    recs = list(run_chain(Engine(body_keep=64 << 10, stream_keep=STREAM_KEEP), samples))
    pairs = list(run_chain(Engine(body_keep=64 << 10, stream_keep=STREAM_KEEP, jsonl=True,
                                  bodies=True), samples))
    assert len(pairs) == len(recs) and all(isinstance(x, tuple) for x in pairs)
    for fast in (False, True):
        with FakeElasticsearch("8.15.0") as fake:
            c = prepared(fake, tmp_path)
            unit = next(iter(from_jsonl.values()))["c2scribe.capture.unit"]
            sensor = next(iter(from_jsonl.values()))["observer.name"]
            res = esx.Indexer(c, sensor=sensor, unit=unit).index_records(
                pairs if fast else recs)
            assert res.ok
            assert fake.docs() == from_jsonl


# --------------------------------------------------------------------------- real cluster

def test_real_cluster(records, tmp_path):
    """Against a real Elasticsearch 8.x/9.x: ES_URL (and C2SCRIBE_ES_API_KEY or
    C2SCRIBE_ES_USER/C2SCRIBE_ES_PASSWORD, C2SCRIBE_ES_CA_CERTS as needed)."""
    url = os.environ.get("ES_URL")
    if not url:
        pytest.skip("ES_URL is not set: no real Elasticsearch cluster to test against")
    import argparse
    prefix = f"c2scribe-test-{uuid.uuid4().hex[:8]}"
    args = argparse.Namespace(es_url=url, es_index_prefix=prefix, es_max_retries=3,
                              es_backoff=0.5, es_chunk_size=500, es_insecure=False)
    c = esx.config_from_args(args, dead_letter=str(tmp_path / "dead.jsonl"))
    c, info = esx.prepare(c)
    es = esx.make_client(c)
    hdrs = {"accept": "application/json"}
    try:
        res = esx.Indexer(c, sensor="s1", unit="u1").index_records(records)
        assert res.ok, (res, open(tmp_path / "dead.jsonl").read()
                        if os.path.exists(tmp_path / "dead.jsonl") else "")
        es.perform_request("POST", f"/{prefix}-*/_refresh", headers=hdrs)
        count = es.perform_request("GET", f"/{prefix}-*/_count", headers=hdrs).body["count"]
        assert count == len(records)
        res = esx.Indexer(c, sensor="s1", unit="u1").index_records(records)
        assert res.ok and res.updated == len(records)
        es.perform_request("POST", f"/{prefix}-*/_refresh", headers=hdrs)
        assert es.perform_request("GET", f"/{prefix}-*/_count",
                                  headers=hdrs).body["count"] == len(records)
    finally:
        es.perform_request("DELETE", f"/{prefix}-*", headers=hdrs)
        for name in ecs.index_templates(prefix):
            es.perform_request("DELETE", f"/_index_template/{name}", headers=hdrs)
        for name in ecs.component_templates(prefix):
            es.perform_request("DELETE", f"/_component_template/{name}", headers=hdrs)
