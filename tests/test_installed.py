"""leti as a pip user has it: the package without a checkout (no configs/, scripts/, docs/,
tests/ or benchmarks/ beside the working directory). What README tells such a user to run works
there, a path into a checkout's configs/ is one error line naming the preset to run instead,
the package imports no development-only dependency, and the wheel ships every file of the
package. Offline, CPU, no model."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from leti.config import config_to_dict, load_config
from leti.errors import LetiError

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _readme_code() -> list[str]:
    """README's code, one string each: the lines of fenced blocks and the inline `spans`
    (a span wrapped over two lines joined with a space)."""
    text = README.read_text(encoding="utf-8")
    code: list[str] = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S):
        code.extend(block.splitlines())
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    code.extend(span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose))
    return code


def _readme_config_commands() -> list[tuple[str, str, list[str]]]:
    """(command, config, --set overrides) of every `leti run|sft|config CONFIG ...` in README's
    code whose CONFIG is not a placeholder (CONFIG, NAME, [CONFIG])."""
    found = []
    for line in _readme_code():
        for part in re.split(r"&&|;", line):
            try:
                words = shlex.split(part)
            except ValueError:  # a quote that the span does not close (prose around the code)
                words = part.split()
            if "leti" not in words:
                continue
            argv = words[words.index("leti") + 1:]
            if len(argv) < 2 or argv[0] not in ("run", "sft", "config") or argv[1].startswith("-"):
                continue
            config = argv[1]
            if config.isupper() or config.startswith("["):
                continue
            sets = [argv[i + 1] for i, w in enumerate(argv[:-1]) if w == "--set" and argv[i + 1] != "..."]
            found.append((argv[0], config, sets))
    return found


def test_the_readmes_config_commands_load_without_a_checkout(tmp_path, monkeypatch):
    """Every config README runs (`leti run mbpp-codegen-350m --set ...`) loads from a directory
    with no configs/ in it, as a pip user's. README used to say `leti run
    configs/mbpp-codegen-350m.yaml ...`, which only a checkout has."""
    commands = _readme_config_commands()
    assert len(commands) >= 4, commands
    assert any(sets for _, _, sets in commands), commands  # the --set examples are among them
    monkeypatch.chdir(tmp_path)
    for command, config, sets in commands:
        cfg = load_config(config, sets)
        assert cfg.model, (command, config, sets)


def test_the_readme_sends_pip_users_to_nothing_only_a_checkout_has():
    """README's runnable lines do not read files from a checkout unless the line is the
    checkout's own (scripts/setup.sh, scripts/test.sh, .venv, .venv-vllm)."""
    checkout_only = re.compile(r"(?<![\w.-])(configs|docs|benchmarks|tests|src)/")
    for line in _readme_code():
        if not re.search(r"(^|\s|\()(leti|accelerate|python|torchrun)\s", line):
            continue
        if "scripts/" in line or ".venv" in line:
            continue  # "From a checkout:" commands
        assert not checkout_only.search(line), line


def test_a_checkout_path_to_a_preset_names_the_preset_to_run_instead(tmp_path, monkeypatch, capsys):
    """`leti run configs/tiny-cpu.yaml` where there is no checkout: one error line that gives the
    command that works (before, it said "pass a YAML file such as configs/tiny-cpu.yaml", the path
    that had just failed)."""
    from leti.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(LetiError, match=r"^configs/tiny-cpu\.yaml: config file not found; .*`leti run tiny-cpu`"):
        load_config("configs/tiny-cpu.yaml")
    with pytest.raises(LetiError, match=r"`leti presets mbpp-codegen-350m > my\.yaml`"):
        load_config("somewhere/mbpp-codegen-350m.yaml", ["sampling.n=4"])
    assert main(["run", "configs/mbpp-codegen-350m.yaml", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("leti: error: configs/mbpp-codegen-350m.yaml: config file not found")
    assert "`leti run mbpp-codegen-350m`" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
    # a user's own file at that path is read, preset name or not
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny-cpu.yaml").write_text("model: my-model\niterations: 3\n")
    assert load_config("configs/tiny-cpu.yaml").iterations == 3
    # the accelerate configs are not run configs: no hint to `leti run` them
    with pytest.raises(LetiError) as e:
        load_config("configs/accelerate/ddp.yaml")
    assert "leti run" not in str(e.value)


def test_the_tiny_model_readme_builds_is_importable_from_the_package():
    """README's smoke run builds its model with leti.testing, which needs runtime dependencies only."""
    assert any("from leti.testing import make_tiny_model" in line for line in _readme_code())
    from leti.testing import make_tiny_model

    assert callable(make_tiny_model)


# Optional extras and development tools: none may be imported by importing leti (each optional
# backend imports its package when it is used).
_NOT_RUNTIME = ("pytest", "ruff", "tensorboard", "wandb", "bitsandbytes", "deepspeed", "ray", "vllm")


def test_importing_every_leti_module_needs_no_dev_or_optional_package():
    """Importing every leti module (in the dev venv, where all of them are installed) imports none
    of the development or optional packages, which a plain `pip install leti` does not have."""
    script = f"""
import importlib, pkgutil, sys
NOT_RUNTIME = {_NOT_RUNTIME!r}
import leti
names = [m.name for m in pkgutil.walk_packages(leti.__path__, "leti.") if m.name != "leti.__main__"]
for name in names:
    importlib.import_module(name)
    loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(NOT_RUNTIME))
    if loaded:
        sys.exit(f"importing {{name}} imported {{loaded}}")
print(len(names))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=ROOT.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) > 40


def test_the_wheel_ships_every_file_of_the_package(built_wheel):
    """What `pip install` installs holds every file under src/leti (data, presets, the demo's
    presets)."""
    import zipfile

    wheel, package = built_wheel
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("leti/")}
    files = {p.relative_to(package).as_posix() for p in (package / "leti").rglob("*") if p.is_file()}
    assert files - shipped == set()
    assert {"leti/demo/presets/demo.yaml", "leti/configs/tiny-cpu.yaml"} <= shipped


@pytest.mark.slow
def test_an_installed_leti_hides_its_files_from_the_programs_it_runs(built_wheel, tmp_path):
    """Installed from the wheel, leti's package sat in site-packages, which the sandbox binds for
    the interpreter: a program could read the tasks' data (references, tests, EAE gold) and pass
    without solving anything. An editable install (src/) was never bound."""
    import json
    import os
    import sysconfig

    from leti.execution import sandbox

    try:
        sandbox.resolve_sandbox("auto")
    except sandbox.SandboxUnavailable as e:
        pytest.skip(f"no working bubblewrap here: {e}")
    wheel, _ = built_wheel
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site_dir,) = (venv / "lib").glob("python*/site-packages")
    # leti's dependencies from this environment; leti itself from the wheel
    (site_dir / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site_dir),
                    str(wheel)], check=True)
    data = site_dir / "leti" / "data"
    assert data.is_dir()
    program = f"import os\nassert not os.path.exists({str(data)!r}), os.listdir({str(data)!r})\n"
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps({"id": 0, "program": program}) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed leti, not a checkout's
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "leti", "exec", str(inp), "-o", str(out), "--workers", "1"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["passed"], record


def test_the_preset_list_is_the_same_from_any_directory(tmp_path, monkeypatch):
    """`leti run NAME` does not depend on the working directory (a checkout's configs/ or none)."""
    monkeypatch.chdir(ROOT)
    here = config_to_dict(load_config("tiny-cpu"))
    monkeypatch.chdir(tmp_path)
    assert config_to_dict(load_config("tiny-cpu")) == here


def _declared_distributions() -> set[str]:
    """pyproject.toml's dependencies and optional extras, as normalized distribution names."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = list(project["dependencies"]) + [s for extra in project["optional-dependencies"].values() for s in extra]
    return {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", s).group(0)).lower() for s in specs}


def test_every_package_leti_imports_is_a_declared_dependency():
    """Each third-party package a leti module imports (at its top or inside a function) is in
    pyproject.toml's dependencies or an extra, so pip installs it (or the extra names it); being
    pulled in by another dependency does not count (numpy and huggingface_hub were)."""
    import ast
    from importlib.metadata import packages_distributions

    distributions = packages_distributions()
    declared = _declared_distributions()
    undeclared = {}
    for path in sorted((ROOT / "src" / "leti").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"leti"}:
                dists = {re.sub(r"[-_.]+", "-", d).lower() for d in distributions.get(top, [top])}
                if not dists & declared:
                    undeclared.setdefault(top, path.relative_to(ROOT).as_posix())
    assert not undeclared, undeclared  # package -> the first file importing it
