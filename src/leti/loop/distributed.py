"""Multi-process runs: `accelerate launch [--config_file configs/accelerate/ddp.yaml] -m leti run CONFIG`.

Rank 0, the leader, runs the loop exactly as a single process does: it samples, executes,
evaluates, saves checkpoints and is the only process that touches the run directory (lock,
config, samples, metrics), so resuming works as in a single process. Training is the one
collective stage: before training, the leader broadcasts a `TrainJob` (checkpoint to start
from, training texts, seed); every other rank (a follower) loads that checkpoint onto its own
device and runs the same `train()`, where Accelerate wraps the model in DDP and shards the
batches across ranks. `None` tells followers the run is over.

Why the leader samples alone: one writer keeps samples.jsonl, its resume keys and the executor
exactly as in the single-process run; splitting sampling across ranks would need per-rank
shards, merging and a distributed resume. The price is that the other GPUs idle while the
leader samples (docs/scaling.md).

Control messages go over a gloo (CPU) group with a long timeout: followers wait in a broadcast
for as long as the leader samples and evaluates, which can take hours, and the default NCCL
timeout (10 minutes) would abort them.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta

# How long a follower waits for the leader's next message (sampling + evaluation of one
# iteration of a large run).
_WAIT = timedelta(hours=24)


@dataclass(frozen=True)
class TrainJob:
    """What every rank needs to run the same training step of one iteration."""

    source: str  # checkpoint (directory or hub id) that training starts from
    texts: list[str]
    seed: int


class Group:
    """This process's place in a multi-process launch (a single process is a group of one)."""

    def __init__(self, device: str = "auto") -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self._control = None
        if self.world_size > 1:
            import torch
            import torch.distributed as dist
            from accelerate import PartialState

            # Initialises the default process group (NCCL on GPUs, gloo on CPU) that the
            # trainer's Accelerator then reuses; accelerate only takes the CPU path when told.
            cpu = device == "cpu" or not torch.cuda.is_available()
            PartialState(cpu=cpu, timeout=_WAIT)
            self._control = dist.new_group(backend="gloo", timeout=_WAIT)

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def broadcast(self, job: TrainJob | None) -> TrainJob | None:
        """Leader: send `job`; followers: receive it. A no-op in a single process."""
        if self._control is None:
            return job
        import torch.distributed as dist

        box = [job]
        dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]


    def close(self) -> None:
        """Tear the process groups down before exit (left to interpreter shutdown, gloo can
        abort the process: "terminate called without an active exception")."""
        if self._control is not None:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._control = None


def local_device(device: str) -> str:
    """The device of this rank: 'auto' and 'cuda' mean this rank's own GPU (LOCAL_RANK)."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu" if device == "auto" else device


def follow(cfg, group: Group) -> int:
    """A follower's whole run: train whenever the leader says so, until it says stop."""
    from leti.model import load_model_and_tokenizer
    from leti.training.trainer import train

    while (job := group.broadcast(None)) is not None:
        model, tok = load_model_and_tokenizer(job.source, dtype=cfg.model_dtype, device=local_device(cfg.device))
        train(model, tok, job.texts, cfg.trainer, seed=job.seed, progress=False)
        del model, tok
        gc.collect()
    return 0
