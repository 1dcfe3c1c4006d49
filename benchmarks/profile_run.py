"""Where the time of a `leti run` goes, stage by stage, in wall and CPU seconds.

Runs `leti run CONFIG` in this process with timers around the loop's stages (model load,
prompt tokenisation, generation and inside it the per-row sampler and the stop check, decoding,
execution, training texts, tokenisation, the pretraining stream, forward/backward/optimizer,
checkpoint save, scoring) and prints one table. CPU is this process's CPU time (every torch
thread) plus, for execution, what the sandbox workers report for themselves and their programs.
Stages nest (generation holds the sampler and the stop check; a training step holds nothing
else): "self" columns subtract the stages timed inside. Also prints the start-up (imports).

    python benchmarks/profile_run.py CONFIG --run-dir /tmp/x [--set key=value ...] [--threads N]

This measures, it does not compare: run it once on each code version to compare them.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()
C_START = time.process_time()

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from collections import defaultdict  # noqa: E402

import torch  # noqa: E402

import leti.loop.runner  # noqa: E402, F401
import leti.model  # noqa: E402
import leti.training.trainer  # noqa: E402

T_IMPORTS, C_IMPORTS = time.perf_counter() - T_START, time.process_time() - C_START

_totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0, 0.0, 0.0])  # wall, cpu, calls, child wall, child cpu
_stack: list[str] = []


def _add(name: str, wall: float, cpu: float) -> None:
    row = _totals[name]
    row[0] += wall
    row[1] += cpu
    row[2] += 1
    if _stack:
        parent = _totals[_stack[-1]]
        parent[3] += wall
        parent[4] += cpu


def timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _stack.append(name)
        t, c = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            _stack.pop()
            _add(name, wall, cpu)
    return wrapper


def timed_iter(name: str, fn):
    """A generator function whose every next() is timed (the pretraining stream)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        it = fn(*args, **kwargs)
        while True:
            _stack.append(name)
            t, c = time.perf_counter(), time.process_time()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                wall, cpu = time.perf_counter() - t, time.process_time() - c
                _stack.pop()
                _add(name, wall, cpu)
            yield item
    return wrapper


def patch(obj, attr: str, name: str, gen: bool = False) -> None:
    setattr(obj, attr, (timed_iter if gen else timed)(name, getattr(obj, attr)))


def install() -> None:
    import leti.evaluation.evaluate
    import leti.execution.pool as pool
    import leti.loop.stages as stages
    import leti.sampling.hf as hf
    import leti.training.data as data
    import leti.training.trainer as trainer

    patch(leti.model, "load_model_and_tokenizer", "model load")
    patch(leti.model, "save_model", "checkpoint save")
    patch(hf.HFSampler, "_expand", "sampling: prompt tokenisation")
    patch(hf.HFSampler, "_generate", "sampling: generate")
    patch(hf._PerRowSampling, "__call__", "sampling: per-row sampler")
    patch(hf._StopOnText, "__call__", "sampling: stop check")
    patch(hf.HFSampler, "_finish", "sampling: decode + cut")
    patch(stages, "training_texts", "training texts (feedback)")
    patch(stages, "score_eval", "eval scoring")
    patch(data, "tokenize_texts", "train: tokenise texts")
    patch(trainer, "tokenize_texts", "train: tokenise texts")
    patch(trainer, "pretrain_batches", "train: pretraining stream", gen=True)
    patch(trainer, "_accelerator", "train: accelerator set-up")
    patch(trainer, "_prepare", "train: prepare")
    patch(trainer, "_setup_model", "train: model set-up")
    patch(trainer, "_finish_model", "train: finish model")
    patch(data.PadCollator, "__call__", "train: collate")

    # A training step: forward, backward, optimizer, as the trainer's step() runs them.
    orig_run = trainer._run_batches

    def run_batches(accelerator, model, optimizer, loader, pre_iter, cfg, *rest, **kwargs):
        fwd = model.forward
        model.forward = timed("train: forward", fwd)
        back = accelerator.backward
        accelerator.backward = timed("train: backward", back)
        opt_step = optimizer.step
        optimizer.step = timed("train: optimizer", opt_step)
        try:
            return orig_run(accelerator, model, optimizer, loader, pre_iter, cfg, *rest, **kwargs)
        finally:  # the model samples next: its forward is no training step any more
            del model.forward
            del accelerator.backward
            del optimizer.step

    trainer._run_batches = timed("train: loop (rest)", run_batches)

    # Execution: the main process only waits; the workers' CPU is what they report.
    orig_init = pool.Executor.__init__

    def init(self, *args, **kwargs):
        orig_init(self, *args, **kwargs)
        _executors.append(self)

    pool.Executor.__init__ = init
    patch(stages, "sample_and_execute", "sample + execute (phase)")


_executors: list = []
_gc = {"start": 0.0, "wall": [0.0, 0.0, 0.0], "count": [0, 0, 0]}


def _gc_callback(phase: str, info: dict) -> None:
    """Time of the garbage collector's passes, by generation (a full pass walks every object)."""
    if phase == "start":
        _gc["start"] = time.perf_counter()
    else:
        _gc["wall"][info["generation"]] += time.perf_counter() - _gc["start"]
        _gc["count"][info["generation"]] += 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=None, help="also write the table here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from leti.config import load_config

    install()
    import gc

    gc.callbacks.append(_gc_callback)
    cfg = load_config(args.config, args.overrides)
    t, c = time.perf_counter(), time.process_time()
    leti.loop.runner.run(cfg, args.run_dir)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    exec_cpu = sum(ex.cpu_seconds for ex in _executors)
    load = os.getloadavg()
    print(f"\ntorch threads {torch.get_num_threads()}, load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'stage':<34} {'calls':>6} {'wall s':>8} {'CPU s':>8} {'self wall':>9} {'self CPU':>9}")
    rows = {"start-up (imports)": [T_IMPORTS, C_IMPORTS, 1, 0.0, 0.0]}
    rows.update(sorted(_totals.items(), key=lambda kv: -kv[1][0]))
    for name, (w, cp, n, cw, cc) in rows.items():
        print(f"{name:<34} {n:>6} {w:8.2f} {cp:8.2f} {w - cw:9.2f} {cp - cc:9.2f}")
    print(f"{'execution workers (their own CPU)':<34} {'':>6} {'':>8} {exec_cpu:8.2f}")
    print(f"{'run() total':<34} {1:>6} {wall:8.2f} {cpu:8.2f}")
    for gen in range(3):
        print(f"garbage collector, generation {gen}: {_gc['count'][gen]} passes, {_gc['wall'][gen]:.2f} s wall "
              "(inside the stages above)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": {k: v for k, v in rows.items()}, "exec_cpu": exec_cpu, "wall": wall, "cpu": cpu,
                       "imports": [T_IMPORTS, C_IMPORTS], "load": load, "threads": torch.get_num_threads()}, f, indent=1)


if __name__ == "__main__":
    main()
