"""Command line: thin shell around the engine, the capture chain and the renderers."""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import time

from . import __version__
from .capture import run_chain
from .engine import STREAM_KEEP, Engine, EngineOptions
from .errors import C2ScribeError
from .render import JsonlWriter, TextWriter
from .render.safe import safe_line
from .schema import CaptureError, EngineWarning

EXIT_OK, EXIT_DAMAGED, EXIT_USAGE = 0, 1, 2


def _size(text: str) -> int:
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("b").rstrip("i")
    if t and t[-1] in mult:
        return int(float(t[:-1]) * mult[t[-1]])
    return int(t)


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    from .engine import ENGINES, TCP_POLICIES
    r = p.add_argument_group("reassembly")
    r.add_argument("--engine", choices=ENGINES, default=None,
                   help=f"reassembly engine (default {EngineOptions().engine}): native (IPv4 "
                        "and IPv6, fragments, mid-stream pickup, gaps skipped, overlap "
                        "policies) or nids (libnids: IPv4 only, needs the handshake, a lost "
                        "segment stalls its direction)")
    r.add_argument("--overlap-policy", choices=TCP_POLICIES, default=None, metavar="POLICY",
                   help="native: which copy of overlapping TCP bytes the receiving host keeps, "
                        "by Suricata's host-os-policy names (default bsd): "
                        + ", ".join(TCP_POLICIES))
    r.add_argument("--host-policy", action="append", default=[], metavar="CIDR=POLICY",
                   help="native: the overlap policy of the hosts in a block (repeatable; the "
                        "most specific block wins), e.g. 10.1.0.0/16=windows")
    g = p.add_argument_group("engine limits")
    g.add_argument("--body-keep", type=_size, default=None, metavar="BYTES",
                   help="decoded HTTP body bytes kept per message (default 64k)")
    g.add_argument("--stream-keep", type=_size, default=None, metavar="BYTES",
                   help="reassembled bytes kept per TCP direction of connections that are "
                        "not HTTP (default 4k; jsonl: with --bodies)")
    g.add_argument("--max-flows", type=int, default=None, help="connections tracked at once")
    g.add_argument("--idle-timeout", type=float, default=None, metavar="SECONDS",
                   help="end connections idle this long (capture time; default 300)")


def _engine_options(args, text: bool) -> EngineOptions:
    o = EngineOptions()
    kw = {}
    if args.body_keep is not None:
        kw["body_keep"] = args.body_keep
    elif not text and not args.bodies:
        kw["body_keep"] = 0
    if args.stream_keep is not None:
        kw["stream_keep"] = args.stream_keep
    elif text or args.bodies:
        kw["stream_keep"] = STREAM_KEEP       # of connections that are not HTTP (as `run`)
    if args.max_flows is not None:
        kw["max_flows"] = args.max_flows
    if args.idle_timeout is not None:
        kw["idle_timeout"] = args.idle_timeout
    if args.engine is not None:
        kw["engine"] = args.engine
    if args.overlap_policy is not None:
        kw["tcp_policy"] = args.overlap_policy
    if args.host_policy:
        kw["host_policies"] = tuple(args.host_policy)
    return dataclasses.replace(o, **kw)


class _Progress:
    """A one-line progress report on stderr, only when stderr is a terminal."""

    def __init__(self, paths: list[str], enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.total = 0
        for p in paths:
            try:
                self.total += os.path.getsize(p)
            except OSError:
                pass
        self.done_files = 0
        self.base = 0
        self.last_path = None
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, path: str, done: int) -> None:
        if path != self.last_path:
            if self.last_path is not None:
                try:
                    self.base += os.path.getsize(self.last_path)
                except OSError:
                    pass
                self.done_files += 1
            self.last_path = path
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.5:
            return
        self.last = now
        rate = (self.base + done) / max(now - self.t0, 1e-6) / 1e6
        sys.stderr.write(f"\r  file {self.done_files + 1}: {self.base + done >> 20} MiB read "
                         f"({rate:.0f} MB/s)   ")
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 60 + "\r")


def cmd_transcript(args) -> int:
    text = args.format == "text"
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    writer = (TextWriter(out, body_lines=args.body_lines, headers=not args.no_headers) if text
              else JsonlWriter(out, bodies=args.bodies))
    try:
        engine = Engine(_engine_options(args, text), jsonl=not text, bodies=args.bodies)
    except C2ScribeError as e:
        print(f"c2scribe: {e}", file=sys.stderr)
        return EXIT_USAGE
    counts = {"c2scribe.connection": 0, "c2scribe.http": 0, "c2scribe.capture_error": 0,
              "c2scribe.warning": 0}
    progress = _Progress(args.captures, not args.quiet)
    t0 = time.monotonic()
    gc.disable()  # records hold no cycles: spare the collector millions of small dicts
    try:
        for rec in run_chain(engine, args.captures, progress=progress):
            dataset = rec[0] if isinstance(rec, tuple) else rec.dataset
            counts[dataset] += 1
            if dataset == "c2scribe.capture_error":
                err = json.loads(rec[1]) if isinstance(rec, tuple) else rec.to_json()
                print(f"c2scribe: {err['c2scribe.capture.file']}: damaged at byte offset "
                      f"{err['c2scribe.capture.offset']} (after {err['c2scribe.capture.packets_before']}"
                      f" packets): {err['error.message']}", file=sys.stderr)
            writer.write(rec)
    except BrokenPipeError:
        sys.stderr.close()
        return EXIT_OK
    finally:
        progress.end()
        writer.close()
        if args.output:
            out.close()
    if not args.quiet:
        c = getattr(engine, "final_counters", {})
        dt = time.monotonic() - t0
        print(f"c2scribe: {len(args.captures)} file(s), {c.get('packets', 0)} packets, "
              f"{c.get('bytes', 0) / 1e6:.1f} MB in {dt:.1f}s; {counts['c2scribe.connection']} "
              f"connections, {counts['c2scribe.http']} HTTP transactions, "
              f"{counts['c2scribe.warning']} warnings, {counts['c2scribe.capture_error']} damaged "
              f"or unreadable file(s)", file=sys.stderr)
    return EXIT_DAMAGED if counts["c2scribe.capture_error"] else EXIT_OK


def cmd_decode(args) -> int:
    """transcript --decoder ...: C2 messages as agent timelines (text) or records (jsonl)."""
    from .decoders import DecoderRunner, load
    from .render.timeline import TimelineWriter
    decoders = [load(spec) for spec in args.decoder]
    carved = []

    def carve(sha256: str, name: str, data: bytes) -> None:
        # content-addressed: the same file carved twice is written once; names were sanitised
        path = os.path.join(args.carve, f"{sha256[:16]}-{name}")
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(data)
            carved.append(path)

    if args.carve:
        os.makedirs(args.carve, exist_ok=True)
    runner = DecoderRunner(decoders, attachment_sink=carve if args.carve else None)
    opts = _engine_options(args, text=True)
    if args.body_keep is None:
        opts = dataclasses.replace(opts, body_keep=64 << 20)   # decoders read whole bodies
    if args.stream_keep is None:
        opts = dataclasses.replace(opts, stream_keep=0)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    writer = (TimelineWriter(out) if args.format == "text"
              else JsonlWriter(out, bodies=args.bodies))
    engine = Engine(opts, stream_chunks=runner.wants_stream_chunks,
                    stream_select=runner.stream_select)
    counts = {"damaged": 0}
    progress = _Progress(args.captures, not args.quiet)
    try:
        for rec in run_chain(engine, args.captures, progress=progress):
            for msg in runner.feed(rec):
                writer.write(msg)
            if isinstance(rec, (CaptureError, EngineWarning)):
                if isinstance(rec, CaptureError):
                    counts["damaged"] += 1
                    print(f"c2scribe: {rec.file}: damaged at byte offset {rec.offset}: "
                          f"{rec.message}", file=sys.stderr)
                writer.write(rec)
        for msg in runner.finish():
            writer.write(msg)
    finally:
        progress.end()
        writer.close()
        if args.output:
            out.close()
    if not args.quiet:
        print(f"c2scribe: {runner.messages} C2 messages from "
              f"{', '.join(d.name + ' ' + d.version for d in decoders)}; "
              f"{runner.errors} decoder errors; {counts['damaged']} damaged or unreadable file(s)"
              + (f"; {len(carved)} file(s) carved to {args.carve}" if args.carve else ""),
              file=sys.stderr)
    return EXIT_DAMAGED if counts["damaged"] or runner.errors else EXIT_OK


def cmd_decoders(args) -> int:
    from .decoders.registry import available, load
    for name, (ref, origin) in sorted(available().items()):
        try:
            d = load(name)
            print(f"{name:<20} {d.version:<8} {d.kind:<7} {origin:<12} {d.description}")
        except C2ScribeError as e:
            print(f"{name:<20} {'?':<8} {'?':<7} {origin:<12} cannot load: {e}")
    return EXIT_OK


def cmd_new_decoder(args) -> int:
    import re
    from importlib.resources import files
    name = args.name
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,40}", name):
        print("c2scribe: a decoder name is lower case letters, digits and dashes, e.g. "
              "'acme-rat'", file=sys.stderr)
        return EXIT_USAGE
    module = name.replace("-", "_")
    cls = "".join(part.capitalize() for part in name.split("-")) + "Decoder"
    os.makedirs(args.dir, exist_ok=True)
    templates = files("c2scribe.decoders") / "templates"
    written = []
    for tmpl, target in (("http_decoder.py.tmpl", f"{module}.py"),
                         ("test_http_decoder.py.tmpl", f"test_{module}.py")):
        path = os.path.join(args.dir, target)
        if os.path.exists(path) and not args.force:
            print(f"c2scribe: {path} exists (use --force to overwrite)", file=sys.stderr)
            return EXIT_USAGE
        text = (templates / tmpl).read_text().format(name=name, module=module, cls=cls)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        written.append(path)
    print(f"wrote {written[0]} (the decoder) and {written[1]} (its test); try:\n"
          f"  python -m pytest {written[1]}\n"
          f"  c2scribe transcript --decoder {written[0]} CAPTURE")
    return EXIT_OK


def cmd_demo(args) -> int:
    from .samples import write_samples
    paths = write_samples(args.dir)
    print(f"c2scribe demo: wrote {len(paths)} sample captures to {args.dir}", file=sys.stderr)
    rc = cmd_transcript(build_parser().parse_args(
        ["transcript", "--format", args.format, "--body-lines", "12", "--", *paths]))
    if args.no_pipeline:
        return rc
    import importlib.util
    if not (importlib.util.find_spec("apache_beam") and importlib.util.find_spec("pyarrow")):
        print("c2scribe demo: the pipeline extra is not installed (pip install "
              "'c2scribe[pipeline]'): skipping `c2scribe run`", file=sys.stderr)
        return rc
    out = os.path.join(args.dir, "run-output")
    print(f"\nc2scribe demo: the same captures through the pipeline: c2scribe run --input "
          f"{args.dir}/* --output {out}", file=sys.stderr)
    prc = cmd_run(argparse.Namespace(argv=["--input", os.path.join(args.dir, "*"),
                                           "--output", out, "--progress", "never"]))
    _demo_show_parquet(out, sys.stdout if args.format == "text" else sys.stderr)
    return max(rc, prc)


def _demo_show_parquet(out: str, to) -> None:
    """What the pipeline wrote, read back: rows per dataset, and the HTTP requests."""
    import pyarrow.dataset as pads
    print(f"\n{out}: Parquet datasets (hive-partitioned by date and sensor)", file=to)
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name)
        if name.startswith("_") or not os.path.isdir(path):
            continue
        t = pads.dataset(path, format="parquet", partitioning="hive").to_table()
        print(f"  {name:<14} {t.num_rows:>4} rows, {t.num_columns} columns", file=to)
        if name == "http":
            cols = ["event.start", "source.ip", "http.request.method", "url.original",
                    "http.response.status_code"]
            for row in t.select(cols).sort_by("event.start").to_pylist():
                print("    " + "  ".join(safe_line(str(row[c]), 120) for c in cols), file=to)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="c2scribe", description="Turn packet captures into transcripts of TCP, HTTP and "
        "C2 traffic: `c2scribe transcript CAPTURE...`, `c2scribe demo` to try it.")
    p.add_argument("--version", action="version", version=f"c2scribe {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transcript", help="print connections and HTTP exchanges of captures",
                       description="Read capture files (pcap/pcapng, optionally gzip/zstd/bzip2/xz "
                       "compressed) as ONE continuous chain in the order given (a rotation: "
                       "oldest first), and print every TCP connection and HTTP transaction.")
    t.add_argument("captures", nargs="+", metavar="CAPTURE")
    t.add_argument("--format", choices=("text", "jsonl"), default="text")
    t.add_argument("-o", "--output", help="write here instead of standard output")
    t.add_argument("--bodies", action="store_true",
                   help="jsonl: include kept body and stream bytes (base64)")
    t.add_argument("--body-lines", type=int, default=20, help="text: body preview lines")
    t.add_argument("--no-headers", action="store_true", help="text: hide HTTP headers")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress or summary on stderr")
    t.add_argument("--decoder", action="append", default=[], metavar="NAME|FILE.py",
                   help="run a C2 decoder (repeatable): print agent timelines (text) or "
                   "C2 messages (jsonl); see `c2scribe decoders`")
    t.add_argument("--carve", metavar="DIR", help="with --decoder: write the files decoders "
                   "carve (screenshots, downloads, uploads) to DIR as SHA256PREFIX-NAME")
    _add_engine_options(t)
    t.set_defaults(func=lambda a: cmd_decode(a) if a.decoder else cmd_transcript(a))

    ds = sub.add_parser("decoders", help="list available decoders with their versions")
    ds.set_defaults(func=cmd_decoders)

    nd = sub.add_parser("new-decoder", help="write a commented template decoder and its test")
    nd.add_argument("name", help="decoder name, e.g. acme-rat")
    nd.add_argument("--dir", default=".", help="where to write NAME.py and test_NAME.py")
    nd.add_argument("--force", action="store_true", help="overwrite existing files")
    nd.set_defaults(func=cmd_new_decoder)

    sc = sub.add_parser("schema", help="print the record schema (field names) as Markdown")
    sc.set_defaults(func=lambda args: print(__import__("c2scribe.schema").schema.markdown()) or 0)

    d = sub.add_parser("demo", help="write sample captures and print their transcript")
    d.add_argument("--dir", default="c2scribe-samples")
    d.add_argument("--format", choices=("text", "jsonl"), default="text")
    d.add_argument("--no-pipeline", action="store_true",
                   help="only the transcript, not the `c2scribe run` pipeline to Parquet")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("run", add_help=False, prefix_chars="+",
                       help="Beam pipeline over many captures: `c2scribe run --input PATTERN... "
                       "--output DIR [--decoder NAME]...` (see `c2scribe run --help`)")
    r.add_argument("argv", nargs=argparse.REMAINDER)
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("backfill", add_help=False, prefix_chars="+",
                       help="`c2scribe run`, incremental: only new or changed captures, and "
                       "those a new decoder version concerns (see `c2scribe backfill --help`)")
    b.add_argument("argv", nargs=argparse.REMAINDER)
    b.set_defaults(func=lambda a: cmd_run(a, backfill=True))

    k = sub.add_parser("kibana-import", add_help=False, prefix_chars="+",
                       help="import c2scribe's Kibana data views, searches and dashboard "
                       "(see `c2scribe kibana-import --help`)")
    k.add_argument("argv", nargs=argparse.REMAINDER)
    k.set_defaults(func=lambda a: __import__("c2scribe.kibana", fromlist=["main"]).main(a.argv))
    _add_index_parser(sub)
    _add_search_parsers(sub)
    return p


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", metavar="TIME", help="from this time on (UTC; YYYY-MM-DD or ISO)")
    p.add_argument("--until", metavar="TIME", help="before this time (UTC)")
    p.add_argument("--host", action="append", default=[], metavar="HOST",
                   help="HTTP host (Host header or URL host; '*' wildcards), repeatable")
    p.add_argument("--ip", action="append", default=[], metavar="IP",
                   help="an address at either end (or a CIDR block), repeatable")
    p.add_argument("--agent", action="append", default=[], metavar="AGENT",
                   help="C2 agent key (as a decoder gives it), repeatable")
    p.add_argument("--decoder", action="append", default=[], metavar="NAME",
                   help="C2 messages of this decoder, repeatable")


def _add_search_parsers(sub) -> None:
    s = sub.add_parser(
        "search", help="search the output of `c2scribe run` (Parquet or jsonl) with DuckDB",
        description="Full-text search over the output of every run in OUTPUT_DIR: C2 "
        "message text and fields, HTTP URLs, hosts, headers and bodies, and the kept bytes of "
        "connections. Each word of QUERY must appear (case-insensitive); an empty QUERY ('') "
        "lists what the filters select. Each result names its capture file and frames.")
    s.add_argument("query", metavar="QUERY")
    s.add_argument("output_dir", metavar="OUTPUT_DIR", help="the --output of `c2scribe run`")
    s.add_argument("--in", dest="datasets", action="append", default=[],
                   choices=("c2", "http", "connection"),
                   help="where to look (repeatable; default all three)")
    _add_filters(s)
    s.add_argument("--limit", type=int, default=100, help="results at most (default 100)")
    s.add_argument("--format", choices=("table", "jsonl"), default="table")
    s.set_defaults(func=cmd_search)

    r = sub.add_parser(
        "report", help="one self-contained HTML report of the output of `c2scribe run`",
        description="Write one HTML file, readable offline in any browser: per agent a "
        "timeline of commands and outputs, the connections and HTTP transactions, the files "
        "decoders carved, with their hashes. Everything that came off the wire is inert text: "
        "the page runs no script and fetches nothing.")
    r.add_argument("output_dir", metavar="OUTPUT_DIR", help="the --output of `c2scribe run`")
    r.add_argument("-o", "--out", required=True, metavar="REPORT.html")
    _add_filters(r)
    r.add_argument("--title", default=None, help="the report's title")
    r.set_defaults(func=cmd_report)


def cmd_search(args) -> int:
    from .search import run_search_command
    return run_search_command(args)


def cmd_report(args) -> int:
    from .report import run_report_command
    return run_report_command(args)


def _add_index_parser(sub) -> None:
    """`c2scribe index OUTPUT_DIR --es-url URL`: the pipeline's output into Elasticsearch."""
    from transforms.elasticsearch import add_arguments
    ix = sub.add_parser(
        "index", help="index the Parquet (or jsonl) output of `c2scribe run` into "
        "Elasticsearch (ECS documents, dated indices; a re-run replaces, never doubles)",
        description="Read the datasets of a `c2scribe run` output directory and index them "
        "into Elasticsearch 8.x or 9.x: templates installed first, documents with "
        "deterministic ids, rejected documents to a dead-letter file. Exit status: 0 all "
        "indexed, 1 documents rejected or not sent, 2 usage errors or a cluster that cannot "
        "be used (nothing sent).")
    ix.add_argument("output_dir", metavar="OUTPUT_DIR", help="the --output of `c2scribe run`")
    ix.add_argument("--dead-letter", metavar="FILE", default=None,
                    help="JSON lines of rejected documents with the reason (default "
                    "OUTPUT_DIR/_elasticsearch/dead-letter.jsonl)")
    add_arguments(ix)
    ix.set_defaults(func=cmd_index)


def cmd_index(args) -> int:
    from transforms.elasticsearch import run_index_command
    return run_index_command(args)


def cmd_run(args, backfill: bool = False) -> int:
    """The Beam pipeline; its own options are parsed by pipeline.run (Beam's too)."""
    from pipeline import sandbox
    from pipeline.logs import quiet_beam
    argv = [a for a in args.argv if a != "--beam-logs"]
    sandbox.prestart(argv)              # before Beam's import, which they then overlap
    try:
        with quiet_beam(enabled=len(argv) == len(args.argv)) as tty:
            from pipeline.run import run
            return run(argv, progress_out=tty, backfill=backfill)
    finally:
        sandbox.close_unused()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except C2ScribeError as e:
        print(f"c2scribe: {e}", file=sys.stderr)
        return EXIT_USAGE


def console() -> None:
    """The `c2scribe` command. After a Beam pipeline, whose outputs and summary are written
    by then, the process exits without the interpreter's teardown: freeing Beam's and
    pyarrow's modules and waiting for Beam's idle threads is a fixed few tenths of a second
    of every run, and can hang."""
    args = sys.argv[1:]
    rc = main(args)
    if args and args[0] in ("run", "backfill"):
        import logging
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc if isinstance(rc, int) else 1)
    sys.exit(rc)


if __name__ == "__main__":
    console()
