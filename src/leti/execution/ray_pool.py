"""Execution over a Ray cluster (`execution.backend: ray`, `pip install 'leti[ray]'`).

Each Ray actor owns an ordinary local `Executor` (same sandbox, same worker protocol, same
feedback formatting), so a program gives the same `ExecutionResult` on either backend; Ray only
decides which machine runs it. Actors are threaded (max_concurrency = workers) so that one
actor keeps all its sandboxed workers busy. leti and bubblewrap must be installed on every node.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import replace

from leti.errors import LetiError
from leti.execution.config import ExecutionConfig
from leti.execution.pool import Executor
from leti.execution.records import ExecutionResult, Program


class _ExecutorActor:
    """Runs inside a Ray worker process: a local executor serving this actor's calls."""

    def __init__(self, config: ExecutionConfig) -> None:
        self.executor = Executor(config)

    def run(self, program: Program) -> ExecutionResult:
        return self.executor.submit(program).result()

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def close(self) -> None:
        self.executor.close()


class RayExecutor:
    """Same interface as `Executor` (submit -> Future, run keeps input order, context manager)."""

    def __init__(self, config: ExecutionConfig, progress: bool = False) -> None:
        try:
            import ray
        except ImportError:
            raise LetiError("execution.backend='ray' needs Ray: pip install 'leti[ray]' (or use backend='local')") from None
        self.config = config
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False)
        # workers: null is this (the driver's) machine's core count, for every actor, so that
        # the actors' CPU reservations match the executors they start
        workers = config.worker_count
        n = config.ray_actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // workers)
        actor_cls = ray.remote(num_cpus=workers, max_concurrency=workers)(_ExecutorActor)
        local = replace(config, backend="local", workers=workers)
        self._actors = [actor_cls.options(scheduling_strategy="SPREAD").remote(local) for _ in range(n)]
        # Waits for every actor to start (so a bad node fails here, not mid-phase) and tells the
        # user where the programs will run.
        self.nodes = len(set(ray.get([a.node_id.remote() for a in self._actors])))
        print(f"leti: executing on Ray: {n} actor(s) of {workers} sandboxed worker(s) on {self.nodes} node(s)")
        self._turn = itertools.cycle(range(n))
        self._closed = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:  # Ctrl-C, SIGTERM: stop now (see abort)
            self.abort()
        else:
            self.close()

    def abort(self) -> None:
        """Kill the actors with the programs they run. close() asks each actor to close its
        executor, a call that queues behind every program already submitted to it, so a Ctrl-C
        waited for all of them. A killed actor's sandboxed workers die with it (bwrap
        --die-with-parent; without a sandbox the zygote sees its parent gone, worker.py)."""
        if self._closed:
            return
        self._closed = True
        import ray

        for actor in self._actors:
            try:
                ray.kill(actor)
            except Exception:  # already gone: nothing to stop
                pass
        if self._owns_ray:
            ray.shutdown()

    def submit(self, program: Program) -> Future:
        if self._closed:
            raise RuntimeError("RayExecutor is closed")
        # Round robin: programs are short and similar, so this balances as well as a queue.
        return self._actors[next(self._turn)].run.remote(program).future()

    def run(self, programs: Iterable[Program]) -> list[ExecutionResult]:
        return [f.result() for f in [self.submit(p) for p in programs]]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        import ray

        ray.get([a.close.remote() for a in self._actors])
        for actor in self._actors:
            ray.kill(actor)
        if self._owns_ray:
            ray.shutdown()


def make_executor(config: ExecutionConfig, progress: bool = False) -> Executor | RayExecutor:
    """The executor named by config.backend."""
    if config.backend == "ray":
        return RayExecutor(config, progress=progress)
    return Executor(config, progress=progress)
