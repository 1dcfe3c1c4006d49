"""Task files (JSONL) that Python or JSON would take in a way the user did not mean: refused with
FILE:LINE, the field or key, and the fix, before any sample is drawn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leti.cli import main

ROW = {"id": "add", "prompt": "def add(a, b):\n", "tests": "assert add(1, 2) == 3", "reference": "    return a + b\n"}


def _task(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return f"jsonl:{path}"


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("field", "value", "line"), [
    # every program of the problem failed with "SyntaxError: source code string cannot contain
    # null bytes" and was trained on as a failure
    ("prompt", "def add(a, b):\n    '''Add.\x00'''\n", 2),
    ("reference", "    return a + b\x00\n", 1),
    # was "is not valid Python (line None: source code string cannot contain null bytes)"
    ("tests", "assert add(1, 2) == 3\x00", 1),
])
def test_a_nul_character_in_a_program_field_is_refused(tmp_path, capsys, field, value, line):
    task = _task(tmp_path, json.dumps(ROW), json.dumps({**ROW, "id": "nul", field: value}))
    assert main(["tasks", "validate", task]) == 2
    assert _one_line(capsys) == (f"leti: error: {tmp_path / 'tasks.jsonl'}:2: field {field!r} holds a NUL character "
                                 f"(\\u0000) on its line {line}, which Python source cannot contain; remove it\n")


@pytest.mark.parametrize("line", [
    '{"id": "a", "split": "train", "id": "b", "prompt": "def add(a, b):\\n", "tests": "assert add(1, 2) == 3"}',
    '{"id": "a", "prompt": "p", "tests": "assert f()", "meta": {"id": 1, "id": 2}}',  # nested objects too
])
def test_a_key_given_twice_in_a_task_line_is_refused(tmp_path, capsys, line):
    """JSON keeps the last of a repeated key: the line above became problem 'b' without a word."""
    task = _task(tmp_path, json.dumps(ROW), line)
    assert main(["tasks", "validate", task]) == 2
    assert _one_line(capsys) == (f"leti: error: {tmp_path / 'tasks.jsonl'}:2: key 'id' appears twice in one object; "
                                 "keep one of them\n")


def test_a_key_given_twice_in_a_samples_file_is_refused(tmp_path, capsys):
    samples = tmp_path / "samples.jsonl"
    samples.write_text('{"task_id": "HumanEval/0", "completion": "    return 1\\n", "completion": "    return 2\\n"}\n')
    assert main(["evaluate", "--task", "humaneval", "--samples", str(samples), "--out", str(tmp_path / "o")]) == 2
    assert _one_line(capsys) == f"leti: error: {samples}:1: key 'completion' appears twice in one object; keep one of them\n"
    assert not (tmp_path / "o" / "results.json").exists()


def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [101, 985, 100_000])
def test_json_nested_too_deeply_is_one_line_naming_file_and_line(tmp_path, capsys, depth):
    """100000: json.loads raised RecursionError (a traceback); 985: it read, and the line's
    lone-surrogate check (json.dumps) raised it. Over 100 levels is refused, in every JSONL file."""
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"program": "x = 1"}\n{"program": "x = 1", "id": ' + _deep_json(depth) + "}\n")
    assert main(["exec", str(inp), "-o", str(tmp_path / "out.jsonl")]) == 2
    assert _one_line(capsys) == (f"leti: error: {inp}:2: JSON nested too deeply (more than 100 arrays or objects "
                                 "inside each other); nest it less deeply\n")
    task = _task(tmp_path, json.dumps(ROW), '{"id": "a", "prompt": "p", "tests": "assert f()", "meta": {"k": '
                 + _deep_json(depth) + "}}")
    assert main(["tasks", "show", task]) == 2
    assert _one_line(capsys).startswith(f"leti: error: {tmp_path / 'tasks.jsonl'}:2: JSON nested too deeply ")


def test_json_nested_100_levels_is_read(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"program": "x = 1", "id": ' + _deep_json(99) + "}\n")
    assert main(["exec", str(inp), "-o", str(tmp_path / "out.jsonl")]) == 0
    assert json.loads((tmp_path / "out.jsonl").read_text())["id"] == json.loads(_deep_json(99))


def _too_deep_to_compile(n: int) -> str:
    """An expression nested n deep; skips where this Python compiles it (3.13 does for 3000)."""
    expr = "-" * n + "1"
    try:
        compile(expr, "x", "eval")
    except (RecursionError, MemoryError):
        return expr
    pytest.skip(f"this Python compiles {n} nested unary minuses")


@pytest.mark.parametrize("n", [3000, 100_000])
def test_tests_nested_too_deeply_to_compile_are_one_line(tmp_path, capsys, n):
    """compile() raised RecursionError (3000) or MemoryError (100000): a traceback."""
    task = _task(tmp_path, json.dumps(ROW), json.dumps({**ROW, "id": "deep", "tests": f"assert f() == {_too_deep_to_compile(n)}"}))
    assert main(["tasks", "validate", task]) == 2
    assert _one_line(capsys) == (f"leti: error: {tmp_path / 'tasks.jsonl'}:2: field 'tests' is nested too deeply for "
                                 "Python to compile, so every program would fail; nest it less deeply\n")


@pytest.mark.parametrize("n", [3000, 100_000])
@pytest.mark.parametrize("tests", ["assert add(1, 2) == 3", "check(add)"])
def test_a_prompt_nested_too_deeply_to_compile_is_no_traceback(tmp_path, capsys, n, tests):
    """The prompt check gives no warning (it cannot tell); the tests-can-fail rule, which reads the
    prompt for a checker (check(add)), gives the benefit of the doubt. Both raised RecursionError
    or MemoryError."""
    prompt = f"X = {_too_deep_to_compile(n)}\ndef add(a, b):\n"
    task = _task(tmp_path, json.dumps({**ROW, "prompt": prompt, "tests": tests}))
    assert main(["tasks", "show", task]) == 0
    assert capsys.readouterr().err == ""


def test_tests_nested_too_deeply_are_refused_by_the_tests_can_fail_rule_too():
    """check_tests_can_fail is told its tests compile; ast.parse may still fail where compile did not."""
    from leti.errors import LetiError
    from leti.tasks.tests_can_fail import check_tests_can_fail

    with pytest.raises(LetiError) as err:
        check_tests_can_fail(f"assert f() == {_too_deep_to_compile(100_000)}", "def f():\n", "f", "t.jsonl:3")
    assert str(err.value) == ("t.jsonl:3: field 'tests' is nested too deeply for Python to compile, so every program "
                              "would fail; nest it less deeply")


@pytest.mark.parametrize(("split", "message"), [
    ("", "field 'split' is empty; leave it out for the default 'test'"),
    ("  ", "field 'split' is blank; leave it out for the default 'test'"),
    # was accepted: `leti tasks show` counted a split '  ', and --split train found no problem
    ("train ", "field 'split' 'train ' has whitespace around it, which a split name cannot have; write \"train\""),
    ("\ttest", "field 'split' '\\ttest' has whitespace around it, which a split name cannot have; write \"test\""),
])
def test_a_blank_or_padded_split_is_refused(tmp_path, capsys, split, message):
    task = _task(tmp_path, json.dumps(ROW), json.dumps({**ROW, "id": "b", "split": split}))
    assert main(["tasks", "show", task]) == 2
    assert _one_line(capsys) == f"leti: error: {tmp_path / 'tasks.jsonl'}:2: {message}\n"
