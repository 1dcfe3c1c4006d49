"""Host side of the executor: a pool of long-lived sandboxed workers.

Each worker is one sandbox (see sandbox.py) running the fork server in worker.py; a host thread
per worker feeds it one program at a time. A worker that dies (a program killed it) or stops
answering is replaced, and only the program it was running is charged for it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import select
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future

import leti.feedback.traceback_text as feedback_text
from leti.execution import sandbox
from leti.execution.config import ExecutionConfig
from leti.execution.records import ExecutionResult, Frame, Program, Status
from leti.execution.sandbox import SandboxUnavailable

__all__ = ["Executor", "SandboxUnavailable", "execute"]

_START_TIMEOUT_S = 60.0
_GRACE_S = 10.0  # beyond the program's own limit before the host gives up on a worker
_PIPELINE_DEPTH = 2  # programs sent ahead to each worker


class WorkerLost(Exception):
    pass


class _Worker:
    """One sandboxed fork-server process and its framed pipe protocol."""

    def __init__(self, mode: str, config: ExecutionConfig) -> None:
        self.cgroup = sandbox.PidsCgroup(config.max_processes)
        self.cpu_s = 0.0  # CPU seconds used by this worker and its programs, as last reported
        env = sandbox.worker_env()
        self.proc = subprocess.Popen(
            sandbox.worker_command(mode), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, cwd="/", start_new_session=True,
            preexec_fn=self.cgroup.enter if self.cgroup.path else None)
        ready = self._read(time.monotonic() + _START_TIMEOUT_S)
        if not ready.get("ready"):
            raise WorkerLost("worker did not start")

    def send(self, req: dict) -> None:
        """Queue a request. A dead worker is noticed by the `receive` that follows, which is
        where the program that killed it is known."""
        data = json.dumps(req).encode()
        try:
            self.proc.stdin.write(struct.pack(">I", len(data)) + data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def receive(self, timeout: float) -> dict:
        reply = self._read(time.monotonic() + timeout)
        self.cpu_s = reply.get("worker_cpu_s", self.cpu_s)
        return reply

    def _read(self, deadline: float) -> dict:
        header = self._read_exact(4, deadline)
        return json.loads(self._read_exact(struct.unpack(">I", header)[0], deadline))

    def _read_exact(self, n: int, deadline: float) -> bytes:
        fd, buf = self.proc.stdout.fileno(), b""
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise WorkerLost("worker stopped answering")
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise WorkerLost("worker exited")
            buf += chunk
        return buf

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.cgroup.remove()


class Executor:
    """Runs programs in sandboxed workers. Use as a context manager; `run` keeps input order,
    `submit` returns a Future so that execution can overlap with sampling."""

    def __init__(self, config: ExecutionConfig | None = None, progress: bool = False) -> None:
        self.config = config or ExecutionConfig()
        self.progress = progress
        self.mode = sandbox.resolve_sandbox(self.config.sandbox)
        if self.mode == "none":
            print("leti: WARNING: running model-written programs WITHOUT a sandbox "
                  "(--unsafe-no-sandbox / execution.sandbox: none)", file=sys.stderr)
        self._queue: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._live: set[_Worker] = set()
        self._closed = False
        self._cpu_lock = threading.Lock()
        self._cpu_done_s = 0.0  # CPU of workers already closed

    @property
    def cpu_seconds(self) -> float:
        """CPU time spent inside workers (interpreters and programs) so far; see benchmarks/."""
        with self._cpu_lock:
            return self._cpu_done_s + sum(w.cpu_s for w in self._live)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_started(self) -> None:
        if self._closed:
            raise RuntimeError("Executor is closed")
        while len(self._threads) < self.config.workers:
            t = threading.Thread(target=self._serve, daemon=True, name=f"leti-exec-{len(self._threads)}")
            t.start()
            self._threads.append(t)

    def submit(self, program: Program) -> Future:
        self._ensure_started()
        fut: Future = Future()
        self._queue.put((program, fut))
        return fut

    def run(self, programs: Iterable[Program]) -> list[ExecutionResult]:
        futures = [self.submit(p) for p in programs]
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(futures), desc="execute", unit="prog", disable=None)
        results = []
        for fut in futures:
            results.append(fut.result())
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return results

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()

    def _serve(self) -> None:
        """Feed one worker, keeping `_PIPELINE_DEPTH` programs in flight so that it never waits
        for the host between programs. The worker runs them in order; if it dies, the program
        at the head was running and is charged, the others never started and go to a new worker."""
        worker: _Worker | None = None
        inflight: deque[tuple[Program, Future]] = deque()
        stopping = False
        try:
            while True:
                while not stopping and len(inflight) < _PIPELINE_DEPTH:
                    try:
                        item = self._queue.get(block=not inflight)
                    except queue.Empty:
                        break
                    if item is None:
                        stopping = True
                    elif item[1].set_running_or_notify_cancel():
                        inflight.append(item)
                        if worker is not None:
                            worker.send(self._request(item[0]))
                if not inflight:
                    break
                try:
                    if worker is None:
                        worker = self._start_worker()
                        for program, _ in inflight:
                            worker.send(self._request(program))
                    raw = worker.receive(self.config.timeout_s + _GRACE_S)
                except WorkerLost as e:
                    self._stop_worker(worker)
                    worker = None
                    raw = {"runner_error": f"the sandboxed worker was lost ({e})"}
                except BaseException as e:  # never leave a caller waiting on a future
                    for _, fut in inflight:
                        fut.set_exception(e)
                    inflight.clear()
                    continue
                program, fut = inflight.popleft()
                fut.set_result(self._result(program, raw))
        finally:
            self._stop_worker(worker)

    def _start_worker(self) -> _Worker:
        worker = _Worker(self.mode, self.config)
        with self._cpu_lock:
            self._live.add(worker)
        return worker

    def _stop_worker(self, worker: _Worker | None) -> None:
        if worker is None:
            return
        worker.close()
        with self._cpu_lock:
            self._live.discard(worker)
            self._cpu_done_s += worker.cpu_s

    def _request(self, program: Program) -> dict:
        c = self.config
        return {"source": program.source, "timeout": c.timeout_s, "memory_mb": c.memory_mb,
                "max_output": c.max_output_bytes, "file_size_mb": c.file_size_mb,
                "open_files": c.open_files, "max_processes": c.max_processes}

    def _result(self, program: Program, raw: dict) -> ExecutionResult:
        result = classify(program.id, raw, self.config)
        text = feedback_text.format_feedback(result, self.config.feedback_style, self.config.feedback_max_bytes)
        return dataclasses.replace(result, feedback=text)


def classify(program_id: object, raw: dict, config: ExecutionConfig) -> ExecutionResult:
    """Worker report -> typed result. Only a program that ran to the end of its tests passes."""
    common = dict(id=program_id, timeout_s=config.timeout_s, memory_mb=config.memory_mb,
                  stdout=raw.get("stdout", ""), stderr=raw.get("stderr", ""),
                  stdout_truncated=raw.get("stdout_lost", 0) > 0,
                  stderr_truncated=raw.get("stderr_lost", 0) > 0,
                  duration_s=round(raw.get("duration", 0.0), 6))
    if "runner_error" in raw:
        return ExecutionResult(status=Status.CRASHED, message=raw["runner_error"], **common)
    rec = raw.get("result")
    if raw.get("timed_out") or raw.get("signal") == 24:  # 24 = SIGXCPU: the CPU-time backstop
        return ExecutionResult(status=Status.TIMEOUT, **common)
    if rec is None:
        if raw.get("signal") is not None:
            return ExecutionResult(status=Status.CRASHED, signal=raw["signal"], **common)
        return ExecutionResult(status=Status.FAILED, exited_early=True, **common)
    if rec["kind"] == "ok":
        return ExecutionResult(status=Status.PASSED, **common)
    syntax = rec.get("syntax") or {}
    operands = rec.get("assert") or {}
    status = Status.INVALID if rec["kind"] == "invalid" else Status.MEMORY if rec.get("memory") else Status.FAILED
    return ExecutionResult(
        status=status, exception_type=rec.get("type"), message=rec.get("message") or None,
        frames=tuple(Frame(lineno=n, name=name, line=line) for n, name, line in rec.get("frames", [])),
        error_lineno=syntax.get("lineno"), error_offset=syntax.get("offset"),
        error_end_offset=syntax.get("end_offset"), error_text=syntax.get("text"),
        assert_op=operands.get("op"), assert_left=operands.get("left"), assert_right=operands.get("right"),
        exited_early=bool(rec.get("exit")), **common)


def execute(programs: Sequence[Program], config: ExecutionConfig | None = None,
            progress: bool = False) -> list[ExecutionResult]:
    """One-shot: start workers, run `programs`, return results in input order."""
    with Executor(config, progress=progress) as ex:
        return ex.run(programs)
