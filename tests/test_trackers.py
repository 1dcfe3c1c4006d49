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


def test_wandb_without_a_login_is_refused_at_start_in_one_line_naming_the_fix(tmp_path, tiny_model_path):
    """wandb.init found it at the first training stage, after iteration 0's evaluation and
    iteration 1's sampling."""
    pytest.importorskip("wandb")
    # A process of its own: wandb keeps its settings (the offline test's mode) for the process.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"))  # no saved key
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "leti", "run", CONFIG, "--run-dir", str(run),
                           "--set", f"model={tiny_model_path}", "--set", "trainer.report_to=[wandb]",
                           "--set", "progress=false"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr == ("leti: error: trainer.report_to: wandb could not start (UsageError: No API key configured. "
                           "Use `wandb login` to log in.); run `wandb login`, set WANDB_MODE=offline, or remove wandb "
                           "from trainer.report_to\n")
    assert not (run / "iterations").exists()


@pytest.fixture
def no_wandb_login(tmp_path, monkeypatch) -> Path:
    """A home without wandb credentials or settings, and no wandb session in this process (the
    offline run's, whose settings wandb keeps for the process); returns the home."""
    pytest.importorskip("wandb")
    from wandb.sdk import wandb_setup

    for name in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./wandb/settings
    monkeypatch.setattr(wandb_setup, "_singleton", None)
    return tmp_path


@pytest.mark.parametrize("env", [{"WANDB_MODE": "offline"}, {"WANDB_MODE": "disabled"}, {"WANDB_API_KEY": "k" * 40}])
def test_wandb_that_needs_no_login_or_has_a_key_passes_the_start_check(no_wandb_login, monkeypatch, env):
    from leti.training.trainer import check_trackers

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    check_trackers(["wandb"])


def test_the_wandb_start_check_reads_the_netrc_and_wandb_settings_files(no_wandb_login):
    from wandb.sdk import wandb_setup

    from leti.errors import LetiError
    from leti.training.trainer import check_trackers

    with pytest.raises(LetiError, match=r"^trainer\.report_to: wandb could not start \(UsageError: No API key"):
        check_trackers(["wandb"])
    netrc = no_wandb_login / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password short\n")
    netrc.chmod(0o600)
    with pytest.raises(LetiError, match=r"\(AuthenticationError: API key must have 40\+ characters"):
        check_trackers(["wandb"])  # as wandb.init refuses it
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {'k' * 40}\n")
    check_trackers(["wandb"])
    netrc.unlink()
    settings = no_wandb_login / "wandb" / "settings"  # what `wandb offline` writes
    settings.parent.mkdir()
    settings.write_text("[default]\nmode = offline\n")
    check_trackers(["wandb"])
    assert wandb_setup._singleton is None  # read without starting wandb's session


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
