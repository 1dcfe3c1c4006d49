"""Sampling records, config and the Sampler interface shared by every backend.

A sampler turns `SampleRequest`s (one prompt per problem) into `Sample`s, n per problem, and
yields them as soon as a batch finishes so that the caller can execute and persist them while
the next batch generates. Samples are keyed by (problem_id, sample_idx), which is also the
resume key: keys in `skip` are never generated again.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from leti.errors import LetiError
from leti.sampling.vllm_config import VLLMConfig

FinishReason = Literal["stop", "length"]


@dataclass
class SamplingConfig:
    """How to sample programs. Defaults are the paper's training-time sampling."""

    n: int = field(default=128, metadata={"help": "samples per problem (paper training: 128)"})
    temperature: float = field(
        default=1.0, metadata={"help": "softmax temperature; 0 means greedy decoding"}
    )
    top_p: float = field(
        default=1.0, metadata={"help": "nucleus sampling mass in (0, 1]; 1.0 disables it"}
    )
    max_new_tokens: int = field(
        default=512, metadata={"help": "generation budget per sample, in tokens"}
    )
    stop: tuple[str, ...] = field(
        default=(),
        metadata={"help": "stop sequences: generation ends at the first one, which is cut off"},
    )
    seed: int = field(
        default=0, metadata={"help": "base seed; each (problem_id, sample_idx) derives its own"}
    )
    batch_size: int = field(
        default=16, metadata={"help": "sequences per forward pass (prompts x samples)"}
    )
    backend: str = field(default="hf", metadata={"help": "sampler backend: 'hf' or 'vllm'"})
    vllm: VLLMConfig = field(
        default_factory=VLLMConfig, metadata={"help": "engine settings of the vllm backend"}
    )

    def __post_init__(self) -> None:
        # YAML gives lists; a tuple keeps the config hashable and printable as written.
        self.stop = check_stops(self.stop, "sampling.stop")
        _check_int(self.n, "n", 1)
        _check_int(self.max_new_tokens, "max_new_tokens", 1)
        _check_int(self.batch_size, "batch_size", 1)
        _check_int(self.seed, "seed", 0)
        if not isinstance(self.temperature, (int, float)) or not (
            math.isfinite(self.temperature) and self.temperature >= 0
        ):
            raise LetiError(
                f"sampling.temperature={self.temperature!r} must be a finite number >= 0 "
                "(0 = greedy)"
            )
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise LetiError(f"sampling.top_p={self.top_p!r} must be in (0, 1]; use 1.0 to disable")
        if self.backend not in SAMPLER_BACKENDS:
            raise LetiError(
                f"sampling.backend={self.backend!r} is unknown; use one of {sorted(SAMPLER_BACKENDS)}"
            )


def check_stops(stop: Any, name: str) -> tuple[str, ...]:
    """A list of stop sequences as a tuple; a string or an empty/non-string entry is one line
    naming `name` (the config's stop list and a request's own are checked alike)."""
    if isinstance(stop, str):
        raise LetiError(f"{name}={stop!r} is a string; give a list of stop sequences")
    stop = tuple(stop)
    for s in stop:
        if not isinstance(s, str) or not s:
            raise LetiError(f"{name} contains {s!r}; every stop sequence must be a non-empty string")
    return stop


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, str]:
    """(text before the first stop sequence, the rest from it on); the rest is "" when no stop
    sequence occurs. The samplers cut every completion this way, and the loop cuts an unstopped
    one this way afterwards (training_text.stop_hint)."""
    cuts = [text.find(s) for s in stops if s in text]
    if not cuts:
        return text, ""
    return text[: min(cuts)], text[min(cuts):]


def _check_int(value: Any, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LetiError(f"sampling.{name}={value!r} must be an integer >= {minimum}")


@dataclass(frozen=True)
class SampleRequest:
    """One problem to sample for: the exact prompt text the model continues, and its own stop
    sequences when it has them (a JSONL task may give each problem its own)."""

    problem_id: str
    prompt: str
    stop: tuple[str, ...] | None = None  # None: the config's `stop`

    def stops(self, config: SamplingConfig) -> tuple[str, ...]:
        """The stop sequences that end this request's samples."""
        return config.stop if self.stop is None else self.stop


@dataclass(frozen=True)
class Sample:
    """One generated program. `completion` is the new text only (prompt stripped), cut before
    the first stop sequence or end-of-text token."""

    problem_id: str
    sample_idx: int
    prompt: str
    completion: str
    n_prompt_tokens: int
    # Tokens the model generated for this sample, up to the one that completed a stop
    # sequence (end-of-text and padding excluded); the cost measure for throughput.
    n_completion_tokens: int
    finish_reason: FinishReason  # "stop": stop sequence or eos; "length": budget/context hit

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem_id, self.sample_idx)


@runtime_checkable
class Sampler(Protocol):
    """Anything that turns requests into samples, lazily."""

    def sample(
        self,
        requests: list[SampleRequest],
        n: int | None = None,
        skip: set[tuple[str, int]] | None = None,
    ) -> Iterator[Sample]:
        """Yield n samples per request (n defaults to the config's), as batches finish, in no
        guaranteed order; keys in `skip` are never produced."""
        ...


def _load_hf() -> Callable[..., Sampler]:
    from leti.sampling.hf import HFSampler

    return HFSampler


def _load_vllm() -> Callable[..., Sampler]:
    # vLLM logs about a hundred INFO lines per engine start, and leti starts one per sampling
    # phase, burying its own progress: keep vLLM's warnings (VLLM_LOGGING_LEVEL=INFO brings the
    # rest back). Set before the first import: some vLLM versions read it then; the engine's
    # own processes inherit it.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        import vllm  # noqa: F401
    except ImportError:
        from leti.sampling.vllm import INSTALL_HINT

        raise LetiError(INSTALL_HINT) from None
    from leti.sampling.vllm import VLLMSampler

    return VLLMSampler


# Registry: a new backend is one loader here; loaders import lazily so optional dependencies
# are only needed by the runs that use them.
SAMPLER_BACKENDS: dict[str, Callable[[], Callable[..., Sampler]]] = {
    "hf": _load_hf,
    "vllm": _load_vllm,
}


def get_sampler(config: SamplingConfig, model: Any, tokenizer: Any, trust_remote_code: bool = False) -> Sampler:
    """Build the sampler named by config.backend for an already-loaded model and tokenizer.
    trust_remote_code: the vllm backend given a checkpoint path loads it (and the model's own
    code) itself; an already-loaded model (hf) or engine was loaded with its own setting."""
    if config.backend not in SAMPLER_BACKENDS:
        raise LetiError(
            f"sampling.backend={config.backend!r} is unknown; use one of {sorted(SAMPLER_BACKENDS)}"
        )
    factory = SAMPLER_BACKENDS[config.backend]()
    if config.backend == "vllm":
        return factory(config, model, tokenizer, trust_remote_code=trust_remote_code)
    return factory(config, model, tokenizer)


def leti_token_ids(tokenizer: Any) -> list[int]:
    """Ids of LeTI's four control tokens (<|good|>, <|bad|>, <|lang_feedback|>,
    <|/lang_feedback|>) that `tokenizer` holds as added tokens; both samplers forbid them. They
    mark up the training text and are never program content: a sample holding one would go into
    execution and into a training text, teaching the model to write them inside code. A tokenizer
    without them (a plain base model's) gives none: nothing is blocked."""
    from leti.model import SPECIAL_TOKENS  # lazy: this module stays free of torch

    added = tokenizer.get_added_vocab()
    return sorted(tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS if t in added)


def samples_per_request(config: SamplingConfig, n: int | None) -> int:
    """A sampler's `n` argument: the config's when None, else an integer >= 1."""
    n = config.n if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise LetiError(f"n={n!r} must be an integer >= 1")
    return n


def greedy_copies_warning(temperature: float, n: int, what: str, fix: str) -> str | None:
    """A warning line when greedy decoding (temperature 0) is asked for several samples per
    problem: every sample of a problem is the same program, so the extra draws add nothing
    (pass@k is pass@1 for every k; a training set holds n copies). Not refused: a temperature
    sweep keeps one n for all its temperatures."""
    if temperature != 0 or n < 2:
        return None
    return (f"leti: warning: {what}: temperature 0 is greedy decoding, so the {n} samples of each problem are one "
            f"program repeated; {fix}")


def prompt_fits(n_tokens: int, context: int | None) -> bool:
    """A prompt the samplers can continue: at least one token, and room in the context for at
    least one new one."""
    return n_tokens > 0 and (context is None or n_tokens < context)


def check_prompt_fits(problem_id: str, n_tokens: int, context: int | None, where: str = "",
                      how: str = "", context_setting: str | None = None) -> None:
    """A prompt the samplers can continue: at least one token, and room in the context for at
    least one new one. Both samplers check each prompt so, and a run checks every prompt so at its
    start (leti.loop.checks), before sampling anything. `where` ("FILE:LINE") leads the message
    when the problem has one; `how` says which form of the prompt was counted; `context_setting`
    names the setting that chose `context` (vLLM's max_model_len) where the model did not."""
    at = f"{where}: " if where else ""
    if n_tokens == 0:
        raise LetiError(f"{at}problem {problem_id!r} has an empty prompt; give some text")
    if context is not None and n_tokens >= context:
        if context_setting:  # the model may have room: the setting is what to change
            raise LetiError(f"{at}problem {problem_id!r}: prompt{how} has {n_tokens} tokens but {context_setting} is "
                            f"{context}; raise it, or set it to null for the model's own context")
        raise LetiError(f"{at}problem {problem_id!r}: prompt{how} has {n_tokens} tokens but the model's context "
                        f"is {context}; shorten the prompt or use a longer-context model")


def check_requests(requests: list[SampleRequest]) -> None:
    """Problem ids key the output; duplicates would make (problem_id, sample_idx) ambiguous."""
    seen: set[str] = set()
    for req in requests:
        if not isinstance(req, SampleRequest):
            raise LetiError(f"requests must be SampleRequest objects, got {type(req).__name__}")
        if req.stop is not None:
            check_stops(req.stop, f"problem {req.problem_id!r}: stop")
        if req.problem_id in seen:
            raise LetiError(
                f"problem_id {req.problem_id!r} appears twice in the requests; ids must be unique"
            )
        seen.add(req.problem_id)
