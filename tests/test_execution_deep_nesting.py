"""Valid Python too deeply nested for CPython's compiler: `compile()` raises RecursionError
("maximum recursion depth exceeded during compilation"), or on some inputs MemoryError (the
parser's stack). The worker let it escape, its child exited without a record, and the result
read "Exit: the program exited before the tests finished." It is a program that did not compile,
reported in the interpreter's words, as a SyntaxError is."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hostile import CANARY, run_within

from leti.execution import ExecutionConfig, Executor, Program, Status

DEEP = {
    "unary-minus": ("def f():\n    return " + "-" * 3000 + "1\n", "assert f() in (1, -1)\n"),
    "long-sum": ("a = 1\ndef f():\n    return " + " + ".join(["a"] * 3000) + "\n", "assert f() == 3000\n"),
    "not-chain": ("def f():\n    return " + "not " * 3000 + "True\n", "assert f() is True\n"),
    # the deep expression in the task's tests, which run as part of the same module
    "in-tests": ("def f():\n    return 1\n", "assert f() == " + "-" * 3000 + "1\n"),
    # deeper still: the parser's own stack (a bare MemoryError on 3.11)
    "parser-stack": ("def f():\n    return " + "-" * 100000 + "1\n", "assert f() in (1, -1)\n"),
}


@pytest.fixture(scope="module")
def ex():
    with Executor(ExecutionConfig(timeout_s=10.0, workers=1)) as executor:
        yield executor


def _script_error(source: str, tmp_path) -> str:
    """The last line `python main.py` writes to stderr for `source`."""
    path = tmp_path / "main.py"
    path.write_text(source)
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("name", list(DEEP))
def test_a_program_too_deep_to_compile_is_invalid_in_the_interpreters_words(ex, name, tmp_path):
    program = Program(*DEEP[name], id=name)
    try:
        compile(program.source, "main.py", "exec")
    except (RecursionError, MemoryError):
        pass
    else:  # Python 3.13 compiles the 3000-deep ones
        pytest.skip(f"Python {sys.version.split()[0]} compiles {name}")
    r = run_within(ex, [program], timeout=60.0)[0]
    assert r.status is Status.INVALID, (r.status, r.feedback)
    assert r.exception_type in ("RecursionError", "MemoryError"), (r.exception_type, r.feedback)
    assert not r.exited_early
    assert "exited" not in r.feedback, r.feedback
    # what the interpreter prints for the same file run as a script
    assert r.feedback == _script_error(program.source, tmp_path), r.feedback
    assert run_within(ex, [CANARY])[0].passed
