"""The work on one unit, without the Beam graph: engine + decoders -> sinks -> status.

`process_unit` is what a worker does with a unit (a sensor's chain of files, or a time
window of it), exactly as `c2scribe transcript` drives the engine: run_chain over the unit's
files, then the decoders over the records. Records stream straight to the unit's own files:
Parquet datasets OUTPUT/<dataset>/date=.../sensor=.../part-<unit>-<n>.parquet, or
OUTPUT/<dataset>/<unit>.jsonl, written under temporary names and renamed, so a retried unit
or a re-run replaces them. Its status records (one per file, then the unit's totals) go to
OUTPUT/_status/<unit>.jsonl. Files go through Beam's FileSystems (local paths, gs://, s3://
...), imported only when used: pipeline.sandbox runs this in a plain child process.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import uuid

from c2scribe.ecs import DATASETS_SHORT
from c2scribe.render.jsonl import dumps

from .units import Unit

#: Output datasets (directory names) by the records' event.dataset.
DATASETS = {dataset: short for short, dataset in DATASETS_SHORT.items()}
STATUS_DIR = "_status"


def _fs():
    from apache_beam.io.filesystems import FileSystems
    return FileSystems


# Local paths go through os and glob, so that the sandbox child does not import Beam for a
# local run; other filesystems (gs://, s3://, ...) through Beam's FileSystems.

def _remote(path: str) -> bool:
    return "://" in path


def _join(*parts: str) -> str:
    return _fs().join(*parts) if _remote(parts[0]) else os.path.join(*parts)


def _exists(path: str) -> bool:
    return _fs().exists(path) if _remote(path) else os.path.exists(path)


def _delete(paths: list[str]) -> None:
    if not paths:
        return
    remote = [p for p in paths if _remote(p)]
    if remote:
        _fs().delete(remote)
    for p in paths:
        if not _remote(p):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def _create(path: str):
    # 1 MiB buffers: a unit writes hundreds of thousands of documents, a few KiB each
    return _fs().create(path) if _remote(path) else open(path, "wb", buffering=1 << 20)


def _open_read(path: str):
    return _fs().open(path) if _remote(path) else open(path, "rb")


def _glob(pattern: str) -> list[str]:
    if not _remote(pattern):
        return glob.glob(pattern)
    try:
        return [m.path for r in _fs().match([pattern]) for m in r.metadata_list]
    except Exception:  # noqa: BLE001 - Beam raises when nothing matches on some stores
        return []


def _ensure_dir(path: str) -> None:
    if not _remote(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)


def _replace(tmp: str, path: str) -> None:
    if not _remote(path):
        os.replace(tmp, path)
    else:                                   # object stores: copy-then-delete semantics
        if _fs().exists(path):
            _fs().delete([path])
        _fs().rename([tmp], [path])


def _write_atomic(path: str, lines: list[bytes]) -> None:
    """Written under a temporary name, then renamed; temporary files of the same path that a
    killed run left are removed (one unit is written by one process at a time)."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    _ensure_dir(path)
    with _create(tmp) as f:
        for b in lines:
            f.write(b + b"\n")
    _replace(tmp, path)
    _delete(_glob(f"{glob.escape(path)}.tmp-*"))


#: HTTP transaction bodies that are clipped when stored, and the flag that says so
CLIPPED = (("request_body", "request_body_truncated"),
           ("response_body", "response_body_truncated"))


def clip_bodies(rec, limit: int):
    """HTTP bodies kept past `limit` bytes are cut there (and flagged): decoders need whole
    bodies, the stored records only their first bytes (sha256 and lengths stay whole)."""
    from c2scribe.schema import HttpTransaction
    if not isinstance(rec, HttpTransaction):
        return rec
    ch = {}
    for body, flag in CLIPPED:
        v = getattr(rec, body)
        if v is not None and len(v) > limit:
            ch[body], ch[flag] = v[:limit], True
    return dataclasses.replace(rec, **ch) if ch else rec


def clip_batch(batch, limit: int):
    """clip_bodies for a columnar batch of HTTP transactions (other batches as they are)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from c2scribe.arrow import META_DATASET
    from c2scribe.schema import HttpTransaction, fields_of
    if batch.schema.metadata.get(META_DATASET) != HttpTransaction.dataset.encode():
        return batch
    ext = {attr: name for attr, name, _t, _j in fields_of(HttpTransaction)}
    names = batch.schema.names
    cols = dict(zip(names, batch.columns))
    changed = False
    for body, flag in ((ext[b], ext[f]) for b, f in CLIPPED):
        lens = pc.binary_length(cols[body])
        if (pc.max(lens).as_py() or 0) <= limit:
            continue
        over = pc.fill_null(pc.greater(lens, limit), False)
        cols[body] = pc.binary_slice(cols[body], 0, limit)
        cols[flag] = pc.or_(cols[flag], over)
        changed = True
    if not changed:
        return batch
    return pa.RecordBatch.from_arrays([cols[n] for n in names], schema=batch.schema)


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
            ent = self._files[name] = (tmp, _create(tmp))
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
            if _exists(stale):
                _delete([stale])
        # temporary files a killed run left
        _delete(_glob(_join(self.root, "*", f"{self.unit_id}.jsonl.tmp-*")))
        self._files = {}

    def abort(self) -> None:
        for tmp, f in self._files.values():
            try:
                f.close()
                _delete([tmp])
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

    def __init__(self, root: str, unit_id: str, sensor: str, bodies: bool = False,
                 **writer):
        from transforms.parquet import ParquetDatasetWriter
        self.root, self.unit_id, self.sensor = root, unit_id, _sensor_dir(sensor)
        self._stage = tempfile.mkdtemp(prefix="c2scribe-parquet-") if _remote(root) else None
        self._w = ParquetDatasetWriter(self._stage or root, sensor=self.sensor, unit=unit_id,
                                       bodies=bodies, **writer)
        self.counts: dict[str, int] = {}

    def write_record(self, rec) -> None:
        self._w.write(rec)
        self.counts[rec.dataset] = self.counts.get(rec.dataset, 0) + 1

    def write_batch(self, batch) -> None:
        """A RecordBatch of the engine's columnar output."""
        from c2scribe.arrow import META_DATASET
        self._w.write_batch(batch)
        ds = batch.schema.metadata[META_DATASET].decode()
        self.counts[ds] = self.counts.get(ds, 0) + batch.num_rows

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
                with open(local, "rb") as src, _fs().create(tmp) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                _replace(tmp, target)
            pattern = _join(self.root, "*", "date=*", f"sensor={self.sensor}",
                            f"part-{self.unit_id}-*.parquet")
            rx = re.compile(re.escape(f"part-{self.unit_id}-") + r"\d{5,}\.parquet$")
            stale = [m.path for r in _fs().match([pattern]) for m in r.metadata_list
                     if rx.search(m.path) and m.path not in targets]
            if stale:
                _fs().delete(stale)
        finally:
            shutil.rmtree(self._stage, ignore_errors=True)

    def abort(self) -> None:
        self._w.abort()
        if self._stage:
            shutil.rmtree(self._stage, ignore_errors=True)


# ------------------------------------------------------------------------------------ units

def engine_settings(given: dict | None = None) -> dict:
    """The engine settings of a run (engine, overlap policy, host policies, stream bytes
    kept), defaults filled in: what `c2scribe run --engine/--overlap-policy/--host-policy/
    --stream-keep` set."""
    from c2scribe.engine import STREAM_KEEP, EngineOptions
    d = EngineOptions()
    got = dict(given or {})
    keep = got.get("stream_keep")
    return {"engine": got.get("engine") or d.engine,
            "tcp_policy": got.get("tcp_policy") or d.tcp_policy,
            "host_policies": tuple(got.get("host_policies") or d.host_policies),
            "stream_keep": STREAM_KEEP if keep is None else int(keep)}


def engine_options(decoders: bool, body_keep: int = 0, unit: Unit | None = None,
                   settings: dict | None = None):
    """The engine limits `c2scribe transcript --format jsonl --bodies` uses (same records):
    bodies kept up to body_keep (decoders: whole, clipped when stored), the first bytes of
    connections that are not HTTP, plus the unit's window and the run's engine settings."""
    from c2scribe.engine import EngineOptions
    es = engine_settings(settings)
    if not body_keep:
        es["stream_keep"] = 0          # no content stored at all (as the transcript's jsonl)
    o = dataclasses.replace(EngineOptions(), body_keep=body_keep,
                            **(unit.engine_window() if unit is not None else {}), **es)
    if decoders:
        return dataclasses.replace(o, body_keep=max(body_keep, 64 << 20))
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


def process_unit(unit: Unit, output: str, decoders: list[str], fmt: str = "parquet",
                 body_keep: int = 64 << 10, manifest: dict | None = None, es=None,
                 settings: dict | None = None) -> tuple[list[dict], dict]:
    """Process one unit; returns (file status records, the unit's summary), also written to
    OUTPUT/_status/<unit>.jsonl. An exception inside becomes the unit's failure (its partial
    outputs are removed): bad input never sinks a run. `manifest` (backfills): what the unit
    is made of, written to OUTPUT/_manifest/ once its outputs are complete (and indexed).
    `es` (a transforms.elasticsearch.EsConfig): the records are indexed as they are written;
    once all are in, the unit's documents of earlier runs are deleted. An outage stops the
    indexing, not the files. `settings`: the run's engine settings (engine_settings) and,
    under "parquet", the Parquet writer's codec (options.parquet_settings)."""
    from c2scribe.capture import run_chain
    from c2scribe.engine import Engine
    from c2scribe.schema import (CaptureError, Connection, ConnectionEnd, HttpTransaction,
                                 Record, StreamChunk)

    t0 = time.monotonic()
    es_summary = None
    bodies = body_keep > 0
    sink = (ParquetUnitSink(output, unit.unit_id, unit.sensor, bodies,
                            **(settings or {}).get("parquet", {}))
            if fmt == "parquet" else JsonlUnitSink(output, unit.unit_id, bodies))
    errors: dict[str, CaptureError] = {}
    by_decoder: dict[str, int] = {}
    failure = None
    indexer = None
    if es is not None:
        from transforms.elasticsearch import Indexer
        indexer = Indexer(es, sensor=unit.sensor, unit=unit.unit_id,
                          generation=uuid.uuid4().hex)
    counters: dict = {}
    runner = None
    engine = None
    try:
        if decoders:
            from c2scribe.decoders import DecoderRunner, load
            runner = DecoderRunner([load(spec) for spec in decoders])
        # no decoders: the C engine writes the JSON documents itself; Parquet, not indexed:
        # it builds the Arrow columns of connections and transactions, and Record objects
        # only of the transactions a decoder wants (its want() is asked as they are reported)
        fast = runner is None and fmt == "jsonl"
        columns = fmt == "parquet" and indexer is None
        engine = Engine(engine_options(bool(runner), body_keep, unit, settings), jsonl=fast,
                        columns=columns, with_records=runner is not None,
                        select=runner.select if runner is not None else None,
                        stream_select=runner.stream_select if runner is not None else None,
                        bodies=(fast or columns) and bodies,
                        stream_chunks=bool(runner and runner.wants_stream_chunks))
        stored_as_batches = (Connection, HttpTransaction, ConnectionEnd) if columns else ()
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
                if indexer is not None:
                    indexer.add((dataset, doc))
        else:
            limit = body_keep

            def emit(rec) -> None:
                if isinstance(rec, StreamChunk):
                    return
                if rec.dataset in ("c2scribe.c2", "c2scribe.decode_error"):
                    by_decoder[rec.decoder] = by_decoder.get(rec.decoder, 0) + 1
                sink.write_record(clip_bodies(rec, limit) if runner else rec)
                if indexer is not None:
                    indexer.add(rec)

            for rec in run_chain(engine, unit.files):
                if columns and not isinstance(rec, (Record, ConnectionEnd)):  # a RecordBatch
                    sink.write_batch(clip_batch(rec, limit) if runner else rec)
                    continue
                if isinstance(rec, CaptureError):
                    errors.setdefault(rec.file, rec)
                if runner is not None:
                    for msg in runner.feed(rec):
                        emit(msg)
                if not isinstance(rec, stored_as_batches):
                    emit(rec)
            if runner is not None:
                for msg in runner.finish():
                    emit(msg)
        counters = getattr(engine, "final_counters", {})
        sink.close()
        es_summary = _finish_index(indexer) if indexer is not None else None
    except Exception as e:  # noqa: BLE001 - a unit must not sink the run
        failure = f"{type(e).__name__}: {e}"
        sink.abort()
        traceback.print_exc(file=sys.stderr)
        remove_unit_outputs(output, unit.unit_id)
    finally:
        if engine is not None:
            try:
                engine.finish()
            except Exception:  # noqa: BLE001
                pass
            del engine                  # one live engine per process

    if failure is not None and indexer is not None:
        es_summary = dict(indexer.close().to_dict(), deleted=0, complete=False)
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
               "decode_errors": decode_errors, "decoders": dict(sorted(by_decoder.items())),
               "failure": failure, "seconds": round(time.monotonic() - t0, 3)}
    if es_summary is not None:
        summary["elasticsearch"] = es_summary
    _write_atomic(_join(output, STATUS_DIR, f"{unit.unit_id}.jsonl"),
                  [dumps(s) for s in statuses + [summary]])
    if manifest is not None and failure is None and (es_summary is None or
                                                     es_summary["complete"]):
        from .backfill import write_manifest
        write_manifest(output, unit, manifest, summary)

    return statuses, summary


def _finish_index(indexer) -> dict:
    """Send what is left; if every document was sent (rejections are final: they are in the
    dead-letter file), delete the unit's older ones."""
    res = indexer.close()
    out = dict(res.to_dict(), deleted=0, complete=False)
    if not res.stopped and not res.unsent:
        try:
            out["deleted"] = indexer.delete_stale()
            out["complete"] = True
        except Exception as e:  # noqa: BLE001 - an outage at the very end
            out.update(stopped=True, reason=f"deleting older documents failed: {e}")
    return out


def remove_unit_outputs(output: str, unit_id: str) -> None:
    """Whatever a failed unit left: its record files, finished or temporary (a crashed
    process cannot clean up after itself). Its status file stays."""
    pats = [_join(output, "*", f"{unit_id}.jsonl*"),
            _join(output, "*", "date=*", "sensor=*", f"part-{unit_id}-*.parquet"),
            _join(output, "*", "date=*", "sensor=*", f".part-{unit_id}-*.tmp")]
    rx = re.compile(r"(?:^|/)\.?(?:part-)?" + re.escape(unit_id)
                    + r"(?:\.jsonl(?:\.tmp-\w+)?|-\d{5,}\.parquet(?:\.\w+\.tmp)?)$")
    _delete([p for pat in pats for p in _glob(pat) if rx.search(p)])


def failed_status(unit: Unit, output: str, reason: str) -> tuple[list[dict], dict]:
    """The status of a unit that could not be processed at all (its process crashed or
    hung): every file it owns is marked failed, and nothing of it stays in the outputs."""
    remove_unit_outputs(output, unit.unit_id)
    statuses = file_status(unit, {})
    for st in statuses:
        st.update(status="failed", reason=reason)
    summary = {"record": "unit", "unit": unit.unit_id, "sensor": unit.sensor,
               "files": len(unit.files), "records": {}, "packets": 0, "bytes": 0,
               "packets_skipped": 0, "window": None if unit.window is None else
               {"start_us": unit.window.start_us, "end_us": unit.window.end_us},
               "decode_errors": 0, "failure": reason, "seconds": None}
    _write_atomic(_join(output, STATUS_DIR, f"{unit.unit_id}.jsonl"),
                  [dumps(s) for s in statuses + [summary]])
    return statuses, summary
