"""The vLLM watcher: a small process beside leti that, when leti dies without closing its engines
(kill -9, the OOM killer, a crash), kills the vLLM processes leti started.

vLLM (0.32) has no parent-death watch of its own for the engine core (vllm-project/vllm#55510,
#34643; fixes proposed in #55846, #34816): an engine core left behind keeps its GPU memory, and
its workers with it, until killed by hand. The watcher notes each child of leti whose title is
VLLM::* (EngineCore, a fork or spawn child alike; a later engine on a reused pid replaces the
entry) and, once leti is gone, SIGKILLs those still alive (same pid and start time) together
with their descendants (the workers). It ignores Ctrl-C, SIGTERM and SIGHUP, which leti
handles, and exits when leti does.

Started by leti.sampling.vllm.watch_engines as `python -I -S vllm_watch.py PID` (PID: leti's
process), so standard library only.
"""

import os
import select
import signal
import sys
import time

POLL_S = 0.25  # how often leti's children are listed (an engine core lives for a whole phase)


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): with the pid, it tells a process
    apart from a later one that reuses its pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def children(pid: int) -> set[int]:
    """The process's children, from every one of its threads (a child belongs to the thread
    that started it)."""
    kids: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.update(int(k) for k in f.read().split())
        except (OSError, ValueError):
            pass
    return kids


def title(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def main() -> None:
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    host = int(sys.argv[1])
    try:
        pidfd = os.pidfd_open(host)  # readable once leti has exited: no poll delay then
    except (AttributeError, OSError):
        pidfd = None
    engines: dict[int, int] = {}  # pid -> start time
    while os.getppid() == host:
        for pid in children(host):
            start = start_time(pid)
            # A pid seen before is looked at again: a later engine can reuse a closed one's pid.
            # The start time read before and after the title: both are the same process's.
            if (start is not None and engines.get(pid) != start and title(pid).startswith(b"VLLM::")
                    and start_time(pid) == start):
                engines[pid] = start
        if pidfd is not None:
            select.select([pidfd], [], [], POLL_S)
        else:
            time.sleep(POLL_S)
    doomed: set[int] = set()
    for pid, start in engines.items():
        if start_time(pid) == start:
            tree, todo = {pid}, [pid]
            while todo:
                for kid in children(todo.pop()) - tree:
                    tree.add(kid)
                    todo.append(kid)
            doomed |= tree
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


if __name__ == "__main__":
    main()
