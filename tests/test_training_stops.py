"""How training samples meet their stop sequences: stopped at them (spec, default), never
(`sampling.stop_sequences: false`, the authors' main runs) or cut at them after sampling with the
authors' hint about the cut-off code (`training_text.stop_hint`, their post-processing ablation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leti.cli import main
from leti.config import load_config
from leti.execution.records import ExecutionResult, Status
from leti.feedback.training_text import (
    BAD,
    FEEDBACK_CLOSE,
    FEEDBACK_OPEN,
    GOOD,
    TrainingTextConfig,
    build_training_text,
)
from leti.loop import stages
from leti.sampling.base import cut_at_stop

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")

# The authors' sentence (LeTI run_leti.py, mbpp_postprocess_langfeedback_fn), typed out here.
AUTHORS_HINT = ("We only need the first defined function. You should not generate the rest of the code that starts "
                "with [{rest}]. Try to use {eos} to end your code.")


def test_cut_at_stop_splits_at_the_earliest_stop():
    assert cut_at_stop("a\nprint(1)\nassert x", ("\nassert", "\nprint")) == ("a", "\nprint(1)\nassert x")
    assert cut_at_stop("no stop here", ("\nclass",)) == ("no stop here", "")
    assert cut_at_stop("", ("x",)) == ("", "")


def _result(passed: bool) -> ExecutionResult:
    if passed:
        return ExecutionResult(id=0, status=Status.PASSED)
    return ExecutionResult(id=0, status=Status.FAILED, exception_type="NameError",
                           feedback="NameError: name 'y' is not defined\n")


def test_the_stop_hint_goes_in_the_feedback_span_of_passing_and_failing_samples():
    cfg = TrainingTextConfig(stop_hint=True)
    rest = "\nprint(f(1))\n" + "x" * 300
    quoted = rest.strip()[:128]
    hint = AUTHORS_HINT.format(rest=quoted, eos="<|endoftext|>")
    passed = build_training_text("P\n", "C", _result(True), cfg, eos_token="<|endoftext|>", cut_off=rest)
    assert passed == f"{GOOD}{FEEDBACK_OPEN}{hint}{FEEDBACK_CLOSE}P\nC"
    failed = build_training_text("P\n", "C", _result(False), cfg, eos_token="<|endoftext|>", cut_off=rest)
    # the executor's feedback (trailing whitespace off), then the hint on its own line
    assert failed == f"{BAD}{FEEDBACK_OPEN}NameError: name 'y' is not defined\n{hint}{FEEDBACK_CLOSE}P\nC"
    # nothing cut off (or only whitespace): the layout of the spec
    assert build_training_text("P\n", "C", _result(True), cfg, eos_token="<|endoftext|>", cut_off="\n  ") == f"{GOOD}P\nC"
    # off by default
    assert build_training_text("P\n", "C", _result(True), TrainingTextConfig(), cut_off=rest) == f"{GOOD}P\nC"


@pytest.mark.parametrize(("overrides", "message"), [
    (["training_text.stop_hint=true", "sampling.stop_sequences=false"],
     "sampling.stop_sequences: false asks never to do; leave sampling.stop_sequences true"),
    (["training_text.stop_hint=true", "training_text.textual_feedback=false"],
     "training_text.stop_hint goes in the feedback span"),
])
def test_contradictory_stop_settings_are_refused(overrides, message, capsys, tmp_path):
    assert main(["run", CONFIG, "--run-dir", str(tmp_path / "r"), *[a for o in overrides for a in ("--set", o)]]) == 2
    assert message in capsys.readouterr().err


@pytest.fixture
def stop_task(tmp_path) -> str:
    """Problems whose own stop sequence is "e": the tiny random model writes it often."""
    rows = [{"id": f"t{k}", "split": "train" if k < 4 else "test", "stop": ["e"],
             "prompt": f"def add_{k}(n):\n", "tests": f"assert add_{k}(1) == {k + 1}"} for k in range(1, 6)]
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}"


def _run(tmp_path, name, model, task, *sets) -> Path:
    run = tmp_path / name
    args = ["run", CONFIG, "--run-dir", str(run), "--set", f"model={model}", "--set", f"task={task}",
            "--set", "sampling.n=4", "--set", "progress=false"]
    assert main([*args, *[a for s in sets for a in ("--set", s)]]) == 0
    return run


def _records(path: Path) -> dict:
    return {(r["problem_id"], r["sample_idx"]): r for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.slow
def test_unstopped_and_cut_after_training_samples(tmp_path, tiny_model_path, stop_task):
    uncut = _records(_run(tmp_path, "none", tiny_model_path, stop_task, "sampling.stop_sequences=false")
                     / "iterations" / "1" / "samples.jsonl")
    hinted_run = _run(tmp_path, "hint", tiny_model_path, stop_task, "training_text.stop_hint=true")
    hinted = _records(hinted_run / "iterations" / "1" / "samples.jsonl")

    # the authors' main runs: the whole generation is kept, stop sequence and all
    assert any("e" in r["completion"] for r in uncut.values())
    assert all("cut_off" not in r for r in uncut.values())
    # evaluation stops at them either way
    evals = _records(hinted_run / "iterations" / "1" / "eval_samples.jsonl")
    assert evals and not any("e" in r["completion"] for r in evals.values())

    # cut after sampling: the same draws (seeded per problem and index), split at the first "e"
    assert hinted.keys() == uncut.keys()
    for key, r in hinted.items():
        assert "e" not in r["completion"]
        assert r["completion"] + r["cut_off"] == uncut[key]["completion"], key
        assert r["cut_off"] == "" or r["cut_off"].startswith("e")
    assert any(r["cut_off"] for r in hinted.values())

    # the training texts carry the hint exactly where something was cut off
    cfg = load_config(hinted_run / "config.yaml")
    problems = [p for p in _task_problems(stop_task) if p.split == "train"]
    texts = stages.training_texts(hinted, problems, cfg, "<|endoftext|>")
    ordered = sorted(hinted, key=lambda k: (int(k[0][1:]), k[1]))
    assert len(texts) == len(ordered)
    for key, text in zip(ordered, texts, strict=True):
        rest = hinted[key]["cut_off"]
        hint = AUTHORS_HINT.format(rest=rest.strip()[:128], eos="<|endoftext|>")
        assert (hint in text) == bool(rest.strip()), key


def _task_problems(spec: str):
    from leti.tasks import get_task

    return get_task(spec).problems()
