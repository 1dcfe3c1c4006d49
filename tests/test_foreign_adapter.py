"""A user's own peft LoRA adapter directory as `model` (one leti did not write): merged into its
base model before LeTI's tokens are added, so that the run's trainer settings apply to it as to
any model; leti's own adapter checkpoints go on training their adapters only when the trainer
config continues adapters (lora.enabled, lora.save: adapter), and are merged first otherwise."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from leti.errors import LetiError
from leti.model import SPECIAL_TOKENS, load_model_and_tokenizer, save_model, written_by_leti
from leti.testing import make_tiny_model
from leti.training.config import LoraSettings, TrainerConfig
from leti.training.lora import apply_lora, is_peft
from leti.training.trainer import train

TEXTS = ["<|good|>def add(a, b):\n    return a + b\n",
         "<|bad|><|lang_feedback|>NameError: name 'c' is not defined<|/lang_feedback|>def add(a, b):\n    return a + c\n"]
PROMPT = "def f(x):\n    return x\n"
TINY = dict(epochs=1, batch_size=2, max_length=64, pretrain_mix_ratio=0.0, learning_rate=1e-2)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    """A tiny Llama (untied head, a sentencepiece-style tokenizer that puts BOS in front)."""
    return make_tiny_model(tmp_path_factory.mktemp("llama"), arch="llama", n_positions=256, tokenizer="sentencepiece")


def _foreign_adapter(base: str, out, extra_token: str | list[str] | None = None, tokenizer: bool = True,
                     **lora) -> str:
    """The user's own adapter, made with peft alone over the raw base (no LeTI tokens) and saved
    with the base's tokenizer (plus `extra_token`, or a list of them, with their embedding rows,
    when given; no tokenizer at all with tokenizer=False)."""
    model = AutoModelForCausalLM.from_pretrained(base)
    tok = AutoTokenizer.from_pretrained(base)
    if extra_token is not None:
        extra = [extra_token] if isinstance(extra_token, str) else extra_token
        tok.add_special_tokens({"additional_special_tokens": extra})
        model.resize_token_embeddings(len(tok))
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", **lora)
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained adapter: B is not 0, so merging it changes the model
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    peft_model.save_pretrained(out)
    if tokenizer:
        tok.save_pretrained(out)
    return str(out)


def _merged_by_hand(base: str, adapter: str, rows: int | None = None):
    model = AutoModelForCausalLM.from_pretrained(base)
    if rows is not None:
        model.resize_token_embeddings(rows)
    return PeftModel.from_pretrained(model, adapter).merge_and_unload().eval()


def _logits(model, ids: list[int], vocab: int = 512) -> torch.Tensor:
    """The logits of the base's vocabulary (LeTI's tokens come after it)."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, :, :vocab]


def _rows(model, tok, tokens=SPECIAL_TOKENS[:2]):
    ids = [tok.convert_tokens_to_ids(t) for t in tokens]
    return [model.get_input_embeddings().weight[i].detach().clone() for i in ids]


def test_a_foreign_adapter_loads_merged_into_its_base_and_leti_s_rows_train(base, tmp_path):
    adapter = _foreign_adapter(base, tmp_path / "adapter")
    assert not written_by_leti(adapter)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # transformers' is_gradient_checkpointing notice
        model, tok = load_model_and_tokenizer(adapter, device="cpu")
    assert not is_peft(model) and not hasattr(model, "peft_config")
    assert all(len(tok.encode(t, add_special_tokens=False)) == 1 for t in SPECIAL_TOKENS)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    # the user's model is base + adapter: the same logits as merging it by hand
    ids = AutoTokenizer.from_pretrained(base)(PROMPT).input_ids
    assert tok(PROMPT).input_ids == ids
    by_hand = _merged_by_hand(base, adapter)
    torch.testing.assert_close(_logits(model, ids), _logits(by_hand, ids), rtol=0, atol=1e-5)
    assert not torch.allclose(_logits(model, ids), _logits(AutoModelForCausalLM.from_pretrained(base), ids))
    good, bad = _rows(model, tok)
    assert torch.equal(good, bad)  # both start at the mean
    trained, _ = train(model, tok, TEXTS, TrainerConfig(**TINY), progress=False)  # full fine-tuning
    assert not is_peft(trained)
    good, bad = _rows(trained, tok)
    assert not torch.equal(good, bad)


@pytest.mark.parametrize("extra", [None, "<tool>"], ids=["base-vocab", "extra-token"])
def test_a_foreign_adapter_that_saved_the_embeddings_loads(base, tmp_path, extra):
    """modules_to_save: embed_tokens and lm_head, saved at the base's vocabulary size (or at
    the size of the adapter's tokenizer, which added a token): loads, merged, no traceback."""
    adapter = _foreign_adapter(base, tmp_path / "adapter", extra_token=extra,
                               modules_to_save=["embed_tokens", "lm_head"])
    model, tok = load_model_and_tokenizer(adapter, device="cpu")
    assert not is_peft(model)
    plain = AutoTokenizer.from_pretrained(base)
    assert len(tok) == len(plain) + (extra is not None) + len(SPECIAL_TOKENS)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    if extra is not None:
        assert len(tok.encode(extra, add_special_tokens=False)) == 1  # the adapter's own tokenizer
    ids = plain(PROMPT).input_ids
    by_hand = _merged_by_hand(base, adapter, rows=len(plain) + 1 if extra else None)
    vocab = len(plain) + (extra is not None)
    torch.testing.assert_close(_logits(model, ids, vocab), _logits(by_hand, ids, vocab), rtol=0, atol=1e-5)


def _leti_checkpoint(base: str, out, **lora) -> str:
    """An adapter checkpoint as the loop writes it with trainer.lora.save: adapter."""
    model, tok = load_model_and_tokenizer(base, device="cpu")
    cfg = TrainerConfig(**TINY, lora=LoraSettings(enabled=True, r=2, alpha=4, save="adapter", **lora))
    first, _ = train(model, tok, TEXTS, cfg, progress=False)
    save_model(first, tok, out)
    return str(out)


def _adapter_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n or "trainable_tokens" in n}


def test_leti_s_adapter_checkpoint_goes_on_training_its_adapters(base, tmp_path):
    ckpt = _leti_checkpoint(base, tmp_path / "ckpt")
    assert written_by_leti(ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        model, tok = load_model_and_tokenizer(ckpt, device="cpu")
    assert is_peft(model)
    assert any(p.requires_grad for n, p in model.named_parameters() if "trainable_tokens_delta" in n)
    before = _adapter_weights(model)
    cfg = TrainerConfig(**TINY, lora=LoraSettings(enabled=True, r=2, alpha=4, save="adapter"))
    second, _ = train(model, tok, TEXTS, cfg, progress=False)
    assert is_peft(second) and second.peft_config["default"].r == 2  # the same adapters, not new ones
    after = _adapter_weights(second)
    assert after.keys() == before.keys()
    assert any(not torch.equal(after[k], before[k]) for k in before)


def test_leti_s_adapter_checkpoint_without_special_token_rows_is_still_leti_s(base, tmp_path):
    ckpt = _leti_checkpoint(base, tmp_path / "ckpt", train_special_tokens=False)
    assert json.loads((tmp_path / "ckpt" / "adapter_config.json").read_text())["trainable_token_indices"] is None
    assert written_by_leti(ckpt)
    model, _ = load_model_and_tokenizer(ckpt, device="cpu")
    assert is_peft(model)


def test_leti_s_adapter_checkpoint_is_merged_first_without_lora(base, tmp_path):
    """trainer.lora.enabled: false given an adapter checkpoint: full fine-tuning of base +
    adapters (it trained only the old adapters, and kept the checkpoint an adapter)."""
    ckpt = _leti_checkpoint(base, tmp_path / "ckpt")
    model, tok = load_model_and_tokenizer(ckpt, device="cpu")
    merged = PeftModel.from_pretrained(load_model_and_tokenizer(base, device="cpu")[0], ckpt).merge_and_unload()
    good_before, bad_before = _rows(merged, tok)
    q_before = merged.model.layers[0].self_attn.q_proj.weight.detach().clone()
    trained, _ = train(model, tok, TEXTS, TrainerConfig(**TINY), progress=False)
    assert not is_peft(trained) and not hasattr(trained, "peft_config")
    good, bad = _rows(trained, tok)
    assert not torch.equal(good, good_before) and not torch.equal(bad, bad_before)
    assert not torch.equal(trained.model.layers[0].self_attn.q_proj.weight, q_before)


def test_leti_s_adapter_checkpoint_gets_the_configured_adapters_with_save_merged(base, tmp_path):
    """lora.save: merged: the checkpoint's adapters are merged, and new ones of the configured
    target_modules train (the old all-linear adapters went on training before)."""
    ckpt = _leti_checkpoint(base, tmp_path / "ckpt")
    model, tok = load_model_and_tokenizer(ckpt, device="cpu")
    merged = PeftModel.from_pretrained(load_model_and_tokenizer(base, device="cpu")[0], ckpt).merge_and_unload()
    attn = merged.model.layers[0].self_attn
    q_before, o_before = attn.q_proj.weight.detach().clone(), attn.o_proj.weight.detach().clone()
    cfg = TrainerConfig(**TINY, lora=LoraSettings(enabled=True, r=2, alpha=4, target_modules=["o_proj"]))
    trained, _ = train(model, tok, TEXTS, cfg, progress=False)
    assert not is_peft(trained)
    attn = trained.model.layers[0].self_attn
    assert torch.equal(attn.q_proj.weight, q_before)  # no adapter there any more
    assert not torch.equal(attn.o_proj.weight, o_before)


def test_a_broken_adapter_is_one_line(base, tmp_path):
    """Adapter weights saved over another base (other shapes), naming this one."""
    other = make_tiny_model(tmp_path / "other", arch="llama", n_embd=32, n_positions=256, tokenizer="sentencepiece")
    adapter = _foreign_adapter(other, tmp_path / "adapter")
    config = tmp_path / "adapter" / "adapter_config.json"
    data = json.loads(config.read_text())
    data["base_model_name_or_path"] = base
    config.write_text(json.dumps(data))
    with pytest.raises(LetiError) as info:
        load_model_and_tokenizer(adapter, device="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"peft adapter {adapter} could not be applied to its base model {base} (")
    assert "merge_and_unload" in message and "pass that directory" in message


@pytest.mark.parametrize("whose", ["foreign", "leti-merged"])
def test_qlora_trains_on_the_merged_weights(base, tmp_path, whose):
    """QLoRA's 4-bit training copy holds base + the merged adapter, as the full-precision model
    does: a user's adapter (loaded merged), or leti's checkpoint given a config that merges it
    (it was the bare base, so new adapters trained on other weights than they merge into)."""
    pytest.importorskip("bitsandbytes")
    import bitsandbytes.functional as bnbf

    from leti.training.lora import load_4bit

    if whose == "foreign":
        source = _foreign_adapter(base, tmp_path / "adapter")
    else:
        # adapters as leti saves them, with weights far from 0 (one tiny training step moves them
        # by about NF4's rounding)
        model, tok = load_model_and_tokenizer(base, device="cpu")
        peft_model = apply_lora(model, tok, TrainerConfig(lora=LoraSettings(enabled=True, r=2, alpha=4, save="adapter")))
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
        source = str(save_model(peft_model, tok, tmp_path / "ckpt"))
    model, tok = load_model_and_tokenizer(source, device="cpu")
    if is_peft(model):
        model = model.merge_and_unload()  # what _setup_model does for lora.save: merged
    q_full = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    q_base = AutoModelForCausalLM.from_pretrained(base).model.layers[0].self_attn.q_proj.weight.detach()
    assert (q_full - q_base).abs().mean() > 1e-3
    cfg = TrainerConfig(lora=LoraSettings(enabled=True, r=2, alpha=4, load_in_4bit=True))
    full = apply_lora(model, tok, cfg)
    copy4 = load_4bit(source, full, tok, cfg, torch.device("cpu"), merge_source=whose != "foreign")
    layer = copy4.get_base_model().model.layers[0].self_attn.q_proj.base_layer
    q4 = bnbf.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    assert (q4 - q_full).abs().mean() < (q4 - q_base).abs().mean() / 2


@pytest.mark.parametrize("four_bit", [False, True], ids=["lora", "qlora"])
def test_adapters_trained_over_a_foreign_adapter_reload_over_it(base, tmp_path, four_bit):
    """lora.save: adapter over a user's adapter: the checkpoint names the user's adapter
    directory as its base (what the weights were), so it reloads, and goes on training, on base +
    user's adapter; under QLoRA the 4-bit copy is built the same way."""
    if four_bit:
        pytest.importorskip("bitsandbytes")
    adapter = _foreign_adapter(base, tmp_path / "adapter")
    model, tok = load_model_and_tokenizer(adapter, device="cpu")
    cfg = TrainerConfig(**TINY, lora=LoraSettings(enabled=True, r=2, alpha=4, save="adapter", load_in_4bit=four_bit))
    first, _ = train(model, tok, TEXTS, cfg, progress=False, source=adapter)
    save_model(first, tok, tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "adapter_config.json").read_text())["base_model_name_or_path"] == adapter
    again, tok = load_model_and_tokenizer(str(tmp_path / "ckpt"), device="cpu")
    assert is_peft(again)
    ids = tok(TEXTS[1]).input_ids
    torch.testing.assert_close(_logits(again, ids, len(tok)), _logits(first.eval(), ids, len(tok)), rtol=0, atol=1e-5)
    before = _adapter_weights(again)
    second, _ = train(again, tok, TEXTS, cfg, progress=False, source=str(tmp_path / "ckpt"))
    after = _adapter_weights(second)
    assert after.keys() == before.keys() and any(not torch.equal(after[k], before[k]) for k in before)


def test_leti_s_adapter_checkpoint_copied_without_its_tokenizer_is_still_leti_s(base, tmp_path):
    """The adapter files alone (how peft adapters are shared): the adapters train the rows of
    LeTI's tokens (trainable_token_indices), which only base + LeTI's tokens has, so the
    directory loads as leti's checkpoint (it was taken for a user's and failed: index 512)."""
    ckpt = _leti_checkpoint(base, tmp_path / "ckpt")
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (copy / name).write_bytes((tmp_path / "ckpt" / name).read_bytes())
    assert written_by_leti(copy)
    model, tok = load_model_and_tokenizer(str(copy), device="cpu")
    assert is_peft(model)
    original, original_tok = load_model_and_tokenizer(ckpt, device="cpu")
    assert len(tok) == len(original_tok) and tok.get_vocab() == original_tok.get_vocab()
    ids = tok(TEXTS[1]).input_ids
    torch.testing.assert_close(_logits(model, ids, len(tok)), _logits(original, ids, len(tok)), rtol=0, atol=0)


@pytest.mark.parametrize("order", ["extra-token", "reversed"])
def test_a_foreign_adapter_whose_tokenizer_has_leti_s_tokens_elsewhere_is_foreign(base, tmp_path, order):
    """A user's tokenizer that already has LeTI's tokens, but not as leti adds them (a token of its
    own before them; or in another order, with a trained <|good|> row): the adapter is the
    user's, loaded merged with its own tokenizer (it was taken for leti's: a size-mismatch
    traceback, or the trained row silently under another token)."""
    tokens = ["<tool>", *SPECIAL_TOKENS] if order == "extra-token" else list(reversed(SPECIAL_TOKENS))
    adapter = _foreign_adapter(base, tmp_path / "adapter", extra_token=tokens, modules_to_save=["embed_tokens"])
    own = AutoTokenizer.from_pretrained(adapter)
    good = own.convert_tokens_to_ids("<|good|>")
    if order == "reversed":
        from safetensors.torch import load_file, save_file

        file = tmp_path / "adapter" / "adapter_model.safetensors"
        weights = load_file(file)
        for key in [k for k in weights if "embed_tokens" in k]:  # modules_to_save's (and peft's copy of the resized base)
            weights[key][good] = 7.0  # the user's trained <|good|> row
        save_file(weights, file)
    assert not written_by_leti(adapter)
    model, tok = load_model_and_tokenizer(adapter, device="cpu")
    assert not is_peft(model)
    assert len(tok) == len(own) and tok.get_vocab() == own.get_vocab()
    assert model.get_input_embeddings().weight.shape[0] == len(own)
    if order == "reversed":
        assert torch.all(model.get_input_embeddings().weight[good] == 7.0)


def test_lora_targets_are_checked_for_leti_s_checkpoint_that_is_merged(base, tmp_path):
    """lora.save: merged merges leti's adapter checkpoint and puts new adapters of target_modules
    on it: a wrong name is refused at run start (it was found only when training began, after a
    sampling phase); under lora.save: adapter the checkpoint's own adapters train on, and the
    config must describe them (tests/test_lora_adapter_checks.py)."""
    from leti.training.lora import check_lora_targets

    ckpt = _leti_checkpoint(base, tmp_path / "ckpt")
    wrong = LoraSettings(enabled=True, target_modules=["c_attn"])
    with pytest.raises(LetiError, match=r"^trainer.lora.target_modules=\['c_attn'\] matches no layer of LlamaForCausalLM"):
        check_lora_targets(ckpt, TrainerConfig(lora=wrong))
    with pytest.raises(LetiError, match=r"adapter_config.json: these adapters have r=2, not trainer.lora.r=16"):
        check_lora_targets(ckpt, TrainerConfig(lora=LoraSettings(enabled=True, target_modules=["c_attn"], save="adapter")))
    check_lora_targets(ckpt, TrainerConfig(lora=LoraSettings(enabled=True, r=2, alpha=4, save="adapter")))


@pytest.mark.parametrize("which", ["user-without-tokenizer", "leti-over-user"])
def test_the_start_prompt_check_runs_for_adapters_over_adapters_and_without_a_tokenizer(base, tmp_path, which):
    """start_tokenizer and check_prompts find the tokenizer and context as the loader does: a
    user's adapter without a tokenizer (the base's), and leti's checkpoint over a user's adapter
    (context from the first base that is no adapter). Both skipped the check before, so a prompt
    too long was found only after a whole evaluation and sampling phase."""
    import yaml

    from leti.config import load_config
    from leti.loop.checks import check_prompts, start_tokenizer
    from leti.tasks.registry import get_task

    if which == "user-without-tokenizer":
        model_dir = _foreign_adapter(base, tmp_path / "notok", tokenizer=False)
    else:
        model, tok = load_model_and_tokenizer(_foreign_adapter(base, tmp_path / "user"), device="cpu")
        peft_model = apply_lora(model, tok, TrainerConfig(lora=LoraSettings(enabled=True, r=2, alpha=4, save="adapter")))
        model_dir = str(save_model(peft_model, tok, tmp_path / "over"))
    rows = [{"id": "add", "split": "train", "prompt": "def add(a, b):\n", "tests": "assert add(1, 2) == 3"},
            {"id": "t", "split": "test", "prompt": "x = 1\n" * 200, "tests": "assert True"}]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": model_dir, "device": "cpu", "task": f"jsonl:{tmp_path / 'tasks.jsonl'}"}))
    cfg = load_config(config)
    task = get_task(cfg.task)
    start = start_tokenizer(cfg)
    assert start is not None and start.convert_tokens_to_ids("<|good|>") == len(AutoTokenizer.from_pretrained(base))
    with pytest.raises(LetiError, match=r"problem 't': prompt has \d+ tokens but the model's context is 256"):
        check_prompts(cfg, "leti", task, task.problems("train"), task.problems("test"), start)


def test_the_vllm_sampler_takes_the_base_s_tokenizer_for_an_adapter_without_one(base, tmp_path):
    """A user's adapter saved without a tokenizer: the engine's tokenizer is the base's, as the HF
    loader takes it (it was a traceback from AutoTokenizer, before vLLM was even imported)."""
    from leti.sampling import SamplingConfig
    from leti.sampling.vllm import VLLMEngine

    notok = _foreign_adapter(base, tmp_path / "notok", tokenizer=False)
    engine = VLLMEngine(SamplingConfig(backend="vllm"), notok)
    assert engine.checkpoint.adapter == notok and engine.context == 256
    assert engine.tokenizer.get_vocab() == AutoTokenizer.from_pretrained(base).get_vocab()
