"""summary.json of a demo: pure function of the arms' run histories (leti.report.data)."""

from __future__ import annotations

from statistics import mean

from leti.report import RunHistory, compare_arms


def _rows(h: RunHistory) -> list[dict]:
    return [{"iteration": p.iteration, "gradient_steps": p.gradient_steps,
             "train_pass_rate": p.train_pass_rate, "heldout_pass_at_1": p.eval_pass_at_1}
            for p in h.points]


def _mean_or_none(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return mean(vals) if vals and len(vals) == len(values) else None


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
        })
    return out


def make_summary(histories: dict[int, dict[str, RunHistory]], clock: dict, warmstart: dict) -> dict:
    """`histories[seed][arm]` -> the summary: seed means at top level, per-seed detail below."""
    seeds = sorted(histories)
    per_seed = {}
    for s in seeds:
        t, b = histories[s]["textual"], histories[s]["binary"]
        per_seed[str(s)] = {
            "baseline_pass_at_1": t.baseline_pass_at_1,
            "textual_final_pass_at_1": t.final_pass_at_1,
            "binary_final_pass_at_1": b.final_pass_at_1,
            "comparison": compare_arms(t, b),
            "iterations": {"textual": _rows(t), "binary": _rows(b)},
        }
    top = {k: _mean_or_none([per_seed[str(s)][k] for s in seeds])
           for k in ("baseline_pass_at_1", "textual_final_pass_at_1", "binary_final_pass_at_1")}
    gain = (top["textual_final_pass_at_1"] - top["baseline_pass_at_1"]
            if None not in (top["textual_final_pass_at_1"], top["baseline_pass_at_1"]) else None)
    return {
        "seeds": seeds,
        **top,
        "textual_gain_points": None if gain is None else round(100 * gain, 2),
        "wall_seconds": clock.get("wall_seconds"),
        "stage_seconds": clock.get("stages", {}),
        "iterations": {arm: _averaged([per_seed[str(s)]["iterations"][arm] for s in seeds])
                       for arm in ("textual", "binary")},
        "per_seed": per_seed,
        "warmstart": warmstart,
        "note": ("pass@1 values are fractions in [0, 1]; iteration 0 is the warm start; with several "
                 "seeds, top-level numbers are means over seeds (each seed has its own warm start, "
                 "task split and sampling)."),
    }
