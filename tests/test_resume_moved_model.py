"""A run resumed after its local model directory was moved: the refusal says the directory is
gone, not "resume with the same config (--set model=ABS)", which the user had done and which led
only to a second error (no such model directory)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml"


def _run(cwd: Path, *sets: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "leti", "run", str(CONFIG), "--run-dir", "runs/x", "--set", "model=models/m",
            "--set", "progress=false", *(a for s in sets for a in ("--set", s))]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})


def test_a_resume_after_the_model_directory_moved_says_it_is_gone(tiny_model_path, tmp_path):
    shutil.copytree(tiny_model_path, tmp_path / "models" / "m")
    first = _run(tmp_path)
    assert first.returncode == 0, first.stderr
    (tmp_path / "models" / "m").rename(tmp_path / "models" / "moved")

    proc = _run(tmp_path, "iterations=2")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        f"leti: error: runs/x/config.yaml: field 'model' is 'models/m', the directory {tmp_path / 'models' / 'm'} the "
        "run started with, which no longer exists (moved or deleted); put it back there to resume (a run resumes only "
        "with the directory it started with), or use a new --run-dir")

    # the fix it names works
    (tmp_path / "models" / "moved").rename(tmp_path / "models" / "m")
    resumed = _run(tmp_path, "iterations=2")
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "runs" / "x" / "iterations" / "2" / "eval.json").is_file()
