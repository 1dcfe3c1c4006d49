"""Where `leti run` / `leti sft` put a run when no --run-dir is given: a run's own config.yaml
resumes that run (it started a new one in runs/config, redoing every iteration); another
config.yaml takes its folder's name (exp1/config.yaml and exp2/config.yaml shared runs/config);
a default shared by two configs named alike is refused with a line that names how it was chosen.
Real tiny runs, from a temporary working directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from leti.cli import main

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")


@pytest.fixture(scope="module")
def add_task(tmp_path_factory) -> str:
    """A jsonl task with reference solutions (`leti sft` trains on them)."""
    rows = [{"id": f"{split[:2]}{k}", "split": split, "entry_point": f"add_{k}",
             "prompt": f'"""\nWrite a function to add {k} to a number.\nassert add_{k}(1) == {k + 1}\n"""\n',
             "tests": f"assert add_{k}(1) == {k + 1}", "reference": f"def add_{k}(n):\n    return n + {k}\n"}
            for split, ks in (("train", range(1, 4)), ("test", range(4, 6))) for k in ks]
    path = tmp_path_factory.mktemp("task") / "add.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}"


def _metrics(run: Path) -> list[int]:
    return [json.loads(x)["iteration"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def _config_file(path: Path, model: str, task: str, **fields: object) -> Path:
    """tiny-cpu with the model and task written in, as a user keeps an experiment's config."""
    cfg = yaml.safe_load(Path(CONFIG).read_text())
    cfg.update(model=model, task=task, progress=False, **fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_path, add_task) -> Path:
    """A working directory with runs/tiny, a finished 2-iteration `leti run`, and runs/sft1, a
    finished `leti sft`, both started with --run-dir."""
    work = tmp_path_factory.mktemp("work")
    common = ["--set", f"model={tiny_model_path}", "--set", f"task={add_task}", "--set", "progress=false"]
    assert main(["run", CONFIG, "--run-dir", str(work / "runs" / "tiny"), "--set", "iterations=2", *common]) == 0
    assert main(["sft", CONFIG, "--run-dir", str(work / "runs" / "sft1"), *common]) == 0
    return work


@pytest.mark.slow
@pytest.mark.parametrize(("command", "run"), [("run", "tiny"), ("sft", "sft1")])
def test_a_runs_own_config_resumes_that_run(finished, monkeypatch, capsys, command, run):
    monkeypatch.chdir(finished)
    capsys.readouterr()
    before = (finished / "runs" / run / "metrics.jsonl").read_text()
    assert main([command, f"runs/{run}/config.yaml"]) == 0
    out = capsys.readouterr().out
    assert f"runs/{run}/config.yaml is the config.yaml of the run in runs/{run}: resuming that run" in out
    assert "already finished" in out
    assert not (finished / "runs" / "config").exists() and not (finished / "runs" / "config-sft").exists()
    assert (finished / "runs" / run / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_sft_of_a_leti_runs_config_is_a_run_of_its_own(finished, monkeypatch, capsys):
    """Not the leti run's folder (another mode), nor runs/config-sft: the run's folder name, as for
    any config.yaml."""
    monkeypatch.chdir(finished)
    assert main(["sft", "runs/tiny/config.yaml"]) == 0
    assert "resuming" not in capsys.readouterr().out
    assert json.loads((finished / "runs" / "tiny-sft" / "run.json").read_text())["mode"] == "sft"
    assert _metrics(finished / "runs" / "tiny-sft") == [0, 1] and _metrics(finished / "runs" / "tiny") == [0, 1, 2]
    assert not (finished / "runs" / "config-sft").exists()


@pytest.mark.slow
def test_finished_says_what_the_run_finished(finished, tiny_model_path, add_task, capsys):
    """iterations=1 on a run that finished iteration 2 said "already finished (1 iteration)"."""
    run = finished / "runs" / "tiny"
    capsys.readouterr()
    assert main(["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}",
                 "--set", f"task={add_task}", "--set", "progress=false", "--set", "iterations=1"]) == 0
    assert "already finished (2 iterations);" in capsys.readouterr().out
    assert _metrics(run) == [0, 1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "sft"])
def test_two_config_yamls_get_their_folders_run_dirs(tmp_path, tiny_model_path, add_task, monkeypatch,
                                                    capsys, command):
    monkeypatch.chdir(tmp_path)
    suffix = "-sft" if command == "sft" else ""
    for exp, seed in (("exp1", 0), ("exp2", 1)):
        _config_file(tmp_path / exp / "config.yaml", tiny_model_path, add_task, seed=seed)
        assert main([command, f"{exp}/config.yaml"]) == 0, capsys.readouterr().err
        assert yaml.safe_load((tmp_path / "runs" / f"{exp}{suffix}" / "config.yaml").read_text())["seed"] == seed
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [f"exp1{suffix}", f"exp2{suffix}"]


@pytest.mark.slow
def test_a_shared_default_run_dir_is_refused_naming_how_it_was_chosen(tmp_path, tiny_model_path, add_task,
                                                                      monkeypatch, capsys):
    """a/x.yaml and b/x.yaml both default to runs/x: the refusal's own fix (--set seed=0) would run
    b's config with a's settings, so the line says the directory came from the file name."""
    monkeypatch.chdir(tmp_path)
    _config_file(tmp_path / "a" / "x.yaml", tiny_model_path, add_task, seed=0)
    _config_file(tmp_path / "b" / "x.yaml", tiny_model_path, add_task, seed=1)
    assert main(["run", "a/x.yaml", "--set", "iterations=1"]) == 0
    capsys.readouterr()
    assert main(["run", "b/x.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("leti: error: ")
    assert "field 'seed' was 0 when the run started, now 1" in err
    assert ("runs/x is the default --run-dir, named after its file name (b/x.yaml), so it may hold the run of "
            "another config named alike: to start this config's own run, give it its own --run-dir") in err
    # with its own --run-dir, b runs
    assert main(["run", "b/x.yaml", "--run-dir", "runs/x-b"]) == 0
    assert _metrics(tmp_path / "runs" / "x-b") == [0, 1]


@pytest.mark.slow
def test_a_run_under_the_old_runs_config_default_resumes_there(tmp_path, tiny_model_path, add_task,
                                                               monkeypatch, capsys):
    """A run that exp1/config.yaml started in runs/config before a config.yaml took its folder's
    name goes on there instead of starting over in runs/exp1."""
    monkeypatch.chdir(tmp_path)
    _config_file(tmp_path / "exp1" / "config.yaml", tiny_model_path, add_task)
    assert main(["run", "exp1/config.yaml", "--run-dir", "runs/config"]) == 0
    capsys.readouterr()
    assert main(["run", "exp1/config.yaml"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert not (tmp_path / "runs" / "exp1").exists()
