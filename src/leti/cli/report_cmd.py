"""`leti report RUN_DIR`: rebuild report.md, report.html and the plots of a run or demo dir."""

from __future__ import annotations

import argparse
from pathlib import Path

from leti.report import build_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write report.md / report.html / plots for a run directory",
                       description="Reads a `leti run` or `leti demo` directory (finished or not) "
                       "and writes report.md, a self-contained report.html and PNG plots into it.")
    p.add_argument("run_dir", type=Path, help="the run (or demo) directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = build_report(args.run_dir)
    print(f"report: {out} (and report.md, *.png beside it)")
    return 0
