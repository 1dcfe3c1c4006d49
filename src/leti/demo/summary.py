"""summary.json of a demo: pure function of the arms' run histories (leti.report.data)."""

from __future__ import annotations

import math
from dataclasses import replace
from statistics import mean, stdev

from leti.feedback.training_text import CONSTANT_FEEDBACK
from leti.report import RunHistory, compare_arms, final_difference

# What the control arms train on (the two paper arms need no explanation in the summary).
_CONTROL_NOTE = {"constant": f"constant: every feedback span says \"{CONSTANT_FEEDBACK}\"",
                 "passing": "passing: trained on passing samples only, without a feedback span"}


def _rows(h: RunHistory) -> list[dict]:
    return [{"iteration": p.iteration, "gradient_steps": p.gradient_steps,
             "train_pass_rate": p.train_pass_rate, "heldout_pass_at_1": p.eval_pass_at_1,
             "heldout_pass_at_1_stderr": p.eval_stderr.get("pass@1")}
            for p in h.points]


def _mean_or_none(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return mean(vals) if vals and len(vals) == len(values) else None


def _stderr_of_seed_mean(stderrs: list[float | None]) -> float | None:
    """Standard error of a mean over seeds from each seed's own standard error: the seeds'
    evaluations are independent, so sqrt(sum se^2) / N. Evaluation noise only (see _seed_sd)."""
    if not stderrs or any(se is None for se in stderrs):
        return None
    return math.sqrt(sum(se * se for se in stderrs)) / len(stderrs)  # type: ignore[operator]


def _seed_sd(values: list[float | None]) -> float | None:
    """Sample standard deviation across seeds (ddof=1): the run-to-run spread, which includes
    training noise that a single run's standard error does not. None for one seed."""
    vals = [v for v in values if v is not None]
    return stdev(vals) if len(vals) >= 2 and len(vals) == len(values) else None


def _averaged(per_seed: list[list[dict]]) -> list[dict]:
    """Per-iteration means over seeds (only iterations every seed finished)."""
    n = min(len(rows) for rows in per_seed)
    out = []
    for i in range(n):
        cells = [rows[i] for rows in per_seed]
        out.append({
            "iteration": cells[0]["iteration"],
            "gradient_steps": _mean_or_none([c["gradient_steps"] for c in cells]),
            "train_pass_rate": _mean_or_none([c["train_pass_rate"] for c in cells]),
            "heldout_pass_at_1": _mean_or_none([c["heldout_pass_at_1"] for c in cells]),
            "heldout_pass_at_1_stderr": _stderr_of_seed_mean([c.get("heldout_pass_at_1_stderr") for c in cells]),
        })
    return out


def _points(final: float | None, baseline: float | None) -> float | None:
    return None if None in (final, baseline) else round(100 * (final - baseline), 2)


def _vs_binary(arm: RunHistory, binary: RunHistory) -> dict:
    """Final pass@1 of `arm` minus the binary arm's, in points, paired over their shared held-out
    problems (unpaired, without an error, if the runs lack per-problem results)."""
    diff = final_difference(arm, binary)
    if diff is None:
        return {"difference_points": None, "stderr_points": None, "paired_problems": 0}
    return {"difference_points": round(100 * diff.mean, 2),
            "stderr_points": None if diff.stderr is None else round(100 * diff.stderr, 2),
            "paired_problems": diff.n_problems}


def _seed_summary(arms: dict[str, RunHistory]) -> dict:
    """One seed: the shared baseline and, per arm, final pass@1 (± its standard error over
    problems), gain, gradient steps and the paired difference to the binary arm."""
    first = next(iter(arms.values()))
    baseline = first.baseline_pass_at_1  # the same in every arm (shared)
    out = {
        "baseline_pass_at_1": baseline,
        "baseline_pass_at_1_stderr": first.baseline_pass_at_1_stderr,
        "final_pass_at_1": {a: h.final_pass_at_1 for a, h in arms.items()},
        "final_pass_at_1_stderr": {a: h.final_pass_at_1_stderr for a, h in arms.items()},
        "gain_points": {a: _points(h.final_pass_at_1, baseline) for a, h in arms.items()},
        "gradient_steps": {a: h.points[-1].gradient_steps if h.points else 0 for a, h in arms.items()},
        "iterations": {a: _rows(h) for a, h in arms.items()},
    }
    if "binary" in arms:
        out["vs_binary"] = {a: _vs_binary(h, arms["binary"]) for a, h in arms.items() if a != "binary"}
    if "textual" in arms and "binary" in arms:  # the paper's steps comparison
        out["comparison"] = compare_arms(arms["textual"], arms["binary"])
    return out


def _reach(h: RunHistory) -> int:
    """The last iteration `h` finished (what its folder holds past the demo's, not its plan)."""
    return h.last_point.iteration if h.last_point else 0


def _past_note(past: dict[tuple[int, str], int], iterations: int) -> str:
    """One sentence naming the arms that were continued past the demo's iterations."""
    named = ", ".join(f"seed {s}'s {a} arm (to iteration {n})" for (s, a), n in past.items())
    return (f"Every arm is compared at the demo's iteration {iterations}: {named} "
            f"{'was' if len(past) == 1 else 'were'} continued past it with `leti run`; the later iterations "
            "are left out here.")


def make_summary(histories: dict[int, dict[str, RunHistory]], clock: dict, warmstart: dict,
                 iterations: int | None = None) -> dict:
    """`histories[seed][arm]` -> the summary: seed means at top level, per-seed detail below.
    Every seed must have the same arms (the demo runs each arm for every seed).

    `iterations`: the demo's own. Every arm is read up to it, so that each number (final scores,
    differences, curves, gradient steps) is taken at the same iteration of every arm; an arm
    continued further with plain `leti run` is named in `past_demo_iterations` and the notes."""
    seeds = sorted(histories)
    arms = list(histories[seeds[0]])
    past: dict[tuple[int, str], int] = {}
    if iterations is not None:
        past = {(s, a): _reach(h) for s in seeds for a, h in histories[s].items() if _reach(h) > iterations}
        histories = {s: {a: replace(h, points=[p for p in h.points if p.iteration <= iterations])
                         for a, h in by_arm.items()} for s, by_arm in histories.items()}
    past_note = _past_note(past, iterations) if past and iterations is not None else ""
    per_seed = {str(s): _seed_summary(histories[s]) for s in seeds}

    def seed_mean(key: str, arm: str) -> float | None:
        return _mean_or_none([per_seed[str(s)][key][arm] for s in seeds])

    def across(key: str, arm: str) -> list:
        return [per_seed[str(s)][key][arm] for s in seeds]

    baseline = _mean_or_none([per_seed[str(s)]["baseline_pass_at_1"] for s in seeds])
    finals = {a: seed_mean("final_pass_at_1", a) for a in arms}
    vs_binary = {}
    if "binary" in arms:
        for a in (a for a in arms if a != "binary"):
            diffs = [v["difference_points"] for v in across("vs_binary", a)]
            vs_binary[a] = {"difference_points": _mean_or_none(diffs),
                            "stderr_points": _stderr_of_seed_mean([v["stderr_points"] for v in across("vs_binary", a)]),
                            "seed_sd_points": _seed_sd(diffs)}
    return {
        "seeds": seeds,
        "arms": arms,
        "baseline_pass_at_1": baseline,
        "baseline_pass_at_1_stderr": _stderr_of_seed_mean([per_seed[str(s)]["baseline_pass_at_1_stderr"] for s in seeds]),
        "final_pass_at_1": finals,
        # Evaluation noise of the (seed-mean) final score: standard error over problems.
        "final_pass_at_1_stderr": {a: _stderr_of_seed_mean(across("final_pass_at_1_stderr", a)) for a in arms},
        # Run-to-run spread, training noise included; null with one seed.
        "final_pass_at_1_seed_sd": {a: _seed_sd(across("final_pass_at_1", a)) for a in arms},
        **({"vs_binary": vs_binary} if vs_binary else {}),
        "gain_points": {a: _points(finals[a], baseline) for a in arms},
        "gradient_steps": {a: seed_mean("gradient_steps", a) for a in arms},
        # Flat keys of the two-arm summary, kept for readers of earlier demos' summary.json.
        **{f"{a}_final_pass_at_1": finals[a] for a in arms},
        **({"textual_gain_points": _points(finals["textual"], baseline)} if "textual" in arms else {}),
        "wall_seconds": clock.get("wall_seconds"),
        "stage_seconds": clock.get("stages", {}),
        "iterations": {a: _averaged([per_seed[str(s)]["iterations"][a] for s in seeds]) for a in arms},
        "per_seed": per_seed,
        "warmstart": warmstart,
        "note": ("pass@1 values are fractions in [0, 1]; gain_points = 100 x (final - baseline); iteration 0 "
                 "is the warm start, shared by every arm; with several seeds, top-level numbers are means over "
                 "seeds (each seed has its own warm start, task split and sampling). *_stderr is one standard "
                 "error over the held-out problems (for a mean over seeds, sqrt(sum of squares) / seeds): it "
                 "covers problem and sampling noise of the evaluation, not training seed-to-seed variance, "
                 "which final_pass_at_1_seed_sd (the sample sd across seeds, with several) shows. vs_binary: "
                 "final pass@1 minus the binary arm's in points, its stderr from per-problem paired differences."
                 + "".join(f" {_CONTROL_NOTE[a]}." for a in arms if a in _CONTROL_NOTE)
                 + (f" {past_note}" if past_note else "")),
        # what report.md says of the arms (the note above is about this file's keys)
        "arms_note": " ".join([*(f"{_CONTROL_NOTE[a]}." for a in arms if a in _CONTROL_NOTE),
                               *([past_note] if past_note else [])]),
        **({"past_demo_iterations": {f"seed{s}/{a}": n for (s, a), n in past.items()}} if past else {}),
    }
