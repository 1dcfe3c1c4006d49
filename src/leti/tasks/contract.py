"""What a task's hooks return is checked where leti receives it (base.Task calls in here): the
problems once per load, the other hooks on each call (a type check each), the class attributes
callers read as the class is made. A task may come from another package (plugins.py), so a
broken contract is one LetiError naming the task, the method and the fix, not a traceback far
from the cause or, worse, data quietly lost (a generator read twice, a stop string split into
characters)."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from leti.errors import LetiError, first_line
from leti.execution.records import ExecutionResult, Program
from leti.jsonl import is_number
from leti.tasks.base import EvalDefaults, Problem, Task


def check_class(cls: type[Task]) -> None:
    """A Task subclass as it is made: its own hook overrides wrapped so their results are checked
    (callers call the hooks directly, so this is the one place), and its class attributes checked
    (a plugin's: as it is imported; ones an instance sets are checked when it loads problems)."""
    for hook, check in _RESULT_CHECKS.items():
        fn = cls.__dict__.get(hook)
        if inspect.isfunction(fn) and not getattr(fn, "_leti_checked", False):
            setattr(cls, hook, _checked(fn, check))
    bad = _bad_attribute(cls)
    if bad is not None:
        attribute, what, fix = bad
        raise LetiError(f"{cls.__module__}.{cls.__qualname__}.{attribute} is {what}; {fix}")


def loaded_problems(task: Task) -> object:
    """What the task's load_problems returns, a generator read into a list (its errors are raised
    as it is read). An exception from a task that is not leti's own (a plugin's, a script's) is one
    LetiError naming the task, its plugin and the error: a traceback of the task's own code named
    neither, and `tasks list` stopped at it. leti's own tasks raise LetiError for bad input; any
    other exception from them is a bug and keeps its traceback."""
    fn = type(task).load_problems
    try:
        loaded = task.load_problems()
        if isinstance(loaded, Iterator):
            loaded = list(loaded)
    except LetiError:
        raise
    except Exception as e:
        module = getattr(fn, "__module__", None) or ""
        error = task_code_error(type(task), _name(task), module, getattr(fn, "__qualname__", "load_problems"),
                                "could not load its problems", e)
        if error is None:
            raise
        raise error from e
    return loaded


def task_code_error(cls: type, name: str, module: str, qualname: str, failed: str, e: Exception) -> LetiError | None:
    """One LetiError for an exception raised by a task's own code (`module`.`qualname`: a plugin's,
    a script's; its constructor or load_problems), naming the task, its plugin and the error;
    None for leti's own code, whose exceptions other than LetiError are bugs that keep their
    traceback."""
    if module == "leti" or module.startswith("leti."):
        return None
    from leti.tasks.plugins import origin  # late: plugins imports this module

    fix = "fix or uninstall that package" if origin(cls) else f"fix {module}.{qualname}"
    return LetiError(f"{_named(cls, name)} {failed} ({first_line(e)}); {fix}")


def checked_problems(task: Task, loaded: object) -> list[Problem]:
    """What load_problems returned, as the list `problems()` caches (see _problem_list), and the
    instance's attributes, now that it has loaded."""
    problems = _problem_list(task, loaded)
    bad = _bad_attribute(task)
    if bad is not None:
        attribute, what, fix = bad
        raise LetiError(f"{_where(task)}: {attribute} is {what}; {fix}")
    return problems


_STOP_FIX = "give a tuple of non-empty strings, e.g. ('\\ndef',)"
# results.json holds the task's metrics next to these keys (leti/evaluation/run.py, and
# leti/cli/evaluate_cmd.py for several temperatures): a metric of the same name would overwrite
# one of them or be overwritten.
_RESERVED_METRICS = frozenset({"task", "split", "stderr", "n_samples", "n_problems", "n_problems_in_split", "missing_problems", "n_executed_this_run",
                               "dropped_ks", "status_counts", "generation", "by_temperature", "best",
                               "stderr_by_temperature"})


def _where(task: Task) -> str:
    """The task as messages name it: its name and, for a plugin's, the entry point and package."""
    return _named(type(task), _name(task))


def _name(task: Task) -> str:
    return task.name if isinstance(task.name, str) and task.name else type(task).__qualname__


def _named(cls: type, name: str) -> str:
    """Task `name` of class `cls` as messages name it (_where; a task not built yet by its spec's name)."""
    from leti.tasks.plugins import origin  # late: plugins imports this module

    found = origin(cls)
    return f"task {name!r} of {found}" if found else f"task {name!r} (class {cls.__module__}.{cls.__qualname__})"


def _short(value: object) -> str:
    """A value as a message shows it: its type and a capped repr."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:60] + '...'}"


def _hook_error(task: Task, fn: Callable[..., Any], what: str, fix: str) -> LetiError:
    return LetiError(f"{_where(task)}: {fn.__module__}.{fn.__qualname__} {what}; {fix}")


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


def _problem_list(task: Task, loaded: object) -> list[Problem]:
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
        # the base method (it reads the loaded problems): a problems() override may ask for the splits
        for p in Task.problems(task):
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
        if not is_number(value):
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
                     and all(is_number(t) and 0 <= t < math.inf for t in v), "a tuple of numbers >= 0"),
    "top_p": (lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
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
    from leti.execution.records import MODULE_NAMES

    name = task.module_name
    if not (isinstance(task, type) and hasattr(type(name), "__get__")) and name not in MODULE_NAMES:
        return "module_name", _short(name), f"make it one of {', '.join(repr(m) for m in MODULE_NAMES)}"
    if isinstance(task, type) and hasattr(type(d), "__get__"):
        return None
    if not isinstance(d, EvalDefaults):
        return "eval_defaults", f"{_short(d)}, not a leti.tasks.EvalDefaults", "write EvalDefaults(split=..., n=..., ks=...)"
    for name, (ok, kind) in _EVAL_FIELDS.items():
        value = getattr(d, name)
        if not ok(value):
            return f"eval_defaults.{name}", _short(value), f"make it {kind}"
    return None


def problem_where(task: Task, problem_id: str) -> str:
    """"FILE:LINE" of a problem of a JSONL task file, for messages about it (a Problem does not
    keep its line); "" for other tasks, or when the file no longer has it. Reads the file again:
    for a message only, never on the way of a run that goes well."""
    from leti.tasks.jsonl import JsonlTask  # late: jsonl imports the registry, which imports base

    if not isinstance(task, JsonlTask):
        return ""
    from leti.jsonl import read_json_lines

    try:
        for where, _, obj in read_json_lines(task.path, what="task file", missing_hint=""):
            if isinstance(obj, dict) and str(obj.get("id")) == problem_id:
                return where
    except LetiError:
        pass
    return ""
