"""Graceful stops and leftover processes: the real CLI in a subprocess gets a real signal (Ctrl-C:
SIGINT to its process group; `kill` / SLURM preemption: SIGTERM; the hard stop after it: SIGKILL)
while sandboxed programs run, and every process it had started is checked for by pid."""

from __future__ import annotations

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

from leti.execution import sandbox

LETI = [sys.executable, "-m", "leti"]
CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")
WORKER_MARK = "The sandboxed worker"  # in the command line of every zygote and program it forks

# Sleeps far past any wait below, ignores SIGTERM, and leaves a double-forked, setsid()'d escapee
# (sandbox only; without it the program's own session is all leti can reach, see worker.py).
ESCAPING = """import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(600)
    os._exit(0)
time.sleep(600)
"""
STUBBORN = """import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.fork()
time.sleep(600)
"""


def _bwrap_or_skip() -> None:
    try:
        sandbox.resolve_sandbox("auto")
    except sandbox.SandboxUnavailable as e:
        pytest.skip(f"no working bubblewrap here: {e}")


def _poll(cond: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def _start(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """The CLI in a session of its own (as a shell's foreground job: SIGINT goes to its group)."""
    err = tmp_path / "stderr.txt"
    with open(err, "w") as f:
        proc = subprocess.Popen(LETI + args, stdout=subprocess.DEVNULL, stderr=f, start_new_session=True,
                                cwd=tmp_path)
    return proc, err


def _programs_running(proc: subprocess.Popen, programs: int, total: int, timeout: float = 60) -> set[int]:
    """Wait until at least `programs` processes that a zygote forked (or their children) and
    `total` processes running the worker's code in all are below `proc`; then every process
    below it, bwrap's included."""
    def ready() -> dict:
        assert proc.poll() is None, f"leti exited early ({proc.returncode})"
        below = descendants(proc.pid)
        marked = {pid for pid, (_, cmd) in below.items() if WORKER_MARK in cmd}
        forked = {pid for pid in marked if below[pid][0] in marked}  # its parent is a zygote or a program
        return below if len(forked) >= programs and len(marked) >= total else {}

    below = _poll(ready, timeout, f"{programs} programs running")
    time.sleep(0.3)  # let the last fork settle, then take everything below leti
    return set(below) | set(descendants(proc.pid))


def _send(proc: subprocess.Popen, signum: int) -> None:
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # Ctrl-C: the terminal signals the whole foreground group
    else:
        os.kill(proc.pid, signum)  # `kill PID`, SLURM's SIGTERM


def _exit_code(proc: subprocess.Popen, within: float) -> int:
    try:
        return proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"leti did not exit within {within:g} s of the signal") from None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_exec_stops_in_seconds_on_a_signal_and_leaves_no_process(tmp_path, signum):
    """Was: Ctrl-C waited for the programs in flight to reach their time limit (two per worker,
    pipelined: 120 s here); SIGTERM killed leti on the spot without a word (exit -15) and left
    its workers' cgroups behind."""
    _bwrap_or_skip()
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "program": ESCAPING}) + "\n" for i in range(3)))
    proc, err = _start(["exec", str(inp), "-o", str(tmp_path / "out.jsonl"), "--workers", "1", "--timeout", "60"], tmp_path)
    started = _programs_running(proc, 1, 3)  # zygote, program, escapee
    t0 = time.monotonic()
    _send(proc, signum)
    rc = _exit_code(proc, 20)
    took = time.monotonic() - t0
    lines = err.read_text().strip().splitlines()
    assert rc == 128 + signum, (rc, lines)
    assert lines[-1] == ("leti: interrupted" if signum == signal.SIGINT else "leti: stopped by SIGTERM"), lines
    assert not any("Traceback" in line for line in lines), lines
    assert took < 15, f"{took:.1f} s to stop"
    _poll(lambda: not alive(started), 10, f"the processes leti started to end: {sorted(alive(started))}")
    assert not (tmp_path / "out.jsonl").exists()  # only the .partial: the output is not complete


@pytest.mark.parametrize("mode", ["bwrap", "none"])
def test_programs_do_not_outlive_a_killed_leti(tmp_path, mode):
    """kill -9 leaves leti no chance to clean up. bwrap: --die-with-parent takes the sandbox's pid
    namespace down. Without a sandbox, the programs ran on to their time limit (60 s here) and the
    pipelined next one after them; now the zygote notices its parent is gone and kills them."""
    if mode == "bwrap":
        _bwrap_or_skip()
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "program": STUBBORN if mode == "none" else ESCAPING}) + "\n"
                           for i in range(4)))
    args = ["exec", str(inp), "-o", str(tmp_path / "out.jsonl"), "--workers", "2", "--timeout", "60"]
    proc, _ = _start(args + (["--unsafe-no-sandbox"] if mode == "none" else []), tmp_path)
    # per worker: zygote, program, and its child (none) or its escapee (bwrap, a child of the sandbox's init)
    started = _programs_running(proc, 4 if mode == "none" else 2, 6)
    proc.kill()
    proc.wait()
    _poll(lambda: not alive(started), 10, f"the processes leti started to end: {sorted(alive(started))}")


def test_the_cgroups_of_a_killed_leti_are_swept(tmp_path):
    """kill -9 (OOM killer, SLURM's hard stop) left each worker's cgroups behind for good, a few per
    killed run. The next leti removes those of dead leti processes (here without the age margin
    that protects groups a live leti has just made)."""
    _bwrap_or_skip()
    probe = sandbox.WorkerCgroup(16)
    writable = bool(probe.paths)
    probe.remove()
    if not writable:
        pytest.skip("cgroups are not writable here (leti runs without them)")
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"program": "import time\ntime.sleep(600)\n"}) + "\n")
    proc, _ = _start(["exec", str(inp), "-o", str(tmp_path / "out.jsonl"), "--workers", "1", "--timeout", "60"], tmp_path)
    started = _programs_running(proc, 1, 2)
    groups = [d / f for d in sandbox._leti_dirs() if d.is_dir() for f in os.listdir(d) if f.startswith(f"w-{proc.pid}-")]
    assert groups, "leti made no cgroup for its worker"
    proc.kill()
    proc.wait()
    _poll(lambda: not alive(started), 10, "the sandbox to go down")
    assert all(g.exists() for g in groups)  # nobody removed them
    _poll(lambda: (sandbox.sweep_stale_groups(min_age_s=0), not any(g.exists() for g in groups))[1], 10,
          f"{groups} to be swept")


def _slow_train_task(tmp_path: Path, hold: Path) -> str:
    """Train programs wait while `hold` exists (no sandbox, so that they can see it), eval ones
    do not; the completion is cut at its first line, a comment."""
    wait = f"import os, time\nwhile os.path.exists({str(hold)!r}):\n    time.sleep(0.05)\n#"
    rows = [{"id": f"t{k}", "split": split, "prompt": wait if split == "train" else "x = 1\n#", "tests": "assert True",
             "stop": ["\n"]} for k, split in [(1, "train"), (2, "train"), (3, "test")]]
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}"


def _run_state(run: Path) -> tuple[list, list]:
    """What a run computed: its metrics and samples, without timings and paths."""
    metrics = [{k: v for k, v in json.loads(line).items() if k not in ("wall_s", "checkpoint")}
               for line in (run / "metrics.jsonl").read_text().splitlines()]
    samples = []
    for name in ("iterations/1/samples.jsonl", "iterations/1/eval_samples.jsonl", "iterations/0/eval_samples.jsonl"):
        rows = [json.loads(line) for line in (run / name).read_text().splitlines()]
        for r in rows:
            for key in ("duration_s", "result", "wall_s"):
                r.pop(key, None)
        samples.append(sorted(rows, key=json.dumps))
    return metrics, samples


@pytest.mark.slow
def test_run_stopped_by_sigterm_while_executing_resumes_to_the_same_result(tmp_path, tiny_model_path):
    """SLURM preemption in the middle of a LeTI iteration's execution: one line, exit 143 in seconds,
    no program left; the rerun goes on from iteration 1 (iteration 0's evaluation is not redone)
    and ends where an uninterrupted run does."""
    hold = tmp_path / "hold"
    task = _slow_train_task(tmp_path, hold)
    common = ["--set", f"model={tiny_model_path}", "--set", f"task={task}", "--set", "progress=false",
              "--set", "execution.sandbox=none", "--set", "execution.timeout_s=60", "--set", "max_train_problems=2",
              "--set", "sampling.n=1", "--set", "eval.max_problems=1", "--set", "eval.n=1", "--set", "eval.ks=[1]",
              "--set", "trainer.pretrain_mix_ratio=0"]
    whole = subprocess.run(LETI + ["run", CONFIG, "--run-dir", str(tmp_path / "whole"), *common],
                           capture_output=True, text=True, cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr

    hold.touch()
    run = tmp_path / "run"
    proc, err = _start(["run", CONFIG, "--run-dir", str(run), *common], tmp_path)
    eval0_file = run / "iterations" / "0" / "eval.json"
    _poll(lambda: proc.poll() is None and eval0_file.exists(), 120, "iteration 0's evaluation")
    eval0 = eval0_file.stat().st_mtime_ns
    started = _programs_running(proc, 1, 2)  # a train program waiting on `hold`
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = _exit_code(proc, 30)
    lines = err.read_text().strip().splitlines()
    assert rc == 143 and lines[-1] == "leti: stopped by SIGTERM; run the same command again to resume", (rc, lines[-5:])
    assert not any("Traceback" in line for line in lines)
    assert time.monotonic() - t0 < 20
    _poll(lambda: not alive(started), 10, f"the processes leti started to end: {sorted(alive(started))}")

    hold.unlink()
    again = subprocess.run(LETI + ["run", CONFIG, "--run-dir", str(run), *common], capture_output=True, text=True,
                           cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "iteration 0 finished; iteration 1 goes on from its saved stages" in again.stdout
    assert (run / "iterations" / "0" / "eval.json").stat().st_mtime_ns == eval0
    assert _run_state(run) == _run_state(tmp_path / "whole")
