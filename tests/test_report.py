"""`leti report`: builds report.md / report.html / PNGs from small run directories made here
with the loop's file layout and real execution results (no model needed)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

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
             extra_eval: dict | None = None, **training_text) -> Path:
    """A run dir with iterations 0..len(eval_plan)-1; iteration k's samples pass per plan.
    `training_text` overrides fields of the run's training_text config (the demo's arms)."""
    from dataclasses import replace

    task = get_task(TASK)
    train, test = task.problems("train"), task.problems("test")
    cfg = RunConfig(model="unused", task=TASK)
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
    assert "| 1 | 5 | 25.0 | 25.0 | 37.5 |" in md
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
    assert "the binary arm ended at 50.0% after 10 gradient steps (first reached after 10)" in md
    assert "reached the binary arm's final score after **5** steps (binary/textual step ratio 2.00)" in md
    cmp = compare_arms(load_run(demo / "seed0" / "textual", "textual"), load_run(demo / "seed0" / "binary", "binary"))
    assert cmp == {"binary_final_pass_at_1": 0.5, "textual_final_pass_at_1": 0.5, "textual_steps_to_reach": 5,
                   "binary_steps": 10, "binary_total_steps": 10, "baseline": 0.0}
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
    assert "the binary arm ended at 25.0% after 5 gradient steps (already reached before training)" in md
    assert "did not improve on the baseline (25.0%)" in md


def test_report_cli(tmp_path, capsys):
    run = make_run(tmp_path / "r", [[]], [[True, False, True, False]])
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").exists()
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("leti: error:")


@pytest.mark.parametrize("layout", ["empty"])
def test_report_rejects_a_dir_without_runs(tmp_path, layout):
    (tmp_path / layout).mkdir()
    assert main(["report", str(tmp_path / layout)]) == 2


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
    assert "| constant | 25.0 | +25.0 | 5 |" in md and "| passing | 75.0 | +75.0 | 5 |" in md
    assert "| passing | 0.0 | 75.0 |" in md  # held-out pass@1 per iteration
    assert "the binary arm ended at 0.0% after 5 gradient steps" in md
    assert md.index("Run `binary`") < md.index("Run `constant`") < md.index("Run `passing`")
    assert "<|lang_feedback|>The program failed." in md[md.index("Run `constant`"):md.index("Run `passing`")]
    assert "<|bad|>" not in md[md.index("Run `passing`"):]
