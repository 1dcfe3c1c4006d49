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
