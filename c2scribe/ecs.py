"""Elasticsearch documents of c2scribe records, in ECS: the one place that says what they are.

Everything here is derived from :mod:`c2scribe.schema` (field names and types) and nothing else
lists fields: the documents, their ``_id``, the index each goes to, and the index templates
(component + composable) that map them. Plain Python, no Elasticsearch client, no pyarrow.

A document is the record's jsonl document (``Record.to_json``: external ECS names) with these
rules applied, each one by field type or by name pattern, never field by field:

- ``message`` is the human transcript of the record: the lines ``c2scribe transcript`` prints
  for it (render.text / render.timeline, every wire value escaped by render.safe), without
  header lines and body previews. A record whose schema has a field named ``message`` (C2
  messages' text, warnings' text) keeps that value as ``c2scribe.<dataset>.text``.
- ``bytes`` fields (HTTP bodies, kept stream bytes) are text, decoded as UTF-8 with
  replacement and cut at ``body_limit`` bytes (an HTTP body's ``*.body.truncated`` flag then
  says that the stored copy is shorter than the real body);
  HTTP bodies take their ECS names ``http.request.body.content`` /
  ``http.response.body.content`` (``c2scribe.http.X.body.content`` -> ``http.X.body.content``).
- ``headers`` become one object per message, ``{lower-case name: [values in order]}``, mapped
  ``flattened`` (``c2scribe.http.request.headers.user-agent: curl*``); order across names and
  the original case stay in Parquet.
- ``json`` values are mapped ``flattened``; one that is not an object (or a list of objects)
  is wrapped as ``{"value": ...}``.
- null fields are left out.
- added: ``ecs.version``, ``event.kind``/``event.category``/``event.type``/``event.module``,
  ``observer.name`` (the sensor) and ``observer.type`` ("sensor"), ``related.ip``,
  ``c2scribe.capture.unit`` (the pipeline unit).

Index: ``<prefix>-<dataset>-<YYYY.MM>`` (UTC month of ``event.start``), ``...-undated`` for
records without a start time. ``_id``: see :func:`doc_id`.
"""
from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import io
import json
import re
from typing import Any, Iterable

from .schema import (RECORD_TYPES, SCHEMA_VERSION, C2Message, CaptureError, Connection,
                     DecodeError, EngineWarning, HttpTransaction, Record, fields_of, iso)

ECS_VERSION = "8.11.0"
#: bumped when the templates change without a schema change
TEMPLATE_REVISION = 1
TEMPLATE_VERSION = SCHEMA_VERSION * 1000 + TEMPLATE_REVISION
DEFAULT_PREFIX = "c2scribe"
#: body and stream bytes kept as text per field (bytes of the raw data)
BODY_LIMIT = 64 << 10
#: characters of the `message` transcript
MESSAGE_LIMIT = 8000
TEMPLATE_PRIORITY = 200
KEYWORD_IGNORE_ABOVE = 1024
HEADER_NAME_LIMIT = 128

DATASET_CLASSES: dict[str, type] = {cls.dataset: cls for cls in RECORD_TYPES}


def dataset_short(dataset: str) -> str:
    """``c2scribe.http`` -> ``http`` (as transforms.parquet.dataset_dir names it)."""
    return dataset.rsplit(".", 1)[-1]


DATASETS_SHORT = {dataset_short(d): d for d in DATASET_CLASSES}

# ------------------------------------------------------------------------- ECS categorisation

#: event.kind / event.category / event.type per dataset (ECS 8 allowed values)
EVENT: dict[str, dict[str, Any]] = {
    Connection.dataset: {"event.kind": "event", "event.category": ["network"],
                         "event.type": ["connection", "end"]},
    HttpTransaction.dataset: {"event.kind": "event", "event.category": ["network", "web"],
                              "event.type": ["access", "protocol"]},
    C2Message.dataset: {"event.kind": "event", "event.category": ["network", "malware"],
                        "event.type": ["info"]},
    DecodeError.dataset: {"event.kind": "pipeline_error"},
    CaptureError.dataset: {"event.kind": "pipeline_error"},
    EngineWarning.dataset: {"event.kind": "pipeline_error"},
}

#: fields every document may have besides the record's own, with their schema-style type
#: ("text" is free text: match_only_text)
EXTRA_FIELDS: tuple[tuple[str, str], ...] = (
    ("@timestamp", "ts"),
    ("message", "text"),
    ("ecs.version", "str"),
    ("event.dataset", "str"),
    ("event.module", "str"),
    ("event.kind", "str"),
    ("event.category", "strlist"),
    ("event.type", "strlist"),
    ("observer.name", "str"),
    ("observer.type", "str"),
    ("related.ip", "ip"),
    ("c2scribe.schema_version", "int"),
    ("c2scribe.capture.unit", "str"),
    ("c2scribe.capture.generation", "str"),
)

# ------------------------------------------------------------------------------ field names


def es_name(cls: type, name: str, type_: str) -> str:
    """The document name of a schema field (external name, with the module's rules)."""
    if name == "message":
        return f"c2scribe.{dataset_short(cls.dataset)}.text"
    if type_ == "bytes" and name.startswith("c2scribe.http.") and \
            name.endswith(".body.content"):
        return name[len("c2scribe."):]
    return name


def es_type(name: str, type_: str) -> str:
    """The document type of a schema field: its schema type, "text" for moved messages."""
    if name == "message":
        return "text"
    return type_


_PLANS: dict[type, list[tuple[str, str, str, str]]] = {}


def es_fields(cls: type) -> list[tuple[str, str, str, str]]:
    """(attribute, document name, type, external name) of each field of a record class."""
    got = _PLANS.get(cls)
    if got is None:
        got = _PLANS[cls] = [(attr, es_name(cls, name, t), es_type(name, t), name)
                             for attr, name, t, _j in fields_of(cls)]
    return got


def all_fields() -> dict[str, str]:
    """Every document field of every dataset -> its type (a name has one type everywhere)."""
    out: dict[str, str] = {}
    for name, t in EXTRA_FIELDS:
        out[name] = t
    for cls in RECORD_TYPES:
        for _attr, name, t, _x in es_fields(cls):
            if out.setdefault(name, t) != t:
                raise ValueError(f"ecs: {name} is {out[name]} and {t}")
    return out


# ------------------------------------------------------------------------------- mappings

_KEYWORD = {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
_TEXT = {"type": "match_only_text"}
_WILDCARD_TEXT = {"type": "wildcard", "fields": {"text": {"type": "match_only_text"}}}
_FLATTENED = {"type": "flattened", "ignore_above": KEYWORD_IGNORE_ABOVE}

#: schema type -> Elasticsearch mapping. Timestamps are date_nanos: the records' times have
#: microseconds, which `date` (milliseconds) would cut; date_nanos keeps them (range
#: 1970-2262, format strict_date_optional_time_nanos).
TYPE_MAPPINGS: dict[str, dict] = {
    "str": _KEYWORD,
    "strlist": _KEYWORD,
    "int": {"type": "long"},
    "bool": {"type": "boolean"},
    "ts": {"type": "date_nanos"},
    "ip": {"type": "ip"},
    "headers": _FLATTENED,
    "json": _FLATTENED,
    "bytes": _WILDCARD_TEXT,      # as ECS 8 maps http.*.body.content
    "text": _TEXT,
}

#: ECS fields whose ECS mapping is not the plain one of their type (as the ECS 8 reference
#: maps them)
ECS_MAPPINGS: dict[str, dict] = {
    "error.message": _TEXT,
    "error.stack_trace": _WILDCARD_TEXT,
    "url.original": _WILDCARD_TEXT,
    "url.full": _WILDCARD_TEXT,
    "url.path": {"type": "wildcard"},
    "user_agent.original": {**_KEYWORD, "fields": {"text": {"type": "match_only_text"}}},
}


def field_mapping(name: str, type_: str) -> dict:
    m = ECS_MAPPINGS.get(name) or TYPE_MAPPINGS.get(type_)
    if m is None:
        raise ValueError(f"ecs: no Elasticsearch mapping for {name} of type {type_!r}")
    return json.loads(json.dumps(m))          # a copy


def _insert(tree: dict, name: str, mapping: dict) -> None:
    parts = name.split(".")
    node = tree
    for i, p in enumerate(parts[:-1]):
        child = node.setdefault(p, {"properties": {}})
        if "properties" not in child:
            raise ValueError(f"ecs: {'.'.join(parts[:i + 1])} is a field and an object")
        node = child["properties"]
    if parts[-1] in node:
        raise ValueError(f"ecs: {name} mapped twice")
    node[parts[-1]] = mapping


def mappings() -> dict:
    """The mappings of every c2scribe index (one set for all datasets), as an object tree."""
    props: dict = {}
    for name, t in sorted(all_fields().items()):
        _insert(props, name, field_mapping(name, t))
    return {"dynamic": False, "date_detection": False, "properties": props,
            "_meta": {"managed_by": "c2scribe", "schema_version": SCHEMA_VERSION,
                      "ecs_version": ECS_VERSION}}


def settings(shards: int = 1) -> dict:
    return {"index": {"number_of_shards": shards, "auto_expand_replicas": "0-1",
                      "codec": "best_compression",
                      "mapping": {"total_fields": {"limit": 2000}}}}


def template_names(prefix: str = DEFAULT_PREFIX) -> dict[str, list[str]]:
    return {"component": [f"{prefix}-settings", f"{prefix}-mappings"],
            "index": [f"{prefix}-{s}" for s in DATASETS_SHORT]}


def component_templates(prefix: str = DEFAULT_PREFIX, shards: int = 1) -> dict[str, dict]:
    """name -> body of PUT _component_template/<name>."""
    meta = {"managed_by": "c2scribe", "schema_version": SCHEMA_VERSION}
    return {
        f"{prefix}-settings": {"template": {"settings": settings(shards)},
                               "version": TEMPLATE_VERSION, "_meta": meta},
        f"{prefix}-mappings": {"template": {"mappings": mappings()},
                               "version": TEMPLATE_VERSION, "_meta": meta},
    }


def index_templates(prefix: str = DEFAULT_PREFIX) -> dict[str, dict]:
    """name -> body of PUT _index_template/<name>: one per dataset."""
    out = {}
    for short, dataset in DATASETS_SHORT.items():
        out[f"{prefix}-{short}"] = {
            "index_patterns": [f"{prefix}-{short}-*"],
            "composed_of": [f"{prefix}-settings", f"{prefix}-mappings"],
            "priority": TEMPLATE_PRIORITY,
            "version": TEMPLATE_VERSION,
            "_meta": {"managed_by": "c2scribe", "dataset": dataset,
                      "schema_version": SCHEMA_VERSION,
                      "description": f"c2scribe {dataset} records (dated indices)"}}
    return out


# --------------------------------------------------------------------------- index and _id

def _start_us(rec: Record) -> int | None:
    for attr, name, _t, _x in es_fields(type(rec)):
        if name == "event.start":
            return getattr(rec, attr)
    return None


def index_name(dataset: str, start_us: int | None, prefix: str = DEFAULT_PREFIX) -> str:
    """``<prefix>-<dataset>-YYYY.MM`` (UTC month of event.start) or ``...-undated``."""
    short = dataset_short(dataset)
    if start_us is None:
        return f"{prefix}-{short}-undated"
    d = _dt.datetime(1970, 1, 1) + _dt.timedelta(microseconds=start_us)
    return f"{prefix}-{short}-{d.year:04d}.{d.month:02d}"


def identity(rec: Record, unit: str | None = None,
             sensor: str | None = None) -> tuple[str, ...]:
    """What makes a record itself, independent of when it was indexed.

    Connections, HTTP transactions and C2 messages carry deterministic ids (derived from the
    capture file's base name, frame, time and Community ID; the transaction's index; the
    decoder and message sequence), made unique across sensors by the sensor's name (two
    sensors may hold copies of the same capture, or files of the same name): not by the
    unit, which changes when a chain is cut into windows. Warnings are per unit, code and
    text (a re-run with a new count replaces the old one); capture errors per unit, file and offset;
    decoder errors per unit and their whole content.
    """
    s = sensor or ""
    if isinstance(rec, Connection):
        return (s, rec.conn_id)
    if isinstance(rec, HttpTransaction):
        return (s, rec.tx_id)
    if isinstance(rec, C2Message):
        return (s, rec.message_id)
    u = unit or ""
    if isinstance(rec, EngineWarning):
        # one code covers many texts (every libhtp message is "http_parser_message")
        return (u, rec.code, rec.message or "")
    if isinstance(rec, CaptureError):
        return (u, rec.file or "", str(rec.offset))
    content = json.dumps(rec.to_json(), sort_keys=True, ensure_ascii=True)
    return (u, hashlib.sha256(content.encode()).hexdigest())


def doc_id(rec: Record, unit: str | None = None, sensor: str | None = None) -> str:
    """The document's ``_id``: sha1 hex of the dataset and the record's identity."""
    key = "\x1f".join((rec.dataset, *identity(rec, unit, sensor)))
    return hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()


# ------------------------------------------------------------------------------- documents

_TCHAR = re.compile(r"[^a-z0-9!#$%&'*+.^_`|~-]")


def header_key(name: str) -> str:
    """A header name as a flattened key: lower case, HTTP token characters, bounded."""
    k = _TCHAR.sub("_", str(name).lower())[:HEADER_NAME_LIMIT]
    return k or "_"


def headers_object(pairs) -> dict[str, list[str]] | None:
    if pairs is None:
        return None
    out: dict[str, list[str]] = {}
    for n, v in pairs:
        out.setdefault(header_key(n), []).append(v)
    return out


def json_object(v):
    if v is None:
        return None
    if isinstance(v, dict):
        return v
    if isinstance(v, list) and all(isinstance(x, dict) for x in v):
        return v
    return {"value": v}


def body_text(data: bytes | None, limit: int) -> tuple[str | None, bool]:
    """(text, cut): bytes as UTF-8 with replacement, at most `limit` bytes of them."""
    if data is None:
        return None, False
    cut = len(data) > limit
    return bytes(data[:limit]).decode("utf-8", "replace"), cut


def transcript(rec: Record) -> str:
    """The record as `c2scribe transcript` shows it (render code), without header lines and
    body previews: every value off the wire escaped, bounded."""
    from .render.text import TextWriter
    from .render.timeline import TimelineWriter
    buf = io.StringIO()
    if isinstance(rec, (C2Message, DecodeError)):
        w = TimelineWriter(buf)
        w.write(rec)
        w.close()
        lines = buf.getvalue().split("\n")
        if isinstance(rec, C2Message):
            lines = lines[1:]                  # the agent's header line (one message)
    else:
        w = TextWriter(buf, body_lines=0, headers=False)
        w.write(rec)
        lines = buf.getvalue().split("\n")
    lines = [ln.rstrip() for ln in lines if ln.strip() and not ln.startswith("      |")]
    if lines and lines[0][:4] in ("=== ", "--- "):
        lines[0] = lines[0][4:]
    if lines:                                   # the column padding of the first line
        lines[0] = re.sub(r" {3,}", "  ", lines[0])
    text = "\n".join(lines)
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + "…"


def document(rec: Record, *, sensor: str | None = None, unit: str | None = None,
             body_limit: int = BODY_LIMIT, generation: str | None = None) -> dict[str, Any]:
    """The Elasticsearch document of a record (flat dotted ECS names; nulls left out)."""
    cls = type(rec)
    doc: dict[str, Any] = {"@timestamp": None, "message": transcript(rec),
                           "ecs.version": ECS_VERSION, "event.module": "c2scribe",
                           "event.dataset": cls.dataset, **EVENT.get(cls.dataset, {}),
                           "c2scribe.schema_version": SCHEMA_VERSION}
    cuts: list[str] = []
    for attr, name, t, external in es_fields(cls):
        v = getattr(rec, attr)
        if v is None:
            continue
        if t == "ts":
            v = iso(v)
        elif t == "headers":
            v = headers_object(v)
        elif t == "json":
            v = json_object(v)
        elif t == "bytes":
            v, cut = body_text(v, body_limit)
            if cut and external.endswith(".body.content"):
                cuts.append(external)
        elif t == "strlist":
            v = list(v)
        doc[name] = v
    for name in cuts:                           # the stored copy is shorter than the real one
        flag = name.rsplit(".", 1)[0] + ".truncated"
        if flag in doc:
            doc[flag] = True
    doc["@timestamp"] = doc.get("event.start")
    if sensor:
        doc["observer.name"] = sensor
        doc["observer.type"] = "sensor"
    if unit:
        doc["c2scribe.capture.unit"] = unit
    if generation:
        # which run of the unit wrote it: a re-run deletes the unit's older generations
        doc["c2scribe.capture.generation"] = generation
    ips = [doc[k] for k in ("source.ip", "destination.ip") if doc.get(k)]
    if ips:
        doc["related.ip"] = sorted(set(ips))
    return {k: v for k, v in doc.items() if v is not None}


def action(rec: Record, *, sensor: str | None = None, unit: str | None = None,
           prefix: str = DEFAULT_PREFIX, body_limit: int = BODY_LIMIT,
           generation: str | None = None) -> dict[str, Any]:
    """A bulk action for elasticsearch.helpers: index the record's document under its id."""
    return {"_op_type": "index", "_index": index_name(rec.dataset, _start_us(rec), prefix),
            "_id": doc_id(rec, unit, sensor),
            "_source": document(rec, sensor=sensor, unit=unit, body_limit=body_limit,
                                generation=generation)}


def mapping_table() -> str:
    """Every document field, its schema type, mapping and datasets, as a Markdown table
    (docs/elasticsearch.md holds it, kept current by a test)."""
    fields = all_fields()
    where: dict[str, set] = {name: {"all"} for name, _t in EXTRA_FIELDS}
    for cls in RECORD_TYPES:
        for _a, name, _t, _x in es_fields(cls):
            where.setdefault(name, set()).add(dataset_short(cls.dataset))

    def describe(m: dict) -> str:
        s = m["type"]
        if "ignore_above" in m:
            s += f" (ignore_above {m['ignore_above']})"
        for sub, sm in (m.get("fields") or {}).items():
            s += f" + `.{sub}` {sm['type']}"
        return s

    lines = ["| field | schema type | mapping | datasets |", "|---|---|---|---|"]
    for name in sorted(fields):
        ds = where[name]
        shown = "all" if "all" in ds or len(ds) == len(DATASETS_SHORT) else \
            ", ".join(sorted(ds))
        lines.append(f"| `{name}` | {fields[name]} | "
                     f"{describe(field_mapping(name, fields[name]))} | {shown} |")
    return "\n".join(lines)


# --------------------------------------------------------------------- records read back

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def _us(v) -> int:
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        v = _dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    if v.tzinfo is None:
        v = v.replace(tzinfo=_dt.timezone.utc)
    return (v - _EPOCH) // _dt.timedelta(microseconds=1)


def record_from_row(row: dict, cls: type | None = None, *, parquet: bool = True) -> Record:
    """A record from a Parquet row (``pyarrow`` ``to_pylist``: timestamps as datetimes,
    headers as name/value structs, json as JSON text, bytes as bytes) or, with
    ``parquet=False``, from a jsonl document (ISO times, header pairs, JSON values, base64)."""
    if cls is None:
        cls = DATASET_CLASSES[row["event.dataset"]]
    kw = {}
    for attr, name, t, _j in fields_of(cls):
        v = row.get(name)
        if v is not None:
            if t == "ts":
                v = _us(v)
            elif t == "headers":
                v = [(h["name"], h["value"]) if isinstance(h, dict) else (h[0], h[1])
                     for h in v]
            elif t == "json":
                v = json.loads(v) if parquet else v
            elif t == "strlist":
                v = list(v)
            elif t == "bytes" and isinstance(v, str):
                v = base64.b64decode(v)
        kw[attr] = v
    return cls(**kw)


def records_from_rows(rows: Iterable[dict], cls: type | None = None, *,
                      parquet: bool = True) -> Iterable[Record]:
    for row in rows:
        yield record_from_row(row, cls, parquet=parquet)


__all__ = ["BODY_LIMIT", "DATASET_CLASSES", "DEFAULT_PREFIX", "ECS_VERSION", "EVENT",
           "EXTRA_FIELDS", "TEMPLATE_VERSION", "action", "all_fields", "component_templates",
           "dataset_short", "doc_id", "document", "es_fields", "identity", "index_name",
           "index_templates", "mapping_table", "mappings", "record_from_row", "records_from_rows",
           "template_names", "transcript"]
