"""`leti evaluate --model`: draw samples for a task's problems with leti.sampling, appending
them to DIR/samples.jsonl (keyed by (problem_id, sample_idx), so an interrupted run resumes and
only draws the missing samples). Kept apart from scoring so either side can change alone.

DIR/generation.json records what drew the samples (`generation_settings`: model, n,
temperature, top_p, max_new_tokens, seed, prompt_prefix, backend, and the task, split and a digest
of the prompts; for a model on the hub, `revision`: the commit sha its --revision or default branch
was when the samples were drawn), written before the first sample. A rerun on the same DIR with another setting,
split or prompts (another --task, an edited task file) is refused, so one file never mixes
samples of two models, settings or tasks. With the hf backend it also records the dtype the weights
loaded in: --device picks it ('auto': bfloat16 on a GPU that has it, float32 on a CPU) and it
changes the draws, so a resume on another kind of device is refused. Batch size and vLLM engine
settings are not recorded, but for vLLM's dtype, model_impl and max_model_len (`VLLM_DRAW_SETTINGS`):
every sample has its own seed (leti.sampling.hf.derive_seed), so the others change speed, not what is drawn. --n may grow: sample k is the same draw whatever n is, so a larger n only draws the
missing indices; it may not shrink, as the extra samples already drawn would be scored too.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leti.errors import LetiError
from leti.feedback.training_text import GOOD
from leti.sampling.vllm_config import VLLMConfig
from leti.tasks.base import Problem, Task


@dataclass(frozen=True)
class GenerationRequest:
    """Everything `leti evaluate --model` needs to sample; defaults come from the task."""

    model: str = field(metadata={"help": "hub id or local directory of a causal LM"})
    n: int = field(metadata={"help": "samples per problem"})
    temperature: float = field(metadata={"help": "sampling temperature (0 = greedy)"})
    top_p: float = field(metadata={"help": "nucleus mass"})
    max_new_tokens: int = field(metadata={"help": "generation budget per sample"})
    seed: int = field(default=0, metadata={"help": "base seed of the sampler"})
    batch_size: int = field(default=16, metadata={"help": "sequences per forward pass"})
    prompt_prefix: str = field(
        default="", metadata={"help": "text put before every prompt, e.g. '<|good|>' for LeTI checkpoints"}
    )
    device: str = field(default="auto", metadata={"help": "torch device ('auto', 'cpu', 'cuda'); hf backend"})
    backend: str = field(default="hf", metadata={"help": "sampler backend: 'hf' or 'vllm'"})
    vllm: VLLMConfig = field(default_factory=VLLMConfig, metadata={"help": "vLLM engine settings"})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "run the modeling code that ships with the model (only for models you trust)"}
    )
    revision: str | None = field(
        default=None, metadata={"help": "hub revision of the model (for an adapter directory: of its hub base); "
                                        "`leti evaluate` passes the commit sha it resolved (model_commit)"}
    )
    # What the samples are drawn for (recorded; empty: not recorded). task is informational: the
    # same problems under another spec (jsonl:./f vs jsonl:f) resume.
    task: str = field(default="", metadata={"help": "task spec"})
    split: str = field(default="", metadata={"help": "split whose problems are sampled"})
    prompts_sha1: str = field(default="", metadata={"help": "digest of the problems' ids, prompts and stops"})


GENERATION_FILE = "generation.json"

# generation.json field -> the `leti evaluate` flag that sets it.
_FLAGS = {"model": "--model", "n": "--n", "temperature": "--temperature", "top_p": "--top-p",
          "max_new_tokens": "--max-new-tokens", "seed": "--seed", "prompt_prefix": "--prompt-prefix",
          "backend": "--backend", "split": "--split", "revision": "--revision"}

# Recorded only by newer leti: a generation.json without them is not checked on them.
_LATER_FIELDS = {"task", "split", "prompts_sha1", "dtype", "revision", "vllm"}

# vLLM engine settings that change what is drawn (precision, model implementation, and the
# context that caps each sample's token budget); the others (memory share, eager mode, chunk and
# tensor-parallel sizes) change speed, as `leti run` lets them change on resume.
VLLM_DRAW_SETTINGS = ("dtype", "model_impl", "max_model_len")

# What a special token of a code LM's tokenizer looks like (<|good|>, <|endoftext|>, ...).
_SPECIAL_LOOKING = re.compile(r"<\|[^<>|\s]+\|>")


def generation_settings(req: GenerationRequest) -> dict:
    """The settings that decide which samples are drawn (see the module doc); a local model
    directory is recorded as its absolute path, so reruns from another directory still match."""
    model = req.model
    local = Path(model).expanduser()
    if local.is_dir():
        model = str(local.resolve())
    settings = {"model": model, "n": req.n, "temperature": req.temperature, "top_p": req.top_p,
                "max_new_tokens": req.max_new_tokens, "seed": req.seed, "prompt_prefix": req.prompt_prefix,
                "backend": req.backend}
    for name in ("revision", "task", "split", "prompts_sha1"):
        if getattr(req, name):
            settings[name] = getattr(req, name)
    if req.backend == "vllm":  # the engine settings that change the draws, as `leti run` refuses them on resume
        settings["vllm"] = {name: getattr(req.vllm, name) for name in VLLM_DRAW_SETTINGS}
    return settings


def model_commit(model: str, revision: str | None = None) -> str | None:
    """The commit sha of the hub model under `model` (itself, or a local adapter's hub base) that
    `revision` (None: the default branch) is now: the samples are drawn from it and generation.json
    records it, so a rerun after the branch moved is refused instead of mixing two models' samples.
    None for a local directory; `revision` given for one is refused (it has no revisions)."""
    from leti.model import hub_commit, hub_model

    hub = hub_model(model)
    if hub is None:
        if revision is not None:
            raise LetiError(f"--revision {revision}: {model} is a local directory, which has no revisions; drop --revision")
        return None
    return hub_commit(hub, revision)


def prompts_digest(task: Task, problems: Sequence[Problem]) -> str:
    """Fingerprint of what is sampled: each problem's id, prompt and stop sequences, in order."""
    rows = [[p.id, p.prompt, list(task.stop_for(p))] for p in problems]
    return hashlib.sha1(json.dumps(rows).encode("utf-8")).hexdigest()[:16]


def _vllm_value(value: Any) -> str:
    return "null" if value is None else str(value)


def check_generation_settings(out_path: Path, settings: dict, has_samples: bool) -> None:
    """Refuse to add samples drawn with `settings` to `out_path` if the samples already there
    were drawn with other ones (one line naming the field, both values and the fix)."""
    record = out_path.parent / GENERATION_FILE
    if record.exists() and not record.is_file():  # was "no generation.json ... (an older leti)"
        raise LetiError(f"{record}: is a directory, not the record of what drew the samples; use a new --out")
    if not record.is_file():
        if has_samples:
            raise LetiError(
                f"{out_path} has samples but no {GENERATION_FILE} saying what drew them (an older leti); "
                f"use a new --out, or score them as they are with --samples {out_path}"
            )
        return
    if not has_samples:
        return  # nothing was drawn with the recorded settings: the new ones replace them
    try:
        old = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LetiError(f"{record}: unreadable ({e}); it is corrupt, use a new --out") from None
    if not isinstance(old, dict):
        raise LetiError(f"{record}: expected a JSON object of generation settings; it is corrupt, use a new --out")
    for name, new in settings.items():
        if name == "task" or (name in _LATER_FIELDS and name not in old):
            continue
        was = old.get(name)
        flag = _FLAGS.get(name, name)
        if was != new and (name not in old or not (type(was) is type(new) or {type(was), type(new)} <= {int, float})):
            # a missing or retyped setting (a hand edit) was reported as drawn with model=null or n="2",
            # with a fix ("rerun with --n \"2\"") no flag can give
            kind = {int: "an integer", float: "a number", str: "a string"}.get(type(new), type(new).__name__)
            got = "missing" if name not in old else f"{json.dumps(was)[:40]}, not {kind}"
            raise LetiError(f"{record}: '{name}' is {got}; the file is damaged: restore it, or use a new --out")
        if name == "prompts_sha1" and was != new:
            raise LetiError(
                f"{out_path.parent}: its samples were drawn for other prompts (task {json.dumps(old.get('task'))}) than "
                f"{settings.get('task', 'this task')} has; another --task or an edited task file: pass a new --out"
            )
        if name == "n" and isinstance(was, int) and new >= was:
            continue  # more samples per problem: the first `was` are the same draws
        if name == "vllm" and was != new:
            key = next((k for k in new if was.get(k) != new[k]), None)
            if key is None:
                raise LetiError(f"{record}: 'vllm' holds {json.dumps(was)[:80]}; the file is damaged: restore it, or use a new --out")
            old_value, new_value = (_vllm_value(v.get(key)) for v in (was, new))
            raise LetiError(
                f"{out_path.parent}: its samples were drawn with --vllm {key}={old_value}, not {new_value} ({record.name}); "
                f"rerun with --vllm {key}={old_value} to resume, or pass a new --out for the new setting"
            )
        if was != new:
            fix = (f"pass {flag} {was} (or more) to score these samples" if name == "n" and isinstance(was, int)
                   else f"resume where the weights load in {was} (--device)" if name == "dtype"
                   else f"rerun with {flag} {json.dumps(was)} to resume")
            raise LetiError(
                f"{out_path.parent}: its samples were drawn with {name}={json.dumps(was)}, not {json.dumps(new)} "
                f"({record.name}); {fix}, or pass a new --out for the new setting"
            )


def check_resume(req: GenerationRequest, out_path: Path) -> None:
    """`generate_samples`' settings check alone, drawing nothing (`leti evaluate` runs it for
    every temperature before drawing any)."""
    try:
        from leti.sampling import done_keys
    except ImportError as e:
        raise LetiError(f"generation needs the sampler (leti.sampling): {e}; use --samples FILE meanwhile") from None
    check_generation_settings(out_path, generation_settings(req), has_samples=bool(done_keys(out_path)))


def recorded_settings(req: GenerationRequest, out_path: Path) -> dict:
    """What generation.json beside `out_path` records of the draws (with the dtype the weights
    loaded in), or `req`'s settings where there is no readable record."""
    try:
        recorded = json.loads((out_path.parent / GENERATION_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return generation_settings(req)
    return recorded if isinstance(recorded, dict) else generation_settings(req)


def _write_settings(out_path: Path, settings: dict) -> None:
    from leti.loop.rundir import write_json_atomic

    write_json_atomic(out_path.parent / GENERATION_FILE, settings)


def saving_run(model: str) -> tuple[Path, bool] | None:
    """(the run folder, whether that run evaluates its trained checkpoints on <|good|>) for a
    checkpoint a `leti run` or `leti sft` saved where it is (RUN/iterations/<k>/checkpoint, RUN
    holding run.json and a readable config.yaml); None for any other model."""
    from leti.config import load_config
    from leti.loop.rundir import run_mode, trained_on_good
    from leti.model import run_of_checkpoint

    root = run_of_checkpoint(model)
    if root is None or (mode := run_mode(root)) is None:
        return None
    try:
        return root, trained_on_good(mode, load_config(root / "config.yaml"))
    except LetiError:
        return None


def prompt_prefix_warning(prefix: str, model: str, checkpoint_special: set[str] | frozenset[str] | None,
                          backend: str, run: tuple[Path, bool] | None = None) -> str | None:
    """A warning line when the prompt prefix holds something that looks like a special token
    (<|good|>) which the checkpoint's own tokenizer does not have, or when there is no prefix and
    the checkpoint has <|good|> (one leti saved: the spec evaluates LeTI-trained models conditioned
    on it); None otherwise or when the checkpoint's tokens are unknown. A plain-text prefix is the
    user's choice and not checked. `run` (saving_run's) settles it for a checkpoint in its run's
    folder: a `leti sft` run or one without reward tokens evaluates it on the plain prompt."""
    if run is not None and not run[1]:
        if GOOD not in prefix:
            return None
        return (f"leti: warning: --prompt-prefix {prefix!r}, but {run[0]} trained {model} without reward tokens "
                "(a `leti sft` run, or training_text.reward_token: false) and evaluates it on the plain prompt; "
                "leave the prefix out to compare with that run's numbers")
    if checkpoint_special is None:
        return None
    if not prefix:
        if GOOD not in checkpoint_special:
            return None
        return (f"leti: warning: no --prompt-prefix, but {model}'s tokenizer has {GOOD} (a checkpoint leti saved): "
                f"a LeTI-trained model is evaluated conditioned on it (spec), so pass --prompt-prefix '{GOOD}'; "
                "leave it out for an SFT or untrained model")
    missing = [t for t in _SPECIAL_LOOKING.findall(prefix) if t not in checkpoint_special]
    if not missing:
        return None
    what = f"--prompt-prefix {prefix!r}" if missing == [prefix] else f"--prompt-prefix {prefix!r}: {missing[0]!r}"
    effect = ("it is prompted as plain text" if backend == "vllm"
              else "leti adds it with an untrained embedding, so the model never learned what it means")
    return (f"leti: warning: {what} is not a special token of {model}'s tokenizer: {effect}; "
            "LeTI checkpoints have it")


def checkpoint_special_tokens(model: str, trust_remote_code: bool = False,
                              revision: str | None = None) -> set[str] | None:
    """The special tokens of the checkpoint's own tokenizer, as saved (before leti adds its
    tokens on loading): a prefix such as <|good|> means something only if the checkpoint has
    it. Loads the tokenizer alone (a local directory, or the hub's files, which loading the
    model fetches anyway); None when that fails (only a warning depends on it)."""
    from leti.model import hub_revision, local_model_dir, special_tokens

    local = local_model_dir(model)
    try:
        from transformers import AutoTokenizer

        return special_tokens(AutoTokenizer.from_pretrained(str(local or model), trust_remote_code=trust_remote_code,
                                                            **hub_revision(local, revision)))
    except Exception:  # noqa: BLE001 - the model's own loading reports real problems
        return None


class LoadedModel:
    """The model `leti evaluate --model` draws with, loaded on the first draw and kept for the
    next temperature: one load (for vLLM, one engine start, tens of seconds on a GPU) per
    evaluation instead of one per temperature. Requests differ only in sampling settings, which
    are per draw (every sample at temperature > 0 has its own seed, so an engine started for one
    temperature draws the next one's samples exactly as a fresh engine would). Close it (or use
    `with`) to shut a vLLM engine down."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._model: Any = None
        self._tokenizer: Any = None

    @staticmethod
    def _load_key(req: GenerationRequest) -> tuple:
        return (req.model, req.revision, req.backend, req.device, req.trust_remote_code, req.vllm)

    def get(self, req: GenerationRequest, config: Any) -> tuple[Any, Any]:
        """(model, tokenizer) for `req`: an HF model and its tokenizer, or a VLLMEngine and None."""
        from leti.model import load_model_and_tokenizer, local_model_dir

        key = self._load_key(req)
        if self._key != key:
            self.close()
            if req.backend == "vllm":
                from leti.sampling.vllm import VLLMEngine

                local_model_dir(req.model)  # a bad local path is one line here, before vLLM starts
                # loads the tokenizer and config now; the engine starts on the first draw
                self._model = VLLMEngine(config, req.model, trust_remote_code=req.trust_remote_code,
                                         revision=req.revision)
            else:
                self._model, self._tokenizer = load_model_and_tokenizer(req.model, device=req.device,
                                                                        trust_remote_code=req.trust_remote_code,
                                                                        revision=req.revision)
            self._key = key
        return self._model, self._tokenizer

    def close(self) -> None:
        model, self._key, self._model, self._tokenizer = self._model, None, None, None
        if model is not None and hasattr(model, "close"):  # a VLLMEngine (an HF model has no close)
            model.close()

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def generate_samples(task: Task, problems: Sequence[Problem], req: GenerationRequest, out_path: Path,
                     loaded: LoadedModel | None = None) -> Path:
    """Sample `req.n` completions per problem into `out_path` (JSONL, leti sample format);
    `out_path.parent / generation.json` records the settings (see the module doc). `loaded`
    keeps the model for the caller's next request (one load for several temperatures); without
    it the model is loaded for this call alone."""
    if loaded is None:
        with LoadedModel() as own:
            return generate_samples(task, problems, req, out_path, own)
    try:
        from leti.model import RemoteCodeNotTrusted
        from leti.sampling import (
            SampleRequest,
            SamplingConfig,
            append_samples_jsonl,
            done_keys,
            get_sampler,
        )
    except ImportError as e:
        raise LetiError(f"generation needs the sampler (leti.sampling): {e}; use --samples FILE meanwhile") from None
    settings = generation_settings(req)
    done = done_keys(out_path)
    check_generation_settings(out_path, settings, has_samples=bool(done))
    if len(done) >= req.n * len(problems):
        return out_path
    config = SamplingConfig(
        n=req.n,
        temperature=req.temperature,
        top_p=req.top_p,
        max_new_tokens=req.max_new_tokens,
        seed=req.seed,
        batch_size=req.batch_size,
        backend=req.backend,
        vllm=req.vllm,
    )
    try:
        model, tokenizer = loaded.get(req, config)
        sampler = get_sampler(config, model, tokenizer, trust_remote_code=req.trust_remote_code)
    except RemoteCodeNotTrusted as err:
        raise RemoteCodeNotTrusted(err.model, "pass --trust-remote-code") from None
    checkpoint_special = checkpoint_special_tokens(req.model, req.trust_remote_code, req.revision)
    warning = prompt_prefix_warning(req.prompt_prefix, req.model, checkpoint_special, req.backend, saving_run(req.model))
    if warning:
        print(warning, file=sys.stderr)
    if req.backend == "hf":  # the precision the draws are made in: the device decides it
        settings["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
        check_generation_settings(out_path, settings, has_samples=bool(done))
    # Recorded once the model loaded (a typo in --model must not pin this folder to it), and
    # before the first sample.
    _write_settings(out_path, settings)
    requests = [
        SampleRequest(problem_id=p.id, prompt=req.prompt_prefix + p.prompt, stop=task.stop_for(p))
        for p in problems
    ]
    # Appended (and flushed) as batches finish: a killed run keeps what it drew.
    append_samples_jsonl(out_path, sampler.sample(requests, skip=done))
    return out_path
