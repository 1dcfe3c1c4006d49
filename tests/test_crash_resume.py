"""kill -9 at the moments between a stage's files: the state such a kill leaves on disk is made
by hand (deterministic, unlike a timed kill), the run is resumed, and what it holds is compared
with an uninterrupted run's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from leti.cli import main
from leti.testing import make_tiny_model
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


@pytest.mark.slow
def test_a_kill_before_a_whole_checkpoint_is_renamed_keeps_the_training(tmp_path, tiny_model_path, task_file, capsys):
    """checkpoint.tmp whole (its stats file, written last, is there) but not yet renamed: the
    resume deleted it and trained the stage again; for big models that window is the fsync of
    the weights and AdamW state. A checkpoint.tmp without its stats is still trained again."""
    run = tmp_path / "run"
    args = ["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}", "--set", f"task={task_file}",
            "--set", "max_train_problems=2", "--set", "sampling.n=1", "--set", "eval.n=1", "--set", "eval.ks=[1]",
            "--set", "trainer.pretrain_mix_ratio=0", "--set", "progress=false"]
    assert main(args) == 0
    want = _files(run)
    weights = (run / "iterations" / "1" / "checkpoint" / "model.safetensors").read_bytes()

    def killed_before_the_rename(whole: bool) -> None:
        it = run / "iterations" / "1"
        (it / "checkpoint").rename(it / "checkpoint.tmp")
        if not whole:
            (it / "checkpoint.tmp" / "leti_train_stats.json").unlink()
        for name in ("train_stats.json", "eval_samples.jsonl", "eval.json"):
            (it / name).unlink()
        metrics = run / "metrics.jsonl"
        metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])
        capsys.readouterr()

    killed_before_the_rename(whole=True)
    assert main(args) == 0
    assert "training on" not in capsys.readouterr().out
    assert _files(run) == want
    assert (run / "iterations" / "1" / "checkpoint" / "model.safetensors").read_bytes() == weights
    killed_before_the_rename(whole=False)
    assert main(args) == 0
    assert "leti: iteration 1: training on 2 texts" in capsys.readouterr().out
    assert _files(run) == want and not (run / "iterations" / "1" / "checkpoint.tmp").exists()


@pytest.mark.slow
def test_a_model_directory_rebuilt_under_a_resumed_run_is_refused(tmp_path, task_file, capsys):
    """The config names the model, not its weights: a model rebuilt at the same path (another
    seed, a new download) under a run stopped after iteration 0 was taken on, iteration 0 scored
    on the old weights and iteration 1 trained from the new."""
    model = make_tiny_model(tmp_path / "model", seed=0)
    run = tmp_path / "run"
    args = ["run", CONFIG, "--run-dir", str(run), "--set", f"model={model}", "--set", f"task={task_file}",
            "--set", "max_train_problems=1", "--set", "sampling.n=1", "--set", "eval.n=1", "--set", "eval.ks=[1]",
            "--set", "trainer.pretrain_mix_ratio=0", "--set", "progress=false"]
    assert main(args) == 0
    files = json.loads((run / "run.json").read_text())["model_files"]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    # stopped after iteration 0, as a kill leaves it
    shutil.rmtree(run / "iterations" / "1")
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])
    make_tiny_model(model, seed=1)
    capsys.readouterr()
    assert main(args) == 2
    assert capsys.readouterr().err == (f"leti: error: model '{model}': model.safetensors changed, came or went since the "
                                       f"run in {run} started, which reads the model still; restore them, or use a new "
                                       "--run-dir\n")
    assert not (run / "iterations" / "1").exists()
    # files loading the model does not read (an eval's results, the demo's warmstart.json) may change
    (Path(model) / "eval_results.json").write_text("{}")
    (Path(model) / "notes.txt").write_text("rebuilt")
    make_tiny_model(model, seed=0)  # restored: the run goes on
    assert main(args) == 0
    # once iteration 1 has trained the run no longer reads it: extending the run is not refused
    make_tiny_model(model, seed=1)
    assert main([*args, "--set", "iterations=2"]) == 0


def _two_iteration_args(run: Path, tiny_model_path: str, task_file: str) -> list[str]:
    return ["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}", "--set", f"task={task_file}",
            "--set", "iterations=2", "--set", "sampling.n=2", "--set", "eval.n=1", "--set", "eval.ks=[1]",
            "--set", "trainer.pretrain_mix_ratio=0", "--set", "progress=false"]


@pytest.fixture
def stopped_in_iteration_2(tmp_path, tiny_model_path, task_file, capsys) -> tuple[Path, list[str], list[str]]:
    """A 2-iteration run as if killed in iteration 2's sampling before any sample landed (its
    directory left empty), iteration 2's samples.jsonl of the run uninterrupted (its lines), and
    the arguments that resume it."""
    run, full = tmp_path / "run", tmp_path / "full"
    args = _two_iteration_args(run, tiny_model_path, task_file)
    assert main([*args, "--set", "iterations=1"]) == 0  # iteration 1 keeps its AdamW state, as when killed
    shutil.copytree(run, full)
    assert main([str(full) if a == str(run) else a for a in args]) == 0
    lines = (full / "iterations" / "2" / "samples.jsonl").read_text().splitlines(keepends=True)
    (run / "iterations" / "2").mkdir()
    capsys.readouterr()
    return run, args, lines


def _refusal(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and err.startswith("leti: error: "), err
    return err.removeprefix("leti: error: ")


@pytest.mark.slow
def test_another_iterations_samples_in_a_stage_to_resume_are_refused(stopped_in_iteration_2, capsys):
    """Iteration 1's samples (prompted without <|good|>) copied into the iteration 2 that a run
    resumes were trained on as iteration 2's without a word."""
    run, args, _ = stopped_in_iteration_2
    samples = run / "iterations" / "2" / "samples.jsonl"
    copied = (run / "iterations" / "1" / "samples.jsonl").read_text()
    samples.write_text(copied)
    first = json.loads(copied.splitlines()[0])
    assert main(args) == 2
    assert _refusal(capsys) == (
        f"{samples}: sample {first['sample_idx']} of problem {first['problem_id']!r} on line 1 (and 3 other lines like "
        "it) was drawn without the <|good|> prefix that this stage's prompts have (another iteration's sample?); "
        "delete such lines to sample them again (or the file, to sample them all)")
    assert samples.read_text() == copied and sorted(p.name for p in samples.parent.iterdir()) == ["samples.jsonl"]
    samples.unlink()  # the fix it names
    assert main(args) == 0


@pytest.mark.slow
def test_another_runs_lines_in_a_stage_to_resume_are_refused_and_deleting_them_resumes(stopped_in_iteration_2, capsys):
    """Lines of another task (a problem not in this run) or with a sample index >= sampling.n
    were kept while the stage ran, then refused after an interruption with a fix (delete
    samples.done) that left them in place."""
    run, args, lines = stopped_in_iteration_2
    samples = run / "iterations" / "2" / "samples.jsonl"
    other_task = json.dumps({**json.loads(lines[0]), "problem_id": "a\nb"}) + "\n"
    past_n = json.dumps({**json.loads(lines[1]), "sample_idx": 2}) + "\n"
    held = [lines[0], other_task, lines[1], past_n]
    samples.write_text("".join(held))
    assert main(args) == 2
    assert _refusal(capsys) == (
        f"{samples}: holds sample 0 of problem 'a\\nb', which is not one of this run's (2 problems x sampling.n 2), "
        "on line 2 (and 1 other line like it); delete such lines to sample them again (or the file, to sample them all)")
    assert samples.read_text() == "".join(held) and not (run / "iterations" / "2" / "samples.done").exists()
    samples.write_text(lines[0] + lines[1])  # the fix it names: the run goes on from the two samples it drew
    assert main(args) == 0
    assert samples.read_text().splitlines(keepends=True)[:2] == lines[:2]
    assert json.loads((run / "iterations" / "2" / "samples.done").read_text())["samples"] == len(lines) == 4


@pytest.mark.slow
def test_another_runs_line_in_a_finished_stage_names_its_line(stopped_in_iteration_2, capsys):
    """The same lines beside a samples.done (a file leti had finished, or an earlier version
    finished with them kept): refused with their line; the fix it names resumes."""
    run, args, lines = stopped_in_iteration_2
    samples = run / "iterations" / "2" / "samples.jsonl"
    foreign = json.dumps({**json.loads(lines[0]), "problem_id": "../x/y"}) + "\n"
    samples.write_text("".join(lines) + foreign)
    (run / "iterations" / "2" / "samples.done").write_text(json.dumps({"samples": len(lines), "wall_s": 1.0}))
    assert main(args) == 2
    assert _refusal(capsys) == (
        f"{samples}: holds sample 0 of problem '../x/y', which is not one of this run's (2 problems x sampling.n 2), "
        f"on line {len(lines) + 1}; delete such lines and samples.done to sample them again (or both files, to sample "
        "them all)")
    samples.write_text("".join(lines))
    (run / "iterations" / "2" / "samples.done").unlink()
    assert main(args) == 0
    assert samples.read_text() == "".join(lines)  # nothing was missing: nothing sampled again
