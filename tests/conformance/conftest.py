"""Prints the conformance table at the end of the run (and writes it where asked).

Set C2SCRIBE_CONFORMANCE_REPORT=/some/path.md to also get the full table as Markdown there;
nothing is written inside the repository.
"""
from __future__ import annotations

import os

import oracles
import conformance_table as report


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not report.ROWS:
        return
    tr = terminalreporter
    tr.section("c2scribe conformance with the upstream oracles")
    width = max(60, tr._tw.fullwidth - 130) if hasattr(tr, "_tw") else 100
    for line in report.lines(width=width):
        tr.write_line(line)
    path = os.environ.get(oracles.REPORT_ENV)
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(report.markdown())
        tr.write_line(f"(full table written to {path})")
