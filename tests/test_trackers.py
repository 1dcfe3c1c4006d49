"""`trainer.report_to`: a LeTI run logs its training, evaluation and config to TensorBoard or wandb
(one session per run, in the run directory's logs/), and refuses at its start what would fail later."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from leti.cli import main

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")


RUN_ARGS = ["--set", "iterations=2", "--set", "progress=false"]


def _trackers() -> str:
    import importlib.util

    return ",".join(name for name in ("tensorboard", "wandb") if importlib.util.find_spec(name))


def _run(root: Path, run: Path, model: str) -> None:
    """`leti run` (or its resume) in `run`, logging to every installed tracker (wandb offline: no
    account, no network, project from WANDB_PROJECT), from the working directory `root` (wandb's
    files must land in the run dir, not there)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_PROJECT", "leti-tests")
        mp.chdir(root)
        assert main(["run", CONFIG, "--run-dir", str(run), "--set", f"model={model}",
                     "--set", f"trainer.report_to=[{_trackers()}]", *RUN_ARGS]) == 0


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, tiny_model_path) -> Path:
    """One two-iteration `leti run` that logs to every installed tracker at once; returns its
    working directory, the run in its "run" folder."""
    root = tmp_path_factory.mktemp("tracked")
    _run(root, root / "run", tiny_model_path)
    return root


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _scalars(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "logs" / "tensorboard"))
    events.Reload()
    return events


def _steps(events, tag: str) -> dict[int, float]:
    points = events.Scalars(tag)
    steps = [x.step for x in points]
    assert steps == sorted(set(steps)), (tag, steps)  # strictly increasing: no step twice, none rewound
    return {x.step: x.value for x in points}


@pytest.mark.slow
def test_tensorboard_gets_every_iteration_on_the_runs_cumulative_steps(tracked_run):
    """Steps restarted at 0 every training stage, one log dir per iteration, and only the LeTI
    loss was logged: not the evaluation, the train pass rate, the pretraining-mix loss, the
    learning rate or iteration 0's baseline."""
    pytest.importorskip("tensorboard")
    run = tracked_run / "run"
    records, events = _metrics(run), _scalars(run)
    assert [r["iteration"] for r in records] == [0, 1, 2] and records[1]["gradient_steps_total"] > 0
    leti = _steps(events, "train/leti_loss")
    ends = [r["gradient_steps_total"] for r in records]
    # each stage's last log point is its end, on the run's cumulative steps (iteration 2's after 1's)
    assert set(ends[1:]) <= set(leti) and min(leti) > 0 and all(v > 0 for v in leti.values())
    assert min(s for s in leti if s > ends[1]) <= ends[2]
    for tag, field in (("eval/pass@1", "pass@1"), ("eval/pass@2", "pass@2")):
        assert _steps(events, tag) == pytest.approx({r["gradient_steps_total"]: r["eval"][field] for r in records})
    assert _steps(events, "train/pass_rate") == pytest.approx({r["gradient_steps_total"]: r["train_pass_rate"]
                                                              for r in records[1:]})
    assert records[0]["pretrain_heldout_loss"] is not None  # the base model's, at step 0
    assert _steps(events, "eval/pretrain_heldout_loss") == pytest.approx(
        {r["gradient_steps_total"]: r["pretrain_heldout_loss"] for r in records})
    assert all(lr == pytest.approx(1e-3) for lr in _steps(events, "train/learning_rate").values())  # tiny-cpu.yaml's
    assert set(_steps(events, "train/pretrain_loss")) == set(leti)  # the 1:1 mix, logged with the LeTI loss
    # exception counts are keyed by class names the model's programs choose: no tag each
    assert not [t for t in events.Tags()["scalars"] if "exception_counts" in t]


@pytest.mark.slow
def test_tensorboard_hparams_hold_the_whole_run_config(tracked_run):
    """Only TrainerConfig's scalar fields were logged: not the model, task, seed, sampling, eval,
    training_text.* (what separates the textual arm from the binary arm) or lora."""
    pytest.importorskip("tensorboard")
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = _scalars(tracked_run / "run").PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["training_text.textual_feedback"].number_value == 1  # torch writes booleans as numbers
    assert hparams["task"].string_value == "mbpp" and hparams["sampling.n"].number_value == 2
    assert hparams["trainer.lora.enabled"].number_value == 0 and hparams["trainer.lora.r"].number_value > 0


def _wandb_records(path: Path) -> list:
    """The records of wandb's binary .wandb log (LevelDB's log format: 32 KiB blocks of
    checksummed chunks after a 7-byte header)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, block, records, chunks = path.read_bytes(), 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header: padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += block - pos % block
            continue
        chunks, pos = chunks + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST
            records.append(wandb_internal_pb2.Record.FromString(chunks))
            chunks = b""
    return records


@pytest.mark.slow
def test_wandb_offline_gets_one_run_per_leti_run_inside_the_run_dir(tracked_run):
    """It was one wandb run per iteration, its steps restarting at 0, in project "leti" whatever
    WANDB_PROJECT said, with TrainerConfig's scalars as its config."""
    pytest.importorskip("wandb")
    from leti.loop.rundir import RunDir
    from leti.loop.tracking import wandb_run_id

    run = tracked_run / "run"
    logs = sorted((run / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1 and not (tracked_run / "wandb").exists()
    records = _wandb_records(logs[0])
    (start,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (start.project, start.display_name, start.run_id) == ("leti-tests", "run", wandb_run_id(RunDir(run)))
    config = {item.key: json.loads(item.value_json) for item in start.config.update}
    assert config["training_text.textual_feedback"] is True and config["iterations"] == 2
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    metrics = _metrics(run)
    # on leti's own step metric (wandb's _step must only grow: a resume's evaluation was dropped)
    assert [(h["gradient_steps"], h["eval/pass@1"]) for h in history if "eval/pass@1" in h] == [
        (r["gradient_steps_total"], r["eval"]["pass@1"]) for r in metrics]
    loss_steps = [h["gradient_steps"] for h in history if "train/leti_loss" in h]
    assert loss_steps == sorted(set(loss_steps)) and loss_steps[-1] == metrics[-1]["gradient_steps_total"]


@pytest.mark.slow
def test_a_training_stage_killed_and_resumed_leaves_no_duplicate_tensorboard_steps(tracked_run, tiny_model_path,
                                                                                  tmp_path):
    """A kill -9 during iteration 1's training, simulated on a copy of the tracked run: the
    stage's files are gone, its logged steps stay in the event file (with iteration 2's, which a
    resume with iterations=1 does not run again). The resumed stage logged them again, and
    TensorBoard showed each step twice (then rewound)."""
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    shutil.copytree(tracked_run / "run", run)
    it1 = run / "iterations" / "1"
    for name in ("train_stats.json", "eval.json", "eval_samples.jsonl"):
        (it1 / name).unlink()
    shutil.rmtree(it1 / "checkpoint")
    shutil.rmtree(run / "iterations" / "2")
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text(lines[0])
    shutil.rmtree(run / "logs" / "wandb", ignore_errors=True)  # the copy's wandb id is another run's
    ends = [r["gradient_steps_total"] for r in _metrics(tracked_run / "run")]
    before = {s for s in _steps(_scalars(run), "train/leti_loss") if s <= ends[1]}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys.modules[__name__], "RUN_ARGS", ["--set", "iterations=1", "--set", "progress=false"])
        _run(tmp_path, run, tiny_model_path)
    events = _scalars(run)
    for tag in events.Tags()["scalars"]:
        _steps(events, tag)  # none twice
    assert set(_steps(events, "train/leti_loss")) == before  # iteration 2's hidden: the run has none now
    assert set(_steps(events, "eval/pass@1")) == {0, ends[1]}
    assert len(list((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))) == 2


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
    from leti.loop.tracking import check_trackers

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    check_trackers(["wandb"])


def test_a_wandb_setting_wandb_rejects_is_refused_at_start_in_one_line(no_wandb_login, tiny_model_path, capsys,
                                                                      monkeypatch):
    """WANDB_MODE=bogus passed the start check and wandb.init raised a 40-line pydantic traceback
    at the first training stage, after iteration 0's evaluation and iteration 1's sampling."""
    monkeypatch.setenv("WANDB_MODE", "bogus")
    run = no_wandb_login / "run"
    assert main(["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}",
                 "--set", "trainer.report_to=[wandb]", "--set", "progress=false"]) == 2
    assert capsys.readouterr().err == (
        "leti: error: trainer.report_to: wandb rejects WANDB_MODE='bogus' (Input should be 'online', 'offline', "
        "'shared', 'disabled', 'dryrun' or 'run'); set WANDB_MODE to a value wandb accepts or unset it, or remove "
        "wandb from trainer.report_to\n")
    assert not (run / "iterations").exists()


def test_wandb_failing_to_start_after_the_start_check_is_one_line(no_wandb_login, monkeypatch):
    """The run's tracker starts wandb after the start check: what wandb.init raises then (here a
    setting the check did not see) is one line too, not pydantic's traceback."""
    from leti.errors import LetiError
    from leti.loop.rundir import RunDir
    from leti.loop.tracking import RunTracker
    from leti.training.config import TrainerConfig

    (no_wandb_login / "run").mkdir()
    (no_wandb_login / "run" / "run.json").write_text('{"created": "now"}')
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(LetiError, match=r"^trainer\.report_to: wandb rejects WANDB_MODE='bogus' \(Input should be"):
        with RunTracker(RunDir(no_wandb_login / "run"), TrainerConfig(), ["wandb"]):
            pass


def test_the_wandb_start_check_reads_the_netrc_and_wandb_settings_files(no_wandb_login):
    from wandb.sdk import wandb_setup

    from leti.errors import LetiError
    from leti.loop.tracking import check_trackers

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


@pytest.mark.slow
def test_the_purge_step_reads_the_metrics_line_not_every_stages_stats(tracked_run, tmp_path):
    """A damaged train_stats.json of a finished iteration stopped the resume (which nothing
    would redo), and with it gone TensorBoard hid the whole history."""
    from leti.loop.rundir import RunDir
    from leti.loop.tracking import finished_steps

    run = tmp_path / "run"
    shutil.copytree(tracked_run / "run", run, ignore=shutil.ignore_patterns("logs"))
    ends = [r["gradient_steps_total"] for r in _metrics(run)]
    assert finished_steps(RunDir(run)) == ends[-1] > 0
    (run / "iterations" / "1" / "train_stats.json").write_text("{cut")
    assert finished_steps(RunDir(run)) == ends[-1]


def test_the_wandb_run_id_moves_with_the_run_folder(tmp_path):
    """It was derived from the folder's path: a run moved (another disk, another mount) and
    resumed logged into a new wandb run. run.json's random id is the run's everywhere; each new
    run draws its own; a run from before that id keeps its path-derived one."""
    import hashlib

    from leti.config import RunConfig
    from leti.loop.checks import start_run_dir
    from leti.loop.rundir import RunDir
    from leti.loop.tracking import wandb_run_id

    first, second = tmp_path / "a", tmp_path / "b"
    for root in (first, second):
        root.mkdir()
        start_run_dir(RunDir(root), RunConfig(), "leti")
    ids = wandb_run_id(RunDir(first)), wandb_run_id(RunDir(second))
    assert ids[0] != ids[1] and ids[0] == json.loads((first / "run.json").read_text())["id"]
    moved = tmp_path / "elsewhere" / "a"
    moved.parent.mkdir()
    first.rename(moved)
    assert wandb_run_id(RunDir(moved)) == ids[0]
    old = json.loads((second / "run.json").read_text())
    del old["id"]
    (second / "run.json").write_text(json.dumps(old))
    legacy = wandb_run_id(RunDir(second))
    assert legacy == hashlib.sha256(f"{second.resolve()}\0{old['created']}".encode()).hexdigest()[:24]  # as before
