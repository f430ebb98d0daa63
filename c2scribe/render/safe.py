"""Attacker bytes made safe to show: no terminal escape, no bidi trick, no invisible byte.

Everything a capture carries is hostile. Text is shown only when it decodes as UTF-8 and is
mostly printable; then every control character (C0 but tab and newline, DEL, C1), every
bidirectional override and every zero-width or otherwise invisible character (INVISIBLE) is
shown as an escape. Anything else
becomes a hexdump. Output is bounded.
"""
from __future__ import annotations

import re

#: Characters never shown as themselves besides the controls: bidi marks and overrides,
#: zero-width and other invisible characters (soft hyphen, combining grapheme joiner, Hangul
#: fillers, Mongolian and variation selectors, invisible operators, tags, interlinear
#: annotation), noncharacters and lone surrogates. The HTML report escapes the same set.
INVISIBLE = ("\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
             "\u2028-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\ufffe\uffff"
             "\ud800-\udfff\U000e0000-\U000e0fff\U0001d173-\U0001d17a")
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f" + INVISIBLE + "]")


def _escape(m: re.Match) -> str:
    c = m.group()
    o = ord(c)
    if o < 0x100:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def safe_line(s: str | bytes | None, limit: int = 2000) -> str:
    """One field on one line: every control character (newlines too) escaped, length bounded."""
    if s is None:
        return ""
    if isinstance(s, bytes):
        s = s.decode("utf-8", "backslashreplace")
    cut = len(s) > limit
    s = s[:limit]
    s = _UNSAFE.sub(_escape, s).replace("\n", "\\n").replace("\t", "\\t")
    return s + ("…" if cut else "")


def looks_like_text(b: bytes) -> bool:
    if not b:
        return True
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError as e:
        # a multi-byte character cut at the end of what was kept is still text
        if e.start < len(b) - 3:
            return False
        s = b[:e.start].decode("utf-8")
    bad = sum(1 for c in s if (ord(c) < 32 and c not in "\t\n\r") or 0x7f <= ord(c) < 0xa0)
    return bad <= len(s) // 50


def hexdump(b: bytes, limit: int = 256) -> list[str]:
    lines = []
    for off in range(0, min(len(b), limit), 16):
        row = b[off:off + 16]
        hx = " ".join(f"{x:02x}" for x in row)
        asc = "".join(chr(x) if 0x20 <= x < 0x7f else "." for x in row)
        lines.append(f"{off:08x}  {hx:<47}  |{asc}|")
    if len(b) > limit:
        lines.append(f"… {len(b) - limit} more bytes")
    return lines


def body_lines(b: bytes | None, total: int, max_lines: int = 20, max_chars: int = 4000) -> list[str]:
    """A body preview: text lines (escaped) or a hexdump, with what was left out said."""
    if not b:
        return []
    if looks_like_text(b):
        text = b.decode("utf-8", "backslashreplace").replace("\r\n", "\n")
        lines = text[:max_chars].split("\n")
        out = [_UNSAFE.sub(_escape, ln).replace("\t", "    ").replace("\r", "\\r")[:300]
               for ln in lines[:max_lines]]
        shown = sum(len(x) + 1 for x in lines[:max_lines])
        if total > shown or len(lines) > max_lines:
            out.append(f"… ({total} bytes in all)")
        return out
    out = hexdump(b, limit=16 * max_lines)
    if total > len(b) and not out[-1].startswith("…"):
        out.append(f"… ({total} bytes in all)")
    return out
