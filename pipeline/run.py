"""`c2scribe run`: the Beam graph over many captures.

    Create(units) -> Reshuffle -> ParDo(ProcessUnitFn)

Planning (pipeline.units) happens at graph construction: files are matched, grouped into
chains (one per sensor), ordered by first-packet time, and large chains are cut into time
windows. Each unit is processed by one engine in one worker process (libnids is one global
state per process: process-level parallelism only), exactly as `c2scribe transcript` drives
it: run_chain over the unit's files, then the decoders over the records.

The DoFn streams each unit's records straight to its own files (no shuffle of records):
Parquet datasets OUTPUT/<dataset>/date=.../sensor=.../part-<unit>-<n>.parquet (default), or
OUTPUT/<dataset>/<unit>.jsonl; every file is written under a temporary name and renamed, so
a retried bundle or a re-run replaces them. Per-file status records go to
OUTPUT/_status/<unit>.jsonl (the last line is the unit's totals); the driver reads them back
for the summary and the exit status. A unit that fails unexpectedly is recorded as such and
the run goes on: bad input never sinks a run.
"""
from __future__ import annotations

import json
import os
import re
import sys
import threading
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from c2scribe.errors import C2ScribeError
from c2scribe.schema import parse_iso

from .options import BackfillOptions, C2ScribeOptions, parquet_settings
from .units import Unit, plan
from .work import DATASETS, STATUS_DIR, _join, _remote, engine_options, process_unit

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
COUNTERS = ("units", "units_failed", "files", "files_damaged", "files_unreadable", "packets",
            "bytes", "connections", "transactions", "c2_messages", "decode_errors", "warnings",
            "es_indexed", "es_rejected", "es_unsent")


class ProcessUnitFn(beam.DoFn):
    """One unit (a sensor's chain of files, or a time window of it): pipeline.work's
    process_unit, in a child process (pipeline.sandbox) unless isolate=False. Yields the
    unit's status records (dicts), which also go to OUTPUT/_status/<unit>.jsonl, and counts
    them in Beam metrics.
    """

    def __init__(self, output: str, decoders: list[str] | None = None, fmt: str = "parquet",
                 body_keep: int = 64 << 10, isolate: bool = True,
                 unit_timeout: float | None = None, es=None, settings: dict | None = None):
        self.output = output
        self.settings = settings    # engine, overlap policy, host policies, stream bytes
        self.fmt = fmt
        self.body_keep = body_keep
        self.decoders = list(decoders or [])
        self.isolate = isolate
        self.unit_timeout = unit_timeout
        self.sandbox = None
        self.es = es                    # transforms.elasticsearch.EsConfig, or None
        self.es_down = None             # this worker saw Elasticsearch go away: why
        self.c = {n: Metrics.counter("c2scribe", n) for n in COUNTERS}

    def setup(self):
        from .sandbox import take
        self.sandbox = take(self.unit_timeout) if self.isolate else None
        if self.sandbox is not None:
            self.sandbox.start()        # its imports overlap Beam's start of the first bundle

    def teardown(self):
        if getattr(self, "sandbox", None) is not None:
            self.sandbox.close()

    def process(self, element):
        """element: a Unit, or (Unit, manifest job) in backfills."""
        unit, job = element if isinstance(element, tuple) else (element, None)
        # after an outage, later units of this worker are not indexed (each would wait
        # through every retry again): their files are written, the run reports them
        es = None if self.es_down else self.es
        if self.sandbox is not None:
            from .sandbox import run_isolated
            statuses, summary = run_isolated(self.sandbox, unit, self.output, self.decoders,
                                             self.fmt, self.body_keep, job, es,
                                             settings=self.settings)
        else:
            statuses, summary = process_unit(unit, self.output, self.decoders, self.fmt,
                                             self.body_keep, job, es, self.settings)
        if self.es is not None:
            es_sum = summary.get("elasticsearch")
            if es_sum is None and not summary["failure"]:
                summary["elasticsearch"] = {"skipped": self.es_down, "complete": False}
            elif es_sum is not None and es_sum.get("stopped"):
                self.es_down = es_sum.get("reason") or "Elasticsearch stopped answering"
            for name in ("indexed", "rejected", "unsent"):
                self.c["es_" + name].inc((es_sum or {}).get(name, 0))
        c = self.c
        c["units"].inc()
        if summary["failure"]:
            c["units_failed"].inc()
        c["files"].inc(sum(1 for i in range(len(unit.files))
                           if not unit.owned or unit.owned[i]))
        for st in statuses:
            if st["status"] == "damaged":
                c["files_damaged"].inc()
            elif st["status"] not in ("ok", "failed"):
                c["files_unreadable"].inc()
        records = summary["records"]
        c["packets"].inc(summary["packets"])
        c["bytes"].inc(summary["bytes"])
        c["connections"].inc(records.get("c2scribe.connection", 0))
        c["transactions"].inc(records.get("c2scribe.http", 0))
        c["c2_messages"].inc(records.get("c2scribe.c2", 0))
        c["decode_errors"].inc(summary["decode_errors"])
        c["warnings"].inc(records.get("c2scribe.warning", 0))
        yield from statuses
        yield summary


def build(p: beam.Pipeline, units: list, output: str, decoders: list[str],
          fmt: str = "parquet", body_keep: int = 64 << 10, isolate: bool = True,
          unit_timeout: float | None = None, es=None, settings: dict | None = None):
    """units: Units, or (Unit, manifest job) pairs (backfills)."""
    return (p
            | "Units" >> beam.Create(units)
            | "Redistribute" >> beam.Reshuffle()
            | "ProcessUnit" >> beam.ParDo(ProcessUnitFn(output, decoders, fmt, body_keep,
                                                        isolate, unit_timeout, es,
                                                        settings)))


# ------------------------------------------------------------------------------- the driver

def read_status(output: str, units: list[Unit]) -> list[dict]:
    out = []
    for u in units:
        path = _join(output, STATUS_DIR, f"{u.unit_id}.jsonl")
        try:
            with FileSystems.open(path) as f:
                out += [json.loads(line) for line in f.read().splitlines() if line.strip()]
        except Exception:  # noqa: BLE001 - a unit that wrote nothing
            out.append({"record": "unit", "unit": u.unit_id, "sensor": u.sensor,
                        "files": len(u.files), "records": {}, "decode_errors": 0,
                        "failure": "no status written (worker lost?)"})
    return out


_RANK = {"ok": 0, "failed": 1, "damaged": 2, "unreadable": 3}


def merge_files(status: list[dict]) -> dict[str, dict]:
    """One status per file (windows of a chain may each report one): the worst wins."""
    files: dict[str, dict] = {}
    for s in status:
        if s["record"] != "file":
            continue
        old = files.get(s["file"])
        if old is None or _RANK.get(s["status"], 1) > _RANK.get(old["status"], 1):
            files[s["file"]] = s
    return files


def summarize(status: list[dict], out=sys.stderr) -> int:
    files = list(merge_files(status).values())
    units = [s for s in status if s["record"] == "unit"]
    by_status: dict[str, int] = {}
    for s in files:
        by_status[s["status"]] = by_status.get(s["status"], 0) + 1
    records: dict[str, int] = {}
    for u in units:
        for k, v in u.get("records", {}).items():
            records[k] = records.get(k, 0) + v
    decode_errors = sum(u.get("decode_errors", 0) for u in units)
    failed = [u for u in units if u.get("failure")]
    es_units = [u for u in units if "elasticsearch" in u]
    print(f"c2scribe run: {len(units)} unit(s), {len(files)} file(s): "
          + ", ".join(f"{by_status.get(k, 0)} {k}" for k in ("ok", "damaged", "unreadable"))
          + (f", {by_status['failed']} failed" if by_status.get("failed") else ""), file=out)
    for s in files:
        if s["status"] == "damaged":
            print(f"  damaged: {s['file']} at byte offset {s['offset']} (after "
                  f"{s['packets_before']} packets): {s['reason']}", file=out)
        elif s["status"] != "ok":
            print(f"  {s['status']}: {s['file']}: {s['reason']}", file=out)
    for u in failed:
        print(f"  unit {u['unit']} failed: {u['failure']}", file=out)
    print("  records: " + (", ".join(f"{DATASETS.get(k, k)} {v}" for k, v in
                                     sorted(records.items())) or "none")
          + f"; decode errors {decode_errors}", file=out)
    es_bad = False
    if es_units:
        t = {k: sum(u["elasticsearch"].get(k, 0) or 0 for u in es_units)
             for k in ("indexed", "rejected", "unsent", "deleted")}
        partial = [u for u in es_units if not u["elasticsearch"].get("complete")]
        print(f"  Elasticsearch: {t['indexed']} documents indexed, {t['rejected']} rejected, "
              f"{t['unsent']} not sent, {t['deleted']} older ones deleted", file=out)
        reasons = sorted({u["elasticsearch"].get("reason") or u["elasticsearch"].get("skipped")
                          or "" for u in partial} - {""})
        if partial:
            print(f"  Elasticsearch: {len(partial)} unit(s) not completely indexed"
                  + (f" ({'; '.join(reasons)})" if reasons else "")
                  + ": their files are complete; `c2scribe backfill` (or `c2scribe index`) "
                  "indexes them again", file=out)
        dead = sorted({u["elasticsearch"].get("dead_letter") for u in es_units
                       if u["elasticsearch"].get("rejected")} - {None})
        for d in dead:
            print(f"  rejected documents, with the reasons: {d}", file=out)
        es_bad = bool(partial or t["rejected"])
    bad = any(s["status"] != "ok" for s in files) or decode_errors or failed or es_bad
    return EXIT_FAILED if bad else EXIT_OK


def prune_outputs(output: str, units: list[Unit]) -> tuple[int, set[str]]:
    """Outputs of an earlier run for the same chains under other unit ids (the chain was
    whole then and is windowed now, or the other way round, or has other windows): deleted,
    so that records are never there twice (their status and manifest files too). Returns
    how many files went, and the unit ids they were of."""
    keep = {u.unit_id for u in units}
    bases = {re.sub(r"-w\d+$", "", u.unit_id) for u in units}
    rx = re.compile(r"(?:^|/)(?:part-)?(?P<unit>" + "|".join(re.escape(b) for b in sorted(bases))
                    + r")(?P<w>-w\d+)?(?:-\d{5,}\.parquet|\.jsonl|\.json)$")
    patterns = [_join(output, "*", "*.jsonl"), _join(output, "_manifest", "*.json"),
                _join(output, "*", "date=*", "sensor=*", "*.parquet")]
    stale, gone = [], set()
    for r in FileSystems.match(patterns):
        for m in r.metadata_list:
            hit = rx.search(m.path)
            if hit and hit.group("unit") + (hit.group("w") or "") not in keep:
                stale.append(m.path)
                gone.add(hit.group("unit") + (hit.group("w") or ""))
    if stale:
        FileSystems.delete(stale)
    return len(stale), gone


class Progress:
    """Files and bytes done, rate and ETA on one stderr line, from the status files the
    workers write (a unit is done when its status file is newer than the run's start)."""

    def __init__(self, output: str, units: list[Unit], out=sys.stderr, every: float = 1.0):
        self.output, self.units, self.out, self.every = output, units, out, every
        self.t0 = time.time()
        self.total = sum(sum(s or 0 for s in u.sizes) for u in units) or 1
        self.nfiles = len({f for u in units for f in u.files})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> "Progress":
        self._thread.start()
        return self

    def _done(self) -> tuple[int, int, int]:
        units = done_bytes = 0
        files: set[str] = set()
        for u in self.units:
            p = os.path.join(self.output, STATUS_DIR, f"{u.unit_id}.jsonl")
            try:
                if os.stat(p).st_mtime < self.t0:
                    continue
            except OSError:
                continue
            units += 1
            done_bytes += sum(s or 0 for s in u.sizes)
            files.update(f for i, f in enumerate(u.files) if not u.owned or u.owned[i])
        return units, len(files), done_bytes

    def line(self) -> str:
        units, files, done = self._done()
        el = max(time.time() - self.t0, 1e-6)
        rate = done / el
        eta = (self.total - done) / rate if rate > 0 else None
        return (f"c2scribe run: {units}/{len(self.units)} units, {files}/{self.nfiles} files, "
                f"{done / 1e6:,.0f}/{self.total / 1e6:,.0f} MB, {rate / 1e6:,.1f} MB/s, "
                f"ETA {'?' if eta is None else f'{eta:,.0f}s'}")

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            print("\r" + self.line() + "\033[K", end="", file=self.out, flush=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        print("\r\033[K", end="", file=self.out, flush=True)


def read_counters(result) -> dict[str, int]:
    """The c2scribe Beam counters of a finished run (committed values where the runner has
    them); empty when the runner reports none."""
    from apache_beam.metrics.metric import MetricsFilter
    try:
        got = result.metrics().query(MetricsFilter().with_namespace("c2scribe"))["counters"]
    except Exception:  # noqa: BLE001 - metrics are a report, never a failure
        return {}
    out: dict[str, int] = {}
    for c in got:
        v = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + (v or 0)
    return {k: out[k] for k in COUNTERS if k in out}


def _local_defaults(argv: list[str], workers: int, isolate: bool = True) -> list[str]:
    """No --runner given: FnApiRunner with N workers. Beam 2.77's default would first
    download a Prism binary: never rely on it.

    libnids is one global state per process, so two units must never share a process. With
    isolation (the default) every unit runs in a child process of its own (pipeline.sandbox)
    and Beam's workers only hand units to them and wait: they are threads of this process
    (multi_threading), which saves a Beam SDK worker process per core (its start-up and
    ~150 MB each). Without isolation the engine runs in the worker itself, so each worker is
    a process (multi_processing).
    """
    if any(a == "--runner" or a.startswith("--runner=") for a in argv):
        return argv
    mode = "multi_threading" if isolate else "multi_processing"
    extra = ["--runner=FnApiRunner", f"--direct_running_mode={mode}"]
    if not any(a.startswith("--direct_num_workers") for a in argv):
        extra.append(f"--direct_num_workers={max(1, workers)}")
    return argv + extra


USAGE = """usage: c2scribe run --input PATTERN... --output DIR [--decoder NAME]...
                    [--format parquet|jsonl] [--body-keep BYTES] [--sensor-pattern REGEX]
                    [--window SECONDS|auto] [--window-bytes BYTES] [--lookahead SECONDS]
                    [--preroll SECONDS] [--compression CODEC] [--compression-level N]
                    [--workers N] [--progress auto|always|never]
                    [--beam-logs] [Beam pipeline options: --runner ..., see deploy/]

Runs the engine and decoders over many captures with Apache Beam: locally on all cores by
default (no network needed), or unchanged on Flink, Spark or Dataflow (see deploy/).
Outputs: OUTPUT/<dataset>/... (connection, http, c2, decode_error, capture_error, warning)
and OUTPUT/_status/<unit>.jsonl. Exit status: 0 ok, 1 a file was damaged or unreadable or a
decoder failed, 2 usage errors.
"""


BACKFILL_USAGE = """usage: c2scribe backfill --input PATTERN... --output DIR [--decoder NAME]...
                         [--from DATE] [--to DATE] [--sensor NAME]... [--dry-run]
                         [every option of c2scribe run]

`c2scribe run`, incremental: only the units that are new or changed since their last
successful run are processed (new or changed files, other options, decoders added or
removed, or a new version of a decoder that produced output in the unit). What each unit was
made from is kept in OUTPUT/_manifest/; a run killed half-way is completed by the next one.
"""


def run(argv: list[str] | None = None, progress_out=None, backfill: bool = False) -> int:
    """`c2scribe run ARGV` (or `c2scribe backfill ARGV`); progress_out: where the progress
    line goes (the terminal)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    progress_out = progress_out or sys.stderr
    name = "c2scribe backfill" if backfill else "c2scribe run"
    import argparse
    from transforms import elasticsearch as es_mod
    if any(a in ("-h", "--help") for a in argv):
        p = argparse.ArgumentParser(prog=name, usage=argparse.SUPPRESS, add_help=False)
        C2ScribeOptions._add_argparse_args(p)
        if backfill:
            BackfillOptions._add_argparse_args(p)
        es_mod.add_arguments(p)
        print((BACKFILL_USAGE if backfill else USAGE) + "\n"
              + p.format_help().split("\n", 1)[1], file=sys.stderr)
        return EXIT_OK
    # Elasticsearch options stay out of Beam's options: those are logged by workers and
    # shown by runners' UIs, and may hold secrets
    esp = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    es_mod.add_arguments(esp)
    es_args, argv = esp.parse_known_args(argv)
    es = es_mod.config_from_args(es_args)
    opts = C2ScribeOptions(argv)
    bopts = opts.view_as(BackfillOptions)
    if not backfill and (bopts.since or bopts.until or bopts.sensors or bopts.dry_run):
        print("c2scribe run: --from, --to, --sensor and --dry-run are backfill options "
              "(c2scribe backfill)", file=sys.stderr)
        return EXIT_USAGE
    if not opts.input or not opts.output:
        print(f"{name}: --input and --output are required (see --help)", file=sys.stderr)
        return EXIT_USAGE
    settings = {"engine": opts.engine, "tcp_policy": opts.overlap_policy,
                "stream_keep": opts.stream_keep, "host_policies": tuple(opts.host_policy or ())}
    from c2scribe.engine import check_options
    try:
        settings["parquet"] = parquet_settings(opts.format, opts.compression,
                                               opts.compression_level)
    except ValueError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        check_options(engine_options(False, 0, None, settings))
        if opts.decoder:
            from c2scribe.decoders import load
            for spec in opts.decoder:
                load(spec)
    except C2ScribeError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        units = plan(opts.input, opts.sensor_pattern, opts.window, opts.preroll,
                     opts.lookahead, opts.window_bytes)
    except (ValueError, IndexError, re.error) as e:     # bad regex, window, ...
        print(f"c2scribe run: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not units:
        print(f"c2scribe run: no file matches {' '.join(opts.input)}", file=sys.stderr)
        return EXIT_USAGE
    output = opts.output if _remote(opts.output) else os.path.abspath(opts.output)
    plan_all = units
    elements: list = units
    if backfill:
        from . import backfill as bf
        try:
            since = parse_iso(bopts.since) if bopts.since else None
            until = parse_iso(bopts.until) if bopts.until else None
        except ValueError as e:
            print(f"{name}: {e}", file=sys.stderr)
            return EXIT_USAGE
        wanted = [u for u in units if bf.in_range(u, since, until)
                  and (not bopts.sensors or u.sensor in bopts.sensors)]
        todo, current, reasons = bf.select(wanted, output, opts.format, opts.body_keep,
                                           bf.decoder_versions(opts.decoder or []), settings)
        print(f"{name}: {len(units)} unit(s) planned, {len(wanted)} in range, "
              f"{len(current)} up to date, {len(todo)} to process", file=sys.stderr)
        for u, _job in todo:
            print(f"  {u.unit_id}: {reasons[u.unit_id]}", file=sys.stderr)
        if bopts.dry_run:
            return EXIT_OK
        if not todo:
            return EXIT_OK
        units = [u for u, _job in todo]
        elements = todo
    if es is not None:
        try:
            es, info = es_mod.prepare(es)       # fails fast: nothing is done without it
        except es_mod.EsError as e:
            print(f"{name}: {e}", file=sys.stderr)
            return EXIT_USAGE
        print(f"{name}: indexing into {info.describe()}", file=sys.stderr)
    nfiles = len({f for u in units for f in u.files})
    print(f"{name}: {nfiles} file(s) in {len(units)} unit(s) -> {output}", file=sys.stderr)
    popts = PipelineOptions(_local_defaults(argv, opts.workers, opts.isolate))
    runner = popts.view_as(StandardOptions).runner
    local = runner in ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner")
    show = opts.progress == "always" or (opts.progress == "auto" and progress_out.isatty())
    progress = Progress(output, units, progress_out).start() \
        if local and show and not _remote(output) else None
    t0 = time.monotonic()
    counters: dict[str, int] = {}
    try:
        p = beam.Pipeline(options=popts)
        build(p, elements, output, opts.decoder or [], opts.format, opts.body_keep,
              opts.isolate, opts.unit_timeout, es, settings)
        result = p.run()
        result.wait_until_finish()
        counters = read_counters(result)
    finally:
        if progress:
            progress.stop()
    pruned, gone = prune_outputs(output, plan_all)
    if gone and es is not None:
        try:
            n = es_mod.delete_units(es, sorted(gone))
            print(f"  Elasticsearch: {n} document(s) of {len(gone)} replaced unit(s) deleted",
                  file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - reported; the next run tries again
            print(f"  Elasticsearch: documents of replaced units not deleted: {e}",
                  file=sys.stderr)
    status = read_status(output, units)
    rc = summarize(status)
    if counters:
        print("  counters: " + ", ".join(f"{k} {v:,}" for k, v in counters.items()),
              file=sys.stderr)
    if pruned:
        print(f"  {pruned} output file(s) of an earlier run for the same captures under "
              "other units replaced", file=sys.stderr)
    print(f"  {time.monotonic() - t0:.1f}s ({runner})", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(run())
