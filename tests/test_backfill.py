"""`c2scribe backfill`: incremental runs over an archive, with a manifest per unit.

Each test runs the real CLI (Beam's local runner, worker processes) on sample captures laid
out as several sensors, and reads the Parquet back. A run processes only what is new or
changed; a decoder's new version redoes exactly the units where it produced output; a run
killed with SIGKILL half-way and run again ends with every record once, equal to a clean
run's.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_pipeline import parquet_docs

from c2scribe.samples import write_samples

DECODER = '''
"""Test decoder: one message per POST /beacon request."""
from c2scribe.decoders.api import TO_OPERATOR, HttpDecoder, Message


class Beacons(HttpDecoder):
    name = "beacons"
    version = "VERSION"

    def want(self, head):
        return head.uri == "/beacon"

    def request(self, tx, ctx):
        return Message(kind="checkin", direction=TO_OPERATOR, agent=tx.src_ip,
                       text="beacon VERSION")
'''


def backfill(tmp: Path, *args: str, timeout: int = 300) -> tuple[int, str]:
    p = subprocess.run([sys.executable, "-m", "c2scribe", "backfill", "--workers", "2", *args],
                       capture_output=True, text=True, timeout=timeout, cwd=tmp)
    return p.returncode, p.stderr


def planned(err: str) -> tuple[int, int]:
    """(units up to date, units to process) from the backfill's first line."""
    line = next(x for x in err.splitlines() if "unit(s) planned" in x)
    words = line.replace(",", "").split()
    return int(words[words.index("up") - 1]), int(words[words.index("process") - 2])


def redone(err: str) -> dict[str, str]:
    """{unit id: reason} of the units the backfill said it would process."""
    out = {}
    for line in err.splitlines():
        if line.startswith("  ") and ": " in line and not line.startswith("   "):
            uid, why = line.strip().split(": ", 1)
            if "-" in uid and " " not in uid:
                out[uid] = why
    return out


@pytest.fixture
def archive(tmp_path) -> Path:
    """Three sensors: a and b hold the samples (with beacons), c only the hostile capture."""
    root = tmp_path / "archive"
    write_samples(str(root / "a"))
    write_samples(str(root / "b"))
    (root / "c").mkdir()
    shutil.copy(root / "a" / "hostile-bytes.pcap", root / "c" / "hostile-bytes.pcap")
    return root


def test_second_run_does_nothing_and_new_files_redo_their_unit(archive, tmp_path):
    out = tmp_path / "out"
    rc, err = backfill(tmp_path, "--input", f"{archive}/*/*", "--output", str(out))
    assert rc == 0, err
    assert planned(err) == (0, 3)
    first = parquet_docs(out)
    assert len(list((out / "_manifest").glob("*.json"))) == 3
    # nothing changed: nothing to do, outputs untouched
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    rc, err = backfill(tmp_path, "--input", f"{archive}/*/*", "--output", str(out))
    assert rc == 0 and planned(err) == (3, 0), err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == mtimes
    # a file only touched: same content, not redone
    os.utime(archive / "a" / "web-keepalive.pcap")
    rc, err = backfill(tmp_path, "--input", f"{archive}/*/*", "--output", str(out),
                       "--dry-run")
    assert rc == 0 and planned(err) == (3, 0), err
    # a new file in sensor c: only c is redone, and its records now include the new file's
    shutil.copy(archive / "a" / "web-keepalive.pcap", archive / "c" / "late.pcap")
    rc, err = backfill(tmp_path, "--input", f"{archive}/*/*", "--output", str(out))
    assert rc == 0 and planned(err) == (2, 1), err
    (uid, why), = redone(err).items()
    assert uid.startswith("c-") and "late.pcap" in why
    second = parquet_docs(out)
    assert {u: d for u, d in second.items() if not u.startswith("c-")} == \
        {u: d for u, d in first.items() if not u.startswith("c-")}
    assert len(second[uid]) > len(first[uid])
    # a changed option redoes everything
    rc, err = backfill(tmp_path, "--input", f"{archive}/*/*", "--output", str(out),
                       "--body-keep", "0", "--dry-run")
    assert rc == 0 and planned(err) == (0, 3), err
    assert set(redone(err).values()) == {"options changed"}


def test_decoder_version_bump_redoes_exactly_where_it_produced_output(archive, tmp_path):
    dec = tmp_path / "beacons.py"
    dec.write_text(DECODER.replace("VERSION", "1.0"))
    out = tmp_path / "out"
    args = ["--input", f"{archive}/*/*", "--output", str(out), "--decoder", str(dec)]
    rc, err = backfill(tmp_path, *args)
    assert rc == 0 and planned(err) == (0, 3), err
    manifests = {json.loads(p.read_text())["sensor"]: json.loads(p.read_text())
                 for p in (out / "_manifest").glob("*.json")}
    assert manifests["a"]["decoders"]["beacons"]["produced"] > 0
    assert manifests["c"]["decoders"]["beacons"]["produced"] == 0
    dec.write_text(DECODER.replace("VERSION", "1.1"))
    rc, err = backfill(tmp_path, *args)
    assert rc == 0 and planned(err) == (1, 2), err
    assert sorted(u.split("-")[0] for u in redone(err)) == ["a", "b"]
    assert all(w == "decoder version changed: beacons" for w in redone(err).values())
    texts = {json.loads(d).get("message") for docs in parquet_docs(out).values() for d in docs
             if json.loads(d)["event.dataset"] == "c2scribe.c2"}
    assert texts == {"beacon 1.1"}
    # adding a decoder concerns every unit
    rc, err = backfill(tmp_path, *args, "--decoder", "njrat", "--dry-run")
    assert planned(err) == (0, 3) and set(redone(err).values()) == {"decoders added or removed"}


def test_date_and_sensor_ranges(archive, tmp_path):
    out = tmp_path / "out"
    rc, err = backfill(tmp_path, "--input", f"{archive}/*/*", "--output", str(out),
                       "--sensor", "b", "--dry-run")
    assert rc == 0 and planned(err) == (0, 1), err
    # the samples are from 2023-11-14: a range after it selects no unit
    rc, err = backfill(tmp_path, "--input", f"{archive}/*/*", "--output", str(out),
                       "--from", "2024-01-01", "--dry-run")
    assert rc == 0 and planned(err) == (0, 0), err
    rc, err = backfill(tmp_path, "--input", f"{archive}/*/*", "--output", str(out),
                       "--from", "2023-11-14", "--to", "2023-11-15", "--dry-run")
    assert rc == 0 and planned(err) == (0, 3), err
    rc, err = backfill(tmp_path, "--input", f"{archive}/*/*", "--output", str(out),
                       "--from", "yesterday")
    assert rc == 2 and "yesterday" in err


def test_killed_mid_run_then_run_again_loses_and_duplicates_nothing(tmp_path):
    """SIGKILL to the whole run (driver, Beam workers, sandboxes) once some units are done;
    the next backfill completes the rest: every record once, equal to a clean run."""
    root = tmp_path / "archive"
    for i in range(10):
        write_samples(str(root / f"s{i:02d}"))
    out, clean = tmp_path / "out", tmp_path / "clean"
    args = ["--input", f"{root}/*/*", "--workers", "1"]
    rc, err = backfill(tmp_path, *args, "--output", str(clean))
    assert rc == 0, err
    want = parquet_docs(clean)
    assert len(want) == 10

    p = subprocess.Popen([sys.executable, "-m", "c2scribe", "backfill", *args, "--output",
                          str(out)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None:
        done = len(list((out / "_manifest").glob("*.json"))) if (out / "_manifest").exists() \
            else 0
        if done >= 3:
            break
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be killed: " + p.stderr.read().decode()
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    done = len(list((out / "_manifest").glob("*.json")))
    assert 3 <= done < 10, done

    rc, err = backfill(tmp_path, *args, "--output", str(out))
    assert rc == 0, err
    up_to_date, todo = planned(err)
    assert up_to_date >= done and up_to_date + todo == 10
    got = parquet_docs(out)
    assert got == want
    flat = [d for docs in got.values() for d in docs]
    assert len(flat) == len(set(flat))
    assert len(list((out / "_manifest").glob("*.json"))) == 10
    leftovers = [x for x in out.rglob("*") if x.is_file() and ".tmp" in x.name]
    assert not leftovers, leftovers
    rc, err = backfill(tmp_path, *args, "--output", str(out))
    assert rc == 0 and planned(err) == (10, 0), err
