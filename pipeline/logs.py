"""Beam's own chatter kept off the user's terminal (no Beam import here).

A local run starts SDK worker subprocesses that log every channel they open at INFO level to
the stderr they inherit, and Beam warns at import about optional GCP libraries. Neither is
c2scribe's business: stderr (file descriptor 2, so the worker subprocesses inherit it) goes
through a pipe whose reader drops those lines and passes everything else on (tracebacks,
c2scribe's messages, warnings worth reading). `c2scribe run --beam-logs` shows them all.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import threading

_NOISE = re.compile(
    rb"^(INFO|DEBUG):"
    rb"|^WARNING:root:apitools not found"
    rb"|No semi_persistent_directory found"
    rb"|^WARNING:apache_beam\.runners\.portability\.local_job_service:Worker: severity: "
    rb"(INFO|DEBUG|WARN) .*semi_persistent")


@contextlib.contextmanager
def quiet_beam(enabled: bool = True):
    """Filter fd 2 while the block runs. Yields a text stream on the real stderr (for
    progress lines that must not wait for a newline)."""
    if not enabled:
        yield sys.stderr
        return
    sys.stderr.flush()
    real = os.dup(2)
    r, w = os.pipe()
    os.dup2(w, 2)
    os.close(w)

    def pump() -> None:
        with os.fdopen(r, "rb") as src:
            for line in src:
                if not _NOISE.search(line):
                    os.write(real, line)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    out = os.fdopen(os.dup(real), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                    errors="replace")
    try:
        yield out
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)          # closes the pipe's last writer in this process
        t.join(timeout=5)
        out.close()
        os.close(real)
