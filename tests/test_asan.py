"""The C engine built with AddressSanitizer and UndefinedBehaviorSanitizer, under the tests
that drive its hardest paths in memory: HTTP across capture gaps (libhtp frees transactions
while htp.c still follows them), overlaps, fragments, the columnar record backend, and the
conformance suite over every shared capture. It found a use-after-free in htp.c's
end_message and an empty memcpy from a NULL buffer, both fixed.

The extension is built again into a temporary directory with -fsanitize=address,undefined
and loaded in a child pytest (the sanitizer runtimes preloaded, leaks not checked: CPython
keeps its own). A sanitizer report fails the child, and so this test.
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


@pytest.mark.skipif(not (ASAN and UBSAN), reason="gcc's libasan/libubsan not found")
@pytest.mark.skipif(not HAVE_SETUPTOOLS, reason="setuptools not installed (setup.py build_ext)")
def test_engine_paths_under_sanitizers(tmp_path):
    env = dict(os.environ, CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -O1",
               LDFLAGS="-fsanitize=address,undefined")
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-temp",
                            str(tmp_path / "tmp"), "--build-lib", str(tmp_path / "lib")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-3000:]
    (so,) = (tmp_path / "lib" / "c2scribe").glob("_core*.so")
    boot = ("import sys, c2scribe; c2scribe.__path__.insert(0, sys.argv[1]); "
            "import c2scribe._core as c; assert c.__file__.startswith(sys.argv[1]), c.__file__; "
            "import pytest; sys.exit(pytest.main(sys.argv[2:]))")
    run_env = dict(os.environ, LD_PRELOAD=f"{ASAN} {UBSAN}",
                   ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
                   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    p = subprocess.run([sys.executable, "-c", boot, str(so.parent), "-q", "-x", "-s",
                        "-p", "no:cacheprovider", "-k", "not every_shared", *SUBSET],
                       cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=1200)
    report = p.stdout[-4000:] + p.stderr[-6000:]
    assert "ERROR: AddressSanitizer" not in report and "runtime error" not in report, report
    assert p.returncode == 0, report
