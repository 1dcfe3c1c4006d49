"""`leti demo`: warm start -> baseline -> LeTI with textual feedback -> the same with binary
feedback only -> summary.json + report, all under one directory:

    DEMO/
      demo.json                 settings, per-stage wall times (accumulated over resumes)
      seed<S>/textual/          a plain `leti run` directory (iteration 0 = the baseline)
      seed<S>/binary/           same warm start, seed and config except textual_feedback
      summary.json, report.md, report.html, *.png

Both arms are driven by the same loop as `leti run` (leti.loop.runner.run). Resuming is the
loop's: rerunning the command skips every finished stage. The binary arm's iteration 0 is the
same model evaluated with the same seed and prompts, so the textual arm's baseline files are
copied into it instead of being sampled again.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from leti.demo.config import (
    ARMS,
    DemoConfig,
    arm_config,
    load_demo_config,
    preset_path,
    warmstart_for,
)
from leti.demo.summary import make_summary
from leti.demo.warmstart import warm_start, write_corpus
from leti.errors import LetiError
from leti.loop.rundir import RunDir, write_json_atomic
from leti.report import build_report, load_run


class _Clock:
    """Wall seconds per stage, added to what earlier (killed) invocations recorded."""

    def __init__(self, state_path: Path, settings: dict) -> None:
        self.path = state_path
        old = json.loads(state_path.read_text()) if state_path.exists() else None
        if old is not None and old.get("settings") != settings:
            raise LetiError(f"{state_path.parent}: this demo directory was started with {old.get('settings')}, "
                            f"not {settings}; use the same options or another --run-dir")
        self.state = old or {"settings": settings, "stages": {}}

    def add(self, stage: str, seconds: float) -> None:
        stages = self.state["stages"]
        stages[stage] = round(stages.get(stage, 0.0) + seconds, 2)
        self.state["wall_seconds"] = round(sum(stages.values()), 2)
        write_json_atomic(self.path, self.state)


def _share_baseline(textual: RunDir, binary: RunDir) -> None:
    """Copy iteration 0's evaluation (identical by construction) from one arm to the other."""
    src_eval, src_samples = textual.eval(0), textual.eval_samples(0)
    if binary.eval(0).exists() or not src_eval.exists():
        return
    binary.iteration(0).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src_samples, binary.eval_samples(0))
    shutil.copyfile(src_eval, binary.eval(0))  # last: its presence marks the stage done


def run_demo(run_dir: str | Path, seed: int = 0, seeds: int = 1, quick: bool = False,
             config: str | Path | None = None, threads: int | None = None, progress: bool = True) -> dict:
    """Run (or resume) the demo; returns the summary (also written to summary.json)."""
    from leti.loop.runner import run as run_loop

    if seeds < 1:
        raise LetiError(f"--seeds must be >= 1, got {seeds}")
    if threads:
        torch.set_num_threads(threads)
    root = Path(run_dir)
    if root.exists() and not root.is_dir():
        raise LetiError(f"--run-dir {root} is a file; pass a directory (it is created if missing)")
    cfg_path = Path(config) if config else preset_path(quick)
    demo: DemoConfig = load_demo_config(cfg_path)  # before creating anything: bad input fails clean
    root.mkdir(parents=True, exist_ok=True)
    seed_list = list(range(seed, seed + seeds))
    clock = _Clock(root / "demo.json", {"config": str(cfg_path.name), "seeds": seed_list, "quick": quick})
    for s in seed_list:
        t0 = time.time()
        ws_cfg = warmstart_for(demo, s)
        model = warm_start(ws_cfg, progress=progress)
        corpus = write_corpus(ws_cfg, model)
        clock.add(f"seed{s}/warmstart", time.time() - t0)
        for arm in ARMS:
            t0 = time.time()
            arm_dir = root / f"seed{s}" / arm
            if arm == "binary":
                _share_baseline(RunDir(root / f"seed{s}" / "textual"), RunDir(arm_dir))
            if progress:
                print(f"demo: seed {s}, {arm} feedback -> {arm_dir}")
            run_loop(arm_config(demo, s, str(model), arm, corpus_dir=str(corpus)), arm_dir)
            clock.add(f"seed{s}/{arm}", time.time() - t0)
    t0 = time.time()
    histories = {s: {arm: load_run(root / f"seed{s}" / arm, arm) for arm in ARMS} for s in seed_list}
    summary = make_summary(histories, clock.state, asdict(demo.warmstart))
    write_json_atomic(root / "summary.json", summary)
    build_report(root)
    clock.add("report", time.time() - t0)
    summary["wall_seconds"] = clock.state["wall_seconds"]
    write_json_atomic(root / "summary.json", summary)
    return summary
