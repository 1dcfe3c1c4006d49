"""Append-only JSONL storage of samples, keyed by (problem_id, sample_idx), resumable.

A run killed mid-write (kill -9, OOM) leaves at most one partial last line. Readers drop it;
the next append first truncates the file back to the end of the last good line, so the file
stays valid JSONL and resumes from `done_keys`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, fields
from pathlib import Path

from leti.errors import LetiError, naming_errors, open_naming_errors
from leti.sampling.base import Sample

_FIELDS = {f.name for f in fields(Sample)}


def _parse(line: bytes, path: Path, lineno: int) -> Sample:
    """One JSON line -> Sample; raises ValueError (caller decides if that is fatal)."""
    record = json.loads(line)
    if not isinstance(record, dict) or set(record) != _FIELDS:
        got = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise LetiError(
            f"{path}:{lineno}: sample record has fields {got}, expected {sorted(_FIELDS)}; "
            "the file was not written by leti.sampling.io"
        )
    return Sample(**record)


def _scan(path: Path) -> tuple[list[Sample], int]:
    """Parse the file; returns (samples, byte offset just after the last good line). A bad
    last line (partial write) is dropped; a bad line anywhere else is an error."""
    lines = path.read_bytes().splitlines(keepends=True)
    samples: list[Sample] = []
    good_end = 0
    for i, line in enumerate(lines):
        if line.strip():
            try:
                samples.append(_parse(line, path, i + 1))
            except (ValueError, TypeError) as err:
                if i == len(lines) - 1:
                    break  # truncated final write: drop it
                raise LetiError(
                    f"{path}:{i + 1}: not a valid sample line ({err}); fix or delete that line"
                ) from None
        # A complete record cut just before its newline is kept; append adds the newline.
        good_end += len(line)
    return samples, good_end


def read_samples_jsonl(path: str | Path) -> list[Sample]:
    """All samples in the file, in file order; a partial last line is ignored."""
    path = Path(path)
    if not path.exists():
        raise LetiError(f"samples file {path} does not exist; check the run directory")
    return _scan(path)[0]


def done_keys(path: str | Path) -> set[tuple[str, int]]:
    """(problem_id, sample_idx) already stored; empty when the file does not exist yet."""
    path = Path(path)
    if not path.exists():
        return set()
    return {s.key for s in _scan(path)[0]}


def append_samples_jsonl(path: str | Path, samples: Iterable[Sample]) -> int:
    """Append samples one line each, flushing per line so a lazy sampler's output is on disk
    as it arrives. Repairs a partial last line first. Returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        _, good_end = _scan(path)
        with open(path, "r+b") as f:
            f.truncate(good_end)
            if good_end > 0:
                f.seek(good_end - 1)
                if f.read(1) != b"\n":
                    f.write(b"\n")
    count = 0
    with open_naming_errors(path, "ab") as f:
        for sample in samples:
            if not isinstance(sample, Sample):
                raise LetiError(f"append_samples_jsonl got {type(sample).__name__}, not a Sample")
            # One write per line: a crash leaves at most one partial line, never interleaved.
            # Only the writes name the file: `samples` may be a lazy sampler with OSErrors of its own.
            with naming_errors(path):
                f.write((json.dumps(asdict(sample), ensure_ascii=False) + "\n").encode())
                f.flush()
            count += 1
        with naming_errors(path):
            os.fsync(f.fileno())
    return count
