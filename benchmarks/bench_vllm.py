"""Throughput of the vLLM sampler backend vs the HF sampler on the same model and prompts.

GPU only (vLLM needs CUDA). Both backends sample the same prompts x n samples with the same
temperature, top_p and max_new_tokens, no stop sequences, and count generated tokens (up to
eos); the vLLM side includes its engine start-up, as it does in `leti run`, and the time
without it is printed too.

    python benchmarks/bench_vllm.py --model Salesforce/codegen-350M-mono [--n-prompts 32 --n 16]
    python benchmarks/bench_vllm.py            # a tiny offline GPT-2 (leti.testing), no hub
"""

from __future__ import annotations

import argparse
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
    p.add_argument("--n-prompts", type=int, default=32, help="MBPP train prompts")
    p.add_argument("--n", type=int, default=16, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--hf-batch-size", type=int, default=64)
    p.add_argument("--vllm-model-impl", default="auto", choices=["auto", "vllm", "transformers"])
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_vllm needs a CUDA GPU (vLLM does not run on CPU here)")
    path = args.model or make_tiny_model(tempfile.mkdtemp(), n_layer=6, n_embd=384)
    problems = get_task("mbpp").problems("train")[: args.n_prompts]
    requests = [SampleRequest(p.id, p.prompt) for p in problems]
    common = dict(n=args.n, temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=0)

    model, tok = load_model_and_tokenizer(path, dtype="auto", device="cuda")
    hf_tokens, hf_s = _timed(get_sampler(SamplingConfig(**common, batch_size=args.hf_batch_size), model, tok), requests)
    del model
    torch.cuda.empty_cache()

    vcfg = SamplingConfig(**common, backend="vllm", vllm=VLLMConfig(model_impl=args.vllm_model_impl))
    sampler = get_sampler(vcfg, path, tok)
    start = time.perf_counter()
    llm, _ = sampler._start_engine()  # start-up measured on its own, then shut down again
    startup_s = time.perf_counter() - start
    from leti.sampling.vllm import shutdown_engine

    shutdown_engine(llm)
    v_tokens, v_s = _timed(sampler, requests)

    print(f"GPU: {torch.cuda.get_device_name()}  model: {path}  {len(requests)} prompts x {args.n} samples, "
          f"max_new_tokens {args.max_new_tokens}, T={args.temperature}")
    print(f"HF sampler:   {hf_tokens} tokens in {hf_s:.1f} s = {hf_tokens / hf_s:.0f} tok/s (batch {args.hf_batch_size})")
    print(f"vLLM sampler: {v_tokens} tokens in {v_s:.1f} s = {v_tokens / v_s:.0f} tok/s "
          f"(engine start-up {startup_s:.1f} s; without it {v_tokens / max(v_s - startup_s, 1e-9):.0f} tok/s)")
    print(f"ratio vLLM / HF (tokens/s, start-up included): {(v_tokens / v_s) / (hf_tokens / hf_s):.1f}x")


if __name__ == "__main__":
    main()
