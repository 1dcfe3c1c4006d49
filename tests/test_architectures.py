"""The model families users bring, as tiny offline models (leti.testing.ARCHS): LeTI's tokens,
embedding resize, batched sampling, save/reload, LoRA; and tokenizer styles (sentencepiece
decoding, a tokenizer that appends EOS)."""

from __future__ import annotations

import copy
import shutil
import warnings
from dataclasses import replace

import pytest
import torch
from tokenizers.processors import TemplateProcessing

from leti.errors import LetiError
from leti.model import SPECIAL_TOKENS, load_model_and_tokenizer, save_model
from leti.sampling.base import SampleRequest, SamplingConfig
from leti.sampling.hf import HFSampler
from leti.testing import ARCHS, make_tiny_model
from leti.training.config import LoraSettings, TrainerConfig
from leti.training.data import tokenize_texts
from leti.training.trainer import context_length, train

# Llama-family checkpoints ship sentencepiece-style tokenizers; the others byte-level BPE.
SENTENCEPIECE = {"llama", "mistral", "gemma"}
PROMPTS = ["def f(x):\n", 'def add_one(n):\n    """Return n plus one."""\n', "import os\nclass A:\n    def run(self, a):\n"]
TEXTS = ["<|good|>def add(a, b):\n    return a + b\n",
         "<|bad|><|lang_feedback|>NameError: name 'c' is not defined<|/lang_feedback|>def add(a, b):\n    return a + c\n"]


@pytest.fixture(scope="session")
def arch_model_path(tmp_path_factory):
    """arch -> directory of its tiny model (built once per session, on first use)."""
    built: dict[str, str] = {}

    def get(arch: str) -> str:
        if arch not in built:
            style = "sentencepiece" if arch in SENTENCEPIECE else "byte_level"
            built[arch] = make_tiny_model(tmp_path_factory.mktemp(arch), arch=arch, n_positions=256, tokenizer=style)
        return built[arch]

    return get


def _greedy(model, tok, batch_size: int) -> dict[str, str]:
    cfg = SamplingConfig(n=1, temperature=0.0, max_new_tokens=10, batch_size=batch_size)
    reqs = [SampleRequest(f"p{i}", p) for i, p in enumerate(PROMPTS)]
    return {s.problem_id: s.completion for s in HFSampler(cfg, model, tok).sample(reqs)}


@pytest.mark.parametrize("arch", ARCHS)
def test_arch_gets_leti_tokens_samples_batched_and_saves(arch, arch_model_path, tmp_path):
    model, tok = load_model_and_tokenizer(arch_model_path(arch), device="cpu")
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    encoded = tok(TEXTS[1]).input_ids
    assert all(i in encoded for i in ids[1:])  # each marker is one id inside training text
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.get_output_embeddings().weight.shape[0] == len(tok)
    # Left padding in a batch gives what each prompt gives alone.
    assert _greedy(model, tok, batch_size=3) == _greedy(model, tok, batch_size=1)
    # BLOOM (ALiBi) has no position limit: the trainer keeps the configured length; MPT states
    # its limit as max_seq_len.
    assert context_length(model.config, 10_000) == (10_000 if arch == "bloom" else 256)
    save_model(model, tok, tmp_path / "ckpt")
    again, tok2 = load_model_and_tokenizer(str(tmp_path / "ckpt"), device="cpu")
    assert [tok2.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == ids
    torch.testing.assert_close(again.get_input_embeddings().weight, model.get_input_embeddings().weight)


# Output heads that are neither tied to the input embedding nor carry a bias: under LoRA the
# LeTI rows of both train. Heads with a bias (CodeGen, Phi) keep theirs (peft's trainable tokens
# would drop the bias); tied heads follow the input rows.
UNTIED_NO_BIAS = {"llama", "mistral", "gpt_neox", "qwen3_moe"}
HEAD_BIAS = {"codegen", "phi"}
# fused expert parameters: peft wraps them without dropout support (see the test below)
MOE = {"qwen3_moe"}


def _logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _changed_rows(after: torch.Tensor, before: torch.Tensor) -> set[int]:
    return set((after != before).any(dim=1).nonzero().flatten().tolist())


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_finds_every_arch_s_linear_layers_and_trains(arch, arch_model_path, tmp_path):
    """LoRA over every family: adapters on the linear layers, LeTI's rows of the input embedding
    and of an untied output head trained and nothing else; the adapter checkpoint reloads with
    the same logits and goes on training; merging gives the peft model's logits."""
    from peft.tuners.lora import LoraLayer

    model, tok = load_model_and_tokenizer(arch_model_path(arch), device="cpu")
    leti_rows = {tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    in_before = model.get_input_embeddings().weight.detach().clone()
    head = model.get_output_embeddings()
    out_before = head.weight.detach().clone()
    bias_before = head.bias.detach().clone() if getattr(head, "bias", None) is not None else None
    assert (bias_before is not None) == (arch in HEAD_BIAS)
    cfg = TrainerConfig(epochs=1, batch_size=2, max_length=64, pretrain_mix_ratio=0.0, learning_rate=1e-3,
                        lora=LoraSettings(enabled=True, r=2, alpha=4, save="adapter", dropout=0.0 if arch in MOE else 0.05))
    trained, stats = train(model, tok, TEXTS, cfg, progress=False)
    wrapped = [name for name, m in trained.named_modules() if isinstance(m, LoraLayer)]
    if arch in MOE:  # the experts' fused weights get adapters too
        assert any(n.endswith("experts") for n in wrapped), wrapped
    # all-linear: attention and MLP of both layers (at least 2 per layer), never the output head
    assert len(wrapped) >= 4 and not any("lm_head" in n or "embed_out" in n for n in wrapped)
    assert stats.optimizer_steps == 1
    ids = tok(TEXTS[1], return_tensors="pt").input_ids
    ref = _logits(trained, ids)

    # lora.save: adapter -> reloads with the same logits, every trained row trainable again.
    save_model(trained, tok, tmp_path / "adapter")
    again, _ = load_model_and_tokenizer(str(tmp_path / "adapter"), device="cpu")
    torch.testing.assert_close(_logits(again, ids), ref, rtol=0, atol=1e-6)
    deltas = [n for n, p in again.named_parameters() if "trainable_tokens_delta" in n and p.requires_grad]
    assert len(deltas) == (2 if arch in UNTIED_NO_BIAS else 1)

    # lora.save: merged -> a plain model with the peft model's logits (a head computed without
    # its bias under peft would differ here).
    merged = trained.merge_and_unload()
    assert not hasattr(merged, "peft_config")
    torch.testing.assert_close(_logits(merged, ids), ref, rtol=0, atol=1e-6)
    assert _changed_rows(merged.get_input_embeddings().weight, in_before) == leti_rows
    out = merged.get_output_embeddings()
    if arch in UNTIED_NO_BIAS:
        assert _changed_rows(out.weight, out_before) == leti_rows
    elif arch in HEAD_BIAS:
        assert torch.equal(out.weight, out_before) and torch.equal(out.bias, bias_before)
    else:  # tied: the head is the input embedding
        assert torch.equal(out.weight, merged.get_input_embeddings().weight)


def test_an_adapter_checkpoint_goes_on_training_the_output_head_rows(arch_model_path, tmp_path):
    """Untied head (Llama): a reloaded adapter checkpoint trains its LeTI head rows further, and
    only those (the loop's next iteration)."""
    model, tok = load_model_and_tokenizer(arch_model_path("llama"), device="cpu")
    cfg = TrainerConfig(epochs=1, batch_size=2, max_length=64, pretrain_mix_ratio=0.0, learning_rate=1e-3,
                        lora=LoraSettings(enabled=True, r=2, alpha=4, save="adapter"))
    first, _ = train(model, tok, TEXTS, cfg, progress=False)
    save_model(first, tok, tmp_path / "ckpt1")
    again, tok = load_model_and_tokenizer(str(tmp_path / "ckpt1"), device="cpu")
    head_before = copy.deepcopy(again).merge_and_unload().lm_head.weight.detach()
    second, _ = train(again, tok, TEXTS, cfg, progress=False)
    leti_rows = {tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    assert _changed_rows(second.merge_and_unload().lm_head.weight, head_before) == leti_rows


@pytest.mark.parametrize("arch", ["llama", "phi"])
def test_qlora_copies_the_trained_output_head_rows_back(arch, arch_model_path):
    """QLoRA trains on a 4-bit copy: the trained LeTI rows of an untied head come back into the
    full-precision model (Llama); a head with a bias keeps its rows (Phi), logits intact."""
    pytest.importorskip("bitsandbytes")
    path = arch_model_path(arch)
    model, tok = load_model_and_tokenizer(path, device="cpu")
    leti_rows = {tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    in_before = model.get_input_embeddings().weight.detach().clone()
    out_before = model.lm_head.weight.detach().clone()
    cfg = TrainerConfig(epochs=1, batch_size=2, max_length=64, pretrain_mix_ratio=0.0, learning_rate=1e-3,
                        lora=LoraSettings(enabled=True, r=2, alpha=4, load_in_4bit=True))
    merged, _ = train(model, tok, TEXTS, cfg, progress=False, source=path)
    assert not hasattr(merged, "peft_config")
    assert _changed_rows(merged.get_input_embeddings().weight, in_before) == leti_rows
    assert _changed_rows(merged.lm_head.weight, out_before) == (leti_rows if arch == "llama" else set())


@pytest.mark.parametrize("arch", ["codegen", "phi"])
def test_qlora_copy_has_the_full_models_head_bias_for_leti_tokens(arch, arch_model_path, tmp_path):
    """CodeGen's and Phi's heads have a bias. The 4-bit training copy is resized like the full
    model, so its LeTI-token bias entries must come from the full model (the mean of the trained
    biases), not stay at the resize's 0, which would train against inflated LeTI-token logits."""
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    from leti.training.lora import apply_lora, load_4bit

    path = tmp_path / arch
    shutil.copytree(arch_model_path(arch), path)  # the tokenizer; the weights are replaced
    raw = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():  # trained heads' biases are mostly negative; a random init's are 0
        raw.get_output_embeddings().bias.normal_(-2.0, 0.1, generator=torch.Generator().manual_seed(0))
    raw.save_pretrained(path)
    model, tok = load_model_and_tokenizer(str(path), device="cpu")
    cfg = TrainerConfig(lora=LoraSettings(enabled=True, r=2, alpha=4, load_in_4bit=True))
    full = apply_lora(model, tok, cfg)
    copy4 = load_4bit(str(path), full, tok, cfg, torch.device("cpu"))
    rows = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    want = full.get_base_model().get_output_embeddings().bias[rows]
    assert float(want.max()) < -1.5  # the full model's entries are the mean, near -2
    got = copy4.get_base_model().get_output_embeddings().bias[rows]
    assert torch.allclose(got.float(), want.float(), atol=1e-2)


def test_lora_dropout_on_fused_experts_is_refused_at_run_start_in_one_line(arch_model_path):
    """peft wraps a mixture of experts' fused weights (all-linear targets them) without dropout
    support, and the default trainer.lora.dropout 0.05 ended the first training stage, after the
    evaluation and sampling phases, in peft's ValueError traceback. Now one line, from the
    model's config alone at run start, and from train() too."""
    from leti.training.lora import check_lora_targets

    cfg = TrainerConfig(pretrain_mix_ratio=0.0, lora=LoraSettings(enabled=True))
    line = (r"^trainer.lora.dropout=0.05: peft puts LoRA on Qwen3MoeForCausalLM's fused expert weights too, where it "
            r"allows no dropout; set trainer.lora.dropout: 0, or name target_modules without the experts")
    with pytest.raises(LetiError, match=line):
        check_lora_targets(arch_model_path("qwen3_moe"), cfg)
    model, tok = load_model_and_tokenizer(arch_model_path("qwen3_moe"), device="cpu")
    with pytest.raises(LetiError, match=line):
        train(model, tok, TEXTS, cfg, progress=False)
    with warnings.catch_warnings():  # the fix it names runs without peft's notices about its own conversion
        warnings.simplefilter("error")
        check_lora_targets(arch_model_path("qwen3_moe"), TrainerConfig(lora=LoraSettings(enabled=True, dropout=0.0)))
    check_lora_targets(arch_model_path("llama"), cfg)  # dense layers take dropout


def test_lora_target_modules_of_another_family_are_a_one_line_error(arch_model_path):
    """Llama's layer names on GPT-2 (c_attn, ...): one line naming the field and GPT-2's names."""
    model, tok = load_model_and_tokenizer(arch_model_path("gpt2"), device="cpu")
    cfg = TrainerConfig(pretrain_mix_ratio=0.0, lora=LoraSettings(enabled=True, target_modules=["q_proj", "v_proj"]))
    with pytest.raises(LetiError, match=r"^trainer.lora.target_modules=\['q_proj', 'v_proj'\] matches no layer") as info:
        train(model, tok, TEXTS, cfg, progress=False)
    assert "c_attn, c_fc, c_proj" in str(info.value) and "\n" not in str(info.value)


def test_target_modules_are_checked_on_the_model_config_alone(arch_model_path, tmp_path):
    """The run-start check builds the skeleton from config.json (on the meta device: no weights
    loaded), with the matcher LoRA uses: GPT-2's names fail on Llama, Llama's pass; leti's adapter
    checkpoint is checked against its own adapters where they train on (lora.save: adapter), and on its base
    where it is merged and gets new adapters. A directory without weights is refused as a model
    directory."""

    from leti.training.lora import apply_lora, check_lora_targets

    skeleton = tmp_path / "llama-no-weights"
    shutil.copytree(arch_model_path("llama"), skeleton, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    with pytest.raises(LetiError, match=r"^model directory .*llama-no-weights has no weights"):
        check_lora_targets(str(skeleton), TrainerConfig(lora=LoraSettings(enabled=True)))
    skeleton = arch_model_path("llama")
    wrong = TrainerConfig(lora=LoraSettings(enabled=True, target_modules=["c_attn"]))
    with pytest.raises(LetiError, match=r"^trainer.lora.target_modules=\['c_attn'\] matches no layer of "
                                        r"LlamaForCausalLM; its linear layers are .*q_proj"):
        check_lora_targets(str(skeleton), wrong)
    right = TrainerConfig(lora=LoraSettings(enabled=True, target_modules=["q_proj", "v_proj"]))
    check_lora_targets(str(skeleton), right)
    model, tok = load_model_and_tokenizer(arch_model_path("llama"), device="cpu")
    save_model(apply_lora(model, tok, right), tok, tmp_path / "adapter")
    with pytest.raises(LetiError, match=r"^trainer.lora.target_modules=\['c_attn'\] matches no layer of LlamaForCausalLM"):
        check_lora_targets(str(tmp_path / "adapter"), wrong)  # merged (lora.save: merged): new adapters
    on = TrainerConfig(lora=LoraSettings(enabled=True, target_modules=["c_attn"], save="adapter"))
    with pytest.raises(LetiError, match=r"adapter_config.json: these adapters are on the layers"):
        check_lora_targets(str(tmp_path / "adapter"), on)  # its adapters are what trains on: named as they are
    check_lora_targets(str(tmp_path / "adapter"), replace(right, lora=replace(right.lora, save="adapter")))


def test_qlora_without_bitsandbytes_is_refused_at_run_start(arch_model_path, monkeypatch):
    """It was refused when the first training stage began, after the base evaluation and the
    first sampling phase. bitsandbytes is installed here, so the test hides it from find_spec."""
    import importlib.util

    from leti.training.lora import QLORA_HINT, check_lora_targets

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else find_spec(name, *a))
    qlora = TrainerConfig(lora=LoraSettings(enabled=True, load_in_4bit=True))
    with pytest.raises(LetiError) as info:
        check_lora_targets(arch_model_path("llama"), qlora)
    assert str(info.value) == QLORA_HINT
    check_lora_targets(arch_model_path("llama"), TrainerConfig(lora=LoraSettings(enabled=True)))  # plain LoRA needs none


def test_vllm_refuses_an_adapter_that_trains_an_untied_head_s_rows(arch_model_path, tmp_path):
    """The adapter over an untied Llama names both embeddings ({module: rows}); vLLM's LoRA can
    load neither, so the vLLM sampler refuses it as it refuses the list form."""
    from leti.sampling.vllm import resolve_checkpoint
    from leti.training.lora import apply_lora

    model, tok = load_model_and_tokenizer(arch_model_path("llama"), device="cpu")
    cfg = TrainerConfig(lora=LoraSettings(enabled=True, r=2, save="adapter"))
    peft_model = apply_lora(model, tok, cfg)
    assert set(peft_model.peft_config["default"].trainable_token_indices) == {"model.embed_tokens", "lm_head"}
    save_model(peft_model, tok, tmp_path / "adapter")
    with pytest.raises(LetiError, match="token embeddings"):
        resolve_checkpoint(str(tmp_path / "adapter"))


def test_sentencepiece_completion_keeps_its_leading_space(tmp_path):
    """Sentencepiece-style decoders drop the leading space of a sequence's first token: the
    completion is decoded after its prompt, so '    return' keeps four spaces."""
    path = make_tiny_model(tmp_path / "m", arch="phi", tokenizer="sentencepiece")
    model, tok = load_model_and_tokenizer(path, device="cpu")
    (plus,) = tok("x = 1 +", add_special_tokens=False).input_ids[-1:]
    assert tok.convert_ids_to_tokens(plus).startswith("▁")
    with torch.no_grad():  # Phi's output head has a bias: make greedy decoding write "▁+" forever
        model.lm_head.weight.zero_()
        model.lm_head.bias.zero_()
        model.lm_head.bias[plus] = 1.0
    cfg = SamplingConfig(n=1, temperature=0.0, max_new_tokens=3, batch_size=2)
    samples = list(HFSampler(cfg, model, tok).sample([SampleRequest("a", "x = 1")]))
    assert samples[0].completion == tok.convert_ids_to_tokens(plus).replace("▁", " ") * 3


def _appends_eos(tok):
    """A copy of `tok` that puts BOS in front and appends EOS (add_eos_token=True style)."""
    tok = copy.deepcopy(tok)
    tok._tokenizer.post_processor = TemplateProcessing(
        single=f"{tok.bos_token} $A {tok.eos_token}",
        special_tokens=[(tok.bos_token, tok.bos_token_id), (tok.eos_token, tok.eos_token_id)])
    assert tok("x").input_ids[-1] == tok.eos_token_id
    return tok


def test_a_tokenizer_that_appends_eos_prompts_and_trains_without_it(arch_model_path):
    model, tok = load_model_and_tokenizer(arch_model_path("llama"), device="cpu")
    eos_tok = _appends_eos(tok)
    cfg = SamplingConfig(n=1, temperature=0.0, max_new_tokens=8, batch_size=3)
    reqs = [SampleRequest(f"p{i}", p) for i, p in enumerate(PROMPTS)]
    plain = {s.problem_id: s for s in HFSampler(cfg, model, tok).sample(reqs)}
    appended = {s.problem_id: s for s in HFSampler(cfg, model, eos_tok).sample(reqs)}
    assert appended == plain  # same prompt ids (BOS + text, no EOS), same completions
    # Training texts end in EOS only when the text does (training_text.append_eos).
    data = tokenize_texts(eos_tok, [TEXTS[0], TEXTS[0] + tok.eos_token], max_length=1000)
    assert data.examples[0] == tok(TEXTS[0]).input_ids and data.examples[0][-1] != tok.eos_token_id
    assert data.examples[1] == data.examples[0] + [tok.eos_token_id]


def test_an_output_head_bias_gets_the_mean_for_leti_tokens(tmp_path):
    """Phi's output head has a bias: LeTI's tokens get the mean bias (resizing left 0, above
    every trained bias here), so they are no likelier to be generated than a mean token."""
    from transformers import AutoModelForCausalLM

    path = make_tiny_model(tmp_path / "m", arch="phi")
    raw = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        raw.lm_head.bias.normal_(-3.0, 0.5)
    raw.save_pretrained(path)
    model, tok = load_model_and_tokenizer(path, device="cpu")
    n_old = raw.lm_head.bias.shape[0]
    bias = model.lm_head.bias.detach()
    torch.testing.assert_close(bias[:n_old], raw.lm_head.bias.detach())
    torch.testing.assert_close(bias[n_old:], raw.lm_head.bias.detach().mean().expand(len(tok) - n_old))


def test_a_context_given_as_max_seq_len_caps_sampling_and_training(tmp_path):
    """MPT's ALiBi table ends at max_seq_len (no max_position_embeddings): sampling stops there
    (finish_reason "length") and training cuts texts to it, instead of a shape error."""
    model, tok = load_model_and_tokenizer(make_tiny_model(tmp_path / "m", arch="mpt", n_positions=32), device="cpu")
    cfg = SamplingConfig(n=1, temperature=0.0, max_new_tokens=40, batch_size=1)
    (sample,) = HFSampler(cfg, model, tok).sample([SampleRequest("a", PROMPTS[1])])
    assert sample.finish_reason == "length" and sample.n_prompt_tokens + sample.n_completion_tokens == 32
    trainer = TrainerConfig(epochs=1, batch_size=1, max_length=256, pretrain_mix_ratio=0.0)
    _, stats = train(model, tok, [TEXTS[1] * 4], trainer, progress=False)
    assert stats.max_length == 32 and stats.n_truncated == 1
