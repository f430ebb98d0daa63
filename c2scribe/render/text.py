"""The human transcript: each HTTP exchange as it completes, each connection as it ends.

Every value that came off the wire goes through render.safe; nothing raw reaches the terminal.
"""
from __future__ import annotations

from typing import TextIO

from ..schema import CaptureError, Connection, EngineWarning, HttpTransaction, Record, iso
from .safe import body_lines, safe_line


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _ep(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class TextWriter:
    def __init__(self, out: TextIO, *, body_lines: int = 20, headers: bool = True):
        self.out = out
        self.max_body_lines = body_lines
        self.headers = headers

    def _p(self, line: str = "") -> None:
        self.out.write(line + "\n")

    def write(self, rec: Record) -> None:
        if isinstance(rec, HttpTransaction):
            self._http(rec)
        elif isinstance(rec, Connection):
            self._conn(rec)
        elif isinstance(rec, CaptureError):
            self._p(f"!! capture error: {safe_line(rec.file)} at byte offset {rec.offset} "
                    f"(after {rec.packets_before} packets): {safe_line(rec.message)}")
        elif isinstance(rec, EngineWarning):
            where = f" (first: {safe_line(rec.file)} frame {rec.frame})" if rec.file else ""
            self._p(f"!! warning {rec.code} ×{rec.count}: {safe_line(rec.message)}{where}")

    def _body(self, data: bytes | None, total: int, sha: str | None, truncated: bool,
              what: str) -> None:
        if not total:
            return
        self._p(f"      [{what} body {_size(total)} decoded, sha256 {sha}"
                f"{', preview truncated' if truncated else ''}]")
        for ln in body_lines(data, total, self.max_body_lines):
            self._p(f"      | {ln}")

    def _http(self, t: HttpTransaction) -> None:
        when = iso(t.start_us)
        self._p(f"--- {when}  {t.conn_id} #{t.index}  {_ep(t.src_ip, t.src_port)} -> "
                f"{_ep(t.dst_ip, t.dst_port)}  [{t.state}]")
        if t.method is not None:
            self._p(f"  >> {safe_line(t.method)} {safe_line(t.uri)} "
                    f"{safe_line(t.request_protocol)}".rstrip())
            if self.headers:
                for k, v in t.request_headers:
                    self._p(f"  >  {safe_line(k, 200)}: {safe_line(v, 500)}")
            self._body(t.request_body, t.request_body_bytes, t.request_body_sha256,
                       t.request_body_truncated, "request")
        else:
            self._p("  >> (request not captured)")
        if t.status_code is not None or t.status_text is not None:
            self._p(f"  << {safe_line(t.response_protocol)} {t.status_code if t.status_code is not None else safe_line(t.status_text)} "
                    f"{safe_line(t.status_phrase)}".rstrip())
            if self.headers:
                for k, v in t.response_headers:
                    self._p(f"  <  {safe_line(k, 200)}: {safe_line(v, 500)}")
            self._body(t.response_body, t.response_body_bytes, t.response_body_sha256,
                       t.response_body_truncated, "response")
        else:
            self._p("  << (no response captured)")
        if t.flags:
            self._p(f"  !! parser flags: {', '.join(t.flags)}")

    def _conn(self, c: Connection) -> None:
        proto = c.app_protocol or "tcp"
        notes = []
        if not c.handshake:
            notes.append("no handshake seen")
        if not c.reassembled:
            notes.append("not reassembled")
        if c.orientation_guessed:
            notes.append("direction guessed")
        note = f"  ({'; '.join(notes)})" if notes else ""
        self._p(f"=== {iso(c.start_us)} .. {iso(c.end_us)}  {c.conn_id}  {proto}  "
                f"{_ep(c.src_ip, c.src_port)} -> {_ep(c.dst_ip, c.dst_port)}  end={c.end_reason}"
                f"  {c.src_packets}/{c.dst_packets} pkts  {_size(c.c2s_bytes)} -> / "
                f"<- {_size(c.s2c_bytes)}  history {c.history}"
                f"{f'  http={c.http_transactions}' if c.http_transactions else ''}{note}")
        if c.app_protocol is None and (c.c2s_data or c.s2c_data):
            for data, total, arrow in ((c.c2s_data, c.c2s_bytes, ">>"), (c.s2c_data, c.s2c_bytes, "<<")):
                if data:
                    self._p(f"  {arrow} {_size(total)} {'client -> server' if arrow == '>>' else 'server -> client'}")
                    for ln in body_lines(data, total, self.max_body_lines):
                        self._p(f"      | {ln}")

    def close(self) -> None:
        self.out.flush()
