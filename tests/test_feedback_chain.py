"""Chained exceptions in feedback: an exception raised while another was handled (or `from`
another) shows the earlier traceback first, as `python main.py` prints it, trimmed to the
program's frames. Programs run through the real executor; the expected text is what CPython
itself prints for the same file, trimmed the way leti trims."""

from __future__ import annotations

import json

import pytest
from interpreter import cpython

from leti.execution import ExecutionConfig, Executor, Program, Status
from leti.execution.pool import TAMPERED, _program_record
from leti.execution.records import ChainedException, ExecutionResult, Frame
from leti.feedback.traceback_text import CAUSE_LINE, CONTEXT_LINE, format_feedback


@pytest.fixture(scope="module")
def run():
    with Executor(ExecutionConfig(timeout_s=5.0, workers=2)) as ex:
        yield lambda *sources: ex.run([Program(s) for s in sources])


CONTEXT = '''def first_repeated_char(s):
    try:
        return {}[s]
    except KeyError:
        return undefined_y
assert first_repeated_char("abcabc") == "a"
'''

CAUSE = '''def parse(text):
    try:
        return int(text)
    except ValueError as e:
        raise KeyError(text) from e
def check():
    raise RuntimeError("wrapped") from TypeError("never raised")
try:
    check()
except RuntimeError:
    parse("x1")
'''


def test_implicit_context_and_explicit_cause_read_as_cpython_prints_them(run, tmp_path):
    context, cause = run(CONTEXT, CAUSE)
    assert context.status is Status.FAILED and context.exception_type == "NameError"
    assert context.feedback == cpython(CONTEXT, tmp_path)
    assert context.feedback.startswith("Traceback (most recent call last):\n"
                                       '  File "main.py", line 3, in first_repeated_char\n'
                                       "    return {}[s]\nKeyError: 'abcabc'\n\n" + CONTEXT_LINE + "\n\n")
    # oldest first: TypeError (no traceback: never raised) -> RuntimeError -> ValueError -> KeyError
    assert [(c.exception_type, c.cause, c.has_traceback) for c in cause.chain] == [
        ("TypeError", True, False), ("RuntimeError", False, True), ("ValueError", True, True)]
    assert cause.feedback == cpython(CAUSE, tmp_path)
    assert cause.feedback.startswith("TypeError: never raised\n\n" + CAUSE_LINE + "\n\n")


FROM_NONE = '''def get(d, k):
    try:
        return d[k]
    except KeyError:
        raise LookupError(f"no {k}") from None
get({}, "a")
'''

LIBRARY = '''import json
def load(text):
    try:
        return json.loads(text)
    except ValueError as e:
        raise RuntimeError("bad config") from e
load("{")
'''


def test_from_none_shows_no_chain_and_library_frames_are_dropped(run, tmp_path):
    none, library = run(FROM_NONE, LIBRARY)
    assert none.chain == () and none.feedback == cpython(FROM_NONE, tmp_path)
    assert none.feedback.startswith("Traceback (most recent call last):\n  File \"main.py\", line 6")
    assert library.feedback == cpython(LIBRARY, tmp_path)
    (earlier,) = library.chain
    assert earlier.exception_printed == "json.decoder.JSONDecodeError" and earlier.cause
    assert earlier.frames == (Frame(4, "load", "return json.loads(text)"),)  # json's own frames dropped
    assert "json/" not in library.feedback and "decoder.py" not in library.feedback


CYCLE = '''try:
    raise ValueError("a")
except ValueError as a:
    try:
        raise KeyError("b")
    except KeyError as b:
        a.__context__ = b  # b's context is a: a cycle
        raise TypeError("c")
'''

# Properties named like the chain's slots: the interpreter reads the slots, and so must the worker.
HOSTILE = '''class Sneaky(Exception):
    @property
    def __cause__(self):
        return self
    @property
    def __context__(self):
        raise RuntimeError("boom")
    @property
    def __suppress_context__(self):
        return True
    @property
    def __traceback__(self):
        raise RuntimeError("no traceback")
class Inner(Sneaky):
    pass
def f():
    try:
        raise Inner("inner")
    except Inner:
        raise Sneaky("outer")
f()
'''


def test_cycles_and_hostile_exception_classes_read_as_cpython_prints_them(run, tmp_path):
    cycle, hostile = run(CYCLE, HOSTILE)
    assert [c.exception_type for c in cycle.chain] == ["ValueError", "KeyError"]
    assert cycle.feedback == cpython(CYCLE, tmp_path)
    assert hostile.status is Status.FAILED and hostile.exception_type == "Sneaky", hostile.feedback
    assert [(c.exception_type, c.message, c.cause) for c in hostile.chain] == [("Inner", "inner", False)]
    assert hostile.feedback == cpython(HOSTILE, tmp_path)


# Nine earlier exceptions, each 300 frames deep, then a final one 2000 deep: the worker keeps the
# 4 most recent, each with its last 100 frames (the final keeps 1000); the host must accept it.
LONG = '''import sys
sys.setrecursionlimit(5000)
def deep(n, i):
    if n == 0:
        raise ValueError(i)
    deep(n - 1, i)
def chain(i):
    try:
        deep(300, i)
    except ValueError:
        if i < 8:
            chain(i + 1)
        else:
            deep(2000, "last")
chain(0)
'''

LOOP = '''prev = KeyError(0)
for i in range(1, 100000):
    e = KeyError(i)
    e.__context__ = prev
    prev = e
raise prev
'''


def test_a_long_chain_is_capped_to_its_most_recent_exceptions(run):
    from leti.execution import pool, worker

    assert (pool._MAX_CHAIN, pool._MAX_CHAIN_FRAMES) == (worker.CHAIN_LIMIT, worker.CHAIN_FRAMES)
    long, loop = run(LONG, LOOP)
    assert long.status is Status.FAILED and long.message != TAMPERED and long.exception_type == "ValueError"
    assert len(long.frames) == 1000
    assert [c.message for c in long.chain] == ["5", "6", "7", "8"]
    assert all(len(c.frames) == 100 and c.frames[-1] == Frame(5, "deep", "raise ValueError(i)") for c in long.chain)
    text = long.feedback
    assert text.count(CONTEXT_LINE) == 4 and text.endswith("ValueError: last")
    assert loop.exception_type == "KeyError" and loop.message == "99999"
    assert [(c.message, c.has_traceback) for c in loop.chain] == [(str(i), False) for i in range(99995, 99999)]
    assert loop.feedback.startswith("KeyError: 99995\n\n" + CONTEXT_LINE)


def _forged(chain: object) -> str:
    return json.dumps({"kind": "exception", "type": "E", "message": "m", "frames": [], "chain": chain})


_GOOD = {"type": "K", "message": "k", "frames": [[1, "<module>", "x"]], "traceback": True, "cause": False}


@pytest.mark.parametrize("chain", [
    {}, [[]], [{**_GOOD, "cause": "yes"}], [{**_GOOD, "traceback": 1}], [{k: v for k, v in _GOOD.items() if k != "cause"}],
    [{**_GOOD, "type": None}], [{**_GOOD, "message": 3}], [{**_GOOD, "frames": [[1, "f"]]}],
    [{**_GOOD, "frames": [[1, "f", "x"]] * 101}], [_GOOD] * 5, [{**_GOOD, "extra": 1}],
])
def test_a_record_with_a_malformed_chain_is_refused(chain):
    assert _program_record(_forged(chain)) is None
    assert _program_record(_forged([_GOOD] * 4)) is not None


def test_a_forged_malformed_chain_through_the_executor_is_tampered(run):
    def writes(record: str) -> str:
        return f"import os\nos.write(3, {record.encode()!r})\nos._exit(0)\n"

    bad, good = run(writes(_forged([{**_GOOD, "cause": "yes"}])), writes(_forged([_GOOD])))
    assert bad.status is Status.FAILED and bad.message == TAMPERED and bad.chain == ()
    assert good.chain == (ChainedException("K", message="k", frames=(Frame(1, "<module>", "x"),)),)


def test_a_result_with_a_chain_round_trips_and_old_results_still_read(run):
    (r,) = run(CAUSE)
    assert r.chain
    stored = json.loads(json.dumps(r.to_dict()))
    assert ExecutionResult.from_dict(stored) == r
    old = {k: v for k, v in stored.items() if k != "chain"}  # written before chains were reported
    assert ExecutionResult.from_dict(old) == ExecutionResult.from_dict({**stored, "chain": []})
    assert ExecutionResult.from_dict(old).chain == ()
    # a field a later leti adds to chain entries is ignored, as ExecutionResult's own are
    newer = {**stored, "chain": [{**c, "later_field": 1} for c in stored["chain"]]}
    assert ExecutionResult.from_dict(newer) == r


def test_a_syntax_error_raised_while_handling_another_keeps_the_chain(run, tmp_path):
    source = 'try:\n    1 / 0\nexcept ZeroDivisionError:\n    raise SyntaxError("bad", ("main.py", 1, 1, "x"))\n'
    (r,) = run(source)
    text = format_feedback(r)
    assert text.startswith("Traceback (most recent call last):\n") and "ZeroDivisionError: division by zero" in text
    assert CONTEXT_LINE in text and text.endswith("SyntaxError: bad")


ASSERTS = '''def check(x):
    try:
        assert x == 1
    except AssertionError:
        assert x * 2 == 5, "twice"
check(3)
'''


def test_rich_style_shows_the_final_asserts_operands_only(tmp_path):
    with Executor(ExecutionConfig(timeout_s=5.0, workers=1, feedback_style="rich")) as ex:
        (r,) = ex.run([Program(ASSERTS)])
    paper = format_feedback(r, "paper")
    assert paper == cpython(ASSERTS, tmp_path) and paper.count("AssertionError") == 2
    assert r.feedback == format_feedback(r, "rich") == paper + "\nassert 6 == 5"


def test_an_eae_verdict_carries_no_stale_chain():
    from leti.tasks.base import Problem
    from leti.tasks.eae.judge import TAMPERED as EAE_TAMPERED
    from leti.tasks.eae.judge import judge_result

    earlier = ChainedException("KeyError", message="'k'", frames=(Frame(1, "<module>", "x"),))
    forged_pass = ExecutionResult(id=0, status=Status.PASSED, chain=(earlier,))
    verdict = judge_result(Problem("p", "", "", "test", meta={"roles": []}), Program("x = 1\n"), forged_pass)
    assert verdict.message == EAE_TAMPERED and verdict.chain == ()
    assert CONTEXT_LINE not in verdict.feedback


def test_a_record_too_large_because_of_its_chain_drops_its_oldest_exceptions():
    """A character outside the BMP takes 12 bytes in the record (a \\uXXXX pair): four earlier
    exceptions with the longest messages and notes, after a final one 1000 frames deep, exceed
    the cap; the oldest earlier exceptions go, the final one's frames stay."""
    from leti.execution import pool, worker

    text = "\U0001f600" * worker.MAX_MESSAGE
    earlier = [{"type": "KeyError", "message": f"{i}{text}", "notes": text, "traceback": True, "cause": False,
                "frames": [[2, "f" * 1500, "\u2603" * 1500]] * worker.CHAIN_FRAMES} for i in range(worker.CHAIN_LIMIT)]
    rec = {"kind": "exception", "type": "ValueError", "message": text, "notes": text, "chain": earlier,
           "frames": [[1, "g" * 1500, "\u2603" * 1500]] * worker.TRACEBACK_LIMIT}
    data = worker._encode_record(rec)
    assert len(data) <= pool._MAX_RESULT
    kept = pool._program_record(data.decode())
    assert kept is not None and 0 < len(kept["chain"]) < worker.CHAIN_LIMIT
    assert kept["chain"][-1]["message"].startswith(str(worker.CHAIN_LIMIT - 1))  # the most recent stay
    assert len(kept["frames"]) == worker.TRACEBACK_LIMIT
