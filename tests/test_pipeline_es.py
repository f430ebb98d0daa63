"""`c2scribe run/backfill --es-url`: the pipeline indexes as it writes, against the fake node.

The pipeline runs for real (a subprocess, Beam's local runner, sandboxed units); the node is
tests/fake_es.py in this process. Checked: every record is indexed once, under the same ids
on a re-run; a backfill that redoes a unit deletes its documents that no longer exist; an
unreachable cluster stops the run before any work; an outage mid-run stops the indexing,
not the Parquet, and the next backfill indexes what was missed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_es import FakeElasticsearch
from test_pipeline import parquet_docs

from c2scribe.samples import write_samples

pytest.importorskip("elasticsearch")


def cli(tmp: Path, *args: str, timeout: int = 300) -> tuple[int, str]:
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("C2SCRIBE_ES_"):
            del env[k]
    p = subprocess.run([sys.executable, "-m", "c2scribe", *args, "--workers", "2",
                        "--es-max-retries", "2", "--es-backoff", "0.05"],
                       capture_output=True, text=True, timeout=timeout, cwd=tmp, env=env)
    return p.returncode, p.stderr


@pytest.fixture
def archive(tmp_path) -> Path:
    root = tmp_path / "archive"
    write_samples(str(root / "a"))
    (root / "b").mkdir()
    shutil.copy(root / "a" / "hostile-bytes.pcap", root / "b" / "hostile-bytes.pcap")
    shutil.copy(root / "a" / "web-keepalive.pcap", root / "b" / "web-keepalive.pcap")
    return root


def records_in_parquet(out: Path) -> int:
    return sum(len(d) for d in parquet_docs(out).values())


def test_run_indexes_every_record_once_and_reruns_change_nothing(archive, tmp_path):
    out = tmp_path / "out"
    with FakeElasticsearch("8.15.0") as es:
        rc, err = cli(tmp_path, "run", "--input", f"{archive}/*/*", "--output", str(out),
                      "--es-url", es.url, "--decoder", "http")
        assert rc == 0, err
        assert "indexing into" in err and "Elasticsearch:" in err
        n = records_in_parquet(out)
        assert es.count("c2scribe-*") == n > 20
        assert set(es.component_templates) >= {"c2scribe-mappings", "c2scribe-settings"}
        docs = es.docs("c2scribe-*")
        units = {d["c2scribe.capture.unit"] for d in docs.values()}
        assert len(units) == 2 and all(d.get("observer.name") in ("a", "b")
                                       for d in docs.values())
        ids = set(docs)
        rc, err = cli(tmp_path, "run", "--input", f"{archive}/*/*", "--output", str(out),
                      "--es-url", es.url, "--decoder", "http")
        assert rc == 0, err
        assert set(es.docs("c2scribe-*")) == ids                 # same ids, nothing added
        assert "0 older ones deleted" in err


def test_backfill_redoing_a_unit_deletes_its_stale_documents(archive, tmp_path):
    out = tmp_path / "out"
    with FakeElasticsearch("9.1.0") as es:
        rc, err = cli(tmp_path, "backfill", "--input", f"{archive}/*/*", "--output", str(out),
                      "--es-url", es.url)
        assert rc == 0, err
        before = es.count("c2scribe-*")
        # a file of sensor b is replaced by a smaller one: b is redone, its documents of
        # the dropped connections go
        os.remove(archive / "b" / "web-keepalive.pcap")
        rc, err = cli(tmp_path, "backfill", "--input", f"{archive}/*/*", "--output", str(out),
                      "--es-url", es.url)
        assert rc == 0, err
        assert "files removed: web-keepalive.pcap" in err
        assert es.count("c2scribe-*") == records_in_parquet(out) < before
        stale = [d for d in es.docs("c2scribe-*").values()
                 if "web-keepalive" in str(d.get("c2scribe.capture.file", ""))
                 and d.get("observer.name") == "b"]
        assert not stale


def test_unreachable_cluster_stops_before_any_work(archive, tmp_path):
    with FakeElasticsearch("8.15.0") as es:
        url = es.url
    out = tmp_path / "out"
    t0 = time.monotonic()
    rc, err = cli(tmp_path, "run", "--input", f"{archive}/*/*", "--output", str(out),
                  "--es-url", url)
    assert rc == 2, err
    assert "cannot reach Elasticsearch" in err and time.monotonic() - t0 < 60
    assert not out.exists() or not any(out.rglob("*.parquet"))


def test_secrets_never_printed(archive, tmp_path):
    with FakeElasticsearch("8.15.0", users={"elastic": "s3cr3t-pw"}) as es:
        rc, err = cli(tmp_path, "run", "--input", f"{archive}/a/*", "--output",
                      str(tmp_path / "out"), "--es-url", es.url, "--es-user", "elastic",
                      "--es-password", "s3cr3t-pw", "--beam-logs")
        assert rc == 0, err
        assert "s3cr3t-pw" not in err
        auth = [r.headers.get("authorization", "") for r in es.bulk_requests()]
        assert auth and all(a.startswith("Basic ") for a in auth)
        rc, err = cli(tmp_path, "run", "--input", f"{archive}/a/*", "--output",
                      str(tmp_path / "out2"), "--es-url", es.url, "--es-user", "elastic",
                      "--es-password", "wrong-pw")
        assert rc == 2 and "wrong-pw" not in err and "401" in err or "authentic" in err


def test_outage_mid_run_keeps_parquet_and_backfill_completes_the_index(archive, tmp_path):
    out = tmp_path / "out"
    with FakeElasticsearch("8.15.0") as es:
        es.outage_after = 0                 # every bulk request fails: 503, for good
        rc, err = cli(tmp_path, "backfill", "--input", f"{archive}/*/*", "--output", str(out),
                      "--es-url", es.url)
        assert rc == 1, err
        assert "not completely indexed" in err
        # the files are complete, and no unit counts as done for the next backfill
        assert records_in_parquet(out) >= 20
        assert not list((out / "_manifest").glob("*.json"))
        es.outage_after = None
        rc, err = cli(tmp_path, "backfill", "--input", f"{archive}/*/*", "--output", str(out),
                      "--es-url", es.url)
        assert rc == 0, err
        assert es.count("c2scribe-*") == records_in_parquet(out)
        status = [json.loads(x) for f in (out / "_status").glob("*.jsonl")
                  for x in f.read_text().splitlines()]
        assert all(s["elasticsearch"]["complete"] for s in status if s["record"] == "unit")


BEACONS = '''
"""Test decoder: a message per POST /beacon (Caldera's sandcat uses it)."""
from c2scribe.decoders.api import TO_OPERATOR, HttpDecoder, Message


class Beacons(HttpDecoder):
    name = "beacons"
    version = "VERSION"

    def want(self, head):
        return head.method == "POST" and head.path == "/beacon"

    def request(self, tx, ctx):
        return Message(kind="checkin", direction=TO_OPERATOR, agent=tx.src_ip,
                       text="beacon VERSION")
'''


def test_backfill_all_shared_testdata_into_elasticsearch(tmp_path):
    """The issue's check: a backfill over ../shared/testdata indexes every record exactly
    once, with values the installed templates accept (the fake node checks each against
    the mapping); running it again changes nothing; a new version of one decoder redoes
    exactly the units where it produced output."""
    from helpers import find_testdata
    td = find_testdata()
    if td is None:
        pytest.skip("../shared/testdata not found")
    dec = tmp_path / "beacons.py"
    dec.write_text(BEACONS.replace("VERSION", "1"))
    out = tmp_path / "out"
    with FakeElasticsearch("8.15.0") as es:
        args = ["backfill", "--input", f"{td}/**/*", "--output", str(out), "--es-url", es.url,
                "--decoder", str(dec)]
        rc, err = cli(tmp_path, *args, timeout=900)
        assert rc == 1, err                       # text files among them are unreadable
        assert " 0 rejected" in err and "not completely indexed" not in err, err
        n = records_in_parquet(out)
        docs = es.docs("c2scribe-*")
        assert len(docs) == n > 3000              # every record once: no id shared
        ids = {k[1] for k in docs}
        assert len(ids) == n
        by_ds = {}
        for d in docs.values():
            by_ds[d["event.dataset"]] = by_ds.get(d["event.dataset"], 0) + 1
        assert by_ds["c2scribe.c2"] > 50 and by_ds["c2scribe.http"] > 900
        before = {k: v.get("c2scribe.capture.generation") for k, v in docs.items()}

        rc, err = cli(tmp_path, *args, timeout=900)
        assert rc == 0 and "0 to process" in err, err
        after = es.docs("c2scribe-*")
        assert {k: v.get("c2scribe.capture.generation") for k, v in after.items()} == before

        dec.write_text(BEACONS.replace("VERSION", "2"))
        rc, err = cli(tmp_path, *args, timeout=900)
        assert rc == 0, err
        redone = [line.strip().split(": ", 1) for line in err.splitlines()
                  if line.startswith("  ") and "decoder version changed" in line]
        produced = {json.loads(p.read_text())["unit"] for p in (out / "_manifest").glob("*.json")
                    if json.loads(p.read_text())["decoders"]["beacons"]["produced"]}
        assert {u for u, _why in redone} == produced and len(produced) >= 1
        assert "to process" in err and f"{len(produced)} to process" in err
        texts = {d["c2scribe.c2.text"] for d in es.docs("c2scribe-c2-*").values()
                 if d.get("c2scribe.decoder.name") == "beacons"}
        assert texts == {"beacon 2"}
        assert es.count("c2scribe-*") == records_in_parquet(out) == n
