"""LoRA and QLoRA (peft, bitsandbytes): which weights train, and how they get back into a plain model.

LoRA wraps the model itself; after training the adapters (and the rows of LeTI's special tokens,
peft `trainable_token_indices`: input embedding and an untied output head without a bias) are
merged, so every checkpoint is a plain model. With
`lora.save: adapter` they stay separate: the checkpoint is the peft adapter directory over the
original model, and the next iteration loads it (leti.model) and goes on training it, which
trainer.lora must then describe (check_continued_adapters).

QLoRA trains the same adapters over a 4-bit NF4 copy of the base weights loaded from the
checkpoint (bitsandbytes): only that copy sits on the training device, while the full-precision
peft model waits on the CPU. After training the adapter weights are copied back onto the
full-precision model and merged there (or saved, `lora.save: adapter`), as the QLoRA paper does,
rather than merged into (and rounded to) the 4-bit weights.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from leti.errors import LetiError, message_line
from leti.model import (
    SPECIAL_TOKENS,
    adapter_config,
    adapter_tokenizer,
    merge_adapter,
    written_by_leti,
)
from leti.model import quiet_peft as _quiet_peft
from leti.training.config import TrainerConfig

if TYPE_CHECKING:
    from peft import LoraConfig

QLORA_HINT = "trainer.lora.load_in_4bit needs bitsandbytes: pip install 'leti[qlora]'"


def lora_config(model, tokenizer, cfg: TrainerConfig, like=None):
    """`like`: a peft model whose special-token rows to take over (QLoRA's 4-bit copy must have
    the layout of the full-precision model, also one loaded from an older adapter checkpoint)."""
    rows = (like.peft_config[like.active_adapter].trainable_token_indices if like is not None
            else special_token_rows(model, tokenizer, cfg))
    return _adapters_config(cfg, rows)


def _adapters_config(cfg: TrainerConfig, rows=None):
    """peft's LoraConfig of trainer.lora; `rows`: the embedding rows trained beside the adapters."""
    from peft import LoraConfig

    target = cfg.lora.target_modules
    return LoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=target[0] if target == ["all-linear"] else target,
        trainable_token_indices=rows,
        task_type="CAUSAL_LM",
    )


_warned_head_bias: set[str] = set()


def special_token_rows(model, tokenizer, cfg: TrainerConfig) -> list[int] | dict[str, list[int]] | None:
    """peft `trainable_token_indices` for LeTI's tokens: which embedding rows train besides the
    adapters. A list means the input embedding (and an output head tied to it, which peft ties
    to the same trained rows); an untied output head is named beside it, as full fine-tuning
    trains its rows too. An untied head with a bias (CodeGen, Phi) keeps its rows: peft's
    trainable-token layer computes the head without its bias, which would shift every logit."""
    special = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    if not (cfg.lora.train_special_tokens and special):
        return None
    head = model.get_output_embeddings()
    if head is None or _tied(model):
        return special
    if getattr(head, "bias", None) is not None:
        kind = type(model).__name__
        if kind not in _warned_head_bias:  # once per model class and process, not every iteration
            _warned_head_bias.add(kind)
            print(f"leti: warning: {kind}'s output head has a bias, which peft's trainable tokens drop: under LoRA "
                  "the output-head rows of LeTI's tokens keep their initial (mean) values, only their input "
                  "embeddings train (full fine-tuning trains both)", file=sys.stderr)
        return special
    names = {id(module): name for name, module in model.named_modules()}
    return {names[id(model.get_input_embeddings())]: special, names[id(head)]: special}


def is_peft(model) -> bool:
    # A PeftModel exists only once peft is imported: a run without LoRA never imports it (about
    # 3 s of start-up, bitsandbytes included).
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def apply_lora(model, tokenizer, cfg: TrainerConfig, like=None):
    config = lora_config(model, tokenizer, cfg, like)
    check_target_modules(model, cfg, config)
    return _peft_model(model, config, cfg)


def _peft_model(model, config, cfg: TrainerConfig):
    """get_peft_model, with peft's refusal of these settings for this model as one LetiError."""
    from peft import get_peft_model

    try:
        with _quiet_peft():
            return get_peft_model(model, config)
    except ValueError as e:
        raise _dropout_refusal(e, model, cfg) or LetiError(
            f"trainer.lora: peft cannot put LoRA on {type(model).__name__} with these settings ({message_line(e)}); "
            "change trainer.lora") from None


def _dropout_refusal(error: ValueError, model, cfg: TrainerConfig) -> LetiError | None:
    """transformers 5 keeps a mixture of experts' weights as fused parameters (Mixtral, Qwen3-MoE,
    DeepSeek-V3), which all-linear targets too, and peft wraps those without dropout support."""
    if "lora_dropout" not in str(error):
        return None
    return LetiError(f"trainer.lora.dropout={cfg.lora.dropout:g}: peft puts LoRA on {type(model).__name__}'s fused "
                     "expert weights too, where it allows no dropout; set trainer.lora.dropout: 0, or name "
                     "target_modules without the experts (e.g. the attention projections)")


def check_target_modules(model, cfg: TrainerConfig, config=None) -> None:
    """A LetiError when trainer.lora.target_modules match no layer of `model` (which may be a
    skeleton on the meta device: only its module names count), by peft's own matching rule."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    if cfg.lora.target_modules == ["all-linear"]:
        return  # peft expands it to the model's linear layers: nothing to mismatch
    config = config or LoraConfig(target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
    if any(check_target_module_exists(config, name) for name, _ in model.named_modules()):
        return
    # Layer names differ by family (GPT-2: c_attn, Llama: q_proj, ...): say which this one has.
    raise LetiError(
        f"trainer.lora.target_modules={cfg.lora.target_modules} matches no layer of {type(model).__name__}; "
        f"its linear layers are {', '.join(linear_layer_names(model))}: name some of those, or use ['all-linear']"
    )


def check_lora_targets(model_name: str, cfg: TrainerConfig, trust_remote_code: bool = False,
                       revision: str | None = None) -> None:
    """At run start: trainer.lora against the skeleton of `model_name`, built from its config on
    the meta device (no weights loaded), so that a wrong target name, or settings peft refuses
    for this model, fail before the first evaluation and sampling phase (hours on a real run)
    rather than when training starts. leti's adapter checkpoint whose adapters train on (lora.save:
    adapter) is checked against trainer.lora instead (check_continued_adapters), its base's layers
    naming the targets. `revision`: the hub commit the run loads (model_revision)."""
    if not cfg.lora.enabled:
        return
    if cfg.lora.load_in_4bit and importlib.util.find_spec("bitsandbytes") is None:
        raise LetiError(QLORA_HINT)
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from leti.model import base_model, hub_revision, local_model_dir

    local = local_model_dir(model_name)
    try:
        # leti's adapter checkpoint under lora.save: adapter keeps its own adapters, which train on;
        # any other adapter directory is merged into its base, which gets new adapters
        continued = (local is not None and adapter_config(local) is not None and cfg.lora.save == "adapter"
                     and written_by_leti(local, trust_remote_code, revision))
        source = base_model(model_name)
    except LetiError:
        return  # a missing base is reported, with its own message, where it loads
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code,
                                            **hub_revision(local_model_dir(source), revision))
        with init_empty_weights():
            skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return  # an unloadable model is reported, with its own message, where it loads
    if continued:
        from peft import LoraConfig

        try:
            with _quiet_peft():
                saved = LoraConfig.from_pretrained(str(local))
        except (OSError, TypeError, ValueError):
            return  # an unreadable adapter_config.json is reported, with its own message, where it loads
        check_continued_adapters(saved, cfg, str(local / "adapter_config.json"), skeleton)
        return
    check_target_modules(skeleton, cfg)
    from peft import get_peft_model

    # the adapters alone (LeTI's token rows need the tokenizer); any other refusal is left to
    # the training stage, where the real weights are there
    try:
        with _quiet_peft():
            get_peft_model(skeleton, _adapters_config(cfg))
    except ValueError as e:
        refusal = _dropout_refusal(e, skeleton, cfg)
        if refusal is not None:
            raise refusal from None


def check_loaded_adapters(model, cfg: TrainerConfig, source: str | None = None) -> None:
    """check_continued_adapters for a loaded peft model whose adapters train on; `source`: the
    adapter checkpoint it was loaded from (None: the message names no directory)."""
    adapters = model.peft_config[model.active_adapter]
    where = str(Path(source) / "adapter_config.json") if source is not None else "the model's adapter_config.json"
    check_continued_adapters(adapters, cfg, where, model.get_base_model())


def check_continued_adapters(adapters: LoraConfig, cfg: TrainerConfig, where: str, base) -> None:
    """A LetiError when the adapters that train on (leti's adapter checkpoint with lora.enabled and
    lora.save: adapter) differ from trainer.lora: they keep their own settings, and the config's
    were dropped without a word. `adapters`: their peft LoraConfig; `where`: their
    adapter_config.json, for the message; `base`: the base model (a meta skeleton, or a peft
    model's base with the adapters in it), over whose layers target_modules compare by the
    layers they match (peft saves 'all-linear' as the full names of the layers it chose, and
    'all-linear' in the config is expanded the same way)."""
    lora = cfg.lora
    trains_rows = bool(adapters.trainable_token_indices)
    # (setting, what these adapters do, the config's value, the value that keeps them), first difference wins
    differences = [
        ("r", f"have r={adapters.r}", lora.r, adapters.r, adapters.r != lora.r),
        ("alpha", f"have lora_alpha={adapters.lora_alpha:g}", lora.alpha, f"{adapters.lora_alpha:g}",
         float(adapters.lora_alpha) != float(lora.alpha)),
        ("dropout", f"have lora_dropout={adapters.lora_dropout:g}", f"{lora.dropout:g}", f"{adapters.lora_dropout:g}",
         float(adapters.lora_dropout) != float(lora.dropout)),
    ]
    modules = _layers(base)
    on = _matched(adapters, modules)
    layers = f"[{', '.join(_layer_names(on, modules))}]"
    differences.append(("target_modules", f"are on the layers {layers}", lora.target_modules, layers,
                        on != _matched(_adapters_config(cfg), modules)))
    rows = ("train the rows of LeTI's tokens (trainable_token_indices)" if trains_rows
            else "train no rows of LeTI's tokens (no trainable_token_indices)")
    differences.append(("train_special_tokens", rows, str(lora.train_special_tokens).lower(), str(trains_rows).lower(),
                        trains_rows != lora.train_special_tokens))
    for key, have, mine, theirs, differ in differences:
        if differ:
            raise LetiError(
                f"{where}: these adapters {have}, not trainer.lora.{key}={mine}; set trainer.lora.{key}: {theirs} "
                f"to go on training them, or, for new adapters, trainer.lora.save: merged (these merged in first) "
                f"or model: {adapters.base_model_name_or_path} (their base model)")


def _layers(base) -> dict[str, torch.nn.Module | None]:
    """The modules of the model `base` by name, with what 'all-linear' counts as linear: a
    layer peft wrapped (BaseTunerLayer, TrainableTokensWrapper) stands at its own name as the
    layer it wraps, and the modules inside peft's wrappers (base_layer, lora_A.default,
    token_adapter, ...) are left out, as no target name means them. The output head is left
    out of the linear ones, as peft's 'all-linear' leaves it (_maybe_include_all_linear_layers)."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    def unwrapped(module):
        if isinstance(module, BaseTunerLayer):
            return module.get_base_layer()
        if isinstance(module, AuxiliaryTrainingWrapper):
            return getattr(module, "original_module", module)
        return module

    named = list(base.named_modules())
    wrapped = tuple(f"{name}." for name, module in named if isinstance(module, (BaseTunerLayer, AuxiliaryTrainingWrapper)))
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    return {name: (None if module is head else unwrapped(module))
            for name, module in named if not name.startswith(wrapped)}


def _matched(config: LoraConfig, modules: dict[str, torch.nn.Module | None]) -> set[str]:
    """The modules of `modules` (_layers) that the peft LoraConfig `config` puts LoRA on:
    'all-linear' as peft expands it, every Linear / Conv1D layer but the output head (None)."""
    from peft.tuners.tuners_utils import check_target_module_exists

    target = config.target_modules
    if isinstance(target, str) and target.lower() == "all-linear":
        return {name for name, module in modules.items() if _is_linear(module)}
    return {name for name in modules if check_target_module_exists(config, name)}


def _layer_names(on: set[str], modules: dict[str, torch.nn.Module | None]) -> list[str]:
    """The layers `on` as a target_modules value: their short names (c_attn) where those match
    the same layers, else the full names (what peft saves for 'all-linear')."""
    from peft import LoraConfig

    short = sorted({name.rsplit(".", 1)[-1] for name in on})
    return short if short and _matched(LoraConfig(target_modules=short), modules) == on else sorted(on)


def _is_linear(module: torch.nn.Module | None) -> bool:
    """A layer LoRA can wrap as linear: nn.Linear, or GPT-2's Conv1D (a linear layer stored transposed)."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (torch.nn.Linear, Conv1D))


def linear_layer_names(model) -> list[str]:
    """The distinct last names of the model's linear layers (what LoRA's target_modules match)."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if _is_linear(module)})


def load_4bit(source: str, full, tokenizer, cfg: TrainerConfig, device: torch.device, merge_source: bool = False,
              revision: str | None = None):
    """A 4-bit NF4 copy of the base weights of `source` on `device`, carrying the adapters of
    `full` (the full-precision peft model with the same weights), ready to train them. Its
    embeddings (never quantised) are copied from `full`, so the LeTI token rows match even when
    `source` is the original hub model. An adapter directory as `source`: its base's weights,
    with the adapter merged into them where `full` has it merged too (a user's own adapter, which
    loads merged, or `merge_source`: leti's adapter checkpoint merged before training).
    `revision`: the hub commit to read a hub model at (the one `full` was loaded at)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise LetiError(QLORA_HINT)
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from leti.model import hub_revision, local_model_dir

    compute = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=compute)
    # The 4-bit copy runs the same code as `full`: a model's own code (trust_remote_code) lives in
    # transformers' dynamic `transformers_modules` package, so the run's setting need not travel here.
    own_code = type(full.get_base_model()).__module__.startswith("transformers_modules")

    def weights(name: str, merge: bool):
        adapter = adapter_config(name)
        if adapter is None:
            try:
                return AutoModelForCausalLM.from_pretrained(name, quantization_config=quant, dtype=compute,
                                                            device_map={"": str(device)}, trust_remote_code=own_code,
                                                            **hub_revision(local_model_dir(name), revision))
            except (OSError, ValueError) as err:
                raise LetiError(f"QLoRA: could not load a 4-bit copy of {name!r} ({message_line(err)})") from None
        base = str(adapter["base_model_name_or_path"])
        model = weights(base, merge=True)  # an adapter directory as the base is always merged (leti.model)
        if not merge and written_by_leti(name, own_code, revision):
            return model  # the adapters `full` carries, copied on below
        tokens = adapter_tokenizer(name, own_code)
        return merge_adapter(model, name, base, len(tokens) if tokens is not None else 0)

    model = weights(source, merge_source)
    plain = full.get_base_model()
    rows = plain.get_input_embeddings().weight.shape[0]
    if model.get_input_embeddings().weight.shape[0] != rows:
        model.resize_token_embeddings(rows, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(_unwrapped(plain.get_input_embeddings()).weight)
        out, plain_out = model.get_output_embeddings(), plain.get_output_embeddings()
        if out is not None and plain_out is not None and not _tied(model):
            out.weight.copy_(_unwrapped(plain_out).weight)
        # a head's bias too (CodeGen, Phi): the resize above left 0 in the LeTI tokens' entries,
        # which would lift their logits wherever the trained biases are negative
        if getattr(out, "bias", None) is not None and getattr(_unwrapped(plain_out), "bias", None) is not None:
            out.bias.copy_(_unwrapped(plain_out).bias)
    model.config.pad_token_id = plain.config.pad_token_id
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    model = apply_lora(model, tokenizer, cfg, like=full)
    copy_adapters(full, model)
    return model


def _unwrapped(module):
    # peft's trainable-token wrapper reports base rows with the trained rows pasted in; the
    # copy wants the base rows (the trained ones travel with the adapters).
    adapter = getattr(module, "token_adapter", None)
    return adapter.base_layer if adapter is not None else module


def _tied(model) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def copy_adapters(src, dst) -> None:
    """Load the adapters (LoRA weights and special-token rows) of peft model `src` into `dst`,
    which has the same adapter layout over another copy of the base (4-bit or full precision)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    # Adapters and special-token rows only: the embedding matrix itself does not train, and the
    # 4-bit copy holds it in the compute dtype (bf16 on GPUs), which would round the fp32 rows.
    state = get_peft_model_state_dict(src, save_embedding_layers=False)
    device = next(dst.parameters()).device
    set_peft_model_state_dict(dst, {k: v.to(device) for k, v in state.items()})
