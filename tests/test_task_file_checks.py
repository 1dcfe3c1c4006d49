"""jsonl: task files whose tests always end the program with an exit are refused when read: leti
counts any exit as a failure (even `sys.exit(0)`), so every program failed, the right ones too,
with feedback saying the tests had not finished. Exits that only run when a check fails stay
accepted, and pass a right program and fail a wrong one in the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leti.cli import main
from leti.errors import LetiError
from leti.execution import ExecutionConfig, Executor
from leti.tasks import get_task
from leti.tasks.jsonl import prompt_syntax_error

PROMPT = "def add(a, b):\n"
RIGHT, WRONG = "    return a + b\n", "    return a - b\n"
FIX = ("drop it: a program passes when it runs to the end (write `assert cond` instead of "
       "`sys.exit(0 if cond else 1)`)")


def _task_file(tmp_path: Path, rows: list[dict], name: str = "tasks.jsonl") -> Path:
    """A first line that is fine, then `rows` (ids p0, p1, ...; prompt PROMPT unless given)."""
    lines = [{"id": "ok", "prompt": PROMPT, "tests": "assert add(1, 2) == 3\n"}]
    lines += [{"id": f"p{i}", "prompt": PROMPT, **row} for i, row in enumerate(rows)]
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


ALWAYS_EXIT = [
    ("import sys\nsys.exit(0 if add(1, 2) == 3 else 1)\n", 2, "sys.exit(0 if add(1, 2) == 3 else 1)"),
    ("assert add(1, 2) == 3\nprint('ok')\nexit(0)\n", 3, "exit(0)"),
    ("assert add(1, 2) == 3\nquit()\n", 2, "quit()"),
    ("assert add(1, 2) == 3\nraise SystemExit(0)\n", 2, "raise SystemExit(0)"),
    ("assert add(1, 2) == 3\nraise SystemExit\n", 2, "raise SystemExit"),
    ("import os\nassert add(1, 2) == 3\nos._exit(0)\n", 3, "os._exit(0)"),
    ("import sys as s\nassert add(1, 2) == 3\ns.exit()\n", 3, "s.exit()"),
    ("from sys import exit\nassert add(1, 2) == 3\nexit(0)\n", 3, "exit(0)"),
    # the main guard is always true where the tests run
    ("import sys\nif __name__ == '__main__':\n    assert add(1, 2) == 3\n    sys.exit(0)\n", 4, "sys.exit(0)"),
]


@pytest.mark.parametrize(("tests", "line", "text"), ALWAYS_EXIT)
def test_tests_that_always_exit_are_refused_with_file_line_field_and_fix(tmp_path: Path, tests: str, line: int,
                                                                         text: str) -> None:
    path = _task_file(tmp_path, [{"tests": tests, "reference": RIGHT}])
    with pytest.raises(LetiError) as err:
        get_task(f"jsonl:{path}").problems()
    assert str(err.value) == (f"{path}:2: field 'tests' line {line} `{text}` always ends the program with an exit, "
                              "and leti counts an exit as a failure (even exit code 0), so every program would fail; "
                              + FIX)


CONDITIONAL_EXIT = [
    "import sys\nif add(1, 2) != 3:\n    sys.exit(1)\n",
    "import sys\ntry:\n    assert add(1, 2) == 3\nexcept AssertionError:\n    sys.exit(1)\n",
    "for a, b in [(1, 2), (3, 4)]:\n    if add(a, b) != a + b:\n        exit(1)\n",
    "def check():\n    if add(1, 2) != 3:\n        raise SystemExit(1)\n\ncheck()\n",
    "import os\nwith open(os.devnull) as f:\n    if add(1, 2) != 3:\n        os._exit(1)\n",
    # an `exit` of the tests' own is not the builtin
    "def exit(code):\n    assert code == 0\n\nexit(0 if add(1, 2) == 3 else 1)\n",
]


def test_only_exits_that_always_run_are_refused(tmp_path: Path) -> None:
    """Exits under a condition are checks: accepted, and they fail exactly the wrong program.
    The same tests with the exit moved to the top level are refused."""
    task = get_task(f"jsonl:{_task_file(tmp_path, [{'tests': t} for t in CONDITIONAL_EXIT])}")
    problems = task.problems()
    with Executor(ExecutionConfig(workers=2, timeout_s=10.0)) as ex:
        results = ex.run([task.build_program(p, body) for body in (RIGHT, WRONG) for p in problems])
    right, wrong = results[: len(problems)], results[len(problems):]
    assert [(p.id, r.feedback) for p, r in zip(problems, right, strict=True) if not r.passed] == []
    assert [p.id for p, r in zip(problems, wrong, strict=True) if r.passed] == []
    path = _task_file(tmp_path, [{"tests": "import sys\nok = add(1, 2) == 3\nsys.exit(0 if ok else 1)\n"}], "top.jsonl")
    with pytest.raises(LetiError, match=r":2: field 'tests' line 3 `sys.exit\(0 if ok else 1\)` always ends"):
        get_task(f"jsonl:{path}").problems()


# prompts the model completes into valid Python: no warning for them
PYTHON_PROMPTS = [
    "# Write a function add(a, b) returning their sum.\n" + PROMPT,
    PROMPT + '    """Return the sum of a and b.\n',  # ends inside the docstring
    PROMPT + "    '''Return the sum\n    of a and b.\n",
    PROMPT + "    return (a +\n",  # ends inside a bracket
    PROMPT + "    return a + \\\n",
    PROMPT + "    return a",  # ends inside a line
    "@staticmethod\n",
]


def test_a_prompt_that_is_not_python_is_warned_about_when_read(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Plain English on a prompt's complete line fails every sample with a SyntaxError on the
    prompt's own line: a one-line warning naming the first such problem, and the file still loads."""
    prose = "Write a Python function add(a, b) returning their sum.\n"
    rows = [{"prompt": p, "tests": "assert add(1, 2) == 3\n"} for p in PYTHON_PROMPTS]
    rows += [{"prompt": prose, "tests": "assert add(1, 2) == 3\n"},
             {"prompt": "import math\n" + prose + PROMPT, "tests": "assert add(1, 2) == 3\n"}]
    path = _task_file(tmp_path, rows)
    task = get_task(f"jsonl:{path}")
    problems = task.problems()
    assert len(problems) == len(rows) + 1
    first = len(PYTHON_PROMPTS) + 2  # its line in the file
    assert capsys.readouterr().err == (
        f"leti: warning: {path}:{first}: problem 'p{first - 2}': field 'prompt' is not Python on its line 1 "
        "(invalid syntax), and a program is prompt + completion + tests, so every sample of it would fail with "
        "that SyntaxError; write prose as a # comment or in a docstring (1 more problem in the file like it)\n")
    # what the warning says: the right body fails, on the prompt's line
    with Executor(ExecutionConfig(workers=1, timeout_s=10.0)) as ex:
        r = ex.run([task.build_program(problems[first - 1], RIGHT)])[0]
    assert not r.passed and r.exception_type == "SyntaxError" and 'line 1\n    Write a Python' in r.feedback


# A last line without its newline is the model's to finish: warned about only where no ending of
# that line can make it Python (the error lies before its last token, which the model may extend).
# Each was "no warning", then every sample failed with the SyntaxError.
PARTIAL_PROSE = [
    ("Write a python function add(a, b) that returns the sum of a and b.", 1, "invalid syntax"),
    ("Write a function add(a, b) returning their sum: ", 1, "invalid syntax"),
    ("import math\nGiven a list, return its sum.", 2, "invalid syntax"),
    ("Implement fib(n).", 1, "invalid syntax"),
    ('x = """doc\nends""" here then', 2, "invalid syntax"),
    ("Write a function that doesn\u2019t return None", 1, "invalid character '\u2019' (U+2019)"),
    ("x = 1\n    y", 2, "unexpected indent"),
]

# partial last lines a model can complete into Python: no warning for them
PARTIAL_PYTHON = [
    "def add(a, b", "x = [1, 2", "def f(x): return x +", 's = "abc', '"""docstring start', "# comment",
    PROMPT + "    return", PROMPT + '    """Add a and b', "@staticmethod", "class A(B", "x = 1 \\",
    "x = 1 if",  # ... y else 2: the error ("invalid syntax" at the last token) is the model's to fix
    "if x =",  # ... = 0: an error before the last token ("Maybe you meant '=='") the model fixes after it
    "def f(x=1, y",  # ... =2): "non-default argument follows default argument" without its ending
    "match x", "x = f(1)[", "x = foo(a)(b", 'print(f"Total: {total:.2f} items {n', "for i in range(10)",
    "x = 'it''s", "lambda x", "from math import", "   ", "",
]

# a program whose every prefix ends mid-line: the model could write the rest, so none is warned about
WHOLE = '''import math
from typing import Optional


@staticmethod
def add(a: int, b: int = 2, *args, key=None, **kw) -> Optional[int]:
    """Add a and b.

    >>> add(1, 2)
    3
    """
    total = a + b  # a comment, with words
    items = [x * 2 for x in range(10) if x % 2 == 0]
    table = {"a b": 1, 'c': [1, (2, 3)], **kw}
    label = f"{total:>4} of {len(items)!r} items" + r"\\d+" + 'it\\'s'
    if (n := len(items)) > 3 and not key:
        return lambda y, *, z=1: y + z
    elif total is None or total in (1, 2):
        raise ValueError("bad " "total") from None
    match table:
        case {"a b": 1, **rest}:
            pass
        case [first, *_] if first:
            pass
    with open(math.__file__) as f, open(f.name) as g:
        del f, g
    try:
        x = yield total
    except (TypeError, KeyError) as e:
        assert e, "message"
    finally:
        print(x, end="")
    return x if x else -total ** 2 // 3 @ total


class B(object, metaclass=type):
    async def go(self):
        async for item in self.items():
            await item
'''


@pytest.mark.parametrize(("prompt", "line", "message"), PARTIAL_PROSE)
def test_a_partial_last_line_that_no_ending_makes_python_is_found(prompt: str, line: int, message: str) -> None:
    assert prompt_syntax_error(prompt) == (line, message)
    assert prompt_syntax_error(prompt + "\n") == (line, message)  # as with its newline


@pytest.mark.parametrize("prompt", PARTIAL_PYTHON)
def test_a_partial_last_line_the_model_can_finish_is_not_warned_about(prompt: str) -> None:
    assert prompt_syntax_error(prompt) is None


def test_no_prefix_of_a_valid_program_is_warned_about() -> None:
    compile(WHOLE, "whole", "exec")
    cuts = [k for k in range(1, len(WHOLE)) if WHOLE[k - 1] != "\n"]
    assert [(k, WHOLE[:k].rsplit("\n", 1)[-1]) for k in cuts if prompt_syntax_error(WHOLE[:k]) is not None] == []


def test_a_one_line_prose_prompt_without_its_newline_is_warned_about(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The reviewer's file: `leti tasks show` printed no warning for the prompt without a newline."""
    path = tmp_path / "english.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": PARTIAL_PROSE[0][0], "tests": "assert add(1, 2) == 3",
                                "reference": "\ndef add(a, b):\n    return a + b\n"}) + "\n")
    assert main(["tasks", "show", f"jsonl:{path}"]) == 0
    assert capsys.readouterr().err == (
        f"leti: warning: {path}:1: problem 'a': field 'prompt' is not Python on its line 1 (invalid syntax), and a "
        "program is prompt + completion + tests, so every sample of it would fail with that SyntaxError; write prose "
        "as a # comment or in a docstring\n")
