"""Training text, byte for byte, on results from the real sandboxed executor."""

from __future__ import annotations

import pytest

from leti.execution import ExecutionConfig, Executor, Program
from leti.feedback.training_text import TrainingTextConfig, build_training_text, postprocess_hints

PROMPT = '"""\nWrite a function to add two numbers.\nassert add(1, 2) == 3\n"""\n'
TESTS = "assert add(1, 2) == 3\nassert add(2, 2) == 4"
COMPLETIONS = {
    "pass": "def add(a, b):\n    return a + b\n",
    "fail": "def add(a, b):\n    return a - b\n",
    "extra": "def add(a, b):\n    return a * b\n\nprint(add(1, 2))\n",
    "name": "def add(a, b):\n    return a + c\n",
    "noret": "def add(a, b):\n    a + b\n",
}
ASSERT_TB = 'Traceback (most recent call last):\n  File "main.py", line 8, in <module>\n    assert add(1, 2) == 3\nAssertionError'


@pytest.fixture(scope="module")
def results():
    # Program = prompt + completion + "\n" + tests, as Task.build_program and the spec build it.
    programs = [Program(PROMPT + c + "\n", TESTS, id=k) for k, c in COMPLETIONS.items()]
    with Executor(ExecutionConfig(workers=2)) as ex:
        return {r.id: r for r in ex.run(programs)}


def text(results, key: str, **cfg) -> str:
    return build_training_text(PROMPT, COMPLETIONS[key], results[key], TrainingTextConfig(**cfg), eos_token="<|endoftext|>")


def test_full_leti_text(results):
    assert results["pass"].passed and not results["fail"].passed
    assert text(results, "pass") == (
        '<|good|>"""\nWrite a function to add two numbers.\nassert add(1, 2) == 3\n"""\n'
        "def add(a, b):\n    return a + b\n"
    )
    assert text(results, "fail") == (
        "<|bad|><|lang_feedback|>"
        'Traceback (most recent call last):\n  File "main.py", line 8, in <module>\n    assert add(1, 2) == 3\nAssertionError'
        "<|/lang_feedback|>"
        '"""\nWrite a function to add two numbers.\nassert add(1, 2) == 3\n"""\n'
        "def add(a, b):\n    return a - b\n"
    )


def test_binary_only_drops_feedback_span(results):
    assert text(results, "pass", textual_feedback=False) == "<|good|>" + PROMPT + COMPLETIONS["pass"]
    assert text(results, "fail", textual_feedback=False) == "<|bad|>" + PROMPT + COMPLETIONS["fail"]


def test_constant_feedback_keeps_the_span_without_the_information(results):
    assert text(results, "pass", feedback_content="constant") == text(results, "pass")
    assert text(results, "fail", feedback_content="constant") == (
        "<|bad|><|lang_feedback|>The program failed.<|/lang_feedback|>" + PROMPT + COMPLETIONS["fail"])
    with pytest.raises(ValueError, match="turn one of them off"):
        TrainingTextConfig(feedback_content="constant", textual_feedback=False)


@pytest.mark.parametrize("without", [{"textual_feedback": False}, {"feedback_content": "constant"}])
def test_hints_without_the_execution_feedback_are_refused(without):
    """The hints extend the execution feedback: with no such span they would be dropped silently."""
    with pytest.raises(ValueError, match="postprocess_hints.*turn one of them off"):
        TrainingTextConfig(postprocess_hints=True, **without)


def test_no_reward_token(results):
    assert text(results, "pass", reward_token=False) == PROMPT + COMPLETIONS["pass"]
    assert text(results, "fail", reward_token=False) == (
        "<|lang_feedback|>" + ASSERT_TB + "<|/lang_feedback|>" + PROMPT + COMPLETIONS["fail"]
    )


def test_append_eos(results):
    assert text(results, "pass", append_eos=True) == "<|good|>" + PROMPT + COMPLETIONS["pass"] + "<|endoftext|>"
    assert text(results, "fail", append_eos=True, textual_feedback=False).endswith("return a - b\n<|endoftext|>")
    with pytest.raises(ValueError, match="eos_token"):
        build_training_text(PROMPT, "x", results["pass"], TrainingTextConfig(append_eos=True))


def test_postprocess_hints(results):
    extra = text(results, "extra", postprocess_hints=True)
    assert extra == (
        "<|bad|><|lang_feedback|>" + ASSERT_TB.replace("line 8", "line 10")
        + "\nHint: only the first function is needed to solve the problem; stop writing code after it."
        + "<|/lang_feedback|>" + PROMPT + COMPLETIONS["extra"]
    )
    assert postprocess_hints(COMPLETIONS["name"], results["name"]) == [
        "Hint: 'c' is used but never defined or imported; define or import it before use."
    ]
    assert postprocess_hints(COMPLETIONS["noret"], results["noret"]) == [
        "Hint: the function has no return statement, so it returns None; return the result."
    ]
    # A plain wrong answer matches no rule, and passing samples never get hints.
    assert postprocess_hints(COMPLETIONS["fail"], results["fail"]) == []
    assert text(results, "pass", postprocess_hints=True) == "<|good|>" + PROMPT + COMPLETIONS["pass"]
    # Hints off (the default) leaves the feedback as the executor wrote it.
    assert "Hint" not in text(results, "extra")


def test_bad_style_rejected():
    with pytest.raises(ValueError, match="feedback_style"):
        TrainingTextConfig(feedback_style="verbose")


def test_keep_failures_off_trains_on_passing_samples_only(results):
    from leti.config import load_config
    from leti.loop.stages import training_texts
    from leti.tasks.base import Problem

    problems = [Problem(id="add", prompt=PROMPT, tests=TESTS, split="train")]
    records = {("add", i): {"completion": COMPLETIONS[key], **results[key].to_dict()}
               for i, key in enumerate(["fail", "pass", "name"])}
    every = training_texts(records, problems, load_config(None), "")
    assert [t[:8] for t in every] == ["<|bad|><", "<|good|>", "<|bad|><"]
    passing = training_texts(records, problems, load_config(None, ["training_text.keep_failures=false"]), "")
    assert passing == [every[1]]
