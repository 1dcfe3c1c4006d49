"""Multi-process runs: `accelerate launch [--config_file configs/accelerate/ddp.yaml] -m leti run CONFIG`.

Rank 0, the leader, runs the loop as a single process does: it executes, evaluates, saves
checkpoints and is the only process that touches the run directory (lock, config, samples,
metrics), so resuming works as in a single process. The other ranks (followers) do two kinds of
jobs that the leader broadcasts; `None` tells them the run is over:

- `SampleJob` (data-parallel sampling, `sampling.data_parallel`): the keys still to sample
  (problem_id, sample_idx) are dealt round robin, every rank generates its share on its own
  device, and the samples travel to the leader round by round (one batch per rank per round),
  where they are executed and appended to samples.jsonl like the leader's own. A sample is
  seeded by its key, not by the rank that draws it, so the split does not change what is drawn;
  a crash loses at most the round in flight.
- `TrainJob`: every rank loads the checkpoint to start from and runs the same `train()`, where
  Accelerate wraps the model in DDP and shards the batches across ranks.

Control messages and samples go over a gloo (CPU) group with a long timeout: followers wait in
a broadcast for as long as the leader executes and evaluates, which can take hours, and the
default NCCL timeout (10 minutes) would abort them.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from itertools import islice
from typing import Any

from leti.loop.paths import absolute_model
from leti.sampling.base import Sample, Sampler, SampleRequest, SamplingConfig, samples_per_request

# How long a follower waits for the leader's next message (sampling + evaluation of one
# iteration of a large run).
_WAIT = timedelta(hours=24)


@dataclass(frozen=True)
class TrainJob:
    """What every rank needs to run the same training step of one iteration."""

    source: str  # checkpoint (directory or hub id) that training starts from
    texts: list[str]
    seed: int
    optimizer_from: str | None = None  # the AdamW state to go on from (a file in `source`), or a new one
    heldout_before: bool = False  # measure the held-out loss before training too (the base model's)
    revision: str | None = None  # the commit the leader pinned the hub model to (checks.pin_model_revision)


@dataclass(frozen=True)
class SampleJob:
    """One sampling phase spread over all ranks: rank r generates `keys[r::world_size]`."""

    source: str  # checkpoint (directory or hub id) to sample from
    requests: list[SampleRequest]
    sampling: SamplingConfig
    keys: list[tuple[str, int]]  # every (problem_id, sample_idx) still to generate, in order
    revision: str | None = None  # as TrainJob's


class Group:
    """This process's place in a multi-process launch (a single process is a group of one)."""

    def __init__(self, device: str = "auto") -> None:
        self.world_size, self.rank = launch_env()
        self.broken = False  # the leader failed inside a collective stage (see `stage`)
        self._control = None
        if self.world_size > 1:
            import torch
            import torch.distributed as dist
            from accelerate import PartialState

            # Initialises the default process group (NCCL on GPUs, gloo on CPU) that the
            # trainer's Accelerator then reuses; accelerate only takes the CPU path when told.
            cpu = device == "cpu" or not torch.cuda.is_available()
            with _signals_end_the_process():
                PartialState(cpu=cpu, timeout=_WAIT)
                self._control = dist.new_group(backend="gloo", timeout=_WAIT)

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def broadcast(self, job: TrainJob | SampleJob | None) -> TrainJob | SampleJob | None:
        """Leader: send `job`; followers: receive it. A no-op in a single process."""
        if self._control is None:
            return job
        import torch.distributed as dist

        box = [job]
        dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]

    @contextmanager
    def stage(self) -> Iterator[None]:
        """A stage in which every rank takes part in collectives. If the leader fails inside
        one, the followers are blocked in a collective that a stop message cannot reach; the
        leader then skips that message and exits, and the launcher stops the other ranks."""
        try:
            yield
        except BaseException:
            self.broken = True
            raise

    def check_together(self, check: Callable[[], None]) -> None:
        """Run `check` on every rank and act on every rank's outcome: a LetiError on any rank
        stops them all. Rank 0 prints it (its own, else the first failing rank's, named); the
        others exit quietly (ReportedByLeader). The same refusal on every rank was printed once
        per rank, and one on some ranks only left the others to fail at their first collective
        with gloo's "Connection closed by peer" traceback."""
        from leti.errors import LetiError, ReportedByLeader

        try:
            check()
            mine = None
        except LetiError as e:
            mine = str(e)
        failed = [(rank, message) for rank, message in enumerate(self.gather_all(mine)) if message is not None]
        if not failed:
            return
        if not self.is_leader:
            raise ReportedByLeader(mine or failed[0][1])
        rank, message = (0, mine) if mine is not None else failed[0]
        raise LetiError(message if rank == 0 else f"rank {rank}: {message}")

    def gather_all(self, obj: Any) -> list[Any]:
        """Every rank: every rank's `obj`, in rank order ([obj] in a single process)."""
        if self._control is None:
            return [obj]
        import torch.distributed as dist

        every: list[Any] = [None] * self.world_size
        dist.all_gather_object(every, obj, group=self._control)
        return every

    def gather_samples(self, local: Iterator[Sample], round_size: int) -> Iterator[tuple[int, Sample]]:
        """Every rank: take up to `round_size` samples from `local`, send them to the leader;
        repeat until all ranks are exhausted. The leader yields (rank, sample) for every rank's
        samples (its own first in each round); followers yield nothing."""
        import torch
        import torch.distributed as dist

        while True:
            mine = list(islice(local, round_size))
            box: list[Any] | None = [None] * self.world_size if self.is_leader else None
            dist.gather_object(mine, box, dst=0, group=self._control)
            if box is not None:
                for rank, part in enumerate(box):
                    yield from ((rank, s) for s in part)
            active = torch.tensor([len(mine)], dtype=torch.long)
            dist.all_reduce(active, group=self._control)
            if int(active.item()) == 0:
                return

    def close(self) -> None:
        """Tear the process groups down before exit (left to interpreter shutdown, gloo can
        abort the process: "terminate called without an active exception")."""
        if self._control is not None:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._control = None


@contextmanager
def _signals_end_the_process() -> Iterator[None]:
    """SIGINT and SIGTERM at their default action (the process ends) while the ranks join: the
    join blocks in C++ until every rank came (for up to _WAIT when one never does), where
    Python's handlers, leti's clean stop among them, never get to run, and the process ignored
    Ctrl-C and its launcher's SIGTERM. Nothing has been written yet that a stop would have to
    save."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in kept:
        signal.signal(s, signal.SIG_DFL)
    try:
        yield
    finally:
        for s, handler in kept.items():
            signal.signal(s, handler)


def launch_env() -> tuple[int, int]:
    """(world size, rank) from the launcher's variables, checked: stray ones left in a shell made a
    plain `leti run` follow a leader that never came (RANK=1: exit 0, nothing done), or fail
    inside Accelerate (LOCAL_RANK=1, or WORLD_SIZE=2 without MASTER_ADDR) after sampling."""
    from leti.errors import LetiError

    env = os.environ
    values = {}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        raw = env.get(name)
        if raw is not None and not raw.strip().lstrip("-").isdigit():
            raise LetiError(f"environment variable {name}={raw!r} is not an integer; unset it, or launch with "
                            "torchrun / accelerate launch, which set it")
        values[name] = None if raw is None else int(raw)
    world = values["WORLD_SIZE"] or 1
    hint = "a launcher (torchrun, accelerate launch) sets them together; unset {} to run as one process"
    if world < 2:
        for name in ("RANK", "LOCAL_RANK"):
            if values[name] not in (None, 0, -1):
                raise LetiError(f"environment variable {name}={values[name]} is set but WORLD_SIZE is "
                                f"{env.get('WORLD_SIZE', 'not')}{'' if 'WORLD_SIZE' in env else ' set'}: {hint.format(name)}")
        return 1, 0
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
    if missing:
        raise LetiError(f"environment variable WORLD_SIZE={world} is set but {', '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} not: {hint.format('WORLD_SIZE')}")
    if not 0 <= values["RANK"] < world:
        raise LetiError(f"environment variable RANK={values['RANK']} is not below WORLD_SIZE={world}: {hint.format('both')}")
    return world, values["RANK"]


def shared_path(source: str) -> str:
    """A checkpoint directory as the other ranks must be told it: absolute. Each loads it against
    its own current directory, and on another node a relative --run-dir named whatever that
    directory held there (a stale copy was sampled from without a word). Hub ids unchanged."""
    return absolute_model(source)


def local_device(device: str) -> str:
    """The device of this rank: 'auto' and 'cuda' mean this rank's own GPU (LOCAL_RANK)."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu" if device == "auto" else device


def check_same_config(cfg, group: Group) -> None:
    """Every rank runs the config it was started with: a follower samples and trains with its
    own. One whose YAML or --set differed (another node's copy) cut other batches, and DDP's
    collectives then waited for each other for _WAIT (24 h). Refused on every rank, naming the
    first field that differs. `progress` (bars on a terminal, not on a log file) and `execution`
    (the leader alone executes; its workers default to the machine's cores) may differ."""
    from leti.config import config_to_dict, flatten_config, yaml_value
    from leti.errors import LetiError
    from leti.loop.paths import PATH_FIELDS

    mine = {k: v for k, v in flatten_config(config_to_dict(cfg)).items()
            if k != "progress" and not k.startswith("execution.")}
    every = group.gather_all(mine)
    for rank, theirs in enumerate(every[1:], start=1):
        if theirs != every[0]:
            key = next(k for k in sorted(set(theirs) | set(every[0])) if theirs.get(k) != every[0].get(k))
            # run() made local paths absolute against each process's directory: the same relative
            # --set differs when the nodes started in different directories
            where = (" (a relative path is read in each process's own directory: give it as an absolute path, or "
                     "start every process in the same directory)" if key in PATH_FIELDS else "")
            raise LetiError(f"rank {rank} was started with {key}={yaml_value(theirs.get(key))} but rank 0 with "
                            f"{key}={yaml_value(every[0].get(key))}; start every process with the same config "
                            f"(the same file and --set on every node){where}")


def check_launch(cfg, group: Group, carry: bool = False) -> None:
    """Refuse settings that cannot work with this many processes or this launcher's sharding
    (every rank raises the same). `carry`: training stages carry AdamW's state."""
    from leti.errors import LetiError
    from leti.training.sharded import check_sharding
    from leti.training.trainer import mixed_precision

    cfg.check_weights_dtype()
    check_sharding(cfg.trainer, carry)
    mixed_precision(cfg.trainer.mixed_precision)  # fp16 without a GPU: refused before sampling, not after

    s = cfg.sampling
    if group.world_size > 1 and s.data_parallel and s.backend == "vllm" and s.vllm.tensor_parallel_size > 1:
        raise LetiError(f"sampling.vllm.tensor_parallel_size={s.vllm.tensor_parallel_size} with sampling.data_parallel "
                        f"under {group.world_size} processes would put several engines on the same GPUs; "
                        "set sampling.data_parallel=false (rank 0 samples with a tensor-parallel engine) "
                        "or tensor_parallel_size=1")


def round_size(sampling: SamplingConfig) -> int:
    """Samples per rank per round: one generate call of the backend (an HF batch, a vLLM chunk)."""
    return sampling.vllm.chunk_size if sampling.backend == "vllm" else sampling.batch_size


def shard(job: SampleJob, sampler: Sampler, rank: int, world_size: int) -> Iterator[Sample]:
    """This rank's share of a sampling job: every key not dealt to it is skipped."""
    mine = set(job.keys[rank::world_size])
    skip = {(r.problem_id, i) for r in job.requests for i in range(job.sampling.n)} - mine
    return sampler.sample(job.requests, n=job.sampling.n, skip=skip)


class DataParallelSampler:
    """The leader's view of data-parallel sampling: a `Sampler` whose work is split over every
    rank of the group (followers run `follow`)."""

    def __init__(self, local: Sampler, group: Group, source: str, sampling: SamplingConfig,
                 revision: str | None = None) -> None:
        self.local, self.group, self.source, self.sampling = local, group, shared_path(source), sampling
        self.revision = revision
        self.sampled = [0] * group.world_size  # samples generated by each rank

    def sample(self, requests: list[SampleRequest], n: int | None = None,
               skip: set[tuple[str, int]] | None = None) -> Iterator[Sample]:
        n = samples_per_request(self.sampling, n)
        skip = skip or set()
        keys = [(r.problem_id, i) for r in requests for i in range(n) if (r.problem_id, i) not in skip]
        job = SampleJob(self.source, list(requests), replace(self.sampling, n=n), keys, self.revision)
        with self.group.stage():
            self.group.broadcast(job)
            mine = shard(job, self.local, self.group.rank, self.group.world_size)
            for rank, sample in self.group.gather_samples(mine, round_size(job.sampling)):
                self.sampled[rank] += 1
                yield sample


def follow(cfg, group: Group) -> int:
    """A follower's whole run: do what the leader says, until it says stop. Like the leader, it
    keeps the model or vLLM engine of the last stage while the next one uses the same weights."""
    from leti.loop.slot import ModelSlot

    slot = ModelSlot(cfg.weights_dtype, local_device(cfg.device), cfg.trust_remote_code)
    try:
        while (job := group.broadcast(None)) is not None:
            if isinstance(job, SampleJob):
                _sample(job, group, slot)
            else:
                _train(cfg, job, slot)
            gc.collect()
    finally:
        slot.release()
    return 0


def _sample(job: SampleJob, group: Group, slot) -> None:
    from leti.sampling.base import get_sampler

    mine: Iterator[Sample] = iter(())
    if job.keys[group.rank :: group.world_size]:  # no share (e.g. a resumed phase): load nothing
        slot.revision = job.revision  # the leader resolved it; a follower's own lookup could find another
        model, tok = slot.for_sampling(job.source, job.sampling)
        mine = shard(job, get_sampler(job.sampling, model, tok), group.rank, group.world_size)
    for _ in group.gather_samples(mine, round_size(job.sampling)):
        pass  # a follower's samples go to the leader; nothing comes back


def _train(cfg, job: TrainJob, slot) -> None:
    from leti.training.trainer import train

    slot.revision = job.revision  # as in _sample
    model, tok = slot.get(job.source)
    slot.forget_source()  # trained in place; the leader's checkpoint of the result is read from disk
    # no `log`: the run's trackers are the leader's alone (loop/tracking.py)
    train(model, tok, job.texts, cfg.trainer, seed=job.seed, progress=False, source=job.source,
          optimizer_from=job.optimizer_from, heldout_before=job.heldout_before, revision=job.revision)
    slot.release()
