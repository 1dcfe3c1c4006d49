"""Sampling: prompts in, programs out (see base.py for the records and the Sampler interface)."""

from leti.sampling.base import (
    Sample,
    Sampler,
    SampleRequest,
    SamplingConfig,
    get_sampler,
)
from leti.sampling.io import append_samples_jsonl, done_keys, read_samples_jsonl

__all__ = [
    "Sample",
    "SampleRequest",
    "Sampler",
    "SamplingConfig",
    "append_samples_jsonl",
    "done_keys",
    "get_sampler",
    "read_samples_jsonl",
]
