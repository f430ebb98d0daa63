"""Agent timelines: every C2 message of one agent, in time order, read like a chat log.

Messages of one agent can come over many connections (commands in flight at once, proxies):
they are collected for the whole run and sorted by time at the end, per agent. Everything that
came off the wire goes through render.safe.
"""
from __future__ import annotations

from collections import defaultdict
from typing import TextIO

from ..schema import C2Message, CaptureError, DecodeError, EngineWarning, Record, iso
from .safe import safe_line

_ARROW = {"to_implant": "operator -> implant", "to_operator": "implant -> operator"}


class TimelineWriter:
    def __init__(self, out: TextIO, *, text_limit: int = 2000):
        self.out = out
        self.text_limit = text_limit
        self.messages: dict[str | None, list[C2Message]] = defaultdict(list)
        self.other: list[Record] = []

    def write(self, rec: Record) -> None:
        if isinstance(rec, C2Message):
            self.messages[rec.agent].append(rec)
        elif isinstance(rec, (DecodeError, CaptureError, EngineWarning)):
            self.other.append(rec)

    def _p(self, line: str = "") -> None:
        self.out.write(line + "\n")

    def close(self) -> None:
        for agent in sorted(self.messages, key=lambda a: min(m.ts_us for m in self.messages[a])):
            msgs = sorted(self.messages[agent], key=lambda m: (m.ts_us, m.message_id))
            decoders = sorted({f"{m.decoder} {m.decoder_version}" for m in msgs})
            conns = len({m.conn_id for m in msgs})
            self._p(f"=== agent {safe_line(agent) if agent else '(unknown)'}  "
                    f"[{', '.join(decoders)}]  {len(msgs)} messages over {conns} connection(s), "
                    f"{iso(msgs[0].ts_us)} .. {iso(msgs[-1].ts_us)}")
            for m in msgs:
                ref = f" #{safe_line(m.command_id, 40)}" if m.command_id else ""
                where = f"{m.src_ip}:{m.src_port}" if m.src_ip else ""
                arrow = "" if m.kind == "other" else _ARROW.get(m.direction, m.direction)
                self._p(f"{iso(m.ts_us)}  {arrow:<19}  {m.kind}{ref}  ({where}, {m.conn_id})")
                for line in safe_line(m.text, self.text_limit).split("\\n")[:50]:
                    self._p(f"    | {line}")
                for a in m.attachments:
                    self._p(f"    [attachment {safe_line(a['name'], 100)}: {a['size']} bytes, "
                            f"sha256 {a['sha256']}]")
            self._p()
        for rec in self.other:
            if isinstance(rec, DecodeError):
                self._p(f"!! decoder error: {rec.decoder} {rec.decoder_version} in {rec.hook} "
                        f"({rec.conn_id or '-'}): {safe_line(rec.message, 500)}")
            elif isinstance(rec, CaptureError):
                self._p(f"!! capture error: {safe_line(rec.file)} at byte offset {rec.offset}: "
                        f"{safe_line(rec.message)}")
            elif isinstance(rec, EngineWarning):
                self._p(f"!! warning {rec.code} x{rec.count}: {safe_line(rec.message)}")
        self.out.flush()
