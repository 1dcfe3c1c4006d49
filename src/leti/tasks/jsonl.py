"""User tasks from a JSONL file: `--task jsonl:PATH`.

Source / licence / citation: whatever the user's file states; this module only defines the schema.

One JSON object per line (blank lines are allowed; nothing else is skipped):

    field        type              required  meaning
    id           string or int     yes       unique problem id (ints become strings)
    prompt       string            yes       what the model continues
    tests        string            yes       code run after prompt + completion; passing = no error
                                           (checked to be valid Python on its own, and to be able
                                           to fail: see "Tests that cannot fail" below)
    entry_point  string or null    no        name of the function under test (informational)
    split        string            no        default "test"
    reference    string or null    no        a correct completion, checked by `leti tasks validate`
    stop         list of strings   no        stop sequences for this problem (default: none)
    meta         object            no        anything else, carried along untouched (except a
                                           'stop' key: give stop sequences as `stop`)

Example line:
    {"id": "add", "prompt": "def add(a, b):\\n", "tests": "assert add(1, 2) == 3", "reference": "    return a + b\\n"}

Tests that cannot fail are refused when the file is read (they would make every program pass,
and `leti tasks validate` cannot see it: the reference passes too). The tests are run as a plain
script after prompt + completion; nothing is added to them (unlike HumanEval, leti appends no
`check(entry_point)` call) and no test runner collects them. The rule, on the code's syntax only:
the code that runs when the tests run (their top level, class bodies included, not the bodies
of functions) must contain a *check*, or call (by name; `obj.name(...)` counts as a call of
`name`) a function or class defined in the tests or in the prompt whose body contains a check,
directly or through further such calls. A check is an `assert` or `raise` statement, or a call
of `assert*` (assertEqual, numpy's assert_allclose...), `fail`, `raises`, `exit`, `_exit`,
`quit` or `abort` (leti counts any exit as a failure). So these are accepted:

    assert add(1, 2) == 3                          plain asserts, in loops or ifs too
    if add(1, 2) != 3: raise ValueError("add")     a raise
    def check(f): assert f(1, 2) == 3              a checker defined in the tests
    check(add)                                     ... or in the prompt, and called here
    assert unittest.main(exit=False).result.wasSuccessful()     unittest test cases

and tests that check nothing else are refused, each with its fix: comments, docstrings or
`pass` only; `add(1, 2) == 3` (a comparison without assert); a `check` (or pytest-style
`test_*`) function that is never called; `unittest.main(exit=False)` or `doctest.testmod()`
whose result is not checked (write `assert doctest.testmod().failed == 0`). `unittest.main()`
is refused wherever it is: it always ends in SystemExit, so every program would *fail*. An
explicit `assert` is taken at its word: `assert True` passes the rule. This check comes after
the others (a line's schema, unique ids). Where the prompt does not parse (it usually ends
inside the function to complete), its last lines are dropped until it does; if 20 lines are
not enough, calls the rule cannot resolve are given the benefit of the doubt.
"""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path
from typing import Any

from leti.errors import LetiError
from leti.jsonl import lone_surrogate, lone_surrogate_error, read_json_lines
from leti.tasks.base import Problem, Task
from leti.tasks.registry import register_task

# field -> (accepted types, required)
SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "id": ((str, int), True),
    "prompt": ((str,), True),
    "tests": ((str,), True),
    "entry_point": ((str, type(None)), False),
    "split": ((str,), False),
    "reference": ((str, type(None)), False),
    "stop": ((list,), False),
    "meta": ((dict,), False),
}


def _type_names(types: tuple[type, ...]) -> str:
    names = {str: "string", int: "int", list: "list of strings", dict: "object", type(None): "null"}
    return " or ".join(names[t] for t in types)


def parse_line(obj: Any, where: str) -> Problem:
    """Check one decoded line against SCHEMA; `where` is "FILE:LINE" for error messages."""
    if not isinstance(obj, dict):
        raise LetiError(f"{where}: expected a JSON object with fields id, prompt, tests; got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(SCHEMA))
    if unknown:
        raise LetiError(
            f"{where}: field {unknown[0]!r} is not part of the task schema "
            f"(allowed: {', '.join(SCHEMA)}); put extra data under 'meta'"
        )
    for name, (types, required) in SCHEMA.items():
        if name not in obj:
            if required:
                raise LetiError(f"{where}: field {name!r} is missing; every line needs id, prompt and tests")
            continue
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise LetiError(f"{where}: field {name!r} must be {_type_names(types)}, got {json.dumps(value)[:60]}")
    bad_text = next((name for name in obj if lone_surrogate(obj[name])), None)
    if bad_text is not None:  # it passed, then failed sampling (tokenizer TypeError) or scoring (UnicodeEncodeError)
        raise lone_surrogate_error(where, bad_text)
    if str(obj["id"]).strip() == "":
        raise LetiError(f"{where}: field 'id' is empty; give every problem a unique id")
    if not obj["tests"].strip():
        raise LetiError(f"{where}: field 'tests' is empty; without tests every program would pass")
    try:
        compile(obj["tests"], "tests", "exec")
    except SyntaxError as e:  # else every program of this problem fails, and trains as a failure
        raise LetiError(f"{where}: field 'tests' is not valid Python (line {e.lineno}: {e.msg}); fix the tests") from None
    except ValueError as e:  # a NUL byte
        raise LetiError(f"{where}: field 'tests' is not valid Python ({e}); fix the tests") from None
    stop = obj.get("stop")
    if stop is not None and not all(isinstance(s, str) and s for s in stop):
        raise LetiError(f"{where}: field 'stop' must be a list of non-empty strings, got {json.dumps(stop)[:60]}")
    if isinstance(obj.get("meta"), dict) and "stop" in obj["meta"]:
        # meta["stop"] is where a problem's stop sequences live once parsed: one given there
        # would bypass the check above (a string would stop at each of its characters).
        raise LetiError(f"{where}: 'stop' inside 'meta' is reserved; give stop sequences as the top-level field 'stop'")
    split = obj.get("split", "test")
    if not split:
        raise LetiError(f"{where}: field 'split' is empty; leave it out for the default 'test'")
    meta = dict(obj.get("meta") or {})
    if stop is not None:
        meta["stop"] = list(stop)
    return Problem(
        id=str(obj["id"]),
        prompt=obj["prompt"],
        tests=obj["tests"],
        split=split,
        entry_point=obj.get("entry_point"),
        reference=obj.get("reference"),
        meta=meta,
    )


# Calls that check by name: assert* (assertEqual, assert_allclose), self.fail / pytest.fail,
# pytest.raises, and exits (leti counts a SystemExit or os._exit as a failure).
_CHECK_CALLS = frozenset({"fail", "raises", "exit", "_exit", "quit", "abort"})
_PROMPT_LINES_DROPPED = 20  # at most, to find a prompt prefix that parses
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _callee(node: ast.AST) -> str | None:
    """The name a call calls: f(...) -> f, a.b.f(...) -> f; None for other calls and non-calls."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _is_check(node: ast.AST) -> bool:
    if isinstance(node, (ast.Assert, ast.Raise)):
        return True
    name = _callee(node)
    return name is not None and (name.lower().startswith("assert") or name in _CHECK_CALLS)


def _running(statements: list[ast.stmt]) -> list[ast.AST]:
    """Every node of the code that runs when `statements` run as a module: function bodies are
    left out (their decorators and defaults run), class bodies are kept."""
    nodes: list[ast.AST] = []
    stack: list[ast.AST] = list(reversed(statements))
    while stack:
        node = stack.pop()
        nodes.append(node)
        if isinstance(node, _FUNCTIONS):
            stack.extend(node.decorator_list + node.args.defaults + [d for d in node.args.kw_defaults if d])
        else:
            stack.extend(ast.iter_child_nodes(node))
    return nodes


def _parse_prompt(prompt: str) -> ast.Module | None:
    """The prompt's syntax tree; a prompt ending inside the function to complete loses its last
    lines until it parses. None when dropping _PROMPT_LINES_DROPPED lines is not enough."""
    lines = prompt.splitlines(keepends=True)
    for keep in range(len(lines), max(len(lines) - _PROMPT_LINES_DROPPED, 0) - 1, -1):
        try:
            with warnings.catch_warnings():  # invalid escapes: the user's prompt is not ours to warn about
                warnings.simplefilter("ignore")
                return ast.parse("".join(lines[:keep]))
        except (SyntaxError, ValueError):  # ValueError: a NUL byte
            continue
    return None


def _checkers(trees: list[ast.Module]) -> set[str]:
    """Names of the functions and classes defined in `trees` (at any depth) whose body checks,
    directly or by calling another such name."""
    direct: dict[str, bool] = {}
    calls: dict[str, set[str]] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (*_FUNCTIONS, ast.ClassDef)):
                inner = list(ast.walk(node))
                direct[node.name] = direct.get(node.name, False) or any(_is_check(n) for n in inner)
                calls.setdefault(node.name, set()).update(c for c in map(_callee, inner) if c is not None)
    checking = {name for name, yes in direct.items() if yes}
    grew = True
    while grew:
        found = {name for name in calls if name not in checking and calls[name] & checking}
        checking |= found
        grew = bool(found)
    return checking


def _is_unittest_main(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "main"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "unittest")


def check_tests_can_fail(tests: str, prompt: str, entry_point: str | None, where: str) -> None:
    """Refuse (LetiError, one line) tests that cannot fail, by the rule in the module docstring.
    `tests` is known to compile."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = ast.parse(tests)
    wrong = "so every program would pass"
    example = f"assert {entry_point or 'f'}(...) == ..."
    if all(isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
           for s in tree.body):
        raise LetiError(f"{where}: field 'tests' holds only comments, docstrings or `pass`, {wrong}; "
                        f"write checks such as `{example}`")
    running = _running(tree.body)
    unittest_main = next((n for n in running if _is_unittest_main(n)), None)
    if unittest_main is not None and not any(
            k.arg == "exit" and isinstance(k.value, ast.Constant) and k.value.value is False
            for k in unittest_main.keywords):  # type: ignore[attr-defined]
        raise LetiError(f"{where}: field 'tests' calls unittest.main(), which always ends in SystemExit, and leti "
                        "counts an exit as a failure, so every program would fail; write "
                        "`assert unittest.main(exit=False).result.wasSuccessful()` instead")
    called = {c for c in map(_callee, running) if c is not None}
    checking = _checkers([tree])
    if any(_is_check(n) for n in running) or called & checking:
        return
    defined_in_tests = {n.name for n in ast.walk(tree) if isinstance(n, (*_FUNCTIONS, ast.ClassDef))}
    if called - defined_in_tests:  # perhaps a checker defined in the prompt
        prompt_tree = _parse_prompt(prompt)
        if prompt_tree is None or called & _checkers([tree, prompt_tree]):
            return
    if unittest_main is not None:
        raise LetiError(f"{where}: field 'tests' calls unittest.main(exit=False) without checking its result, {wrong}; "
                        "write `assert unittest.main(exit=False).result.wasSuccessful()`")
    uncalled = [s for s in tree.body if isinstance(s, (*_FUNCTIONS, ast.ClassDef)) and s.name in checking]
    check = next((s for s in uncalled if s.name == "check"), None)
    if check is not None:
        call = f"check({entry_point})" if entry_point else "check(<the function under test>)"
        raise LetiError(f"{where}: field 'tests' defines check() but never calls it, {wrong}; add a last line "
                        f"`{call}` (HumanEval's tests need it; leti adds nothing to the tests)")
    if uncalled:
        s = uncalled[0]
        if isinstance(s, ast.ClassDef):
            raise LetiError(f"{where}: field 'tests' defines class {s.name} but never runs its checks (no test runner "
                            f"collects it), {wrong}; for a unittest.TestCase add a last line "
                            "`assert unittest.main(exit=False).result.wasSuccessful()`")
        raise LetiError(f"{where}: field 'tests' defines {s.name}() but never calls it (the tests run as a plain script; "
                        f"no test runner collects them), {wrong}; add a last line `{s.name}()`")
    compare = next((s for s in tree.body if isinstance(s, ast.Expr) and isinstance(s.value, ast.Compare)), None)
    if compare is not None:
        text = (ast.get_source_segment(tests, compare) or "").replace("\n", " ")
        text = text if len(text) <= 60 else text[:57] + "..."
        raise LetiError(f"{where}: field 'tests' line {compare.lineno} `{text}` compares without assert, so its "
                        f"result is dropped and every program would pass; write `assert {text}`")
    raise LetiError(f"{where}: field 'tests' has no assert or raise that runs (at top level or in a function the "
                    f"tests call), {wrong}; write checks such as `{example}`")


def read_task_file(path: Path) -> list[Problem]:
    """Every problem in the file, in file order; the first bad line raises a LetiError."""
    problems: list[Problem] = []
    first_line: dict[str, int] = {}
    for where, lineno, obj in read_json_lines(path, what="task file", missing_hint="check the path in jsonl:PATH"):
        problem = parse_line(obj, where)
        if problem.id in first_line:
            raise LetiError(f"{where}: field 'id' {problem.id!r} repeats line {first_line[problem.id]}; ids must be unique")
        first_line[problem.id] = lineno
        check_tests_can_fail(problem.tests, problem.prompt, problem.entry_point, where)
        problems.append(problem)
    if not problems:
        raise LetiError(f"{path}: no problems in the file; write one JSON object per line (see leti.tasks.jsonl)")
    return problems


@register_task("jsonl")
class JsonlTask(Task):
    description = "your own problems from a JSONL file: --task jsonl:PATH (schema: python -m pydoc leti.tasks.jsonl)"
    source = "user-supplied JSONL file"
    license = "as stated by the file's author"
    citation = ""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()  # the shell leaves ~ alone after "jsonl:"
        self.name = f"jsonl:{path}"

    def load_problems(self) -> list[Problem]:
        return read_task_file(self.path)
