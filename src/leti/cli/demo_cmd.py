"""`leti demo [--run-dir DIR] [--seed S] [--seeds N] [--quick] [--arms LIST]`: the offline default job."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="offline demo: warm start a tiny code model, run LeTI with textual vs binary feedback, report",
        description="Builds (or reuses from $LETI_CACHE_DIR, default $XDG_CACHE_HOME/leti, else ~/.cache/leti) a small offline code model, evaluates it on held-out "
        "synthetic problems, runs LeTI iterations with textual feedback and then with binary feedback only "
        "(same warm start and seed), optionally the control arms of --arms, and writes summary.json, "
        "report.md, report.html and plots. "
        "Rerun the same command to resume after an interruption. "
        "If an arm fails, summary.json and the report are rewritten for the arms that finished (marked "
        "incomplete) before the error is shown, so they never describe an earlier invocation.")
    p.add_argument("--run-dir", type=Path, default=Path("runs/demo"),
                   help="demo directory (default: runs/demo): a new or empty one, or one the demo made (to resume "
                   "it); any other folder is refused, so that no file of yours is overwritten")
    p.add_argument("--seed", type=int, default=0, help="first seed (task split, warm start, sampling); default 0")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds to run and average (each takes the full time)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one iteration per arm (a smoke test, not a result); "
                   "its model passes no training sample, so it cannot run the passing arm")
    p.add_argument("--config", type=Path, default=None, help="demo preset YAML (default: leti/demo/presets/demo.yaml, or demo-quick.yaml with --quick)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--arms", default="textual,binary",
                   help="comma-separated arms to run, any of textual, binary, constant (the feedback span always "
                   "says the same sentence), passing (train on passing samples only; refused with --quick, whose "
                   "model passes nothing to train on); default textual,binary. "
                   "Rerunning a finished demo with more arms runs only the new ones")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from leti.demo.run import run_demo

    s = run_demo(args.run_dir, seed=args.seed, seeds=args.seeds, quick=args.quick,
                 config=args.config, threads=args.threads, arms=args.arms)
    print_summary(s, args.run_dir)
    return 0


def print_summary(s: dict, run_dir: Path) -> None:
    """The demo's closing lines: each arm's held-out pass@1 with its error (and the spread across
    seeds), each arm against binary, and the report (the numbers in full: summary.json)."""
    from leti.demo.config import ARM_LABEL

    def pct(x: float | None, stderr: float | None = None) -> str:
        if x is None:
            return "n/a"
        return f"{100 * x:.1f}%" + ("" if stderr is None else f" ± {100 * stderr:.1f}")

    se, sd = s.get("final_pass_at_1_stderr", {}), s.get("final_pass_at_1_seed_sd", {})
    results = " vs ".join(f"{pct(s['final_pass_at_1'][arm], se.get(arm))} ({ARM_LABEL[arm]})"
                          + (f" [seed sd {100 * sd[arm]:.1f}]" if sd.get(arm) is not None else "") for arm in s["arms"])
    print(f"demo: held-out pass@1 {pct(s['baseline_pass_at_1'], s.get('baseline_pass_at_1_stderr'))} (warm start) "
          f"-> {results} in {s['wall_seconds'] / 60:.1f} min")
    for arm, d in s.get("vs_binary", {}).items():
        if d["difference_points"] is None:
            continue
        err = "" if d["stderr_points"] is None else f" ± {d['stderr_points']:.1f}"
        spread = "" if d.get("seed_sd_points") is None else f", seed sd {d['seed_sd_points']:.1f}"
        print(f"demo: {arm} minus binary {d['difference_points']:+.1f}{err} points (paired over problems{spread})")
    print("demo: ± = one standard error over held-out problems (evaluation noise, not seed-to-seed training variance)")
    print(f"demo: report {run_dir / 'report.html'}")
