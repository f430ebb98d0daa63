"""The one schema: every record c2scribe produces, and the name of each field outside Python.

Each record is a small slotted dataclass. A field's metadata gives its external name (ECS where
ECS has one, else under ``c2scribe.*``) and its type; the JSON lines output, and later Parquet
and Elasticsearch, are generated from these definitions and nothing else. The C engine builds
its dicts with the Python attribute names used here, so a renamed field fails loudly.

Timestamps are integers, microseconds since the epoch (UTC); JSON shows them as ISO 8601.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import time
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, ClassVar

SCHEMA_VERSION = 2


def F(name: str, type_: str, *, jsonl: bool = True, **default):
    """A field: external dotted name, type (str int bool ts ip headers strlist bytes), in jsonl;
    default=... for a field records made outside the engine (tests, decoders) may leave out."""
    return field(metadata={"name": name, "type": type_, "jsonl": jsonl}, **default)


_iso_cache: dict[int, str] = {}


def iso(us: int | None) -> str | None:
    """ISO 8601 UTC with microseconds; the per-second prefix is cached (hot path of jsonl)."""
    if us is None:
        return None
    sec, frac = divmod(us, 1_000_000)
    head = _iso_cache.get(sec)
    if head is None:
        if len(_iso_cache) > 4096:
            _iso_cache.clear()
        head = _iso_cache[sec] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec))
    return f"{head}{frac:06d}Z"


def parse_iso(text: str) -> int:
    """YYYY-MM-DD or an ISO time (UTC unless it says otherwise) -> µs since the epoch;
    ValueError, saying what is expected, for anything else."""
    try:
        d = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r}: not a date or ISO time (e.g. 2024-05-01 or "
                         "2024-05-01T13:00:00)") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return int(d.timestamp() * 1_000_000)


def _b64(v: bytes) -> str:
    return base64.b64encode(v).decode("ascii")


_CONVERT = {"ts": iso, "bytes": _b64}


@dataclass(slots=True)
class Record:
    dataset: ClassVar[str] = ""

    def to_json(self, *, bodies: bool = False) -> dict[str, Any]:
        """The record as a flat dict with external field names (the jsonl contract)."""
        cls = type(self)
        plan = _PLANS.get((cls, bodies)) or _plan(cls, bodies)
        out: dict[str, Any] = {"@timestamp": None, "event.dataset": cls.dataset,
                               "c2scribe.schema_version": SCHEMA_VERSION}
        for attr, name, conv in plan:
            v = getattr(self, attr)
            out[name] = conv(v) if conv is not None and v is not None else v
        out["@timestamp"] = out.get("event.start")
        return out


_PLANS: dict[tuple[type, bool], list] = {}


def _plan(cls: type, bodies: bool) -> list:
    plan = [(attr, name, _CONVERT.get(type_)) for attr, name, type_, in_jsonl in _fields(cls)
            if in_jsonl or bodies]
    _PLANS[(cls, bodies)] = plan
    return plan


_FIELDS: dict[type, list[tuple[str, str, str, bool]]] = {}


def _fields(cls: type) -> list[tuple[str, str, str, bool]]:
    got = _FIELDS.get(cls)
    if got is None:
        got = _FIELDS[cls] = [
            (f.name, f.metadata["name"], f.metadata["type"], f.metadata["jsonl"])
            for f in dataclasses.fields(cls) if "name" in f.metadata
        ]
    return got


def fields_of(cls: type) -> list[tuple[str, str, str, bool]]:
    """(attribute, external name, type, in default jsonl) for each field of a record class."""
    return list(_fields(cls))


@dataclass(slots=True)
class _OnConnection(Record):
    """What every record about a TCP connection carries: who, when, and where in the capture
    (file and 1-based frame numbers of its first and last packet)."""
    conn_id: str = F("c2scribe.connection.id", "str")
    community_id: str = F("network.community_id", "str")
    start_us: int = F("event.start", "ts")
    end_us: int = F("event.end", "ts")
    ip_version: int = F("c2scribe.connection.ip_version", "int")
    network_type: str = F("network.type", "str")
    src_ip: str = F("source.ip", "ip")
    src_port: int = F("source.port", "int")
    dst_ip: str = F("destination.ip", "ip")
    dst_port: int = F("destination.port", "int")
    file_first: str | None = F("c2scribe.capture.file", "str")
    frame_first: int = F("c2scribe.capture.frame_first", "int")
    file_last: str | None = F("c2scribe.capture.file_last", "str")
    frame_last: int = F("c2scribe.capture.frame_last", "int")


@dataclass(slots=True)
class Connection(_OnConnection):
    """One TCP connection, HTTP or not, whether or not the engine could reassemble it."""
    dataset: ClassVar[str] = "c2scribe.connection"
    orientation_guessed: bool = F("c2scribe.connection.orientation_guessed", "bool")
    src_packets: int = F("source.packets", "int")
    dst_packets: int = F("destination.packets", "int")
    src_ip_bytes: int = F("source.bytes", "int")
    dst_ip_bytes: int = F("destination.bytes", "int")
    src_payload_bytes: int = F("c2scribe.tcp.client_to_server.payload_bytes", "int")
    dst_payload_bytes: int = F("c2scribe.tcp.server_to_client.payload_bytes", "int")
    c2s_bytes: int = F("c2scribe.tcp.client_to_server.stream_bytes", "int")
    s2c_bytes: int = F("c2scribe.tcp.server_to_client.stream_bytes", "int")
    c2s_sha256: str | None = F("c2scribe.tcp.client_to_server.sha256", "str")
    s2c_sha256: str | None = F("c2scribe.tcp.server_to_client.sha256", "str")
    c2s_truncated: bool = F("c2scribe.tcp.client_to_server.truncated", "bool")
    s2c_truncated: bool = F("c2scribe.tcp.server_to_client.truncated", "bool")
    history: str = F("c2scribe.connection.history", "str")
    handshake: bool = F("c2scribe.connection.handshake", "bool")
    reassembled: bool = F("c2scribe.connection.reassembled", "bool")
    orientation: str = F("c2scribe.connection.orientation", "str")
    midstream: bool = F("c2scribe.connection.midstream", "bool")
    c2s_gaps: int = F("c2scribe.tcp.client_to_server.gaps", "int")
    s2c_gaps: int = F("c2scribe.tcp.server_to_client.gaps", "int")
    c2s_missing_bytes: int = F("c2scribe.tcp.client_to_server.missing_bytes", "int")
    s2c_missing_bytes: int = F("c2scribe.tcp.server_to_client.missing_bytes", "int")
    overlap_conflicts: int = F("c2scribe.tcp.overlap_conflicts", "int")
    overlap_conflict_samples: list = F("c2scribe.tcp.overlap_conflict_samples", "strlist")
    end_reason: str = F("c2scribe.connection.end_reason", "str")
    http_transactions: int = F("c2scribe.connection.http_transactions", "int")
    app_protocol: str | None = F("network.protocol", "str")
    engine: str = F("c2scribe.engine", "str")
    transport: str = F("network.transport", "str")
    duration_ns: int = F("event.duration", "int")
    c2s_data: bytes | None = F("c2scribe.tcp.client_to_server.content", "bytes", jsonl=False)
    s2c_data: bytes | None = F("c2scribe.tcp.server_to_client.content", "bytes", jsonl=False)


@dataclass(slots=True)
class HttpTransaction(_OnConnection):
    """One HTTP request/response exchange, in its connection's order (index 1, 2, ...)."""
    dataset: ClassVar[str] = "c2scribe.http"
    index: int = F("c2scribe.http.index", "int")
    tx_id: str = F("c2scribe.http.id", "str")
    method: str | None = F("http.request.method", "str")
    uri: str | None = F("url.original", "str")
    request_protocol: str | None = F("c2scribe.http.request.protocol", "str")
    http_09: bool = F("c2scribe.http.http09", "bool")
    version: str | None = F("http.version", "str")
    hostname: str | None = F("url.domain", "str")
    host_header: str | None = F("c2scribe.http.request.host", "str")
    url_scheme: str | None = F("url.scheme", "str")
    url_path: str | None = F("url.path", "str")
    url_query: str | None = F("url.query", "str")
    url_port: int | None = F("url.port", "int")
    url_full: str | None = F("url.full", "str")
    user_agent: str | None = F("user_agent.original", "str")
    referrer: str | None = F("http.request.referrer", "str")
    x_forwarded_for: str | None = F("c2scribe.http.request.x_forwarded_for", "str")
    request_content_type: str | None = F("http.request.mime_type", "str")
    request_headers: list = F("c2scribe.http.request.headers", "headers")
    request_body_bytes: int = F("http.request.body.bytes", "int")
    request_body_wire_bytes: int = F("c2scribe.http.request.body.wire_bytes", "int")
    request_body_sha256: str | None = F("c2scribe.http.request.body.sha256", "str")
    request_body_truncated: bool = F("c2scribe.http.request.body.truncated", "bool")
    request_missing_bytes: int = F("c2scribe.http.request.missing_bytes", "int")
    status_code: int | None = F("http.response.status_code", "int")
    status_text: str | None = F("c2scribe.http.response.status", "str")
    status_phrase: str | None = F("c2scribe.http.response.status_phrase", "str")
    response_protocol: str | None = F("c2scribe.http.response.protocol", "str")
    response_content_type: str | None = F("http.response.mime_type", "str")
    response_headers: list = F("c2scribe.http.response.headers", "headers")
    response_body_bytes: int = F("http.response.body.bytes", "int")
    response_body_wire_bytes: int = F("c2scribe.http.response.body.wire_bytes", "int")
    response_body_sha256: str | None = F("c2scribe.http.response.body.sha256", "str")
    response_body_truncated: bool = F("c2scribe.http.response.body.truncated", "bool")
    response_missing_bytes: int = F("c2scribe.http.response.missing_bytes", "int")
    continue_100: bool = F("c2scribe.http.continue_100", "bool")
    state: str = F("c2scribe.http.state", "str")
    flags: list = F("c2scribe.http.flags", "strlist")
    tunnel: bool = F("c2scribe.http.tunnel", "bool")
    request_body: bytes | None = F("c2scribe.http.request.body.content", "bytes", jsonl=False)
    response_body: bytes | None = F("c2scribe.http.response.body.content", "bytes", jsonl=False)


@dataclass(slots=True)
class CaptureError(Record):
    """A capture file that could not be read to its end; records before the damage stand."""
    dataset: ClassVar[str] = "c2scribe.capture_error"
    file: str | None = F("c2scribe.capture.file", "str")
    offset: int = F("c2scribe.capture.offset", "int")
    packets_before: int = F("c2scribe.capture.packets_before", "int")
    message: str = F("error.message", "str")


@dataclass(slots=True)
class EngineWarning(Record):
    """Something the engine skipped or could not do, counted over the whole run."""
    dataset: ClassVar[str] = "c2scribe.warning"
    code: str = F("c2scribe.warning.code", "str")
    count: int = F("c2scribe.warning.count", "int")
    message: str = F("message", "str")
    file: str | None = F("c2scribe.capture.file", "str")
    frame: int | None = F("c2scribe.capture.frame_first", "int")


@dataclass(slots=True)
class StreamChunk(Record):
    """Reassembled bytes of one direction of a connection, in order, as the engine delivered
    them. ``gap_before``: bytes the capture does not hold just before these (the native
    engine skips holes; ``stream_offset`` counts them).

    Only made for stream decoders (Engine(stream_chunks=True)); never written to jsonl.
    """
    dataset: ClassVar[str] = "c2scribe.stream"
    conn_id: str = F("c2scribe.connection.id", "str")
    chunk_index: int = F("c2scribe.stream.chunk_index", "int")
    direction: str = F("c2scribe.stream.direction", "str")
    stream_offset: int = F("c2scribe.stream.offset", "int")
    ts_us: int = F("c2scribe.stream.time", "ts")
    src_ip: str = F("source.ip", "ip")
    src_port: int = F("source.port", "int")
    dst_ip: str = F("destination.ip", "ip")
    dst_port: int = F("destination.port", "int")
    file: str | None = F("c2scribe.capture.file", "str")
    frame: int = F("c2scribe.capture.frame", "int")
    data: bytes = F("c2scribe.stream.content", "bytes", jsonl=False)
    gap_before: int = F("c2scribe.stream.gap_before", "int", default=0)


@dataclass(frozen=True, slots=True)
class ConnectionEnd:
    """A connection ended whose record went to storage as a columnar batch row: all a
    decoder runner needs of it (``Engine(columns=True, with_records=True, select=...)``).
    Not a record: never stored."""
    conn_id: str


@dataclass(slots=True)
class C2Message(Record):
    """One C2 message a decoder found: a check-in, a command, its output, a file ...

    Messages of one agent (``agent``: the key the protocol gives, a beacon id, cookie, paw)
    form its timeline across connections and proxies; ``command_id`` pairs a command with its
    output. Every message links back to its connection, transaction and frames.
    """
    dataset: ClassVar[str] = "c2scribe.c2"
    message_id: str = F("c2scribe.c2.id", "str")
    ts_us: int = F("event.start", "ts")
    decoder: str = F("c2scribe.decoder.name", "str")
    decoder_version: str = F("c2scribe.decoder.version", "str")
    family: str | None = F("threat.software.name", "str")
    agent: str | None = F("c2scribe.c2.agent", "str")
    direction: str = F("c2scribe.c2.direction", "str")
    kind: str = F("c2scribe.c2.kind", "str")
    text: str = F("message", "str")
    command_id: str | None = F("c2scribe.c2.command_id", "str")
    fields: dict = F("c2scribe.c2.fields", "json")
    attachments: list = F("c2scribe.c2.attachments", "json")
    conn_id: str | None = F("c2scribe.connection.id", "str")
    tx_id: str | None = F("c2scribe.http.id", "str")
    src_ip: str | None = F("source.ip", "ip")
    src_port: int | None = F("source.port", "int")
    dst_ip: str | None = F("destination.ip", "ip")
    dst_port: int | None = F("destination.port", "int")
    file: str | None = F("c2scribe.capture.file", "str")
    frame_first: int | None = F("c2scribe.capture.frame_first", "int")
    frame_last: int | None = F("c2scribe.capture.frame_last", "int")


@dataclass(slots=True)
class DecodeError(Record):
    """A decoder raised, or returned something that is not messages: the run goes on."""
    dataset: ClassVar[str] = "c2scribe.decode_error"
    decoder: str = F("c2scribe.decoder.name", "str")
    decoder_version: str = F("c2scribe.decoder.version", "str")
    hook: str = F("c2scribe.decoder.hook", "str")
    error_type: str = F("error.type", "str")
    message: str = F("error.message", "str")
    traceback: str = F("error.stack_trace", "str")
    conn_id: str | None = F("c2scribe.connection.id", "str")
    tx_id: str | None = F("c2scribe.http.id", "str")
    file: str | None = F("c2scribe.capture.file", "str")
    frame: int | None = F("c2scribe.capture.frame_first", "int")


RECORD_TYPES = (Connection, HttpTransaction, CaptureError, EngineWarning, C2Message, DecodeError)


def _core_keys() -> dict[str, str]:
    """attribute -> external name over the engine's records; one attribute, one field."""
    keys: dict[str, str] = {}
    for cls in (Connection, HttpTransaction, CaptureError, StreamChunk):
        for attr, name, _t, _j in _fields(cls):
            if keys.setdefault(attr, name) != name:
                raise AssertionError(f"schema: {attr} named both {keys[attr]} and {name}")
    return keys


_DATASET = {"http": HttpTransaction, "connection": Connection, "capture_error": CaptureError,
            "stream": StreamChunk}
#: What the C engine names its record keys (it is told this mapping at import), plus the
#: dataset of each kind of record it makes.
CORE_KEYS = {**_core_keys(), **{f"dataset:{k}": c.dataset for k, c in _DATASET.items()}}
_TS = sorted({name for c in RECORD_TYPES for _a, name, t, _j in _fields(c) if t == "ts"})


def _http_version(protocol: str | None, http09: bool) -> str | None:
    if http09:
        return "0.9"
    if protocol and protocol[:5].upper() == "HTTP/":
        return protocol[5:]
    return None


def _url_full(d: dict) -> str | None:
    host, path = d["url.domain"], d["url.original"]
    if not host or path is None or d["http.request.method"] == "CONNECT":
        return None
    if "://" in path:
        return path
    if not path.startswith("/"):
        return None
    port = d["url.port"]
    return f"http://{host}{path}" if port in (None, 80) else f"http://{host}:{port}{path}"


def _complete(kind: str, d: dict, engine: str) -> None:
    """Add the fields derived from what the engine gave (external names, in place)."""
    if kind == "http":
        d["c2scribe.http.id"] = f"{d['c2scribe.connection.id']}-{d['c2scribe.http.index']}"
        d["http.version"] = _http_version(
            d["c2scribe.http.request.protocol"] or d["c2scribe.http.response.protocol"],
            d["c2scribe.http.http09"])
        d["url.full"] = _url_full(d)
        d["network.type"] = "ipv4" if d["c2scribe.connection.ip_version"] == 4 else "ipv6"
    elif kind == "connection":
        d["c2scribe.engine"] = engine
        d["network.transport"] = "tcp"
        d["network.type"] = "ipv4" if d["c2scribe.connection.ip_version"] == 4 else "ipv6"
        d["event.duration"] = (d["event.end"] - d["event.start"]) * 1000


_ATTRS: dict[type, Any] = {}


def from_core(kind: str, d: dict, engine: str = "nids", derived: bool = False) -> Record:
    """Build a record from a dict made by the C engine (keys: external names); derived: the
    engine added the derived fields itself (as it does when it also builds columns)."""
    cls = _DATASET.get(kind)
    if cls is None:
        raise ValueError(f"unknown record kind from engine: {kind!r}")
    if not derived:
        _complete(kind, d, engine)
    values = _ATTRS.get(cls)
    if values is None:
        values = _ATTRS[cls] = _values_getter(cls)
    return cls(*values(d))


def _values_getter(cls: type):
    """d -> the values of cls's fields, in the dataclass's order (positional arguments are
    several times faster to pass than ~50 keywords)."""
    fields = _fields(cls)
    if [f.name for f in dataclasses.fields(cls)] != [attr for attr, _n, _t, _j in fields]:
        raise AssertionError(f"schema: {cls.__name__}'s fields are not in dataclass order")
    get = itemgetter(*[name for _a, name, _t, _j in fields])
    return get if len(fields) > 1 else (lambda d: (get(d),))


_DROP: dict[type, tuple[str, ...]] = {}


def json_from_core(kind: str, d: dict, engine: str = "nids", bodies: bool = False) -> dict:
    """The jsonl document straight from an engine dict: what Record.to_json gives, faster."""
    cls = _DATASET[kind]
    _complete(kind, d, engine)
    for name in _TS:
        v = d.get(name)
        if v is not None:
            d[name] = iso(v)
    drop = _DROP.get(cls)
    if drop is None:
        drop = _DROP[cls] = tuple(name for _a, name, _t, j in _fields(cls) if not j)
    for name in drop:
        v = d.pop(name, None)
        if bodies:
            d[name] = None if v is None else _b64(v)
    d["@timestamp"] = d.get("event.start")
    d["event.dataset"] = cls.dataset
    d["c2scribe.schema_version"] = SCHEMA_VERSION
    return d


def markdown() -> str:
    """The schema as Markdown tables (docs/schema.md is this, kept true by a test)."""
    lines = [f"# c2scribe record schema (version {SCHEMA_VERSION})", "",
             "Generated by `c2scribe schema` from `c2scribe/schema.py`. Every jsonl document also "
             "has `@timestamp` (= `event.start` where the record has one), `event.dataset` and "
             "`c2scribe.schema_version`. Timestamps are ISO 8601 UTC with microseconds. Fields "
             "marked *bodies* appear only with `--bodies` (base64).", ""]
    for cls in RECORD_TYPES:
        lines += [f"## `{cls.dataset}` ({cls.__name__})", "", (cls.__doc__ or "").strip(), "",
                  "| field | type | Python attribute |", "|---|---|---|"]
        for attr, name, type_, in_jsonl in _fields(cls):
            lines.append(f"| `{name}` | {type_}{'' if in_jsonl else ', *bodies*'} | `{attr}` |")
        lines.append("")
    return "\n".join(lines)
