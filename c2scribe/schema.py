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
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

SCHEMA_VERSION = 1


def F(name: str, type_: str, *, jsonl: bool = True):
    """A field: external dotted name, type (str int bool ts ip headers strlist bytes), in jsonl."""
    return field(metadata={"name": name, "type": type_, "jsonl": jsonl})


def iso(us: int | None) -> str | None:
    if us is None:
        return None
    sec, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:06d}Z"


@dataclass(slots=True)
class Record:
    dataset: ClassVar[str] = ""

    def to_json(self, *, bodies: bool = False) -> dict[str, Any]:
        """The record as a flat dict with external field names (the jsonl contract)."""
        out: dict[str, Any] = {"@timestamp": None, "event.dataset": self.dataset,
                               "c2scribe.schema_version": SCHEMA_VERSION}
        for attr, name, type_, in_jsonl in _fields(type(self)):
            if not in_jsonl and not bodies:
                continue
            v = getattr(self, attr)
            if v is not None:
                if type_ == "ts":
                    v = iso(v)
                elif type_ == "bytes":
                    v = base64.b64encode(v).decode("ascii")
                elif type_ == "headers":
                    v = [list(p) for p in v]
            out[name] = v
        out["@timestamp"] = out.get("event.start") or out.get("event.created")
        return out


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
class Connection(Record):
    """One TCP connection, HTTP or not, whether or not the engine could reassemble it."""
    dataset: ClassVar[str] = "c2scribe.connection"
    conn_id: str = F("c2scribe.connection.id", "str")
    community_id: str = F("network.community_id", "str")
    start_us: int = F("event.start", "ts")
    end_us: int = F("event.end", "ts")
    ip_version: int = F("c2scribe.connection.ip_version", "int")
    src_ip: str = F("source.ip", "ip")
    src_port: int = F("source.port", "int")
    dst_ip: str = F("destination.ip", "ip")
    dst_port: int = F("destination.port", "int")
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
    end_reason: str = F("c2scribe.connection.end_reason", "str")
    http_transactions: int = F("c2scribe.connection.http_transactions", "int")
    app_protocol: str | None = F("network.protocol", "str")
    file_first: str | None = F("c2scribe.capture.file", "str")
    frame_first: int = F("c2scribe.capture.frame_first", "int")
    file_last: str | None = F("c2scribe.capture.file_last", "str")
    frame_last: int = F("c2scribe.capture.frame_last", "int")
    engine: str = F("c2scribe.engine", "str")
    transport: str = F("network.transport", "str")
    network_type: str = F("network.type", "str")
    duration_ns: int = F("event.duration", "int")
    c2s_data: bytes | None = F("c2scribe.tcp.client_to_server.content", "bytes", jsonl=False)
    s2c_data: bytes | None = F("c2scribe.tcp.server_to_client.content", "bytes", jsonl=False)


@dataclass(slots=True)
class HttpTransaction(Record):
    """One HTTP request/response exchange, in its connection's order (index 1, 2, ...)."""
    dataset: ClassVar[str] = "c2scribe.http"
    conn_id: str = F("c2scribe.connection.id", "str")
    index: int = F("c2scribe.http.index", "int")
    tx_id: str = F("c2scribe.http.id", "str")
    community_id: str = F("network.community_id", "str")
    start_us: int = F("event.start", "ts")
    end_us: int = F("event.end", "ts")
    ip_version: int = F("c2scribe.connection.ip_version", "int")
    src_ip: str = F("source.ip", "ip")
    src_port: int = F("source.port", "int")
    dst_ip: str = F("destination.ip", "ip")
    dst_port: int = F("destination.port", "int")
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
    continue_100: bool = F("c2scribe.http.continue_100", "bool")
    state: str = F("c2scribe.http.state", "str")
    flags: list = F("c2scribe.http.flags", "strlist")
    tunnel: bool = F("c2scribe.http.tunnel", "bool")
    file_first: str | None = F("c2scribe.capture.file", "str")
    frame_first: int = F("c2scribe.capture.frame_first", "int")
    file_last: str | None = F("c2scribe.capture.file_last", "str")
    frame_last: int = F("c2scribe.capture.frame_last", "int")
    network_type: str = F("network.type", "str")
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


RECORD_TYPES = (Connection, HttpTransaction, CaptureError, EngineWarning)


def _http_version(protocol: str | None, http09: bool) -> str | None:
    if http09:
        return "0.9"
    if protocol and protocol.upper().startswith("HTTP/"):
        return protocol[5:]
    return None


def _url_full(d: dict) -> str | None:
    host, path = d.get("hostname"), d.get("uri")
    if not host or path is None:
        return None
    if d.get("method") == "CONNECT" or "://" in path:
        return path if "://" in path else None
    port = d.get("url_port")
    default = 80
    netloc = host if port in (None, default) else f"{host}:{port}"
    return f"http://{netloc}{path}" if path.startswith("/") else None


def from_core(kind: str, d: dict, engine: str = "nids") -> Record:
    """Build a record from a dict made by the C engine."""
    if kind == "http":
        d["tx_id"] = f"{d['conn_id']}-{d['index']}"
        d["version"] = _http_version(d.get("request_protocol") or d.get("response_protocol"),
                                     d.get("http_09", False))
        d["url_full"] = _url_full(d)
        d["network_type"] = "ipv4" if d["ip_version"] == 4 else "ipv6"
        return HttpTransaction(**d)
    if kind == "connection":
        d["engine"] = engine
        d["transport"] = "tcp"
        d["network_type"] = "ipv4" if d["ip_version"] == 4 else "ipv6"
        d["duration_ns"] = (d["end_us"] - d["start_us"]) * 1000
        return Connection(**d)
    if kind == "capture_error":
        return CaptureError(**d)
    raise ValueError(f"unknown record kind from engine: {kind!r}")
