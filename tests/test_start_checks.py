"""Checks `leti run` makes at its start, before anything is sampled or written: what the run
would otherwise find only mid-run, after work that the fix then throws away."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from leti.cli import main
from leti.config import load_config
from leti.tasks.registry import get_task


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("leti: error: "), err
    return err


def _task(directory: Path, train_prompt: str, test_prompt: str = "def add(a, b):\n") -> Path:
    rows = [{"id": "add", "split": "train", "prompt": train_prompt, "tests": "assert add(1, 2) == 3"},
            {"id": "t", "split": "test", "prompt": test_prompt, "tests": "assert add(1, 2) == 3"}]
    path = directory / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(directory: Path, model: str, task: Path, iterations: int = 1) -> Path:
    path = directory / "run.yaml"
    path.write_text(yaml.safe_dump({
        "model": model, "device": "cpu", "task": f"jsonl:{task}", "iterations": iterations, "progress": False,
        "sampling": {"n": 1, "max_new_tokens": 4}, "eval": {"n": 1, "ks": [1]}, "execution": {"workers": 1},
        "trainer": {"epochs": 1, "batch_size": 1, "max_length": 64, "pretrain_mix_ratio": 0}}))
    return path


def _nothing_written(run_dir: Path) -> bool:
    return not run_dir.exists() or not any(p.name != ".lock" for p in run_dir.iterdir())


# The tiny model's context is 512 tokens and its tokenizer makes one token of each '~'.
@pytest.mark.parametrize("train_prompt, test_prompt, line, message", [
    # found only when iteration 1 sampled it, after iteration 0's whole evaluation; fixing the
    # file then made the run refuse to resume ("its problems changed")
    ("~" * 600, "def add(a, b):\n", 1,
     "problem 'add': prompt has 600 tokens but the model's context is 512; shorten the prompt or use a "
     "longer-context model"),
    ("", "def add(a, b):\n", 1, "problem 'add' has an empty prompt; give some text"),
    ("def add(a, b):\n", "~" * 512, 2,
     "problem 't': prompt has 512 tokens but the model's context is 512; shorten the prompt or use a "
     "longer-context model"),
])
def test_a_prompt_the_sampler_would_refuse_is_refused_at_run_start(tmp_path, tiny_model_path, capsys,
                                                                     train_prompt, test_prompt, line, message):
    task = _task(tmp_path, train_prompt, test_prompt)
    run_dir = tmp_path / "run"
    assert main(["run", str(_config(tmp_path, tiny_model_path, task)), "--run-dir", str(run_dir)]) == 2
    assert one_error_line(capsys) == f"leti: error: {task}:{line}: {message}"
    assert _nothing_written(run_dir)  # so the fixed file starts the run afresh


def test_the_good_prefix_of_later_iterations_counts(tmp_path, tiny_model_path, capsys):
    # 511 tokens fit the 512-token context alone; iteration 2 samples '<|good|>' + prompt: 512
    task = _task(tmp_path, "~" * 511)
    run_dir = tmp_path / "run"
    config = _config(tmp_path, tiny_model_path, task, iterations=2)
    assert main(["run", str(config), "--run-dir", str(run_dir)]) == 2
    assert one_error_line(capsys) == (
        f"leti: error: {task}:1: problem 'add': prompt with the <|good|> prefix later iterations sample it with "
        "has 512 tokens but the model's context is 512; shorten the prompt or use a longer-context model")
    assert _nothing_written(run_dir)
    from leti.loop.checks import check_prompts, start_tokenizer

    # one iteration samples the train prompt only plainly; `leti sft` samples no train prompt
    cfg = load_config(config, ["iterations=1"])
    t = get_task(cfg.task)
    check_prompts(cfg, "leti", t, t.problems("train"), t.problems("test"), start_tokenizer(cfg))
    cfg = load_config(config)
    check_prompts(cfg, "sft", t, t.problems("train"), t.problems("test"), start_tokenizer(cfg))
    # without reward tokens no prompt is prefixed
    cfg = load_config(config, ["training_text.reward_token=false"])
    check_prompts(cfg, "leti", t, t.problems("train"), t.problems("test"), start_tokenizer(cfg))


def test_a_prompt_beyond_vllms_max_model_len_names_that_setting(tmp_path, tiny_model_path, capsys):
    """The engine's context is sampling.vllm.max_model_len when set: the error blamed the model's
    context (512 here, room enough) and told the user to shorten the prompt."""
    task = _task(tmp_path, "~" * 100)
    run_dir = tmp_path / "run"
    config = _config(tmp_path, tiny_model_path, task)
    assert main(["run", str(config), "--run-dir", str(run_dir), "--set", "sampling.backend=vllm",
                 "--set", "sampling.vllm.max_model_len=64"]) == 2
    assert one_error_line(capsys) == (
        f"leti: error: {task}:1: problem 'add': prompt has 100 tokens but sampling.vllm.max_model_len is 64; "
        "raise it, or set it to null for the model's own context")
    assert _nothing_written(run_dir)
    # at or above the model's own context (512), the model's context is what limits
    capsys.readouterr()
    task = _task(tmp_path, "~" * 600)
    assert main(["run", str(config), "--run-dir", str(run_dir), "--set", "sampling.backend=vllm",
                 "--set", "sampling.vllm.max_model_len=1024"]) == 2
    assert one_error_line(capsys).endswith("prompt has 600 tokens but the model's context is 512; shorten the prompt "
                                           "or use a longer-context model")
