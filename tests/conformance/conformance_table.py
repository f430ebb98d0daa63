"""The conformance table: one row per capture, printed at the end of the pytest run.

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
    kind: str
    ours: int | None
    theirs: int | None
    status: str
    reason: str
    evader_decoded: bool | None = None


ROWS: dict[str, Row] = {}

ORDER = ("fail", "stale", "xpass", "xfail", "not-comparable", "pass")
LABEL = {"pass": "pass", "fail": "FAIL", "xfail": "expected-fail", "xpass": "UNEXPECTED-PASS",
         "stale": "STALE-REASON", "not-comparable": "not-comparable"}


def record(row: Row) -> None:
    ROWS[row.capture] = row


def _n(v: int | None) -> str:
    return "-" if v is None else str(v)


def _clip(s: str, n: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 3] + "..."


def counts() -> dict[str, collections.Counter]:
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in ROWS.values():
        kind = "http-evader" if r.capture.startswith(EVADER_PREFIX) else r.kind
        by_kind[kind][r.status] += 1
    return by_kind


def evader_summary() -> tuple[int, int, list[str]]:
    ev = [r for r in ROWS.values() if r.capture.startswith(EVADER_PREFIX)]
    bad = sorted(r.capture.split("/")[2] for r in ev if not r.evader_decoded)
    return len(ev) - len(bad), len(ev), bad


def lines(width: int = 100, full: bool = False) -> list[str]:
    """The table. Passing http-evader rows are folded into one line unless full."""
    out = []
    rows = sorted(ROWS.values(), key=lambda r: (ORDER.index(r.status), r.kind, r.capture))
    cap_w = min(max((len(r.capture) for r in rows), default=10), 70)
    head = f"{'capture':<{cap_w}}  {'oracle':<15} {'ours/oracle':>11}  {'verdict':<15} reason"
    out.append(head)
    out.append("-" * min(len(head) + 40, 200))
    folded = 0
    for r in rows:
        if not full and r.status == "pass" and r.capture.startswith(EVADER_PREFIX):
            folded += 1
            continue
        cap = r.capture if len(r.capture) <= cap_w else "..." + r.capture[-(cap_w - 3):]
        txs = f"{_n(r.ours)}/{_n(r.theirs)}"
        out.append(f"{cap:<{cap_w}}  {r.kind:<15} {txs:>11}  {LABEL[r.status]:<15} "
                   f"{_clip(r.reason, width) if not full else ' '.join(r.reason.split())}")
    if folded:
        out.append(f"{'suricata-verify/http-evader/* (' + str(folded) + ' more)':<{cap_w}}  "
                   f"{'suricata-verify':<15} {'':>11}  {'pass':<15} each decodes EICAR and "
                   f"matches its fileinfo/alert checks")
    out.append("")
    return out + summary_lines()


def summary_lines() -> list[str]:
    out = ["verdicts per oracle kind:"]
    by_kind = counts()
    for kind in sorted(by_kind):
        c = by_kind[kind]
        out.append(f"  {kind:<16} " + ", ".join(f"{LABEL[s]} {c[s]}" for s in ORDER if c[s]))
    total = collections.Counter()
    for c in by_kind.values():
        total.update(c)
    out.append(f"  {'all':<16} " + ", ".join(f"{LABEL[s]} {total[s]}" for s in ORDER if total[s]))
    good, n, bad = evader_summary()
    if n:
        out.append(f"http-evader: {good} of {n} captures decode to a body containing the EICAR "
                   f"string; not decoded: {', '.join(bad) if bad else 'none'}")
    return out


def markdown() -> str:
    rows = sorted(ROWS.values(), key=lambda r: (ORDER.index(r.status), r.kind, r.capture))
    out = ["| capture | oracle | ours/oracle | verdict | reason |", "|---|---|---|---|---|"]
    for r in rows:
        reason = " ".join(r.reason.split()).replace("|", "\\|")
        out.append(f"| `{r.capture}` | {r.kind} | {_n(r.ours)}/{_n(r.theirs)} | "
                   f"{LABEL[r.status]} | {reason} |")
    out.append("")
    out += summary_lines()
    return "\n".join(out) + "\n"
