"""What the hostile-program tests share (test_execution_hostile.py, test_execution_reporting.py):
a program that must pass after any hostile one, and a run that fails instead of hanging."""

from __future__ import annotations

from leti.execution import Executor, Program

CANARY = Program("def f(x):\n    return 2 * x\n", "assert f(21) == 42\n", id="canary")


def run_within(ex: Executor, programs: list[Program], timeout: float = 20.0) -> list:
    """Like ex.run, but a result that never comes fails the test instead of hanging it."""
    futures = [ex.submit(p) for p in programs]
    return [f.result(timeout=timeout) for f in futures]
