"""User-facing errors: the CLI prints these as one line (no traceback) and exits non-zero."""


class LetiError(Exception):
    """Bad input or an unusable environment. The message names the file/line/field and the fix."""
