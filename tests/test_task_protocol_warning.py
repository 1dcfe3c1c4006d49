"""`leti run` on a task with an evaluation protocol of its own, with eval.* left at the config's
defaults (MBPP's), says that its pass@k will not be the protocol's `leti evaluate` reports."""

from __future__ import annotations

import json
from dataclasses import replace

from leti.cli import main
from leti.config import EvalSection, RunConfig
from leti.loop.runner import task_protocol_warning
from leti.tasks.registry import get_task


def test_a_task_with_its_own_protocol_and_default_eval_settings_is_warned_about(geneva):
    warning = task_protocol_warning(RunConfig(task="geneva"), geneva)
    assert warning is not None and "\n" not in warning
    assert warning.startswith("leti: warning: task 'geneva' has its own evaluation protocol")
    # the flags it names are GENEVA's protocol (greedy, one sample, pass@1)
    assert warning.endswith("--set eval.n=1 --set eval.temperature=0.0 --set eval.max_new_tokens=256 --set eval.ks=[1]")
    synthetic = task_protocol_warning(RunConfig(task="synthetic"), get_task("synthetic"))
    assert "eval.n=16 (task: 4)" in synthetic and "--set eval.temperature=0.2" in synthetic


def test_no_warning_when_the_eval_section_is_the_users_or_the_task_has_no_protocol(geneva, tmp_path):
    # MBPP's protocol is the defaults themselves
    assert task_protocol_warning(RunConfig(), get_task("mbpp")) is None
    # any protocol field set away from its default: the eval section is the user's choice
    for change in ({"n": 2, "ks": [1, 2]}, {"temperature": 0.0}, {"split": "val"}, {"max_new_tokens": 128}):
        cfg = RunConfig(task="geneva", eval=replace(EvalSection(), **change))
        assert task_protocol_warning(cfg, geneva) is None, change
    # the base class's placeholder (a JSONL task) is no protocol to follow
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"task_id": "a", "split": "test", "prompt": "def f():\n", "tests": "assert f() is None\n"})
                    + "\n")
    assert task_protocol_warning(RunConfig(task=f"jsonl:{path}"), get_task(f"jsonl:{path}")) is None


def test_leti_run_prints_it_before_it_loads_the_model(tmp_path, capsys):
    config, model = tmp_path / "config.yaml", tmp_path / "not-a-model"
    config.write_text("# every field at its default\n")
    model.mkdir()  # the run stops where it loads the model, after its start-up warnings
    args = ["run", str(config), "--run-dir", str(tmp_path / "run"), "--set", f"model={model}",
            "--set", "task=synthetic", "--set", "trainer.pretrain_corpus=stdlib"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "leti: warning: task 'synthetic' has its own evaluation protocol" in err
    assert "has no config.json" in err
    # nothing was produced, so the same command is a new start, whose eval.* may still change:
    # said again (a resume, whose eval.* are fixed, does not say it)
    assert main(args) == 2
    assert "evaluation protocol" in capsys.readouterr().err
