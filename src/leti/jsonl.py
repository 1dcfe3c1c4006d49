"""Reading user-supplied JSON-lines files: one place that turns a missing file, bad bytes or a
bad line into a one-line LetiError naming the file and line (callers check the fields)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from leti.errors import LetiError


def read_json_lines(path: Path, *, what: str, missing_hint: str, item: str = "JSON object",
                    finite: bool = False) -> Iterator[tuple[str, int, Any]]:
    """Yield (where, line number, parsed value) for every non-blank line of `path`, where `where`
    is "PATH:LINE" for the caller's own error messages. `what` names the file in errors ("task
    file"), `missing_hint` says how to fix a wrong path, `item` what each line must hold.
    `finite`: refuse NaN and Infinity (_no_constant), for a reader that writes its lines back out;
    the others read them, in a field they ignore (another tool's samples file: a score of NaN),
    as Python does."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        where = "" if Path(path).is_absolute() else f" (relative to the current directory {Path.cwd()})"
        raise LetiError(f"{path}: {what} not found{where}; {missing_hint}") from None
    except IsADirectoryError:
        raise LetiError(f"{path}: is a directory, not {'an' if what[:1] in 'aeiou' else 'a'} {what}; {missing_hint}") from None
    except OSError as e:
        raise LetiError(f"{path}: cannot read {what} ({e.strerror or e}); it must be UTF-8 JSON lines") from None
    try:
        text = data.decode("utf-8-sig")  # a BOM (Windows editors write one) is not content
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise LetiError(f"{path}:{line}: byte {data[e.start]:#04x} is not UTF-8; save the {what} as UTF-8") from None
    # Lines end at \n, \r\n or \r only: str.splitlines() also splits at U+2028, U+2029 and U+0085,
    # which JSON allows raw inside strings (json.dumps(..., ensure_ascii=False) writes them so, as
    # leti's own samples.jsonl does), and cut such a line in two ("not valid JSON").
    for lineno, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            value = json.loads(line, object_pairs_hook=_no_repeated_keys, parse_constant=_no_constant if finite else None)
        except _NonFinite as e:
            raise LetiError(f"{where}: {e.constant} is not valid JSON (Python writes it; jq and JavaScript "
                            f"refuse it); write null or a finite number") from None
        except json.JSONDecodeError as e:
            raise LetiError(f"{where}: not valid JSON ({json_error_reason(e, line=False)}); one {item} per line") from None
        except _RepeatedKey as e:
            raise LetiError(f"{where}: key {e.key!r} appears twice in one object; keep one of them") from None
        except RecursionError:  # json.loads recurses: arrays in arrays some 1000 deep
            raise _too_deep(where) from None
        if _deeper_than(value, MAX_DEPTH):
            raise _too_deep(where)
        yield where, lineno, value


class _NonFinite(Exception):
    def __init__(self, constant: str) -> None:
        self.constant = constant


def _no_constant(constant: str) -> Any:
    """NaN, Infinity and -Infinity: json.loads reads them, but they are no JSON, and a line holding
    one was written back out as such (`leti exec`'s output), for other tools to choke on."""
    raise _NonFinite(constant)


# json.loads reads some 1000 levels, and a value it read a little under that raised RecursionError
# later, where json.dumps wrote it again (the lone-surrogate check, `leti exec`'s output): a depth
# no data file needs, under which the callers' own recursion has room.
MAX_DEPTH = 100


def _too_deep(where: str) -> LetiError:
    return LetiError(f"{where}: JSON nested too deeply (more than {MAX_DEPTH} arrays or objects inside each other); "
                     "nest it less deeply")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects in `value` are nested more than `limit` deep (without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False


def json_error_reason(e: json.JSONDecodeError | UnicodeDecodeError, line: bool = True) -> str:
    """Why a JSON text did not parse, with where (`line`: its line too, not only the column):
    e.msg alone ends in a bare "at" (the position is in other attributes)."""
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8"
    at = f"line {e.lineno} column {e.colno}" if line else f"column {e.colno}"
    return f"{e.msg.removesuffix(' at')} at {at}"


class _RepeatedKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads keeps the last of a repeated key ("id": "a", ..., "id": "b" was problem 'b'),
    as a YAML config's repeated key is refused. leti's own files come from json.dumps of dicts,
    which cannot repeat a key."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


def is_number(value: object) -> bool:
    """An int or float as JSON gives them (not a bool, which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def lone_surrogate_error(where: str, field: str) -> LetiError:
    """The refusal of a field whose text holds a lone surrogate (see lone_surrogate)."""
    return LetiError(f"{where}: field {field!r} holds a lone surrogate escape (\\ud800-\\udfff without its pair), "
                     "which is not text; fix or remove that escape")


def lone_surrogate(value: Any) -> bool:
    """Whether a decoded JSON value holds a lone surrogate: a \\uD800-\\uDFFF escape without its
    pair, which json.loads accepts but which is no character (encoding it, tokenizing it or
    hashing a program that holds it raises deep inside)."""
    try:
        (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
