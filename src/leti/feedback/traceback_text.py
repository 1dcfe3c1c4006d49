"""Execution result -> feedback text, the interpreter's words the model learns from.

Pure functions of an `ExecutionResult`. Two styles:
- "paper": what the LeTI paper uses: a Python traceback trimmed to the frames of the executed
  module (program, then tests; harness and library frames removed), line numbers as the model
  wrote them, then `ExceptionType: message`. An exception raised while another was handled, or
  `from` another, comes after that one's traceback (up to 4 of its chain), as the interpreter
  prints them. An exception group (3.11+) shows its members under it in the interpreter's
  boxes. Failures without a traceback (timeout, memory limit, crash, early exit) get one
  fixed sentence each.
- "rich": the paper text plus, for a failing `assert LEFT <op> RIGHT`, the values both sides
  evaluated to (as pytest's assertion rewriting shows them).

Feedback never exceeds `max_bytes` UTF-8 bytes (default 4096): long messages and deep tracebacks
are cut in the middle, keeping the first lines, the exception type, its location and the end.
"""

from __future__ import annotations

import signal

from leti.execution.records import (
    ChainedException,
    ExceptionGroupMembers,
    ExecutionResult,
    Frame,
    GroupMember,
    Status,
)

DEFAULT_MAX_BYTES = 4096
_REPEAT_KEEP = 3  # like CPython: show a repeated frame 3 times, then "[Previous line repeated N more times]"
# What CPython prints between the tracebacks of a chain, as the exception it links to is the
# explicit cause (`raise ... from`) or was being handled (traceback.py, pythonrun.c).
CAUSE_LINE = "The above exception was the direct cause of the following exception:"
CONTEXT_LINE = "During handling of the above exception, another exception occurred:"
# The interpreter's bounds on printing exception groups (max_group_width, max_group_depth).
GROUP_WIDTH = 15
GROUP_DEPTH = 10


def format_feedback(result: ExecutionResult, style: str = "paper", max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Feedback text for a result ("" for a passing program)."""
    if style not in ("paper", "rich"):
        raise ValueError(f"feedback style must be 'paper' or 'rich', got {style!r}")
    if result.status is Status.PASSED:
        return ""
    text = _sentence(result)
    if text is None:
        text = _traceback(result, rich=style == "rich")
    return cut_middle(text, max_bytes)


def _sentence(r: ExecutionResult) -> str | None:
    if r.status is Status.TIMEOUT:
        limit = f" within {r.timeout_s:g} second{'' if r.timeout_s == 1 else 's'}" if r.timeout_s else ""
        return f"Timeout: the program did not finish{limit}."
    if r.status is Status.MEMORY:
        limit = f" ({r.memory_mb} MiB)" if r.memory_mb else ""
        return f"MemoryError: the program exceeded the memory limit{limit}."
    if r.status is Status.CRASHED:
        if r.signal is None:  # no signal seen: the program took its sandbox worker down with it
            return "Crash: the program killed the process that was running it."
        return f"Crash: the program was killed by {_signal_name(r.signal)}."
    if r.exited_early:
        how = f" ({r.exception_printed or r.exception_type}: {r.message})" if r.exception_type else ""
        return f"Exit: the program exited before the tests finished{how}."
    if r.status is Status.FAILED and r.exception_type is None and r.message:  # no exception: e.g. a forged record
        return f"Error: {r.message}."
    return None


def _signal_name(signum: int) -> str:
    try:
        return f"signal {signal.Signals(signum).name}"
    except ValueError:
        return f"signal {signum}"


def _exception_line(printed: str | None, name: str | None, message: str | None, notes: str | None) -> str:
    exc = printed or name or "Error"
    line = f"{exc}: {message}" if message else exc
    if notes:  # printed under the exception line, as the interpreter does
        line += f"\n{notes}"
    return line


def _chain_lines(chain: tuple[ChainedException, ...]) -> list[str]:
    """The earlier exceptions' tracebacks, oldest first, each followed by CPython's sentence."""
    out: list[str] = []
    for c in chain:
        if c.group is not None:  # printed as the interpreter prints a group, then the same sentence
            printer = _GroupPrinter()
            printer.group(c, c.has_traceback)
            out += [*printer.out, "", CAUSE_LINE if c.cause else CONTEXT_LINE, ""]
            continue
        if c.has_traceback:
            out += ["Traceback (most recent call last):", *_frame_lines(c.frames)]
        out += [_exception_line(c.exception_printed, c.exception_type, c.message, c.notes),
                "", CAUSE_LINE if c.cause else CONTEXT_LINE, ""]
    return out


def _traceback(r: ExecutionResult, rich: bool) -> str:
    final = _exception_line(r.exception_printed, r.exception_type, r.message, r.notes)
    if rich and r.assert_op is not None:
        final += f"\nassert {r.assert_left} {r.assert_op} {r.assert_right}"
    if r.status is Status.INVALID or r.error_lineno is not None:
        if r.error_lineno is None:  # e.g. null bytes in the source: CPython shows no location either
            return final
        lines = [f'  File "main.py", line {r.error_lineno}']
        if r.error_text:
            raw = r.error_text.rstrip("\n")
            stripped = raw.lstrip()
            lines.append("    " + stripped)
            start = (r.error_offset or 0) - 1 - (len(raw) - len(stripped))
            if r.error_offset and start >= 0:  # an offset inside the indentation (unexpected indent): no caret, as CPython
                end = r.error_end_offset or r.error_offset + 1
                width = max(1, min(end - r.error_offset, len(stripped) - start)) if end > r.error_offset else 1
                lines.append("    " + " " * start + "^" * width)
        return "\n".join([*_chain_lines(r.chain), *lines, final])  # a SyntaxError raised while handling one
    if r.group is not None:
        printer = _GroupPrinter()
        printer.group(r, True)
        return "\n".join([*_chain_lines(r.chain), *printer.out])
    return "\n".join([*_chain_lines(r.chain), "Traceback (most recent call last):", *_frame_lines(r.frames), final])


class _GroupPrinter:
    """Lines of an exception group as the interpreter (3.11, 3.12: pythonrun.c
    print_exception_group; 3.13+: traceback.py TracebackException.format) prints it: each
    exception inside a group indented by its depth after a "| " margin, members between
    "+---- i ----" rules, a closing rule after the last; at most GROUP_WIDTH members a group
    ("and N more exceptions"), nested at most GROUP_DEPTH deep. Notes get the margin on each line;
    a multi-line message only where the group says the interpreter that ran it did (`margined`,
    3.13+): pythonrun.c continues it at the line start."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.depth = 0
        self.need_close = False  # whether the last member's rule still closes its group
        self.margined = False  # set from the outermost group: one interpreter printed them all

    def margin(self) -> str:
        return " " * (2 * self.depth) + ("| " if self.depth else "")

    def exception(self, e: ExecutionResult | ChainedException | GroupMember, has_traceback: bool,
                  group: bool = False) -> None:
        """One exception's traceback and line(s), at the current depth (print_exception)."""
        margin = self.margin()
        if has_traceback:
            header = "Exception Group Traceback" if group else "Traceback"
            head = " " * (2 * self.depth) + "+ " if group and self.depth == 1 else margin
            self.out.append(f"{head}{header} (most recent call last):")
            self.out += [margin + line for line in _frame_lines(e.frames)]
        line = _exception_line(e.exception_printed, e.exception_type, e.message, None)
        self.out += [margin + part for part in line.split("\n")] if self.margined else [margin + line]
        if e.notes:
            self.out += [margin + line for line in e.notes.split("\n")]

    def member(self, m: GroupMember) -> None:
        """A member with its chain before it (print_exception_recursive)."""
        for c in m.chain:
            if c.group is not None:
                self.group(c, c.has_traceback)
            else:
                self.exception(c, c.has_traceback)
            margin = self.margin()
            self.out += [margin, margin + (CAUSE_LINE if c.cause else CONTEXT_LINE), margin]
        if m.group is not None:
            self.group(m, m.has_traceback)
        else:
            self.exception(m, m.has_traceback)

    def group(self, e: ExecutionResult | ChainedException | GroupMember, has_traceback: bool) -> None:
        if self.depth > GROUP_DEPTH:
            self.out.append(f"{self.margin()}... (max_group_depth is {GROUP_DEPTH})")
            return
        members: ExceptionGroupMembers = e.group  # type: ignore[assignment]
        if self.depth == 0:
            self.depth = 1
            self.margined = members.margined
        self.exception(e, has_traceback, group=True)
        shown = len(members.members)
        count = shown + (members.total > shown)
        self.need_close = False
        for i in range(count):
            last = i == count - 1
            if last:
                self.need_close = True
            title = str(i + 1) if i < shown else "..."
            self.out.append(" " * (2 * self.depth) + ("+-" if i == 0 else "  ") + f"+---------------- {title} ----------------")
            self.depth += 1
            if i < shown:
                self.member(members.members[i])
            else:
                rest = members.total - shown
                self.out.append(f"{self.margin()}and {rest} more exception{'s' if rest > 1 else ''}")
            if last and self.need_close:
                self.out.append(" " * (2 * self.depth) + "+------------------------------------")
                self.need_close = False
            self.depth -= 1
        if self.depth == 1:
            self.depth = 0


def _frame_lines(frames: tuple[Frame, ...]) -> list[str]:
    out: list[str] = []
    prev, repeats = None, 0
    for f in frames:
        key = (f.lineno, f.name, f.line)
        if key == prev:
            repeats += 1
            if repeats >= _REPEAT_KEEP:
                continue
        else:
            if repeats >= _REPEAT_KEEP:
                out.append(_repeated(repeats - _REPEAT_KEEP + 1))
            prev, repeats = key, 0
        out.append(f'  File "main.py", line {f.lineno}, in {f.name}')
        if f.line:
            out.append(f"    {f.line}")
    if repeats >= _REPEAT_KEEP:
        out.append(_repeated(repeats - _REPEAT_KEEP + 1))
    return out


def _repeated(count: int) -> str:
    # CPython's wording (traceback.py, and the interpreter's own printer): "1 more time"
    return f"  [Previous line repeated {count} more time{'s' if count > 1 else ''}]"


def cut_middle(text: str, max_bytes: int) -> str:
    """Cut `text` in the middle so that it is at most `max_bytes` UTF-8 bytes, keeping more of the
    end (exception type, location and message end are there) than of the start. Lone surrogates
    (which UTF-8 cannot encode) are written as backslash escapes."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    marker = f"\n... [{len(data) - max_bytes} bytes cut] ...\n"
    budget = max_bytes - len(marker.encode()) - 8  # the count may grow by a few digits
    head_n = budget // 3
    head = data[:head_n].decode("utf-8", "ignore")
    tail = data[len(data) - (budget - head_n):].decode("utf-8", "ignore")
    cut = len(data) - len(head.encode()) - len(tail.encode())
    return f"{head}\n... [{cut} bytes cut] ...\n{tail}"
