"""kill -9 at the moments between a stage's files: the state such a kill leaves on disk is made
by hand (deterministic, unlike a timed kill), the run is resumed, and what it holds is compared
with an uninterrupted run's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from leti.cli import main
from leti.training.trainer import OPTIMIZER_FILE

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")


@pytest.fixture
def task_file(tmp_path) -> str:
    rows = [{"id": f"t{k}", "split": split, "entry_point": f"add_{k}",
             "prompt": f'"""\nWrite a function to add {k} to a number.\nassert add_{k}(1) == {k + 1}\n"""\n',
             "tests": f"assert add_{k}(1) == {k + 1}"}
            for k, split in [(1, "train"), (2, "train"), (3, "test"), (4, "test")]]
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}"


def _files(run: Path) -> set[str]:
    return {str(f.relative_to(run)) for f in run.rglob("*") if f.is_file() and f.name != ".lock"}


@pytest.mark.slow
def test_a_kill_after_train_stats_before_pruning_still_prunes(tmp_path, tiny_model_path, task_file, capsys):
    """The last iteration's training writes train_stats.json, then deletes the AdamW state of the
    checkpoints before it (and checkpoints beyond keep_checkpoints). A kill in between, or later
    in the evaluation, left checkpoint 1's leti_optimizer.pth (and checkpoint 1 itself with
    keep_checkpoints: 1) for good: the resume skipped the finished training and its pruning with it."""
    run = tmp_path / "run"
    args = ["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}", "--set", f"task={task_file}",
            "--set", "iterations=2", "--set", "max_train_problems=2", "--set", "sampling.n=1",
            "--set", "eval.n=1", "--set", "eval.ks=[1]", "--set", "trainer.pretrain_mix_ratio=0",
            "--set", "keep_checkpoints=1", "--set", "progress=false"]
    assert main(args) == 0
    want = _files(run)
    assert not (run / "iterations" / "1" / "checkpoint").exists()
    # What the kill leaves: checkpoint 2 and its train_stats.json landed, checkpoint 1 (with its
    # AdamW state) not yet deleted, no evaluation or metrics line of iteration 2.
    shutil.copytree(run / "iterations" / "2" / "checkpoint", run / "iterations" / "1" / "checkpoint")
    it = run / "iterations" / "2"
    for name in ("eval_samples.jsonl", "eval.json"):
        (it / name).unlink()
    metrics = run / "metrics.jsonl"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:2]))
    capsys.readouterr()

    assert main(args) == 0
    out = capsys.readouterr().out
    assert "iteration 2 goes on from its saved stages" in out and "training on" not in out
    assert _files(run) == want
    assert (it / "checkpoint" / OPTIMIZER_FILE).exists()
