"""JSON lines: one object per record, keys from c2scribe.schema (the stable contract).

ASCII-only output (non-ASCII as \\u escapes), so attacker bytes cannot reach a terminal raw:
orjson writes the common all-ASCII record fast; a record with any non-ASCII character is
written again by the standard library with ensure_ascii.
"""
from __future__ import annotations

import json
from typing import BinaryIO, TextIO

from ..schema import Record

try:
    import orjson
except ImportError:  # pragma: no cover - optional speed-up
    orjson = None

_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


def dumps(obj: dict) -> bytes:
    """One JSON object as ASCII bytes, no newline."""
    if orjson is not None:
        b = orjson.dumps(obj)
        if b.isascii():
            return b
    return _encode(obj).encode("ascii")


class JsonlWriter:
    def __init__(self, out: TextIO | BinaryIO, *, bodies: bool = False):
        self.out = getattr(out, "buffer", out)
        self.bodies = bodies
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, rec: Record | dict | tuple) -> None:
        """A record, a document, or a (dataset, finished JSON bytes) pair from the engine."""
        if isinstance(rec, tuple):
            b = rec[1]
        else:
            b = dumps(rec if isinstance(rec, dict) else rec.to_json(bodies=self.bodies))
        self._pending.append(b)
        self._size += len(b)
        if self._size > 1 << 18:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._pending.append(b"")
            self.out.write(b"\n".join(self._pending))
            self._pending = []
            self._size = 0
        self.out.flush()

    def close(self) -> None:
        self.flush()
