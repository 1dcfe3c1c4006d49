"""Run directory -> report.md, single-file report.html and PNG plots (`leti report RUN_DIR`), and
comparisons.json (textual vs binary arms: gradient steps to reach, step ratio) where there are any.

Works on a plain `leti run` directory (one run) and on a `leti demo` directory (runs under
`seed<S>/<arm>/`, plus the demo's summary.json); the report only reads files, so it can be
rebuilt at any time, also while a run is still going.
"""

from __future__ import annotations

import json
from pathlib import Path

from leti.config import RESUMABLE_CHANGES
from leti.errors import LetiError
from leti.report.data import RunHistory, final_difference, load_run, read_summary, steps_to_reach
from leti.report.plots import plot_failures, plot_pass_at_1
from leti.report.render import Block, Code, Heading, Image, Para, Table, to_html, to_markdown

_ARM_ORDER = {"textual": 0, "binary": 1, "constant": 2, "passing": 3}  # the demo's arms (leti.demo.config.ARMS)

__all__ = ["RunHistory", "arm_pairs", "build_report", "compare_arms", "find_runs", "load_run", "final_difference", "steps_to_reach"]

# Said once under every report's first table, so a reader knows what the ± covers.
STDERR_NOTE = ("± is one standard error over the held-out problems (for differences between arms, of the "
               "per-problem paired difference): it covers which problems were drawn and the sampling noise of "
               "the evaluation, not the variation between training seeds.")


def find_runs(root: Path) -> list[tuple[str, Path]]:
    """(name, path) of every run under `root`: itself, or `*/metrics.jsonl` up to two levels
    down (demo layout `seed<S>/<arm>`). Names drop the seed level when there is one seed."""
    if (root / "metrics.jsonl").exists():
        return [(root.name, root)]
    found = sorted({p.parent for pattern in ("*/metrics.jsonl", "*/*/metrics.jsonl") for p in root.glob(pattern)})
    if not found:
        raise LetiError(f"{root}: no run found (no metrics.jsonl here or in its subfolders); pass a `leti run` or `leti demo` directory")
    rel = [p.relative_to(root).as_posix() for p in found]
    if len({r.split("/")[0] for r in rel if "/" in r}) <= 1:
        rel = [r.split("/")[-1] for r in rel]
    return list(zip(rel, found, strict=True))


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
    """The paper's comparison: gradient steps the textual arm needs to reach the binary arm's
    final held-out pass@1, against the binary arm's steps (when it first reached that score,
    and in total), and the final scores' paired difference with its standard error."""
    target = binary.final_pass_at_1
    diff = final_difference(textual, binary)
    t_steps = None if target is None else steps_to_reach(textual, target)
    b_steps = None if target is None else steps_to_reach(binary, target)
    return {
        "binary_final_pass_at_1": target,
        "textual_final_pass_at_1": textual.final_pass_at_1,
        "binary_final_pass_at_1_stderr": binary.final_pass_at_1_stderr,
        "textual_final_pass_at_1_stderr": textual.final_pass_at_1_stderr,
        # textual minus binary, and its paired standard error (None when not paired by problem)
        "difference": diff.mean if diff else None,
        "difference_stderr": diff.stderr if diff else None,
        "paired_problems": diff.n_problems if diff else 0,
        "textual_steps_to_reach": t_steps,
        "binary_steps": b_steps,
        # the paper's "fewer than half the gradient steps" is step_ratio >= 2 (None: not reached,
        # or reached before training, where a ratio means nothing)
        "step_ratio": b_steps / t_steps if t_steps and b_steps else None,
        "binary_total_steps": binary.points[-1].gradient_steps if binary.points else None,
        "baseline": textual.baseline_pass_at_1,
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
    from leti.config import config_to_dict, flatten_config, load_config

    try:
        if json.loads((root / "run.json").read_text(encoding="utf-8")).get("mode") == "sft":
            return None
    except (OSError, ValueError, AttributeError):
        pass  # no run.json (older runs, hand-made directories): judged by the config alone
    try:
        cfg = load_config(root / "config.yaml")
    except LetiError:
        return None
    tt = cfg.training_text
    if not (tt.reward_token and tt.keep_failures):
        return None
    if tt.textual_feedback and tt.feedback_content == "execution" and not (tt.postprocess_hints or tt.stop_hint):
        arm = "textual"
    elif not tt.textual_feedback:
        arm = "binary"
    else:
        return None
    flat = flatten_config(config_to_dict(cfg))
    key = tuple(sorted((k, repr(v)) for k, v in flat.items()
                       if k not in _ARM_FIELDS and k not in _WHERE_OR_HOW_FAST and not k.startswith("sampling.vllm.")))
    return arm, key


def arm_pairs(histories: list[RunHistory]) -> list[tuple[str, RunHistory, RunHistory]]:
    """(label, textual run, binary run) for every textual-vs-binary comparison among `histories`:
    runs named `textual` and `binary` side by side (the demo's `seed<S>/<arm>`), and any two runs
    whose configs differ only in the feedback arm (e.g. `leti run configs/mbpp-codegen-350m.yaml`
    and `configs/mbpp-binary-only.yaml` into runs/ under their default names)."""
    pairs: list[tuple[str, RunHistory, RunHistory]] = []
    seen: set[tuple[Path, Path]] = set()

    def add(label: str, t: RunHistory, b: RunHistory) -> None:
        if (t.root, b.root) not in seen:
            seen.add((t.root, b.root))
            pairs.append((label, t, b))

    by_name = {h.name: h for h in histories}
    for prefix in sorted({n.rsplit("/", 1)[0] if "/" in n else "" for n in by_name}):
        t, b = by_name.get(f"{prefix}/textual" if prefix else "textual"), by_name.get(f"{prefix}/binary" if prefix else "binary")
        if t and b:
            add(prefix or "textual vs binary", t, b)
    arms = {h.name: run_arm(h.root) for h in histories}
    for t in histories:
        for b in histories:
            at, ab = arms[t.name], arms[b.name]
            if at and ab and at[0] == "textual" and ab[0] == "binary" and at[1] == ab[1]:
                add(f"{t.name} (textual) vs {b.name} (binary)", t, b)
    return pairs


def _comparison_text(name: str, cmp: dict) -> str:
    target, t_steps, b_steps = cmp["binary_final_pass_at_1"], cmp["textual_steps_to_reach"], cmp["binary_steps"]
    if target is None:
        return f"{name}: the binary arm has no evaluation yet."
    head = (f"{name}: the binary arm ended at {_pct_pm(target, cmp.get('binary_final_pass_at_1_stderr'))}% after "
            f"{cmp['binary_total_steps']} gradient steps "
            f"({'already reached before training' if b_steps == 0 else f'first reached after {b_steps}'}); "
            f"the textual arm ended at {_pct_pm(cmp['textual_final_pass_at_1'], cmp.get('textual_final_pass_at_1_stderr'))}%.")
    if cmp.get("difference_stderr") is not None:
        head += (f" Textual minus binary: {_points_pm(cmp['difference'], cmp['difference_stderr'])} points "
                 f"(paired over {cmp['paired_problems']} held-out problems).")
    if cmp.get("baseline") is not None and target <= cmp["baseline"]:
        return head + f" The binary arm did not improve on the baseline ({_pct(cmp['baseline'])}%)."
    if t_steps is None:
        return head + " The textual arm **never reached** the binary arm's final score."
    ratio = f" (binary/textual step ratio {cmp['step_ratio']:.2f})" if cmp.get("step_ratio") else ""
    return head + f" The textual arm reached the binary arm's final score after **{t_steps}** steps{ratio}."


def _iteration_table(h: RunHistory) -> Table:
    """One row per iteration; one held-out column per metric the run reports (every pass@k of
    eval.ks, and task metrics such as event extraction's F1)."""
    metrics = list(dict.fromkeys(name for p in h.points for name in p.eval_metrics)) or ["pass@1"]
    rows = []
    for p in h.points:
        top = ", ".join(f"{k} {v}" for k, v in list(p.train_failures.items())[:3]) or "-"
        rows.append([str(p.iteration), str(p.gradient_steps), _pct(p.train_pass_rate),
                     *(_metric_cell(m, p) for m in metrics), top])
    return Table(["iteration", "gradient steps", "train pass rate %",
                  *(f"held-out {m} %" if _is_pass_at_k(m) else f"held-out {m}" for m in metrics),
                  "top training failures"], rows)


def _is_pass_at_k(name: str) -> bool:
    return name.startswith("pass@")


def _metric_cell(name: str, p) -> str:
    """pass@k is a fraction, shown in percent with its ±; a task's own metric (event
    extraction's arg_i_f1, ...) is shown as the task wrote it (GENEVA's are already percent)."""
    if _is_pass_at_k(name):
        return _pct_pm(p.eval_metrics.get(name), p.eval_stderr.get(name))
    value = p.eval_metrics.get(name)
    return "n/a" if value is None else f"{value:.1f}"


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
                     str(last.get("gradient_steps", "n/a"))])
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
    if summary.get("note"):
        blocks.append(Para(summary["note"]))
    return blocks


def report_blocks(root: Path, histories: list[RunHistory], summary: dict | None) -> list[Block]:
    blocks: list[Block] = [Heading(f"LeTI report: {root.name}", 1)]
    blocks.append(Para("Iteration 0 is the model before any training; LeTI-trained models are "
                       "evaluated with the `<|good|>` prefix (see each iteration's eval.json)."))
    blocks += _summary_blocks(summary) or [Table(
        ["run", "iteration 0 pass@1 %", "final pass@1 %", "iterations", "gradient steps"],
        [[h.name, _pct_pm(h.baseline_pass_at_1, h.baseline_pass_at_1_stderr),
          _pct_pm(h.final_pass_at_1, h.final_pass_at_1_stderr), str(h.points[-1].iteration if h.points else 0),
          str(h.points[-1].gradient_steps if h.points else 0)] for h in histories])]
    blocks.append(Para(STDERR_NOTE))
    for label, t, b in arm_pairs(histories):
        blocks.append(Para(_comparison_text(label, compare_arms(t, b))))
    blocks.append(Image(plot_pass_at_1(histories, root / "pass_at_1.png"), "held-out pass@1"))
    for h in histories:
        blocks.append(Heading(f"Run `{h.name}`"))
        blocks.append(_iteration_table(h))
        slug = h.name.replace("/", "_")
        blocks.append(Image(plot_failures(h, root / f"failures_{slug}.png"), f"failure types, {h.name}"))
        if h.example_failure:
            blocks.append(Para("Example training text of a failing sample (reward token, feedback span, "
                               "prompt, program):"))
            blocks.append(Code(h.example_failure))
    return blocks


def build_report(root: str | Path) -> Path:
    """Write report.md, report.html and the PNGs into `root`; returns the HTML path."""
    root = Path(root)
    if not root.is_dir():
        raise LetiError(f"{root}: not a directory; pass a `leti run` or `leti demo` run directory")
    runs = sorted(find_runs(root), key=lambda r: (r[0].rsplit("/", 1)[0] if "/" in r[0] else "", _ARM_ORDER.get(r[0].rsplit("/", 1)[-1], 9), r[0]))
    histories = [load_run(path, name) for name, path in runs]
    blocks = report_blocks(root, histories, read_summary(root))
    comparisons = [{"label": label, "textual": t.name, "binary": b.name, **compare_arms(t, b)}
                   for label, t, b in arm_pairs(histories)]
    if comparisons:  # the numbers of report.md's textual-vs-binary sentences, for scripts
        (root / "comparisons.json").write_text(json.dumps(comparisons, indent=2) + "\n", encoding="utf-8")
    else:  # one left by an earlier report of this folder would no longer match report.md
        (root / "comparisons.json").unlink(missing_ok=True)
    (root / "report.md").write_text(to_markdown(blocks, root), encoding="utf-8")
    out = root / "report.html"
    out.write_text(to_html(blocks, f"LeTI report: {root.name}"), encoding="utf-8")
    return out
