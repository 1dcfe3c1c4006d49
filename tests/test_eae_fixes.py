"""EAE fixes from review C (/tmp/rev_c/findings.md 1, 3, 4, 5): resume after a gold change, one
set of arguments for verdict and metrics, long honest reports, ontology names that collide with
the generated code's own. Real sandbox where a program runs."""

from __future__ import annotations

import json
from pathlib import Path

from leti.cli import main
from leti.tasks.registry import get_task

SENTENCE = "Bob sold the car to Ann and Carl ."


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
