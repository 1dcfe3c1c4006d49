"""The stages of one LeTI iteration, each a function from typed inputs to files/records:
sample + execute (overlapped), build training texts, score an evaluation."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

from tqdm.auto import tqdm

from leti.config import RunConfig
from leti.evaluation.evaluate import score
from leti.evaluation.pass_at_k import stderrs_from_counts
from leti.evaluation.samples import Sample as EvalSample
from leti.execution import ExecutionResult, Executor
from leti.feedback.training_text import GOOD, build_training_text
from leti.loop.rundir import read_sample_records, repair_jsonl
from leti.sampling.base import Sample, Sampler, SampleRequest
from leti.tasks.base import Problem, Task


def requests_for(task: Task, problems: Sequence[Problem], condition_on_good: bool) -> list[SampleRequest]:
    """Prompts as the model sees them: `<|good|>` + prompt once the model has been trained on
    reward tokens (spec: iteration 1 samples the plain prompt, later ones the prefixed one),
    each with its problem's stop sequences."""
    prefix = GOOD if condition_on_good else ""
    return [SampleRequest(problem_id=p.id, prompt=prefix + p.prompt, stop=task.stop_for(p)) for p in problems]


def _record(sample: Sample, result: ExecutionResult) -> dict:
    rec = {
        "problem_id": sample.problem_id, "sample_idx": sample.sample_idx, "prompt": sample.prompt,
        "completion": sample.completion, "n_prompt_tokens": sample.n_prompt_tokens,
        "n_completion_tokens": sample.n_completion_tokens, "finish_reason": sample.finish_reason,
    }
    rec.update(result.to_dict())
    return rec


def sample_and_execute(
    sampler: Sampler, task: Task, problems: Sequence[Problem], n: int,
    executor: Executor, out: Path, condition_on_good: bool, desc: str, progress: bool = True,
) -> dict[tuple[str, int], dict]:
    """Sample `n` programs per problem and execute each one while the next batch generates;
    every (sample, result) is appended to `out` as soon as its result is in. Keys already in
    `out` are skipped, so an interrupted call resumes where it stopped."""
    repair_jsonl(out)
    done = read_sample_records(out)
    by_id = {p.id: p for p in problems}
    total = len(problems) * n
    pending: list[tuple[Sample, Future]] = []
    bar = tqdm(total=total, initial=len([k for k in done if k[0] in by_id]), desc=f"{desc} executed",
               unit="prog", disable=not progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as f:

        def flush(wait: bool) -> None:
            keep = []
            for s, fut in pending:
                if wait or fut.done():
                    rec = _record(s, fut.result())
                    # one write + flush per line: a kill leaves at most one partial line
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                    done[(s.problem_id, s.sample_idx)] = rec
                    bar.update(1)
                else:
                    keep.append((s, fut))
            pending[:] = keep

        reqs = requests_for(task, problems, condition_on_good)
        for s in sampler.sample(reqs, n=n, skip=set(done)):
            pending.append((s, executor.submit(task.build_program(by_id[s.problem_id], s.completion))))
            flush(wait=False)
        flush(wait=True)
        # on disk before the caller's marker (samples.done, eval.json) vouches for every line
        os.fsync(f.fileno())
    bar.close()
    return {k: v for k, v in done.items() if k[0] in by_id and k[1] < n}


def training_texts(records: dict, problems: Sequence[Problem], cfg: RunConfig, eos_token: str) -> list[str]:
    """One training text per sample (passing samples only with training_text.keep_failures off),
    in (problem order, sample_idx) order (deterministic)."""
    by_id = {p.id: p for p in problems}
    order = {pid: i for i, pid in enumerate(by_id)}
    texts = []
    for key in sorted((k for k in records if k[0] in by_id), key=lambda k: (order[k[0]], k[1])):
        rec, problem = records[key], by_id[key[0]]
        if not cfg.training_text.keep_failures and not rec["passed"]:
            continue
        result = ExecutionResult.from_dict(rec)
        texts.append(build_training_text(problem.prompt, rec["completion"], result,
                                         cfg.training_text, eos_token=eos_token or ""))
    return texts


def sft_texts(problems: Sequence[Problem], cfg: RunConfig, eos_token: str) -> list[str]:
    """Supervised baseline: prompt + ground-truth completion, no reward token or feedback."""
    eos = eos_token if cfg.training_text.append_eos else ""
    return [p.prompt + p.reference + eos for p in problems if p.reference]


def summarize_samples(records: dict) -> dict:
    statuses = Counter(r["status"] for r in records.values())
    exceptions = Counter(r.get("exception_type") or r["status"] for r in records.values() if not r["passed"])
    n = len(records)
    return {
        "train_samples": n,
        "train_pass_rate": (sum(1 for r in records.values() if r["passed"]) / n) if n else 0.0,
        "train_status_counts": dict(statuses.most_common()),
        "train_exception_counts": dict(exceptions.most_common()),
    }


def eval_stderr(ev: dict) -> dict[str, float | None]:
    """The "pass@k_stderr" of an eval.json; for one written before that key existed, rebuilt
    from its per_problem (n, c) counts, so resumed and reported old runs get it too."""
    if "pass@k_stderr" in ev:
        return dict(ev["pass@k_stderr"])
    counts = [tuple(nc) for nc in (ev.get("per_problem") or {}).values()]
    return stderrs_from_counts(counts, ev.get("pass@k", {})) if counts else {}


def score_eval(records: dict, problems: Sequence[Problem], ks: Sequence[int], task: Task) -> dict:
    """pass@k (unbiased estimator) and the task's own metrics (e.g. Arg-I/Arg-C F1 for event
    extraction) over the evaluation problems, from stored sample records; the same pure scoring
    as `leti evaluate`."""
    ids = {p.id for p in problems}  # built once: inside the filter it was rebuilt per record
    keys = sorted(k for k in records if k[0] in ids)
    samples = [EvalSample(pid, idx, records[(pid, idx)]["completion"]) for pid, idx in keys]
    results = [ExecutionResult.from_dict(records[k]) for k in keys]
    sampled = {s.problem_id for s in samples}
    scored = [p for p in problems if p.id in sampled]
    report = score(scored, samples, results, ks, task.extra_metrics(list(scored), samples, results))
    return {
        "n_problems": report.n_problems,
        "pass@k": report.pass_at_k,
        "pass@k_stderr": report.pass_at_k_stderr,
        "task_metrics": report.extra,
        "status_counts": report.status_counts,
        "per_problem": {p.problem_id: [p.n, p.c] for p in report.per_problem},
    }
