"""Runs decoders over the engine's records: sans-IO, records in, C2 messages out.

HTTP decoders see each transaction (want -> request -> response); stream decoders see each
connection's chunks in order (want on the first chunk -> data ... -> close when the
connection record arrives). One decoder instance per connection; per-agent state through the
Context. A hook that raises, or returns something other than messages, becomes a DecodeError
record and the run goes on.
"""
from __future__ import annotations

import traceback
from typing import Iterable

from ..schema import C2Message, Connection, ConnectionEnd, DecodeError, HttpTransaction, StreamChunk
from .api import (Context, ConnectionHead, Decoder, HttpDecoder, Message, RequestHead,
                  StreamDecoder)

_REJECTED = object()          # a decoder that did not want this connection
WANT_BYTES = 64               # a stream decoder's want() sees at least this much when it can
FIRST_BYTES = 4096            # ... and at most this much (the engine's flow.c: the same rule)
_FINE = object()


class DecoderRunner:
    """``attachment_sink(sha256, name, data)``, if given, receives every attachment's bytes
    (the CLI's --carve writes them to disk; records keep name, size and hash only).
    With ``Engine(stream_select=runner.stream_select)`` the engine holds a connection's
    chunks itself and asks the stream decoders' want() once; without it, the runner holds
    them (the same rule)."""

    def __init__(self, decoders: Iterable[type[Decoder]], attachment_sink=None):
        self.decoders = list(decoders)
        self.attachment_sink = attachment_sink
        self._http = [d for d in self.decoders if issubclass(d, HttpDecoder)]
        self._stream = [d for d in self.decoders if issubclass(d, StreamDecoder)]
        self._ctx = {d: Context({}) for d in self.decoders}
        self._inst: dict[tuple[type, str], object] = {}    # (decoder, conn_id) -> instance
        self._seq: dict[tuple[type, str], int] = {}
        self._last: dict[tuple[type, str], tuple] = {}      # last chunk's time and place
        self._held: dict[tuple[type, str], list] = {}       # chunks before want() decided
        self._selected: dict[str, list] = {}                # tx_id -> decoders that want it
        self._pending: list = []                            # select()'s DecodeErrors
        self.errors = 0
        self.messages = 0

    @property
    def wants_stream_chunks(self) -> bool:
        return bool(self._stream)

    # ------------------------------------------------------------------ plumbing

    def _error(self, dec: type[Decoder], hook: str, exc: BaseException | None, text: str,
               conn_id=None, tx_id=None, file=None, frame=None) -> DecodeError:
        self.errors += 1
        tb = "".join(traceback.format_exception(exc)) if exc is not None else ""
        return DecodeError(decoder=dec.name, decoder_version=str(dec.version), hook=hook,
                           error_type=type(exc).__name__ if exc is not None else "TypeError",
                           message=text, traceback=tb, conn_id=conn_id, tx_id=tx_id,
                           file=file, frame=frame)

    def _call(self, dec, hook: str, fn, args, where: dict, out: list) -> list[Message] | None:
        """Run one hook; its messages, or None after recording a DecodeError in out."""
        try:
            result = fn(*args)
            if result is None:
                return []
            if isinstance(result, Message):
                return [result]
            bad = result if isinstance(result, (str, bytes, dict)) or \
                not hasattr(result, "__iter__") else _FINE
            msgs = [] if bad is not _FINE else list(result)  # a generator runs here
        except Exception as exc:  # a decoder bug must not stop the run
            out.append(self._error(dec, hook, exc, f"{dec.name}.{hook} raised "
                                   f"{type(exc).__name__}: {exc}", **where))
            return None
        if bad is _FINE:
            bad = next((m for m in msgs if not isinstance(m, Message)), _FINE)
        if bad is not _FINE:
            out.append(self._error(dec, hook, None, f"{dec.name}.{hook} returned "
                                   f"{type(bad).__name__}; a hook returns Message objects, "
                                   "an iterable of them, or None", **where))
            return None
        return msgs

    def _emit(self, dec, msgs: list[Message], out: list, *, conn_id, tx_id, ts_us, src_ip,
              src_port, dst_ip, dst_port, file, frame_first, frame_last) -> None:
        key = (dec, conn_id)
        for m in msgs:
            if self.attachment_sink is not None:
                for a in m.attachments:
                    self.attachment_sink(a.sha256, a.name, a.data)
            seq = self._seq.get(key, 0) + 1
            self._seq[key] = seq
            self.messages += 1
            out.append(C2Message(
                message_id=f"{conn_id}-{dec.name}-{seq}", ts_us=m.ts_us or ts_us,
                decoder=dec.name, decoder_version=str(dec.version), family=dec.family,
                agent=m.agent, direction=m.direction, kind=m.kind, text=m.text,
                command_id=m.command_id, fields=dict(m.fields),
                attachments=[{"name": a.name, "size": len(a.data), "sha256": a.sha256}
                             for a in m.attachments],
                conn_id=conn_id, tx_id=tx_id, src_ip=src_ip, src_port=src_port, dst_ip=dst_ip,
                dst_port=dst_port, file=file, frame_first=frame_first, frame_last=frame_last))

    def _instance(self, dec, conn_id: str, where: dict, out: list):
        key = (dec, conn_id)
        inst = self._inst.get(key)
        if inst is None:
            try:
                inst = dec()
            except Exception as exc:
                out.append(self._error(dec, "__init__", exc, f"{dec.name}() raised "
                                       f"{type(exc).__name__}: {exc}", **where))
                inst = _REJECTED
            self._inst[key] = inst
        return inst

    # ------------------------------------------------------------------ records in

    def feed(self, rec) -> list:
        """Records in (any kind, in engine order); C2Message / DecodeError records out."""
        out, self._pending = self._pending, []            # select()'s errors first
        if isinstance(rec, HttpTransaction) and self._http:
            self._transaction(rec, out)
        elif isinstance(rec, StreamChunk) and self._stream:
            self._chunk(rec, out)
        elif isinstance(rec, (Connection, ConnectionEnd)):
            self._closed(rec.conn_id, out)
        return out

    def select(self, conn_id: str, index: int, file, frame: int, method, uri, host, path,
               headers, x_forwarded_for, user_agent, src_ip: str, src_port: int,
               dst_ip: str, dst_port: int) -> bool:
        """The engine's question when a transaction is reported: does a decoder want it
        (``Engine(select=...)``)? Its want() calls are made here, so the transaction, if
        it comes, goes straight to request()/response(); errors come with the next feed()."""
        if not self._http:
            return False
        tx_id = f"{conn_id}-{index}"
        where = dict(conn_id=conn_id, tx_id=tx_id, file=file, frame=frame)
        head = RequestHead(method=method, uri=uri, host=host, path=path, headers=headers,
                           x_forwarded_for=x_forwarded_for, user_agent=user_agent,
                           src_ip=src_ip, src_port=src_port, dst_ip=dst_ip, dst_port=dst_port,
                           is_connect=method == "CONNECT")
        wanted = [dec for dec in self._http if self._wants(dec, conn_id, head, where,
                                                           self._pending)]
        if wanted:
            self._selected[tx_id] = wanted
        return bool(wanted)

    def _wants(self, dec, conn_id: str, head, where: dict, out: list) -> bool:
        """Its instance for the connection (made on first use) wants what head shows."""
        inst = self._instance(dec, conn_id, where, out)
        return inst is not _REJECTED and self._want(dec, inst, head, where, out)

    def _transaction(self, tx: HttpTransaction, out: list) -> None:
        where = dict(conn_id=tx.conn_id, tx_id=tx.tx_id, file=tx.file_first, frame=tx.frame_first)
        selected = self._selected.pop(tx.tx_id, None)       # select() already asked want()
        head = place = None
        for dec in self._http if selected is None else selected:
            if selected is None:
                head = head or RequestHead.of(tx)
                if not self._wants(dec, tx.conn_id, head, where, out):
                    continue
            inst = self._inst[(dec, tx.conn_id)]
            place = place or dict(conn_id=tx.conn_id, tx_id=tx.tx_id, src_ip=tx.src_ip,
                                  src_port=tx.src_port, dst_ip=tx.dst_ip, dst_port=tx.dst_port,
                                  file=tx.file_first, frame_first=tx.frame_first,
                                  frame_last=tx.frame_last)
            ctx = self._ctx[dec]
            if tx.method is not None:
                msgs = self._call(dec, "request", inst.request, (tx, ctx), where, out)
                if msgs:
                    self._emit(dec, msgs, out, ts_us=tx.start_us, **place)
            if tx.status_code is not None or tx.status_text is not None:
                msgs = self._call(dec, "response", inst.response, (tx, ctx), where, out)
                if msgs:
                    self._emit(dec, msgs, out, ts_us=tx.end_us, **place)

    def _want(self, dec, inst, head, where: dict, out: list) -> bool:
        try:
            return bool(inst.want(head))
        except Exception as exc:
            out.append(self._error(dec, "want", exc, f"{dec.name}.want raised "
                                   f"{type(exc).__name__}: {exc}", **where))
            return False

    def _chunk(self, ch: StreamChunk, out: list) -> None:
        for dec in self._stream:
            key = (dec, ch.conn_id)
            inst = self._inst.get(key)
            if inst is _REJECTED:
                continue
            if inst is not None:
                self._deliver(dec, inst, ch, out)
                continue
            # Undecided: want() sees at least WANT_BYTES of the first direction, or what came
            # before the other side spoke; the held chunks then go to data() in order.
            held = self._held.setdefault(key, [])
            held.append(ch)
            first = [c for c in held if c.direction == held[0].direction]
            if len(first) == len(held) and sum(len(c.data) for c in first) < WANT_BYTES:
                continue
            self._decide(dec, key, out)

    def stream_select(self, conn_id: str, src_ip: str, src_port: int, dst_ip: str,
                      dst_port: int, first: bytes, first_direction: str, file,
                      frame: int) -> bool:
        """The engine's question on a connection's first bytes (``Engine(stream_select=...)``):
        does a stream decoder follow it? Its want() calls are made here; the chunks, if
        they come, go straight to data(); errors come with the next feed()."""
        where = dict(conn_id=conn_id, file=file, frame=frame)
        head = ConnectionHead(conn_id, src_ip, src_port, dst_ip, dst_port, first,
                              first_direction)
        return bool([dec for dec in self._stream
                     if self._follows(dec, conn_id, head, where, self._pending)])

    def _follows(self, dec, conn_id: str, head: ConnectionHead, where: dict,
                 out: list) -> bool:
        """A stream decoder's one decision on a connection; a no is kept."""
        if self._wants(dec, conn_id, head, where, out):
            return True
        self._inst[(dec, conn_id)] = _REJECTED
        return False

    def _decide(self, dec, key, out: list) -> None:
        held = self._held.pop(key)
        ch = held[0]
        where = dict(conn_id=ch.conn_id, file=ch.file, frame=ch.frame)
        first = b"".join(c.data for c in held if c.direction == ch.direction)
        head = ConnectionHead(ch.conn_id, ch.src_ip, ch.src_port, ch.dst_ip, ch.dst_port,
                              first[:FIRST_BYTES], ch.direction)
        if self._follows(dec, ch.conn_id, head, where, out):
            for c in held:
                self._deliver(dec, self._inst[key], c, out)

    def _deliver(self, dec, inst, ch: StreamChunk, out: list) -> None:
        where = dict(conn_id=ch.conn_id, file=ch.file, frame=ch.frame)
        place = dict(conn_id=ch.conn_id, tx_id=None, src_ip=ch.src_ip, src_port=ch.src_port,
                     dst_ip=ch.dst_ip, dst_port=ch.dst_port, file=ch.file,
                     frame_first=ch.frame, frame_last=ch.frame)
        self._last[(dec, ch.conn_id)] = (ch.ts_us, place)
        msgs = self._call(dec, "data", inst.data, (ch, self._ctx[dec]), where, out)
        if msgs:
            self._emit(dec, msgs, out, ts_us=ch.ts_us, **place)

    def _closed(self, conn_id: str, out: list) -> None:
        for dec in self.decoders:
            key = (dec, conn_id)
            if key in self._held:                     # short connection: decide on what came
                self._decide(dec, key, out)
            inst = self._inst.pop(key, None)
            self._seq.pop(key, None)
            last = self._last.pop(key, None)
            if inst is None or inst is _REJECTED or not isinstance(inst, StreamDecoder):
                continue
            msgs = self._call(dec, "close", inst.close, (self._ctx[dec],),
                              dict(conn_id=conn_id), out)
            if msgs and last:
                ts_us, place = last
                self._emit(dec, msgs, out, ts_us=ts_us, **place)

    def finish(self) -> list:
        """End of input: close what is still open (the engine reports every connection, so
        normally nothing is)."""
        out, self._pending = self._pending, []
        for conn_id in {c for _d, c in self._inst} | {c for _d, c in self._held}:
            self._closed(conn_id, out)
        return out
