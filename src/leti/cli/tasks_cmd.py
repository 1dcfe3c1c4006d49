"""`leti tasks list | show TASK [ID] | validate TASK`: inspect tasks and check that every
reference solution passes its own tests through the sandboxed executor."""

from __future__ import annotations

import argparse
import sys

from leti.errors import LetiError, plural
from leti.evaluation.samples import Sample
from leti.execution import ExecutionConfig, Executor
from leti.tasks import Task, get_task, list_tasks
from leti.tasks.contract import problem_where
from leti.tasks.registry import needs_argument, task_class

# How many failing references get their full feedback printed by `validate`.
_SHOW_FEEDBACK = 3


def add_execution_flags(parser: argparse.ArgumentParser) -> None:
    """The sandbox's flags, one definition for every command that executes programs (`leti exec`,
    `tasks validate`, `evaluate`): `validate` and `evaluate` lacked --memory-mb, so a task whose
    solutions need more than the default passed under `leti exec --memory-mb` and under `leti run`
    with execution.memory_mb raised, and failed `validate` by memory."""
    d = ExecutionConfig()
    parser.add_argument("--timeout", type=float, default=d.timeout_s,
                        help=f"seconds per program (default {d.timeout_s:g}, the paper's; at most 86400)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel sandboxed workers (default: one per core; at most 1024)")
    parser.add_argument("--memory-mb", type=int, default=d.memory_mb,
                        help=f"address-space limit per program, MiB (default {d.memory_mb}; a run's execution.memory_mb)")
    parser.add_argument("--feedback-style", choices=["paper", "rich"], default=d.feedback_style,
                        help=f"feedback text: paper (trimmed traceback) or rich (also the values of a failing "
                        f"assert's operands); default {d.feedback_style}")
    parser.add_argument("--unsafe-no-sandbox", action="store_true",
                        help="run programs WITHOUT isolation (only for code you trust, or where bubblewrap is unavailable)")


# ExecutionConfig field -> the command-line flag that sets it.
EXECUTION_FLAGS = {"timeout_s": "--timeout", "workers": "--workers", "memory_mb": "--memory-mb",
                   "feedback_style": "--feedback-style"}


def build_execution_config(**kwargs) -> ExecutionConfig:
    """ExecutionConfig from command-line values; a bad one is an error naming its flag
    ("--timeout must be > 0, got -1.0"), not the config field behind it."""
    try:
        return ExecutionConfig(**kwargs)
    except ValueError as e:
        message = str(e)
        for name, flag in EXECUTION_FLAGS.items():
            message = message.replace(f"execution.{name} ", f"{flag} ")
        raise LetiError(message) from None


def execution_config(args: argparse.Namespace) -> ExecutionConfig:
    """The ExecutionConfig of the flags `add_execution_flags` defines."""
    kwargs: dict = {"timeout_s": args.timeout, "memory_mb": args.memory_mb, "feedback_style": args.feedback_style,
                    "sandbox": "none" if args.unsafe_no_sandbox else "auto"}
    if args.workers is not None:
        kwargs["workers"] = args.workers
    return build_execution_config(**kwargs)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tasks", help="list, show and validate tasks")
    sub = parser.add_subparsers(dest="tasks_command", required=True, metavar="ACTION")

    p_list = sub.add_parser("list", help="registered tasks with their splits")
    p_list.set_defaults(func=cmd_list)

    p_show = sub.add_parser("show", help="a task's description, or one problem's prompt/tests/reference")
    p_show.add_argument("task", help="mbpp, mbpp-sanitized, humaneval, jsonl:PATH, ... (leti tasks list)")
    p_show.add_argument("id", nargs="?", help="problem id (e.g. 11 for MBPP, HumanEval/0)")
    p_show.set_defaults(func=cmd_show)

    p_val = sub.add_parser("validate", help="run every reference solution through the executor")
    p_val.add_argument("task", help="mbpp, mbpp-sanitized, humaneval, jsonl:PATH, ... (leti tasks list)")
    p_val.add_argument("--split", default=None, help="only this split (default: all)")
    add_execution_flags(p_val)
    p_val.set_defaults(func=cmd_validate)


def _split_sizes(task: Task) -> str:
    return ", ".join(f"{s} {len(task.problems(s))}" for s in task.splits())


def cmd_list(args: argparse.Namespace) -> int:
    for name in list_tasks():
        if needs_argument(name):  # jsonl:PATH cannot be built without its argument
            print(f"{name + ':ARG':<16} {task_class(name).description}")
            continue
        try:
            task = get_task(name)
            sizes = _split_sizes(task)
        except LetiError as e:  # one task that cannot load (a plugin's) does not hide the others
            print(f"{name:<16} {task_class(name).description} [cannot load: {e}]")
            continue
        print(f"{name:<16} {task.description} [{sizes}]")
    return 0


def _task_stops(task: Task) -> str:
    """The task's stop sequences, or "per problem" when problems carry their own (meta["stop"],
    which `Task.stop_for` prefers): a single list would misstate what generation stops at."""
    default = task.stop_summary or repr(list(task.stop_sequences))
    problems = task.problems()
    own = sum(p.meta.get("stop") is not None for p in problems)
    if own == 0:
        return default
    if own == len(problems):
        return "per problem (each problem has its own; see `leti tasks show TASK ID`)"
    return f"per problem ({own} of {len(problems)} problems have their own, the others {default}; see `leti tasks show TASK ID`)"


def cmd_show(args: argparse.Namespace) -> int:
    task = get_task(args.task)
    if args.id is None:
        # the problems are loaded first: a missing or bad task file is the only output, not the
        # end of a half-printed description
        sizes, stops = _split_sizes(task), _task_stops(task)
        print(f"task:     {task.name}\n{task.description}")
        print(f"source:   {task.source}\nlicence:  {task.license}")
        print(f"splits:   {sizes}")
        print(f"stop:     {stops}")
        if task.citation:
            print(f"citation:\n{task.citation}")
        return 0
    try:
        problem = task.get(args.id)
    except KeyError:
        problems = task.problems()
        if not problems:
            raise LetiError(f"task {args.task!r} has no problems") from None
        raise LetiError(f"task {args.task!r} has no problem {args.id!r}; ids look like {problems[0].id!r}") from None
    print(f"# {task.name} {problem.id} (split {problem.split}, entry point {problem.entry_point})")
    own = "its own" if problem.meta.get("stop") is not None else "the task's"
    print(f"stop: {list(task.stop_for(problem))!r} ({own})")
    print("## prompt\n" + problem.prompt)
    print("## tests\n" + problem.tests)
    print("## reference\n" + (problem.reference if problem.reference is not None else "(none)"))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    task = get_task(args.task)
    if args.split is not None and args.split not in task.splits():
        raise LetiError(f"task {args.task!r} has no split {args.split!r}; splits: {', '.join(task.splits())}")
    problems = task.problems(args.split)
    empty = [p for p in problems if not p.prompt]
    if empty:  # nothing for the model to continue: `leti run` refuses it at its start
        where = problem_where(task, empty[0].id) or f"task {args.task!r}"
        more = f" (and {plural(len(empty) - 1, 'more problem')} with none)" if len(empty) > 1 else ""
        raise LetiError(f"{where}: problem {empty[0].id!r} has an empty prompt{more}; give some text")
    with_ref = [p for p in problems if p.reference is not None]
    without = [p.id for p in problems if p.reference is None]
    if not with_ref:  # "0 passed, 0 failed" and exit 0 read as a file that validated
        split = f" split {args.split!r}" if args.split is not None else ""
        raise LetiError(f"task {args.task!r}{split}: none of its {plural(len(problems), 'problem')} has a reference "
                        "solution, so there is nothing to validate; add a 'reference' field (the code that "
                        "completes the prompt) to check the tests")
    with Executor(execution_config(args), progress=sys.stderr.isatty()) as ex:
        results = task.run_references(with_ref, ex)
    failed = [(p, r) for p, r in zip(with_ref, results, strict=True) if not r.passed]
    if without:
        more = f" and {len(without) - 20} more" if len(without) > 20 else ""
        print(f"{plural(len(without), 'problem')} {'has' if len(without) == 1 else 'have'} no reference and "
              f"{'was' if len(without) == 1 else 'were'} not run: {', '.join(without[:20])}{more}")
    # Tasks scored by more than pass/fail (e.g. Arg-I/Arg-C F1) report their metrics too.
    samples = [Sample(p.id, 0, p.reference) for p in with_ref]
    for name, value in task.extra_metrics(with_ref, samples, results).items():
        print(f"{name}: {value:.2f}")
    print(f"{len(with_ref) - len(failed)} passed, {len(failed)} failed")
    if failed:
        print("failed: " + " ".join(p.id for p, _ in failed))
        for p, r in failed[:_SHOW_FEEDBACK]:
            print(f"--- {p.id}: {r.status.value}\n{r.feedback}")
    return 1 if failed else 0
