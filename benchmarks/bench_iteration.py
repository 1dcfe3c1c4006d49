"""Wall time of one LeTI iteration, stage by stage, for a run config (e.g. a GPU preset).

The GPU machine cannot reach the Hugging Face hub, so the model is built offline: a random-init
model of the named architecture (`--architecture codegen-350m` has CodeGen-350M-mono's shapes)
with a byte-level BPE tokenizer trained on this interpreter's standard library (vocabulary as
close to the real one as that corpus allows). The run covers `--problems` training and
evaluation problems of the config's task. Each stage's fixed part (model load, vLLM engine
start, the corpus and the held-out loss: `model_load_s`, `engine_startup_s` and `wall_s -
steps_s` in the run's records) is counted once, and the rest is extrapolated linearly to the
config's full splits: a sampling phase by its batches (the HF sampler fills each batch with rows
of several problems), training by its problems. Upper bound: a random model never writes a stop sequence, so every sample
runs to max_new_tokens and every training text is that long; a trained model stops earlier.

    python benchmarks/bench_iteration.py configs/mbpp-codegen-350m-1gpu.yaml --architecture codegen-350m
    python benchmarks/bench_iteration.py configs/mbpp-codegen-350m.yaml --architecture codegen-350m --set sampling.n=16
    torchrun --nproc_per_node 8 benchmarks/bench_iteration.py configs/mbpp-codegen-2b-8gpu.yaml --architecture codegen-2b
    python benchmarks/bench_iteration.py configs/tiny-cpu.yaml --architecture tiny --problems 2   # CPU smoke

This measures, it does not compare: there is no baseline to hold a ratio against.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

# Shapes of the paper's models (their config.json on the hub); vocab_size is capped by what the
# offline tokenizer reaches.
ARCHITECTURES = {
    "codegen-350m": dict(n_layer=20, n_embd=1024, n_head=16, rotary_dim=32, vocab_size=51200, n_positions=2048),
    "codegen-2b": dict(n_layer=32, n_embd=2560, n_head=32, rotary_dim=64, vocab_size=51200, n_positions=2048),
}


def _corpus() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
    # errors="replace": a few stdlib test files are not UTF-8
    return [f.read_text(encoding="utf-8", errors="replace") for f in files]


def build_model(architecture: str, out: Path) -> str:
    """A random-init model with the architecture's shapes, saved with its tokenizer under `out`."""
    from leti.testing import make_tiny_model

    if architecture == "tiny":
        return make_tiny_model(out)
    from tokenizers import ByteLevelBPETokenizer
    from transformers import CodeGenConfig, CodeGenForCausalLM, PreTrainedTokenizerFast

    shapes = dict(ARCHITECTURES[architecture])
    eos = "<|endoftext|>"
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_corpus(), vocab_size=shapes.pop("vocab_size"), min_frequency=2,
                            special_tokens=[eos], show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=eos, bos_token=eos,
                                  unk_token=eos, pad_token=eos)
    config = CodeGenConfig(vocab_size=len(tok), n_ctx=shapes["n_positions"], bos_token_id=tok.eos_token_id,
                           eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id, **shapes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        CodeGenForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def main() -> None:
    from leti.config import load_config
    from leti.loop.runner import run
    from leti.tasks.registry import get_task

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="run config (YAML)")
    p.add_argument("--architecture", default="codegen-350m", choices=[*ARCHITECTURES, "tiny"])
    p.add_argument("--problems", type=int, default=16, help="training and evaluation problems actually run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--work-dir", default=None, help="where the model and run go (default: a temp dir)")
    args = p.parse_args()
    rank = int(os.environ.get("RANK", "0"))

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="leti-bench-iter-"))
    model_dir = work / f"model-{args.architecture}"
    if rank == 0 and not (model_dir / "config.json").exists():
        build_model(args.architecture, model_dir)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Other ranks wait for rank 0's model: a file barrier, before any process group exists.
        while not (model_dir / "tokenizer.json").exists():
            time.sleep(1)
    full = load_config(args.config, args.set)
    # Offline: the standard library stands in for the paper's streamed corpus (--set can replace it).
    overrides = ["trainer.pretrain_corpus=stdlib", *args.set, f"model={model_dir}", "iterations=1", "progress=false", "keep_checkpoints=1",
                 f"max_train_problems={args.problems}", f"eval.max_problems={args.problems}"]
    cfg = load_config(args.config, overrides)
    run_dir = work / "run"
    t0 = time.time()
    run(cfg, run_dir)
    run_wall = time.time() - t0
    if rank != 0:
        return

    task = get_task(cfg.task)
    n_train = len(task.problems(full.train_split)[: full.max_train_problems])
    n_eval = len(task.problems(full.eval.split)[: full.eval.max_problems])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    it = run_dir / "iterations" / "1"
    samples_done = json.loads((it / "samples.done").read_text())
    stats = json.loads((it / "train_stats.json").read_text())
    ev = json.loads((it / "eval.json").read_text())
    ev0 = json.loads((run_dir / "iterations" / "0" / "eval.json").read_text())
    ran_train = min(args.problems, n_train)
    ran_eval = min(args.problems, n_eval)

    def units(problems: int, n: int, batch_size: int) -> int:
        """What a sampling phase's time grows with: the HF sampler's batches of batch_size rows
        (rows of several problems share a batch, and on a GPU a decode step costs about the same
        for few rows as for a full batch), each rank its share; vLLM schedules rows itself."""
        if cfg.sampling.backend != "hf":
            return problems
        return math.ceil(math.ceil(problems * n / world) / batch_size)

    def fixed(record: dict) -> float:
        return record.get("model_load_s", 0.0) + record.get("engine_startup_s", 0.0)

    # (stage, measured s, of which fixed s, what the rest grows with, measured units, full units)
    rows = [("sample + execute (train split)", samples_done["wall_s"], fixed(samples_done), "batches",
             units(ran_train, cfg.sampling.n, cfg.sampling.batch_size),
             units(n_train, cfg.sampling.n, cfg.sampling.batch_size)),
            ("train", stats["wall_s"], stats["wall_s"] - stats["steps_s"], "problems", ran_train, n_train),
            ("evaluate (eval split)", ev["wall_s"], fixed(ev), "batches",
             units(ran_eval, cfg.eval.n, cfg.eval.batch_size), units(n_eval, cfg.eval.n, cfg.eval.batch_size))]
    # Outside the stages: the run's start (task, executor, sandbox), the training stage's model
    # load and the checkpoint save; counted once, as an iteration's fixed cost (upper bound).
    outside = run_wall - ev0["wall_s"] - sum(r[1] for r in rows)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    print(f"\n{args.config} with a random-init {args.architecture} on {device} "
          f"(world size {world}); sampling.n={cfg.sampling.n}, eval.n={cfg.eval.n}, "
          f"backend {cfg.sampling.backend}; {stats['n_texts']} texts, {stats['optimizer_steps']} optimizer steps")
    print(f"{ran_train} of {n_train} train and {ran_eval} of {n_eval} eval problems run; a stage's fixed part "
          "(model load, engine start, corpus and held-out loss) counted once, the rest scaled by what it grows with")
    print(f"{'stage':34s} {'measured s':>10s} {'fixed s':>8s} {'grows with':>10s} {'measured':>9s} {'full':>6s} "
          f"{'extrapolated s':>15s}")
    total = max(outside, 0.0)
    for name, seconds, fixed_s, unit, ran, n_full in rows:
        est = fixed_s + (seconds - fixed_s) * n_full / ran
        total += est
        print(f"{name:34s} {seconds:10.1f} {fixed_s:8.1f} {unit:>10s} {ran:9d} {n_full:6d} {est:15.0f}")
    print(f"{'outside the stages (loads, save)':34s} {outside:10.1f} {outside:8.1f} {'':>10s} {'':>9s} {'':>6s} "
          f"{max(outside, 0.0):15.0f}")
    print(f"{'one iteration (upper bound)':34s} {'':10s} {'':8s} {'':>10s} {'':>9s} {'':>6s} {total:15.0f}"
          f"  (= {total / 3600:.2f} h)")

if __name__ == "__main__":
    main()
