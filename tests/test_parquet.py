"""Parquet output: c2scribe.arrow (schema from c2scribe.schema) and transforms.parquet (sink).

Records are written with ParquetDatasetWriter, read back with pyarrow.dataset and with DuckDB
(Hive partitioning), and compared record by record with the jsonl documents (Record.to_json)
after normalising types: timestamps back to ISO strings, header structs back to pairs, json
columns parsed, binary back to base64. Sources: the sample captures (always), a few synthetic
records of the types the samples lack, and real captures of ../shared/testdata when present.
"""
from __future__ import annotations

import collections
import datetime as dt
import json
import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from c2scribe.arrow import arrow_schema, records_to_table, to_arrow_row
from c2scribe.samples import write_samples
from c2scribe.schema import (RECORD_TYPES, SCHEMA_VERSION, C2Message, CaptureError, Connection,
                             DecodeError, EngineWarning, HttpTransaction, fields_of)
from transforms.parquet import ParquetDatasetWriter, dataset_dir, partition_date
from helpers import c2_records, canon, find_testdata, normalise_row, of_type, plain

SENSOR = "sensor-a"


# --------------------------------------------------------------------------------------------
# record sources
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample_records(tmp_path_factory):
    d = tmp_path_factory.mktemp("samples")
    recs = c2_records(write_samples(str(d)))
    assert of_type(recs, HttpTransaction) and of_type(recs, Connection)
    return recs


def synthetic_records() -> list:
    """Records of the types the samples lack, with None, nested JSON, odd text, midnight."""
    last_us_of_day = 1_700_006_399_999_999          # 2023-11-14T23:59:59.999999Z
    msgs = [
        C2Message(message_id="m1", ts_us=last_us_of_day, decoder="caldera-sandcat",
                  decoder_version="1.0", family="sandcat", agent="paw1", direction="c2s",
                  kind="beacon", text="check-in \u00e9\u2603 \x1b[31m",
                  command_id=None, fields={"b": [1, 2, {"x": None}], "a": "\u00fc"},
                  attachments=[{"name": "f.bin", "sha256": "00" * 32, "size": 3}],
                  conn_id="C1", tx_id="C1-1", src_ip="10.0.0.1", src_port=1234,
                  dst_ip="fe80::1", dst_port=80, file="/x.pcap", frame_first=1, frame_last=9),
        C2Message(message_id="m2", ts_us=last_us_of_day + 1, decoder="njrat",
                  decoder_version="2", family=None, agent=None, direction="s2c",
                  kind="command", text="", command_id="c1", fields={}, attachments=[],
                  conn_id=None, tx_id=None, src_ip=None, src_port=None, dst_ip=None,
                  dst_port=None, file=None, frame_first=None, frame_last=None),
        C2Message(message_id="m3", ts_us=None, decoder="njrat", decoder_version="2",
                  family="njrat", agent="a", direction="c2s", kind="output", text="x",
                  command_id="c1", fields={"n": 1.5}, attachments=[], conn_id="C2",
                  tx_id=None, src_ip="10.0.0.2", src_port=1, dst_ip="10.0.0.3", dst_port=2,
                  file="/y.pcap", frame_first=3, frame_last=4),
    ]
    return msgs + [
        DecodeError(decoder="njrat", decoder_version="2", hook="on_stream",
                    error_type="ValueError", message="bad", traceback="Traceback ...\n",
                    conn_id="C2", tx_id=None, file="/y.pcap", frame=3),
        CaptureError(file="/z.pcap", offset=1234, packets_before=10, message="truncated"),
        EngineWarning(code="w", count=2, message="skipped", file=None, frame=None),
    ]


def decoded(path, decoder: str) -> list:
    from c2scribe.decoders import DecoderRunner, load
    recs = c2_records(path, body_keep=64 << 20)
    runner = DecoderRunner([load(decoder)])
    out = []
    for r in recs:
        out += runner.feed(r)
    out += runner.finish()
    return recs + out


REAL = [("zeek/Traces/http/bro.org.pcap", None),
        ("corelight-zeek-caldera-detector/testing/Traces/sandcat.pcap", "caldera-sandcat")]


# --------------------------------------------------------------------------------------------
# normalising both sides to the same plain JSON values
# --------------------------------------------------------------------------------------------

def expected_docs(recs, cls, bodies: bool) -> list[dict]:
    """The jsonl documents of the records of one class, as the rows should read back."""
    out = []
    for r in recs:
        if type(r) is not cls:
            continue
        doc = plain(r.to_json(bodies=bodies))
        assert doc.pop("@timestamp") == doc.get("event.start")
        if not bodies:
            for _a, name, t, _j in fields_of(cls):
                if t == "bytes":
                    doc[name] = None          # a column of every table, null without bodies
        doc["date"] = partition_date(r)
        doc["sensor"] = SENSOR
        out.append(doc)
    return out


def assert_same_records(got: list[dict], want: list[dict], what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} rows read back, {len(want)} written"
    got, want = sorted(got, key=canon), sorted(want, key=canon)
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            diff = {k: (g.get(k, "<missing>"), w.get(k, "<missing>"))
                    for k in sorted(set(g) | set(w)) if g.get(k, "<m>") != w.get(k, "<m>")}
            pytest.fail(f"{what}: record {i} differs (read back, jsonl): {diff}")


def read_pyarrow(root: Path, cls) -> list[dict]:
    d = pads.dataset(str(root / dataset_dir(cls.dataset)), format="parquet", partitioning="hive")
    return [normalise_row(cls, r) for r in d.to_table().to_pylist()]


def read_duckdb(root: Path, cls) -> list[dict]:
    con = duckdb.connect()
    try:
        pattern = str(root / dataset_dir(cls.dataset) / "**" / "*.parquet").replace("'", "''")
        cur = con.execute(f"SELECT * FROM read_parquet('{pattern}', hive_partitioning=true)")
        names = [c[0] for c in cur.description]
        return [normalise_row(cls, dict(zip(names, row))) for row in cur.fetchall()]
    finally:
        con.close()


def check_roundtrip(recs, root: Path, *, bodies=False, unit="u1", **opts) -> list[str]:
    with ParquetDatasetWriter(root, sensor=SENSOR, unit=unit, bodies=bodies, **opts) as w:
        for r in recs:
            w.write(r)
    files = w.close()
    by_cls = collections.Counter(type(r) for r in recs)
    assert by_cls, "no records to write"
    for f in files:
        rel = Path(f).relative_to(root).parts
        cls = next(c for c in by_cls if dataset_dir(c.dataset) == rel[0])
        assert rel[1].startswith("date=") and rel[2] == f"sensor={SENSOR}"
        assert rel[3].startswith(f"part-{unit}-") and rel[3].endswith(".parquet")
        assert pq.read_schema(f).equals(arrow_schema(cls), check_metadata=True), f
        assert pq.ParquetFile(f).metadata.row_group(0).column(0).compression == "ZSTD"
    leftovers = [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".parquet")]
    assert not leftovers, leftovers
    for cls, n in by_cls.items():
        want = expected_docs(recs, cls, bodies)
        assert len(want) == n
        assert_same_records(read_pyarrow(root, cls), want, f"pyarrow.dataset {cls.dataset}")
        assert_same_records(read_duckdb(root, cls), want, f"duckdb {cls.dataset}")
    return files


# --------------------------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------------------------

def test_schema_generated_from_schema_module():
    kinds = {"str": pa.string(), "int": pa.int64(), "bool": pa.bool_(),
             "ts": pa.timestamp("us", tz="UTC"), "ip": pa.string(), "json": pa.string(),
             "bytes": pa.binary()}
    for cls in RECORD_TYPES:
        s = arrow_schema(cls)
        assert s.names == ["event.dataset", "c2scribe.schema_version",
                           *[name for _a, name, _t, _j in fields_of(cls)]]
        assert s.field("event.dataset").type == pa.string()
        assert s.field("c2scribe.schema_version").type == pa.int32()
        assert s.metadata[b"c2scribe.schema_version"] == str(SCHEMA_VERSION).encode()
        for _a, name, t, _j in fields_of(cls):
            typ = s.field(name).type
            if t == "headers":
                assert pa.types.is_list(typ)
                assert typ.value_type == pa.struct([("name", pa.string()),
                                                    ("value", pa.string())])
            elif t == "strlist":
                assert pa.types.is_list(typ) and typ.value_type == pa.string()
            else:
                assert typ == kinds[t], (cls.__name__, name)
    assert "source.ip" in arrow_schema(HttpTransaction).names


def test_row_and_table_agree(sample_records):
    for bodies in (False, True):
        for cls in (HttpTransaction, Connection, EngineWarning):
            recs = of_type(sample_records, cls)
            table = records_to_table(cls, recs, bodies=bodies)
            rows = [to_arrow_row(r, bodies=bodies) for r in recs]
            assert table.equals(pa.Table.from_pylist(rows, schema=arrow_schema(cls)))
    with pytest.raises(TypeError):
        records_to_table(Connection, of_type(sample_records, HttpTransaction))
    syn = synthetic_records()
    row = to_arrow_row(syn[0])
    assert row["event.start"] == dt.datetime(2023, 11, 14, 23, 59, 59, 999999,
                                             tzinfo=dt.timezone.utc)
    assert json.loads(row["c2scribe.c2.fields"]) == syn[0].fields
    assert row["c2scribe.c2.fields"] == json.dumps(syn[0].fields, sort_keys=True)


def test_partition_date():
    syn = synthetic_records()
    assert partition_date(syn[0]) == "2023-11-14"
    assert partition_date(syn[1]) == "2023-11-15"       # one microsecond later, next UTC day
    assert partition_date(syn[2]) == "unknown"
    assert {partition_date(r) for r in syn[3:]} == {"unknown"}


# --------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------

def test_samples_roundtrip(sample_records, tmp_path):
    files = check_roundtrip(sample_records, tmp_path, max_rows_per_file=3)
    n_http = len(of_type(sample_records, HttpTransaction))
    http_files = [f for f in files if "/http/" in f]
    assert len(http_files) == -(-n_http // 3)           # files of up to 3 rows
    assert any("/date=unknown/" in f for f in files)     # the engine warning


def test_samples_roundtrip_with_bodies(sample_records, tmp_path):
    check_roundtrip(sample_records, tmp_path, bodies=True)
    t = pads.dataset(str(tmp_path / "http"), partitioning="hive").to_table()
    assert any(t.column("c2scribe.http.response.body.content").to_pylist())


def test_synthetic_roundtrip(tmp_path):
    files = check_roundtrip(synthetic_records(), tmp_path)
    c2 = [f for f in files if "/c2/" in f]
    assert {Path(f).parent.parent.name for f in c2} == {"date=2023-11-14", "date=2023-11-15",
                                                        "date=unknown"}


def test_max_bytes_splits_files(sample_records, tmp_path):
    files = check_roundtrip(sample_records, tmp_path, bodies=True, max_bytes=2000)
    http_files = [f for f in files if "/http/" in f]
    assert len(http_files) > 1
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in http_files) == \
        len(of_type(sample_records, HttpTransaction))


def test_row_groups_bound_memory(sample_records, tmp_path):
    """Records are written a row group at a time into one open file per directory: several
    row groups per file, and never more than a row group buffered."""
    w = ParquetDatasetWriter(tmp_path, sensor=SENSOR, unit="u1", row_group_size=2)
    for r in sample_records:
        w.write(r)
        assert all(o.pending < 2 for o in w._open.values())
    files = w.close()
    http = [f for f in files if "/http/" in f]
    n_http = len(of_type(sample_records, HttpTransaction))
    assert len(http) == 1 and pq.ParquetFile(http[0]).metadata.num_row_groups == -(-n_http // 2)
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]


@pytest.mark.shared
@pytest.mark.parametrize("rel,decoder", REAL, ids=[Path(r).name for r, _d in REAL])
def test_real_capture_roundtrip(rel, decoder, tmp_path):
    base = find_testdata()
    if base is None or not (base / rel).is_file():
        pytest.skip(f"shared capture {rel} not present")
    recs = decoded(base / rel, decoder) if decoder else c2_records(base / rel)
    if decoder:
        assert of_type(recs, C2Message), "the decoder found no C2 message"
    assert of_type(recs, HttpTransaction)
    check_roundtrip(recs, tmp_path, max_rows_per_file=50)
    check_roundtrip(recs, tmp_path / "bodies", bodies=True)


# --------------------------------------------------------------------------------------------
# re-runs, atomicity, validation
# --------------------------------------------------------------------------------------------

def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _rows(root: Path, cls) -> int:
    return pads.dataset(str(root / dataset_dir(cls.dataset)), partitioning="hive").count_rows()


def test_rerun_same_unit_replaces(sample_records, tmp_path):
    n_http = len(of_type(sample_records, HttpTransaction))
    first = check_roundtrip(sample_records, tmp_path, max_rows_per_file=2)
    files = _all_files(tmp_path)
    inode = {f: os.stat(f).st_ino for f in first}
    again = check_roundtrip(sample_records, tmp_path, max_rows_per_file=2)  # checks counts
    assert again == first and _all_files(tmp_path) == files
    assert all(os.stat(f).st_ino != inode[f] for f in first)      # new files, renamed over
    # a re-run that makes fewer files leaves none of the earlier run's extra files behind
    check_roundtrip(sample_records, tmp_path, max_rows_per_file=1000)
    assert len(_all_files(tmp_path)) < len(files)
    assert _rows(tmp_path, HttpTransaction) == n_http
    # another unit adds its own files next to the first unit's
    with ParquetDatasetWriter(tmp_path, sensor=SENSOR, unit="u2") as w:
        w.write_all(sample_records)
    assert _rows(tmp_path, HttpTransaction) == 2 * n_http


def test_failed_write_leaves_nothing(sample_records, tmp_path, monkeypatch):
    import transforms.parquet as tp

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(tp.pq.ParquetWriter, "write_table", boom)
    w = ParquetDatasetWriter(tmp_path, sensor=SENSOR, unit="u1")
    w.write_all(sample_records)
    with pytest.raises(OSError, match="disk full"):
        w.close()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_rejects_bad_names_and_use_after_close(tmp_path):
    for bad in ("", "../x", "a/b", "a=b", ".hidden", "x y"):
        with pytest.raises(ValueError):
            ParquetDatasetWriter(tmp_path, sensor=bad, unit="u")
        with pytest.raises(ValueError):
            ParquetDatasetWriter(tmp_path, sensor="s", unit=bad)
    w = ParquetDatasetWriter(tmp_path, sensor="s", unit="u")
    assert w.close() == []
    with pytest.raises(ValueError):
        w.write(synthetic_records()[0])
    with pytest.raises(TypeError):
        ParquetDatasetWriter(tmp_path, sensor="s", unit="u").write({"not": "a record"})


def test_beam_write_parquet(sample_records, tmp_path):
    beam = pytest.importorskip("apache_beam")
    from transforms.parquet import WriteParquet
    units = [("unit-a", sample_records), ("unit-b", synthetic_records())]
    out = tmp_path / "paths.txt"
    with beam.Pipeline(runner="DirectRunner") as p:
        _ = (p | beam.Create(units) | WriteParquet(str(tmp_path / "ds"), sensor=SENSOR)
             | beam.Map(str) | beam.io.WriteToText(str(out), shard_name_template=""))
    written = sorted(out.read_text().split())
    assert written and written == sorted(str(p) for p in (tmp_path / "ds").rglob("*.parquet"))
    recs = sample_records + synthetic_records()
    for cls in {type(r) for r in recs}:
        want = expected_docs(recs, cls, bodies=False)
        assert_same_records(read_duckdb(tmp_path / "ds", cls), want, f"beam {cls.dataset}")
