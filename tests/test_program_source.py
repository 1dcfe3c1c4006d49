"""A program's own source is readable inside it, as in a script: inspect.getsource, linecache
and traceback.print_exc failed or showed no lines (the source was only in memory), so tests
checking a solution's source ("must be recursive") failed every sample. leti's feedback text
stays what it was: the interpreter's traceback of the script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from leti.execution import ExecutionConfig, Executor, Program, Status
from leti.feedback.traceback_text import format_feedback

# a form feed inside a literal: str.splitlines breaks the line there, the compiler does not
PROGRAM = ("import inspect, linecache, sys, traceback\n"
           "s = 'a\x0cb'\n"
           "def f(n):\n"
           "    if n == 0:\n"
           "        return 0\n"
           "    return 1 + f(n - 1)\n")
TESTS = ("assert 'return 1 + f(n - 1)' in inspect.getsource(f)\n"
         "print(inspect.getsource(f), end='')\n"
         "linecache.checkcache()\n"
         "print(repr(linecache.getline('main.py', 3)), repr(linecache.getline('main.py', 14)))\n"
         "try:\n"
         "    f(None)\n"
         "except TypeError:\n"
         "    traceback.print_exc(file=sys.stdout)\n"
         "assert f(2) == 3\n")


def _as_script(tmp_path: Path) -> subprocess.CompletedProcess:
    (tmp_path / "main.py").write_text(PROGRAM + TESTS)
    done = subprocess.run([sys.executable, "main.py"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    path = str(tmp_path / "main.py")  # the script's frames carry its absolute path
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.replace(path, "main.py"),
                                       done.stderr.replace(path, "main.py"))


@pytest.mark.parametrize("style", ["paper", "rich"])
def test_a_program_reads_its_source_as_a_script_does_and_feedback_is_the_scripts_traceback(tmp_path: Path,
                                                                                          style: str) -> None:
    script = _as_script(tmp_path)
    assert script.returncode == 1 and "def f(n):" in script.stdout and "    return 1 + f(n - 1)\n" in script.stdout
    with Executor(ExecutionConfig(workers=1, timeout_s=10.0, feedback_style=style)) as ex:
        r = ex.run([Program(PROGRAM, TESTS)])[0]
    assert r.status is Status.FAILED
    assert r.stdout == script.stdout
    carets = re.compile(r"^ *[~^]+ *\n", re.MULTILINE)  # 3.11+ marks the failing range; leti's text has no marks
    assert format_feedback(r) == carets.sub("", script.stderr).rstrip("\n")


def test_source_tests_pass_a_recursive_solution() -> None:
    tests = "import inspect\nassert 'return' in inspect.getsource(f)\nassert 'f(n - 1)' in inspect.getsource(f)\n"
    with Executor(ExecutionConfig(workers=1, timeout_s=10.0)) as ex:
        r = ex.run([Program(PROGRAM, tests)])[0]
    assert r.passed, r.feedback
