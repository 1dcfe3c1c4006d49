"""The sandboxed worker ("zygote"). Standard library only: the host passes this file's source to
`python -c` inside the sandbox, where neither leti nor the caller's directories are visible.

Per program (one at a time per worker) the zygote forks one child, which sets its limits and runs
the module in-process: no interpreter start-up per program, which is what makes a fork server
fast. The zygote drains the child's stdout/stderr with caps, enforces the wall clock, then kills
every other process in the worker's pid namespace (double-fork + setsid escapes included) and
replies with one JSON record.

Protocol on the zygote's stdin/stdout: 4-byte big-endian length + UTF-8 JSON, one request
(`{"source", "timeout", "memory_mb", ...}`) -> one reply.
"""

import ast
import builtins
import ctypes
import gc
import json
import os
import resource
import selectors
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback

FILENAME = "main.py"  # the name frames of the executed module carry in tracebacks
MAX_MESSAGE = 16384  # exception messages are cut (middle) to this many characters here
MAX_REPR = 1000
_PROTO_FDS = []  # the zygote's protocol descriptors; closed in every child so programs cannot reach them
# Set by the host (argv): True inside the sandbox, where the worker has a pid namespace of its own.
PID_NAMESPACE = False
PR_SET_DUMPABLE = 4
# Modules that many programs import; importing them once in the zygote makes every fork cheaper.
PRELOAD = ("math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string",
           "random", "operator", "typing", "copy", "decimal", "fractions", "statistics", "json",
           "datetime", "dataclasses", "hashlib", "io", "textwrap", "unicodedata", "cmath")


def _cut(text, limit):
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + f"\n... [{len(text) - limit} characters cut] ...\n" + text[-half:]


def _safe_repr(value):
    try:
        return _cut(repr(value), MAX_REPR)
    except BaseException as e:  # a hostile __repr__ must not break reporting
        return f"<repr failed: {type(e).__name__}>"


def _assert_operands(source, frame, lineno):
    """For `assert L <op> R` on `lineno`, re-evaluate L and R in the failing frame (the program
    has already failed, so side effects no longer matter) under a 1 s alarm."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    node = next((n for n in ast.walk(tree) if isinstance(n, ast.Assert) and n.lineno == lineno), None)
    if node is None or not isinstance(node.test, ast.Compare) or len(node.test.ops) != 1:
        return None
    ops = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
           ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
    op = ops.get(type(node.test.ops[0]))
    if op is None:
        return None
    values = []
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError()))
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        for expr in (node.test.left, node.test.comparators[0]):
            code = compile(ast.Expression(expr), FILENAME, "eval")
            values.append(_safe_repr(eval(code, frame.f_globals, frame.f_locals)))
    except BaseException:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return {"op": op, "left": values[0], "right": values[1]}


def _describe_exception(exc, source):
    lines = source.splitlines()
    rec = {"kind": "exception", "type": type(exc).__name__, "message": ""}
    try:
        # format_exception_only adds what the interpreter would print, e.g. NameError's
        # "Did you mean: 'xs'?" suggestion, which is useful feedback.
        te = traceback.TracebackException.from_exception(exc, lookup_lines=False)
        text = "".join(te.format_exception_only()).rstrip("\n")
        rec["message"] = _cut(text.partition(": ")[2] if ": " in text else "", MAX_MESSAGE)
    except BaseException:
        rec["message"] = "<str() of the exception failed>"
    if isinstance(exc, SyntaxError) and exc.filename == FILENAME:
        rec["message"] = _cut(str(exc.msg), MAX_MESSAGE)
        rec["syntax"] = {"lineno": exc.lineno, "offset": exc.offset,
                         "end_offset": getattr(exc, "end_offset", None), "text": exc.text}
    frames, last = [], None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == FILENAME:
            n = tb.tb_lineno
            text = lines[n - 1].strip() if 0 < n <= len(lines) else ""
            frames.append([n, code.co_name, text])
            last = (tb.tb_frame, n)
        tb = tb.tb_next
    rec["frames"] = frames
    if isinstance(exc, SystemExit):
        rec["exit"] = True
    if isinstance(exc, MemoryError):
        rec["memory"] = True
    if isinstance(exc, AssertionError) and last is not None:
        operands = _assert_operands(source, last[0], last[1])
        if operands:
            rec["assert"] = operands
    return rec


def run_program(source, result_fd):
    """Runs in the program process: compile, execute, report. Never returns."""
    me = os.getpid()
    try:
        code = compile(source, FILENAME, "exec")
    except (SyntaxError, ValueError) as e:  # ValueError: null bytes in source
        rec = _describe_exception(e, source)
        rec["kind"] = "invalid"
    else:
        sys.argv = [FILENAME]
        module = {"__name__": "__main__", "__builtins__": builtins}
        try:
            exec(code, module)
            rec = {"kind": "ok"}
        except BaseException as e:  # SystemExit and KeyboardInterrupt are failures too
            rec = _describe_exception(e, source)
    if os.getpid() != me:
        os._exit(0)  # a process the program forked fell through to here: only the program reports
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    data = json.dumps(rec).encode()
    while data:
        data = data[os.write(result_fd, data):]
    os._exit(0)


def _set_limits(req):
    mb = 1024 * 1024
    limits = [(resource.RLIMIT_AS, req["memory_mb"] * mb),
              (resource.RLIMIT_CPU, int(req["timeout"]) + 2),
              (resource.RLIMIT_FSIZE, req["file_size_mb"] * mb),
              (resource.RLIMIT_NOFILE, req["open_files"]),
              (resource.RLIMIT_CORE, 0)]
    if os.getuid() != 0:  # the kernel does not apply RLIMIT_NPROC to root: the host uses a pids cgroup
        limits.append((resource.RLIMIT_NPROC, req["max_processes"]))
    for which, value in limits:
        try:
            soft, hard = resource.getrlimit(which)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass


def _start_program(req, scratch):
    """Fork the program process; returns (pid, stdout fd, stderr fd, result fd)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            for fd in (out_r, err_r, res_r, *_PROTO_FDS):
                os.close(fd)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.setsid()
            os.chdir(scratch)
            _set_limits(req)
            run_program(req["source"], res_w)
        finally:
            os._exit(70)
    for fd in (out_w, err_w, res_w):
        os.close(fd)
    return pid, out_r, err_r, res_r


def _kill_all(pid):
    """Kill the program and everything it started. In the sandbox the worker has its own pid
    namespace, so kill(-1) reaches every process but this one and the namespace's init: escapes by
    double fork + setsid included. The kernel walks the task list under a lock that fork needs,
    so a fork loop cannot outrun it. Without the sandbox only the program's session is reachable."""
    try:
        if PID_NAMESPACE:
            os.kill(-1, signal.SIGKILL)
        else:
            os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def supervise(req, scratch):
    """Run one program: drain its output with caps, enforce the wall clock, clean up after it."""
    start = time.monotonic()
    pid, out_r, err_r, res_r = _start_program(req, scratch)
    cap = req["max_output"]
    bufs = {out_r: bytearray(), err_r: bytearray(), res_r: bytearray()}
    lost = {out_r: 0, err_r: 0}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        sel.register(fd, selectors.EVENT_READ)
    pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    if pidfd is not None:
        sel.register(pidfd, selectors.EVENT_READ)
    deadline = start + req["timeout"]
    timed_out, status, open_fds, drain_until = False, None, set(bufs), None
    while status is None or (open_fds and time.monotonic() < drain_until):
        now = time.monotonic()
        if status is None and now >= deadline:
            timed_out = True
            _kill_all(pid)
            deadline = now + 3600
        wait = 0.05 if pidfd is None or status is not None else max(0.0, deadline - now)
        for key, _ in sel.select(timeout=min(wait, 0.5)):
            fd = key.fd
            if fd == pidfd:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                sel.unregister(fd)
                open_fds.discard(fd)
                continue
            room = max((cap if fd != res_r else 1 << 26) - len(bufs[fd]), 0)
            bufs[fd] += chunk[:room]
            if fd in lost:
                lost[fd] += max(0, len(chunk) - room)
        if status is None:
            done, wstatus = os.waitpid(pid, os.WNOHANG)
            if done:
                status = wstatus
                _kill_all(pid)  # whatever the program left running dies with it
                if pidfd is not None:
                    sel.unregister(pidfd)
                    os.close(pidfd)
                    pidfd = None
                drain_until = time.monotonic() + 1.0  # the pipes close as the killed processes exit
    for fd in bufs:
        os.close(fd)
    sel.close()
    rec = {"duration": time.monotonic() - start, "timed_out": timed_out,
           "stdout": bufs[out_r].decode("utf-8", "replace"), "stderr": bufs[err_r].decode("utf-8", "replace"),
           "stdout_lost": lost[out_r], "stderr_lost": lost[err_r]}
    if os.WIFSIGNALED(status):
        rec["signal"] = os.WTERMSIG(status)
    else:
        rec["exit_code"] = os.WEXITSTATUS(status)
    if bufs[res_r]:
        try:
            rec["result"] = json.loads(bytes(bufs[res_r]))
        except ValueError:
            pass
    return rec


def _read_exact(fd, n):
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _write_frame(fd, obj):
    data = json.dumps(obj).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


TMP_TOPS = ("/tmp", "/dev/shm")


class Scratch:
    """The program's working directory. Reused while programs leave it empty (most do: saves a
    mkdir + rmdir per program), replaced as soon as one leaves anything behind. In the sandbox,
    /tmp and /dev/shm are private to the worker, so everything else a program wrote there is
    removed too: no program sees files of an earlier one. What the sandbox itself mounted there
    (e.g. a virtualenv under /tmp, bound read-only) and the directories leading to it stay."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="leti-")
        self.path = None
        self.mounts, self.parents = set(), set()
        if PID_NAMESPACE:
            try:
                with open("/proc/self/mountinfo") as f:
                    self.mounts, self.parents = protected_paths(f.read(), TMP_TOPS)
            except OSError:
                pass

    def get(self):
        if self.path is None:
            self.path = tempfile.mkdtemp(dir=self.root, prefix="run-")
        return self.path

    def clean(self):
        try:
            dirty = bool(os.listdir(self.path)) or (os.stat(self.path).st_mode & 0o777) != 0o700
        except OSError:
            dirty = True
        if dirty:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
        if PID_NAMESPACE:
            for top in TMP_TOPS:
                self._wipe(top)

    def _wipe(self, directory):
        for name in _listdir(directory):
            path = os.path.join(directory, name)
            if path == self.root or path in self.mounts:
                continue
            if path in self.parents:
                self._wipe(path)  # a directory leading to a mount: keep it, clean what is beside
            else:
                _remove(path)

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


def protected_paths(mountinfo, tops):
    """Mount points below `tops` (from /proc/self/mountinfo text) and the directories leading to
    them, which cleaning must keep."""
    mounts, parents = set(), set()
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        top = next((t for t in tops if point.startswith(t + "/")), None)
        if top is None:
            continue
        mounts.add(point)
        parent = os.path.dirname(point)
        while parent != top and len(parent) > len(top):
            parents.add(parent)
            parent = os.path.dirname(parent)
    return mounts, parents


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass


def handle(req, scratch):
    try:
        return supervise(req, scratch.get())
    finally:
        scratch.clean()


def main():
    # Keep the protocol on private descriptors; stray output from anything else goes to stderr.
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.set_inheritable(proto_in, False)
    os.set_inheritable(proto_out, False)
    _PROTO_FDS.extend((proto_in, proto_out))
    global PID_NAMESPACE
    PID_NAMESPACE = sys.argv[1:] == ["pid-namespace"]
    if "" in sys.path:
        sys.path.remove("")
    # Programs run as the same user as this process: being non-dumpable keeps them from
    # ptrace-attaching to it or writing its memory through /proc (they can still kill it; the
    # host then replaces the worker and charges only that program).
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    # Forked children write to any page whose objects they touch (reference counts, GC
    # headers); freezing keeps the collector from walking, and so copying, every inherited object.
    gc.collect()
    gc.freeze()
    scratch = Scratch()
    _write_frame(proto_out, {"ready": True, "pid": os.getpid()})
    while True:
        header = _read_exact(proto_in, 4)
        if header is None:
            break
        req = json.loads(_read_exact(proto_in, struct.unpack(">I", header)[0]))
        reply = handle(req, scratch)
        # CPU time of the worker and every program it ran (children are reaped, so it rolls up):
        # lets benchmarks count CPU even where the sandbox hides the processes from the host.
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        reply["worker_cpu_s"] = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        _write_frame(proto_out, reply)
    scratch.close()


if __name__ == "__main__":
    main()
