"""Ray execution backend: the same results as the local pool (slow; skipped without Ray, which
the dev extra installs)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from leti.config import load_config
from leti.errors import LetiError
from leti.execution import ExecutionConfig, Program, execute

PROGRAMS = (
    [Program(f"def f(x):\n    return x + {k}\n", f"assert f(1) == {k + 1}", id=f"ok{k}") for k in range(8)]
    + [Program(f"def f(x):\n    return x - {k}\n", f"assert f(1) == {k + 1}", id=f"bad{k}") for k in range(1, 6)]
    + [Program("def f(:\n    pass\n", "", id="syntax"),
       Program("def f():\n    return 1 / 0\n", "f()", id="zero"),
       Program("import sys\nsys.exit(3)\n", "", id="exit"),
       Program("while True:\n    pass\n", "", id="loop"),
       Program("print('hi')\nraise KeyError('k')\n", "", id="key"),
       Program("x = [1] * (10 ** 10)\n", "", id="memory"),
       Program("def f(x):\n    return sorted(x)\n", "assert f([2, 1]) == [2, 1]", id="sorted")]
)


@pytest.mark.slow
def test_ray_backend_gives_the_local_pools_results():
    ray = pytest.importorskip("ray")
    config = ExecutionConfig(timeout_s=2.0, workers=1, memory_mb=512)
    local = execute(PROGRAMS, config)
    # 'local': an instance of its own, whatever cluster this machine has or had
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        from leti.execution.ray_pool import make_executor

        with make_executor(replace(config, backend="ray", ray_actors=2)) as ex:
            remote = ex.run(PROGRAMS)
    finally:
        ray.shutdown()
    assert len(PROGRAMS) == 20
    strip = [replace(r, duration_s=0.0) for r in local], [replace(r, duration_s=0.0) for r in remote]
    assert strip[0] == strip[1]
    assert {r.status.value for r in remote} >= {"passed", "failed", "invalid", "timeout", "memory"}


@pytest.mark.slow
def test_ray_backend_spreads_actors_over_a_two_node_cluster(capsys):
    """A Ray cluster of two nodes (two raylets on this machine, Ray's own multi-node test
    harness) joined by address, as `execution.ray_address` does on a real cluster: one actor
    per node, the local pool's results."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    config = ExecutionConfig(timeout_s=2.0, workers=1, memory_mb=512)
    local = execute(PROGRAMS[:6], config)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        from leti.execution.ray_pool import make_executor

        with make_executor(replace(config, backend="ray", ray_address=cluster.address)) as ex:
            assert ex.nodes == 2  # 2 actors (one per cluster CPU), one on each node
            remote = ex.run(PROGRAMS[:6])
    finally:
        cluster.shutdown()
    assert [replace(r, duration_s=0.0) for r in remote] == [replace(r, duration_s=0.0) for r in local]
    assert "leti: executing on Ray: 2 actor(s) of 1 sandboxed worker(s) on 2 node(s)" in capsys.readouterr().out


def test_execution_backend_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("execution:\n  backend: ray\n  ray_address: auto\n  ray_actors: 4\n")
    cfg = load_config(path)
    assert (cfg.execution.backend, cfg.execution.ray_address, cfg.execution.ray_actors) == ("ray", "auto", 4)
    path.write_text("execution:\n  backend: dask\n")
    with pytest.raises(LetiError, match="backend"):
        load_config(path)
