"""`c2scribe run`: the Beam graph over many captures.

    Create(units) -> Reshuffle -> ParDo(ProcessUnitFn)

Planning (pipeline.units) happens at graph construction: files are matched, grouped into
chains (one per sensor) and ordered by first-packet time. Each unit is processed by one
engine in one worker process (libnids is one global state per process: process-level
parallelism only), exactly as `c2scribe transcript` drives it: run_chain over the unit's
files, then the decoders over the records.

The DoFn streams each unit's records straight to its own files (no shuffle of records):
OUTPUT/<dataset>/<unit>.jsonl, written to a temporary name and renamed at the end, so a
retried bundle or a re-run replaces them. Per-file status records go to
OUTPUT/_status/<unit>.jsonl (the last line of each is the unit's totals); the driver reads
them back for the summary and the exit status. A unit that fails unexpectedly is recorded
as such and the run goes on: bad input never sinks a run.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
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


def _join(*parts: str) -> str:
    return FileSystems.join(*parts)


def _write_atomic(path: str, lines: list[bytes]) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    _ensure_dir(path)
    with FileSystems.create(tmp) as f:
        for b in lines:
            f.write(b + b"\n")
    _replace(tmp, path)


def _ensure_dir(path: str) -> None:
    if "://" not in path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)


def _replace(tmp: str, path: str) -> None:
    if "://" not in path:
        os.replace(tmp, path)
    else:                                   # object stores: copy-then-delete semantics
        if FileSystems.exists(path):
            FileSystems.delete([path])
        FileSystems.rename([tmp], [path])


class JsonlUnitSink:
    """The records of one unit: one JSON-lines file per dataset, replaced atomically.

    Datasets the unit has no records for lose any file an earlier run left for it.
    """

    def __init__(self, root: str, unit_id: str):
        self.root, self.unit_id = root, unit_id
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


class ParquetUnitSink:
    """The records of one unit through transforms.parquet.ParquetDatasetWriter (local paths):
    OUTPUT/<dataset>/date=.../sensor=<sensor>/part-<unit>-<seq>.parquet."""

    def __init__(self, root: str, unit_id: str, sensor: str):
        from transforms.parquet import ParquetDatasetWriter
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", sensor).lstrip("._-") or "sensor"
        self._w = ParquetDatasetWriter(root, sensor=safe[:200], unit=unit_id)
        self.counts: dict[str, int] = {}

    def write_record(self, rec) -> None:
        self._w.write(rec)
        self.counts[rec.dataset] = self.counts.get(rec.dataset, 0) + 1

    def close(self) -> None:
        self._w.close()

    def abort(self) -> None:
        self._w.abort()


def engine_options(decoders: bool):
    """The engine limits `c2scribe transcript --format jsonl` uses (same records)."""
    from c2scribe.engine import EngineOptions
    o = EngineOptions()
    if decoders:
        return dataclasses.replace(o, body_keep=64 << 20, stream_keep=0)
    return dataclasses.replace(o, body_keep=0)


def file_status(unit: Unit, errors: dict) -> list[dict]:
    """One status record per file: ok, damaged (at an offset) or unreadable, with the reason."""
    out = []
    for i, path in enumerate(unit.files):
        st = {"record": "file", "unit": unit.unit_id, "sensor": unit.sensor, "file": path,
              "order": i, "size": unit.sizes[i] if unit.sizes else None,
              "first_packet_us": unit.first_ts_us[i] if unit.first_ts_us else None,
              "status": "ok", "offset": None, "packets_before": None, "reason": None}
        err = errors.get(path)
        if err is not None:
            unreadable = err.packets_before == 0 and err.offset == 0
            st.update(status="unreadable" if unreadable else "damaged", offset=err.offset,
                      packets_before=err.packets_before, reason=err.message)
        out.append(st)
    return out


class ProcessUnitFn(beam.DoFn):
    """One unit (a sensor's chain of files): engine + decoders, records to the sink.

    Yields the unit's status records (dicts); the same go to OUTPUT/_status/<unit>.jsonl.
    """

    def __init__(self, output: str, decoders: list[str] | None = None, fmt: str = "jsonl"):
        self.output = output
        self.fmt = fmt
        self.decoders = list(decoders or [])
        ns = "c2scribe"
        self.c = {n: Metrics.counter(ns, n) for n in (
            "units", "units_failed", "files", "files_ok", "files_damaged", "files_unreadable",
            "packets", "bytes", "connections", "transactions", "c2_messages", "decode_errors",
            "warnings")}

    def process(self, unit: Unit):
        from c2scribe.capture import run_chain
        from c2scribe.engine import Engine
        from c2scribe.schema import CaptureError, StreamChunk

        t0 = time.monotonic()
        sink = (ParquetUnitSink(self.output, unit.unit_id, unit.sensor) if self.fmt == "parquet"
                else JsonlUnitSink(self.output, unit.unit_id))
        errors: dict[str, CaptureError] = {}
        failure = None
        counters: dict = {}
        runner = None
        engine = None
        try:
            if self.decoders:
                from c2scribe.decoders import DecoderRunner, load
                runner = DecoderRunner([load(spec) for spec in self.decoders])
            engine = Engine(engine_options(bool(runner)),
                            stream_chunks=bool(runner and runner.wants_stream_chunks))

            def emit(rec) -> None:
                if isinstance(rec, StreamChunk):
                    return
                if self.fmt == "parquet":
                    sink.write_record(rec)
                else:
                    sink.write(rec.dataset, dumps(rec.to_json()))

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
        summary = {"record": "unit", "unit": unit.unit_id, "sensor": unit.sensor,
                   "files": len(unit.files), "records": dict(sorted(sink.counts.items())),
                   "packets": counters.get("packets", 0), "bytes": counters.get("bytes", 0),
                   "decode_errors": decode_errors, "failure": failure,
                   "seconds": round(time.monotonic() - t0, 3)}
        _write_atomic(_join(self.output, STATUS_DIR, f"{unit.unit_id}.jsonl"),
                      [dumps(s) for s in statuses + [summary]])

        c = self.c
        c["units"].inc()
        if failure:
            c["units_failed"].inc()
        c["files"].inc(len(unit.files))
        for st in statuses:
            key = {"ok": "files_ok", "damaged": "files_damaged"}.get(st["status"],
                                                                      "files_unreadable")
            c[key].inc()
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
          fmt: str = "jsonl"):
    return (p
            | "Units" >> beam.Create(units)
            | "Redistribute" >> beam.Reshuffle()
            | "ProcessUnit" >> beam.ParDo(ProcessUnitFn(output, decoders, fmt)))


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


def summarize(status: list[dict], out=sys.stderr) -> int:
    files = [s for s in status if s["record"] == "file"]
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


def _local_defaults(argv: list[str], workers: int) -> list[str]:
    """No --runner given: FnApiRunner with one process per worker (never threads: libnids)."""
    if any(a == "--runner" or a.startswith("--runner=") for a in argv):
        return argv
    extra = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing"]
    if not any(a.startswith("--direct_num_workers") for a in argv):
        extra.append(f"--direct_num_workers={max(1, workers)}")
    return argv + extra


def run(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print("usage: c2scribe run --input PATTERN... --output DIR [--decoder NAME]... "
              "[--sensor-pattern REGEX] [--workers N] [Beam pipeline options]\n\n"
              + (C2ScribeOptions.__doc__ or ""), file=sys.stderr)
        return EXIT_OK
    opts = C2ScribeOptions(argv)
    if not opts.input or not opts.output:
        print("c2scribe run: --input and --output are required", file=sys.stderr)
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
        units = plan(opts.input, opts.sensor_pattern)
    except (ValueError, IndexError) as e:     # bad regex / missing named group
        print(f"c2scribe run: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not units:
        print(f"c2scribe run: no file matches {' '.join(opts.input)}", file=sys.stderr)
        return EXIT_USAGE
    if opts.format == "parquet" and "://" in opts.output:
        print("c2scribe run: --format parquet writes local directories only (for now)",
              file=sys.stderr)
        return EXIT_USAGE
    output = opts.output if "://" in opts.output else os.path.abspath(opts.output)
    nfiles = sum(len(u.files) for u in units)
    print(f"c2scribe run: {nfiles} file(s) in {len(units)} unit(s) -> {output}",
          file=sys.stderr)
    popts = PipelineOptions(_local_defaults(argv, opts.workers))
    t0 = time.monotonic()
    with beam.Pipeline(options=popts) as p:
        build(p, units, output, opts.decoder or [], opts.format)
    status = read_status(output, units)
    rc = summarize(status)
    print(f"  {time.monotonic() - t0:.1f}s ({popts.view_as(StandardOptions).runner})",
          file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(run())
