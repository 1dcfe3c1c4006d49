"""Tiny offline models for tests and benchmarks (the Hugging Face hub is not needed).

`make_tiny_model` trains a byte-level BPE tokenizer on a few Python standard-library files
and saves it next to a randomly initialised GPT-2 (or Llama: vLLM serves LoRA adapters only for
architectures like it). Same arguments -> same files.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

# Plain-Python stdlib modules that exist on every CPython >= 3.10: real code text for the BPE.
CORPUS_MODULES = ("textwrap.py", "string.py", "bisect.py", "heapq.py", "fnmatch.py", "glob.py")
EOS_TOKEN = "<|endoftext|>"


def stdlib_corpus_files(names: tuple[str, ...] = CORPUS_MODULES) -> list[Path]:
    """Paths of a few standard-library source files (the tokenizer's training text)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [stdlib / name for name in names]
    return [f for f in files if f.is_file()]


def make_tiny_tokenizer(
    vocab_size: int = 512, corpus_files: list[Path] | None = None
) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style) trained on Python text, with eos == pad == bos."""
    files = corpus_files if corpus_files is not None else stdlib_corpus_files()
    texts = [f.read_text(encoding="utf-8") for f in files]
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


def make_tiny_model(
    path: str | Path,
    vocab_size: int = 512,
    n_layer: int = 2,
    n_embd: int = 64,
    n_positions: int = 512,
    seed: int = 0,
    n_head: int | None = None,
    arch: str = "gpt2",
) -> str:
    """Save a random-init GPT-2 (arch "gpt2") or Llama ("llama") and its tokenizer under `path`;
    returns the path as a string. n_head defaults to one head per 32 embedding dims."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tiny_tokenizer(vocab_size)
    heads = n_head or max(1, n_embd // 32)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if arch == "gpt2":
        config, model_cls = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd,
                                       n_layer=n_layer, n_head=heads, **ids), GPT2LMHeadModel
    elif arch == "llama":
        config, model_cls = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=n_positions,
                                        hidden_size=n_embd, intermediate_size=2 * n_embd, num_hidden_layers=n_layer,
                                        num_attention_heads=heads, num_key_value_heads=heads, **ids), LlamaForCausalLM
    else:
        raise ValueError(f"arch={arch!r}: use 'gpt2' or 'llama'")
    # fork_rng: seeding for the init must not change the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)
