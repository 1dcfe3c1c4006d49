"""The demo's warm start: a small GPT-2-style code model built and pretrained offline.

No pretrained code LM can be downloaded here, so the demo makes one in a few CPU minutes:
a byte-level BPE tokenizer (HF `tokenizers`) and a GPT-2 (transformers) trained with the plain
LM objective on `leti.demo.corpus` (stdlib sources + generated documented functions). The
result is saved with `save_pretrained` after adding LeTI's special tokens (leti.model), so
`leti run` loads it like any other local model. It is cached under
`$LETI_CACHE_DIR/warmstart/<config hash>` (leti.cache; default `~/.cache/leti/warmstart`): a second
demo skips it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from leti.cache import cache_root
from leti.demo.corpus import corpus_documents
from leti.errors import LetiError
from leti.model import add_special_tokens, save_model
from leti.progress import Progress

EOS = "<|endoftext|>"
_DONE = "warmstart.json"  # written last: its presence marks a complete cache entry


@dataclass(frozen=True)
class WarmStartConfig:
    seed: int = field(default=0, metadata={"help": "Seed for corpus, init and batches (also the task seed)."})
    vocab_size: int = field(default=2048, metadata={"help": "BPE vocabulary size (before LeTI tokens)."})
    n_layer: int = field(default=4, metadata={"help": "Transformer blocks."})
    n_embd: int = field(default=128, metadata={"help": "Hidden size."})
    n_head: int = field(default=4, metadata={"help": "Attention heads."})
    n_positions: int = field(default=512, metadata={"help": "Longest sequence the model accepts."})
    block_size: int = field(default=256, metadata={"help": "Packed pretraining sequence length."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per optimiser step."})
    steps: int = field(default=600, metadata={"help": "Optimiser steps (the warm start's length)."})
    lr: float = field(default=3e-3, metadata={"help": "Peak learning rate (warmup, then cosine decay)."})
    n_generated: int = field(default=4000, metadata={"help": "Generated modules in the corpus."})
    stdlib_bytes: int = field(default=1_500_000, metadata={"help": "Stdlib source bytes in the corpus."})
    mbpp_style: float = field(default=0.6, metadata={"help": "Share of generated functions documented MBPP-style (docstring with text and example above the def)."})
    mbpp_templates: float = field(default=0.5, metadata={"help": "Share of templates that are ever documented MBPP-style (the rest only as library code)."})

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "n_embd", "n_head", "block_size", "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise LetiError(f"warmstart.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.n_embd % self.n_head:
            raise LetiError(f"warmstart.n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.block_size > self.n_positions:
            raise LetiError(f"warmstart.block_size ({self.block_size}) exceeds n_positions ({self.n_positions})")

    def key(self) -> str:
        """Cache key: a hash of every field (any change builds a new warm start)."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def cached_path(cfg: WarmStartConfig) -> Path:
    return cache_root() / "warmstart" / cfg.key()


def check_cache(cfg: WarmStartConfig) -> None:
    """Before the demo starts: the folder for `cfg`'s warm start can be made and written to,
    unless the warm start and its corpus are there already (a read-only cache that holds them
    serves). Left to the build, a cache path under a file failed as '<path>.tmpNNN: Not a
    directory', naming neither the cache nor LETI_CACHE_DIR."""
    path = cached_path(cfg)
    if (path / _DONE).is_file() and (path / "corpus" / "done").is_file():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as e:
        raise LetiError(f"demo warm-start cache: cannot write to {path.parent} ({e.strerror or e}); "
                        "set LETI_CACHE_DIR to a writable directory") from e


def train_tokenizer(docs: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(docs, vocab_size=vocab_size, min_frequency=2,
                            special_tokens=[EOS], show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=EOS,
                                   bos_token=EOS, unk_token=EOS, pad_token=EOS)


def pack(docs: list[str], tokenizer: PreTrainedTokenizerFast, block_size: int) -> torch.Tensor:
    """All documents, each followed by EOS, cut into [n_blocks, block_size] (no padding)."""
    ids: list[int] = []
    for enc in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)
    n = len(ids) // block_size
    return torch.tensor(ids[: n * block_size], dtype=torch.long).view(n, block_size)


def _lr_at(step: int, cfg: WarmStartConfig) -> float:
    warmup = max(1, cfg.steps // 20)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain(model: GPT2LMHeadModel, blocks: torch.Tensor, cfg: WarmStartConfig, progress: bool) -> list[float]:
    """Plain LM pretraining on random packed blocks; returns the loss per step."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.95))
    model.train()
    losses: list[float] = []
    # a bar on a terminal; in a log file (nohup, a batch job) a plain line every tenth of the way
    # on stdout, the demo's narrative (leti.progress says why)
    every = max(1, cfg.steps // 10)
    bar = Progress(cfg.steps, "warm start: pretraining", "steps", progress, file=sys.stdout, min_interval_s=0,
                   line=lambda done, _: f"warm start: pretraining step {done}/{cfg.steps}, "
                                        f"loss {sum(losses[-every:]) / len(losses[-every:]):.3f}")
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        batch = blocks[torch.randint(len(blocks), (cfg.batch_size,), generator=gen)]
        # packed blocks hold no padding: the all-ones mask only tells transformers so (it warned
        # at every block with an EOS = pad at its edge); the losses are bit-identical
        loss = model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
        bar.update()
    bar.close()
    model.eval()
    return losses


def _new_model(tokenizer: PreTrainedTokenizerFast, cfg: WarmStartConfig) -> GPT2LMHeadModel:
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg.n_positions, n_embd=cfg.n_embd,
        n_layer=cfg.n_layer, n_head=cfg.n_head, bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # tiny model, short training: no dropout
    ))
    # the loss transformers would pick anyway, named: unnamed, it warned once per demo, across the bar
    model.loss_type = "ForCausalLM"
    return model


def build_warm_start(cfg: WarmStartConfig, out: Path, progress: bool = True) -> dict:
    """Train tokenizer and model from scratch into `out`; returns the stats written beside it."""
    t0 = time.time()
    docs = list(corpus_documents(cfg.seed, cfg.n_generated, cfg.stdlib_bytes, cfg.mbpp_style, cfg.mbpp_templates))
    tokenizer = train_tokenizer(docs, cfg.vocab_size)
    blocks = pack(docs, tokenizer, cfg.block_size)
    with torch.random.fork_rng():  # seeded init without touching the caller's RNG state
        torch.manual_seed(cfg.seed)
        model = _new_model(tokenizer, cfg)
    n_params = sum(p.numel() for p in model.parameters())
    if progress:
        tokens_per_step = cfg.batch_size * cfg.block_size
        print(f"warm start: {n_params / 1e6:.2f}M params, corpus {blocks.numel() / 1e6:.2f}M tokens, "
              f"{cfg.steps} steps x {tokens_per_step} tokens = {cfg.steps * tokens_per_step / 1e6:.2f}M tokens")
    t_train = time.time()
    losses = pretrain(model, blocks, cfg, progress)
    train_seconds = time.time() - t_train
    add_special_tokens(model, tokenizer)
    save_model(model, tokenizer, out)
    stats = {
        "config": asdict(cfg), "n_params": n_params, "corpus_tokens": blocks.numel(),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]), "first_loss": losses[0],
        "pretrain_seconds": train_seconds, "seconds_per_step": train_seconds / cfg.steps,
        "wall_seconds": time.time() - t0,
    }
    (out / _DONE).write_text(json.dumps(stats, indent=2))
    return stats


def warm_start(cfg: WarmStartConfig, progress: bool = True) -> Path:
    """Path of a ready warm-start model for `cfg`, building it on first use. A half-written
    entry (killed mid-build) is discarded and rebuilt."""
    path = cached_path(cfg)
    if (path / _DONE).is_file():
        if progress:
            print(f"warm start: cached at {path}")
        return path
    tmp = _fresh_tmp(path)
    build_warm_start(cfg, tmp, progress)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)  # atomic on one filesystem: readers see all of it or none
    if progress:  # the folder is a model users can reuse (README): say where, as a rerun does
        print(f"warm start: built, cached at {path}")
    return path


def write_corpus(cfg: WarmStartConfig, model_dir: Path, per_file: int = 200) -> Path:
    """The warm start's corpus as .py files under `model_dir/corpus` (written once): the
    continued-pretraining mix of the LeTI arms reads it, so the mix is the same distribution
    the warm start was trained on."""
    out = model_dir / "corpus"
    if (out / "done").is_file():
        return out
    tmp = _fresh_tmp(out)
    docs = list(corpus_documents(cfg.seed, cfg.n_generated, cfg.stdlib_bytes, cfg.mbpp_style, cfg.mbpp_templates))
    for i in range(0, len(docs), per_file):
        (tmp / f"part_{i // per_file:04d}.py").write_text("\n\n".join(docs[i:i + per_file]), encoding="utf-8")
    (tmp / "done").write_text("")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _fresh_tmp(final: Path) -> Path:
    """An empty `FINAL.tmp<pid>` to build in before the atomic rename; leftovers of builds whose
    process is gone (killed mid-build) are removed on the way."""
    for old in final.parent.glob(final.name + ".tmp*"):
        pid = old.name.rsplit(".tmp", 1)[1]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            shutil.rmtree(old, ignore_errors=True)
    tmp = final.with_name(f"{final.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True)
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
