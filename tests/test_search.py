"""`c2scribe search` over the output of `c2scribe run`: real C2 on a shared capture, and a
generated capture with a word in every place a search must look (URL, header, body, binary
body, raw TCP bytes), in both output formats."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from helpers import REPO, find_testdata, tool
from native_captures import Conv, http_response

PY = sys.executable


def cli(*args, check=True):
    p = subprocess.run([PY, "-m", "c2scribe", *map(str, args)], capture_output=True, cwd=REPO,
                       timeout=600)
    if check:
        assert p.returncode in (0, 1), p.stderr.decode()
    return p


def run_pipeline(captures_dir, out, *extra):
    p = cli("run", "--input", f"{captures_dir}/*/*", "--output", out, *extra, check=False)
    assert p.returncode == 0, p.stderr.decode()
    return out


def jsonl(p) -> list[dict]:
    return [json.loads(line) for line in p.stdout.decode().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Two sensors' worth of captures, each word in one place only, in both formats."""
    base = tmp_path_factory.mktemp("search")
    a = Conv(cli=("10.1.0.5", 40000), srv=("203.0.113.7", 80), t0=1_700_000_000.0).handshake()
    a.send("c", b"GET /alpha-word?q=1 HTTP/1.1\r\nHost: c2.evil.example\r\n"
                b"User-Agent: bravo-agent\r\n\r\n")
    a.send("s", http_response(b"\x00\x01charlie-inside-binary\xff\xfe" + bytes(200)))
    a.send("c", b"GET /other HTTP/1.1\r\nHost: benign.example\r\n\r\n")
    a.send("s", http_response(b"fine"))
    a.close()
    b = Conv(cli=("192.168.9.9", 50000), srv=("198.51.100.2", 4444),
             t0=1_700_086_400.0).handshake()                   # one day later
    b.send("c", b"delta-raw-bytes\x1b[31m over plain tcp")
    b.send("s", b"echo-reply")
    b.close()
    for name, conv in (("sensor-a", a), ("sensor-b", b)):
        (base / "in" / name).mkdir(parents=True)
        conv.write(base / "in" / name / "cap.pcap")
    parquet = run_pipeline(base / "in", base / "out-parquet", "--decoder", "http")
    js = run_pipeline(base / "in", base / "out-jsonl", "--format", "jsonl", "--decoder", "http")
    return {"parquet": parquet, "jsonl": js}


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
@pytest.mark.parametrize("word,dataset", [
    ("alpha-word", "http"), ("c2.evil.example", "http"), ("bravo-agent", "http"),
    ("charlie-inside-binary", "http"), ("delta-raw-bytes", "connection"),
])
def test_every_place_is_searched(generated, fmt, word, dataset):
    p = cli("search", word, generated[fmt], "--in", dataset, "--format", "jsonl")
    got = jsonl(p)
    assert len(got) == 1, got
    (r,) = got
    assert r["dataset"] == dataset and word in r["snippet"]
    assert r["c2scribe.capture.file"].endswith("cap.pcap") and r["c2scribe.capture.frame_first"]


def test_c2_messages_are_searched_and_words_must_all_match(generated):
    # the http decoder makes one C2 message per transaction, its text names the URL
    got = jsonl(cli("search", "alpha-word", generated["parquet"], "--in", "c2",
                    "--format", "jsonl"))
    assert [r["dataset"] for r in got] == ["c2"] and got[0]["c2scribe.decoder.name"] == "http"
    both = jsonl(cli("search", "alpha-word bravo-agent", generated["parquet"], "--format",
                     "jsonl", "--in", "http"))
    assert len(both) == 1
    p = cli("search", "alpha-word delta-raw-bytes", generated["parquet"])
    assert p.returncode == 1 and b"0 result(s)" in p.stderr


def test_filters(generated):
    out = generated["parquet"]
    every = jsonl(cli("search", "", out, "--in", "connection", "--format", "jsonl"))
    assert len(every) == 2
    day2 = jsonl(cli("search", "", out, "--in", "connection", "--format", "jsonl",
                     "--since", "2023-11-15T12:00:00"))
    assert [r["destination.port"] for r in day2] == [4444]
    day1 = jsonl(cli("search", "", out, "--in", "connection", "--format", "jsonl",
                     "--until", "2023-11-15"))
    assert [r["destination.port"] for r in day1] == [80]
    net = jsonl(cli("search", "", out, "--format", "jsonl", "--ip", "192.168.0.0/16"))
    assert {r["dataset"] for r in net} == {"connection"} and len(net) == 1
    host = jsonl(cli("search", "", out, "--format", "jsonl", "--host", "*.evil.example"))
    assert {r["dataset"] for r in host} == {"c2", "http", "connection"}
    assert {r["destination.ip"] for r in host} == {"203.0.113.7"}
    # per transaction: the other request on the same connection is not the evil host's
    assert [r["url.original"] for r in host if r["dataset"] == "http"] == ["/alpha-word?q=1"]
    agent = jsonl(cli("search", "", out, "--format", "jsonl", "--decoder", "http",
                      "--in", "http"))
    assert len(agent) == 2
    none = jsonl(cli("search", "", out, "--format", "jsonl", "--decoder", "njrat"))
    assert none == []


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_c2_fields_read_back_as_json(generated, fmt):
    from c2scribe.outputs import Output
    with Output(generated[fmt]) as o:
        rows = o.rows('SELECT "c2scribe.c2.fields" AS f, "c2scribe.c2.attachments" AS a FROM c2')
    assert len(rows) == 2
    for r in rows:
        assert isinstance(json.loads(r["f"]), dict) and isinstance(json.loads(r["a"]), list)


def test_table_output_is_inert(generated):
    p = cli("search", "delta-raw-bytes", generated["parquet"])
    text = p.stdout.decode()
    assert "\x1b" not in text and "\\x1b[31m" in text.lower()
    assert "sensor-b/cap.pcap#" in text


def test_usage_errors(tmp_path):
    p = cli("search", "x", tmp_path, check=False)
    assert p.returncode == 2 and b"no c2scribe output here" in p.stderr
    p = cli("search", "x", tmp_path / "nope", check=False)
    assert p.returncode == 2 and b"no such directory" in p.stderr


@pytest.mark.shared
def test_sandcat_command_found_with_its_frames(tmp_path):
    td = find_testdata()
    if td is None:
        pytest.skip("../shared/testdata not present")
    src = td / "corelight-zeek-caldera-detector/testing/Traces/sandcat.pcap"
    (tmp_path / "in" / "lab").mkdir(parents=True)
    shutil.copy(src, tmp_path / "in" / "lab" / "sandcat.pcap")
    out = run_pipeline(tmp_path / "in", tmp_path / "out", "--decoder", "caldera-sandcat")
    got = jsonl(cli("search", "whoami", out, "--in", "c2", "--format", "jsonl"))
    kinds = sorted(r["c2scribe.c2.kind"] for r in got)
    assert kinds == ["command", "output"], got
    cmd = next(r for r in got if r["c2scribe.c2.kind"] == "command")
    assert cmd["c2scribe.c2.agent"] and cmd["c2scribe.http.id"]
    # the frames named are the beacon that carried the command (tshark says so)
    tshark = tool("tshark")
    f = cmd["c2scribe.capture.frame_first"]
    uri = subprocess.run([tshark, "-n", "-r", cmd["c2scribe.capture.file"], "-Y",
                          f"frame.number == {f}", "-T", "fields", "-e", "http.request.uri"],
                         capture_output=True, text=True, timeout=120).stdout.strip()
    assert uri == "/beacon"
