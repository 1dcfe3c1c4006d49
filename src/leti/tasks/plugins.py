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


def _origin(ep: importlib.metadata.EntryPoint) -> str:
    dist = ep.dist.name if ep.dist is not None else "an unknown package"
    return f"task plugin '{ep.name} = {ep.value}' (entry point group {GROUP}, package {dist})"


@cache  # importing is idempotent, but scanning every installed distribution per lookup is not free
def load_plugins() -> tuple[str, ...]:
    """Import every `leti.tasks` entry point; returns their names. A Task subclass an entry point
    names is registered under the entry point's name; a module's classes register themselves."""
    from leti.tasks.registry import register_task  # the registry calls this module; import late

    names = []
    for ep in importlib.metadata.entry_points(group=GROUP):
        try:
            obj = ep.load()
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
        names.append(ep.name)
    return tuple(names)
