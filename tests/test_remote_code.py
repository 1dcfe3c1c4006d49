"""Models whose modeling code ships with the checkpoint (config.json auto_map, as CodeGen2,
SantaCoder or replit-code on the hub): refused in one line without trust_remote_code, loaded,
trained, saved and reloaded with it. Offline: leti.testing.make_remote_code_model writes such a
model directory (a GPT-2 subclass with its own model_type)."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest
import torch

from leti.cli import main
from leti.config import load_config
from leti.errors import LetiError
from leti.loop.slot import ModelSlot
from leti.model import SPECIAL_TOKENS, RemoteCodeNotTrusted, load_model_and_tokenizer, save_model
from leti.sampling import SamplingConfig
from leti.testing import REMOTE_MODEL_TYPE, make_remote_code_model

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")
CODE_FILES = ("configuration_leti_tiny.py", "modeling_leti_tiny.py")


@pytest.fixture(scope="module")
def remote_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_remote_code_model(tmp_path_factory.mktemp("remote_model"))


@pytest.fixture(autouse=True)
def no_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers asks "run the custom code? [y/N]" on input() when trust_remote_code is left
    unset: leti must never get there (a run would block on a terminal)."""
    def refuse(*args, **kwargs):
        raise AssertionError("leti asked for input (transformers' trust_remote_code prompt)")

    monkeypatch.setattr(builtins, "input", refuse)


def _is_remote(model) -> bool:
    # Classes loaded from a model's own code live in transformers' dynamic modules.
    return type(model).__module__.startswith("transformers_modules")


def test_without_trust_remote_code_loading_is_one_line_naming_the_field(remote_model: str) -> None:
    with pytest.raises(RemoteCodeNotTrusted) as err:
        load_model_and_tokenizer(remote_model, device="cpu")
    message = str(err.value)
    assert "\n" not in message and remote_model in message
    assert "trust_remote_code: true" in message and "only for models whose repository you trust" in message


def test_with_trust_remote_code_the_model_loads_and_its_checkpoint_reloads(remote_model: str, tmp_path: Path) -> None:
    model, tok = load_model_and_tokenizer(remote_model, device="cpu", trust_remote_code=True)
    assert _is_remote(model) and model.config.model_type == REMOTE_MODEL_TYPE
    assert all(len(tok.encode(t, add_special_tokens=False)) == 1 for t in SPECIAL_TOKENS)
    ckpt = save_model(model, tok, tmp_path / "ckpt")
    # save_pretrained copies the model's own code next to the weights, so the checkpoint loads
    # anywhere, the original directory gone or not.
    assert all((ckpt / name).is_file() for name in CODE_FILES)
    assert "AutoModelForCausalLM" in json.loads((ckpt / "config.json").read_text())["auto_map"]
    with pytest.raises(RemoteCodeNotTrusted, match="trust_remote_code: true"):
        load_model_and_tokenizer(str(ckpt), device="cpu")
    again, tok2 = load_model_and_tokenizer(str(ckpt), device="cpu", trust_remote_code=True)
    assert _is_remote(again) and len(tok2) == len(tok)
    assert torch.equal(again.get_input_embeddings().weight, model.get_input_embeddings().weight)


def test_its_code_needing_a_missing_package_is_one_line(tmp_path: Path) -> None:
    path = Path(make_remote_code_model(tmp_path / "m"))
    code = path / "modeling_leti_tiny.py"
    code.write_text("import leti_no_such_package  # noqa\n" + code.read_text())
    with pytest.raises(LetiError, match="leti_no_such_package") as err:
        load_model_and_tokenizer(str(path), device="cpu", trust_remote_code=True)
    assert "\n" not in str(err.value)


def test_an_adapter_over_such_a_model_loads_its_base_with_the_flag(remote_model: str, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    model, tok = load_model_and_tokenizer(remote_model, device="cpu", trust_remote_code=True)
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["c_attn"], task_type="CAUSAL_LM"))
    adapter = save_model(peft, tok, tmp_path / "adapter")
    with pytest.raises(RemoteCodeNotTrusted, match="trust_remote_code: true"):
        load_model_and_tokenizer(str(adapter), device="cpu")
    loaded, _ = load_model_and_tokenizer(str(adapter), device="cpu", trust_remote_code=True)
    assert _is_remote(loaded.get_base_model())


def test_the_run_config_field_and_the_model_slot(remote_model: str) -> None:
    assert load_config(None).trust_remote_code is False
    assert load_config(CONFIG, ["trust_remote_code=true"]).trust_remote_code is True
    with pytest.raises(RemoteCodeNotTrusted):
        ModelSlot("float32", "cpu").get(remote_model)
    model, _ = ModelSlot("float32", "cpu", trust_remote_code=True).get(remote_model)
    assert _is_remote(model)


def test_the_vllm_engine_loads_tokenizer_and_config_with_the_flag(remote_model: str) -> None:
    # The engine itself starts on first use (needs vLLM); its tokenizer and context load now.
    from leti.sampling.vllm import VLLMEngine

    config = SamplingConfig(backend="vllm")
    with pytest.raises(RemoteCodeNotTrusted):
        VLLMEngine(config, remote_model)
    engine = VLLMEngine(config, remote_model, trust_remote_code=True)
    assert engine.trust_remote_code is True and engine.context == 512


def _task(tmp_path: Path) -> str:
    rows = [{"id": f"p{k}", "split": split, "entry_point": f"add_{k}",
             "prompt": f'def add_{k}(n):\n    """Add {k} to n."""\n', "tests": f"assert add_{k}(1) == {k + 1}"}
            for k, split in [(1, "train"), (2, "train"), (3, "test")]]
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}"


def test_leti_run_and_evaluate_refuse_such_a_model_in_one_line(remote_model: str, tmp_path: Path, capsys) -> None:
    task = _task(tmp_path)
    assert main(["run", CONFIG, "--run-dir", str(tmp_path / "run"), "--set", f"model={remote_model}",
                 "--set", f"task={task}", "--set", "progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "set trust_remote_code: true in the run config" in err
    assert main(["evaluate", "--task", task, "--model", remote_model, "--out", str(tmp_path / "ev"),
                 "--n", "1", "--max-new-tokens", "4", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pass --trust-remote-code" in err


@pytest.mark.slow
def test_leti_evaluate_draws_from_such_a_model_with_the_flag(remote_model: str, tmp_path: Path) -> None:
    out = tmp_path / "ev"
    assert main(["evaluate", "--task", _task(tmp_path), "--model", remote_model, "--trust-remote-code",
                 "--out", str(out), "--n", "2", "--k", "1", "--max-new-tokens", "4", "--device", "cpu"]) == 0
    assert json.loads((out / "results.json").read_text())["n_samples"] == 2


@pytest.mark.slow
def test_leti_run_trains_such_a_model_and_evaluate_scores_its_checkpoint(remote_model: str, tmp_path: Path) -> None:
    task, run = _task(tmp_path), tmp_path / "run"
    args = ["run", CONFIG, "--run-dir", str(run), "--set", f"model={remote_model}", "--set", f"task={task}",
            "--set", "trust_remote_code=true", "--set", "progress=false", "--set", "trainer.pretrain_mix_ratio=0",
            "--set", "sampling.max_new_tokens=8", "--set", "eval.max_new_tokens=8", "--set", "eval.n=1",
            "--set", "eval.ks=[1]"]
    assert main(args) == 0
    ckpt = run / "iterations" / "1" / "checkpoint"
    assert all((ckpt / name).is_file() for name in CODE_FILES)
    model, _ = load_model_and_tokenizer(str(ckpt), device="cpu", trust_remote_code=True)
    assert _is_remote(model)
    # Resuming for one more iteration loads checkpoint 1 from disk, with the flag.
    assert main(args + ["--set", "iterations=2"]) == 0
    assert (run / "iterations" / "2" / "checkpoint" / CODE_FILES[1]).is_file()
    out = tmp_path / "ev"
    assert main(["evaluate", "--task", task, "--model", str(ckpt), "--trust-remote-code", "--out", str(out),
                 "--n", "1", "--k", "1", "--max-new-tokens", "8", "--device", "cpu", "--prompt-prefix", "<|good|>"]) == 0
    assert json.loads((out / "results.json").read_text())["n_samples"] == 1


def test_qlora_loads_its_4bit_copy_with_the_model_s_own_code(remote_model: str) -> None:
    pytest.importorskip("bitsandbytes")
    from leti.training.config import LoraSettings, TrainerConfig
    from leti.training.trainer import train

    model, tok = load_model_and_tokenizer(remote_model, device="cpu", trust_remote_code=True)
    cfg = TrainerConfig(batch_size=2, epochs=1, max_length=32, pretrain_mix_ratio=0,
                        lora=LoraSettings(enabled=True, r=4, load_in_4bit=True))
    merged, stats = train(model, tok, ["<|good|>def f():\n    return 1\n"] * 2, cfg, progress=False, source=remote_model)
    assert _is_remote(merged) and stats.optimizer_steps == 1
