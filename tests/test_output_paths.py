"""Every real capture gives the same documents through the three output paths.

Record.to_json (Python), the Python document fast path and the JSON the C engine writes
itself must agree field for field, hostile bytes and invalid UTF-8 included, and two runs
must give the same output in the same order.
"""
from __future__ import annotations

import json

import pytest

from c2scribe.capture import run_chain
from c2scribe.engine import ENGINES, Engine
from c2scribe.render.jsonl import dumps

from helpers import find_testdata

DATA = find_testdata()
CAPTURES = sorted(p for ext in ("*.pcap", "*.pcapng") for p in DATA.rglob(ext)) if DATA else []


@pytest.mark.skipif(not CAPTURES, reason="../shared/testdata not present")
@pytest.mark.parametrize("engine", ENGINES)
def test_all_output_paths_agree_on_every_shared_capture(engine):
    differ = []
    for path in CAPTURES:
        kw = dict(body_keep=256, stream_keep=256, engine=engine)
        recs = [json.loads(dumps(r.to_json(bodies=True))) for r in run_chain(Engine(**kw), [str(path)])]
        docs = [json.loads(dumps(d)) for d in
                run_chain(Engine(documents=True, bodies=True, **kw), [str(path)])]
        lines = [json.loads(b) for _ds, b in
                 run_chain(Engine(jsonl=True, bodies=True, **kw), [str(path)])]
        if not (recs == docs == lines):
            differ.append(str(path.relative_to(DATA)))
    assert not differ, differ
    assert len(CAPTURES) > 600
