"""`leti demo --quick` end to end on CPU: warm start (cached), both arms through the real loop,
summary.json, report and plots; a second invocation resumes instead of redoing work."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from leti.cli import main
from leti.demo.config import ARMS, arm_config, load_demo_config, preset_path, select_arms
from leti.demo.warmstart import WarmStartConfig, cached_path
from leti.errors import LetiError


def test_demo_presets_load_and_arms_differ_only_in_training_text():
    for quick in (False, True):
        cfg = load_demo_config(preset_path(quick))
        by_arm = {arm: arm_config(cfg, 3, "m", arm) for arm in ARMS}
        text = {arm: (c.training_text.textual_feedback, c.training_text.feedback_content, c.training_text.keep_failures)
                for arm, c in by_arm.items()}
        assert text == {"textual": (True, "execution", True), "binary": (False, "execution", True),
                        "constant": (True, "constant", True), "passing": (False, "execution", False)}
        t = by_arm["textual"]
        assert t.task == f"synthetic:seed=3,train={cfg.train_problems},test={cfg.test_problems}"
        for c in by_arm.values():
            assert (c.sampling, c.eval, c.trainer, c.seed, c.task) == (t.sampling, t.eval, t.trainer, t.seed, t.task)


def test_arms_option_is_parsed_and_checked(tmp_path, capsys):
    assert select_arms("textual, passing,textual") == ("textual", "passing")
    assert select_arms(["binary"]) == ("binary",)
    for bad in ("textual,nope", ","):
        with pytest.raises(LetiError, match="textual, binary, constant, passing"):
            select_arms(bad)
    assert main(["demo", "--arms", "textual,nope", "--run-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["leti: error: unknown demo arm(s) nope; --arms takes a comma-separated list of "
                   "textual, binary, constant, passing"]
    assert not (tmp_path / "d").exists()  # checked before anything is created


def test_passing_arm_is_refused_up_front_with_the_quick_preset(tmp_path, capsys):
    """The quick preset's model passes no training sample, so the passing arm would stop the demo
    at its first training stage, after the other arms' minutes: refused before anything runs."""
    for flags in (["--quick"], ["--config", str(preset_path(True))]):
        d = tmp_path / "d"
        assert main(["demo", *flags, "--arms", "textual,binary,constant,passing", "--run-dir", str(d)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["leti: error: --arms passing: the --quick preset's model passes none of its training samples, "
                       "so the passing arm would have nothing to train on; leave passing out of --arms, or run "
                       "without --quick"]
        assert not d.exists()


def test_run_dir_of_something_else_is_refused(tmp_path, capsys):
    """`leti demo --run-dir DIR` writes summary.json, report.md, ... at DIR's top: a non-empty
    folder that the demo did not make (no demo.json) is refused, as `leti run` refuses one."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("MY NOTES\n")
    (mine / "summary.json").write_text('{"mine": 1}\n')
    run_dir = tmp_path / "run"  # a `leti run` directory is not a demo's either
    run_dir.mkdir()
    (run_dir / "run.json").write_text("{}")
    for d, what in ((mine, "it holds 'report.md'"), (run_dir, "it is a `leti run` directory")):
        before = {p.name: p.read_bytes() for p in d.iterdir()}
        assert main(["demo", "--quick", "--run-dir", str(d)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"leti: error: {d}: not empty and not a leti demo directory ({what}); "
                       "pass a new or empty --run-dir"]
        assert {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_demo_marks_its_folder_first_and_resumes_it(tmp_path, monkeypatch, capsys):
    """demo.json is written before anything else, so a folder the demo made is always its own (a
    kill -9 before that leaves the folder empty, or with demo.json's temporary file only); a
    summary.json of an earlier invocation is removed when a new one starts, not left to pass
    for its result if this one stops. The warm start is stubbed: no model is built."""
    import leti.demo.run as demo_run

    calls = []

    def stop(cfg, progress=True):
        calls.append(cfg.seed)
        raise LetiError("warm start stopped by the test")

    monkeypatch.setattr(demo_run, "warm_start", stop)
    d = tmp_path / "demo"
    d.mkdir()
    (d / "demo.json.tmp").write_text('{"settings": ')  # a kill -9 inside the very first write
    assert main(["demo", "--quick", "--run-dir", str(d)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["leti: error: warm start stopped by the test"]
    state = json.loads((d / "demo.json").read_text())
    assert state["settings"] == {"config": "demo-quick.yaml", "seeds": [0], "quick": True}
    (d / "seed0").mkdir()
    (d / "summary.json").write_text('{"arms": ["textual"]}\n')  # from an earlier invocation
    assert main(["demo", "--quick", "--run-dir", str(d)]) == 2  # resumed, not refused
    assert "warm start stopped by the test" in capsys.readouterr().err
    assert calls == [0, 0]
    assert not (d / "summary.json").exists()


@pytest.mark.parametrize("content", [b'{"settings": {"config"', b"[]", b'{"settings": {}, "stages": [1]}', b"\xff\xfe"])
def test_damaged_demo_json_is_one_line(tmp_path, capsys, content):
    d = tmp_path / "demo"
    d.mkdir()
    (d / "demo.json").write_bytes(content)
    assert main(["demo", "--quick", "--run-dir", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"leti: error: {d / 'demo.json'}: "), err
    assert err[0].endswith("it holds this demo's options, so the demo cannot resume without it: restore it, "
                           "or pass a new --run-dir")
    assert sorted(p.name for p in d.iterdir()) == ["demo.json"]
    if content.startswith(b'{"settings": {"config"'):  # the reason says where (it ended in a bare "at")
        assert f"demo.json: not valid JSON (Expecting ':' delimiter at line 1 column {len(content) + 1}); " in err[0]


def test_warmstart_config_is_checked_and_keyed():
    assert WarmStartConfig().key() == WarmStartConfig().key() != WarmStartConfig(steps=1).key()
    with pytest.raises(LetiError):
        WarmStartConfig(n_embd=10, n_head=3)


@pytest.mark.slow
def test_quick_demo_end_to_end_and_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LETI_CACHE_DIR", "cache")  # relative, as a user may set it
    demo = tmp_path / "demo"
    assert main(["demo", "--quick", "--run-dir", str(demo), "--threads", "2"]) == 0
    for name in ("summary.json", "report.md", "report.html", "pass_at_1.png", "failures_textual.png",
                 "failures_binary.png", "demo.json"):
        assert (demo / name).stat().st_size > 0, name
    summary = json.loads((demo / "summary.json").read_text())
    for key in ("baseline_pass_at_1", "textual_final_pass_at_1", "binary_final_pass_at_1", "wall_seconds"):
        assert summary[key] is not None, key
    for arm in ("textual", "binary"):
        rows = summary["iterations"][arm]
        assert [r["iteration"] for r in rows] == [0, 1]
        assert rows[1]["gradient_steps"] > 0 and rows[1]["train_pass_rate"] is not None
        # Each arm is a plain `leti run` directory with the loop's files.
        it1 = demo / "seed0" / arm / "iterations" / "1"
        assert (it1 / "samples.jsonl").exists() and (it1 / "train_stats.json").exists() and (it1 / "eval.json").exists()
    # Same warm start and seed: one shared baseline and one shared set of iteration-1 samples,
    # computed by the first arm and copied (the same wall time says: not computed again).
    for name in ("0/eval_samples.jsonl", "0/eval.json", "1/samples.jsonl", "1/samples.done"):
        t, b = ((demo / "seed0" / arm / "iterations" / name).read_text() for arm in ("textual", "binary"))
        assert t == b, name
    assert "<|lang_feedback|>" in (demo / "report.md").read_text()
    cfg = load_demo_config(preset_path(True))
    assert (cached_path(cfg.warmstart) / "warmstart.json").exists()

    # Second run: everything is finished, nothing is sampled or trained again.
    mtimes = {p: p.stat().st_mtime for p in demo.rglob("*.jsonl")}
    capsys.readouterr()
    assert main(["demo", "--quick", "--run-dir", str(demo), "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "warm start: cached" in out and "already finished" in out
    assert {p: p.stat().st_mtime for p in demo.rglob("*.jsonl")} == mtimes
    # A cleared cache is rebuilt (same warm start): a relative LETI_CACHE_DIR was refused as
    # "started with its warm start in the cache folder /abs/cache, now cache".
    shutil.rmtree(tmp_path / "cache")
    assert main(["demo", "--quick", "--run-dir", str(demo), "--threads", "2"]) == 0
    assert "already finished" in capsys.readouterr().out
    # Other options on the same directory are refused with one line.
    assert main(["demo", "--run-dir", str(demo)]) == 2


@pytest.mark.slow
def test_quick_demo_survives_kill_9(tmp_path):
    """kill -9 in the middle of the textual arm, then the same command finishes the demo with
    no duplicated (problem_id, sample_idx) in any samples file."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "LETI_CACHE_DIR": str(tmp_path / "cache")}
    demo = tmp_path / "demo"
    cmd = [sys.executable, "-m", "leti", "demo", "--quick", "--run-dir", str(demo), "--threads", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = demo / "seed0" / "textual" / "iterations" / "1" / "samples.jsonl"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (demo / "summary.json").exists()
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    summary = json.loads((demo / "summary.json").read_text())
    assert [r["iteration"] for r in summary["iterations"]["textual"]] == [0, 1]
    for path in demo.rglob("*samples.jsonl"):
        keys = [(r["problem_id"], r["sample_idx"]) for r in map(json.loads, path.read_text().splitlines())]
        assert len(keys) == len(set(keys)), path


def _seed_passing_samples(demo, n_pass: int = 2) -> int:
    """The quick preset's model never passes (its numbers mean nothing), so the passing arm would
    have nothing to train on. Give it the textual arm's iteration-1 samples (the same model, seed
    and sampling config, so the same samples), with the first `n_pass` programs replaced by the
    reference solutions and executed for real; the loop then resumes from them. Returns how many
    of the samples pass."""
    from leti.execution import ExecutionConfig, Executor
    from leti.loop.rundir import RunDir, read_jsonl, write_json_atomic
    from leti.tasks.registry import get_task

    cfg = load_demo_config(preset_path(True))
    task = get_task(arm_config(cfg, 0, "m", "passing").task)
    refs = {p.id: (p, p.reference) for p in task.problems("train")}
    records = read_jsonl(RunDir(demo / "seed0" / "textual").samples(1))
    with Executor(ExecutionConfig(workers=2)) as ex:
        for rec in records[:n_pass]:
            problem, ref = refs[rec["problem_id"]]
            rec.update(completion=ref, **ex.run([task.build_program(problem, ref)])[0].to_dict())
    run = RunDir(demo / "seed0" / "passing")
    run.iteration(1).mkdir(parents=True, exist_ok=True)  # it may hold the copied samples already
    run.samples(1).write_text("".join(json.dumps(r) + "\n" for r in records))
    write_json_atomic(run.samples_done(1), {"samples": len(records), "wall_s": 0.0})
    return sum(r["passed"] for r in records)


@pytest.mark.slow
def test_quick_demo_control_arms_added_to_a_finished_demo(tmp_path, monkeypatch, capsys):
    """--arms runs the control arms with their training texts, shares the baseline, and adding an
    arm to a finished demo runs only that arm. An arm that fails leaves the summary and report of
    the finished arms, marked incomplete (not the summary of the earlier invocation)."""
    import shutil

    import yaml

    monkeypatch.setenv("LETI_CACHE_DIR", str(tmp_path / "cache"))
    demo = tmp_path / "demo"
    # The quick preset itself refuses the passing arm (its model passes nothing); a copy of it
    # runs the arm, made to pass by _seed_passing_samples.
    preset = shutil.copy(preset_path(True), tmp_path / "quick.yaml")
    cmd = ["demo", "--config", str(preset), "--run-dir", str(demo), "--threads", "2"]
    assert main([*cmd, "--arms", "textual,constant"]) == 0
    constant = yaml.safe_load((demo / "seed0" / "constant" / "config.yaml").read_text())["training_text"]
    assert constant["textual_feedback"] is True and constant["feedback_content"] == "constant"
    assert not (demo / "seed0" / "binary").exists()
    assert json.loads((demo / "summary.json").read_text())["arms"] == ["textual", "constant"]
    assert "The program failed." in (demo / "report.md").read_text()  # the constant arm's example text

    # Unseeded, the passing arm has nothing to train on and stops the demo.
    textual = json.loads((demo / "summary.json").read_text())["iterations"]["textual"]
    assert textual[1]["train_pass_rate"] == 0, "the quick model passed a sample: this part needs another arm to fail"
    capsys.readouterr()
    assert main([*cmd, "--arms", "textual,passing"]) == 2
    captured = capsys.readouterr()
    assert "no sample passed, and training_text.keep_failures is false" in captured.err
    assert "summary of the finished arms (textual, constant)" in captured.out
    summary = json.loads((demo / "summary.json").read_text())
    assert summary["arms"] == ["textual", "constant"]  # the passing arm stopped part-way: left out
    assert summary["incomplete"]["seed"] == 0 and summary["incomplete"]["stage"] == "passing arm"
    assert "no sample passed" in summary["incomplete"]["error"]
    md = (demo / "report.md").read_text()
    assert "INCOMPLETE: the demo stopped in seed 0's passing arm" in md and "Run `passing`" in md

    n_pass = _seed_passing_samples(demo)
    assert n_pass >= 2
    mtimes = {p: p.stat().st_mtime for p in demo.rglob("*.jsonl") if "passing" not in p.parts}
    capsys.readouterr()
    assert main([*cmd, "--arms", "textual,passing"]) == 0
    assert "already finished" in capsys.readouterr().out  # textual reused, not rerun
    assert {p: p.stat().st_mtime for p in mtimes} == mtimes
    passing = demo / "seed0" / "passing"
    text = yaml.safe_load((passing / "config.yaml").read_text())["training_text"]
    assert text["textual_feedback"] is False and text["keep_failures"] is False
    assert json.loads((passing / "iterations" / "1" / "train_stats.json").read_text())["n_texts"] == n_pass
    base = demo / "seed0" / "textual" / "iterations" / "0" / "eval_samples.jsonl"
    assert base.read_text() == (passing / "iterations" / "0" / "eval_samples.jsonl").read_text()

    summary = json.loads((demo / "summary.json").read_text())
    assert summary["arms"] == ["textual", "constant", "passing"]  # constant: finished earlier, kept
    assert "incomplete" not in summary and "INCOMPLETE" not in (demo / "report.md").read_text()
    assert summary["gradient_steps"]["passing"] < summary["gradient_steps"]["textual"]
    assert set(summary["gain_points"]) == set(summary["final_pass_at_1"]) == set(summary["arms"])
    assert "comparison" not in summary["per_seed"]["0"]  # textual vs binary only when both ran
    md = (demo / "report.md").read_text()
    assert "Run `passing`" in md and "| passing |" in md


def test_warm_start_is_deterministic_and_cached(tmp_path, monkeypatch, capsys):
    from leti.demo.warmstart import warm_start

    cfg = load_demo_config(preset_path(True)).warmstart
    paths = []
    for name, progress in (("a", False), ("b", True)):
        monkeypatch.setenv("LETI_CACHE_DIR", str(tmp_path / name))
        paths.append(warm_start(cfg, progress=progress))
    # no terminal (a log file): no bar, but a plain line every tenth of the way
    out = capsys.readouterr().out
    steps = [line for line in out.splitlines() if line.startswith("warm start: pretraining step")]
    assert len(steps) == 10 and steps[-1].startswith(f"warm start: pretraining step {cfg.steps}/{cfg.steps}, loss ")
    assert out.endswith(f"warm start: built, cached at {paths[1]}\n")  # the model users may reuse (README)
    a, b = ((p / "model.safetensors").read_bytes() for p in paths)
    assert a == b
    stamp = (paths[1] / "warmstart.json").stat().st_mtime
    assert warm_start(cfg, progress=False) == paths[1]  # cached: not rebuilt
    assert (paths[1] / "warmstart.json").stat().st_mtime == stamp
    stats = json.loads((paths[1] / "warmstart.json").read_text())
    assert stats["final_loss"] < stats["first_loss"]  # it did learn something


def test_build_folders_of_killed_runs_are_cleaned(tmp_path):
    from leti.demo.warmstart import _fresh_tmp

    final = tmp_path / "abc123"
    dead = tmp_path / "abc123.tmp999999999"  # no such pid
    live = tmp_path / f"abc123.tmp{os.getppid()}"  # another build still running
    for d in (dead, live):
        (d / "part").mkdir(parents=True)
    tmp = _fresh_tmp(final)
    assert tmp == tmp_path / f"abc123.tmp{os.getpid()}" and tmp.is_dir() and not any(tmp.iterdir())
    assert not dead.exists() and live.exists()


@pytest.mark.parametrize("seed", [0, 3])
def test_every_family_prompt_fits_the_quick_models_context(tmp_path, monkeypatch, seed):
    """Any seed's problems may be drawn, so the longest prompt of the whole family (with the
    <|good|> prefix) plus the new tokens must fit the warm start's positions (256 did not: a
    383-token prompt stopped `leti demo --quick --seed 5` at iteration 0)."""
    from leti.demo.config import warmstart_for
    from leti.demo.warmstart import warm_start
    from leti.model import load_model_and_tokenizer
    from leti.tasks import get_task

    cfg = load_demo_config(preset_path(True))
    monkeypatch.setenv("LETI_CACHE_DIR", str(tmp_path))
    _, tok = load_model_and_tokenizer(str(warm_start(warmstart_for(cfg, seed), progress=False)))
    task = get_task(f"synthetic:seed={seed}")
    longest = max(len(tok("<|good|>" + p.prompt)["input_ids"]) for split in ("train", "test") for p in task.problems(split))
    new = max(cfg.run["sampling"]["max_new_tokens"], cfg.run["eval"]["max_new_tokens"])
    assert longest + new <= cfg.warmstart.n_positions


def test_a_bad_run_field_in_a_demo_config_names_its_section(tmp_path):
    """The demo config's run: section holds RunConfig fields; an error names the section, since
    'sampling.n' alone is not a path in that file."""
    text = preset_path(True).read_text()
    assert "    n: 4\n" in text
    bad = tmp_path / "demo.yaml"
    bad.write_text(text.replace("    n: 4\n", "    n: 0\n", 1))
    with pytest.raises(LetiError, match=rf"^{bad}, section run: sampling.n must be >= 1, got 0$"):
        load_demo_config(bad)



def _demo_config_with(tmp_path, section: str, key: str | None, value) -> Path:
    """The quick preset with one value replaced (key None: the whole section)."""
    raw = yaml.safe_load(preset_path(True).read_text())
    if key is None:
        raw[section] = value
    else:
        raw[section][key] = value
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("task", "train", "abc", "field 'task.train' = 'abc' must be int"),
    ("task", "train", [1], "field 'task.train' = [1] must be int"),
    ("task", "train", None, "field 'task.train' = None must be int"),
    ("task", "train", 2.7, "field 'task.train' = 2.7 must be int"),  # int() cut it to 2
    ("task", "test", True, "field 'task.test' = True must be int"),  # int() read it as 1
    ("run", None, [1], "field 'run' must be a mapping, got [1]"),
    ("run", None, "abc", "field 'run' must be a mapping, got 'abc'"),
])
def test_a_wrong_type_in_the_demo_task_or_run_section_is_one_line(tmp_path, capsys, section, key, value, message):
    """task.train/test and the run section are type-checked as the run config's fields are: one
    line naming the file and field, not a traceback from int()/dict(), and nothing written."""
    bad = _demo_config_with(tmp_path, section, key, value)
    run_dir = tmp_path / "d"
    assert main(["demo", "--config", str(bad), "--run-dir", str(run_dir)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"leti: error: {bad}: {message}"]
    assert not run_dir.exists()


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    # falsy wrong types were read as "no fields": the full demo's defaults (600 warm-start steps),
    # even with --quick
    ("task", None, [], "field 'task' must be a mapping, got []"),
    ("run", None, 0, "field 'run' must be a mapping, got 0"),
    ("warmstart", None, [], "field 'warmstart' must be a mapping, got []"),
    ("warmstart", None, False, "field 'warmstart' must be a mapping, got False"),
    ("task", None, None, "section 'task' is empty; give it fields, or remove it to keep its defaults"),
    ("run", None, None, "section 'run' is empty; give it fields, or remove it to keep its defaults"),
    ("warmstart", None, None, "section 'warmstart' is empty; give it fields, or remove it to keep its defaults"),
    ("task", None, {"tran": 4}, "unknown field 'task.tran' (known fields: train, test)"),
    # DemoConfig's own checks named neither the file nor the field
    ("task", "train", 0, "field 'task.train' = 0 must be >= 1"),
    ("task", "test", -2, "field 'task.test' = -2 must be >= 1"),
    ("run", "model", "gpt2", "field 'run.model' is set by the demo per seed and arm; remove it"),
    # merged with each arm's training_text: a traceback ('NoneType' object has no attribute 'update')
    ("run", "training_text", None,
     "section run: section 'training_text' is empty; give it fields, or remove it to keep its defaults"),
    ("run", "training_text", [1], "section run: field 'training_text' must be a mapping, got [1]"),
])
def test_a_demo_config_section_of_the_wrong_type_is_one_error_naming_file_and_field(tmp_path, section, key, value, message):
    """Checked by load_demo_config, which `leti demo` calls before it writes or trains anything
    (called directly here, so that a check that is missing fails the test instead of running the
    demo)."""
    bad = _demo_config_with(tmp_path, section, key, value)
    sep = ", " if message.startswith("section run:") else ": "
    with pytest.raises(LetiError) as e:
        load_demo_config(bad)
    assert str(e.value) == f"{bad}{sep}{message}"


@pytest.mark.parametrize(("split", "have"), [("train", 284), ("test", 228)])
def test_a_demo_task_size_beyond_the_family_is_refused_before_the_warm_start(tmp_path, capsys, split, have):
    """The synthetic family's size is checked when the config is read, not when the first arm's
    task is built after minutes of warm start."""
    bad = _demo_config_with(tmp_path, "task", split, 100000)
    run_dir = tmp_path / "d"
    assert main(["demo", "--config", str(bad), "--run-dir", str(run_dir)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"leti: error: {bad}: field 'task.{split}' = 100000 asks for more problems than the synthetic family has "
        f"({have} {split} problems); use {have} or fewer"]
    assert not run_dir.exists()
    whole = _demo_config_with(tmp_path, "task", split, have)  # the whole family is fine
    assert getattr(load_demo_config(whole), f"{split}_problems") == have


def test_a_folder_a_refused_run_was_given_is_still_the_users_for_the_demo(tmp_path, capsys, tiny_model_path, add_task):
    """`leti run` refused a non-empty folder but left its .lock there, and the demo then called
    the folder "a `leti run` directory"."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x\n")
    assert main(["run", "tiny-cpu", "--set", f"model={tiny_model_path}", "--set", f"task={add_task}",
                 "--run-dir", str(mine)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"leti: error: {mine}: not empty and not a leti run directory (it holds 'notes.txt'); pass a new or empty --run-dir"]
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    (mine / ".lock").write_text("")  # one left by an earlier leti: still the user's folder
    assert main(["demo", "--quick", "--run-dir", str(mine)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"leti: error: {mine}: not empty and not a leti demo directory (it holds 'notes.txt'); pass a new or empty --run-dir"]
    assert sorted(p.name for p in mine.iterdir()) == [".lock", "notes.txt"]


def _hand_arm(root: Path, cfg, counts: list[list[int]]) -> None:
    """An arm's run folder as the loop leaves it, written by hand: config.yaml (sealed, as leti
    writes it), run.json, and per iteration k a metrics line (6 gradient steps per iteration)
    and an eval.json whose per-problem counts (2 samples each) are counts[k]."""
    from leti.loop.checks import run_config_text
    from leti.loop.rundir import RunDir, write_json_atomic

    rd = RunDir(root)
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(run_config_text(cfg, "leti"))
    write_json_atomic(root / "run.json", {"mode": "leti", "config_sealed": True})
    lines = []
    for k, cs in enumerate(counts):
        rd.iteration(k).mkdir(parents=True)
        ev = {"pass@1": sum(cs) / (2 * len(cs))}
        write_json_atomic(rd.eval(k), {"pass@k": ev, "per_problem": {f"q{i}": [2, c] for i, c in enumerate(cs)}})
        lines.append({"iteration": k, "gradient_steps_total": 6 * k, "train_pass_rate": None if k == 0 else 0.0,
                      "eval": ev})
    (root / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_an_arm_continued_past_the_demo_is_compared_at_the_demos_iterations(tmp_path, monkeypatch, capsys):
    """The demo's docs invite continuing an arm with plain `leti run`. Seed 0's textual arm of a
    two-seed, one-iteration demo went on to iteration 2 (75%); the rerun demo took its final score
    from iteration 2 and binary's from iteration 1 (no budget-matched difference), while the
    per-iteration table, cut to the shortest seed, ended at iteration 1 and the gradient steps
    read 6, 9 and 12 in three places. Every number now comes from the demo's iteration 1, the arm
    is left as it is (not driven by the loop with iterations: 1), and a note says so. The arms are
    built by hand: the warm start and the loop are replaced, nothing is trained."""
    import leti.demo.run as demo_run
    import leti.loop.runner as runner

    monkeypatch.setattr(demo_run, "warm_start", lambda cfg, progress=True: cached_path(cfg))
    monkeypatch.setattr(demo_run, "write_corpus", lambda cfg, model: model / "corpus")
    driven = []
    monkeypatch.setattr(runner, "run", lambda cfg, run_dir, **kw: driven.append(Path(run_dir)) or 0)
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "demo.json").write_text(json.dumps({"settings": {"config": "demo-quick.yaml", "seeds": [0, 1], "quick": True},
                                                "stages": {}}))
    dcfg = load_demo_config(preset_path(True))
    assert demo_run._arm_run_config(dcfg, 0, "textual").iterations == 1
    at_1 = {(0, "textual"): [1, 0, 0, 0], (0, "binary"): [0, 0, 0, 0],
            (1, "textual"): [2, 0, 0, 0], (1, "binary"): [0, 0, 0, 0]}
    for (seed, arm), cs in at_1.items():
        counts = [[0, 0, 0, 0], cs] + ([[2, 2, 2, 0]] if (seed, arm) == (0, "textual") else [])
        cfg = demo_run._arm_run_config(dcfg, seed, arm)
        _hand_arm(demo / f"seed{seed}" / arm, dataclasses.replace(cfg, iterations=len(counts) - 1), counts)
    continued = demo / "seed0" / "textual"
    config_before = (continued / "config.yaml").read_text()

    assert main(["demo", "--quick", "--seeds", "2", "--run-dir", str(demo)]) == 0
    captured = capsys.readouterr()
    assert sorted(driven) == sorted(demo / f"seed{s}" / a for s, a in at_1 if (s, a) != (0, "textual"))
    assert (continued / "config.yaml").read_text() == config_before  # still the user's 2 iterations
    assert ("leti: note: seed 0's textual arm was continued past the demo's 1 iteration with `leti run` (to "
            "iteration 2): left as it is, and compared with the other arms at iteration 1") in captured.err

    s = json.loads((demo / "summary.json").read_text())
    assert s["per_seed"]["0"]["final_pass_at_1"] == {"textual": 0.125, "binary": 0.0}
    assert s["final_pass_at_1"]["textual"] == pytest.approx((0.125 + 0.25) / 2)
    assert s["per_seed"]["0"]["vs_binary"]["textual"]["difference_points"] == 12.5
    assert s["vs_binary"]["textual"]["difference_points"] == pytest.approx(18.75)
    assert s["per_seed"]["0"]["comparison"]["textual_last_iteration"] == 1
    for arm in ("textual", "binary"):
        assert [r["iteration"] for r in s["iterations"][arm]] == [0, 1]
        assert [r["iteration"] for r in s["per_seed"]["0"]["iterations"][arm]] == [0, 1]
        assert s["iterations"][arm][-1]["heldout_pass_at_1"] == pytest.approx(s["final_pass_at_1"][arm])
        assert s["gradient_steps"][arm] == s["iterations"][arm][-1]["gradient_steps"] == 6
        assert s["per_seed"]["0"]["gradient_steps"][arm] == 6
    assert s["past_demo_iterations"] == {"seed0/textual": 2}
    note = ("Every arm is compared at the demo's iteration 1: seed 0's textual arm (to iteration 2) was continued "
            "past it with `leti run`; the later iterations are left out here.")
    assert s["arms_note"] == note and s["note"].endswith(note)
    md = (demo / "report.md").read_text()
    assert "| textual | 18.8 ± " in md and note in md
    assert "18.8% ± " in captured.out  # the closing lines print the same numbers
