"""The sandbox from any working directory and home: inside the Python environment it must bind
(`python -m venv myproj && cd myproj && leti ...`, a venv as $HOME), the caller's files there stay
hidden while the interpreter, its stdlib and site-packages stay usable. Runs the real executor."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

import leti
from leti.cli import main
from leti.execution import sandbox

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


def _venv_running_leti(venv: Path) -> Path:
    """A fresh venv at `venv` that runs this checkout's leti; its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    packages = next(venv.glob("lib/python*/site-packages"))
    # leti and its dependencies from the environment running the tests (absent in the sandbox,
    # where site ignores a folder it cannot list)
    dirs = [*site.getsitepackages(), os.path.dirname(os.path.dirname(leti.__file__))]
    (packages / "leti_tests.pth").write_text("import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs) + "\n")
    return packages


def _leti_exec(python: Path, program: str, tests: str, cwd: Path, tmp_path: Path, home: Path | None = None) -> dict:
    """The result of `python -m leti exec` of one program (with `tests`), started in `cwd` (with
    $HOME set to `home`); the command must succeed."""
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps({"id": "p", "program": program, "tests": tests}) + "\n")
    env = {**os.environ, "HOME": str(home)} if home is not None else None
    proc = subprocess.run([str(python), "-m", "leti", "exec", str(inp), "-o", str(out), "--workers", "1",
                           "--timeout", "20"], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    """BASE/home/.venv: a fresh venv (the user's ~/.venv) that runs this checkout's leti and holds
    a module of its own in its site-packages; BASE/elsewhere: an unrelated folder."""
    base = tmp_path_factory.mktemp("layout")
    venv = base / "home" / ".venv"
    (_venv_running_leti(venv) / "probe_module.py").write_text("VALUE = 42\n")
    (venv / "work").mkdir()
    (base / "elsewhere").mkdir()
    return base


# (working directory, home), relative to the layout; each holds a secret file, except the venv's
# bin/ (the interpreter's own folder, which programs see)
CASES = {
    "cwd is the venv": (".venv", "elsewhere"),
    "cwd inside the venv": (".venv/work", "elsewhere"),
    "home holds the venv, cwd is the venv": (".venv", "home"),
    "home is the venv": ("elsewhere", ".venv"),
    "cwd is the venv's bin, home holds the venv": (".venv/bin", "home"),
}


@pytest.mark.parametrize("case", CASES)
def test_programs_run_and_cannot_read_the_callers_files(layout, tmp_path, case):
    cwd, home = (layout / "home" / p if p.startswith(".venv") else layout / p for p in CASES[case])
    secrets = [d / "secret.txt" for d in (cwd, home) if d.name != "bin"]
    for s in secrets:
        s.write_text("the user's data\n")
    try:
        # a C extension module of the stdlib (lib-dynload), a module of the venv's site-packages
        program = "import decimal, json\nimport probe_module\n"
        tests = (f"assert probe_module.VALUE == 42 and str(decimal.Decimal('1.5')) == '1.5'\n"
                 f"for p in {[str(s) for s in secrets]!r}:\n    assert not os.path.exists(p), p\n")
        result = _leti_exec(layout / "home/.venv/bin/python", "import os\n" + program, tests, cwd, tmp_path, home)
        assert result["passed"], result["feedback"]
    finally:
        for s in secrets:
            s.unlink(missing_ok=True)


def test_a_working_directory_under_usr_src_is_hidden(layout, tmp_path):
    """Docker's WORKDIR /usr/src/app: the system folders are bound whole, so the project's files
    there (a .env, the user's data) were readable by every program. /usr/src holds nothing a
    program runs, so a working directory in it is hidden like one in a Python installation."""
    import tempfile

    if not os.access("/usr/src", os.W_OK):
        pytest.skip("needs a writable /usr/src (root)")
    app = Path(tempfile.mkdtemp(prefix="leti-test-app-", dir="/usr/src"))
    try:
        (app / ".env").write_text("HF_TOKEN=the user's\n")
        tests = (f"assert not os.path.exists({str(app / '.env')!r})\n"
                 "assert str(decimal.Decimal('1.5')) == '1.5' and os.path.isdir('/usr/lib')\n")
        result = _leti_exec(layout / "home/.venv/bin/python", "import decimal, os\n", tests, app, tmp_path,
                            layout / "elsewhere")
        assert result["passed"], result["feedback"]
    finally:
        shutil.rmtree(app, ignore_errors=True)


def _clear_probe_cache() -> None:
    for name in ("_probe", "_bwrap_works"):
        cache_clear = getattr(getattr(sandbox, name, None), "cache_clear", None)
        if cache_clear is not None:
            cache_clear()


def test_an_interpreter_the_sandbox_cannot_start_is_its_own_cause(monkeypatch, tmp_path, capsys):
    """Namespaces work, but the interpreter is not mounted (as before the fix, with the cwd in
    the venv): the message says so, and does not advise running without isolation."""
    exe_dir = os.path.realpath(os.path.dirname(sys.executable))
    bound = sandbox._python_dirs()
    monkeypatch.setattr(sandbox, "_python_dirs", lambda: [d for d in bound if not (exe_dir + os.sep).startswith(d + os.sep)])
    monkeypatch.setattr(sandbox, "_links", lambda: [])  # nor its links made again (the venv's bin/python)
    _clear_probe_cache()
    try:
        with pytest.raises(sandbox.SandboxUnavailable) as e:
            sandbox.resolve_sandbox("auto")
        assert "does not start inside the sandbox" in str(e.value) and "namespaces" not in str(e.value)
        assert "without isolation" not in str(e.value)
        inp = tmp_path / "in.jsonl"
        inp.write_text('{"program": "x = 1"}\n')
        assert main(["exec", str(inp), "-o", str(tmp_path / "o.jsonl")]) == 2
        err = capsys.readouterr().err
        assert "does not start inside the sandbox" in err and "--unsafe-no-sandbox" not in err
    finally:
        monkeypatch.undo()
        _clear_probe_cache()


def test_a_venv_reached_through_a_symlinked_folder(layout, tmp_path):
    """sys.executable names the link; the sandbox binds the real folder, and starts it there."""
    link = tmp_path / "link"
    link.symlink_to(layout / "home" / ".venv")
    result = _leti_exec(link / "bin/python", "import probe_module\n", "assert probe_module.VALUE == 42\n",
                        layout / "elsewhere", tmp_path)
    assert result["passed"], result["feedback"]


def _linked_venv(tmp_path: Path, link_to: str) -> Path:
    """A venv in tmp_path/a running leti whose bin/python is a link to `link_to` (a path relative
    to a/bin, or absolute) instead of the base interpreter."""
    venv = tmp_path / "a"
    _venv_running_leti(venv)
    (venv / "bin" / "python").unlink()
    (venv / "bin" / "python").symlink_to(link_to)
    return venv


def test_an_interpreter_linked_through_a_folder_outside_the_venv(tmp_path):
    """A venv made from another venv: on Python 3.10 its bin/python links to that venv's
    bin/python, which links to the base interpreter. The kernel follows each link inside the
    sandbox, so every link on the way must be there; here the middle ones (b/bin) lie in the
    test's /tmp, which the sandbox replaces with a tmpfs. Before the fix:
    `bwrap: execvp .../a/bin/python: No such file or directory`. Links relative and absolute.
    Only the links are made again: the rest of their folder stays out of the sandbox."""
    base = os.path.realpath(sys.executable)  # the base interpreter's file
    middle = tmp_path / "b" / "bin"
    middle.mkdir(parents=True)
    (middle / "python3").symlink_to(base)
    (middle / "python").symlink_to("python3")
    (middle / "secret.txt").write_text("x")
    venv = _linked_venv(tmp_path, "../../b/bin/python")
    tests = (f"assert sys.prefix == {str(venv)!r}, sys.prefix\nassert str(decimal.Decimal('1.5')) == '1.5'\n"
             f"assert not os.path.exists({str(middle / 'secret.txt')!r})\n")
    (tmp_path / "elsewhere").mkdir()
    result = _leti_exec(venv / "bin/python", "import decimal, os, sys\n", tests, tmp_path / "elsewhere", tmp_path)
    assert result["passed"], result["feedback"]


def test_a_link_in_home_does_not_bring_home_into_the_sandbox(tmp_path):
    """The interpreter reached through a link in the caller's home (~/py -> the base interpreter):
    binding the link's folder to start it showed programs the whole home (ssh keys, tokens)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("TOPSECRET")
    (home / "py").symlink_to(os.path.realpath(sys.executable))
    venv = _linked_venv(tmp_path, str(home / "py"))
    tests = (f"assert sys.prefix == {str(venv)!r}, sys.prefix\n"
             f"assert not os.path.exists({str(home / '.ssh' / 'id_rsa')!r})\n")
    (tmp_path / "elsewhere").mkdir()
    result = _leti_exec(venv / "bin/python", "import decimal, os, sys\n", tests, tmp_path / "elsewhere", tmp_path, home)
    assert result["passed"], result["feedback"]
