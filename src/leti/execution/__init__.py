"""Sandboxed execution of model-written programs.

    from leti.execution import Executor, ExecutionConfig, Program
    with Executor(ExecutionConfig(timeout_s=5)) as ex:
        results = ex.run([Program("def f(): return 1", "assert f() == 1", id=0)])

`execute(programs, config)` is the one-shot form. Results come back in input order.
"""

from leti.execution.config import ExecutionConfig
from leti.execution.pool import Executor, SandboxUnavailable, execute
from leti.execution.records import ExecutionResult, Frame, Program, Status

__all__ = [
    "ExecutionConfig",
    "ExecutionResult",
    "Executor",
    "Frame",
    "Program",
    "SandboxUnavailable",
    "Status",
    "execute",
]
