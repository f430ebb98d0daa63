"""The conformance table: one row per capture and engine, printed at the end of the pytest run.

Rows are recorded by test_oracles.py as the tests run; conftest.py prints them from
pytest_terminal_summary, and writes the full table as Markdown to the path in
$C2SCRIBE_CONFORMANCE_REPORT when that is set (nothing is written inside the repository).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

from oracles import EVADER_PREFIX


@dataclass
class Row:
    capture: str
    engine: str
    kind: str
    ours: int | None
    theirs: int | None
    status: str
    reason: str
    evader_decoded: bool | None = None


ROWS: dict[tuple[str, str], Row] = {}

ORDER = ("fail", "stale", "xpass", "xfail", "not-comparable", "pass")
LABEL = {"pass": "pass", "fail": "FAIL", "xfail": "expected-fail", "xpass": "UNEXPECTED-PASS",
         "stale": "STALE-REASON", "not-comparable": "not-comparable"}


def record(row: Row) -> None:
    ROWS[(row.engine, row.capture)] = row


def _n(v: int | None) -> str:
    return "-" if v is None else str(v)


def _clip(s: str, n: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 3] + "..."


def counts() -> dict[tuple[str, str], collections.Counter]:
    by_kind: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    for r in ROWS.values():
        kind = "http-evader" if r.capture.startswith(EVADER_PREFIX) else r.kind
        by_kind[(r.engine, kind)][r.status] += 1
    return by_kind


def evader_summary(engine: str) -> tuple[int, int, list[str]]:
    ev = [r for r in ROWS.values() if r.capture.startswith(EVADER_PREFIX) and r.engine == engine]
    bad = sorted(r.capture.split("/")[2] for r in ev if not r.evader_decoded)
    return len(ev) - len(bad), len(ev), bad


def _sorted_rows() -> list[Row]:
    return sorted(ROWS.values(), key=lambda r: (ORDER.index(r.status), r.engine, r.kind, r.capture))


def lines(width: int = 100, full: bool = False) -> list[str]:
    """The table. Passing http-evader rows are folded into one line unless full."""
    out = []
    rows = _sorted_rows()
    cap_w = min(max((len(r.capture) for r in rows), default=10), 70)
    head = (f"{'engine':<7} {'capture':<{cap_w}}  {'oracle':<15} {'ours/oracle':>11}  "
            f"{'verdict':<15} reason")
    out.append(head)
    out.append("-" * min(len(head) + 40, 200))
    folded: collections.Counter = collections.Counter()
    for r in rows:
        if not full and r.status == "pass" and r.capture.startswith(EVADER_PREFIX):
            folded[r.engine] += 1
            continue
        cap = r.capture if len(r.capture) <= cap_w else "..." + r.capture[-(cap_w - 3):]
        txs = f"{_n(r.ours)}/{_n(r.theirs)}"
        out.append(f"{r.engine:<7} {cap:<{cap_w}}  {r.kind:<15} {txs:>11}  {LABEL[r.status]:<15} "
                   f"{_clip(r.reason, width) if not full else ' '.join(r.reason.split())}")
    for engine, n in sorted(folded.items()):
        out.append(f"{engine:<7} {'suricata-verify/http-evader/* (' + str(n) + ' more)':<{cap_w}}  "
                   f"{'suricata-verify':<15} {'':>11}  {'pass':<15} each decodes EICAR and "
                   f"matches its fileinfo/alert checks")
    out.append("")
    return out + summary_lines()


def summary_lines() -> list[str]:
    out = ["verdicts per engine and oracle kind:"]
    by_kind = counts()
    totals: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for (engine, kind) in sorted(by_kind):
        c = by_kind[(engine, kind)]
        totals[engine].update(c)
        out.append(f"  {engine:<7} {kind:<16} " + ", ".join(f"{LABEL[s]} {c[s]}" for s in ORDER if c[s]))
    for engine, total in sorted(totals.items()):
        out.append(f"  {engine:<7} {'all':<16} " + ", ".join(f"{LABEL[s]} {total[s]}" for s in ORDER
                                                           if total[s]))
        good, n, bad = evader_summary(engine)
        if n:
            out.append(f"  {engine:<7} http-evader: {good} of {n} captures decode to a body containing "
                       f"the EICAR string; not decoded: {', '.join(bad) if bad else 'none'}")
    return out


def markdown() -> str:
    out = ["| engine | capture | oracle | ours/oracle | verdict | reason |",
           "|---|---|---|---|---|---|"]
    for r in _sorted_rows():
        reason = " ".join(r.reason.split()).replace("|", "\\|")
        out.append(f"| {r.engine} | `{r.capture}` | {r.kind} | {_n(r.ours)}/{_n(r.theirs)} | "
                   f"{LABEL[r.status]} | {reason} |")
    out.append("")
    out += summary_lines()
    return "\n".join(out) + "\n"
