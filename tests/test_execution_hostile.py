"""Hostile programs: each must cost only its own result, and leave nothing behind on the host."""

from __future__ import annotations

import ast
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from hostile import CANARY, run_within

from leti.execution import ExecutionConfig, Executor, Program, SandboxUnavailable, Status


@pytest.fixture(scope="module")
def ex():
    # The host's own HF_TOKEN (if any) comes back afterwards.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_TOKEN", "hf_secret_canary_value")
        with Executor(ExecutionConfig(timeout_s=2.0, workers=2)) as executor:
            yield executor


def run_then_canary(ex: Executor, source: str, tests: str = "") -> tuple:
    """Run a hostile program, then check that programs after it still pass on every worker."""
    result = ex.run([Program(source, tests, id="hostile")])[0]
    after = ex.run([CANARY] * 4)
    assert all(r.status is Status.PASSED for r in after), [r.feedback for r in after]
    return result


def host_processes_with(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]


def test_passing_and_failing_programs(ex):
    ok, bad = ex.run([CANARY, Program("def f(x):\n    return x\n", "assert f(21) == 42\n")])
    assert ok.passed and ok.status is Status.PASSED and ok.feedback == ""
    assert bad.status is Status.FAILED and bad.exception_type == "AssertionError"


@pytest.mark.parametrize("exit_code", [
    "import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "exit()\n", "raise SystemExit\n",
])
def test_exiting_early_is_never_a_pass(ex, exit_code):
    r = run_then_canary(ex, "def f():\n    return 1\n", exit_code + "assert f() == 2\n")
    assert r.status is Status.FAILED and r.exited_early
    assert "exited before the tests finished" in r.feedback


def test_infinite_loop_ignoring_signals_is_killed(ex):
    src = "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n"
    r = run_then_canary(ex, src)
    assert r.status is Status.TIMEOUT and 2.0 <= r.duration_s < 4.0
    assert r.feedback == "Timeout: the program did not finish within 2 seconds."


def test_double_fork_setsid_escape_does_not_survive(ex):
    marker = f"{uuid.uuid4().int % 10**6}.25"
    src = ("import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
           f"        os.execvp('sleep', ['sleep', '{marker}'])\n    os._exit(0)\n")
    r = run_then_canary(ex, src)
    assert r.status is Status.PASSED
    assert host_processes_with(f"sleep {marker}") == []


def test_fork_loop_is_bounded(ex):
    r = run_then_canary(ex, "import os\nwhile True:\n    os.fork()\n")
    assert r.status in (Status.FAILED, Status.TIMEOUT)
    if r.status is Status.FAILED:
        assert r.exception_type == "BlockingIOError"


def test_killing_parent_group_and_everyone_costs_only_itself(ex):
    for src in ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
                "import os, signal\nos.killpg(os.getpgid(0), signal.SIGKILL)\n",
                "import os, signal\nos.kill(-1, signal.SIGKILL)\n"):
        r = run_then_canary(ex, src)
        assert r.status in (Status.PASSED, Status.CRASHED, Status.FAILED)  # whatever it did, only it paid
        if r.status is Status.CRASHED:
            assert r.feedback.startswith("Crash: the program"), r.feedback


def test_stdout_flood_is_capped(ex):
    r = run_then_canary(ex, "import sys\nfor _ in range(2000):\n    sys.stdout.write('x' * 100000)\n")
    assert r.status is Status.PASSED
    assert r.stdout_truncated and len(r.stdout) == ex.config.max_output_bytes


def test_stdin_is_closed(ex):
    r = run_then_canary(ex, "x = input()\n")
    assert r.status is Status.FAILED and r.exception_type == "EOFError"


def test_deep_c_recursion_segfault_is_a_crash(ex, tmp_path):
    # A 1 MiB stack (checked when the main thread's stack grows) makes the overflow quick.
    src = ("import resource, sys\nresource.setrlimit(resource.RLIMIT_STACK, (1 << 20, 1 << 20))\n"
           "sys.setrecursionlimit(10**8)\nl = []\nfor _ in range(10**5):\n    l = [l]\nrepr(l)\n")
    r = run_then_canary(ex, src)
    # What the running interpreter does with it, outside leti: 3.10, 3.11 and 3.13 overflow the
    # C stack (SIGSEGV); 3.12 counts C recursion against a limit of its own and raises
    # RecursionError "... while getting the repr of an object", which leti then reports as is.
    (tmp_path / "main.py").write_text(src)
    ref = subprocess.run([sys.executable, "main.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    if ref.returncode > 0:
        last = ref.stderr.strip().splitlines()[-1]
        assert last.startswith("RecursionError: maximum recursion depth exceeded"), ref.stderr[-300:]
        assert r.status is Status.FAILED and r.exception_type == "RecursionError", (r.status, r.feedback[-300:])
        assert r.feedback.endswith(last), (r.feedback[-300:], last)
        return
    assert ref.returncode == -11, (ref.returncode, ref.stderr[-300:])
    assert r.status is Status.CRASHED and r.signal == 11
    assert r.feedback == "Crash: the program was killed by signal SIGSEGV."


def test_allocating_6gb_hits_the_memory_limit(ex):
    r = run_then_canary(ex, "x = bytearray(6 * 1024 ** 3)\n")
    assert r.status is Status.MEMORY
    assert "memory limit" in r.feedback


def test_threads_work_under_the_limits(ex):
    src = ("import threading\nout = []\n"
           "ts = [threading.Thread(target=lambda i=i: out.append(sum(range(i * 1000)))) for i in range(16)]\n"
           "[t.start() for t in ts]\n[t.join() for t in ts]\nassert len(out) == 16\n")
    assert run_then_canary(ex, src).status is Status.PASSED
    pytest.importorskip("numpy")
    src = ("import os\nos.environ['OPENBLAS_NUM_THREADS'] = '4'\nimport numpy as np\n"
           "a = np.ones((400, 400))\nassert (a @ a)[0, 0] == 400\n")
    assert run_then_canary(ex, src).status is Status.PASSED


def test_environment_is_scrubbed(ex):
    r = run_then_canary(ex, "import os\nprint(sorted(os.environ.items()))\n")
    assert r.status is Status.PASSED
    assert "hf_secret_canary_value" not in r.stdout and "HF_TOKEN" not in r.stdout


def test_home_and_working_directory_are_invisible_and_system_is_read_only(ex, tmp_path):
    if ex.mode != "bwrap":
        pytest.skip("needs the bubblewrap sandbox")
    probe = tmp_path / "secret.txt"
    probe.write_text("x")
    cwd_file = Path.cwd() / "pyproject.toml"
    host_probe = Path(f"/tmp/leti-host-probe-{uuid.uuid4().hex}")  # the sandbox's /tmp is its own
    src = (f"import os\nassert not os.path.exists({str(probe)!r})\n"
           f"assert not os.path.exists({str(cwd_file)!r})\n"
           f"assert not os.path.exists({str(Path.home() / '.bashrc')!r}) or {str(Path.home())!r} == '/tmp'\n"
           "try:\n    open('/usr/leti-probe', 'w')\nexcept OSError:\n    pass\nelse:\n    raise RuntimeError('wrote into /usr')\n"
           f"open({str(host_probe)!r}, 'w').write('x')\nopen('scratch.txt', 'w').write('x')\n")
    r = run_then_canary(ex, src)
    assert r.status is Status.PASSED, r.feedback
    assert not host_probe.exists()
    assert not Path("/usr/leti-probe").exists()


def test_no_network_not_even_host_loopback(ex):
    if ex.mode != "bwrap":
        pytest.skip("needs the bubblewrap sandbox")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(5)
    port = server.getsockname()[1]
    accepted = []
    t = threading.Thread(target=lambda: _accept(server, accepted), daemon=True)
    t.start()
    r = run_then_canary(ex, f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n")
    server.close()
    assert r.status is Status.FAILED and r.exception_type in ("ConnectionRefusedError", "OSError", "TimeoutError")
    assert accepted == []


def _accept(server, accepted):
    try:
        accepted.append(server.accept())
    except OSError:
        pass


def test_no_program_sees_files_of_an_earlier_one():
    write = Program("import os\nopen('f.txt', 'w').write('1')\nopen('/tmp/left.txt', 'w').write('1')\n"
                    "os.mkdir('d')\nos.chmod('.', 0o500)\nprint(os.listdir('.'))\n")
    look = Program("import os\nprint(os.listdir('.'), os.path.exists('/tmp/left.txt'))\nopen('g', 'w')\n")
    with Executor(ExecutionConfig(timeout_s=2.0, workers=1)) as one_worker:
        a, b, c = one_worker.run([write, look, look])
    assert a.passed and sorted(ast.literal_eval(a.stdout)) == ["d", "f.txt"]
    sandboxed = one_worker.mode == "bwrap"  # without it /tmp is the host's and is left alone
    assert b.passed and b.stdout.strip() == f"[] {not sandboxed}", b.feedback
    assert c.passed and c.stdout.strip() == f"[] {not sandboxed}"
    if not sandboxed:
        Path("/tmp/left.txt").unlink()


def test_results_do_not_depend_on_worker_count():
    programs = [Program(f"s = {{str(i) for i in range({n})}}\nprint(list(s))\n", f"assert {n} != 3\n", id=n)
                for n in range(6)]
    outcomes = []
    for workers in (1, 2):
        with Executor(ExecutionConfig(timeout_s=2.0, workers=workers)) as ex:
            outcomes.append([(r.id, r.status, r.stdout, r.feedback) for r in ex.run(programs)])
    assert outcomes[0] == outcomes[1]


def test_missing_sandbox_is_refused_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap anywhere on PATH
    assert shutil.which("bwrap") is None
    with pytest.raises(SandboxUnavailable, match="bubblewrap.*or set execution.sandbox: none to run"):
        Executor(ExecutionConfig(sandbox="auto"))


def test_unsafe_mode_says_so_and_still_runs(capsys):
    with Executor(ExecutionConfig(sandbox="none", workers=1)) as ex:
        assert ex.run([CANARY])[0].passed
    assert "WITHOUT a sandbox" in capsys.readouterr().err


def test_program_cannot_remount_the_read_only_system(ex):
    if ex.mode != "bwrap":
        pytest.skip("needs the bubblewrap sandbox")
    src = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
           "MS_REMOUNT, MS_BIND = 32, 4096\n"
           "rc = libc.mount(b'none', b'/usr', None, MS_REMOUNT | MS_BIND, None)\n"
           "assert rc != 0, 'remounted /usr'\n")
    r = run_then_canary(ex, src)
    assert r.status is Status.PASSED, r.feedback


def test_cleanup_keeps_what_the_sandbox_mounted_under_tmp():
    """A virtualenv under /tmp is bound read-only into the sandbox: cleaning /tmp after a program
    must keep the mount and the directories leading to it (and not walk into it), while removing
    everything else a program wrote."""
    from leti.execution.worker import protected_paths

    mountinfo = ("20 1 0:5 / / rw - tmpfs tmpfs rw\n"
                 "21 20 0:6 / /tmp rw - tmpfs tmpfs rw\n"
                 "22 21 8:1 /ci/main/.venv /tmp/ci/main/.venv ro - ext4 /dev/sda1 rw\n"
                 "23 21 8:1 /x /tmp/with\\040space ro - ext4 /dev/sda1 rw\n"
                 "24 20 8:1 /usr /usr ro - ext4 /dev/sda1 rw\n")
    mounts, parents = protected_paths(mountinfo, ("/tmp", "/dev/shm"))
    assert mounts == {"/tmp/ci/main/.venv", "/tmp/with space"}
    assert parents == {"/tmp/ci", "/tmp/ci/main"}


def write_to_every_fd(record: bytes) -> str:
    """A program that writes `record` to every descriptor it holds beyond stdio (so to its result
    pipe, wherever that is), then exits as a passing program would."""
    return f"import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, {record!r})\n    except OSError:\n        pass\nos._exit(0)\n"


@pytest.mark.parametrize("source,kind", [
    ('raise ValueError("\\ud800")\n', "surrogate"),
    ('e = ValueError("x")\ne.add_note("\\udc80")\nraise e\n', "surrogate"),
    ('def f():\n    1 / 0\nf.__code__ = f.__code__.replace(co_name="f\\ud800")\nf()\n', "surrogate"),
    (write_to_every_fd(b"1"), "forged"),
    (write_to_every_fd(b'{"kind": "exception", "type": "E", "frames": [[1]]}'), "forged"),
    (write_to_every_fd(b'{"kind": "fine"}'), "forged"),
])
def test_unencodable_text_or_forged_record_costs_only_that_program(ex, source, kind):
    """Lone surrogates in what a program reports, or a malformed record on its result pipe, once
    killed the host thread serving the worker: its futures never resolved and the pool hung."""
    r = run_within(ex, [Program(source, id="hostile")])[0]
    assert r.status is Status.FAILED, (r.status, r.message)
    r.feedback.encode("utf-8")  # valid UTF-8 all through
    if kind == "surrogate":
        assert "\\ud800" in r.feedback or "\\udc80" in r.feedback, r.feedback
    else:
        assert r.feedback == "Error: the program tampered with the test harness's result channel (malformed result record)."
    after = run_within(ex, [CANARY] * 4)
    assert all(a.status is Status.PASSED for a in after), [a.feedback for a in after]


def test_a_result_that_cannot_be_built_costs_only_that_program(monkeypatch):
    from leti.execution import pool

    real = pool.feedback_text.format_feedback

    def fragile(result, *args):
        if result.id == "boom":
            raise RuntimeError("formatter broke")
        return real(result, *args)

    monkeypatch.setattr(pool.feedback_text, "format_feedback", fragile)
    with Executor(ExecutionConfig(timeout_s=2.0, workers=1)) as one:
        boom, ok = run_within(one, [Program("assert False\n", id="boom"), CANARY])
        assert boom.status is Status.CRASHED and "RuntimeError: formatter broke" in boom.message
        assert boom.feedback == "Crash: the program's result could not be read."
        assert ok.passed and run_within(one, [CANARY])[0].passed


def test_program_holds_only_stdio_and_its_result_pipe(ex):
    """fd 3 and its spare copy (fd 1023, where the worker's open-files limit allows) are the pipe."""
    src = ("import os\nfds = []\nfor fd in range(1024):\n    try:\n        os.fstat(fd)\n    except OSError:\n"
           "        continue\n    fds.append(fd)\nprint(fds, all(os.fstat(fd).st_ino == os.fstat(3).st_ino for fd in fds[3:]))\n")
    r = run_then_canary(ex, src)
    assert r.passed and r.stdout.strip() in ("[0, 1, 2, 3] True", "[0, 1, 2, 3, 1023] True"), r.stdout


def test_closing_inherited_descriptors_does_not_lose_the_result(ex):
    """A program that closes every descriptor beyond stdio (daemon-style code does) closed the
    result pipe: a correct program was reported "exited before the tests finished". Here one
    also opens a file, which takes fd 3: the record must not go into it."""
    close = "import os\nos.closerange(3, 256)\nlog = open('log', 'w')\ndef f(x):\n    return x\n"
    ok, bad = (run_then_canary(ex, close, tests) for tests in ("assert f(1) == 1\nassert log.fileno() == 3\n",
                                                               "assert f(1) == 2\n"))
    assert ok.status is Status.PASSED, ok.feedback
    assert bad.status is Status.FAILED and bad.exception_type == "AssertionError", bad.feedback


@pytest.mark.parametrize("patch", [
    "import json\njson.dumps = lambda *a, **k: '{\"kind\": \"ok\"}'\n",
    "import json\njson.JSONEncoder.encode = lambda self, o: '{\"kind\": \"ok\"}'\n",
    "import __main__\n__main__._describe_exception = lambda e, s: {'kind': 'ok'}\n",
    "import __main__\n__main__.run_program = None\n",
    "import os\nos.write = lambda fd, data: len(data) if fd > 2 else 0\nos.getpid = lambda: 1\n",
])
def test_patching_what_the_harness_uses_does_not_fake_a_pass(ex, patch):
    r = run_then_canary(ex, "def f(x):\n    return 0\n", patch + "assert f(1) == 2\n")
    assert r.status is Status.FAILED and r.exception_type == "AssertionError", (r.status, r.feedback)


def test_main_module_is_the_program_itself(ex):
    src = "import sys, __main__\nx = 41\nassert __main__.x == 41 and sys.modules['__main__'] is __main__\n"
    r = run_then_canary(ex, src, "assert __name__ == '__main__'\n")
    assert r.passed, r.feedback
    # as a script it has a __file__ (a NameError failed `os.path.dirname(__file__)`)
    r = run_then_canary(ex, "import os, __main__\n", "assert os.path.basename(__file__) == 'main.py' == __main__.__file__\n")
    assert r.passed, r.feedback


@pytest.mark.parametrize("damage", [
    "import os\nopen('f', 'w').write('x')\nos.chmod('..', 0o500)\n",
    "import os\nos.chmod('..', 0)\n",
    "import os, shutil\nr = os.path.dirname(os.getcwd())\nos.chdir('/')\nshutil.rmtree(r)\n",
    "import os, shutil\nr = os.path.dirname(os.getcwd())\nos.chdir('/')\nshutil.rmtree(r)\nopen(r, 'w').write('x')\n",
    "import os\nos.chmod('.', 0)\n",
    "import os\nos.chmod('/tmp', 0o500)\n",
    "import os\nos.chmod('/tmp', 0)\n",
])
def test_damaging_the_scratch_area_costs_the_next_program_nothing(damage):
    """A program that broke its scratch root once made the next program on its worker CRASHED
    ("worker was lost"): creating the next scratch directory failed and killed the zygote."""
    with Executor(ExecutionConfig(timeout_s=2.0, workers=1)) as one:
        results = run_within(one, [Program(damage, id="hostile"), CANARY, CANARY])
    assert results[0].status in (Status.PASSED, Status.FAILED)
    assert [r.status for r in results[1:]] == [Status.PASSED, Status.PASSED], [r.feedback for r in results]


def test_no_program_sees_files_of_an_earlier_one_anywhere():
    """Planted outside the run directory: beside it in the scratch root, in the sandbox's root
    file system, /etc and /dev, and in read-only directories under /tmp and /dev/shm."""
    plant = ("import os\nopen('../sibling.txt', 'w').write('A')\n"
             "for top in ('/tmp', '/dev/shm'):\n"
             "    os.makedirs(top + '/p/q')\n    open(top + '/p/q/secret', 'w').write('A')\n"
             "    os.chmod(top + '/p/q', 0o500)\n"
             "    os.makedirs(top + '/n/m')\n    open(top + '/n/m/secret', 'w').write('A')\n"
             "    os.chmod(top + '/n/m', 0)\n    os.chmod(top + '/n', 0o500)\n"
             "for path in ('/planted', '/etc/planted', '/dev/w', '/usr/planted'):\n"
             "    try:\n        open(path, 'w').write('A')\n    except OSError:\n        pass\n")
    look = ("import os\nprint([p for p in ('../sibling.txt', '/tmp/p', '/tmp/n', '/dev/shm/p', '/dev/shm/n', '/planted',"
            " '/etc/planted', '/dev/w', '/usr/planted') if os.path.exists(p)], sorted(os.listdir('..')))\n")
    with Executor(ExecutionConfig(timeout_s=2.0, workers=1)) as one:
        if one.mode != "bwrap":
            pytest.skip("needs the bubblewrap sandbox")
        a, b, c = run_within(one, [Program(plant), Program(look), Program(look)])
    assert a.passed, a.feedback
    for r in (b, c):
        assert r.passed and r.stdout.startswith("[] ["), (r.stdout, r.feedback)
        assert len(ast.literal_eval(r.stdout.split("] ", 1)[1])) == 1  # only its own run directory


def test_tmpfs_is_capped_at_the_memory_limit():
    """tmpfs pages live in memory but count against neither RLIMIT_AS nor (summed over files)
    RLIMIT_FSIZE: without a cap, a program under memory_mb=64 could keep far more in /tmp."""
    write = ("for i in range(5):\n    with open('{top}/f%d' % i, 'wb') as f:\n"
             "        for _ in range(16):\n            f.write(b'x' * (1 << 20))\n")
    with Executor(ExecutionConfig(timeout_s=3.0, workers=1, memory_mb=64)) as one:
        if one.mode != "bwrap":
            pytest.skip("needs the bubblewrap sandbox")
        results = run_within(one, [Program(write.format(top=top)) for top in ("/tmp", "/dev/shm")] + [CANARY])
    for r in results[:2]:
        assert r.status in (Status.FAILED, Status.MEMORY), r.feedback
        if r.status is Status.FAILED:
            assert r.exception_type == "OSError" and "No space left on device" in r.message
    assert results[2].passed


def test_worker_memory_cgroup_caps_all_of_its_processes():
    """RLIMIT_AS is per process: forked children each got memory_mb. Where cgroups are writable,
    the worker's memory cgroup caps them together (and reports the OOM kill as MEMORY)."""
    from leti.execution.sandbox import CGROUP_HEADROOM_MB

    # Each child alone must fit its own RLIMIT_AS (memory_mb + 4 MiB = 132 MiB of address space,
    # the interpreter's own included: ~33 MB on 3.12/3.13), or its allocation fails with a
    # MemoryError of its own and the cgroup is never reached. 64 MiB fits on every version;
    # four children hold 256 MiB together, over the cgroup's 192 MiB. `alone` checks the first.
    def fork(children: int) -> str:
        return (f"import os, time\nkids = []\nfor _ in range({children}):\n    pid = os.fork()\n    if pid == 0:\n"
                "        b = bytearray(64 << 20)\n        for j in range(0, len(b), 4096):\n            b[j] = 1\n"
                "        time.sleep(0.5)\n        os._exit(0)\n    kids.append(pid)\n"
                f"assert [os.waitpid(k, 0)[1] for k in kids] == [0] * {children}\n")
    hoard = ("for top in ('/tmp', '/dev/shm'):\n    for i in range(4):\n        with open(top + '/f%d' % i, 'wb') as f:\n"
             "            f.write(b'x' * (28 << 20))\n")
    with Executor(ExecutionConfig(timeout_s=3.0, workers=1, memory_mb=128)) as one:
        assert run_within(one, [CANARY])[0].passed
        (worker,) = one._live
        if worker.cgroup.memory is None:
            pytest.skip("no writable memory cgroup here")
        limit_file = next(f for f in ("memory.limit_in_bytes", "memory.max") if (worker.cgroup.memory / f).exists())
        assert int((worker.cgroup.memory / limit_file).read_text()) == (128 + CGROUP_HEADROOM_MB) << 20
        alone = run_within(one, [Program(fork(1))])[0]
        assert alone.status is Status.PASSED, alone.feedback
        forked = run_within(one, [Program(fork(4))])[0]
        assert forked.status is Status.FAILED and forked.exception_type == "AssertionError", forked.feedback
        if one.mode == "bwrap":  # 2 x 112 MiB of files: each tmpfs within its cap, the sum over the limit
            hoarded = run_within(one, [Program(hoard)])[0]
            assert hoarded.status is Status.MEMORY and hoarded.signal == 9, hoarded.feedback
            assert hoarded.feedback.startswith("MemoryError: the program exceeded the memory limit")
        assert run_within(one, [CANARY])[0].passed


def test_a_tree_too_deep_to_remove_retires_the_worker():
    """What cleanup cannot remove (here: deeper than PATH_MAX and the recursion limit) must not
    reach the next program: the worker says so in its reply and the host starts a fresh one."""
    deep = ("import os\nos.mkdir('/tmp/deep')\nos.chdir('/tmp/deep')\nfor _ in range(3000):\n"
            "    os.mkdir('d')\n    os.chdir('d')\nopen('secret', 'w').write('x')\nos.chmod('.', 0o500)\n")
    look = "import os\nprint(os.path.exists('/tmp/deep'))\n"
    with Executor(ExecutionConfig(timeout_s=5.0, workers=1)) as one:
        if one.mode != "bwrap":
            pytest.skip("needs the bubblewrap sandbox")
        results = run_within(one, [Program(deep), Program(look), Program(look)])
    assert [r.status for r in results] == [Status.PASSED] * 3, [r.feedback for r in results]
    assert [r.stdout for r in results[1:]] == ["False\n", "False\n"]


def test_kernel_keyrings_and_sysv_ipc_are_refused():
    """Kernel keyrings are not namespaced: a sandboxed program could plant keys the host sees in
    its keyrings, or read the host user's keys. SysV IPC objects outlive the program in the
    worker's IPC namespace, so the next program read what an earlier one left there."""
    import os

    add_key = {"x86_64": 248, "aarch64": 217}.get(os.uname().machine)
    if add_key is None:
        pytest.skip("no seccomp filter for this machine")
    tag = f"leti-planted-{uuid.uuid4().hex[:8]}"
    prelude = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    plant = (prelude + f"key = libc.syscall({add_key}, b'user', b'{tag}', b'x', 1, ctypes.c_int(-4))\n"
             "shm = libc.shmget(0x1e71, 4096, 0o1666)\nprint(key, shm, ctypes.get_errno())\n")
    look = (prelude + f"print(libc.shmget(0x1e71, 0, 0), '{tag}' in open('/proc/keys').read())\n")
    with Executor(ExecutionConfig(timeout_s=2.0, workers=1)) as one:
        planted, looked = run_within(one, [Program(plant), Program(look)])
        host_keys = Path("/proc/keys").read_text() if Path("/proc/keys").exists() else ""
    assert planted.passed and planted.stdout.split() == ["-1", "-1", "1"], planted.stdout  # EPERM
    assert looked.passed and looked.stdout.split() == ["-1", "False"], looked.stdout
    assert tag not in host_keys


def test_posix_message_queues_are_refused():
    """POSIX message queues live in the worker's IPC namespace like SysV IPC: a queue and its
    messages outlived the program that made them, and the next program on the worker read them."""
    import os

    if os.uname().machine not in ("x86_64", "aarch64"):
        pytest.skip("no seccomp filter for this machine")
    prelude = ("import ctypes, os\ntry:\n    rt = ctypes.CDLL('librt.so.1', use_errno=True)\nexcept OSError:\n"
               "    rt = ctypes.CDLL(None, use_errno=True)\n"
               "rt.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]\n")
    leave = (prelude + "fd = rt.mq_open(b'/leti-leak', os.O_CREAT | os.O_RDWR, 0o600, None)\n"
             "print(fd, ctypes.get_errno())\nif fd >= 0:\n    rt.mq_send(fd, b'left behind', 11, 0)\n")
    look = prelude + "print(rt.mq_open(b'/leti-leak', os.O_RDWR | os.O_NONBLOCK, 0, None), ctypes.get_errno())\n"
    with Executor(ExecutionConfig(timeout_s=2.0, workers=1)) as one:
        left, looked = run_within(one, [Program(leave), Program(look)])
    assert left.passed and left.stdout.split() == ["-1", "1"], left.stdout  # EPERM
    assert looked.passed and looked.stdout.split() == ["-1", "1"], looked.stdout


def test_a_program_cannot_handicap_the_programs_after_it_through_its_worker():
    """A program may change the limits and scheduling of its parent, the worker (same user:
    prlimit, setpriority, sched_setaffinity), and every later program inherited them: here a
    CPU-time limit of 1 s (a later program ran out of CPU and was killed), a tiny stack and file
    size limit, the lowest priority."""
    import os

    probe = Program("import os, resource\nprint([resource.getrlimit(getattr(resource, n)) for n in sorted(dir(resource))"
                    " if n.startswith('RLIMIT_')], os.getpriority(os.PRIO_PROCESS, 0), sorted(os.sched_getaffinity(0)))\n")
    attack = ("import os, resource\nppid = os.getppid()\n"
              "for limit, value in ((resource.RLIMIT_CPU, 1), (resource.RLIMIT_STACK, 1 << 16), (resource.RLIMIT_FSIZE, 0)):\n"
              "    resource.prlimit(ppid, limit, (value, value))\n"
              f"os.setpriority(os.PRIO_PROCESS, ppid, 19)\nos.sched_setaffinity(ppid, {{{min(os.sched_getaffinity(0))}}})\n")
    with Executor(ExecutionConfig(timeout_s=2.0, workers=1)) as one:
        before, hostile, after, canary = run_within(one, [probe, Program(attack), probe, CANARY])
    assert before.passed and hostile.passed, hostile.feedback
    assert after.passed and after.stdout == before.stdout
    assert canary.passed


def test_sockets_a_program_leaves_behind_do_not_reach_the_programs_after_it():
    """A worker's network namespace is shared by every program it runs: a loopback connection
    closed by its server side stays in TIME_WAIT for 60 s, and the next program could not bind
    the same port (Address already in use), nor could any later one on that worker."""
    serve = Program("import socket\ndef serve_once():\n    s = socket.socket()\n    s.bind(('127.0.0.1', 5000))\n"
                    "    s.listen()\n    s.close()\n    return True\n", "assert serve_once()\n")
    linger = ("import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 5000))\ns.listen()\n"
              "c = socket.create_connection(('127.0.0.1', 5000))\nconn, _ = s.accept()\nconn.close()\nc.close()\ns.close()\n")
    look = Program("print(open('/proc/net/tcp').read().count('\\n'))\n")  # the header line only
    with Executor(ExecutionConfig(timeout_s=2.0, workers=1)) as one:
        if one.mode != "bwrap":
            pytest.skip("needs the bubblewrap sandbox")
        results = run_within(one, [serve, Program(linger), serve, look])
    assert [r.status for r in results] == [Status.PASSED] * 4, [r.feedback for r in results]
    assert results[-1].stdout == "1\n"


def test_a_program_cannot_lower_the_io_priority_of_the_programs_after_it():
    """ioprio_set on the worker (its parent, same user) put it in the idle I/O class, which every
    later program on the worker inherited; the worker was not retired."""
    import os

    numbers = {"x86_64": (251, 252), "aarch64": (30, 31)}.get(os.uname().machine)
    if numbers is None:
        pytest.skip("ioprio syscall numbers unknown for this machine")
    ioprio_set, ioprio_get = numbers
    prelude = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    probe = Program(prelude + f"print(libc.syscall({ioprio_get}, 1, 0))\n")  # IOPRIO_WHO_PROCESS, itself
    attack = prelude + f"print(libc.syscall({ioprio_set}, 1, os.getppid(), 3 << 13), ctypes.get_errno())\n"  # idle
    with Executor(ExecutionConfig(timeout_s=2.0, workers=1)) as one:
        before, hostile, after = run_within(one, [probe, Program(attack), probe])
    assert hostile.passed and hostile.stdout.split() == ["0", "0"], hostile.stdout  # it did lower it
    assert before.passed and after.passed and after.stdout == before.stdout, (before.stdout, after.stdout)


def test_deep_recursion_reports_the_last_1000_frames_like_the_interpreter(ex):
    """With a raised recursion limit, a RecursionError carried every frame: ~20000 here (10**6 with
    setrecursionlimit(10**6)), all kept in the result on the host. CPython prints the last 1000."""
    src = ("import sys\nsys.setrecursionlimit(20000)\ndef f(n):\n    return g(n + 1)\n"
           "def g(n):\n    return f(n + 1)\nf(0)\n")
    r = run_then_canary(ex, src)
    assert r.status is Status.FAILED and r.exception_type == "RecursionError"
    assert len(r.frames) == 1000 and r.frames[0].name != "<module>"
    assert len(r.feedback.encode()) <= ex.config.feedback_max_bytes


def test_program_cannot_make_a_user_namespace_of_its_own(ex):
    """The sandbox holds no capabilities, but a program could get all of them back in a nested
    user namespace (unshare(CLONE_NEWUSER)), opening the kernel's namespace-privileged code."""
    from leti.execution.sandbox import _bwrap_supports

    if ex.mode != "bwrap" or not _bwrap_supports(shutil.which("bwrap"), "--disable-userns"):
        pytest.skip("needs bubblewrap >= 0.8")
    src = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
           "assert libc.unshare(0x10000000) == -1, 'made a user namespace'\n")  # CLONE_NEWUSER
    r = run_then_canary(ex, src)
    assert r.passed, r.feedback


_FORGE = '''import json, os, struct
fake = {"result": json.dumps({"kind": "ok"}), "exit_code": 0, "duration": 0.01, "timed_out": False,
        "stdout": "", "stderr": "", "stdout_lost": 0, "stderr_lost": 0}
opened = []
for pid in range(1, 64):  # every other process of the sandbox, where the worker's reply pipe was
    if pid == os.getpid():
        continue
    try:
        fd = os.open(f"/proc/{pid}/fd/1", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        continue
    opened.append(pid)
    for _ in range(2):
        data = json.dumps(fake).encode()
        os.write(fd, struct.pack(">I", len(data)) + data)
print("opened", opened)
assert False, "fails its own test"
'''


def test_a_program_cannot_forge_the_results_of_the_programs_after_it():
    """bwrap's own init (pid 1 of the sandbox) held the host <-> worker pipes and was not protected
    like the worker: writing replies into /proc/1/fd/1 made the next (wrong) program pass, and
    shifted every later record of the worker by one program."""
    wrong = Program("def f(x):\n    return x\n", "assert f(1) == 2\n", id="wrong")
    with Executor(ExecutionConfig(timeout_s=2.0, workers=1)) as one:
        if one.mode != "bwrap":
            pytest.skip("needs the sandbox (bubblewrap)")
        hostile, after, canary = run_within(one, [Program(_FORGE, id="hostile"), wrong, CANARY])
    assert hostile.status is Status.FAILED and "opened []" in hostile.stdout, hostile.stdout
    assert after.status is Status.FAILED and after.exception_type == "AssertionError", after.feedback
    assert canary.passed, canary.feedback


def test_a_program_cannot_read_or_trace_another_process_of_the_sandbox(ex):
    """The next program's source waited in the worker's request pipe, which bwrap's init held
    open (/proc/1/fd/0), and that init could be ptrace-attached. No process of the sandbox but
    the program's own may be opened or traced."""
    if ex.mode != "bwrap":
        pytest.skip("needs the sandbox (bubblewrap)")
    src = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nme = {os.getpid(), os.getppid()}\n"
           "others = [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]\n"
           "for pid in others:\n"
           "    for what in ('fd/0', 'fd/1', 'mem'):\n"
           "        try:\n"
           "            os.close(os.open(f'/proc/{pid}/{what}', os.O_RDONLY | os.O_NONBLOCK))\n"
           "        except OSError:\n"
           "            continue\n"
           "        raise AssertionError(f'opened /proc/{pid}/{what}')\n"
           "    assert libc.ptrace(16, pid, None, None) == -1, f'attached to {pid}'\n")  # PTRACE_ATTACH
    r = run_then_canary(ex, src)
    assert r.passed, r.feedback


def test_kernel_settings_are_read_only_in_the_sandbox(ex):
    """As root, the sandbox's uid 0 is the host's root: /proc/sys (host-wide sysctls such as
    kernel.core_pattern) and /proc/sysrq-trigger were writable. Opened for writing only, never
    written, so a sandbox without the fix changes nothing either."""
    if ex.mode != "bwrap":
        pytest.skip("needs the sandbox (bubblewrap)")
    src = ("import os\nfor path in ('/proc/sys/kernel/core_pattern', '/proc/sys/kernel/printk_ratelimit',\n"
           "             '/proc/sys/vm/overcommit_memory', '/proc/sysrq-trigger'):\n"
           "    try:\n"
           "        fd = os.open(path, os.O_WRONLY)\n"
           "    except OSError:\n"
           "        continue\n"
           "    os.close(fd)\n"
           "    raise AssertionError(f'{path} is writable')\n")
    r = run_then_canary(ex, src)
    assert r.passed, r.feedback


def test_orphans_are_reaped_while_the_program_runs():
    """The worker is the sandbox's init, so every process a program orphans becomes its child.
    Unreaped, each would stay a zombie holding a pid of the process limit (RLIMIT_NPROC and the
    pids cgroup count them) until the program ends: the worker reaps them as they come."""
    src = ("import os, time\nfor i in range(100):\n    if os.fork() == 0:\n        if os.fork() == 0:\n"
           "            os._exit(0)\n        os._exit(0)\n    os.wait()\ntime.sleep(1.5)\n"
           "zombies = [p for p in os.listdir('/proc') if p.isdigit() and open(f'/proc/{p}/stat').read().split()[2] == 'Z']\n"
           "assert len(zombies) < 10, f'{len(zombies)} zombies'\n")
    with Executor(ExecutionConfig(timeout_s=20.0, workers=1)) as one:
        if one.mode != "bwrap":
            pytest.skip("needs the sandbox (bubblewrap)")
        orphaning, canary = run_within(one, [Program(src, id="orphans"), CANARY], timeout=60)
    assert orphaning.passed, orphaning.feedback
    assert canary.passed, canary.feedback
