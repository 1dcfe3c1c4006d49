"""jsonl: tasks refuse tests that cannot fail (they made every program pass, and `leti tasks
validate` could not see it: the reference passed too), and keep accepting the usual test styles,
which pass a right program and fail a wrong one in the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leti.errors import LetiError
from leti.execution import ExecutionConfig, Executor
from leti.tasks import get_task

PROMPT = "def add(a, b):\n"
RIGHT, WRONG = "    return a + b\n", "    return a - b\n"


def _task_file(tmp_path: Path, rows: list[dict]) -> Path:
    """A first line that is fine, then `rows` (ids p0, p1, ...; prompt PROMPT unless given)."""
    lines = [{"id": "ok", "prompt": PROMPT, "tests": "assert add(1, 2) == 3\n"}]
    lines += [{"id": f"p{i}", "prompt": PROMPT, **row} for i, row in enumerate(rows)]
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


REFUSED = [
    ("# TODO: tests", "field 'tests' holds only comments, docstrings or `pass`, so every program would pass; "
                      "write checks such as `assert f(...) == ...`"),
    ("pass", "holds only comments, docstrings or `pass`"),
    ('"""add adds."""\n...\n', "holds only comments, docstrings or `pass`"),
    ("add(1, 2) == 3", "field 'tests' line 1 `add(1, 2) == 3` compares without assert, so its result is dropped "
                       "and every program would pass; write `assert add(1, 2) == 3`"),
    ("x = 1\nadd(1, 2) == 3\n", "line 2 `add(1, 2) == 3` compares without assert"),
    ("def check(candidate):\n    assert candidate(1, 2) == 3\n",
     "field 'tests' defines check() but never calls it, so every program would pass; add a last line "
     "`check(<the function under test>)`"),
    ("def test_add():\n    assert add(1, 2) == 3\n",
     "defines test_add() but never calls it (the tests run as a plain script; no test runner collects them), "
     "so every program would pass; add a last line `test_add()`"),
    ("import unittest\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(1, 2), 3)\n",
     "defines class T but never runs its checks"),
    ("import unittest\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(1, 2), 3)\n"
     "unittest.main()\n", "calls unittest.main(), which always ends in SystemExit, and leti counts an exit as a "
                          "failure, so every program would fail"),
    ("import unittest\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(1, 2), 3)\n"
     "unittest.main(exit=False)\n", "calls unittest.main(exit=False) without checking its result"),
    ("import doctest\ndoctest.testmod()\n", "field 'tests' has no assert or raise that runs (at top level or in "
                                            "a function the tests call), so every program would pass"),
    ("x = list(range(3))\nprint(x)\n", "has no assert or raise that runs"),  # builtins cannot fail here
    # set-up calls of library modules run whatever the program does: they hid a forgotten check(add)
    ("import random\nrandom.seed(0)\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n",
     "defines check() but never calls it"),
    ("import sys as s\nfrom math import sqrt\ns.setrecursionlimit(10 ** 4)\nsqrt(2)\n"
     "def test_add():\n    assert add(1, 2) == 3\n", "defines test_add() but never calls it"),
    # a checker that is only called from a function nobody calls
    ("def check(f):\n    assert f(1, 2) == 3\ndef run():\n    check(add)\n", "defines check() but never calls it"),
]


@pytest.mark.parametrize(("tests", "message"), REFUSED)
def test_tests_that_cannot_fail_are_refused_with_file_line_field_and_fix(tmp_path: Path, tests: str,
                                                                         message: str) -> None:
    path = _task_file(tmp_path, [{"tests": tests, "reference": WRONG}])
    with pytest.raises(LetiError) as err:
        get_task(f"jsonl:{path}").problems()
    text = str(err.value)
    assert text.startswith(f"{path}:2: field 'tests' ")
    assert message in text
    assert "\n" not in text


def test_an_uncalled_check_names_the_call_to_add_from_entry_point(tmp_path: Path) -> None:
    tests = "def check(candidate):\n    assert candidate(1, 2) == 3\n"
    path = _task_file(tmp_path, [{"tests": tests, "entry_point": "add"}])
    with pytest.raises(LetiError, match=r"add a last line `check\(add\)` \(HumanEval's tests need it"):
        get_task(f"jsonl:{path}").problems()


def test_smoke_tests_are_accepted_and_fail_a_program_that_raises(tmp_path: Path) -> None:
    """A call of anything but a builtin can raise, and a raise fails the program: `add(1, 2)`,
    `print(add(1, 2))`, a helper or a prompt-defined checker without assert, a loop calling each
    test_* function can all fail (they were refused as checking nothing)."""
    smoke = ["add(1, 2)\n", "print(add(1, 2))\n", "def helper():\n    return add(1, 2) == 3\nhelper()\n",
             "def test_add():\n    add(1, 2)\n\nfor name, fn in list(globals().items()):\n"
             "    if name.startswith('test_'):\n        fn()\n"]
    rows = [{"tests": t} for t in smoke]
    rows.append({"prompt": "def check(f):\n    return f(1, 2) == 3\n\n" + PROMPT, "tests": "check(add)\n"})
    task = get_task(f"jsonl:{_task_file(tmp_path, rows)}")
    problems = task.problems()[1:]
    raising = "    raise ValueError('no')\n"
    with Executor(ExecutionConfig(workers=2, timeout_s=10.0)) as ex:
        results = ex.run([task.build_program(p, b) for b in (RIGHT, raising) for p in problems])
    assert [r.passed for r in results] == [True] * len(problems) + [False] * len(problems)


ACCEPTED = [
    "assert add(1, 2) == 3\n",
    "assert add(1, 2) == 3, 'one and two'\nassert add(0, 0) == 0\n",
    "if add(1, 2) != 3:\n    raise ValueError('add(1, 2)')\n",
    "for a, b, c in [(1, 2, 3), (0, 5, 5)]:\n    assert add(a, b) == c\n",
    "def check(candidate):\n    assert candidate(1, 2) == 3\n\ncheck(add)\n",
    "def _one(a, b, want):\n    assert add(a, b) == want\n\ndef check():\n    _one(1, 2, 3)\n\ncheck()\n",
    "class Checker:\n    def run(self, f):\n        if f(1, 2) != 3:\n            raise AssertionError\n\nChecker().run(add)\n",
    "def test_add():\n    assert add(1, 2) == 3\n\nif __name__ == '__main__':\n    test_add()\n",
    "import sys\nif add(1, 2) != 3:\n    sys.exit(1)\n",
    "import unittest\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(1, 2), 3)\n\n"
    "assert unittest.main(exit=False).result.wasSuccessful()\n",
    "import doctest\nassert doctest.testmod().failed == 0\nassert add(1, 2) == 3\n",
    "ok = [add(a, b) == a + b for a, b in [(1, 2), (3, 4)]]\nassert all(ok)\n",
]
# checkers defined in the prompt (the tests run after prompt + completion)
PROMPT_CHECK = "def check(candidate):\n    assert candidate(1, 2) == 3\n\n\n" + PROMPT


def test_usual_test_styles_are_accepted_and_fail_a_wrong_program(tmp_path: Path) -> None:
    rows = [{"tests": t} for t in ACCEPTED] + [{"prompt": PROMPT_CHECK, "tests": "check(add)\n"},
                                               {"prompt": PROMPT_CHECK + '    """Add."""\n', "tests": "check(add)"}]
    task = get_task(f"jsonl:{_task_file(tmp_path, rows)}")
    problems = task.problems()
    assert len(problems) == len(rows) + 1
    programs = [task.build_program(p, body) for body in (RIGHT, WRONG) for p in problems]
    with Executor(ExecutionConfig(workers=2, timeout_s=10.0)) as ex:
        results = ex.run(programs)
    right, wrong = results[: len(problems)], results[len(problems):]
    assert [(p.id, r.feedback) for p, r in zip(problems, right, strict=True) if not r.passed] == []
    assert [p.id for p, r in zip(problems, wrong, strict=True) if r.passed] == []


def test_checks_by_name_and_prompts_that_do_not_parse_are_accepted(tmp_path: Path) -> None:
    rows = [
        {"tests": "import numpy as np\nnp.testing.assert_allclose(add(0.1, 0.2), 0.3)\n"},
        {"tests": "import pytest\nwith pytest.raises(TypeError):\n    add(1)\n"},
        {"tests": "self_test = object()\nif add(1, 2) != 3:\n    pytest.fail('add')\n"},
        # a prompt that is not Python for longer than the rule looks: a call it cannot resolve passes
        {"prompt": "x = (\n" + "1,\n" * 30 + PROMPT, "tests": "check(add)\n"},
    ]
    assert len(get_task(f"jsonl:{_task_file(tmp_path, rows)}").problems()) == len(rows) + 1
