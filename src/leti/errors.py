"""User-facing errors: the CLI prints these as one line (no traceback) and exits non-zero; and the
helpers that word leti's messages."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class LetiError(Exception):
    """Bad input or an unusable environment. The message names the file/line/field and the fix."""


class ReportedByLeader(LetiError):
    """A refusal of a multi-process run that rank 0 prints for all ranks: the others exit with the
    same status without printing it again (a launcher shows every rank's stderr)."""


def message_line(error: Exception) -> str:
    """The first non-blank line of the error's message (library errors run to many lines), or
    the type's name when the message is empty."""
    return next((x.strip() for x in str(error).splitlines() if x.strip()), "") or type(error).__name__


def first_line(error: Exception, limit: int = 200) -> str:
    """The error's type and the first line of its message, capped (hub errors run long)."""
    name = type(error).__name__
    text = f"{name}: {message_line(error)}" if str(error).strip() else name
    return text if len(text) <= limit else text[:limit] + "..."


def plural(n: int, word: str) -> str:
    """"1 iteration", "2 iterations"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def size_text(n: float) -> str:
    """Bytes for a message: GB from 1 GB, MB below (one decimal under 10 MB; "0.0 GB" said nothing)."""
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.1f} MB" if n < 1e7 else f"{n / 1e6:.0f} MB"


@contextmanager
def naming_errors(path: str | Path) -> Iterator[None]:
    """OSErrors from write/flush/fsync/close carry no file name: the disk-full line named nothing
    (`leti: error: No space left on device`). Give them `path`."""
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None


@contextmanager
def open_naming_errors(path: str | Path, mode: str) -> Iterator[IO[Any]]:
    """open(path, mode) whose close goes under naming_errors(path) (its writes are the caller's to
    wrap): after a failed flush the data is still buffered, and close failed again without a name."""
    f = open(path, mode, encoding=None if "b" in mode else "utf-8")
    try:
        yield f
    finally:
        with naming_errors(path):
            f.close()
