"""Task registry: a task is one module with a `@register_task("name")` class plus one line in
`_TASK_MODULES`, or, outside leti, an entry point of the user's own package (leti.tasks.plugins).
Specs are `NAME` or `NAME:ARG` (e.g. `jsonl:my_tasks.jsonl`, `mbpp:hub`); the argument is passed
to the task class's constructor.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from leti.errors import LetiError
from leti.tasks.base import Task
from leti.tasks.contract import task_code_error
from leti.tasks.plugins import load_plugins

# Modules that define tasks; imported on first lookup so that `import leti.tasks` stays cheap.
_TASK_MODULES = (
    "leti.tasks.mbpp",
    "leti.tasks.humaneval",
    "leti.tasks.jsonl",
    "leti.tasks.geneva",
    "leti.tasks.synthetic",
)

# name -> task class. Filled by the decorator when the modules above are imported; never
# mutated afterwards, so it is a constant table rather than run state.
_REGISTRY: dict[str, type[Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: make `name` resolve to this Task subclass. A name is one word without
    ':' (a task spec is NAME or NAME:OPTIONS, so 'a:b' could never be looked up)."""
    if not isinstance(name, str) or not name or ":" in name or any(c.isspace() for c in name):
        raise ValueError(f"task name {name!r} must be a non-empty word without ':' or spaces (':' starts a task's "
                         "options, as in jsonl:PATH)")

    def wrap(cls: type[Task]) -> type[Task]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"task name {name!r} registered twice ({_REGISTRY[name].__name__}, {cls.__name__})")
        # its own name only: one inherited from a registered base class would name the wrong task
        cls.name = cls.__dict__.get("name") or name
        _REGISTRY[name] = cls
        return cls

    return wrap


def registered() -> set[type[Task]]:
    """The registered classes (plugins.py tells which ones a plugin's import added)."""
    return set(_REGISTRY.values())


def _load_modules() -> None:
    for module in _TASK_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            # A task module listed here but not written yet (another branch) is not an error;
            # a missing dependency *inside* a task module is, so only that exact name is skipped.
            if e.name != module:
                raise
    load_plugins()  # tasks of other installed packages (entry point group leti.tasks)


def list_tasks() -> list[str]:
    """Registered task names, sorted."""
    _load_modules()
    return sorted(_REGISTRY)


def task_class(name: str) -> type[Task]:
    """The registered class for `name` (without building it, e.g. for jsonl which needs a PATH)."""
    _load_modules()
    if name not in _REGISTRY:
        raise LetiError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def needs_argument(name: str) -> bool:
    """Whether the registered task `name` is built only as `name:ARG` (jsonl:PATH)."""
    return _takes_argument(task_class(name)) is _REQUIRED


def get_task(spec: str) -> Task:
    """Build the task for `spec`: `mbpp`, `mbpp-sanitized`, `humaneval`, `jsonl:PATH`, ..."""
    _load_modules()
    name, sep, arg = spec.partition(":")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise LetiError(f"unknown task {spec!r}; known tasks: {', '.join(sorted(_REGISTRY))} (or jsonl:PATH)")
    takes_arg = _takes_argument(cls)
    if sep:
        if not arg:
            raise LetiError(f"task spec {spec!r} has an empty argument after ':'; write e.g. jsonl:PATH")
        if not takes_arg:
            raise LetiError(f"task spec {spec!r}: task {name!r} takes no argument; write {name}")
        return _built(cls, name, (arg,))
    if takes_arg is _REQUIRED:
        raise LetiError(f"task {name!r} needs an argument: write {name}:ARG, e.g. {_EXAMPLES.get(name, name + ':ARG')}")
    return _built(cls, name, ())


def _built(cls: type[Task], name: str, args: tuple[str, ...]) -> Task:
    """cls(*args). An exception from a constructor that is not leti's own (a plugin's, a script's)
    is one LetiError naming the task, its plugin and the error, as one from its load_problems is
    (contract.loaded_problems); leti's own tasks raise LetiError for bad input, and any other
    exception from them is a bug that keeps its traceback."""
    try:
        return cls(*args)
    except LetiError:
        raise
    except Exception as e:
        error = task_code_error(cls, name, cls.__module__ or "", f"{cls.__qualname__}.__init__", "could not be created", e)
        if error is None:
            raise
        raise error from e


_REQUIRED = "required"
_EXAMPLES = {"jsonl": "jsonl:my_tasks.jsonl", "eae-jsonl": "eae-jsonl:events.jsonl"}


def _takes_argument(cls: type[Task]) -> bool | str:
    """Whether the task's constructor takes the spec's argument: False, True (optional) or
    _REQUIRED. Decided from the signature, so that a TypeError raised inside a constructor is
    never mistaken for a wrong spec."""
    params = [p for p in inspect.signature(cls.__init__).parameters.values()
              if p.name != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not params:
        return False
    return _REQUIRED if params[0].default is inspect.Parameter.empty else True
