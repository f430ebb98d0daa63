"""Units run in a child process, so that one that crashes it (a bug in C, a decoder that
exhausts memory) or hangs is reported and the worker goes on with the next.

A Beam worker keeps one child (`python -m pipeline.sandbox`) and hands it units one at a
time over a pipe: pickled (unit, output, decoders, format, body_keep) in, pickled (statuses,
summary) out. If the child dies or exceeds the time limit, it is replaced and the unit is
tried once more; a unit that kills its process twice is recorded as failed, with the
reason, and its partial outputs are removed. The child also keeps libnids' global state out
of the Beam worker process.
"""
from __future__ import annotations

import gc
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time

_HDR = struct.Struct("!Q")


class UnitCrashed(Exception):
    """The child process died or hung while running a unit."""


def _send(f, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(_HDR.pack(len(data)) + data)
    f.flush()


def _recv_exact(fd: int, n: int, deadline: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


class UnitProcess:
    """One child process that runs units (started on first use, replaced when it dies)."""

    def __init__(self, timeout: float | None = None):
        self.timeout = timeout or None
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the child now (else on first use)."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()

    def _start(self) -> None:
        env = dict(os.environ)
        # the child must import the same c2scribe/pipeline as this process
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                    else "")
        # pyarrow imports numpy, whose OpenBLAS starts a thread per core that polls: a unit
        # does no linear algebra, and the other workers need those cores
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.sandbox"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def _describe_death(self) -> str:
        rc = self.proc.poll() if self.proc else None
        if rc is None:
            return "did not answer"
        if rc < 0:
            try:
                return f"was killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"was killed by signal {-rc}"
        return f"exited with status {rc}"

    def run(self, *job):
        """(statuses, summary) of one unit; UnitCrashed when the child died or hung."""
        self.start()
        deadline = time.monotonic() + self.timeout if self.timeout else None
        try:
            _send(self.proc.stdin, job)
            n = _HDR.unpack(_recv_exact(self.proc.stdout.fileno(), _HDR.size, deadline))[0]
            return pickle.loads(_recv_exact(self.proc.stdout.fileno(), n, deadline))
        except TimeoutError:
            self.kill()
            raise UnitCrashed(f"took longer than {self.timeout:g} s (killed)") from None
        except (EOFError, BrokenPipeError, OSError):
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            why = self._describe_death()
            self.kill()
            raise UnitCrashed(f"its process {why}") from None

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()              # the child's loop ends at EOF
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


_READY: list[UnitProcess] = []


def prestart(argv: list[str]) -> int:
    """Start the unit processes a local `c2scribe run ARGV` will use, before Beam is even
    imported: their imports (pyarrow, the engine) then overlap Beam's and the pipeline's
    construction instead of following them. Workers take them with take(). None without
    isolation, with a --runner (not local, or not the default mode) or for --help."""
    import argparse
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--direct_num_workers", type=int, default=None)
    for flag in ("--no-isolate", "--dry-run", "--runner", "-h", "--help"):
        ap.add_argument(flag, nargs="?", const=True, default=None)
    try:
        a, _rest = ap.parse_known_args(argv)
    except SystemExit:                   # a malformed number: the real parser says so
        return 0
    if a.no_isolate or a.dry_run or a.runner or a.h or a.help:
        return 0
    n = max(1, min(a.direct_num_workers or a.workers, 64))
    for _ in range(n):
        p = UnitProcess()
        p.start()
        _READY.append(p)
    return n


def take(timeout: float | None = None) -> UnitProcess:
    """A prestarted unit process if one is left (any thread), else a new one."""
    try:
        p = _READY.pop()
    except IndexError:
        p = UnitProcess()
    p.timeout = timeout or None
    return p


def close_unused() -> None:
    """The prestarted processes no worker took (the run stopped early, or had fewer units)."""
    while _READY:
        _READY.pop().close()


def run_isolated(sandbox: UnitProcess, unit, output: str, decoders, fmt: str,
                 body_keep: int, manifest: dict | None = None, es=None, attempts: int = 2,
                 settings: dict | None = None):
    """(statuses, summary) of a unit run in the sandbox, tried `attempts` times."""
    from .work import failed_status
    why = ""
    for _ in range(attempts):
        try:
            return sandbox.run(unit, output, decoders, fmt, body_keep, manifest, es, settings)
        except UnitCrashed as e:
            why = str(e)
            print(f"c2scribe run: unit {unit.unit_id}: {why}", file=sys.stderr)
    return failed_status(unit, output, f"unit failed {attempts} times: {why}")


def tune_gc() -> None:
    """Records hold no reference cycles, but a unit allocates millions of them and every
    700 allocations Python's collector walks the young ones (and, often, the row groups the
    Parquet writer buffers): ~8 % of a unit's time. Collect less often, not never, so that a
    decoder making cyclic garbage stays bounded; what was imported is frozen."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def main() -> None:
    """The child: units in on stdin, results out on stdout; stdout is kept for the protocol
    (anything printed goes to stderr)."""
    from .work import process_unit
    # what a unit needs, imported before the first unit comes (while Beam starts its bundle)
    import c2scribe.capture  # noqa: F401
    import c2scribe.engine  # noqa: F401
    import transforms.parquet  # noqa: F401
    tune_gc()
    inp, out = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    while True:
        hdr = inp.read(_HDR.size)
        if len(hdr) < _HDR.size:
            return
        job = pickle.loads(inp.read(_HDR.unpack(hdr)[0]))
        _send(out, process_unit(*job))


if __name__ == "__main__":
    main()
    # every unit's files are closed and its results sent: skip the interpreter's teardown
    # (freeing a unit's worth of objects and pyarrow), which the worker's close waits for
    sys.stderr.flush()
    os._exit(0)
