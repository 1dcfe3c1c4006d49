"""AdamW's state goes on from one iteration's training to the next, as the authors keep one train
state for the whole run (xingyaoww/LeTI run_leti.py restores and saves one T5X TrainState, optimiser
included): two training stages with the carried state train exactly as one stage over both."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from leti.cli import main
from leti.config import RunConfig, config_to_dict
from leti.errors import LetiError
from leti.loop.checks import check_unchanged
from leti.loop.rundir import RunDir
from leti.model import load_model_and_tokenizer
from leti.testing import make_tiny_model
from leti.training.config import TrainerConfig
from leti.training.trainer import OPTIMIZER_FILE, train

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")
TEXTS = [f"<|good|>def f{i}(a):\n    return a * {i} + {i % 3}\n" for i in range(8)]
CFG = TrainerConfig(batch_size=2, gradient_accumulation_steps=1, epochs=1, max_length=64, pretrain_mix_ratio=0,
                    learning_rate=1e-3)


@pytest.fixture
def model_and_tokenizer(tiny_model_path):
    model, tok = load_model_and_tokenizer(tiny_model_path, dtype="float32", device="cpu")
    for m in model.modules():  # dropout draws from the RNG each stage reseeds: take it out of the comparison
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model, tok


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_two_stages_with_the_carried_state_train_as_one(model_and_tokenizer, tmp_path):
    model, tok = model_and_tokenizer
    once, _ = train(copy.deepcopy(model), tok, TEXTS, CFG, progress=False)

    state = tmp_path / OPTIMIZER_FILE
    first, stats1 = train(copy.deepcopy(model), tok, TEXTS[:4], CFG, progress=False, optimizer_to=state)
    carried, stats2 = train(first, tok, TEXTS[4:], CFG, progress=False, optimizer_from=state)
    assert (stats1.optimizer_steps_before, stats2.optimizer_steps_before) == (0, 2)
    a, b = _weights(once), _weights(carried)
    assert all(torch.equal(a[k], b[k]) for k in a)

    # a new AdamW for the second stage (the old behaviour) trains other weights
    first, _ = train(copy.deepcopy(model), tok, TEXTS[:4], CFG, progress=False)
    fresh, stats = train(first, tok, TEXTS[4:], CFG, progress=False)
    assert stats.optimizer_steps_before == 0
    c = _weights(fresh)
    assert max((a[k] - c[k]).abs().max().item() for k in a) > 1e-5


def test_a_damaged_or_foreign_state_is_one_error_naming_the_file(model_and_tokenizer, tiny_model_path, tmp_path):
    model, tok = model_and_tokenizer
    state = tmp_path / OPTIMIZER_FILE
    with pytest.raises(LetiError, match=f"{state}: missing"):
        train(copy.deepcopy(model), tok, TEXTS[:2], CFG, progress=False, optimizer_from=state)
    state.write_bytes(b"not a torch file")
    with pytest.raises(LetiError, match=f"{state}: damaged"):
        train(copy.deepcopy(model), tok, TEXTS[:2], CFG, progress=False, optimizer_from=state)

    # the state of a model with other trainable weights (a smaller tiny model)
    other, other_tok = load_model_and_tokenizer(make_tiny_model(tmp_path / "other", n_embd=32), dtype="float32",
                                                device="cpu")
    train(other, other_tok, TEXTS[:2], CFG, progress=False, optimizer_to=state)
    with pytest.raises(LetiError, match=f"{state}: the AdamW state is for other trainable weights .*first difference"):
        train(copy.deepcopy(model), tok, TEXTS[:2], CFG, progress=False, optimizer_from=state)


def _run(run: Path, tiny_model_path: str, task_file: str, *extra: str) -> int:
    return main(["run", CONFIG, "--run-dir", str(run), "--set", f"model={tiny_model_path}", "--set", f"task={task_file}",
                 "--set", "progress=false", *extra])


@pytest.mark.slow
def test_a_run_carries_the_state_and_keeps_it_only_in_the_newest_checkpoint(tmp_path, tiny_model_path, shared_add_task,
                                                                           capsys):
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert _run(whole, tiny_model_path, shared_add_task, "--set", "iterations=2") == 0
    assert "AdamW going on from iteration 1" in capsys.readouterr().out
    stats = [json.loads((whole / "iterations" / str(k) / "train_stats.json").read_text()) for k in (1, 2)]
    assert stats[0]["optimizer_steps_before"] == 0
    assert stats[1]["optimizer_steps_before"] == stats[0]["optimizer_steps"] > 0
    assert not (whole / "iterations" / "1" / "checkpoint" / OPTIMIZER_FILE).exists()  # only the newest is needed
    saved = torch.load(whole / "iterations" / "2" / "checkpoint" / OPTIMIZER_FILE, weights_only=True)
    assert max(int(s["step"]) for s in saved["optimizer"]["state"].values()) == stats[0]["optimizer_steps"] + stats[1]["optimizer_steps"]

    # one iteration, then the run extended by another: the same weights as both in one go
    assert _run(split, tiny_model_path, shared_add_task) == 0
    assert (split / "iterations" / "1" / "checkpoint" / OPTIMIZER_FILE).exists()
    assert _run(split, tiny_model_path, shared_add_task, "--set", "iterations=2") == 0
    a = load_file(whole / "iterations" / "2" / "checkpoint" / "model.safetensors")
    b = load_file(split / "iterations" / "2" / "checkpoint" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)

    # the state cut short (a disk that filled up): refused before anything is sampled too, not after
    # iteration 3's whole sampling phase
    state = split / "iterations" / "2" / "checkpoint" / OPTIMIZER_FILE
    state.write_bytes(state.read_bytes()[:100])
    capsys.readouterr()
    assert _run(split, tiny_model_path, shared_add_task, "--set", "iterations=3") != 0
    assert f"{state}: damaged, not an AdamW state saved by leti (File is not a zip file); restore it" in capsys.readouterr().err
    assert not (split / "iterations" / "3").exists()
    # the state lost before a resume: refused before anything is sampled, naming the file
    state.unlink()
    capsys.readouterr()
    assert _run(split, tiny_model_path, shared_add_task, "--set", "iterations=3") != 0
    err = capsys.readouterr().err
    assert f"{split / 'iterations' / '2' / 'checkpoint' / OPTIMIZER_FILE}: missing; iteration 3 trains on" in err
    assert not (split / "iterations" / "3").exists()


def test_combinations_that_cannot_carry_are_refused_at_run_start(tmp_path, tiny_model_path, shared_add_task, capsys,
                                                                  monkeypatch):
    assert _run(tmp_path / "lora", tiny_model_path, shared_add_task, "--set", "trainer.lora.enabled=true") != 0
    assert "trainer.carry_optimizer_state: with trainer.lora.save 'merged' every iteration trains new adapters" in \
        capsys.readouterr().err
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    assert _run(tmp_path / "zero2", tiny_model_path, shared_add_task) != 0
    assert "trainer.carry_optimizer_state: DeepSpeed and FSDP split AdamW's state over the ranks" in capsys.readouterr().err
    assert not (tmp_path / "lora" / "iterations").exists() and not (tmp_path / "zero2" / "iterations").exists()


def test_a_run_from_before_the_carried_state_resumes_only_without_it(tmp_path):
    """Its config.yaml has no carry_optimizer_state and its checkpoints no AdamW state."""
    run = tmp_path / "old"
    run.mkdir()
    old = config_to_dict(RunConfig(trainer=TrainerConfig(carry_optimizer_state=False)))
    del old["trainer"]["carry_optimizer_state"]
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(LetiError, match="resume with --set trainer.carry_optimizer_state=false"):
        check_unchanged(RunDir(run), RunConfig())
    check_unchanged(RunDir(run), RunConfig(trainer=TrainerConfig(carry_optimizer_state=False)))
