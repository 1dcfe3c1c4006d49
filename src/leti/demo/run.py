"""`leti demo`: warm start -> baseline -> LeTI with textual feedback -> the same with binary
feedback only (and, with --arms, the constant-feedback and passing-only controls) ->
summary.json + report, all under one directory:

    DEMO/
      demo.json                 settings, per-stage wall times (accumulated over resumes)
      seed<S>/textual/          a plain `leti run` directory (iteration 0 = the baseline)
      seed<S>/binary/           same warm start, seed and config except the training text
      seed<S>/constant/, seed<S>/passing/   (only when --arms asks for them)
      summary.json, report.md, report.html, *.png

Every arm is driven by the same loop as `leti run` (leti.loop.runner.run). Resuming is the
loop's: rerunning the command skips every finished stage, and rerunning it with more arms runs
only the new ones. Until the first training step every arm does the same thing: iteration 0
evaluates the same model with the same seed and prompts, and iteration 1 samples and executes
the same programs. So the first arm's files of those two stages are copied into the others
(also into arms added later) instead of being computed again.

DEMO is marked by demo.json, written before anything else: --run-dir may be new, empty, or a
folder that the demo made (to resume it); any other folder is refused, so that the demo never
writes its report over a user's files. summary.json describes the finished arms only: it is
removed when an invocation starts and written again when it stops; if an arm fails, the summary
and report of the arms that did finish are written (marked incomplete, naming the arm and the
error) before the error is shown. The passing arm is refused up front with the --quick preset:
its model passes none of its training samples, so that arm would have nothing to train on.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from leti.config import RunConfig, load_yaml_text
from leti.demo.config import (
    ARM_LABEL,
    ARMS,
    DEFAULT_ARMS,
    DemoConfig,
    arm_config,
    load_demo_config,
    preset_path,
    select_arms,
    warmstart_for,
)
from leti.demo.summary import make_summary
from leti.demo.warmstart import cached_path, check_cache, warm_start, write_corpus
from leti.errors import LetiError, plural
from leti.execution.sandbox import resolve_sandbox
from leti.jsonl import is_number, json_error_reason
from leti.loop.checks import config_differences
from leti.loop.rundir import RunDir, write_json_atomic, write_text_atomic
from leti.report import build_report, load_run

STATE_FILE = "demo.json"  # marks a folder as the demo's own (see _check_demo_dir)


def _check_demo_dir(root: Path) -> None:
    """--run-dir must be new, empty, or a demo folder (demo.json, written first, marks it): the
    demo writes summary.json, report.md, ... at its top, so it must never write into a folder of
    something else (`--run-dir docs`). A kill -9 before demo.json was in place can only have
    left its temporary file (write_json_atomic), which is no obstacle."""
    if not root.is_dir() or (root / STATE_FILE).exists():
        return
    foreign = sorted(p.name for p in root.iterdir() if p.name != STATE_FILE + ".tmp")
    if foreign:
        # a run is known by the files it writes first, not by .lock: a refused `leti run` (or
        # `leti evaluate --out`) in a user's folder may have left one there. .lock, hidden, sorts
        # first: it is named only when nothing else is there (naming it invited deleting a lock).
        shown = [n for n in foreign if n != ".lock"] or foreign
        what = ("it is a `leti run` directory" if {"run.json", "config.yaml"} & set(foreign)
                else f"it holds '{shown[0]}'")
        raise LetiError(f"{root}: not empty and not a leti demo directory ({what}); pass a new or empty --run-dir")


def _read_state(path: Path) -> dict:
    """demo.json: one error line naming it when it is damaged (not a traceback)."""
    fix = "it holds this demo's options, so the demo cannot resume without it: restore it, or pass a new --run-dir"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LetiError(f"{path}: not valid JSON ({json_error_reason(e)}); {fix}") from None
    missing = next((k for k in ("settings", "stages") if not isinstance(state, dict) or k not in state), None)
    if missing is not None:
        raise LetiError(f"{path}: not a leti demo record (no '{missing}'); {fix}")
    stages = state["stages"]
    if not isinstance(stages, dict) or not all(is_number(v) for v in stages.values()):
        raise LetiError(f"{path}: 'stages' must map stage names to seconds; {fix}")
    return state


class _Clock:
    """Wall seconds per stage, added to what earlier (killed) invocations recorded."""

    def __init__(self, state_path: Path, settings: dict) -> None:
        self.path = state_path
        old = _read_state(state_path) if state_path.exists() else None
        if old is not None and old.get("settings") != settings:
            raise LetiError(f"{state_path.parent}: this demo directory was started with {old.get('settings')}, "
                            f"not {settings}; use the same options or another --run-dir")
        self.state = old or {"settings": settings, "stages": {}}

    def save(self) -> None:
        write_json_atomic(self.path, self.state)

    def add(self, stage: str, seconds: float) -> None:
        stages = self.state["stages"]
        stages[stage] = round(stages.get(stage, 0.0) + seconds, 2)
        self.state["wall_seconds"] = round(sum(stages.values()), 2)
        self.save()


def _share_untrained_stages(seed_dir: Path, arm: str) -> None:
    """Copy the stages that only the untrained model decides, iteration 0's evaluation and
    iteration 1's training samples with their execution results, from an arm that finished them
    (also in an earlier invocation). Arms differ only in how those results become training
    text, so these files are identical by construction and an arm need not compute them again."""
    target = RunDir(seed_dir / arm)
    others = [RunDir(seed_dir / a) for a in ARMS if a != arm]
    for marker, data, k in (("eval", "eval_samples", 0), ("samples_done", "samples", 1)):
        source = next((rd for rd in others if getattr(rd, marker)(k).exists()), None)
        if source is None or getattr(target, marker)(k).exists():
            continue
        getattr(target, marker)(k).parent.mkdir(parents=True, exist_ok=True)
        # the data first (it replaces a partial file of a killed run), the marker last: its
        # presence marks the stage done
        shutil.copyfile(getattr(source, data)(k), getattr(target, data)(k))
        # atomically: a marker cut short by a kill would exist yet be invalid JSON
        write_text_atomic(getattr(target, marker)(k), getattr(source, marker)(k).read_text(encoding="utf-8"))


def _finished_arms(root: Path, seeds: list[int], iterations: int) -> list[str]:
    """The arms whose runs finished every iteration for every seed, in ARMS order: the ones this
    invocation ran plus any an earlier one finished (rerunning with fewer arms must not drop
    finished ones: the report shows every run on disk anyway). An arm stopped part-way is left out:
    its curve would read as a result. One continued further with `leti run` counts: the summary
    reads it at the demo's iterations."""
    def finished(arm: str) -> bool:
        return all(set(range(iterations + 1)) <= RunDir(root / f"seed{s}" / arm).finished_iterations() for s in seeds)
    return [a for a in ARMS if finished(a)]


def _continued_past(rd: RunDir, iterations: int) -> int | None:
    """How far an arm that finished the demo's `iterations` was continued with plain `leti run`
    (its last finished iteration, or its config's `iterations` if that is more); None if it was
    not. The demo leaves such an arm alone: driven by the loop with the demo's iterations it was
    "already finished", and its config.yaml would then record the demo's shorter plan."""
    done = rd.finished_iterations()
    if not set(range(iterations + 1)) <= done:
        return None
    planned = load_yaml_text(rd.config_path.read_text(encoding="utf-8")).get("iterations") if rd.config_path.is_file() else None
    reach = max(*done, planned if isinstance(planned, int) and not isinstance(planned, bool) else 0)
    return reach if reach > iterations else None


def _arm_run_config(demo: DemoConfig, seed: int, arm: str) -> RunConfig:
    """The config run_demo gives the arm: its warm start's cache folder (built or not yet) and
    the corpus folder that write_corpus makes in it."""
    model = cached_path(warmstart_for(demo, seed))
    return arm_config(demo, seed, str(model), arm, corpus_dir=str(model / "corpus"))


def _check_arms_unchanged(root: Path, demo: DemoConfig, seed_list: list[int], arms: tuple[str, ...]) -> None:
    """An arm started with another demo config (an edited --config file) is refused before
    anything runs, in the demo config's own terms (run.FIELD; the warmstart section by the model
    it gives): left to the arm's own check, it came after the warm start, with `leti run`'s
    fixes (--set, which the demo lacks), and after a finished demo's summary was removed."""
    for s in seed_list:
        for arm in arms:
            rd = RunDir(root / f"seed{s}" / arm)
            if not (rd.config_path.is_file() and rd.has_output()):
                continue  # a new arm (or one that wrote nothing yet) starts with this config
            changed = config_differences(rd, _arm_run_config(demo, s, arm))
            if not changed:
                continue
            named = [f"{'' if k == 'task' else 'run.'}{k} was {before!r}, now {now!r}"
                     for k, before, now, _ in changed if k not in ("model", "trainer.pretrain_corpus")]
            models = [(Path(str(before)), Path(str(now))) for k, before, now, _ in changed if k == "model"]
            if not named and models and models[0][0].name == models[0][1].name:
                # the same warm start (its folder is named by its config's hash) in another cache folder
                was, now = (p.parent.parent for p in models[0])
                raise LetiError(f"{root}: this demo directory was started with its warm start in the cache folder "
                                f"{was}, now {now}; set LETI_CACHE_DIR={was} as when it started, or use a new --run-dir")
            if {"model", "trainer.pretrain_corpus"} & {k for k, *_ in changed}:
                named.append("the warmstart section differs")
            raise LetiError(f"{root}: this demo directory was started with another demo config ({'; '.join(named)}); "
                            "restore the demo config it was started with, or use a new --run-dir")


def _check_arms_fit_preset(arms: tuple[str, ...], cfg_path: Path) -> None:
    """The passing arm trains on passing samples only; the --quick preset's model passes none, so
    the loop would stop at that arm's first training stage, after the other arms' minutes."""
    if "passing" in arms and cfg_path.resolve() == preset_path(True).resolve():
        raise LetiError("--arms passing: the --quick preset's model passes none of its training samples, so the "
                        "passing arm would have nothing to train on; leave passing out of --arms, or run without --quick")


def _write_summary(root: Path, seed_list: list[int], arms: list[str], clock: _Clock, demo: DemoConfig,
                   iterations: int, incomplete: dict | None = None) -> dict:
    t0 = time.time()
    histories = {s: {arm: load_run(root / f"seed{s}" / arm, arm) for arm in arms} for s in seed_list}
    # every arm at the demo's own iterations, also one continued further with `leti run`
    summary = make_summary(histories, clock.state, asdict(demo.warmstart), iterations=iterations)
    if incomplete is not None:
        summary["incomplete"] = incomplete
        stopped = (f"INCOMPLETE: the demo stopped in seed {incomplete['seed']}'s {incomplete['stage']} "
                   f"({incomplete['error']}); this summary covers only the arms that finished ({', '.join(arms)}).")
        summary["note"] = f"{stopped} {summary['note']}"
        summary["arms_note"] = f"{stopped} {summary['arms_note']}".strip()
    write_json_atomic(root / "summary.json", summary)
    build_report(root)
    clock.add("report", time.time() - t0)
    summary["wall_seconds"] = clock.state["wall_seconds"]
    write_json_atomic(root / "summary.json", summary)
    return summary


def _summarise_after_failure(root: Path, seed_list: list[int], iterations: int, clock: _Clock, demo: DemoConfig,
                             where: tuple[int, str], error: BaseException, progress: bool) -> None:
    """An arm (or a warm start) failed: summary.json and the report cover the arms that finished,
    marked incomplete, so that no summary of an earlier invocation is left to pass for this one.
    A failure here is only reported: the original error is the one to show."""
    try:
        arms = _finished_arms(root, seed_list, iterations)
        if not arms:
            if any(root.glob("seed*/*/metrics.jsonl")):
                build_report(root)
            return
        message = "interrupted" if isinstance(error, KeyboardInterrupt) else (
            str(error) if isinstance(error, LetiError) else f"{type(error).__name__}: {error}")
        _write_summary(root, seed_list, arms, clock, demo, iterations,
                       incomplete={"seed": where[0], "stage": where[1], "error": " ".join(message.split())})
        if progress:
            print(f"demo: stopped in seed {where[0]}'s {where[1]}; summary of the finished arms "
                  f"({', '.join(arms)}) in {root / 'summary.json'}")
    except Exception as e:  # the arm's error is the one that matters
        print(f"leti: warning: could not write the summary of the finished arms: {e}", file=sys.stderr)


def run_demo(run_dir: str | Path, seed: int = 0, seeds: int = 1, quick: bool = False,
             config: str | Path | None = None, threads: int | None = None, progress: bool = True,
             arms: str | Sequence[str] = DEFAULT_ARMS) -> dict:
    """Run (or resume) the demo; returns the summary (also written to summary.json).

    Refused before anything is created: a --run-dir that is neither new, empty nor a demo folder,
    a damaged demo.json, other options than the folder was started with, the passing arm with
    the --quick preset, no sandbox (unless the config's run.execution.sandbox is none) and a
    warm-start cache that cannot be written. If an arm fails, the summary and report of the finished arms are written
    (marked incomplete) and the error is raised."""
    from leti.loop.runner import run as run_loop

    if seeds < 1:
        raise LetiError(f"--seeds must be >= 1, got {seeds}")
    if seed < 0:  # the run's sampling seeds derive from it and must be >= 0: refused now, not after a warm start
        raise LetiError(f"--seed must be >= 0, got {seed}")
    if threads is not None and threads < 1:  # 0 would silently mean torch's default
        raise LetiError(f"--threads {threads}: must be >= 1 (leave it out for torch's choice)")
    arms = select_arms(arms)
    root = Path(run_dir)
    if root.exists() and not root.is_dir():
        raise LetiError(f"--run-dir {root} is a file; pass a directory (it is created if missing)")
    cfg_path = Path(config) if config else preset_path(quick)
    demo: DemoConfig = load_demo_config(cfg_path)  # before creating anything: bad input fails clean
    _check_arms_fit_preset(arms, cfg_path)
    _check_demo_dir(root)
    seed_list = list(range(seed, seed + seeds))
    clock = _Clock(root / STATE_FILE, {"config": str(cfg_path.name), "seeds": seed_list, "quick": quick})
    _check_arms_unchanged(root, demo, seed_list, arms)
    # Now, not at the first arm's executor after minutes of warm start: no sandbox (the CLI adds
    # the demo's way to go without one), a cache folder that cannot be written.
    first = arm_config(demo, seed, "m", "textual")
    resolve_sandbox(first.execution.sandbox)
    for s in seed_list:
        check_cache(warmstart_for(demo, s))
    if threads:
        torch.set_num_threads(threads)
    root.mkdir(parents=True, exist_ok=True)
    clock.save()  # the folder is marked as the demo's before anything else is written into it
    # A summary of an earlier invocation would not cover what this one adds: a kill -9 must leave
    # none rather than a stale one. It is written again when this invocation stops.
    (root / "summary.json").unlink(missing_ok=True)
    iterations = first.iterations  # the same in every arm
    where = (seed, "warm start")
    try:
        for s in seed_list:
            where = (s, "warm start")
            t0 = time.time()
            ws_cfg = warmstart_for(demo, s)
            model = warm_start(ws_cfg, progress=progress)
            corpus = write_corpus(ws_cfg, model)
            clock.add(f"seed{s}/warmstart", time.time() - t0)
            for arm in arms:
                where = (s, f"{arm} arm")
                t0 = time.time()
                arm_dir = root / f"seed{s}" / arm
                if (reach := _continued_past(RunDir(arm_dir), iterations)) is not None:
                    print(f"leti: note: seed {s}'s {arm} arm was continued past the demo's "
                          f"{plural(iterations, 'iteration')} with `leti run` (to iteration {reach}): left as it is, "
                          f"and compared with the other arms at iteration {iterations}", file=sys.stderr)
                    continue
                _share_untrained_stages(root / f"seed{s}", arm)
                if progress:
                    print(f"demo: seed {s}, {ARM_LABEL[arm]} -> {arm_dir}")
                run_loop(arm_config(demo, s, str(model), arm, corpus_dir=str(corpus)), arm_dir, terminal_bars=True)
                clock.add(f"seed{s}/{arm}", time.time() - t0)
    except (Exception, KeyboardInterrupt) as e:
        _summarise_after_failure(root, seed_list, iterations, clock, demo, where, e, progress)
        raise
    return _write_summary(root, seed_list, _finished_arms(root, seed_list, iterations), clock, demo, iterations)
