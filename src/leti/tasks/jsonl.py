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

The program run is prompt + completion + tests, so the prompt is Python: write instructions in
prose as a `#` comment or in a docstring. A prompt with a line no completion can make valid
(plain English on its first line, with or without its newline) is warned about when the file is
read.

Tests that cannot fail are refused when the file is read (they would make every program pass,
and `leti tasks validate` cannot see it: the reference passes too). The tests are run as a plain
script after prompt + completion; nothing is added to them (unlike HumanEval, leti appends no
`check(entry_point)` call) and no test runner collects them. The rule, on the code's syntax only:
the code that runs when the tests run (their top level, class bodies included, not the bodies
of functions) must contain a *check*, call a function whose body checks, or call anything but
a builtin or an imported module's function (a call can raise, and a raise fails the program:
`add(1, 2)` is a smoke test; `print(...)`, `list(...)` or `random.seed(0)` alone are not). A check is an `assert` or `raise` statement, or a
call of `assert*` (assertEqual, numpy's assert_allclose...), `fail`, `raises`, `exit`, `_exit`,
`quit` or `abort` (leti counts any exit as a failure). So these are accepted:

    assert add(1, 2) == 3                          plain asserts, in loops or ifs too
    if add(1, 2) != 3: raise ValueError("add")     a raise
    def check(f): assert f(1, 2) == 3              a checker defined in the tests
    check(add)                                     ... or in the prompt, and called here
    add(1, 2)                                      a smoke test: passes unless add raises
    assert unittest.main(exit=False).result.wasSuccessful()     unittest test cases

and tests that can fail in none of these ways are refused, each with its fix: comments, docstrings or
`pass` only; `add(1, 2) == 3` (a comparison without assert); a `check` (or pytest-style
`test_*`) function that is never called; `unittest.main(exit=False)` or `doctest.testmod()`
whose result is not checked (write `assert doctest.testmod().failed == 0`). `unittest.main()`
is refused wherever it is: it always ends in SystemExit, so every program would *fail*; so is an
exit that always runs (`sys.exit(0 if ok else 1)`, `exit(0)`, `os._exit(0)` or `raise SystemExit`
at the tests' top level or under `if __name__ == "__main__":`): a program passes when it runs
to the end, and an exit inside an `if` (`if not ok: sys.exit(1)`) is a check. An
explicit `assert` is taken at its word: `assert True` passes the rule. This check comes after
the others (a line's schema, unique ids). Where the prompt does not parse (it usually ends
inside the function to complete), its last lines are dropped until it does; if 20 lines are
not enough, calls the rule cannot resolve are given the benefit of the doubt.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from leti.errors import LetiError, plural
from leti.jsonl import lone_surrogate, lone_surrogate_error, read_json_lines
from leti.tasks.base import Problem, Task, absolute_path
from leti.tasks.registry import register_task
from leti.tasks.tests_can_fail import check_tests_can_fail, tests_too_deep

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
    # prompt + completion + tests is one Python program (reference: the sft texts' and `leti tasks
    # validate`'s), and Python source cannot hold a NUL: every sample would fail to compile and be
    # trained on as a SyntaxError
    nul = next((name for name in ("prompt", "tests", "reference") if "\0" in (obj.get(name) or "")), None)
    if nul is not None:
        line = obj[nul][: obj[nul].index("\0")].count("\n") + 1
        raise LetiError(f"{where}: field {nul!r} holds a NUL character (\\u0000) on its line {line}, which Python "
                        "source cannot contain; remove it")
    try:
        compile(obj["tests"], "tests", "exec")
        tree = ast.parse(obj["tests"])
    except SyntaxError as e:  # else every program of this problem fails, and trains as a failure
        at = f"line {e.lineno}: " if e.lineno is not None else ""
        raise LetiError(f"{where}: field 'tests' is not valid Python ({at}{e.msg}); fix the tests") from None
    except (RecursionError, MemoryError):  # thousands of nested operators: Python's parser gives up
        raise tests_too_deep(where) from None
    # legal in the tests alone, but they run after prompt + completion, where Python refuses it:
    # every program, the reference's too, would be a SyntaxError trained on as a failure
    future = next((node.lineno for node in tree.body
                   if isinstance(node, ast.ImportFrom) and node.module == "__future__"), None)
    if future is not None:
        raise LetiError(f"{where}: field 'tests' has a 'from __future__' import (its line {future}), which Python allows "
                        "only at the start of a program, and the tests run after the prompt and the program; move it "
                        "to the start of the prompt")
    stop = obj.get("stop")
    if stop is not None and not all(isinstance(s, str) and s for s in stop):
        raise LetiError(f"{where}: field 'stop' must be a list of non-empty strings, got {json.dumps(stop)[:60]}")
    if isinstance(obj.get("meta"), dict) and "stop" in obj["meta"]:
        # meta["stop"] is where a problem's stop sequences live once parsed: one given there
        # would bypass the check above (a string would stop at each of its characters).
        raise LetiError(f"{where}: 'stop' inside 'meta' is reserved; give stop sequences as the top-level field 'stop'")
    split = obj.get("split", "test")
    if not split.strip():
        raise LetiError(f"{where}: field 'split' is {'blank' if split else 'empty'}; leave it out for the default 'test'")
    if split != split.strip():  # `--split train` (or a run's train_split) would not select "train "
        raise LetiError(f"{where}: field 'split' {split!r} has whitespace around it, which a split name cannot "
                        f"have; write {json.dumps(split.strip())}")
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


# What a model may write after a prompt: a body, a statement, the end of a docstring, the end of
# an expression (after a backslash). A prompt that compiles with none of them, its error on a line
# the prompt completed, is not Python there whatever the model writes.
_CONTINUATIONS = ("    pass\n", "pass\n", '    """\n    pass\n', "    '''\n    pass\n", '"""\n', "'''\n", "0\n")
# errors reported at a bracket or string the prompt opened, which the model may close
_OPEN = ("never closed", "unterminated", "EOF", "forgot a comma")
# On the prompt's last line, when it has no newline, the model writes on where the line stops: an
# error there counts only when it lies before the line's last token (which the model may extend:
# `ret` -> `return`, `=` -> `==`) and is one of these. Python reports "invalid syntax" (and an
# unexpected indent) at the last token its parser read, so a parser that stopped before the last
# token failed whatever follows; the tokenizer's own errors are about the characters where they
# point. Other messages come from a second pass that may have read on into the continuation
# (`def f(a) -> List[In` + "    pass" says "expected ':'" after `List`), and are not counted.
_PREFIX_ERRORS = ("invalid syntax", "unexpected indent", "unexpected unindent")
_TOKENIZER_ERRORS = ("invalid character", "invalid non-printable character", "unmatched '", "closing parenthesis")


def _last_token_start(line: str) -> int:
    """Where the last token of `line` (a prompt's last line, without its newline) may begin: after
    its last space, tab or form feed, or after the last bracket, comma or semicolon of the word
    that follows them when the word holds no quote, `#` or backslash (no character after those
    extends a token); 0 for a blank line, which the model may still end with a newline."""
    if not line.strip(" \t\f"):
        return 0
    start = re.search(r"[^ \t\f]*$", line).start()  # type: ignore[union-attr]
    word = line[start:]
    if not any(c in word for c in "'\"#\\"):
        start += max((i + 1 for i, c in enumerate(word) if c in "()[]{},;"), default=0)
    return start


def prompt_syntax_error(prompt: str) -> tuple[int, str] | None:
    """(line, message) of a syntax error that no continuation can fix: on one of the prompt's
    complete lines, or on its partial last line before that line's last token; None when the
    prompt can begin a valid program (or it cannot tell)."""
    text = prompt.replace("\r\n", "\n").replace("\r", "\n")
    complete = text.count("\n")
    last_token = _last_token_start(text[text.rfind("\n") + 1:])
    found = on_last_line = None
    for continuation in _CONTINUATIONS:
        try:
            with warnings.catch_warnings():  # invalid escapes: not ours to warn about
                warnings.simplefilter("ignore")
                compile(prompt + continuation, "prompt", "exec", dont_inherit=True)
            return None
        except SyntaxError as e:
            msg = e.msg or ""
            if (found is None and e.lineno is not None and e.lineno <= complete
                    and not any(s in msg for s in _OPEN)):
                found = (e.lineno, msg)
            elif (on_last_line is None and e.lineno == complete + 1 and e.offset is not None
                  and 0 <= e.offset - 1 < last_token and (msg in _PREFIX_ERRORS or msg.startswith(_TOKENIZER_ERRORS))):
                on_last_line = (e.lineno, msg)
        except ValueError:  # a NUL byte: refused by parse_line
            return None
        except (RecursionError, MemoryError):  # nested too deeply for this Python's parser: cannot tell
            return None
    return found or on_last_line


def read_task_file(path: Path) -> list[Problem]:
    """Every problem in the file, in file order; the first bad line raises a LetiError."""
    problems: list[Problem] = []
    first_line: dict[str, int] = {}
    not_python: list[tuple[str, str, int, str]] = []  # where, id, line, message
    for where, lineno, obj in read_json_lines(path, what="task file", missing_hint="check the path in jsonl:PATH"):
        problem = parse_line(obj, where)
        if problem.id in first_line:
            raise LetiError(f"{where}: field 'id' {problem.id!r} repeats line {first_line[problem.id]}; ids must be unique")
        first_line[problem.id] = lineno
        check_tests_can_fail(problem.tests, problem.prompt, problem.entry_point, where)
        error = prompt_syntax_error(problem.prompt)
        if error is not None:
            not_python.append((where, problem.id, *error))
        problems.append(problem)
    if not problems:
        raise LetiError(f"{path}: no problems in the file; write one JSON object per line (see leti.tasks.jsonl)")
    if not_python:  # a warning, not a refusal: the test above is a heuristic
        where, pid, line, msg = not_python[0]
        more = f" ({plural(len(not_python) - 1, 'more problem')} in the file like it)" if len(not_python) > 1 else ""
        print(f"leti: warning: {where}: problem {pid!r}: field 'prompt' is not Python on its line {line} ({msg}), "
              "and a program is prompt + completion + tests, so every sample of it would fail with that "
              f"SyntaxError; write prose as a # comment or in a docstring{more}", file=sys.stderr)
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

    @classmethod
    def absolute_argument(cls, arg: str) -> str:
        return absolute_path(arg)

    def load_problems(self) -> list[Problem]:
        return read_task_file(self.path)
