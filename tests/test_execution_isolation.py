"""What one program leaves in its worker must not change a later program's verdict: processes
still dying, extended attributes on the directories cleaning keeps, limits that fire early, state
the harness keeps alive or frames it takes from the program, and gold data of a dependency."""

from __future__ import annotations

import pytest
from hostile import CANARY, run_within

from leti.execution import ExecutionConfig, Executor, Program, Status


@pytest.fixture(scope="module")
def ex():
    with Executor(ExecutionConfig(timeout_s=5.0, workers=1)) as executor:
        yield executor


# Many children that close their pipes (so the zygote's drain ends) and sleep until killed.
SLEEPERS = """import os, time
for i in range(200):
    if os.fork() == 0:
        os.closerange(0, 2048)
        time.sleep(100)
        os._exit(0)
"""
# A plain program that needs most of the worker's pids budget (max_processes 256).
FORKS = """import os
kids = []
for i in range(200):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    kids.append(pid)
for k in kids:
    os.waitpid(k, 0)
"""


def test_processes_a_program_left_do_not_hold_the_next_ones_pids(ex):
    """The killed sleepers were still dying or unreaped when the next program started, and its
    fork failed with BlockingIOError."""
    results = run_within(ex, [Program(SLEEPERS), Program(FORKS)] * 3, timeout=60)
    assert [r.status for r in results[1::2]] == [Status.PASSED] * 3, [r.feedback for r in results[1::2]]
    assert run_within(ex, [CANARY])[0].passed
