"""`leti demo --quick` end to end on CPU: warm start (cached), both arms through the real loop,
summary.json, report and plots; a second invocation resumes instead of redoing work."""

from __future__ import annotations

import json
import os

import pytest

from leti.cli import main
from leti.demo.config import arm_config, load_demo_config, preset_path
from leti.demo.warmstart import WarmStartConfig, cached_path
from leti.errors import LetiError


def test_demo_presets_load_and_arms_differ_only_in_feedback():
    for quick in (False, True):
        cfg = load_demo_config(preset_path(quick))
        t = arm_config(cfg, 3, "m", "textual")
        b = arm_config(cfg, 3, "m", "binary")
        assert t.training_text.textual_feedback and not b.training_text.textual_feedback
        assert t.task == b.task == f"synthetic:seed=3,train={cfg.train_problems},test={cfg.test_problems}"
        assert (t.sampling, t.eval, t.trainer, t.seed) == (b.sampling, b.eval, b.trainer, b.seed)


def test_warmstart_config_is_checked_and_keyed():
    assert WarmStartConfig().key() == WarmStartConfig().key() != WarmStartConfig(steps=1).key()
    with pytest.raises(LetiError):
        WarmStartConfig(n_embd=10, n_head=3)


@pytest.mark.slow
def test_quick_demo_end_to_end_and_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LETI_CACHE_DIR", str(tmp_path / "cache"))
    demo = tmp_path / "demo"
    assert main(["demo", "--quick", "--run-dir", str(demo), "--threads", "2"]) == 0
    for name in ("summary.json", "report.md", "report.html", "pass_at_1.png", "failures_textual.png",
                 "failures_binary.png", "demo.json"):
        assert (demo / name).stat().st_size > 0, name
    summary = json.loads((demo / "summary.json").read_text())
    for key in ("baseline_pass_at_1", "textual_final_pass_at_1", "binary_final_pass_at_1", "wall_seconds"):
        assert summary[key] is not None, key
    for arm in ("textual", "binary"):
        rows = summary["iterations"][arm]
        assert [r["iteration"] for r in rows] == [0, 1]
        assert rows[1]["gradient_steps"] > 0 and rows[1]["train_pass_rate"] is not None
        # Each arm is a plain `leti run` directory with the loop's files.
        it1 = demo / "seed0" / arm / "iterations" / "1"
        assert (it1 / "samples.jsonl").exists() and (it1 / "train_stats.json").exists() and (it1 / "eval.json").exists()
    # Same warm start and seed: one shared baseline.
    t0 = (demo / "seed0" / "textual" / "iterations" / "0" / "eval_samples.jsonl").read_text()
    assert t0 == (demo / "seed0" / "binary" / "iterations" / "0" / "eval_samples.jsonl").read_text()
    assert "<|lang_feedback|>" in (demo / "report.md").read_text()
    cfg = load_demo_config(preset_path(True))
    assert (cached_path(cfg.warmstart) / "warmstart.json").exists()

    # Second run: everything is finished, nothing is sampled or trained again.
    mtimes = {p: p.stat().st_mtime for p in demo.rglob("*.jsonl")}
    capsys.readouterr()
    assert main(["demo", "--quick", "--run-dir", str(demo), "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "warm start: cached" in out and "already finished" in out
    assert {p: p.stat().st_mtime for p in demo.rglob("*.jsonl")} == mtimes
    # Other options on the same directory are refused with one line.
    assert main(["demo", "--run-dir", str(demo)]) == 2


@pytest.mark.slow
def test_quick_demo_survives_kill_9(tmp_path):
    """kill -9 in the middle of the textual arm, then the same command finishes the demo with
    no duplicated (problem_id, sample_idx) in any samples file."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "LETI_CACHE_DIR": str(tmp_path / "cache")}
    demo = tmp_path / "demo"
    cmd = [sys.executable, "-m", "leti", "demo", "--quick", "--run-dir", str(demo), "--threads", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = demo / "seed0" / "textual" / "iterations" / "1" / "samples.jsonl"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (demo / "summary.json").exists()
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    summary = json.loads((demo / "summary.json").read_text())
    assert [r["iteration"] for r in summary["iterations"]["textual"]] == [0, 1]
    for path in demo.rglob("*samples.jsonl"):
        keys = [(r["problem_id"], r["sample_idx"]) for r in map(json.loads, path.read_text().splitlines())]
        assert len(keys) == len(set(keys)), path


def test_warm_start_is_deterministic_and_cached(tmp_path, monkeypatch):
    from leti.demo.warmstart import warm_start

    cfg = load_demo_config(preset_path(True)).warmstart
    paths = []
    for name in ("a", "b"):
        monkeypatch.setenv("LETI_CACHE_DIR", str(tmp_path / name))
        paths.append(warm_start(cfg, progress=False))
    a, b = ((p / "model.safetensors").read_bytes() for p in paths)
    assert a == b
    stamp = (paths[1] / "warmstart.json").stat().st_mtime
    assert warm_start(cfg, progress=False) == paths[1]  # cached: not rebuilt
    assert (paths[1] / "warmstart.json").stat().st_mtime == stamp
    stats = json.loads((paths[1] / "warmstart.json").read_text())
    assert stats["final_loss"] < stats["first_loss"]  # it did learn something


def test_build_folders_of_killed_runs_are_cleaned(tmp_path):
    from leti.demo.warmstart import _fresh_tmp

    final = tmp_path / "abc123"
    dead = tmp_path / "abc123.tmp999999999"  # no such pid
    live = tmp_path / f"abc123.tmp{os.getppid()}"  # another build still running
    for d in (dead, live):
        (d / "part").mkdir(parents=True)
    tmp = _fresh_tmp(final)
    assert tmp == tmp_path / f"abc123.tmp{os.getpid()}" and tmp.is_dir() and not any(tmp.iterdir())
    assert not dead.exists() and live.exists()
