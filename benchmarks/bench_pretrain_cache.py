"""The pretraining stream read uncached (the corpus re-read and re-tokenized every pass) against
the on-disk token cache (tokenized once, memory-mapped after), in one process.

A "pass" is what one training epoch does with the default pretrain_restart_every_epoch: a fresh
`pretrain_batches` stream, here consumed to the end of the corpus (every full batch of one pass).
The cached side's first call builds the cache; it is timed separately from the passes that read
it. Both sides' batches are hashed and must be identical. Last, the cached stream of the authors'
90/10 split (trainer.pretrain_heldout_fraction 0.1: the training files in the split's order) is
timed per batch against the whole corpus's.

Tokenizer: a byte-level BPE with a real-sized vocabulary (--vocab-size, default 32768, trained on
this Python's whole standard library with leti.testing's trainer; no tokenizer ships offline), or
--tokenizer DIR for any tokenizer saved on disk.

    python benchmarks/bench_pretrain_cache.py            # --files 300 --passes 3 --block 2048 --batch 8
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path


def run_passes(make_stream, batches_per_pass: int, passes: int) -> tuple[list[float], list[float], str]:
    """Wall and CPU seconds of each pass (a fresh stream each), and a hash of every batch."""
    h = hashlib.sha256()
    walls, cpus = [], []
    for _ in range(passes):
        w, c = time.perf_counter(), time.process_time()
        stream = make_stream()
        for _ in range(batches_per_pass):
            batch = next(stream)
            for name in ("input_ids", "attention_mask", "labels"):
                h.update(batch[name].numpy().tobytes())
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return walls, cpus, h.hexdigest()


def utf8(path: Path) -> bool:
    try:
        path.read_text(encoding="utf-8")
        return True
    except UnicodeDecodeError:
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=300, help="stdlib files in the corpus")
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--block", type=int, default=2048)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab-size", type=int, default=32768)
    p.add_argument("--tokenizer", help="a saved tokenizer directory instead of the trained BPE")
    p.add_argument("--separator", action="store_true", help="EOS between documents (default: none, as the authors)")
    args = p.parse_args()
    import numpy as np

    from leti.training.data import PackingStats, pretrain_batches, split_documents, stdlib_files

    if args.tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        from leti.testing import make_tiny_tokenizer

        tok = make_tiny_tokenizer(args.vocab_size, corpus_files=[f for f in stdlib_files(100_000) if utf8(f)])
    files = stdlib_files(args.files)
    size_mb = sum(f.stat().st_size for f in files) / 1e6

    def stream(cache_dir=None, heldout_fraction=0.0):
        return pretrain_batches(tok, "stdlib", args.block, args.batch, args.files, PackingStats(),
                                separator=args.separator, cache_dir=cache_dir, heldout_fraction=heldout_fraction)

    with tempfile.TemporaryDirectory() as cache:
        w, c = time.perf_counter(), time.process_time()
        next(stream(cache))  # builds the cache (and cuts one batch)
        build_wall, build_cpu = time.perf_counter() - w, time.process_time() - c
        [entry] = [e for e in Path(cache).iterdir() if e.is_dir() and not e.name.startswith(".")]
        meta = json.loads((entry / "meta.json").read_text())
        n_batches = meta["n_tokens"] // args.block // args.batch
        print(f"corpus: {len(files)} stdlib files, {size_mb:.1f} MB; tokenizer: {type(tok).__name__}, "
              f"vocab {len(tok)}; {meta['n_tokens']:,} tokens ({meta['dtype']}, "
              f"{(entry / 'tokens.bin').stat().st_size / 1e6:.1f} MB on disk); {n_batches} batches of "
              f"{args.batch} x {args.block} per pass; {args.passes} passes")
        old_w, old_c, old_hash = run_passes(stream, n_batches, args.passes)
        new_w, new_c, new_hash = run_passes(lambda: stream(cache), n_batches, args.passes)
        # the authors' 90/10 split (trainer.pretrain_heldout_fraction): the training files in the
        # split's order, read from the same cache entry; fewer batches per pass (the held-out 10%)
        lengths = np.diff(np.fromfile(entry / "offsets.bin", dtype="<i8"))
        split_batches = int(lengths[split_documents(len(lengths), 0.1, 42)[0]].sum()) // args.block // args.batch
        split_w, split_c, _ = run_passes(lambda: stream(cache, 0.1), split_batches, args.passes)

    def row(label, wall, cpu):
        print(f"  {label:<34} {wall:9.3f} {cpu:9.3f}")

    print(f"  {'':<34} {'wall s':>9} {'CPU s':>9}")
    row("uncached, per pass (median)", sorted(old_w)[len(old_w) // 2], sorted(old_c)[len(old_c) // 2])
    row("cache build (first call, once)", build_wall, build_cpu)
    row("cached, per pass (median)", sorted(new_w)[len(new_w) // 2], sorted(new_c)[len(new_c) // 2])
    row(f"uncached, {args.passes} passes", sum(old_w), sum(old_c))
    row(f"cached, build + {args.passes} passes", build_wall + sum(new_w), build_cpu + sum(new_c))
    print(f"cached, split 90/10 vs whole corpus, per batch: "
          f"{(sum(split_w) / split_batches) / (sum(new_w) / n_batches):.2f}x wall, "
          f"{(sum(split_c) / split_batches) / max(sum(new_c) / n_batches, 1e-9):.2f}x CPU "
          f"({split_batches} of {n_batches} batches per pass: the held-out 10% of the files are not in it)")
    print(f"per pass: {sum(old_w) / sum(new_w):.0f}x wall, {sum(old_c) / max(sum(new_c), 1e-9):.0f}x CPU; "
          f"{args.passes} passes incl. the build: {sum(old_w) / (build_wall + sum(new_w)):.2f}x wall, "
          f"{sum(old_c) / (build_cpu + sum(new_c)):.2f}x CPU; identical batches: {old_hash == new_hash}")


if __name__ == "__main__":
    main()
