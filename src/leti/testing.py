"""Tiny offline models for tests and benchmarks (the Hugging Face hub is not needed).

`make_tiny_model` trains a BPE tokenizer on a few Python standard-library files and saves it
next to a randomly initialised causal LM: GPT-2 by default (Llama: vLLM serves LoRA adapters only
for architectures like it; the others in ARCHS are the families users commonly bring). The
tokenizer is byte-level (GPT-2 style) or, `tokenizer="sentencepiece"`, Llama-2 style (spaces as
"▁", a BOS in front, no pad token). Same arguments -> same files.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer, SentencePieceBPETokenizer
from tokenizers.processors import TemplateProcessing
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

# Plain-Python stdlib modules that exist on every CPython >= 3.10: real code text for the BPE.
CORPUS_MODULES = ("textwrap.py", "string.py", "bisect.py", "heapq.py", "fnmatch.py", "glob.py")
EOS_TOKEN = "<|endoftext|>"


def stdlib_corpus_files(names: tuple[str, ...] = CORPUS_MODULES) -> list[Path]:
    """Paths of a few standard-library source files (the tokenizer's training text)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [stdlib / name for name in names]
    return [f for f in files if f.is_file()]


def make_tiny_tokenizer(
    vocab_size: int = 512, corpus_files: list[Path] | None = None, style: str = "byte_level"
) -> PreTrainedTokenizerFast:
    """BPE trained on Python text. "byte_level": GPT-2 style, eos == pad == bos.
    "sentencepiece": Llama-2 style (Metaspace: spaces as "▁", and decoding drops the leading
    space of a sequence's first token), <s> put in front of every encoding, eos </s>, no pad."""
    files = corpus_files if corpus_files is not None else stdlib_corpus_files()
    if not files:  # a BPE trained on nothing is a one-token vocabulary: every test would fail obscurely
        where = ("corpus_files is empty" if corpus_files is not None else
                 f"none of {', '.join(CORPUS_MODULES)} is in {sysconfig.get_paths()['stdlib']} (a Python "
                 "without its .py sources?); pass corpus_files")
        raise FileNotFoundError(f"no training text for the tiny tokenizer: {where}")
    texts = [f.read_text(encoding="utf-8") for f in files]
    if style == "sentencepiece":
        spm = SentencePieceBPETokenizer(unk_token="<unk>")
        spm.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2,
                                special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
        backend = spm._tokenizer
        backend.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                    special_tokens=[("<s>", backend.token_to_id("<s>"))])
        return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                       unk_token="<unk>")
    if style != "byte_level":
        raise ValueError(f"style={style!r}: use 'byte_level' or 'sentencepiece'")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS_TOKEN],
        show_progress=False,
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
    )


# model_type -> config of a tiny model (vocabulary, token ids and context added by make_tiny_model).
# h = hidden size, n = layers, a = attention heads.
def _arch_config(arch: str, h: int, n: int, a: int, ctx: int) -> dict:
    gpt = dict(n_embd=h, n_layer=n, n_head=a, n_positions=ctx)
    modern = dict(hidden_size=h, num_hidden_layers=n, num_attention_heads=a, intermediate_size=2 * h,
                  max_position_embeddings=ctx)
    configs = {
        "gpt2": gpt,
        "gpt_bigcode": {**gpt, "multi_query": True},
        # CodeGen's attention splits its heads 4 ways (transformers 4): a multiple of 4 heads.
        "codegen": {**gpt, "n_head": -(-a // 4) * 4, "n_ctx": ctx, "rotary_dim": h // (-(-a // 4) * 4) // 2},
        "llama": {**modern, "num_key_value_heads": a},
        "mistral": {**modern, "num_key_value_heads": 1, "sliding_window": None},
        "qwen2": {**modern, "num_key_value_heads": 1, "tie_word_embeddings": True},
        "gemma": {**modern, "num_key_value_heads": 1, "head_dim": h // a},
        "gpt_neox": {**modern, "tie_word_embeddings": False},
        "phi": {**modern, "partial_rotary_factor": 0.5},
        "opt": {**modern, "ffn_dim": 2 * h, "word_embed_proj_dim": h},
        "bloom": dict(hidden_size=h, n_layer=n, n_head=a),  # ALiBi: no position limit in the config
        "mpt": dict(d_model=h, n_layers=n, n_heads=a, max_seq_len=ctx),  # ALiBi up to max_seq_len
        # a mixture of experts (Qwen3-Coder-30B-A3B's family): transformers 5 fuses each layer's
        # experts into 3-D parameters, which LoRA's all-linear targets too
        "qwen3_moe": {**modern, "num_key_value_heads": 1, "head_dim": h // a, "num_experts": 4,
                      "num_experts_per_tok": 2, "moe_intermediate_size": h, "decoder_sparse_step": 1},
    }
    if arch not in configs:
        raise ValueError(f"arch={arch!r}: use one of {sorted(configs)}")
    return configs[arch]


ARCHS = ("gpt2", "llama", "gpt_bigcode", "codegen", "mistral", "qwen2", "gemma", "gpt_neox", "phi", "opt", "bloom",
         "mpt", "qwen3_moe")


def make_tiny_model(
    path: str | Path,
    vocab_size: int = 512,
    n_layer: int = 2,
    n_embd: int = 64,
    n_positions: int = 512,
    seed: int = 0,
    n_head: int | None = None,
    arch: str = "gpt2",
    tokenizer: str = "byte_level",
) -> str:
    """Save a random-init causal LM of `arch` (a model_type in ARCHS) and its tokenizer
    (make_tiny_tokenizer's `style`) under `path`; returns the path as a string. n_head defaults
    to one head per 32 embedding dims."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tok = make_tiny_tokenizer(vocab_size, style=tokenizer)
    heads = n_head or max(1, n_embd // 32)
    config = AutoConfig.for_model(
        arch, vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, **_arch_config(arch, n_embd, n_layer, heads, n_positions))
    # fork_rng: seeding for the init must not change the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


# A model family transformers does not know: its classes ship in the model directory, the way
# CodeGen2, SantaCoder or replit-code ship theirs on the hub (trust_remote_code=True loads them).
REMOTE_MODEL_TYPE = "leti_tiny_remote"
_REMOTE_FILES = {
    "configuration_leti_tiny.py": f'''from transformers import GPT2Config


class LetiTinyConfig(GPT2Config):
    model_type = "{REMOTE_MODEL_TYPE}"
''',
    "modeling_leti_tiny.py": '''from transformers import GPT2LMHeadModel

from .configuration_leti_tiny import LetiTinyConfig


class LetiTinyForCausalLM(GPT2LMHeadModel):
    config_class = LetiTinyConfig
''',
}


def make_remote_code_model(path: str | Path, **kwargs) -> str:
    """A tiny model (make_tiny_model's GPT-2 weights and tokenizer) whose config.json names its
    own model type, with an auto_map pointing at configuration_*.py / modeling_*.py in the same
    directory: loading it needs trust_remote_code=True. kwargs go to make_tiny_model."""
    import json

    out = Path(make_tiny_model(path, arch="gpt2", **kwargs))
    for name, source in _REMOTE_FILES.items():
        (out / name).write_text(source, encoding="utf-8")
    config_path = out / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(model_type=REMOTE_MODEL_TYPE, architectures=["LetiTinyForCausalLM"],
                  auto_map={"AutoConfig": "configuration_leti_tiny.LetiTinyConfig",
                            "AutoModelForCausalLM": "modeling_leti_tiny.LetiTinyForCausalLM"})
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return str(out)
