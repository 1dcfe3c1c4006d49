"""One iteration of a run, stage by stage, each skipped when its file in the run directory exists:
sample and execute the train split -> training texts -> train -> checkpoint -> evaluate (k = 0:
evaluate only). `Iterations` holds what every stage needs (config, run directory, task and
problems, executor, the model slot, the process group).

Conditioning on `<|good|>` follows one rule: a model that has been trained on reward tokens is
prompted with `<|good|>` (sampling from iteration 2, evaluation from iteration 1, i.e. every
evaluation of a trained LeTI model; spec: "generation at test time is conditioned on <|good|>").
The base model (iteration 0), SFT models and runs with `training_text.reward_token: false` never
trained on the token and get the plain prompt.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from leti.config import RunConfig
from leti.errors import LetiError, plural
from leti.loop import stages
from leti.loop.checks import carries_optimizer, check_disk
from leti.loop.distributed import DataParallelSampler, Group, TrainJob, shared_path
from leti.loop.rundir import (
    read_json,
    replace_dir_atomic,
    sync_dir,
    trained_on_good,
    write_json_atomic,
)
from leti.loop.tracking import RunTracker
from leti.sampling.base import Sampler, SamplingConfig, get_sampler

# What the loop reads back from a train_stats.json (a damaged one is an error naming it).
_TRAIN_KEYS = ("optimizer_steps", "loss_mean", "wall_s")


def _sampling(cfg: RunConfig, task, seed: int, evaluation: bool) -> SamplingConfig:
    s = cfg.eval if evaluation else cfg.sampling
    backend = cfg.sampling.backend
    return SamplingConfig(n=s.n, temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                          stop=tuple(task.stop_sequences), seed=seed, batch_size=s.batch_size, backend=backend,
                          vllm=cfg.sampling.vllm)


def _phase_info(sampler: Sampler, load_s: float) -> dict:
    """For samples.done / eval.json: how long this process took to load the phase's model (0:
    kept in memory from the last phase), how many programs each rank generated (data-parallel
    phases) and how long this process's vLLM engine took to start (0: kept from the last phase).
    The start-up times are the phase's fixed cost, the rest of wall_s grows with its problems
    (benchmarks/bench_iteration.py extrapolates them apart)."""
    info: dict = {"model_load_s": round(load_s, 2)}
    if isinstance(sampler, DataParallelSampler):
        info["sampled_by_rank"] = sampler.sampled
    local = sampler.local if isinstance(sampler, DataParallelSampler) else sampler
    startup = getattr(local, "startup_s", None)
    if startup is not None:
        info["engine_startup_s"] = round(startup, 2)
    return info


class Iterations:
    """The stages of a run's iterations: `iteration(k, last)` runs or finishes iteration k and
    appends its metrics line; `evaluate_finished(k)` evaluates a finished iteration that was not."""

    def __init__(self, cfg, rd, task, train_problems, eval_problems, executor, slot, mode, group: Group,
                 tracker: RunTracker | None = None) -> None:
        self.cfg, self.rd, self.task, self.executor, self.slot, self.mode = cfg, rd, task, executor, slot, mode
        self.group, self.tracker = group, tracker
        self.train_problems, self.eval_problems = train_problems, eval_problems
        # Only a model whose training texts started with reward tokens knows what <|good|> means;
        # otherwise its embedding is still the mean initialisation.
        self.rewarded = trained_on_good(mode, cfg)

    def source(self, k: int) -> str:
        """Weights at the end of iteration k (k = 0: the configured model)."""
        if k == 0:
            return self.cfg.model
        path = self.rd.checkpoint(k)
        if not path.is_dir():  # deleted by hand: the model loader's "no such model" would not say why
            raise LetiError(f"{path}: missing, and the run goes on from iteration {k}'s weights; restore it, "
                            "or start again with a new --run-dir")
        return str(path)

    def _steps_before(self, k: int) -> int:
        """Optimizer steps of iterations 1..k-1, from iteration k-1's metrics line (written when it
        finished): re-reading every finished iteration's train_stats.json stopped a resume, after
        this iteration's whole work, on a damaged file of a stage nothing would redo."""
        if k <= 1:
            return 0
        before = next((r for r in self.rd.metrics() if r["iteration"] == k - 1), None)
        if before is not None and isinstance(before.get("gradient_steps_total"), int):
            return before["gradient_steps_total"]
        return sum(read_json(self.rd.train_stats(i), _TRAIN_KEYS)["optimizer_steps"] for i in range(1, k))

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
        # an evaluation begun while k was the last (a run lengthened since) is finished, not dropped
        begun = self.rd.eval(k).exists() or self.rd.eval_samples(k).exists()
        evaluated = k == 0 or k == last or k % self.cfg.eval.every == 0 or begun
        ev = self._evaluate(k) if evaluated else None
        if ev is not None:
            walls.append(ev["wall_s"])
        stats = read_json(self.rd.train_stats(k), _TRAIN_KEYS) if k > 0 else {}
        steps = self._steps_before(k) + stats.get("optimizer_steps", 0)
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
            # absolute: relative, each (re)start's line was relative to the directory it was launched from
            "wall_s": round(sum(walls), 2), "checkpoint": self.source(k) if k == 0 else str(Path(self.source(k)).resolve()),
        }
        self.rd.append_metrics(record)
        if self.tracker is not None:
            self.tracker.log_record(record)
        print(self._progress(k, record, [("gradient_steps_total", steps), ("train_pass_rate", record["train_pass_rate"])],
                             [("pretrain_heldout_loss", record["pretrain_heldout_loss"])]
                             if record["pretrain_heldout_loss"] is not None else []))

    def _progress(self, k: int, record: dict, before: Sequence[tuple[str, object]] = (),
                  after: Sequence[tuple[str, object]] = ()) -> str:
        """The console line of iteration k's metrics line `record`: the fields `before`, every
        metric of its evaluation as metrics.jsonl's "eval" holds it (pass@k and the task's own,
        such as GENEVA's F1s), then `after`; ±standard error where one is known, the task's unit."""
        se, units = record.get("eval_stderr") or {}, getattr(self.task, "metric_units", {})

        def field(key: str, v: object) -> str:
            value = f"{v:.4f}" if isinstance(v, float) else f"{v}"
            return f"{key}={value}" + (f"±{se[key]:.4f}" if se.get(key) is not None else "") + units.get(key, "")

        fields = [*before, *(record.get("eval") or {}).items(), *after]
        return f"leti: iteration {k}: " + ", ".join(field(key, v) for key, v in fields)

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
        if self.tracker is not None:
            self.tracker.log_record({"gradient_steps_total": record["gradient_steps_total"], "eval": record["eval"],
                                     "eval_stderr": record["eval_stderr"]})
        print(self._progress(k, record))

    def _samples(self, k: int) -> tuple[dict, float]:
        rd, cfg = self.rd, self.cfg
        if rd.samples_done(k).exists():
            marker = read_json(rd.samples_done(k), ("wall_s",))
            return self._finished_samples(k, marker.get("samples")), marker["wall_s"]
        t0 = time.time()
        sampler = self._sampler(self.source(k - 1), _sampling(cfg, self.task, cfg.seed + k, False))
        load_s = time.time() - t0
        records = stages.sample_and_execute(
            sampler, self.task, self.train_problems, cfg.sampling.n, self.executor, rd.samples(k),
            condition_on_good=self._good_samples(k), desc=f"iter {k} train", progress=cfg.progress,
            stops=stages.training_stops(cfg))
        wall = round(time.time() - t0, 2)
        write_json_atomic(rd.samples_done(k), {"samples": len(records), "wall_s": wall, **_phase_info(sampler, load_s)})
        return records, wall

    def _good_samples(self, k: int) -> bool:
        """Whether iteration k's training samples are prompted with <|good|> (module docstring)."""
        return self.rewarded and k >= 2

    def _finished_samples(self, k: int, count: object) -> dict:
        """Iteration k's samples once samples.done vouches for them: every record one this
        iteration draws (stages.checked_records, as when the stage resumes) and as many as the
        marker counted. A file emptied, cut or filled with another run's lines was trained and
        counted on without a word."""
        path, marker = self.rd.samples(k), self.rd.samples_done(k).name
        reqs = stages.requests_for(self.task, self.train_problems, self._good_samples(k), stages.training_stops(self.cfg))
        records = stages.checked_records(
            path, reqs, self.cfg.sampling.n, "sampling.n",
            f"delete such lines and {marker} to sample them again (or both files, to sample them all)")
        fix = f"restore it, or delete {marker} to sample what is missing"
        if isinstance(count, int) and not isinstance(count, bool) and len(records) != count:
            raise LetiError(f"{path}: holds {len(records)} samples, {self.rd.samples_done(k).name} counted {count}; {fix}")
        return records

    def _sampler(self, source: str, sampling: SamplingConfig) -> Sampler:
        """This process's sampler, spread over every rank under a multi-process launch."""
        model, tok = self.slot.for_sampling(source, sampling)
        local = get_sampler(sampling, model, tok)
        if self.group.world_size > 1 and self.cfg.sampling.data_parallel:
            return DataParallelSampler(local, self.group, source, sampling, self.cfg.model_revision)
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
        tmp = rd.checkpoint_tmp(k)
        if (tmp / rd.checkpoint_stats(k).name).exists():
            # Killed before that rename, with the checkpoint whole (its stats go in last, once every
            # other file is on the disk): it lands now. Deleted, the stage trained again, and the
            # window is the fsync of the weights and AdamW state, seconds to minutes for big models.
            replace_dir_atomic(tmp, rd.checkpoint(k))
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
        print(f"leti: iteration {k}: training on {plural(len(texts), 'text')} for {plural(cfg.trainer.epochs, 'epoch')}"
              + (f", AdamW going on from iteration {k - 1}" if optimizer_from else ""))
        if tmp.exists():  # a checkpoint that was not whole: the stage trains again
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        check_disk(tmp, k, model, cfg, carry)
        self.slot.forget_source()  # weights change in place
        with self.group.stage():
            # iteration 1 also measures the base model's held-out loss (iteration 0's)
            # paths the other ranks open: absolute, as a node started in another directory has its own cwd
            job = TrainJob(shared_path(self.source(k - 1)), texts, cfg.seed + k,
                           optimizer_from and os.path.abspath(optimizer_from), heldout_before=k == 1,
                           revision=cfg.model_revision)
            self.group.broadcast(job)  # other ranks join
            model, stats = train(model, tok, texts, cfg.trainer, seed=cfg.seed + k, progress=cfg.progress,
                                 source=self.source(k - 1),
                                 optimizer_from=optimizer_from, optimizer_to=tmp / OPTIMIZER_FILE if carry else None,
                                 heldout_before=job.heldout_before, revision=job.revision,
                                 log=self.tracker.log if self.tracker is not None else None,
                                 step_offset=self._steps_before(k))
        if stats.n_truncated:  # their ends (program, end-of-text) were not trained on: say so, not only in train_stats.json
            # the model's context caps trainer.max_length (context_length): raising it then changes nothing
            limit, fix = ((f"trainer.max_length={stats.max_length} tokens", "raise trainer.max_length to keep them")
                          if stats.max_length >= cfg.trainer.max_length else
                          (f"the model's context of {stats.max_length} tokens",
                           f"it caps trainer.max_length={cfg.trainer.max_length}, so lower sampling.max_new_tokens, or "
                           "shorten the feedback (execution.feedback_max_bytes) or the prompts, to keep them"))
            print(f"leti: iteration {k}: {stats.n_truncated} of {plural(len(texts), 'training text')} exceeded "
                  f"{limit} (cut at the end: the rest is not trained on); {fix}")
        save_model(model, tok, tmp)  # beside the AdamW state the training saved there
        # the stats travel inside the checkpoint, so its one rename marks the training done; they
        # go in last, once the rest is on the disk, so that they vouch for a whole checkpoint
        sync_dir(tmp)
        write_json_atomic(tmp / rd.checkpoint_stats(k).name, stats.to_dict())  # synced as it is written
        replace_dir_atomic(tmp, rd.checkpoint(k), synced=True)
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
            return read_json(rd.eval(k), ("pass@k", "wall_s"), optional=("task_metrics", "pass@k_stderr", "per_problem"))
        t0 = time.time()
        conditioned = self.rewarded and k >= 1
        sampler = self._sampler(self.source(k), _sampling(cfg, self.task, cfg.seed + 100_000 + k, True))
        load_s = time.time() - t0
        records = stages.sample_and_execute(
            sampler, self.task, self.eval_problems, cfg.eval.n, self.executor, rd.eval_samples(k),
            condition_on_good=conditioned, desc=f"iter {k} eval", progress=cfg.progress, n_field="eval.n")
        scored = stages.score_eval(records, self.eval_problems, cfg.eval.ks, self.task)
        report = {"iteration": k, "split": cfg.eval.split, "n": cfg.eval.n, "temperature": cfg.eval.temperature,
                  "conditioned_on_good": conditioned, **scored, "wall_s": round(time.time() - t0, 2), **_phase_info(sampler, load_s)}
        write_json_atomic(rd.eval(k), report)
        return report
