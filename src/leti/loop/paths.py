"""A run's local paths made absolute before its config.yaml is written: the model directory, a
task's files (`jsonl:PATH`) and a pretraining corpus directory. Relative, they are read against
the current directory, so a resume started elsewhere (a batch script, or the `leti run
RUN/config.yaml --run-dir RUN` that leti's messages suggest) found no task file. Only paths that
exist are rewritten: a hub id stays a hub id, and a missing path keeps its own error."""

from __future__ import annotations

import dataclasses
import os

from leti.config import RunConfig
from leti.errors import LetiError
from leti.tasks.base import absolute_path
from leti.tasks.registry import task_class


def absolute_task_spec(spec: str) -> str:
    """`NAME:ARG` with the paths in ARG made absolute, as the task class says (Task.absolute_argument)."""
    name, sep, arg = spec.partition(":")
    if not sep or not arg:
        return spec
    try:
        cls = task_class(name)
    except LetiError:  # an unknown task is refused, in one line, where the task is built
        return spec
    return f"{name}:{cls.absolute_argument(arg)}"


def absolute_model(model: str) -> str:
    """A local model directory's absolute path; a hub id (no such directory here) unchanged."""
    return absolute_path(model) if os.path.isdir(os.path.expanduser(model)) else model


def absolute_corpus(corpus: str) -> str:
    """A corpus directory's absolute path; 'stdlib' and dataset names unchanged."""
    return corpus if corpus == "stdlib" else absolute_path(corpus)


# config field (flattened, as config_differences names them) -> its value with paths made absolute
PATH_FIELDS = {"model": absolute_model, "task": absolute_task_spec, "trainer.pretrain_corpus": absolute_corpus}


def moved_path(key: str, before: object, now: object) -> str | None:
    """The absolute path a resumed run's field `key` recorded, when `now` is that same path
    relative to the current directory but nothing is there any more: the directory (or task
    file) was moved or deleted since the run started. Otherwise None. Only existing paths are
    made absolute, so such a value reads as another value, and "resume with --set FIELD=PATH"
    would only lead to PATH's own not-found error."""
    if key not in PATH_FIELDS or not isinstance(before, str) or not isinstance(now, str):
        return None
    if key == "task":  # NAME:PATH, the one-path argument (jsonl:PATH)
        name_before, _, before = before.partition(":")
        name_now, _, now = now.partition(":")
        if name_before != name_now or not now:
            return None
    path = os.path.expanduser(now)
    if os.path.isabs(path) or os.path.exists(path):
        return None
    return before if os.path.abspath(path) == before else None


def with_absolute_paths(cfg: RunConfig) -> RunConfig:
    """`cfg` with its local paths absolute (see the module's docstring)."""
    trainer = dataclasses.replace(cfg.trainer, pretrain_corpus=absolute_corpus(cfg.trainer.pretrain_corpus))
    return dataclasses.replace(cfg, model=absolute_model(cfg.model), task=absolute_task_spec(cfg.task), trainer=trainer)
