"""Trainer fixes: LoRA under gradient checkpointing with frozen embeddings, FSDP1's flat
parameters against weight decay, and `leti sft`'s note on a non-baseline trainer."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest

from leti.config import load_config
from leti.errors import LetiError
from leti.model import load_model_and_tokenizer
from leti.training.config import LoraSettings, TrainerConfig
from leti.training.sharded import check_sharding, check_strategy
from leti.training.trainer import train

TEXTS = ["<|good|>def f(x):\n    return x\n" * k for k in (1, 2, 3, 4)] * 2


@pytest.fixture
def model_and_tokenizer(tiny_model_path):
    return load_model_and_tokenizer(tiny_model_path, dtype="float32", device="cpu")


# --- gradient checkpointing ---------------------------------------------------------------


def test_lora_with_checkpointing_and_frozen_embeddings_trains_the_adapters(model_and_tokenizer):
    # transformers 4.x's re-entrant checkpointing gave the adapters no gradient here (backward failed)
    model, tok = model_and_tokenizer
    cfg = TrainerConfig(batch_size=4, gradient_accumulation_steps=1, epochs=1, max_length=64, learning_rate=1e-2, pretrain_mix_ratio=0,
                        pretrain_heldout_fraction=0, mixed_precision="no", gradient_checkpointing=True,
                        lora=LoraSettings(enabled=True, r=4, save="adapter", train_special_tokens=False))
    trained, stats = train(model, tok, TEXTS, cfg, progress=False)
    assert stats.optimizer_steps == 2
    lora_b = [p for n, p in trained.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.detach().abs().sum() > 0 for p in lora_b)  # lora_B starts at zero
    assert trained.config.use_cache  # checkpointing off again, ready to sample


def test_checkpointing_prints_no_deprecation_warnings(model_and_tokenizer):
    model, tok = model_and_tokenizer
    if not hasattr(model, "activation_checkpointing_enable"):
        pytest.skip("transformers 4.x: gradient_checkpointing_* is the current name")
    cfg = TrainerConfig(batch_size=4, epochs=1, max_length=64, pretrain_mix_ratio=0, pretrain_heldout_fraction=0,
                        mixed_precision="no", gradient_checkpointing=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained, _ = train(model, tok, TEXTS, cfg, progress=False)
    assert not [w for w in caught if "gradient_checkpointing" in str(w.message)]
    assert not trained.is_activation_checkpointing and trained.config.use_cache


# --- FSDP1 without use_orig_params ---------------------------------------------------------


def _fsdp_env(monkeypatch, **env):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    for key in ("FSDP_VERSION", "FSDP_USE_ORIG_PARAMS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize("env", [{"FSDP_VERSION": "1", "FSDP_USE_ORIG_PARAMS": "false"}, {}],
                         ids=["set-false", "accelerate-default"])
def test_fsdp1_without_orig_params_is_refused_when_weights_decay(monkeypatch, env):
    _fsdp_env(monkeypatch, **env)
    with pytest.raises(LetiError, match="set fsdp_use_orig_params: true in the accelerate config") as e:
        check_sharding(TrainerConfig(weight_decay=0.01))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("env, wd", [({"FSDP_VERSION": "1", "FSDP_USE_ORIG_PARAMS": "true"}, 0.01),
                                     ({"FSDP_VERSION": "2"}, 0.01),  # FSDP2 has no flat parameters
                                     ({"FSDP_VERSION": "1", "FSDP_USE_ORIG_PARAMS": "false"}, 0.0)],
                         ids=["orig-params", "fsdp2", "no-decay"])
def test_fsdp_that_keeps_weight_decay_is_not_refused_for_it(monkeypatch, env, wd):
    _fsdp_env(monkeypatch, **env)
    try:
        check_sharding(TrainerConfig(weight_decay=wd))
    except LetiError as e:
        assert "use_orig_params" not in str(e)  # without a GPU: "FSDP needs GPUs"


def test_fsdp1_plugin_without_orig_params_is_refused_before_prepare():
    from accelerate.utils import DistributedType

    def accelerator(version, orig):
        plugin = SimpleNamespace(fsdp_version=version, use_orig_params=orig)
        return SimpleNamespace(distributed_type=DistributedType.FSDP, state=SimpleNamespace(fsdp_plugin=plugin))

    with pytest.raises(LetiError, match="fsdp_use_orig_params: true"):
        check_strategy(accelerator(1, False), TrainerConfig())
    check_strategy(accelerator(1, True), TrainerConfig())
    check_strategy(accelerator(2, None), TrainerConfig())


# --- leti sft on a config that is not the spec's baseline ----------------------------------


@pytest.mark.parametrize("preset, noted", [("tiny-cpu", True), ("mbpp-codegen-350m", True),
                                           ("mbpp-sft", False), ("mbpp-codegen-2b-sft", False)])
def test_sft_notes_a_trainer_that_is_not_the_spec_baseline(preset, noted):
    from leti.loop.checks import sft_baseline_note

    note = sft_baseline_note(load_config(preset, []))
    assert (note is not None) == noted
    if noted:
        assert "mbpp-sft" in note and "lr 1e-4 for 30 epochs" in note and "\n" not in note


def test_leti_sft_prints_the_note_once_the_start_checks_pass(tmp_path, tiny_model_path, capsys):
    """Through the real command, on stderr with leti's other notes, once the start checks pass (a
    run they refuse shows its error alone: tests/test_bad_input.py)."""
    from leti.cli import main

    assert main(["sft", "tiny-cpu", "--set", f"model={tiny_model_path}", "--set", "progress=false",
                 "--run-dir", str(tmp_path / "sft")]) == 0
    assert "leti: note: this SFT run trains with trainer.learning_rate 0.001 and trainer.epochs 1" in capsys.readouterr().err


def test_rank_seeds_do_not_repeat_across_ranks_and_stages():
    """Each stage is seeded cfg.seed + iteration. With seed + rank (accelerate's device_specific),
    rank 1 of one stage drew the dropout masks of rank 0 of the next."""
    from leti.training.trainer import rank_seed

    seeds = {(s, r): rank_seed(s, r) for s in range(20) for r in range(8)}
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= v < 2**32 for v in seeds.values())
