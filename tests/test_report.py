"""`leti report`: builds report.md / report.html / PNGs from small run directories made here
with the loop's file layout and real execution results (no model needed)."""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import replace
from pathlib import Path
from statistics import stdev

import pytest

from leti.cli import main
from leti.config import RunConfig, dump_config
from leti.execution import ExecutionConfig, Executor
from leti.report import build_report, compare_arms, load_run
from leti.tasks.registry import get_task

TASK = "synthetic:seed=0,train=4,test=4"


def _completions(problem, passed: bool) -> str:
    if passed:
        return problem.reference
    return "def wrong_name(x):\n    return x\n"


def make_run(root: Path, pass_plan: list[list[bool]], eval_plan: list[list[bool]], textual: bool = True,
             extra_eval: dict | None = None, planned: int | None = None, **training_text) -> Path:
    """A run dir with iterations 0..len(eval_plan)-1 finished of `planned` (default: all of them);
    iteration k's samples pass per plan. `training_text` overrides fields of the run's
    training_text config (the demo's arms)."""

    task = get_task(TASK)
    train, test = task.problems("train"), task.problems("test")
    cfg = RunConfig(model="unused", task=TASK, iterations=planned or max(1, len(eval_plan) - 1))
    cfg = replace(cfg, training_text=replace(cfg.training_text, textual_feedback=textual, **training_text))
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(dump_config(cfg))
    metrics, steps = [], 0
    with Executor(ExecutionConfig(workers=2)) as ex:
        for k, eval_passes in enumerate(eval_plan):
            it = root / "iterations" / str(k)
            it.mkdir(parents=True)
            for name, problems, plan in (("samples", train, pass_plan[k] if k else []),
                                         ("eval_samples", test, eval_passes)):
                if not plan:
                    continue
                pairs = [(p, i, _completions(p, ok)) for i, (p, ok) in enumerate(zip(problems * 4, plan, strict=False))]
                results = ex.run([task.build_program(p, c) for p, _, c in pairs])
                with open(it / f"{name}.jsonl", "w") as f:
                    for (p, i, c), r in zip(pairs, results, strict=True):
                        f.write(json.dumps({"problem_id": p.id, "sample_idx": i, "prompt": p.prompt,
                                            "completion": c, **r.to_dict()}) + "\n")
            steps += 5 if k else 0
            rate = sum(pass_plan[k]) / len(pass_plan[k]) if k else None
            metrics.append({"iteration": k, "gradient_steps_total": steps, "train_pass_rate": rate,
                            "eval": {"pass@1": sum(eval_passes) / len(eval_passes), **(extra_eval or {})}})
    (root / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return root


def test_report_for_a_plain_run(tmp_path):
    run = make_run(tmp_path / "run", [[], [True, False, False, False]], [[False] * 4, [True, False, False, False]],
                   extra_eval={"pass@2": 0.375})
    html = build_report(run)
    for name in ("report.md", "report.html", "pass_at_1.png", "failures_run.png"):
        assert (run / name).stat().st_size > 0, name
    md = (run / "report.md").read_text()
    # iteration, steps, train pass rate, then every held-out metric of the run (eval.ks: 1, 2)
    assert "| held-out pass@1 % | held-out pass@2 % |" in md
    # pass@1 per problem [1, 0, 0, 0]: sd 0.5 (ddof=1) / sqrt(4) = 25 points; pass@2 has no
    # per-problem results (one sample each), so it shows without ±.
    assert "| 1 | 5 | 25.0 | 25.0 ± 25.0 | 37.5 |" in md
    assert "standard error over the held-out problems" in md
    # The example is a real failing sample's training text with reward token and feedback span.
    assert "<|bad|><|lang_feedback|>" in md and "NameError" in md
    text = html.read_text()
    png = text.split("data:image/png;base64,", 1)[1].split("'", 1)[0]
    assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<img" in text and "src='pass_at_1.png'" not in text  # inlined, single file
    history = load_run(run)
    assert history.points[1].train_failures == {"NameError": 3}
    assert history.points[0].eval_failures == {"NameError": 4}


def test_report_for_a_demo_dir_compares_arms(tmp_path):
    demo = tmp_path / "demo"
    plan = [[], [True, False, False, False], [True, True, False, False]]
    make_run(demo / "seed0" / "textual", plan, [[False] * 4, [True, True, False, False], [True, True, False, False]])
    make_run(demo / "seed0" / "binary", plan, [[False] * 4, [False] * 4, [True, True, False, False]], textual=False)
    build_report(demo)
    md = (demo / "report.md").read_text()
    assert "Run `textual`" in md and "Run `binary`" in md
    assert md.index("Run `textual`") < md.index("Run `binary`")
    # Binary ends at 50%; textual had 50% after 5 steps, binary after 10.
    # [1, 1, 0, 0]: sd sqrt(1/3) / sqrt(4)
    se = 100 * stdev([1, 1, 0, 0]) / 2
    assert f"the binary arm ended at 50.0 ± {se:.1f}% after 10 gradient steps (first reached after 10)" in md
    assert "reached the binary arm's final score after **5** steps (binary/textual step ratio 2.00)" in md
    cmp = compare_arms(load_run(demo / "seed0" / "textual", "textual"), load_run(demo / "seed0" / "binary", "binary"))
    assert cmp == {"metric": "pass@1", "binary_final_pass_at_1": 0.5, "textual_final_pass_at_1": 0.5,
                   "textual_steps_to_reach": 5, "binary_steps": 10, "binary_total_steps": 10,
                   "textual_total_steps": 10, "binary_final_steps": 10, "textual_final_steps": 10,
                   "binary_final_iteration": 2, "textual_final_iteration": 2,
                   "binary_last_iteration": 2, "textual_last_iteration": 2,
                   "textual_baseline_pass_at_1": 0.0, "binary_baseline_pass_at_1": 0.0,
                   "binary_final_pass_at_1_stderr": pytest.approx(se / 100),
                   "textual_final_pass_at_1_stderr": pytest.approx(se / 100),
                   "step_ratio": 2.0, "textual_last_below_steps": 0, "binary_last_below_steps": 5,
                   "evaluated_at_different_iterations": False,
                   "textual_reached_at_first_evaluation": True, "binary_gain_within_stderr": False,
                   "common_iteration": 2, "textual_pass_at_1_at_common_iteration": 0.5,
                   "binary_pass_at_1_at_common_iteration": 0.5, "difference_at_common_iteration": 0.0,
                   "difference_at_common_iteration_stderr": 0.0, "paired_problems": 4}
    # reached at its first evaluation after training: it may have needed fewer steps, and the report says so
    assert "(binary/textual step ratio 2.00). That is its first evaluation after training, the earliest" in md
    # The binary arm's example has the reward token but no feedback span.
    binary_part = md[md.index("Run `binary`"):]
    assert "<|bad|>" in binary_part and "<|lang_feedback|>" not in binary_part


def test_a_binary_arm_that_never_beat_the_baseline_is_said_so(tmp_path):
    demo = tmp_path / "demo"
    plan = [[], [True, False, False, False]]
    make_run(demo / "seed0" / "textual", plan, [[True, False, False, False], [True, True, False, False]])
    make_run(demo / "seed0" / "binary", plan, [[True, False, False, False], [True, False, False, False]], textual=False)
    build_report(demo)
    md = (demo / "report.md").read_text()
    # The binary arm's score is its own baseline's: said as such, never "ended at X (already reached
    # before training)", which read as if training had reached it.
    assert "the binary arm ended at 25.0 ± 25.0% after 5 gradient steps, the same as before training (25.0%);" in md
    assert "already reached" not in md and "first reached" not in md
    assert "The binary arm did not improve on its own baseline, so there are no gradient steps to compare." in md


def test_report_cli(tmp_path, capsys):
    run = make_run(tmp_path / "r", [[]], [[True, False, True, False]])
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").exists()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err == (f"leti: error: {tmp_path / 'missing'}: does not exist; "
                                       "pass a `leti run` or `leti demo` run directory\n")
    (tmp_path / "afile").write_text("")
    assert main(["report", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err.startswith(f"leti: error: {tmp_path / 'afile'}: not a directory;")


def test_report_rejects_a_dir_without_runs(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert capsys.readouterr().err == f"leti: error: {empty}: no run found (no metrics.jsonl or run.json here or in its " \
                                      "subfolders); pass a `leti run` or `leti demo` directory\n"
    assert not (empty / "report.md").exists()


def test_demo_summary_averages_seeds(tmp_path):
    from leti.demo.summary import make_summary

    plan = [[], [True, False, False, False]]
    hist = {}
    for seed, final in ((0, [True, False, False, False]), (1, [True, True, True, False])):
        root = tmp_path / f"seed{seed}"
        arms = {}
        for arm, ev in (("textual", final), ("binary", [False] * 4)):
            make_run(root / arm, plan, [[False] * 4, ev], textual=arm == "textual")
            arms[arm] = load_run(root / arm, arm)
        hist[seed] = arms
    s = make_summary(hist, {"wall_seconds": 12.5, "stages": {"a": 12.5}}, {"steps": 1})
    assert s["seeds"] == [0, 1]
    assert s["baseline_pass_at_1"] == 0.0 and s["binary_final_pass_at_1"] == 0.0
    assert s["textual_final_pass_at_1"] == pytest.approx((0.25 + 0.75) / 2)
    assert s["textual_gain_points"] == 50.0 and s["wall_seconds"] == 12.5
    assert [r["heldout_pass_at_1"] for r in s["iterations"]["textual"]] == [0.0, 0.5]
    assert s["iterations"]["binary"][1]["gradient_steps"] == 5
    assert s["arms"] == ["textual", "binary"]
    assert s["gain_points"] == {"textual": 50.0, "binary": 0.0} and s["gradient_steps"] == {"textual": 5, "binary": 5}
    assert s["per_seed"]["1"]["final_pass_at_1"] == {"textual": 0.75, "binary": 0.0}
    assert s["per_seed"]["1"]["comparison"]["textual_steps_to_reach"] == 0
    # ±: each seed's final is over 4 problems with one sample each, [1,0,0,0] and [1,1,1,0], so
    # each has se 0.25 (sd 0.5 / 2); the seed mean's se is sqrt(0.25^2 + 0.25^2) / 2.
    assert s["per_seed"]["0"]["final_pass_at_1_stderr"]["textual"] == pytest.approx(0.25)
    assert s["final_pass_at_1_stderr"]["textual"] == pytest.approx((2 * 0.25 ** 2) ** 0.5 / 2)
    assert s["final_pass_at_1_stderr"]["binary"] == 0.0  # every problem failed in every seed
    assert s["final_pass_at_1_seed_sd"]["textual"] == pytest.approx(stdev([0.25, 0.75]))
    # Paired against binary (which failed everything): the differences are textual's own results.
    assert s["per_seed"]["1"]["vs_binary"]["textual"] == {"difference_points": 75.0, "stderr_points": 25.0,
                                                          "paired_problems": 4}
    vs = s["vs_binary"]["textual"]
    assert vs["difference_points"] == 50.0 and vs["seed_sd_points"] == pytest.approx(stdev([25.0, 75.0]))
    assert vs["stderr_points"] == pytest.approx((2 * 25.0 ** 2) ** 0.5 / 2)
    assert s["iterations"]["textual"][1]["heldout_pass_at_1_stderr"] == pytest.approx((2 * 0.25 ** 2) ** 0.5 / 2)
    (tmp_path / "summary.json").write_text(json.dumps(s))
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    sd = 100 * stdev([0.25, 0.75])
    assert f"| textual | 50.0 ± 17.7 | +50.0 | {sd:.1f} | +50.0 ± 17.7 | 5 |" in md


def test_demo_cli_prints_the_errors(tmp_path, capsys):
    """`leti demo`'s printed lines carry ± per arm, the paired difference and, with several
    seeds, the spread across seeds (printed from a summary of finished runs)."""
    from leti.cli.demo_cmd import print_summary
    from leti.demo.summary import make_summary

    plan, hist = [[], [True, False, False, False]], {}
    for seed, final in ((0, [True, False, False, False]), (1, [True, True, True, False])):
        hist[seed] = {}
        for arm, ev in (("textual", final), ("binary", [False] * 4)):
            make_run(tmp_path / f"seed{seed}" / arm, plan, [[False] * 4, ev], textual=arm == "textual")
            hist[seed][arm] = load_run(tmp_path / f"seed{seed}" / arm, arm)
    s = make_summary(hist, {"wall_seconds": 60.0}, {})
    print_summary(s, tmp_path)
    out = capsys.readouterr().out
    assert f"50.0% ± 17.7 (textual feedback) [seed sd {100 * stdev([0.25, 0.75]):.1f}]" in out
    assert f"textual minus binary +50.0 ± 17.7 points (paired over problems, seed sd {stdev([25.0, 75.0]):.1f})" in out
    assert all(line.startswith("demo: ") for line in out.splitlines())  # no raw JSON line: summary.json has it


def _bare_run(root: Path, eval_json: dict | None) -> Path:
    """A run dir as written before standard errors were stored: metrics.jsonl without
    eval_stderr, iteration 0's eval.json (if given) without pass@k_stderr, no sample files."""
    (root / "iterations" / "0").mkdir(parents=True)
    (root / "metrics.jsonl").write_text(json.dumps({"iteration": 0, "gradient_steps_total": 0, "train_pass_rate": None,
                                                    "eval": {"pass@1": 0.5}}) + "\n")
    if eval_json is not None:
        (root / "iterations" / "0" / "eval.json").write_text(json.dumps(eval_json))
    return root


def test_old_run_dirs_render_with_the_stderr_rebuilt_or_without_it(tmp_path):
    # eval.json of an older leti: per_problem (n, c) but no pass@k_stderr -> rebuilt from it.
    old = _bare_run(tmp_path / "old", {"iteration": 0, "n_problems": 4, "pass@k": {"pass@1": 0.5},
                                       "per_problem": {"a": [2, 1], "b": [2, 2], "c": [2, 0], "d": [2, 1]}})
    build_report(old)
    se = 100 * stdev([0.5, 1.0, 0.0, 0.5]) / 2
    assert f"| 0 | 0 | n/a | 50.0 ± {se:.1f} | - |" in (old / "report.md").read_text()
    # Neither eval.json nor eval_samples.jsonl: the number alone.
    bare = _bare_run(tmp_path / "bare", None)
    build_report(bare)
    md = (bare / "report.md").read_text()
    assert "| 0 | 0 | n/a | 50.0 | - |" in md and "| bare | 50.0 | 50.0 |" in md
    assert (bare / "pass_at_1.png").stat().st_size > 0


def test_pass_at_1_plot_series_carry_the_stderr(tmp_path):
    from leti.report.plots import pass_at_1_series

    run = make_run(tmp_path / "run", [[], [True, False, False, False]], [[False] * 4, [True, True, False, False]])
    iters, steps, ys, errs = pass_at_1_series(load_run(run))
    assert iters == [0, 1] and steps == [0, 5] and ys == [0.0, 50.0]
    assert errs == [0.0, pytest.approx(100 * stdev([1, 1, 0, 0]) / 2)]


def test_demo_with_control_arms_summary_and_report(tmp_path):
    """Four arms: summary.json and the report list every arm; the textual-vs-binary comparison
    stays; the passing arm, which trains on no failure, shows no failing example."""
    from leti.demo.summary import make_summary

    demo, plan = tmp_path / "demo", [[], [True, False, False, False]]
    finals = {"textual": [True, True, False, False], "binary": [False] * 4,
              "constant": [True, False, False, False], "passing": [True, True, True, False]}
    text = {"textual": {}, "binary": {"textual": False}, "constant": {"feedback_content": "constant"},
            "passing": {"textual": False, "keep_failures": False}}
    for arm, ev in finals.items():
        make_run(demo / "seed0" / arm, plan, [[False] * 4, ev], **text[arm])
    hist = {0: {arm: load_run(demo / "seed0" / arm, arm) for arm in finals}}
    s = make_summary(hist, {"wall_seconds": 60.0}, {})
    assert s["arms"] == list(finals)
    assert s["gain_points"] == {"textual": 50.0, "binary": 0.0, "constant": 25.0, "passing": 75.0}
    assert s["passing_final_pass_at_1"] == 0.75 and "comparison" in s["per_seed"]["0"]
    assert "The program failed." in s["note"]
    (demo / "summary.json").write_text(json.dumps(s))
    build_report(demo)
    md = (demo / "report.md").read_text()
    # final pass@1 ± se, gain, minus binary (paired: binary failed everything, so the per-problem
    # differences are the arm's own [1,0,0,0] / [1,1,1,0]), steps
    assert "| constant | 25.0 ± 25.0 | +25.0 | +25.0 ± 25.0 | 5 |" in md
    assert "| passing | 75.0 ± 25.0 | +75.0 | +75.0 ± 25.0 | 5 |" in md
    assert "| passing | 0.0 ± 0.0 | 75.0 ± 25.0 |" in md  # held-out pass@1 per iteration
    assert "the binary arm ended at 0.0 ± 0.0% after 5 gradient steps" in md
    assert ("Textual minus binary at iteration 1, the last both evaluated: +50.0 ± 28.9 points (paired over 4 "
            "held-out problems)") in md
    assert md.index("Run `binary`") < md.index("Run `constant`") < md.index("Run `passing`")
    assert "<|lang_feedback|>The program failed." in md[md.index("Run `constant`"):md.index("Run `passing`")]
    assert "<|bad|>" not in md[md.index("Run `passing`"):]
    # the arms are described; summary.json's note on its own keys ("fractions in [0, 1]",
    # gain_points, vs_binary) is not, under tables in percent
    assert 'constant: every feedback span says "The program failed."' in md
    assert "fractions in [0, 1]" not in md and "vs_binary" not in md


def _set_config(run: Path, **fields) -> None:
    """Rewrite a made run's config.yaml with some top-level fields changed (e.g. its seed)."""
    from leti.config import load_config

    (run / "config.yaml").write_text(dump_config(replace(load_config(run / "config.yaml"), **fields)))


def test_runs_under_their_default_names_are_paired_by_config(tmp_path):
    """`leti run configs/mbpp-codegen-350m.yaml` and `configs/mbpp-binary-only.yaml` land in
    runs/mbpp-codegen-350m and runs/mbpp-binary-only: `leti report runs` compares them (the
    paper's gradient-steps claim), because their configs differ only in the feedback arm."""
    runs = tmp_path / "runs"
    plan = [[], [True, False, False, False], [True, True, False, False]]
    make_run(runs / "mbpp-codegen-350m", plan, [[False] * 4, [True, True, False, False], [True, True, False, False]])
    make_run(runs / "mbpp-binary-only", plan, [[False] * 4, [False] * 4, [True, True, False, False]], textual=False)
    # not an arm of that comparison: another seed, and a control arm
    make_run(runs / "binary-seed7", plan, [[False] * 4, [False] * 4, [True, False, False, False]], textual=False)
    _set_config(runs / "binary-seed7", seed=7)
    make_run(runs / "passing", plan, [[False] * 4, [True] * 4, [True] * 4], textual=False, keep_failures=False)
    build_report(runs)
    md = (runs / "report.md").read_text()
    assert md.count("(textual) vs") == 1
    assert "mbpp-codegen-350m (textual) vs mbpp-binary-only (binary): the binary arm ended at 50.0" in md
    assert "reached the binary arm's final score after **5** steps (binary/textual step ratio 2.00)" in md
    # the same numbers for scripts: the paper's claim is step_ratio >= 2
    [cmp] = json.loads((runs / "comparisons.json").read_text())
    assert (cmp["textual"], cmp["binary"], cmp["textual_steps_to_reach"], cmp["binary_steps"], cmp["step_ratio"]) == (
        "mbpp-codegen-350m", "mbpp-binary-only", 5, 10, 2.0)


def test_task_metrics_are_shown_as_the_task_wrote_them(tmp_path):
    """GENEVA's arg_i_f1 / arg_c_f1 are percent already (leti.tasks.eae.metrics): the iteration
    table shows 33.5, not 100 times it."""
    run = make_run(tmp_path / "geneva", [[]], [[True, False, False, False]], extra_eval={"arg_i_f1": 33.5, "arg_c_f1": 21.25})
    build_report(run)
    md = (run / "report.md").read_text()
    assert "| held-out pass@1 % | held-out arg_i_f1 | held-out arg_c_f1 |" in md
    assert "| 33.5 | 21.2 |" in md and "3350" not in md


def test_a_tasks_metric_units_head_its_columns(tmp_path):
    """GENEVA's F1s are percent (its metric_units, as `leti evaluate` prints them): the column
    says so, as the pass@k columns do (was a bare number beside the % columns)."""
    run = _hand_run(tmp_path / "geneva", [(0, {"pass@1": (0.25, 0.1), "arg_c_f1": (21.25, None)})], task="geneva")
    build_report(run)
    assert "| held-out pass@1 % | held-out arg_c_f1 % |" in (run / "report.md").read_text()


def test_an_sft_run_is_not_a_feedback_arm(tmp_path):
    """`leti sft CONFIG` writes the same config layout (textual_feedback on by default) but trains
    on reference solutions: it is no textual arm, whatever its config says."""
    runs = tmp_path / "runs"
    plan = [[], [True, False, False, False]]
    sft = make_run(runs / "sft", plan, [[False] * 4, [True, True, False, False]])
    (sft / "run.json").write_text(json.dumps({"mode": "sft", "created": "2026-01-01T00:00:00+00:00"}))
    make_run(runs / "binary", plan, [[False] * 4, [True, False, False, False]], textual=False)
    (runs / "comparisons.json").write_text("[]")  # left by an earlier report of this folder
    build_report(runs)
    assert "(textual) vs" not in (runs / "report.md").read_text()
    assert not (runs / "comparisons.json").exists()


def test_a_leti_sft_run_is_named_as_one(tmp_path):
    """An SFT run's table has no train pass rate and its model never saw `<|good|>`: the report
    says it is a `leti sft` run instead of leaving an unexplained n/a under a LeTI header."""
    def sft_run(root: Path) -> Path:
        _hand_run(root, [(0, {"pass@1": (0.25, 0.1)}), (30, {"pass@1": (0.5, 0.1)})])
        lines = [{**json.loads(line), "train_pass_rate": None} for line in (root / "metrics.jsonl").read_text().splitlines()]
        (root / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        (root / "run.json").write_text(json.dumps({"mode": "sft", "created": "2026-01-01T00:00:00+00:00"}))
        return root

    alone = sft_run(tmp_path / "sft")
    build_report(alone)
    md = (alone / "report.md").read_text()
    assert "## Run `sft` (leti sft)" in md and "| sft (leti sft) | 25.0 ± 10.0 | 50.0 ± 10.0 |" in md
    assert "so it has no train pass rate" in md
    assert "`leti sft` runs train on the task's reference solutions and are evaluated on the plain prompt." in md
    assert "<|good|>" not in md  # no LeTI-trained model here
    runs = tmp_path / "runs"
    sft_run(runs / "baseline")
    _hand_run(runs / "leti", [(0, {"pass@1": (0.25, 0.1)}), (5, {"pass@1": (0.5, 0.1)})])
    build_report(runs)
    md = (runs / "report.md").read_text()
    assert "`<|good|>` prefix (see each iteration's eval.json); `leti sft` runs train" in md
    assert "## Run `baseline` (leti sft)" in md and "## Run `leti`\n" in md


def _hand_run(root: Path, rows: list[tuple[int, dict | None]], textual: bool = True, **config) -> Path:
    """A run dir written by hand: config.yaml (RunConfig with `config`'s top-level fields, iterations:
    the last row's unless given) and one
    metrics.jsonl line per (gradient steps, eval) in `rows`, iteration 0 first; an eval is
    {"pass@k": (value, stderr)} or None (not evaluated that iteration)."""

    cfg = RunConfig(**{"model": "unused", "task": TASK, "iterations": max(1, len(rows) - 1), **config})
    cfg = replace(cfg, training_text=replace(cfg.training_text, textual_feedback=textual))
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(dump_config(cfg))
    lines = []
    for k, (steps, ev) in enumerate(rows):
        lines.append({"iteration": k, "gradient_steps_total": steps, "train_pass_rate": None if k == 0 else 0.5,
                      "eval": None if ev is None else {m: v for m, (v, _) in ev.items()},
                      "eval_stderr": None if ev is None else {m: se for m, (_, se) in ev.items()}})
    (root / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


def test_a_final_score_from_an_earlier_iteration_says_which(tmp_path):
    """eval.every 2 and a run cut short: its last iteration has no evaluation. The table names the
    iteration its final pass@1 comes from; it does not pass iteration 0's score off as final."""
    runs = tmp_path / "runs"
    _hand_run(runs / "every2", [(0, {"pass@1": (0.3125, 0.12)}), (24, None)])
    _hand_run(runs / "each", [(0, {"pass@1": (0.25, 0.1)}), (1, {"pass@1": (0.5, 0.1)})])
    build_report(runs)
    md = (runs / "report.md").read_text()
    assert "| run | iteration 0 pass@1 % | final pass@1 % | final evaluated at iteration | iterations | gradient steps |" in md
    assert "| every2 | 31.2 ± 12.0 | 31.2 ± 12.0 | 0 (iteration 1 not evaluated) | 1 | 24 |" in md
    assert ("`every2`: its last iteration (1, after 24 gradient steps) has no held-out evaluation, so its final "
            "pass@1 is iteration 0's (after 0 gradient steps, before training), not the last iteration's.") in md
    assert "| each | 25.0 ± 10.0 | 50.0 ± 10.0 | 1 | 1 | 1 |" in md
    assert "`each`:" not in md


def test_a_comparison_names_an_arm_evaluated_before_its_last_iteration(tmp_path):
    """The comparison's "ended at X after N steps" pairs a score with the steps of the iteration
    that scored it, not with the steps of a later, unevaluated iteration."""
    demo = tmp_path / "demo"
    _hand_run(demo / "seed0" / "textual", [(0, {"pass@1": (0.0, 0.0)}), (1, {"pass@1": (0.5, 0.25)}),
                                           (2, {"pass@1": (0.5, 0.25)})])
    _hand_run(demo / "seed0" / "binary", [(0, {"pass@1": (0.0, 0.0)}), (1, {"pass@1": (0.25, 0.25)}), (2, None)],
              textual=False)
    build_report(demo)
    md = (demo / "report.md").read_text()
    assert ("textual vs binary: the binary arm was last evaluated at iteration 1 (its last iteration, 2, after 2 "
            "gradient steps, has no evaluation), at 25.0 ± 25.0% after 1 gradient step (first reached after 1); "
            "the textual arm ended at 50.0 ± 25.0% after 2 gradient steps.") in md
    assert "after **1** step (binary/textual step ratio 1.00)" in md
    [cmp] = json.loads((demo / "comparisons.json").read_text())
    assert (cmp["binary_final_iteration"], cmp["binary_final_steps"], cmp["binary_last_iteration"],
            cmp["binary_total_steps"]) == (1, 1, 2, 2)
    # the budget-matched difference is at iteration 1, the last both evaluated; the binary arm's
    # unevaluated iteration 2 is no iteration the arms were looked at differently
    assert (cmp["common_iteration"], cmp["textual_final_iteration"], cmp["evaluated_at_different_iterations"]) == (1, 2, False)

    # With the demo's summary.json the first table is the summary's; it says the same.
    from leti.demo.summary import make_summary

    hist = {0: {arm: load_run(demo / "seed0" / arm, arm) for arm in ("textual", "binary")}}
    (demo / "summary.json").write_text(json.dumps(make_summary(hist, {"wall_seconds": 1.0}, {})))
    build_report(demo)
    md = (demo / "report.md").read_text()
    assert ("`binary`: its last iteration (2) has no held-out pass@1 (in at least one seed), so its final pass@1 "
            "is an earlier iteration's.") in md
    assert "`textual`: its last iteration" not in md


def test_an_arm_stopped_part_way_is_not_compared_as_if_it_had_finished(tmp_path):
    """A binary arm killed after iteration 1 of 2 was reported as "ended at" its iteration-1
    score, and the step ratio (the paper's headline) computed against a quarter-trained arm."""
    demo = tmp_path / "demo"
    _hand_run(demo / "seed0" / "textual", [(0, {"pass@1": (0.0, 0.0)}), (1, {"pass@1": (0.25, 0.25)}),
                                           (2, {"pass@1": (0.5, 0.25)})])
    _hand_run(demo / "seed0" / "binary", [(0, {"pass@1": (0.0, 0.0)}), (1, {"pass@1": (0.25, 0.25)})],
              textual=False, iterations=2)
    build_report(demo)
    md = (demo / "report.md").read_text()
    assert ("textual vs binary: not compared yet, `binary` stopped at iteration 1 of 2; an arm's final score and the step "
            "ratio wait for both to finish (resume a run with the command that started it).") in md
    assert "ended at" not in md and "step ratio" not in md.replace("the step ratio wait", "")
    assert "| binary | 0.0 ± 0.0 | 25.0 ± 25.0 | 1 | 1 of 2 (unfinished) | 1 |" in md
    assert not (demo / "comparisons.json").exists()
    # once it finishes, the arms are compared
    _hand_run(tmp_path / "done" / "seed0" / "binary", [(0, {"pass@1": (0.0, 0.0)}), (1, {"pass@1": (0.25, 0.25)}),
                                                         (2, {"pass@1": (0.25, 0.25)})], textual=False)
    (demo / "seed0" / "binary").rename(tmp_path / "stopped")
    (tmp_path / "done" / "seed0" / "binary").rename(demo / "seed0" / "binary")
    build_report(demo)
    assert "after **1** step (binary/textual step ratio 1.00)" in (demo / "report.md").read_text()
    assert len(json.loads((demo / "comparisons.json").read_text())) == 1


def test_a_binary_gain_within_noise_is_said_to_make_the_step_counts_say_little(tmp_path):
    """The demo's binary arm gained 0.4 points (± 4.6): the step ratio against that "final score"
    measured noise, and the report gave it without a word."""
    demo = tmp_path / "demo"
    _hand_run(demo / "seed0" / "textual", [(0, {"pass@1": (0.16, 0.04)}), (1, {"pass@1": (0.16, 0.04)}),
                                           (2, {"pass@1": (0.30, 0.05)})])
    _hand_run(demo / "seed0" / "binary", [(0, {"pass@1": (0.16, 0.04)}), (1, {"pass@1": (0.17, 0.046)}),
                                          (2, {"pass@1": (0.17, 0.046)})], textual=False)
    build_report(demo)
    md = (demo / "report.md").read_text()
    assert ("after **2** steps (binary/textual step ratio 0.50). The binary arm's gain over its baseline (+1.0 "
            "points) is within one standard error of its score, so the score to reach is its baseline's up to noise, "
            "and the step counts say little.") in md
    assert "first evaluation after training" not in md  # textual reached it at its second


def test_runs_named_textual_and_binary_are_paired_only_when_their_configs_agree(tmp_path):
    """The by-name pairing is checked like the config-based one: a `binary` run of another model,
    or one that trained with textual feedback, is not compared with `textual`, and report.md says
    why in one line."""
    plan = [[], [True, False, False, False]]
    other = tmp_path / "other"
    make_run(other / "textual", plan, [[True, False, False, False], [True, True, False, False]])
    make_run(other / "binary", plan, [[False] * 4, [False] * 4], textual=False)
    _set_config(other / "binary", model="another-model")
    build_report(other)
    md = (other / "report.md").read_text()
    assert ("`textual` and `binary` are not compared as textual vs binary arms: their configs differ in more "
            "than the feedback arm (model).") in md
    assert "the binary arm" not in md and not (other / "comparisons.json").exists()

    fake = tmp_path / "fake"
    make_run(fake / "textual", plan, [[True, False, False, False], [True, True, False, False]])
    make_run(fake / "binary", plan, [[False] * 4, [False] * 4], textual=True)  # named binary, trained textual
    build_report(fake)
    md = (fake / "report.md").read_text()
    assert ("`textual` and `binary` are not compared as textual vs binary arms: `binary` is not a binary-feedback "
            "run by its config (a textual-feedback run).") in md
    assert "the binary arm" not in md


def test_each_arm_is_compared_with_its_own_baseline(tmp_path):
    """Paired arms whose iteration-0 scores differ: whether the binary arm improved is judged on the
    binary arm's own baseline, not the textual arm's."""
    demo = tmp_path / "demo"
    plan = [[], [True, False, False, False]]
    make_run(demo / "seed0" / "textual", plan, [[True, False, False, False], [True, True, False, False]])
    make_run(demo / "seed0" / "binary", plan, [[False] * 4, [False] * 4], textual=False)
    build_report(demo)
    md = (demo / "report.md").read_text()
    assert "the binary arm ended at 0.0 ± 0.0% after 5 gradient steps, the same as before training (0.0%);" in md
    assert "Before training the arms scored differently: textual 25.0%, binary 0.0%." in md
    assert "baseline (25.0%)" not in md
    cmp = compare_arms(load_run(demo / "seed0" / "textual", "textual"), load_run(demo / "seed0" / "binary", "binary"))
    assert (cmp["textual_baseline_pass_at_1"], cmp["binary_baseline_pass_at_1"]) == (0.25, 0.0)


def test_runs_with_the_same_folder_name_keep_their_paths(tmp_path, figures):
    """`coll/textual` and `coll/old/textual` are two runs: two rows, two sections, two plot files,
    two legend entries, none overwritten; plot file names stay unique and safe."""
    coll = tmp_path / "coll"
    plan = [[], [True, False, False, False]]
    make_run(coll / "textual", plan, [[False] * 4, [True, False, False, False]])
    make_run(coll / "old" / "textual", plan, [[False] * 4, [True, True, False, False]])
    make_run(coll / "old_textual", plan, [[False] * 4, [True, True, True, False]])
    make_run(coll / "odd name", plan, [[False] * 4, [False] * 4])
    build_report(coll)
    md = (coll / "report.md").read_text()
    for name, final in (("textual", "25.0"), ("old/textual", "50.0"), ("old_textual", "75.0")):
        assert md.count(f"## Run `{name}`") == 1, name
        assert f"| {name} | 0.0 ± 0.0 | {final} ± " in md, name
    assert sorted(f.name for f in coll.glob("failures_*.png")) == [
        "failures_odd_name.png", "failures_old_textual-2.png", "failures_old_textual.png", "failures_textual.png"]
    for f in coll.glob("failures_*.png"):
        assert f"({f.name})" in md  # each linked once from its run's section
    titles = {name: fig.texts[0].get_text() for name, fig in figures.items() if name.startswith("failures_")}
    assert titles["failures_old_textual-2.png"].endswith(": old/textual")
    assert titles["failures_old_textual.png"].endswith(": old_textual")
    legend = [t.get_text() for t in figures["pass_at_1.png"].axes[0].get_legend().get_texts()]
    assert sorted(legend) == ["odd name", "old/textual", "old_textual", "textual"]


def test_a_demo_with_one_seed_still_names_runs_by_arm(tmp_path):
    from leti.report import find_runs

    plan = [[], [True, False, False, False]]
    for arm in ("textual", "binary"):
        make_run(tmp_path / "seed0" / arm, plan, [[False] * 4, [False] * 4], textual=arm == "textual")
    assert sorted(name for name, _ in find_runs(tmp_path)) == ["binary", "textual"]
    make_run(tmp_path / "seed1" / "textual", plan, [[False] * 4, [False] * 4])
    assert sorted(name for name, _ in find_runs(tmp_path)) == ["seed0/binary", "seed0/textual", "seed1/textual"]


def test_the_iteration_axis_says_what_iteration_0_is(tmp_path, figures):
    """A plain run's iteration 0 is the model before training, not a warm start; the demo's is."""
    run = _hand_run(tmp_path / "run", [(0, {"pass@1": (0.25, 0.1)}), (4, {"pass@1": (0.5, 0.1)})])
    build_report(run)
    assert figures["pass_at_1.png"].axes[0].get_xlabel() == "iteration (0 = before training)"
    assert "warm start" not in (run / "report.md").read_text()

    from leti.demo.summary import make_summary

    demo, plan = tmp_path / "demo", [[], [True, False, False, False]]
    for arm in ("textual", "binary"):
        make_run(demo / "seed0" / arm, plan, [[False] * 4, [True, False, False, False]], textual=arm == "textual")
    hist = {0: {arm: load_run(demo / "seed0" / arm, arm) for arm in ("textual", "binary")}}
    (demo / "summary.json").write_text(json.dumps(make_summary(hist, {"wall_seconds": 1.0}, {})))
    build_report(demo)
    assert figures["pass_at_1.png"].axes[0].get_xlabel() == "iteration (0 = warm start)"


def test_a_removed_run_takes_its_plot_with_it(tmp_path):
    """Rebuilding a folder's report after a run left it removes that run's failures_<run>.png (as
    it removes comparisons.json); files the report does not write are left alone."""
    import shutil

    runs, plan = tmp_path / "runs", [[], [True, False, False, False]]
    for name in ("a", "b"):
        make_run(runs / name, plan, [[False] * 4, [True, False, False, False]])
    (runs / "notes.png").write_bytes(b"mine")
    (runs / "failures_notes.txt").write_text("mine")
    build_report(runs)
    assert (runs / "failures_b.png").exists()
    shutil.rmtree(runs / "b")
    build_report(runs)
    assert not (runs / "failures_b.png").exists() and (runs / "failures_a.png").exists()
    assert (runs / "notes.png").read_bytes() == b"mine" and (runs / "failures_notes.txt").exists()
    assert "failures_b" not in (runs / "report.md").read_text()


def test_a_run_without_pass_at_1_reports_its_smallest_k(tmp_path, figures):
    """eval.ks [2]: the summary row and the plot show held-out pass@2 and say so (not n/a and an
    empty plot)."""
    run = _hand_run(tmp_path / "ks2", [(0, {"pass@2": (0.25, 0.1), "pass@5": (0.5, 0.1)}),
                                       (5, {"pass@2": (0.5, 0.1), "pass@5": (0.75, 0.1)})])
    build_report(run)
    md = (run / "report.md").read_text()
    assert "| run | iteration 0 pass@2 % | final pass@2 % |" in md
    assert "| ks2 | 25.0 ± 10.0 | 50.0 ± 10.0 | 1 | 1 | 5 |" in md
    assert "pass@1 was not computed (eval.ks); the scores are held-out pass@2." in md
    fig = figures["pass_at_1.png"]
    assert fig.axes[0].get_ylabel() == "held-out pass@2 (%)"
    assert list(fig.axes[0].lines[0].get_ydata()) == [25.0, 50.0]
    assert "pass@1 not computed" in fig.texts[0].get_text()
    assert load_run(run).final_pass_at_1 is None  # pass@1 itself stays unknown (the demo's summary)


def test_textual_and_binary_arms_without_pass_at_1_are_compared_on_their_k(tmp_path):
    demo = tmp_path / "demo"
    _hand_run(demo / "seed0" / "textual", [(0, {"pass@2": (0.0, 0.0)}), (5, {"pass@2": (0.5, 0.25)})])
    _hand_run(demo / "seed0" / "binary", [(0, {"pass@2": (0.0, 0.0)}), (5, {"pass@2": (0.25, 0.25)})], textual=False)
    build_report(demo)
    md = (demo / "report.md").read_text()
    assert ("textual vs binary (held-out pass@2; pass@1 was not computed): the binary arm ended at 25.0 ± 25.0% "
            "after 5 gradient steps (first reached after 5)") in md
    [cmp] = json.loads((demo / "comparisons.json").read_text())
    assert cmp["metric"] == "pass@2" and cmp["textual_steps_to_reach"] == 5


def test_the_loss_on_held_out_code_is_tabled_and_plotted_for_the_runs_that_measured_it(tmp_path, figures):
    """metrics.jsonl's pretrain_heldout_loss: a table column and code_loss.png, one line per run
    that has it; a folder whose runs no longer have it loses the plot."""
    runs = tmp_path / "runs"
    mixed = _hand_run(runs / "mixed", [(0, {"pass@1": (0.25, 0.1)}), (4, {"pass@1": (0.5, 0.1)})])
    _hand_run(runs / "plain", [(0, {"pass@1": (0.25, 0.1)}), (4, {"pass@1": (0.5, 0.1)})])
    lines = [json.loads(x) for x in (mixed / "metrics.jsonl").read_text().splitlines()]
    for line, loss in zip(lines, (2.5, 2.75), strict=True):
        line["pretrain_heldout_loss"] = loss
    (mixed / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    build_report(runs)
    md = (runs / "report.md").read_text()
    mixed_table, plain_table = md.split("## Run `mixed`")[1].split("## Run `plain`")
    assert "| loss on held-out code |" in mixed_table and "| 2.7500 |" in mixed_table
    assert "loss on held-out code" not in plain_table
    [left, right] = figures["code_loss.png"].axes
    assert [line.get_label() for line in left.get_lines()] == ["mixed"]
    assert list(left.get_lines()[0].get_xdata()) == [0, 1] and list(right.get_lines()[0].get_xdata()) == [0, 4]
    assert list(left.get_lines()[0].get_ydata()) == [2.5, 2.75]
    assert (runs / "code_loss.png").exists()

    for line in lines:
        del line["pretrain_heldout_loss"]
    (mixed / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    build_report(runs)
    assert not (runs / "code_loss.png").exists() and "held-out code" not in (runs / "report.md").read_text()


def test_the_example_text_is_captioned_by_what_it_holds_and_left_out_without_a_config(tmp_path):
    """A binary arm's texts have no feedback span; a run whose config.yaml is gone still reports
    (without an example: how its texts were built is not known)."""
    plan = [[], [True, False, False, False]]
    textual = make_run(tmp_path / "textual", plan, [[False] * 4, [True, False, False, False]])
    make_run(tmp_path / "binary", plan, [[False] * 4, [True, False, False, False]], textual=False)
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    text_part, binary_part = md.split("## Run `textual`")[1], md.split("## Run `binary`")[1].split("## Run `textual`")[0]
    assert "(reward token, feedback span, prompt, program)" in text_part
    assert "(reward token, prompt, program: no feedback span in this run's texts)" in binary_part
    assert "<|lang_feedback|>" not in binary_part

    (textual / "config.yaml").unlink()
    build_report(textual)
    assert "Example training text" not in (textual / "report.md").read_text()


def test_the_example_text_is_the_one_the_loop_trained_on_with_the_stop_hint(tmp_path):
    """training_text.stop_hint (the authors' post-processing): a sample cut at its stop sequences
    was trained with a last feedback line quoting what was cut off and naming the model's end
    token, append_eos or not. The report's example left that line out (and would name another end
    token): it is now the text the loop's own builder makes of that sample."""
    from leti.config import load_config
    from leti.loop import stages

    model = tmp_path / "model"  # a model whose tokenizer ends texts with </s>, not <|endoftext|>
    model.mkdir()
    (model / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    run = make_run(tmp_path / "hint", [[], [True, False, False, False]], [[False] * 4, [True, False, False, False]],
                   stop_hint=True)
    _set_config(run, model=str(model))
    samples = run / "iterations" / "1" / "samples.jsonl"
    records = [{**json.loads(x), "cut_off": "\nassert wrong_name(1) == 1\n"} for x in samples.read_text().splitlines()]
    samples.write_text("".join(json.dumps(r) + "\n" for r in records))

    cfg = load_config(run / "config.yaml")
    assert cfg.training_text.stop_hint and not cfg.training_text.append_eos
    failing = next(r for r in records if not r["passed"])
    [trained] = stages.training_texts({(failing["problem_id"], failing["sample_idx"]): failing},
                                      get_task(TASK).problems("train"), cfg, "</s>")
    assert "starts with [assert wrong_name(1) == 1]. Try to use </s> to end your code.<|/lang_feedback|>" in trained
    assert load_run(run).example_failure == trained
    build_report(run)
    assert "Try to use </s> to end your code." in (run / "report.md").read_text()


def test_a_run_without_reward_tokens_is_said_to_be_evaluated_on_the_plain_prompt(tmp_path, monkeypatch):
    """training_text.reward_token: false: the loop evaluates on the plain prompt, and its texts
    start with the feedback span; the report says both instead of claiming <|good|>. Reported
    from inside the run (`leti report .`), the run is named by its folder."""
    plan = [[], [True, False, False, False]]
    run = make_run(tmp_path / "norew", plan, [[False] * 4, [True, False, False, False]], reward_token=False)
    monkeypatch.chdir(run)
    build_report(Path("."))
    md = (run / "report.md").read_text()
    assert md.startswith("# LeTI report: norew\n") and "## Run `norew`\n" in md
    assert "Iteration 0 is the model before any training; this run trained without reward tokens and is " \
        "evaluated on the plain prompt." in md
    assert "`<|good|>` prefix" not in md
    assert "(feedback span, prompt, program: no reward token in this run's texts)" in md
    assert "\n<|lang_feedback|>" in md and "<|bad|>" not in md
    assert (run / "failures_norew.png").exists()

    rewarded = make_run(tmp_path / "runs" / "good", plan, [[False] * 4, [True, False, False, False]])
    (run.parent / "runs" / "norew").symlink_to(run)
    build_report(rewarded.parent)
    md = (rewarded.parent / "report.md").read_text()
    assert "; LeTI-trained models are evaluated with the `<|good|>` prefix (see each iteration's eval.json); " \
        "`norew` trained without reward tokens and is evaluated on the plain prompt." in md


def test_a_finished_iterations_samples_file_cut_since_is_not_counted_from(tmp_path):
    """A samples.jsonl cut after its iteration finished read as 'a write in progress': the report
    showed the failure counts of the lines left. The metrics line keeps the ones trained on."""
    run = make_run(tmp_path / "run", [[], [True, False, False, False]], [[False] * 4, [True, False, False, False]])
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    lines[1].update(train_samples=4, train_exception_counts={"NameError": 3})
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    samples = run / "iterations" / "1" / "samples.jsonl"
    build_report(run)
    whole = (run / "report.md").read_text()
    assert "| NameError 3 |" in whole and "no longer holds" not in whole
    text = samples.read_text()
    samples.write_text(text[: text.index("\n") + 40])  # one record and a cut line
    build_report(run)
    md = (run / "report.md").read_text()
    assert "| NameError 3 |" in md and "| NameError 1 |" not in md
    assert f"`{samples}` no longer holds the samples its iteration finished with (cut or edited since): that " \
        "iteration's failure counts come from metrics.jsonl." in md


def test_a_metrics_file_cut_short_is_said_so(tmp_path):
    """A partial last line of metrics.jsonl (a run killed while writing it) is left out, as the
    runner leaves it out, and the report says so instead of showing fewer iterations silently."""
    run = _hand_run(tmp_path / "run", [(0, {"pass@1": (0.25, 0.1)}), (4, {"pass@1": (0.5, 0.1)})])
    build_report(run)
    assert "partial line" not in (run / "report.md").read_text()
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text[: len(text) - 20])
    build_report(run)
    md = (run / "report.md").read_text()
    assert "metrics.jsonl ends in a partial line" in md and f"--run-dir {run}" in md
    assert "| 0 | 0 |" in md and "| 1 | 4 |" not in md  # iteration 0 shown, the cut line left out


# --- damaged or hand-edited run files: one line naming the file and line, never a traceback ------

def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and err.startswith("leti: error: "), err
    return err.removeprefix("leti: error: ")


def _edit_line(path: Path, index: int, edit) -> None:
    lines = path.read_text().splitlines()
    lines[index] = edit(lines[index])
    path.write_text("\n".join(lines) + "\n")


def _with(**fields):
    return lambda line: json.dumps({**json.loads(line), **fields})


@pytest.mark.parametrize("edit, message", [
    # each was a ValueError/TypeError traceback from the table or the plots
    (_with(gradient_steps_total="abc"), "metrics.jsonl:2: 'gradient_steps_total' must be a count >= 0 or null, got \"abc\""),
    (_with(train_pass_rate="abc"), "metrics.jsonl:2: 'train_pass_rate' must be a number or null, got \"abc\""),
    (_with(eval_stderr={"pass@1": "x"}), "metrics.jsonl:2: 'eval_stderr' must be an object of numbers or null"),
    (_with(pretrain_heldout_loss="x"), "metrics.jsonl:2: 'pretrain_heldout_loss' must be a number or null"),
    # shown as a row of its own
    (_with(iteration=-3), "metrics.jsonl:2: iteration -3 is not an iteration number (0, 1, ...); delete that line"),
])
def test_a_metrics_field_of_the_wrong_type_is_named(tmp_path, capsys, edit, message):
    run = make_run(tmp_path / "r", [[], [True, False]], [[True, False], [True, True]])
    _edit_line(run / "metrics.jsonl", 1, edit)
    assert main(["report", str(run)]) == 2
    assert _one_error(capsys).startswith(f"{run}/{message}")


def test_a_repeated_metrics_line_is_named_not_shown_twice(tmp_path, capsys):
    run = make_run(tmp_path / "r", [[], [True, False]], [[True, False], [True, True]])
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text + text)  # every iteration was a row twice, twice the steps' points
    assert main(["report", str(run)]) == 2
    assert _one_error(capsys).startswith(f"{run}/metrics.jsonl:3: iteration 0 again (also on line 1); "
                                         "delete the repeated line")


@pytest.mark.parametrize("line, edit, message", [
    (0, lambda line: "[1, 2]", "not a sample record (needs problem_id and sample_idx)"),  # AttributeError
    (1, _with(exception_type=["x"]), "not a sample record ('exception_type' is [\"x\"])"),  # unhashable list
    (0, _with(prompt=5), "not a sample record (bad or missing prompt)"),  # the example text's removeprefix
    (0, _with(status="weird"), "not a sample record ('status' is \"weird\")"),  # ValueError from Status
])
def test_a_sample_line_that_is_not_a_record_is_named(tmp_path, capsys, line, edit, message):
    run = make_run(tmp_path / "r", [[], [False, False]], [[True, False], [True, True]])
    _edit_line(run / "iterations" / "1" / "samples.jsonl", line, edit)
    assert main(["report", str(run)]) == 2
    assert _one_error(capsys) == (f"{run}/iterations/1/samples.jsonl:{line + 1}: {message}; restore that line, "
                                  "or delete it (the report then leaves that sample out)")


def test_duplicated_sample_lines_count_once_as_the_loop_counts_them(tmp_path):
    run = make_run(tmp_path / "r", [[], [False, True, False, False]], [[True, False], [True, True, False, True]])
    before = load_run(run).points[1]
    for name in ("samples.jsonl", "eval_samples.jsonl"):
        path = run / "iterations" / "1" / name
        path.write_text(path.read_text() * 2)
    after = load_run(run).points[1]
    assert (after.train_samples, after.eval_samples) == (before.train_samples, before.eval_samples) == (4, 4)
    assert after.train_failures == before.train_failures and after.eval_failures == before.eval_failures


@pytest.mark.parametrize("eval_json, message", [
    ("[1]", "not an evaluation record (a JSON object)"),
    ('{"per_problem": {"p1": 3}}', "'per_problem' must map each problem id to [n, c] (samples, correct)"),
])
def test_a_damaged_eval_json_is_named(tmp_path, capsys, eval_json, message):
    run = make_run(tmp_path / "r", [[]], [[True, False]])
    (run / "iterations" / "0" / "eval.json").write_text(eval_json)
    assert main(["report", str(run)]) == 2
    assert _one_error(capsys) == (f"{run}/iterations/0/eval.json: {message}; restore it, or delete it (the report "
                                  "then counts from eval_samples.jsonl)")


@pytest.mark.parametrize("summary, message", [
    ("{garbage", "not valid JSON (Expecting property name enclosed in double quotes at line 1 column 2)"),
    ("[1]", "not a demo summary (a JSON object)"),
    ('{"iterations": {"textual": "x"}}', "'iterations' must map each arm to a list of iteration objects"),
    ('{"baseline_pass_at_1": "x"}', "'baseline_pass_at_1' is \"x\", not what `leti demo` writes there"),
])
def test_a_damaged_demo_summary_is_named(tmp_path, capsys, summary, message):
    demo = tmp_path / "demo"
    make_run(demo / "seed0" / "textual", [[]], [[True, False]])
    (demo / "summary.json").write_text(summary)
    assert main(["report", str(demo)]) == 2
    assert _one_error(capsys) == (f"{demo}/summary.json: {message}; run the `leti demo` command that made it again "
                                  "to rewrite it, or delete it to report the runs alone")


def test_gradient_steps_averaged_over_seeds_are_rounded():
    """A seed mean of steps that differ (the passing arm's) printed as 245.33333333333334."""
    from leti.report import _steps

    assert [_steps(v) for v in (245 + 1 / 3, 768, 768.0, None)] == ["245.3", "768", "768", "n/a"]


def test_arms_evaluated_at_different_iterations_say_what_bounds_their_step_counts(tmp_path):
    """The binary arm evaluated every 3rd iteration (eval.every 3): it "first reached" 30% at 24
    steps only because iterations 1 and 2 were not looked at. Every evaluation counts (dropping the
    textual arm's iterations 1 and 2 threw away when it got there), and the report says that the
    step counts are bounded by each arm's evaluations: the binary arm got there after more than 0
    and at most 24 steps, so the ratio 3.00 is not a measurement of more than that."""
    runs = tmp_path / "runs"
    ev = [{"pass@1": (0.1, 0.05)}, {"pass@1": (0.3, 0.1)}, {"pass@1": (0.3, 0.1)}, {"pass@1": (0.4, 0.1)}]
    _hand_run(runs / "textual", [(0, ev[0]), (8, ev[1]), (16, ev[2]), (24, ev[3])])
    _hand_run(runs / "binary", [(0, ev[0]), (8, None), (16, None), (24, {"pass@1": (0.3, 0.1)})], textual=False)
    cmp = compare_arms(load_run(runs / "textual", "textual"), load_run(runs / "binary", "binary"))
    assert (cmp["textual_steps_to_reach"], cmp["binary_steps"], cmp["step_ratio"]) == (8, 24, 3.0)
    assert cmp["evaluated_at_different_iterations"] is True
    assert (cmp["textual_last_below_steps"], cmp["binary_last_below_steps"]) == (0, 0)
    assert cmp["textual_final_pass_at_1"] == 0.4 and cmp["textual_final_iteration"] == 3
    assert cmp["common_iteration"] == 3 and cmp["difference_at_common_iteration"] == pytest.approx(0.1)
    build_report(runs)
    md = " ".join((runs / "report.md").read_text().split())
    assert ("after **8** steps (binary/textual step ratio 3.00). The arms were not evaluated at the same iterations "
            "(eval.every), so each step count is bounded by when that arm was looked at: the textual arm first had "
            "the score after more than 0 and at most 8 gradient steps, the binary arm after more than 0 and at most "
            "24 gradient steps.") in md
    # reached at its first evaluation too, but the bounds say more than "it may have needed fewer"
    assert "That is its first evaluation after training" not in md


def test_arms_evaluated_at_the_same_iterations_get_no_bounds_sentence(tmp_path):
    """The textual arm ran on to iteration 3 (more iterations, not a sparser evaluation): its
    extra evaluations are not "different iterations"."""
    runs = tmp_path / "runs"
    _hand_run(runs / "textual", [(0, {"pass@1": (0.1, 0.1)}), (8, {"pass@1": (0.2, 0.1)}),
                                 (16, {"pass@1": (0.35, 0.1)}), (24, {"pass@1": (0.4, 0.1)})])
    _hand_run(runs / "binary", [(0, {"pass@1": (0.1, 0.1)}), (8, {"pass@1": (0.3, 0.05)})], textual=False)
    cmp = compare_arms(load_run(runs / "textual", "textual"), load_run(runs / "binary", "binary"))
    assert (cmp["textual_steps_to_reach"], cmp["binary_steps"], cmp["step_ratio"]) == (16, 8, 0.5)
    assert cmp["evaluated_at_different_iterations"] is False and cmp["textual_last_below_steps"] == 8
    build_report(runs)
    md = " ".join((runs / "report.md").read_text().split())
    assert "after **16** steps (binary/textual step ratio 0.50)." in md and "not evaluated at the same" not in md


def test_arms_of_different_lengths_are_compared_on_their_whole_runs(tmp_path):
    """A textual arm resumed to 3 iterations against a binary arm of 1: each arm's final score is
    its own last evaluation; the budget-matched difference is at iteration 1, the last both
    evaluated, and says so; the noise caveat stays with a "did not reach" verdict."""
    runs = tmp_path / "runs"
    _hand_run(runs / "textual", [(0, {"pass@1": (0.1, 0.1)}), (8, {"pass@1": (0.25, 0.1)}),
                                 (16, {"pass@1": (0.1, 0.1)}), (24, {"pass@1": (0.05, 0.1)})])
    _hand_run(runs / "binary", [(0, {"pass@1": (0.1, 0.1)}), (8, {"pass@1": (0.3, 0.25)})], textual=False)
    cmp = compare_arms(load_run(runs / "textual", "textual"), load_run(runs / "binary", "binary"))
    assert (cmp["textual_final_iteration"], cmp["textual_final_pass_at_1"], cmp["textual_final_steps"]) == (3, 0.05, 24)
    assert (cmp["common_iteration"], cmp["textual_pass_at_1_at_common_iteration"],
            cmp["binary_pass_at_1_at_common_iteration"]) == (1, 0.25, 0.3)
    assert cmp["difference_at_common_iteration"] == pytest.approx(-0.05)
    assert cmp["textual_steps_to_reach"] is None and cmp["step_ratio"] is None and cmp["binary_gain_within_stderr"]
    build_report(runs)
    md = " ".join((runs / "report.md").read_text().split())
    assert "the textual arm ended at 5.0 ± 10.0% after 24 gradient steps." in md
    # the caveat was left out of report.md on this path while comparisons.json said it
    assert ("The textual arm **did not reach** the binary arm's final score (30.0%) within its 24 gradient steps "
            "(iteration 3); its final score is 5.0 ± 10.0%. The binary arm's gain over its baseline") in md
    assert "It stopped before" not in md  # it ran longer than the binary arm needed


@pytest.mark.parametrize("one_problem", [True, False], ids=["one-problem", "not-paired"])
def test_the_difference_at_the_common_iteration_is_said_without_a_standard_error(tmp_path, one_problem):
    """eval.max_problems 1 (no standard error from one problem), or arms whose per-problem results
    are not known (not paired): the budget-matched difference, in comparisons.json, was left out of
    report.md altogether; it is said without the ±."""
    runs = tmp_path / "runs"
    for arm, scores in (("textual", [0.0, 0.5, 1.0]), ("binary", [0.0, 0.0, 0.5])):
        run = _hand_run(runs / arm, [(4 * k, {"pass@1": (s, None)}) for k, s in enumerate(scores)],
                        textual=arm == "textual")
        if one_problem:  # each evaluation's eval.json: one problem, 2 samples
            for k, s in enumerate(scores):
                (run / "iterations" / str(k)).mkdir(parents=True)
                (run / "iterations" / str(k) / "eval.json").write_text(json.dumps(
                    {"pass@k": {"pass@1": s}, "pass@k_stderr": {"pass@1": None}, "per_problem": {"p1": [2, int(2 * s)]}}))
    build_report(runs)
    [cmp] = json.loads((runs / "comparisons.json").read_text())
    assert (cmp["common_iteration"], cmp["difference_at_common_iteration"]) == (2, 0.5)
    assert cmp["difference_at_common_iteration_stderr"] is None and cmp["paired_problems"] == (1 if one_problem else 0)
    md = " ".join((runs / "report.md").read_text().split())
    how = "paired over 1 held-out problem: no standard error" if one_problem else \
        "not paired by problem, so no standard error"
    assert f"Textual minus binary at iteration 2, the last both evaluated: +50.0 points ({how})." in md

@pytest.mark.parametrize("textual_final, reached", [([True, True, False, False], False), ([True, True, True, False], True)])
def test_the_score_to_reach_is_the_binary_arms_final_one_when_it_ran_longer(tmp_path, textual_final, reached):
    """The 2B presets: the textual arm runs 10 iterations, the binary arm 30. The score to reach was
    the binary arm's at iteration 10 (the last both ran), still named its "final score": here 25%
    at iteration 1, against the 75% it ended at after iteration 3, and a step ratio against it."""
    runs, plan = tmp_path / "runs", [[]] + [[True, False, False, False]] * 3
    make_run(runs / "textual", plan, [[False] * 4, textual_final])
    make_run(runs / "binary", plan, [[False] * 4, [True, False, False, False], [True, True, False, False],
                                     [True, True, True, False]], textual=False)
    build_report(runs)
    [cmp] = json.loads((runs / "comparisons.json").read_text())
    assert (cmp["binary_final_pass_at_1"], cmp["binary_final_iteration"], cmp["binary_final_steps"]) == (0.75, 3, 15)
    assert cmp["binary_steps"] == 15 and cmp["textual_final_iteration"] == 1
    # budget-matched: at iteration 1, the last both evaluated, paired over the 4 problems
    assert (cmp["common_iteration"], cmp["binary_pass_at_1_at_common_iteration"]) == (1, 0.25)
    assert cmp["paired_problems"] == 4
    md = " ".join((runs / "report.md").read_text().split())
    assert "the binary arm ended at 75.0 ± 25.0% after 15 gradient steps (first reached after 15)" in md
    diff = "+25.0 ± 25.0" if not reached else "+50.0 ± 28.9"
    assert f"Textual minus binary at iteration 1, the last both evaluated: {diff} points" in md
    if reached:  # at its one evaluation after training: 5 steps against the binary arm's 15
        assert (cmp["textual_steps_to_reach"], cmp["step_ratio"]) == (5, 3.0)
        assert "reached the binary arm's final score after **5** steps (binary/textual step ratio 3.00)" in md
    else:  # never a ratio against a score the binary arm had on its way
        assert (cmp["textual_steps_to_reach"], cmp["step_ratio"]) == (None, None)
        assert ("The textual arm **did not reach** the binary arm's final score (75.0%) within its 5 gradient steps "
                "(iteration 1); its final score is 50.0 ± 28.9%. It stopped before the binary arm's 15 steps to get "
                "there: more iterations (a finished run resumes with `--set iterations=N`) can show whether it "
                "reaches it in fewer.") in md
        assert "step ratio" not in md


def test_a_run_still_in_iteration_0_is_listed_not_left_out(tmp_path, capsys):
    """A run writes run.json when it starts and metrics.jsonl when iteration 0 ends: a demo arm still
    evaluating its baseline was missing from the report without a word, and `leti report` of such a
    run alone said there was no run."""
    demo = tmp_path / "demo"
    _hand_run(demo / "seed0" / "textual", [(0, {"pass@1": (0.0, 0.0)}), (1, {"pass@1": (0.25, 0.25)})])
    binary = demo / "seed0" / "binary"
    (binary / "iterations" / "0").mkdir(parents=True)
    (binary / "run.json").write_text(json.dumps({"mode": "leti"}))
    cfg = RunConfig(model="unused", task=TASK, iterations=1)
    (binary / "config.yaml").write_text(dump_config(replace(cfg, training_text=replace(cfg.training_text, textual_feedback=False))))
    build_report(demo)
    md = (demo / "report.md").read_text()
    assert "| binary | n/a | n/a | - | none of 1 (unfinished) | 0 |" in md
    assert "textual vs binary: not compared yet, `binary` has not finished iteration 0;" in md
    assert "## Run `binary`\n\nNo iteration has finished yet: iteration 0 (the first evaluation) is running" in md
    assert not (demo / "failures_binary.png").exists()
    assert main(["report", str(binary)]) == 0  # the run on its own is reported too
    assert "none of 1 (unfinished)" in (binary / "report.md").read_text()
    (binary / "run.json").unlink()  # a folder that is no run is still refused
    assert main(["report", str(binary)]) == 2
    assert "no run found (no metrics.jsonl or run.json here or in its subfolders)" in capsys.readouterr().err


DRAWN = "`eval.n` 16, `eval.temperature` 0.1, `eval.top_p` 1.0, `eval.max_new_tokens` 512, `sampling.backend` hf"


def test_the_report_says_what_the_runs_were_evaluated_on_and_warns_when_they_differ(tmp_path):
    """One table and one plot compared runs of different tasks and models without naming either."""
    same = tmp_path / "same"
    _hand_run(same / "textual", [(0, {"pass@1": (0.0, 0.0)}), (1, {"pass@1": (0.25, 0.25)})])
    _hand_run(same / "binary", [(0, {"pass@1": (0.0, 0.0)}), (1, {"pass@1": (0.25, 0.25)})], textual=False)
    build_report(same)
    md = (same / "report.md").read_text()
    assert (f"Evaluated on task `{TASK}`, split `test`, sampled with {DRAWN}; starting model `unused`.") in md
    assert "These runs differ" not in md
    mixed = tmp_path / "mixed"
    _hand_run(mixed / "a", [(0, {"pass@1": (0.0, 0.0)})])
    _hand_run(mixed / "b", [(0, {"pass@1": (0.0, 0.0)})], model="other", task="synthetic:seed=1,train=4,test=4",
              eval={"max_problems": 2})
    build_report(mixed)
    md = (mixed / "report.md").read_text()
    assert ("**These runs differ in their held-out problems and their starting model**, so their scores below are not "
            f"comparable side by side: `a` on task `{TASK}`, split `test`, from `unused`; `b` on task "
            "`synthetic:seed=1,train=4,test=4`, split `test`, its first 2 problems, from `other`.") in md


def test_a_demo_with_two_seeds_is_not_said_to_compare_different_things(tmp_path):
    """Each demo seed draws its own problems and warm start by design: its report opened with the
    bold warning that its runs were not comparable. Runs are compared within their seed."""
    demo = tmp_path / "demo"
    for seed in (0, 1):
        for arm in ("textual", "binary"):
            run = _hand_run(demo / f"seed{seed}" / arm, [(0, {"pass@1": (0.0, 0.0)}), (1, {"pass@1": (0.25, 0.25)})],
                            textual=arm == "textual")
            _set_config(run, task=f"synthetic:seed={seed},train=4,test=4", model=f"/cache/warmstart-seed{seed}")
    build_report(demo)
    md = (demo / "report.md").read_text()
    assert ("Each seed has its own held-out problems and starting model, shared by its runs: `seed0` on task "
            "`synthetic:seed=0,train=4,test=4`, split `test`, from `/cache/warmstart-seed0`; `seed1` on task "
            "`synthetic:seed=1,train=4,test=4`, split `test`, from `/cache/warmstart-seed1`. Every run's held-out "
            f"samples are drawn with {DRAWN}.") in md
    assert "not comparable" not in md
    _set_config(demo / "seed1" / "binary", model="/cache/other")  # within a seed they must agree
    build_report(demo)
    assert "**These runs differ in their starting model**" in (demo / "report.md").read_text()


def test_runs_sampled_differently_on_the_held_out_problems_are_said_to_differ(tmp_path):
    """Two runs evaluated at eval.temperature 0.1 and 1.5 (top_p 0.5) shared one "Evaluated on"
    line, one table and one plot without a word: pass@1 at another temperature measures another
    thing. The warning names the settings that differ, and each run's values."""
    runs = tmp_path / "runs"
    _hand_run(runs / "a", [(0, {"pass@1": (0.0, 0.0)})])
    _hand_run(runs / "b", [(0, {"pass@1": (0.0, 0.0)})], eval={"temperature": 1.5, "top_p": 0.5})
    build_report(runs)
    md = (runs / "report.md").read_text()
    assert ("**These runs differ in how their held-out samples were drawn (eval.temperature, eval.top_p)**, so their "
            f"scores below are not comparable side by side: `a` on task `{TASK}`, split `test`, sampled with "
            f"`eval.temperature` 0.1, `eval.top_p` 1.0, from `unused`; `b` on task `{TASK}`, split `test`, sampled "
            "with `eval.temperature` 1.5, `eval.top_p` 0.5, from `unused`.") in md
    assert "Evaluated on" not in md
    # every other setting of the list, one at a time
    for field, value in (("n", 8), ("max_new_tokens", 128)):
        other = tmp_path / field
        _hand_run(other / "a", [(0, {"pass@1": (0.0, 0.0)})])
        _hand_run(other / "b", [(0, {"pass@1": (0.0, 0.0)})], eval={field: value, "ks": [1]})
        build_report(other)
        assert f"**These runs differ in how their held-out samples were drawn (eval.{field})**" in (other / "report.md").read_text()
    # the same settings: no warning, and the shared line says what they were
    same = tmp_path / "same"
    for name in ("a", "b"):
        _hand_run(same / name, [(0, {"pass@1": (0.0, 0.0)})], eval={"temperature": 1.5, "top_p": 0.5})
    build_report(same)
    md = (same / "report.md").read_text()
    assert "These runs differ" not in md and "`eval.temperature` 1.5, `eval.top_p` 0.5," in md
    # a textual and a binary arm sampled differently are not paired at all (as before)
    pair = tmp_path / "pair"
    _hand_run(pair / "textual", [(0, {"pass@1": (0.0, 0.0)}), (1, {"pass@1": (0.25, 0.25)})])
    _hand_run(pair / "binary", [(0, {"pass@1": (0.0, 0.0)}), (1, {"pass@1": (0.25, 0.25)})], textual=False,
              eval={"temperature": 0.8})
    build_report(pair)
    md = (pair / "report.md").read_text()
    assert "their configs differ in more than the feedback arm (eval.temperature)" in md
    assert "differ in how their held-out samples were drawn (eval.temperature)" in md


def test_demo_seeds_sampled_differently_are_said_to_differ(tmp_path):
    """A demo's seeds may differ in problems and starting model, not in how the held-out samples are
    drawn (the summary averages the seeds' scores)."""
    demo = tmp_path / "demo"
    for seed in (0, 1):
        for arm in ("textual", "binary"):
            _hand_run(demo / f"seed{seed}" / arm, [(0, {"pass@1": (0.0, 0.0)}), (1, {"pass@1": (0.25, 0.25)})],
                      textual=arm == "textual", task=f"synthetic:seed={seed},train=4,test=4",
                      eval={"temperature": 0.2 if seed == 0 else 0.8})
    build_report(demo)
    md = (demo / "report.md").read_text()
    assert "**These runs differ in how their held-out samples were drawn (eval.temperature)**" in md
    assert "`seed1/binary` on task `synthetic:seed=1,train=4,test=4`, split `test`, sampled with `eval.temperature` 0.8" in md


@pytest.mark.parametrize("quick", [True, False])
def test_a_demos_arms_and_seeds_draw_their_held_out_samples_alike(quick):
    """The report warns when runs' held-out sampling settings differ; a demo's arms and seeds are
    built from one config, so its report never does."""
    from leti.demo.config import ARMS, arm_config, load_demo_config, preset_path
    from leti.report.data import eval_settings

    cfg = load_demo_config(preset_path(quick))
    drawn = {eval_settings(arm_config(cfg, seed, f"/cache/warmstart-seed{seed}", arm)) for seed in (0, 1) for arm in ARMS}
    assert len(drawn) == 1


def test_a_demo_summary_older_than_its_runs_is_said_to_be(tmp_path):
    """An arm continued with plain `leti run` after the demo wrote summary.json: the report showed
    the summary's tables, which stop at the demo's iteration, beside a comparison of the whole runs
    without a word. Once the demo is run again its summary names the arm and the line goes."""
    from leti.demo.summary import make_summary

    demo = tmp_path / "demo"
    rows = [(0, {"pass@1": (0.0, 0.0)}), (1, {"pass@1": (0.25, 0.25)})]
    for arm in ("textual", "binary"):
        _hand_run(demo / "seed0" / arm, rows, textual=arm == "textual")

    def summarise(**kw) -> None:
        hist = {0: {arm: load_run(demo / "seed0" / arm, arm) for arm in ("textual", "binary")}}
        (demo / "summary.json").write_text(json.dumps(make_summary(hist, {"wall_seconds": 1.0}, {}, **kw)))

    summarise()
    build_report(demo)
    assert "older than the runs" not in (demo / "report.md").read_text()
    shutil.rmtree(demo / "seed0" / "textual")  # continued to iteration 2
    _hand_run(demo / "seed0" / "textual", [*rows, (2, {"pass@1": (0.75, 0.25)})])
    build_report(demo)
    assert ("**summary.json is older than the runs**: `seed0/textual` (to iteration 2) went on past its last "
            "iteration (1) after it was written") in (demo / "report.md").read_text()
    summarise(iterations=1)  # what `leti demo` writes when run again
    build_report(demo)
    md = (demo / "report.md").read_text()
    assert "older than the runs" not in md and "continued past it with `leti run`" in md
    # continued with iterations=4 and stopped after 2: the summary names what the folder holds
    shutil.rmtree(demo / "seed0" / "textual")
    _hand_run(demo / "seed0" / "textual", [*rows, (2, {"pass@1": (0.75, 0.25)})], iterations=4)
    summarise(iterations=1)
    assert json.loads((demo / "summary.json").read_text())["past_demo_iterations"] == {"seed0/textual": 2}
    build_report(demo)
    assert "older than the runs" not in (demo / "report.md").read_text()


def test_the_pass_at_1_band_stays_within_0_and_100_percent(tmp_path, figures):
    """A score near 100% (or 0%) with a standard error wider than the room left drew its band
    past 100% (below 0%), and the axis grew to 110%."""
    run = _hand_run(tmp_path / "high", [(0, {"pass@1": (0.03, 0.05)}), (5, {"pass@1": (0.97, 0.05)})])
    build_report(run)
    ax = figures["pass_at_1.png"].axes[0]
    [band] = ax.collections
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.max() == pytest.approx(100.0) and ys.min() == pytest.approx(0.0)
    assert ax.get_ylim()[1] <= 105.0
