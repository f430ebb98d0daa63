"""Fuzzing of the C code that reads hostile packet bytes (tests/fuzz), for a bounded time.

tests/fuzz/fuzz_packets.c feeds a capture file to the pcap/pcapng reader in chunks cut by the
file's own bytes, then every packet through cs_link_to_ip, the IP defragmenter and the TCP
reassembler, checking the invariants of their contracts (offsets handed over, caps, held
bytes, reassembled headers) and freeing everything at the end for LeakSanitizer.

- With clang's libFuzzer (Debian: clang + libclang-rt-14-dev) the test builds `fuzz_packets`
  and runs it (`make run`) for C2SCRIBE_FUZZ_SECONDS seconds (default 60; 0 skips it) on a
  fresh corpus seeded by make_seeds.py: it must end with status 0, no sanitizer report, no
  crash file.
- Otherwise, with gcc (or a clang without libFuzzer), the same harness built with ASan + UBSan
  and a main() replays the seeds and a few thousand copies of them mutated here (fixed random
  seed: bit flips, interesting values, truncation, splicing, duplication), and a warning says
  that coverage-guided fuzzing did not run. C2SCRIBE_FUZZ_STANDALONE=1 forces this mode.
- Neither compiler (or no make): skipped.

Regression: tcpreasm.c once aged holes and unacknowledged bytes with int64_t differences of
capture times, which overflowed when a pcapng file put two times more than 2^63 us apart
(if_tsoffset); the fuzzer found it. The reproducers below are replayed on every run.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "fuzz"
SECONDS = int(os.environ.get("C2SCRIBE_FUZZ_SECONDS", "60"))
MUTANTS = 3000
MAX_LEN = 65536
# what a sanitizer, libFuzzer or the harness prints when something went wrong
REPORT_MARKS = ("ERROR:", "SUMMARY:", "runtime error:", "invariant violated", "deadly signal")


def _make(work: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(HERE), f"FUZZ_WORK={work}",
                           f"PYTHON={sys.executable}", *args],
                          capture_output=True, text=True, timeout=timeout)


def _libfuzzer_works(probe_dir: Path) -> bool:
    """clang can build and run a (trivial) libFuzzer target with ASan and UBSan."""
    clang = shutil.which("clang")
    if clang is None:
        return False
    src, exe = probe_dir / "probe.c", probe_dir / "probe"
    src.write_text("#include <stddef.h>\n#include <stdint.h>\n"
                   "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)"
                   " { (void)d; (void)n; return 0; }\n")
    try:
        p = subprocess.run([clang, "-fsanitize=fuzzer,address,undefined", str(src), "-o",
                            str(exe)], capture_output=True, timeout=300)
        if p.returncode != 0:
            return False
        return subprocess.run([str(exe), "-runs=1"], capture_output=True,
                              timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _reports(text: str) -> list[str]:
    return [m for m in REPORT_MARKS if m in text]


def _mutate(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:                                   # bit flips
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:                                 # interesting values
            i = rng.randrange(len(b))
            v = rng.choice([b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00",
                            b"\xff\xff", b"\xff\xff\xff\xff", b"\x00\x00\x00\x00",
                            b"\x80\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x00\x01"])
            b[i:i + len(v)] = v
        elif op == 2 and b:                                 # truncation
            del b[rng.randrange(len(b)):]
        elif op == 3:                                       # splicing with another seed
            o = rng.choice(others)
            b = b[:rng.randrange(len(b) + 1)] + o[rng.randrange(len(o) + 1):]
        elif op == 4 and b:                                 # a range duplicated
            i = rng.randrange(len(b))
            j = min(len(b), i + rng.randint(1, 200))
            b[j:j] = b[i:j]
        elif op == 5 and b:                                 # a range removed
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 64)]
    return bytes(b[:MAX_LEN])


# 284 / 280-byte pcapng files (one raw-IP interface with if_tsoffset = -4.7e12 s; packets at
# -4.7e12 s and +4.7e12 s): a segment held after a hole, then one 9.4e18 us later
# (tcpreasm.c: now - h->hole_since); bytes waiting for an ACK, then a segment 9.4e18 us
# later (tcpreasm.c: now - h->unacked_since).
TIME_OVERFLOW_REPRODUCERS = {
    "hole": "0a0d0d0a1c0000004d3c2b1a0100000000000000000000001c000000010000002000000065000000"
            "000000000e00080000682bb2b9fbffff200000000600000048000000000000000000000000000000"
            "28000000280000004500002800010000400666cd0a0000010a000002000100020000000000000000"
            "5002ffff0000000048000000060000004c0000000000000000000000000000002900000029000000"
            "4500002900010000400666cc0a0000010a0000020001000200000003000000005000ffff00000000"
            "420000004c000000060000004c00000000000000328273820000ac58290000002900000045000029"
            "00010000400666cc0a0000010a0000020001000200000004000000005000ffff0000000043000000"
            "4c000000",
    "unacked": "0a0d0d0a1c0000004d3c2b1a0100000000000000000000001c000000010000002000000065000000"
               "000000000e00080000682bb2b9fbffff200000000600000048000000000000000000000000000000"
               "28000000280000004500002800010000400666cd0a0000020a000001000200010000000000000064"
               "5010ffff0000000048000000060000004c0000000000000000000000000000002900000029000000"
               "4500002900010000400666cc0a0000010a0000020001000200000064000000005000ffff00000000"
               "410000004c000000060000004800000000000000328273820000ac58280000002800000045000028"
               "00010000400666cd0a0000010a0000020001000200000065000000005000ffff0000000048000000",
}


@pytest.fixture(scope="module")
def full_time_standalone(tmp_path_factory) -> Path:
    """The standalone harness (ASan + UBSan, times as they are)."""
    cc = shutil.which("gcc") or shutil.which("clang")
    if shutil.which("make") is None or cc is None:
        pytest.skip("make or a C compiler not installed")
    work = tmp_path_factory.mktemp("fuzz-full-time")
    p = _make(work, "standalone", f"STANDALONE_CC={Path(cc).name}",
              timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return work / "build" / "fuzz_packets_standalone"


@pytest.mark.parametrize("name", sorted(TIME_OVERFLOW_REPRODUCERS))
def test_capture_times_far_apart_do_not_overflow(tmp_path, full_time_standalone, name):
    repro = tmp_path / f"{name}.pcapng"
    repro.write_bytes(bytes.fromhex(TIME_OVERFLOW_REPRODUCERS[name]))
    p = subprocess.run([str(full_time_standalone), str(repro)], capture_output=True,
                       text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and not _reports(out), out[-3000:]


def test_seeds_are_small_captures(tmp_path):
    p = subprocess.run([sys.executable, str(HERE / "make_seeds.py"), str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    seeds = sorted(tmp_path.iterdir())
    assert len(seeds) >= 10
    for s in seeds:
        data = s.read_bytes()
        assert 24 <= len(data) < 4096, s.name
        assert data[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
                            b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a"), s.name


def test_fuzz_packets(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    if SECONDS <= 0:
        pytest.skip("C2SCRIBE_FUZZ_SECONDS <= 0: fuzzing disabled")
    work = tmp_path / "work"
    probe = tmp_path / "probe"
    probe.mkdir()
    forced = os.environ.get("C2SCRIBE_FUZZ_STANDALONE", "") not in ("", "0")
    if not forced and _libfuzzer_works(probe):
        _run_libfuzzer(work)
        return
    cc = shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("neither clang (with libFuzzer) nor gcc is installed")
    _run_standalone(work, Path(cc).name, forced)


def _run_libfuzzer(work: Path) -> None:
    p = _make(work, "fuzz_packets", timeout=900)           # `run` writes the seeds
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    p = _make(work, "run", f"FUZZ_SECONDS={SECONDS}", timeout=SECONDS + 600)
    out = p.stdout + p.stderr
    done = re.findall(r"^#\d+\s+DONE .*$", out, re.M)
    print(f"fuzz_packets ({SECONDS} s): {done[-1] if done else 'no DONE line'}")
    artifacts = sorted((work / "artifacts").glob("*"))
    assert p.returncode == 0, out[-6000:]
    assert not _reports(out), out[-6000:]
    assert not artifacts, f"libFuzzer wrote {[a.name for a in artifacts]}:\n{out[-6000:]}"
    assert done, out[-3000:]


def _run_standalone(work: Path, cc: str, forced: bool) -> None:
    p = _make(work, "standalone", "seeds", f"STANDALONE_CC={cc}", timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    seeds = sorted((work / "seeds").iterdir())
    datas = [s.read_bytes() for s in seeds]
    mutants = work / "mutants"
    mutants.mkdir()
    rng = random.Random(20240611)
    for i in range(MUTANTS):
        (mutants / f"m{i:05d}").write_bytes(_mutate(rng, rng.choice(datas), datas))
    exe = work / "build" / "fuzz_packets_standalone"
    p = subprocess.run([str(exe), str(work / "seeds"), str(mutants)], capture_output=True,
                       text=True, timeout=1800)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    assert not _reports(out), out[-6000:]
    assert f"{len(seeds) + MUTANTS} inputs ran" in out, out[-3000:]
    why = ("forced by C2SCRIBE_FUZZ_STANDALONE" if forced else
           "clang's libFuzzer is missing (Debian: clang libclang-rt-14-dev)")
    msg = (f"coverage-guided fuzzing did not run: {why}; replayed {len(seeds)} seeds and "
           f"{MUTANTS} mutated copies under {cc} ASan/UBSan instead")
    print(msg)
    warnings.warn(msg)
