"""The C capture reader and link-layer code, on their own (tests/c).

`make check` builds tests/c/test_capture with AddressSanitizer and UBSan and runs its
self-test: pcap/pcapng variants, every chunk size, truncation at every offset, hostile
lengths. `compare_with_tshark.py` then reads every shared capture (and rewritten variants:
pcapng, nanosecond, big-endian, multi-section) with the C reader and with tshark, and
requires the same packets, timestamps, lengths and IP headers (the rewritten variants only
with C2SCRIBE_SLOW=1: they take about 15 minutes).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import find_testdata

HERE = Path(__file__).resolve().parent / "c"


def _make(target: str, timeout: int) -> subprocess.CompletedProcess:
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.skip("make or gcc not installed")
    return subprocess.run(["make", "-s", "-C", str(HERE), target], capture_output=True,
                          text=True, timeout=timeout)


def test_c_reader_selftest_under_sanitizers():
    p = _make("check", 600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "0 failures" in p.stdout


@pytest.mark.parametrize("variants", [
    False,
    pytest.param(True, marks=pytest.mark.skipif(
        not os.environ.get("C2SCRIBE_SLOW"),
        reason="rewritten-format variants take ~15 min: set C2SCRIBE_SLOW=1")),
])
def test_c_reader_agrees_with_tshark_on_every_shared_capture(variants):
    data = find_testdata()
    if data is None:
        pytest.skip("../shared/testdata not present")
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    assert _make("test_capture", 600).returncode == 0
    p = subprocess.run([sys.executable, str(HERE / "compare_with_tshark.py"), "--driver",
                        str(HERE / "test_capture"), "--testdata", str(data)]
                       + (["--variants"] if variants else []),
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-5000:] + p.stderr[-2000:]
    assert "mismatches: 0" in p.stdout
