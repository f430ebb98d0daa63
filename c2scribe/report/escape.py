"""The one way a value reaches the report's HTML: `esc`, and what is built on it.

Everything a capture carries is hostile, and so is everything derived from it (agent keys,
URLs, headers, bodies, file names, decoder fields). `esc` makes any value inert text:

- bytes are decoded as UTF-8; bytes that are not UTF-8 become \\xNN escapes;
- control characters (C0 but newline and tab in multi-line text, DEL, C1), bidirectional
  overrides and isolates, zero-width and other invisible characters, lone surrogates and
  noncharacters become \\xNN / \\uNNNN escapes, the way render/safe.py shows them in the text
  transcript (a superset of its set), marked so they cannot be mistaken for the text itself;
- then HTML escaping of & < > " ' (so the result is safe in text and in a quoted attribute,
  though the report puts no value from the traffic in any attribute);
- length is bounded, and a cut says how much was left out.

The result is HTML markup (text and <span> elements of ours), to be placed as element
content only.
"""
from __future__ import annotations

import html
import re

from ..render.safe import INVISIBLE as _INVISIBLE, hexdump, looks_like_text

_UNSAFE_LINE = re.compile("[\x00-\x1f\x7f-\x9f" + _INVISIBLE + "]+")
_UNSAFE_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f" + _INVISIBLE + "]+")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def as_text(value) -> str:
    """Any value as a str: bytes decoded (what is not UTF-8 kept as lone surrogates, shown
    as \\xNN by esc), None as ''."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "surrogateescape")
    return value if isinstance(value, str) else str(value)


def _escape_run(run: str) -> str:
    parts = []
    for c in run:
        o = ord(c)
        if c in _NAMED:
            parts.append(_NAMED[c])
        elif 0xDC80 <= o <= 0xDCFF:            # a byte that was not UTF-8
            parts.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x100:
            parts.append(f"\\x{o:02x}")
        elif o <= 0xFFFF:
            parts.append(f"\\u{o:04x}")
        else:
            parts.append(f"\\U{o:08x}")
    return '<span class="x">' + "".join(parts) + "</span>"


def esc(value, limit: int | None = 2000, *, multiline: bool = False, total: int | None = None,
        unit: str = "characters") -> str:
    """value as inert HTML text, at most `limit` characters of it (None: no bound).

    total: the length of the whole value when `value` is already a cut of it. With
    multiline, newlines and tabs stay as they are (for <pre>); else they are escaped too.
    """
    s = as_text(value)
    whole = max(len(s), total or 0)
    if limit is not None and len(s) > limit:
        s = s[:limit]
    rx = _UNSAFE_TEXT if multiline else _UNSAFE_LINE
    out, pos = [], 0
    for m in rx.finditer(s):
        out.append(html.escape(s[pos:m.start()], quote=True))
        out.append(_escape_run(m.group()))
        pos = m.end()
    out.append(html.escape(s[pos:], quote=True))
    if whole > len(s):
        out.append(cut_note(whole - len(s), unit))
    return "".join(out)


def cut_note(n: int, unit: str = "characters", where: str = "") -> str:
    return f'<span class="cut">… {n:,} more {unit}{where} not shown</span>'


class Budget:
    """Characters of traffic text the whole report may show; past it, blocks get short."""

    def __init__(self, chars: int):
        self.left = chars

    def take(self, want: int, floor: int = 200) -> int:
        got = max(min(want, self.left), min(want, floor))
        self.left -= got
        return got

    @property
    def spent(self) -> bool:
        return self.left <= 0


def text_block(value, *, total: int | None = None, max_chars: int = 8000, max_lines: int = 120,
               line_chars: int = 1000, budget: Budget | None = None) -> str:
    """Multi-line text for a <pre>: lines, characters and each line's length bounded, every
    cut said (a 1 MB line shows its first line_chars characters and how many more it has)."""
    s = as_text(value).replace("\r\n", "\n")
    whole = max(len(s), total or 0)
    if s.endswith("\n") and whole == len(s):
        s = s[:-1]                  # the newline that ends the last line opens no new one
        whole -= 1
    allowed = budget.take(min(max_chars, len(s) + 1)) if budget else max_chars
    lines = s.split("\n")
    out, used = [], 0
    for i, line in enumerate(lines):
        if i >= max_lines or (used >= allowed and i):
            break
        room = max(0, min(line_chars, allowed - used))
        last = i == len(lines) - 1          # it goes on past what was read, if anything was
        out.append(esc(line, room, multiline=True,
                       unit="characters" if last else "characters on this line",
                       total=len(line) + (whole - len(s)) if last else None))
        used += min(len(line), room) + 1
    text = "\n".join(out)
    hidden_lines = len(lines) - len(out)
    tail = sum(len(x) + 1 for x in lines[len(out):]) + (whole - len(s))
    if hidden_lines:
        what = f"{hidden_lines:,} more lines ({tail:,} characters)"
        why = " (the report's size budget is spent)" if budget and budget.spent else ""
        text += f'\n<span class="cut">… {what} not shown{why}</span>'
    return text


def bytes_block(data: bytes | None, *, total: int | None, text_limit: int = 4096,
                hex_limit: int = 1024, budget: Budget | None = None) -> str:
    """A body or stream preview for a <pre>: escaped text when it reads as text, else a
    hexdump; bounded, with the bytes left out counted."""
    data = bytes(data or b"")
    whole = max(len(data), total or 0)
    if looks_like_text(data[:text_limit]):
        shown = data[:text_limit]
        if budget:
            shown = shown[:budget.take(len(shown))]
        text = as_text(shown).replace("\r\n", "\n")
        body = esc(text, None, multiline=True)
    else:
        shown = data[:hex_limit]
        body = esc("\n".join(hexdump(shown, limit=len(shown))), None, multiline=True)
    if whole > len(shown):
        body += "\n" + cut_note(whole - len(shown), "bytes")
    return body


__all__ = ["Budget", "as_text", "bytes_block", "cut_note", "esc", "text_block"]
