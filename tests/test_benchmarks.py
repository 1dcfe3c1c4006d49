"""benchmarks/profile_run.py wraps the trainer's private functions to time them: it runs on the
tiny preset, so a change to their signatures breaks this test, not the next profile someone takes
(the tracker change did, silently: nothing ran the script)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_profile_run_profiles_the_tiny_preset(tmp_path, tiny_model_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "profile_run.py"), str(ROOT / "configs" / "tiny-cpu.yaml"),
                           "--run-dir", str(tmp_path / "run"), "--set", f"model={tiny_model_path}", "--set", "progress=false"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("train: forward", "train: backward", "train: optimizer", "run() total"):
        assert stage in proc.stdout, proc.stdout[-3000:]
