"""leti's adapter checkpoint as `model` with trainer.lora.enabled and lora.save: adapter: its own
adapters train on, with their own r, alpha, dropout, target layers and token rows. A config that
asks for others was dropped without a word (the new checkpoint still had r 16); it is refused in
one line, at run start (before any sampling) and where training starts. And an adapter whose base
model is missing is named, with its adapter_config.json, by `leti evaluate` as by `leti run`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from leti.cli import main
from leti.errors import LetiError
from leti.model import base_model, load_model_and_tokenizer, save_model
from leti.training.config import LoraSettings, TrainerConfig
from leti.training.lora import apply_lora, check_lora_targets
from leti.training.trainer import train

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")
TEXTS = ["<|good|>def add(a, b):\n    return a + b\n"]
FIX = "to go on training them, or, for new adapters, trainer.lora.save: merged (these merged in first) or model: {base} (their base model)"


def _lora(**settings) -> TrainerConfig:
    return TrainerConfig(epochs=1, batch_size=1, max_length=64, pretrain_mix_ratio=0.0,
                         lora=LoraSettings(enabled=True, save="adapter", **settings))


def _checkpoint(base: str, out: Path, **settings) -> str:
    """An adapter checkpoint as a run with these trainer.lora settings writes it (untrained: the
    checks read only its adapter_config.json and the model's layout)."""
    model, tok = load_model_and_tokenizer(base, device="cpu")
    save_model(apply_lora(model, tok, _lora(**settings)), tok, out)
    return str(out)


@pytest.fixture(scope="module")
def default(tiny_model_path, tmp_path_factory) -> str:
    """trainer.lora's defaults: r 16, alpha 32, dropout 0.05, all-linear (saved as the full names
    of GPT-2's c_attn, c_fc and c_proj layers), LeTI's token rows."""
    return _checkpoint(tiny_model_path, tmp_path_factory.mktemp("default") / "checkpoint")


@pytest.fixture(scope="module")
def attention_only(tiny_model_path, tmp_path_factory) -> str:
    """Explicit target_modules [c_attn], no token rows (trainable_token_indices null)."""
    return _checkpoint(tiny_model_path, tmp_path_factory.mktemp("attention") / "checkpoint",
                       r=4, alpha=8, dropout=0.0, target_modules=["c_attn"], train_special_tokens=False)


@pytest.mark.parametrize(("setting", "have", "mine", "theirs"), [
    (dict(r=4), "have r=16", "r=4", "r: 16"),
    (dict(alpha=4), "have lora_alpha=32", "alpha=4", "alpha: 32"),
    (dict(dropout=0.3), "have lora_dropout=0.05", "dropout=0.3", "dropout: 0.05"),
    (dict(target_modules=["c_attn"]), "are on the layers [c_attn, c_fc, c_proj]", "target_modules=['c_attn']",
     "target_modules: [c_attn, c_fc, c_proj]"),
    (dict(train_special_tokens=False), "train the rows of LeTI's tokens (trainable_token_indices)",
     "train_special_tokens=false", "train_special_tokens: true"),
], ids=["r", "alpha", "dropout", "target_modules", "train_special_tokens"])
def test_run_start_refuses_settings_the_checkpoint_s_adapters_do_not_have(default, tiny_model_path, setting, have,
                                                                             mine, theirs):
    with pytest.raises(LetiError) as info:
        check_lora_targets(default, _lora(**setting))
    assert str(info.value) == (f"{default}/adapter_config.json: these adapters {have}, not trainer.lora.{mine}; "
                               f"set trainer.lora.{theirs} " + FIX.format(base=tiny_model_path))


def test_leti_run_refuses_before_sampling(default, tmp_path, capsys):
    """The reviewer's run: every setting differs; the first (r) is named, and nothing is sampled."""
    run = tmp_path / "run"
    sets = ["model=" + default, "trainer.lora.enabled=true", "trainer.lora.save=adapter", "trainer.lora.r=4",
            "trainer.lora.alpha=4", "trainer.lora.target_modules=[c_attn]", "trainer.lora.dropout=0.3"]
    assert main(["run", CONFIG, "--run-dir", str(run), *[a for s in sets for a in ("--set", s)]]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("leti: error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"leti: error: {default}/adapter_config.json: these adapters have r=16, not trainer.lora.r=4; "
        "set trainer.lora.r: 16 to go on training them")
    assert not (run / "iterations").exists()


def test_training_a_loaded_checkpoint_refuses_other_settings(default, tiny_model_path):
    """train() itself (a caller without the run-start check): refused before any step, the
    checkpoint's adapters untouched."""
    model, tok = load_model_and_tokenizer(default, device="cpu")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    with pytest.raises(LetiError) as info:
        train(model, tok, TEXTS, _lora(r=4), progress=False, source=default)
    assert str(info.value).startswith(f"{default}/adapter_config.json: these adapters have r=16, not trainer.lora.r=4;")
    assert all((p == before[n]).all() for n, p in model.named_parameters() if "lora_B" in n)


@pytest.mark.parametrize("targets", [["all-linear"], ["c_attn", "c_fc", "c_proj"], ["attn.c_attn", "c_fc", "c_proj"]])
def test_the_same_settings_go_on_training(default, targets):
    """The next iteration of a run continues its checkpoint with the run's own config; targets
    compare by the layers they name (peft saved all-linear as full names)."""
    # imported here: the old code, without it, fails this test alone
    from leti.training.lora import check_loaded_adapters

    same = _lora(target_modules=targets)
    check_lora_targets(default, same)
    model, _ = load_model_and_tokenizer(default, device="cpu")
    check_loaded_adapters(model, same, default)


def test_explicit_targets_and_no_token_rows_are_compared_both_ways(attention_only, tiny_model_path):
    from leti.training.lora import check_loaded_adapters

    same = _lora(r=4, alpha=8, dropout=0.0, target_modules=["c_attn"], train_special_tokens=False)
    check_lora_targets(attention_only, same)
    model, _ = load_model_and_tokenizer(attention_only, device="cpu")
    check_loaded_adapters(model, same, attention_only)
    rows = _lora(r=4, alpha=8, dropout=0.0, target_modules=["c_attn"])
    expected = (f"{attention_only}/adapter_config.json: these adapters train no rows of LeTI's tokens (no "
                "trainable_token_indices), not trainer.lora.train_special_tokens=true; set "
                "trainer.lora.train_special_tokens: false " + FIX.format(base=tiny_model_path))
    for check in (lambda: check_lora_targets(attention_only, rows), lambda: check_loaded_adapters(model, rows, attention_only)):
        with pytest.raises(LetiError) as info:
            check()
        assert str(info.value) == expected
    more = _lora(r=4, alpha=8, dropout=0.0, target_modules=["c_attn", "c_proj"], train_special_tokens=False)
    with pytest.raises(LetiError, match=r"these adapters are on the layers \[c_attn\], not trainer.lora.target_modules="
                                        r"\['c_attn', 'c_proj'\]; set trainer.lora.target_modules: \[c_attn\] "):
        check_loaded_adapters(model, more, attention_only)



def test_default_all_linear_is_compared_with_the_checkpoint_s_layers(tiny_model_path, tmp_path):
    """trainer.lora's default target_modules ['all-linear'] was never compared: a checkpoint with
    adapters on c_attn only, continued with the defaults, trained c_attn alone while the config
    said every linear layer. 'all-linear' now means the layers peft would choose (every Linear /
    Conv1D but the output head), at run start and where training starts."""
    from leti.training.lora import check_loaded_adapters

    attention = _checkpoint(tiny_model_path, tmp_path / "checkpoint", target_modules=["c_attn"])
    defaults = _lora()  # r 16, alpha 32, dropout 0.05, token rows: as the checkpoint's, all-linear not
    expected = (f"{attention}/adapter_config.json: these adapters are on the layers [c_attn], not "
                "trainer.lora.target_modules=['all-linear']; set trainer.lora.target_modules: [c_attn] "
                + FIX.format(base=tiny_model_path))
    model, _ = load_model_and_tokenizer(attention, device="cpu")
    for check in (lambda: check_lora_targets(attention, defaults),
                  lambda: check_loaded_adapters(model, defaults, attention)):
        with pytest.raises(LetiError) as info:
            check()
        assert str(info.value) == expected
    same = _lora(target_modules=["c_attn"])
    check_lora_targets(attention, same)
    check_loaded_adapters(model, same, attention)

def test_evaluate_names_the_adapter_whose_base_model_is_missing(default, tmp_path, capsys):
    """`leti evaluate` said only 'no such model directory: ...', naming neither the adapter nor
    its adapter_config.json; it now says what `leti run` says."""
    adapter = tmp_path / "adapter"
    shutil.copytree(default, adapter)
    config = adapter / "adapter_config.json"
    missing = str(tmp_path / "no-such-base")
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": missing}))
    line = f"{config} names base model '{missing}': no such model directory: {missing}; "
    with pytest.raises(LetiError) as info:
        base_model(adapter)
    assert str(info.value).startswith(line)
    capsys.readouterr()
    assert main(["evaluate", "--task", "mbpp", "--model", str(adapter), "--out", str(tmp_path / "out"), "--n", "1"]) == 2
    evaluate = [e for e in capsys.readouterr().err.splitlines() if e.startswith("leti: error:")]
    assert main(["run", CONFIG, "--run-dir", str(tmp_path / "run"), "--set", f"model={adapter}"]) == 2
    run = [e for e in capsys.readouterr().err.splitlines() if e.startswith("leti: error:")]
    assert evaluate == run and len(run) == 1 and run[0].startswith(f"leti: error: {line}")
