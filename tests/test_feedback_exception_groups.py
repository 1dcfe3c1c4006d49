"""Exception groups (3.11+) in feedback: an uncaught ExceptionGroup shows its members in the
interpreter's boxes, not only "ExceptionGroup: many (2 sub-exceptions)". Programs run through the
real executor; the expected text is what CPython itself prints for the same file, trimmed the way
leti trims every traceback: only frames of main.py, no caret lines. Inside a group that trimming
keeps each line's margin ("    | "), so those are the only differences from `python main.py`.
Bounds past the interpreter's own (GROUP_LIMIT exceptions described in all) are checked apart."""

from __future__ import annotations

import json
import sys
import time

import pytest
from interpreter import cpython

from leti.execution import ExecutionConfig, Executor, Program, Status
from leti.execution.pool import TAMPERED, _program_record
from leti.execution.records import ExceptionGroupMembers, ExecutionResult, GroupMember
from leti.feedback.traceback_text import format_feedback

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are new in 3.11")


@pytest.fixture(scope="module")
def run():
    with Executor(ExecutionConfig(timeout_s=10.0, workers=2)) as ex:
        yield lambda *sources: ex.run([Program(s) for s in sources])


FLAT = '''def check():
    raise ExceptionGroup("many", [ValueError(1), TypeError(2)])
check()
'''

# Members raised in the program's functions, one with an explicit cause, a nested group (raised,
# so with a traceback), one never raised, and the whole group raised while handling a KeyError.
NESTED = '''def f(x):
    raise ValueError(x)
def g():
    try:
        f(1)
    except ValueError as e:
        raise KeyError("k") from e
excs = []
for fn in (lambda: f(2), g):
    try:
        fn()
    except Exception as e:
        excs.append(e)
inner = ExceptionGroup("inner", [TypeError(3), ZeroDivisionError("z")])
try:
    raise inner
except ExceptionGroup as e:
    excs.append(e)
excs.append(BaseExceptionGroup("never raised", [KeyboardInterrupt(4)]))
try:
    {}["x"]
except KeyError:
    raise BaseExceptionGroup("many", excs)
'''

# Wider than max_group_width (15) at the top, nested deeper than max_group_depth (10) in its last member.
WIDE_AND_DEEP = '''g = ValueError(0)
for i in range(12):
    g = ExceptionGroup(f"d{i}", [g, KeyError(i)] if i % 2 else [KeyError(i), g])
raise ExceptionGroup("wide", [ValueError(i) for i in range(17)] + [g])
'''

TASKGROUP = '''import asyncio
async def fetch(i):
    await asyncio.sleep(0)
    if i % 2:
        raise ValueError(f"bad {i}")
    return i
async def main():
    async with asyncio.TaskGroup() as tg:
        for i in range(4):
            tg.create_task(fetch(i))
asyncio.run(main())
'''

# A multi-line message continues without the margin in the printer of 3.11 and 3.12; notes get it.
# 3.13's (traceback.py) puts the margin on every line: the record says which one ran the program.
NOTES = '''e = ValueError("line1\\nline2")
e.add_note("note1\\nnote2")
g = ExceptionGroup("two\\nlines", [e, KeyError("a")])
g.add_note("group note")
raise g
'''

# A group handled, then another exception raised: the group is printed in the chain.
IN_CHAIN = '''def run():
    try:
        raise ExceptionGroup("batch", [ValueError("v"), OSError("o")])
    except* ValueError:
        pass
try:
    run()
except ExceptionGroup as eg:
    raise RuntimeError("after the batch") from eg
'''

# A member whose chain leads to another member already printed: the interpreter skips it there.
SEEN = '''a = ValueError("first")
try:
    raise a
except ValueError:
    try:
        raise TypeError("second")
    except TypeError as b:
        raise ExceptionGroup("g", [a, b])
'''

# Two members raised while handling one KeyError: it is printed with one of them only. 3.11 and
# 3.12 print it with the first (in print order), 3.13 with the last (TracebackException builds the
# tree before printing, from a stack: the last member's chain first).
SHARED_CONTEXT = '''c = KeyError("shared")
excs = []
for i in range(2):
    try:
        try:
            raise c
        except KeyError:
            raise ValueError(i)
    except ValueError as e:
        excs.append(e)
raise ExceptionGroup("g", excs)
'''

# The subclass lies about its members and its class: what is printed is the group's own slot.
LIAR = '''class Liar(ExceptionGroup):
    exceptions = property(lambda self: 1 / 0)
    __class__ = property(lambda self: int)
raise Liar("liar", [ValueError("real")])
'''


@pytest.mark.parametrize("source", [FLAT, NESTED, WIDE_AND_DEEP, TASKGROUP, NOTES, IN_CHAIN, SEEN, SHARED_CONTEXT, LIAR],
                         ids=["flat", "nested", "wide_and_deep", "taskgroup", "notes", "in_chain", "seen",
                              "shared_context", "liar"])
def test_a_group_reads_as_cpython_prints_it(run, tmp_path, source):
    if source is LIAR and sys.version_info >= (3, 13):
        pytest.skip("3.13 prints the liar through its fallback: test_a_lying_group_keeps_its_members")
    (r,) = run(source)
    assert r.status is Status.FAILED
    assert r.feedback == cpython(source, tmp_path)


def test_a_lying_group_keeps_its_members(run, tmp_path):
    """Deliberately not the interpreter's text on 3.13+. Its printer (traceback.py) reads the
    subclass's own `exceptions`, which raises here; the interpreter then falls back to a C printer
    that shows no group at all (no members, "Traceback" for the header). Copying that would let a
    program hide every member of its groups from the feedback by one property (and run its own
    code while being reported): the worker reads members through BaseExceptionGroup's slot, on
    every version, and shows them as 3.11 and 3.12 do."""
    (r,) = run(LIAR)
    assert r.feedback == "\n".join([
        "  + Exception Group Traceback (most recent call last):", '  |   File "main.py", line 4, in <module>',
        '  |     raise Liar("liar", [ValueError("real")])', "  | Liar: liar (1 sub-exception)",
        "  +-+---------------- 1 ----------------", "    | ValueError: real",
        "    +------------------------------------"])
    printed = cpython(LIAR, tmp_path)
    if sys.version_info >= (3, 13):  # the fallback's text: what leti does not copy
        assert printed.startswith("Traceback (most recent call last):") and "sub-exception)" in printed
        assert "ValueError: real" not in printed
    else:
        assert r.feedback == printed


def test_the_margin_follows_the_interpreter_that_ran_the_program():
    """A stored result may be formatted by another interpreter than the one that ran it: the
    margin on a multi-line message follows the record (3.13+ writes margined), not this one."""
    def printed(margined: bool) -> list[str]:
        member = GroupMember(exception_type="ValueError", message="a\nb", notes="n", has_traceback=False)
        r = ExecutionResult(id=0, status=Status.FAILED, exception_type="ExceptionGroup", message="g\nh (1 sub-exception)",
                            group=ExceptionGroupMembers(total=1, members=(member,), margined=margined))
        return format_feedback(ExecutionResult.from_dict(json.loads(json.dumps(r.to_dict())))).split("\n")

    assert printed(False)[1:6] == ["  | ExceptionGroup: g", "h (1 sub-exception)", "  +-+---------------- 1 ----------------",
                                   "    | ValueError: a", "b"]
    assert printed(True)[1:6] == ["  | ExceptionGroup: g", "  | h (1 sub-exception)",
                                  "  +-+---------------- 1 ----------------", "    | ValueError: a", "    | b"]
    assert printed(True)[6] == "    | n"


def test_the_members_are_in_the_result(run):
    flat, nested = run(FLAT, NESTED)
    assert flat.exception_type == "ExceptionGroup" and flat.message == "many (2 sub-exceptions)"
    assert flat.group.total == 2
    assert [(m.exception_type, m.message, m.has_traceback) for m in flat.group.members] == [
        ("ValueError", "1", False), ("TypeError", "2", False)]
    assert flat.feedback.endswith("    | TypeError: 2\n    +------------------------------------")
    second = nested.group.members[1]
    assert [(c.exception_type, c.cause) for c in second.chain] == [("ValueError", True)]
    assert [m.exception_type for m in nested.group.members[2].group.members] == ["TypeError", "ZeroDivisionError"]


def test_a_hostile_group_stays_bounded(run, tmp_path):
    """10,000 members: 15 shown, as the interpreter shows them. One exception 15 times a level,
    10 levels deep, is 15**10 entries the interpreter would print (for hours): leti describes at
    most GROUP_LIMIT and says how many more each group had."""
    from leti.execution import worker

    wide = 'raise ExceptionGroup("huge", [ValueError(i) for i in range(10000)])\n'
    shared = ('e = ValueError("same")\nfor i in range(12):\n    e = ExceptionGroup(f"level {i}", [e] * 15)\n'
              'raise e\n')
    start = time.monotonic()
    huge, deep = run(wide, shared)
    assert time.monotonic() - start < 30
    assert huge.feedback == cpython(wide, tmp_path)
    assert huge.group.total == 10000 and len(huge.group.members) == 15
    assert huge.feedback.endswith("    | and 9985 more exceptions\n    +------------------------------------")

    def count(group) -> int:
        return sum(1 + len(m.chain) + (count(m.group) if m.group else 0) for m in group.members)

    assert count(deep.group) == worker.GROUP_LIMIT
    assert len(json.dumps(deep.to_dict())) < 200_000
    assert "and 14 more exceptions" in deep.feedback and deep.feedback.startswith("  + Exception Group Traceback")
    assert len(format_feedback(deep, max_bytes=10**7).splitlines()) < 1000


def test_a_record_too_large_because_of_its_group_drops_the_members():
    from leti.execution import pool, worker

    text = "\U0001f600" * worker.MAX_MESSAGE
    member = {"type": "KeyError", "message": text, "notes": text, "traceback": True,
              "frames": [[2, "f" * 1500, "\u2603" * 1500]] * worker.CHAIN_FRAMES}
    rec = {"kind": "exception", "type": "ExceptionGroup", "message": "g (15 sub-exceptions)", "frames": [],
           "group": {"total": 15, "members": [dict(member) for _ in range(15)]}}
    data = worker._encode_record(rec)
    assert len(data) <= pool._MAX_RESULT
    kept = pool._program_record(data.decode())
    assert kept is not None and kept["group"] == {"total": 15, "members": []}


def test_a_result_with_a_group_round_trips_and_old_results_still_read(run):
    (r,) = run(NESTED)
    stored = json.loads(json.dumps(r.to_dict()))
    assert ExecutionResult.from_dict(stored) == r
    assert format_feedback(ExecutionResult.from_dict(stored)) == r.feedback
    old = {k: v for k, v in stored.items() if k != "group"}  # written before groups were reported
    assert ExecutionResult.from_dict(old).group is None


def _forged(group: object, where: str = "top") -> str:
    rec = {"kind": "exception", "type": "ExceptionGroup", "message": "m", "frames": []}
    if where == "top":
        rec["group"] = group
    else:
        rec["chain"] = [{"type": "E", "message": "e", "frames": [], "traceback": True, "cause": False,
                         "group": group}]
    return json.dumps(rec)


_MEMBER = {"type": "K", "message": "k", "frames": [[1, "<module>", "x"]], "traceback": True}
_GOOD = {"total": 2, "members": [_MEMBER, _MEMBER]}


def _nested(depth: int) -> dict:
    group = {"total": 1, "members": [_MEMBER]}
    for _ in range(depth):
        group = {"total": 1, "members": [{**_MEMBER, "group": group}]}
    return group


@pytest.mark.parametrize("group", [
    None, [], {"members": []}, {"total": 0, "members": []}, {"total": True, "members": []},
    {"total": 1, "members": [_MEMBER, _MEMBER]}, {"total": 20, "members": [_MEMBER] * 16},
    {"total": 2, "members": [{**_MEMBER, "traceback": 1}]}, {"total": 1, "members": [{**_MEMBER, "extra": 1}]},
    {"total": 1, "members": [{**_MEMBER, "frames": [[1, "f"]]}]}, {"total": 1, "members": [{**_MEMBER, "type": 3}]},
    {"total": 1, "members": [{**_MEMBER, "chain": [{"type": "E"}]}]}, {"total": 1, "members": [{**_MEMBER, "group": []}]},
    {"total": 10**30, "members": []}, {**_GOOD, "extra": 1}, _nested(11),
    {**_GOOD, "margined": False}, {**_GOOD, "margined": 1},
    {"total": 15, "members": [{**_MEMBER, "group": {"total": 15, "members": [_MEMBER] * 15}}] * 15},
])
@pytest.mark.parametrize("where", ["top", "chain"])
def test_a_record_with_a_malformed_group_is_refused(group, where):
    assert _program_record(_forged(group, where)) is None
    assert _program_record(_forged(_GOOD, where)) is not None
    assert _program_record(_forged(_nested(9), where)) is not None
    assert _program_record(_forged({**_GOOD, "margined": True}, where)) is not None


def test_a_forged_malformed_group_through_the_executor_is_tampered(run):
    def writes(record: str) -> str:
        return f"import os\nos.write(3, {record.encode()!r})\nos._exit(0)\n"

    bad, good = run(writes(_forged({"total": 1, "members": [{**_MEMBER, "traceback": "yes"}]})), writes(_forged(_GOOD)))
    assert bad.status is Status.FAILED and bad.message == TAMPERED and bad.group is None
    assert good.group.total == 2 and [m.exception_type for m in good.group.members] == ["K", "K"]


def test_a_hostile_member_and_patched_builtins_do_not_lose_the_others(run):
    """The interpreter itself fails printing this group (its printer reads the member's
    attributes, and it loses sys.stderr): leti names the member and shows the rest."""
    source = '''import builtins, sys
class Bad(Exception):
    def __str__(self): raise RuntimeError
    def __getattribute__(self, n): raise RuntimeError(n)
g = ExceptionGroup("h", [Bad(), ValueError("ok")])
builtins.len = builtins.isinstance = builtins.issubclass = builtins.id = None
sys.setrecursionlimit(50)
raise g
'''
    (r,) = run(source)
    assert r.feedback == "\n".join([
        "  + Exception Group Traceback (most recent call last):", '  |   File "main.py", line 8, in <module>',
        "  |     raise g", "  | ExceptionGroup: h (2 sub-exceptions)", "  +-+---------------- 1 ----------------",
        "    | Bad", "    +---------------- 2 ----------------", "    | ValueError: ok",
        "    +------------------------------------"])
