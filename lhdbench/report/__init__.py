"""The leaderboard report: tables, ranks, statistics and plots from a results store.

It reads only the store (records and plan), never the trials' working folders or Ray's files, so a
report can be regenerated anywhere the store is copied to.

    from lhdbench.report import build_report, write_report
    report = build_report("runs/paper", metric="final")
    write_report(report, "results/paper", formats=("md", "csv", "tex", "png", "pdf"))

Cell drawings of a genotype (matplotlib only): `lhdbench.report.cells.draw_genotype`; the
`lhdbench arch draw` command's handler: `lhdbench.report.arch_draw.arch_draw`.
"""

from __future__ import annotations

from typing import Any

from .options import FORMATS, METRICS

__all__ = ["FORMATS", "METRICS", "Report", "ReportError", "build_report", "write_report"]


def __getattr__(name: str) -> Any:
    # pandas, scipy and matplotlib load only when a report is built, not when the CLI parses arguments.
    if name in ("build_report", "write_report"):
        from . import build

        return getattr(build, name)
    if name == "Report":
        from .summary import Report

        return Report
    if name == "ReportError":
        from .load import ReportError

        return ReportError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
