"""Tasks from the user's own package (entry point group `leti.tasks`), through the real CLI.

The plugin is a real installed distribution: `pip install --target` of a pyproject.toml that
declares the entry points, as README tells users, or a hand-written `.dist-info` (what pip
writes) for the broken variants. It reaches leti through PYTHONPATH, so the test's own venv is
left as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

LETI = [sys.executable, "-m", "leti"]

# A task with a checker of its own (its tests), a metric of its own and its own stops.
TASKS_MODULE = '''
from leti.tasks import EvalDefaults, Problem, Task

WORDS = ["abc", "leti", "racecar", "xy"]


class ReverseTask(Task):
    description = "reverse a string (a plugin task)"
    source = "tests/test_task_plugins.py"
    license = "Apache-2.0"
    stop_sequences = ("\\ndef",)
    eval_defaults = EvalDefaults(n=1, ks=(1,))

    def load_problems(self):
        return [Problem(id=f"rev-{i}", prompt=f"def rev_{i}(s):\\n", split="test",
                        tests=f"assert rev_{i}({w!r}) == {w[::-1]!r}", reference="    return s[::-1]\\n")
                for i, w in enumerate(WORDS)]

    def extra_metrics(self, problems, samples, results):
        return {"mean_completion_chars": sum(len(s.completion) for s in samples) / len(samples)}
'''

# A module whose class registers itself.
MORE_MODULE = '''
from leti.tasks import Problem, Task, register_task


@register_task("upper-plugin")
class UpperTask(Task):
    description = "upper-case a string (a self-registering plugin task)"

    def load_problems(self):
        return [Problem(id="up-0", prompt="def up(s):\\n", tests="assert up('a') == 'A'", split="test",
                        reference="    return s.upper()\\n")]
'''


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def _leti(site: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LETI, *args], env=_env(site), capture_output=True, text=True, timeout=300)


def _dist_info(site: Path, entry_points: str, modules: dict[str, str]) -> Path:
    """What pip leaves in site-packages, written by hand: the package and its .dist-info."""
    for rel, source in modules.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    info = site / "my_leti_tasks-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-leti-tasks\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return site


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> Path:
    """The plugin package installed by pip from its pyproject.toml, as a user would."""
    src = tmp_path_factory.mktemp("plugin-src")
    (src / "my_leti_tasks").mkdir()
    (src / "my_leti_tasks" / "__init__.py").write_text(TASKS_MODULE)
    (src / "my_leti_tasks" / "more.py").write_text(MORE_MODULE)
    (src / "pyproject.toml").write_text(textwrap.dedent('''\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "my-leti-tasks"
        version = "0.1"

        [tool.setuptools]
        packages = ["my_leti_tasks"]

        [project.entry-points."leti.tasks"]
        reverse-plugin = "my_leti_tasks:ReverseTask"
        more = "my_leti_tasks.more"
        '''))
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation",
                    "--target", str(site), str(src)], check=True, capture_output=True, timeout=300)
    return site


def test_an_installed_plugins_tasks_are_listed_and_their_references_pass(installed_plugin):
    listed = _leti(installed_plugin, "tasks", "list")
    assert listed.returncode == 0, listed.stderr
    names = {line.split()[0] for line in listed.stdout.splitlines()}
    assert {"reverse-plugin", "upper-plugin", "mbpp"} <= names
    assert "reverse a string (a plugin task) [test 4]" in listed.stdout

    valid = _leti(installed_plugin, "tasks", "validate", "reverse-plugin")
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "4 passed, 0 failed" in valid.stdout
    # validate scores the references with the plugin's own metric: every reference is the same
    assert f"mean_completion_chars: {len('    return s[::-1]' + chr(10)):.2f}" in valid.stdout


def test_without_the_plugin_its_task_is_unknown(tmp_path):
    proc = subprocess.run([*LETI, "tasks", "show", "reverse-plugin"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "unknown task 'reverse-plugin'" in proc.stderr


def test_a_plugin_task_is_scored_with_its_own_tests_and_metric(installed_plugin, tmp_path):
    completions = {"rev-0": "    return s[::-1]\n", "rev-1": "    return s\n",
                   "rev-2": "    return s\n", "rev-3": "    return ''.join(reversed(s))\n"}
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"problem_id": p, "sample_idx": 0, "completion": c}) + "\n"
                               for p, c in completions.items()))
    proc = _leti(installed_plugin, "evaluate", "--task", "reverse-plugin", "--samples", str(samples),
                 "--out", str(tmp_path / "out"), "--k", "1")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    # "racecar" reversed is itself: `return s` passes rev-2, fails rev-1 ("leti")
    assert results["pass@1"] == pytest.approx(3 / 4)
    assert results["mean_completion_chars"] == pytest.approx(sum(map(len, completions.values())) / 4)


@pytest.mark.parametrize(("entry_points", "modules", "expected"), [
    ("[leti.tasks]\nbroken = my_leti_tasks.broken\n",
     {"my_leti_tasks/__init__.py": "", "my_leti_tasks/broken.py": "import not_a_module_anywhere\n"},
     "task plugin 'broken = my_leti_tasks.broken' (entry point group leti.tasks, package my-leti-tasks) cannot be "
     "imported (ModuleNotFoundError: No module named 'not_a_module_anywhere'); fix or uninstall that package"),
    ("[leti.tasks]\nmbpp = my_leti_tasks:ReverseTask\n", {"my_leti_tasks/__init__.py": TASKS_MODULE},
     "task plugin 'mbpp = my_leti_tasks:ReverseTask' (entry point group leti.tasks, package my-leti-tasks): task "
     "name 'mbpp' registered twice (MBPPTask, ReverseTask); rename the entry point"),
    ("[leti.tasks]\nwords = my_leti_tasks:WORDS\n", {"my_leti_tasks/__init__.py": TASKS_MODULE},
     "task plugin 'words = my_leti_tasks:WORDS' (entry point group leti.tasks, package my-leti-tasks) names list"),
], ids=["import-error", "name-taken", "not-a-task"])
def test_a_broken_plugin_is_one_line_naming_it(tmp_path, entry_points, modules, expected):
    site = _dist_info(tmp_path / "site", entry_points, modules)
    proc = _leti(site, "tasks", "list")
    assert proc.returncode == 2
    assert proc.stderr.startswith("leti: error: " + expected), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_leti_run_trains_and_evaluates_on_a_plugin_task(installed_plugin, tiny_model_path, tmp_path):
    run = tmp_path / "run"
    proc = _leti(installed_plugin, "run", "configs/tiny-cpu.yaml", "--run-dir", str(run), "--set", f"model={tiny_model_path}",
                 "--set", "task=reverse-plugin", "--set", "train_split=test", "--set", "progress=false")
    assert proc.returncode == 0, proc.stderr
    samples = [json.loads(x) for x in (run / "iterations" / "1" / "samples.jsonl").read_text().splitlines()]
    assert {s["problem_id"] for s in samples} == {"rev-0", "rev-1", "rev-2"}  # max_train_problems 3
    assert all("\ndef" not in s["completion"] for s in samples)  # the plugin's stop sequence
    evals = [json.loads(x) for x in (run / "iterations" / "1" / "eval_samples.jsonl").read_text().splitlines()]
    result = json.loads((run / "iterations" / "1" / "eval.json").read_text())
    assert result["task_metrics"]["mean_completion_chars"] == pytest.approx(sum(len(s["completion"]) for s in evals) / len(evals))
