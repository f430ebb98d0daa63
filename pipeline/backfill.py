"""Incremental runs: a manifest of what each unit was made from, and the choice of what to redo.

`c2scribe backfill` plans the archive like `c2scribe run`, then processes only the units
that are new or changed since their last successful run:

- a file of the unit is new, or its size or modification time changed, and its content
  hash too (a file only touched is not redone);
- the options that shape the records changed (schema version, body limit, format, window);
- the set of decoders changed (one added or removed: every unit), or a decoder's version
  changed and that decoder produced output (messages or errors) in the unit.

The manifest is one JSON file per unit, OUTPUT/_manifest/<unit>.json, written by the worker
after the unit's outputs are complete (and indexed): a unit killed half-way has no new
manifest and is redone by the next run, whose outputs replace the half-written ones. A unit
that failed writes none either.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os

from .units import Unit
from .work import _fs, _glob, _join, _open_read, _remote, _write_atomic

MANIFEST_DIR = "_manifest"
_HASH_CHUNK = 1 << 20


# ------------------------------------------------------------------------------ fingerprints

def stat_file(path: str) -> dict:
    """Size and modification time (local), or size, time and checksum (object stores)."""
    if not _remote(path):
        st = os.stat(path)
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    fs = _fs()
    md = fs.match([path])[0].metadata_list[0]
    out = {"size": md.size_in_bytes, "mtime_ns": int((md.last_updated_in_seconds or 0) * 1e9)}
    try:
        out["checksum"] = fs.checksum(path)        # object stores: etag / crc, no reading
    except Exception:  # noqa: BLE001 - not every filesystem has one
        pass
    return out


def content_hash(path: str, stat: dict) -> str:
    """sha256 of the stored bytes (local files); an object store's own checksum."""
    if "checksum" in stat:
        return f"store:{stat['checksum']}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(_HASH_CHUNK)
            if not b:
                break
            h.update(b)
    return "sha256:" + h.hexdigest()


# ------------------------------------------------------------------------------ manifest

def manifest_path(output: str, unit_id: str) -> str:
    return _join(output, MANIFEST_DIR, f"{unit_id}.json")


def read_manifests(output: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for path in _glob(_join(output, MANIFEST_DIR, "*.json")):
        try:
            with _open_read(path) as f:
                m = json.loads(f.read())
            out[m["unit"]] = m
        except Exception:  # noqa: BLE001 - a damaged manifest: the unit is redone
            continue
    return out


def write_manifest(output: str, unit: Unit, job: dict, summary: dict) -> None:
    """After a unit's outputs are complete: what they were made from."""
    m = {"unit": unit.unit_id, "sensor": unit.sensor,
         "files": [dict(f, path=p) for p, f in zip(unit.files, job["files"])],
         "options": job["options"],
         "decoders": {name: {"version": v,
                             "produced": summary.get("decoders", {}).get(name, 0)}
                      for name, v in job["decoders"].items()},
         "records": summary.get("records", {}),
         "completed": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    _write_atomic(manifest_path(output, unit.unit_id), [json.dumps(m, sort_keys=True).encode()])


# ------------------------------------------------------------------------------ the choice

def decoder_versions(specs: list[str]) -> dict[str, str]:
    from c2scribe.decoders import load
    return {cls.name: str(cls.version) for cls in (load(s) for s in specs)}


def options_key(fmt: str, body_keep: int, settings: dict | None = None) -> dict:
    """What, besides files and decoders, shapes a unit's records."""
    from c2scribe.schema import SCHEMA_VERSION
    from c2scribe import __version__
    from .work import engine_settings
    r = dict(engine_settings(settings))
    r["host_policies"] = list(r["host_policies"])        # as the manifest (JSON) keeps it
    return {"schema_version": SCHEMA_VERSION, "format": fmt, "body_keep": body_keep,
            "engine": r["engine"], "engine_settings": r, "c2scribe": __version__}


def why_redo(unit: Unit, files: list[dict], opts: dict, decoders: dict[str, str],
             old: dict | None) -> str | None:
    """Why the unit must be processed again (None: its outputs are current). May fill in
    content hashes of `files` (taken from the old manifest when the file is unchanged)."""
    if old is None:
        return "new"
    old_files = {f["path"]: f for f in old.get("files", [])}
    changed = []
    for path, f in zip(unit.files, files):
        o = old_files.get(path)
        if o is None:
            changed.append(path)
            continue
        if o.get("size") == f["size"] and o.get("mtime_ns") == f["mtime_ns"] and \
                o.get("checksum") == f.get("checksum") and "hash" in o:
            f["hash"] = o["hash"]
            continue
        f["hash"] = content_hash(path, f)
        if f["hash"] != o.get("hash"):
            changed.append(path)
    if changed or set(old_files) != set(unit.files):
        gone = sorted(set(old_files) - set(unit.files))
        return (f"files changed: {', '.join(os.path.basename(p) for p in changed)}"
                if changed else f"files removed: {', '.join(map(os.path.basename, gone))}")
    if old.get("options") != opts:
        return "options changed"
    old_dec = old.get("decoders", {})
    if set(old_dec) != set(decoders):
        return "decoders added or removed"
    bumped = [n for n, v in decoders.items()
              if old_dec[n].get("version") != v and old_dec[n].get("produced", 0)]
    if bumped:
        return "decoder version changed: " + ", ".join(sorted(bumped))
    return None


def select(units: list[Unit], output: str, fmt: str, body_keep: int,
           decoders: dict[str, str], settings: dict | None = None
           ) -> tuple[list[tuple[Unit, dict]], list[Unit], dict]:
    """(units to process with their manifest job, units up to date, reasons by unit id)."""
    manifests = read_manifests(output)
    opts = options_key(fmt, body_keep, settings)
    todo, current, reasons = [], [], {}
    for u in units:
        files = [stat_file(p) for p in u.files]
        why = why_redo(u, files, opts, decoders, manifests.get(u.unit_id))
        if why is None:
            current.append(u)
            continue
        for p, f in zip(u.files, files):
            if "hash" not in f:
                f["hash"] = content_hash(p, f)
        reasons[u.unit_id] = why
        todo.append((u, {"files": files, "options": opts, "decoders": decoders}))
    return todo, current, reasons


def in_range(unit: Unit, since_us: int | None, until_us: int | None) -> bool:
    """Does the unit hold capture time in [since, until)? A window: its own span. A whole
    chain: from its first packet to its last file's first packet plus the typical span of
    its files (the end of the last file is not known without reading it all)."""
    if since_us is None and until_us is None:
        return True
    if unit.window is not None:
        lo, hi = unit.window.start_us, unit.window.end_us
    else:
        ts = sorted(t for t in unit.first_ts_us if t is not None)
        if not ts:
            return True
        spans = sorted(b - a for a, b in zip(ts, ts[1:]))
        lo, hi = ts[0], ts[-1] + (spans[len(spans) // 2] if spans else 0) + 1
    if until_us is not None and lo >= until_us:
        return False
    if since_us is not None and hi is not None and hi <= since_us:
        return False
    return True
