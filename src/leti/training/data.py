"""Training data: tokenised LeTI texts with a padding collator, and the packed
continued-pretraining stream.

Loss convention: labels = input_ids everywhere except padding (-100), i.e. the LM loss covers
every non-padding token, reward token and feedback span included (spec, step 4). Padding is
recognised by the attention mask, not the token id, so a real end-of-text token that shares its
id with the pad token still counts.
"""

from __future__ import annotations

import math
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from leti.errors import LetiError, first_line, plural
from leti.model import encode_documents, encode_prompt
from leti.training import corpus_cache
from leti.training.batching import Blank


@dataclass(frozen=True)
class TokenizedTexts:
    examples: list[list[int]]
    n_truncated: int  # texts longer than max_length, cut at the end
    max_length: int

    @property
    def n_tokens(self) -> int:
        return sum(len(e) for e in self.examples)


def tokenize_texts(tokenizer, texts: list[str], max_length: int) -> TokenizedTexts:
    """Token ids per text, tokenized as the samplers tokenize prompts: with what the tokenizer
    itself adds in front (e.g. a Llama-style BOS; GPT-2/CodeGen/Qwen add nothing), so a model is
    trained on the sequences it is later prompted with. An end-of-text token is in the text or not
    (training_text.append_eos); one the tokenizer would append is not (leti.model.encode_prompt). Texts longer than `max_length` keep their first `max_length`
    tokens, so the reward token and feedback at the front are never lost."""
    examples, n_truncated = [], 0
    for text in texts:
        ids = encode_prompt(tokenizer, text)
        if len(ids) > max_length:
            ids, n_truncated = ids[:max_length], n_truncated + 1
        if ids:
            examples.append(ids)
    return TokenizedTexts(examples, n_truncated, max_length)


@dataclass(frozen=True)
class PadCollator:
    """Right-pads a list of token-id lists to the longest in the batch (dynamic padding)."""

    pad_token_id: int

    def __call__(self, batch: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for i, ids in enumerate(batch):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[i, : len(ids)] = 1
        labels = input_ids.masked_fill(attention == 0, -100)
        for i, ids in enumerate(batch):
            if isinstance(ids, Blank):  # a filler that trains nothing (batching.py)
                labels[i] = -100
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


# --- continued-pretraining corpus -------------------------------------------------------------


def stdlib_files(max_files: int) -> list[Path]:
    """This interpreter's standard library sources, sorted by relative path (deterministic);
    third-party packages and test suites' data are left out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    # the third-party trees pruned as they are met, not walked and filtered: they hold most of the
    # files (a venv's torch and transformers), and the corpus is listed at run start and each stage
    # (rglob's files otherwise: os.walk, like it, does not follow links to directories)
    for parent, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in ("site-packages", "dist-packages")]
        files += [Path(parent, name) for name in (*names, *dirs) if name.endswith(".py")]
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    return files[:max_files]


def iter_corpus(corpus: str, max_files: int, hf_data_dir: str | None = None,
                text_field: str = "content") -> Iterator[str]:
    """Source texts of the pretraining corpus, lazily, in a fixed order."""
    local = local_corpus_files(corpus, max_files)
    if local is None:
        yield from _iter_hf_dataset(corpus, max_files, hf_data_dir, text_field)
    else:
        yield from _read_files(local[1])


def local_corpus_files(corpus: str, max_files: int) -> tuple[Path, list[Path]] | None:
    """(root, files read) of a corpus on disk ('stdlib' or a directory of .py files); None for a
    Hugging Face dataset name."""
    if corpus.startswith(("/", "./", "../", "~")):  # a path, never a dataset name: say so, not the hub's name rules
        corpus = str(Path(corpus).expanduser())
        if not Path(corpus).is_dir():
            raise LetiError(f"trainer.pretrain_corpus: no directory '{corpus}'; point it at a directory of .py files, "
                            "'stdlib', or a Hugging Face dataset name")
    if corpus == "stdlib":
        return Path(sysconfig.get_paths()["stdlib"]), stdlib_files(max_files)
    if Path(corpus).is_dir():
        root = Path(corpus)
        paths = sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix())[:max_files]
        if not paths:
            raise LetiError(f"trainer.pretrain_corpus: directory '{corpus}' holds no .py files; point it at Python sources or use 'stdlib'")
        return root, paths
    return None


def _read_file(path: Path) -> str | None:
    """A corpus file's text, None when it cannot be read as UTF-8 (the corpus leaves it out)."""
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # a few stdlib test files are deliberately not UTF-8


def _read_files(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        text = _read_file(path)
        if text is not None:
            yield text


def check_corpus(corpus: str, hf_data_dir: str | None = None, text_field: str = "content", *,
                 max_files: int = 1, heldout_fraction: float = 0.0, announce: bool = False) -> None:
    """At run start, not after the first sampling phase: the corpus yields text (a dataset's first
    record: a wrong name, a gated dataset without a login or no network fails in one line) and, on
    disk, its readable files leave some to train on after the held-out split (split_documents'
    refusal; a dataset's size is known only once it is read). Files are read only as far as that
    takes. `announce`: say so before reading a dataset from the hub (without a network,
    huggingface_hub retries for over a minute before the error)."""
    local = local_corpus_files(corpus, max_files)
    if local is None:
        if announce:
            print(f"leti: reading the first record of trainer.pretrain_corpus '{corpus}' from the hub "
                  "(offline, HF_HUB_OFFLINE=1 skips the retries)", flush=True)
        if next(iter_corpus(corpus, 1, hf_data_dir, text_field), None) is None:
            raise LetiError(f"trainer.pretrain_corpus '{corpus}' yielded no text; point it at Python sources or use 'stdlib'")
        return
    root, paths = local
    readable, unreadable = 0, []
    for path in paths:
        if _read_file(path) is None:
            unreadable.append(path)
            continue
        readable += 1
        # enough read once the split leaves a file to train on (then any more files do too)
        if heldout_fraction == 0 or math.ceil(heldout_fraction * readable) < readable:
            return
    names = ", ".join(str(p.relative_to(root)) for p in unreadable[:3])
    more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
    if readable == 0:
        raise LetiError(f"trainer.pretrain_corpus '{corpus}': none of its {plural(len(paths), '.py file')} can be read as "
                        f"UTF-8 ({names}{more}); save them as UTF-8, or point it at other Python sources or 'stdlib'")
    try:
        split_documents(readable, heldout_fraction, 0)  # refuses, naming the count
    except LetiError as e:
        if unreadable:  # they do not count: say why the count is less than the files
            raise LetiError(f"{e} ({plural(len(unreadable), 'other file')} not UTF-8, left out: {names}{more})") from None
        raise


def check_fills_batch(tokenizer, corpus: str, block_size: int, batch_size: int, max_files: int,
                      hf_data_dir: str | None = None, text_field: str = "content", separator: bool = True, *,
                      mix: bool, heldout: bool, cache_dir: str | Path | None = None, progress: bool = False,
                      heldout_fraction: float = 0.0, split_seed: int = 42, packing: str = "stream") -> None:
    """At run start, not at the first training stage after a whole sampling phase: the corpus
    gives what a stage asks of it, found the way the stage finds it (trainer.train: open_corpus,
    then pretrain_batches' first batch when `mix`, heldout_blocks' first block when `heldout`),
    so it refuses what the stage would, and a little more: with trainer.pretrain_mix_ratio below 1,
    a stage of fewer than 1/ratio LeTI steps takes no pretraining batch at all, which the number
    of texts decides only later (refused all the same: such a corpus fails any longer stage).
    Costs: lazily (is_lazy) the corpus is read only as far as one batch goes; with `cache_dir` the
    cache is built now (or read back), and the stages then read it rather than tokenize; without
    one, but with a split or the authors' packing, the corpus is tokenized here once more than the
    stages' own tokenizing of it (at every start and resume)."""
    if not (mix or heldout):
        return
    tokens = None
    if not is_lazy(cache_dir, heldout_fraction, packing):
        tokens = open_corpus(tokenizer, corpus, max_files, hf_data_dir, text_field, separator, cache_dir, progress)
    opened = dict(hf_data_dir=hf_data_dir, text_field=text_field, separator=separator, cache_dir=cache_dir,
                  heldout_fraction=heldout_fraction, split_seed=split_seed, packing=packing, tokens=tokens)
    if mix:
        next(pretrain_batches(tokenizer, corpus, block_size, batch_size, max_files, PackingStats(), **opened))
    if heldout:
        heldout_blocks(tokenizer, corpus, block_size, max_files, max_blocks=1, **opened)


def _iter_hf_dataset(name: str, max_files: int, data_dir: str | None, text_field: str) -> Iterator[str]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise LetiError("trainer.pretrain_corpus: a Hugging Face dataset needs `pip install datasets`") from e
    try:
        # streaming: only the files actually used are downloaded
        ds = datasets.load_dataset(name, data_dir=data_dir, split="train", streaming=True)
    except Exception as e:
        # 'runs/corpus' reads as a hub id (org/name) when no such directory exists; a first part
        # that is a local directory says the user meant a path
        head = name.split("/", 1)[0]
        local = (f"; no directory {os.path.abspath(name)} exists either (a local corpus must be a directory of .py files)"
                 if "/" in name and head and os.path.isdir(head) else "")
        raise LetiError(
            f"trainer.pretrain_corpus: cannot load dataset '{name}' ({first_line(e)}){local}; offline, set "
            "trainer.pretrain_corpus: stdlib (or a directory of .py files); online, check the name, the "
            "network and, for a gated dataset, its terms and `hf auth login`"
        ) from e
    for i, row in enumerate(ds):
        if i >= max_files:
            break
        if text_field not in row:
            raise LetiError(f"trainer.pretrain_text_field: dataset '{name}' has no column '{text_field}' (columns: {sorted(row)})")
        yield row[text_field]



@dataclass
class PackingStats:
    blocks: int = 0
    tokens: int = 0  # non-pad tokens in emitted blocks
    slots: int = 0  # block_size * blocks

    @property
    def efficiency(self) -> float:
        return self.tokens / self.slots if self.slots else 0.0


def _separator_id(tokenizer, separator: bool) -> int | None:
    """The token put after each packed document: EOS when `separator`, else none."""
    if not separator:
        return None
    if tokenizer.eos_token_id is None:
        raise LetiError("tokenizer has no eos token; set trainer.pretrain_eos_separator: false to pack documents without one")
    return tokenizer.eos_token_id


def pack_blocks(texts: Iterator[str], tokenizer, block_size: int, stats: PackingStats,
                separator: bool = True) -> Iterator[list[int]]:
    """Concatenate documents (with an EOS after each when `separator`) and cut the stream into
    full blocks of `block_size` tokens. Blocks are always full (a document spills into the next
    block), so packing efficiency is 100% except for a final partial block, which is dropped."""
    eos = _separator_id(tokenizer, separator)
    buf: list[int] = []
    for text in texts:
        buf.extend(encode_documents(tokenizer, [text])[0])
        if eos is not None:
            buf.append(eos)
        start = 0  # cut blocks off the front by index: slicing the rest per block is quadratic
        while len(buf) - start >= block_size:
            block = buf[start : start + block_size]
            start += block_size
            stats.blocks, stats.tokens, stats.slots = stats.blocks + 1, stats.tokens + block_size, stats.slots + block_size
            yield block
        del buf[:start]


def pretrain_batches(tokenizer, corpus: str, block_size: int, batch_size: int, max_files: int,
                     stats: PackingStats, hf_data_dir: str | None = None,
                     text_field: str = "content", separator: bool = True, *,
                     cache_dir: str | Path | None = None, progress: bool = False,
                     heldout_fraction: float = 0.0, split_seed: int = 42, packing: str = "stream",
                     tokens: corpus_cache.TokenStream | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Endless stream of packed batches (the corpus restarts when exhausted). With `cache_dir`,
    the corpus is tokenized once into an on-disk cache there (leti.training.corpus_cache) and
    every pass reads it back: the same batches, without re-reading or re-tokenizing the corpus.
    `progress`: a progress bar while the corpus is tokenized.

    With `heldout_fraction` > 0 the stream holds only the training documents of
    split_documents(heldout_fraction, split_seed), in the split's order; heldout_blocks has the
    others. `packing`: how documents become blocks (document_blocks: 'stream' or the authors'
    groups). `tokens`: the corpus as open_corpus gave it already (not opened again)."""
    if tokens is not None or not is_lazy(cache_dir, heldout_fraction, packing):
        stream = tokens or open_corpus(tokenizer, corpus, max_files, hf_data_dir, text_field, separator, cache_dir, progress)
        if heldout_fraction > 0:
            documents, what = split_documents(stream.n_documents, heldout_fraction, split_seed)[0], "'s training files"
        else:
            documents, what = np.arange(stream.n_documents), ""
        while True:  # a pass over the documents, then the next
            emitted = False
            for batch in _batched(document_blocks(stream, documents, block_size, packing), batch_size, stats):
                emitted = True
                yield batch
            if not emitted:
                # the authors' groups each drop their tail: enough tokens may still fill no batch
                tails = (packing != "stream"
                         and int((stream.offsets[documents + 1] - stream.offsets[documents]).sum()) // block_size >= batch_size)
                raise _too_small(corpus, block_size, batch_size, what, limited=_max_files_limited(corpus, max_files, stream.n_documents),
                                 max_files=max_files, packing_tails=tails)
    # no cache and no split: the corpus read and tokenized lazily, every pass
    collate = PadCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    while True:
        batch: list[list[int]] = []
        emitted = False
        texts = _Counted(iter_corpus(corpus, max_files, hf_data_dir, text_field))
        for block in pack_blocks(texts, tokenizer, block_size, stats, separator):
            batch.append(block)
            if len(batch) == batch_size:
                emitted = True
                yield collate(batch)
                batch = []
        if not emitted:
            raise _too_small(corpus, block_size, batch_size, limited=_max_files_limited(corpus, max_files, texts.n),
                             max_files=max_files)


def is_lazy(cache_dir: str | Path | None, heldout_fraction: float, packing: str) -> bool:
    """Whether pretrain_batches reads the corpus lazily, as far as each pass goes (no cache, no
    held-out split, 'stream' packing), rather than from a token stream opened whole (open_corpus)."""
    return cache_dir is None and heldout_fraction == 0 and packing == "stream"


class _Counted(Iterator[str]):
    """The texts of an iterator, counting them as they are read."""

    def __init__(self, texts: Iterator[str]) -> None:
        self.texts, self.n = texts, 0

    def __next__(self) -> str:
        text = next(self.texts)
        self.n += 1
        return text


def _max_files_limited(corpus: str, max_files: int, n_read: int) -> bool:
    """Whether trainer.pretrain_max_files left some of the corpus out. Asked only once the corpus
    is refused: listing a directory again costs a walk of it."""
    local = local_corpus_files(corpus, max_files + 1)
    if local is None:
        return n_read >= max_files  # a dataset read up to the limit; whether more rows follow is not known unread
    return len(local[1]) > max_files


def _too_small(corpus: str, block_size: int, batch_size: int, what: str = "", *, limited: bool = False,
               max_files: int = 0, packing_tails: bool = False) -> LetiError:
    """One line naming what to change: the corpus (or pretrain_max_files, when it cut the corpus
    short), the authors' packing (when its dropped group tails are what left too few blocks), or
    the batch."""
    fixes = ["a larger corpus"]
    if limited:
        what += f" (its first {plural(max_files, 'file')}: trainer.pretrain_max_files)"
        fixes.insert(0, "a larger trainer.pretrain_max_files")
    if packing_tails:
        what += ", packed by trainer.pretrain_packing 'authors' (each group of files drops its tail short of a block),"
        fixes.append("trainer.pretrain_packing: stream")
    fixes.append("smaller trainer.batch_size")
    fix = f"{', '.join(fixes[:-1])} or {fixes[-1]}"
    return LetiError(f"trainer.pretrain_corpus '{corpus}'{what} is smaller than one batch of {batch_size} x {block_size} tokens; use {fix}")


def open_corpus(tokenizer, corpus: str, max_files: int, hf_data_dir: str | None, text_field: str,
                separator: bool, cache_dir: str | Path | None, progress: bool) -> corpus_cache.TokenStream:
    """The corpus's token stream: from the cache in `cache_dir` (built on first use), or, without
    one, tokenized into memory now. A training stage opens it once for its passes and its
    held-out blocks (pretrain_batches' and heldout_blocks' `tokens`)."""
    eos = _separator_id(tokenizer, separator)
    local = local_corpus_files(corpus, max_files)
    if local is not None:
        root, paths = local

        def texts() -> Iterator[str]:
            return _read_files(paths)  # the files fingerprinted, not a new listing
    else:
        def texts() -> Iterator[str]:
            return _iter_hf_dataset(corpus, max_files, hf_data_dir, text_field)
    total = len(local[1]) if local is not None else max_files
    if cache_dir is None:
        return corpus_cache.tokenize_in_memory(texts(), tokenizer, eos, total=total, progress=progress)
    fields: dict = {"corpus": corpus, "hf_data_dir": hf_data_dir, "text_field": text_field, "max_files": max_files,
                    "separator": separator, "tokenizer": corpus_cache.tokenizer_fingerprint(tokenizer)}
    if local is not None:
        fields.update(root=str(root.resolve()), n_files=len(paths), files=corpus_cache.files_fingerprint(root, paths))
    elif hf_data_dir and Path(hf_data_dir).is_dir():
        # a local data_dir (the json / csv / parquet / text builders): edits there must rebuild too
        data = Path(hf_data_dir)
        files = sorted((p for p in data.rglob("*") if p.is_file()), key=lambda p: p.relative_to(data).as_posix())
        fields.update(data_root=str(data.resolve()), data_files=corpus_cache.files_fingerprint(data, files))
    return corpus_cache.token_stream(cache_dir, fields, texts, tokenizer, eos, total=total, progress=progress)


def _full_blocks(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    # PadCollator's output for full blocks: nothing to pad, so no -100 labels
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


# --- held-out documents -----------------------------------------------------------------------


def split_documents(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) indices of `n` documents, as the authors split their corpus with
    `datasets`: Dataset.train_test_split(test_size=fraction, seed=seed) takes a permutation from
    numpy.random.default_rng(seed), holds out its first ceil(fraction * n) rows and trains on the
    rest in the permutation's order. Hand-written rather than called because the corpus here is a
    token stream, not a Dataset; tests check it against datasets itself."""
    n_heldout = math.ceil(fraction * n)
    if n_heldout >= n:
        raise LetiError(f"trainer.pretrain_heldout_fraction {fraction} of {n} corpus files leaves none to train on; "
                        "use more files (trainer.pretrain_max_files) or a smaller fraction")
    order = np.random.default_rng(seed).permutation(n)
    return order[n_heldout:], order[:n_heldout]


# The authors' packing (run_leti.py): `tokenized.map(group_texts, batched=True, num_proc=8)` on each
# split. datasets cuts a split into num_proc contiguous shards (Dataset.shard(contiguous=True)) and
# hands group_texts 1,000 files at a time within a shard; group_texts concatenates them and keeps
# whole blocks, dropping the group's tail. Each split then keeps a multiple of 128 blocks (their
# global batch). Hand-written because the corpus here is a token stream, not a Dataset; tests
# check it against datasets itself.
AUTHORS_SHARDS, AUTHORS_GROUP_FILES, AUTHORS_BLOCK_MULTIPLE = 8, 1000, 128
PACKINGS = ("authors", "stream")


def packing_groups(documents: np.ndarray, packing: str = "stream") -> list[np.ndarray]:
    """The runs of `documents` packed each on its own: all of them ('stream'), or the authors'
    groups of at most 1,000 files within 8 contiguous shards ('authors'; fewer shards for fewer
    than 8 files, as datasets reduces num_proc)."""
    if packing == "stream" or len(documents) == 0:
        return [documents]
    n = len(documents)
    shards = min(AUTHORS_SHARDS, n)
    div, mod = divmod(n, shards)
    groups = []
    for rank in range(shards):
        start = div * rank + min(rank, mod)
        end = start + div + (1 if rank < mod else 0)
        groups += [documents[i : min(i + AUTHORS_GROUP_FILES, end)] for i in range(start, end, AUTHORS_GROUP_FILES)]
    return groups


def document_blocks(stream: corpus_cache.TokenStream, documents: np.ndarray, block_size: int,
                    packing: str = "stream") -> Iterator[np.ndarray]:
    """The `documents` (indices into `stream`) end to end in that order, cut into full blocks of
    `block_size` tokens; a block may span documents. 'stream': one run, the tail short of a block
    dropped. 'authors': each of packing_groups' runs on its own, each run's tail dropped (a run
    shorter than one block gives none; the authors' group_texts kept it as one short block, which
    no batch of full blocks can hold), and a multiple of 128 blocks kept when there are 128 or more."""
    groups = packing_groups(documents, packing)
    blocks = (block for group in groups for block in _run_blocks(stream, group, block_size))
    if packing == "stream":
        return blocks
    offsets = stream.offsets
    total = sum(int((offsets[g + 1] - offsets[g]).sum()) // block_size for g in groups)
    keep = total - total % AUTHORS_BLOCK_MULTIPLE if total >= AUTHORS_BLOCK_MULTIPLE else total
    return islice(blocks, keep)


def _run_blocks(stream: corpus_cache.TokenStream, documents: np.ndarray, block_size: int) -> Iterator[np.ndarray]:
    tokens, offsets = stream.tokens, stream.offsets
    parts: list[np.ndarray] = []
    have = 0
    for i in documents:
        doc = tokens[offsets[i] : offsets[i + 1]]
        parts.append(doc)
        have += len(doc)
        if have >= block_size:
            flat = np.concatenate(parts)
            n = len(flat) // block_size
            yield from flat[: n * block_size].reshape(n, block_size)
            parts, have = [flat[n * block_size :]], len(flat) - n * block_size


def _batched(blocks: Iterator[np.ndarray], batch_size: int, stats: PackingStats) -> Iterator[dict[str, torch.Tensor]]:
    """Full blocks, batch_size at a time (a last short batch is dropped); `stats` counts every
    block as it is cut, as pack_blocks does."""
    batch: list[np.ndarray] = []
    for block in blocks:
        stats.blocks, stats.tokens, stats.slots = stats.blocks + 1, stats.tokens + len(block), stats.slots + len(block)
        batch.append(block)
        if len(batch) == batch_size:
            yield _full_blocks(torch.from_numpy(np.stack(batch).astype(np.int64)))
            batch = []


def heldout_blocks(tokenizer, corpus: str, block_size: int, max_files: int, hf_data_dir: str | None = None,
                   text_field: str = "content", separator: bool = True, *, heldout_fraction: float, split_seed: int,
                   cache_dir: str | Path | None = None, progress: bool = False, packing: str = "stream",
                   max_blocks: int | None = None, tokens: corpus_cache.TokenStream | None = None) -> torch.Tensor:
    """The held-out documents of split_documents(heldout_fraction, split_seed), packed as the
    training documents are: a (blocks, block_size) tensor of at most `max_blocks` blocks (None: all).
    `tokens`: the corpus as open_corpus gave it already (not opened again)."""
    stream = tokens or open_corpus(tokenizer, corpus, max_files, hf_data_dir, text_field, separator, cache_dir, progress)
    _, heldout = split_documents(stream.n_documents, heldout_fraction, split_seed)
    blocks = list(islice(document_blocks(stream, heldout, block_size, packing), max_blocks))
    if not blocks:
        raise LetiError(f"trainer.pretrain_corpus '{corpus}': its held-out files (trainer.pretrain_heldout_fraction "
                        f"{heldout_fraction}) fill no block of {block_size} tokens; use more files or a larger fraction")
    return torch.from_numpy(np.stack(blocks).astype(np.int64))
