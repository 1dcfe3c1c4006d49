"""EAE fixes from review C (/tmp/rev_c/findings.md 1, 3, 4, 5): resume after a gold change, one
set of arguments for verdict and metrics, long honest reports, ontology names that collide with
the generated code's own. Real sandbox where a program runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leti.cli import main
from leti.evaluation.samples import Sample
from leti.execution import ExecutionResult, Status
from leti.tasks.registry import get_task

SENTENCE = "Bob sold the car to Ann and Carl ."
# val: "The attackers were environmental terrorists upset about a new industry coming to town ."
# Attack, gold: assailant=["environmental terrorists"]; roles weapon, assailant, victim, means.
ATTACK_ID = "geneva/val/135_23605_4099594_13355_3"
GOLD = "environmental terrorists"


def _write_sell(tmp_path: Path, buyer: str) -> str:
    """One Sell mention whose Buyer is `buyer`, an ontology, one sample naming Ann: the spec."""
    line = {"wnd_id": "w1", "sentence": SENTENCE, "tokens": SENTENCE.split(),
            "event_mentions": [{"id": "e1", "event_type": "Sell", "trigger": {"start": 1, "end": 2, "text": "sold"},
                                "arguments": [{"role": "Seller", "text": "Bob"}, {"role": "Buyer", "text": buyer}]}]}
    (tmp_path / "data.jsonl").write_text(json.dumps(line) + "\n")
    (tmp_path / "ont.json").write_text(json.dumps({"Sell": {"arguments": {"Seller": "who sells", "Buyer": "who buys"}}}))
    sample = {"problem_id": "eae/test/e1", "sample_idx": 0, "completion": 'seller=["Bob"], buyer=["Ann"])'}
    (tmp_path / "samples.jsonl").write_text(json.dumps(sample) + "\n")
    return f"eae-jsonl:test={tmp_path / 'data.jsonl'},ontology={tmp_path / 'ont.json'}"


# ---- 1: a resumed evaluation does not keep verdicts judged against an older gold -------------


def test_tests_name_the_data_the_gold_comes_from(tmp_path):
    spec = _write_sell(tmp_path, "Ann")
    before = get_task(spec).problems()[0]
    _write_sell(tmp_path, "Carl")
    after = get_task(spec).problems()[0]
    assert before.prompt == after.prompt and before.tests != after.tests
    assert "Ann" not in before.tests and "Carl" not in after.tests  # a digest, not the gold


def test_resumed_evaluation_refuses_verdicts_judged_against_another_gold(tmp_path, capsys):
    spec = _write_sell(tmp_path, "Ann")
    out = tmp_path / "out"
    args = ["evaluate", "--task", spec, "--samples", str(tmp_path / "samples.jsonl"), "--out", str(out)]
    assert main(args) == 0
    first = json.loads((out / "results.json").read_text())
    assert first["pass@1"] == 1.0 and first["arg_c_f1"] == 100.0
    _write_sell(tmp_path, "Carl")  # the gold corrected: the sample's Ann is now wrong
    capsys.readouterr()
    # Resumed, the old verdict was kept: pass@1 1.0 next to an F1 of 50 from the new gold.
    assert main(args) != 0
    assert "executions.jsonl:1: sample ('eae/test/e1', 0) was executed as another program" in capsys.readouterr().err
    assert main([*args[:-1], str(tmp_path / "fresh")]) == 0
    second = json.loads((tmp_path / "fresh" / "results.json").read_text())
    assert second["pass@1"] == 0.0 and second["arg_c_f1"] == 50.0


# ---- 3: verdict and Arg-I / Arg-C describe the same arguments -------------------------------


def _judged(executor, task, problem, completions: list[str]) -> list[ExecutionResult]:
    programs = [task.build_program(problem, c) for c in completions]
    return [task.judge(problem, p, r, executor.config) for p, r in zip(programs, executor.run(programs), strict=True)]


def _arg_c(task, problem, completion: str, result: ExecutionResult | None) -> float:
    return task.extra_metrics([problem], [Sample(problem.id, 0, completion)], [result] if result else [])["arg_c_f1"]


@pytest.mark.parametrize("completion, passed, arg_c_f1", [
    # the verdict sees the last `event`; the scores read only the first call: passed, F1 0
    (f'assailant=["The attackers"]); event = Attack(assailant=["{GOLD}"])', True, 100.0),
    (f'assailant=["The attackers"]); event.assailant = ["{GOLD}"]', True, 100.0),
    ('assailant=[sentence[19:43]])', True, 100.0),  # computed: credited as the verdict was
    (f'assailant=["{GOLD}"]); event = Attack(assailant=["The attackers"])', False, 0.0),
    # failed before the verifier, through its own class named like the verdict's: F1 100
    (f'assailant=["{GOLD}"]); exec("class VerificationError(Exception): pass"); raise VerificationError("x")',
     False, 0.0),
])
def test_scores_come_from_the_arguments_the_verdict_saw(executor, geneva, completion, passed, arg_c_f1):
    problem = geneva.get(ATTACK_ID)
    (result,) = _judged(executor, geneva, problem, [completion])
    assert result.passed is passed, result.feedback
    assert _arg_c(geneva, problem, completion, result) == arg_c_f1


def test_a_result_that_claims_to_be_a_verdict_predicts_nothing(geneva):
    # A forged result record (the pipe is the program's) naming the verdict's exception, with
    # and without anything in its fields: the judge passes failures through as they ran.
    from leti.tasks.eae import judge

    problem = geneva.get(ATTACK_ID)
    program = geneva.build_program(problem, problem.reference)
    fakes = [ExecutionResult(id=None, status=Status.FAILED, exception_type="VerificationError", message="x"),
             ExecutionResult(id=None, status=Status.FAILED, exception_type="VerificationError", message="x",
                             judged={"arguments": {"assailant": [GOLD]}}),
             ExecutionResult(id=None, status=Status.FAILED, exception_type="SyntaxError", message="x",
                             judged={"arguments": {"assailant": [GOLD]}})]
    for fake in fakes:
        judged = geneva.judge(problem, program, fake)
        assert not judged.passed and judged.judged is None
        assert judge.reported_arguments(judged) is None
        assert _arg_c(geneva, problem, problem.reference, judged) == 0.0, judged


# ---- 4: an honest report too long for the worker's message limit is not "tampered" ----------


@pytest.mark.parametrize("completion, expected", [
    ("assailant=[" + ", ".join([f'"{GOLD}"'] * 700) + "])", "the arguments are too long to check (700 spans"),
    ('assailant=["' + "\u00e9" * 17000 + '"])', "the arguments are too long to check (1 span"),
    # the verifier's own message (naming the program's class) was as long
    ('); event = type("A" * 20000, (), {})()', "`event` must be an instance of Attack, got AAAA"),
])
def test_long_honest_reports_get_the_verifiers_words(executor, geneva, completion, expected):
    problem = geneva.get(ATTACK_ID)
    (result,) = _judged(executor, geneva, problem, [completion])
    assert result.exception_type == "VerificationError" and expected in result.message, result.feedback
    assert "tampered" not in result.feedback
    assert _arg_c(geneva, problem, completion, result) == 0.0


def test_a_long_non_ascii_span_within_the_limit_is_judged(executor, geneva):
    # 5000 characters of é were 30000 as escaped JSON: "too long to check", with a fix that
    # did not apply; counted as characters they are under the limit and get the verifier's verdict
    problem = geneva.get(ATTACK_ID)
    (result,) = _judged(executor, geneva, problem, ['assailant=["' + "\u00e9" * 5000 + '"])'])
    assert result.exception_type == "VerificationError" and "too long" not in result.message, result.message



# ---- 5: ontology names that the generated code itself uses ----------------------------------


def test_names_the_generated_code_uses_get_an_underscore():
    from leti.tasks.eae.ontology import class_name, role_name

    assert [class_name(n) for n in ("Counter", "VerificationError", "Leti_event-report", "Exception", "Event")] == [
        "Counter_", "VerificationError_", "LetiEventReport_", "Exception_", "Event_"]
    assert [role_name(n) for n in ("list", "Str", "type", "from")] == ["list_", "str_", "type", "from_"]
    assert class_name("Warning") == "Warning"  # a GENEVA type: a builtin nothing here uses keeps its name


def test_an_ontology_with_such_names_validates(tmp_path, capsys):
    # Each event type's class clashed with check.py, the extractor or a builtin they raise, and
    # roles `list` / `str` broke the next role's annotation: every reference failed.
    types = ["Counter", "VerificationError", "LetiEventReport", "Exception", "TypeError", "Sell"]
    roles = ["list", "str", "Buyer"]
    mentions = [{"id": f"e{i}", "event_type": t, "trigger": {"start": 1, "end": 2, "text": "sold"},
                 "arguments": [{"role": "list", "text": "Bob"}, {"role": "str", "text": "the car"},
                               {"role": "Buyer", "text": "Ann"}]} for i, t in enumerate(types)]
    sentence = "Bob sold the car to Ann ."
    data = tmp_path / "events.jsonl"
    data.write_text(json.dumps({"wnd_id": "w1", "sentence": sentence, "tokens": sentence.split(),
                                "event_mentions": mentions}) + "\n")
    ontology = tmp_path / "ont.json"
    ontology.write_text(json.dumps({t: {"arguments": roles} for t in types}))
    for spec in (f"eae-jsonl:{data}", f"eae-jsonl:test={data},ontology={ontology}"):
        assert main(["tasks", "validate", spec, "--workers", "2"]) == 0, capsys.readouterr()
        out = capsys.readouterr().out
        assert f"{len(types)} passed, 0 failed" in out, out


def test_eae_metrics_print_as_percent_and_pick_the_best_temperature_by_arg_c_f1(geneva):
    """Its scores are percentages (they printed bare) and several temperatures' "best" takes the
    three of each kind at one temperature: the one with the best Arg-C F1 (it was pass@1's)."""
    problem = geneva.get(ATTACK_ID)
    scores = geneva.extra_metrics([problem], [Sample(problem.id, 0, problem.reference)], [])
    assert set(geneva.metric_units) == set(scores) and set(geneva.metric_units.values()) == {"%"}
    assert geneva.primary_metric == "arg_c_f1"


# ---- an event type without a description: its class docstring's article follows the sound ----


def test_a_class_without_a_description_says_an_attack_event(tmp_path):
    """eae-jsonl with no ontology descriptions (an ontology derived from the data): the class
    docstring said "A Attack event." while the trigger comment below it said "an Attack event"."""
    sentence = "Rebels attacked the town and used a truck ."
    mentions = [{"id": f"e{i}", "event_type": t, "trigger": {"start": s, "end": s + 1, "text": w},
                 "arguments": [{"role": "Agent", "text": "Rebels"}]}
                for i, (t, s, w) in enumerate([("Attack", 1, "attacked"), ("Using", 5, "used"), ("Sell", 1, "attacked")])]
    data = tmp_path / "events.jsonl"
    data.write_text(json.dumps({"wnd_id": "w1", "sentence": sentence, "tokens": sentence.split(),
                                "event_mentions": mentions}) + "\n")
    prompts = {p.id: p.prompt for p in get_task(f"eae-jsonl:{data}").problems()}
    assert '    """An Attack event.' in prompts["eae/test/e0"] and "A Attack event" not in prompts["eae/test/e0"]
    assert "expresses an Attack event" in prompts["eae/test/e0"]
    assert '    """A Using event.' in prompts["eae/test/e1"]  # as the trigger comment: "a Using event"
    assert '    """A Sell event.' in prompts["eae/test/e2"]
