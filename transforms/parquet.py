"""Parquet sink: records -> one Hive-partitioned Parquet dataset per record type.

Layout (``<dataset>`` is the last part of the record class's ``dataset``: ``connection``,
``http``, ``c2``, ``decode_error``, ``capture_error``, ``warning``)::

    root/<dataset>/date=YYYY-MM-DD/sensor=<sensor>/part-<unit>-<seq>.parquet

``date`` is the UTC day of the record's ``event.start`` (``date=unknown`` for records without
one: warnings, capture and decode errors). ``<seq>`` counts the files this writer wrote into
that directory (00000, 00001, ...): with the same ``unit`` and the same records in the same
order a re-run writes the same file names, replacing the earlier files instead of adding
to them; on close, files of the same unit left over from an earlier run are removed, in
every dataset and date of this sensor. Every file is written under a hidden temporary name in its final
directory, fsynced, then renamed with ``os.replace`` (readers never see half a file).

:class:`ParquetDatasetWriter` is plain Python (no Beam). It takes Record objects
(``write``) and the C engine's columnar batches (``write_batch``, what ``c2scribe run``
gives it without decoders); the same rows make the same files either way.
:class:`WriteParquet`, the Beam PTransform around it, is built on first access so importing
this module does not import Beam.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from c2scribe.arrow import META_DATASET, records_to_table, row_nbytes
from c2scribe.schema import RECORD_TYPES, Record, fields_of

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def dataset_dir(dataset: str) -> str:
    """Directory of a dataset: ``c2scribe.http`` -> ``http`` (as the jsonl output names it)."""
    return dataset.rsplit(".", 1)[-1]
_US_PER_DAY = 86_400 * 1_000_000


def _check_name(what: str, v: str) -> str:
    if not isinstance(v, str) or not _SAFE.match(v) or len(v) > 200:
        raise ValueError(f"{what} must be letters, digits, '.', '_' or '-' (not starting with "
                         f"'.', '_' or '-'), at most 200 characters: {v!r}")
    return v


_START: dict[type, str | None] = {}


def _start_attr(cls: type) -> str | None:
    """The attribute holding a class's event.start (else its first ts field, else None)."""
    if cls not in _START:
        ts = [(attr, name) for attr, name, t, _j in fields_of(cls) if t == "ts"]
        pick = next((a for a, n in ts if n == "event.start"), ts[0][0] if ts else None)
        _START[cls] = pick
    return _START[cls]


def partition_date(record: Record) -> str:
    """``YYYY-MM-DD`` (UTC) of the record's start time, or ``unknown``."""
    attr = _start_attr(type(record))
    us = getattr(record, attr) if attr else None
    return "unknown" if us is None else _day(us)


def _batch_dates(batch: pa.RecordBatch, cls: type) -> list[tuple[str, pa.RecordBatch]]:
    """A batch's rows by partition date (partition_date's rule), each part in row order."""
    attr = _start_attr(cls)
    name = next((n for a, n, _t, _j in fields_of(cls) if a == attr), None)
    if name is None or not batch.num_rows:
        return [("unknown", batch)]
    us = batch.column(name).cast(pa.int64())
    if us.null_count == 0:
        mm = pc.min_max(us).as_py()
        lo, hi = mm["min"], mm["max"]
        if lo // _US_PER_DAY == hi // _US_PER_DAY:                 # the usual case: one day
            return [(_day(lo), batch)]
    rows: dict[str, list[int]] = {}
    for i, v in enumerate(us.to_pylist()):
        rows.setdefault("unknown" if v is None else _day(v), []).append(i)
    return [(d, batch.take(pa.array(ix, pa.int64()))) for d, ix in rows.items()]


def _without_content(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Kept content (binary columns) null, as records_to_table(bodies=False) makes it."""
    cols = [pa.nulls(batch.num_rows, c.type) if pa.types.is_binary(c.type) and
            c.null_count < len(c) else c for c in batch.columns]
    return pa.RecordBatch.from_arrays(cols, schema=batch.schema)


def _day(us: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=us // _US_PER_DAY)).isoformat()


_CLASS_OF = {cls.dataset.encode(): cls for cls in RECORD_TYPES}


class _Open:
    """One (dataset, date) directory being written: the open file, the row group being
    buffered (records, or batches of the C engine's columnar output), and how much the file
    holds so far."""
    __slots__ = ("cls", "parts", "pending", "nbytes", "seq", "writer", "tmp", "final", "rows",
                 "file_bytes")

    def __init__(self, cls: type):
        self.cls, self.parts, self.nbytes, self.seq = cls, [], 0, 0
        self.pending = 0                            # rows buffered (records and batches)
        self.writer = self.tmp = self.final = None
        self.rows = self.file_bytes = 0


class ParquetDatasetWriter:
    """Write records as Parquet files under ``root``; see the module docstring for the layout.

    ``sensor`` and ``unit`` name the partition and the files: letters, digits, ``.``, ``_``
    and ``-``. Records are buffered per (dataset, date) directory only up to a row group
    (``row_group_size`` rows or about ``row_group_bytes`` of data), which is then written to
    that directory's open file: memory stays bounded whatever the unit's size. A file is
    finished (renamed into place) once it holds ``max_rows_per_file`` rows or about
    ``max_bytes`` of data, or at ``close()``, which returns the paths of all files written,
    in writing order. Not thread-safe; one writer per unit of work.
    """

    def __init__(self, root: str | os.PathLike, *, sensor: str, unit: str,
                 max_rows_per_file: int = 250_000, max_bytes: int = 256 << 20,
                 bodies: bool = False, compression: str = "zstd",
                 compression_level: int | None = None, row_group_size: int = 65_536,
                 row_group_bytes: int = 16 << 20, remove_stale: bool = True):
        if min(max_rows_per_file, max_bytes, row_group_size, row_group_bytes) < 1:
            raise ValueError("max_rows_per_file, max_bytes, row_group_size and "
                             "row_group_bytes must be >= 1")
        self.root = os.fspath(root)
        self.sensor = _check_name("sensor", sensor)
        self.unit = _check_name("unit", unit)
        self.max_rows_per_file = max_rows_per_file
        self.max_bytes = max_bytes
        self.bodies = bodies
        self.compression = compression
        self.compression_level = compression_level
        self.row_group_size = row_group_size
        self.row_group_bytes = min(row_group_bytes, max_bytes)
        self.remove_stale = remove_stale
        self._open: dict[tuple[str, str], _Open] = {}
        self._written: list[str] = []
        self._closed = False

    # ------------------------------------------------------------------------------------
    def directory(self, dataset: str, date: str) -> str:
        return os.path.join(self.root, dataset_dir(dataset), f"date={date}",
                            f"sensor={self.sensor}")

    def write(self, record: Record) -> None:
        """Buffer one record; writes a row group when its directory's buffer is full."""
        if self._closed:
            raise ValueError("ParquetDatasetWriter is closed")
        cls = type(record)
        if not isinstance(record, Record) or not cls.dataset:
            raise TypeError(f"not a c2scribe record: {record!r:.100}")
        key, o = self._directory_of(cls, partition_date(record))
        size = row_nbytes(record, bodies=self.bodies)
        self._room(key, o, size)
        o.parts.append(record)
        self._added(key, o, 1, size)

    def write_batch(self, batch: pa.RecordBatch) -> None:
        """Buffer a RecordBatch of a record class's arrow_schema (the C engine's columnar
        output); its rows go where write() would put the same records."""
        if self._closed:
            raise ValueError("ParquetDatasetWriter is closed")
        cls = _CLASS_OF.get((batch.schema.metadata or {}).get(META_DATASET))
        if cls is None:
            raise TypeError("not a batch of c2scribe records (no c2scribe.dataset metadata)")
        for date, part in _batch_dates(batch, cls):
            key, o = self._directory_of(cls, date)
            if not self.bodies:
                part = _without_content(part)
            self._room(key, o, part.nbytes)
            o.parts.append(part)
            self._added(key, o, part.num_rows, part.nbytes)

    def _directory_of(self, cls: type, date: str) -> tuple[tuple[str, str], _Open]:
        key = (cls.dataset, date)
        o = self._open.get(key)
        if o is None:
            o = self._open[key] = _Open(cls)
        elif o.cls is not cls:
            raise TypeError(f"two record classes for dataset {cls.dataset}: "
                            f"{o.cls.__name__} and {cls.__name__}")
        return key, o

    def _room(self, key: tuple[str, str], o: _Open, size: int) -> None:
        """The open file is finished first if size more bytes would take it past max_bytes."""
        if o.writer is not None and o.file_bytes + o.nbytes + size > self.max_bytes:
            self._row_group(key, o)
            self._finish_file(o)

    def _added(self, key: tuple[str, str], o: _Open, rows: int, size: int) -> None:
        """rows of about size bytes were buffered: a row group, or a file, may be full."""
        o.pending += rows
        o.nbytes += size
        if o.pending >= self.row_group_size or o.nbytes >= self.row_group_bytes or \
                o.rows + o.pending >= self.max_rows_per_file:
            self._row_group(key, o)
            if o.rows >= self.max_rows_per_file or o.file_bytes >= self.max_bytes:
                self._finish_file(o)

    def write_all(self, records: Iterable[Record]) -> None:
        for r in records:
            self.write(r)

    def close(self) -> list[str]:
        """Write the buffered records, finish the open files, remove stale files of this
        unit; the files written."""
        if not self._closed:
            try:
                for key, o in self._open.items():
                    self._row_group(key, o)
                    self._finish_file(o)
            except BaseException:
                self.abort()
                raise
            if self.remove_stale:
                self._remove_stale()
            self._closed = True
        return list(self._written)

    def abort(self) -> None:
        """Drop what is buffered and the files not finished (finished files stay)."""
        for o in self._open.values():
            if o.writer is not None:
                try:
                    o.writer.close()
                except Exception:  # noqa: BLE001 - best effort
                    pass
                try:
                    os.unlink(o.tmp)
                except OSError:
                    pass
                o.writer = None
        self._open.clear()
        self._closed = True

    def __enter__(self) -> "ParquetDatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def written(self) -> list[str]:
        return list(self._written)

    # ------------------------------------------------------------------------------------
    def _row_group(self, key: tuple[str, str], o: _Open) -> None:
        """The buffered records as one row group of the directory's open file."""
        if not o.parts:
            return
        table = self._table(o)
        if o.writer is None:
            directory = self.directory(*key)
            os.makedirs(directory, exist_ok=True)
            o.final = os.path.join(directory, f"part-{self.unit}-{o.seq:05d}.parquet")
            o.tmp = os.path.join(directory, f".{os.path.basename(o.final)}."
                                 f"{uuid.uuid4().hex}.tmp")
            o.writer = pq.ParquetWriter(o.tmp, table.schema, compression=self.compression,
                                        compression_level=self.compression_level)
            o.rows = o.file_bytes = 0
        o.writer.write_table(table, row_group_size=self.row_group_size)
        o.rows += table.num_rows
        o.file_bytes += o.nbytes
        o.parts = []
        o.pending = o.nbytes = 0

    def _table(self, o: _Open) -> pa.Table:
        """What is buffered, in order: runs of records converted, batches as they are."""
        tables, run = [], []
        for p in o.parts:
            if isinstance(p, Record):
                run.append(p)
                continue
            if run:
                tables.append(records_to_table(o.cls, run, bodies=self.bodies))
                run = []
            tables.append(pa.Table.from_batches([p]))
        if run:
            tables.append(records_to_table(o.cls, run, bodies=self.bodies))
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def _finish_file(self, o: _Open) -> None:
        """Close the open file, fsync it and rename it into place (readers never see half a
        file)."""
        if o.writer is None:
            return
        try:
            o.writer.close()
            fd = os.open(o.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(o.tmp, o.final)
        except BaseException:
            try:
                os.unlink(o.tmp)
            except OSError:
                pass
            o.writer = None
            raise
        self._written.append(o.final)
        o.writer = None
        o.seq += 1

    def _remove_stale(self) -> None:
        """Files part-<unit>-<seq> not written by this run, in any dataset and date of this
        sensor (a re-run may put records under other dates, or have none of a dataset)."""
        mine = set(self._written)
        # finished files of an earlier run, and temporary ones a killed run left
        pat = re.compile(r"\.?" + re.escape(f"part-{self.unit}-") + r"\d{5,}\.parquet"
                         r"(?:\.[0-9a-f]+\.tmp)?$")
        if not os.path.isdir(self.root):
            return
        for ds in os.listdir(self.root):
            base = os.path.join(self.root, ds)
            if not os.path.isdir(base):
                continue
            for date in os.listdir(base):
                d = os.path.join(base, date, f"sensor={self.sensor}")
                if not date.startswith("date=") or not os.path.isdir(d):
                    continue
                for name in os.listdir(d):
                    path = os.path.join(d, name)
                    if pat.match(name) and path not in mine:
                        try:
                            os.unlink(path)
                        except FileNotFoundError:
                            pass


def write_records(root: str | os.PathLike, records: Iterable[Record], *, sensor: str,
                  unit: str, **opts) -> list[str]:
    """Write all records of one unit; the files written."""
    w = ParquetDatasetWriter(root, sensor=sensor, unit=unit, **opts)
    w.write_all(records)
    return w.close()


def _make_write_parquet():
    import apache_beam as beam

    class _WriteUnits(beam.DoFn):
        def __init__(self, root, sensor, opts):
            self.root, self.sensor, self.opts = root, sensor, opts

        def process(self, element):
            unit, records = element
            yield from write_records(self.root, records, sensor=self.sensor, unit=unit,
                                     **self.opts)

    class WriteParquet(beam.PTransform):
        """PCollection of (unit id, iterable of records) -> PCollection of file paths written.

        Each element is written by one ParquetDatasetWriter, so a retried element rewrites
        the same files.
        """

        def __init__(self, root, *, sensor: str, **opts):
            super().__init__()
            _check_name("sensor", sensor)
            self.root, self.sensor, self.opts = os.fspath(root), sensor, opts

        def expand(self, pcoll):
            return pcoll | "WriteParquetUnits" >> beam.ParDo(
                _WriteUnits(self.root, self.sensor, self.opts))

    return WriteParquet


def __getattr__(name: str):
    if name == "WriteParquet":
        cls = _make_write_parquet()
        globals()["WriteParquet"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ParquetDatasetWriter", "WriteParquet", "dataset_dir", "partition_date",
           "write_records"]
