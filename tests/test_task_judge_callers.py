"""Every path that runs a task's programs applies the task's host-side verdict (Task.judge): the
training loop's execution stage, evaluation and `leti tasks validate`. EAE is the task whose
verdict exists only on the host: without the judge no EAE program passes, so each path is run
here on gold answers (which must pass) and on a wrong one (which must fail with the verifier's
feedback). Real sandbox; the "model" replays fixed completions, as a sampler would yield them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from leti.cli import main
from leti.evaluation.evaluate import evaluate_samples
from leti.evaluation.samples import Sample as EvalSample
from leti.loop.stages import sample_and_execute
from leti.sampling.base import Sample, SampleRequest

WRONG = "\n)"  # closes the event call with no arguments: a wrong (empty) prediction


@pytest.fixture(scope="module")
def problems(geneva):
    val = [p for p in geneva.problems(split="val") if p.reference is not None]
    return val[:3]


class ReplaySampler:
    """Yields the given completions, sample 0 the reference and sample 1 a wrong answer."""

    def __init__(self, by_problem: dict[str, list[str]]):
        self.by_problem = by_problem

    def sample(self, requests: list[SampleRequest], n: int | None = None,
               skip: set[tuple[str, int]] | None = None) -> Iterator[Sample]:
        for r in requests:
            for i, completion in enumerate(self.by_problem[r.problem_id][:n]):
                if (r.problem_id, i) not in (skip or set()):
                    yield Sample(r.problem_id, i, r.prompt, completion, 0, 0, "stop")


def test_the_loops_execution_stage_judges_on_the_host(geneva, problems, executor, tmp_path):
    sampler = ReplaySampler({p.id: [p.reference, WRONG] for p in problems})
    out = tmp_path / "samples.jsonl"
    records = sample_and_execute(sampler, geneva, problems, 2, executor, out, condition_on_good=False,
                                 desc="test", progress=False)
    for p in problems:
        good, bad = records[(p.id, 0)], records[(p.id, 1)]
        assert good["passed"] is True, good
        assert bad["passed"] is False and bad["exception_type"] == "VerificationError", bad
    assert len(out.read_text().splitlines()) == 6


def test_evaluation_judges_on_the_host(geneva, problems, executor):
    samples = [EvalSample(p.id, i, c) for p in problems for i, c in enumerate([p.reference, WRONG])]
    report = evaluate_samples(geneva, problems, samples, executor, ks=(1,))
    assert [(ps.n, ps.c) for ps in report.per_problem] == [(2, 1)] * len(problems)
    assert list(report.pass_at_k.values()) == [pytest.approx(0.5)]


def test_tasks_validate_judges_on_the_host(tmp_path, capsys):
    """`leti tasks validate` on an EAE file: every reference passes (OneIE lines from GENEVA's val)."""
    from importlib import resources

    lines = (resources.files("leti") / "data" / "geneva" / "val.json").read_text().splitlines()[:4]
    data = tmp_path / "events.jsonl"
    data.write_text("\n".join(lines) + "\n")
    assert main(["tasks", "validate", f"eae-jsonl:{data}", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    n = sum(len(json.loads(line)["event_mentions"]) for line in lines)
    assert f"{n} passed, 0 failed" in out
