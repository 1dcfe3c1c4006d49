"""`leti evaluate --model`: draw samples for a task's problems with leti.sampling, appending
them to DIR/samples.jsonl (keyed by (problem_id, sample_idx), so an interrupted run resumes and
only draws the missing samples). Kept apart from scoring so either side can change alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from leti.errors import LetiError
from leti.sampling.vllm_config import VLLMConfig
from leti.tasks.base import Problem, Task


@dataclass(frozen=True)
class GenerationRequest:
    """Everything `leti evaluate --model` needs to sample; defaults come from the task."""

    model: str = field(metadata={"help": "hub id or local directory of a causal LM"})
    n: int = field(metadata={"help": "samples per problem"})
    temperature: float = field(metadata={"help": "sampling temperature (0 = greedy)"})
    top_p: float = field(metadata={"help": "nucleus mass"})
    max_new_tokens: int = field(metadata={"help": "generation budget per sample"})
    seed: int = field(default=0, metadata={"help": "base seed of the sampler"})
    batch_size: int = field(default=16, metadata={"help": "sequences per forward pass"})
    prompt_prefix: str = field(
        default="", metadata={"help": "text put before every prompt, e.g. '<|good|>' for LeTI checkpoints"}
    )
    device: str = field(default="auto", metadata={"help": "torch device ('auto', 'cpu', 'cuda'); hf backend"})
    backend: str = field(default="hf", metadata={"help": "sampler backend: 'hf' or 'vllm'"})
    vllm: VLLMConfig = field(default_factory=VLLMConfig, metadata={"help": "vLLM engine settings"})


def generate_samples(task: Task, problems: Sequence[Problem], req: GenerationRequest, out_path: Path) -> Path:
    """Sample `req.n` completions per problem into `out_path` (JSONL, leti sample format)."""
    try:
        from leti.model import load_model_and_tokenizer
        from leti.sampling import (
            SampleRequest,
            SamplingConfig,
            append_samples_jsonl,
            done_keys,
            get_sampler,
        )
    except ImportError as e:
        raise LetiError(f"generation needs the sampler (leti.sampling): {e}; use --samples FILE meanwhile") from None
    done = done_keys(out_path)
    if len(done) >= req.n * len(problems):
        return out_path
    if req.backend == "vllm":
        model, tokenizer = req.model, None  # vLLM loads the weights and the tokenizer itself
    else:
        model, tokenizer = load_model_and_tokenizer(req.model, device=req.device)
    config = SamplingConfig(
        n=req.n,
        temperature=req.temperature,
        top_p=req.top_p,
        max_new_tokens=req.max_new_tokens,
        seed=req.seed,
        batch_size=req.batch_size,
        backend=req.backend,
        vllm=req.vllm,
    )
    sampler = get_sampler(config, model, tokenizer)
    requests = [
        SampleRequest(problem_id=p.id, prompt=req.prompt_prefix + p.prompt, stop=task.stop_for(p))
        for p in problems
    ]
    # Appended (and flushed) as batches finish: a killed run keeps what it drew.
    append_samples_jsonl(out_path, sampler.sample(requests, skip=done))
    return out_path
