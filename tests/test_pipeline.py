"""`c2scribe run` (the Beam pipeline) gives, chain for chain, what `c2scribe transcript` gives.

The real pipeline runs in a subprocess (FnApiRunner, two worker processes). Work-unit planning
(pipeline.units) is also tested on its own, without Beam.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import find_testdata, normalise_row

from c2scribe.samples import write_samples
from pipeline.units import first_packet_us, match_files, plan_units

DATA_DIRS = ("connection", "http", "capture_error", "warning", "c2", "decode_error")


# --------------------------------------------------------------------------------- helpers

def run_pipeline(tmp: Path, *args: str, timeout: int = 120) -> tuple[int, str]:
    """JSON lines without bodies unless args say otherwise: what `transcript --format jsonl`
    writes, to compare with."""
    extra = [] if "--format" in args else ["--format", "jsonl", "--body-keep", "0"]
    out = subprocess.run([sys.executable, "-m", "c2scribe", "run", "--workers", "2", *extra,
                          *args], capture_output=True, text=True, timeout=timeout, cwd=tmp)
    return out.returncode, out.stderr


def status_of(output: Path) -> tuple[dict, dict]:
    """({file path: status record}, {unit id: unit record})."""
    files, units = {}, {}
    for p in sorted((output / "_status").glob("*.jsonl")):
        for line in p.read_text().splitlines():
            s = json.loads(line)
            if s["record"] == "file":
                files[s["file"]] = s
            else:
                units[s["unit"]] = s
    return files, units


def unit_docs(output: Path, unit: str) -> list[str]:
    docs = []
    for d in DATA_DIRS:
        p = output / d / f"{unit}.jsonl"
        if p.exists():
            docs += [json.dumps(json.loads(x), sort_keys=True) for x in p.read_text().splitlines()]
    return sorted(docs)


def transcript_docs(paths: list[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "c2scribe", "transcript", "--format", "jsonl",
                          "-q", *paths], capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 1), out.stderr
    return sorted(json.dumps(json.loads(x), sort_keys=True) for x in out.stdout.splitlines())


def check_equal_to_transcript(output: Path) -> dict:
    files, units = status_of(output)
    for uid in units:
        chain = [f for f, s in sorted(files.items(), key=lambda kv: kv[1]["order"])
                 if s["unit"] == uid]
        got, want = unit_docs(output, uid), transcript_docs(chain)
        assert got == want, (f"unit {uid}: {len(got)} records, transcript {len(want)}; only "
                             f"pipeline: {sorted(set(got) - set(want))[:2]}, only transcript: "
                             f"{sorted(set(want) - set(got))[:2]}")
    return units


# --------------------------------------------------------------------------------- planning

def _pcapng(ts_ns: int) -> bytes:
    """SHB, IDB with if_tsresol=9 (ns), one EPB: the smallest real pcapng."""
    shb_body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    shb = struct.pack("<II", 0x0A0D0D0A, 12 + len(shb_body)) + shb_body + \
        struct.pack("<I", 12 + len(shb_body))
    opts = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)
    idb_body = struct.pack("<HHI", 1, 0, 65535) + opts
    idb = struct.pack("<II", 1, 12 + len(idb_body)) + idb_body + struct.pack("<I", 12 + len(idb_body))
    frame = b"\x00" * 60
    epb_body = struct.pack("<IIIII", 0, ts_ns >> 32, ts_ns & 0xFFFFFFFF, 60, 60) + frame
    epb = struct.pack("<II", 6, 12 + len(epb_body)) + epb_body + struct.pack("<I", 12 + len(epb_body))
    return shb + idb + epb


def test_first_packet_time(tmp_path):
    paths = write_samples(str(tmp_path / "s"))
    times = {os.path.basename(p): first_packet_us(p) for p in paths}
    assert all(isinstance(t, int) and t > 1.6e15 for t in times.values()), times
    assert times["rotation.pcap0"] < times["rotation.pcap1"]
    ng = tmp_path / "x.pcapng"
    ng.write_bytes(_pcapng(1_700_000_000_123_456_789))
    assert first_packet_us(str(ng)) == 1_700_000_000_123_456
    gz = tmp_path / "x.pcapng.gz"
    gz.write_bytes(gzip.compress(_pcapng(5_000_000_000)))
    assert first_packet_us(str(gz)) == 5_000_000
    (tmp_path / "t.txt").write_text("not a capture")
    assert first_packet_us(str(tmp_path / "t.txt")) is None
    assert first_packet_us(str(tmp_path / "missing")) is None


def test_plan_groups_orders_and_names(tmp_path):
    for d in ("a", "b/deep"):
        (tmp_path / d).mkdir(parents=True)
    names = ["a/x.pcap", "a/y.pcap", "a/z.txt", "b/deep/q.pcap", "b/deep/r.pcap"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    ts = {"x.pcap": 20, "y.pcap": 10, "z.txt": None, "q.pcap": 5, "r.pcap": 5}
    files = match_files([str(tmp_path / "**" / "*")])
    assert [os.path.relpath(p, tmp_path) for p, _s in files] == sorted(names)
    fake = lambda p: ts[os.path.basename(p)]  # noqa: E731
    units = plan_units(files, first_ts=fake)
    by = {u.sensor: u for u in units}
    assert set(by) == {"a", "deep"}
    assert [os.path.basename(f) for f in by["a"].files] == ["y.pcap", "x.pcap", "z.txt"]
    assert [os.path.basename(f) for f in by["deep"].files] == ["q.pcap", "r.pcap"]
    assert [u.unit_id for u in plan_units(files, first_ts=fake)] == [u.unit_id for u in units]
    # a regex: one sensor per file-name stem
    units = plan_units(files, r"/(?P<sensor>[a-z])\.[a-z]+$", first_ts=fake)
    assert sorted(u.sensor for u in units) == ["q", "r", "x", "y", "z"]
    with pytest.raises(ValueError):
        plan_units(files, r"(?P<other>x)", first_ts=fake)


# --------------------------------------------------------------------------------- the run

def test_run_samples_damaged_and_junk(tmp_path):
    a, b = tmp_path / "sensor-a", tmp_path / "sensor-b"
    write_samples(str(a))
    b.mkdir()
    data = (a / "web-keepalive.pcap").read_bytes()
    (b / "damaged.pcap").write_bytes(data[:len(data) // 2 + 7])
    shutil.copy(a / "hostile-bytes.pcap", b / "hostile-copy.pcap")
    (b / "notes.txt").write_text("this is not a capture\n" * 20)
    out = tmp_path / "out"
    rc, err = run_pipeline(tmp_path, "--input", f"{a}/*", f"{b}/*", "--output", str(out))
    assert rc == 1, err
    files, units = status_of(out)
    assert len(units) == 2 and not any(u["failure"] for u in units.values()), units
    st = {os.path.relpath(f, tmp_path): s for f, s in files.items()}
    assert len(st) == 8
    assert all(s["status"] == "ok" for f, s in st.items() if f.startswith("sensor-a")), st
    assert st["sensor-b/hostile-copy.pcap"]["status"] == "ok"
    dmg = st["sensor-b/damaged.pcap"]
    assert dmg["status"] == "damaged" and dmg["offset"] > 24 and "truncated" in dmg["reason"]
    junk = st["sensor-b/notes.txt"]
    assert junk["status"] == "unreadable" and "not a pcap" in junk["reason"]
    # sensor-a's chain is ordered by first packet: the rotation pair in order, last
    chain_a = [f for f, s in sorted(st.items(), key=lambda kv: kv[1]["order"])
               if f.startswith("sensor-a")]
    assert chain_a[-2:] == ["sensor-a/rotation.pcap0", "sensor-a/rotation.pcap1"]
    # the rotation: one connection spanning both files
    uid_a = st["sensor-a/rotation.pcap0"]["unit"]
    conns = [json.loads(x) for x in (out / "connection" / f"{uid_a}.jsonl").read_text()
             .splitlines()]
    rot = [c for c in conns if "rotation" in c["c2scribe.capture.file"]
           or "rotation" in c["c2scribe.capture.file_last"]]
    assert len(rot) == 1, rot
    assert rot[0]["c2scribe.capture.file"].endswith("rotation.pcap0")
    assert rot[0]["c2scribe.capture.file_last"].endswith("rotation.pcap1")
    assert "damaged" in err and "unreadable" in err
    check_equal_to_transcript(out)
    # a re-run replaces the outputs (same names, same content)
    before = {p: p.read_bytes() for p in out.rglob("*.jsonl") if "_status" not in p.parts}
    rc2, err2 = run_pipeline(tmp_path, "--input", f"{a}/*", f"{b}/*", "--output", str(out))
    assert rc2 == 1, err2
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "_status" not in p.parts}
    assert after == before


def test_run_clean_input_exits_zero(tmp_path):
    a = tmp_path / "in"
    write_samples(str(a))
    out = tmp_path / "out"
    rc, err = run_pipeline(tmp_path, "--input", str(a / "**" / "*.pcap*"), "--output", str(out))
    assert rc == 0, err
    files, units = status_of(out)
    assert len(files) == 5 and all(s["status"] == "ok" for s in files.values())
    # a run killed while writing a unit's status leaves its temporary file: the next run of
    # the unit removes it
    (unit,) = (p.name[:-len(".jsonl")] for p in (out / "_status").glob("*.jsonl"))
    stale = out / "_status" / f"{unit}.jsonl.tmp-0a2b6c05"
    stale.write_text("half a status")
    rc, err = run_pipeline(tmp_path, "--input", str(a / "**" / "*.pcap*"), "--output", str(out))
    assert rc == 0, err
    assert not stale.exists() and status_of(out)[0] == files


@pytest.mark.parametrize("args, says", [
    (["--overlap-policy", "nope"], "invalid choice: 'nope'"),
    (["--engine", "nope"], "invalid choice: 'nope'"),
    (["--host-policy", "10.0.0.0/33=bsd"], "host policy '10.0.0.0/33=bsd'"),
    (["--host-policy", "10.0.0.0/8=nope"], "host policy '10.0.0.0/8=nope'"),
])
def test_run_refuses_bad_engine_settings_before_work(tmp_path, args, says):
    a = tmp_path / "in"
    write_samples(str(a))
    out = tmp_path / "out"
    rc, err = run_pipeline(tmp_path, "--input", str(a / "*"), "--output", str(out), *args)
    assert rc == 2 and says in err, err
    assert not out.exists()


@pytest.mark.parametrize("args, codec", [
    (["--compression", "snappy"], "SNAPPY"),
    (["--compression", "gzip", "--compression-level", "9"], "GZIP"),
    (["--compression", "none"], "UNCOMPRESSED"),
    (["--compression", "lz4"], "LZ4"),
    (["--compression", "brotli", "--compression-level", "5"], "BROTLI"),
    (["--compression-level", "7"], "ZSTD"),
])
def test_run_parquet_codec(tmp_path, args, codec):
    """--compression: every column chunk in that codec; pyarrow and DuckDB read the same
    records as the transcript gives."""
    a = tmp_path / "in"
    write_samples(str(a))
    out = tmp_path / "out"
    rc, err = run_pipeline(tmp_path, "--input", str(a / "*"), "--output", str(out),
                           "--format", "parquet", *args)
    assert rc == 0, err
    files = sorted(out.rglob("*.parquet"))
    assert files
    for f in files:
        md = pq.ParquetFile(f).metadata
        assert {md.row_group(g).column(c).compression for g in range(md.num_row_groups)
                for c in range(md.num_columns)} == {codec}, f
    check_parquet_equals_transcript(out, tmp_path, "--bodies")


@pytest.mark.parametrize("args, says", [
    (["--compression", "snappy", "--compression-level", "3"], "snappy has no level"),
    (["--compression", "gzip", "--compression-level", "12"], "for gzip is 1..9, not 12"),
    (["--compression", "lz4", "--format", "jsonl"], "are for --format parquet"),
    (["--compression", "xz"], "invalid choice: 'xz'"),
])
def test_run_refuses_bad_codec_settings(tmp_path, args, says):
    a = tmp_path / "in"
    write_samples(str(a))
    out = tmp_path / "out"
    rc, err = run_pipeline(tmp_path, "--input", str(a / "*"), "--output", str(out),
                           "--format", "parquet", *args)
    assert rc == 2 and says in err, err
    assert not out.exists()


@pytest.mark.parametrize("argv, n", [
    (["--input", "x", "--workers", "3"], 3),
    (["--workers=2", "--direct_num_workers=1"], 1),
    (["--workers", "2", "--no-isolate"], 0),
    (["--workers", "2", "--runner", "FlinkRunner"], 0),
    (["--runner=DirectRunner"], 0),
    (["--workers", "2", "--dry-run"], 0),
    (["--help"], 0),
    (["--workers", "two"], 0),
])
def test_unit_processes_start_before_beam(argv, n):
    """`c2scribe run` starts its local unit processes before importing Beam; workers take
    them, then make new ones; the ones left are closed."""
    from pipeline import sandbox
    assert sandbox.prestart(argv) == n == len(sandbox._READY)
    ready = list(sandbox._READY)
    try:
        taken = [sandbox.take(30) for _ in range(n + 1)]
        assert taken[:n] == ready[::-1] and taken[n] not in ready
        assert taken[n].proc is None and all(p.timeout == 30 for p in taken)
        if n:
            assert taken[0].proc.poll() is None
    finally:
        for p in ready:
            p.close()
    sandbox.prestart(["--workers", "1"])
    left = sandbox._READY[0]
    sandbox.close_unused()
    assert not sandbox._READY and left.proc is None


def test_run_shared_http_traces(tmp_path):
    td = find_testdata()
    if td is None or not (td / "zeek/Traces/http").is_dir():
        pytest.skip("shared real captures (zeek/Traces/http) not found")
    src = td / "zeek/Traces/http"
    out = tmp_path / "out"
    # each file is a capture of its own: one sensor per file name
    rc, err = run_pipeline(tmp_path, "--input", f"{src}/*.pcap", f"{src}/*.pcapng",
                           "--output", str(out), "--sensor-pattern", r"/(?P<sensor>[^/]+)$",
                           timeout=180)
    files, units = status_of(out)
    n = len(list(src.glob("*.pcap"))) + len(list(src.glob("*.pcapng")))
    assert len(files) == n and len(units) == n, err
    assert not any(u["failure"] for u in units.values())
    assert rc == (1 if any(s["status"] != "ok" for s in files.values()) else 0), err
    units = check_equal_to_transcript(out)
    assert sum(u["records"].get("c2scribe.http", 0) for u in units.values()) > 50


# ----------------------------------------------------------------------- Parquet read back

def _unit_of(path: str) -> str:
    m = re.match(r"part-(.+)-\d{5,}\.parquet$", os.path.basename(path))
    assert m, path
    return m.group(1)


def _doc(d: dict) -> str:
    """A jsonl document or a normalised Parquet row, as one canonical string: no partition
    columns, no @timestamp (= event.start), no nulls (a Parquet table has every column)."""
    return json.dumps({k: v for k, v in d.items() if v is not None and k not in
                       ("@timestamp", "date", "sensor", "filename")}, sort_keys=True)


def parquet_docs(out: Path) -> dict[str, list[str]]:
    """Every row of every dataset, by unit, read back with pyarrow and with DuckDB (which
    must agree), as canonical jsonl documents."""
    import duckdb
    import pyarrow.dataset as pads
    from c2scribe.schema import RECORD_TYPES
    from transforms.parquet import dataset_dir
    by_unit: dict[str, list[str]] = {}
    for cls in RECORD_TYPES:
        root = out / dataset_dir(cls.dataset)
        if not root.is_dir():
            continue
        ds = pads.dataset(str(root), format="parquet", partitioning="hive")
        via_arrow: dict[str, list[str]] = {}
        for frag in ds.get_fragments():
            for row in frag.to_table().to_pylist():
                via_arrow.setdefault(_unit_of(frag.path), []).append(
                    _doc(normalise_row(cls, row)))
        con = duckdb.connect()
        try:
            pattern = str(root / "**" / "*.parquet").replace("'", "''")
            cur = con.execute(f"SELECT * FROM read_parquet('{pattern}', hive_partitioning=true, "
                              "filename=true)")
            names = [c[0] for c in cur.description]
            via_duckdb: dict[str, list[str]] = {}
            for values in cur.fetchall():
                row = dict(zip(names, values))
                via_duckdb.setdefault(_unit_of(row["filename"]), []).append(
                    _doc(normalise_row(cls, row)))
        finally:
            con.close()
        assert {u: sorted(v) for u, v in via_arrow.items()} == \
            {u: sorted(v) for u, v in via_duckdb.items()}, f"{cls.dataset}: pyarrow != DuckDB"
        for u, docs in via_arrow.items():
            by_unit.setdefault(u, []).extend(docs)
    return {u: sorted(v) for u, v in by_unit.items()}


def transcript_jsonl(paths: list[str], tmp: Path, *args: str) -> list[str]:
    """`c2scribe transcript --format jsonl ARGS PATHS`, in this process (one engine at a
    time), as canonical documents."""
    from c2scribe.cli import main
    dest = tmp / "transcript.jsonl"
    rc = main(["transcript", "--format", "jsonl", "-q", "-o", str(dest), *args, *paths])
    assert rc in (0, 1)
    return sorted(_doc(json.loads(x)) for x in dest.read_text().splitlines())


def check_parquet_equals_transcript(out: Path, tmp: Path, *args: str,
                                    datasets: tuple | None = None) -> dict:
    """Unit by unit, the Parquet rows (of these datasets: all by default) equal the
    transcript's documents over the unit's chain."""
    files, units = status_of(out)
    got = parquet_docs(out)
    assert set(got) <= set(units), set(got) - set(units)
    for uid in units:
        chain = [f for f, s in sorted(files.items(), key=lambda kv: kv[1]["order"])
                 if s["unit"] == uid]
        want = transcript_jsonl(chain, tmp, *args)
        have = got.get(uid, [])
        if datasets is not None:
            have = [d for d in have if json.loads(d)["event.dataset"] in datasets]
        assert have == want, (f"unit {uid} ({len(chain)} files): {len(have)} Parquet rows, "
                              f"transcript {len(want)}; only Parquet: "
                              f"{sorted(set(have) - set(want))[:1]}, only transcript: "
                              f"{sorted(set(want) - set(have))[:1]}")
    return units


def test_run_all_shared_testdata_parquet_equals_transcript(tmp_path):
    """The issue's check: `c2scribe run` over all of ../shared/testdata, recursively, with
    the default Parquet output (bodies up to 64k), read back with pyarrow and DuckDB, equals
    unit by unit (a directory's files, as one chain) `c2scribe transcript --format jsonl
    --bodies` over the same files in the same order."""
    td = find_testdata()
    if td is None:
        pytest.skip("../shared/testdata not found")
    out = tmp_path / "out"
    rc, err = run_pipeline(tmp_path, "--input", f"{td}/**/*", "--output", str(out),
                           "--format", "parquet", timeout=900)
    files, units = status_of(out)
    assert not any(u["failure"] for u in units.values()), err
    # every file has its status: text files (oracles, notes) are unreadable captures
    n = sum(1 for p in td.rglob("*") if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(td).parts))
    assert len(files) == n, err
    assert rc == 1 and "unreadable" in err
    assert sum(s["status"] == "ok" for s in files.values()) > 600
    units = check_parquet_equals_transcript(out, tmp_path, "--bodies")
    assert sum(u["records"].get("c2scribe.http", 0) for u in units.values()) > 900


def test_run_decoders_parquet_equals_transcript(tmp_path):
    """With decoders: C2 messages and decode errors, in Parquet, equal the transcript's."""
    td = find_testdata()
    if td is None:
        pytest.skip("../shared/testdata not found")
    dirs = [td / "corelight-zeek-caldera-detector/testing/Traces",
            td / "keithjjones-zeek-njrat-detector/testing/Traces"]
    if not all(d.is_dir() for d in dirs):
        pytest.skip("caldera and njRAT captures not found")
    out = tmp_path / "out"
    dec = ["--decoder", "caldera-sandcat", "--decoder", "caldera-ragdoll", "--decoder", "njrat"]
    rc, err = run_pipeline(tmp_path, "--input", *(f"{d}/*.pcap" for d in dirs), "--output",
                           str(out), "--format", "parquet", "--body-keep", "64m", *dec)
    assert rc == 0, err
    # the decoders' messages and errors: what `transcript --decoder` writes
    units = check_parquet_equals_transcript(out, tmp_path, "--bodies", *dec,
                                            datasets=("c2scribe.c2", "c2scribe.decode_error",
                                                      "c2scribe.warning",
                                                      "c2scribe.capture_error"))
    assert sum(u["records"].get("c2scribe.c2", 0) for u in units.values()) > 50
    # and the connections and transactions they were decoded from, bodies whole
    check_parquet_equals_transcript(out, tmp_path, "--bodies", "--body-keep", "64m",
                                    datasets=("c2scribe.connection", "c2scribe.http",
                                              "c2scribe.warning", "c2scribe.capture_error"))


def test_run_rerun_windowed_replaces_whole_chain_outputs(tmp_path):
    """A chain processed whole, then in windows (or back): the other form's outputs go."""
    a = tmp_path / "in"
    write_samples(str(a))
    out = tmp_path / "out"
    for extra in ((), ("--window", "60"), ()):
        rc, err = run_pipeline(tmp_path, "--input", f"{a}/*", "--output", str(out),
                               "--format", "parquet", *extra)
        assert rc == 0, err
        got = parquet_docs(out)
        flat = sorted(d for docs in got.values() for d in docs)
        assert len(flat) == len(set(flat)), "records twice after a re-run"
        assert all(("-w" in u) == bool(extra) for u in got), sorted(got)


# --------------------------------------------------------------------- crashes and hangs

CRASHER = '''
"""Test decoder: kills its own process (as a crash in C would) or hangs, on one URI."""
import os
import signal
import time

from c2scribe.decoders.api import HttpDecoder


class Crasher(HttpDecoder):
    name = "crasher"
    version = "0"

    def request(self, tx, ctx):
        if tx.uri and tx.uri.startswith("/index"):
            if os.environ.get("CRASHER_HANG"):
                time.sleep(3600)
            os.kill(os.getpid(), signal.SIGSEGV)
        return None
'''


@pytest.mark.parametrize("mode", ["crash", "hang"])
def test_unit_that_kills_its_worker_is_reported_and_the_run_goes_on(tmp_path, mode):
    """A unit whose processing kills its process (SIGSEGV) or hangs is retried once, then
    recorded as failed with the reason, its partial outputs removed; the other units run."""
    good, bad = tmp_path / "good", tmp_path / "bad"
    write_samples(str(good))
    bad.mkdir()
    shutil.copy(good / "web-keepalive.pcap", bad / "web-keepalive.pcap")   # GET /index...
    os.remove(good / "web-keepalive.pcap")
    dec = tmp_path / "crasher.py"
    dec.write_text(CRASHER)
    env = dict(os.environ, CRASHER_HANG="1" if mode == "hang" else "")
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "c2scribe", "run", "--workers", "2",
                        "--input", f"{good}/*", f"{bad}/*", "--output", str(out),
                        "--decoder", str(dec), "--unit-timeout", "8"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert p.returncode == 1, p.stderr
    files, units = status_of(out)
    failed = [u for u in units.values() if u["failure"]]
    assert len(failed) == 1 and failed[0]["sensor"] == "bad", units
    why = "killed by SIGSEGV" if mode == "crash" else "longer than 8 s"
    assert "failed 2 times" in failed[0]["failure"] and why in failed[0]["failure"]
    assert files[str(bad / "web-keepalive.pcap")]["status"] == "failed"
    assert all(s["status"] == "ok" for f, s in files.items() if f.startswith(str(good)))
    assert "unit failed 2 times" in p.stderr and why in p.stderr
    # nothing of the failed unit in the outputs; the good unit's records are there
    leftovers = [x for x in out.rglob("*") if failed[0]["unit"] in x.name
                 and "_status" not in x.parts]
    assert not leftovers, leftovers
    ok_unit = next(u for u in units.values() if u["sensor"] == "good")
    assert ok_unit["records"].get("c2scribe.http", 0) > 0
