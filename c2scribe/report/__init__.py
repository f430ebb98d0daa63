"""`c2scribe report OUTPUT_DIR -o report.html`: one self-contained HTML report of a run's output.

Per agent a timeline (commands paired with their outputs, check-ins folded, pauses, capture
gaps, incomplete transactions and decoder errors marked), the carved files with their hashes,
what is missing or failed, and every connection and HTTP transaction (collapsed, with headers
and bounded bodies). The page has no script and no external resource; a strict
Content-Security-Policy allows only its one stylesheet, by hash. Everything from the wire is
inert text (see escape.py). The filters are those of `c2scribe search` (search.Filters).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

from ..outputs import Output, OutputError
from ..search import Filters
from . import data
from .html import Page, fmt_ts

EXIT_OK, EXIT_USAGE = 0, 2


def describe_filters(f: Filters) -> list[str]:
    """The filters in words, for the report's header."""
    out = []
    if f.since_us is not None:
        out.append(f"since {fmt_ts(f.since_us)} UTC")
    if f.until_us is not None:
        out.append(f"until {fmt_ts(f.until_us)} UTC")
    for name, vals in (("host", f.hosts), ("address", f.ips), ("agent", f.agents),
                       ("decoder", f.decoders)):
        if vals:
            out.append(f"{name}: " + ", ".join(vals))
    return out


def build_report(output_dir: str | os.PathLike, filters: Filters | None = None,
                 title: str | None = None) -> tuple[str, dict]:
    """The report's HTML and its counts. Raises OutputError for what is not an output."""
    filters = filters or Filters()
    output_dir = os.fspath(output_dir)
    name = os.path.basename(os.path.normpath(os.path.abspath(output_dir)))
    title = title or f"c2scribe report: {name or output_dir}"
    with Output(output_dir) as out:
        agents = data.load_agents(out, filters)
        messages, left = {}, data.MAX_MESSAGES
        for i, a in enumerate(agents.rows, 1):
            messages[i] = data.load_messages(out, filters, a["agent"], a["messages"], left)
            left -= len(messages[i].rows)
        tx_ids = {m["tx_id"] for s in messages.values() for m in s.rows if m["tx_id"]}
        transactions = data.load_transactions(out, filters, tx_ids)
        conn_ids = {m["conn_id"] for s in messages.values() for m in s.rows if m["conn_id"]}
        conn_ids |= {t["conn_id"] for t in transactions.rows if t["conn_id"]}
        connections = data.load_connections(out, filters, conn_ids)
        files = data.load_files(out, filters)
        runs = data.load_run_records(out)
        totals = data.totals(out)
    try:
        from importlib.metadata import version
        ver = version("c2scribe")
    except Exception:  # noqa: BLE001 - not installed as a distribution: say so
        ver = "(unknown version)"
    page = Page(title=title, output_dir=os.path.abspath(output_dir),
                filters_text=describe_filters(filters), agents=agents, messages=messages,
                transactions=transactions, connections=connections, files=files, runs=runs,
                totals=totals, generated_us=int(time.time() * 1e6), version=ver)
    html = page.render()
    counts = {
        "agents": agents.total,
        "messages": agents.sums.get("messages", 0),
        "messages_shown": sum(len(s.rows) for s in messages.values()),
        "commands": agents.sums.get("commands", 0),
        "outputs": agents.sums.get("outputs", 0),
        "errors": agents.sums.get("errors", 0),
        "files": files.total,
        "connections": connections.total,
        "transactions": transactions.total,
        "warnings": runs["warning"].total,
        "capture_errors": runs["capture_error"].total,
        "decode_errors": runs["decode_error"].total,
    }
    return html, counts


def write_report(output_dir: str | os.PathLike, out_path: str | os.PathLike,
                 filters: Filters | None = None, title: str | None = None) -> dict:
    """Write the report of output_dir to out_path (atomically); its counts, and its size
    in bytes ("bytes")."""
    html, counts = build_report(output_dir, filters, title)
    raw = html.encode("utf-8", "backslashreplace")   # esc leaves no surrogate; never fail
    out_path = os.fspath(out_path)
    folder = os.path.dirname(os.path.abspath(out_path))
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    counts["bytes"] = len(raw)
    return counts


def run_report_command(args) -> int:
    try:
        filters = Filters.from_args(args)
        counts = write_report(args.output_dir, args.out, filters, args.title)
    except OutputError as e:
        print(f"c2scribe report: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"c2scribe report: cannot write {args.out}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"c2scribe report: wrote {args.out} ({counts['agents']:,} agents, "
          f"{counts['messages']:,} messages, {counts['commands']:,} commands, "
          f"{counts['transactions']:,} HTTP transactions, {counts['connections']:,} "
          f"connections, {counts['files']:,} files; {counts['bytes'] / 1024:,.0f} KiB)",
          file=sys.stderr)
    return EXIT_OK


__all__ = ["build_report", "describe_filters", "run_report_command", "write_report"]
