"""LeTI micro-batches cut from each optimiser step's texts sorted by length, against the same
steps cut in text order: padding, and the training compute of one pass, in one process.

Texts: the MBPP train split's prompts, 16 samples each (the paper's 128 texts per step are one
problem's 128 samples; 16 here keep the CPU pass short, so a step of 8 x 16 holds 8 problems'
samples), each sample the problem's reference solution with a random tail of other solutions'
lines, 0 to 40 of them (a model that keeps writing after the function), cut at 512 tokens. The
lengths are synthetic, the token counts real (the GPT-2 tokenizer leti's tests train offline).
Both sides train a random-init 2-layer GPT-2 on the same steps (8 texts x 16 micro-batches), so
the time ratio is the padding's cost in training compute on this CPU.

    python benchmarks/bench_step_sorting.py            # --repeat 3 --problems 64
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--problems", type=int, default=64)
    args = p.parse_args()

    import torch

    from leti.model import load_model_and_tokenizer
    from leti.tasks.registry import get_task
    from leti.testing import make_tiny_model
    from leti.training.batching import StepSortedBatches
    from leti.training.data import PadCollator, tokenize_texts

    torch.set_num_threads(1)
    problems = get_task("mbpp").problems("train")[: args.problems]
    rng = random.Random(0)
    lines = [line for q in problems for line in q.reference.splitlines()]
    texts = [q.prompt + q.reference + "\n".join(rng.choices(lines, k=rng.randint(0, 40)))
             for q in problems for _ in range(16)]
    with tempfile.TemporaryDirectory() as tmp:
        model, tok = load_model_and_tokenizer(make_tiny_model(tmp, n_positions=1024), dtype="float32", device="cpu")
    examples = tokenize_texts(tok, texts, 512).examples
    lengths = [len(e) for e in examples]
    collate = PadCollator(tok.pad_token_id)
    plain = [list(range(s, min(s + 8, len(examples)))) for s in range(0, len(examples), 8)]
    sorted_ = list(StepSortedBatches(lengths, 8, 16, range(len(examples))))

    def efficiency(batches: list[list[int]]) -> float:
        return sum(lengths) / sum(len(b) * max(lengths[i] for i in b) for b in batches)

    def one_pass(batches: list[list[int]]) -> float:
        c = time.process_time()
        for b in batches:
            batch = collate([examples[i] for i in b])
            model(**batch).loss.backward()
        model.zero_grad()
        return time.process_time() - c

    times = {"in order": [], "sorted": []}
    for _ in range(args.repeat):  # alternated, so that drifting load hits both
        times["in order"].append(one_pass(plain))
        times["sorted"].append(one_pass(sorted_))
    old, new = statistics.median(times["in order"]), statistics.median(times["sorted"])
    print(f"{len(texts)} texts, {sum(lengths)} tokens, {len(plain)} micro-batches of 8, 16 per step")
    print(f"non-pad share of token slots: in order {efficiency(plain):.1%}, sorted in each step {efficiency(sorted_):.1%}")
    print(f"forward + backward CPU s (median of {args.repeat}): in order {old:.2f}, sorted {new:.2f}, ratio {old / new:.2f}x")


if __name__ == "__main__":
    main()
