"""Progress in a log file: where stderr is not a terminal (pytest's capture is not), a run's
stages print a plain line every tenth of the way instead of bars, and `progress: false` prints none."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from leti.config import load_config
from leti.loop.runner import run
from leti.progress import Progress

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


def _run(tmp_path: Path, model: str, task: str, progress: bool) -> None:
    cfg = load_config(CONFIG, [f"model={model}", f"task={task}", f"progress={str(progress).lower()}"])
    assert run(cfg, tmp_path / f"run-{progress}", terminal_bars=True) == 0


def test_a_run_in_a_log_file_prints_plain_progress_lines(tmp_path, tiny_model_path, task, capsys, monkeypatch):
    monkeypatch.setenv("LETI_PROGRESS_EVERY_S", "0")  # the tiny run's stages take moments: every tenth said
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
    # the sampler's own bar is the libraries' (off in a log): the executed lines follow the samples
    assert "sampling" not in ends
    done, total = ends["train"][-1]
    assert done == total > 0
    # one line per tenth of the way and the last: at most 10 for each bar (a stage that runs more
    # than once, the held-out loss before and after training, starts again from its first count)
    for desc, counts in ends.items():
        starts = [i for i, (done, _) in enumerate(counts) if i == 0 or done <= counts[i - 1][0]]
        for a, b in zip(starts, [*starts[1:], len(counts)], strict=True):
            assert b - a <= 10, (desc, counts)
    assert len(ends["held-out loss"]) > 1


def test_progress_false_prints_no_progress_lines(tmp_path, tiny_model_path, task, capsys, monkeypatch):
    monkeypatch.setenv("LETI_PROGRESS_EVERY_S", "0")
    _run(tmp_path, tiny_model_path, task, progress=False)
    err = capsys.readouterr().err
    assert not [line for line in err.splitlines() if LINE.match(line)], err


def test_lines_come_at_each_tenth_of_the_way_at_most_so_often_and_at_the_end(capsys):
    with Progress(19, "stage", "items", True, min_interval_s=0) as bar:
        for _ in range(19):
            bar.update(1)
    done = [int(LINE.match(line)[2]) for line in capsys.readouterr().err.splitlines()]
    assert done == [2, 4, 6, 8, 10, 12, 14, 16, 18, 19]  # one per tenth (19 // 10 gave one per item)
    with Progress(19, "stage", "items", True) as bar:  # a stage over within the interval: nothing said
        for _ in range(19):
            bar.update(1)
    assert capsys.readouterr().err == ""
    with Progress(19, "stage", "items", True, min_interval_s=0.05) as bar:  # one that takes longer: its lines
        for _ in range(19):
            time.sleep(0.01)
            bar.update(1)
    done = [int(LINE.match(line)[2]) for line in capsys.readouterr().err.splitlines()]
    assert 2 <= len(done) < 10 and done[-1] == 19
    with Progress(19, "stage", "items", False) as bar:  # progress off: silent
        bar.update(19)
    assert capsys.readouterr().err == ""


def test_the_interval_comes_from_the_environment(monkeypatch):
    from leti.errors import LetiError
    from leti.progress import line_interval

    monkeypatch.delenv("LETI_PROGRESS_EVERY_S", raising=False)
    assert line_interval() == 10
    monkeypatch.setenv("LETI_PROGRESS_EVERY_S", "60")
    assert line_interval() == 60
    for bad in ("soon", "-1", "nan", "inf"):
        monkeypatch.setenv("LETI_PROGRESS_EVERY_S", bad)
        with pytest.raises(LetiError, match="LETI_PROGRESS_EVERY_S"):
            line_interval()
