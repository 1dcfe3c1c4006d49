"""The run configuration: one validated object from YAML plus `key.sub=value` overrides.

Every default reproduces the paper's CodeGen-350M-mono MBPP run (see
shared/docs/leti-method.md); presets in configs/ change only what differs. Bad input becomes one
`LetiError` line naming the file, the field, the value and the fix, e.g.
    config.yaml: unknown field 'sampling.temprature' (did you mean 'sampling.temperature'?)
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import difflib
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from leti.errors import LetiError, message_line
from leti.execution.config import ExecutionConfig
from leti.feedback.training_text import TrainingTextConfig
from leti.sampling.vllm_config import VLLMConfig
from leti.training.config import TrainerConfig


@dataclass(frozen=True)
class SamplingSection:
    """Training-time sampling (spec step 1; authors: n=128, T=1.0, top_p=1.0, 512 tokens)."""

    n: int = field(default=128, metadata={"help": "Programs sampled per training problem per iteration."})
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus mass (1.0 = off)."})
    max_new_tokens: int = field(default=512, metadata={"help": "Generation budget per program."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per forward pass of the hf sampler (vLLM batches by sampling.vllm.chunk_size)."})
    backend: Literal["hf", "vllm"] = field(default="hf", metadata={"help": "Sampler backend: 'hf' (transformers generate) or 'vllm' (pip install 'leti[vllm]'; used for evaluation too)."})
    vllm: VLLMConfig = field(default_factory=VLLMConfig, metadata={"help": "vLLM engine settings (backend 'vllm' only)."})
    stop_sequences: bool = field(default=True, metadata={"help": "Stop each training sample at its task's stop sequences (spec). False: the authors' main runs (run_leti.py without --postprocess_generation): a sample runs to end-of-text or max_new_tokens, and all of it is executed and trained on, code after the function included. Evaluation always stops at them."})
    data_parallel: bool = field(default=True, metadata={"help": "Under a multi-process launch, every rank samples a share of the programs on its own GPU (rank 0 executes them all); false: rank 0 samples alone. Samples are seeded per (problem, index), so this changes speed, not what is drawn."})

    def __post_init__(self) -> None:
        _positive(self, "sampling", ("n", "max_new_tokens", "batch_size"))
        _at_most(self, "sampling", "n", MAX_SAMPLES)
        _sampling_ranges(self, "sampling")


@dataclass(frozen=True)
class EvalSection:
    """Held-out evaluation after every `every` iterations (spec: MBPP test, n=16, T=0.1)."""

    split: str = field(default="test", metadata={"help": "Task split to evaluate on (MBPP: test = ids 11-510)."})
    n: int = field(default=16, metadata={"help": "Samples per problem."})
    temperature: float = field(default=0.1, metadata={"help": "Softmax temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus mass (1.0 = off; HumanEval protocol: 0.95)."})
    max_new_tokens: int = field(default=512, metadata={"help": "Generation budget per program."})
    ks: list[int] = field(default_factory=lambda: [1, 10], metadata={"help": "Report pass@k for these k (each <= n)."})
    max_problems: int | None = field(default=None, metadata={"help": "Evaluate on the first this many problems of the split (None = all)."})
    every: int = field(default=1, metadata={"help": "Evaluate after every this many iterations (the last one always)."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per forward pass of the hf sampler (vLLM batches by sampling.vllm.chunk_size)."})

    def __post_init__(self) -> None:
        _positive(self, "eval", ("n", "max_new_tokens", "every", "batch_size"))
        _at_most(self, "eval", "n", MAX_SAMPLES)
        _sampling_ranges(self, "eval")
        if self.max_problems is not None and self.max_problems < 1:
            raise ValueError(f"eval.max_problems must be >= 1 or null, got {self.max_problems!r}")
        if not self.ks:
            raise ValueError("eval.ks is empty; list the k of pass@k to report, e.g. [1, 10]")
        if any(k < 1 for k in self.ks):  # "drop the larger k" would point the wrong way
            raise ValueError(f"eval.ks={self.ks!r}: k must be >= 1 (pass@k over k samples), got {min(self.ks)}; "
                             f"use k from 1 to eval.n={self.n}")
        if any(k > self.n for k in self.ks):
            raise ValueError(f"eval.ks={self.ks!r} needs values in 1..eval.n={self.n}; raise eval.n or drop the larger k")
        if len(set(self.ks)) < len(self.ks):
            raise ValueError(f"eval.ks={self.ks!r} repeats a k; list each k once")


@dataclass(frozen=True)
class RunConfig:
    model: str = field(default="Salesforce/codegen-350M-mono", metadata={"help": "Hugging Face hub id or local directory of a causal LM."})
    model_revision: str | None = field(default=None, metadata={"help": "Hub revision of `model`: a branch, tag or commit sha (None: the default branch). The run records the commit it resolves to in run.json (model_commit) and loads exactly that commit for its whole life, so a resume after the branch moved still reads the same weights. For a local adapter directory it applies to the hub base model the adapter names; a plain local directory has no revisions (refused), and is pinned by its files instead (run.json's model_files)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Let the model's repository run its own modeling code (config.json auto_map: CodeGen2, SantaCoder, replit-code, ...) when the model, its config or tokenizer loads. This runs Python code from that repository: only for models you trust."})
    model_dtype: Literal["float32", "bfloat16", "float16", "auto"] = field(default="float32", metadata={"help": "Weights dtype. Training every weight needs float32 (fp32 master weights: AdamW's lr 1e-5 updates round away in bfloat16 and turn float16 weights to NaN); the trainer still computes in bf16 on GPUs (trainer.mixed_precision). bfloat16/float16 only for LoRA adapters saved apart from the frozen base (trainer.lora.enabled, lora.save: adapter): merged into 16-bit weights, their small updates round away too. 'auto': float32, or for such adapters bf16 on GPUs (fp16 on older ones)."})
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if present), 'cpu', 'cuda', 'cuda:N'."})
    task: str = field(default="mbpp", metadata={"help": "Task spec: mbpp, humaneval, jsonl:PATH, ..."})
    train_split: str = field(default="train", metadata={"help": "Split whose problems are sampled for training (MBPP: 601-974)."})
    max_train_problems: int | None = field(default=None, metadata={"help": "Use only the first this many training problems (ablation: fewer problems)."})
    iterations: int = field(default=50, metadata={"help": "LeTI iterations (authors: 50 for 350M; for 2B 10, and 30 for the binary-feedback arm, as the 2B presets do)."})
    seed: int = field(default=42, metadata={"help": "Seed for sampling, shuffling and initialisation."})
    keep_checkpoints: int | None = field(default=None, metadata={"help": "Keep only the newest this many iteration checkpoints (None = all; a 350M fp32 checkpoint is ~1.4 GB)."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    sampling: SamplingSection = field(default_factory=SamplingSection, metadata={"help": "Training-time sampling."})
    eval: EvalSection = field(default_factory=EvalSection, metadata={"help": "Held-out evaluation."})
    execution: ExecutionConfig = field(default_factory=ExecutionConfig, metadata={"help": "Sandboxed execution."})
    training_text: TrainingTextConfig = field(default_factory=TrainingTextConfig, metadata={"help": "Training text layout and ablations."})
    trainer: TrainerConfig = field(default_factory=TrainerConfig, metadata={"help": "Fine-tuning."})

    def check_weights_dtype(self) -> None:
        """At run start, not on every load: a config written before the rule (read by `leti
        report`, say) still loads. 16-bit weights are only for LoRA's frozen base."""
        # LoRA adapters kept apart are the only way to train over frozen 16-bit weights, and vLLM
        # cannot serve them (their special-token rows): under vLLM only float32 is left to offer
        vllm = self.sampling.backend == "vllm"
        adapters = "" if vllm else " or train LoRA adapters on the frozen weights (trainer.lora.enabled: true, lora.save: adapter)"
        if self.model_dtype in ("bfloat16", "float16") and not self.trainer.lora.enabled:
            raise LetiError(f"model_dtype={self.model_dtype!r} would train every weight in {self.model_dtype}, where AdamW's "
                            f"small updates {'round away' if self.model_dtype == 'bfloat16' else 'turn weights to NaN'}; "
                            "use model_dtype: float32 (the trainer still computes in bf16 on GPUs, trainer.mixed_precision)"
                            + adapters)
        if self.model_dtype in ("bfloat16", "float16") and self.trainer.lora.save == "merged":
            # Measured on a tiny model: merged into bf16 weights, 58% of the weights an fp32 run's
            # LoRA update moved did not move at all; the next iteration loads the merge in 16 bits again.
            fix = ("model_dtype: float32 (vLLM samples in sampling.vllm.dtype whatever the weights' dtype)" if vllm else
                   "trainer.lora.save: adapter (the adapters go on training over the frozen weights) or model_dtype: float32")
            raise LetiError(f"model_dtype={self.model_dtype!r} with trainer.lora.save: merged adds each iteration's "
                            f"adapters into {self.model_dtype} weights, which rounds most of their small update away; "
                            f"use {fix}")

    @property
    def weights_dtype(self) -> str:
        """model_dtype as the run loads its models: 'auto' is float32 unless the weights stay frozen
        (LoRA adapters saved apart from them), as 16-bit weights lose small updates (check_weights_dtype)."""
        frozen = self.trainer.lora.enabled and self.trainer.lora.save == "adapter"
        return self.model_dtype if self.model_dtype != "auto" or frozen else "float32"

    def __post_init__(self) -> None:
        _positive(self, "", ("iterations",))
        _at_most(self, "", "iterations", MAX_ITERATIONS)
        if self.model_revision is not None and (not self.model_revision.strip() or any(c.isspace() for c in self.model_revision)):
            raise ValueError(f"model_revision must be a branch, tag or commit sha of the hub model, or null, got {self.model_revision!r}")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1 or null (resuming needs the newest), got {self.keep_checkpoints!r}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}")
        # each stage seeds with seed + k (evaluation: seed + 100000 + k); numpy and vLLM take 32 bits
        if not 0 <= self.seed < 2**31:
            raise ValueError(f"seed must be in [0, 2**31), got {self.seed!r}")
        if self.max_train_problems is not None and self.max_train_problems < 1:
            raise ValueError(f"max_train_problems must be >= 1 or null, got {self.max_train_problems!r}")
        if self.trainer.lora.save == "adapter" and self.sampling.backend == "vllm":
            raise ValueError("trainer.lora.save='adapter' with sampling.backend='vllm': vLLM cannot load the adapters' "
                             "special-token rows; use trainer.lora.save: merged")
        if self.training_text.stop_hint and not self.sampling.stop_sequences:
            # stop_hint samples without stop sequences itself; `false` asks for samples never cut
            raise ValueError("training_text.stop_hint cuts each sample at the stop sequences after sampling, which "
                             "sampling.stop_sequences: false asks never to do; leave sampling.stop_sequences true "
                             "(stop_hint samples without them all the same), or turn training_text.stop_hint off")
        if self.execution.feedback_style != self.training_text.feedback_style:
            raise ValueError(
                f"execution.feedback_style={self.execution.feedback_style!r} differs from "
                f"training_text.feedback_style={self.training_text.feedback_style!r}; set only training_text.feedback_style "
                "(execution.feedback_style follows it: remove that one from the config)"
            )


def _sampling_ranges(obj: Any, section: str) -> None:
    # Checked here, not only by the sampler: a bad eval.temperature must fail before the run
    # spends an iteration sampling and training, and name the section it came from.
    if not obj.temperature >= 0:
        raise ValueError(f"{section}.temperature must be >= 0 (0 = greedy), got {obj.temperature!r}")
    if not 0 < obj.top_p <= 1:
        raise ValueError(f"{section}.top_p must be in (0, 1] (1.0 = off), got {obj.top_p!r}")


def _positive(obj: Any, section: str, names: tuple[str, ...]) -> None:
    prefix = f"{section}." if section else ""
    for name in names:
        value = getattr(obj, name)
        if value < 1:
            raise ValueError(f"{prefix}{name} must be >= 1, got {value!r}")


# Most iterations, and samples per problem (sampling.n, eval.n). The authors ran 10-50 iterations
# and 128 samples; a million of either is beyond any budget, while 10**20 (a typo) was accepted and
# then killed the run for memory (the loop and the samplers hold a set or list that long).
MAX_ITERATIONS = 10**6
MAX_SAMPLES = 10**6


def _at_most(obj: Any, section: str, name: str, limit: int) -> None:
    value = getattr(obj, name)
    if value > limit:
        raise ValueError(f"{section + '.' if section else ''}{name} must be at most {limit}, got {value!r}")


# --- loading ----------------------------------------------------------------------------------


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, first: int, again: int) -> None:
        super().__init__(f"field '{key}' appears twice (lines {first} and {again})")


class TooLongIntegerError(yaml.YAMLError):
    def __init__(self, digits: int, limit: int, line: int) -> None:
        self.line = line
        super().__init__(f"an integer of {digits} digits, more than Python reads ({limit}); "
                         "no field takes a number that size (quote it if it is text)")


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader whose integer too long for int() (past 4300 digits) is a YAMLError naming its line,
    not the ValueError PyYAML lets out (a traceback); so is `!!int` on text that is no integer."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            digits, limit = sum(c.isdigit() for c in str(node.value)), getattr(sys, "get_int_max_str_digits", lambda: 0)()
            if limit and digits > limit:
                raise TooLongIntegerError(digits, limit, node.start_mark.line + 1) from None
            raise yaml.constructor.ConstructorError(None, None, f"{node.value!r} is not an integer",
                                                    node.start_mark) from None


_SafeLoader.add_constructor("tag:yaml.org,2002:int", _SafeLoader.construct_yaml_int)


class _UniqueKeyLoader(_SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: PyYAML keeps the last one,
    so a second `sampling:` section would silently reset every field the first one set."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may repeat keys on purpose
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in first:
                    raise DuplicateKeyError(key, first[key], key_node.start_mark.line + 1)
                first[key] = key_node.start_mark.line + 1
            except TypeError:  # an unhashable key: SafeLoader's own error says so below
                pass
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    """YAML text as SafeLoader reads it, except that a key given twice in one mapping is a
    DuplicateKeyError (a yaml.YAMLError naming the key and both lines), not the last one kept."""
    return _load_with_node(text, _UniqueKeyLoader)[0]


def _load_with_node(text: str, loader_cls: type[yaml.SafeLoader]) -> tuple[Any, yaml.Node | None]:
    """The data, as yaml.load reads it, and the node it was made from: the node keeps each
    scalar's text as written (YAML reads 0123456 as 42798), with merge keys already merged in."""
    loader = loader_cls(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    finally:
        loader.dispose()


def read_yaml_mapping(path: str | Path, what: str, missing_hint: str) -> dict:
    """A YAML file whose top level is a mapping; any problem is one LetiError line naming the file
    (and the line, for syntax errors)."""
    return _read_yaml_mapping(path, what, missing_hint)[0]


def _read_yaml_mapping(path: str | Path, what: str, missing_hint: str) -> tuple[dict, yaml.Node | None]:
    p = Path(path)
    try:
        raw, node = _load_with_node(p.read_text(encoding="utf-8"), _UniqueKeyLoader)
    except FileNotFoundError:
        raise LetiError(f"{p}: {what} not found; {missing_hint}") from None
    except IsADirectoryError:
        raise LetiError(f"{p}: is a directory, not {'an' if what[:1] in 'aeiou' else 'a'} {what}; {missing_hint}") from None
    except UnicodeDecodeError as e:
        raise LetiError(f"{p}: {what} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                        "save it as UTF-8 YAML") from None
    except OSError as e:
        raise LetiError(f"{p}: cannot read {what} ({e.strerror or e}); {missing_hint}") from None
    except DuplicateKeyError as e:
        raise LetiError(f"{p}: {e}; keep one and merge the two") from None
    except TooLongIntegerError as e:
        raise LetiError(f"{p}: line {e.line}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise LetiError(f"{p}:{line} is not valid YAML ({getattr(e, 'problem', e)}); fix the syntax") from None
    if raw is None:  # an empty file (or only comments): every field keeps its default
        return {}, None
    if not isinstance(raw, dict):  # also [], 0, false: not read as "no fields"
        raise LetiError(f"{p}: top level must be a mapping of fields, got {type(raw).__name__}")
    return raw, node


def load_config(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> RunConfig:
    """Read YAML (None = all defaults; a bare name that is no file: the shipped preset, leti.presets),
    apply `a.b=value` overrides (values parsed as YAML), and validate everything. Raises LetiError
    with a one-line message on any bad field."""
    if path is not None:
        from leti.presets import resolve_config

        path = resolve_config(path)  # a file, or a shipped preset's name: `leti run mbpp-codegen-350m`
    where = str(path) if path is not None else "defaults"
    raw: dict = {}
    # where each value was written: the file's node, then each override's (key, value node)
    sources: list[tuple[str, yaml.Node | None]] = [("", None)]
    if path is not None:
        raw, node = _read_yaml_mapping(path, "config file", "pass a YAML file or a preset's name (`leti presets` lists them)")
        sources = [("", node)]
    raw = _unshared(raw)
    layers = [copy.deepcopy(raw)]  # layers[i]: the file with the first i overrides applied
    for item in overrides:
        node = apply_override(raw, item)
        sources.append((item.partition("=")[0].strip(), node))
        _follow_feedback_style(raw, item, overrides)
        layers.append(copy.deepcopy(raw))
    try:
        return build(RunConfig, _with_feedback_style(raw), where, written=_written(sources))
    except LetiError as e:
        raise LetiError(_blame(e, layers, where, overrides, sources)) from None


def _unshared(data: Any, inside: frozenset[int] = frozenset()) -> Any:
    """The mappings of `data` copied so that none is in two places. An alias (`eval: *gen`) gives
    both sections one dict (deepcopy keeps that: its memo), and an override of sampling.n changed
    eval.n too. Only mappings are written to (lists are replaced whole), so lists are left shared;
    a mapping inside itself (`a: &x {b: *x}`) stays so: no field takes one."""
    if not isinstance(data, dict) or id(data) in inside:
        return data
    inside = inside | {id(data)}
    return {key: _unshared(value, inside) for key, value in data.items()}


def _written(sources: typing.Sequence[tuple[str, yaml.Node | None]]) -> typing.Callable[[str], str | None]:
    """name -> the text its value was written as (None: not known), from `sources`: the file's
    root node ("", node), then each override's (key, value node), the last one setting a name
    winning. A hint to quote a value must quote that text: YAML read 0123456 as 42798."""

    def text(name: str) -> str | None:
        for key, node in reversed(sources):
            if key and name != key and not name.startswith((f"{key}.", f"{key}[")):
                continue
            for part in re.findall(r"\[(\d+)\]|([^.\[\]]+)", name[len(key):]):
                if isinstance(node, yaml.MappingNode) and part[1]:
                    # merge keys are merged into node.value by now; a later key wins, as in the data
                    node = next((v for k, v in reversed(node.value) if k.value == part[1]), None)
                elif isinstance(node, yaml.SequenceNode) and part[0] and int(part[0]) < len(node.value):
                    node = node.value[int(part[0])]
                else:
                    return None
            if isinstance(node, yaml.ScalarNode):
                return node.value
            # a mapping or list where text was meant (`task=jsonl:a: b.jsonl`): its source text,
            # if on one line and with no quote of its own to break the '...' the hint puts round it
            start, end = (node.start_mark, node.end_mark) if node is not None else (None, None)
            if start is None or not start.buffer or start.line != end.line:
                return None
            source = start.buffer[start.index:end.index].strip()
            return source if source and "'" not in source else None
        return None

    return text


def _follow_feedback_style(raw: dict, item: str, overrides: typing.Sequence[str]) -> None:
    """`--set training_text.feedback_style=X` on a file that spells out execution.feedback_style
    too (a run's config.yaml) sets both, as the one knob it is; unless execution's is set as well."""
    keys = [o.partition("=")[0].strip() for o in overrides]
    if item.partition("=")[0].strip() != "training_text.feedback_style" or "execution.feedback_style" in keys:
        return
    execution, text = raw.get("execution"), raw.get("training_text")
    if isinstance(execution, dict) and isinstance(text, dict) and "feedback_style" in execution:
        # a style that is no choice is refused as training_text's, where it was written
        if _is_feedback_style(text.get("feedback_style")):
            execution["feedback_style"] = text.get("feedback_style")


def _with_feedback_style(raw: dict) -> dict:
    """One knob for the feedback style: the training text's setting drives the executor. A style
    that is no choice stays where it was written: copied, it was refused as execution.feedback_style
    when execution came first in the file, a field the user never wrote."""
    style = raw.get("training_text", {}).get("feedback_style") if isinstance(raw.get("training_text"), dict) else None
    if _is_feedback_style(style) and isinstance(raw.setdefault("execution", {}), dict):
        raw["execution"].setdefault("feedback_style", style)
    return raw


def _is_feedback_style(style: Any) -> bool:
    return any(style == choice for choice in typing.get_args(typing.get_type_hints(TrainingTextConfig)["feedback_style"]))


def _blame(error: LetiError, layers: list[dict], where: str, overrides: typing.Sequence[str],
           sources: typing.Sequence[tuple[str, yaml.Node | None]]) -> str:
    """The error of the whole config, attributed to where the bad value came from: the file if
    the file alone already fails this way, else the first `--set` after which it does (so a
    pair of overrides that only work together, e.g. eval.n and eval.ks, is not refused)."""
    problem = str(error)[len(where) + 2 :]  # build's messages are "WHERE: problem"
    for i, layer in enumerate(layers):
        try:
            build(RunConfig, _with_feedback_style(layer), where, written=_written(sources[: i + 1]))
        except LetiError as e:
            if str(e)[len(where) + 2 :] == problem:
                return f"{where}: {problem}" if i == 0 else f"--set {overrides[i - 1]}: {problem}"
    return str(error)


def apply_override(raw: dict, item: str, flag: str = "--set", example: str = "sampling.n=4") -> yaml.Node | None:
    """Set raw[a][b] = value for an `a.b=value` item (value parsed as YAML). Returns the value's
    YAML node (None: not YAML), which has the text of each scalar as written."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise LetiError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} {example}")
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        if node.get(part) is None:  # a section written empty (`sampling:` with nothing under it)
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise LetiError(f"{flag} {item!r}: '{part}' is not a section")
    if not value.strip():
        node[parts[-1]] = None
        return None
    try:
        node[parts[-1]], value_node = _load_with_node(value, _SafeLoader)
    except TooLongIntegerError as e:
        raise LetiError(f"{flag} {key.strip()}={value.strip()[:12]}...: {e}") from None
    except yaml.YAMLError:
        node[parts[-1]] = value
        return None
    return value_node


def build(cls: type, raw: Any, where: str, prefix: str = "", *,
          written: typing.Callable[[str], str | None] | None = None) -> Any:
    """Construct dataclass `cls` from a mapping, checking names and types recursively. `written`:
    a field's dotted name -> its value's text as written, where known (for the hint to quote it)."""
    if not isinstance(raw, dict):
        if raw is None and prefix:  # `sampling:` with nothing under it
            raise LetiError(f"{where}: section '{prefix.rstrip('.')}' is empty; give it fields, or remove it to keep "
                            "its defaults")
        raise LetiError(f"{where}: field '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for name in raw:
        if name not in fields:
            parts = name.split(".") if isinstance(name, str) else []
            if len(parts) > 1 and all(parts) and parts[0] in fields and dataclasses.is_dataclass(hints[parts[0]]):
                # `sampling.n: 4`, --set's syntax copied into a file: a section's name is no fix
                nested = raw[name]
                for part in reversed(parts[1:]):
                    nested = {part: nested}
                under = f" under {prefix.rstrip('.')}" if prefix else ""
                hint = f"a dotted name is --set syntax; in YAML nest it{under}: {parts[0]}: {yaml_value(nested)}"
            else:
                close = difflib.get_close_matches(str(name), list(fields), n=1)
                # the whole dotted name: what --set (or a flat reading of the YAML) needs
                hint = f"did you mean '{prefix}{close[0]}'?" if close else f"known fields: {', '.join(fields)}"
            raise LetiError(f"{where}: unknown field '{prefix}{name}' ({hint})")
    kwargs = {name: _coerce(value, hints[name], where, f"{prefix}{name}", written) for name, value in raw.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, LetiError) as e:
        raise LetiError(f"{where}: {message_line(e)}") from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_YAML_TRUE, _YAML_FALSE = ("y", "yes", "true", "on"), ("n", "no", "false", "off")


def _coerce(value: Any, tp: Any, where: str, name: str, written: typing.Callable[[str], str | None] | None = None) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where, f"{name}.", written=written)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where, name, written)
            except LetiError as e:
                errors.append(e)
        raise errors[0]
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted no/off/yes/on as a boolean
            words = [a for a in args if isinstance(a, str) and a.lower() in (_YAML_TRUE if value else _YAML_FALSE)]
            if len(words) == 1:
                return words[0]
        if value not in args:
            raise LetiError(f"{where}: field '{name}' = {value!r} is invalid; use one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise LetiError(f"{where}: field '{name}' = {value!r} must be a list, written [a, b] in YAML")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, where, f"{name}[{i}]", written) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if tp is Any:
        return value
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        str: isinstance(value, str),
        dict: isinstance(value, dict),
    }.get(tp)
    if tp is float:
        # YAML 1.1 reads "1e-5" (no dot) as a string; accept it as the number it plainly is.
        try:
            number = None if isinstance(value, bool) else float(value)
        except OverflowError:  # an integer past float's range (10**400): no more finite than inf
            number = math.inf
        except (TypeError, ValueError):
            number = None
        if number is not None and not math.isfinite(number):
            # nan passes every `x < 0` range check below and inf breaks the executor's timer:
            # no field means either.
            raise LetiError(f"{where}: field '{name}' = {value!r} must be a finite number")
        if number is not None:
            return number
        ok = False
    if ok is None:
        return value
    if not ok:
        if tp is str and isinstance(value, (datetime.date, int, float, dict, list)) and not isinstance(value, bool):
            # YAML reads an unquoted 2023-01-01 as a date, 350 as a number, a: b (colon, space)
            # as a mapping and [a] as a list: the text was meant
            kind = ("a date" if isinstance(value, datetime.date) else "a mapping" if isinstance(value, dict)
                    else "a list" if isinstance(value, list) else "a number")
            # The hint quotes the text as written, not the value: YAML 1.1 reads 0123456 as
            # 42798 (octal), 1_000 as 1000, 1:30 as 90 and 1.10 as 1.1.
            text = written(name) if written is not None else None
            quoted = "..." if text is None else text
            if name.endswith("]"):  # a list's item: `--set a.b[0]=...` is no syntax
                what, form = "the item", f"'{quoted}' in the list (in the file and inside a --set's argument alike)"
            else:
                # the value may come from the file or a --set (_blame tells which, later); the
                # shell takes quotes off a --set's argument, so they go inside it there
                what, form = "it", f"{name.rpartition('.')[2]}: '{quoted}' (with --set: \"{name}='{quoted}'\")"
            if text is None:  # not known: a hint with the value YAML made would state a wrong one
                raise LetiError(f"{where}: field '{name}' must be str, and YAML reads the unquoted value as {kind} "
                                f"({value}); quote {what} as written: {form}")
            read = "" if text == str(value) else f" ({value})"
            raise LetiError(f"{where}: field '{name}' = {text} must be str, and YAML reads it unquoted as {kind}{read}; "
                            f"quote {what}: {form}")
        raise LetiError(f"{where}: field '{name}' = {value!r} must be {_type_name(tp)}")
    return value


def config_to_dict(cfg: Any) -> dict:
    """Plain data (lists, not tuples) for writing the resolved config as YAML."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def flatten_config(d: dict, prefix: str = "") -> dict:
    """A config mapping as {"section.field": value} (nested sections joined with dots)."""
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# Fields that change where or how fast a run goes, not what it computes: a resumed run may
# change them (leti run), and two runs that differ only in them are comparable (leti report).
RESUMABLE_CHANGES = frozenset({
    "iterations", "progress", "keep_checkpoints", "device", "execution.workers",
    "sampling.batch_size", "eval.batch_size", "trainer.report_to", "trainer.log_every",
    "sampling.data_parallel", "trainer.pretrain_cache",
    # the same computation, recomputed (activations) to fit in memory
    "trainer.gradient_checkpointing",
    # engine/cluster knobs
    "sampling.vllm.gpu_memory_utilization", "sampling.vllm.enforce_eager",
    "sampling.vllm.chunk_size", "sampling.vllm.tensor_parallel_size",
    "execution.backend", "execution.ray_address", "execution.ray_actors"})


def terminal_progress(cfg: RunConfig) -> RunConfig:
    """`progress: true` draws bars on a terminal only: in a log file (nohup, Slurm) every redraw
    is one more carriage-return update, and a message printed while a bar is open starts
    mid-line. For the libraries' bars (transformers, the hub): leti's own stages print a plain line
    every tenth of the way there instead (leti.progress), since hours of silence in a log could not
    be told from a hang. A run directory ignores the change (progress is one of RESUMABLE_CHANGES)."""
    return dataclasses.replace(cfg, progress=cfg.progress and sys.stderr.isatty())


# Fields added after runs were made whose default is not what those runs did, each with the value
# that does what they did. A run started before such a field existed (its config.yaml lacks it)
# resumes only with that value, so a resume never changes what the rest of the run computes.
BEHAVIOUR_BEFORE_FIELD: dict[str, object] = {
    "trainer.shuffle": True,
    "trainer.pretrain_eos_separator": True,
    "trainer.pretrain_restart_every_epoch": False,
    "trainer.carry_optimizer_state": False,
    "trainer.pretrain_heldout_fraction": 0.0,
    "trainer.pretrain_packing": "stream",
}


def yaml_value(value: object) -> str:
    """A value on one line as YAML writes it and `--set key=VALUE` reads it (null, true, [1, 10])."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
