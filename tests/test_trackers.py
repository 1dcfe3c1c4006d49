"""`trainer.report_to`: a LeTI run logs its training loss to TensorBoard or wandb when asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from leti.cli import main

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, tiny_model_path) -> Path:
    """One `leti run` that logs to every installed tracker at once (wandb offline: no account, no
    network), run from a scratch working directory (wandb's files must land in the run dir, not
    there); returns that directory, the run in its "run" folder."""
    import importlib.util

    root = tmp_path_factory.mktemp("tracked")
    trackers = ",".join(name for name in ("tensorboard", "wandb") if importlib.util.find_spec(name))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.chdir(root)
        assert main(["run", CONFIG, "--run-dir", str(root / "run"), "--set", f"model={tiny_model_path}",
                     "--set", f"trainer.report_to=[{trackers}]", "--set", "progress=false"]) == 0
    return root


@pytest.mark.slow
def test_tensorboard_gets_the_training_loss(tracked_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = tracked_run / "run" / "iterations" / "1" / "logs" / "leti"
    events = EventAccumulator(str(logs))
    events.Reload()
    losses = events.Scalars("train/leti_loss")
    assert losses and all(x.value > 0 for x in losses)


@pytest.mark.slow
def test_wandb_offline_gets_the_training_loss_inside_the_run_dir(tracked_run):
    pytest.importorskip("wandb")
    logs = sorted((tracked_run / "run" / "iterations" / "1" / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1 and not (tracked_run / "wandb").exists()
    data = logs[0].read_bytes()  # wandb's binary record log: the logged key and the run's name
    assert b"train/leti_loss" in data and b"iteration-1" in data


@pytest.mark.slow
def test_wandb_without_a_login_is_one_line_naming_the_fix(tmp_path, tiny_model_path):
    pytest.importorskip("wandb")
    # A process of its own: wandb keeps its settings (the offline test's mode) for the process.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"))  # no saved key
    proc = subprocess.run([sys.executable, "-m", "leti", "run", CONFIG, "--run-dir", str(tmp_path / "run"),
                           "--set", f"model={tiny_model_path}", "--set", "trainer.report_to=[wandb]",
                           "--set", "progress=false"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("leti: error: trainer.report_to: wandb could not start (UsageError: ") and err.endswith(
        "run `wandb login`, set WANDB_MODE=offline, or remove wandb from trainer.report_to"), err


def test_a_tracker_that_is_not_installed_is_refused_before_anything_is_sampled(tmp_path, tiny_model_path, capsys,
                                                                              monkeypatch):
    """It was found at the first training stage, after iteration 0's evaluation and iteration 1's
    sampling (hours of a GPU on the paper's presets)."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # how Python blocks an import: as if not installed
    run = tmp_path / "run"
    assert main(["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}",
                 "--set", "trainer.report_to=[tensorboard]", "--set", "progress=false"]) == 2
    assert capsys.readouterr().err == ("leti: error: trainer.report_to includes 'tensorboard' but it is not installed; "
                                       "`pip install tensorboard` or remove it\n")
    assert not (run / "iterations").exists()
