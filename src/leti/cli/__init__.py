"""`leti` command line: thin subcommands over the library. Each subcommand lives in its own module
with `register(subparsers)`; adding one is a new module and one line in `_COMMANDS`."""

from __future__ import annotations

import argparse
import importlib
import sys

from leti import __version__
from leti.errors import LetiError

# Module names under leti.cli; each defines register(subparsers) and sets a `func` default.
_COMMANDS = ["exec_cmd", "tasks_cmd", "evaluate_cmd", "run_cmd", "sft_cmd", "report_cmd", "demo_cmd"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leti", description="LeTI: learn from textual interactions.")
    parser.add_argument("--version", action="version", version=f"leti {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"leti.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LetiError as e:
        print(f"leti: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("leti: interrupted", file=sys.stderr)
        return 130
