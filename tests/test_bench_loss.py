"""Quick self-check of the lossy capture variant (bench/gen_captures.py --drop-data) and of the
matching in bench/run_loss_bench.py: small captures, a few seconds."""
from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import check_generator  # noqa: E402
import gen_captures  # noqa: E402
import run_loss_bench  # noqa: E402

SIZE = 1_500_000


def _gen(tmp_path, name, **kw):
    path = tmp_path / f"{name}.pcap"
    gen_captures.generate(kw.pop("profile", "small"), SIZE, str(path), seed=5, manifest_full=True, **kw)
    with open(gen_captures.manifest_path(str(path))) as f:
        return path, json.load(f)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return _gen(tmp_path_factory.mktemp("clean"), "clean")


@pytest.mark.parametrize("profile", ["small", "large"])
def test_lossy_is_the_clean_capture_minus_the_listed_data_packets(tmp_path, profile):
    cpath, cman = _gen(tmp_path, "clean", profile=profile)
    lpath, lman = _gen(tmp_path, "lossy", profile=profile, drop_data=0.01, drop_seed=7)
    frames = [f for _, _, f in check_generator.read_pcap(str(cpath))]
    with open(cpath, "rb") as f1, open(lpath, "rb") as f2:
        assert f1.read(24) == f2.read(24)
    drops = lman["dropped_list"]
    dropped = {d["frame"] for d in drops}
    # exactly the fraction (+-1) of the data packets, and nothing else is changed
    assert lman["data_packets"] == cman["data_packets"]
    assert abs(len(drops) - 0.01 * cman["data_packets"]) <= 1
    assert lman["packets"] + len(drops) == cman["packets"]
    lossy_records = list(check_generator.read_pcap(str(lpath)))
    clean_records = list(check_generator.read_pcap(str(cpath)))
    assert lossy_records == [r for i, r in enumerate(clean_records, 1) if i not in dropped]
    # each listed drop is that frame of the clean capture, a data packet of that connection
    streams, _ = check_generator.reassemble([str(cpath)])
    by_key = {(".".join(map(str, s.client[0])), s.client[1]): s for s in streams}
    for k, d in enumerate(drops):
        f = frames[d["frame"] - 1]
        assert len(f) - 54 == d["len"] > 0 and not f[47] & gen_captures.SYN
        assert d["after_lossy_frame"] == d["frame"] - 1 - k
        st = by_key[tuple(d["client"])]
        data = bytes(st.data[0 if d["direction"] == "client_to_server" else 1])
        assert data[d["offset"]:d["offset"] + d["len"]] == f[54:]
        assert len(d["touches"]) == 1, "every message starts a new segment"
        for t in d["touches"]:
            msg_start = d["offset"] - t["offset"]
            assert t["offset"] + t["len"] <= t["message_len"] and t["len"] == d["len"]
            if t["message"] == "request":
                assert data[msg_start:].startswith(f"{t['method']} {t['uri']} HTTP/1.1\r\n".encode())
            else:
                assert data[msg_start:].startswith(f"HTTP/1.1 {t['status']} ".encode())
            assert data[msg_start + t["head_len"] - 4:msg_start + t["head_len"]] == b"\r\n\r\n"
            tx = lman["transaction_list"][t["tx"]]
            assert (tx["method"], tx["uri"], tx["status"]) == (t["method"], t["uri"], t["status"])
            assert {"message": t["message"], "offset": t["offset"], "len": t["len"],
                    "part": t["part"]} in tx["dropped"]
    s = lman["drops"]
    assert s["dropped_packets"] == len(drops) == lman["dropped_packets"]
    assert s["transactions_touched"] == lman["transactions_touched_by_drops"] == \
        sum(1 for tx in lman["transaction_list"] if "dropped" in tx)
    assert s["client_to_server"] + s["server_to_client"] == len(drops)


def test_drop_seed_chooses_the_packets_deterministically(tmp_path, clean):
    _, a = _gen(tmp_path, "a", drop_data=0.01, drop_seed=1)
    _, b = _gen(tmp_path, "b", drop_data=0.01, drop_seed=1)
    _, c = _gen(tmp_path, "c", drop_data=0.01, drop_seed=2)
    fa, fc = [d["frame"] for d in a["dropped_list"]], [d["frame"] for d in c["dropped_list"]]
    assert (tmp_path / "a.pcap").read_bytes() == (tmp_path / "b.pcap").read_bytes()
    assert fa == [d["frame"] for d in b["dropped_list"]] and fa != fc
    # the same traffic either way: only the dropped packets differ
    assert a["transactions"] == c["transactions"] == clean[1]["transactions"]
    assert a["arguments"]["drop_seed"] == 1 and c["arguments"]["drop_data"] == 0.01


def test_undropped_capture_is_unchanged_by_the_option(tmp_path, clean):
    path, man = _gen(tmp_path, "zero", drop_data=0.0)
    assert path.read_bytes() == clean[0].read_bytes()
    assert "drops" not in man and "dropped_list" not in man and man["dropped_packets"] == 0
    check_generator.FAILURES.clear()
    check_generator.check_against_manifest([str(path)], man)
    assert not check_generator.FAILURES


def test_recovered_matches_per_connection_multisets():
    C = collections.Counter
    k1 = run_loss_bench.key4("10.0.0.1", 40000, "192.0.2.1", 80)
    assert k1 == run_loss_bench.key4("192.0.2.1", "80", "10.0.0.1", "40000")
    k2 = run_loss_bench.key4("10.0.0.2", 40000, "192.0.2.1", 80)
    ref = {k1: C({("GET", "/a"): 2, ("GET", "/b"): 1}), k2: C({("GET", "/a"): 1})}
    got = {k1: C({("GET", "/a"): 1, ("GET", "/b"): 1, ("POST", "/c"): 1}),
           k2: C({("GET", "/b"): 1})}
    assert run_loss_bench.recovered(ref, got) == 2          # one /a short on k1, k2 wrong URI
    assert run_loss_bench.recovered(ref, {}) == 0
