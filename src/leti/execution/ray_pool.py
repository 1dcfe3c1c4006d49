"""Execution over a Ray cluster (`execution.backend: ray`, `pip install 'leti[ray]'`).

Each Ray actor owns an ordinary local `Executor` (same sandbox, same worker protocol, same
feedback formatting), so a program gives the same `ExecutionResult` on either backend; Ray only
decides which machine runs it. Actors are threaded (max_concurrency = workers) so that one
actor keeps all its sandboxed workers busy. leti and bubblewrap must be installed on every node.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

from leti.errors import LetiError, message_line
from leti.execution.config import ExecutionConfig
from leti.execution.pool import NO_SANDBOX_WARNING, Executor
from leti.execution.records import ExecutionResult, Program
from leti.execution.sandbox import SandboxUnavailable

# How long the actors may take to start (a Ray worker process, leti's import, the sandbox probe)
# before leti gives up: an actor whose CPUs other jobs hold stays pending without a word.
ACTOR_START_TIMEOUT_S = 120.0
# The same with an explicit execution.ray_actors that the live nodes cannot hold yet: on an
# autoscaling cluster the pending actors are what makes the autoscaler add nodes, which take
# minutes to boot (a cloud instance, then Ray and leti on it).
AUTOSCALE_START_TIMEOUT_S = 900.0

# How long to try a TCP connection to an explicit execution.ray_address before ray.init, which
# retries an unreachable GCS for minutes and a Ray Client address for 30 s.
CONNECT_TIMEOUT_S = 10.0

_ADDRESS_FIX = ("start the cluster (`ray start --head` on its head node), or set execution.ray_address to the "
                "head node's address (host:6379, or ray://host:10001 for Ray Client), or leave it unset for a "
                "local Ray instance")


class _ExecutorActor:
    """Runs inside a Ray worker process: a local executor serving this actor's calls."""

    def __init__(self, config: ExecutionConfig) -> None:
        # A refusal (no sandbox on this node) is kept for started() to return: raised here, it
        # reached the driver only as the text of an ActorDiedError, a traceback with no type.
        self.executor: Executor | None = None
        self.refusal: tuple[str, bool | None] | None = None
        try:
            self.executor = Executor(config)
        except SandboxUnavailable as e:
            self.refusal = (e.problem, e.opt_out)
        except LetiError as e:
            self.refusal = (str(e), None)

    def run(self, program: Program) -> ExecutionResult:
        assert self.executor is not None  # the driver uses no actor that refused
        return self.executor.submit(program).result()

    def started(self) -> tuple[str, tuple[str, bool | None] | None]:
        """(this actor's node id, its refusal or None)."""
        import ray

        return ray.get_runtime_context().get_node_id(), self.refusal

    def close(self) -> None:
        if self.executor is not None:
            self.executor.close()


def _effective_address(configured: str | None) -> tuple[str | None, str]:
    """The address ray.init will use (RAY_ADDRESS overrides None and 'auto' there) and the
    setting to name for it."""
    env = os.environ.get("RAY_ADDRESS")
    if env and configured in (None, "auto"):
        return env, f"RAY_ADDRESS={env}"
    return configured, f"execution.ray_address={configured}"


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of 'host:port' or 'ray://host[:port]'; None for what ray.init resolves itself
    ('auto', 'local') or refuses with its own message."""
    client = address.startswith("ray://")
    rest = address.removeprefix("ray://").split("/")[0]
    host, sep, port = rest.rpartition(":")
    if not sep and client:
        host, port = rest, "10001"  # Ray Client's default port
    host = host.strip("[]")  # [IPv6]:port
    if not host or not port.isdigit():
        return None
    return host, int(port)


def _check_reachable(address: str, setting: str, fix: str = _ADDRESS_FIX) -> None:
    target = _host_port(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise LetiError(f"{setting}: cannot connect to {target[0]}:{target[1]} ({reason}); {fix}") from None


def _recorded(address: str | None) -> str | None:
    """The cluster ray.init(address) joins for None or 'auto': the one `ray start` recorded (for
    'auto', else one running here); None: it starts a local instance. A record left by a cluster
    that is gone made ray.init retry it for minutes."""
    try:
        from ray._private.services import (
            canonicalize_bootstrap_address,
            canonicalize_bootstrap_address_or_die,
        )
    except ImportError:  # Ray moved them: ray.init looks, with its own errors
        return address
    if address is None:
        return canonicalize_bootstrap_address(None)
    try:
        return canonicalize_bootstrap_address_or_die(address)
    except ConnectionError as e:
        reason = ("no running Ray cluster found on this machine" if "Could not find" in str(e)
                  else message_line(e).split(" Please specify")[0].rstrip("."))
        raise LetiError(f"execution.ray_address={address}: {reason}; {_ADDRESS_FIX}") from None


def _init_ray(configured: str | None) -> None:
    """ray.init, with its errors as one line and leti's signal handlers kept."""
    import ray

    address, setting = _effective_address(configured)
    fix = _ADDRESS_FIX
    if address in (None, "auto"):
        address = _recorded(address)
        if configured is None and address is not None:
            setting = f"execution.ray_address unset, so Ray joins the cluster that `ray start` recorded here ({address})"
            fix = ("start that cluster again, or run `ray stop` to forget it (leti then starts a local Ray instance), "
                   "or set execution.ray_address to a running cluster")
    if address is not None:
        _check_reachable(address, setting, fix)
    # ray.init installs its own SIGTERM handler (and its core worker a C++ one that aborts the
    # process with a stack dump), which replaced leti's clean stop (cli._signals_as_exceptions).
    saved: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        saved = {s: h for s in (signal.SIGTERM, signal.SIGINT) if (h := signal.getsignal(s)) is not None}
    try:
        ray.init(address=configured, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as e:
        # Ray's own advice names a `--address` flag that leti does not have
        reason = message_line(e).split(" Please specify")[0].rstrip(".")
        if address is None:
            raise LetiError(f"execution.backend=ray: starting a local Ray instance failed ({reason}); Ray's logs are "
                            "under /tmp/ray/session_latest/logs; or set execution.ray_address to a running "
                            "cluster") from None
        if address == "auto":  # _recorded could not look
            reason = "no running Ray cluster found on this machine"
        raise LetiError(f"{setting}: {reason}; {_ADDRESS_FIX}") from None
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _node_names() -> dict[str, str]:
    """Node id -> how to name it in a message: the start of its id (as `ray list nodes` shows it)
    and its IP (several nodes may share one)."""
    import ray

    return {n["NodeID"]: f"{n['NodeID'][:8]} at {n['NodeManagerAddress']}" for n in ray.nodes()}


def _live_cpus() -> list[float]:
    """Each live node's CPUs (its total, what Ray places actors by)."""
    import ray

    return [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]]


def _fitting(cpus: list[float], workers: int) -> int:
    """How many actors of `workers` CPUs these nodes hold (an actor reserves them on one node)."""
    return sum(int(c // workers) for c in cpus)


def _actor_count(config: ExecutionConfig, workers: int) -> tuple[int, int]:
    """(the actors to start, how many of them the cluster's live nodes hold now).

    An explicit execution.ray_actors is taken as it is: on an autoscaling cluster the nodes for
    it may not be up yet (a head with no CPUs), and it is the pending actors that make the
    autoscaler add them. Unset, the count is what the live nodes hold, and none fitting (workers
    beyond every node's CPUs) is refused: Ray would leave such an actor pending without a word."""
    cpus = _live_cpus()
    fits = _fitting(cpus, workers)
    if config.ray_actors is not None:
        return config.ray_actors, fits
    largest = int(max(cpus, default=0))
    if workers > largest:
        setting = (f"execution.workers={workers}" if config.workers is not None
                   else f"execution.workers unset ({workers}, this machine's cores)")
        where = f"{sum(cpus):g} CPU(s) on {len(cpus)} node(s), at most {max(cpus, default=0):g} on one"
        fix = f"set execution.workers to at most {largest}, or add larger nodes" if largest else "add nodes with CPUs"
        raise LetiError(f"{setting}: each Ray actor reserves one CPU per worker on one node, and the Ray cluster has "
                        f"{where}; {fix} (on an autoscaling cluster, set execution.ray_actors: leti then waits for "
                        "the autoscaler to add nodes for them)")
    return fits, fits


class RayExecutor:
    """Same interface as `Executor` (submit -> Future, run keeps input order, context manager)."""

    def __init__(self, config: ExecutionConfig, progress: bool = False) -> None:
        try:
            import ray
        except ImportError:
            raise LetiError("execution.backend='ray' needs Ray: pip install 'leti[ray]' (or use backend='local')") from None
        self.config = config
        self._actors: list[Any] = []
        self._closed = False
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            _init_ray(config.ray_address)
        try:
            self._start(config)
        except BaseException:
            self.abort()  # no __exit__ runs for a constructor that raised: the actors, our Ray
            raise

    def _start(self, config: ExecutionConfig) -> None:
        import ray

        # workers: null is this (the driver's) machine's core count, for every actor, so that
        # the actors' CPU reservations match the executors they start
        workers = config.worker_count
        n, fits = _actor_count(config, workers)
        if config.sandbox == "none":  # the actors' own warning goes to their logs, not to the user
            print(NO_SANDBOX_WARNING, file=sys.stderr)
        timeout = ACTOR_START_TIMEOUT_S
        if n > fits:  # explicit ray_actors: says why nothing happens for minutes
            timeout = AUTOSCALE_START_TIMEOUT_S
            print(f"leti: waiting for Ray to place {n} actor(s) of {workers} CPU(s) each; the cluster's live nodes "
                  f"hold {fits} now (an autoscaler may add nodes; up to {timeout:g} s)", file=sys.stderr, flush=True)
        actor_cls = ray.remote(num_cpus=workers, max_concurrency=workers)(_ExecutorActor)
        local = replace(config, backend="local", workers=workers)
        self._actors = [actor_cls.options(scheduling_strategy="SPREAD").remote(local) for _ in range(n)]
        # Waits for every actor to start (so a bad node fails here, not mid-phase) and tells the
        # user where the programs will run.
        try:
            started = ray.get([a.started.remote() for a in self._actors], timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            free, total = ray.available_resources().get("CPU", 0.0), ray.cluster_resources().get("CPU", 0.0)
            fits = _fitting(_live_cpus(), workers)
            if fits < n:  # no autoscaler, or it did not (or may not) add the nodes
                why = f"the cluster's live nodes hold {fits} such actor(s) even now, and no node was added for the rest"
                fix = "add nodes (`ray status` shows what an autoscaler did)"
            else:
                why = ("other jobs may hold the rest" if free < workers
                       else "the nodes were slow to start them; Ray's logs on the nodes say why")
                fix = "free the cluster's CPUs"
            raise LetiError(f"execution on Ray: {n} actor(s) of {workers} CPU(s) each did not start within "
                            f"{timeout:g} s ({free:g} of the cluster's {total:g} CPU(s) are free; {why}); "
                            f"{fix}, or lower execution.ray_actors or execution.workers") from None
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
            # e.g. leti missing or another version on a node: the actor's traceback ends in why
            text = getattr(e, "error_msg", None) or str(e)
            last = next((x.strip() for x in reversed(text.splitlines()) if x.strip()), type(e).__name__)
            raise LetiError(f"execution on Ray: an actor failed to start ({last}); install the same leti (and "
                            "bubblewrap) on every node of the cluster") from None
        names = _node_names()
        self._node_of = [names.get(node, node) for node, _ in started]
        refused = [(name, refusal) for name, (_, refusal) in zip(self._node_of, started, strict=True) if refusal]
        if refused:
            nodes = ", ".join(dict.fromkeys(name for name, _ in refused))
            problem, opt_out = refused[0][1]
            where = f"Ray node{'s' if len({name for name, _ in refused}) > 1 else ''} {nodes}: "
            if opt_out is None:
                raise LetiError(where + problem)
            # the same type as the local pool's, so that the CLI adds the opt-out of the command
            raise SandboxUnavailable(where + problem, opt_out=opt_out)
        self.nodes = len(set(self._node_of))
        kind = "sandboxed worker(s)" if config.sandbox != "none" else "worker(s) WITHOUT a sandbox"
        print(f"leti: executing on Ray: {n} actor(s) of {workers} {kind} on {self.nodes} node(s)")
        self._turn = itertools.cycle(range(n))

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

    def _lost(self, k: int, error: Exception) -> LetiError:
        text = message_line(error).rstrip(".")
        reason = text[:1].lower() + text[1:]
        return LetiError(f"execution on Ray lost an actor on node {self._node_of[k]} ({reason}); "
                         "run the same command again to resume")

    def submit(self, program: Program) -> Future:
        if self._closed:
            raise RuntimeError("RayExecutor is closed")
        import ray

        # Round robin: programs are short and similar, so this balances as well as a queue.
        k = next(self._turn)
        inner = self._actors[k].run.remote(program).future()
        outer: Future = Future()

        def settle(done: Future) -> None:
            # A dead actor (its node lost, its process killed) came out of fut.result() in the
            # run's stages as Ray's 50-line traceback
            error = done.exception()
            if error is None:
                outer.set_result(done.result())
            elif isinstance(error, ray.exceptions.RayActorError):
                outer.set_exception(self._lost(k, error))
            else:
                outer.set_exception(error)

        inner.add_done_callback(settle)
        return outer

    def run(self, programs: Iterable[Program]) -> list[ExecutionResult]:
        return [f.result() for f in [self.submit(p) for p in programs]]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        import ray

        try:
            for ref in [a.close.remote() for a in self._actors]:
                try:
                    ray.get(ref)
                except ray.exceptions.RayActorError:  # died after its last result: its workers with it
                    pass
            for actor in self._actors:
                ray.kill(actor)
        finally:
            if self._owns_ray:
                ray.shutdown()


def make_executor(config: ExecutionConfig, progress: bool = False) -> Executor | RayExecutor:
    """The executor named by config.backend."""
    if config.backend == "ray":
        return RayExecutor(config, progress=progress)
    return Executor(config, progress=progress)
