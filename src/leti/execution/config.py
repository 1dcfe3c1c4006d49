"""Executor settings. Defaults follow the LeTI paper (5 s per program) and issue #3."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Literal

FeedbackStyle = Literal["paper", "rich"]
SandboxMode = Literal["auto", "bwrap", "none"]
Backend = Literal["local", "ray"]


# Longest time limit per program. Programs graded by tests run for seconds to minutes; from about
# 9.2e9 s the host's select() overflows and every program is reported "crashed". One day is far
# beyond any real test suite and far below that.
MAX_TIMEOUT_S = 86400

# Most sandboxed workers on one machine (or per Ray actor). Each is a sandboxed interpreter and a
# host thread; the largest machines have a few hundred cores, so more is a typo (100000 ran out
# of threads). Absolute, not per core: a config is validated where it is written (a login node),
# not only on the node that runs it.
MAX_WORKERS = 1024

# Largest memory_mb and file_size_mb. The sandbox sets them as byte limits (MiB << 20, plus a few
# MiB of reserve) in 64-bit signed rlimits: from 2**43 MiB they overflow and every program is
# reported crashed or failed. 2**40 MiB (an exbibyte) still works and is far beyond any machine.
MAX_LIMIT_MB = 2**40


def _default_workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


@dataclass
class ExecutionConfig:
    timeout_s: float = field(default=5.0, metadata={"help": "Wall-clock limit per program (paper: 5 s; at most 86400)."})
    memory_mb: int = field(default=4096, metadata={"help": "Address-space limit per program, MiB."})
    # None, not this machine's count: a config printed by `leti config` on a 1-core login node
    # pinned 1 worker for the GPU node that ran it. Resolved where the executor starts.
    workers: int | None = field(default=None, metadata={"help": "Parallel sandboxed workers, at most 1024 (null: one per core of the machine leti runs on; with backend 'ray', that count for every actor)."})
    max_output_bytes: int = field(default=65536, metadata={"help": "Cap on captured stdout and on stderr, each."})
    feedback_style: FeedbackStyle = field(default="paper", metadata={"help": "'paper': trimmed traceback; 'rich': also the values a failing assert compared."})
    feedback_max_bytes: int = field(default=4096, metadata={"help": "Feedback text is cut in the middle to at most this many UTF-8 bytes."})
    sandbox: SandboxMode = field(default="auto", metadata={"help": "'auto'/'bwrap': bubblewrap namespaces (required); 'none': no isolation (unsafe, explicit opt-in)."})
    file_size_mb: int = field(default=64, metadata={"help": "Largest file a program may write, MiB."})
    open_files: int = field(default=256, metadata={"help": "Open file descriptors per program."})
    max_processes: int = field(default=256, metadata={"help": "Processes/threads per worker (pids cgroup or RLIMIT_NPROC)."})
    backend: Backend = field(default="local", metadata={"help": "'local': worker pool on this machine; 'ray': the same sandboxed pools inside Ray actors spread over a cluster (pip install 'leti[ray]')."})
    ray_address: str | None = field(default=None, metadata={"help": "Ray cluster to join ('auto', 'ray://host:10001'); None: an existing ray.init, else a local Ray instance."})
    ray_actors: int | None = field(default=None, metadata={"help": "Ray actors, each with `workers` sandboxed workers (None: as many as the live nodes hold: each node's CPUs // workers, summed; set it on an autoscaling cluster, where leti then waits up to 15 min for nodes)."})

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:  # `not x > 0` also refuses nan
            raise ValueError(f"execution.timeout_s must be > 0, got {self.timeout_s!r}")
        if not math.isfinite(self.timeout_s):  # inf crashes every sandboxed worker (RLIMIT_CPU)
            raise ValueError(f"execution.timeout_s must be a finite number of seconds, got {self.timeout_s!r}")
        if self.timeout_s > MAX_TIMEOUT_S:
            raise ValueError(f"execution.timeout_s must be at most {MAX_TIMEOUT_S} seconds (one day), "
                             f"got {self.timeout_s!r}")
        if self.memory_mb < 64:
            raise ValueError(f"execution.memory_mb must be >= 64, got {self.memory_mb!r}")
        for name in ("memory_mb", "file_size_mb"):
            if getattr(self, name) > MAX_LIMIT_MB:
                raise ValueError(f"execution.{name} must be at most {MAX_LIMIT_MB} (MiB, 2**40), got {getattr(self, name)!r}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"execution.workers must be >= 1, got {self.workers!r}")
        if self.workers is not None and self.workers > MAX_WORKERS:
            raise ValueError(f"execution.workers must be at most {MAX_WORKERS}, got {self.workers!r}")
        if self.feedback_style not in ("paper", "rich"):
            raise ValueError(f"execution.feedback_style must be 'paper' or 'rich', got {self.feedback_style!r}")
        if self.sandbox not in ("auto", "bwrap", "none"):
            raise ValueError(f"execution.sandbox must be 'auto', 'bwrap' or 'none', got {self.sandbox!r}")
        if self.backend not in ("local", "ray"):
            raise ValueError(f"execution.backend must be 'local' or 'ray', got {self.backend!r}")
        # A negative limit silently means "no limit" to setrlimit; below 4 processes the
        # sandbox's own worker processes use up the budget and every program "crashes".
        for name, low in (("max_output_bytes", 0), ("file_size_mb", 0), ("open_files", 1), ("max_processes", 4)):
            if getattr(self, name) < low:
                raise ValueError(f"execution.{name} must be >= {low}, got {getattr(self, name)!r}")
        if self.ray_actors is not None and self.ray_actors < 1:
            raise ValueError(f"execution.ray_actors must be >= 1 or null, got {self.ray_actors!r}")
        if self.feedback_max_bytes < 256:
            raise ValueError(f"execution.feedback_max_bytes must be >= 256, got {self.feedback_max_bytes!r}")

    @property
    def worker_count(self) -> int:
        """`workers`, or one per core available to this process when it is None."""
        return self.workers if self.workers is not None else _default_workers()
