"""Progress of a long stage: a bar on a terminal, a plain line every tenth of the way elsewhere.

In a log file (nohup, Slurm, `leti run ... > log 2>&1`) a bar is one long carriage-return
line, and no bar at all leaves hours of silence that cannot be told from a hang. tqdm's own
options give neither clean lines (every update is still a `\\r` redraw) nor a fixed cadence, so
the lines are written here by hand."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm.auto import tqdm

# Set by config.terminal_progress: the user asked for progress, and only the missing terminal
# turned the bars off, so the stages print plain lines instead.
_lines_for_log = False


def want_log_lines(on: bool) -> None:
    """Record whether progress was asked for where stderr is not a terminal (see module doc)."""
    global _lines_for_log
    _lines_for_log = on


def _elapsed(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s // 60 % 60:02d}m"


class Progress:
    """`update(n)` like a tqdm bar. `enabled`: the caller's progress switch; False stays silent
    unless the bar was off only for want of a terminal (want_log_lines). The bar is drawn on
    stderr when that is a terminal; otherwise lines go to `file` (stderr) on rank 0 alone: the
    leader's lines stand for every rank. `line(done, note)` replaces a line's default wording."""

    def __init__(self, total: int, desc: str, unit: str, enabled: bool, *, initial: int = 0,
                 file: TextIO | None = None, line: Callable[[int, str], str] | None = None) -> None:
        self.total, self.desc, self.unit, self.done, self.initial = total, desc, unit, initial, initial
        self.file = file or sys.stderr
        self._line = line
        self._note = ""
        self._start = time.monotonic()
        terminal = sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit) if enabled and terminal else None
        leader = os.environ.get("RANK", "0") == "0"
        self.lines = not terminal and leader and total > 0 and (enabled or _lines_for_log)
        self._every = max(1, total // 10)
        self._next = (initial // self._every + 1) * self._every

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.lines and self.done >= self._next and self.done < self.total:
            self._print()
            self._next = (self.done // self._every + 1) * self._every

    def set_postfix(self, **values: object) -> None:
        if self.bar is not None:
            self.bar.set_postfix(**values)
        self._note = ", ".join(f"{k} {v}" for k, v in values.items())

    def _print(self) -> None:
        if self._line is not None:
            text = self._line(self.done, self._note)
        else:
            pct = 100 * self.done // max(1, self.total)
            text = (f"leti: {self.desc}: {self.done}/{self.total} {self.unit} ({pct}%), "
                    f"{_elapsed(time.monotonic() - self._start)}" + (f", {self._note}" if self._note else ""))
        print(text, file=self.file, flush=True)

    def close(self) -> None:
        """Closes the bar; the last line (the whole way, or where it stopped) is printed once."""
        if self.bar is not None:
            self.bar.close()
        elif self.lines and self.done > self.initial:
            self._print()
        self.lines = False  # a second close prints nothing

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
