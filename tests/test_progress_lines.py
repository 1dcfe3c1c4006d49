"""Progress in a log file: where stderr is not a terminal (pytest's capture is not), a run's
stages print a plain line every tenth of the way instead of bars, and `progress: false` prints none."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from leti.config import load_config
from leti.loop.runner import run
from leti.progress import want_log_lines

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")
LINE = re.compile(r"^leti: (.+): (\d+)/(\d+) (\w+) \((\d+)%\), \d+s")


@pytest.fixture
def task(tmp_path: Path) -> str:
    rows = [{"id": f"{'t' if k < 4 else 'e'}{k}", "split": "train" if k < 4 else "test", "entry_point": f"add_{k}",
             "prompt": f'"""\nWrite a function to add {k} to a number.\n"""\n',
             "tests": f"assert add_{k}(1) == {k + 1}"} for k in range(1, 6)]
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}"


@pytest.fixture(autouse=True)
def _no_lines_left_over() -> Iterator[None]:
    yield
    want_log_lines(False)  # the switch is the process's: later tests start without it


def _run(tmp_path: Path, model: str, task: str, progress: bool) -> None:
    cfg = load_config(CONFIG, [f"model={model}", f"task={task}", f"progress={str(progress).lower()}"])
    assert run(cfg, tmp_path / f"run-{progress}", terminal_bars=True) == 0


def test_a_run_in_a_log_file_prints_plain_progress_lines(tmp_path, tiny_model_path, task, capsys):
    _run(tmp_path, tiny_model_path, task, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err  # lines, not bars redrawn
    ends = {}
    for line in err.splitlines():
        if m := LINE.match(line):
            desc, done, total = m[1], int(m[2]), int(m[3])
            assert 0 < done <= total and int(m[5]) == 100 * done // total
            ends[desc] = ends.get(desc, []) + [(done, total)]
    # 3 train problems x 2 samples, 2 eval problems x 2; every stage ends with its whole count
    assert ends["iter 0 eval executed"][-1] == (4, 4)
    assert ends["iter 1 train executed"][-1] == (6, 6)
    assert ends["iter 1 eval executed"][-1] == (4, 4)
    assert [d for d, _ in ends["sampling"]] == [4, 6, 4]  # eval 0, train 1, eval 1
    done, total = ends["train"][-1]
    assert done == total > 0
    assert all(len(v) <= 11 for v in ends.values())  # a tenth of the way each, and the end


def test_progress_false_prints_no_progress_lines(tmp_path, tiny_model_path, task, capsys):
    _run(tmp_path, tiny_model_path, task, progress=False)
    err = capsys.readouterr().err
    assert not [line for line in err.splitlines() if LINE.match(line)], err
