"""The interpreter's "Did you mean" suggestion for a NameError or AttributeError reaches the
feedback, as `python main.py` prints it. Before 3.13 the interpreter prints it with its C printer,
which the worker asks: traceback.TracebackException adds none before 3.12, and in 3.12 its own,
which differ (the cases under test_the_printers_suggestion_not_traceback_modules). Programs run through the real
executor; the expected text is what CPython itself prints for the same file."""

from __future__ import annotations

import pytest
from test_feedback_chain import cpython  # `python main.py`'s stderr, trimmed as leti trims

from leti.execution import ExecutionConfig, Executor, Program, Status


@pytest.fixture(scope="module")
def run():
    with Executor(ExecutionConfig(timeout_s=1.0, workers=4)) as ex:
        yield lambda *sources: ex.run([Program(s) for s in sources])


LOCAL = '''def count_vowels(s):
    counter = 0
    for ch in s:
        counter += ch in "aeiou"
    return countr
assert count_vowels("leti") == 2
'''
GLOBAL = '''length = 3
def area(width):
    return lenght * width
print(area(2))
'''
BUILTIN = "print(lenn([1, 2]))\n"
MODULE = "import math\nprint(math.sqr(16))\n"
INSTANCE = '''class Point:
    def __init__(self, x):
        self.x_coord = x
p = Point(1)
print(p.x_cord)
'''
NONE_CLOSE = "def f():\n    return zzqqxx\nf()\n"
# No suggestion on 3.11 for subclasses (the printer checks the exact type) nor for unbound locals.
UNBOUND = "def f():\n    lenghtt = 1\n    print(lenght)\n    lenght = 2\nf()\n"
SUBCLASS = 'import math\nclass E(AttributeError):\n    pass\nraise E("gone", name="sqr", obj=math)\n'
# A NameError raised while another was handled: the earlier one carries its own suggestion.
CHAINED = '''total = 0
try:
    totl += 1
except NameError:
    raise ValueError("bad")
'''


def test_name_and_attribute_errors_end_with_the_interpreters_suggestion(run, tmp_path):
    sources = (LOCAL, GLOBAL, BUILTIN, MODULE, INSTANCE, NONE_CLOSE, UNBOUND, SUBCLASS, CHAINED)
    results = run(*sources)
    last = [r.feedback.rsplit("\n", 1)[-1] for r in results]
    assert last[:6] == [
        "NameError: name 'countr' is not defined. Did you mean: 'counter'?",
        "NameError: name 'lenght' is not defined. Did you mean: 'length'?",
        "NameError: name 'lenn' is not defined. Did you mean: 'len'?",
        "AttributeError: module 'math' has no attribute 'sqr'. Did you mean: 'sqrt'?",
        "AttributeError: 'Point' object has no attribute 'x_cord'. Did you mean: 'x_coord'?",
        "NameError: name 'zzqqxx' is not defined"]
    assert results[3].message == "module 'math' has no attribute 'sqr'. Did you mean: 'sqrt'?"
    assert results[8].chain[0].message == "name 'totl' is not defined. Did you mean: 'total'?"
    for source, result in zip(sources, results, strict=True):
        assert result.status is Status.FAILED
        assert result.feedback == cpython(source, tmp_path)


# Objects whose dir() fails (the printer then suggests nothing), and programs that replaced what
# printing uses before failing: the suggestion still comes, the program's stderr stays its own.
DIR_RAISES = '''class H:
    value = 1
    def __dir__(self):
        raise RuntimeError("no dir")
H().valu
'''
DIR_EXITS = '''class H:
    value = 1
    def __dir__(self):
        raise SystemExit(3)
H().valu
'''
GETATTR_RAISES = '''class G:
    value = 1
    def __getattr__(self, name):
        raise AttributeError(name)
G().valu
'''
REPLACED = '''import io, math, sys
class Loud:
    def write(self, text):
        raise RuntimeError("no writing")
    def flush(self):
        raise RuntimeError("no flushing")
sys.stderr = Loud()
sys.__excepthook__ = sys.excepthook = None
sys.tracebacklimit = 5
io.StringIO = None
class Module(type(sys)):
    def __setattr__(self, name, value):
        raise RuntimeError("no setting")
sys.__class__ = Module
math.sqr(2)
'''
DIR_LOOPS = '''class H:
    value = 1
    def __dir__(self):
        while True:
            pass
H().valu
'''


def test_hostile_programs_get_a_correct_line_and_leave_the_pool_healthy(run, tmp_path):
    raises, exits, getattr_, replaced, loops, after = run(
        DIR_RAISES, DIR_EXITS, GETATTR_RAISES, REPLACED, DIR_LOOPS, "print(sorted(dir())[-1])")
    for source, result in ((DIR_RAISES, raises), (DIR_EXITS, exits), (GETATTR_RAISES, getattr_)):
        assert result.status is Status.FAILED and result.exception_type == "AttributeError"
        assert result.feedback == cpython(source, tmp_path)
    assert raises.message == exits.message == "'H' object has no attribute 'valu'"
    # the interpreter gives the AttributeError that __getattr__ raised the name and object it looked up
    assert getattr_.message == "valu. Did you mean: 'value'?"
    assert replaced.status is Status.FAILED and replaced.exception_type == "AttributeError"
    assert replaced.message == "module 'math' has no attribute 'sqr'. Did you mean: 'sqrt'?"
    assert replaced.stderr == ""
    # dir() that never returns: 3.11's `python main.py` hangs printing it, as does 3.12's.
    assert loops.status is Status.TIMEOUT
    assert after.status is Status.PASSED and after.stdout == "__spec__\n"


# 3.12's TracebackException suggested nothing for names of 1-2 characters, ended "Did you forget to
# import 'math'" without its "?", and suggested for subclasses, unlike 3.12's own printer.
SHORT = "xs = [1, 2]\nprint(x)\n"
SHORT_ATTRIBUTE = "class O:\n    ab = 1\nprint(O().a)\n"
FORGOT_IMPORT = "print(math.sqrt(4))\n"
BOTH_HINTS = "maths = 1\nprint(math.pi)\n"
NAME_SUBCLASS = "class E(NameError):\n    pass\nsqrtt = 1\nraise E('gone', name='sqrt')\n"


@pytest.mark.parametrize("source", [SHORT, SHORT_ATTRIBUTE, FORGOT_IMPORT, BOTH_HINTS, NAME_SUBCLASS],
                         ids=["short", "short-attribute", "forgot-import", "both-hints", "name-subclass"])
def test_the_printers_suggestion_not_traceback_modules(run, tmp_path, source):
    [result] = run(source)
    assert result.status is Status.FAILED
    assert result.feedback == cpython(source, tmp_path)
