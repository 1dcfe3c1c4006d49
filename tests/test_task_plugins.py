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
    ("[leti.tasks]\nrev:v2 = my_leti_tasks:ReverseTask\n", {"my_leti_tasks/__init__.py": TASKS_MODULE},
     "task plugin 'rev:v2 = my_leti_tasks:ReverseTask' (entry point group leti.tasks, package my-leti-tasks): task "
     "name 'rev:v2' must be a non-empty word without ':' or spaces (':' starts a task's options, as in jsonl:PATH); "
     "rename the entry point"),
], ids=["import-error", "name-taken", "not-a-task", "colon-in-name"])
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


# --- a plugin that breaks the Task contract: one line naming the task, the plugin and the fix -----------

# Each class breaks one rule; Good is registered first, so the others also show that a subclass of a
# registered task is named after its own entry point, not its base class's.
CONTRACT_MODULE = '''
import dataclasses

from leti.tasks import EvalDefaults, Problem, Task, register_task


def good():
    return [Problem(id=f"p{i}", prompt=f"def f{i}(x):\\n", tests=f"assert f{i}(1) == 1\\n", split="test",
                    reference="    return x\\n") for i in range(2)]


class Good(Task):
    def load_problems(self):
        return good()


class Generator(Good):
    def load_problems(self):
        yield from good()


class Dicts(Good):
    def load_problems(self):
        return [dataclasses.asdict(p) for p in good()]


class NoList(Good):
    def load_problems(self):
        return None


class DuplicateIds(Good):
    def load_problems(self):
        a, b = good()
        return [a, dataclasses.replace(b, id=a.id)]


class IntIds(Good):
    def load_problems(self):
        return [dataclasses.replace(p, id=i) for i, p in enumerate(good())]


class NonePrompt(Good):
    def load_problems(self):
        return [dataclasses.replace(p, prompt=None) for p in good()]


class MetaStopString(Good):
    def load_problems(self):
        return [dataclasses.replace(p, meta={"stop": "\\ndef"}) for p in good()]


class SplitsMissing(Good):
    def splits(self):
        return ["train"]


class SplitsString(Good):
    def splits(self):
        return "test"


class ProgramString(Good):
    def build_program(self, problem, completion):
        return problem.prompt + completion


class JudgeBool(Good):
    def judge(self, problem, program, result, config=None):
        return result.passed


class StopForString(Good):
    def stop_for(self, problem):
        return "\\ndef"


class InstanceStops(Good):
    def __init__(self):
        self.stop_sequences = "\\ndef"


class MetricString(Good):
    def extra_metrics(self, problems, samples, results):
        return {"quality": "high"}


class MetricPassAt(Good):
    def extra_metrics(self, problems, samples, results):
        return {"pass@1": 1.0}


class MetricReserved(Good):
    def extra_metrics(self, problems, samples, results):
        return {"n_samples": 7}


class MetricPairs(Good):
    def extra_metrics(self, problems, samples, results):
        return [("m", 1.0)]


class ProblemsCallsSplits(Good):
    def splits(self):
        return ["test"]

    def problems(self, split=None):
        if split not in (None, *self.splits()):
            raise ValueError(split)
        return super().problems(split)


class Empty(Good):
    def load_problems(self):
        return []


class InstanceDefaults(Good):
    def __init__(self):
        self.eval_defaults = {"split": "test"}


class NeedsSetup(Good):
    def __init__(self):
        from leti.errors import LetiError

        raise LetiError("set MY_TASK_DATA to the data folder")


@register_task("self-registered")
class SelfRegistered(Good):
    def judge(self, problem, program, result, config=None):
        return None
'''

CONTRACT_CLASSES = ["Good", "Generator", "Dicts", "NoList", "DuplicateIds", "IntIds", "NonePrompt", "MetaStopString",
                    "SplitsMissing", "SplitsString", "ProgramString", "JudgeBool", "StopForString", "InstanceStops",
                    "MetricString", "MetricPassAt", "MetricReserved", "MetricPairs", "ProblemsCallsSplits", "Empty", "InstanceDefaults",
                    "NeedsSetup"]
CONTRACT_SAMPLES = [{"problem_id": "p0", "sample_idx": 0, "completion": "    return x\n"},
                    {"problem_id": "p1", "sample_idx": 0, "completion": "    return 2\n"}]


@pytest.fixture(scope="module")
def contract_plugin(tmp_path_factory) -> Path:
    entry_points = "[leti.tasks]\n" + "".join(f"{c.lower()} = my_leti_tasks.contract:{c}\n" for c in CONTRACT_CLASSES)
    entry_points += "module = my_leti_tasks.contract\n"  # SelfRegistered registers itself
    return _dist_info(tmp_path_factory.mktemp("contract") / "site", entry_points,
                      {"my_leti_tasks/__init__.py": "", "my_leti_tasks/contract.py": CONTRACT_MODULE})


def _contract_leti(site: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(s) + "\n" for s in CONTRACT_SAMPLES))
    return _leti(site, *(a.format(samples=samples, out=tmp_path / "out") for a in args))


def _plugin(name: str, value: str) -> str:
    return f"task plugin '{name} = {value}' (entry point group leti.tasks, package my-leti-tasks)"


EVALUATE = ("evaluate", "--samples", "{samples}", "--out", "{out}", "--k", "1", "--task")


CONTRACT_CASES = [
    ("Dicts", ("tasks", "show"),
     "Dicts.load_problems returned dict {'id': 'p0', 'prompt': 'def f0(x):\\n', 'tests': 'assert f0(1... as item 0, "
     "not a leti.tasks.Problem; build each as Problem(id=..., prompt=..., tests=..., split=...)"),
    ("NoList", ("tasks", "validate"), "NoList.load_problems returned NoneType None; return a list of leti.tasks.Problem"),
    ("DuplicateIds", EVALUATE,
     "DuplicateIds.load_problems returned problem id 'p0' twice (items 0 and 1); give every problem its own id"),
    ("IntIds", EVALUATE, "IntIds.load_problems returned item 0 whose id is int 0; make Problem.id a str"),
    ("NonePrompt", ("tasks", "validate"),
     "NonePrompt.load_problems returned problem 'p0' whose prompt is NoneType None; make Problem.prompt a str"),
    ("MetaStopString", ("tasks", "show"),
     "MetaStopString.load_problems returned problem 'p0' whose meta['stop'] is str '\\ndef'; give a list of non-empty "
     "strings (a string would stop at each of its characters)"),
    ("SplitsMissing", EVALUATE,
     "SplitsMissing.splits returned ['train'], which leaves out split 'test' of 2 problems (no command could select "
     "them); list every split load_problems uses, or drop the override: the default derives them"),
    ("SplitsString", ("tasks", "show"),
     "SplitsString.splits returned str 'test'; return a list of split names, e.g. ['train', 'test']"),
    ("ProgramString", ("tasks", "validate"),
     "ProgramString.build_program returned str 'def f0(x):\\n    return x\\n', not a leti.execution.Program; "
     "return Program(program=..., tests=...)"),
    ("JudgeBool", EVALUATE,
     "JudgeBool.judge returned bool True, not a leti.execution.ExecutionResult; return the result it was given, or "
     "dataclasses.replace(result, status=...) for another verdict"),
    ("StopForString", ("tasks", "show", "{name}", "p0"),
     "StopForString.stop_for returned the string '\\ndef', not a tuple of strings; give a tuple of non-empty strings, "
     "e.g. ('\\ndef',)"),
    ("MetricString", ("tasks", "validate"),
     "MetricString.extra_metrics returned metric 'quality' = str 'high'; give each metric an int or float"),
    ("MetricPassAt", EVALUATE,
     "MetricPassAt.extra_metrics returned a metric named 'pass@1', a key results.json gives its own value; rename the metric"),
    ("MetricReserved", EVALUATE,
     "MetricReserved.extra_metrics returned a metric named 'n_samples', a key results.json gives its own value; "
     "rename the metric"),
    ("MetricPairs", ("tasks", "validate"),
     "MetricPairs.extra_metrics returned list [('m', 1.0)]; return a dict of metric name to number"),
]


@pytest.mark.parametrize(("cls", "args", "expected"), CONTRACT_CASES, ids=[case[0] for case in CONTRACT_CASES])
def test_a_task_breaking_the_contract_is_one_line_naming_it_and_the_fix(contract_plugin, tmp_path, cls, args, expected):
    """Each was a traceback from inside leti (AttributeError, TypeError, ValueError), or no error at
    all: the duplicate scored with the other problem's tests, the reserved metric overwritten, the
    stop string split into one stop per character."""
    name = cls.lower()
    argv = [a.format(name=name) if a == "{name}" else a for a in args]
    proc = _contract_leti(contract_plugin, tmp_path, *argv, *([] if "{name}" in args else [name]))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    prefix = f"leti: error: task '{name}' of {_plugin(name, f'my_leti_tasks.contract:{cls}')}: my_leti_tasks.contract."
    assert proc.stderr == prefix + expected + "\n"


def test_stop_sequences_an_instance_sets_are_checked_when_its_problems_load(contract_plugin, tmp_path):
    proc = _contract_leti(contract_plugin, tmp_path, "tasks", "show", "instancestops")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == (f"leti: error: task 'instancestops' of {_plugin('instancestops', 'my_leti_tasks.contract:InstanceStops')}: "
                           "stop_sequences is the string '\\ndef', not a tuple of strings; give a tuple of non-empty "
                           "strings, e.g. ('\\ndef',)\n")


def test_a_self_registering_task_is_named_with_the_module_entry_point(contract_plugin, tmp_path):
    proc = _contract_leti(contract_plugin, tmp_path, *EVALUATE, "self-registered")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == (f"leti: error: task 'self-registered' of {_plugin('module', 'my_leti_tasks.contract')}: "
                           "my_leti_tasks.contract.SelfRegistered.judge returned NoneType None, not a "
                           "leti.execution.ExecutionResult; return the result it was given, or "
                           "dataclasses.replace(result, status=...) for another verdict\n")


def test_eval_defaults_an_instance_sets_are_checked_before_evaluate_reads_them(contract_plugin, tmp_path):
    """`leti evaluate` read them before the problems loaded: an AttributeError traceback."""
    proc = _contract_leti(contract_plugin, tmp_path, *EVALUATE, "instancedefaults")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == (f"leti: error: task 'instancedefaults' of "
                           f"{_plugin('instancedefaults', 'my_leti_tasks.contract:InstanceDefaults')}: eval_defaults is "
                           "dict {'split': 'test'}, not a leti.tasks.EvalDefaults; write EvalDefaults(split=..., n=..., ks=...)\n")


def test_a_problems_override_may_ask_for_the_splits(contract_plugin, tmp_path):
    """The check of a splits() override read task.problems(): an override of that which calls
    splits() recursed without end (RecursionError) where it had worked before the checks."""
    show = _contract_leti(contract_plugin, tmp_path, "tasks", "show", "problemscallssplits")
    assert show.returncode == 0, show.stderr
    assert "splits:   test 2\n" in show.stdout


def test_a_task_without_problems_is_one_line_in_tasks_show(contract_plugin, tmp_path):
    """Was an IndexError traceback (the message quoted the first problem's id as an example)."""
    proc = _contract_leti(contract_plugin, tmp_path, "tasks", "show", "empty", "p0")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == "leti: error: task 'empty' has no problems\n"


def test_tasks_list_shows_every_task_and_why_one_cannot_load(contract_plugin, tmp_path):
    """A task whose constructor refuses (its data missing) was listed as 'needssetup:ARG', as if
    it took an argument; a task that breaks the contract stopped the whole list."""
    proc = _contract_leti(contract_plugin, tmp_path, "tasks", "list")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert "needssetup:ARG" not in lines and "[cannot load: set MY_TASK_DATA to the data folder]" in lines["needssetup"]
    assert lines["good"].endswith("[test 2]") and lines["jsonl:ARG"] and lines["mbpp"].endswith("]")
    assert "[cannot load: task 'dicts' of " in lines["dicts"]


def test_problems_from_a_generator_are_read_once_and_kept(contract_plugin, tmp_path):
    """A generator was read by the first call and empty for every later one: `tasks show` said
    "test 0" and `evaluate` refused the task's own problem ids."""
    show = _contract_leti(contract_plugin, tmp_path, "tasks", "show", "generator")
    assert show.returncode == 0, show.stderr
    # named after its own entry point, not the registered base class it inherits from (Good)
    assert "task:     generator\n" in show.stdout
    assert "splits:   test 2\n" in show.stdout
    evaluate = _contract_leti(contract_plugin, tmp_path, *EVALUATE, "generator")
    assert evaluate.returncode == 0, evaluate.stderr
    assert json.loads((tmp_path / "out" / "results.json").read_text())["pass@1"] == pytest.approx(1 / 2)


@pytest.mark.parametrize(("attribute", "expected"), [
    ('stop_sequences = "\\ndef"',
     "stop_sequences is the string '\\ndef', not a tuple of strings; give a tuple of non-empty strings, e.g. ('\\ndef',)"),
    ('eval_defaults = {"split": "test"}',
     "eval_defaults is dict {'split': 'test'}, not a leti.tasks.EvalDefaults; write EvalDefaults(split=..., n=..., ks=...)"),
    ("eval_defaults = EvalDefaults(ks=5)", "eval_defaults.ks is int 5; make it a tuple of ints >= 1"),
    # a ValueError traceback from Program when the first program was built
    ('module_name = "main"', "module_name is str 'main'; make it one of '__main__', 'builtins'"),
], ids=["stop-string", "defaults-dict", "ks-int", "module-name"])
def test_a_task_class_attribute_of_the_wrong_type_is_refused_as_the_plugin_is_imported(tmp_path, attribute, expected):
    """The evaluation protocol was an AttributeError / TypeError traceback where `leti evaluate`
    read it; a stop string stopped generation at each of its characters."""
    source = CONTRACT_MODULE.split("class Generator")[0] + f"class Bad(Good):\n    {attribute}\n"
    site = _dist_info(tmp_path / "site", "[leti.tasks]\nbad = my_leti_tasks.contract:Bad\n",
                      {"my_leti_tasks/__init__.py": "", "my_leti_tasks/contract.py": source})
    proc = _contract_leti(site, tmp_path, "evaluate", "--samples", "{samples}", "--out", "{out}", "--task", "bad")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == f"leti: error: {_plugin('bad', 'my_leti_tasks.contract:Bad')}: my_leti_tasks.contract.Bad.{expected}\n"


def test_a_task_registered_outside_a_plugin_is_named_by_its_class(tmp_path):
    """@register_task in the user's own module, run through leti's CLI from their script."""
    (tmp_path / "my_tasks.py").write_text(CONTRACT_MODULE.split("class Generator")[0] + textwrap.dedent('''
        @register_task("scripted")
        class Scripted(Good):
            def build_program(self, problem, completion):
                return None
        '''))
    script = "import sys, my_tasks; from leti.cli import main; sys.exit(main(['tasks', 'validate', 'scripted']))"
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == ("leti: error: task 'scripted' (class my_tasks.Scripted): my_tasks.Scripted.build_program returned "
                           "NoneType None, not a leti.execution.Program; return Program(program=..., tests=...)\n")


# --- a plugin task whose load_problems raises: one line naming the task and the plugin ----------------

RAISING_MODULE = '''
from leti.tasks import Problem, Task


class Fine(Task):
    description = "a task that loads"

    def load_problems(self):
        return [Problem(id="p0", prompt="def f(x):\\n", tests="assert f(1) == 1\\n", split="test")]


class BadRow(Fine):
    description = "raises on a bad row"

    def load_problems(self):
        raise ValueError("bad row 7")


class MissingFile(Fine):
    def load_problems(self):
        with open("/nonexistent-leti-data/missing.json") as f:
            return f.read()


class GeneratorRaises(Fine):
    def load_problems(self):
        yield from super().load_problems()
        raise KeyError("answer")


class BrokenInit(Fine):
    def __init__(self):
        raise RuntimeError("LETI_DATA is not set")
'''

RAISING_CASES = [
    ("BadRow", "ValueError: bad row 7"),
    ("MissingFile", "FileNotFoundError: [Errno 2] No such file or directory: '/nonexistent-leti-data/missing.json'"),
    # a generator's error comes as leti reads it, after load_problems returned
    ("GeneratorRaises", "KeyError: 'answer'"),
]


@pytest.fixture(scope="module")
def raising_plugin(tmp_path_factory) -> Path:
    entry_points = "[leti.tasks]\nfine = my_leti_tasks.raising:Fine\nbrokeninit = my_leti_tasks.raising:BrokenInit\n" + "".join(
        f"{c.lower()} = my_leti_tasks.raising:{c}\n" for c, _ in RAISING_CASES)
    return _dist_info(tmp_path_factory.mktemp("raising") / "site", entry_points,
                      {"my_leti_tasks/__init__.py": "", "my_leti_tasks/raising.py": RAISING_MODULE})


def _load_error(cls: str, error: str) -> str:
    name = cls.lower()
    return (f"task '{name}' of {_plugin(name, f'my_leti_tasks.raising:{cls}')} could not load its problems ({error}); "
            "fix or uninstall that package")


@pytest.mark.parametrize(("cls", "error"), RAISING_CASES, ids=[c for c, _ in RAISING_CASES])
def test_a_plugin_task_whose_problems_fail_to_load_is_one_line_naming_it(raising_plugin, tmp_path, cls, error):
    """Was the plugin's traceback; a missing file's OSError was `leti: error: PATH: No such file or
    directory`, naming neither the task nor the plugin."""
    for args in (("tasks", "show", cls.lower()),
                 ("run", "configs/tiny-cpu.yaml", "--run-dir", str(tmp_path / "run"), "--set", f"task={cls.lower()}")):
        proc = _leti(raising_plugin, *args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr == f"leti: error: {_load_error(cls, error)}\n"


def test_tasks_list_lists_every_task_beside_one_whose_problems_fail_to_load(raising_plugin):
    proc = _leti(raising_plugin, "tasks", "list")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert lines["badrow"] == f"{'badrow':<16} raises on a bad row [cannot load: {_load_error('BadRow', 'ValueError: bad row 7')}]"
    assert lines["fine"].endswith("a task that loads [test 1]") and lines["mbpp"].endswith("]")


def test_a_plugin_task_whose_constructor_raises_is_one_line_naming_it(raising_plugin, tmp_path):
    """Was the constructor's traceback (tasks show, run) and `tasks list` stopped at it."""
    error = (f"task 'brokeninit' of {_plugin('brokeninit', 'my_leti_tasks.raising:BrokenInit')} could not be created "
             "(RuntimeError: LETI_DATA is not set); fix or uninstall that package")
    for args in (("tasks", "show", "brokeninit"),
                 ("run", "configs/tiny-cpu.yaml", "--run-dir", str(tmp_path / "run"), "--set", "task=brokeninit")):
        proc = _leti(raising_plugin, *args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr == f"leti: error: {error}\n"
    proc = _leti(raising_plugin, "tasks", "list")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"[cannot load: {error}]" in proc.stdout and "\nfine " in proc.stdout
