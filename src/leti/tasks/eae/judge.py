"""The EAE verdict, decided on the host from the arguments the sandbox reported.

The sandboxed program (prompt + completion + the extractor of problems.render_tests) ends by
raising `LetiEventReport` whose message is JSON: `{"roles": {role: [span, ...]}}` for an event of
the right shape, `{"error": message}` otherwise. The gold arguments never enter the sandbox, so
whatever a program does to its own process (patched builtins, objects equal to everything,
tracers that rewrite the extractor, a forged result record, an early exit), it can at most
report some arguments, and those are compared with the gold here. A program that wants a pass
has to name the gold arguments, i.e. solve the problem.

The report is accepted only in the shape the extractor writes: raised from the program's last
line (the extractor's `raise`) and nowhere else, as the only frame, with exactly the class's
roles, each a list of strings. Anything else that claims to be a report is a tampered program
and fails. An authentication code would not help: code running in the same process before the
extractor can read any key the extractor holds.

Honest programs get the result the in-sandbox verifier gave them, field for field: a pass, or
`VerificationError` with the verifier's message at its `raise` line (the extractor's `raise`
stands on that line number), and the same feedback text. One field more: a verdict keeps the
arguments it was decided on, for the Arg-I / Arg-C scores (`reported_arguments`), so that the
scores and the verdict describe the same event (the last value of `event`, computed spans too).
They go into `ExecutionResult.judged`, which only the host sets: no sandbox record can carry it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import leti.feedback.traceback_text as feedback_text
from leti.execution.config import ExecutionConfig
from leti.execution.records import ExecutionResult, Frame, Program, Status
from leti.tasks.base import Problem
from leti.tasks.eae.check import check_event
from leti.tasks.eae.problems import REPORT_EXCEPTION, REPORT_RAISE

# The earlier verifier's failing line; feedback for honest programs keeps quoting it.
VERDICT_LINE = "raise VerificationError(_leti_message)"
VERIFICATION_ERROR = "VerificationError"  # the exception type of a reported event the verifier refused
MAX_MESSAGE = 16384  # the worker's cut for exception messages (execution/worker.py MAX_MESSAGE)
TAMPERED = "the program tampered with the verifier's report of its event"

# Fields of a result that describe an exception; cleared before a verdict is written.
_NO_EXCEPTION: dict[str, Any] = dict(
    exception_type=None, exception_printed=None, message=None, notes=None, frames=(), chain=(), group=None, error_lineno=None,
    error_offset=None, error_end_offset=None, error_text=None, assert_op=None, assert_left=None,
    assert_right=None, signal=None, exited_early=False, feedback="", judged=None)


def last_line(source: str) -> int:
    """The number of a module's last line as the compiler counts (at \\n, \\r\\n and \\r only;
    see worker._source_lines); `source` ends with a newline."""
    return source.replace("\r\n", "\n").replace("\r", "\n").count("\n")


def _cut(text: str, limit: int = MAX_MESSAGE) -> str:
    # The worker's cut (worker._cut), which the verifier's message went through in the sandbox.
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + f"\n... [{len(text) - limit} characters cut] ...\n" + text[-half:]


def read_report(result: ExecutionResult, program: Program, roles: list[str]) -> dict | None:
    """The extractor's report if `result` is exactly the extractor's exception, else None."""
    where = (Frame(last_line(program.source), "<module>", REPORT_RAISE),)
    if (result.status is not Status.FAILED or result.exception_type != REPORT_EXCEPTION or result.exited_early
            or result.frames != where or result.notes or result.message is None):
        return None
    try:
        report = json.loads(result.message)
    except (ValueError, RecursionError):
        return None
    if not isinstance(report, dict) or len(report) != 1:
        return None
    if "error" in report:
        return report if isinstance(report["error"], str) and report["error"] else None
    spans = report.get("roles")
    if (not isinstance(spans, dict) or list(spans) != roles
            or not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in spans.values())):
        return None
    return report


def _message(report: dict, meta: dict) -> str:
    """The earlier verifier's message for the reported arguments ('' for a pass)."""
    if "error" in report:
        return report["error"]  # computed in the sandbox by the same check_event, from the program's objects
    # check_event itself, on a stand-in built here from plain data: the same words, no model code.
    cls = type(meta["class_name"], (), {"__annotations__": dict.fromkeys(meta["roles"], list)})
    event = cls()
    for role, spans in report["roles"].items():
        setattr(event, role, spans)
    return check_event(event, cls, meta["gold"], meta["sentence"], meta["min_f1"])


def judge_result(problem: Problem, program: Program, result: ExecutionResult,
                 config: ExecutionConfig | None = None) -> ExecutionResult:
    """The host's verdict on one EAE program's sandbox result (see the module docstring)."""
    config = config or ExecutionConfig()
    if result.status is not Status.PASSED and result.exception_type != REPORT_EXCEPTION:
        # failed before reporting (its own error, timeout, crash, exit): as it ran, deciding nothing
        return dataclasses.replace(result, judged=None) if result.judged is not None else result
    report = None
    if result.status is not Status.PASSED:
        report = read_report(result, program, problem.meta["roles"])
    if report is None:  # every honest program ends with the report, so a pass or a misshapen report is forged
        judged = dataclasses.replace(result, **{**_NO_EXCEPTION, "status": Status.FAILED, "message": TAMPERED})
    else:
        message = _message(report, problem.meta)
        # An event of the wrong shape (an "error" report) predicts no arguments.
        arguments = {"arguments": report.get("roles", {})}
        if not message:
            return dataclasses.replace(result, **{**_NO_EXCEPTION, "status": Status.PASSED, "judged": arguments})
        judged = dataclasses.replace(
            result, **{**_NO_EXCEPTION, "status": Status.FAILED, "exception_type": VERIFICATION_ERROR,
                       "message": _cut(message.rstrip("\n")) or None, "judged": arguments,
                       "frames": (Frame(last_line(program.source), "<module>", VERDICT_LINE),)})
    text = feedback_text.format_feedback(judged, config.feedback_style, config.feedback_max_bytes)
    return dataclasses.replace(judged, feedback=text)


def reported_arguments(result: ExecutionResult) -> dict[str, list[str]] | None:
    """role -> spans that the judge decided `result`'s verdict on; None when `judge_result` gave
    no verdict on reported arguments (the program failed before its report, or the result was
    not judged). Recognised by `result.judged`, which only the judge sets (the exception's name,
    which a program chooses, is no sign)."""
    if not isinstance(result.judged, dict):
        return None
    if not (result.passed or (result.status is Status.FAILED and result.exception_type == VERIFICATION_ERROR)):
        return None
    arguments = result.judged.get("arguments")
    if not isinstance(arguments, dict):
        return None
    return {role: [s for s in spans if isinstance(s, str)] for role, spans in arguments.items()
            if isinstance(role, str) and isinstance(spans, list)}
