"""The stages of one LeTI iteration, each a function from typed inputs to files/records:
sample + execute (overlapped), build training texts, score an evaluation."""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Literal

from leti.config import RunConfig
from leti.errors import LetiError, naming_errors, open_naming_errors, plural
from leti.evaluation.evaluate import score
from leti.evaluation.pass_at_k import stderrs_from_counts
from leti.evaluation.samples import Sample as EvalSample
from leti.execution import ExecutionResult, Executor, Program
from leti.feedback.training_text import GOOD, build_training_text
from leti.loop.rundir import repair_jsonl, scan_sample_records
from leti.progress import Progress
from leti.sampling.base import Sample, Sampler, SampleRequest, cut_at_stop
from leti.tasks.base import Problem, Task

Stops = Literal["stop", "none", "cut_after"]


def requests_for(task: Task, problems: Sequence[Problem], condition_on_good: bool,
                 stops: Stops = "stop") -> list[SampleRequest]:
    """Prompts as the model sees them: `<|good|>` + prompt once the model has been trained on
    reward tokens (spec: iteration 1 samples the plain prompt, later ones the prefixed one),
    each with its problem's stop sequences ("stop") or none (the other two)."""
    prefix = GOOD if condition_on_good else ""
    return [SampleRequest(problem_id=p.id, prompt=prefix + p.prompt, stop=task.stop_for(p) if stops == "stop" else ())
            for p in problems]


def training_stops(cfg: RunConfig) -> Stops:
    """How training samples meet the stop sequences: generation stops at them (spec), never
    (sampling.stop_sequences: false, the authors' main runs) or is cut at them afterwards, the
    cut-off text kept for training_text.stop_hint."""
    if cfg.training_text.stop_hint:
        return "cut_after"
    return "stop" if cfg.sampling.stop_sequences else "none"


def _record(sample: Sample, result: ExecutionResult, cut_off: str | None) -> dict:
    rec = {
        "problem_id": sample.problem_id, "sample_idx": sample.sample_idx, "prompt": sample.prompt,
        "completion": sample.completion, "n_prompt_tokens": sample.n_prompt_tokens,
        "n_completion_tokens": sample.n_completion_tokens, "finish_reason": sample.finish_reason,
    }
    if cut_off is not None:
        rec["cut_off"] = cut_off
    rec.update(result.to_dict())
    return rec


def _cut(sample: Sample, stops: tuple[str, ...]) -> tuple[Sample, str]:
    """An unstopped sample cut at its stop sequences, and the text cut off."""
    kept, rest = cut_at_stop(sample.completion, stops)
    if not rest:
        return sample, ""
    return dataclasses.replace(sample, completion=kept, finish_reason="stop"), rest


def _where_prompt_differs(theirs: str, ours: str) -> str:
    """Why a stored sample's prompt is not the one this stage samples, in the user's words."""
    if GOOD + theirs == ours:
        return f"without the {GOOD} prefix that this stage's prompts have (another iteration's sample?)"
    if theirs == GOOD + ours:
        return f"with a {GOOD} prefix that this stage's prompts do not have (another iteration's sample?)"
    return "from another prompt than this problem's (another run's or task's sample?)"


def checked_records(path: Path, requests: Sequence[SampleRequest], n: int, n_field: str, fix: str) -> dict[tuple[str, int], dict]:
    """The sample records in `path` keyed by (problem_id, sample_idx), each one this stage would
    have drawn itself: a problem of `requests`, an index below `n` and the request's prompt. A
    file copied from another run, iteration or task was trained on (or kept and refused later)
    without a word; a bad line is a LetiError naming the file, the first such line and `fix`."""
    prompts = {r.problem_id: r.prompt for r in requests}
    records: dict[tuple[str, int], dict] = {}
    foreign: list[tuple[int, str, int]] = []
    other_prompt: list[tuple[int, str, int, str]] = []
    for lineno, rec in scan_sample_records(path, "delete that line to sample it again"):
        key = (str(rec["problem_id"]), rec["sample_idx"])
        if key[0] not in prompts or not 0 <= key[1] < n:
            foreign.append((lineno, *key))
        elif rec["prompt"] != prompts[key[0]]:
            other_prompt.append((lineno, *key, rec["prompt"]))
        else:
            records[key] = rec

    def more(bad: list) -> str:
        return f" (and {plural(len(bad) - 1, 'other line')} like it)" if len(bad) > 1 else ""

    if foreign:
        lineno, pid, idx = foreign[0]
        raise LetiError(f"{path}: holds sample {idx} of problem {pid!r}, which is not one of this run's "
                        f"({len(prompts)} problems x {n_field} {n}), on line {lineno}{more(foreign)}; {fix}")
    if other_prompt:
        lineno, pid, idx, prompt = other_prompt[0]
        raise LetiError(f"{path}: sample {idx} of problem {pid!r} on line {lineno}{more(other_prompt)} was drawn "
                        f"{_where_prompt_differs(prompt, prompts[pid])}; {fix}")
    return records


def sample_and_execute(
    sampler: Sampler, task: Task, problems: Sequence[Problem], n: int,
    executor: Executor, out: Path, condition_on_good: bool, desc: str, progress: bool = True,
    stops: Stops = "stop", n_field: str = "sampling.n", fix: str = "",
) -> dict[tuple[str, int], dict]:
    """Sample `n` programs per problem and execute each one while the next batch generates;
    every (sample, result) is appended to `out` as soon as its result is in. Keys already in
    `out` are skipped, so an interrupted call resumes where it stopped; they must be this
    stage's own (checked_records, `n_field` naming `n` and `fix` saying how to mend a bad line).
    With `stops` "cut_after" each sample is cut at its stop sequences before it runs, and its
    record keeps the cut-off text (`cut_off`)."""
    repair_jsonl(out)
    reqs = requests_for(task, problems, condition_on_good, stops)
    done = checked_records(out, reqs, n, n_field, fix or "delete such lines to sample them again (or the file, to sample them all)")
    by_id = {p.id: p for p in problems}
    total = len(problems) * n
    pending: list[tuple[Sample, str | None, Program, Future]] = []
    bar = Progress(total, f"{desc} executed", "programs", progress, initial=len(done))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open_naming_errors(out, "a") as f:

        def flush(wait: bool) -> None:
            keep = []
            for s, cut_off, program, fut in pending:
                if wait or fut.done():
                    # The task's verdict on the host (EAE judges reported arguments against gold there).
                    result = task.judge(by_id[s.problem_id], program, fut.result(), executor.config)
                    rec = _record(s, result, cut_off)
                    # one write + flush per line: a kill leaves at most one partial line
                    with naming_errors(out):
                        f.write(json.dumps(rec) + "\n")
                        f.flush()
                    done[(s.problem_id, s.sample_idx)] = rec
                    bar.update(1)
                else:
                    keep.append((s, cut_off, program, fut))
            pending[:] = keep

        for s in sampler.sample(reqs, n=n, skip=set(done)):
            problem, cut_off = by_id[s.problem_id], None
            if stops == "cut_after":
                s, cut_off = _cut(s, task.stop_for(problem))
            program = task.build_program(problem, s.completion)
            pending.append((s, cut_off, program, executor.submit(program)))
            flush(wait=False)
        flush(wait=True)
        # on disk before the caller's marker (samples.done, eval.json) vouches for every line
        with naming_errors(out):
            os.fsync(f.fileno())
    bar.close()
    return done


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
        texts.append(build_training_text(problem.prompt, rec["completion"], result, cfg.training_text,
                                         eos_token=eos_token or "", cut_off=rec.get("cut_off", "")))
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
