"""Without a sandbox, each command names the opt-out it accepts (`leti run` has no
--unsafe-no-sandbox), and `leti demo` refuses before its warm start; a demo whose cache folder
cannot be written names LETI_CACHE_DIR, as `leti run` does."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from leti.cli import main
from leti.demo.config import preset_path


@pytest.fixture
def no_bwrap(tmp_path, monkeypatch):
    """PATH without bwrap (in this process: resolve_sandbox reads PATH when called)."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("bwrap") is None  # how resolve_sandbox looks for it


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


@pytest.mark.parametrize("command", ["run", "sft"])
def test_run_and_sft_name_their_set_override(tmp_path, tiny_model_path, no_bwrap, capsys, command):
    assert main([command, "tiny-cpu", "--set", f"model={tiny_model_path}", "--run-dir", str(tmp_path / "r")]) == 2
    last = _error(capsys)
    assert "bubblewrap ('bwrap') is not installed" in last
    assert last.endswith("or pass --set execution.sandbox=none to run model-written programs without isolation")
    assert "--unsafe-no-sandbox" not in last


def test_exec_names_its_flag(tmp_path, no_bwrap, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"program": "x = 1"}) + "\n")
    assert main(["exec", str(inp), "-o", str(tmp_path / "o.jsonl")]) == 2
    assert _error(capsys).endswith("or pass --unsafe-no-sandbox to run model-written programs without isolation")


def test_demo_refuses_before_its_warm_start_naming_a_demo_config(tmp_path, no_bwrap, monkeypatch, capsys):
    cache, run_dir = tmp_path / "cache", tmp_path / "demo"
    monkeypatch.setenv("LETI_CACHE_DIR", str(cache))
    assert main(["demo", "--quick", "--run-dir", str(run_dir)]) == 2
    out = capsys.readouterr()
    assert out.err.strip().splitlines() == [
        "leti: error: no sandbox: bubblewrap ('bwrap') is not installed; install it (Debian/Ubuntu: apt-get install "
        "bubblewrap; Fedora/RHEL: dnf install bubblewrap; without root: conda install -c conda-forge bubblewrap) or "
        f"pass --config with a copy of {preset_path(True)} that sets run.execution.sandbox: none to run "
        "model-written programs without isolation"]
    assert "warm start" not in out.out
    assert not cache.exists()  # nothing built
    assert not run_dir.exists()  # a rerun with that config may use the same --run-dir


def _demo_config_without_sandbox(tmp_path):
    raw = yaml.safe_load(preset_path(True).read_text())
    raw["run"]["execution"]["sandbox"] = "none"
    path = tmp_path / "demo-nosandbox.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_demo_with_its_own_config_names_the_field_in_it(tmp_path, no_bwrap, monkeypatch, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text(preset_path(True).read_text())
    monkeypatch.setenv("LETI_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["demo", "--config", str(config), "--run-dir", str(tmp_path / "d")]) == 2
    assert f"or set run.execution.sandbox: none in {config} to run" in _error(capsys)
    assert not (tmp_path / "cache").exists()


def test_demo_cache_dir_under_a_file_names_leti_cache_dir(tmp_path, monkeypatch, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    monkeypatch.setenv("LETI_CACHE_DIR", str(afile))
    # sandbox: none, so that only the cache is in the way (also where bwrap cannot run)
    assert main(["demo", "--config", str(_demo_config_without_sandbox(tmp_path)), "--run-dir", str(tmp_path / "d")]) == 2
    assert _error(capsys) == (
        f"leti: error: demo warm-start cache: cannot write to {afile}/warmstart (Not a directory); "
        "set LETI_CACHE_DIR to a writable directory")
    assert not (tmp_path / "d").exists()


def test_evaluate_with_a_model_refuses_before_drawing_a_sample(tmp_path, tiny_model_path, no_bwrap, capsys):
    """`leti evaluate --model` drew every sample (hours at HumanEval's protocol) and only then
    found no sandbox; now it refuses first, naming its own flag."""
    out = tmp_path / "ev"
    assert main(["evaluate", "--task", "synthetic:seed=0,train=8,test=4", "--model", tiny_model_path,
                 "--n", "2", "--max-new-tokens", "8", "--out", str(out), "--workers", "1"]) == 2
    assert _error(capsys).endswith("or pass --unsafe-no-sandbox to run model-written programs without isolation")
    assert not (out / "samples.jsonl").exists()
