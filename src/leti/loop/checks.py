"""Checks a run makes before it does any work: a new run directory is empty, a resumed one was
started with the same config (but for RESUMABLE_CHANGES), the same problems and, where AdamW goes
on, its saved state; the model's tokenizer has what the config needs; the disk has room for the
next checkpoint. Each refusal is one line naming the file or field and the fix."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import uuid
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

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
from leti.errors import LetiError, size_text
from leti.execution.config import ExecutionConfig
from leti.loop.paths import PATH_FIELDS, moved_path
from leti.loop.rundir import RunDir, read_json, write_json_atomic, write_text_atomic

Mode = Literal["leti", "sft"]

# Fields the supervised baseline (`leti sft`) never reads: it trains once, for trainer.epochs, on
# prompt + reference solution (no reward token, no feedback), and samples only to evaluate (eval.*).
# A resumed sft run may change them, and a config that sets them is told they go unused.
SFT_UNUSED = frozenset({
    "iterations", "sampling.n", "sampling.temperature", "sampling.top_p", "sampling.max_new_tokens",
    "sampling.stop_sequences", "training_text.reward_token", "training_text.textual_feedback",
    "training_text.postprocess_hints", "training_text.feedback_content", "training_text.stop_hint",
    "training_text.keep_failures"})


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


def config_differences(rd: RunDir, cfg: RunConfig, mode: Mode = "leti") -> list[tuple[str, object, object, bool]]:
    """The fields of `cfg` that differ from the config `rd` started with, leaving out
    RESUMABLE_CHANGES (and in an sft run SFT_UNUSED): (field, value then, value now, whether the
    field existed then). A field
    added to leti since counts as what the run did (BEHAVIOUR_BEFORE_FIELD, else its default);
    two spellings of one local directory are the same value."""
    old = flatten_config(_started_config(rd))
    new = flatten_config(config_to_dict(cfg))
    defaults = flatten_config(config_to_dict(RunConfig()))
    differences = []
    for key in sorted(set(old) | set(new)):
        if key in RESUMABLE_CHANGES or (mode == "sft" and key in SFT_UNUSED):
            continue
        existed = key in old
        before = old.get(key) if existed else BEHAVIOUR_BEFORE_FIELD.get(key, defaults.get(key))
        now = new.get(key)
        if key in PATH_FIELDS:  # run() makes them absolute; a run started before that has them as given
            before, now = (PATH_FIELDS[key](v) if isinstance(v, str) else v for v in (before, now))
        if now != before and not (existed and _same_directory(before, now)):
            differences.append((key, before, now, existed))
    return differences


def check_unchanged(rd: RunDir, cfg: RunConfig, mode: Mode = "leti") -> None:
    """A resumed run's config may differ from the one it started with only in RESUMABLE_CHANGES.
    One difference is named with the --set that undoes it; several, with the config to resume with."""
    refusals: list[tuple[str, str]] = []  # (field, the refusal if it were the only one)
    for key, before, now, existed in config_differences(rd, cfg, mode):
        moved = moved_path(key, before, now) if existed else None
        if moved is not None:
            what = "file" if key == "task" else "directory"
            refusals.append((key, f"{rd.config_path}: field '{key}' is {now!r}, the {what} {moved} the run started "
                                  f"with, which no longer exists (moved or deleted); put it back there to resume (a "
                                  f"run resumes only with the {what} it started with), or use a new --run-dir"))
        elif not existed:  # a field added to leti after the run started: fine while it does what the run did
            refusals.append((key, f"{rd.config_path}: field '{key}' did not exist when the run started, which ran as "
                                  f"{key}={yaml_value(before)}; resume with --set {_arg(key, before)} or use a new --run-dir"))
        else:
            # a default leti changed since the run started reads the same: the --set says what to do
            refusals.append((key, f"{rd.config_path}: field '{key}' was {before!r} when the run started, now "
                                  f"{now!r}; resume with the same config (--set {_arg(key, before)}) "
                                  "or use a new --run-dir"))
    if len(refusals) == 1:
        raise LetiError(refusals[0][1])
    if refusals:
        keys = [k for k, _ in refusals]
        named = ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")
        raise LetiError(f"{rd.config_path}: {len(keys)} fields differ from the config the run started with ({named}); "
                        f"resume with that config (leti {'run' if mode == 'leti' else 'sft'} {shlex.quote(str(rd.config_path))} --run-dir "
                        f"{shlex.quote(str(rd.root))}) or use a new --run-dir")


def sft_unused_settings(cfg: RunConfig) -> list[str]:
    """`field=value` for each SFT_UNUSED field `cfg` sets away from its default (a LeTI config
    given to `leti sft`), so the run can say they go unused instead of ignoring them silently."""
    now, defaults = flatten_config(config_to_dict(cfg)), flatten_config(config_to_dict(RunConfig()))
    return [f"{k}={yaml_value(now[k])}" for k in sorted(SFT_UNUSED) if now.get(k) != defaults.get(k)]


# Settings that only a switch elsewhere turns on: (prefix of their names, or their names, switch,
# the value that turns them on, names under the prefix that are the switch itself).
_SWITCHED_SECTIONS = [("sampling.vllm.", "sampling.backend", "vllm", ()),
                      ("execution.ray_", "execution.backend", "ray", ()),
                      ("trainer.lora.", "trainer.lora.enabled", True, ("trainer.lora.enabled",)),
                      # the hf sampler's batches; vLLM's are sampling.vllm.chunk_size
                      (("sampling.batch_size", "eval.batch_size"), "sampling.backend", "hf", ())]


def switched_off_settings_warning(cfg: RunConfig) -> str | None:
    """One warning naming the settings `cfg` sets away from their defaults where their switch is
    off (`sampling.vllm.dtype` under the hf sampler, `sampling.batch_size` under vllm,
    `trainer.lora.r` with LoRA off): they do nothing, which a user who forgot the switch would
    not otherwise learn."""
    now, defaults = flatten_config(config_to_dict(cfg)), flatten_config(config_to_dict(RunConfig()))
    unused = []
    for prefix, switch, on, own in _SWITCHED_SECTIONS:
        if now[switch] == on:
            continue
        names = [k for k in sorted(now) if (k.startswith(prefix) if isinstance(prefix, str) else k in prefix)
                 and k not in own and now[k] != defaults.get(k)]
        if names:
            unused.append(f"{', '.join(names)} {'does' if len(names) == 1 else 'do'} nothing with {switch}: "
                          f"{yaml_value(now[switch])} (set {switch}: {yaml_value(on)} to use "
                          f"{'it' if len(names) == 1 else 'them'})")
    return f"leti: warning: {'; '.join(unused)}" if unused else None


_SPEC_SFT_LR, _SPEC_SFT_EPOCHS = 1e-4, 30  # the spec's supervised baseline (configs/mbpp-sft.yaml)


def sft_baseline_note(cfg: RunConfig) -> str | None:
    """A note when `cfg` trains with another lr/epochs than the spec's baseline: a LeTI preset's
    trainer (lr 1e-5, 3 epochs) given to `leti sft` would quietly train a weaker baseline."""
    t = cfg.trainer
    if t.learning_rate == _SPEC_SFT_LR and t.epochs == _SPEC_SFT_EPOCHS:
        return None
    return (f"leti: note: this SFT run trains with trainer.learning_rate {t.learning_rate:g} and trainer.epochs "
            f"{t.epochs}; the spec's supervised baseline is lr 1e-4 for 30 epochs "
            "(the mbpp-sft / mbpp-codegen-2b-sft presets)")


# The last line of a run's config.yaml: a digest of the fields a resume may not change. config.yaml
# is the only record of how the run started, so an edit of one of them made leti misreport what
# the run started with, and a resume from the edited file went on under other settings unnoticed.
# In the file itself, so that it is rewritten with it, atomically.
_SEAL = "# leti: sha256 {} of the fields a resume may not change; an edit of them is refused\n"
_SEAL_PREFIX = "# leti: sha256 "


def _fixed_fields_digest(raw: dict, mode: Mode) -> str:
    fields = {k: v for k, v in flatten_config(raw).items()
              if k not in RESUMABLE_CHANGES and not (mode == "sft" and k in SFT_UNUSED)}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_config_text(cfg: RunConfig, mode: Mode) -> str:
    """A run directory's config.yaml, sealed (_SEAL). An sft run's carries SFT_MARK, so that `leti
    run RUN/config.yaml` refuses it as it refuses the preset it may have come from."""
    from leti.presets import SFT_MARK

    text = (f"{SFT_MARK}  (the config of a `leti sft` run, which `leti run` refuses)\n" if mode == "sft" else "") + dump_config(cfg)
    return text + _SEAL.format(_fixed_fields_digest(load_yaml_text(text), mode))


def check_not_edited(rd: RunDir, mode: Mode) -> None:
    """config.yaml's fixed fields are still the ones leti wrote (a file without the seal, from a
    leti before it, is taken as it is)."""
    seals = [line for line in rd.config_path.read_text(encoding="utf-8").splitlines() if line.startswith(_SEAL_PREFIX)]
    raw = _started_config(rd)
    if not seals and _run_info(rd, mode).get("config_sealed"):  # the seal removed with the edit
        raise LetiError(f"{rd.config_path}: its last line, the digest leti wrote, is gone, so an edit of it cannot be "
                        "told apart from how the run started; restore the file, or use a new --run-dir")
    if seals and seals[-1].removeprefix(_SEAL_PREFIX)[:16] != _fixed_fields_digest(raw, mode):
        raise LetiError(f"{rd.config_path}: edited since leti wrote it, in a field a resume may not change, so it no "
                        "longer says how the run started; undo the edit, or use a new --run-dir (change settings a "
                        "resume may change, such as iterations, with --set)")


def _run_info(rd: RunDir, mode: Mode) -> dict:
    """run.json's record (a run from before run.json: just the mode it is run in)."""
    path = rd.root / "run.json"
    return read_json(path, required=("mode",)) if path.exists() else {"mode": mode}


def check_resumable(rd: RunDir, cfg: RunConfig, mode: Mode) -> bool:
    """Whether `rd` holds earlier work of a run, which `cfg` may then resume: the same mode, an
    unedited config.yaml, no change but RESUMABLE_CHANGES. Checked before anything about `cfg`
    itself: another preset on a run's directory was refused for its prompts' length instead."""
    resuming = rd.config_path.exists() and rd.has_output()
    if resuming:
        info = _run_info(rd, mode)
        if info.get("mode") != mode:
            raise LetiError(f"{rd.root}: this run directory holds a '{info.get('mode')}' run, not '{mode}'; use another --run-dir")
        check_not_edited(rd, mode)
        check_unchanged(rd, cfg, mode)
    return resuming


def start_run_dir(rd: RunDir, cfg: RunConfig, mode: Mode) -> None:
    """Write config.yaml + run.json of a new run (check_resumable said there is no earlier work
    to resume: a run that stopped before producing anything, e.g. a wrong task name, starts
    afresh with the new config). On resume, config.yaml takes the resumable changes only once
    the run does work with them (runner._lead)."""
    check_fresh(rd)
    write_json_atomic(rd.root / "run.json", {"mode": mode, "created": datetime.now(timezone.utc).isoformat(),
                                             "id": uuid.uuid4().hex[:24], "config_sealed": True})
    write_text_atomic(rd.config_path, run_config_text(cfg, mode))


def check_fresh(rd: RunDir) -> None:
    """A new run writes config.yaml and run.json: never over files of something else (a
    config.yaml of the user's own, with --run-dir .), nor into the output of a run whose
    config.yaml is gone (its samples would be reused under another config)."""
    if (rd.root / "run.json").exists():
        if rd.has_output():
            raise LetiError(f"{rd.config_path}: missing, but {rd.root} holds a run's output; restore it or use a new --run-dir")
        return  # a leti run that stopped before writing anything: it starts afresh
    # iterations/ may hold stages shared before the run starts (the demo's arms); run.json.tmp is
    # this write's own, left by a kill during it (then the directory could never be started again)
    foreign = sorted(p.name for p in rd.root.iterdir() if p.name not in (".lock", "iterations", "run.json.tmp"))
    if foreign:
        raise LetiError(f"{rd.root}: not empty and not a leti run directory (it holds '{foreign[0]}'); "
                        "pass a new or empty --run-dir")


def start_tokenizer(cfg: RunConfig) -> Any:
    """The run's tokenizer, loaded once for the start checks that need it (check_prompts,
    check_eos_token), as the model's loader builds it (an adapter directory's own, or its base's
    through a chain of adapters; LeTI's tokens added); None when it cannot be loaded: the model's
    loader reports that, in one line, after the other start checks. Except for a hub id the hub
    does not give: its one line is raised here, since the model's load would wait through
    huggingface_hub's retries (~25 s offline) a second time before saying the same."""
    from leti.model import load_tokenizer, local_model_dir

    hub = False
    try:
        hub = local_model_dir(cfg.model) is None
        return load_tokenizer(cfg.model, cfg.trust_remote_code, cfg.model_revision)
    except LetiError:
        if hub:
            raise
        return None
    except Exception:  # noqa: BLE001
        return None


def check_eos_token(cfg: RunConfig, tok: Any) -> None:
    """training_text.append_eos and trainer.pretrain_eos_separator need the tokenizer's
    end-of-text token: refuse a tokenizer without one before the first sampling phase, not when
    the training texts are built or the corpus packed. `tok`: start_tokenizer's (None: unknown)."""
    fields = [f for f, on in (("training_text.append_eos", cfg.training_text.append_eos),
                              ("trainer.pretrain_eos_separator", cfg.trainer.reads_corpus and cfg.trainer.pretrain_eos_separator))
              if on]
    if not fields or tok is None:
        return
    if not tok.eos_token:
        raise LetiError(f"{fields[0]} is true but the tokenizer of {cfg.model!r} has no eos_token; "
                        f"set {fields[0]}: false, or give the tokenizer an eos_token")


def check_problems_unchanged(rd: RunDir, mode: Mode, task: str, problems: list) -> None:
    """The config names the task, not its contents: an edited task file under a resumed run
    would mix samples of the old problems with the new ones. run.json keeps a digest of the
    problems the run started with (runs from before it get one now)."""
    text = json.dumps([[p.id, p.split, p.prompt, p.tests, p.reference, p.meta.get("stop")] for p in problems])
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    info = _run_info(rd, mode)
    if info.get("problems_sha256") not in (None, digest):
        raise LetiError(f"task '{task}': its problems (ids, prompts, tests or references) changed since the run in "
                        f"{rd.root} started (an edited task file, or another leti's prompts); restore them or use a "
                        "new --run-dir")
    if info.get("problems_sha256") is None:
        write_json_atomic(rd.root / "run.json", {**info, "problems_sha256": digest})


_SAMPLE = 1 << 20  # bytes read from each end of a file


def _read_by_from_pretrained(name: str) -> bool:
    """Whether a model directory's file is one loading the model reads: weights (shards and their
    index), configs, tokenizer files, remote code. Others (an eval's results, the demo's
    warmstart.json with its timings, notes) may change without changing the model."""
    from leti.model import _TOKENIZER_FILES, _WEIGHT_FILES

    return (name in _WEIGHT_FILES or name in _TOKENIZER_FILES or name.endswith((".safetensors", ".py"))
            or (name.endswith(".bin") and name != "training_args.bin") or name.endswith(".index.json")
            or name in ("config.json", "generation_config.json", "adapter_config.json", "special_tokens_map.json",
                        "added_tokens.json", "merges.txt", "chat_template.jinja"))


def model_digest(model: str) -> dict[str, str] | None:
    """A digest per file of a local model directory that loading it reads (_read_by_from_pretrained):
    its size and first and last MiB (weights that differ differ there: a fine-tune or another
    seed changes every tensor; reading 2 MiB a file is cheap at any model size). None for a hub
    id or a directory that is gone (loading it says so)."""
    path = Path(model).expanduser()
    if not path.is_dir():
        return None
    digests = {}
    for f in sorted(p for p in path.iterdir() if p.is_file() and _read_by_from_pretrained(p.name)):
        size = f.stat().st_size
        h = hashlib.sha256(f"{size}\0".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(_SAMPLE))
            if size > 2 * _SAMPLE:
                fh.seek(-_SAMPLE, os.SEEK_END)
            h.update(fh.read(_SAMPLE))
        digests[f.name] = h.hexdigest()
    return digests


def check_model_unchanged(rd: RunDir, mode: Mode, cfg: RunConfig) -> None:
    """The config names the model, not its weights: a local model directory rebuilt or replaced
    under a resumed run would mix two models in one run (iteration 0 scored on the old weights,
    iteration 1 trained from the new). run.json keeps a digest of the directory's files
    (model_digest); it is compared while the run still reads the model: until iteration 1 has
    trained (its training also measures iteration 0's held-out loss), and always for LoRA adapter
    checkpoints, which are applied to it. A hub id is pinned to a commit instead (pin_model_revision)."""
    adapters = cfg.trainer.lora.enabled and cfg.trainer.lora.save == "adapter"
    if not adapters and rd.trained(1):
        return
    digests = model_digest(cfg.model)
    if digests is None:
        return
    info = _run_info(rd, mode)
    before = info.get("model_files")
    if isinstance(before, dict) and before != digests:
        changed = sorted(n for n in before.keys() | digests.keys() if before.get(n) != digests.get(n))
        raise LetiError(f"model '{cfg.model}': {', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''} changed, "
                        f"came or went since the run in {rd.root} started, which reads the model still; restore "
                        "them, or use a new --run-dir")
    if not isinstance(before, dict):
        write_json_atomic(rd.root / "run.json", {**info, "model_files": digests})


def pin_model_revision(rd: RunDir, mode: Mode, cfg: RunConfig, resuming: bool) -> RunConfig:
    """`cfg` with model_revision set to the commit sha the run's loads read (for a model on the hub,
    or a local adapter over one; QLoRA's 4-bit copy and the LoRA target check included): a resumed
    run's is the one run.json recorded when the run started (model_commit), whatever the branch or tag points to now; a new run's is the commit
    model_revision (None: the default branch) resolves to now. The config's model_revision itself
    cannot differ from the run's (check_unchanged). Refused for a plain local directory, which has
    no revisions. record_model_commit writes the commit to run.json once the run directory is written."""
    from leti.model import hub_commit, hub_model

    try:
        hub = hub_model(cfg.model)
    except LetiError:
        return cfg  # a local directory that cannot be loaded: its loader says why, in one line
    if hub is None:
        if cfg.model_revision is not None:
            raise LetiError(f"model_revision={cfg.model_revision!r} names a revision on the hub, but model "
                            f"{cfg.model!r} is a local directory, which has none; remove model_revision "
                            "(--set model_revision=null)")
        return cfg
    recorded = _run_info(rd, mode).get("model_commit") if resuming else None
    commit = recorded if isinstance(recorded, str) and recorded else hub_commit(hub, cfg.model_revision)
    return dataclasses.replace(cfg, model_revision=commit)


def record_model_commit(rd: RunDir, mode: Mode, cfg: RunConfig) -> None:
    """run.json's model_commit: the commit pin_model_revision pinned `cfg` to (a run from before it
    gets the one it resolves to now; nothing for a local model)."""
    info = _run_info(rd, mode)
    if cfg.model_revision is not None and info.get("model_commit") != cfg.model_revision:
        write_json_atomic(rd.root / "run.json", {**info, "model_commit": cfg.model_revision})


def check_processes(rd: RunDir, mode: Mode, cfg: RunConfig, processes: int) -> None:
    """trainer.batch_size and gradient_accumulation_steps are per process: a run resumed under
    another number of processes would train its later iterations on another number of texts
    per optimizer step, the change a different trainer.batch_size is refused for. run.json keeps
    the number the run started with (runs from before it get one now). Before any training
    stage has finished nothing depends on it (samples are drawn alike under any number), and the
    new number is the run's."""
    info = _run_info(rd, mode)
    was = info.get("processes")
    last = cfg.iterations if mode == "leti" else 1
    trained = any(rd.train_stats(k).exists() or rd.checkpoint_stats(k).exists() for k in range(1, last + 1))
    if isinstance(was, int) and was != processes and trained:
        t = cfg.trainer
        per_step = t.batch_size * t.gradient_accumulation_steps
        raise LetiError(f"{rd.root}: the run trained with {was} process{'es' if was != 1 else ''} ({was * per_step} texts "
                        f"per optimizer step), now {processes} ({processes * per_step}); launch it with {was} again "
                        "(trainer.batch_size is per process), or use a new --run-dir")
    if was != processes:
        write_json_atomic(rd.root / "run.json", {**info, "processes": processes})


def failing_references_warning(cfg: RunConfig, task, problems: list, executor) -> str | None:
    """`leti sft` trains on the reference solutions as ground truth: a warning naming those that
    fail their own tests (a wrong one quietly weakens the supervised baseline); None when all pass.
    Costs one program per problem, once, before the training stage."""
    with_ref = [p for p in problems if p.reference]  # what stages.sft_texts trains on
    failed = [p.id for p, r in zip(with_ref, task.run_references(with_ref, executor), strict=True) if not r.passed]
    if not failed:
        return None
    ids = ", ".join(map(str, failed[:10])) + (f" and {len(failed) - 10} more" if len(failed) > 10 else "")
    # the run's own limits, so that validate sees the failures the run saw
    limits = f" --timeout {cfg.execution.timeout_s:g}"
    if cfg.execution.memory_mb != ExecutionConfig().memory_mb:
        limits += f" --memory-mb {cfg.execution.memory_mb}"
    if cfg.execution.sandbox == "none":
        limits += " --unsafe-no-sandbox"
    return (f"leti: warning: {len(failed)} of {len(with_ref)} reference solutions fail their own tests ({ids}) and are "
            f"trained on all the same; `leti tasks validate {shlex.quote(cfg.task)} --split {shlex.quote(cfg.train_split)}"
            f"{limits}` shows why")


def check_disk(where: Path, k: int, model, cfg: RunConfig, carry: bool) -> None:
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
        raise LetiError(f"{where.parent}: {size_text(free)} free on its disk, but iteration {k}'s checkpoint needs about "
                        f"{size_text(need)} ({what}); make room (keep_checkpoints keeps only the newest checkpoints) and run "
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


def check_optimizer_state(rd: RunDir, todo: int) -> None:
    """Before a resumed run samples anything: the iteration it goes on with trains from the AdamW
    state saved with the checkpoint before it, unless that training is already done."""
    from leti.training.trainer import OPTIMIZER_FILE, damaged_optimizer_state

    if todo < 2 or rd.trained(todo):
        return
    path = rd.checkpoint(todo - 1) / OPTIMIZER_FILE
    if not rd.checkpoint(todo - 1).is_dir():
        return
    if not path.is_file():
        raise LetiError(f"{path}: missing; iteration {todo} trains on from the AdamW state iteration {todo - 1} saved "
                        "there (trainer.carry_optimizer_state); restore it, or start the run again with a new --run-dir")
    try:  # torch.save writes a zip whose directory is at its end: a cut file has none (cheap to read)
        with zipfile.ZipFile(path):
            pass
    except (OSError, zipfile.BadZipFile) as e:  # found by the training stage otherwise, after a whole sampling phase
        raise damaged_optimizer_state(path, str(e)) from None


def _model_config(cfg: RunConfig) -> Any:
    """The model's config, as AutoConfig reads it (an adapter directory's is its base's, the first
    in a chain of adapters that is none); None when it cannot be read: the model's loader reports
    that, in one line."""
    from transformers import AutoConfig

    from leti.model import base_model, hub_revision, local_model_dir

    try:
        base = base_model(cfg.model)
        return AutoConfig.from_pretrained(base, trust_remote_code=cfg.trust_remote_code,
                                          **hub_revision(local_model_dir(base), cfg.model_revision))
    except Exception:  # noqa: BLE001
        return None


def check_corpus_fills_batch(cfg: RunConfig, tok: Any) -> None:
    """The pretraining corpus gives a training stage one batch of trainer.batch_size blocks of the
    training length for the mix, and a block of held-out files where that loss is measured: found
    by the trainer's own code (data.check_fills_batch) with the run's tokenizer, block size,
    packing and split, so a corpus the first training stage would refuse is refused now, not
    after iteration 0's evaluation and iteration 1's sampling. With the cache on (the default)
    this builds it, and every stage reads it back. Run by the leader alone: under a multi-process
    launch the other ranks only wait for it, and find the cache built. `tok`: start_tokenizer's
    (None: the model's loader reports it)."""
    t = cfg.trainer
    if tok is None or not t.reads_corpus:
        return
    if t.pretrain_eos_separator and tok.eos_token_id is None:
        return  # check_eos_token refuses it, in its own words
    if (config := _model_config(cfg)) is None:
        return
    from leti.training.corpus_cache import default_cache_dir
    from leti.training.data import check_fills_batch
    from leti.training.trainer import context_length

    check_fills_batch(tok, t.pretrain_corpus, context_length(config, t.max_length),
                      t.batch_size, t.pretrain_max_files, t.pretrain_hf_data_dir, t.pretrain_text_field,
                      t.pretrain_eos_separator, mix=t.pretrain_mix_ratio > 0, heldout=t.measures_heldout,
                      cache_dir=default_cache_dir() if t.pretrain_cache else None, progress=cfg.progress,
                      heldout_fraction=t.pretrain_heldout_fraction, split_seed=t.pretrain_split_seed,
                      packing=t.pretrain_packing)


def check_prompts(cfg: RunConfig, mode: Mode, task, train_problems: list, eval_problems: list, tok: Any) -> None:
    """Every prompt the run will sample, as it will sample it (`<|good|>` + prompt once the model
    has learned the reward token: train prompts from iteration 2, eval prompts from iteration 1),
    has a token and leaves the context room for one more: the samplers' own rule
    (check_prompt_fits), which they apply only when a split is first sampled, after a whole
    evaluation, and whose fix (editing the task file) then makes the run unresumable. An `sft`
    run samples only its eval prompts. `tok`: start_tokenizer's; a model that cannot be loaded
    (None) is left to its loader."""
    from leti.feedback.training_text import GOOD
    from leti.model import encode_prompt, model_context
    from leti.sampling.base import check_prompt_fits, prompt_fits
    from leti.tasks.contract import problem_where

    if tok is None or (config := _model_config(cfg)) is None:
        return
    context, setting = model_context(config), None
    cap = cfg.sampling.vllm.max_model_len
    if cfg.sampling.backend == "vllm" and cap and (context is None or cap < context):
        # the engine's context, named as the setting: raising it is the fix (above the model's own
        # context, vLLM refuses to start, and the model's context is what limits)
        context, setting = cap, "sampling.vllm.max_model_len"
    tok.add_tokens([GOOD], special_tokens=True)  # one token, as in every checkpoint of the run (no-op if there)
    last = cfg.iterations if mode == "leti" else 1
    rewarded = mode == "leti" and cfg.training_text.reward_token
    # (problems, whether also sampled after <|good|>); every prompt is sampled plainly first
    splits = [(eval_problems, rewarded and last >= 1)]
    if mode == "leti" and last >= 1:
        splits.insert(0, (train_problems, rewarded and last >= 2))
    for problems, prefixed in splits:
        for p in problems:
            forms = [("", "")] + [(GOOD, f" with the {GOOD} prefix later iterations sample it with")] * prefixed
            for prefix, how in forms:
                n = len(encode_prompt(tok, prefix + p.prompt))
                if not prompt_fits(n, context):  # the task file is read again (for its line) only then
                    check_prompt_fits(p.id, n, context, problem_where(task, p.id), how, setting)
