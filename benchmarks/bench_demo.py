"""Benchmark for issue #6: does `leti demo` meet its targets on this machine?

    python benchmarks/bench_demo.py [--run-dir DIR] [--seeds N] [--threads 2] [--arms LIST] [--strict]

Runs the full demo in a fresh directory with a fresh warm-start cache (so the warm start is
timed too), then checks the two targets:
  1. whole demo <= 15 minutes wall on 2 CPU cores (including the warm start);
  2. held-out pass@1 of the textual arm >= baseline + 10 points.
It also prints every arm's curve and the textual-vs-binary comparison from summary.json
(--arms adds the control arms, each costing another arm's time; the wall target is for the
default two arms, and the arms must include textual). The wall time depends on
what else runs on the machine, so it also prints the CPU seconds the demo used and the load
average: on a shared machine, CPU seconds / threads is the better estimate of an idle 2-core run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_WALL_S = 15 * 60
TARGET_GAIN_POINTS = 10.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, default=None, help="demo dir (default: a new temp dir)")
    ap.add_argument("--cache-dir", type=Path, default=None, help="warm-start cache (default: a new temp dir, so the warm start is timed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the target is for 2 cores)")
    ap.add_argument("--arms", default="textual,binary", help="leti demo --arms (default: textual,binary)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="leti-bench-demo-"))
    run_dir = args.run_dir or tmp / "demo"
    env = {**os.environ, "LETI_CACHE_DIR": str(args.cache_dir or tmp / "cache")}
    cmd = [sys.executable, "-m", "leti", "demo", "--run-dir", str(run_dir), "--seed", str(args.seed),
           "--seeds", str(args.seeds), "--threads", str(args.threads), "--arms", args.arms]
    print("running:", " ".join(cmd), f"(LETI_CACHE_DIR={env['LETI_CACHE_DIR']})", flush=True)
    load_before = os.getloadavg()
    t0 = time.time()
    proc = subprocess.run(cmd, env=env)
    wall = time.time() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    if proc.returncode != 0:
        print(f"demo failed with exit code {proc.returncode}")
        return proc.returncode
    s = json.loads((run_dir / "summary.json").read_text())

    base, text = s["baseline_pass_at_1"], s["textual_final_pass_at_1"]
    gain = 100 * (text - base)
    print("\n== leti demo benchmark ==")
    print(f"wall: {wall:.0f} s ({wall / 60:.1f} min) | CPU: {cpu:.0f} s (/{args.threads} threads = "
          f"{cpu / args.threads / 60:.1f} min) | load avg before/after: {load_before[0]:.1f}/{os.getloadavg()[0]:.1f}")
    print("stage seconds:", json.dumps(s.get("stage_seconds", {})))
    finals = " | ".join(f"{arm} {100 * (s['final_pass_at_1'][arm] or 0):.1f}%" for arm in s["arms"])
    print(f"held-out pass@1: baseline {100 * base:.1f}% | {finals}")
    for seed, d in s["per_seed"].items():
        c = d.get("comparison")  # only when both textual and binary ran
        if c:
            print(f"seed {seed}: binary final {100 * (c['binary_final_pass_at_1'] or 0):.1f}% reached by textual after "
                  f"{c['textual_steps_to_reach']} gradient steps, by binary after {c['binary_steps']}")
        for arm in d["iterations"]:
            curve = ", ".join(f"{r['iteration']}:{r['gradient_steps']}st/{100 * (r['heldout_pass_at_1'] or 0):.1f}%"
                              for r in d["iterations"][arm])
            print(f"  {arm:8s} {curve}")
    ok_wall = wall <= TARGET_WALL_S * args.seeds
    ok_gain = gain >= TARGET_GAIN_POINTS
    print(f"target wall <= {TARGET_WALL_S * args.seeds / 60:.0f} min: {'MET' if ok_wall else 'MISSED'} ({wall / 60:.1f} min)")
    print(f"target textual >= baseline + {TARGET_GAIN_POINTS:.0f} points: {'MET' if ok_gain else 'MISSED'} ({gain:+.1f} points)")
    print(f"report: {run_dir / 'report.html'}")
    return 1 if args.strict and not (ok_wall and ok_gain) else 0


if __name__ == "__main__":
    sys.exit(main())
