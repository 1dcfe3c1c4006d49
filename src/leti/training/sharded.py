"""Checkpoints under sharded training (FSDP, DeepSpeed ZeRO-3): no rank holds the whole model.

DDP and ZeRO-1/2 keep full weights on every rank, so the leader unwraps and saves its own copy.
Under FSDP and ZeRO-3 each rank holds a shard, and the module the leader passed in has been
rewired in place by the wrapper. So every rank takes part in Accelerate's `get_state_dict`
(a collective gather: FSDP's full state dict, ZeRO-3's consolidated 16-bit weights) and the
leader builds a fresh plain model of the same architecture from the gathered tensors.

Unverified on GPUs (no GPU was available when this was written): the gather is Accelerate's own
call, and `rebuild` is tested on CPU (tests/test_training.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from leti.errors import LetiError


@dataclass(frozen=True)
class Template:
    """What a fresh copy of the model needs, taken before the wrapper rewires the module."""

    config: Any
    generation_config: Any
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def of(cls, model) -> Template:
        p = next(model.parameters())
        return cls(copy.deepcopy(model.config), copy.deepcopy(model.generation_config), p.dtype, p.device)


def is_sharded(accelerator) -> bool:
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        return accelerator.state.deepspeed_plugin.zero_stage == 3
    return kind == DistributedType.FSDP


def needs_model_first(accelerator) -> bool:
    """FSDP1 replaces the parameters with views of flat shards, so an optimizer built before
    wrapping would step tensors the model no longer uses: wrap first, then build it. (FSDP2 and
    DeepSpeed take model and optimizer together and remap the optimizer themselves.)"""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2


def check_strategy(accelerator, lora: bool) -> None:
    if lora and is_sharded(accelerator):
        raise LetiError("LoRA/QLoRA with FSDP or ZeRO-3 is not supported (the adapters would have to be gathered "
                        "and merged across shards); LoRA keeps few trainable weights, so use "
                        "configs/accelerate/ddp.yaml or deepspeed-zero2.yaml")


def gather_full_model(accelerator, model, template: Template):
    """Every rank must call this. Returns the plain full model on the leader, None elsewhere."""
    state = accelerator.get_state_dict(model)  # collective
    accelerator.free_memory()
    if not accelerator.is_main_process:
        return None
    return rebuild(template, state)


def rebuild(template: Template, state: dict[str, torch.Tensor]):
    """A plain model of the template's architecture holding `state` (cast to the template's
    dtype: ZeRO-3 gathers 16-bit weights). Every parameter must come from `state`, except
    weights tied to another one (e.g. the output head tied to the input embeddings)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(template.config, dtype=template.dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    model.tie_weights()
    tied = {name for name, p in model.named_parameters(remove_duplicate=False)} - set(dict(model.named_parameters()))
    untied_missing = sorted(set(missing) - tied)
    if untied_missing or unexpected:
        raise LetiError(f"gathered weights do not match the model: missing {untied_missing[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]}")
    model.generation_config = copy.deepcopy(template.generation_config)
    return model.to(template.device).eval()
