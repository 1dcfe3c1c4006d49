"""`leti run` and `leti sft`: the loop over iterations 0..N in a run directory (layout in
rundir.py). It checks the run can start or resume (checks.py), then runs each iteration not yet
finished (iteration.py: k = 0 evaluates the untrained model; k >= 1 samples, executes, trains,
checkpoints and evaluates). Every stage is skipped when its file exists, so rerunning resumes.
Under `accelerate launch` rank 0 runs this loop and the other ranks join its training and
sampling (distributed.py).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from leti.config import EvalSection, RunConfig, load_yaml_text, terminal_progress
from leti.errors import LetiError, plural
from leti.execution.ray_pool import make_executor
from leti.loop.checks import (
    Mode,
    carries_optimizer,
    check_corpus_fills_batch,
    check_eos_token,
    check_fresh,
    check_model_unchanged,
    check_optimizer_state,
    check_problems_unchanged,
    check_processes,
    check_prompts,
    check_resumable,
    failing_references_warning,
    pin_model_revision,
    record_model_commit,
    run_config_text,
    sft_baseline_note,
    sft_unused_settings,
    start_run_dir,
    start_tokenizer,
    switched_off_settings_warning,
)
from leti.loop.distributed import Group, check_launch, check_same_config, follow
from leti.loop.iteration import Iterations
from leti.loop.paths import with_absolute_paths
from leti.loop.rundir import RunDir, write_text_atomic
from leti.loop.slot import ModelSlot
from leti.loop.tracking import RunTracker, check_trackers
from leti.sampling.base import greedy_copies_warning
from leti.tasks.base import Task
from leti.tasks.registry import get_task


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


def run(cfg: RunConfig, run_dir: str | Path, mode: Mode = "leti", terminal_bars: bool = False,
        refusal_note: str | None = None) -> int:
    """Run (or resume) a LeTI or SFT run in `run_dir`. Returns the process exit code. Under
    `accelerate launch` only rank 0 runs the loop; the other ranks join training (distributed.py).
    `terminal_bars`: draw progress bars only when stderr is a terminal (the CLI's choice); the
    run directory's config.yaml keeps `progress` as given either way. `refusal_note`: added to a
    refusal to resume the run in `run_dir` (the CLI's word on how it chose a default run_dir)."""
    cfg = with_absolute_paths(cfg)  # config.yaml then names the same files from any directory
    # leti's own stages follow `progress` (a bar on a terminal, lines in a log: leti.progress);
    # the libraries' bars only on a terminal
    shown = terminal_progress(cfg) if terminal_bars else cfg
    with _library_progress(shown.progress):
        return _run(cfg, run_dir, mode, saved=cfg, refusal_note=refusal_note)


def _run(cfg: RunConfig, run_dir: str | Path, mode: Mode, saved: RunConfig, refusal_note: str | None = None) -> int:
    group = Group(cfg.device)
    try:
        def start_checks() -> None:
            check_same_config(cfg, group)  # first: every later check assumes every rank has the same config
            check_launch(cfg, group, carries_optimizer(cfg, mode))
            if not group.is_leader:  # the leader checks its own in _lead
                _check_corpus_access(cfg)

        group.check_together(start_checks)
        if not group.is_leader:
            # the leader's bars stand for every rank: a follower's (sampling, loading weights)
            # were drawn over them
            with _library_progress(False):
                return follow(cfg, group)
        try:
            return _lead(cfg, run_dir, mode, group, saved, refusal_note)
        finally:
            if not group.broken:  # release the followers, also when the leader failed
                group.broadcast(None)
    finally:
        group.close()


def _check_corpus_access(cfg: RunConfig, announce: bool = False) -> None:
    """This process can read the pretraining corpus and write its cache: every rank reads them in
    training, and another node's own $LETI_CACHE_DIR or corpus copy failed only there, at the
    first training stage, after a whole sampling phase."""
    if not cfg.trainer.reads_corpus:
        return
    from leti.training.data import check_corpus

    t = cfg.trainer
    check_corpus(t.pretrain_corpus, t.pretrain_hf_data_dir, t.pretrain_text_field,
                 max_files=t.pretrain_max_files, heldout_fraction=t.pretrain_heldout_fraction, announce=announce)
    if t.pretrain_cache:
        from leti.training.corpus_cache import check_cache_dir, default_cache_dir

        check_cache_dir(default_cache_dir())


def _trains(rd: RunDir, todo: int, last: int) -> bool:
    """Whether a training stage is still to run: iterations todo..last (the first unfinished one
    on) that have not trained yet (a stage that trained but was not evaluated needs no corpus)."""
    return any(not rd.trained(k) for k in range(max(todo, 1), last + 1))


def _problems(cfg: RunConfig, mode: Mode) -> tuple[Task, list, list]:
    """(task, train problems, eval problems) of a run; a task that cannot give them is one error,
    before the run directory is written."""
    task = get_task(cfg.task)
    train_problems = _split_problems(cfg, task, "train_split", cfg.train_split)[: cfg.max_train_problems]
    eval_problems = _split_problems(cfg, task, "eval.split", cfg.eval.split)[: cfg.eval.max_problems]
    if mode == "sft" and not any(p.reference for p in train_problems):
        # found at the training stage otherwise, after iteration 0's whole evaluation
        raise LetiError(f"task '{cfg.task}' split '{cfg.train_split}' has no reference solutions; `leti sft` trains "
                        "on them: add 'reference' to the problems or set train_split")
    return task, train_problems, eval_problems


def task_protocol_warning(cfg: RunConfig, task: Task) -> str | None:
    """A warning when the run evaluates a task that has an evaluation protocol of its own
    (Task.eval_defaults: GENEVA greedy, HumanEval n=256, ...) with every eval.* setting still at
    the config's defaults, which are MBPP's protocol: its pass@k then differs from what `leti
    evaluate --task` reports for the same checkpoint. A task that keeps the base class's
    placeholder (a JSONL task) has no protocol to follow; an eval section the user changed is theirs."""
    d = task.eval_defaults
    if d == Task.eval_defaults:
        return None
    ev, default = cfg.eval, EvalSection()
    protocol = ("split", "n", "temperature", "top_p", "max_new_tokens", "ks")
    if any(getattr(ev, name) != getattr(default, name) for name in protocol):
        return None
    theirs = {"split": d.split, "n": d.n, "temperature": d.temperatures[0], "top_p": d.top_p,
              "max_new_tokens": d.max_new_tokens, "ks": list(d.ks)}
    differ = [name for name in protocol if theirs[name] != getattr(ev, name)]
    if not differ:
        return None
    flags = " ".join(f"--set eval.{name}={str(theirs[name]).replace(' ', '')}" for name in differ)
    also = (f" (it samples at temperatures {', '.join(f'{t:g}' for t in d.temperatures)} and scores each)"
            if len(d.temperatures) > 1 else "")
    return (f"leti: warning: task '{cfg.task}' has its own evaluation protocol{also}, but eval.* are the defaults "
            f"(MBPP's): {', '.join(f'eval.{n}={getattr(ev, n)} (task: {theirs[n]})' for n in differ)}, so this run's "
            f"pass@k will differ from `leti evaluate --task {cfg.task}`'s; to follow the task: {flags}")


def _split_problems(cfg: RunConfig, task: Task, field: str, split: str) -> list:
    """The problems of `split`, which config field `field` names; none is an error naming that
    field (a typo in train_split and one in eval.split read alike when it named both)."""
    problems = task.problems(split)
    if not problems:
        splits = task.splits()
        fix = "one of them" if split not in splits else "one that has problems"
        raise LetiError(f"task '{cfg.task}' has no problems in split '{split}', which {field} names (the task's "
                        f"splits: {', '.join(splits)}); set {field} to {fix}")
    return problems


def _check_model_settings(cfg: RunConfig, tok: Any) -> None:
    """What the training stages need of the model, its tokenizer and the trackers, checked at the
    start: found at the first training stage otherwise, after a whole sampling phase."""
    if cfg.trainer.lora.enabled:
        from leti.training.lora import check_lora_targets

        check_lora_targets(cfg.model, cfg.trainer, cfg.trust_remote_code, cfg.model_revision)
    if cfg.trainer.report_to:
        check_trackers(cfg.trainer.report_to)
    check_eos_token(cfg, tok)


def _lead(cfg: RunConfig, run_dir: str | Path, mode: Mode, group: Group, saved: RunConfig,
          refusal_note: str | None = None) -> int:
    rd = RunDir(run_dir)
    with rd.locked():
        try:
            resuming = check_resumable(rd, saved, mode)  # another config's run here: said before its own checks
        except LetiError as e:
            if refusal_note is None:
                raise
            # its own fix (--set the run's values) would run this config with another one's settings
            raise LetiError(f"{e}; {refusal_note}") from None
        task, train_problems, eval_problems = _problems(cfg, mode)
        # every load of the run reads one commit of a hub model, also after its branch moved
        cfg = pin_model_revision(rd, mode, cfg, resuming)
        # before the run directory is written: a prompt fixed after this refusal is then no
        # "changed problem" of a run that had started
        tok = start_tokenizer(cfg)
        check_prompts(cfg, mode, task, train_problems, eval_problems, tok)
        if not resuming:
            check_fresh(rd)  # start_run_dir's own refusal, before the corpus is read
        last = cfg.iterations if mode == "leti" else 1
        records = rd.metrics()  # a new run has none: read before its directory is written
        todo = min(set(range(last + 1)) - {r["iteration"] for r in records}, default=None)  # first to run
        # eval.every skipped the evaluation of an iteration that a shortened `iterations` made the last
        final_unevaluated = any(r["iteration"] == last and r.get("eval") is None for r in records)
        trains = todo is not None and _trains(rd, todo, last)
        if trains:
            # the corpus the training stages read, before the run directory is written: a corpus
            # refused now is no reason to call the fixed config a changed resume
            _check_corpus_access(cfg, announce=True)
            check_corpus_fills_batch(cfg, tok)
        finished = todo is None and not final_unevaluated
        if not finished:  # a refusal leaves a new run's directory unwritten (a finished run needs none)
            _check_model_settings(cfg, tok)
        if not resuming:
            start_run_dir(rd, saved, mode)
        if finished:
            if (resuming and mode == "leti" and max(r["iteration"] for r in records) == last
                    and load_yaml_text(rd.config_path.read_text(encoding="utf-8")).get("iterations") != last):
                # a stopped run ended where it stopped (--set iterations=3 after iteration 3 of 6):
                # recorded as when its new last iteration is still to evaluate (below); config.yaml
                # kept 6, and the report called the finished run unfinished. An unchanged
                # `iterations`, or one below what the run finished (it ran to 6), leaves the file.
                write_text_atomic(rd.config_path, run_config_text(saved, mode))
            # what the run finished, which a shorter `iterations` than it ran to does not undo
            done = max(r["iteration"] for r in records)
            print(f"leti: run {rd.root} is already finished ({plural(done, 'iteration')}); metrics: {rd.metrics_path}")
            return 0
        if final_unevaluated and not rd.checkpoint(last).is_dir():
            raise LetiError(f"{rd.root}: iterations={last} makes iteration {last} the last, which was not evaluated "
                            f"(eval.every={cfg.eval.every}) and whose checkpoint keep_checkpoints deleted; set iterations "
                            "back to the run's own, or start again with a new --run-dir")
        if todo is not None:  # training to come (a finished run only evaluates its last iteration)
            check_processes(rd, mode, cfg, group.world_size)
        if resuming and todo is not None and carries_optimizer(cfg, mode):
            check_optimizer_state(rd, todo)
        check_problems_unchanged(rd, mode, cfg.task, [*train_problems, *eval_problems])
        check_model_unchanged(rd, mode, cfg)
        record_model_commit(rd, mode, cfg)
        if resuming:
            # only once every check passed: a refused resume (an edited task file with --set
            # iterations=9) left config.yaml saying 9, and the report then called the run unfinished
            write_text_atomic(rd.config_path, run_config_text(saved, mode))  # what the rest of the run does
            if todo is None:
                print(f"leti: resuming {rd.root}: iterations 0-{last} finished; iteration {last}, now the last, is evaluated")
            else:
                done = ("nothing finished yet", "iteration 0 finished")[todo] if todo < 2 else f"iterations 0-{todo - 1} finished"
                print(f"leti: resuming {rd.root}: {done}; iteration {todo} goes on from its saved stages")
        if mode == "sft" and (unused := sft_unused_settings(cfg)):
            print(f"leti: note: `leti sft` does not use {', '.join(unused)}: the supervised baseline trains once, for "
                  "trainer.epochs, on the reference solutions, and samples only to evaluate (eval.*)", file=sys.stderr)
        if mode == "sft" and (note := sft_baseline_note(cfg)):
            print(note, file=sys.stderr)
        warnings = [greedy_copies_warning(cfg.eval.temperature, cfg.eval.n, "eval.n",
                                          "pass@k for every k is pass@1; set eval.n: 1")]
        if mode == "leti":
            warnings.insert(0, greedy_copies_warning(cfg.sampling.temperature, cfg.sampling.n, "sampling.n",
                                                     "an iteration trains on n copies of one program per problem; "
                                                     "set sampling.n: 1, or a temperature above 0"))
        warnings.append(switched_off_settings_warning(cfg))
        if not resuming:  # its --set eval.* fix is for a new run: a resume refuses them
            warnings.append(task_protocol_warning(cfg, task))
        for warning in filter(None, warnings):
            print(warning, file=sys.stderr)
        if cfg.train_split == cfg.eval.split:
            print(f"leti: warning: train_split and eval.split are both '{cfg.train_split}': the evaluation scores "
                  "problems the model was trained on", file=sys.stderr)
        with_ref = sum(1 for p in train_problems if p.reference)
        train = (f"{len(train_problems)} train problems x {cfg.sampling.n} samples" if mode == "leti"
                 else f"{len(train_problems)} train problems' reference solutions" if with_ref == len(train_problems)
                 else f"the reference solutions of {with_ref} of {len(train_problems)} train problems "
                      f"({plural(len(train_problems) - with_ref, 'problem')} without one left out)")
        print(f"leti: {mode} run in {rd.root}: {train}, {len(eval_problems)} eval problems x {cfg.eval.n}, "
              + (f"iterations 1..{last}" if mode == "leti" else f"one training stage of {plural(cfg.trainer.epochs, 'epoch')}"))
        # What the imports left (torch, transformers: ~360k objects) is never garbage: each full
        # collection (ModelSlot.release, Accelerate's free_memory) walked it for 0.2 s. Collected
        # first, so no garbage is frozen; unfrozen after, for a caller that goes on (tests, the demo).
        gc.collect()
        gc.freeze()
        slot = ModelSlot(cfg.weights_dtype, cfg.device, cfg.trust_remote_code, cfg.model_revision)
        try:
            # the run's one tracker session (the leader's alone), closed when the run ends or fails
            with (RunTracker(rd, cfg, cfg.trainer.report_to) if cfg.trainer.report_to else nullcontext()) as tracker, \
                    make_executor(cfg.execution) as executor:
                if mode == "sft" and trains:  # before its one training stage
                    if warning := failing_references_warning(cfg, task, train_problems, executor):
                        print(warning, file=sys.stderr)
                ctx = Iterations(cfg, rd, task, train_problems, eval_problems, executor, slot, mode, group, tracker)
                for k in range(last + 1):
                    if k not in rd.finished_iterations():
                        ctx.iteration(k, last)
                if final_unevaluated:
                    ctx.evaluate_finished(last)
        finally:
            slot.release()  # a vLLM engine kept for a next phase
            gc.unfreeze()
    print(f"leti: run finished; metrics: {rd.metrics_path}; plots and report: leti report {rd.root}")
    return 0
