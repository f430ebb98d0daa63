"""JSON lines: one object per record, keys from c2scribe.schema (the stable contract).

ASCII-only output (non-ASCII as \\u escapes), so attacker bytes cannot reach a terminal raw.
"""
from __future__ import annotations

import json
from typing import TextIO

from ..schema import Record

_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


class JsonlWriter:
    def __init__(self, out: TextIO, *, bodies: bool = False):
        self.out = out
        self.bodies = bodies

    def write(self, rec: Record) -> None:
        self.out.write(_encode(rec.to_json(bodies=self.bodies)))
        self.out.write("\n")

    def close(self) -> None:
        self.out.flush()
