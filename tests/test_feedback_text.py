"""Feedback text on real failures (run through the sandbox), and the size/shape guarantees."""

from __future__ import annotations

import contextlib
import io
import re
import sys
import traceback

import pytest

from leti.execution import ExecutionConfig, Executor, Program, Status
from leti.execution.records import ExecutionResult, Frame
from leti.feedback.traceback_text import cut_middle, format_feedback


@pytest.fixture(scope="module")
def run():
    with Executor(ExecutionConfig(timeout_s=2.0, workers=2)) as ex:
        yield lambda program, tests="": ex.run([Program(program, tests)])[0]


def test_paper_style_keeps_only_program_frames_with_program_line_numbers(run):
    r = run("import json\n\ndef parse(s):\n    return json.loads(s)['k']\n", "assert parse('{}') == 1\n")
    assert format_feedback(r) == (
        "Traceback (most recent call last):\n"
        '  File "main.py", line 5, in <module>\n'
        "    assert parse('{}') == 1\n"
        '  File "main.py", line 4, in parse\n'
        "    return json.loads(s)['k']\n"
        "KeyError: 'k'")


def test_library_frames_are_dropped(run):
    r = run("import json\njson.loads('{')\n")
    text = format_feedback(r)
    assert 'File "main.py", line 2, in <module>' in text
    assert "json/decoder.py" not in text and "worker" not in text
    # named as the interpreter names it, with its module
    assert text.splitlines()[-1].startswith("json.decoder.JSONDecodeError: Expecting property name")


def test_tests_continue_the_program_line_numbers(run):
    r = run("def f(x):\n    return x", "assert f(1) == 1\nassert f(2) == 3\n")
    assert 'File "main.py", line 4, in <module>\n    assert f(2) == 3\nAssertionError' in format_feedback(r)


@pytest.mark.parametrize("source", ["def f(x):\n    return x +\n", "def f(x)\n    return x\n",
                                    "x = (1,\n", "if True:\nprint(1)\n"])
def test_syntax_error_is_rendered_as_cpython_does(run, source):
    r = run(source)
    assert r.status is Status.INVALID
    try:  # compiling (never running) the source here gives CPython's own rendering to compare with
        compile(source, "main.py", "exec")
    except SyntaxError as e:
        expected = "".join(traceback.format_exception_only(type(e), e)).rstrip("\n")
    assert format_feedback(r) == expected


@pytest.fixture(scope="module")
def run_rich():
    with Executor(ExecutionConfig(timeout_s=2.0, workers=1, feedback_style="rich")) as ex:
        yield lambda program, tests="": ex.run([Program(program, tests)])[0]


def test_rich_style_shows_assert_operands(run_rich):
    r = run_rich("def f(x):\n    return x + 1\n", "assert f(2) == 5\n")
    paper, rich = format_feedback(r, "paper"), format_feedback(r, "rich")
    assert paper.endswith("AssertionError")
    assert rich == paper + "\nassert 3 == 5"
    # the traceback reads as the program's own (the assert runs as two statements on its line)
    assert paper == 'Traceback (most recent call last):\n  File "main.py", line 3, in <module>\n    assert f(2) == 5\nAssertionError'
    inner = run_rich("def f(x):\n    return x + 1\n", "def check(c):\n    assert c(2) == 5, 'two'\ncheck(f)\n")
    assert format_feedback(inner, "rich").endswith("AssertionError: two\nassert 3 == 5")


def test_rich_style_without_compare_is_the_paper_text(run_rich):
    r = run_rich("def ok():\n    return False\n", "assert ok()\n")
    assert format_feedback(r, "rich") == format_feedback(r, "paper")


def test_rich_style_shows_the_values_compared_and_calls_nothing_again(run_rich):
    """The operands were evaluated again after the failure: `assert next(it) == 2` was shown as
    `assert 2 == 2`, and a counter as a count it never had when compared. They are now the
    values the assert compared, each operand evaluated once."""
    it = run_rich("it = iter([1, 2])\n", "assert next(it) == 2\n")
    assert format_feedback(it, "rich") == format_feedback(it, "paper") + "\nassert 1 == 2"
    src = "calls = []\ndef f():\n    calls.append(1)\n    print('call')\n    return len(calls)\nwant = 5\n"
    counter = run_rich(src, "assert f() == want\n")
    assert format_feedback(counter, "rich") == format_feedback(counter, "paper") + "\nassert 1 == 5"
    assert counter.stdout == "call\n"
    # an assert that passes inside an operand's __eq__ stores its own operands last: none shown
    eq = run_rich("class A:\n    def __eq__(self, other):\n        assert 1 == 1\n        return False\n", "assert A() == 2\n")
    assert format_feedback(eq, "rich") == format_feedback(eq, "paper")


def test_fixed_sentences(run):
    assert format_feedback(run("while True:\n    pass\n")) == "Timeout: the program did not finish within 2 seconds."
    assert format_feedback(run("import os\nos._exit(3)\n")) == "Exit: the program exited before the tests finished."
    assert format_feedback(run("import ctypes\nctypes.string_at(0)\n")) == "Crash: the program was killed by signal SIGSEGV."
    assert format_feedback(run("x = [0] * (10 ** 10)\n")).startswith("MemoryError: the program exceeded the memory limit")


def test_deep_recursion_is_collapsed_like_cpython(run):
    r = run("def f(n):\n    return f(n + 1)\n", "f(0)\n")
    text = format_feedback(r)
    assert text.count('File "main.py", line 2, in f') == 3
    assert "[Previous line repeated" in text and text.endswith("RecursionError: maximum recursion depth exceeded")


def test_huge_message_is_cut_in_the_middle_within_the_limit(run):
    r = run("raise ValueError('a' * 50000 + 'THE-END')\n")
    text = format_feedback(r, max_bytes=4096)
    assert len(text.encode()) <= 4096
    assert text.startswith("Traceback (most recent call last):\n  File \"main.py\", line 1, in <module>")
    assert "ValueError: aaa" in text and text.endswith("THE-END") and "bytes cut" in text


def test_passing_program_has_no_feedback(run):
    assert format_feedback(run("x = 1\n", "assert x == 1\n")) == ""


@pytest.mark.parametrize("limit", [256, 1000, 4096])
def test_cut_middle_respects_utf8_byte_limit(limit):
    text = "é" * 3000 + "END"
    out = cut_middle(text, limit)
    assert len(out.encode("utf-8")) <= limit and out.endswith("END")
    assert cut_middle("short", limit) == "short"


def test_formatting_is_pure_and_validates_style():
    r = ExecutionResult(id=1, status=Status.FAILED, exception_type="ZeroDivisionError",
                        message="division by zero", frames=(Frame(3, "<module>", "1 / 0"),))
    assert format_feedback(r) == format_feedback(r)
    assert format_feedback(r).endswith('line 3, in <module>\n    1 / 0\nZeroDivisionError: division by zero')
    with pytest.raises(ValueError, match="feedback style"):
        format_feedback(r, "fancy")


def _interpreter_lines(source: str) -> list[str]:
    """What CPython prints after the traceback frames for `source` (a trusted snippet run here):
    the exception line(s) and notes, without a SyntaxError's location block for "<string>"."""
    try:
        exec(compile(source, "main.py", "exec"), {"__name__": "__main__"})
    except BaseException as e:  # noqa: BLE001 - whatever the snippet raises is the expectation
        # The interpreter's own printer: before 3.12 the traceback module leaves out its "Did you
        # mean" suggestions. Its traceback's frames (indented) and header line are dropped.
        out = io.StringIO()
        with contextlib.redirect_stderr(out):
            sys.__excepthook__(type(e), e, e.__traceback__)
        text = out.getvalue().removeprefix("Traceback (most recent call last):\n")
    return [line for line in text.rstrip("\n").split("\n") if not line.startswith("  ")]


@pytest.mark.parametrize("source", [
    "xs = [1]\nprint(x)\n",  # NameError
    "assert 1 == 2\n",
    "1 / 0\n",
    "{}['k']\n",
    "raise ValueError('a: b\\nc')\n",
    "x = eval('{1: }')\n",  # the SyntaxError's own caret block is not part of the message
    "e = ValueError()\ne.add_note('hint: look here')\nraise e\n",
    "e = ValueError('bad: value')\ne.add_note('hint: look here')\ne.add_note('two\\nlines')\nraise e\n",
    # a class outside builtins and the program is printed with its module, a nested one by its
    # qualified name (the bare name stays exception_type, what failure counts group by)
    "import json\njson.loads('x')\n",
    "import re\nre.compile('(')\n",
    "class A:\n    class E(Exception):\n        pass\nraise A.E('hi')\n",
    "class E(Exception):\n    pass\nraise E('mine')\n",
])
def test_exception_line_and_notes_are_what_the_interpreter_prints(run, source):
    r = run(source)
    assert r.status is Status.FAILED
    lines = format_feedback(r).split("\n")
    last_frame = max(i for i, line in enumerate(lines) if line.startswith('  File "main.py"'))
    assert lines[last_frame + 2:] == _interpreter_lines(source)  # all that follows the last frame's line


def test_quoted_lines_follow_the_compilers_line_numbers(run):
    """\\f, \\x1c, \\u2028 ... are line breaks for str.splitlines but not for the compiler."""
    r = run("def f():\n    # note\x0c here\n    s = 'a\u2028b\x1cc'\n    return 1/0\n", "assert f() == 1\n")
    assert format_feedback(r).endswith('  File "main.py", line 4, in f\n    return 1/0\nZeroDivisionError: division by zero')
    r = run("x = 1\r\ny = 2\rz = 1/0\n")
    assert format_feedback(r).endswith('line 3, in <module>\n    z = 1/0\nZeroDivisionError: division by zero')


def test_source_with_a_null_byte_has_no_made_up_location(run):
    source = "def f():\n    return 1\x00\n"
    r = run(source)
    assert r.status is Status.INVALID and "line None" not in r.feedback
    with pytest.raises((SyntaxError, ValueError)) as info:  # CPython refuses it too: its wording is the expectation
        compile(source, "main.py", "exec")
    assert r.feedback == "".join(traceback.format_exception_only(info.type, info.value)).rstrip("\n")


def test_exception_type_names_stay_on_one_line(run):
    r = run("E = type('Fake\\n  File \"main.py\", line 1\\nOK', (Exception,), {})\nraise E('x')\n")
    assert r.status is Status.FAILED and "\n" not in r.exception_type
    lines = r.feedback.split("\n")
    assert lines[-1] == 'Fake\\n  File "main.py", line 1\\nOK: x' and len(lines) == 4


def test_unnameable_exception_type_is_still_a_failure(run):
    r = run("class M(type):\n    @property\n    def __name__(cls):\n        raise RuntimeError\n"
            "class E(Exception, metaclass=M):\n    pass\nraise E('boom')\n")
    assert r.status is Status.FAILED and not r.exited_early
    assert r.exception_type == "<unnamed exception>"
    assert r.feedback.endswith("\nE: boom")  # the interpreter prints the class's __qualname__
    # a class whose __qualname__ cannot be read either
    r = run("class M(type):\n    def __getattribute__(cls, name):\n"
            "        if name in ('__name__', '__qualname__'):\n            raise RuntimeError\n"
            "        return super().__getattribute__(name)\n"
            "class E(Exception, metaclass=M):\n    pass\nraise E('boom')\n")
    assert r.status is Status.FAILED and r.feedback.endswith("<unnamed exception>: boom")


def test_formatter_copes_with_missing_location_notes_and_surrogates():
    r = ExecutionResult(id=1, status=Status.INVALID, exception_type="SyntaxError",
                        message="source code string cannot contain null bytes")
    assert format_feedback(r) == "SyntaxError: source code string cannot contain null bytes"
    # a location without the line's text (the compiler's later passes leave it unset): no line, no caret
    r = ExecutionResult(id=1, status=Status.INVALID, exception_type="SyntaxError",
                        message="'return' outside function", error_lineno=2, error_offset=1)
    assert format_feedback(r) == '  File "main.py", line 2\nSyntaxError: \'return\' outside function'
    r = ExecutionResult(id=1, status=Status.FAILED, exception_type="ValueError", notes="hint: look here",
                        frames=(Frame(1, "<module>", "raise e"),))
    assert format_feedback(r).endswith("    raise e\nValueError\nhint: look here")
    r = ExecutionResult(id=1, status=Status.FAILED, exception_type="ValueError", message="\ud800" * 3000)
    text = format_feedback(r, max_bytes=1000)
    assert len(text.encode("utf-8")) <= 1000 and "\\ud800" in text


def test_a_one_second_limit_is_said_in_the_singular():
    with Executor(ExecutionConfig(timeout_s=1.0, workers=1)) as ex:
        r = ex.run([Program("while True:\n    pass\n", "")])[0]
    assert format_feedback(r) == "Timeout: the program did not finish within 1 second."


# --- the interpreter's own output as the expectation ------------------------------------------


def _interpreter_output(tmp_path, source: str) -> str:
    """What `python main.py` prints for `source` (a trusted snippet), with the file named as the
    feedback names it."""
    import subprocess
    import sys

    path = tmp_path / "main.py"
    path.write_text(source)
    err = subprocess.run([sys.executable, "main.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60).stderr
    return err.replace(f'File "{path}"', 'File "main.py"').rstrip("\n")


RECURSION = "def f(n):\n    return f(n - 1) if n else {end}\ndef g():\n    return 1 / 0\nf({depth})\n"


@pytest.mark.parametrize("end", ["g()", "1 / 0"])  # recursion followed by another frame, or ending the traceback
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 50])
def test_repeated_frames_are_collapsed_as_the_interpreter_collapses_them(run, tmp_path, end, depth):
    """CPython shows a frame repeated in a row 3 times, then "[Previous line repeated N more
    time(s)]" (singular for 1); the paper style is that traceback without the position carets."""
    source = RECURSION.format(end=end, depth=depth)
    expected = "\n".join(line for line in _interpreter_output(tmp_path, source).split("\n")
                         if line.strip(" ^~"))  # drop the ^^^/~~~ position lines
    assert format_feedback(run(source)) == expected


@pytest.mark.parametrize("source", [
    "  x = 1\n",  # unexpected indent: the offset points into the indentation, CPython draws no caret
    "    def f():\n        pass\n",
    "   \n  x = )\n",
    "def f():\n    x = 1\n  y = 2\n",
    "f(a for a in b, c)\n",
    "print 'hello'\n",
    "x = {'a': 1, 'b'}\n",
    "del f()\n",
    "a = 1 +* 2\n",
    "x = (\n  1 +\n)\n",
    "def f():\n\treturn 1 +\n",  # the interpreter strips a tab indentation too
    "if 1:\n \t x = 1 +* 2\n",
    # found after parsing (the symbol table): compile() gives no source text, the interpreter
    # reads the line from the file
    "x = 1\nreturn x\n",
    "def f(a, a):\n    pass\n",
    "def f():\n    nonlocal x\n",
])
def test_syntax_errors_read_as_the_interpreter_prints_them(run, tmp_path, source):
    r = run(source)
    assert r.status is Status.INVALID
    assert format_feedback(r) == _interpreter_output(tmp_path, source)


def test_sentences_name_the_limit_and_the_exit(run):
    r = run("x = [0] * (10 ** 10)\n")
    assert r.status is Status.MEMORY and r.memory_mb
    assert format_feedback(r) == f"MemoryError: the program exceeded the memory limit ({r.memory_mb} MiB)."
    # sys.exit with a message, and a SystemExit subclass named as the interpreter names it
    assert format_feedback(run("import sys\nsys.exit('bye')\n")) == (
        "Exit: the program exited before the tests finished (SystemExit: bye).")
    assert format_feedback(run("class A:\n    class Q(SystemExit):\n        pass\nraise A.Q('bye')\n")) == (
        "Exit: the program exited before the tests finished (A.Q: bye).")


def test_a_frame_without_source_text_gets_no_source_line():
    """As in CPython's traceback when a line cannot be read: the File line only, no blank line."""
    r = ExecutionResult(id=1, status=Status.FAILED, exception_type="ZeroDivisionError", message="division by zero",
                        frames=(Frame(5, "<module>", "f()"), Frame(2, "f", "")))
    assert format_feedback(r) == ('Traceback (most recent call last):\n  File "main.py", line 5, in <module>\n'
                                  '    f()\n  File "main.py", line 2, in f\nZeroDivisionError: division by zero')


# --- cut_middle: exact guarantees -------------------------------------------------------------

_MARKER = re.compile(r"\n\.\.\. \[(\d+) bytes cut\] \.\.\.\n")


def test_cut_middle_keeps_text_of_exactly_the_limit():
    assert cut_middle("a" * 300, 300) == "a" * 300
    assert cut_middle("é" * 150, 300) == "é" * 150  # 300 bytes
    assert cut_middle("a" * 301, 300) != "a" * 301


@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])
def test_cut_middle_limit_and_cut_count_hold_at_every_size(char):
    """The result never exceeds the limit, including where the count in the marker gains a digit,
    and the count it states is exactly the bytes removed; more of the end is kept than of the start."""
    for limit in (64, 100, 101, 256, 1000):
        for n in [*range(limit - 4, limit + 40), *range(995, 1010), *range(9995, 10010)]:
            text = "<" + char * n + ">"
            data = text.encode()
            out = cut_middle(text, limit)
            assert len(out.encode()) <= limit, (limit, n)
            if len(data) <= limit:
                assert out == text
                continue
            head, cut, tail = _MARKER.split(out)
            assert len(head.encode()) + int(cut) + len(tail.encode()) == len(data), (limit, n)
            assert text.startswith(head) and text.endswith(tail) and tail.endswith(">")
            assert len(tail.encode()) > len(head.encode()), (limit, n)


@pytest.mark.parametrize("completion", [
    "def f():\n    return " + "-" * 3000 + "1\n",  # RecursionError in ast.parse (3.11, 3.12)
    "def f():\n    return " + "-" * 100000 + "1\n",  # MemoryError from the parser's stack
])
def test_postprocess_hints_survive_a_completion_nested_too_deeply_to_parse(completion):
    """Model output is hostile input: a completion the parser cannot hold (valid Python nested
    thousands deep) raised RecursionError / MemoryError out of the hint rules and stopped the
    run's training-text stage. It is judged as an unparsable one is, line by line."""
    import ast

    from leti.feedback.training_text import feedback_text

    try:
        ast.parse(completion)
    except (RecursionError, MemoryError):
        pass
    else:  # 3.10 and 3.13 parse 3000 deep
        pytest.skip("this Python parses it")
    result = ExecutionResult(id=1, status=Status.FAILED, feedback="AssertionError", exception_type="AssertionError")
    assert feedback_text(completion, result, hints=True).startswith("AssertionError")
