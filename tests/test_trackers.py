"""`trainer.report_to`: a LeTI run logs its training loss to TensorBoard or wandb when asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from leti.cli import main

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")


@pytest.mark.slow
def test_tensorboard_gets_the_training_loss(tmp_path, tiny_model_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}",
                 "--set", "trainer.report_to=[tensorboard]", "--set", "progress=false"]) == 0
    logs = run / "iterations" / "1" / "logs" / "leti"
    events = EventAccumulator(str(logs))
    events.Reload()
    losses = events.Scalars("train/leti_loss")
    assert losses and all(x.value > 0 for x in losses)


@pytest.mark.slow
def test_wandb_offline_gets_the_training_loss_inside_the_run_dir(tmp_path, tiny_model_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")  # no account, no network
    monkeypatch.chdir(tmp_path)  # wandb's files must land in the run dir, not the cwd
    run = tmp_path / "run"
    assert main(["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}",
                 "--set", "trainer.report_to=[wandb]", "--set", "progress=false"]) == 0
    logs = sorted((run / "iterations" / "1" / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1 and not (tmp_path / "wandb").exists()
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
