"""What a rerun of a run directory may change, and what it then does: a shortened run evaluates
its new last iteration, a finished run's config.yaml keeps what the run did, speed-only fields
may change, and out-of-range seeds are refused before anything runs."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest
import yaml

from leti.cli import main
from leti.config import RunConfig, config_to_dict
from leti.errors import LetiError
from leti.loop.checks import check_unchanged
from leti.loop.rundir import RunDir

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")


def _args(run: Path, model: str, task: str, *extra: str) -> list[str]:
    return ["run", CONFIG, "--run-dir", str(run), "--set", f"model={model}", "--set", f"task={task}",
            "--set", "progress=false", *extra]


@pytest.mark.slow
def test_a_shortened_run_evaluates_its_new_last_iteration(tmp_path, tiny_model_path, shared_add_task, capsys):
    run = tmp_path / "run"
    assert main(_args(run, tiny_model_path, shared_add_task, "--set", "iterations=2", "--set", "eval.every=2")) == 0
    err = capsys.readouterr().err
    assert "it/s]" not in err and "Loading weights" not in err  # progress: false quiets transformers' bars too
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["eval"] is None for m in lines] == [False, True, False]  # iteration 1 skipped by eval.every
    config_before = (run / "config.yaml").read_text()

    # a finished run: nothing to do, and config.yaml still says what the run did
    assert main(_args(run, tiny_model_path, shared_add_task, "--set", "iterations=2", "--set", "eval.every=2",
                      "--set", "keep_checkpoints=1")) == 0
    assert "already finished (2 iterations)" in capsys.readouterr().out
    assert (run / "config.yaml").read_text() == config_before

    # shortened to 1: iteration 1 is now the last, and the last is always evaluated
    assert main(_args(run, tiny_model_path, shared_add_task, "--set", "iterations=1", "--set", "eval.every=2")) == 0
    assert "iteration 1, now the last, is evaluated" in capsys.readouterr().out
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in lines] == [0, 1, 2]
    ev = json.loads((run / "iterations" / "1" / "eval.json").read_text())
    assert lines[1]["eval"]["pass@1"] == ev["pass@k"]["pass@1"] and lines[1]["eval_stderr"] is not None
    assert yaml.safe_load((run / "config.yaml").read_text())["iterations"] == 1
    assert main(_args(run, tiny_model_path, shared_add_task, "--set", "iterations=1", "--set", "eval.every=2")) == 0
    # it ran to iteration 2 before iterations=1: what it finished, not what was asked
    assert "already finished (2 iterations);" in capsys.readouterr().out

    # back to 2, where the run ended: recorded; then 1 again, which the run went past: nothing runs
    # under it, so config.yaml keeps the plan the run finished
    for iterations, recorded in ((2, 2), (1, 2)):
        assert main(_args(run, tiny_model_path, shared_add_task, "--set", f"iterations={iterations}",
                          "--set", "eval.every=2")) == 0
        assert "already finished" in capsys.readouterr().out
        assert yaml.safe_load((run / "config.yaml").read_text())["iterations"] == recorded


@pytest.mark.slow
def test_iterations_changes_under_pruning_and_eval_every(tmp_path, tiny_model_path, shared_add_task, capsys):
    """keep_checkpoints=1, eval.every=3: iteration 1 is never evaluated and its checkpoint goes
    once iteration 2 trains. Shortening the run to 1 cannot evaluate it: refused in one line
    before config.yaml is rewritten (it failed after, with a message about missing weights).
    Lengthening a run that was killed while evaluating its last iteration finishes that
    evaluation instead of dropping it (its partial samples were plotted as if evaluated)."""
    run = tmp_path / "run"
    common = ("--set", "eval.every=3", "--set", "keep_checkpoints=1")
    assert main(_args(run, tiny_model_path, shared_add_task, "--set", "iterations=2", *common)) == 0
    capsys.readouterr()
    config_before = (run / "config.yaml").read_text()
    assert main(_args(run, tiny_model_path, shared_add_task, "--set", "iterations=1", *common)) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"leti: error: {run}: iterations=1 makes iteration 1 the last, which was not evaluated "
                   "(eval.every=3) and whose checkpoint keep_checkpoints deleted; set iterations back to the "
                   "run's own, or start again with a new --run-dir")
    assert (run / "config.yaml").read_text() == config_before

    # as if killed in iteration 2's evaluation: no metrics line, no eval.json, half its samples
    metrics = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(metrics[:2]) + "\n")
    (run / "iterations" / "2" / "eval.json").unlink()
    samples = run / "iterations" / "2" / "eval_samples.jsonl"
    samples.write_text("".join(samples.read_text().splitlines(keepends=True)[:1]))
    from leti.report.data import load_run

    # the old resume left such a file beside an iteration whose line has no evaluation: not plotted
    stray = run / "iterations" / "1" / "eval_samples.jsonl"
    stray.write_text(samples.read_text())
    assert [p.eval_samples for p in load_run(run).points] == [4, 0]
    stray.unlink()
    assert main(_args(run, tiny_model_path, shared_add_task, "--set", "iterations=3", *common)) == 0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in lines] == [0, 1, 2, 3]
    assert [m["eval"] is None for m in lines] == [False, True, False, False]
    ev = json.loads((run / "iterations" / "2" / "eval.json").read_text())
    assert lines[2]["eval"]["pass@1"] == ev["pass@k"]["pass@1"]


def test_gradient_checkpointing_may_be_turned_on_when_resuming(tmp_path):
    """The same computation, recomputed to fit in memory: a run that ran out of memory goes on with it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(RunConfig())))
    cfg = RunConfig()
    cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, gradient_checkpointing=True))
    check_unchanged(RunDir(run), cfg)
    with pytest.raises(LetiError, match="trainer.epochs"):
        check_unchanged(RunDir(run), dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, epochs=1)))


@pytest.mark.parametrize("seed", [-1, 2**31, 99999999999999999999])
def test_a_seed_out_of_range_is_refused_before_anything_runs(tmp_path, tiny_model_path, shared_add_task, capsys, seed):
    run = tmp_path / "run"
    assert main(_args(run, tiny_model_path, shared_add_task, "--set", f"seed={seed}")) == 2
    assert f"seed must be in [0, 2**31), got {seed}" in capsys.readouterr().err
    assert not run.exists() or not (run / "iterations").exists()


def test_the_set_a_refusal_suggests_is_one_shell_word(tmp_path):
    """eval.ks=[1, 2] has a space: pasted unquoted, the shell split it ('unrecognized arguments: 2]')."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(RunConfig())))
    cfg = RunConfig()
    with pytest.raises(LetiError) as e:
        check_unchanged(RunDir(run), dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, ks=[1])))
    suggestion = str(e.value).split("(--set ", 1)[1].split(") or use", 1)[0]
    assert suggestion == "'eval.ks=[1, 10]'" and shlex.split(suggestion) == ["eval.ks=[1, 10]"]


def test_several_differences_name_them_all_and_the_config_to_resume_with(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(RunConfig())))
    other = RunConfig(model="other/model", task="humaneval", seed=7)
    with pytest.raises(LetiError) as e:
        check_unchanged(RunDir(run), other)
    assert str(e.value) == (f"{run / 'config.yaml'}: 3 fields differ from the config the run started with (model, seed, "
                            f"task); resume with that config (leti run {run / 'config.yaml'} --run-dir {run}) or use a "
                            "new --run-dir")


def test_two_spellings_of_one_model_directory_are_the_same_model(tmp_path, tiny_model_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(RunConfig(model=tiny_model_path))))
    monkeypatch.chdir(Path(tiny_model_path).parent)
    check_unchanged(RunDir(run), RunConfig(model=f"./{Path(tiny_model_path).name}"))
    with pytest.raises(LetiError, match="field 'model' was"):
        check_unchanged(RunDir(run), RunConfig(model=str(tmp_path)))  # another directory


def test_an_unknown_device_is_refused_by_the_config(capsys):
    assert main(["config", "--set", "device=gpu"]) == 2
    assert "device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'gpu'" in capsys.readouterr().err


def test_a_disk_without_room_for_the_checkpoint_stops_before_training(tmp_path, tiny_model_path, shared_add_task,
                                                                     monkeypatch, capsys):
    """Checked before the training stage, not found when the checkpoint is written after it. The
    disk's free space is the one thing replaced here (filling a real disk is not a test)."""
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    run = tmp_path / "run"
    assert main(_args(run, tiny_model_path, shared_add_task)) == 2
    err = capsys.readouterr().err
    assert f"leti: error: {run / 'iterations' / '1'}: 0.0 MB free on its disk, but iteration 1's checkpoint needs" in err
    assert "(weights and AdamW state)" in err and "this iteration's samples are kept" in err
    assert (run / "iterations" / "1" / "samples.done").exists() and not (run / "iterations" / "1" / "train_stats.json").exists()
    monkeypatch.setattr(shutil, "disk_usage", real)
    assert main(_args(run, tiny_model_path, shared_add_task)) == 0  # room again: it resumes and trains
    assert (run / "iterations" / "1" / "train_stats.json").exists()


@pytest.mark.slow
def test_a_run_started_with_relative_paths_resumes_from_any_directory(tmp_path, tiny_model_path, shared_add_task,
                                                                      monkeypatch, capsys):
    """config.yaml names the model directory and the task file absolutely, so the resume leti's
    messages suggest (`leti run RUN/config.yaml --run-dir RUN`) works from another directory. Was:
    'add.jsonl: task file not found (relative to the current directory ...)'."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "add.jsonl").write_text(Path(shared_add_task.removeprefix("jsonl:")).read_text())
    (work / "model").symlink_to(tiny_model_path)
    monkeypatch.chdir(work)
    assert main(_args(Path("run"), "model", "jsonl:add.jsonl")) == 0
    saved = yaml.safe_load((work / "run" / "config.yaml").read_text())
    assert (saved["model"], saved["task"]) == (str(work / "model"), f"jsonl:{work / 'add.jsonl'}")
    capsys.readouterr()

    monkeypatch.chdir(tmp_path)
    run = work / "run"
    assert main(["run", str(run / "config.yaml"), "--run-dir", str(run), "--set", "iterations=2"]) == 0
    assert [json.loads(x)["iteration"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]
    # and the relative spelling, from where the run started, is still the same run
    monkeypatch.chdir(work)
    assert main(_args(Path("run"), "./model", "jsonl:./add.jsonl", "--set", "iterations=2")) == 0
    assert "already finished (2 iterations)" in capsys.readouterr().out


def test_a_run_that_recorded_relative_paths_resumes_with_them(tmp_path, tiny_model_path, monkeypatch):
    """Runs started before paths were made absolute have relative ones in config.yaml: read
    against the current directory, the same files are the same run; other files are not."""
    monkeypatch.chdir(tmp_path)
    Path("t.jsonl").write_text("")
    Path("other.jsonl").write_text("")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(RunConfig(task="jsonl:t.jsonl"))))
    check_unchanged(RunDir(run), RunConfig(task=f"jsonl:{tmp_path / 't.jsonl'}"))
    with pytest.raises(LetiError, match="field 'task' was"):
        check_unchanged(RunDir(run), RunConfig(task=f"jsonl:{tmp_path / 'other.jsonl'}"))


def test_only_paths_that_exist_are_made_absolute(tmp_path, monkeypatch):
    from leti.loop.paths import with_absolute_paths

    monkeypatch.chdir(tmp_path)
    for name in ("m", "py", "ev"):
        Path(name).mkdir()
    for name in ("t.jsonl", "ev/train.json", "ev/ont.json"):
        Path(name).write_text("")
    cfg = RunConfig(model="m", task="jsonl:t.jsonl")
    cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, pretrain_corpus="py"))
    done = with_absolute_paths(cfg)
    assert (done.model, done.task, done.trainer.pretrain_corpus) == (
        str(tmp_path / "m"), f"jsonl:{tmp_path / 't.jsonl'}", str(tmp_path / "py"))
    # hub ids, 'stdlib', a missing file (its own error names it as given), tasks without paths
    kept = RunConfig(model="Salesforce/codegen-350M-mono", task="jsonl:missing.jsonl")
    assert with_absolute_paths(kept) == kept
    assert with_absolute_paths(RunConfig(task="mbpp:hub")).task == "mbpp:hub"
    spec = "eae-jsonl:train=ev/train.json,test=ev/missing.json,ontology=ev/ont.json,min_f1=0.5"
    assert with_absolute_paths(RunConfig(task=spec)).task == (
        f"eae-jsonl:train={tmp_path / 'ev/train.json'},test=ev/missing.json,ontology={tmp_path / 'ev/ont.json'},min_f1=0.5")


@pytest.mark.slow
def test_another_number_of_processes_is_fine_until_a_training_stage_has_finished(tmp_path, tiny_model_path,
                                                                                 shared_add_task):
    """The number of processes sets the texts per optimizer step, so a resume under another one
    is refused once a stage has trained; before that (here: killed after iteration 0 under two
    processes) nothing depends on it, and the resumed run takes the new number."""
    run = tmp_path / "run"
    assert main(_args(run, tiny_model_path, shared_add_task)) == 0
    # the state of a run launched with 2 processes and killed before iteration 1 trained
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "processes": 2}))
    metrics = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text(metrics[0])
    for path in sorted((run / "iterations" / "1").rglob("*"), reverse=True):
        if path.name not in ("samples.jsonl", "samples.done"):
            path.rmdir() if path.is_dir() else path.unlink()
    assert main(_args(run, tiny_model_path, shared_add_task)) == 0
    assert json.loads((run / "run.json").read_text())["processes"] == 1
    assert (run / "iterations" / "1" / "train_stats.json").exists()


@pytest.mark.slow
def test_ending_a_stopped_run_where_it_stopped_records_the_shorter_plan(tmp_path, tiny_model_path, shared_add_task,
                                                                       capsys):
    """A run started with iterations=2 and stopped after iteration 1, ended there with --set
    iterations=1: leti says it is finished, so config.yaml says 1 too. It kept 2 (the early
    "already finished" return came before the rewrite), and the report then called the run
    unfinished and would not compare it, advising the resume that trains iteration 2."""
    from leti.report.data import load_run

    run = tmp_path / "run"
    assert main(_args(run, tiny_model_path, shared_add_task, "--set", "iterations=1")) == 0
    # what a run started with iterations=2 leaves when stopped once iteration 1 finished: only
    # `iterations` differs, which the seal leaves out
    config = (run / "config.yaml").read_text()
    assert config.count("\niterations: 1\n") == 1
    (run / "config.yaml").write_text(config.replace("\niterations: 1\n", "\niterations: 2\n"))
    assert load_run(run).unfinished
    capsys.readouterr()

    # any other change is still refused, and leaves config.yaml as it was
    assert main(_args(run, tiny_model_path, shared_add_task, "--set", "iterations=1", "--set", "seed=1")) == 2
    assert "field 'seed' was 0" in capsys.readouterr().err
    assert yaml.safe_load((run / "config.yaml").read_text())["iterations"] == 2

    assert main(_args(run, tiny_model_path, shared_add_task, "--set", "iterations=1")) == 0
    assert "already finished (1 iteration);" in capsys.readouterr().out
    assert yaml.safe_load((run / "config.yaml").read_text())["iterations"] == 1
    history = load_run(run)
    assert history.planned_iterations == 1 and not history.unfinished
    # and the rewritten file is still one a resume accepts
    assert main(_args(run, tiny_model_path, shared_add_task, "--set", "iterations=1")) == 0
    assert "already finished (1 iteration);" in capsys.readouterr().out
