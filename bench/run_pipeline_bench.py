#!/usr/bin/env python3
r"""Pipeline benchmark: `c2scribe run` with 1 and 2 workers against the bare engine, same data.

    python bench/run_pipeline_bench.py                          # ~1 GB, large profile, 8 sensors
    python bench/run_pipeline_bench.py --size 200M --repeat 2 --json out.json
    python bench/run_pipeline_bench.py --data /tmp/pb --profile small --size 1G --check-targets
    python bench/run_pipeline_bench.py --experiment processes   # + the old local mode

Data: --sensors directories (default 8) of a rotation of capture files each, written by
bench/gen_captures.py (one seed per sensor, --split-mb MB per file), so `c2scribe run` plans one
work unit per sensor. Generated into --data DIR (default bench/.cache/pipeline-...); a directory
with a valid layout.json is reused. A --data directory without layout.json but with
subdirectories of capture files is used as it is (each subdirectory one sensor).

Rows, each a child process (not pinned to a core), best wall time of --repeat runs (the rows
take turns, so a burst of other load hits one run, not every run of one row):

  engine            the bare engine: one process, c2scribe.engine.Engine in Record mode (the
                    pipeline's mode and options) over each unit's files, one engine per unit
                    as the pipeline does, every record consumed and dropped
  engine-jsonl      the same in the C engine's JSON mode (Engine(jsonl=True)), pairs dropped
  engine-columns    the same in the C engine's columnar mode (Engine(columns=True), what the
                    Parquet sink takes), batches dropped; the 70 % target compares a worker
                    with the fastest of the three engine rows
  units-FORMAT      the pipeline's unit work without Beam: pipeline.work.process_unit over
                    each unit, one after the other in one process (with the unit processes' GC
                    settings), writing the same files
                    (what Beam adds is the difference to run-FORMAT-w1)
  units-FORMAT-x2   the same unit work in two processes side by side, each on half of the
                    units (round robin): how the unit work itself scales to two processes
                    on this machine, without Beam (the ceiling of run-FORMAT-w2's speed-up;
                    "busy" is the longer of the two processes' unit seconds)
  transcript        `c2scribe transcript --format jsonl UNIT-FILES > /dev/null`, once per unit
                    (times and CPU summed, RSS the largest)
  run-FORMAT-wN     `c2scribe run --input DIR/*/* --output TMP --format FORMAT --workers N`
  exp:NAME-FORMAT-wN  an EXPERIMENT, not the product's default: the same run in another
                    local runner mode (--experiment NAME, see EXPERIMENTS)

Measured: wall s; MB/s = capture bytes (10^6) / wall; CPU s of the process tree (wait4); peak
RSS of each process of the tree, sampled from /proc every 20 ms (VmHWM, its own peak). Beam's
local workers are threads of the `c2scribe run` process ("driver MB"), each handing its units
to a unit process (`pipeline.sandbox`): the largest unit process is "worker MB" (with
--experiment processes, a Beam SDK worker process with its unit process); for engine rows the
one process is the worker. "units s" sums the per-unit seconds the pipeline writes to
OUTPUT/_status; "start" runs from the launch to the first unit's start (interpreter, Beam's
import, planning, workers), "stop" from the last unit's end to the exit; "busy s" = wall -
start - stop, the span in which units were being processed, and "busy MB/s" the capture bytes
over it (for engine rows: over units s, the engine's own time without the interpreter's
start). "overhead s" = wall - units s / workers (start-up, shutdown, imbalance). "load" is the 1-minute load average before the run
and "other" the cores other processes kept busy during it (from /proc/stat, minus this tree).

Targets (issue 4): 2 workers >= 1.8x the MB/s of 1 worker; peak RSS per worker <= 300 MB;
1 worker's MB/s >= 70 % of the bare engine's. Each throughput target is reported twice: end
to end (wall) and busy (without Beam's fixed start-up and shutdown, ~1 s on this machine,
which 1 GB at ~100 MB/s cannot amortise). --check-targets exits 1 when one is missed, either
way.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import glob
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import gen_captures  # noqa: E402
from run_bench import _children, _vm, c2scribe_base, tail, warm_cache  # noqa: E402

TARGET_SPEEDUP = 1.8
TARGET_WORKER_RSS_MB = 300.0
TARGET_ENGINE_RATIO = 0.70
LAYOUT = "layout.json"
LAYOUT_VERSION = 2
CLK_TCK = os.sysconf("SC_CLK_TCK")

EXPERIMENTS = {
    "processes": "no patch: `c2scribe run --runner=FnApiRunner --direct_running_mode="
                 "multi_processing --direct_num_workers=N` (the local default before: one Beam "
                 "SDK worker process per worker, each with its unit child process)",
    "in-memory": "one worker only, no patch: `c2scribe run --runner=FnApiRunner "
                 "--direct_running_mode=in_memory --direct_num_workers=1`, which runs the DoFn "
                 "in the driver process (no SDK worker process to start, no second Beam import)",
}
IN_MEMORY_ARGS = ["--runner=FnApiRunner", "--direct_running_mode=in_memory",
                  "--direct_num_workers=1"]
PROCESSES_ARGS = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing"]


# --------------------------------------------------------------------------- measuring

def _stat(pid: int):
    """(utime + stime in s, cmdline) of pid, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            st = f.read()
        fields = st[st.rindex(b")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except (OSError, ValueError, IndexError):
        return None
    return cpu, cmd


class TreeSampler(threading.Thread):
    """Per-process peak RSS (last VmHWM seen), CPU and command line of a process tree, and
    the peak RSS of each worker: a process `is_worker(cmd, is_root)` picks, with all its
    descendants (a Beam SDK worker and the child it runs units in), summed per sample."""

    def __init__(self, pid: int, is_worker, interval: float = 0.02):
        super().__init__(daemon=True)
        self.pid, self.is_worker, self.interval = pid, is_worker, interval
        self.procs: dict[int, dict] = {}
        self.groups: dict[int, int] = {}        # worker pid -> peak of the group's RSS sum
        self.peak_sum = 0
        self.stop = threading.Event()

    def sample(self):
        todo, total, sums = [(self.pid, None)], 0, {}
        while todo:
            pid, group = todo.pop()
            vm = _vm(pid)
            if vm:
                total += vm[0]
                p = self.procs.get(pid)
                if p is None:
                    p = self.procs[pid] = {"pid": pid, "cmd": "", "cpu_s": 0.0, "worker": None}
                p["hwm"] = vm[1]
                st = _stat(pid)
                if st:
                    p["cpu_s"] = st[0]
                    if st[1]:
                        p["cmd"] = st[1]
                if group is None and self.is_worker(p["cmd"], pid == self.pid):
                    group = pid
                if group is not None:
                    p["worker"] = group
                    sums[group] = sums.get(group, 0) + vm[0]
            todo.extend((c, group) for c in _children(pid))
        self.peak_sum = max(self.peak_sum, total)
        for g, v in sums.items():
            self.groups[g] = max(self.groups.get(g, 0), v)

    def run(self):
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)

    def workers(self) -> list[dict]:
        """Per worker: peak RSS of the group (the larger of the largest sampled sum and the
        largest VmHWM of one of its processes), its processes' peaks and CPU seconds."""
        out = []
        for g, peak in sorted(self.groups.items()):
            members = [p for p in self.procs.values() if p["worker"] == g]
            out.append({"pid": g, "peak_mb": max([peak] + [p["hwm"] for p in members]) / 2**20,
                        "cpu_s": sum(p["cpu_s"] for p in members),
                        "processes": [{"cmd": p["cmd"][:120], "peak_mb": p["hwm"] / 2**20,
                                       "cpu_s": p["cpu_s"]} for p in members]})
        return out


def wait_quiet(max_wait: float, below: float) -> float:
    """Wait (up to max_wait s) until other processes keep fewer than `below` cores busy over
    one second; returns the last such measurement (cores)."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, t0 = _busy_jiffies(), time.monotonic()
        time.sleep(1.0)
        busy = (_busy_jiffies() - b0) / CLK_TCK / (time.monotonic() - t0)
        if busy < below or time.monotonic() >= deadline:
            return busy


def _busy_jiffies() -> int:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - (v[4] if len(v) > 4 else 0)     # all but idle and iowait


def measure(argv, *, is_worker=lambda cmd, root: root, cwd=REPO, env=None,
            stdout=subprocess.DEVNULL, stderr_path=os.devnull, timeout=None) -> dict:
    """Run argv once; wall, CPU, per-process peak RSS, machine load beside it, exit status."""
    load = os.getloadavg()[0]
    busy0 = _busy_jiffies()
    with open(stderr_path, "ab") as err:
        t0_wall = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err,
                                cwd=cwd, env=env, start_new_session=True)
        sampler = TreeSampler(proc.pid, is_worker)
        sampler.start()
        timer = None
        if timeout:
            timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, 9))
            timer.start()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if timer:
            timer.cancel()
        sampler.stop.set()
        sampler.join()
    busy = (_busy_jiffies() - busy0) / CLK_TCK
    cpu = ru.ru_utime + ru.ru_stime
    workers = sampler.workers()
    procs = sorted(sampler.procs.values(), key=lambda p: p["pid"])
    for p in procs:
        p["hwm_mb"] = p.pop("hwm", 0) / 2**20
        p.pop("worker", None)
        p["root"] = p["pid"] == proc.pid
    return {"wall_s": wall, "t0": t0_wall, "t1": t0_wall + wall, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
            "cpu_s": max(cpu, sum(p["cpu_s"] for p in procs)),
            "tree_peak_rss_mb": max(sampler.peak_sum / 2**20, sum(p["hwm_mb"] for p in procs),
                                    ru.ru_maxrss / 1024 if not procs else 0),
            "procs": procs, "workers": workers, "load_1m": load,
            "other_cores": max(0.0, (busy - max(cpu, sum(p["cpu_s"] for p in procs))) / wall),
            "exit": os.waitstatus_to_exitcode(status)}


# --------------------------------------------------------------------------- data

def default_data_dir(args) -> str:
    return os.path.join(HERE, ".cache", f"pipeline-{args.profile}-{args.size}-seed{args.seed}-"
                        f"{args.sensors}x{args.split_mb:g}M")


def _gen_one(job):
    profile, size, out, seed, split_mb = job
    return gen_captures.generate(profile, size, out, seed=seed, split_mb=split_mb, quiet=False)


def load_layout(d: str) -> dict | None:
    """The layout of a generated data directory if it is complete, else None."""
    path = os.path.join(d, LAYOUT)
    try:
        with open(path) as f:
            lay = json.load(f)
    except (OSError, ValueError):
        return None
    if (lay.get("layout_version") != LAYOUT_VERSION
            or lay.get("generator_version") != gen_captures.GENERATOR_VERSION):
        return None
    for s in lay["sensors"]:
        for name, size in s["files"]:
            p = os.path.join(d, "sensors", s["dir"], name)
            if not os.path.isfile(p) or os.path.getsize(p) != size:
                return None
    return lay


def generate_data(d: str, args) -> dict:
    need = args.size * 1.05 + (50 << 20)
    os.makedirs(d, exist_ok=True)
    free = shutil.disk_usage(d).free
    if free < need:
        raise SystemExit(f"{d}: {free / 1e9:.1f} GB free, {need / 1e9:.1f} GB needed")
    for old in ("sensors", "manifests"):
        shutil.rmtree(os.path.join(d, old), ignore_errors=True)
    per = args.size // args.sensors
    jobs = []
    for k in range(args.sensors):
        sd = os.path.join(d, "sensors", f"sensor-{k:02d}")
        os.makedirs(sd)
        jobs.append((args.profile, per, os.path.join(sd, "cap.pcap"), args.seed * 1000 + k,
                     args.split_mb))
    print(f"generating {args.sensors} sensors x {per / 1e6:.0f} MB ({args.profile}) into {d} ...",
          flush=True)
    t0 = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as ex:
        mans = list(ex.map(_gen_one, jobs))
    mdir = os.path.join(d, "manifests")
    os.makedirs(mdir)
    sensors = []
    for (_p, _s, out, seed, _m), man in zip(jobs, mans):
        sname = os.path.basename(os.path.dirname(out))
        # the manifest must not sit in the sensor directory: `c2scribe run` would read it
        os.replace(gen_captures.manifest_path(out), os.path.join(mdir, f"{sname}.manifest.json"))
        sensors.append({"dir": sname, "seed": seed,
                        "files": [[os.path.basename(f["path"]), f["bytes"]] for f in man["files"]],
                        **{k: man.get(k) for k in ("bytes", "packets", "connections",
                                                   "transactions")}})
    lay = {"layout_version": LAYOUT_VERSION, "generator_version": gen_captures.GENERATOR_VERSION,
           "profile": args.profile, "size": args.size, "seed": args.seed,
           "split_mb": args.split_mb, "sensors": sensors,
           "generated_in_s": round(time.perf_counter() - t0, 1)}
    for k in ("bytes", "packets", "connections", "transactions"):
        lay[k] = sum(s[k] or 0 for s in sensors)
    with open(os.path.join(d, LAYOUT), "w") as f:
        json.dump(lay, f, indent=1)
        f.write("\n")
    return lay


def get_data(args) -> tuple[str, dict]:
    """(data dir, layout); generates when there is nothing valid to reuse."""
    d = os.path.abspath(args.data or default_data_dir(args))
    lay = None if args.regenerate else load_layout(d)
    if lay is not None:
        print(f"using {d} ({lay['profile']}, {lay['bytes'] / 1e6:.0f} MB, "
              f"{len(lay['sensors'])} sensors)")
        lay["input_pattern"] = os.path.join(d, "sensors", "*", "*")
        return d, lay
    if (args.data and not args.regenerate and os.path.isdir(d)
            and not os.path.exists(os.path.join(d, LAYOUT))):
        files = sorted(p for p in glob.glob(os.path.join(d, "*", "*")) if os.path.isfile(p))
        if files:                               # someone's own captures: use them as they are
            print(f"using the captures under {d} as they are ({len(files)} files)")
            sensors: dict[str, list] = {}
            for p in files:
                sensors.setdefault(os.path.basename(os.path.dirname(p)), []).append(
                    [os.path.basename(p), os.path.getsize(p)])
            return d, {"profile": None, "bytes": sum(s for v in sensors.values() for _n, s in v),
                       "sensors": [{"dir": k, "files": v} for k, v in sorted(sensors.items())],
                       "input_pattern": os.path.join(d, "*", "*")}
    lay = generate_data(d, args)
    lay["input_pattern"] = os.path.join(d, "sensors", "*", "*")
    return d, lay


# --------------------------------------------------------------------------- child modes

def child_engine(argv) -> int:
    """`_engine MODE GLOB BODY_KEEP CODEC [DECODER...]`: the bare engine over each planned unit
    (MODE records, jsonl or columns), or with MODE unit-parquet / unit-jsonl the pipeline's whole unit work without
    Beam (pipeline.work.process_unit, in this process, into a temporary directory); a JSON
    summary on stdout."""
    import c2scribe.engine as ce
    from c2scribe.capture import run_chain
    from pipeline.units import plan
    mode, pattern, body_keep, codec, decoders = argv[0], argv[1], int(argv[2]), argv[3], argv[4:]
    settings = {"parquet": {"compression": codec}} if codec != "-" else None
    units = plan(pattern.split(os.pathsep))       # _split names each unit's files
    if mode.startswith("unit-"):
        from pipeline.sandbox import tune_gc
        from pipeline.work import process_unit
        tune_gc()                                   # as in the unit processes
        out_dir = tempfile.mkdtemp(prefix="pbench-units-")
        try:
            sums = []
            for u in units:
                sums.append(process_unit(u, out_dir, decoders, mode[5:], body_keep,
                                         settings=settings)[1])
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        json.dump({"mode": mode, "units": sums}, sys.stdout)
        return 0
    from pipeline.work import engine_options
    opts = engine_options(False, body_keep)         # the pipeline's (a unit without a window)
    out = {"mode": mode, "units": []}
    for u in units:
        t0 = time.perf_counter()
        eng = ce.Engine(opts, jsonl=(mode == "jsonl"), columns=(mode == "columns"),
                        bodies=(mode != "records" and body_keep > 0))
        counts: dict[str, int] = {}
        for rec in run_chain(eng, u.files):
            if mode == "jsonl":
                ds, n = rec[0], 1
            elif hasattr(rec, "num_rows"):                  # a columnar batch
                ds, n = rec.schema.metadata[b"c2scribe.dataset"].decode(), rec.num_rows
            else:
                ds, n = rec.dataset, 1
            counts[ds] = counts.get(ds, 0) + n
        pk = eng.final_counters.get("packets", 0)
        del eng
        out["units"].append({"unit": u.unit_id, "files": len(u.files), "records": counts,
                             "packets": pk, "seconds": round(time.perf_counter() - t0, 3)})
    json.dump(out, sys.stdout)
    return 0


def child_split(argv) -> int:
    """`_split N MODE GLOB BODY_KEEP CODEC [DECODER...]`: N `_engine` processes side by side,
    each on every N-th planned unit (its files named one by one); their summaries merged,
    with each process's unit seconds in "spans"."""
    from pipeline.units import plan
    n, rest = int(argv[0]), argv[1:]
    units = plan([rest[1]])
    procs = []
    for i in range(n):
        files = os.pathsep.join(f for u in units[i::n] for f in u.files)
        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "_engine",
                                       rest[0], files, *rest[2:]], stdout=subprocess.PIPE))
    merged = {"mode": rest[0], "units": [], "spans": []}
    rc = 0
    for p in procs:
        out, _ = p.communicate()
        rc = rc or p.returncode
        try:
            got = json.loads(out)["units"]
        except (ValueError, KeyError):
            got = []
        merged["units"] += got
        merged["spans"].append(round(sum(u["seconds"] for u in got), 3))
    json.dump(merged, sys.stdout)
    return rc


# --------------------------------------------------------------------------- rows

@dataclasses.dataclass
class Row:
    name: str
    kind: str                 # engine | transcript | run
    fmt: str | None = None
    workers: int = 1
    experiment: str | None = None
    split: int = 1            # engine rows: processes side by side, each on its share of units
    runs: list = dataclasses.field(default_factory=list)


def build_rows(args) -> list[Row]:
    rows = []
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    workers = [int(w) for w in args.workers.split(",")]
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    for r in wanted:
        if r == "engine":
            rows.append(Row("engine", "engine", "records"))
        elif r == "engine-jsonl":
            rows.append(Row("engine-jsonl", "engine", "jsonl"))
        elif r == "engine-columns":
            rows.append(Row("engine-columns", "engine", "columns"))
        elif r == "transcript":
            rows.append(Row("transcript", "transcript", "jsonl"))
        elif r == "units":
            for f in formats:
                rows.append(Row(f"units-{f}", "engine", f"unit-{f}"))
        elif r == "units-x2":
            for f in formats:
                rows.append(Row(f"units-{f}-x2", "engine", f"unit-{f}", split=2))
        elif r == "run":
            for f in formats:
                for w in workers:
                    rows.append(Row(f"run-{f}-w{w}", "run", f, w))
        else:
            raise SystemExit(f"unknown row {r!r} (engine, engine-jsonl, engine-columns, "
                             "transcript, units, units-x2, run)")
    for e in args.experiment:
        if e not in EXPERIMENTS:
            raise SystemExit(f"unknown experiment {e!r} (known: {', '.join(EXPERIMENTS)})")
        for f in formats:
            for w in workers:
                if e == "in-memory" and w != 1:
                    continue
                rows.append(Row(f"exp:{e}-{f}-w{w}", "run", f, w, experiment=e))
    return rows


def read_status(out_dir: str) -> list[dict]:
    """The unit records of a run's status files, each with the file's mtime (`done_at`)."""
    units = []
    for p in glob.glob(os.path.join(out_dir, "_status", "*.jsonl")):
        with open(p) as f:
            lines = [json.loads(ln) for ln in f if ln.strip()]
        mtime = os.stat(p).st_mtime
        units += [dict(s, done_at=mtime) for s in lines if s.get("record") == "unit"]
    return units


def dir_bytes(d: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(d):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def run_once(row: Row, pattern: str, units_files: list[list[str]], args, err_path) -> dict:
    py = sys.executable
    if row.kind == "engine":
        fd, out_path = tempfile.mkstemp(prefix="pbench-engine-", suffix=".json")
        with os.fdopen(fd, "w+b") as out:
            child = ["_engine"] if row.split == 1 else ["_split", str(row.split)]
            res = measure([py, os.path.abspath(__file__), *child, row.fmt, pattern,
                           str(args.body_keep_value), args.compression or "-"]
                          + (args.decoder if row.fmt.startswith("unit-") else []),
                          stdout=out, stderr_path=err_path, timeout=args.timeout,
                          **({} if row.split == 1 else   # a worker: each _engine process
                             {"is_worker": lambda cmd, root: not root and "_engine" in cmd}))
            out.seek(0)
            text = out.read()
        os.unlink(out_path)
        try:
            summary = json.loads(text)
        except ValueError:
            summary = {"units": []}
        res["units_s"] = sum(u["seconds"] for u in summary["units"])
        if "spans" in summary:                  # _split: the longest process's units
            res["span_s"] = max(summary["spans"], default=None)
        res["records"] = _sum_records(summary["units"])
        res["n_units"] = len(summary["units"])
        return res
    if row.kind == "transcript":
        parts = []
        for files in units_files:
            parts.append(measure(c2scribe_base(args.c2scribe_cmd)
                                 + ["transcript", "--format", "jsonl"] + files,
                                 stderr_path=err_path, timeout=args.timeout))
        res = {"wall_s": sum(p["wall_s"] for p in parts),
               "user_s": sum(p["user_s"] for p in parts), "sys_s": sum(p["sys_s"] for p in parts),
               "cpu_s": sum(p["cpu_s"] for p in parts),
               "tree_peak_rss_mb": max(p["tree_peak_rss_mb"] for p in parts),
               "procs": [], "load_1m": parts[0]["load_1m"],
               "other_cores": sum(p["other_cores"] * p["wall_s"] for p in parts)
               / max(1e-9, sum(p["wall_s"] for p in parts)),
               "exit": max((p["exit"] for p in parts), key=lambda e: e != 0),
               "units_s": sum(p["wall_s"] for p in parts), "n_units": len(parts)}
        worst = max(parts, key=lambda p: max((w["peak_mb"] for w in p["workers"]), default=0))
        res["workers"] = worst["workers"]
        return res
    out_dir = tempfile.mkdtemp(prefix="pbench-run-", dir=args.out_dir)
    run_args = ["--input", pattern, "--output", out_dir, "--format", row.fmt,
                "--workers", str(row.workers)]
    run_args += ["--body-keep", str(args.body_keep_value)]
    if args.compression and row.fmt == "parquet":
        run_args += ["--compression", args.compression]
    for d in args.decoder:
        run_args += ["--decoder", d]
    argv = c2scribe_base(args.c2scribe_cmd) + ["run"] + run_args
    if row.experiment == "in-memory":
        argv += IN_MEMORY_ARGS
    elif row.experiment == "processes":
        argv += PROCESSES_ARGS + [f"--direct_num_workers={row.workers}"]
    if row.experiment == "in-memory":
        is_worker = lambda cmd, root: root                      # noqa: E731
    elif row.experiment == "processes":                         # SDK worker + unit process
        is_worker = lambda cmd, root: _is_sdk_worker(cmd)       # noqa: E731
    else:            # Beam's workers are threads of the driver: a worker is a unit process
        is_worker = lambda cmd, root: "pipeline.sandbox" in cmd  # noqa: E731
    try:
        res = measure(argv, is_worker=is_worker, stderr_path=err_path,
                      timeout=args.timeout)
        status = read_status(out_dir)
        res["output_mb"] = dir_bytes(out_dir) / 1e6
    finally:
        if not args.keep_output:
            shutil.rmtree(out_dir, ignore_errors=True)
    res["units_s"] = sum(u.get("seconds", 0) for u in status)
    if status:
        # from the run's start to the first unit's start, and from the last unit's end to
        # the exit: Beam's start-up (imports, workers, planning) and shutdown
        res["startup_s"] = min(u["done_at"] - u.get("seconds", 0) for u in status) - res["t0"]
        res["shutdown_s"] = res["t1"] - max(u["done_at"] for u in status)
    res["records"] = _sum_records(status)
    res["n_units"] = len(status)
    res["failures"] = [u["unit"] for u in status if u.get("failure")]
    if row.experiment:
        res["command"] = "EXPERIMENT " + row.experiment + ": " + " ".join(run_args)
    return res


def _is_sdk_worker(cmd: str) -> bool:
    """A Beam SDK worker process (not the `sh -c` that starts it)."""
    return ("sdk_worker_main" in cmd and bool(cmd.split())
            and os.path.basename(cmd.split()[0]) not in ("sh", "bash", "dash"))


def _sum_records(units) -> dict:
    out: dict[str, int] = {}
    for u in units:
        for k, v in (u.get("records") or {}).items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


def summarize_row(row: Row, size: int) -> dict:
    ok = [r for r in row.runs if r["exit"] in (0,)]
    best = min(ok or row.runs, key=lambda r: r["wall_s"])
    worker_mb = max((w["peak_mb"] for r in row.runs for w in r["workers"]), default=0.0)
    driver_mb = None
    if row.kind == "run":
        driver_mb = max((p["hwm_mb"] for r in row.runs for p in r["procs"] if p["root"]),
                        default=None)
    n_workers = row.workers if row.kind == "run" else 1
    if row.kind == "run" and best.get("startup_s") is not None:
        busy = best["wall_s"] - best["startup_s"] - best["shutdown_s"]
    else:
        busy = best.get("span_s") or best.get("units_s")
    return {
        "row": row.name, "kind": row.kind, "format": row.fmt, "workers": n_workers,
        "experiment": row.experiment,
        "wall_s": best["wall_s"], "mb_per_s": size / 1e6 / best["wall_s"],
        "cpu_s": best["cpu_s"], "mb_per_cpu_s": size / 1e6 / best["cpu_s"] if best["cpu_s"] else None,
        "units_s": best.get("units_s"),
        "overhead_s": (best["wall_s"] - best["units_s"] / n_workers
                       if row.kind == "run" and best.get("units_s") else None),
        "startup_s": best.get("startup_s"), "shutdown_s": best.get("shutdown_s"),
        "busy_s": busy, "busy_mb_per_s": size / 1e6 / busy if busy else None,
        "worker_peak_rss_mb": worker_mb, "driver_peak_rss_mb": driver_mb,
        "worker_processes": len(best["workers"]),
        "worker_cpu_s": [round(p["cpu_s"], 2) for p in best["workers"]],
        "load_1m": best["load_1m"], "other_cores": best["other_cores"], "exit": best["exit"],
        "records": best.get("records"), "output_mb": best.get("output_mb"),
        "failures": best.get("failures"),
        "runs": [{k: v for k, v in r.items() if k not in ("records", "procs")} for r in row.runs],
    }


ENGINE_ROWS = ("engine", "engine-jsonl", "engine-columns")


def ratios(res: list[dict]) -> list[dict]:
    """The targets, each throughput target end to end (MB/s) and busy (busy MB/s)."""
    by = {r["row"]: r for r in res}
    out = []

    def rate(r, key):
        return r.get(key) or 0.0

    for key, how in (("mb_per_s", "MB/s"), ("busy_mb_per_s", "busy MB/s")):
        for e in [None] + sorted({r["experiment"] for r in res if r["experiment"]}):
            for fmt in ("jsonl", "parquet"):
                pre = f"exp:{e}-" if e else "run-"
                w1, w2 = by.get(f"{pre}{fmt}-w1"), by.get(f"{pre}{fmt}-w2")
                if w1 and w2 and rate(w1, key):
                    v = rate(w2, key) / rate(w1, key)
                    out.append({"what": (f"EXPERIMENT {e}, " if e else "")
                                + f"{fmt}: 2 workers / 1 worker {how}", "value": v,
                                "target": f">= {TARGET_SPEEDUP}", "met": v >= TARGET_SPEEDUP,
                                "experiment": bool(e)})
    runs = [r for r in res if r["kind"] == "run" and not r["experiment"]]
    if runs:
        v = max(r["worker_peak_rss_mb"] for r in runs)
        out.append({"what": "peak RSS per worker, MB (largest, all runs)", "value": v,
                    "target": f"<= {TARGET_WORKER_RSS_MB:g}", "met": v <= TARGET_WORKER_RSS_MB})
    engines = [r for r in res if r["row"] in ENGINE_ROWS]
    if engines:
        for key, how in (("mb_per_s", "MB/s"), ("busy_mb_per_s", "busy MB/s")):
            eng = max(engines, key=lambda r: rate(r, key))     # the fastest bare engine
            for r in res:
                if r["kind"] == "run" and r["workers"] == 1 and rate(eng, key):
                    v = rate(r, key) / rate(eng, key)
                    label = ("EXPERIMENT " if r["experiment"] else "") + r["row"]
                    out.append({"what": f"{label} {how} / {eng['row']} {how}", "value": v,
                                "target": f">= {TARGET_ENGINE_RATIO:.2f}",
                                "met": v >= TARGET_ENGINE_RATIO,
                                "experiment": bool(r["experiment"])})
    for fmt in ("jsonl", "parquet"):            # what Beam costs, sink included on both sides
        w1, base = by.get(f"run-{fmt}-w1"), by.get(f"units-{fmt}")
        if w1 and base:
            v = w1["mb_per_s"] / base["mb_per_s"]
            out.append({"what": f"(info) run-{fmt}-w1 MB/s / units-{fmt} MB/s", "value": v,
                        "target": "-", "met": True, "experiment": True})
        x2 = by.get(f"units-{fmt}-x2")      # the machine's own scaling of the unit work
        for key, how in (("mb_per_s", "MB/s"), ("busy_mb_per_s", "busy MB/s")):
            if x2 and base and rate(base, key):
                out.append({"what": f"(info) units-{fmt}-x2 {how} / units-{fmt} {how}",
                            "value": rate(x2, key) / rate(base, key), "target": "-",
                            "met": True, "experiment": True})
    return out


def print_table(res: list[dict], out=sys.stdout):
    head = (f"{'row':<30}{'wall s':>8}{'MB/s':>8}{'cpu s':>8}{'MB/cpu-s':>9}{'units s':>9}"
            f"{'start':>7}{'stop':>6}{'busy s':>8}{'busy MB/s':>10}{'worker MB':>10}{'driver MB':>10}{'load':>6}{'other':>6}"
            f"{'exit':>5}")
    print(head, file=out)
    print("-" * len(head), file=out)

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)
    for r in res:
        print(f"{r['row']:<30}{r['wall_s']:>8.2f}{r['mb_per_s']:>8.1f}{r['cpu_s']:>8.2f}"
              f"{f(r['mb_per_cpu_s'], '.1f'):>9}{f(r['units_s'], '.2f'):>9}"
              f"{f(r['startup_s'], '.2f'):>7}{f(r['shutdown_s'], '.2f'):>6}"
              f"{f(r['busy_s'], '.2f'):>8}{f(r['busy_mb_per_s'], '.1f'):>10}"
              f"{r['worker_peak_rss_mb']:>10.1f}"
              f"{f(r['driver_peak_rss_mb'], '.1f'):>10}{r['load_1m']:>6.2f}"
              f"{r['other_cores']:>6.2f}{str(r['exit']):>5}", file=out)


def check_records(res: list[dict]) -> list[str]:
    """Every row that counts records should count the same (capture_error/warning aside)."""
    notes = []
    ref = next((r for r in res if r["row"] == "engine"), None)
    if not ref or not ref.get("records"):
        return notes
    keys = ("c2scribe.connection", "c2scribe.http")
    want = {k: ref["records"].get(k, 0) for k in keys}
    for r in res:
        if r.get("records") and r is not ref:
            got = {k: r["records"].get(k, 0) for k in keys}
            if got != want:
                notes.append(f"{r['row']}: records {got} differ from the engine's {want}")
    return notes


# --------------------------------------------------------------------------- main

def git_state() -> str | None:
    """The commit, and how many files differ from it (others may be editing the tree)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, text=True, capture_output=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    n = len(dirty.splitlines())
    return f"{head}{f' + {n} modified files' if n else ''}" if head else None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_split"]:
        return child_split(argv[1:])
    if argv[:1] == ["_engine"]:
        return child_engine(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    d = ap.add_argument_group("data")
    d.add_argument("--data", help="data directory (generated there unless it holds a valid "
                   "layout.json, or captures in subdirectories)")
    d.add_argument("--profile", choices=sorted(gen_captures.PROFILES), default="large")
    d.add_argument("--size", type=gen_captures.parse_size, default=gen_captures.parse_size("1G"),
                   help="total capture bytes (default 1G = 10^9)")
    d.add_argument("--sensors", type=int, default=8, help="sensor directories (work units)")
    d.add_argument("--split-mb", type=float, default=25.0, help="MB per rotated capture file")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--regenerate", action="store_true")
    d.add_argument("--delete-data", action="store_true", help="remove the data directory at the end")
    ap.add_argument("--rows",
                    default="engine,engine-jsonl,engine-columns,transcript,units,units-x2,run",
                    help="rows: engine, engine-jsonl, engine-columns, transcript, units, "
                         "units-x2, run (default: all)")
    ap.add_argument("--workers", default="1,2", help="worker counts for run rows")
    ap.add_argument("--formats", default="jsonl,parquet", help="formats for run rows")
    ap.add_argument("--experiment", action="append", default=[], metavar="NAME",
                    help="add EXPERIMENT rows (other local runner modes): "
                    + "; ".join(f"{k}: {v}" for k, v in EXPERIMENTS.items()))
    ap.add_argument("--decoder", action="append", default=[], metavar="NAME",
                    help="decoders for the units and run rows (the engine rows have none: "
                         "the 70 %% target then compares with the engine without decoders)")
    ap.add_argument("--body-keep", type=int, default=None, metavar="BYTES",
                    help="HTTP body bytes kept per message, for run and engine rows alike "
                    "(default: `c2scribe run`'s default)")
    ap.add_argument("--compression", default=None, metavar="CODEC",
                    help="Parquet codec of the units-parquet and run-parquet rows "
                         "(`c2scribe run --compression`; default: its default, zstd)")
    ap.add_argument("--quiet-wait", type=float, default=0, metavar="S",
                    help="before each run wait up to S seconds for the machine to be quiet "
                    "(other processes using fewer than --quiet-below cores)")
    ap.add_argument("--quiet-below", type=float, default=0.3, metavar="CORES")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row; the best wall counts")
    ap.add_argument("--c2scribe-cmd", help="how to start c2scribe (default: next to this python, "
                    "else on PATH, else python -m c2scribe)")
    ap.add_argument("--out-dir", default=None, help="where run rows write (default: temp dir)")
    ap.add_argument("--keep-output", action="store_true")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--check-targets", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    if args.c2scribe_cmd is None:
        exe = os.path.join(os.path.dirname(sys.executable), "c2scribe")
        if os.access(exe, os.X_OK):
            args.c2scribe_cmd = shlex.quote(exe)

    from pipeline.options import C2ScribeOptions
    args.body_keep_value = (int(C2ScribeOptions([]).body_keep) if args.body_keep is None
                            else args.body_keep)
    data_dir, lay = get_data(args)
    from pipeline.units import plan
    pattern = lay["input_pattern"]
    units = plan([pattern])
    units_files = [list(u.files) for u in units]
    size = sum(os.path.getsize(p) for fs in units_files for p in fs)
    rows = build_rows(args)
    info = {
        "data_dir": data_dir, "input_pattern": pattern, "capture_bytes": size, "profile": lay.get("profile"),
        "units": len(units), "files": sum(len(f) for f in units_files),
        "packets": lay.get("packets"), "connections": lay.get("connections"),
        "transactions": lay.get("transactions"),
        "cpu_model": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                           if ln.startswith("model name")), platform.processor()),
        "cores": os.cpu_count(), "mem_gib": round(os.sysconf("SC_PAGE_SIZE")
                                                  * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "repeat": args.repeat, "load_average_start": os.getloadavg(),
        "python": platform.python_version(), "c2scribe_cmd": args.c2scribe_cmd,
        "body_keep": args.body_keep_value, "decoders": args.decoder, "git": git_state(),
        "compression": args.compression or "zstd",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        import apache_beam
        info["beam"] = apache_beam.__version__
    except ImportError:
        pass
    print(f"data: {data_dir}  {size / 1e6:.1f} MB, profile {info['profile'] or '?'}, "
          f"{info['units']} units, {info['files']} files, {info['connections']} connections, "
          f"{info['transactions']} transactions")
    print(f"cpu: {info['cpu_model']}, {info['cores']} cores; best of {args.repeat}; "
          f"load average {' '.join(f'{x:.2f}' for x in info['load_average_start'])}; "
          f"body_keep {args.body_keep_value}; parquet {info['compression']}; "
          f"tree {info['git']}")
    for p in (fs for fs in units_files for fs in fs):
        warm_cache(p)

    fd, err_path = tempfile.mkstemp(prefix="pbench-", suffix=".stderr")
    os.close(fd)
    for rep in range(max(1, args.repeat)):
        for row in rows:
            if args.quiet_wait > 0:
                wait_quiet(args.quiet_wait, args.quiet_below)
            print(f"[{rep + 1}/{args.repeat}] {row.name} ...", end="", flush=True)
            with open(err_path, "wb"):
                pass
            r = run_once(row, pattern, units_files, args, err_path)
            if r["exit"] != 0:
                r["stderr_tail"] = tail(err_path, 8)
            row.runs.append(r)
            wk = ", ".join(f"{w['peak_mb']:.0f}" for w in r["workers"])
            print(f" {r['wall_s']:.2f}s  {size / 1e6 / r['wall_s']:.1f} MB/s  worker MB [{wk}]  "
                  f"load {r['load_1m']:.2f} other {r['other_cores']:.2f}  exit {r['exit']}",
                  flush=True)
    os.unlink(err_path)

    res = [summarize_row(r, size) for r in rows]
    rat = ratios(res)
    notes = check_records(res)
    print()
    print_table(res)
    print()
    for q in rat:
        print(f"{q['what']:<64}{q['value']:>8.2f}  target {q['target']:<7} "
              f"{'met' if q['met'] else 'MISSED'}")
    for n in notes:
        print("note:", n)
    for r, row in zip(res, rows):
        for run in row.runs:
            if run.get("stderr_tail"):
                print(f"\n{r['row']} exit {run['exit']}, stderr:\n{run['stderr_tail']}")
    info["load_average_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "results": res, "ratios": rat, "notes": notes,
                       "targets": {"speedup_2_workers": TARGET_SPEEDUP,
                                   "worker_peak_rss_mb": TARGET_WORKER_RSS_MB,
                                   "pipeline_vs_engine": TARGET_ENGINE_RATIO}}, f, indent=2)
            f.write("\n")
    if args.delete_data and lay.get("layout_version"):
        shutil.rmtree(data_dir, ignore_errors=True)
    if args.check_targets:
        missed = [q["what"] for q in rat if not q["met"] and not q.get("experiment")]
        if missed or not rat:
            print("\ncheck-targets: MISSED: " + ("; ".join(missed) or "nothing measured"))
            return 1
        print("\ncheck-targets: met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
