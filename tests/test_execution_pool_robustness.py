"""The host side of the executor (pool.py) against inputs that once stalled or hung it: a forged
result record that made counting its brackets quadratic, and a large request pipelined behind a
large reply."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

from leti.execution import ExecutionConfig, Executor, Program, Status

# Run in a process of its own: the old count held the GIL for hours on the 2 MiB record, so a
# thread could not even time it out. Each line printed: name, status, message, seconds, peak bytes.
FORGE_SCRIPT = r"""
import json, time, tracemalloc
from leti.execution import ExecutionConfig, Executor, Program

def write_record(record):
    return (f"import os\ndata = {record}\nview = memoryview(data)\nwhile view:\n"
            "    view = view[os.write(3, view):]\nos._exit(0)\n")

FORGED = {
    # 1100 '[' (over the container cap, so the brackets are counted) and an unterminated string
    # of escaped quotes filling the 2 MiB the zygote forwards.
    "escaped_quotes": write_record("b'[' * 1100 + b'\"' + b'\\\\\"' * ((1 << 20) - 600)"),
    # An escaped backslash then the string's end: a count that took `\\"` for an escaped quote
    # would see 700k objects as one string and parse them all.
    "escaped_backslash": write_record("b'[\"\\\\\\\\\", ' + b'{},' * 699000 + b'{}]'"),
}
with Executor(ExecutionConfig(timeout_s=5.0, workers=1)) as ex:
    ex.run([Program("pass\n")])  # the worker is up: only the forged programs are timed
    for name, source in FORGED.items():
        tracemalloc.start()
        start = time.monotonic()
        r = ex.run([Program(source, id=name)])[0]
        took = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(json.dumps([name, r.status.value, r.message, took, peak]), flush=True)
"""


def test_a_forged_record_of_escaped_quotes_is_refused_quickly():
    """An unterminated string of `\\"` pairs made every '"' start a string match that scanned to
    the end: 60 KB stalled the whole host 12 s, the 2 MiB the zygote forwards would take hours."""
    from leti.execution.pool import TAMPERED

    out = subprocess.run([sys.executable, "-c", FORGE_SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {row[0]: row[1:] for row in map(json.loads, out.stdout.splitlines())}
    assert set(rows) == {"escaped_quotes", "escaped_backslash"}, out.stdout
    for name, (status, message, took, peak) in rows.items():
        assert status == Status.FAILED.value and message == TAMPERED, (name, status, message)
        assert took < 10.0, (name, took)  # ~0.1 s; generous for a loaded machine
        assert peak < 30 << 20, (name, peak)  # refused unparsed


def test_a_large_request_behind_a_large_reply_does_not_deadlock():
    """The host wrote a program's request (blocking) while the worker ran the one before it; the
    worker writes that one's reply (blocking) before reading the next request. A request and a
    reply each over the 64 KiB pipe buffer: both sides waited on each other forever."""
    warm = Program("import time\ntime.sleep(0.3)\n", id="warm")  # meanwhile the next two are queued
    # Control characters are escaped to 6 bytes each in the reply: ~400 KB of captured output.
    loud = Program("print('\\x01' * 100000)\n", id="loud")
    big = Program("DATA = " + repr(list(range(40000))) + "\nassert len(DATA) == 40000\n", id="big")
    assert len(big.source) > 200_000
    ex = Executor(ExecutionConfig(timeout_s=5.0, workers=1))
    results: list = []

    def run() -> None:
        try:
            results.extend(ex.run([warm, loud, big]))
        except RuntimeError:  # aborted below, after a deadlock: the assertion says so
            pass

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(60)
    hung = runner.is_alive()
    if hung:
        ex.abort()  # kills the worker: the host's write fails and its thread ends
    else:
        ex.close()
    assert not hung, "the executor deadlocked"
    assert [r.status for r in results] == [Status.PASSED] * 3, [r.feedback for r in results]
    assert results[1].stdout.startswith("\x01" * 1000) and results[1].stdout_truncated
