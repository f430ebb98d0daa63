"""Mutated captures through the engine, for tests/test_asan.py (run under ASan and UBSan).

Seeds: the sample captures (c2scribe.samples) and, when present, the HTTP captures of
../shared/testdata. Each round takes a seed's packets and damages them: bytes of the TCP
payloads flipped, packets dropped, duplicated or swapped (holes, retransmissions and
reordering, where htp.c fills gaps and resynchronises), then runs every output mode over the
result. Deterministic for a given seed; bounded by a time budget.
"""
from __future__ import annotations

import os
import random
import sys
import tempfile
import time


def mutate(rng: random.Random, recs: list) -> list:
    recs = list(recs)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        i = rng.randrange(len(recs))
        hdr, frame = recs[i]
        if op < 0.45 and len(frame) > 60:                   # payload bytes flipped
            b = bytearray(frame)
            for _ in range(rng.randint(1, 6)):
                b[rng.randrange(54, len(b))] = rng.randrange(256)
            recs[i] = (hdr, bytes(b))
        elif op < 0.65:                                      # a packet lost
            del recs[i]
        elif op < 0.8:                                       # retransmitted
            recs.insert(i, recs[i])
        elif i + 1 < len(recs):                              # reordered
            recs[i], recs[i + 1] = recs[i + 1], recs[i]
        if not recs:
            break
    return recs


def main(budget: float, shared: str | None) -> int:
    from c2scribe.capture import run_chain
    from c2scribe.engine import Engine
    from c2scribe.samples import write_samples
    from helpers import read_pcap, write_pcap
    seeds = []
    tmp = tempfile.mkdtemp(prefix="asan-mutate-")
    paths = write_samples(tmp)
    if shared and os.path.isdir(shared):
        for root, _d, files in os.walk(shared):
            paths += [os.path.join(root, f) for f in files if f.endswith(".pcap")
                      and ("http" in root.lower() or "http" in f.lower())]
    for p in paths:
        try:
            ghdr, bo, recs = read_pcap(p)
        except ValueError:                          # pcapng, compressed: not mutated here
            continue
        if recs:
            seeds.append((ghdr, bo, recs))
    rng = random.Random(1)
    modes = [dict(), dict(jsonl=True, bodies=True), dict(columns=True, bodies=True),
             dict(columns=True, with_records=True, bodies=True, stream_chunks=True),
             dict(columns=True, with_records=True, bodies=True,       # decoders' selection
                  select=lambda conn_id, index, *head: index % 2 == 1),
             dict(stream_chunks=True, body_keep=1 << 16,              # stream decoders'
                  stream_select=lambda conn_id, *head: hash(head[4]) % 2 == 0),
             dict(engine="nids")]
    end, rounds = time.monotonic() + budget, 0
    path = os.path.join(tmp, "m.pcap")
    while time.monotonic() < end:
        ghdr, bo, recs = seeds[rng.randrange(len(seeds))]
        write_pcap(path, ghdr, bo, mutate(rng, recs))
        kw = dict(modes[rounds % len(modes)])
        kw.setdefault("body_keep", rng.choice([0, 100, 1 << 16]))
        for _ in run_chain(Engine(stream_keep=rng.choice([0, 4096]), **kw), [path]):
            pass
        rounds += 1
    print(f"asan_mutate: {rounds} mutated captures from {len(seeds)} seeds", file=sys.stderr)
    return 0 if rounds else 1


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
