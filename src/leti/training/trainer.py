"""Fine-tune a causal LM on LeTI texts, alternating with packed continued-pretraining batches.

Why Accelerate and a short loop rather than transformers.Trainer: the spec alternates two data
sources batch by batch (LeTI texts 1:1 with packed pretraining blocks, an endless lazy stream).
Trainer wants one dataset; interleaving two with a fixed ratio and without materialising the
pretraining stream would need a custom sampler plus a custom collator that switch sources,
which is more code than this loop. Accelerate still does the device placement, mixed
precision and the gradient sync of accumulation windows (trackers: the loop's, loop/tracking.py).

Steps follow the authors' trainer (xingyaoww/LeTI run_leti.py, train_step): one optimiser step
takes `gradient_accumulation_steps` micro-batches of one source (LeTI texts or pretraining
blocks; the sources alternate by whole steps), and its gradient is the summed token loss of the
step over the step's token count, not a mean of micro-batch means. AdamW's state carries from one
training stage to the next when the caller passes the file the last stage saved (the authors keep
one train state for the whole run).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from itertools import islice
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler

from leti.errors import LetiError, first_line
from leti.model import model_context, save_error
from leti.progress import Progress
from leti.training.batching import StepExamples, StepSortedBatches
from leti.training.config import TrainerConfig
from leti.training.corpus_cache import default_cache_dir
from leti.training.data import (
    PackingStats,
    PadCollator,
    heldout_blocks,
    is_lazy,
    open_corpus,
    pretrain_batches,
    tokenize_texts,
)
from leti.training.heldout import heldout_loss
from leti.training.lora import apply_lora, check_loaded_adapters, copy_adapters, is_peft, load_4bit
from leti.training.sharded import (
    Template,
    check_strategy,
    gather_full_model,
    gather_master_model,
    is_deepspeed,
    is_sharded,
    needs_model_first,
)


@dataclass
class TrainStats:
    n_texts: int
    n_truncated: int
    max_length: int
    optimizer_steps: int
    leti_batches: int
    pretrain_batches: int
    leti_tokens: int
    pretrain_tokens: int
    packing_efficiency: float  # non-pad fraction of pretraining tokens (1.0 = no padding)
    loss_first: float  # the first LeTI optimiser step's mean token loss
    loss_last: float  # the last one's
    loss_mean: float  # the mean over LeTI optimiser steps
    loss_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, mean LeTI loss), thinned
    pretrain_loss_mean: float | None = None
    learning_rate: float = 0.0
    epochs: int = 0
    wall_s: float = 0.0
    steps_s: float = 0.0  # of wall_s, the forward/backward/optimizer passes (the part that grows with the texts)
    optimizer_steps_before: int = 0  # AdamW's step count when the stage began (0: a new AdamW)
    leti_padding_efficiency: float = 0.0  # non-pad fraction of the LeTI micro-batches' token slots
    pretrain_heldout_loss: float | None = None  # mean token loss on the held-out corpus files after the stage
    pretrain_heldout_loss_before: float | None = None  # the same before it, when asked (heldout_before)
    pretrain_heldout_blocks: int = 0  # blocks that loss is measured on

    def to_dict(self) -> dict:
        return asdict(self)


def mixed_precision(choice: str) -> str:
    """trainer.mixed_precision as Accelerate takes it ('auto' resolved); refuses what cannot work here."""
    if choice == "fp16" and not torch.cuda.is_available():
        # Accelerate would train in fp32 without a word: CPU autocast here is bf16 only
        raise LetiError("trainer.mixed_precision='fp16' needs a CUDA GPU and none is visible; "
                        "use 'bf16', 'auto' or 'no' on a CPU")
    if choice != "auto":
        return choice
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def _named_groups(model, decayed: set[int] | None = None) -> tuple[list[tuple[str, torch.nn.Parameter]],
                                                                   list[tuple[str, torch.nn.Parameter]]]:
    """The trainable parameters, (decayed, not decayed), in the optimiser's order. HF convention:
    no decay on biases and normalisation weights (1-D tensors). `decayed`: the ids of the
    parameters to decay, decided before FSDP1 wrapped the model (it turns every parameter into a
    1-D view of its shard, so all of them looked like biases and none was decayed)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            decays = id(p) in decayed if decayed is not None else p.ndim >= 2
            (decay if decays else no_decay).append((name, p))
    return decay, no_decay


def _param_groups(model, weight_decay: float, decayed: set[int] | None = None) -> list[dict]:
    decay, no_decay = _named_groups(model, decayed)
    return [{"params": [p for _, p in decay], "weight_decay": weight_decay},
            {"params": [p for _, p in no_decay], "weight_decay": 0.0}]


# --- AdamW's state between training stages -------------------------------------------------
# Saved by hand rather than with accelerator.save_state, which writes the model weights (the
# checkpoint already holds them), RNG and sampler states too: only the optimiser moves on.

OPTIMIZER_FILE = "leti_optimizer.pth"  # not *.pt / *.bin: weight loaders (vLLM's) glob those


def _layout(model) -> list[list[list]]:
    """[name, shape] of every trainable parameter, per optimiser group: what a saved state fits."""
    return [[[name, list(p.shape)] for name, p in group] for group in _named_groups(model)]


def save_optimizer(optimizer, layout: list, path: str | Path) -> None:
    """AdamW's moments and step count, with the parameter layout they belong to."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        # a Python file, not a path: torch then keeps the OSError of a failed write (disk full)
        # as the context of its own "unexpected pos" RuntimeError, and save_error reads it
        with open(tmp, "wb") as f:
            torch.save({"layout": layout, "optimizer": optimizer.state_dict()}, f)
    except (OSError, RuntimeError) as e:
        if (err := save_error(e, tmp)) is None:
            raise
        raise err from e
    os.replace(tmp, path)


_OPTIMIZER_FIX = "restore it from a backup, or start the run again with a new --run-dir"


def damaged_optimizer_state(path: Path, reason: str) -> LetiError:
    """The error for an AdamW state file that cannot be read (the resume check's and load_optimizer's)."""
    return LetiError(f"{path}: damaged, not an AdamW state saved by leti ({reason}); {_OPTIMIZER_FIX}")


def load_optimizer(optimizer, layout: list, path: str | Path) -> int:
    """Load a state saved by save_optimizer into `optimizer` (built on the same parameters);
    returns its step count. A missing, damaged or mismatched file is one LetiError naming it."""
    path = Path(path)
    if not path.is_file():
        raise LetiError(f"{path}: missing; this training stage goes on from the AdamW state the previous iteration "
                        f"saved there (trainer.carry_optimizer_state); {_OPTIMIZER_FIX}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        state, saved_layout = saved["optimizer"], saved["layout"]
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: torch's words, one line
        raise damaged_optimizer_state(path, first_line(e)) from None
    if saved_layout != layout:
        mine = {name: shape for group in layout for name, shape in group}
        theirs = {name: shape for group in saved_layout for name, shape in group}
        diff = sorted(n for n in mine.keys() | theirs.keys() if mine.get(n) != theirs.get(n))
        raise LetiError(f"{path}: the AdamW state is for other trainable weights than this model's (first difference: "
                        f"'{diff[0] if diff else 'parameter order'}'); {_OPTIMIZER_FIX}")
    optimizer.load_state_dict(state)
    steps = [int(s["step"]) for s in state["state"].values() if "step" in s]
    return max(steps, default=0)


def context_length(config, max_length: int) -> int:
    """The trainer's sequence cap: the configured length, at most the context of the model whose
    config this is."""
    limit = model_context(config)
    return min(max_length, limit) if limit else max_length


def _setup_model(model, tokenizer, cfg: TrainerConfig, source: str | None, revision: str | None = None):
    """(model that trains, QLoRA's full-precision peft model or None): `model` itself,
    LoRA-wrapped, or a 4-bit copy of it. A loaded adapter checkpoint (a peft model) goes on
    training its adapters only when the config continues adapters (lora.enabled with
    lora.save: adapter), whose settings trainer.lora must then match; otherwise its adapters are
    merged first and the config applies to the merged model, as to any model: full fine-tuning,
    or new adapters of trainer.lora's settings."""
    continues = cfg.lora.enabled and cfg.lora.save == "adapter"
    if continues and is_peft(model):
        # its adapters keep their own r, targets, ...: a config asking for others is refused, not dropped
        check_loaded_adapters(model, cfg, source)
    merged = is_peft(model) and not continues
    if merged:
        model = model.merge_and_unload()
        model.requires_grad_(True)  # peft froze all but the adapters; the config says what trains now
    if cfg.lora.enabled and not is_peft(model):
        model = apply_lora(model, tokenizer, cfg)
    if cfg.lora.load_in_4bit:
        if source is None:
            raise LetiError("trainer.lora.load_in_4bit: train() needs source= (the checkpoint to load in 4 bits)")
        device = next(model.parameters()).device
        model.to("cpu")  # the full-precision weights wait on the CPU
        # the 4-bit copy holds the weights under the adapters that train: with the loaded
        # checkpoint's adapters merged, those are merged in it too
        return _causal_lm_loss(load_4bit(source, model, tokenizer, cfg, device, merge_source=merged,
                                           revision=revision)), model
    if cfg.gradient_checkpointing:
        _checkpointing(model, True)
        model.config.use_cache = False  # the KV cache is useless and wasteful while recomputing
    return _causal_lm_loss(model), None


def _checkpointing(model, on: bool) -> None:
    """Gradient (activation) checkpointing on or off. Non-reentrant always: transformers 4.x's
    default is re-entrant, which with LoRA and frozen embeddings (lora.train_special_tokens false)
    gives no input to a checkpointed block a grad, so the adapters inside get none and backward
    fails. transformers 5 names it activation_checkpointing_* (the old names warn per call).
    QLoRA's is peft's (prepare_model_for_kbit_training, which also gives the inputs grads)."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def _causal_lm_loss(model):
    """Name the loss of the causal LM that trains. transformers infers it from the class name and,
    for classes such as GPT2LMHeadModel, warns that none was set before using this same loss."""
    base = model.get_base_model() if is_peft(model) else model
    if getattr(base, "loss_type", None) is None:
        base.loss_type = "ForCausalLM"
    return model


def _finish_model(accelerator, model, cfg: TrainerConfig, full):
    """Back to a model for sampling and saving: plain (LoRA merged) or, with lora.save=adapter,
    the peft model. `full`: QLoRA's full-precision peft model, which takes the trained adapters."""
    # keep_fp32_wrapper=False: with mixed precision, accelerate left its autocast wrapper on
    # forward, so sampling and evaluation after training ran in bf16 while a reloaded checkpoint
    # (a resumed run, vLLM, leti evaluate) runs in the weights' dtype.
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    # Drop the accelerator's references to optimizer state so the next stage gets the memory.
    accelerator.free_memory()
    if full is not None:
        device = next(model.parameters()).device
        copy_adapters(model, full)
        del model
        model = full.to(device)
    if cfg.lora.enabled and cfg.lora.save == "merged":
        model = model.merge_and_unload()
    if cfg.gradient_checkpointing and full is None:
        _checkpointing(model, False)
        model.config.use_cache = True
    model.eval()
    return model


def _check_master_weights(model) -> None:
    """AdamW steps each trainable weight in the weight's own dtype: in bfloat16 most lr-1e-5
    updates round away, and in float16 its eps underflows and weights become NaN within a few
    steps. Mixed precision wants fp32 weights (autocast computes in 16 bits)."""
    low = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()
                  if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16)})
    if low:
        raise LetiError(f"the trained weights are {' and '.join(low)}: AdamW needs them in float32 (fp32 master "
                        "weights; autocast still computes in 16 bits); load the model in float32 (model_dtype: float32) "
                        "or train LoRA adapters on the frozen weights (trainer.lora.enabled: true, lora.save: adapter)")


def _accelerator(cfg: TrainerConfig, carry: bool):
    """The Accelerator of one training stage (trackers: the loop's own, loop/tracking.py)."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import GradientAccumulationPlugin

    if not torch.cuda.is_available():
        # Accelerate imports DeepSpeed, where it is installed, in every training, and on a
        # machine without GPUs DeepSpeed warns that it "was unable to detect" one: name its CPU
        # backend instead (a launch that uses DeepSpeed has imported it already).
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    accelerator = Accelerator(
        mixed_precision=mixed_precision(cfg.mixed_precision),
        # a plugin, not gradient_accumulation_steps=: Accelerate lets the launcher's environment
        # (a DeepSpeed config's value, 'auto' included) override that argument
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=cfg.gradient_accumulation_steps),
        # ranks get equal batch counts from StepSortedBatches' Blank fillers; Accelerate's
        # even_batches would instead train the epoch's first texts again
        dataloader_config=DataLoaderConfiguration(even_batches=False),
    )
    check_strategy(accelerator, cfg, carry)
    return accelerator


def _loader(examples: list[list[int]], cfg: TrainerConfig, seed: int, pad_id: int, processes: int) -> DataLoader:
    """The LeTI micro-batches: the texts in order (the authors' loader never shuffles, run_leti.py /
    dataloader.py) or shuffled each epoch, each optimiser step's texts sorted by length so that
    its micro-batches pad less (batching.py; the step's gradient is the same)."""
    generator = torch.Generator().manual_seed(seed)
    collate = PadCollator(pad_id)
    per_step = cfg.gradient_accumulation_steps * processes
    if per_step == 1:  # one micro-batch per step: nothing to sort between
        return DataLoader(examples, batch_size=cfg.batch_size, shuffle=cfg.shuffle, generator=generator,
                          collate_fn=collate)
    # the same draws as DataLoader(shuffle=True, generator=...) makes
    order = RandomSampler(examples, generator=generator) if cfg.shuffle else range(len(examples))
    batches = StepSortedBatches([len(e) for e in examples], cfg.batch_size, per_step, order, processes)
    # generator too: the loader draws its workers' base seed from it before the sampler permutes,
    # as the one-micro-batch loader above does, so both paths put the same texts in each step
    return DataLoader(StepExamples(examples), batch_sampler=batches, collate_fn=collate, generator=generator)


def _prepare(accelerator, model, loader: DataLoader, cfg: TrainerConfig):
    """(model, optimizer, loader) wrapped by Accelerate. Under FSDP1 the model is wrapped first:
    it replaces the parameters, so the optimizer must be built on the wrapped ones."""
    def adamw(m, decayed: set[int] | None = None) -> torch.optim.Optimizer:
        return torch.optim.AdamW(_param_groups(m, cfg.weight_decay, decayed), lr=cfg.learning_rate,
                                 betas=(cfg.adam_beta1, cfg.adam_beta2))

    if needs_model_first(accelerator):
        # which weights decay is read off their shapes before wrapping (FSDP1 flattens them all;
        # with use_orig_params it keeps the same Parameter objects)
        decayed = {id(p) for _, p in _named_groups(model)[0]}
        model = accelerator.prepare(model)
        optimizer, loader = accelerator.prepare(adamw(model, decayed), loader)
        return model, optimizer, loader
    return accelerator.prepare(model, adamw(model), loader)


@dataclass
class _Tally:
    """What one training stage trained on, filled step by step."""

    leti_losses: list[float] = field(default_factory=list)  # each LeTI step's loss (over its tokens)
    pre_losses: list[float] = field(default_factory=list)  # each pretraining step's
    pre_logged: int = 0  # pre_losses at the last log point
    curve: list[tuple[int, float]] = field(default_factory=list)
    leti_batches: int = 0  # micro-batches
    pre_batches: int = 0
    leti_tokens: int = 0
    leti_slots: int = 0  # rows x padded length, over the LeTI micro-batches
    pre_tokens: int = 0
    steps: int = 0  # optimiser steps

    def sum_over_ranks(self, accelerator) -> None:
        """Each count summed over every rank (a collective: every rank calls it)."""
        names = ("leti_batches", "pre_batches", "leti_tokens", "leti_slots", "pre_tokens")
        counts = torch.tensor([getattr(self, n) for n in names], dtype=torch.int64, device=accelerator.device)
        for name, value in zip(names, accelerator.reduce(counts, reduction="sum").tolist(), strict=True):
            setattr(self, name, int(value))

    def stats(self, n_texts: int, n_truncated: int, max_len: int, cfg: TrainerConfig, wall_s: float) -> TrainStats:
        return TrainStats(
            n_texts=n_texts, n_truncated=n_truncated, max_length=max_len,
            optimizer_steps=self.steps,
            leti_batches=self.leti_batches, pretrain_batches=self.pre_batches,
            leti_tokens=self.leti_tokens, pretrain_tokens=self.pre_tokens,
            # measured on the pretraining batches actually trained on: real tokens / batch slots
            packing_efficiency=(round(self.pre_tokens / (self.pre_batches * cfg.batch_size * max_len), 4)
                                if self.pre_batches else 0.0),
            loss_first=self.leti_losses[0], loss_last=self.leti_losses[-1],
            loss_mean=sum(self.leti_losses) / len(self.leti_losses),
            loss_curve=self.curve[:: max(1, len(self.curve) // 100)],
            pretrain_loss_mean=(sum(self.pre_losses) / len(self.pre_losses)) if self.pre_losses else None,
            learning_rate=cfg.learning_rate, epochs=cfg.epochs, wall_s=round(wall_s, 2),
            leti_padding_efficiency=round(self.leti_tokens / max(self.leti_slots, 1), 4),
        )


def _windows(batches: Iterable[dict], size: int) -> Iterator[list[dict]]:
    """Consecutive groups of `size` micro-batches (the last one may be shorter): one optimiser
    step each."""
    it = iter(batches)
    while chunk := list(islice(it, size)):
        yield chunk


def _predicted(batch: dict) -> int:
    """Tokens the causal LM loss covers in a micro-batch: labels after the shift, padding out."""
    return int((batch["labels"][:, 1:] != -100).sum())


def _real(window: list[dict]) -> list[dict]:
    """The window's micro-batches that train: not Blank fillers, whose labels are all masked."""
    return [b for b in window if bool((b["labels"] != -100).any())]


def _summed_over_ranks(accelerator, count: int) -> int:
    """A per-rank count summed over every rank (at least 1)."""
    n = torch.tensor(count, device=accelerator.device)
    if accelerator.num_processes > 1:
        n = accelerator.reduce(n, reduction="sum")
    return max(int(n), 1)


def _optimizer_step(accelerator, model, optimizer, window: list[dict], cfg: TrainerConfig) -> float:
    """One optimiser step over a window of micro-batches from one source. Its gradient is the
    mean loss over every token the window predicts, however they fall into micro-batches and
    ranks (as the authors' train_step sums token losses over a global batch and divides once; they
    divide by the attention-mask sum, which also counts each row's first, unpredicted token: a
    scale within 1% at their lengths, which AdamW's normalisation absorbs). Returns the step's
    mean token loss over every rank's tokens, for logging: like the gradient, it does not depend on
    how the tokens fall into micro-batches and ranks."""
    counts = [_predicted(b) for b in window]
    total = _summed_over_ranks(accelerator, sum(counts))
    # accelerator.backward divides by the accumulation steps and DDP averages over ranks: undo
    # both. One micro-batch on one process gets a weight of exactly 1.0 (n / n), so its step is
    # bit for bit the plain `loss.backward()`.
    undo = accelerator.gradient_accumulation_steps * accelerator.num_processes
    losses = []
    for i, (batch, count) in enumerate(zip(window, counts, strict=True)):
        last = i == len(window) - 1
        accelerator.sync_gradients = last  # DeepSpeed and the optimizer wrapper step only then
        weight = count * undo / total
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            if count:
                loss = model(**batch).loss  # mean over the micro-batch's predicted tokens
            else:  # a Blank filler: a backward pass of zero gradient for the all-reduce (its loss would be 0/0)
                loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.sum() * 0.0
            accelerator.backward(loss * weight)
        losses.append(float(loss.detach()))
    if cfg.max_grad_norm > 0:
        accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad()
    weighted = sum(loss * n for loss, n in zip(losses, counts, strict=True))
    if accelerator.num_processes > 1:  # every rank's token losses over every rank's tokens
        local = torch.tensor(weighted, dtype=torch.float64, device=accelerator.device)
        return float(accelerator.reduce(local, reduction="sum")) / total
    if len(losses) == 1:
        return losses[0]  # the same number, without the rounding of x * n / n
    return weighted / max(sum(counts), 1)


Log = Callable[[dict[str, float], int], None]


def _log(t: _Tally, n_leti_steps: int, cfg: TrainerConfig, bar, log: Log | None, step_offset: int,
         optimizer) -> None:
    """Every log_every LeTI optimiser steps (and after the last): the mean LeTI loss since, and to
    `log` (the run's trackers) also the mean pretraining-mix loss since and the learning rate, at
    the run's cumulative step."""
    if len(t.leti_losses) % cfg.log_every and len(t.leti_losses) != n_leti_steps:
        return
    # the steps since the previous point: after the last step that can be fewer than log_every
    recent = t.leti_losses[(len(t.leti_losses) - 1) // cfg.log_every * cfg.log_every:]
    t.curve.append((t.steps, sum(recent) / len(recent)))
    bar.set_postfix(loss=f"{t.curve[-1][1]:.3f}")
    if log is not None:
        metrics = {"train/leti_loss": t.curve[-1][1], "train/learning_rate": float(optimizer.param_groups[0]["lr"])}
        if len(t.pre_losses) > t.pre_logged:
            pre = t.pre_losses[t.pre_logged:]
            metrics["train/pretrain_loss"] = sum(pre) / len(pre)
            t.pre_logged = len(t.pre_losses)
        log(metrics, step_offset + t.steps)


def _run_batches(accelerator, model, optimizer, loader: DataLoader, pretrain_stream, cfg: TrainerConfig,
                 progress: bool, log: Log | None = None, step_offset: int = 0) -> _Tally:
    """cfg.epochs over the LeTI batches. The mix alternates optimiser steps, as the authors do
    (run_leti.py: one train_step on a LeTI batch, then one on a pretraining batch): each step's
    micro-batches come from one source. `pretrain_stream()` starts the pretraining stream: anew
    every epoch, as the authors build a new pretraining loader each epoch, or once per stage when
    `pretrain_restart_every_epoch` is off."""
    t = _Tally()
    g = cfg.gradient_accumulation_steps
    n_leti = len(loader) * cfg.epochs
    n_leti_steps = math.ceil(len(loader) / g) * cfg.epochs
    # Exact arithmetic: ten float additions of 0.1 stay below 1.0, and a stage lost a step.
    ratio = Fraction(str(cfg.pretrain_mix_ratio))
    # rank 0 alone draws it (leti.progress): the followers' lines would repeat the leader's
    bar = Progress(n_leti + math.floor(n_leti_steps * ratio) * g, "train", "batches",
                   progress and accelerator.is_main_process)
    credit = Fraction(0)
    pre_iter = None
    for epoch in range(cfg.epochs):
        if pretrain_stream is not None and (epoch == 0 or cfg.pretrain_restart_every_epoch):
            pre_iter = pretrain_stream()
        for window in _windows(loader, g):
            real = _real(window)
            t.leti_tokens += sum(int(b["attention_mask"].sum()) for b in real)
            t.leti_slots += sum(b["attention_mask"].numel() for b in real)
            t.leti_losses.append(_optimizer_step(accelerator, model, optimizer, window, cfg))
            t.leti_batches += len(real)
            t.steps += 1
            bar.update(len(window))
            # 1:1 alternation by default; a fractional ratio interleaves evenly via a credit.
            credit += ratio
            while pre_iter is not None and credit >= 1:
                pre = list(islice(pre_iter, g))
                t.pre_tokens += sum(int(b["attention_mask"].sum()) for b in pre)
                t.pre_losses.append(_optimizer_step(accelerator, model, optimizer, pre, cfg))
                t.pre_batches += len(pre)
                t.steps += 1
                credit -= 1
                bar.update(len(pre))
            _log(t, n_leti_steps, cfg, bar, log, step_offset, optimizer)
    bar.close()
    if accelerator.num_processes > 1:  # the stage's counts, not rank 0's shard of them
        t.sum_over_ranks(accelerator)
    return t


def rank_seed(seed: int, rank: int) -> int:
    """A rank's own seed for a stage seeded `seed`, hashed (below 2**32, as numpy takes): accelerate's
    device_specific seed + rank gave rank 1 of iteration k (seeded cfg.seed + k) rank 0's stream of
    iteration k + 1."""
    return int.from_bytes(hashlib.blake2b(f"{seed}\0dropout\0{rank}".encode(), digest_size=4).digest(), "little")


def train(model, tokenizer, texts: list[str], cfg: TrainerConfig, seed: int = 0,
          progress: bool = True, source: str | None = None, optimizer_from: str | Path | None = None,
          optimizer_to: str | Path | None = None, heldout_before: bool = False, revision: str | None = None,
          log: Log | None = None, step_offset: int = 0):
    """Train `model` in place on `texts` (+ pretraining mix). Returns (model, TrainStats); the
    returned model is the plain (LoRA-merged, unwrapped) model, ready to sample or save (with
    trainer.lora.save='adapter': the unwrapped peft model, which save_model saves as adapters; under
    FSDP / ZeRO-3: a fresh model built from the gathered weights, None on ranks other than 0).
    `source` is the checkpoint `model` was loaded from (QLoRA loads its 4-bit copy from it;
    `revision`: the hub commit a hub model at the bottom of `source` was loaded at, which the copy reads too).
    `log(metrics, step)`: the run's trackers (loop/tracking.py), called on the main process only,
    at `step_offset` (the run's optimizer steps before this stage) + the stage's step.
    `optimizer_from`: a file save_optimizer wrote (the previous stage's AdamW state) to go on
    from, instead of a new AdamW; `optimizer_to`: where the main process saves this stage's.
    With cfg.measures_heldout the loss on the held-out corpus files is measured after training
    (stats.pretrain_heldout_loss) and, with `heldout_before`, before it too."""
    t0 = time.time()
    if not texts:
        raise LetiError("no training texts: the iteration produced no samples (check the task split and sampling.n)")
    random.seed(seed)
    torch.manual_seed(seed)
    max_len = context_length(model.config, cfg.max_length)
    data = tokenize_texts(tokenizer, texts, max_len)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    # taken before gradient checkpointing (use_cache off) and FSDP / ZeRO-3 rewire the module
    template = Template.of(model)
    model, full = _setup_model(model, tokenizer, cfg, source, revision)
    _check_master_weights(model)
    carry = optimizer_from is not None or optimizer_to is not None
    accelerator = _accelerator(cfg, carry)
    if not accelerator.is_main_process:  # one rank logs for all (every loss is over every rank)
        log = None
    loader = _loader(data.examples, cfg, seed, pad_id, accelerator.num_processes)
    layout = _layout(model) if carry else []  # names before prepare: DDP prefixes them with 'module.'
    model, optimizer, loader = _prepare(accelerator, model, loader, cfg)
    if accelerator.num_processes > 1:
        # Each rank its own dropout masks: with one seed every rank drew the same ones. After the
        # model's setup, which must stay the same on every rank; one process keeps its stream.
        from accelerate.utils import set_seed

        set_seed(rank_seed(seed, accelerator.process_index))
    steps_before = load_optimizer(optimizer, layout, optimizer_from) if optimizer_from is not None else 0
    model.train()

    main_progress = progress and accelerator.is_main_process
    cache = default_cache_dir() if cfg.pretrain_cache else None
    # the corpus, packed into blocks of the training length, and the split of its files
    corpus = dict(corpus=cfg.pretrain_corpus, block_size=max_len, max_files=cfg.pretrain_max_files,
                  hf_data_dir=cfg.pretrain_hf_data_dir, text_field=cfg.pretrain_text_field,
                  separator=cfg.pretrain_eos_separator, cache_dir=cache, progress=main_progress,
                  heldout_fraction=cfg.pretrain_heldout_fraction, split_seed=cfg.pretrain_split_seed,
                  packing=cfg.pretrain_packing)
    # Opened (tokenized or read from the cache) once for the stage's passes and held-out blocks;
    # without a cache, a split or the authors' groups, each pass reads the corpus lazily, only as far as it goes.
    if cfg.reads_corpus and not is_lazy(cache, cfg.pretrain_heldout_fraction, cfg.pretrain_packing):
        corpus["tokens"] = open_corpus(tokenizer, cfg.pretrain_corpus, cfg.pretrain_max_files, cfg.pretrain_hf_data_dir,
                                       cfg.pretrain_text_field, cfg.pretrain_eos_separator, cache, main_progress)
    stream = None
    if cfg.pretrain_mix_ratio > 0:

        def stream():
            batches = pretrain_batches(tokenizer, batch_size=cfg.batch_size, stats=PackingStats(), **corpus)
            # Under multi-process training each rank takes every num_processes-th batch, as the
            # prepared loader shards the LeTI batches, so the 1:1 mix holds across ranks too.
            return islice(batches, accelerator.process_index, None, accelerator.num_processes)
    heldout = heldout_blocks(tokenizer, max_blocks=cfg.pretrain_heldout_max_blocks, **corpus) if cfg.measures_heldout else None
    before = (heldout_loss(accelerator, model, heldout, cfg.batch_size, main_progress)
              if heldout is not None and heldout_before else None)
    if log is not None and before is not None:
        # the base model's, at the run's step 0, before this stage's steps (a step logged after
        # later ones reads as a rewind, which TensorBoard answers by purging the later ones)
        log({"eval/pretrain_heldout_loss": before}, step_offset)
    t_steps = time.time()
    tally = _run_batches(accelerator, model, optimizer, loader, stream, cfg, progress, log, step_offset)
    steps_s = time.time() - t_steps
    after = heldout_loss(accelerator, model, heldout, cfg.batch_size, main_progress) if heldout is not None else None
    if optimizer_to is not None and accelerator.is_main_process:  # DDP: every rank holds the same state
        save_optimizer(optimizer, layout, optimizer_to)
    if log is not None and after is not None:
        log({"eval/pretrain_heldout_loss": after}, step_offset + tally.steps)

    if is_sharded(accelerator):
        model = gather_full_model(accelerator, model, template)  # None on ranks other than 0
    elif is_deepspeed(accelerator) and not cfg.lora.enabled:  # ZeRO-1/2 (LoRA: refused in 16 bits, as DDP in 32)
        model = gather_master_model(accelerator, model, template)
    else:
        model = _finish_model(accelerator, model, cfg, full)
    del full
    stats = tally.stats(len(texts), data.n_truncated, max_len, cfg, time.time() - t0)
    stats.optimizer_steps_before = steps_before
    stats.steps_s = round(steps_s, 2)
    if heldout is not None:
        stats.pretrain_heldout_loss, stats.pretrain_heldout_loss_before = after, before
        stats.pretrain_heldout_blocks = len(heldout)
    return model, stats
