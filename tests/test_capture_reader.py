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

import pytest

from helpers import C_TESTS, assert_selftest_passed, find_testdata, make_c



def test_c_reader_selftest_under_sanitizers():
    assert_selftest_passed(make_c("check"))


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
    assert make_c("test_capture", 600).returncode == 0
    p = subprocess.run([sys.executable, str(C_TESTS / "compare_with_tshark.py"), "--driver",
                        str(C_TESTS / "test_capture"), "--testdata", str(data)]
                       + (["--variants"] if variants else []),
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-5000:] + p.stderr[-2000:]
    assert "mismatches: 0" in p.stdout
