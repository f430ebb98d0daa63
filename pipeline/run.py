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

import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from c2scribe.render.jsonl import dumps

from .options import C2ScribeOptions
from .units import Unit, plan

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: Output datasets (directory names) by the records' event.dataset.
DATASETS = {
    "c2scribe.connection": "connection",
    "c2scribe.http": "http",
    "c2scribe.capture_error": "capture_error",
    "c2scribe.warning": "warning",
    "c2scribe.c2": "c2",
    "c2scribe.decode_error": "decode_error",
}
STATUS_DIR = "_status"
COUNTERS = ("units", "units_failed", "files", "files_damaged", "files_unreadable", "packets",
            "bytes", "connections", "transactions", "c2_messages", "decode_errors", "warnings")


def _join(*parts: str) -> str:
    return FileSystems.join(*parts)


def _remote(path: str) -> bool:
    return "://" in path


def _ensure_dir(path: str) -> None:
    if not _remote(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)


def _replace(tmp: str, path: str) -> None:
    if not _remote(path):
        os.replace(tmp, path)
    else:                                   # object stores: copy-then-delete semantics
        if FileSystems.exists(path):
            FileSystems.delete([path])
        FileSystems.rename([tmp], [path])


def _write_atomic(path: str, lines: list[bytes]) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    _ensure_dir(path)
    with FileSystems.create(tmp) as f:
        for b in lines:
            f.write(b + b"\n")
    _replace(tmp, path)


def clip_bodies(rec, limit: int):
    """HTTP bodies kept past `limit` bytes are cut there (and flagged): decoders need whole
    bodies, the stored records only their first bytes (sha256 and lengths stay whole)."""
    from c2scribe.schema import HttpTransaction
    if not isinstance(rec, HttpTransaction):
        return rec
    ch = {}
    for body, flag in (("request_body", "request_body_truncated"),
                       ("response_body", "response_body_truncated")):
        v = getattr(rec, body)
        if v is not None and len(v) > limit:
            ch[body], ch[flag] = v[:limit], True
    return dataclasses.replace(rec, **ch) if ch else rec


# ------------------------------------------------------------------------------------ sinks

class JsonlUnitSink:
    """The records of one unit: one JSON-lines file per dataset, replaced atomically.

    Datasets the unit has no records for lose any file an earlier run left for it.
    """

    def __init__(self, root: str, unit_id: str, bodies: bool = False):
        self.root, self.unit_id, self.bodies = root, unit_id, bodies
        self._files: dict[str, tuple[str, object]] = {}
        self.counts: dict[str, int] = {}

    def _target(self, name: str) -> str:
        return _join(self.root, name, f"{self.unit_id}.jsonl")

    def write(self, dataset: str, doc: bytes) -> None:
        name = DATASETS.get(dataset, dataset.rsplit(".", 1)[-1])
        ent = self._files.get(name)
        if ent is None:
            target = self._target(name)
            tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
            _ensure_dir(target)
            ent = self._files[name] = (tmp, FileSystems.create(tmp))
        ent[1].write(doc + b"\n")
        self.counts[dataset] = self.counts.get(dataset, 0) + 1

    def write_record(self, rec) -> None:
        self.write(rec.dataset, dumps(rec.to_json(bodies=self.bodies)))

    def close(self) -> None:
        for name, (tmp, f) in self._files.items():
            f.close()
            _replace(tmp, self._target(name))
        for name in set(DATASETS.values()) - set(self._files):
            stale = self._target(name)
            if FileSystems.exists(stale):
                FileSystems.delete([stale])
        self._files = {}

    def abort(self) -> None:
        for tmp, f in self._files.values():
            try:
                f.close()
                FileSystems.delete([tmp])
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass
        self._files = {}


def _sensor_dir(sensor: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", sensor).lstrip("._-") or "sensor"
    return safe[:200]


class ParquetUnitSink:
    """The records of one unit through transforms.parquet.ParquetDatasetWriter:
    OUTPUT/<dataset>/date=.../sensor=<sensor>/part-<unit>-<n>.parquet.

    Remote outputs (gs://, s3://, ...) are written to a local staging directory, then copied
    file by file through Beam's FileSystems; files of this unit from an earlier run that this
    run did not write are deleted there too.
    """

    def __init__(self, root: str, unit_id: str, sensor: str, bodies: bool = False):
        from transforms.parquet import ParquetDatasetWriter
        self.root, self.unit_id, self.sensor = root, unit_id, _sensor_dir(sensor)
        self._stage = tempfile.mkdtemp(prefix="c2scribe-parquet-") if _remote(root) else None
        self._w = ParquetDatasetWriter(self._stage or root, sensor=self.sensor, unit=unit_id,
                                       bodies=bodies)
        self.counts: dict[str, int] = {}

    def write_record(self, rec) -> None:
        self._w.write(rec)
        self.counts[rec.dataset] = self.counts.get(rec.dataset, 0) + 1

    def close(self) -> None:
        written = self._w.close()
        if self._stage is None:
            return
        try:
            targets = set()
            for local in written:
                rel = os.path.relpath(local, self._stage)
                target = _join(self.root, *rel.split(os.sep))
                targets.add(target)
                tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
                with open(local, "rb") as src, FileSystems.create(tmp) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                _replace(tmp, target)
            pattern = _join(self.root, "*", "date=*", f"sensor={self.sensor}",
                            f"part-{self.unit_id}-*.parquet")
            rx = re.compile(re.escape(f"part-{self.unit_id}-") + r"\d{5,}\.parquet$")
            stale = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list
                     if rx.search(m.path) and m.path not in targets]
            if stale:
                FileSystems.delete(stale)
        finally:
            shutil.rmtree(self._stage, ignore_errors=True)

    def abort(self) -> None:
        self._w.abort()
        if self._stage:
            shutil.rmtree(self._stage, ignore_errors=True)


# ------------------------------------------------------------------------------------ units

def engine_options(decoders: bool, body_keep: int = 0, unit: Unit | None = None):
    """The engine limits `c2scribe transcript --format jsonl` uses (same records): bodies
    kept up to body_keep (decoders: whole, clipped when stored), plus the unit's window."""
    from c2scribe.engine import EngineOptions
    o = dataclasses.replace(EngineOptions(), body_keep=body_keep,
                            **(unit.engine_window() if unit is not None else {}))
    if decoders:
        return dataclasses.replace(o, body_keep=max(body_keep, 64 << 20), stream_keep=0)
    return o


def file_status(unit: Unit, errors: dict) -> list[dict]:
    """One status record per file: ok, damaged (at an offset) or unreadable, with the reason.

    In a windowed unit a file is read by several windows: its record comes from the window
    that owns it (the one its first packet falls in), or the one that found its damage.
    """
    out = []
    for i, path in enumerate(unit.files):
        err = errors.get(path)
        if unit.owned and not unit.owned[i] and err is None:
            continue
        st = {"record": "file", "unit": unit.unit_id, "sensor": unit.sensor, "file": path,
              "order": i, "size": unit.sizes[i] if unit.sizes else None,
              "first_packet_us": unit.first_ts_us[i] if unit.first_ts_us else None,
              "status": "ok", "offset": None, "packets_before": None, "reason": None}
        if err is not None:
            unreadable = err.packets_before == 0 and err.offset == 0
            st.update(status="unreadable" if unreadable else "damaged", offset=err.offset,
                      packets_before=err.packets_before, reason=err.message)
        out.append(st)
    return out


class ProcessUnitFn(beam.DoFn):
    """One unit (a sensor's chain of files, or a time window of it): engine + decoders,
    records to the sink. Yields the unit's status records (dicts); the same go to
    OUTPUT/_status/<unit>.jsonl.
    """

    def __init__(self, output: str, decoders: list[str] | None = None, fmt: str = "parquet",
                 body_keep: int = 64 << 10):
        self.output = output
        self.fmt = fmt
        self.body_keep = body_keep
        self.decoders = list(decoders or [])
        self.c = {n: Metrics.counter("c2scribe", n) for n in COUNTERS}

    def process(self, unit: Unit):
        from c2scribe.capture import run_chain
        from c2scribe.engine import Engine
        from c2scribe.schema import CaptureError, StreamChunk

        t0 = time.monotonic()
        bodies = self.body_keep > 0
        sink = (ParquetUnitSink(self.output, unit.unit_id, unit.sensor, bodies)
                if self.fmt == "parquet" else JsonlUnitSink(self.output, unit.unit_id, bodies))
        errors: dict[str, CaptureError] = {}
        failure = None
        counters: dict = {}
        runner = None
        engine = None
        try:
            if self.decoders:
                from c2scribe.decoders import DecoderRunner, load
                runner = DecoderRunner([load(spec) for spec in self.decoders])
            # no decoders and JSON lines: the C engine writes the documents itself
            fast = runner is None and self.fmt == "jsonl"
            engine = Engine(engine_options(bool(runner), self.body_keep, unit), jsonl=fast,
                            bodies=fast and bodies,
                            stream_chunks=bool(runner and runner.wants_stream_chunks))
            if fast:
                for dataset, doc in run_chain(engine, unit.files):
                    if dataset == CaptureError.dataset:
                        e = CaptureError(**{a: json.loads(doc).get(n) for a, n in
                                            (("file", "c2scribe.capture.file"),
                                             ("offset", "c2scribe.capture.offset"),
                                             ("packets_before",
                                              "c2scribe.capture.packets_before"),
                                             ("message", "error.message"))})
                        errors.setdefault(e.file, e)
                    sink.write(dataset, doc)
            else:
                limit = self.body_keep

                def emit(rec) -> None:
                    if not isinstance(rec, StreamChunk):
                        sink.write_record(clip_bodies(rec, limit) if runner else rec)

                for rec in run_chain(engine, unit.files):
                    if isinstance(rec, CaptureError):
                        errors.setdefault(rec.file, rec)
                    if runner is not None:
                        for msg in runner.feed(rec):
                            emit(msg)
                    emit(rec)
                if runner is not None:
                    for msg in runner.finish():
                        emit(msg)
            counters = getattr(engine, "final_counters", {})
            sink.close()
        except Exception as e:  # noqa: BLE001 - a unit must not sink the run
            failure = f"{type(e).__name__}: {e}"
            sink.abort()
            traceback.print_exc(file=sys.stderr)
        finally:
            if engine is not None:
                try:
                    engine.finish()
                except Exception:  # noqa: BLE001
                    pass
                del engine                  # one live engine per process

        statuses = file_status(unit, errors)
        if failure is not None:
            for st in statuses:
                if st["status"] == "ok":
                    st.update(status="failed", reason=failure)
        decode_errors = sink.counts.get("c2scribe.decode_error", 0)
        w = unit.window
        summary = {"record": "unit", "unit": unit.unit_id, "sensor": unit.sensor,
                   "files": len(unit.files), "records": dict(sorted(sink.counts.items())),
                   "packets": counters.get("packets", 0), "bytes": counters.get("bytes", 0),
                   "packets_skipped": counters.get("window_packets_skipped", 0),
                   "window": None if w is None else {"start_us": w.start_us,
                                                     "end_us": w.end_us},
                   "decode_errors": decode_errors, "failure": failure,
                   "seconds": round(time.monotonic() - t0, 3)}
        _write_atomic(_join(self.output, STATUS_DIR, f"{unit.unit_id}.jsonl"),
                      [dumps(s) for s in statuses + [summary]])

        c = self.c
        c["units"].inc()
        if failure:
            c["units_failed"].inc()
        c["files"].inc(sum(1 for i in range(len(unit.files))
                           if not unit.owned or unit.owned[i]))
        for st in statuses:
            if st["status"] == "damaged":
                c["files_damaged"].inc()
            elif st["status"] != "ok":
                c["files_unreadable"].inc()
        c["packets"].inc(summary["packets"])
        c["bytes"].inc(summary["bytes"])
        c["connections"].inc(sink.counts.get("c2scribe.connection", 0))
        c["transactions"].inc(sink.counts.get("c2scribe.http", 0))
        c["c2_messages"].inc(sink.counts.get("c2scribe.c2", 0))
        c["decode_errors"].inc(decode_errors)
        c["warnings"].inc(sink.counts.get("c2scribe.warning", 0))
        yield from statuses
        yield summary


def build(p: beam.Pipeline, units: list[Unit], output: str, decoders: list[str],
          fmt: str = "parquet", body_keep: int = 64 << 10):
    return (p
            | "Units" >> beam.Create(units)
            | "Redistribute" >> beam.Reshuffle()
            | "ProcessUnit" >> beam.ParDo(ProcessUnitFn(output, decoders, fmt, body_keep)))


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
    bad = any(s["status"] != "ok" for s in files) or decode_errors or failed
    return EXIT_FAILED if bad else EXIT_OK


def prune_outputs(output: str, units: list[Unit]) -> int:
    """Outputs of an earlier run for the same chains under other unit ids (the chain was
    whole then and is windowed now, or the other way round, or has other windows): deleted,
    so that records are never there twice. Returns how many files went."""
    keep = {u.unit_id for u in units}
    bases = {re.sub(r"-w\d+$", "", u.unit_id) for u in units}
    rx = re.compile(r"(?:^|/)(?:part-)?(?P<unit>" + "|".join(re.escape(b) for b in sorted(bases))
                    + r")(?P<w>-w\d+)?(?:-\d{5,}\.parquet|\.jsonl)$")
    patterns = [_join(output, "*", "*.jsonl"), _join(output, "*", "date=*", "sensor=*", "*.parquet")]
    stale = []
    for r in FileSystems.match(patterns):
        for m in r.metadata_list:
            hit = rx.search(m.path)
            if hit and hit.group("unit") + (hit.group("w") or "") not in keep:
                stale.append(m.path)
    if stale:
        FileSystems.delete(stale)
    return len(stale)


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


def _local_defaults(argv: list[str], workers: int) -> list[str]:
    """No --runner given: FnApiRunner with one process per worker (never threads: libnids).
    Beam 2.77's default would first download a Prism binary: never rely on it."""
    if any(a == "--runner" or a.startswith("--runner=") for a in argv):
        return argv
    extra = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing"]
    if not any(a.startswith("--direct_num_workers") for a in argv):
        extra.append(f"--direct_num_workers={max(1, workers)}")
    return argv + extra


USAGE = """usage: c2scribe run --input PATTERN... --output DIR [--decoder NAME]...
                    [--format parquet|jsonl] [--body-keep BYTES] [--sensor-pattern REGEX]
                    [--window SECONDS|auto] [--window-bytes BYTES] [--lookahead SECONDS]
                    [--preroll SECONDS] [--workers N] [--progress auto|always|never]
                    [Beam pipeline options: --runner ..., see deploy/]

Runs the engine and decoders over many captures with Apache Beam: locally on all cores by
default (no network needed), or unchanged on Flink, Spark or Dataflow (see deploy/).
Outputs: OUTPUT/<dataset>/... (connection, http, c2, decode_error, capture_error, warning)
and OUTPUT/_status/<unit>.jsonl. Exit status: 0 ok, 1 a file was damaged or unreadable or a
decoder failed, 2 usage errors.
"""


def run(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        import argparse
        p = argparse.ArgumentParser(prog="c2scribe run", usage=argparse.SUPPRESS,
                                    add_help=False)
        C2ScribeOptions._add_argparse_args(p)
        print(USAGE + "\n" + p.format_help().split("\n", 1)[1], file=sys.stderr)
        return EXIT_OK
    opts = C2ScribeOptions(argv)
    if not opts.input or not opts.output:
        print("c2scribe run: --input and --output are required (see --help)", file=sys.stderr)
        return EXIT_USAGE
    if opts.decoder:
        from c2scribe.decoders import load
        from c2scribe.errors import C2ScribeError
        try:
            for spec in opts.decoder:
                load(spec)
        except C2ScribeError as e:
            print(f"c2scribe run: {e}", file=sys.stderr)
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
    nfiles = len({f for u in units for f in u.files})
    print(f"c2scribe run: {nfiles} file(s) in {len(units)} unit(s) -> {output}",
          file=sys.stderr)
    popts = PipelineOptions(_local_defaults(argv, opts.workers))
    runner = popts.view_as(StandardOptions).runner
    local = runner in ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner")
    show = opts.progress == "always" or (opts.progress == "auto" and sys.stderr.isatty())
    progress = Progress(output, units).start() if local and show and not _remote(output) \
        else None
    t0 = time.monotonic()
    try:
        with beam.Pipeline(options=popts) as p:
            build(p, units, output, opts.decoder or [], opts.format, opts.body_keep)
    finally:
        if progress:
            progress.stop()
    pruned = prune_outputs(output, units)
    status = read_status(output, units)
    rc = summarize(status)
    if pruned:
        print(f"  {pruned} output file(s) of an earlier run for the same captures under "
              "other units replaced", file=sys.stderr)
    print(f"  {time.monotonic() - t0:.1f}s ({runner})", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(run())
