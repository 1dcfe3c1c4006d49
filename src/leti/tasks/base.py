"""The task interface: a task yields problems (prompt + tests) and turns a completion into a
program for the executor. Scoring lives in leti.evaluation; execution in leti.execution.

A task may come from another package (leti/tasks/plugins.py), so what its hooks return is
checked where leti receives it: problems once per load, the other hooks on each call (a type
check each). A broken contract is one LetiError naming the task, the method and the fix, not a
traceback far from the cause or, worse, data quietly lost (a generator read twice, a stop string
split into characters)."""

from __future__ import annotations

import functools
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from leti.errors import LetiError
from leti.execution.records import ExecutionResult, Program

if TYPE_CHECKING:  # only for annotations: evaluation imports tasks, not the other way round
    from leti.evaluation.samples import Sample
    from leti.execution.config import ExecutionConfig


@dataclass(frozen=True)
class EvalDefaults:
    """A task's evaluation protocol (spec "Evaluation protocol"): what `leti evaluate --model`
    samples and which pass@k it reports when the user does not say otherwise."""

    split: str = "test"
    n: int = 1
    # Several: each is sampled and scored on its own, and pass@k is also reported at the best
    # temperature for each k (HumanEval's protocol, after Codex).
    temperatures: tuple[float, ...] = (0.0,)
    top_p: float = 1.0
    max_new_tokens: int = 512
    ks: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class Problem:
    """One problem. `reference` is a ground-truth completion, used only to validate the task and
    for the supervised baseline; LeTI training never reads it."""

    id: str
    prompt: str
    tests: str
    split: str
    entry_point: str | None = None
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class Task(ABC):
    """Subclass, set the class attributes, implement `load_problems`, and register the class
    with `@register_task("name")` in leti/tasks/registry.py's import list, or from your own package
    through a `leti.tasks` entry point (leti/tasks/plugins.py)."""

    name: str = ""
    description: str = ""
    source: str = ""  # where the data comes from
    license: str = ""
    citation: str = ""
    # Generation stops at the first of these (the text from it on is dropped).
    stop_sequences: tuple[str, ...] = ()
    eval_defaults: EvalDefaults = EvalDefaults()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Callers call the hooks directly, so a subclass's own override is wrapped here: its
        # result is checked in this one place rather than in every caller.
        for hook, check in _RESULT_CHECKS.items():
            fn = cls.__dict__.get(hook)
            if inspect.isfunction(fn) and not getattr(fn, "_leti_checked", False):
                setattr(cls, hook, _checked(fn, check))
        # Class attributes are checked as the class is made (a plugin's: as it is imported); ones
        # an instance sets are checked when it loads its problems.
        bad = _bad_attribute(cls)
        if bad is not None:
            attribute, what, fix = bad
            raise LetiError(f"{cls.__module__}.{cls.__qualname__}.{attribute} is {what}; {fix}")

    @abstractmethod
    def load_problems(self) -> Iterable[Problem]:
        """All problems of every split, in a deterministic order: a list, or any iterable of
        Problem (a generator too; it is read once). Ids are unique strings."""

    def splits(self) -> list[str]:
        """The split names, in the order the problems first use them. An override must list every
        split its problems use (it may add ones that have none)."""
        seen: dict[str, None] = {}
        for p in self.problems():
            seen.setdefault(p.split, None)
        return list(seen)

    def problems(self, split: str | None = None) -> list[Problem]:
        if not hasattr(self, "_problems"):
            # a splits() override that load_problems calls cannot be checked against them yet
            self._loading_problems = True
            try:
                loaded = self.load_problems()
            finally:
                self._loading_problems = False
            problems = _checked_problems(self, loaded)
            bad = _bad_attribute(self)
            if bad is not None:
                attribute, what, fix = bad
                raise LetiError(f"{_where(self)}: {attribute} is {what}; {fix}")
            self._problems = problems
        if split is None:
            return list(self._problems)
        return [p for p in self._problems if p.split == split]

    def get(self, problem_id: str) -> Problem:
        for p in self.problems():
            if p.id == problem_id:
                return p
        raise KeyError(problem_id)

    def build_program(self, problem: Problem, completion: str) -> Program:
        """What the executor runs for a completion: prompt + completion + "\\n" + tests (spec)."""
        return Program(program=problem.prompt + completion + "\n", tests=problem.tests, id=problem.id)

    def judge(self, problem: Problem, program: Program, result: ExecutionResult,
              config: ExecutionConfig | None = None) -> ExecutionResult:
        """The verdict, on the host: `result` is what the sandbox reported for `program` (what
        `build_program` made for `problem`), `config` the executor's (feedback style and limit).
        Whoever runs a task's programs applies this exactly once to each result before recording
        or scoring it (not to stored, already judged results). The default keeps the sandbox's
        verdict; a task whose tests cannot be trusted to run next to model code (EAE:
        leti/tasks/eae/judge.py) decides here from reported data."""
        return result

    def reference_program(self, problem: Problem) -> Program:
        if problem.reference is None:
            raise ValueError(f"task {self.name!r} problem {problem.id!r} has no reference solution")
        return self.build_program(problem, problem.reference)

    def stop_for(self, problem: Problem) -> tuple[str, ...]:
        """Stop sequences for one problem: its own (`meta["stop"]`, e.g. from a JSONL task) if it
        has them, else the task's."""
        own = problem.meta.get("stop")
        return tuple(own) if own is not None else self.stop_sequences

    def extra_metrics(
        self,
        problems: list[Problem],
        samples: list[Sample],
        results: list[ExecutionResult],
    ) -> dict[str, float]:
        """Task-specific metrics merged into results.json next to pass@k (e.g. argument F1 for
        event extraction). `samples[i]` was executed as `results[i]`; `problems` are the scored
        problems. Override in tasks whose quality is more than pass/fail; the default adds none.
        Names are the task's own: not pass@k's nor results.json's other keys."""
        return {}


# --- the contract checks ------------------------------------------------------------------------

_STOP_FIX = "give a tuple of non-empty strings, e.g. ('\\ndef',)"
# results.json holds the task's metrics next to these keys (leti/evaluation/run.py, and
# leti/cli/evaluate_cmd.py for several temperatures): a metric of the same name would overwrite
# one of them or be overwritten.
_RESERVED_METRICS = frozenset({"task", "split", "stderr", "n_samples", "n_problems", "n_executed_this_run",
                               "dropped_ks", "status_counts", "generation", "by_temperature", "best",
                               "stderr_by_temperature"})


def _where(task: Task) -> str:
    """The task as messages name it: its name and, for a plugin's, the entry point and package."""
    from leti.tasks.plugins import origin  # late: plugins imports this module

    cls = type(task)
    name = task.name if isinstance(task.name, str) and task.name else cls.__qualname__
    found = origin(cls)
    return f"task {name!r} of {found}" if found else f"task {name!r} (class {cls.__module__}.{cls.__qualname__})"


def _short(value: object) -> str:
    """A value as a message shows it: its type and a capped repr."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:60] + '...'}"


def _hook_error(task: Task, fn: Callable[..., Any], what: str, fix: str) -> LetiError:
    return LetiError(f"{_where(task)}: {fn.__module__}.{fn.__qualname__} {what}; {fix}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _str_or_none(value: object) -> bool:
    return value is None or isinstance(value, str)


def _is_stop_list(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(s, str) and s for s in value)


def _stop_problem(value: object) -> str | None:
    """What is wrong with a value given as stop sequences, or None. A string is refused, not read
    as a sequence: each of its characters would stop generation."""
    if isinstance(value, str):
        return f"the string {value!r}, not a tuple of strings"
    if not _is_stop_list(value):
        return f"{_short(value)}, not a tuple of non-empty strings"
    return None


# Problem fields: (check, what the field must be). Types only: the values are the task's own.
_PROBLEM_FIELDS: tuple[tuple[str, Callable[[object], bool], str], ...] = (
    ("id", lambda v: isinstance(v, str), "a str"),
    ("prompt", lambda v: isinstance(v, str), "a str"),
    ("tests", lambda v: isinstance(v, str), "a str"),
    ("split", lambda v: isinstance(v, str) and bool(v), "a non-empty str"),
    ("entry_point", _str_or_none, "a str or None"),
    ("reference", _str_or_none, "a str or None"),
    ("meta", lambda v: isinstance(v, dict), "a dict"),
)


def _checked_problems(task: Task, loaded: object) -> list[Problem]:
    """What load_problems returned, as the list `problems()` caches: every item a Problem with
    fields of the declared types, ids unique. One pass, once per load."""
    fn = type(task).load_problems

    def bad(what: str, fix: str) -> LetiError:
        return _hook_error(task, fn, what, fix)

    # A str iterates its characters and a dict its keys: refused as a whole, not item by item.
    if loaded is None or isinstance(loaded, (str, bytes, Mapping)) or not isinstance(loaded, Iterable):
        raise bad(f"returned {_short(loaded)}", "return a list of leti.tasks.Problem")
    problems = list(loaded)  # read once: a generator is not read again (empty) by the next call
    seen: dict[str, int] = {}
    for i, p in enumerate(problems):
        if not isinstance(p, Problem):
            raise bad(f"returned {_short(p)} as item {i}, not a leti.tasks.Problem",
                      "build each as Problem(id=..., prompt=..., tests=..., split=...)")
        for name, ok, kind in _PROBLEM_FIELDS:
            value = getattr(p, name)
            if not ok(value):
                label = f"problem {p.id!r}" if isinstance(p.id, str) else f"item {i}"
                raise bad(f"returned {label} whose {name} is {_short(value)}", f"make Problem.{name} {kind}")
        stop = p.meta.get("stop")
        if stop is not None and not _is_stop_list(stop):
            raise bad(f"returned problem {p.id!r} whose meta['stop'] is {_short(stop)}",
                      "give a list of non-empty strings (a string would stop at each of its characters)")
        first = seen.setdefault(p.id, i)
        if first != i:
            # the id is how samples, results and resumes find their problem: the second would be
            # scored with the first's tests, or not at all
            raise bad(f"returned problem id {p.id!r} twice (items {first} and {i})", "give every problem its own id")
    return problems


def _check_splits(task: Task, fn: Callable[..., Any], result: object) -> list[str]:
    if isinstance(result, str) or not isinstance(result, (list, tuple)) or not all(isinstance(s, str) for s in result):
        # a str would pass `split in task.splits()` for any substring of it
        raise _hook_error(task, fn, f"returned {_short(result)}", "return a list of split names, e.g. ['train', 'test']")
    if not getattr(task, "_loading_problems", False):  # (load_problems itself may ask for the splits)
        missing: dict[str, int] = {}
        for p in task.problems():
            if p.split not in result:
                missing[p.split] = missing.get(p.split, 0) + 1
        if missing:
            split, n = next(iter(missing.items()))
            raise _hook_error(task, fn, f"returned {list(result)!r}, which leaves out split {split!r} of {n} problems "
                              "(no command could select them)",
                              "list every split load_problems uses, or drop the override: the default derives them")
    return list(result)


def _check_program(task: Task, fn: Callable[..., Any], result: object) -> Program:
    if not isinstance(result, Program):
        raise _hook_error(task, fn, f"returned {_short(result)}, not a leti.execution.Program",
                          "return Program(program=..., tests=...)")
    for name in ("program", "tests"):
        value = getattr(result, name)
        if not isinstance(value, str):
            raise _hook_error(task, fn, f"returned a Program whose {name} is {_short(value)}", f"make Program.{name} a str")
    return result


def _check_judge(task: Task, fn: Callable[..., Any], result: object) -> ExecutionResult:
    if not isinstance(result, ExecutionResult):
        raise _hook_error(task, fn, f"returned {_short(result)}, not a leti.execution.ExecutionResult",
                          "return the result it was given, or dataclasses.replace(result, status=...) for another verdict")
    return result


def _check_stops(task: Task, fn: Callable[..., Any], result: object) -> tuple[str, ...]:
    what = _stop_problem(result)
    if what is not None:
        raise _hook_error(task, fn, f"returned {what}", _STOP_FIX)
    return tuple(result)  # type: ignore[arg-type]


def _check_metrics(task: Task, fn: Callable[..., Any], result: object) -> dict[str, float]:
    if not isinstance(result, Mapping):
        raise _hook_error(task, fn, f"returned {_short(result)}", "return a dict of metric name to number")
    for name, value in result.items():
        if not isinstance(name, str):
            raise _hook_error(task, fn, f"returned the metric name {_short(name)}", "name each metric with a str")
        if name.startswith("pass@") or name in _RESERVED_METRICS:
            raise _hook_error(task, fn, f"returned a metric named {name!r}, a key results.json gives its own value",
                              "rename the metric")
        if not _is_number(value):
            raise _hook_error(task, fn, f"returned metric {name!r} = {_short(value)}", "give each metric an int or float")
    return dict(result)


_RESULT_CHECKS: dict[str, Callable[[Task, Callable[..., Any], Any], Any]] = {
    "splits": _check_splits,
    "build_program": _check_program,
    "reference_program": _check_program,
    "judge": _check_judge,
    "stop_for": _check_stops,
    "extra_metrics": _check_metrics,
}


def _checked(fn: Callable[..., Any], check: Callable[[Task, Callable[..., Any], Any], Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def hook(self: Task, *args: Any, **kwargs: Any) -> Any:
        return check(self, fn, fn(self, *args, **kwargs))

    hook._leti_checked = True  # type: ignore[attr-defined]  # (assigned to another class: not wrapped twice)
    return hook


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


_EVAL_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "split": (lambda v: isinstance(v, str) and bool(v), "a split name"),
    "n": (_is_count, "an int >= 1"),
    "temperatures": (lambda v: isinstance(v, (tuple, list)) and bool(v)
                     and all(_is_number(t) and 0 <= t < math.inf for t in v), "a tuple of numbers >= 0"),
    "top_p": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "max_new_tokens": (_is_count, "an int >= 1"),
    "ks": (lambda v: isinstance(v, (tuple, list)) and bool(v) and all(_is_count(k) for k in v), "a tuple of ints >= 1"),
}


def _bad_attribute(task: Task | type[Task]) -> tuple[str, str, str] | None:
    """The first attribute that callers read straight off a task (its stop sequences, its
    evaluation protocol) and that is not what they expect: (attribute, what it is, the fix).
    On a class, one computed per instance (a property) is left to the instance's check."""
    stops, d = task.stop_sequences, task.eval_defaults
    if isinstance(task, type) and hasattr(type(stops), "__get__"):
        stops = ()
    what = _stop_problem(stops)
    if what is not None:
        return "stop_sequences", what, _STOP_FIX
    if isinstance(task, type) and hasattr(type(d), "__get__"):
        return None
    if not isinstance(d, EvalDefaults):
        return "eval_defaults", f"{_short(d)}, not a leti.tasks.EvalDefaults", "write EvalDefaults(split=..., n=..., ks=...)"
    for name, (ok, kind) in _EVAL_FIELDS.items():
        value = getattr(d, name)
        if not ok(value):
            return f"eval_defaults.{name}", _short(value), f"make it {kind}"
    return None
