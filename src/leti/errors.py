"""User-facing errors: the CLI prints these as one line (no traceback) and exits non-zero."""


class LetiError(Exception):
    """Bad input or an unusable environment. The message names the file/line/field and the fix."""


def first_line(error: Exception, limit: int = 200) -> str:
    """The error's type and the first line of its message, capped (hub errors run long)."""
    line = next((x.strip() for x in str(error).splitlines() if x.strip()), "")
    text = f"{type(error).__name__}: {line}" if line else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."
