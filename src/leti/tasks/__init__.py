"""Tasks: problems (prompt + tests + split) and how a completion becomes a program.

    from leti.tasks import get_task
    task = get_task("mbpp")            # or "mbpp-sanitized", "humaneval", "jsonl:PATH"
    problems = task.problems("test")
"""

from leti.tasks.base import EvalDefaults, Problem, Task
from leti.tasks.registry import get_task, list_tasks, register_task

__all__ = ["EvalDefaults", "Problem", "Task", "get_task", "list_tasks", "register_task"]
