"""How a worker process is started: the bubblewrap command line (namespaces, read-only system,
no network, no home or working directory), the scrubbed environment, and a pids cgroup.

Inside the sandbox the worker sees: /usr and the few /etc files the interpreter needs, read-only;
the Python installation (base prefix, venv, site-packages), read-only; a private /tmp, /proc and
/dev. It does not see the caller's home, working directory or environment (HF_TOKEN, cloud keys).
"""

from __future__ import annotations

import functools
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

from leti.errors import LetiError

WORKER_SOURCE = (Path(__file__).parent / "worker.py").read_text()
# Enough for the interpreter, its shared libraries, locale and time zone data.
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf",
              "passwd", "group", "alternatives", "ssl/certs", "mime.types")
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class SandboxUnavailable(LetiError):
    """No isolation mechanism works and the caller did not opt out explicitly."""


def worker_env() -> dict[str, str]:
    """The whole environment programs get: nothing from the caller (secrets stay out). A fixed
    hash seed keeps set/dict-of-str order, and so results, identical across workers."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def python_command() -> list[str]:
    # -s: no user site-packages; -c: the worker source (leti itself is not visible in the sandbox).
    return [sys.executable, "-s", "-c", WORKER_SOURCE]


def _python_dirs() -> list[str]:
    """Directories the interpreter needs, e.g. a pyenv/conda/venv install under $HOME."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    dirs.update(site.getsitepackages())
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        dirs.add(sysconfig.get_paths()[key])
    exe = os.path.realpath(sys.executable)
    dirs.add(os.path.dirname(os.path.dirname(exe)))
    out = sorted(d for d in {os.path.realpath(d) for d in dirs} if os.path.isdir(d))
    # Drop directories already covered by a parent in the list, and anything covering cwd/home.
    hidden = [os.path.realpath(os.getcwd()), os.path.realpath(os.path.expanduser("~"))]
    keep: list[str] = []
    for d in out:
        if any(d == k or d.startswith(k + os.sep) for k in keep):
            continue
        if any(h == d or h.startswith(d + os.sep) for h in hidden):
            continue  # binding it would expose the caller's home or working directory
        keep.append(d)
    return keep


def bwrap_command(bwrap: str) -> list[str]:
    # --cap-drop ALL: even a root caller's sandbox holds no capabilities (no remounting the
    # read-only binds); per-program namespaces need none (unprivileged user namespaces).
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--cap-drop", "ALL", "--die-with-parent", "--new-session",
           "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--clearenv", "--chdir", "/tmp"]
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            cmd += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            cmd += ["--ro-bind", d, d]
    for name in _ETC_FILES:
        cmd += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for d in _python_dirs():
        if not d.startswith(("/usr/", "/bin/", "/lib")):
            cmd += ["--ro-bind", d, d]
    for key, value in worker_env().items():
        cmd += ["--setenv", key, value]
    return cmd + python_command()


@functools.lru_cache(maxsize=1)
def _bwrap_works(bwrap: str) -> str | None:
    """None if bwrap can start the worker's interpreter here, else the reason it cannot."""
    probe = bwrap_command(bwrap)[: -len(python_command())] + [sys.executable, "-s", "-c", "print('ok')"]
    try:
        out = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if out.returncode != 0 or out.stdout.strip() != "ok":
        return (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]
    return None


def resolve_sandbox(mode: str) -> str:
    """'bwrap' or 'none'; raises SandboxUnavailable when isolation was required but cannot work."""
    if mode == "none":
        return "none"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(
            "no sandbox: bubblewrap ('bwrap') is not installed; install it (Debian/Ubuntu: "
            "apt-get install bubblewrap; Fedora/RHEL: dnf install bubblewrap; without root: "
            "conda install -c conda-forge bubblewrap) or pass --unsafe-no-sandbox (execution.sandbox: none) "
            "to run model-written programs without isolation")
    reason = _bwrap_works(bwrap)
    if reason is not None:
        raise SandboxUnavailable(
            f"no sandbox: bubblewrap cannot create namespaces here ({reason}); enable unprivileged "
            "user namespaces or pass --unsafe-no-sandbox (execution.sandbox: none) to run without isolation")
    return "bwrap"


def worker_command(mode: str) -> list[str]:
    if mode == "bwrap":  # the worker owns a pid namespace and may kill all of it after a program
        return bwrap_command(shutil.which("bwrap") or "bwrap") + ["pid-namespace"]
    return python_command()


class PidsCgroup:
    """A pids cgroup capping the processes of one worker (fork bombs). The kernel ignores
    RLIMIT_NPROC for root, so this is what bounds a root caller; it is skipped where cgroups are
    not writable (an unprivileged user, for whom RLIMIT_NPROC works instead)."""

    ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup")

    def __init__(self, max_processes: int) -> None:
        self.path: Path | None = None
        for root in self.ROOTS:
            base = Path(root)
            if not (base / "cgroup.procs").exists() or (root == "/sys/fs/cgroup" and not _has_pids_v2(base)):
                continue
            path = base / "leti" / f"w-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                path.mkdir(parents=True)
                (path / "pids.max").write_text(str(max_processes))
            except OSError:
                try:
                    path.rmdir()
                except OSError:
                    pass
                continue
            self.path = path
            break

    def enter(self) -> None:
        """Called in the child between fork and exec (subprocess preexec_fn)."""
        if self.path is not None:
            try:
                (self.path / "cgroup.procs").write_text(str(os.getpid()))
            except OSError:
                pass

    def remove(self) -> None:
        if self.path is not None:
            try:
                self.path.rmdir()
            except OSError:
                pass


def _has_pids_v2(base: Path) -> bool:
    try:
        return "pids" in (base / "cgroup.subtree_control").read_text().split()
    except OSError:
        return False
