"""A run directory damaged or hand-edited between two `leti run`s: the resume stops in one line
naming the file (and line) and the fix, instead of a traceback from deep inside or training and
counting on what is left without a word. One finished tiny run, copied and damaged per test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from leti.cli import main

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")


def _args(run: Path, model: str, task: str) -> list[str]:
    return ["run", CONFIG, "--run-dir", str(run), "--set", f"model={model}", "--set", f"task={task}",
            "--set", "progress=false", "--set", "trainer.pretrain_mix_ratio=0"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_path, shared_add_task) -> tuple[Path, list[str]]:
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(_args(run, tiny_model_path, shared_add_task)) == 0
    return run, _args(run, tiny_model_path, shared_add_task)


def _copy(finished, tmp_path: Path, redo_iteration_1: bool = True) -> tuple[Path, list[str]]:
    """A copy of the finished run; with `redo_iteration_1`, as if killed after iteration 1's
    sampling (its training, evaluation and metrics line gone, samples.done kept)."""
    src, args = finished
    run = tmp_path / "run"
    shutil.copytree(src, run)
    if redo_iteration_1:
        it = run / "iterations" / "1"
        for name in ("checkpoint", "train_stats.json", "eval.json", "eval_samples.jsonl"):
            p = it / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        metrics = (run / "metrics.jsonl").read_text().splitlines()
        (run / "metrics.jsonl").write_text(metrics[0] + "\n")
    return run, [str(run) if a == str(src) else a for a in args]


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and err.startswith("leti: error: "), err
    return err.removeprefix("leti: error: ")


def _samples(run: Path) -> Path:
    return run / "iterations" / "1" / "samples.jsonl"


def test_a_sample_line_cut_to_its_key_is_named(finished, tmp_path, capsys):
    run, args = _copy(finished, tmp_path)
    lines = _samples(run).read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({"problem_id": first["problem_id"], "sample_idx": first["sample_idx"]})
    _samples(run).write_text("\n".join(lines) + "\n")
    assert main(args) == 2  # was KeyError: 'status' from the iteration's summary
    assert _error(capsys).startswith(f"{_samples(run)}:1: not a sample record (bad or missing passed); delete that line")


def test_a_sample_file_shorter_than_samples_done_counted_is_named(finished, tmp_path, capsys):
    run, args = _copy(finished, tmp_path)
    lines = _samples(run).read_text().splitlines()
    _samples(run).write_text("\n".join(lines[:-1]) + "\n")
    assert main(args) == 2  # was: trained on the rest, train_samples one short, without a word
    assert _error(capsys) == (f"{_samples(run)}: holds {len(lines) - 1} samples, samples.done counted {len(lines)}; "
                              "restore it, or delete samples.done to sample what is missing")
    (run / "iterations" / "1" / "samples.done").unlink()  # the fix it names: the missing sample is drawn again
    assert main(args) == 0
    assert len(_samples(run).read_text().splitlines()) == len(lines)


def test_another_runs_sample_in_a_finished_sample_file_is_named(finished, tmp_path, capsys):
    run, args = _copy(finished, tmp_path)
    lines = _samples(run).read_text().splitlines()
    rec = json.loads(lines[0])
    rec["problem_id"] = "not-this-runs"
    lines[0] = json.dumps(rec)
    _samples(run).write_text("\n".join(lines) + "\n")
    assert main(args) == 2  # was: counted in train_samples, skipped in training, its own sample never drawn
    assert _error(capsys).startswith(f"{_samples(run)}: holds sample {rec['sample_idx']} of problem 'not-this-runs', "
                                     "which is not one of this run's")


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines + [lines[-1]], "metrics.jsonl:3: iteration 1 again (also on line 2)"),
    (lambda lines: [lines[0], lines[1].replace('"iteration": 1', '"iteration": -3')],
     "metrics.jsonl:2: iteration -3 is not an iteration number"),
])
def test_a_repeated_or_negative_metrics_line_is_named(finished, tmp_path, capsys, edit, message):
    run, args = _copy(finished, tmp_path, redo_iteration_1=False)
    metrics = run / "metrics.jsonl"
    metrics.write_text("\n".join(edit(metrics.read_text().splitlines())) + "\n")
    assert main(args) == 2  # was: went on, appending iteration 1's line again after the bad one
    assert _error(capsys).startswith(f"{run}/{message}")


def test_a_config_yaml_with_a_key_twice_is_named(finished, tmp_path, capsys):
    run, args = _copy(finished, tmp_path, redo_iteration_1=False)
    config = run / "config.yaml"
    config.write_text(config.read_text() + "iterations: 1\n")
    assert main(args) == 2  # was: compared with the last of the two values only
    assert "field 'iterations' appears twice" in _error(capsys)


def test_a_hand_edited_config_yaml_is_refused_not_taken_as_the_start(finished, tmp_path, capsys):
    """config.yaml is the only record of how a run started: an edited learning rate was reported as
    the one the run "started with", and a resume from the edited file trained with it unnoticed."""
    run, args = _copy(finished, tmp_path, redo_iteration_1=False)
    config = run / "config.yaml"
    original = config.read_text()
    assert original.splitlines()[-1].startswith("# leti: sha256 ")
    config.write_text(original.replace("learning_rate: 0.001\n", "learning_rate: 0.005\n"))
    edited = (f"{config}: edited since leti wrote it, in a field a resume may not change, so it no longer says how the "
              "run started; undo the edit, or use a new --run-dir (change settings a resume may change, such as "
              "iterations, with --set)")
    for argv in (args, ["run", str(config), "--run-dir", str(run)]):
        assert main([*argv, "--set", "iterations=2"]) == 2
        assert _error(capsys) == edited
    # the digest line removed with the edit: not taken for a config.yaml of a leti from before it
    config.write_text("".join(original.replace("learning_rate: 0.001\n", "learning_rate: 0.005\n").splitlines(True)[:-1]))
    assert main([*args, "--set", "iterations=2"]) == 2
    assert _error(capsys) == (f"{config}: its last line, the digest leti wrote, is gone, so an edit of it cannot be "
                              "told apart from how the run started; restore the file, or use a new --run-dir")
    assert not (run / "iterations" / "2").exists()
    # a setting a resume may change, edited in the file, is taken like its --set
    config.write_text(original.replace("progress: false\n", "progress: true\n"))
    assert main(["run", str(config), "--run-dir", str(run)]) == 0
    assert "already finished" in capsys.readouterr().out
    # another preset on this run's directory: refused as a changed config, before its own checks
    assert main(["run", "mbpp-binary-only", "--run-dir", str(run), "--set", f"model={args[args.index('--set') + 1][6:]}"]) == 2
    assert "fields differ from the config the run started with" in _error(capsys)


def test_a_damaged_train_stats_of_a_finished_iteration_does_not_stop_later_ones(finished, tmp_path, capsys):
    """Every earlier iteration's train_stats.json was read again to count gradient steps: a damaged
    one stopped the resume after the next iteration's whole work, with a fix ("delete it to redo
    that stage") that led to a bare "No such file or directory" on every later resume."""
    run, args = _copy(finished, tmp_path, redo_iteration_1=False)
    stats = run / "iterations" / "1" / "train_stats.json"
    steps_1 = json.loads(stats.read_text())["optimizer_steps"]
    stats.write_text('{"optimizer_steps": 4, "loss_me')
    assert main([*args, "--set", "iterations=2"]) == 0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps_2 = json.loads((run / "iterations" / "2" / "train_stats.json").read_text())["optimizer_steps"]
    assert [r["gradient_steps_total"] for r in lines] == [0, steps_1, steps_1 + steps_2]


@pytest.mark.parametrize("name, key, value", [
    ("train_stats.json", "optimizer_steps", "x"),  # was TypeError summing the steps
    ("train_stats.json", "wall_s", "soon"),
    ("eval.json", "pass@k", {"pass@1": "x"}),  # was ValueError formatting it
    ("samples.done", "wall_s", None),
    ("eval.json", "task_metrics", ["f1", 0.5]),  # was TypeError merging it into the metrics line
    ("eval.json", "pass@k_stderr", {"pass@1": "small"}),  # was ValueError printing it
])
def test_a_stage_record_with_a_value_of_the_wrong_type_is_named(finished, tmp_path, capsys, name, key, value):
    """Iteration 1's files are all there but its metrics line is not (killed before writing it):
    the resume reads them back, and a hand-edited value names the file, not a traceback."""
    run, args = _copy(finished, tmp_path, redo_iteration_1=False)
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n")
    path = run / "iterations" / "1" / name
    record = json.loads(path.read_text())
    record[key] = value
    path.write_text(json.dumps(record))
    assert main(args) == 2
    kinds = {"optimizer_steps": "a count", "pass@k": "an object of numbers", "task_metrics": "an object of numbers",
             "pass@k_stderr": "an object of numbers or nulls"}
    assert _error(capsys) == (f"{path}: '{key}' must be {kinds.get(key, 'a number')}, "
                              f"got {json.dumps(value)}; delete it to redo that stage")
    path.unlink()  # the fix it names
    assert main(args) == 0
    assert len(metrics.read_text().splitlines()) == 2


def test_a_checkpoint_whose_weights_were_deleted_is_named_with_the_fix(finished, tmp_path, capsys):
    """A resume that goes on from a checkpoint without model.safetensors said only that the model
    directory "could not be loaded (Error no file named model.safetensors ...)"."""
    run, args = _copy(finished, tmp_path, redo_iteration_1=False)
    checkpoint = run / "iterations" / "1" / "checkpoint"
    (checkpoint / "model.safetensors").unlink()
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.name != ".lock")
    assert main([*args, "--set", "iterations=2"]) == 2  # iteration 2 samples from iteration 1's weights
    assert _error(capsys) == (f"model directory {checkpoint} has no weights (none of model.safetensors, "
                              f"pytorch_model.bin, ...); it is a checkpoint of the run in {run}: restore it, or start "
                              "that run again with a new --run-dir")
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.name != ".lock") == before
