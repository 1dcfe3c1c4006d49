"""Whether a task's tests can fail at all: the syntax-only rule `jsonl:` task files are held to
(the rule and what it accepts and refuses: leti.tasks.jsonl's docstring, "Tests that cannot
fail"). Hand-written: no library decides this; a test file that checks nothing would make every
program pass, and `leti tasks validate` cannot see it (the reference passes too)."""

from __future__ import annotations

import ast
import builtins
import warnings

from leti.errors import LetiError

# Calls that check by name: assert* (assertEqual, assert_allclose), self.fail / pytest.fail,
# pytest.raises, and exits (leti counts a SystemExit or os._exit as a failure).
_CHECK_CALLS = frozenset({"fail", "raises", "exit", "_exit", "quit", "abort"})
_PROMPT_LINES_DROPPED = 20  # at most, to find a prompt prefix that parses
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_BUILTINS = frozenset(dir(builtins))


def _callee(node: ast.AST) -> str | None:
    """The name a call calls: f(...) -> f, a.b.f(...) -> f; None for other calls and non-calls."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _root(node: ast.AST) -> str | None:
    """The name a callee starts from: f -> f, random.seed -> random, obj.f()[0].g -> obj; None
    when it starts from something else (a lambda, a literal)."""
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _imported(trees: list[ast.Module]) -> set[str]:
    """Names that import statements bind in `trees` (import random, import numpy as np, from x import y)."""
    return {(a.asname or a.name).split(".")[0] for tree in trees for n in ast.walk(tree)
            if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}


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
        except (RecursionError, MemoryError):  # nested too deeply for Python's parser: no tree
            return None
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


def _main_guard(node: ast.stmt) -> bool:
    """`if __name__ == "__main__":` (without else): always true where the tests run."""
    test = node.test if isinstance(node, ast.If) and not node.orelse else None
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq) and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def _unconditional_exit(tree: ast.Module) -> ast.stmt | None:
    """The first statement that always ends the program with an exit: a top-level (or main-guarded)
    `exit(...)`, `quit(...)`, `sys.exit(...)`, `os._exit(...)` or `raise SystemExit`. Exits inside
    an if, try, loop, with or function are left alone: `if not ok: sys.exit(1)` is a check."""
    # sys and os may come from the prompt's imports: the tests run after it
    modules = {"sys": "sys", "os": "os"}
    modules.update({a.asname or a.name: a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names})
    bound = {n.name for n in ast.walk(tree) if isinstance(n, (*_FUNCTIONS, ast.ClassDef))}
    bound |= {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    statements = [s for top in tree.body for s in (top.body if _main_guard(top) else [top])]
    for s in statements:
        if isinstance(s, ast.Raise) and s.exc is not None:
            exc = s.exc.func if isinstance(s.exc, ast.Call) else s.exc
            if isinstance(exc, ast.Name) and exc.id == "SystemExit" and "SystemExit" not in bound:
                return s
        call = s.value if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) else None
        if call is None:
            continue
        func = call.func
        if isinstance(func, ast.Name) and func.id in ("exit", "quit", "_exit") and func.id not in bound:
            return s  # the builtins, or `from sys import exit` / `from os import _exit`
        if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and (modules.get(func.value.id), func.attr) in (("sys", "exit"), ("os", "_exit"))):
            return s
    return None


def tests_too_deep(where: str) -> LetiError:
    """The refusal of tests that Python's parser cannot read: RecursionError or MemoryError on
    thousands of nested operators (`-` * 3000 + `1`)."""
    return LetiError(f"{where}: field 'tests' is nested too deeply for Python to compile, so every program would "
                     "fail; nest it less deeply")


def check_tests_can_fail(tests: str, prompt: str, entry_point: str | None, where: str) -> None:
    """Refuse (LetiError, one line) tests that cannot fail, by the rule in the module docstring.
    `tests` is known to compile."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tree = ast.parse(tests)
        except (RecursionError, MemoryError):  # ast.parse and compile() give up at different depths
            raise tests_too_deep(where) from None
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
    ends = _unconditional_exit(tree)
    if ends is not None:  # a passing program's run ends in SystemExit too, even sys.exit(0)
        text = (ast.get_source_segment(tests, ends) or "").replace("\n", " ")
        text = text if len(text) <= 60 else text[:57] + "..."
        raise LetiError(f"{where}: field 'tests' line {ends.lineno} `{text}` always ends the program with an exit, "
                        "and leti counts an exit as a failure (even exit code 0), so every program would fail; "
                        "drop it: a program passes when it runs to the end (write `assert cond` instead of "
                        "`sys.exit(0 if cond else 1)`)")
    called = {c for c in map(_callee, running) if c is not None}
    checking = _checkers([tree])
    if any(_is_check(n) for n in running) or called & checking:
        return
    prompt_tree = _parse_prompt(prompt)  # read once: its checkers and its imports count below
    defined_in_tests = {n.name for n in ast.walk(tree) if isinstance(n, (*_FUNCTIONS, ast.ClassDef))}
    if called - defined_in_tests:  # perhaps a checker defined in the prompt
        if prompt_tree is None or called & _checkers([tree, prompt_tree]):
            return
    if unittest_main is not None:
        raise LetiError(f"{where}: field 'tests' calls unittest.main(exit=False) without checking its result, {wrong}; "
                        "write `assert unittest.main(exit=False).result.wasSuccessful()`")
    compare = next((s for s in tree.body if isinstance(s, ast.Expr) and isinstance(s.value, ast.Compare)), None)
    if compare is not None:
        text = (ast.get_source_segment(tests, compare) or "").replace("\n", " ")
        text = text if len(text) <= 60 else text[:57] + "..."
        raise LetiError(f"{where}: field 'tests' line {compare.lineno} `{text}` compares without assert, so its "
                        f"result is dropped and every program would pass; write `assert {text}`")
    # Any other call can raise, and a raise fails the program: a smoke test (`add(1, 2)`, a loop
    # calling each test_* function) can fail. Calls of builtins (print, list, range) and of
    # imported modules (random.seed(0), doctest.testmod() whose result goes unchecked here) do
    # not count: they run whatever the program does, and a forgotten check(add) hid behind them.
    library = _BUILTINS | _imported([tree] if prompt_tree is None else [tree, prompt_tree])
    if any(isinstance(n, ast.Call) and _root(n.func) not in library for n in running):
        return
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
    raise LetiError(f"{where}: field 'tests' has no assert or raise that runs (at top level or in a function the "
                    f"tests call), {wrong}; write checks such as `{example}`")
