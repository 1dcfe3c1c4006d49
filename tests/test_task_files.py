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
