"""Training text, byte for byte, on results from the real sandboxed executor."""

from __future__ import annotations

import pytest

from leti.execution import ExecutionConfig, Executor, Program
from leti.execution.records import ExecutionResult, Status
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


# --- hint rules, one failure pattern each, on real sandbox results ----------------------------

HINT_EXTRA = "Hint: only the first function is needed to solve the problem; stop writing code after it."
HINT_RETURN = "Hint: the function has no return statement, so it returns None; return the result."
HINT_TIMEOUT = "Hint: the program did not finish in time; look for a loop that never ends."
HINT_MODULE = "Hint: only the Python standard library is available; do not import other packages."

HINT_CASES = {
    # name: (completion, tests, the hints the rules give)
    "comment_after": ("def add(a, b):\n    return a - b\n# end of add\n", TESTS, []),  # a comment is not more code
    "second_def": ("def add(a, b):\n    return a - b\n\ndef sub(a, b):\n    return a - b\n", TESTS, [HINT_EXTRA]),
    "async_then_call": ("async def add(a, b):\n    return a + b\nadd(1, 2)\n", TESTS, [HINT_EXTRA]),
    "generator": ("def add(a, b):\n    yield a + b\n", TESTS, []),  # yields a value: not a missing return
    "bare_return": ("def add(a, b):\n    if a:\n        return\n    a + b\n", TESTS, [HINT_RETURN]),
    "none_operand": ("def add(a, b):\n    a + b\n", "assert add(1, 2) + 0 == 3\n", [HINT_RETURN]),  # TypeError on None
    "first_function_only": ("def helper(a, b):\n    a + b\n\ndef add(a, b):\n    return helper(a, b)\n", TESTS,
                            [HINT_EXTRA, HINT_RETURN]),
    # A string literal whose lines start at column 0 is not code after the function.
    "string_at_column_0": ('def add(a, b):\n    s = """a\nb"""\n    return a - b\n', TESTS, []),
    # The nested helper's return is not the function's.
    "nested_return": ("def add(a, b):\n    def g():\n        return a + b\n    g()\n", TESTS, [HINT_RETURN]),
    "no_function": ("add = lambda a, b: a - b\n", TESTS, []),
    "endless": ("def add(a, b):\n    while True:\n        pass\n", TESTS, [HINT_TIMEOUT]),
    "import_error": ("from os import no_such_name\ndef add(a, b):\n    return a + b\n", TESTS, [HINT_MODULE]),
    "module_missing": ("import no_such_module_here\ndef add(a, b):\n    return a + b\n", TESTS, [HINT_MODULE]),
    "passes_with_extra_code": ("def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n", TESTS, []),  # passing: none
}


@pytest.fixture(scope="module")
def hint_results():
    programs = [Program(PROMPT + c + "\n", tests, id=k) for k, (c, tests, _) in HINT_CASES.items()]
    with Executor(ExecutionConfig(workers=2, timeout_s=1.0)) as ex:
        return {r.id: r for r in ex.run(programs)}


@pytest.mark.parametrize("case", list(HINT_CASES))
def test_each_hint_rule_fires_on_its_failure_pattern_only(hint_results, case):
    completion, _, expected = HINT_CASES[case]
    result = hint_results[case]
    assert result.passed is (case == "passes_with_extra_code")
    assert postprocess_hints(completion, result) == expected
    if not result.passed:  # appended to the executor's feedback, each on its own line
        span = build_training_text(PROMPT, completion, result, TrainingTextConfig(postprocess_hints=True))
        assert span == ("<|bad|><|lang_feedback|>" + "\n".join([result.feedback.rstrip(), *expected])
                        + "<|/lang_feedback|>" + PROMPT + completion)


def test_undefined_name_hint_needs_the_message():
    """A NameError record without a message (built by hand) has no name to quote: no hint, no crash."""
    r = ExecutionResult(id=0, status=Status.FAILED, exception_type="NameError", feedback="NameError")
    assert postprocess_hints("x = y\n", r) == []


def test_a_failure_without_feedback_still_gets_a_non_empty_span():
    r = ExecutionResult(id=0, status=Status.FAILED)
    assert build_training_text("P\n", "C", r, TrainingTextConfig()) == (
        "<|bad|><|lang_feedback|>The program failed (failed).<|/lang_feedback|>P\nC")


def test_the_stop_hint_names_the_tokenizers_end_of_text():
    """The authors' sentence asks for the model's own end-of-text string; CodeGen's when none is given."""
    r = ExecutionResult(id=0, status=Status.PASSED)
    cfg = TrainingTextConfig(stop_hint=True)
    assert build_training_text("P\n", "C", r, cfg, eos_token="</s>", cut_off="\nprint(1)").endswith(
        "starts with [print(1)]. Try to use </s> to end your code.<|/lang_feedback|>P\nC")
    assert build_training_text("P\n", "C", r, cfg, cut_off="\nprint(1)").endswith(
        "Try to use <|endoftext|> to end your code.<|/lang_feedback|>P\nC")
