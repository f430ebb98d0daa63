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
from operator import attrgetter
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


def _extra_arrays(cls: type, n: int) -> list[pa.Array]:
    """The EXTRA_COLUMNS of n rows of a class."""
    return [pa.array([cls.dataset] * n, pa.string()), pa.array([SCHEMA_VERSION] * n, pa.int32())]


def records_to_table(cls: type, records: Iterable[Record], *, bodies: bool = False) -> pa.Table:
    """A table of records of one class (column by column; every record must be a ``cls``)."""
    records = list(records)
    if set(map(type, records)) - {cls}:
        bad = next(r for r in records if type(r) is not cls)
        raise TypeError(f"records_to_table({cls.__name__}): got a {type(bad).__name__}")
    schema = arrow_schema(cls)
    n = len(records)
    arrays = _extra_arrays(cls, n)
    for get, type_, typ, conv in _table_plan(cls):
        if type_ == "bytes" and not bodies:
            arrays.append(pa.nulls(n, typ))
            continue
        vals = list(map(get, records))
        if conv is None:
            arrays.append(pa.array(vals, typ))
            continue
        if type_ in _DIRECT:
            # header pairs as (name, value) tuples and string lists as any sequence convert
            # as they are; anything else takes the converter, exactly as before
            try:
                arrays.append(pa.array(vals, typ))
                continue
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
                pass
        arrays.append(pa.array([None if v is None else conv(v) for v in vals], typ))
    return pa.Table.from_arrays(arrays, schema=schema)


#: converted column types that pa.array usually takes unconverted (tried first)
_DIRECT = frozenset(("headers", "strlist"))
_TABLE_PLANS: dict[type, list] = {}


def _table_plan(cls: type) -> list:
    """(attrgetter, schema type, Arrow type, converter) of each field of a class (cached)."""
    got = _TABLE_PLANS.get(cls)
    if got is None:
        got = _TABLE_PLANS[cls] = [(attrgetter(attr), type_, ARROW_TYPES[type_],
                                    _COLUMN_CONVERT.get(type_))
                                   for attr, _name, type_, _j in fields_of(cls)]
    return got


def core_columns(classes: Iterable[type]) -> dict[str, list[tuple[str, str]]]:
    """What the C engine's columnar backend is told: per record kind, its fields' (attribute,
    schema type), in the order of the class's Arrow schema (after EXTRA_COLUMNS)."""
    from .schema import _DATASET
    kinds = {cls: kind for kind, cls in _DATASET.items()}
    return {kinds[cls]: [(attr, type_) for attr, _n, type_, _j in fields_of(cls)]
            for cls in classes}


def batch_from_core(cls: type, batch: tuple) -> pa.RecordBatch:
    """A columnar batch of the C engine (``(rows, [column, ...])``, see _core/columns.c) as a
    RecordBatch of ``arrow_schema(cls)``: its buffers are wrapped, not copied."""
    n, cols = batch
    schema = arrow_schema(cls)
    arrays = _extra_arrays(cls, n)
    buf = pa.py_buffer
    for field, (nulls, valid, off, data, items, a_off, a_data, b_off, b_data) in zip(
            list(schema)[len(EXTRA_COLUMNS):], cols, strict=True):
        typ = field.type
        v = None if valid is None else buf(valid)
        if off is None:                                     # int, bool, timestamp
            arr = pa.Array.from_buffers(typ, n, [v, buf(data)], nulls)
        elif data is not None:                              # string, binary
            arr = pa.Array.from_buffers(typ, n, [v, buf(off), buf(data)], nulls)
        else:                                               # list<string>, list<struct>
            child_type = typ.value_type
            first = pa.Array.from_buffers(pa.string(), items, [None, buf(a_off), buf(a_data)])
            if b_off is None:
                child = first
            else:
                second = pa.Array.from_buffers(pa.string(), items,
                                               [None, buf(b_off), buf(b_data)])
                child = pa.Array.from_buffers(child_type, items, [None], 0,
                                              children=[first, second])
            arr = pa.Array.from_buffers(typ, n, [v, buf(off)], nulls, children=[child])
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def row_nbytes(record: Record, *, bodies: bool = False) -> int:
    """A rough size of a record in memory as Arrow data (for sizing files), in bytes.

    None: 1; str, ip and str-valued json: length + 4; other json: 64; bytes: length + 4 with
    ``bodies``, else 1; headers: the lengths of names and values + 8 per pair, + 4; strlist:
    length + 4 per string, + 4; anything else (int, bool, ts): 8.
    """
    key = (type(record), bodies)
    fn = _NBYTES.get(key)
    if fn is None:
        fn = _NBYTES[key] = _nbytes_plan(*key)
    return fn(record)


_NBYTES: dict[tuple[type, bool], Any] = {}


def _getter(attrs: list[str]):
    if not attrs:
        return lambda r: ()
    if len(attrs) == 1:
        one = attrgetter(attrs[0])
        return lambda r: (one(r),)
    return attrgetter(*attrs)


def _nbytes_slow(type_: str, v, bodies: bool) -> int:
    """One value, by the rules of row_nbytes (the general case)."""
    if v is None:
        return 1
    if type_ in ("str", "ip", "json") and isinstance(v, str):
        return len(v) + 4
    if type_ == "bytes":
        return (len(v) + 4) if bodies else 1
    if type_ == "headers":
        return sum(len(a) + len(b) + 8 for a, b in v) + 4
    if type_ == "strlist":
        return sum(len(s) + 4 for s in v) + 4
    if type_ == "json":
        return 64
    return 8


_STR_NONE = frozenset((str, type(None)))


def _nbytes_plan(cls: type, bodies: bool):
    """row_nbytes for one class: the same sums, fields grouped by type, mostly in C.

    Text fields take the fast path when every value is a str or None (one set of types per
    record); otherwise, and for every other type, the rules are applied as written.
    """
    const = 0
    by: dict[str, list[str]] = {"fixed": [], "text": [], "json": [], "headers": [],
                                "strlist": [], "bytes": []}
    for attr, _name, type_, _j in fields_of(cls):
        if type_ == "bytes" and not bodies:
            const += 1                                  # None or not: 1
        elif type_ in ("str", "ip"):
            by["text"].append(attr)
        elif type_ in by:
            by[type_].append(attr)
        else:
            by["fixed"].append(attr)                    # int, bool, ts (and any other): 8
    const += 8 * len(by["fixed"])
    get_fixed, get_text, get_json, get_headers, get_strlist, get_bytes = (
        _getter(by[k]) for k in ("fixed", "text", "json", "headers", "strlist", "bytes"))
    n_text = len(by["text"])
    has_json, has_headers, has_strlist, has_bytes = (
        bool(by[k]) for k in ("json", "headers", "strlist", "bytes"))
    join, str_none, slow = "".join, _STR_NONE, _nbytes_slow

    def fn(record) -> int:
        total = const - 7 * get_fixed(record).count(None)
        texts = get_text(record)
        if set(map(type, texts)) <= str_none:
            nones = texts.count(None)
            total += nones + 4 * (n_text - nones) + len(join(filter(None, texts)))
        else:
            total += sum(slow("str", v, bodies) for v in texts)
        if has_json:
            total += sum(slow("json", v, bodies) for v in get_json(record))
        if has_headers:
            for v in get_headers(record):
                total += 1 if v is None else sum(len(a) + len(b) + 8 for a, b in v) + 4
        if has_strlist:
            for v in get_strlist(record):
                total += 1 if v is None else sum(len(x) + 4 for x in v) + 4
        if has_bytes:
            total += sum(slow("bytes", v, bodies) for v in get_bytes(record))
        return total
    return fn


__all__ = ["ARROW_TYPES", "EXTRA_COLUMNS", "HEADER_TYPE", "arrow_schema", "batch_from_core",
           "core_columns", "records_to_table", "row_nbytes", "to_arrow_row"]
