"""The vLLM watcher's bookkeeping (src/leti/sampling/vllm_watch.py), on a scripted /proc: which
processes it kills once leti is gone. Needs no vLLM; the real kill -9 test is in test_vllm_signals.py."""

from __future__ import annotations

import signal

from leti.sampling import vllm_watch as watch

HOST = 4242


def test_a_later_engine_on_a_reused_pid_is_killed_and_no_other_process_is(monkeypatch):
    """Was: a pid recorded once was never looked at again, so a later engine core (the next
    phase) that got a closed engine's pid kept the old start time and survived a kill -9 of
    leti. A pid reused by a process that is not an engine is still left alone."""
    # Each poll of leti's children: pid -> (title, start time). 100: engine, closed, then a
    # later engine on the same pid; 102: engine, closed, then a program run by leti on its pid.
    polls = [
        {100: (b"VLLM::EngineCore", 5), 102: (b"VLLM::EngineCore", 3)},
        {},
        {100: (b"VLLM::EngineCore", 9), 102: (b"python\0-c\0run()", 7)},
    ]
    after = {100: (b"VLLM::EngineCore", 9), 200: (b"VLLM::Worker", 10), 102: (b"python\0-c\0run()", 7)}
    tick = 0

    def procs() -> dict[int, tuple[bytes, int]]:
        return polls[tick - 1] if tick <= len(polls) else after

    def getppid() -> int:  # leti is alive for len(polls) polls, then gone
        nonlocal tick
        tick += 1
        return HOST if tick <= len(polls) else 1

    def children(pid: int) -> set[int]:
        if pid == HOST:
            return set(procs())
        return {200} if pid == 100 and tick > len(polls) else set()

    killed = []
    monkeypatch.setattr(watch.sys, "argv", ["vllm_watch.py", str(HOST)])
    monkeypatch.setattr(watch.signal, "signal", lambda *a: None)  # not pytest's handlers
    monkeypatch.setattr(watch.os, "pidfd_open", lambda pid: (_ for _ in ()).throw(OSError()), raising=False)
    monkeypatch.setattr(watch.time, "sleep", lambda s: None)
    monkeypatch.setattr(watch.os, "getppid", getppid)
    monkeypatch.setattr(watch.os, "kill", lambda pid, sig: killed.append((pid, sig)))
    monkeypatch.setattr(watch, "children", children)
    monkeypatch.setattr(watch, "title", lambda pid: procs().get(pid, (b"", None))[0])
    monkeypatch.setattr(watch, "start_time", lambda pid: procs().get(pid, (b"", None))[1])
    watch.main()
    assert sorted(killed) == [(100, signal.SIGKILL), (200, signal.SIGKILL)]
