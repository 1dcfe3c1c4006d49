"""`leti run` and `leti sft`: iterations over the run directory (layout in rundir.py).

Iteration k >= 1: sample the train split (with the `<|good|>` prefix from k = 2) -> execute
(overlapped) -> training texts -> train -> checkpoint -> evaluate. Iteration 0 evaluates the
untrained model. Every stage is skipped when its file exists, so rerunning resumes.

Conditioning on `<|good|>` follows one rule: a model that has been trained on reward tokens is
prompted with `<|good|>` (sampling from iteration 2, evaluation from iteration 1, i.e. every
evaluation of a trained LeTI model; spec: "generation at test time is conditioned on <|good|>").
The base model (iteration 0), SFT models and runs with `training_text.reward_token: false` never
trained on the token and get the plain prompt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import yaml

from leti.config import (
    BEHAVIOUR_BEFORE_FIELD,
    RESUMABLE_CHANGES,
    DuplicateKeyError,
    RunConfig,
    config_to_dict,
    dump_config,
    flatten_config,
    load_yaml_text,
    yaml_value,
)
from leti.errors import LetiError, plural
from leti.execution.ray_pool import make_executor
from leti.loop import stages
from leti.loop.distributed import DataParallelSampler, Group, TrainJob, check_launch, follow
from leti.loop.rundir import (
    RunDir,
    read_json,
    read_sample_records,
    replace_dir_atomic,
    write_json_atomic,
    write_text_atomic,
)
from leti.loop.slot import ModelSlot
from leti.sampling.base import Sampler, SamplingConfig, get_sampler
from leti.tasks.base import Task
from leti.tasks.registry import get_task

Mode = Literal["leti", "sft"]

# What the loop reads back from a train_stats.json (a damaged one is an error naming it).
_TRAIN_KEYS = ("optimizer_steps", "loss_mean", "wall_s")



def _started_config(rd: RunDir) -> dict:
    """The config.yaml a run directory was started with, as a mapping."""
    fix = "restore it (it is the config the run started with) or use a new --run-dir"
    try:
        old = load_yaml_text(rd.config_path.read_text(encoding="utf-8"))
    except DuplicateKeyError as e:  # safe_load keeps the last, and the refusal would quote only it
        raise LetiError(f"{rd.config_path}: damaged, {e}; {fix}") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise LetiError(f"{rd.config_path}: damaged, not valid YAML; {fix}") from None
    if not isinstance(old, dict):
        raise LetiError(f"{rd.config_path}: damaged, not a mapping of fields; {fix}")
    return old


def _arg(key: str, value: object) -> str:
    """`key=value` as one shell word (a list's "[1, 2]" quoted), to paste after --set."""
    return shlex.quote(f"{key}={yaml_value(value)}")


def _same_directory(a: object, b: object) -> bool:
    """Two spellings of one local directory (./runs/m and runs/m, or an absolute path)."""
    return (isinstance(a, str) and isinstance(b, str) and os.path.isdir(a) and os.path.isdir(b)
            and os.path.samefile(a, b))


def _check_unchanged(rd: RunDir, cfg: RunConfig, mode: Mode = "leti") -> None:
    """A resumed run's config may differ from the one it started with only in RESUMABLE_CHANGES.
    One difference is named with the --set that undoes it; several, with the config to resume with."""
    old = flatten_config(_started_config(rd))
    new = flatten_config(config_to_dict(cfg))
    defaults = flatten_config(config_to_dict(RunConfig()))
    refusals: list[tuple[str, str]] = []  # (field, the refusal if it were the only one)
    for key in sorted(set(old) | set(new)):
        if key in RESUMABLE_CHANGES:
            continue
        if key not in old:  # a field added to leti after the run started: fine while it does what the run did
            before = BEHAVIOUR_BEFORE_FIELD.get(key, defaults.get(key))
            if new.get(key) != before:
                refusals.append((key, f"{rd.config_path}: field '{key}' did not exist when the run started, which ran as "
                                      f"{key}={yaml_value(before)}; resume with --set {_arg(key, before)} or use a new --run-dir"))
        elif old.get(key) != new.get(key) and not _same_directory(old.get(key), new.get(key)):
            # a default leti changed since the run started reads the same: the --set says what to do
            refusals.append((key, f"{rd.config_path}: field '{key}' was {old.get(key)!r} when the run started, now "
                                  f"{new.get(key)!r}; resume with the same config (--set {_arg(key, old.get(key))}) "
                                  "or use a new --run-dir"))
    if len(refusals) == 1:
        raise LetiError(refusals[0][1])
    if refusals:
        keys = [k for k, _ in refusals]
        named = ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")
        raise LetiError(f"{rd.config_path}: {len(keys)} fields differ from the config the run started with ({named}); "
                        f"resume with that config (leti {'run' if mode == 'leti' else 'sft'} {shlex.quote(str(rd.config_path))} --run-dir "
                        f"{shlex.quote(str(rd.root))}) or use a new --run-dir")


def _prepare(rd: RunDir, cfg: RunConfig, mode: Mode) -> bool:
    """Write config.yaml + run.json on a new run; on resume check nothing that matters changed.
    A run that stopped before producing anything (e.g. a wrong task name) starts afresh with
    the new config. Returns whether this resumes earlier work."""
    resuming = rd.config_path.exists() and rd.has_output()
    if resuming:
        info = read_json(rd.root / "run.json", required=("mode",)) if (rd.root / "run.json").exists() else {"mode": mode}
        if info.get("mode") != mode:
            raise LetiError(f"{rd.root}: this run directory holds a '{info.get('mode')}' run, not '{mode}'; use another --run-dir")
        _check_unchanged(rd, cfg, mode)
        # config.yaml takes the resumable changes only once the run does work with them (_lead)
    else:
        _check_fresh(rd)
        write_json_atomic(rd.root / "run.json", {"mode": mode, "created": datetime.now(timezone.utc).isoformat()})
        write_text_atomic(rd.config_path, dump_config(cfg))
    return resuming


def _check_fresh(rd: RunDir) -> None:
    """A new run writes config.yaml and run.json: never over files of something else (a
    config.yaml of the user's own, with --run-dir .), nor into the output of a run whose
    config.yaml is gone (its samples would be reused under another config)."""
    if (rd.root / "run.json").exists():
        if rd.has_output():
            raise LetiError(f"{rd.config_path}: missing, but {rd.root} holds a run's output; restore it or use a new --run-dir")
        return  # a leti run that stopped before writing anything: it starts afresh
    # iterations/ may hold stages shared before the run starts (the demo's arms)
    foreign = sorted(p.name for p in rd.root.iterdir() if p.name not in (".lock", "iterations"))
    if foreign:
        raise LetiError(f"{rd.root}: not empty and not a leti run directory (it holds '{foreign[0]}'); "
                        "pass a new or empty --run-dir")


def _sampling(cfg: RunConfig, task, seed: int, evaluation: bool) -> SamplingConfig:
    s = cfg.eval if evaluation else cfg.sampling
    backend = cfg.sampling.backend
    return SamplingConfig(n=s.n, temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                          stop=tuple(task.stop_sequences), seed=seed, batch_size=s.batch_size, backend=backend,
                          vllm=cfg.sampling.vllm)


def _phase_info(sampler: Sampler) -> dict:
    """For samples.done / eval.json: how many programs each rank generated (data-parallel
    phases) and how long this process's vLLM engine took to start (0: kept from the last phase)."""
    info = {"sampled_by_rank": sampler.sampled} if isinstance(sampler, DataParallelSampler) else {}
    local = sampler.local if isinstance(sampler, DataParallelSampler) else sampler
    startup = getattr(local, "startup_s", None)
    if startup is not None:
        info["engine_startup_s"] = round(startup, 2)
    return info


def _check_eos_token(cfg: RunConfig) -> None:
    """training_text.append_eos needs the tokenizer's end-of-text token: refuse a tokenizer
    without one before the first sampling phase, not when the training texts are built."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
    except Exception:  # noqa: BLE001 - an unloadable model is reported, in one line, by its loader
        return
    if not tok.eos_token:
        raise LetiError(f"training_text.append_eos is true but the tokenizer of {cfg.model!r} has no eos_token; "
                        "set training_text.append_eos: false, or give the tokenizer an eos_token")


def _check_problems_unchanged(rd: RunDir, mode: Mode, task: str, problems: list) -> None:
    """The config names the task, not its contents: an edited task file under a resumed run
    would mix samples of the old problems with the new ones. run.json keeps a digest of the
    problems the run started with (runs from before it get one now)."""
    text = json.dumps([[p.id, p.split, p.prompt, p.tests, p.reference, p.meta.get("stop")] for p in problems])
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    path = rd.root / "run.json"
    info = read_json(path, required=("mode",)) if path.exists() else {"mode": mode}
    if info.get("problems_sha256") not in (None, digest):
        raise LetiError(f"task '{task}': its problems (ids, prompts, tests or references) changed since the run in "
                        f"{rd.root} started (an edited task file, or another leti's prompts); restore them or use a "
                        "new --run-dir")
    if info.get("problems_sha256") is None:
        write_json_atomic(path, {**info, "problems_sha256": digest})


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def _check_disk(where: Path, k: int, model, cfg: RunConfig, carry: bool) -> None:
    """Before a training stage: room for the checkpoint it will write (weights, and AdamW's two
    moments per trained weight when they are carried). Full at the end, the stage's training is
    lost; refused now, the stage's samples stay and the run resumes once there is room."""
    if cfg.trainer.lora.enabled and cfg.trainer.lora.save == "adapter":
        return  # adapters: megabytes
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    moments = 2 * weights if carry else 0  # every weight trains (adapters returned above)
    need = int((weights + moments) * 1.05)  # + tokenizer, config, stats
    free = shutil.disk_usage(where).free
    if free < need:
        what = "weights and AdamW state" if carry else "weights"
        raise LetiError(f"{where.parent}: {_gb(free)} free on its disk, but iteration {k}'s checkpoint needs about "
                        f"{_gb(need)} ({what}); make room (keep_checkpoints keeps only the newest checkpoints) and run "
                        "the same command again: this iteration's samples are kept")


def carries_optimizer(cfg: RunConfig, mode: Mode) -> bool:
    """Whether training stages go on from the previous iteration's AdamW state: LeTI runs with
    trainer.carry_optimizer_state (an SFT run trains once). Refuses LoRA adapters that are merged,
    and so start new, every iteration."""
    t = cfg.trainer
    if mode != "leti" or not t.carry_optimizer_state:
        return False
    if t.lora.enabled and t.lora.save == "merged":
        raise LetiError("trainer.carry_optimizer_state: with trainer.lora.save 'merged' every iteration trains new "
                        "adapters, so there is no AdamW state to go on with; set trainer.lora.save: adapter (the same "
                        "adapters train on) or trainer.carry_optimizer_state: false")
    return True


def _check_optimizer_state(rd: RunDir, todo: int) -> None:
    """Before a resumed run samples anything: the iteration it goes on with trains from the AdamW
    state saved with the checkpoint before it, unless that training is already done."""
    from leti.training.trainer import OPTIMIZER_FILE

    if todo < 2 or rd.train_stats(todo).exists() or rd.checkpoint_stats(todo).exists():
        return
    path = rd.checkpoint(todo - 1) / OPTIMIZER_FILE
    if rd.checkpoint(todo - 1).is_dir() and not path.is_file():
        raise LetiError(f"{path}: missing; iteration {todo} trains on from the AdamW state iteration {todo - 1} saved "
                        "there (trainer.carry_optimizer_state); restore it, or start the run again with a new --run-dir")


@contextmanager
def _library_progress(enabled: bool) -> Iterator[None]:
    """`progress: false` quiets the bars transformers and huggingface_hub draw too (loading and
    writing weights), not only leti's; restored afterwards."""
    if enabled:
        yield
        return
    import huggingface_hub.utils as hub
    from transformers.utils import logging as hf_logging

    tf_on, hub_off = hf_logging.is_progress_bar_enabled(), hub.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    hub.disable_progress_bars()
    try:
        yield
    finally:
        if tf_on:
            hf_logging.enable_progress_bar()
        if not hub_off:
            hub.enable_progress_bars()


def run(cfg: RunConfig, run_dir: str | Path, mode: Mode = "leti") -> int:
    """Run (or resume) a LeTI or SFT run in `run_dir`. Returns the process exit code. Under
    `accelerate launch` only rank 0 runs the loop; the other ranks join training (distributed.py)."""
    with _library_progress(cfg.progress):
        return _run(cfg, run_dir, mode)


def _run(cfg: RunConfig, run_dir: str | Path, mode: Mode) -> int:
    group = Group(cfg.device)
    try:
        check_launch(cfg, group, carries_optimizer(cfg, mode))
        if not group.is_leader:
            return follow(cfg, group)
        try:
            return _lead(cfg, run_dir, mode, group)
        finally:
            if not group.broken:  # release the followers, also when the leader failed
                group.broadcast(None)
    finally:
        group.close()


def _problems(cfg: RunConfig, mode: Mode) -> tuple[Task, list, list]:
    """(task, train problems, eval problems) of a run; a task that cannot give them is one error,
    before the run directory is written."""
    task = get_task(cfg.task)
    train_problems = task.problems(cfg.train_split)[: cfg.max_train_problems]
    eval_problems = task.problems(cfg.eval.split)[: cfg.eval.max_problems]
    for split, probs in ((cfg.train_split, train_problems), (cfg.eval.split, eval_problems)):
        if not probs:
            raise LetiError(f"task '{cfg.task}' has no problems in split '{split}' (splits: {', '.join(task.splits())}); set train_split / eval.split")
    if mode == "sft" and not any(p.reference for p in train_problems):
        # found at the training stage otherwise, after iteration 0's whole evaluation
        raise LetiError(f"task '{cfg.task}' split '{cfg.train_split}' has no reference solutions; `leti sft` trains "
                        "on them: add 'reference' to the problems or set train_split")
    return task, train_problems, eval_problems


def _lead(cfg: RunConfig, run_dir: str | Path, mode: Mode, group: Group) -> int:
    rd = RunDir(run_dir)
    with rd.locked():
        task, train_problems, eval_problems = _problems(cfg, mode)
        resuming = _prepare(rd, cfg, mode)
        last = cfg.iterations if mode == "leti" else 1
        records = rd.metrics()
        todo = min(set(range(last + 1)) - {r["iteration"] for r in records}, default=None)  # first to run
        # eval.every skipped the evaluation of an iteration that a shortened `iterations` made the last
        final_unevaluated = any(r["iteration"] == last and r.get("eval") is None for r in records)
        if todo is None and not final_unevaluated:
            print(f"leti: run {rd.root} is already finished ({plural(last, 'iteration')}); metrics: {rd.metrics_path}")
            return 0
        if resuming:
            write_text_atomic(rd.config_path, dump_config(cfg))  # what the rest of the run does
            if todo is None:
                print(f"leti: resuming {rd.root}: iterations 0-{last} finished; iteration {last}, now the last, is evaluated")
            else:
                done = ("nothing finished yet", "iteration 0 finished")[todo] if todo < 2 else f"iterations 0-{todo - 1} finished"
                print(f"leti: resuming {rd.root}: {done}; iteration {todo} goes on from its saved stages")
        if resuming and todo is not None and carries_optimizer(cfg, mode):
            _check_optimizer_state(rd, todo)
        if cfg.trainer.reads_corpus:
            from leti.training.data import check_corpus

            t = cfg.trainer
            check_corpus(t.pretrain_corpus, t.pretrain_hf_data_dir, t.pretrain_text_field)
            if t.pretrain_cache:
                from leti.training.corpus_cache import check_cache_dir, default_cache_dir

                check_cache_dir(default_cache_dir())
        if cfg.trainer.lora.enabled:
            from leti.training.lora import check_lora_targets

            check_lora_targets(cfg.model, cfg.trainer, cfg.trust_remote_code)
        if cfg.training_text.append_eos:
            _check_eos_token(cfg)
        _check_problems_unchanged(rd, mode, cfg.task, [*train_problems, *eval_problems])
        if cfg.train_split == cfg.eval.split:
            print(f"leti: warning: train_split and eval.split are both '{cfg.train_split}': the evaluation scores "
                  "problems the model was trained on", file=sys.stderr)
        with_ref = sum(1 for p in train_problems if p.reference)
        train = (f"{len(train_problems)} train problems x {cfg.sampling.n} samples" if mode == "leti"
                 else f"{len(train_problems)} train problems' reference solutions" if with_ref == len(train_problems)
                 else f"the reference solutions of {with_ref} of {len(train_problems)} train problems "
                      f"({plural(len(train_problems) - with_ref, 'problem')} without one left out)")
        print(f"leti: {mode} run in {rd.root}: {train}, {len(eval_problems)} eval problems x {cfg.eval.n}, "
              f"iterations 1..{last}")
        slot = ModelSlot(cfg.model_dtype, cfg.device, cfg.trust_remote_code)
        try:
            with make_executor(cfg.execution) as executor:
                ctx = _Context(cfg, rd, task, train_problems, eval_problems, executor, slot, mode, group)
                for k in range(last + 1):
                    if k not in rd.finished_iterations():
                        ctx.iteration(k, last)
                if final_unevaluated:
                    ctx.evaluate_finished(last)
        finally:
            slot.release()  # a vLLM engine kept for a next phase
    print(f"leti: run finished; metrics: {rd.metrics_path}; plots and report: leti report {rd.root}")
    return 0


class _Context:
    def __init__(self, cfg, rd, task, train_problems, eval_problems, executor, slot, mode, group: Group) -> None:
        self.cfg, self.rd, self.task, self.executor, self.slot, self.mode = cfg, rd, task, executor, slot, mode
        self.group = group
        self.train_problems, self.eval_problems = train_problems, eval_problems
        # Only a model whose training texts started with reward tokens knows what <|good|> means;
        # otherwise its embedding is still the mean initialisation.
        self.rewarded = mode == "leti" and cfg.training_text.reward_token

    def source(self, k: int) -> str:
        """Weights at the end of iteration k (k = 0: the configured model)."""
        if k == 0:
            return self.cfg.model
        path = self.rd.checkpoint(k)
        if not path.is_dir():  # deleted by hand: the model loader's "no such model" would not say why
            raise LetiError(f"{path}: missing, and the run goes on from iteration {k}'s weights; restore it, "
                            "or start again with a new --run-dir")
        return str(path)

    def iteration(self, k: int, last: int) -> None:
        walls: list[float] = []
        summary: dict = {}
        if k > 0:
            records = None
            if self.mode == "leti":
                records, wall = self._samples(k)
                walls.append(wall)
                summary = stages.summarize_samples(records)
            walls.append(self._train(k, records))
        evaluated = k == 0 or k == last or k % self.cfg.eval.every == 0
        ev = self._evaluate(k) if evaluated else None
        if ev is not None:
            walls.append(ev["wall_s"])
        steps = sum(read_json(self.rd.train_stats(i), _TRAIN_KEYS)["optimizer_steps"] for i in range(1, k + 1))
        stats = read_json(self.rd.train_stats(k), _TRAIN_KEYS) if k > 0 else {}
        loss = stats.get("loss_mean")
        if stats.get("pretrain_heldout_loss_before") is not None:
            # the base model's held-out loss, measured by iteration 1's training stage; iteration
            # 0's line gets it before this iteration's line lands, so a kill between them redoes it
            self._add_to_metrics(0, {"pretrain_heldout_loss": stats["pretrain_heldout_loss_before"]})
        record = {
            "iteration": k, "gradient_steps_total": steps,
            "train_samples": summary.get("train_samples"), "train_pass_rate": summary.get("train_pass_rate"),
            "train_status_counts": summary.get("train_status_counts"),
            "train_exception_counts": summary.get("train_exception_counts"),
            "train_loss_mean": loss, "eval": {**ev["pass@k"], **ev.get("task_metrics", {})} if ev else None,
            # Beside "eval", not in it: readers treat every number in "eval" as a metric.
            "eval_stderr": stages.eval_stderr(ev) if ev else None,
            # mean token loss on the pretraining corpus's held-out files (iteration 0: see above)
            "pretrain_heldout_loss": stats.get("pretrain_heldout_loss"),
            "wall_s": round(sum(walls), 2), "checkpoint": self.source(k),
        }
        self.rd.append_metrics(record)
        se = record["eval_stderr"] or {}
        print(f"leti: iteration {k}: " + ", ".join(
            (f"{key}={v:.4f}" if isinstance(v, float) else f"{key}={v}") + (f"±{se[key]:.4f}" if se.get(key) is not None else "")
            for key, v in [("gradient_steps_total", steps), ("train_pass_rate", record["train_pass_rate"]),
                           *((ev or {}).get("pass@k", {}).items()),
                           *([("pretrain_heldout_loss", record["pretrain_heldout_loss"])]
                             if record["pretrain_heldout_loss"] is not None else [])]))

    def _add_to_metrics(self, k: int, fields: dict) -> None:
        """Add `fields` to the finished iteration k's metrics line (nothing to do when it has them)."""
        record = next(r for r in self.rd.metrics() if r["iteration"] == k)
        if any(record.get(key) != v for key, v in fields.items()):
            self.rd.replace_metrics({**record, **fields})

    def evaluate_finished(self, k: int) -> None:
        """Evaluate a finished iteration that was not evaluated (eval.every) and now is the last:
        its metrics line gets the evaluation."""
        ev = self._evaluate(k)
        record = next(r for r in self.rd.metrics() if r["iteration"] == k)
        record.update({"eval": {**ev["pass@k"], **ev.get("task_metrics", {})}, "eval_stderr": stages.eval_stderr(ev),
                       "wall_s": round((record.get("wall_s") or 0) + ev["wall_s"], 2)})
        self.rd.replace_metrics(record)
        print(f"leti: iteration {k}: " + ", ".join(f"{key}={v:.4f}" for key, v in ev["pass@k"].items()))

    def _samples(self, k: int) -> tuple[dict, float]:
        rd, cfg = self.rd, self.cfg
        if rd.samples_done(k).exists():
            marker = read_json(rd.samples_done(k), ("wall_s",))
            return self._finished_samples(k, marker.get("samples")), marker["wall_s"]
        t0 = time.time()
        sampler = self._sampler(self.source(k - 1), _sampling(cfg, self.task, cfg.seed + k, False))
        records = stages.sample_and_execute(
            sampler, self.task, self.train_problems, cfg.sampling.n, self.executor, rd.samples(k),
            condition_on_good=self.rewarded and k >= 2, desc=f"iter {k} train", progress=cfg.progress,
            stops=stages.training_stops(cfg))
        wall = round(time.time() - t0, 2)
        write_json_atomic(rd.samples_done(k), {"samples": len(records), "wall_s": wall, **_phase_info(sampler)})
        return records, wall

    def _finished_samples(self, k: int, count: object) -> dict:
        """Iteration k's samples once samples.done vouches for them: every record one of this
        run's (problem, sample index) and as many as the marker counted. A file emptied, cut or
        filled with another run's lines was trained and counted on without a word."""
        path, n = self.rd.samples(k), self.cfg.sampling.n
        records = read_sample_records(path)
        ids = {p.id for p in self.train_problems}
        fix = f"restore it, or delete {self.rd.samples_done(k).name} to sample what is missing"
        foreign = next((key for key in records if key[0] not in ids or not 0 <= key[1] < n), None)
        if foreign is not None:
            raise LetiError(f"{path}: holds sample {foreign[1]} of problem {foreign[0]!r}, which is not one of this "
                            f"run's ({len(ids)} problems x sampling.n {n}); {fix}")
        if isinstance(count, int) and not isinstance(count, bool) and len(records) != count:
            raise LetiError(f"{path}: holds {len(records)} samples, {self.rd.samples_done(k).name} counted {count}; {fix}")
        return records

    def _sampler(self, source: str, sampling: SamplingConfig) -> Sampler:
        """This process's sampler, spread over every rank under a multi-process launch."""
        model, tok = self.slot.for_sampling(source, sampling)
        local = get_sampler(sampling, model, tok)
        if self.group.world_size > 1 and self.cfg.sampling.data_parallel:
            return DataParallelSampler(local, self.group, source, sampling)
        return local

    def _train(self, k: int, records: dict | None) -> float:
        """Train iteration k on `records` (its samples, as _samples read and checked them; None
        in sft mode) and checkpoint; the wall seconds."""
        rd, cfg = self.rd, self.cfg
        if rd.train_stats(k).exists():
            wall = read_json(rd.train_stats(k), _TRAIN_KEYS)["wall_s"]
            # A kill after train_stats.json but before (or during) the pruning below left the
            # older checkpoints (and their AdamW state) behind: pruning is idempotent, finish it.
            self._prune_checkpoints(k)
            return wall
        if rd.checkpoint_stats(k).exists():
            # Killed after the checkpoint landed but before train_stats.json: the training is done.
            stats_dict = read_json(rd.checkpoint_stats(k), _TRAIN_KEYS)
            write_json_atomic(rd.train_stats(k), stats_dict)
            self._prune_checkpoints(k)
            return stats_dict["wall_s"]
        from leti.model import save_model
        from leti.training.trainer import OPTIMIZER_FILE, train

        model, tok = self.slot.get(self.source(k - 1))
        if self.mode == "leti":
            assert records is not None  # leti mode always samples first
            texts = stages.training_texts(records, self.train_problems, cfg, tok.eos_token)
            if not texts and not cfg.training_text.keep_failures:
                raise LetiError(f"iteration {k}: no sample passed, and training_text.keep_failures is false, so there "
                                "is nothing to train on; sample more (sampling.n) or keep the failures")
        else:
            texts = stages.sft_texts(self.train_problems, cfg, tok.eos_token)
            if not texts:
                raise LetiError(f"task '{cfg.task}' split '{cfg.train_split}' has no reference solutions; `leti sft` trains on them")
        carry = carries_optimizer(cfg, self.mode)
        optimizer_from = str(rd.checkpoint(k - 1) / OPTIMIZER_FILE) if carry and k > 1 else None
        print(f"leti: iteration {k}: training on {len(texts)} texts for {cfg.trainer.epochs} epochs"
              + (f", AdamW going on from iteration {k - 1}" if optimizer_from else ""))
        # The checkpoint is assembled in tmp and lands in one rename: the AdamW state with it.
        tmp = rd.iteration(k) / "checkpoint.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        _check_disk(tmp, k, model, cfg, carry)
        self.slot.forget_source()  # weights change in place
        with self.group.stage():
            # iteration 1 also measures the base model's held-out loss (iteration 0's)
            job = TrainJob(self.source(k - 1), texts, cfg.seed + k, optimizer_from, heldout_before=k == 1)
            self.group.broadcast(job)  # other ranks join
            model, stats = train(model, tok, texts, cfg.trainer, seed=cfg.seed + k, progress=cfg.progress,
                                 log_dir=str(rd.iteration(k) / "logs"), source=self.source(k - 1),
                                 tracker_run=(str(rd.root.resolve())[-128:], f"iteration-{k}"),
                                 optimizer_from=optimizer_from, optimizer_to=tmp / OPTIMIZER_FILE if carry else None,
                                 heldout_before=job.heldout_before)
        save_model(model, tok, tmp)
        # the stats travel inside the checkpoint, so its one rename marks the training done
        write_json_atomic(tmp / rd.checkpoint_stats(k).name, stats.to_dict())
        replace_dir_atomic(tmp, rd.checkpoint(k))
        write_json_atomic(rd.train_stats(k), stats.to_dict())
        self.slot.set(self.source(k), model, tok)
        self._prune_checkpoints(k)
        return stats.wall_s

    def _prune_checkpoints(self, k: int) -> None:
        """Delete checkpoints older than the newest `keep_checkpoints`, and the AdamW state of
        every checkpoint but k. Iterations before k are finished, and only checkpoint k is needed
        to go on, so this never breaks a resume."""
        from leti.training.trainer import OPTIMIZER_FILE

        for old in range(1, k):
            self.rd.checkpoint(old).joinpath(OPTIMIZER_FILE).unlink(missing_ok=True)
        keep = self.cfg.keep_checkpoints
        if keep is None:
            return
        for old in range(1, k - keep + 1):
            if self.rd.checkpoint(old).exists():
                shutil.rmtree(self.rd.checkpoint(old))

    def _evaluate(self, k: int) -> dict:
        rd, cfg = self.rd, self.cfg
        if rd.eval(k).exists():
            return read_json(rd.eval(k), ("pass@k", "wall_s"))
        t0 = time.time()
        conditioned = self.rewarded and k >= 1
        sampler = self._sampler(self.source(k), _sampling(cfg, self.task, cfg.seed + 100_000 + k, True))
        records = stages.sample_and_execute(
            sampler, self.task, self.eval_problems, cfg.eval.n, self.executor, rd.eval_samples(k),
            condition_on_good=conditioned, desc=f"iter {k} eval", progress=cfg.progress)
        scored = stages.score_eval(records, self.eval_problems, cfg.eval.ks, self.task)
        report = {"iteration": k, "split": cfg.eval.split, "n": cfg.eval.n, "temperature": cfg.eval.temperature,
                  "conditioned_on_good": conditioned, **scored, "wall_s": round(time.time() - t0, 2), **_phase_info(sampler)}
        write_json_atomic(rd.eval(k), report)
        return report
