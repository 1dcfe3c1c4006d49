"""What holds the accelerator's memory between stages of the loop, on every rank.

One thing at a time: the HF model (to train, or to sample with the hf backend) or a vLLM
engine (the vllm backend), with the checkpoint it came from. Consecutive stages on the same
weights reuse it instead of loading it again: training k then evaluating k (HF), evaluating k
then sampling k + 1 (HF model or vLLM engine). Asking for the other kind frees the first, so
training never shares the GPU with an engine.
"""

from __future__ import annotations

import gc
from typing import Any

from leti.sampling.base import SamplingConfig


class ModelSlot:
    def __init__(self, dtype: str, device: str, trust_remote_code: bool = False, revision: str | None = None) -> None:
        self.dtype, self.device = dtype, device
        # The run's trust_remote_code: every checkpoint of a run is the same model family, so
        # the configured model's setting holds for its checkpoints too.
        self.trust_remote_code = trust_remote_code
        # The commit the run's hub model is pinned to: for the hub id itself and for the base
        # that the run's adapter checkpoints name; local checkpoints load as they are.
        self.revision = revision
        self.source: str | None = None  # checkpoint that `model` or `engine` holds
        self.model: Any = None
        self.tokenizer: Any = None
        self.engine: Any = None  # leti.sampling.vllm.VLLMEngine

    def get(self, source: str) -> tuple[Any, Any]:
        """The HF model and tokenizer of `source`, loaded unless already held."""
        if self.source != source or self.model is None:
            from leti.model import load_model_and_tokenizer

            self.release()  # free the old weights (or engine) before loading
            self.model, self.tokenizer = load_model_and_tokenizer(
                source, dtype=self.dtype, device=self.device, trust_remote_code=self.trust_remote_code,
                revision=self.revision)
            self.source = source
        return self.model, self.tokenizer

    def for_sampling(self, source: str, sampling: SamplingConfig) -> tuple[Any, Any]:
        """(model, tokenizer) for `get_sampler`: for the vllm backend an engine on `source`,
        which the slot keeps (and closes) rather than the sampler."""
        if sampling.backend != "vllm":
            return self.get(source)
        if self.source != source or self.engine is None or not sampling.vllm.starts_the_same_engine_as(self.engine.settings):
            from leti.sampling.vllm import VLLMEngine

            self.release()
            self.engine = VLLMEngine(sampling, source, trust_remote_code=self.trust_remote_code, revision=self.revision)
            self.source = source
        return self.engine, None

    def set(self, source: str, model: Any, tokenizer: Any) -> None:
        """Hold a model made elsewhere (the trainer's output, saved as `source`)."""
        if model is not self.model or self.engine is not None:  # trained in place: nothing to free
            self.release()
        self.source, self.model, self.tokenizer = source, model, tokenizer

    def forget_source(self) -> None:
        """The held weights are being changed in place (training): never reuse them as `source`."""
        self.source = None

    def release(self) -> None:
        """Drop whatever is held and give its memory back."""
        if self.engine is not None:
            self.engine.close()
        if self.model is None and self.engine is None:
            return
        self.source = self.model = self.tokenizer = self.engine = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
