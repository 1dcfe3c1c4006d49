"""Read a run directory (leti.loop.rundir layout) into typed records for plots and reports.

Everything here is derived from files the loop already writes (metrics.jsonl, samples.jsonl,
eval_samples.jsonl, config.yaml), so a report can be rebuilt for any run, finished or not.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from leti.errors import LetiError
from leti.evaluation.pass_at_k import PairedDifference, paired_difference, stderrs_from_counts
from leti.jsonl import is_number
from leti.loop.rundir import (
    RunDir,
    _scan_jsonl,
    read_json,
    run_mode,
    scan_sample_records,
    trained_on_good,
)
from leti.report.render import code


@dataclass(frozen=True)
class IterationPoint:
    """One finished iteration of one run (iteration 0 = the untrained baseline)."""

    iteration: int
    gradient_steps: int  # optimiser steps so far, all iterations together
    train_pass_rate: float | None  # None for iteration 0 (nothing sampled for training)
    eval_pass_at_1: float | None  # None when this iteration was not evaluated
    eval_metrics: dict[str, float] = field(default_factory=dict)  # every pass@k and task metric
    train_failures: dict[str, int] = field(default_factory=dict)  # failure type -> count
    eval_failures: dict[str, int] = field(default_factory=dict)
    train_samples: int = 0
    eval_samples: int = 0
    # Standard error over problems per pass@k (None: one problem, or not known for this run).
    eval_stderr: dict[str, float | None] = field(default_factory=dict)
    eval_counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # problem id -> (n, c)
    # mean token loss on the pretraining corpus's held-out files (None: not measured)
    code_loss: float | None = None
    # whether the held-out prompts had the <|good|> prefix (eval.json; None: not recorded)
    conditioned_on_good: bool | None = None


def pass_k(name: str) -> int | None:
    """k of a metric named "pass@k" (None for any other metric, such as a task's F1)."""
    head, _, tail = name.partition("@")
    return int(tail) if head == "pass" and tail.isdigit() and int(tail) >= 1 else None


@dataclass(frozen=True)
class RunHistory:
    """A whole run: its name (arm), its finished iterations in order, and an example text.

    The run's headline score is `metric`: held-out pass@1, or the smallest pass@k the run reports
    when it did not compute pass@1 (eval.ks without 1). "final" is the last iteration evaluated
    for it, which is not the last iteration when that one was not evaluated (eval.every > 1):
    `final_point.iteration` says which, and `stale_final` whether it is an earlier one."""

    name: str
    root: Path
    points: list[IterationPoint]
    example_failure: str | None = None  # training text of one failing sample
    metrics_cut_short: bool = False  # metrics.jsonl ends in a partial line, left out
    sft: bool = False  # a `leti sft` run (run.json mode "sft"): trained on reference solutions, no samples
    planned_iterations: int | None = None  # its config's `iterations` (sft: 1); None without a readable config
    # whether its trained iterations (1 and later) are evaluated with the <|good|> prefix: as
    # their eval.json records it, else as its config says (None: neither says; always False for sft)
    trained_on_good: bool | None = None
    # samples.jsonl files whose record count is not the one their iteration finished with
    # (metrics.jsonl's train_samples): cut or edited since; their counts come from metrics.jsonl
    samples_not_as_finished: list[Path] = field(default_factory=list)
    # units of the task's own metrics (GENEVA's F1s: "%"), as `leti evaluate` prints them
    metric_units: dict[str, str] = field(default_factory=dict)
    # what its scores are of, from its config (None without a readable one): the held-out problems
    # ("task `mbpp`, split `test`", with eval.max_problems) and the model it started from
    evaluated_on: str | None = None
    model: str | None = None
    # how its held-out samples were drawn, from its config: (config field, value) of each sampling
    # setting a pass@k depends on (EVAL_SETTINGS); None without a readable config
    eval_settings: tuple[tuple[str, object], ...] | None = None

    @property
    def unfinished(self) -> bool:
        """Whether the run stopped (or is still going) before its last planned iteration."""
        last = self.last_point
        return self.planned_iterations is not None and (last is None or last.iteration < self.planned_iterations)

    @property
    def label(self) -> str:
        """The name as tables, headings and legends show it: an SFT run says so."""
        return f"{self.name} (leti sft)" if self.sft else self.name

    @property
    def metric(self) -> str | None:
        """"pass@1" when any iteration has it, else the smallest pass@k any has; None when no
        iteration has a pass@k (nothing evaluated yet)."""
        ks = {k for p in self.points for k in map(pass_k, p.eval_metrics) if k is not None}
        return f"pass@{min(ks)}" if ks else None

    def point_with(self, metric: str | None, last: bool) -> IterationPoint | None:
        """The first or last iteration evaluated for `metric` (None: none is)."""
        evaluated = [p for p in self.points if metric is not None and p.eval_metrics.get(metric) is not None]
        return (evaluated[-1] if last else evaluated[0]) if evaluated else None

    @property
    def last_point(self) -> IterationPoint | None:
        """The last finished iteration, evaluated or not."""
        return self.points[-1] if self.points else None

    @property
    def final_point(self) -> IterationPoint | None:
        """The last iteration evaluated for `metric`."""
        return self.point_with(self.metric, last=True)

    @property
    def stale_final(self) -> bool:
        """Whether later iterations than the final evaluated one finished without an evaluation."""
        f, last = self.final_point, self.last_point
        return f is not None and last is not None and last.iteration != f.iteration

    @property
    def baseline_point(self) -> IterationPoint | None:
        first = [p for p in self.points if p.iteration == 0]
        return first[0] if first else None

    def _score(self, p: IterationPoint | None, stderr: bool = False) -> float | None:
        """`metric` (or its standard error) at point `p`."""
        if p is None or self.metric is None:
            return None
        return (p.eval_stderr if stderr else p.eval_metrics).get(self.metric)

    @property
    def final_score(self) -> float | None:
        """`metric` of the final evaluated iteration."""
        return self._score(self.final_point)

    @property
    def final_score_stderr(self) -> float | None:
        return self._score(self.final_point, stderr=True)

    @property
    def baseline_score(self) -> float | None:
        """`metric` of iteration 0 (before training)."""
        return self._score(self.baseline_point)

    @property
    def baseline_score_stderr(self) -> float | None:
        return self._score(self.baseline_point, stderr=True)

    # pass@1 itself (None when the run did not compute it), for the demo's summary.json
    @property
    def final_pass_at_1(self) -> float | None:
        p = self.point_with("pass@1", last=True)
        return p.eval_pass_at_1 if p else None

    @property
    def baseline_pass_at_1(self) -> float | None:
        p = self.baseline_point
        return p.eval_pass_at_1 if p else None

    @property
    def final_pass_at_1_stderr(self) -> float | None:
        p = self.point_with("pass@1", last=True)
        return p.eval_stderr.get("pass@1") if p else None

    @property
    def baseline_pass_at_1_stderr(self) -> float | None:
        p = self.baseline_point
        return p.eval_stderr.get("pass@1") if p else None


def failure_label(record: dict) -> str | None:
    """The failure type a sample record counts under (None if it passed): the exception type
    (AssertionError, NameError, SyntaxError, ...) or the status (timeout, memory, crashed)."""
    if record.get("passed"):
        return None
    return record.get("exception_type") or record.get("status") or "unknown"


def failure_counts(records: list[dict]) -> dict[str, int]:
    counts = Counter(label for label in map(failure_label, records) if label is not None)
    return dict(counts.most_common())


def _eval_pass_at_1(metrics_row: dict) -> float | None:
    ev = metrics_row.get("eval")
    if not isinstance(ev, dict):
        return None
    value = ev.get("pass@1")
    return float(value) if value is not None else None


def eval_counts(eval_json: dict | None, eval_records: list[dict]) -> dict[str, tuple[int, int]]:
    """Per-problem (n, c) of one evaluation: eval.json's per_problem, else counted from the
    eval_samples.jsonl records (runs whose eval.json is missing)."""
    if eval_json and isinstance(eval_json.get("per_problem"), dict):
        return {str(pid): (int(nc[0]), int(nc[1])) for pid, nc in eval_json["per_problem"].items()}
    counts: dict[str, tuple[int, int]] = {}
    for r in eval_records:
        n, c = counts.get(str(r["problem_id"]), (0, 0))
        counts[str(r["problem_id"])] = (n + 1, c + int(bool(r.get("passed"))))
    return counts


def eval_stderr(metrics_row: dict, eval_json: dict | None, counts: dict[str, tuple[int, int]],
                metric_names: list[str]) -> dict[str, float | None]:
    """The stored standard errors (metrics.jsonl's eval_stderr, else eval.json's pass@k_stderr);
    for runs written before they were stored, rebuilt from the per-problem counts."""
    for stored in (metrics_row.get("eval_stderr"), (eval_json or {}).get("pass@k_stderr")):
        if isinstance(stored, dict):
            return {k: (float(v) if v is not None else None) for k, v in stored.items()}
    return stderrs_from_counts(list(counts.values()), metric_names) if counts else {}


def example_training_text(run: RunDir, iterations: list[int], cfg) -> str | None:
    """The training text (as the loop builds it from the run's config `cfg`) of the first failing
    sample of the earliest training iteration; None if there is none, if `cfg` is None (how the
    run built its texts is not known), or if the run trains on passing samples only
    (training_text.keep_failures off), where it would show a text that was never trained on."""
    from leti.execution import ExecutionResult
    from leti.feedback.training_text import build_training_text

    if cfg is None or not cfg.training_text.keep_failures:
        return None
    for k in iterations:
        path = run.samples(k)
        if k == 0 or not path.exists():
            continue
        for rec in read_samples_file(path):
            if rec.get("passed"):
                continue
            result = ExecutionResult.from_dict(rec)  # checked by _sample_lines
            # As leti.loop.stages.training_texts builds it: the tokenizer's end token whether or
            # not append_eos (training_text.stop_hint names it), and what the loop cut off the
            # sample at its stop sequences (stop_hint's last feedback line).
            eos = _eos_token(run, iterations, cfg.model)
            # The loop trains on the task prompt, not the sampled one (which may carry <|good|>).
            prompt = rec["prompt"].removeprefix("<|good|>")
            return build_training_text(prompt, rec["completion"], result, cfg.training_text, eos_token=eos,
                                       cut_off=rec.get("cut_off", ""))
    return None


def _eos_token(run: RunDir, iterations: list[int], model: str) -> str:
    """The end token the run appended, as a saved tokenizer names it (a checkpoint's, or the
    model's own directory's); without one on disk, GPT-2's, which CodeGen's tokenizers share."""
    for where in [*(run.checkpoint(k) for k in iterations if k > 0), Path(model)]:
        try:
            token = json.loads((where / "tokenizer_config.json").read_text(encoding="utf-8")).get("eos_token")
        except (OSError, ValueError, AttributeError):
            continue
        token = token.get("content") if isinstance(token, dict) else token
        if isinstance(token, str) and token:
            return token
    return "<|endoftext|>"


_SAMPLE_FIX = "restore that line, or delete it (the report then leaves that sample out)"
_METRICS_FIX = "delete that line: the same `leti run` on this directory writes it again from the iteration's files"


def _sample_lines(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) of a samples.jsonl / eval_samples.jsonl as the loop reads it
    (leti.loop.rundir.scan_sample_records: checked, a partial last line left out, a repeated key
    counted once, as the loop counts it)."""
    return scan_sample_records(path, _SAMPLE_FIX)


def read_samples_file(path: Path) -> list[dict]:
    """The sample records of a samples.jsonl / eval_samples.jsonl, checked (see _sample_lines)."""
    return [r for _, r in _sample_lines(path)]


# metrics.jsonl fields the report reads beside 'iteration' and 'eval' (which RunDir.metrics checks):
# field -> (check, what it must be). Each may also be null or absent (older runs).
_METRICS_FIELDS = {
    "gradient_steps_total": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a count >= 0"),
    "train_samples": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a count >= 0"),
    "train_pass_rate": (is_number, "a number"),
    "pretrain_heldout_loss": (is_number, "a number"),
    "eval_stderr": (lambda v: not isinstance(v, dict) or all(x is None or is_number(x) for x in v.values()),
                    "an object of numbers"),
    "train_exception_counts": (lambda v: isinstance(v, dict) and all(isinstance(x, int) for x in v.values()),
                               "an object of counts"),
}


def _metrics_rows(run: RunDir) -> list[dict]:
    """metrics.jsonl's records, checked for what the report reads: a field of the wrong type was a
    traceback from the table or the plots; an iteration number below 0 or listed twice (a
    duplicated line, lines of another run) was shown as its own row."""
    run.finished_iterations()  # 'iteration' (>= 0, once each) and 'eval' checked, the error naming the line
    rows = []
    for lineno, r in _scan_jsonl(run.metrics_path)[0]:
        where = f"{run.metrics_path}:{lineno}"
        for name, (ok, what) in _METRICS_FIELDS.items():
            if r.get(name) is not None and not ok(r[name]):
                raise LetiError(f"{where}: '{name}' must be {what} or null, got {json.dumps(r[name])[:40]}; {_METRICS_FIX}")
        rows.append(r)
    return rows


def _eval_json(run: RunDir, k: int) -> dict | None:
    """iteration k's eval.json (None: none), checked for the per-problem counts and standard errors
    the report reads (a JSON list or a count that is not [n, c] was a traceback)."""
    path = run.eval(k)
    if not path.exists():
        return None
    ev = read_json(path)
    fix = f"restore it, or delete it (the report then counts from {run.eval_samples(k).name})"
    if not isinstance(ev, dict):
        raise LetiError(f"{path}: not an evaluation record (a JSON object); {fix}")
    pp = ev.get("per_problem")
    if isinstance(pp, dict) and not all(isinstance(nc, list) and len(nc) == 2 and all(
            isinstance(x, int) and not isinstance(x, bool) for x in nc) for nc in pp.values()):
        raise LetiError(f"{path}: 'per_problem' must map each problem id to [n, c] (samples, correct); {fix}")
    se = ev.get("pass@k_stderr")
    if isinstance(se, dict) and not all(x is None or is_number(x) for x in se.values()):
        raise LetiError(f"{path}: 'pass@k_stderr' must be an object of numbers or null; {fix}")
    return ev


def load_run(root: str | Path, name: str | None = None) -> RunHistory:
    """Read a `leti run` directory. Raises LetiError if it is not one."""
    run = RunDir(root)
    # run.json is written at start, metrics.jsonl when iteration 0 ends: a run in iteration 0 has none yet
    if not run.metrics_path.exists() and not (run.root / "run.json").exists():
        raise LetiError(f"{run.root}: no metrics.jsonl; pass a `leti run` or `leti demo` directory")
    rows = sorted(_metrics_rows(run), key=lambda r: int(r["iteration"])) if run.metrics_path.exists() else []
    points, short_samples = [], []
    for row in rows:
        k = int(row["iteration"])
        train = read_samples_file(run.samples(k)) if run.samples(k).exists() else []
        if train and isinstance(row.get("train_samples"), int) and len(train) != row["train_samples"]:
            # the iteration finished with train_samples records: a file cut or edited since would
            # give other failure counts; the metrics line keeps the ones it trained on
            train, short_samples = [], [*short_samples, run.samples(k)]
        metrics = {k: float(v) for k, v in (row.get("eval") or {}).items() if isinstance(v, (int, float))}
        # an iteration's held-out samples count once its evaluation is in its metrics line (not a
        # partial file of one that is running, or was cut short)
        evals = read_samples_file(run.eval_samples(k)) if metrics and run.eval_samples(k).exists() else []
        train_failures = failure_counts(train) if train else dict(row.get("train_exception_counts") or {})
        ev_json = _eval_json(run, k)
        counts = eval_counts(ev_json, evals) if metrics else {}
        points.append(IterationPoint(
            iteration=k,
            gradient_steps=int(row.get("gradient_steps_total") or 0),
            train_pass_rate=row.get("train_pass_rate"),
            eval_pass_at_1=_eval_pass_at_1(row),
            eval_metrics=metrics,
            train_failures=train_failures,
            eval_failures=failure_counts(evals),
            train_samples=len(train) or int(row.get("train_samples") or 0),
            eval_samples=len(evals),
            eval_stderr=eval_stderr(row, ev_json, counts, list(metrics)) if metrics else {},
            eval_counts=counts,
            code_loss=row.get("pretrain_heldout_loss"),
            conditioned_on_good=c if isinstance(c := (ev_json or {}).get("conditioned_on_good"), bool) else None,
        ))
    cfg = _run_config(run)
    example = example_training_text(run, [p.iteration for p in points], cfg)
    mode = run_mode(run.root)
    sft = mode == "sft"
    recorded = {p.conditioned_on_good for p in points if p.iteration >= 1 and p.conditioned_on_good is not None}
    on_good = False if sft else recorded.pop() if len(recorded) == 1 else \
        trained_on_good(mode, cfg) if cfg is not None else None
    return RunHistory(name=name or run.root.resolve().name, root=run.root, points=points, example_failure=example,
                      metrics_cut_short=run.metrics_cut_short(), sft=sft,
                      planned_iterations=1 if sft else cfg.iterations if cfg is not None else None,
                      trained_on_good=on_good, samples_not_as_finished=short_samples,
                      metric_units=_metric_units(cfg.task) if cfg is not None else {},
                      evaluated_on=_evaluated_on(cfg) if cfg is not None else None,
                      model=cfg.model if cfg is not None else None,
                      eval_settings=eval_settings(cfg) if cfg is not None else None)


def _evaluated_on(cfg) -> str:
    first = f", its first {cfg.eval.max_problems} problems" if cfg.eval.max_problems is not None else ""
    return f"task {code(cfg.task)}, split {code(cfg.eval.split)}{first}"  # Markdown: report.render's


# The config fields that decide how a run's held-out samples are drawn, beside the problems
# (_evaluated_on): two runs that differ in one measure pass@k of different sampling protocols.
# sampling.backend picks the sampler of the evaluation too. (eval.ks picks which pass@k are
# computed, which the report handles by metric; eval.every when, which a comparison says.)
EVAL_SETTINGS = ("eval.n", "eval.temperature", "eval.top_p", "eval.max_new_tokens", "sampling.backend")


def eval_settings(cfg) -> tuple[tuple[str, object], ...]:
    """(field, value) of each of EVAL_SETTINGS in the run config `cfg`."""
    return tuple((name, getattr(getattr(cfg, name.split(".")[0]), name.split(".")[1])) for name in EVAL_SETTINGS)


def _metric_units(task: str) -> dict[str, str]:
    """The task's metric_units; none for a task this machine cannot load (a plugin not installed
    here): the report then shows the bare numbers."""
    from leti.tasks.registry import get_task

    try:
        return dict(get_task(task).metric_units)
    except Exception:  # noqa: BLE001 - a report reads files; a task it cannot load costs only the units
        return {}


def _run_config(run: RunDir):
    """The run's config.yaml as a RunConfig; None when it is missing or damaged, which a report
    does without (no example text, no planned iterations)."""
    from leti.config import load_config

    try:
        return load_config(run.config_path)
    except LetiError:
        return None


def shared_metric(histories: list[RunHistory]) -> str | None:
    """The metric of the runs' headline scores when they share one (pass@1, or the smallest pass@k
    of runs without pass@1; pass@1 when no run is evaluated yet); None when they differ."""
    metrics = {h.metric for h in histories if h.metric is not None}
    return next(iter(metrics)) if len(metrics) == 1 else ("pass@1" if not metrics else None)


def final_difference(a: RunHistory, b: RunHistory, metric: str = "pass@1") -> PairedDifference | None:
    """Final held-out `metric` (a pass@k) of `a` minus `b`, paired over the problems both were
    evaluated on (the demo's arms share eval problems and seeds). Where the per-problem results
    are unknown or the problem sets differ, a paired error would be wrong: the plain difference
    comes back, with stderr None and n_problems 0. None when either run has no evaluation of it."""
    pa, pb = a.point_with(metric, last=True), b.point_with(metric, last=True)
    if pa is None or pb is None:
        return None
    return point_difference(pa, pb, metric)


def point_difference(pa: IterationPoint, pb: IterationPoint, metric: str = "pass@1") -> PairedDifference:
    """Held-out `metric` (a pass@k) of evaluation `pa` minus evaluation `pb`, paired over their
    problems as final_difference says; both must have `metric`."""
    k = pass_k(metric)
    if k is None or not pa.eval_counts or set(pa.eval_counts) != set(pb.eval_counts) or any(
            n < k for counts in (pa.eval_counts, pb.eval_counts) for n, _ in counts.values()):
        return PairedDifference(pa.eval_metrics[metric] - pb.eval_metrics[metric], None, 0)
    return paired_difference(pa.eval_counts, pb.eval_counts, k)


def steps_to_reach(history: RunHistory, target: float, metric: str = "pass@1") -> int | None:
    """Gradient steps after which `history` first has held-out `metric` >= target (None: never)."""
    for p in history.points:
        value = p.eval_metrics.get(metric)
        if value is not None and value >= target - 1e-12:
            return p.gradient_steps
    return None


def read_summary(root: Path) -> dict | None:
    """A demo's summary.json (None: none), checked for the shape the report's tables read: a
    damaged or hand-edited one was a JSONDecodeError / TypeError traceback."""
    path = root / "summary.json"
    if not path.exists():
        return None
    fix = "run the `leti demo` command that made it again to rewrite it, or delete it to report the runs alone"
    summary = read_json(path, fix=fix)
    if not isinstance(summary, dict):
        raise LetiError(f"{path}: not a demo summary (a JSON object); {fix}")
    iterations = summary.get("iterations", {})
    rows_ok = isinstance(iterations, dict) and all(
        isinstance(rows, list) and all(isinstance(r, dict) and all(
            r.get(f) is None or is_number(r[f]) for f in ("heldout_pass_at_1", "heldout_pass_at_1_stderr"))
            for r in rows) for rows in iterations.values())
    if not rows_ok:
        raise LetiError(f"{path}: 'iterations' must map each arm to a list of iteration objects; {fix}")
    numbers = ["baseline_pass_at_1", "baseline_pass_at_1_stderr", "wall_seconds",
               *(f"{arm}_final_pass_at_1" for arm in iterations)]
    by_arm = ["final_pass_at_1_stderr", "final_pass_at_1_seed_sd"]
    bad = next((f for f in numbers if summary.get(f) is not None and not is_number(summary[f])), None) or next(
        (f for f in by_arm if summary.get(f) is not None and not (isinstance(summary[f], dict) and all(
            v is None or is_number(v) for v in summary[f].values()))), None)
    vs = summary.get("vs_binary")
    if bad is None and vs is not None and not (isinstance(vs, dict) and all(
            v is None or (isinstance(v, dict) and all(v.get(f) is None or is_number(v[f])
                                                      for f in ("difference_points", "stderr_points")))
            for v in vs.values())):
        bad = "vs_binary"
    if bad is not None:
        raise LetiError(f"{path}: '{bad}' is {json.dumps(summary[bad])[:40]}, not what `leti demo` writes there; {fix}")
    return summary
