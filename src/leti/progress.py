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

from leti.errors import LetiError


def _elapsed(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s // 60 % 60:02d}m"


EVERY_ENV = "LETI_PROGRESS_EVERY_S"  # seconds between two lines in a log (default 10; 0: every tenth)


def line_interval() -> float:
    """The least seconds between two progress lines in a log: $LETI_PROGRESS_EVERY_S, else 10."""
    text = os.environ.get(EVERY_ENV, "").strip()
    if not text:
        return 10.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise LetiError(f"{EVERY_ENV}={text!r}: expected seconds >= 0, e.g. 60; or unset it (10)")
    return value


class Progress:
    """`update(n)` like a tqdm bar. `enabled`: the caller's progress switch (a run's `progress`);
    False is silent. The bar is drawn on stderr when that is a terminal; otherwise lines go to
    `file` (stderr) on rank 0 alone (the leader's lines stand for every rank): one as each tenth
    of the way is crossed, at most every `min_interval_s` (line_interval()), and the last, unless
    the stage was over within that interval with nothing said (a stage of seconds says nothing).
    `line(done, note)` replaces a line's default wording."""

    def __init__(self, total: int | None, desc: str, unit: str, enabled: bool, *, initial: int = 0,
                 file: TextIO | None = None, line: Callable[[int, str], str] | None = None,
                 min_interval_s: float | None = None) -> None:
        self.total, self.desc, self.unit, self.done, self.initial = total, desc, unit, initial, initial
        self.file = file or sys.stderr
        self._line = line
        self._note = ""
        self._start = self._said = time.monotonic()
        self._interval = line_interval() if min_interval_s is None else min_interval_s
        self._said_any = False
        # a notebook's stderr is no terminal, but tqdm.auto draws its widget there
        terminal = sys.stderr.isatty() or "ipykernel" in sys.modules
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit) if enabled and terminal else None
        leader = os.environ.get("RANK", "0") == "0"
        # a total of None (a streamed corpus of unknown size) has no tenths: the bar alone
        self.lines = enabled and not terminal and leader and (total or 0) > 0
        self._tenths = initial * 10 // total if self.lines else 0  # tenths of the way already said

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.lines and self.done < self.total and self.done * 10 // self.total > self._tenths:
            # once per tenth crossed (a stage of 19 items said every one of them with total // 10),
            # and not more often than min_interval_s: a stage of seconds needs only its last line
            self._tenths = self.done * 10 // self.total
            if time.monotonic() - self._said >= self._interval:
                self._print()

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
        self._said, self._said_any = time.monotonic(), True

    def close(self) -> None:
        """Closes the bar; the last line (the whole way, or where it stopped) is printed once."""
        if self.bar is not None:
            self.bar.close()
        elif self.lines and self.done > self.initial and (
                self._said_any or time.monotonic() - self._start >= self._interval):
            self._print()
        self.lines = False  # a second close prints nothing

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
