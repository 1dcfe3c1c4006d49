"""User-facing errors: the CLI prints these as one line (no traceback) and exits non-zero; and the
helpers that word leti's messages."""


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
