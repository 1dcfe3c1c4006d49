"""Hostile programs: each must cost only its own result, and leave nothing behind on the host."""

from __future__ import annotations

import ast
import os
import shutil
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from leti.execution import ExecutionConfig, Executor, Program, SandboxUnavailable, Status

CANARY = Program("def f(x):\n    return 2 * x\n", "assert f(21) == 42\n", id="canary")


@pytest.fixture(scope="module")
def ex():
    os.environ["HF_TOKEN"] = "hf_secret_canary_value"
    with Executor(ExecutionConfig(timeout_s=2.0, workers=2)) as executor:
        yield executor
    os.environ.pop("HF_TOKEN", None)


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


def test_deep_c_recursion_segfault_is_a_crash(ex):
    # A 1 MiB stack (checked when the main thread's stack grows) makes the overflow quick.
    src = ("import resource, sys\nresource.setrlimit(resource.RLIMIT_STACK, (1 << 20, 1 << 20))\n"
           "sys.setrecursionlimit(10**8)\nl = []\nfor _ in range(10**5):\n    l = [l]\nrepr(l)\n")
    r = run_then_canary(ex, src)
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
    src = (f"import os\nassert not os.path.exists({str(probe)!r})\n"
           f"assert not os.path.exists({str(cwd_file)!r})\n"
           f"assert not os.path.exists({str(Path.home() / '.bashrc')!r}) or {str(Path.home())!r} == '/tmp'\n"
           "try:\n    open('/usr/leti-probe', 'w')\nexcept OSError:\n    pass\nelse:\n    raise RuntimeError('wrote into /usr')\n"
           "open('/tmp/leti-host-probe-file', 'w').write('x')\nopen('scratch.txt', 'w').write('x')\n")
    r = run_then_canary(ex, src)
    assert r.status is Status.PASSED, r.feedback
    assert not Path("/tmp/leti-host-probe-file").exists()
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
    with pytest.raises(SandboxUnavailable, match="bubblewrap.*--unsafe-no-sandbox"):
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
