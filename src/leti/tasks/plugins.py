"""Tasks from other installed packages, found through the `leti.tasks` entry-point group.

A task that needs its own code (a verifier, a metric, a data loader) lives in the user's own
package rather than in a fork of leti; the package declares it in its pyproject.toml:

    [project.entry-points."leti.tasks"]
    my-task = "my_pkg.tasks:MyTask"     # a Task subclass: registered under the entry point's name
    more = "my_pkg.more_tasks"          # or a module whose @register_task classes register themselves

Entry points are the packaging standard for plugins (pytest and setuptools find theirs the same
way), so `pip install -e my_pkg` is all it takes and every `leti` command, every rank of a
multi-process launch included, sees the same tasks.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from functools import cache

from leti.errors import LetiError, first_line
from leti.tasks.base import Task

GROUP = "leti.tasks"

# Where plugin tasks came from, for messages about a task's contract (contract.py): the classes class
# entry points name, the modules module entry points name, and the classes each entry point's
# import registered. Filled once, by load_plugins.
_CLASS_ORIGINS: dict[type, str] = {}
_MODULE_ORIGINS: dict[str, str] = {}
_REGISTERED_BY: dict[type, str] = {}


def _origin(ep: importlib.metadata.EntryPoint) -> str:
    dist = ep.dist.name if ep.dist is not None else "an unknown package"
    return f"task plugin '{ep.name} = {ep.value}' (entry point group {GROUP}, package {dist})"


def origin(cls: type) -> str | None:
    """The plugin a task class came from, as messages name it: the entry point naming the class,
    else the module entry point it is defined under, else the one whose import registered it,
    else the one naming a class it derives from."""
    if cls in _CLASS_ORIGINS:
        return _CLASS_ORIGINS[cls]
    for module, text in _MODULE_ORIGINS.items():
        if cls.__module__ == module or cls.__module__.startswith(module + "."):
            return text
    if cls in _REGISTERED_BY:
        return _REGISTERED_BY[cls]
    return next((_CLASS_ORIGINS[c] for c in cls.__mro__ if c in _CLASS_ORIGINS), None)


@cache  # importing is idempotent, but scanning every installed distribution per lookup is not free
def load_plugins() -> tuple[str, ...]:
    """Import every `leti.tasks` entry point; returns their names. A Task subclass an entry point
    names is registered under the entry point's name; a module's classes register themselves."""
    # the registry calls this module: import late
    from leti.tasks.registry import register_task, registered

    names = []
    for ep in importlib.metadata.entry_points(group=GROUP):
        before = registered()
        try:
            obj = ep.load()
        except LetiError as e:  # said by leti's checks (contract.py: a task class's attributes) or the plugin
            raise LetiError(f"{_origin(ep)}: {e}") from None
        except Exception as e:  # the plugin's own code: any error is the plugin's, said in one line
            raise LetiError(f"{_origin(ep)} cannot be imported ({first_line(e)}); fix or uninstall that package") from e
        if inspect.isclass(obj) and issubclass(obj, Task):
            try:  # a no-op when the class registered itself under this name
                register_task(ep.name)(obj)
            except ValueError as e:  # the name is taken by another task
                raise LetiError(f"{_origin(ep)}: {e}; rename the entry point") from None
        elif not inspect.ismodule(obj):
            raise LetiError(f"{_origin(ep)} names {type(obj).__name__} {obj!r}, not a Task subclass or a module; "
                            "point it at one")
        for cls in registered() - before:  # what the entry point's import registered
            _REGISTERED_BY.setdefault(cls, _origin(ep))
        if inspect.isclass(obj):
            _CLASS_ORIGINS[obj] = _origin(ep)
        else:
            _MODULE_ORIGINS[obj.__name__] = _origin(ep)
        names.append(ep.name)
    return tuple(names)
