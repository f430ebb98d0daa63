"""Damaged, truncated, empty and non-capture files.

Each must give one clear error naming the file and the byte offset of the damage (a
CaptureError record with file/offset/message; on the command line exit status 1 and a stderr
line with file name and offset), and every record decoded before the damage must still come
out: the records of a damaged file equal those of its intact prefix (the same bytes cut at
the last whole record before the damage), and the connections that were complete before
the damage equal their records from the whole, undamaged capture. A chain [good, damaged,
good] still gives the records of both good files.

The damaged files are made here from a real capture (bro.org.pcap: 751 frames, 13 HTTP
connections) and written to pytest's tmp_path.
"""
from __future__ import annotations

import gzip
import json
import os
import random
import struct
import subprocess
import sys
import zlib

import pytest

from helpers import (CaptureError, Connection, HttpTransaction, c2_records, capture, comparable,
                     describe_record_diff, editcap, find_testdata, of_type, record_offsets)

pytestmark = pytest.mark.shared

SRC = "zeek/Traces/http/bro.org.pcap"
#: file names and the ids derived from them (see test_rotation.py)
NAMES = ("file_first", "file_last", "file", "conn_id", "tx_id")


def _src():
    if find_testdata() is None:
        pytest.skip("shared testdata missing")
    return capture(SRC)


def _no_errors(recs):
    return [r for r in recs if not isinstance(r, CaptureError)]


def _cmp(recs):
    return [comparable(r, NAMES) for r in _no_errors(recs)]


def _one_error(recs, path) -> CaptureError:
    errs = of_type(recs, CaptureError)
    assert len(errs) == 1, f"expected one CaptureError, got {errs}"
    e = errs[0]
    assert e.file == str(path), e
    assert e.message and isinstance(e.offset, int) and e.offset >= 0
    return e


def _complete_before(whole, frame_limit):
    """Connections of the whole run whose every packet is before frame_limit (1-based)."""
    return [c for c in of_type(whole, Connection)
            if c.frame_last and c.frame_last < frame_limit and c.end_reason in ("fin", "rst")]


# --------------------------------------------------------------------------------------------
# truncation and a corrupt record header in the middle
# --------------------------------------------------------------------------------------------

# (name, function of (raw bytes, record offsets) -> (damaged bytes, damage offset, record index
#  of the damage = frames before it))
def _cut_global_header(raw, offs):
    return raw[:13], 0, 0


def _cut_record_header(k):
    def f(raw, offs):
        return raw[:offs[k] + 9], offs[k], k
    f.__name__ = f"cut_in_record_header_{k}"
    return f


def _cut_record_data(k):
    def f(raw, offs):
        return raw[:offs[k] + 16 + 30], offs[k], k
    f.__name__ = f"cut_in_record_data_{k}"
    return f


def _absurd_caplen(k, caplen):
    def f(raw, offs):
        b = bytearray(raw)
        b[offs[k] + 8:offs[k] + 12] = struct.pack("<I", caplen)
        return bytes(b), offs[k], k
    f.__name__ = f"caplen_{caplen:#x}_at_record_{k}"
    return f


DAMAGES = [_cut_global_header, _cut_record_header(1), _cut_record_header(75),
           _cut_record_data(300), _cut_record_data(700), _cut_record_header(750),
           _absurd_caplen(300, 0x7FFFFFFF), _absurd_caplen(420, 300_000),
           _absurd_caplen(600, 0xFFFFFFFF)]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_damaged_file_keeps_records_before_the_damage(damage, tmp_path):
    src = _src()
    raw = src.read_bytes()
    offs = record_offsets(src)
    assert struct.unpack("<I", raw[:4])[0] == 0xA1B2C3D4, "test assumes a little-endian pcap"
    data, where, frames_before = damage(raw, offs)
    bad = tmp_path / "damaged.pcap"
    bad.write_bytes(data)
    prefix = tmp_path / "prefix.pcap"
    prefix.write_bytes(raw[:max(where, 24)] if where else b"")

    recs = c2_records(bad)
    e = _one_error(recs, bad)
    assert e.offset == where, f"damage is at byte {where}, error says {e.offset}: {e.message}"
    assert e.packets_before == frames_before, e

    if where:
        want = c2_records(prefix)
        assert not of_type(want, CaptureError)
        got, exp = _cmp(recs), _cmp(want)
        assert got == exp, ("records differ from those of the intact prefix:\n"
                            + describe_record_diff(got, exp))
        whole = c2_records(src)
        done = _complete_before(whole, frames_before + 1)
        mine = {c.community_id + str(c.start_us): c for c in of_type(recs, Connection)}
        for c in done:
            m = mine.get(c.community_id + str(c.start_us))
            assert m is not None, f"complete connection {c.src_port} lost"
            assert comparable(m, NAMES) == comparable(c, NAMES)
        if frames_before >= 700:   # bro.org.pcap's first connections close at frames 677-689
            assert done, "the damage point should come after some complete connection"


# --------------------------------------------------------------------------------------------
# files that are not captures
# --------------------------------------------------------------------------------------------

def _make(kind, tmp_path):
    p = tmp_path / {"empty": "empty.pcap", "text": "notes.txt", "random": "random.bin",
                    "html": "index.pcap", "pcapng_cut": "cut.pcapng"}[kind]
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("This is not a packet capture.\nJust some text, line after line.\n" * 20)
    elif kind == "random":
        p.write_bytes(random.Random(1234).randbytes(10_000))
    elif kind == "html":
        p.write_bytes(b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n")
    elif kind == "pcapng_cut":
        ng = tmp_path / "whole.pcapng"
        editcap("-F", "pcapng", _src(), ng)
        b = ng.read_bytes()
        p.write_bytes(b[:len(b) // 2])
    return p


@pytest.mark.parametrize("kind", ["empty", "text", "random", "html"])
def test_not_a_capture(kind, tmp_path):
    p = _make(kind, tmp_path)
    recs = c2_records(p)
    e = _one_error(recs, p)
    assert e.offset == 0 and e.packets_before == 0
    assert not of_type(recs, Connection) and not of_type(recs, HttpTransaction)


def test_truncated_pcapng(tmp_path):
    """A pcapng file cut in the middle of a block: error at that block, records before kept."""
    if find_testdata() is None:
        pytest.skip("shared testdata missing")
    p = _make("pcapng_cut", tmp_path)
    recs = c2_records(p)
    e = _one_error(recs, p)
    data = p.read_bytes()
    # walk the pcapng blocks: the damage is at the start of the last, incomplete one
    off = 0
    while off + 12 <= len(data):
        n = struct.unpack("<I", data[off + 4:off + 8])[0]
        if off + n > len(data):
            break
        off += n
    assert e.offset == off, (e.offset, off, e.message)
    prefix = tmp_path / "prefix.pcapng"
    prefix.write_bytes(data[:off])
    got, exp = _cmp(recs), _cmp(c2_records(prefix))
    assert got and got == exp, describe_record_diff(got, exp)


# --------------------------------------------------------------------------------------------
# compressed files cut short
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.9])
def test_gzip_cut_short(fraction, tmp_path):
    """A gzip capture cut short: the bytes that still decompress are decoded.

    The error must say where the decompressed stream broke (not byte 0), and the records
    must be those of the plain capture cut at that decompressed offset.
    """
    src = _src()
    raw = src.read_bytes()
    gz = gzip.compress(raw)
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(gz[:int(len(gz) * fraction)])
    available = len(zlib.decompressobj(31).decompress(cut.read_bytes()))
    assert available > 24

    recs = c2_records(cut)
    e = _one_error(recs, cut)
    assert 0 < e.offset <= available, (
        f"{available} bytes of the capture still decompress, but the error is at decompressed "
        f"offset {e.offset} ({e.message}); {len(_no_errors(recs))} records came out")
    assert available - e.offset < 1 << 16, (e.offset, available)
    plain = tmp_path / "plain_prefix.pcap"
    plain.write_bytes(raw[:e.offset])
    got = _cmp(recs)
    exp = _cmp(c2_records(plain))
    assert got == exp, describe_record_diff(got, exp)


def test_zstd_cut_short(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    src = _src()
    raw = src.read_bytes()
    z = zstandard.ZstdCompressor().compress(raw)
    cut = tmp_path / "cut.pcap.zst"
    cut.write_bytes(z[:len(z) // 2])
    recs = c2_records(cut)
    e = _one_error(recs, cut)
    assert e.offset > 0, (f"half of the zstd stream is there, but the error is at offset 0 "
                          f"({e.message}); {len(_no_errors(recs))} records came out")
    plain = tmp_path / "plain_prefix.pcap"
    plain.write_bytes(raw[:e.offset])
    got, exp = _cmp(recs), _cmp(c2_records(plain))
    assert got == exp, describe_record_diff(got, exp)


# --------------------------------------------------------------------------------------------
# a damaged file in the middle of a chain
# --------------------------------------------------------------------------------------------

GOOD1 = "zeek/Traces/http/get.pcap"
GOOD2 = "keithjjones-zeek-njrat-detector/testing/Traces/njrat.pcap"


@pytest.mark.parametrize("kind", ["empty", "text", "random", "truncated", "absurd_caplen",
                                  "gzip_cut"])
def test_chain_good_damaged_good(kind, tmp_path):
    src = _src()
    g1, g2 = capture(GOOD1), capture(GOOD2)
    raw = src.read_bytes()
    offs = record_offsets(src)
    if kind in ("empty", "text", "random"):
        bad = _make(kind, tmp_path)
    elif kind == "truncated":
        bad = tmp_path / "trunc.pcap"
        bad.write_bytes(raw[:offs[500] + 20])
    elif kind == "absurd_caplen":
        bad = tmp_path / "caplen.pcap"
        b = bytearray(raw)
        b[offs[500] + 8:offs[500] + 12] = struct.pack("<I", 0x7FFFFFFF)
        bad.write_bytes(bytes(b))
    else:
        bad = tmp_path / "cut.pcap.gz"
        gz = gzip.compress(raw)
        bad.write_bytes(gz[:len(gz) // 2])

    recs = c2_records([g1, bad, g2])
    e = _one_error(recs, bad)
    # both good files' connections come out whole, as they do alone
    for good in (g1, g2):
        alone = of_type(c2_records(good), Connection)
        mine = [c for c in of_type(recs, Connection) if c.file_first == str(good)]
        assert [comparable(c, NAMES) for c in mine] == [comparable(c, NAMES) for c in alone], good
        alone_http = of_type(c2_records(good), HttpTransaction)
        mine_http = [t for t in of_type(recs, HttpTransaction) if t.file_first == str(good)]
        assert ([comparable(t, NAMES) for t in mine_http]
                == [comparable(t, NAMES) for t in alone_http]), good
    assert e.file == str(bad)


# --------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "c2scribe", *map(str, args)],
                          capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})


@pytest.mark.parametrize("kind", ["truncated", "text", "empty"])
def test_cli_reports_damage(kind, tmp_path):
    src = _src()
    raw = src.read_bytes()
    offs = record_offsets(src)
    if kind == "truncated":
        bad, where = tmp_path / "trunc.pcap", offs[400]
        bad.write_bytes(raw[:offs[400] + 50])
    else:
        bad, where = _make(kind, tmp_path), 0
    good = capture(GOOD1)
    p = _cli("transcript", "--format", "jsonl", good, bad)
    assert p.returncode == 1, (p.returncode, p.stderr)
    err = p.stderr.decode()
    lines = [ln for ln in err.splitlines() if str(bad) in ln]
    assert lines, f"no stderr line names {bad}:\n{err}"
    assert any(str(where) in ln and "offset" in ln for ln in lines), lines
    docs = [json.loads(ln) for ln in p.stdout.decode().splitlines() if ln.strip()]
    errs = [d for d in docs if d["event.dataset"] == "c2scribe.capture_error"]
    assert len(errs) == 1
    assert errs[0]["c2scribe.capture.file"] == str(bad)
    assert errs[0]["c2scribe.capture.offset"] == where
    assert errs[0].get("error.message")
    # the good file's transaction is still there
    assert any(d["event.dataset"] == "c2scribe.http"
               and d.get("url.original") == "/download/CHANGES.bro-aux.txt" for d in docs)
    if kind == "truncated":
        assert sum(d["event.dataset"] == "c2scribe.http" for d in docs) > 1


def test_cli_exit_0_on_good_files(tmp_path):
    p = _cli("transcript", "--format", "jsonl", capture(GOOD1))
    assert p.returncode == 0, p.stderr
