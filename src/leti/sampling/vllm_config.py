"""Engine settings of the vLLM sampler backend (`sampling.vllm` in a run config).

Plain data without a vLLM import, so configs that name them load (and are validated) on machines
without vLLM or a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from leti.errors import LetiError


@dataclass(frozen=True)
class VLLMConfig:
    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs one vLLM engine spans (tensor parallel)."})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "Fraction of GPU memory vLLM may take (weights + KV cache; on vLLM's CPU build, of RAM: use about 0.2 there); one engine serves the evaluation of a checkpoint and the next iteration's sampling, and is shut down before training, which gets the memory back."})
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = field(default="auto", metadata={"help": "Inference dtype ('auto': vLLM's choice, bf16/fp16 for an fp32 checkpoint)."})
    enforce_eager: bool = field(default=False, metadata={"help": "Skip CUDA-graph capture: faster engine start, slower decoding (an engine starts once per checkpoint)."})
    max_model_len: int | None = field(default=None, metadata={"help": "Context length (None: the model's)."})
    chunk_size: int = field(default=1024, metadata={"help": "Sequences per generate call; samples are yielded (and executed) chunk by chunk."})
    model_impl: Literal["auto", "vllm", "transformers"] = field(default="auto", metadata={"help": "vLLM model implementation; 'transformers' runs architectures vLLM has no native kernel for."})

    def __post_init__(self) -> None:
        for name in ("tensor_parallel_size", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LetiError(f"sampling.vllm.{name}={value!r} must be an integer >= 1")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise LetiError(
                f"sampling.vllm.gpu_memory_utilization={self.gpu_memory_utilization!r} must be in (0, 1]"
            )
        if self.max_model_len is not None and self.max_model_len < 1:
            raise LetiError(f"sampling.vllm.max_model_len={self.max_model_len!r} must be >= 1 or null")
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise LetiError(
                f"sampling.vllm.dtype={self.dtype!r} is invalid; use auto, bfloat16, float16 or float32"
            )
        if self.model_impl not in ("auto", "vllm", "transformers"):
            raise LetiError(
                f"sampling.vllm.model_impl={self.model_impl!r} is invalid; use auto, vllm or transformers"
            )

    def starts_the_same_engine_as(self, other: VLLMConfig) -> bool:
        """Whether an engine started with `other` serves these settings: all but chunk_size, which
        is how the sampler feeds the engine, not how the engine is built."""
        return replace(self, chunk_size=other.chunk_size) == other
