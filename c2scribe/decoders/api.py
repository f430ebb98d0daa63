"""The decoder API: what a C2 decoder author writes against.

A decoder is one short Python file with one class:

- an HTTP C2 decoder subclasses :class:`HttpDecoder` and writes up to three methods, the
  blog post's promise: ``want`` (request headers are ready: follow this transaction?),
  ``request`` (the request is complete) and ``response`` (the response is complete);
- a raw-TCP C2 decoder subclasses :class:`StreamDecoder`: ``want`` (a new connection: follow
  it?), ``data`` (the next reassembled bytes of one direction, in order, with their time) and
  ``close``.

Hooks return (or yield) :class:`Message` objects, or nothing. State lives on the instance (one
instance per connection) and in ``ctx.agent_state(key)`` (one dict per agent and decoder,
shared across connections): never in module globals. Decoders never print, write files or
talk to a server.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

from ..schema import HttpTransaction, StreamChunk

#: Message directions.
TO_IMPLANT = "to_implant"        # operator -> implant (commands, tasking, payloads)
TO_OPERATOR = "to_operator"      # implant -> operator (check-ins, output, exfiltration)
DIRECTIONS = (TO_IMPLANT, TO_OPERATOR)

#: Message kinds.
KINDS = ("checkin", "command", "output", "upload", "download", "error", "other")

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str | bytes | None, default: str = "attachment") -> str:
    """A carved file's name made harmless: no path, no control or shell characters, bounded."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", name).strip("._")[:100]
    return name or default


@dataclass(slots=True)
class Attachment:
    """Bytes a message carries (a screenshot, a downloaded tool, exfiltrated data)."""
    name: str
    data: bytes

    def __post_init__(self):
        self.name = safe_filename(self.name)
        if not isinstance(self.data, (bytes, bytearray)):
            raise TypeError("Attachment.data must be bytes")
        self.data = bytes(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(slots=True)
class Message:
    """What a decoder emits. The runner adds time, place and identity.

    ``agent`` is the key the protocol gives the implant (beacon id, cookie, paw ...): messages
    with the same agent form one timeline, whatever connection or proxy carried them.
    ``command_id`` pairs a command with its output. ``ts_us`` defaults to the time of the
    transaction or chunk the hook was called for.
    """
    kind: str
    direction: str
    text: str
    agent: str | None = None
    command_id: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    ts_us: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Message.kind must be one of {KINDS}, not {self.kind!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"Message.direction must be one of {DIRECTIONS}, "
                             f"not {self.direction!r}")
        if not isinstance(self.text, str):
            raise TypeError("Message.text must be str")


@dataclass(slots=True)
class RequestHead:
    """What ``HttpDecoder.want`` sees: enough to select by Host, URI and headers.

    Between two proxies IP addresses say nothing; ``host`` is the Host header or the host of
    an absolute-URI request, ``x_forwarded_for`` the client a proxy named.
    """
    method: str | None
    uri: str | None
    host: str | None
    path: str | None
    headers: list[tuple[str, str]]
    x_forwarded_for: str | None
    user_agent: str | None
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    is_connect: bool

    def header(self, name: str) -> str | None:
        """First value of a header, by case-insensitive name."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    @classmethod
    def of(cls, tx: HttpTransaction) -> "RequestHead":
        return cls(method=tx.method, uri=tx.uri, host=tx.hostname or tx.host_header,
                   path=tx.url_path, headers=list(tx.request_headers),
                   x_forwarded_for=tx.x_forwarded_for, user_agent=tx.user_agent,
                   src_ip=tx.src_ip, src_port=tx.src_port, dst_ip=tx.dst_ip,
                   dst_port=tx.dst_port, is_connect=tx.method == "CONNECT")


@dataclass(slots=True)
class ConnectionHead:
    """What ``StreamDecoder.want`` sees when a connection's first bytes arrive."""
    conn_id: str
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    first: bytes              # the first bytes seen, of either direction
    first_direction: str      # "client_to_server" or "server_to_client"

    @classmethod
    def of(cls, chunk: StreamChunk) -> "ConnectionHead":
        return cls(chunk.conn_id, chunk.src_ip, chunk.src_port, chunk.dst_ip, chunk.dst_port,
                   chunk.data, chunk.direction)


class Context:
    """Handed to every hook: per-agent state, shared by all connections of one decoder."""

    __slots__ = ("_agents",)

    def __init__(self, agents: dict):
        self._agents = agents

    def agent_state(self, agent: str) -> dict:
        """A dict that lives as long as the run, one per agent key (per decoder)."""
        return self._agents.setdefault(agent, {})


class Decoder:
    """Metadata shared by every decoder kind; subclass HttpDecoder or StreamDecoder."""
    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    family: ClassVar[str | None] = None
    description: ClassVar[str] = ""
    references: ClassVar[tuple[str, ...]] = ()
    kind: ClassVar[str] = ""


class HttpDecoder(Decoder):
    """C2 over HTTP. One instance per TCP connection; transactions come in order."""
    kind = "http"

    def want(self, head: RequestHead) -> bool:
        """Follow this transaction? Called when its request headers are known."""
        return True

    def request(self, tx: HttpTransaction, ctx: Context) -> Iterable[Message] | None:
        """The request is complete (tx.request_body holds the decoded body)."""
        return None

    def response(self, tx: HttpTransaction, ctx: Context) -> Iterable[Message] | None:
        """The response is complete (tx.response_body holds the decoded body)."""
        return None


class StreamDecoder(Decoder):
    """C2 over raw TCP. One instance per followed connection; chunks come in capture order."""
    kind = "stream"

    def want(self, head: ConnectionHead) -> bool:
        """Follow this connection? Called with its first bytes."""
        return False

    def data(self, chunk: StreamChunk, ctx: Context) -> Iterable[Message] | None:
        """The next bytes of one direction (chunk.direction, chunk.data, chunk.ts_us);
        chunk.gap_before > 0: that many bytes before these are not in the capture."""
        return None

    def close(self, ctx: Context) -> Iterable[Message] | None:
        """The connection ended: flush what is left."""
        return None


__all__ = [
    "Attachment", "ConnectionHead", "Context", "Decoder", "HttpDecoder", "KINDS", "Message",
    "RequestHead", "StreamDecoder", "TO_IMPLANT", "TO_OPERATOR", "safe_filename",
]
