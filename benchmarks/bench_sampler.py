"""Throughput of HFSampler (batched, many prompts x n) vs a naive one-sample-at-a-time loop.

Both generate from the same offline GPT-2-style model (~12M parameters, built by
leti.testing.make_tiny_model) for the same prompts, samples per prompt and max_new_tokens,
with no stop sequences, so the work is the same; tokens/s counts generated tokens.

    python benchmarks/bench_sampler.py [--n-prompts 8 --n 4 --max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from leti.model import load_model_and_tokenizer
from leti.sampling import SampleRequest, SamplingConfig, get_sampler
from leti.testing import make_tiny_model

PROMPTS = [
    "def add(a, b):\n",
    'def is_palindrome(s):\n    """Return True if s reads the same backwards."""\n',
    "import os\n\ndef list_python_files(root):\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n",
    '"""\nWrite a function to find the shared elements from the given two lists.\n'
    'assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n"""\n',
    "def fib(n):\n    if n < 2:\n        return n\n",
    "for i in range(10):\n",
    "def wrap(text, width=70):\n    lines = []\n",
]


def naive_loop(model, tokenizer, prompts: list[str], n: int, max_new_tokens: int) -> int:
    """One prompt, one sample per generate call; returns generated tokens (up to eos)."""
    total = 0
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").to(model.device)
        for _ in range(n):
            out = model.generate(
                **ids, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
            )
            new = out[0, ids.input_ids.shape[1] :].tolist()
            eos = tokenizer.eos_token_id
            total += new.index(eos) if eos in new else len(new)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)),
        help="torch CPU threads (default: every core); 1 avoids OpenMP spin-waiting on a shared, busy CPU",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prompts = (PROMPTS * (args.n_prompts // len(PROMPTS) + 1))[: args.n_prompts]

    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny_model(tmp, vocab_size=4096, n_layer=6, n_embd=384, n_positions=1024)
        model, tokenizer = load_model_and_tokenizer(path, device="auto")
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {n_params / 1e6:.1f}M params, device {model.device}, "
        f"{torch.get_num_threads()} torch threads, load avg {os.getloadavg()[0]:.1f}"
    )
    print(f"work: {len(prompts)} prompts x {args.n} samples x {args.max_new_tokens} new tokens")

    config = SamplingConfig(
        n=args.n, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
    )
    sampler = get_sampler(config, model, tokenizer)
    requests = [SampleRequest(f"p{i}", p) for i, p in enumerate(prompts)]
    with torch.inference_mode():
        list(sampler.sample(requests[:1], n=1))  # warm-up (allocator, kernels)
        start = time.perf_counter()
        batched_tokens = sum(s.n_completion_tokens for s in sampler.sample(requests))
        batched_s = time.perf_counter() - start

        start = time.perf_counter()
        naive_tokens = naive_loop(model, tokenizer, prompts, args.n, args.max_new_tokens)
        naive_s = time.perf_counter() - start

    batched_rate, naive_rate = batched_tokens / batched_s, naive_tokens / naive_s
    print(f"naive loop : {naive_tokens:6d} tokens in {naive_s:7.2f} s = {naive_rate:8.1f} tok/s")
    print(
        f"HFSampler  : {batched_tokens:6d} tokens in {batched_s:7.2f} s = {batched_rate:8.1f} "
        f"tok/s (batch_size {args.batch_size})"
    )
    print(f"speedup    : {batched_rate / naive_rate:.1f}x")


if __name__ == "__main__":
    main()
