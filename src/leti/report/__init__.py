"""Run directory -> report.md, single-file report.html and PNG plots (`leti report RUN_DIR`), and
comparisons.json (textual vs binary arms: gradient steps to reach, step ratio) where there are any.

Works on a plain `leti run` directory (one run) and on a `leti demo` directory (runs under
`seed<S>/<arm>/`, plus the demo's summary.json); the report only reads files, so it can be
rebuilt at any time, also while a run is still going.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from leti.config import RESUMABLE_CHANGES
from leti.errors import LetiError, plural
from leti.feedback.training_text import BAD, FEEDBACK_OPEN, GOOD
from leti.loop.rundir import run_mode, write_text_atomic
from leti.report.data import (
    EVAL_SETTINGS,
    RunHistory,
    final_difference,
    load_run,
    point_difference,
    read_summary,
    shared_metric,
    steps_to_reach,
)
from leti.report.plots import plot_code_loss, plot_failures, plot_pass_at_1
from leti.report.render import (
    Block,
    Code,
    Heading,
    Image,
    Para,
    Table,
    code,
    esc,
    markup,
    to_html,
    to_markdown,
)

_ARM_ORDER = {"textual": 0, "binary": 1, "constant": 2, "passing": 3}  # the demo's arms (leti.demo.config.ARMS)

__all__ = ["RunHistory", "arm_pairs", "build_report", "compare_arms", "find_runs", "load_run", "final_difference", "steps_to_reach"]

# Said once under every report's first table, so a reader knows what the ± covers.
CODE_LOSS = "loss on held-out code"  # trainer.pretrain_heldout_fraction's files (not the held-out problems)
STDERR_NOTE = ("± is one standard error over the held-out problems (for differences between arms, of the "
               "per-problem paired difference): it covers which problems were drawn and the sampling noise of "
               "the evaluation, not the variation between training seeds.")


def find_runs(root: Path) -> list[tuple[str, Path]]:
    """(name, path) of every run under `root`: itself, or `*/metrics.jsonl` up to two levels
    down (demo layout `seed<S>/<arm>`). A name is the run's path under `root` (`seed0/textual`),
    without the first level when every run is under the same one (a demo with one seed: `textual`),
    so no two runs share a name."""
    # run.json is written when a run starts, metrics.jsonl when its iteration 0 ends: a run still
    # in (or stopped in) iteration 0 is listed too, with no finished iteration, not left out unsaid
    markers = ("metrics.jsonl", "run.json")
    if any((root / m).exists() for m in markers):
        return [(root.resolve().name, root)]  # resolved: `leti report .` names the folder, not ""
    found = sorted({p.parent for m in markers for pattern in (f"*/{m}", f"*/*/{m}") for p in root.glob(pattern)})
    if not found:
        raise LetiError(f"{root}: no run found (no metrics.jsonl or run.json here or in its subfolders); pass a "
                        "`leti run` or `leti demo` directory")
    rel = [p.relative_to(root).as_posix() for p in found]
    if all("/" in r for r in rel) and len({r.split("/")[0] for r in rel}) == 1:
        rel = [r.split("/", 1)[1] for r in rel]
    return list(zip(rel, found, strict=True))



def plot_file_names(histories: list[RunHistory]) -> dict[Path, str]:
    """Run root -> the file name of its failure-type plot: `failures_<name>.png`, with the name's
    `/` as `_` and anything but letters, digits, `.`, `-` and `_` as `_`; numbered when two runs
    would get the same file (`old/textual` and `old_textual`)."""
    out: dict[Path, str] = {}
    for h in histories:
        slug = re.sub(r"[^A-Za-z0-9._-]", "_", h.name.replace("/", "_")).strip(".") or "run"
        name, i = f"failures_{slug}.png", 2
        while name in out.values():
            name, i = f"failures_{slug}-{i}.png", i + 1
        out[h.root] = name
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _pct_pm(x: float | None, stderr: float | None) -> str:
    """"35.9 ± 3.1" (percent); the bare number when the error is unknown (older runs)."""
    return _pct(x) if x is None or stderr is None else f"{100 * x:.1f} ± {100 * stderr:.1f}"


def _points_pm(diff: float | None, stderr: float | None) -> str:
    """A difference in percentage points: "+18.7 ± 4.2"."""
    if diff is None:
        return "n/a"
    return f"{100 * diff:+.1f}" + ("" if stderr is None else f" ± {100 * stderr:.1f}")


def compare_arms(textual: RunHistory, binary: RunHistory) -> dict:
    """The paper's comparison, on each arm's whole run: the score to reach is the binary arm's
    final held-out pass@1 (its last evaluated iteration, however many iterations it ran); the
    gradient steps after which the textual arm first had it (textual_steps_to_reach, None: not
    within its run) against those after which the binary arm first had it (binary_steps), and
    their ratio. Beside it, a budget-matched difference: textual minus binary at
    `common_iteration`, the last iteration both arms evaluated, paired over problems with its
    standard error (the arms' final scores may come after different numbers of iterations).

    `metric` is the score compared: pass@1, or the smallest pass@k of runs without pass@1 (the
    *_pass_at_1 fields then hold that pass@k). "final" is each arm's last evaluated iteration
    (*_final_iteration, *_final_steps), which is not its last iteration (*_last_iteration,
    *_total_steps) when that one was not evaluated. Each arm's own baseline (iteration 0) is
    *_baseline_pass_at_1.

    A step count is that of the first evaluation at or above the score: the arm got there after
    more than *_last_below_steps (its evaluation before, still below) and at most that many.
    evaluated_at_different_iterations: up to the earlier of the arms' final iterations, one arm
    evaluated iterations the other did not (eval.every), so the two counts are bounded by
    different evaluation grids."""
    metric = (binary.metric if binary.metric == textual.metric else None) or "pass@1"
    whole = {"textual": textual, "binary": binary}
    tp, bp = textual.point_with(metric, last=True), binary.point_with(metric, last=True)
    target = bp.eval_metrics[metric] if bp else None
    t_steps = None if target is None else steps_to_reach(textual, target, metric)
    b_steps = None if target is None else steps_to_reach(binary, target, metric)

    def baseline(h: RunHistory) -> float | None:
        return h.baseline_point.eval_metrics.get(metric) if h.baseline_point else None

    def last_below(h: RunHistory, steps: int | None) -> int | None:
        """Gradient steps of `h`'s last evaluation before the one that first had the score."""
        before = [p for p in h.points if p.eval_metrics.get(metric) is not None and steps is not None
                  and p.gradient_steps < steps]
        return before[-1].gradient_steps if before else None

    # Reached at the textual arm's first evaluation after training: it may have needed fewer
    # steps, which evaluating once per iteration cannot show.
    first_trained = next((p for p in textual.points if p.iteration > 0 and p.eval_metrics.get(metric) is not None), None)
    b_base, b_se = baseline(binary), bp.eval_stderr.get(metric) if bp else None
    # The budget-matched difference: at the last iteration both evaluated (an arm that ran more
    # iterations had more training budget by its final score).
    t_evals, b_evals = _evaluated(textual, metric), _evaluated(binary, metric)
    common = max(t_evals & b_evals, default=None)
    at = {arm: next(p for p in h.points if p.iteration == common) if common is not None else None
          for arm, h in whole.items()}
    diff = point_difference(at["textual"], at["binary"], metric) if common is not None else None
    upto = min(tp.iteration, bp.iteration) if tp and bp else -1
    different_grids = {i for i in t_evals ^ b_evals if i <= upto}

    return {
        "metric": metric,
        "binary_final_pass_at_1": target,
        "textual_final_pass_at_1": tp.eval_metrics[metric] if tp else None,
        "binary_final_pass_at_1_stderr": b_se,
        "textual_final_pass_at_1_stderr": tp.eval_stderr.get(metric) if tp else None,
        "binary_final_iteration": bp.iteration if bp else None,
        "textual_final_iteration": tp.iteration if tp else None,
        "binary_final_steps": bp.gradient_steps if bp else None,
        "textual_final_steps": tp.gradient_steps if tp else None,
        "textual_steps_to_reach": t_steps,
        "binary_steps": b_steps,
        # the paper's "fewer than half the gradient steps" is step_ratio >= 2 (None: not reached
        # within the textual arm's run, or reached before training, where a ratio means nothing)
        "step_ratio": b_steps / t_steps if t_steps and b_steps else None,
        "textual_last_below_steps": last_below(textual, t_steps),
        "binary_last_below_steps": last_below(binary, b_steps),
        "evaluated_at_different_iterations": bool(different_grids),
        "textual_reached_at_first_evaluation": bool(t_steps and first_trained and t_steps == first_trained.gradient_steps),
        # the binary arm's gain over its baseline is within one standard error: the score to
        # reach is the baseline's, up to evaluation noise
        "binary_gain_within_stderr": bool(None not in (target, b_base, b_se) and 0 < target - b_base <= b_se),
        **{f"{arm}_{field}": getattr(h.points[-1], attr) if h.points else None for arm, h in whole.items()
           for field, attr in (("last_iteration", "iteration"), ("total_steps", "gradient_steps"))},
        "textual_baseline_pass_at_1": baseline(textual),
        "binary_baseline_pass_at_1": b_base,
        # textual minus binary at common_iteration (the last both evaluated), and its paired
        # standard error (None when not paired by problem)
        "common_iteration": common,
        "textual_pass_at_1_at_common_iteration": at["textual"].eval_metrics[metric] if common is not None else None,
        "binary_pass_at_1_at_common_iteration": at["binary"].eval_metrics[metric] if common is not None else None,
        "difference_at_common_iteration": diff.mean if diff else None,
        "difference_at_common_iteration_stderr": diff.stderr if diff else None,
        "paired_problems": diff.n_problems if diff else 0,
    }


# Config fields that say which arm a run is (textual / binary feedback) or that change only where
# or how fast it ran: two runs whose configs differ only in these are the two arms of one
# comparison. Everything else (model, task, seed, sampling, evaluation, trainer) must be equal.
_ARM_FIELDS = {"training_text.textual_feedback", "training_text.feedback_content", "training_text.keep_failures",
               "training_text.postprocess_hints", "training_text.stop_hint", "training_text.feedback_style",
               "execution.feedback_style"}
_WHERE_OR_HOW_FAST = RESUMABLE_CHANGES | {"eval.every", "trainer.gradient_checkpointing"}  # and sampling.vllm.*


def run_arm(root: Path) -> tuple[str, tuple] | None:
    """("textual" | "binary", the comparison key) of a run directory from its config.yaml, or None
    for any other arm (constant feedback, passing only, post-processing hints, no reward token),
    for a `leti sft` run (run.json mode "sft") and for a run without a readable config. The key is
    the config without the fields that pick the arm or only change where and how fast it went."""
    arm, key, _ = _arm_of(root)
    return (arm, key) if arm in ("textual", "binary") and key is not None else None


def _arm_of(root: Path) -> tuple[str | None, tuple | None, str]:
    """(arm or None, comparison key or None, what the run is, in words, when it is no arm)."""
    from leti.config import config_to_dict, flatten_config, load_config

    if run_mode(root) == "sft":
        return None, None, "a `leti sft` run"
    try:
        cfg = load_config(root / "config.yaml")
    except LetiError:
        return None, None, "a run without a readable config.yaml"
    tt = cfg.training_text
    if not (tt.reward_token and tt.keep_failures):
        arm, what = None, "a run trained without the reward token or without failing samples"
    elif tt.textual_feedback and tt.feedback_content == "execution" and not (tt.postprocess_hints or tt.stop_hint):
        arm, what = "textual", "a textual-feedback run"
    elif not tt.textual_feedback:
        arm, what = "binary", "a binary-feedback run (training_text.textual_feedback false)"
    else:
        arm, what = None, "a textual-feedback run with other feedback content or post-processing hints"
    flat = flatten_config(config_to_dict(cfg))
    key = tuple(sorted((k, repr(v)) for k, v in flat.items()
                       if k not in _ARM_FIELDS and k not in _WHERE_OR_HOW_FAST and not k.startswith("sampling.vllm.")))
    return arm, key, what


def _why_not_a_pair(t: RunHistory, b: RunHistory) -> str | None:
    """Why runs named `textual` and `binary` are not the two arms of one comparison (None: they
    are), by the same check as the config-based pairing."""
    (at, tkey, twhat), (ab, bkey, bwhat) = _arm_of(t.root), _arm_of(b.root)
    if at != "textual":
        return f"{code(t.name)} is not a textual-feedback run by its config ({twhat})"
    if ab != "binary":
        return f"{code(b.name)} is not a binary-feedback run by its config ({bwhat})"
    if tkey != bkey:
        tk, bk = dict(tkey or ()), dict(bkey or ())
        differ = sorted(k for k in tk.keys() | bk.keys() if tk.get(k) != bk.get(k))
        more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
        return f"their configs differ in more than the feedback arm ({', '.join(map(esc, differ[:3]))}{more})"
    return None


def _arm_pairs(histories: list[RunHistory]) -> tuple[list[tuple[str, RunHistory, RunHistory]], list[str]]:
    """arm_pairs, and one line for each pair of runs named `textual` and `binary` side by side
    that is not compared (not a textual and a binary arm of the same config)."""
    pairs: list[tuple[str, RunHistory, RunHistory]] = []
    refused: list[str] = []
    seen: set[tuple[Path, Path]] = set()

    def add(label: str, t: RunHistory, b: RunHistory) -> None:
        if (t.root, b.root) in seen:
            return
        seen.add((t.root, b.root))
        # an arm stopped part-way would read as the arm's result: its "final" score and the
        # step ratio against it (the paper's headline) wait for it to finish
        stopped = [h for h in (t, b) if h.unfinished]
        if not stopped:
            pairs.append((label, t, b))
            return
        which = "; ".join(f"{code(h.name)} stopped at iteration {h.last_point.iteration} of {h.planned_iterations}"
                          if h.last_point else f"{code(h.name)} has not finished iteration 0" for h in stopped)
        refused.append(f"{esc(label)}: not compared yet, {which}; an arm's final score and the step ratio wait for "
                       "both to finish (resume a run with the command that started it).")

    by_name = {h.name: h for h in histories}  # names are unique (find_runs)
    for prefix in sorted({n.rsplit("/", 1)[0] if "/" in n else "" for n in by_name}):
        t, b = by_name.get(f"{prefix}/textual" if prefix else "textual"), by_name.get(f"{prefix}/binary" if prefix else "binary")
        if t and b:
            why = _why_not_a_pair(t, b)
            if why is None:
                add(prefix or "textual vs binary", t, b)
            else:
                refused.append(f"{code(t.name)} and {code(b.name)} are not compared as textual vs binary arms: {why}.")
    arms = {h.root: run_arm(h.root) for h in histories}
    for t in histories:
        for b in histories:
            at, ab = arms[t.root], arms[b.root]
            if at and ab and at[0] == "textual" and ab[0] == "binary" and at[1] == ab[1]:
                add(f"{t.name} (textual) vs {b.name} (binary)", t, b)
    return pairs, refused


def arm_pairs(histories: list[RunHistory]) -> list[tuple[str, RunHistory, RunHistory]]:
    """(label, textual run, binary run) for every textual-vs-binary comparison among `histories`:
    runs named `textual` and `binary` side by side (the demo's `seed<S>/<arm>`), and any two runs
    whose configs differ only in the feedback arm (e.g. `leti run configs/mbpp-codegen-350m.yaml`
    and `configs/mbpp-binary-only.yaml` into runs/ under their default names). Runs paired by
    name are checked like those paired by config: a `textual` and a `binary` run of different
    tasks, models or settings, or whose configs are not those arms, are not compared."""
    return _arm_pairs(histories)[0]


def _evaluated(h: RunHistory, metric: str) -> set[int]:
    """The iterations of `h` evaluated for `metric`."""
    return {p.iteration for p in h.points if p.eval_metrics.get(metric) is not None}


def _ended(arm: str, cmp: dict) -> str:
    """"the binary arm ended at 50.0 ± 14.4% after 10 gradient steps", saying so when that is the
    evaluation of an earlier iteration than the arm's last (eval.every > 1, or a run cut short)."""
    score = _pct_pm(cmp[f"{arm}_final_pass_at_1"], cmp.get(f"{arm}_final_pass_at_1_stderr"))
    it, last = cmp.get(f"{arm}_final_iteration"), cmp.get(f"{arm}_last_iteration")
    steps = plural(cmp[f"{arm}_final_steps"], "gradient step")
    if it is None or last is None or it == last:
        return f"the {arm} arm ended at {score}% after {steps}"
    total = plural(cmp[f"{arm}_total_steps"], "gradient step")
    return (f"the {arm} arm was last evaluated at iteration {it} (its last iteration, {last}, after {total}, "
            f"has no evaluation), at {score}% after {steps}")


def _comparison_text(name: str, cmp: dict) -> str:
    metric = cmp.get("metric") or "pass@1"
    target, t_steps, b_steps = cmp["binary_final_pass_at_1"], cmp["textual_steps_to_reach"], cmp["binary_steps"]
    if metric != "pass@1":
        name = f"{name} (held-out {esc(metric)}; pass@1 was not computed)"
    if target is None:
        return f"{name}: the binary arm has no evaluation yet."
    b_base, t_base = cmp.get("binary_baseline_pass_at_1"), cmp.get("textual_baseline_pass_at_1")
    improved = b_base is None or target > b_base + 1e-12
    if improved:
        reached = "" if b_steps is None else f" (first reached after {b_steps})"
    elif abs(target - b_base) <= 1e-12:
        reached = f", the same as before training ({_pct(b_base)}%)"
    else:
        reached = f", below its {_pct(b_base)}% before training"
    if cmp["textual_final_pass_at_1"] is None:
        textual = "the textual arm has no evaluation yet"
    else:
        textual = _ended("textual", cmp)
    head = f"{name}: {_ended('binary', cmp)}{reached}; {textual}."
    if cmp.get("difference_at_common_iteration") is not None:
        # without the ± when its standard error is unknown (one problem, or not paired by problem)
        se, paired = cmp.get("difference_at_common_iteration_stderr"), cmp.get("paired_problems") or 0
        diff = _points_pm(cmp["difference_at_common_iteration"], se)
        how = f"paired over {plural(paired, 'held-out problem')}" + ("" if se is not None else ": no standard error") \
            if paired else "not paired by problem, so no standard error"
        head += (f" Textual minus binary at iteration {cmp['common_iteration']}, the last both evaluated: {diff} "
                 f"points ({how}).")
    if None not in (b_base, t_base) and abs(b_base - t_base) > 1e-12:
        head += f" Before training the arms scored differently: textual {_pct(t_base)}%, binary {_pct(b_base)}%."
    if not improved:
        return head + (" The binary arm did not improve on its own baseline, so there are no gradient steps "
                       "to compare.")
    # said whatever the verdict: a "did not reach" against a gain within noise says as little
    noise = (f" The binary arm's gain over its baseline ({_points_pm(target - b_base, None)} points) is within "
             "one standard error of its score, so the score to reach is its baseline's up to noise, and the step "
             "counts say little.") if cmp.get("binary_gain_within_stderr") else ""
    if t_steps is None:
        return head + _not_reached(cmp) + noise
    if t_steps == 0:
        return head + " The textual arm had the binary arm's final score already before training." + noise
    ratio = f" (binary/textual step ratio {cmp['step_ratio']:.2f})" if cmp.get("step_ratio") else ""
    text = head + (f" The textual arm reached the binary arm's final score after **{t_steps}** "
                   f"{'step' if t_steps == 1 else 'steps'}{ratio}.")
    if cmp.get("evaluated_at_different_iterations"):
        text += (" The arms were not evaluated at the same iterations (eval.every), so each step count is bounded by "
                 f"when that arm was looked at: the textual arm first had the score after {_between(cmp, 'textual')}, "
                 f"the binary arm after {_between(cmp, 'binary')}.")
    elif cmp.get("textual_reached_at_first_evaluation"):
        text += (" That is its first evaluation after training, the earliest that evaluating once per iteration "
                 "can show: it may have needed fewer steps.")
    return text + noise


def _not_reached(cmp: dict) -> str:
    """The textual arm did not reach the binary arm's final score: within how many steps, where it
    ended, and, when it stopped before the binary arm itself got there, that it may yet."""
    steps = plural(cmp["textual_final_steps"], "gradient step")
    score = _pct_pm(cmp["textual_final_pass_at_1"], cmp.get("textual_final_pass_at_1_stderr"))
    text = (f" The textual arm **did not reach** the binary arm's final score ({_pct(cmp['binary_final_pass_at_1'])}%) "
            f"within its {steps} (iteration {cmp['textual_final_iteration']}); its final score is {score}%.")
    b_steps = cmp.get("binary_steps")
    if b_steps is not None and cmp["textual_final_steps"] < b_steps:
        text += (f" It stopped before the binary arm's {b_steps} steps to get there: more iterations (a finished run "
                 "resumes with `--set iterations=N`) can show whether it reaches it in fewer.")
    return text


def _between(cmp: dict, arm: str) -> str:
    """"more than 8 and at most 16 gradient steps" (the first evaluation at or above the score,
    and the one before it)."""
    lo, hi = cmp.get(f"{arm}_last_below_steps"), cmp[f"{arm}_steps_to_reach" if arm == "textual" else "binary_steps"]
    return f"at most {plural(hi, 'gradient step')}" if lo is None else f"more than {lo} and at most {plural(hi, 'gradient step')}"


def _iteration_table(h: RunHistory) -> Table:
    """One row per iteration; one held-out column per metric the run reports (every pass@k of
    eval.ks, and task metrics such as event extraction's F1)."""
    metrics = list(dict.fromkeys(name for p in h.points for name in p.eval_metrics)) or ["pass@1"]
    code = any(p.code_loss is not None for p in h.points)  # a column only for runs that measured it
    rows = []
    for p in h.points:
        top = ", ".join(f"{k} {v}" for k, v in list(p.train_failures.items())[:3]) or "-"
        rows.append([str(p.iteration), str(p.gradient_steps), _pct(p.train_pass_rate),
                     *(_metric_cell(m, p) for m in metrics),
                     *([f"{p.code_loss:.4f}" if p.code_loss is not None else "-"] if code else []), top])
    return Table(["iteration", "gradient steps", "train pass rate %",
                  *(f"held-out {m} %" if _is_pass_at_k(m) else f"held-out {m} {h.metric_units.get(m, '')}".rstrip()
                    for m in metrics),
                  *([CODE_LOSS] if code else []), "top training failures"], rows)


def _is_pass_at_k(name: str) -> bool:
    return name.startswith("pass@")


def _metric_cell(name: str, p) -> str:
    """pass@k is a fraction, shown in percent with its ±; a task's own metric (event
    extraction's arg_i_f1, ...) is shown as the task wrote it (GENEVA's are already percent)."""
    if _is_pass_at_k(name):
        return _pct_pm(p.eval_metrics.get(name), p.eval_stderr.get(name))
    value = p.eval_metrics.get(name)
    return "n/a" if value is None else f"{value:.1f}"


def _steps(value: object) -> str:
    """Gradient steps, or their mean over seeds (245.3, not 245.33333333333334)."""
    if not isinstance(value, (int, float)):
        return "n/a"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _arm_table(summary: dict, arms: list[str]) -> Table:
    """One row per arm. The ± columns appear only for summaries that carry them (newer demos);
    the seed spread only with several seeds."""
    base, rows = summary.get("baseline_pass_at_1"), []
    stderr = summary.get("final_pass_at_1_stderr") or {}
    seed_sd = summary.get("final_pass_at_1_seed_sd") or {}
    vs_binary = summary.get("vs_binary") or {}
    with_sd = any(v is not None for v in seed_sd.values())
    for arm in arms:
        final, last = summary.get(f"{arm}_final_pass_at_1"), (summary["iterations"][arm] or [{}])[-1]
        gain = "n/a" if None in (final, base) else f"{100 * (final - base):+.1f}"
        vs = vs_binary.get(arm)
        rows.append([arm, _pct_pm(final, stderr.get(arm)), gain,
                     *([_pct(seed_sd.get(arm))] if with_sd else []),
                     *([_diff_points(vs)] if vs_binary else []),
                     _steps(last.get("gradient_steps"))])
    return Table(["arm", "final pass@1 %", "gain over baseline (points)",
                  *(["seed-to-seed sd (points)"] if with_sd else []),
                  *(["minus binary, paired (points)"] if vs_binary else []), "gradient steps"], rows)


def _diff_points(vs: dict | None) -> str:
    """A summary's arm-minus-binary entry (already in points) as "+18.7 ± 4.2"."""
    if not vs or vs.get("difference_points") is None:
        return "-"
    se = vs.get("stderr_points")
    return f"{vs['difference_points']:+.1f}" + ("" if se is None else f" ± {se:.1f}")


def _curve_table(summary: dict, arms: list[str]) -> Table:
    """Held-out pass@1 per iteration, one row per arm (blank where an arm has not got there)."""
    curves = {arm: [_pct_pm(r.get("heldout_pass_at_1"), r.get("heldout_pass_at_1_stderr"))
                    for r in summary["iterations"][arm]] for arm in arms}
    n = max(map(len, curves.values()), default=0)
    return Table(["held-out pass@1 %"] + [f"iteration {i}" for i in range(n)],
                 [[arm] + c + [""] * (n - len(c)) for arm, c in curves.items()])


def _summary_blocks(summary: dict | None) -> list[Block]:
    """The demo's summary.json as tables: one row per arm, then pass@1 per iteration. Reads only
    keys that two-arm summaries of earlier demos have too, so their reports still build."""
    if not summary:
        return []
    arms = list(summary.get("iterations", {}))
    blocks: list[Block] = [
        Table(["baseline pass@1 %", "seeds", "wall time"],
              [[_pct_pm(summary.get("baseline_pass_at_1"), summary.get("baseline_pass_at_1_stderr")),
                str(summary.get("seeds", [])),
                f"{summary.get('wall_seconds', 0) / 60:.1f} min"]]),
        _arm_table(summary, arms),
        _curve_table(summary, arms),
    ]
    # not summary.json's "note": it explains that file's keys and units, not these tables
    if isinstance(summary.get("arms_note"), str) and summary["arms_note"]:
        blocks.append(Para(markup(summary["arms_note"])))  # it may quote an error message
    return blocks


def _score_cell(h: RunHistory, value: float | None, stderr: float | None, shared: str | None) -> str:
    cell = _pct_pm(value, stderr)
    return cell if shared or value is None else f"{cell} ({h.metric})"


def _final_iteration_cell(h: RunHistory) -> str:
    f, last = h.final_point, h.last_point
    if f is None:
        return "-"
    return str(f.iteration) if not h.stale_final else f"{f.iteration} (iteration {last.iteration} not evaluated)"


def _iterations_cell(h: RunHistory) -> str:
    """The last finished iteration; "1 of 4 (unfinished)" for a run stopped before its last."""
    last = str(h.points[-1].iteration) if h.points else "none"
    return f"{last} of {h.planned_iterations} (unfinished)" if h.unfinished else last


def _runs_table(histories: list[RunHistory]) -> list[Block]:
    """One row per run: its score before training and its final one, from the last evaluated
    iteration, which the table names (a later unevaluated iteration is said in a line below)."""
    shared = shared_metric(histories)
    m = shared or "pass@k"
    rows = [[h.label, _score_cell(h, h.baseline_score, h.baseline_score_stderr, shared),
             _score_cell(h, h.final_score, h.final_score_stderr, shared), _final_iteration_cell(h),
             _iterations_cell(h), str(h.points[-1].gradient_steps if h.points else 0)]
            for h in histories]
    blocks: list[Block] = [Table(["run", f"iteration 0 {m} %", f"final {m} %", "final evaluated at iteration",
                                  "iterations", "gradient steps"], rows)]
    if shared and shared != "pass@1":
        blocks.append(Para(f"pass@1 was not computed (eval.ks); the scores are held-out {esc(shared)}."))
    elif not shared:
        blocks.append(Para("The runs report different pass@k: each score names its own (pass@1 where the run "
                           "computed it, else its smallest k)."))
    for h in histories:
        if h.metric is None and h.points:
            blocks.append(Para(f"{code(h.name)}: no held-out pass@k in any iteration yet."))
        elif h.stale_final:
            f, last = h.final_point, h.last_point
            blocks.append(Para(
                f"{code(h.name)}: its last iteration ({last.iteration}, after {plural(last.gradient_steps, 'gradient step')}) "
                f"has no held-out evaluation, so its final {esc(h.metric)} is iteration {f.iteration}'s "
                f"(after {plural(f.gradient_steps, 'gradient step')}"
                f"{', before training' if f.iteration == 0 else ''}), not the last iteration's."))
    return blocks


def _what_was_run(histories: list[RunHistory]) -> list[Block]:
    """The held-out problems, how their samples were drawn (EVAL_SETTINGS: eval.temperature, ...)
    and the starting model: one line when the runs share them, else each run's, with a warning
    naming what differs, since one table and one plot then compare scores of different things. A
    demo's seeds (`seed<S>/<arm>`) each draw their own problems and warm start by design: those are
    compared within their seed. The sampling settings must agree across seeds as well (a demo
    averages its seeds' scores, and draws every seed's samples alike)."""
    known = [h for h in histories if h.evaluated_on is not None]
    if not known:
        return []
    seeds: dict[str, list[RunHistory]] = {}
    for h in known:
        seeds.setdefault(h.name.split("/")[0] if h.name.startswith("seed") and "/" in h.name else "", []).append(h)
    settings = {h.root: dict(h.eval_settings or ()) for h in known}
    differ = [what for what, of in (("their held-out problems", lambda h: h.evaluated_on),
                                    ("their starting model", lambda h: h.model))
              if any(len({of(h) for h in group}) > 1 for group in seeds.values())]
    sampled = [name for name in EVAL_SETTINGS if len({settings[h.root].get(name) for h in known}) > 1]
    if sampled:
        differ.append(f"how their held-out samples were drawn ({', '.join(sampled)})")
    if not differ:
        drawn = _sampled_with(settings[known[0].root], EVAL_SETTINGS)
        if len(seeds) == 1:
            return [Para(f"Evaluated on {known[0].evaluated_on}, sampled with {drawn}; starting model {code(known[0].model)}.")]
        each = "; ".join(f"{code(seed)} on {group[0].evaluated_on}, from {code(group[0].model)}" for seed, group in seeds.items())
        return [Para(f"Each seed has its own held-out problems and starting model, shared by its runs: {each}. "
                     f"Every run's held-out samples are drawn with {drawn}.")]
    lines = "; ".join(f"{code(h.label)} on {h.evaluated_on}" + (f", sampled with {_sampled_with(settings[h.root], sampled)}"
                                                              if sampled else "") + f", from {code(h.model)}" for h in known)
    what = ", ".join(differ[:-1]) + (" and " if len(differ) > 1 else "") + differ[-1]
    return [Para(f"**These runs differ in {what}**, so their scores below are not comparable side by side: {lines}.")]


def _sampled_with(settings: dict, names) -> str:
    """"`eval.n` 16, `eval.temperature` 0.1, ..." for the settings `names`."""
    return ", ".join(f"`{name}` {esc(settings.get(name, 'not recorded'))}" for name in names)


def _summary_notes(summary: dict) -> list[Block]:
    """A line for each demo arm whose last iteration has no held-out pass@1 (in some seed): its
    final pass@1 in the summary is an earlier iteration's."""
    out: list[Block] = []
    for arm, rows in (summary.get("iterations") or {}).items():
        if rows and rows[-1].get("heldout_pass_at_1") is None:
            out.append(Para(f"{code(arm)}: its last iteration ({esc(rows[-1].get('iteration'))}) has no held-out pass@1 "
                            "(in at least one seed), so its final pass@1 is an earlier iteration's."))
    return out


def _stale_summary(root: Path, histories: list[RunHistory], summary: dict) -> list[Block]:
    """A line when runs went on past summary.json's last iteration after it was written (an arm
    continued with plain `leti run`): its tables would stop short of them without a word. An arm
    the summary itself names in past_demo_iterations (at that iteration) is accounted for."""
    rows = [r.get("iteration") for rows in (summary.get("iterations") or {}).values() for r in rows]
    last = max((i for i in rows if isinstance(i, int) and not isinstance(i, bool)), default=None)
    known = summary.get("past_demo_iterations")
    known = known if isinstance(known, dict) else {}
    later = []
    for h in histories:
        if last is None or not h.points or h.points[-1].iteration <= last:
            continue
        try:
            name = h.root.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            name = h.name
        recorded = known.get(name)
        if not (isinstance(recorded, int) and recorded >= h.points[-1].iteration):
            later.append(f"{code(name)} (to iteration {h.points[-1].iteration})")
    if not later:
        return []
    return [Para(f"**summary.json is older than the runs**: {', '.join(later)} went on past its last iteration "
                 f"({last}) after it was written, and its tables above leave that out. Run the `leti demo` command "
                 "again to rewrite it (it compares every arm at the demo's own iterations), or delete it to report the "
                 "runs alone.")]


def _prompt_clause(histories: list[RunHistory]) -> str:
    """What the trained LeTI runs' held-out prompts began with, as each run's eval.json records it
    (a run trained without reward tokens is evaluated on the plain prompt); "" when none says."""
    good = [h for h in histories if not h.sft and h.trained_on_good is True]
    plain = [h for h in histories if not h.sft and h.trained_on_good is False]
    clause = "; LeTI-trained models are evaluated with the `<|good|>` prefix (see each iteration's eval.json)" if good else ""
    if plain:
        which = "this run" if len(plain) == len(histories) == 1 else ", ".join(code(h.label) for h in plain)
        clause += (f"; {which} trained without reward tokens and {'is' if len(plain) == 1 else 'are'} evaluated on "
                   "the plain prompt")
    return clause


def _text_parts(text: str) -> str:
    """The parts a training text has, in order, for its caption."""
    parts = (["reward token"] if text.startswith((GOOD, BAD)) else []) + \
        (["feedback span"] if FEEDBACK_OPEN in text else []) + ["prompt", "program"]
    missing = [name for name in ("reward token", "feedback span") if name not in parts]
    return ", ".join(parts) + (f": no {' or '.join(missing)} in this run's texts" if missing else "")


def report_blocks(root: Path, histories: list[RunHistory], summary: dict | None) -> list[Block]:
    demo = bool(summary)
    blocks: list[Block] = [Heading(f"LeTI report: {esc(root.resolve().name)}", 1)]
    sft = [h for h in histories if h.sft]
    blocks.append(Para(("Iteration 0 is the demo's warm start, before any LeTI training" if demo else
                        "Iteration 0 is the model before any training")
                       + _prompt_clause(histories)
                       + ("; `leti sft` runs train on the task's reference solutions and are evaluated on the plain "
                          "prompt" if sft else "") + "."))
    blocks += _what_was_run(histories)
    blocks += (_summary_blocks(summary) + _summary_notes(summary) + _stale_summary(root, histories, summary)
               if demo else _runs_table(histories))
    blocks.append(Para(STDERR_NOTE))
    pairs, refused = _arm_pairs(histories)
    blocks += [Para(line) for line in refused]
    for label, t, b in pairs:
        blocks.append(Para(_comparison_text(esc(label), compare_arms(t, b))))  # label: made of run names
    zero = "warm start" if demo else "before training"
    shared = shared_metric(histories) or "pass@k"
    blocks.append(Image(plot_pass_at_1(histories, root / "pass_at_1.png", iteration_zero=zero),
                        f"held-out {shared} by iteration (0 = {zero}) and by gradient steps"))
    if any(p.code_loss is not None for h in histories for p in h.points):
        blocks.append(Image(plot_code_loss(histories, root / "code_loss.png", iteration_zero=zero),
                            f"{CODE_LOSS} by iteration and by gradient steps: it rises as the model forgets ordinary code"))
    else:  # one left by an earlier report of this folder would no longer match report.md
        (root / "code_loss.png").unlink(missing_ok=True)
    files = plot_file_names(histories)
    for h in histories:
        blocks.append(Heading(f"Run {code(h.name)}" + (" (leti sft)" if h.sft else "")))
        if h.sft:
            blocks.append(Para("A `leti sft` run (the supervised baseline): it trains on the task's reference "
                               "solutions and samples no training programs, so it has no train pass rate."))
        for path in h.samples_not_as_finished:
            blocks.append(Para(f"{code(path)} no longer holds the samples its iteration finished with (cut or edited "
                               "since): that iteration's failure counts come from metrics.jsonl."))
        if h.metrics_cut_short:
            blocks.append(Para("metrics.jsonl ends in a partial line (the run was stopped while writing it), left "
                               f"out here; resuming the run (the command that started it, with {code(f'--run-dir {h.root}')}) "
                               "writes it again."))
        if not h.points:
            blocks.append(Para(f"No iteration has finished yet: iteration 0 (the first evaluation) is running, or the "
                               f"run was stopped in it; resuming the run (the command that started it, with "
                               f"{code(f'--run-dir {h.root}')}) finishes it."))
            continue
        blocks.append(_iteration_table(h))
        blocks.append(Image(plot_failures(h, root / files[h.root]), f"failure types, {h.name}"))
        if h.example_failure:
            blocks.append(Para(f"Example training text of a failing sample ({_text_parts(h.example_failure)}):"))
            blocks.append(Code(h.example_failure))
    return blocks


def _remove_stale_plots(root: Path, keep: set[str]) -> None:
    """Delete `failures_*.png` files of runs no longer in the folder (left by an earlier report
    of it: report.md no longer links them). Only the report's own file pattern is touched."""
    for f in root.glob("failures_*.png"):
        if f.name not in keep and f.is_file():
            f.unlink()


def build_report(root: str | Path) -> Path:
    """Write report.md, report.html and the PNGs into `root`; returns the HTML path."""
    root = Path(root)
    if not root.exists():
        raise LetiError(f"{root}: does not exist; pass a `leti run` or `leti demo` run directory")
    if not root.is_dir():
        raise LetiError(f"{root}: not a directory; pass a `leti run` or `leti demo` run directory")
    runs = sorted(find_runs(root), key=lambda r: (r[0].rsplit("/", 1)[0] if "/" in r[0] else "", _ARM_ORDER.get(r[0].rsplit("/", 1)[-1], 9), r[0]))
    histories = [load_run(path, name) for name, path in runs]
    blocks = report_blocks(root, histories, read_summary(root))
    _remove_stale_plots(root, set(plot_file_names(histories).values()))
    comparisons = [{"label": label, "textual": t.name, "binary": b.name, **compare_arms(t, b)}
                   for label, t, b in arm_pairs(histories)]
    if comparisons:  # the numbers of report.md's textual-vs-binary sentences, for scripts
        write_text_atomic(root / "comparisons.json", json.dumps(comparisons, indent=2) + "\n")
    else:  # one left by an earlier report of this folder would no longer match report.md
        (root / "comparisons.json").unlink(missing_ok=True)
    # whole or not at all: a report killed mid-write left a cut report.html until the next one
    write_text_atomic(root / "report.md", to_markdown(blocks, root))
    out = root / "report.html"
    write_text_atomic(out, to_html(blocks, f"LeTI report: {root.resolve().name}"))
    return out
