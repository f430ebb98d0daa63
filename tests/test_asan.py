"""The C engine built with AddressSanitizer and UndefinedBehaviorSanitizer, under the tests
that drive its hardest paths in memory: HTTP across capture gaps (libhtp frees transactions
while htp.c still follows them), overlaps, fragments, the columnar record backend, and the
conformance suite over every shared capture. It found a use-after-free in htp.c's
end_message and an empty memcpy from a NULL buffer, both fixed.

A second test runs 30 s of mutated captures (tests/asan_mutate.py: payload bytes flipped,
packets lost, repeated, reordered) through every output mode; it finds that use-after-free
within seconds when the fix is reverted.

The extension is built again into a temporary directory with -fsanitize=address,undefined
and loaded in child processes (the sanitizer runtimes preloaded, leaks not checked: CPython
keeps its own). A sanitizer report fails the child, and so the test.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBSET = ["tests/test_native_engine.py", "tests/test_columns.py", "tests/test_engine.py",
          "tests/conformance"]                   # the last: every shared capture, when present


def _runtime(name: str) -> str | None:
    gcc = shutil.which("gcc")
    if not gcc:
        return None
    path = subprocess.run([gcc, f"-print-file-name={name}"], capture_output=True,
                          text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


ASAN, UBSAN = _runtime("libasan.so"), _runtime("libubsan.so")
try:
    import setuptools  # noqa: F401 - setup.py builds the extension
    HAVE_SETUPTOOLS = True
except ImportError:
    HAVE_SETUPTOOLS = False


needs = [pytest.mark.skipif(not (ASAN and UBSAN), reason="gcc's libasan/libubsan not found"),
         pytest.mark.skipif(not HAVE_SETUPTOOLS,
                            reason="setuptools not installed (setup.py build_ext)")]
pytestmark = needs

BOOT = ("import sys, c2scribe; c2scribe.__path__.insert(0, sys.argv[1]); "
        "import c2scribe._core as c; assert c.__file__.startswith(sys.argv[1]), c.__file__; ")


@pytest.fixture(scope="module")
def asan_core(tmp_path_factory) -> str:
    """The directory of an ASan+UBSan build of c2scribe._core."""
    tmp = tmp_path_factory.mktemp("asan")
    env = dict(os.environ, CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -O1",
               LDFLAGS="-fsanitize=address,undefined")
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-temp",
                            str(tmp / "tmp"), "--build-lib", str(tmp / "lib")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-3000:]
    (so,) = (tmp / "lib" / "c2scribe").glob("_core*.so")
    return str(so.parent)


def run_sanitized(asan_core: str, code: str, *args: str, timeout: int = 1200):
    env = dict(os.environ, LD_PRELOAD=f"{ASAN} {UBSAN}",
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    p = subprocess.run([sys.executable, "-c", BOOT + code, asan_core, *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    report = p.stdout[-4000:] + p.stderr[-6000:]
    assert "ERROR: AddressSanitizer" not in report and "runtime error" not in report, report
    assert p.returncode == 0, report
    return report


def test_engine_paths_under_sanitizers(asan_core):
    # -s: a sanitizer's report goes to the real stderr, not to pytest's capture
    run_sanitized(asan_core, "import pytest; sys.exit(pytest.main(sys.argv[2:]))",
                  "-q", "-x", "-s", "-p", "no:cacheprovider", "-k", "not every_shared", *SUBSET)


def test_mutated_captures_under_sanitizers(asan_core):
    """30 s of damaged captures (flipped payload bytes, lost, repeated and reordered packets)
    through every output mode: tests/asan_mutate.py."""
    from helpers import find_testdata
    shared = find_testdata()
    report = run_sanitized(asan_core, "sys.path.insert(0, 'tests'); import asan_mutate; "
                           "sys.exit(asan_mutate.main(float(sys.argv[2]), sys.argv[3] or None))",
                           "30", str(shared) if shared else "")
    assert "mutated captures" in report
