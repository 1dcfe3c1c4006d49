"""`leti evaluate --model`: draw samples for a task's problems with leti.sampling, appending
them to DIR/samples.jsonl (keyed by (problem_id, sample_idx), so an interrupted run resumes and
only draws the missing samples). Kept apart from scoring so either side can change alone."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from leti.errors import LetiError
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
    device: str = field(default="auto", metadata={"help": "torch device ('auto', 'cpu', 'cuda')"})


def _existing_keys(path: Path) -> set[tuple[str, int]]:
    """Keys already in the samples file; a line cut short by a kill is removed so it is redrawn."""
    if not path.exists():
        return set()
    raw = path.read_bytes()
    keep = raw if raw.endswith(b"\n") or not raw else raw[: raw.rfind(b"\n") + 1]
    if len(keep) < len(raw):
        with open(path, "r+b") as f:
            f.truncate(len(keep))
    keys = set()
    for lineno, line in enumerate(keep.decode("utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rec = json.loads(line)
                keys.add((str(rec["problem_id"]), int(rec["sample_idx"])))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise LetiError(f"{path}:{lineno}: not a leti sample line; use a new --out") from None
    return keys


def generate_samples(task: Task, problems: Sequence[Problem], req: GenerationRequest, out_path: Path) -> Path:
    """Sample `req.n` completions per problem into `out_path` (JSONL, leti sample format)."""
    try:
        from leti.model import load_model_and_tokenizer
        from leti.sampling.base import SampleRequest, SamplingConfig, get_sampler
    except ImportError as e:
        raise LetiError(f"generation needs the sampler (leti.sampling): {e}; use --samples FILE meanwhile") from None
    # One stop set per run: the task's (per-problem stops of JSONL tasks apply to the task's
    # validation only, since the sampler takes a single list).
    config = SamplingConfig(
        n=req.n,
        temperature=req.temperature,
        top_p=req.top_p,
        max_new_tokens=req.max_new_tokens,
        stop=tuple(task.stop_sequences),
        seed=req.seed,
        batch_size=req.batch_size,
    )
    done = _existing_keys(out_path)
    if len(done) >= req.n * len(problems):
        return out_path
    model, tokenizer = load_model_and_tokenizer(req.model, device=req.device)
    sampler = get_sampler(config, model, tokenizer)
    requests = [SampleRequest(problem_id=p.id, prompt=req.prompt_prefix + p.prompt) for p in problems]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "a", encoding="utf-8") as f:
        for s in sampler.sample(requests, skip=done):
            rec = {
                "problem_id": s.problem_id,
                "sample_idx": s.sample_idx,
                "completion": s.completion,
                "prompt": s.prompt,
                "finish_reason": s.finish_reason,
            }
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
    return out_path
