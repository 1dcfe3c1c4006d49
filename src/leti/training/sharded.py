"""Checkpoints under sharded training (FSDP, DeepSpeed ZeRO-3): no rank holds the whole model.

DDP keeps full weights on every rank, so the leader unwraps and saves its own copy. So do
ZeRO-1/2, but with bf16/fp16 they keep the fp32 weights only in their optimizer: the leader
builds a fresh model from those (`gather_master_model`).
Under FSDP and ZeRO-3 each rank holds a shard, and the module the leader passed in has been
rewired in place by the wrapper. So every rank takes part in Accelerate's `get_state_dict`
(a collective gather: FSDP's full state dict, ZeRO-3's consolidated 16-bit weights) and the
leader builds a fresh plain model of the same architecture from the gathered tensors.

ZeRO-3 is tested end to end on CPU (DeepSpeed's CPU accelerator; tests/test_deepspeed.py); FSDP's
gather is not (Accelerate enables FSDP only on GPUs), `rebuild` is (tests/test_training.py).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

import torch

from leti.errors import LetiError
from leti.training.config import TrainerConfig


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


def _lora_sharded(cfg: TrainerConfig) -> str:
    """The refusal of LoRA under FSDP or ZeRO-3, naming a launch that trains this config: ZeRO-2
    only without mixed precision (in bf16/fp16 _check_lora_precision refuses LoRA under it too)."""
    from leti.training.trainer import mixed_precision

    # 'auto' resolved as training will; fp16 unresolved (mixed_precision refuses it without CUDA)
    precision = mixed_precision("auto") if cfg.mixed_precision == "auto" else cfg.mixed_precision
    fix = ("the accelerate/ddp or accelerate/deepspeed-zero2 launch config (leti presets NAME --path)" if precision == "no"
           else "the accelerate/ddp launch config (leti presets accelerate/ddp --path), or accelerate/deepspeed-zero2 "
                f"with trainer.mixed_precision: no (DeepSpeed in {precision} rounds LoRA's frozen weights)")
    return ("LoRA/QLoRA with FSDP or ZeRO-3 is not supported (the adapters would have to be gathered and merged "
            f"across shards); LoRA keeps few trainable weights, so use {fix}")


_CARRY_SHARDED = ("trainer.carry_optimizer_state: DeepSpeed and FSDP split AdamW's state over the ranks, and leti "
                  "carries it between iterations only whole (one process, or DDP: the accelerate/ddp launch config); "
                  "set trainer.carry_optimizer_state: false to start a new AdamW every iteration")


def _flat_fsdp(cfg: TrainerConfig, version: int, use_orig_params: bool | None) -> str | None:
    """The refusal of FSDP1 without use_orig_params (Accelerate's FSDP1 default) when weights decay:
    FSDP1 then makes all of a wrapped unit's weights one flat parameter, which cannot hold both of
    AdamW's groups, so weight decay would be silently off. FSDP2 keeps the original parameters."""
    if version == 1 and not use_orig_params and cfg.weight_decay > 0:
        return (f"FSDP1 with use_orig_params false flattens the weights, so trainer.weight_decay "
                f"{cfg.weight_decay:g} would not apply: set fsdp_use_orig_params: true in the accelerate "
                "config (as the accelerate/fsdp preset does)")
    return None


def check_sharding(cfg: TrainerConfig, carry: bool = False) -> None:
    """At run start, on every rank: the launcher's sharding settings (the environment that
    `accelerate launch` sets) against the trainer config, so that a combination that cannot
    train fails before the first sampling phase, not after it. `carry`: the run carries AdamW's
    state between iterations."""
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if carry and (deepspeed or fsdp):
        raise LetiError(_CARRY_SHARDED)
    if fsdp:
        from accelerate.utils import str_to_bool

        # the variables `accelerate launch` sets from fsdp_version / fsdp_use_orig_params, read
        # with the plugin's defaults (FSDP1, use_orig_params false)
        flat = _flat_fsdp(cfg, int(os.environ.get("FSDP_VERSION", "1")),
                          bool(str_to_bool(os.environ.get("FSDP_USE_ORIG_PARAMS", "false"))))
        if flat:
            raise LetiError(flat)
    if fsdp and not torch.cuda.is_available():
        # Accelerate turns FSDP on only over GPUs: on CPU it would fail deep in its plugin or
        # quietly train without sharding.
        raise LetiError("FSDP needs GPUs (Accelerate enables it only on them) and none is visible; on CPU "
                        "launch with the accelerate/ddp, accelerate/deepspeed-zero2 or accelerate/deepspeed-zero3 config "
                        "(leti presets NAME --path)")
    plugin = None
    if deepspeed:
        from accelerate.utils import DeepSpeedPlugin

        plugin = DeepSpeedPlugin()  # reads the same environment (and config file) Accelerate will
        _align_deepspeed(plugin, cfg)
    if cfg.lora.enabled and (fsdp or (plugin is not None and plugin.zero_stage == 3)):
        raise LetiError(_lora_sharded(cfg))
    if cfg.lora.enabled and deepspeed:
        _check_lora_precision(cfg)


def check_strategy(accelerator, cfg: TrainerConfig, carry: bool = False) -> None:
    """In `train`, before `prepare`: the same checks on the Accelerator actually built. Under
    DeepSpeed this also fills the settings leti owns into the DeepSpeed config."""
    from accelerate.utils import DistributedType

    if carry and accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        raise LetiError(_CARRY_SHARDED)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        _align_deepspeed(accelerator.state.deepspeed_plugin, cfg)
        _plain_model_builds()
    if accelerator.distributed_type == DistributedType.FSDP:
        plugin = accelerator.state.fsdp_plugin
        flat = _flat_fsdp(cfg, plugin.fsdp_version, plugin.use_orig_params)
        if flat:
            raise LetiError(flat)
    if cfg.lora.enabled and is_sharded(accelerator):
        raise LetiError(_lora_sharded(cfg))
    if cfg.lora.enabled and accelerator.distributed_type == DistributedType.DEEPSPEED:
        _check_lora_precision(cfg)


def _check_lora_precision(cfg: TrainerConfig) -> None:
    """DeepSpeed in bf16/fp16 casts the whole module to 16 bits, the frozen base weights under
    LoRA included, which have no fp32 copy to come back from: every merged checkpoint would be
    rounded, and the next iteration's adapters would be 16-bit weights AdamW refuses."""
    from leti.training.trainer import mixed_precision

    if mixed_precision(cfg.mixed_precision) != "no":
        raise LetiError("LoRA under DeepSpeed in bf16/fp16 rounds the frozen model weights to 16 bits (DeepSpeed casts "
                        "the whole model); LoRA keeps few trainable weights, so use the accelerate/ddp launch config "
                        "(leti presets accelerate/ddp --path), or trainer.mixed_precision: no")


def _align_deepspeed(plugin, cfg: TrainerConfig) -> None:
    """DeepSpeed does gradient accumulation and clipping itself, from its own config (and sizes
    its micro-batches from it), and Accelerate lets that config win over the trainer's settings
    (with only a log warning). leti fills them in from trainer.* where the config leaves them open ('auto' or absent) and
    refuses a config that says otherwise, so a run never trains with settings it does not report."""
    ds = plugin.deepspeed_config
    sections = [k for k in ("optimizer", "scheduler") if k in ds]
    if sections:
        raise LetiError(f"the DeepSpeed config has its own {' and '.join(sections)}, but leti's trainer builds AdamW "
                        f"with a constant learning rate from trainer.*; remove {' and '.join(map(repr, sections))} "
                        "from the DeepSpeed config")
    # the micro-batch too: Accelerate reads an 'auto' one off the data loader, whose batches the
    # trainer cuts itself (batching.py), so the loader has no batch_size to read
    for key, field, ours in (("gradient_accumulation_steps", "trainer.gradient_accumulation_steps", cfg.gradient_accumulation_steps),
                             ("gradient_clipping", "trainer.max_grad_norm", cfg.max_grad_norm),
                             ("train_micro_batch_size_per_gpu", "trainer.batch_size", cfg.batch_size)):
        theirs = ds.get(key, "auto")
        if theirs == "auto":
            ds[key] = ours
        elif float(theirs) != float(ours):
            raise LetiError(f"the DeepSpeed config sets {key}: {theirs} but {field} is {ours}, and DeepSpeed's "
                            f"value would win; set {key}: auto in the accelerate config (leti fills it in) or make them equal")


def _plain_model_builds() -> None:
    """Selecting a ZeRO-3 plugin sets transformers' process-wide DeepSpeed config, after which
    every `from_pretrained` / `from_config` in the process builds the model partitioned
    (`deepspeed.zero.Init`), which is a collective. leti builds whole models and lets `prepare`
    partition them; its later builds (the leader's `rebuild`, sampling, evaluation) run on the
    leader alone and would wait forever for the other ranks (seen: the leader hung in `rebuild`).
    So the hook is switched off, and a config's zero3_init_flag has no effect on leti."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


def is_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def gather_master_model(accelerator, model, template: Template):
    """DeepSpeed ZeRO-1/2: every rank holds whole weights, but with bf16/fp16 on, DeepSpeed cast
    the module's own parameters to 16 bits in place and keeps the fp32 ones in its optimizer, and
    the module carries the engine's gradient hooks. Handing that module on (as under DDP) rounded
    every checkpoint to 16 bits, and the next iteration's AdamW refused the 16-bit weights. So the
    leader builds a fresh plain model from DeepSpeed's fp32 master weights (exact). Every rank
    must call this (each master weight is assembled by a collective); None on ranks other than 0."""
    from deepspeed.utils import safe_get_full_fp32_param

    module = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    masters = {}
    for p in module.parameters():  # the same order on every rank: one collective per weight
        full = safe_get_full_fp32_param(p)
        masters[id(p)] = (full if full is not None else p).detach()
    params = dict(module.named_parameters(remove_duplicate=False))  # tied weights under each name
    state = {k: masters[id(params[k])] if k in params else v for k, v in module.state_dict().items()}
    accelerator.free_memory()
    if not accelerator.is_main_process:
        return None
    return rebuild(template, state)


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
