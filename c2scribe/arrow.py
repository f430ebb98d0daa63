"""Arrow tables of c2scribe records, generated from :mod:`c2scribe.schema` and nothing else.

Column names are the external (dotted, ECS) names of the jsonl documents; types follow the
schema's field types (see ``ARROW_TYPES``). Each table also has ``event.dataset`` and
``c2scribe.schema_version`` like every jsonl document; ``@timestamp`` is not stored (it is
``event.start``). ``bytes`` fields (bodies, stream content) are columns of every table, null
unless ``bodies=True`` (as in the jsonl, where they only appear with ``--bodies``).
"""
from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Iterable

import pyarrow as pa

from .schema import SCHEMA_VERSION, Record, fields_of

# list items are named "element", as Parquet names them, so a file's schema reads back equal
HEADER_TYPE = pa.list_(pa.field("element", pa.struct([("name", pa.string()),
                                                        ("value", pa.string())])))

#: schema field type -> Arrow type
ARROW_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "ts": pa.timestamp("us", tz="UTC"),
    "ip": pa.string(),
    "headers": HEADER_TYPE,
    "strlist": pa.list_(pa.field("element", pa.string())),
    "json": pa.string(),
    "bytes": pa.binary(),
}

#: columns every table has besides the record's fields
EXTRA_COLUMNS = (("event.dataset", pa.string()), ("c2scribe.schema_version", pa.int32()))
#: schema-level metadata keys
META_SCHEMA_VERSION = b"c2scribe.schema_version"
META_DATASET = b"c2scribe.dataset"

_UTC = _dt.timezone.utc
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_UTC)
_SCHEMAS: dict[type, pa.Schema] = {}


def arrow_schema(cls: type) -> pa.Schema:
    """The Arrow schema of a record class (cached; same object on every call)."""
    got = _SCHEMAS.get(cls)
    if got is not None:
        return got
    cols: list[pa.Field] = []
    seen: set[str] = set()
    for name, typ in EXTRA_COLUMNS:
        cols.append(pa.field(name, typ, nullable=False))
        seen.add(name)
    for attr, name, type_, _in_jsonl in fields_of(cls):
        if name in seen:
            raise ValueError(f"{cls.__name__}: external name {name!r} used twice")
        if type_ not in ARROW_TYPES:
            raise ValueError(f"{cls.__name__}.{attr}: no Arrow type for schema type {type_!r}")
        seen.add(name)
        cols.append(pa.field(name, ARROW_TYPES[type_]))
    got = pa.schema(cols, metadata={META_SCHEMA_VERSION: str(SCHEMA_VERSION).encode(),
                                    META_DATASET: cls.dataset.encode()})
    _SCHEMAS[cls] = got
    return got


def _headers(v):
    return [{"name": n, "value": val} for n, val in v]


def _json(v):
    return json.dumps(v, sort_keys=True)


def _ts_datetime(us: int) -> _dt.datetime:
    return _EPOCH + _dt.timedelta(microseconds=us)


# converters for column building (pa.array takes int microseconds for timestamp columns)
_COLUMN_CONVERT = {"headers": _headers, "strlist": list, "json": _json}
# converters for rows (plain Python values: timestamps as aware datetimes)
_ROW_CONVERT = {**_COLUMN_CONVERT, "ts": _ts_datetime}


def to_arrow_row(record: Record, *, bodies: bool = False) -> dict[str, Any]:
    """One record as a dict of Arrow-ready Python values, keyed by column name.

    ts -> datetime (UTC), headers -> [{"name", "value"}], json -> JSON text (sorted keys),
    bytes -> bytes if ``bodies`` else None. ``pa.Table.from_pylist(rows, arrow_schema(cls))``
    makes the same table as :func:`records_to_table`.
    """
    cls = type(record)
    row: dict[str, Any] = {"event.dataset": cls.dataset,
                           "c2scribe.schema_version": SCHEMA_VERSION}
    for attr, name, type_, _j in fields_of(cls):
        v = getattr(record, attr)
        if v is not None:
            if type_ == "bytes" and not bodies:
                v = None
            else:
                conv = _ROW_CONVERT.get(type_)
                if conv is not None:
                    v = conv(v)
        row[name] = v
    return row


def records_to_table(cls: type, records: Iterable[Record], *, bodies: bool = False) -> pa.Table:
    """A table of records of one class (column by column; every record must be a ``cls``)."""
    records = list(records)
    for r in records:
        if type(r) is not cls:
            raise TypeError(f"records_to_table({cls.__name__}): got a {type(r).__name__}")
    schema = arrow_schema(cls)
    n = len(records)
    arrays = [pa.array([cls.dataset] * n, pa.string()),
              pa.array([SCHEMA_VERSION] * n, pa.int32())]
    for attr, _name, type_, _j in fields_of(cls):
        typ = ARROW_TYPES[type_]
        if type_ == "bytes" and not bodies:
            arrays.append(pa.nulls(n, typ))
            continue
        vals = [getattr(r, attr) for r in records]
        conv = _COLUMN_CONVERT.get(type_)
        if conv is not None:
            vals = [None if v is None else conv(v) for v in vals]
        arrays.append(pa.array(vals, typ))
    return pa.Table.from_arrays(arrays, schema=schema)


def row_nbytes(record: Record, *, bodies: bool = False) -> int:
    """A rough size of a record in memory as Arrow data (for sizing files), in bytes."""
    total = 0
    for attr, _name, type_, _j in fields_of(type(record)):
        v = getattr(record, attr)
        if v is None:
            total += 1
        elif type_ in ("str", "ip", "json") and isinstance(v, str):
            total += len(v) + 4
        elif type_ == "bytes":
            total += (len(v) + 4) if bodies else 1
        elif type_ == "headers":
            total += sum(len(a) + len(b) + 8 for a, b in v) + 4
        elif type_ == "strlist":
            total += sum(len(s) + 4 for s in v) + 4
        elif type_ == "json":
            total += 64
        else:
            total += 8
    return total


__all__ = ["ARROW_TYPES", "EXTRA_COLUMNS", "HEADER_TYPE", "arrow_schema", "records_to_table",
           "row_nbytes", "to_arrow_row"]
