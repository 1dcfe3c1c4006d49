"""Load a causal code LM and its tokenizer, ready for LeTI sampling and training.

LeTI adds four special tokens (reward and feedback delimiters) to the vocabulary; the embedding
matrix grows to match, and the new rows start at the mean of the existing rows so that the
first sampling round (which never sees them) and generation stay sane.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from leti.errors import LetiError, message_line, size_text
from leti.feedback.training_text import MARKERS

SPECIAL_TOKENS = MARKERS  # the tokens leti adds to every tokenizer

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu; anything else must be a valid torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    choices = "use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise LetiError(f"device={device!r} is not a torch device; {choices}") from None
    # Each device is checked here, before any work: torch fails only when the model is moved
    # there, with a traceback (e.g. "PyTorch is not linked with support for mps devices").
    if resolved.type not in ("cpu", "cuda", "mps"):  # xpu, meta, ...: what the run config refuses too
        raise LetiError(f"device={device!r} is not a device leti runs on; {choices}")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        why = "no MPS device is visible" if torch.backends.mps.is_built() else "this PyTorch has no MPS support"
        raise LetiError(f"device={device!r} but {why}; use device='cpu' or 'auto'")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise LetiError(f"device={device!r} but no CUDA GPU is visible; use device='cpu' or 'auto'")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            visible = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            raise LetiError(f"device={device!r} but only {count} CUDA GPU{'s are' if count > 1 else ' is'} visible "
                            f"({visible}); use one of them, or device='cuda'")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto" -> bf16 on CUDA GPUs that support it, fp16 on older CUDA GPUs, fp32 elsewhere
    (CPU half-precision matmuls are slow and lossy)."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in _DTYPES:
        raise LetiError(f"dtype={dtype!r} is not supported; use 'auto' or one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


# How to allow a model's own code, as `leti run` takes it; `leti evaluate` says --trust-remote-code.
RUN_CONFIG_FIX = "set trust_remote_code: true in the run config (--set trust_remote_code=true)"


class RemoteCodeNotTrusted(LetiError):
    """A model whose modeling code ships in its own repository (config.json's auto_map), loaded
    without trust_remote_code. `fix` says how to allow it where the model was named."""

    def __init__(self, model: str, fix: str = RUN_CONFIG_FIX) -> None:
        self.model, self.fix = model, fix
        super().__init__(f"{model} ships its own modeling code (auto_map in its config.json), which transformers runs "
                         f"only with trust_remote_code; to run it, {fix} (only for models whose repository you trust)")


@contextmanager
def remote_code_refusal(model: str) -> Iterator[None]:
    """Turn transformers' refusal to run a model's own code (a multi-line ValueError asking for
    trust_remote_code=True) into a RemoteCodeNotTrusted line. transformers only prompts when
    trust_remote_code is None; leti always passes a bool, so it never waits for input."""
    try:
        yield
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise RemoteCodeNotTrusted(model) from None
        raise


def load_model_and_tokenizer(
    name_or_path: str,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM + tokenizer (hub id or local dir) with LeTI's special tokens added,
    a pad token set and left padding (what batched generation needs). A peft adapter directory
    loads in one of two ways. One leti wrote (trainer.lora.save='adapter': the tokenizer saved
    beside the adapters is the one leti builds for the base, or, copied without it, the adapters
    train the rows of LeTI's tokens; see written_by_leti) loads as its base model + the adapters, which stay
    trainable so that the next iteration goes on training them. Any other (a user's own adapter)
    is merged into its base model (merge_and_unload) before LeTI's tokens are added, and loads
    as that plain model, with the adapter directory's tokenizer if it has one. trust_remote_code
    runs the modeling code that ships with the model (its auto_map); a model that needs it,
    loaded without, is a RemoteCodeNotTrusted error. `revision` (a branch, tag or commit sha)
    applies to the hub model at the bottom: the hub id itself, or the hub base model of an
    adapter directory; local directories are loaded as they are."""
    local = local_model_dir(name_or_path)
    if local is not None:
        # Absolute: the model's name_or_path is what an adapter trained over it records as its
        # base (adapter_config.json), which must load from any working directory.
        name_or_path = os.path.abspath(local)
    adapter = adapter_config(local) if local is not None else None
    if adapter is not None and written_by_leti(local, trust_remote_code, revision):
        return _load_adapter(name_or_path, adapter["base_model_name_or_path"], dtype, device, trust_remote_code,
                             revision)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if adapter is not None:
        model, tokenizer = _merge_foreign_adapter(name_or_path, adapter["base_model_name_or_path"], dtype,
                                                  torch_dtype, trust_remote_code, revision)
    else:
        model, tokenizer = _load_plain(name_or_path, local, torch_dtype, trust_remote_code, revision)
    add_special_tokens(model, tokenizer)
    set_padding(model, tokenizer)
    model.to(torch_device)
    model.eval()
    return model, tokenizer


def _load_plain(name_or_path: str, local: Path | None, torch_dtype: torch.dtype | None,
                trust_remote_code: bool, revision: str | None = None,
                ) -> tuple[PreTrainedModel | None, PreTrainedTokenizerBase]:
    """A saved model (hub id or local dir) and its tokenizer as they are, on the CPU; the
    tokenizer alone (model None) when torch_dtype is None. `revision`: the hub id's (ignored
    for a local directory)."""
    model = None
    # config, tokenizer and weights from one revision: with a commit sha, one snapshot
    options = {"trust_remote_code": trust_remote_code, **hub_revision(local, revision)}
    if local is None:
        _announce_hub(name_or_path)
    try:
        with remote_code_refusal(name_or_path):
            # The config first: it refuses a model's own code at once, before the tokenizer's load
            # logs a warning about the model type it does not know.
            config = AutoConfig.from_pretrained(name_or_path, **options)
            check_causal_lm(config, name_or_path)
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, **options)
            if torch_dtype is not None:
                model, info = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch_dtype,
                                                                   output_loading_info=True, **options)
                _check_head_loaded(model, info, name_or_path)
    except ImportError as err:
        # Most often a model's own code importing a package this environment lacks (transformers
        # names it and the pip command): one line, not a traceback.
        first_line = message_line(err)
        raise LetiError(f"{name_or_path} could not be loaded: {first_line}") from None
    except (OSError, ValueError, SafetensorError) as err:
        # OSError covers unreachable hub, missing repo and missing files; ValueError covers
        # malformed repo ids and unknown model types; SafetensorError a cut or damaged weights file.
        first_line = message_line(err)
        if local is not None:
            fix = _model_dir_fix(local, "check that it holds what model.save_pretrained(DIR) and "
                                        "tokenizer.save_pretrained(DIR) write, whole")
            raise LetiError(f"model directory {name_or_path} could not be loaded ({first_line}); {fix}") from None
        at = f" at revision {revision!r}" if revision else ""
        raise LetiError(
            f"{name_or_path!r} is neither a local directory (cwd: {Path.cwd()}) nor loadable from the hub{at} "
            f"({first_line}); pass a local directory saved with save_pretrained, or a hub id the hub has"
        ) from None
    return model, tokenizer


# Encoders that AutoModelForCausalLM also builds (their *LMHeadModel / *ForCausalLM classes):
# without `is_decoder: true` their attention looks both ways, so every position sees the token it
# is trained to predict, and the run's losses and pass@k mean nothing. transformers only logs a
# warning. The model types whose causal-LM class checks `config.is_decoder` (transformers 5).
ENCODER_TYPES = frozenset({
    "bert", "bert-generation", "big_bird", "camembert", "data2vec-text", "electra", "ernie", "megatron-bert",
    "rembert", "roberta", "roberta-prelayernorm", "roc_bert", "roformer", "xlm-roberta", "xlm-roberta-xl", "xmod",
})


def check_causal_lm(config, name: str) -> None:
    """Refuse a checkpoint that is not a causal LM, in one line naming what it is: a model type
    AutoModelForCausalLM has no class for (T5, ViT: its error read as a broken directory), or an
    encoder that would be loaded without its causal mask."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    kind = getattr(config, "model_type", None)
    own_code = "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})
    if kind and kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not own_code:
        raise LetiError(f"{name} is a {kind!r} model, not a causal LM (AutoModelForCausalLM has no class for it); "
                        "leti fine-tunes decoder-only causal LMs: pass one as `model`")
    if kind in ENCODER_TYPES and not getattr(config, "is_decoder", False):
        raise LetiError(f"{name} is a {kind!r} encoder: as a causal LM its attention would see the tokens it is "
                        "trained to predict (its config's is_decoder is false); set \"is_decoder\": true in its "
                        "config.json to train it as a decoder, or pass a causal LM as `model`")


def _check_head_loaded(model: PreTrainedModel, info: dict, name: str) -> None:
    """Refuse a checkpoint saved without its output layer (a bare LlamaModel, a classifier):
    transformers initialises the missing head at random, unseeded, so every load of the run (its
    sampling, training, a resume, `leti evaluate`) would see another model. A head tied to the
    input embeddings is never saved and is not missing."""
    head = model.get_output_embeddings()
    if head is None or head.weight is model.get_input_embeddings().weight:
        return
    names = [n for n, p in model.named_parameters() if p is head.weight]
    if names and names[0] in set(info.get("missing_keys") or ()):
        raise LetiError(f"{name} has no weights for its output layer ({names[0]}): it was saved without a language "
                        "model head (a base model or a classifier), and transformers would start one at random; "
                        "pass a causal LM checkpoint (one saved from a *ForCausalLM model)")


def hub_revision(local: Path | None, revision: str | None) -> dict[str, str]:
    """`revision=` for a from_pretrained of a hub id (local None); nothing for a local directory,
    which has no revisions, or without a revision (the hub's default branch)."""
    return {"revision": revision} if local is None and revision else {}


def hub_model(name_or_path: str | Path) -> str | None:
    """The hub id a model loads from: itself, or the base model at the bottom of a chain of local
    adapter directories; None when that is a local directory. What a revision applies to."""
    base = base_model(name_or_path)
    return base if local_model_dir(base) is None else None


def hub_commit(name: str, revision: str | None = None) -> str:
    """The commit sha that `revision` (None: the default branch) of hub model `name` is now, as
    the loaders would read it. Found through config.json's file in huggingface_hub's cache: its
    folder there, snapshots/<sha>/, is named by the commit it was downloaded from (online the hub
    says which, offline refs/<revision> does). Not config._commit_hash: transformers 5 no longer
    sets it, and a loaded model is too late anyway, since every load of the run is then made
    with the sha (a branch that moves between the tokenizer's load and the weights' mixes two)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    _announce_hub(name)
    try:
        path = Path(hf_hub_download(name, "config.json", revision=revision))
    except (OSError, ValueError, EntryNotFoundError) as err:
        if revision:
            raise LetiError(f"{name!r} at revision {revision!r} could not be found on the hub or in its cache "
                            f"({message_line(err)}); pass a hub id and a branch, tag or commit sha it has") from None
        # no revision asked for: most often a mistyped local path (`checkpoints/iter3`), as the loaders say
        raise LetiError(f"{name!r} is neither a local directory (cwd: {Path.cwd()}) nor loadable from the hub "
                        f"({message_line(err)}); pass a local directory saved with save_pretrained, or a hub id "
                        "the hub has") from None
    if path.parent.parent.name != "snapshots":  # a cache layout this code does not know: say so
        raise LetiError(f"{name!r}: its config.json came from {path}, not from a snapshots/<commit> folder of the "
                        "hub cache, so its commit is unknown; pass a local directory instead")
    return path.parent.name


_ANNOUNCED_HUB: set[str] = set()  # hub ids said once per process: a run loads its model several times


def _announce_hub(name: str) -> None:
    """Say, before it starts, that a model is read from the hub: offline, huggingface_hub retries
    for about 25 s in silence before the error. Not in offline mode (no retries), and on rank 0 of
    a launch only (its line stands for every rank's load)."""
    # constants.HF_HUB_OFFLINE: is_offline_mode() is huggingface_hub 1.x's, and transformers 4.57
    # keeps huggingface_hub below 1.0
    from huggingface_hub import constants

    if name in _ANNOUNCED_HUB or constants.HF_HUB_OFFLINE or os.environ.get("RANK", "0") != "0":
        return
    _ANNOUNCED_HUB.add(name)
    print(f"leti: loading model '{name}' from the hub (offline, HF_HUB_OFFLINE=1 skips the retries)", flush=True)


# Any of these in a directory is a tokenizer AutoTokenizer can load.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")
# The weights files from_pretrained looks for (single file or the index of shards).
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json",
                 "adapter_model.safetensors", "adapter_model.bin",  # a LoRA checkpoint (trainer.lora.save: adapter)
                 "tf_model.h5", "tf_model.h5.index.json", "model.ckpt.index", "flax_model.msgpack",
                 "flax_model.msgpack.index.json")


def run_of_checkpoint(path: str | Path) -> Path | None:
    """The folder of the `leti run` / `leti sft` whose checkpoint `path` is (RUN/iterations/<k>/
    checkpoint, RUN holding run.json), however the path is spelled (relative, '.'); else None."""
    real = Path(path).expanduser().resolve()
    if real.name == "checkpoint" and real.parent.parent.name == "iterations" and (real.parents[2] / "run.json").is_file():
        return real.parents[2]
    return None


def _model_dir_fix(path: Path, fix: str) -> str:
    """The fix for a local model directory that cannot be loaded; a run's checkpoint
    (RUN/iterations/K/checkpoint) is the run's own output, not something to save again."""
    real = run_of_checkpoint(path)
    if real is not None:
        named = path.name == "checkpoint" and len(path.parts) >= 4
        run = path.parents[2] if named else real  # as the user named it, where it can be
        return f"it is a checkpoint of the run in {run}: restore it, or start that run again with a new --run-dir"
    return fix


def is_path_like(name: str) -> bool:
    """A model name that can only mean a local path, never a hub id ("org/name")."""
    return (
        Path(name).is_absolute()
        or name in (".", "..")
        or name.startswith(("./", "../", "~"))
        or name.count("/") > 1
    )


def local_model_dir(name_or_path: str | Path) -> Path | None:
    """The local model directory a model name means, None for a hub id. A name that can only
    be a path (absolute, ./, ../, ~, two or more '/') but is no directory, and a directory that
    is not a saved model (no config.json, no tokenizer), are LetiErrors saying what is missing;
    a name that could be either ('runs/model', 'gpt2') and is no local directory is a hub id."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    hint = "pass a local directory saved with save_pretrained, or a hub id such as Salesforce/codegen-350M-mono"
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            return path  # a peft adapter: its base model is checked when it loads
        if not (path / "config.json").is_file():
            raise LetiError(f"model directory {name} has no config.json, so it is not a saved model; "
                            "save it with model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)")
        if not any((path / f).is_file() for f in _TOKENIZER_FILES):
            raise LetiError(f"model directory {name} has no tokenizer (none of {', '.join(_TOKENIZER_FILES[:2])}, ...); "
                            "save it there with tokenizer.save_pretrained(DIR)")
        if not any((path / f).is_file() for f in _WEIGHT_FILES):
            # transformers' own error for this named no fix (and, for a run's checkpoint, no run)
            raise LetiError(f"model directory {name} has no weights (none of {', '.join(_WEIGHT_FILES[:2])}, ...); "
                            f"{_model_dir_fix(path, 'save them there with model.save_pretrained(DIR)')}")
        return path
    if path.exists():
        raise LetiError(f"model {name} is a file, not a model directory; {hint}")
    if is_path_like(name):
        where = "" if Path(name).is_absolute() else (
            f" ({path})" if name.startswith("~") else f" (relative to the current directory {Path.cwd()})")
        raise LetiError(f"no such model directory: {name}{where}; {hint}")
    return None


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> set[str]:
    """Every special token of a tokenizer: its named ones and its added tokens marked special."""
    tokens = {str(t) for t in tokenizer.all_special_tokens}
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    tokens |= {t.content for t in decoder.values() if getattr(t, "special", False)}
    return tokens


def adapter_config(path: str | Path) -> dict | None:
    """The peft adapter_config.json of an adapter directory (as trainer.lora.save='adapter'
    writes), None for anything else. An adapter that does not name its base model is refused."""
    config = Path(path) / "adapter_config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text(encoding="utf-8"))
    if not data.get("base_model_name_or_path"):
        raise LetiError(f"{config}: no base_model_name_or_path; save the adapter with peft")
    return data


@contextmanager
def quiet_peft() -> Iterator[None]:
    """peft's notices about nothing wrong: get_peft_model sets fan_in_fan_out itself for GPT-2's
    Conv1D layers; get_peft_model and PeftModel.from_pretrained ask transformers a question
    transformers 5 renamed (is_gradient_checkpointing); on a fused mixture of experts peft adds
    rank/alpha patterns for its checkpoint conversion (gate_up_proj) that new adapters do not use."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="fan_in_fan_out is set to False", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message="The following (rank|alpha)_pattern keys did not match",
                                category=RuntimeWarning)
        # merging into a 4-bit copy (QLoRA over a merged adapter) rounds, as its training copy does anyway
        warnings.filterwarnings("ignore", message="Merge lora module to 4-bit linear", category=UserWarning)
        yield


def written_by_leti(path: str | Path, trust_remote_code: bool = False, revision: str | None = None) -> bool:
    """Whether the adapter directory `path` is one leti saved (trainer.lora.save='adapter'): adapters
    over its base model with LeTI's tokens added as leti adds them. save_model saves the tokenizer
    beside the adapters: the one leti builds for the base (load_tokenizer), the same length and
    the same ids for LeTI's tokens, also when the adapters train none of their rows
    (train_special_tokens: false). Without a tokenizer (the adapter files copied alone) it is
    leti's when the adapters train rows of LeTI's tokens (trainable_token_indices) at the ids leti
    gives them. Anything else is a user's own adapter: no tokenizer, its base model's, or one with
    tokens of its own (LeTI's included, at other ids) that only the adapter's tokenizer places.
    `revision`: the hub base model's (load_model_and_tokenizer)."""
    adapter = adapter_config(path)
    return adapter is not None and _leti_base_tokenizer(Path(path), adapter, trust_remote_code, revision) is not None


def _leti_base_tokenizer(path: Path, adapter: dict, trust_remote_code: bool,
                         revision: str | None = None) -> PreTrainedTokenizerBase | None:
    """For an adapter directory leti wrote (written_by_leti): the tokenizer leti builds for its
    base, which the adapters were trained with; None for any other adapter directory."""
    has_tokenizer = any((path / f).is_file() for f in _TOKENIZER_FILES)
    rows = _trainable_rows(adapter)
    if has_tokenizer and not set(SPECIAL_TOKENS) <= _saved_tokens(path):
        return None  # cheap: no tokenizer loaded
    if not has_tokenizer and not rows:
        return None
    # the tokenizer leti builds for the base (a LetiError naming the base where it cannot load)
    built = _load_base(path, str(adapter["base_model_name_or_path"]),
                       lambda name: load_tokenizer(name, trust_remote_code, revision))
    ids = [built.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    if not has_tokenizer:
        return built if set(rows) <= set(ids) else None
    saved = adapter_tokenizer(path, trust_remote_code)
    same = len(saved) == len(built) and [saved.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == ids
    return built if same else None


def _trainable_rows(adapter: dict) -> list[int]:
    """The embedding rows an adapter trains (peft trainable_token_indices: a list, or a list per
    embedding module)."""
    rows = adapter.get("trainable_token_indices") or []
    lists = rows.values() if isinstance(rows, dict) else [rows]
    return [i for rows in lists if isinstance(rows, list) for i in rows if isinstance(i, int)]


def load_tokenizer(name_or_path: str | Path, trust_remote_code: bool = False,
                   revision: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer load_model_and_tokenizer gives `name_or_path` (and `revision`), LeTI's tokens
    included, without loading any weights (padding is set where the model loads). An adapter
    directory: its base's (through a chain of adapters) for one leti wrote, else its own or,
    without one, its base's."""
    local = local_model_dir(name_or_path)
    name = os.path.abspath(local) if local is not None else str(name_or_path)
    adapter = adapter_config(local) if local is not None else None
    if adapter is None:
        tokenizer = _load_plain(name, local, None, trust_remote_code, revision)[1]
    else:
        base = str(adapter["base_model_name_or_path"])
        built = _leti_base_tokenizer(local, adapter, trust_remote_code, revision)
        if built is not None:
            return built
        tokenizer = adapter_tokenizer(local, trust_remote_code) or \
            _load_base(name, base, lambda b: load_tokenizer(b, trust_remote_code, revision))
    _add_tokens(tokenizer)  # none added again to the base's, which has them
    return tokenizer


def base_model(name_or_path: str | Path) -> str:
    """The model under `name_or_path`'s chain of adapter directories (itself when it is none): the
    one whose config states the architecture and context."""
    name = str(name_or_path)
    local = local_model_dir(name)
    while local is not None and (adapter := adapter_config(local)) is not None:
        name = str(adapter["base_model_name_or_path"])
        local = _load_base(local, name, local_model_dir)  # a bad base names the adapter that names it
    return os.path.abspath(local) if local is not None else name


def _saved_tokens(path: Path) -> set[str]:
    """The added tokens (and, for a tokenizer.json, the vocabulary) a saved tokenizer names."""
    tokens: set[str] = set()
    for name in ("tokenizer.json", "tokenizer_config.json", "added_tokens.json"):
        try:
            data = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        if name == "added_tokens.json":
            tokens |= set(data)
            continue
        added = data.get("added_tokens") or []  # tokenizer.json: a list of {"content": ...}
        decoder = data.get("added_tokens_decoder") or {}  # tokenizer_config.json: {id: {"content": ...}}
        for entry in [*added, *(decoder.values() if isinstance(decoder, dict) else [])]:
            if isinstance(entry, dict) and isinstance(entry.get("content"), str):
                tokens.add(entry["content"])
        vocab = (data.get("model") or {}).get("vocab") if isinstance(data.get("model"), dict) else None
        if isinstance(vocab, dict):
            tokens |= set(SPECIAL_TOKENS) & set(vocab)
    return tokens


def _load_base(path: str | Path, base: str, loader):
    """loader(base) with a LetiError about the base naming the adapter that names it."""
    try:
        return loader(base)
    except RemoteCodeNotTrusted:
        raise  # names the base model already; kept as is so that callers can reword its fix
    except LetiError as err:
        raise LetiError(f"{Path(path) / 'adapter_config.json'} names base model {base!r}: {err}") from None


def _load_adapter(path: str | Path, base: str, dtype: str, device: str, trust_remote_code: bool,
                  revision: str | None = None):
    """An adapter directory leti wrote: its base with LeTI's tokens + the adapters, trainable."""
    from peft import PeftModel

    # The base gets LeTI's tokens exactly as when the adapters were created (same rows, same
    # mean initialisation); the adapters carry the trained rows of those tokens.
    model, tokenizer = _load_base(path, base,
                                  lambda name: load_model_and_tokenizer(name, dtype, device, trust_remote_code,
                                                                        revision))
    try:
        with quiet_peft():
            model = PeftModel.from_pretrained(model, str(path), is_trainable=True)
    except Exception as err:  # noqa: BLE001 - peft's size mismatches, missing keys, ...: one line
        raise LetiError(f"adapter checkpoint {path} could not be applied to its base model {base} with LeTI's "
                        f"tokens ({message_line(err)}); it was saved over another base model, or is damaged: "
                        "restore it") from None
    model.eval()
    return model, tokenizer


def _merge_foreign_adapter(path: str, base: str, dtype: str, torch_dtype: torch.dtype, trust_remote_code: bool,
                           revision: str | None = None):
    """A user's own adapter directory (one leti did not write) merged into its base model, as
    it was trained: on the base's own vocabulary, before LeTI's tokens are added (the caller
    adds them). The tokenizer is the adapter directory's own when it has one, else the base's."""
    base_local = _load_base(path, base, local_model_dir)
    if base_local is not None:
        base = os.path.abspath(base_local)
    if base_local is not None and adapter_config(base_local) is not None:
        # an adapter over an adapter: its base loaded as leti loads it, merged, LeTI's tokens included
        model, tokenizer = _load_base(path, base,
                                      lambda name: load_model_and_tokenizer(name, dtype, "cpu", trust_remote_code,
                                                                            revision))
        if hasattr(model, "peft_config"):
            model = model.merge_and_unload()
    else:
        model, tokenizer = _load_base(path, base,
                                      lambda name: _load_plain(name, base_local, torch_dtype, trust_remote_code,
                                                               revision))
    tokenizer = adapter_tokenizer(path, trust_remote_code) or tokenizer
    model = merge_adapter(model, path, base, len(tokenizer))
    model.requires_grad_(True)  # peft froze the base's weights; a loaded model trains them all
    # What the weights are now: an adapter leti trains over this model records it as its base
    # (and a vLLM sampler given the model reads base + adapter from there).
    model.name_or_path = path
    model.config.name_or_path = path
    return model, tokenizer


def adapter_tokenizer(path: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved in an adapter directory, None when it holds none."""
    if not any((Path(path) / f).is_file() for f in _TOKENIZER_FILES):
        return None
    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ImportError) as err:
        raise LetiError(f"the tokenizer saved in adapter directory {path} could not be loaded "
                        f"({message_line(err)}); save it there again with tokenizer.save_pretrained(DIR), "
                        "or remove its files to use the base model's") from None


def merge_adapter(model: PreTrainedModel, path: str | Path, base: str, n_tokens: int) -> PreTrainedModel:
    """The peft adapter in directory `path` applied to `model` (its base model `base`, loaded)
    and merged into it: a plain model. The embeddings first get room for `n_tokens` (the
    adapter's tokenizer: one with tokens added for the adapter's training) and for rows the
    adapter saved whole (modules_to_save); new rows start at the mean of the others, as
    LeTI's own tokens do. Whatever peft refuses is one LetiError line."""
    from peft import PeftModel

    rows = max(n_tokens, _saved_embedding_rows(Path(path), model))
    n_rows = model.get_input_embeddings().weight.shape[0]
    if rows > n_rows:
        model.resize_token_embeddings(rows, mean_resizing=False)
        _mean_init_rows(model, n_rows, rows)
    try:
        with quiet_peft():
            return PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    except Exception as err:  # noqa: BLE001 - peft's size mismatches, missing keys, ...: one line
        raise LetiError(
            f"peft adapter {path} could not be applied to its base model {base} ({message_line(err)}); merge it "
            "into its base yourself (PeftModel.from_pretrained(base, ADAPTER).merge_and_unload(), then "
            "save_pretrained the model and the tokenizer into one directory) and pass that directory"
        ) from None


def _saved_embedding_rows(path: Path, model: PreTrainedModel) -> int:
    """The rows of the input or output embedding an adapter saved whole (modules_to_save, or
    save_embedding_layers), 0 when it saved neither (or saved them as a .bin file)."""
    file = path / "adapter_model.safetensors"
    if not file.is_file():
        return 0
    modules = [model.get_input_embeddings(), model.get_output_embeddings()]
    names = [f".{name}.weight" for name, module in model.named_modules() if any(module is m for m in modules)]
    from safetensors import safe_open

    rows = 0
    try:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if any(key.endswith(name) for name in names):
                    rows = max(rows, f.get_slice(key).get_shape()[0])
    except (OSError, SafetensorError):
        return 0  # a damaged file: peft says so when it loads
    return rows


def add_special_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """Add the LeTI tokens that are missing; returns how many were added. New embedding rows
    (input and, if untied, output) are set to the mean of the rows of the existing vocabulary."""
    old_len = len(tokenizer)
    n_added = _add_tokens(tokenizer)
    new_len = len(tokenizer)
    n_rows = model.get_input_embeddings().weight.shape[0]
    if new_len > n_rows:
        # mean_resizing=False: we set the rows ourselves (plain mean, deterministic). Tokens the
        # tokenizer had beyond the matrix (a pad token added to a tokenizer saved without resizing
        # its model; Qwen2's tokenizer adding <|endoftext|>) get the mean too: resizing leaves
        # them unseeded random, so two loads of one model differed.
        model.resize_token_embeddings(new_len, mean_resizing=False)
        _mean_init_rows(model, min(old_len, n_rows), new_len)
    elif new_len > old_len:
        _mean_init_rows(model, old_len, new_len)
    return n_added


def _add_tokens(tokenizer: PreTrainedTokenizerBase) -> int:
    """LeTI's tokens added to the tokenizer alone (those missing); returns how many were added."""
    existing = [str(t) for t in _extra_special_tokens(tokenizer)]
    wanted = existing + [t for t in SPECIAL_TOKENS if t not in existing]
    # Passing the full list keeps earlier extra special tokens on both transformers 4 and 5.
    n_added = tokenizer.add_special_tokens({"additional_special_tokens": wanted})
    for token in SPECIAL_TOKENS:
        if len(tokenizer.encode(token, add_special_tokens=False)) != 1:
            raise LetiError(f"tokenizer splits special token {token!r}; use a fast HF tokenizer")
    return n_added


def _extra_special_tokens(tokenizer: PreTrainedTokenizerBase) -> list:
    # transformers 5 renamed additional_special_tokens to extra_special_tokens.
    for attr in ("extra_special_tokens", "additional_special_tokens"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, (list, tuple)):
            return list(value)
    return []


@torch.no_grad()
def _mean_init_rows(model: PreTrainedModel, old_len: int, new_len: int) -> None:
    """Rows [old_len, new_len) := mean of rows [0, old_len). Models whose matrix already had
    spare rows (e.g. CodeGen pads to 51200) get those rows overwritten the same way. An output
    head with a bias (Phi) gets the mean bias too: resizing leaves 0 there, which would lift the
    new tokens' logits above every other token's wherever the trained biases are negative."""
    weights = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != weights[0].data_ptr():
        weights.append(output.weight)
    if output is not None and getattr(output, "bias", None) is not None:
        weights.append(output.bias)
    for weight in weights:
        mean = weight[:old_len].float().mean(dim=0)
        weight[old_len:new_len] = mean.to(weight.dtype)


# Config fields holding the longest sequence a model takes: most families; GPT-2 style (older
# configs); MPT and DBRX (ALiBi, but their bias table stops at max_seq_len). BLOOM has none.
_CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_seq_len")


def model_context(config) -> int | None:
    """The model's context length from its config, None when it states none (BLOOM). A composite
    config (Gemma 3, Llama 4, Qwen3.5) states it in its text model's config."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for cfg in (config, text) if text is not config else (config,):
        for name in _CONTEXT_FIELDS:
            value = getattr(cfg, name, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def encode_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of `text` as the model is prompted and trained with it: what the tokenizer puts
    in front (a Llama-style BOS) is kept, an end-of-text token it appends (add_eos_token=True, as
    some Llama/Mistral tokenizers are saved) is dropped: a prompt ending in EOS asks the model to
    write after the end of a document, and a training text ends in EOS only when the text itself
    does (training_text.append_eos). Of the special-token strings spelled out in the text, only
    LeTI's markers (and that final end-of-text) become control tokens (spelled_as_text)."""
    ids = list(tokenizer(text, verbose=False).input_ids)
    spelled = spelled_specials(tokenizer, text)
    eos = tokenizer.eos_token_id
    if not spelled and (eos is None or not ids or ids[-1] != eos):
        return ids
    if tokenizer.num_special_tokens_to_add() == 0:
        # The tokenizer adds nothing (GPT-2, CodeGen, Qwen): a final EOS is the text's own (a
        # training text with training_text.append_eos), so tokenizing it again would find ids.
        return spelled_as_text(tokenizer, ids, spelled, text)
    plain = list(tokenizer(text, add_special_tokens=False, verbose=False).input_ids)
    # ids = what the tokenizer adds in front + plain + what it appends; find where plain ends.
    for start in range(len(ids) - len(plain) + 1):
        if plain and ids[start : start + len(plain)] == plain:
            end = start + len(plain)
            return ids[:start] + spelled_as_text(tokenizer, plain, spelled, text) + [t for t in ids[end:] if t != eos]
    return ids


def spelled_specials(tokenizer: PreTrainedTokenizerBase, text: str) -> dict[int, str]:
    """{id: string} of the tokenizer's own special tokens (BOS, EOS, UNK, chat or fill-in-the-
    middle tokens; not LeTI's markers) whose string `text` spells out. Empty for nearly every text."""
    found = [s for s in tokenizer.all_special_tokens if s and s not in SPECIAL_TOKENS and s in text]
    return {tokenizer.convert_tokens_to_ids(s): s for s in found}


def encode_documents(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of each pretraining document, nothing added, every special-token string in it
    read as text, LeTI's markers too: a source file quoting "</s>" (or leti's own source, "<|bad|>")
    is code, not an end of document or a reward. Documents hold no control tokens of their own, so
    the whole of each is read with split_special_tokens; ordinary text keeps its ids."""
    return tokenizer(texts, add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]


def spelled_as_text(tokenizer: PreTrainedTokenizerBase, ids: list[int], spelled: dict[int, str], text: str) -> list[int]:
    """`ids` (the tokenizer's own reading of `text`, nothing added) with the special tokens that
    the text spelled out read as ordinary text. A task's prompt holding "<s>" (an HTML tag; Llama's
    BOS), a program printing "<|endoftext|>", or a corpus file quoting either, otherwise put a BOS
    or EOS in the middle of a prompt or training text. An EOS that ends the text stays: it is
    training_text.append_eos's.

    Each stretch between LeTI's markers that spells one is tokenized again with
    split_special_tokens=True (not the whole text: that reads the markers as text too): alone, or,
    where the tokenizer reads a stretch otherwise alone than after a marker (Metaspace's
    prepend_scheme 'first', transformers 5's Llama 2, CodeLlama, Mistral: no leading space there),
    as it reads after a newline (_after). Failing both, only each spelled token is replaced by its
    string's ids, as read after a newline where that can be told."""
    if not spelled:
        return ids
    eos = tokenizer.eos_token
    final_eos = eos is not None and text.endswith(eos) and ids[-1:] == [tokenizer.eos_token_id]
    if final_eos:
        ids, text = ids[:-1], text[: -len(eos)]
    markers = {tokenizer.convert_tokens_to_ids(m) for m in SPECIAL_TOKENS}
    stretches: list[list[int]] = [[]]
    for t in ids:
        if t in markers:
            stretches.append([])
        else:
            stretches[-1].append(t)
    texts = re.split("|".join(re.escape(m) for m in SPECIAL_TOKENS), text)
    if len(texts) != len(stretches):  # cannot happen with markers added as special tokens; stay exact-by-token
        texts = [text] * len(stretches)
    out: list[int] = []
    marker_ids = iter(t for t in ids if t in markers)
    for i, (part, part_ids) in enumerate(zip(texts, stretches, strict=True)):
        if i:
            out.append(next(marker_ids))
        if not any(s in part for s in spelled.values()):
            out += part_ids
        elif _encode(tokenizer, part, split=False) == part_ids:
            out += _encode(tokenizer, part, split=True)
        elif _after(tokenizer, part, split=False) == part_ids and (again := _after(tokenizer, part, split=True)):
            out += again
        else:
            for t in part_ids:
                if t in spelled:
                    out += _after(tokenizer, spelled[t], split=True) or _encode(tokenizer, spelled[t], split=True)
                else:
                    out.append(t)
    return out + [tokenizer.eos_token_id] * final_eos


def _encode(tokenizer: PreTrainedTokenizerBase, text: str, split: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=split, verbose=False).input_ids)


def _after(tokenizer: PreTrainedTokenizerBase, text: str, split: bool) -> list[int] | None:
    """The ids of `text` as the tokenizer reads it after a newline, not at the start of a sequence
    (where prepend_scheme 'first' adds a space); None when the newline's ids merge into `text`'s."""
    head = _encode(tokenizer, "\n", split=False)
    ids = _encode(tokenizer, "\n" + text, split=split)
    return ids[len(head):] if ids[: len(head)] == head and len(ids) > len(head) else None


def end_token_ids(generation_config, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The token ids that end a sample: the generation config's eos_token_id (one id, or a list:
    Llama 3 and Qwen2.5 instruct checkpoints name several) and the tokenizer's eos, which
    training texts end in (training_text.append_eos). vLLM stops at the same set (its
    tokenizer's eos, plus the generation config's as stop token ids), so both samplers cut there."""
    eos = getattr(generation_config, "eos_token_id", None)
    ids = set(eos) if isinstance(eos, (list, tuple, set)) else {eos}
    ids.add(tokenizer.eos_token_id)
    return {i for i in ids if isinstance(i, int)}


_DECODE_OPTIONS = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}


def decode_prompt(tokenizer: PreTrainedTokenizerBase, prompt_ids: Sequence[int]) -> str:
    """The prompt's text as decode_completion cuts it off: decode it once per prompt and pass it
    as `head` to decode_completion for each of the prompt's samples."""
    return tokenizer.decode(list(prompt_ids), **_DECODE_OPTIONS)


def decode_completion(tokenizer: PreTrainedTokenizerBase, prompt_ids: Sequence[int], new_ids: Sequence[int],
                      head: str | None = None) -> str:
    """The text that `new_ids` add after the prompt, special tokens kept. Decoded after the prompt
    and cut there, not decoded alone: sentencepiece-style decoders (Llama, Mistral, Gemma: Metaspace
    or a Strip of one leading space) drop the leading space of a sequence's first token, so a
    completion "    return x" decoded alone loses one space of indentation. `head`: the prompt
    decoded by decode_prompt, when the caller has it already."""
    options = _DECODE_OPTIONS
    if not new_ids:
        return ""
    if head is None:
        head = decode_prompt(tokenizer, prompt_ids)
    whole = tokenizer.decode(list(prompt_ids) + list(new_ids), **options)
    if whole.startswith(head):
        return whole[len(head) :]
    return tokenizer.decode(list(new_ids), **options)  # a decoder that rewrites the prompt's text


def set_padding(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Pad with eos when the tokenizer has no pad token; pad on the left so that every row's
    last prompt token sits at the same position when generating a batch."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise LetiError(
                f"tokenizer of {tokenizer.name_or_path!r} has neither pad_token nor eos_token; "
                "set one with tokenizer.add_special_tokens({'pad_token': ...}) before loading"
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


# Below this much free space, a save that failed without saying why (torch's "unexpected pos")
# is taken to have filled the disk: the failed file's own blocks are still held at that point.
_NEARLY_FULL = 64 * 2**20


def save_error(e: Exception, target: Path) -> OSError | None:
    """The OSError naming `target` for a save that the disk refused, or None when `e` is not about
    the disk (the caller re-raises it). torch reports a full disk or EFBIG as RuntimeError
    'unexpected pos' (the OSError as its context when it wrote to a Python file), safetensors as
    SafetensorError '... (os error 28)', a failed write() as OSError: none named the file."""
    cause = e if isinstance(e, OSError) else e.__context__ if isinstance(e.__context__, OSError) else None
    if cause is not None and cause.filename is not None:
        return cause  # already names its file: one line as it is
    code = cause.errno if cause is not None else None
    if code is None and (m := re.search(r"\(os error (\d+)\)", str(e))):
        code = int(m.group(1))
    where = next(p for p in (target, *target.parents) if p.exists())
    free = shutil.disk_usage(where).free
    if code is None:
        if free >= _NEARLY_FULL:
            return None  # room left: a real error, with its traceback
        code = errno.ENOSPC
    reason = os.strerror(code)
    if code in (errno.ENOSPC, errno.EDQUOT):
        reason += f" ({size_text(free)} free there)"
    return OSError(code, f"{reason} while saving", str(target))


def save_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path
) -> Path:
    """Save model and tokenizer into one directory that load_model_and_tokenizer can read."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if hasattr(model, "peft_config"):
            # Adapters only (a peft model, trainer.lora.save='adapter'): the embedding matrix did
            # not train and is rebuilt from the base model on load, so it is not saved again.
            model.save_pretrained(out, save_embedding_layers=False)
        else:
            model.save_pretrained(out)
        # save_pretrained writes only the attributes named in init_kwargs, and set_padding's "left"
        # is set after init: without this, plain transformers loads the checkpoint padding right
        tokenizer.init_kwargs["padding_side"] = tokenizer.padding_side
        tokenizer.save_pretrained(out)
    except (OSError, RuntimeError, SafetensorError) as e:
        if (err := save_error(e, out)) is None:
            raise
        raise err from e
    return out
