"""NaN and Infinity are no JSON (jq and JavaScript refuse them), though Python's json reads and
writes them: `leti exec`'s input holding one is refused, file:line, not copied to its output.
Other readers take them, in fields they ignore, as Python does (another tool's samples file)."""

from __future__ import annotations

import pytest

from leti.cli import main
from leti.errors import LetiError
from leti.jsonl import read_json_lines


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_constant_is_refused_naming_file_and_line(tmp_path, constant):
    path = tmp_path / "in.jsonl"
    path.write_text('{"program": "print(1)", "x": 1.5}\n' + f'{{"program": "print(1)", "x": [{constant}]}}\n')
    with pytest.raises(LetiError) as e:
        list(read_json_lines(path, what="input file", missing_hint="", finite=True))
    assert str(e.value) == (f"{path}:2: {constant} is not valid JSON (Python writes it; jq and JavaScript refuse it); "
                            "write null or a finite number")


def test_leti_exec_refuses_nan_input_and_writes_no_output(tmp_path, capsys):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"program": "print(1)", "x": NaN}\n')
    assert main(["exec", str(src), "-o", str(out)]) != 0
    err = capsys.readouterr().err
    assert f"{src}:1: NaN is not valid JSON" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_other_readers_take_them(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"task_id": "a", "completion": "x", "score": NaN}\n')
    [(_, _, row)] = read_json_lines(path, what="samples file", missing_hint="")
    assert row["completion"] == "x" and row["score"] != row["score"]
