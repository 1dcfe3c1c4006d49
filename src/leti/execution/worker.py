"""The sandboxed worker ("zygote"). Standard library only: the host passes this file's source to
`python -c` inside the sandbox, where neither leti nor the caller's directories are visible.

Per program (one at a time per worker):
    zygote --fork--> supervisor --unshare(user+pid), fork--> program (pid 1 of a fresh pid namespace)
The program process sets its limits and runs the module in-process (no interpreter start-up: that
is what makes a fork server fast). Because it is pid 1 of its own namespace, killing it kills
everything it spawned (double-fork + setsid included), and it cannot see the supervisor or the
zygote. The supervisor drains stdout/stderr with caps, enforces the wall clock, and reports one
JSON record to the zygote, which forwards it to the host.

Protocol on the zygote's stdin/stdout: 4-byte big-endian length + UTF-8 JSON, one request
(`{"source", "timeout", "memory_mb", ...}`) -> one reply.
"""

import ast
import builtins
import ctypes
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
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
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


def _enter_namespaces():
    """New user + pid namespace for the next child (unprivileged). False where not allowed."""
    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWPID) != 0:
        return False
    for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"),
                       ("/proc/self/gid_map", f"{gid} {gid} 1")):
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError:
            pass
    return True


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


def supervise(req, report_fd, scratch):
    """Runs in the supervisor: start the program, drain its output, enforce the wall clock."""
    in_pid_ns = _enter_namespaces()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            for fd in (out_r, err_r, res_r, report_fd):
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
    timed_out, status, open_fds = False, None, set(bufs)
    while status is None or open_fds:
        now = time.monotonic()
        if status is None and now >= deadline:
            timed_out = True
            _kill(pid, in_pid_ns)
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
            room = (cap if fd != res_r else 1 << 26) - len(bufs[fd])
            bufs[fd] += chunk[:max(room, 0)]
            if fd in lost:
                lost[fd] += max(0, len(chunk) - max(room, 0))
        if status is None:
            done, wstatus = os.waitpid(pid, os.WNOHANG)
            if done:
                status = wstatus
                if not in_pid_ns:  # no namespace: kill what the program left in its session
                    _kill(pid, False)
                if pidfd is not None:
                    sel.unregister(pidfd)
                    os.close(pidfd)
                    pidfd = None
                # Descendants die with pid 1 of the namespace; give the pipes a moment to close.
                drain_until = time.monotonic() + 1.0
        elif time.monotonic() > drain_until:
            break
    rec = {"duration": time.monotonic() - start, "timed_out": timed_out,
           "stdout": bufs[out_r].decode("utf-8", "replace"), "stderr": bufs[err_r].decode("utf-8", "replace"),
           "stdout_lost": lost[out_r], "stderr_lost": lost[err_r], "pid_namespace": in_pid_ns}
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


def _kill(pid, in_pid_ns):
    try:
        if in_pid_ns:
            os.kill(pid, signal.SIGKILL)  # pid 1 of the namespace: the kernel kills the rest
        else:
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


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


def handle(req, scratch_root):
    scratch = tempfile.mkdtemp(dir=scratch_root, prefix="run-")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            for fd in _PROTO_FDS:
                os.close(fd)
            rec = supervise(req, w, scratch)
            data = json.dumps(rec).encode()
            while data:
                data = data[os.write(w, data):]
        except BaseException:
            traceback.print_exc()
            code = 71
        os._exit(code)
    os.close(w)
    chunks = []
    while True:
        chunk = os.read(r, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    _, wstatus = os.waitpid(pid, 0)
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return {"runner_error": f"supervisor ended without a report (wait status {wstatus})"}


def main():
    # Keep the protocol on private descriptors; stray output from anything else goes to stderr.
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.set_inheritable(proto_in, False)
    os.set_inheritable(proto_out, False)
    _PROTO_FDS.extend((proto_in, proto_out))
    if "" in sys.path:
        sys.path.remove("")
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    scratch_root = tempfile.mkdtemp(prefix="leti-")
    _write_frame(proto_out, {"ready": True, "pid": os.getpid()})
    while True:
        header = _read_exact(proto_in, 4)
        if header is None:
            break
        req = json.loads(_read_exact(proto_in, struct.unpack(">I", header)[0]))
        _write_frame(proto_out, handle(req, scratch_root))
    shutil.rmtree(scratch_root, ignore_errors=True)


if __name__ == "__main__":
    main()
