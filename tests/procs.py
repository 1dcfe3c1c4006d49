"""The processes a test started, from /proc (Linux): for the tests that stop leti with a signal
and check that nothing it started is left (test_signals.py, test_vllm_signals.py); and a free
port for the ones that launch several processes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, state, command line) of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(name)] = (int(fields[1]), fields[0], cmd)
    return out


def descendants(root: int) -> dict[int, tuple[int, str]]:
    """pid -> (ppid, command line) of every live process below `root` (an escapee reparents to
    the sandbox's init, which is still below it)."""
    procs = processes()
    found, grew = {root}, True
    while grew:
        grew = False
        for pid, (ppid, _, _) in procs.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return {pid: (procs[pid][0], procs[pid][2]) for pid in found - {root} if procs[pid][1] != "Z"}


def alive(pids: set[int]) -> dict[int, str]:
    """pid -> command line (its start) of those of `pids` still running; a zombie is dead,
    awaiting its reaper."""
    procs = processes()
    return {p: procs[p][2][:60] for p in pids if p in procs and procs[p][1] != "Z"}


def holds_within(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Whether `check()` comes true within `seconds` (polled): processes a test stopped take a
    moment to exit after the call that stopped them returns."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a launch's rendezvous: the launchers' default (29500)
    is shared with every other job on the machine."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
