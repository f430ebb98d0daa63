"""The C engine's columnar batches (Engine(columns=True), the Parquet sink's path) equal the
tables records_to_table makes of the same records, value for value.

Both start from the same engine; what differs is everything after it: the dict backend,
the schema's derived fields and conversions in Python, pyarrow's conversion of Python
objects. Hostile bytes (invalid UTF-8, NUL, control characters, a 4-byte sequence, a
surrogate), empty and missing headers, nulls, lost messages, IPv6 and batch edges are
covered on captures built here; every shared capture too, when ../shared/testdata exists.
"""
from __future__ import annotations

import pyarrow as pa
import pytest

from c2scribe.arrow import arrow_schema, records_to_table
from c2scribe.capture import run_chain
from c2scribe.engine import ENGINES, Engine
from c2scribe.decoders.api import RequestHead
from c2scribe.schema import Connection, ConnectionEnd, EngineWarning, HttpTransaction
from transforms.parquet import ParquetDatasetWriter

from helpers import find_testdata

DATA = find_testdata()
CAPTURES = sorted(p for ext in ("*.pcap", "*.pcapng") for p in DATA.rglob(ext)) if DATA else []
COLUMNAR = (Connection, HttpTransaction)


def both_ways(files, *, bodies=True, batch_rows=4096, batch_bytes=8 << 20, **opts):
    """(tables from Record objects, tables from the batches, the batches' other records,
    the Record path's other records)"""
    files = [str(f) for f in files]
    recs = list(run_chain(Engine(**opts), files))
    want = {cls: records_to_table(cls, [r for r in recs if type(r) is cls], bodies=bodies)
            for cls in COLUMNAR}
    out = list(run_chain(Engine(columns=True, bodies=bodies, batch_rows=batch_rows,
                                batch_bytes=batch_bytes, **opts), files))
    # with_records: the same batches, and the Record mode's records besides
    dual = list(run_chain(Engine(columns=True, with_records=True, bodies=bodies,
                                 batch_rows=batch_rows, batch_bytes=batch_bytes, **opts), files))
    assert [r for r in dual if not isinstance(r, pa.RecordBatch)] == recs
    dual_batches = [b for b in dual if isinstance(b, pa.RecordBatch)]
    out_batches = [b for b in out if isinstance(b, pa.RecordBatch)]
    assert len(dual_batches) == len(out_batches)
    assert all(a.equals(b) for a, b in zip(dual_batches, out_batches))
    assert_selected(files, recs, out_batches, bodies=bodies, batch_rows=batch_rows,
                    batch_bytes=batch_bytes, **opts)
    batches = [b for b in out if isinstance(b, pa.RecordBatch)]
    for b in batches:
        assert b.num_rows <= batch_rows
    got = {cls: pa.Table.from_batches([b for b in batches if b.schema.equals(
        arrow_schema(cls), check_metadata=True)], schema=arrow_schema(cls)) for cls in COLUMNAR}
    others = [r for r in out if not isinstance(r, pa.RecordBatch)]
    return want, got, others, [r for r in recs if type(r) not in COLUMNAR]


def assert_selected(files, recs, batches, **kw):
    """with_records and a selector (decoders): select() is asked with each transaction's
    RequestHead fields, in order; the same batches; a Record of the transactions it chose
    only, and a ConnectionEnd for each connection, where the Record mode has them."""
    asked = []

    def select(conn_id, index, file, frame, *head):
        asked.append((conn_id, index, file, frame, RequestHead(*head, is_connect=head[0] ==
                                                                 "CONNECT")))
        return len(asked) % 2 == 1
    out = list(run_chain(Engine(columns=True, with_records=True, select=select, **kw), files))
    txs = [r for r in recs if type(r) is HttpTransaction]
    assert asked == [(t.conn_id, t.index, t.file_first, t.frame_first, RequestHead.of(t))
                     for t in txs]
    got = [b for b in out if isinstance(b, pa.RecordBatch)]
    assert len(got) == len(batches) and all(a.equals(b) for a, b in zip(got, batches))
    chosen = {t.tx_id for t in txs[::2]}
    assert [r for r in out if not isinstance(r, pa.RecordBatch)] == [
        ConnectionEnd(r.conn_id) if type(r) is Connection else r for r in recs
        if type(r) is not HttpTransaction or r.tx_id in chosen]


def assert_equal_tables(want, got, what=""):
    for cls in COLUMNAR:
        w, g = want[cls], got[cls]
        assert g.num_rows == w.num_rows, (what, cls.__name__)
        for name in w.column_names:
            assert g[name].equals(w[name]), (what, cls.__name__, name, g[name].to_pylist()[:4],
                                             w[name].to_pylist()[:4])


@pytest.fixture(scope="module")
def hostile_capture(tmp_path_factory):
    from native_captures import Conv, http_get, http_response
    d = tmp_path_factory.mktemp("columns")
    pkts = []
    odd = b"caf\xc3\xa9 \xff\xfe\x00\x1b[31m \xf0\x9f\x98\x80 \xed\xa0\x80 \xe2\x82"
    c = Conv(pkts=pkts).handshake()
    c.send("c", b"GET /" + odd.replace(b" ", b"%20") + b" HTTP/1.1\r\nHost: h\xfc.test\r\n"
           b"X-Odd: " + odd.replace(b"\x00", b"") + b"\r\nUser-Agent: \xc0\xaf\r\n\r\n")
    c.send("s", http_response(b"\x00\xff" * 3000 + odd, chunked=True, extra=b"X-E:\r\n"))
    c.send("c", http_get("/second"))                    # unanswered
    c.close()
    v6 = Conv(("2001:db8::1", 40001), ("2001:db8::2", 8080), pkts=pkts, t0=1_700_000_100.0)
    v6.handshake().send("c", b"POST http://proxy.test:8080/p?q=1 HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Length: 3\r\n\r\nabc")
    v6.send("s", b"HTTP/1.1 204 No Content\r\n\r\n").close()
    lost = Conv(("10.0.0.3", 40002), ("10.0.0.4", 80), pkts=pkts, t0=1_700_000_200.0)
    lost.handshake().send("c", http_get("/lost"), keep=False)
    lost.send("c", http_get("/kept")).send("s", http_response(b"x" * 10))
    lost.send("s", http_response(b"y" * 20)).close()
    other = Conv(("10.0.0.5", 40003), ("10.0.0.6", 22), pkts=pkts, t0=1_700_000_300.0)
    other.handshake().send("c", b"SSH-2.0-x\r\n\xff\x00").close()   # not HTTP, bytes kept
    pkts.sort(key=lambda p: p.time)
    return Conv(pkts=pkts).write(d / "hostile.pcap")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bodies", [True, False])
def test_batches_equal_record_tables_on_hostile_bytes(hostile_capture, engine, bodies):
    want, got, others, want_others = both_ways([hostile_capture], bodies=bodies, engine=engine,
                                               body_keep=1 << 20, stream_keep=4096)
    assert want[HttpTransaction].num_rows >= 4 and want[Connection].num_rows == 4
    assert_equal_tables(want, got, engine)
    assert [type(r) for r in others] == [type(r) for r in want_others]
    assert all(type(r) is EngineWarning for r in others)
    uri = got[HttpTransaction]["url.original"].to_pylist()
    assert any("\\xff\\xfe" in u for u in uri if u)             # backslashreplace, as Python
    content = got[HttpTransaction]["c2scribe.http.response.body.content"]
    assert (content.null_count < len(content)) == bodies


def test_batches_are_cut_by_rows_and_bytes(hostile_capture):
    opts = dict(body_keep=1 << 20, stream_keep=4096)
    for rows, nbytes in ((1, 8 << 20), (2, 8 << 20), (4096, 1)):
        want, got, _o, _w = both_ways([hostile_capture], batch_rows=rows, batch_bytes=nbytes,
                                      **opts)
        assert_equal_tables(want, got, (rows, nbytes))
    with pytest.raises(ValueError):
        Engine(columns=True, batch_rows=0)


def test_writer_takes_batches_as_it_takes_records(hostile_capture, tmp_path):
    """Same rows in the same files (a batch across midnight is split by date)."""
    files = [str(hostile_capture)]
    recs = list(run_chain(Engine(body_keep=1 << 20), files))
    out = list(run_chain(Engine(body_keep=1 << 20, columns=True, bodies=True, batch_rows=3),
                         files))
    day = 86_400 * 1_000_000
    shift = (1_700_000_150 * 1_000_000 // day + 1) * day - 1_700_000_150 * 1_000_000

    def moved(table_or_batch):                   # the later connections move to the next day
        cols = []
        for f, col in zip(table_or_batch.schema, table_or_batch.columns):
            if pa.types.is_timestamp(f.type):
                us = col.cast(pa.int64()).to_pylist()
                col = pa.array([None if v is None else v + shift if v > 1_700_000_150_000_000
                                else v for v in us], pa.int64()).cast(f.type)
            cols.append(col)
        return pa.RecordBatch.from_arrays(cols, schema=table_or_batch.schema)

    def write(root, items):
        with ParquetDatasetWriter(root, sensor="s", unit="u", bodies=True,
                                  row_group_size=2) as w:
            for x in items:
                (w.write_batch if isinstance(x, pa.RecordBatch) else w.write)(x)
        return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))

    import dataclasses
    from c2scribe.schema import fields_of

    def moved_rec(r):
        if type(r) not in COLUMNAR:
            return r
        ch = {a: getattr(r, a) + shift for a, _n, t, _j in fields_of(type(r))
              if t == "ts" and getattr(r, a) is not None and getattr(r, a) > 1_700_000_150_000_000}
        return dataclasses.replace(r, **ch)

    a = write(tmp_path / "records", [moved_rec(r) for r in recs])
    b = write(tmp_path / "batches", [moved(x) if isinstance(x, pa.RecordBatch) else x
                                     for x in out])
    assert a == b and len({p.split("/")[1] for p in a}) >= 3     # two days and "unknown"
    import pyarrow.parquet as pq
    for rel in a:
        ta, tb = pq.read_table(tmp_path / "records" / rel), pq.read_table(tmp_path / "batches" / rel)
        assert ta.equals(tb), rel


@pytest.mark.skipif(not CAPTURES, reason="../shared/testdata not present")
@pytest.mark.parametrize("engine", ENGINES)
def test_batches_equal_record_tables_on_every_shared_capture(engine):
    differ, rows = [], 0
    for path in CAPTURES:
        want, got, others, want_others = both_ways([path], engine=engine, body_keep=4096,
                                                   stream_keep=4096, batch_rows=7)
        try:
            assert_equal_tables(want, got)
            assert [type(r) for r in others] == [type(r) for r in want_others]
        except AssertionError as e:
            differ.append((str(path.relative_to(DATA)), str(e)[:300]))
        rows += sum(t.num_rows for t in want.values())
    assert not differ, differ
    assert len(CAPTURES) > 600 and rows > 1500


def test_with_records_gives_both(hostile_capture):
    """with_records=True (decoders with the Parquet sink): the same batches, and the same
    Record objects as the Record mode, stream chunks included."""
    files = [str(hostile_capture)]
    opts = dict(body_keep=1 << 20, stream_keep=4096)
    recs = list(run_chain(Engine(stream_chunks=True, **opts), files))
    out = list(run_chain(Engine(columns=True, with_records=True, bodies=True, batch_rows=2,
                                stream_chunks=True, **opts), files))
    assert [r for r in out if not isinstance(r, pa.RecordBatch)] == recs
    want, got, _o, _w = both_ways(files, batch_rows=2, **opts)
    batches = [b for b in out if isinstance(b, pa.RecordBatch)]
    for cls in COLUMNAR:
        t = pa.Table.from_batches([b for b in batches if b.schema.equals(
            arrow_schema(cls), check_metadata=True)], schema=arrow_schema(cls))
        assert t.equals(got[cls]) and t.equals(want[cls])


@pytest.mark.parametrize("limit", [0, 1, 100, 5999, 1 << 20])
def test_clip_batch_is_clip_bodies(hostile_capture, limit):
    from pipeline.work import clip_batch, clip_bodies
    files = [str(hostile_capture)]
    recs = [r for r in run_chain(Engine(body_keep=1 << 20), files)
            if isinstance(r, HttpTransaction)]
    want = records_to_table(HttpTransaction, [clip_bodies(r, limit) for r in recs], bodies=True)
    out = [b for b in run_chain(Engine(body_keep=1 << 20, columns=True, bodies=True), files)
           if isinstance(b, pa.RecordBatch) and b.schema.equals(arrow_schema(HttpTransaction),
                                                                 check_metadata=True)]
    got = pa.Table.from_batches([clip_batch(b, limit) for b in out])
    assert got.equals(want)


def test_buffers_grown_by_one_big_body_are_given_back(tmp_path):
    """A body far larger than a batch makes its column's buffer large; the batch after it is
    built in fresh buffers, and every value is still right."""
    from native_captures import Conv, http_get, http_response
    c = Conv().handshake()
    for i, size in enumerate((300_000, 10, 200_000, 5)):
        c.send("c", http_get(f"/{i}"))
        c.send("s", http_response(bytes([65 + i]) * size))
    path = c.close().write(tmp_path / "big.pcap")
    for rows in (1, 2):
        want, got, _o, _w = both_ways([path], batch_rows=rows, batch_bytes=1000,
                                      body_keep=1 << 20)
        assert_equal_tables(want, got, rows)
        bodies = got[HttpTransaction]["c2scribe.http.response.body.content"].to_pylist()
        assert [len(b) for b in bodies] == [300_000, 10, 200_000, 5]
