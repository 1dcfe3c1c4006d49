"""`leti report RUN_DIR`: rebuild report.md, report.html and the plots of a run or demo dir."""

from __future__ import annotations

import argparse
from pathlib import Path

from leti.report import build_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write report.md / report.html / plots for a run directory",
                       description="Reads a `leti run` or `leti sft` run directory, a `leti demo` directory, or a folder "
                       "of runs (up to two levels down; a textual and a binary arm of one config are compared "
                       "in comparisons.json), finished or not, and writes report.md, a self-contained "
                       "report.html and PNG plots into it.")
    p.add_argument("run_dir", type=Path, help="a run, a demo directory, or a folder of runs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = build_report(args.run_dir)
    print(f"report: {out} (and report.md, *.png beside it)")
    return 0
