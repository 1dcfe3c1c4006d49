"""Wall time of one LeTI iteration, stage by stage, for a run config (e.g. a GPU preset).

The GPU machine cannot reach the Hugging Face hub, so the model is built offline: a random-init
model of the named architecture (`--architecture codegen-350m` has CodeGen-350M-mono's shapes)
with a byte-level BPE tokenizer trained on this interpreter's standard library (vocabulary as
close to the real one as that corpus allows). The run covers `--problems` training and
evaluation problems of the config's task, and each stage is extrapolated linearly to the
config's full splits. Upper bound: a random model never writes a stop sequence, so every sample
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
import os
import platform
import sysconfig
import tempfile
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
        import time

        while not (model_dir / "tokenizer.json").exists():
            time.sleep(1)
    full = load_config(args.config, args.set)
    # Offline: the standard library stands in for the paper's streamed corpus (--set can replace it).
    overrides = ["trainer.pretrain_corpus=stdlib", *args.set, f"model={model_dir}", "iterations=1", "progress=false", "keep_checkpoints=1",
                 f"max_train_problems={args.problems}", f"eval.max_problems={args.problems}"]
    cfg = load_config(args.config, overrides)
    run_dir = work / "run"
    run(cfg, run_dir)
    if rank != 0:
        return

    task = get_task(cfg.task)
    n_train = len(task.problems(full.train_split)[: full.max_train_problems])
    n_eval = len(task.problems(full.eval.split)[: full.eval.max_problems])
    it = run_dir / "iterations" / "1"

    def wall(path: Path) -> float:
        return json.loads(path.read_text())["wall_s"]

    stats = json.loads((it / "train_stats.json").read_text())
    ran_train = min(args.problems, n_train)
    ran_eval = min(args.problems, n_eval)
    rows = [("sample + execute (train split)", wall(it / "samples.done"), ran_train, n_train),
            ("train", wall(it / "train_stats.json"), ran_train, n_train),
            ("evaluate (eval split)", wall(it / "eval.json"), ran_eval, n_eval)]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    print(f"\n{args.config} with a random-init {args.architecture} on {device} "
          f"(world size {os.environ.get('WORLD_SIZE', '1')}); sampling.n={cfg.sampling.n}, eval.n={cfg.eval.n}, "
          f"backend {cfg.sampling.backend}; {stats['n_texts']} texts, {stats['optimizer_steps']} optimizer steps")
    print(f"{'stage':34s} {'measured s':>10s} {'problems':>9s} {'full split':>10s} {'extrapolated s':>15s}")
    total = 0.0
    for name, seconds, ran, n_full in rows:
        est = seconds * n_full / ran
        total += est
        print(f"{name:34s} {seconds:10.1f} {ran:9d} {n_full:10d} {est:15.0f}")
    print(f"{'one iteration (upper bound)':34s} {'':10s} {'':9s} {'':10s} {total:15.0f}  (= {total / 3600:.2f} h)")


if __name__ == "__main__":
    main()
