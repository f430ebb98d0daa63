"""Conformance of c2scribe's HTTP records with independent oracles, one test per capture.

Every line of the shared testdata's ORACLES.jsonl is a test per reassembly engine (nids and
native), named ENGINE:CAPTURE:

* comparable and agreeing                        -> passes;
* comparable, disagreeing, not documented        -> fails with the differences;
* documented in expectations.py (libnids limit or a difference of definition, with a reason
  re-checked against the capture)                -> xfail; if it starts to agree, or its reason
  stops being true, the test fails ("unexpectedly passing, update expectations");
* nothing comparable about HTTP in the oracle    -> skipped, with why.

The table of all verdicts is printed at the end of the run (conftest.py).
"""
from __future__ import annotations

import pytest

import evidence as ev
import expectations as X
import oracles as O
import conformance_table as report

ROOT = O.testdata_root()
ORACLES = O.load_oracles(ROOT) if ROOT is not None else ()


def _params():
    if not ORACLES:
        return [pytest.param(None, None, id="testdata-missing",
                             marks=pytest.mark.skip(reason=O.testdata_hint()))]
    return [pytest.param(engine, o, id=f"{engine}:{o['capture']}")
            for engine in O.ENGINES for o in ORACLES]


@pytest.mark.parametrize("engine,orc", _params())
def test_capture_matches_oracle(engine, orc):
    outcome, run = O.evaluate(ROOT, orc, engine)
    expects = X.expectations_for(orc["capture"], engine)
    ctx = ev.Ctx(ROOT, orc["capture"], run) if expects and run is not None else None
    verdict = X.judge(outcome, expects, ctx)
    report.record(report.Row(
        capture=orc["capture"], engine=engine, kind=orc["kind"], ours=outcome.ours,
        theirs=outcome.theirs,
        status=verdict.status, reason=verdict.reason,
        evader_decoded=(O.evader_decoded(run) if run is not None
                        and orc["capture"].startswith(O.EVADER_PREFIX) else None)))
    if verdict.status == "not-comparable":
        pytest.skip(f"not comparable: {verdict.reason}")
    if verdict.status == "xfail":
        pytest.xfail(verdict.reason)
    if verdict.test_fails:
        detail = "\n".join(f"  - {d}" for d in verdict.details[:40])
        pytest.fail(f"{report.LABEL[verdict.status]}: {verdict.reason}"
                    + (f"\n{detail}" if detail else ""), pytrace=False)


def test_every_expectation_names_a_capture_of_the_oracles():
    """An entry in expectations.py for a capture that no longer has an oracle line is stale."""
    if not ORACLES:
        pytest.skip(O.testdata_hint())
    captures = {o["capture"] for o in ORACLES}
    missing = [c for c in X.EXPECTED if c not in captures]
    evaders = {c.split("/")[2] for c in captures if c.startswith(O.EVADER_PREFIX)}
    missing += [f"http-evader {n}" for n in X.EVADER_EXPECTED if n not in evaders]
    missing += [f"http-evader category {c}" for c in X.EVADER_EXPECTED.values()
                if c not in X.EVADER_CATEGORIES]
    assert not missing, f"expectations for captures without an oracle line: {missing}"
