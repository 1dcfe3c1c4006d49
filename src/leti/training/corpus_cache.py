"""On-disk cache of the tokenized continued-pretraining corpus.

Without it, `pretrain_batches` re-reads the corpus and re-tokenizes it on every pass (the trainer
starts a pass every epoch: ~150 per run), and for a hub dataset streams it from the hub each time.
With a cache directory the corpus's token stream (every document's ids, each followed by EOS when
documents are separated) is built once per key and memory-mapped afterwards:

    cache_dir/<key>/tokens.bin   the stream: raw little-endian uint16 (ids < 65536) or int32
    cache_dir/<key>/offsets.bin  where each document starts in it: little-endian int64, one more
                                 than there are documents (the last is the stream's length), so
                                 the documents can be split and reordered (data.split_documents)
    cache_dir/<key>/meta.json    what it holds: dtype, n_tokens, n_documents and the key's fields
    cache_dir/<key>.lock         fcntl lock file: one process builds a key, the others wait

Blocks are cut from the stream when read, so one entry serves every block and batch size.

- The key is a sha256 of everything the stream depends on (`fields`, given by the caller: corpus,
  file limit, separator, a tokenizer fingerprint and, for files on disk, their paths, sizes and
  mtimes), so a changed tokenizer or an edited file gets a new entry, never stale ids.
- A build writes into a temporary directory and renames it into place: a build killed midway
  leaves no directory under the key's name, only a temporary one that the next build removes.
- An entry whose meta.json is unreadable or disagrees with tokens.bin's size is rebuilt.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from leti.cache import cache_root
from leti.errors import LetiError
from leti.model import encode_documents
from leti.progress import Progress

FORMAT_VERSION = 3  # part of every key: a change of layout or of what is stored never reads old entries (2: offsets.bin, 3: special-token strings read as text)
_DTYPES = {"uint16": np.dtype("<u2"), "int32": np.dtype("<i4")}
_OFFSET = np.dtype("<i8")
_CHUNK = 64  # documents tokenized per call: fast tokenizers encode a batch on all cores


@dataclass(frozen=True)
class TokenStream:
    """A tokenized corpus: every document's ids end to end (each followed by EOS when documents
    are separated), and where each document starts."""

    tokens: np.ndarray  # 1-D; memory-mapped when read from the cache
    offsets: np.ndarray  # int64, n_documents + 1: document i is tokens[offsets[i]:offsets[i + 1]]

    @property
    def n_documents(self) -> int:
        return len(self.offsets) - 1


def default_cache_dir() -> Path:
    """cache_root()/pretrain: $LETI_CACHE_DIR/pretrain, else $XDG_CACHE_HOME/leti/pretrain, else
    ~/.cache/leti/pretrain."""
    return cache_root() / "pretrain"


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of what decides the ids a tokenizer gives a text: its vocabulary with added tokens,
    its EOS id and, for a fast tokenizer, its whole pipeline (normalizer, pre-tokenizer, merges)."""
    h = hashlib.sha256()
    vocab = sorted(tokenizer.get_vocab().items())
    h.update(json.dumps([type(tokenizer).__name__, tokenizer.eos_token_id, vocab]).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        # call-time settings that an earlier call (padding=True, truncation) leaves behind; they do
        # not change how a text is split, and keeping them would change the key between calls
        spec.pop("padding", None)
        spec.pop("truncation", None)
        h.update(json.dumps(spec, sort_keys=True).encode())
    return h.hexdigest()


def files_fingerprint(root: Path, paths: Iterable[Path]) -> str:
    """sha256 of each file's path relative to `root`, size and mtime (in that order): an edited,
    added, removed or renamed file changes it, without reading any file."""
    rows = []
    for p in paths:
        try:
            st = p.stat()
            rows.append((p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
        except OSError:  # unreadable or vanished: the corpus reader skips it too
            rows.append((p.relative_to(root).as_posix(), None, None))
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def cache_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps({"format": FORMAT_VERSION, **fields}, sort_keys=True).encode()).hexdigest()[:32]


def token_stream(cache_dir: str | Path, fields: dict, texts: Callable[[], Iterator[str]], tokenizer,
                 eos: int | None, *, total: int | None = None, progress: bool = False) -> TokenStream:
    """The cached token stream for `fields` (a JSON-able dict naming everything the stream depends
    on), built from `texts()` if no valid entry exists: each text tokenized as `pack_blocks` does
    (no special tokens added), followed by `eos` unless it is None. Its arrays are read-only
    (memory-mapped). `total` and `progress`: the build's progress bar."""
    cache_dir = Path(cache_dir).expanduser()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unusable(cache_dir, e) from e
    key = cache_key(fields)
    entry = cache_dir / key
    tokens = _open(entry, key)
    if tokens is not None:
        return tokens
    with _locked(cache_dir / f"{key}.lock"):
        tokens = _open(entry, key)  # another process may have built it while this one waited
        if tokens is None:
            _discard(cache_dir, key)
            _build(cache_dir, key, fields, texts, tokenizer, eos, total, progress)
            tokens = _open(entry, key)
            if tokens is None:
                raise LetiError(f"pretraining corpus cache: the entry just built in {entry} does not read back; "
                                "is the cache directory on a file system that renames atomically?")
    return tokens


def _open(entry: Path, key: str) -> TokenStream | None:
    """The entry's stream, or None when it is missing or damaged (not to be trusted)."""
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        dtype, n, docs = _DTYPES[meta["dtype"]], meta["n_tokens"], meta["n_documents"]
        if (meta["format"] != FORMAT_VERSION or meta["key"] != key or type(n) is not int or n < 0
                or type(docs) is not int or docs < 0):
            return None
        tokens = _map(entry / "tokens.bin", dtype, n)
        offsets = _map(entry / "offsets.bin", _OFFSET, docs + 1)
        if tokens is None or offsets is None or offsets[0] != 0 or offsets[-1] != n:
            return None
        return TokenStream(tokens, offsets)
    except (OSError, ValueError, KeyError, TypeError):  # missing, not JSON, wrong shape of JSON
        return None


def _map(path: Path, dtype: np.dtype, n: int) -> np.ndarray | None:
    """`path` as a read-only array of `n` values, or None when its size says otherwise."""
    if path.stat().st_size != n * dtype.itemsize:
        return None
    if n == 0:  # mmap cannot map an empty file
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,))


def _unusable(cache_dir: Path, e: OSError) -> LetiError:
    # one line at the first pretraining batch, not a traceback
    room = "free space there, or " if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return LetiError(f"pretraining corpus cache: cannot write to {cache_dir} ({e.strerror or e}); {room}set "
                     "LETI_CACHE_DIR to a writable directory or trainer.pretrain_cache: false")


@contextmanager
def _writing(cache_dir: Path, needed: int = 0) -> Iterator[None]:
    """A failed write into the cache as _unusable's line. numpy's tofile reports a full disk as
    OSError('N requested and 0 written') with no errno: that is "no space" when the disk has less
    free than the write needed. Only around writes: the corpus's own read errors are not the cache's."""
    try:
        yield
    except OSError as e:
        if e.errno is None and shutil.disk_usage(cache_dir).free < needed:
            e = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise _unusable(cache_dir, e) from e


def check_cache_dir(cache_dir: str | Path) -> None:
    """At run start: the cache directory can be made and written to (a read-only home fails here,
    in one line, not at the first pretraining step after a sampling phase)."""
    cache_dir = Path(cache_dir).expanduser()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
    except OSError as e:
        raise _unusable(cache_dir, e) from e


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # "a": opening never truncates; the lock file stays (removing it would let two processes
    # lock different files of one name)
    try:
        f = open(path, "a")
    except OSError as e:
        raise _unusable(path.parent, e) from e
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _discard(cache_dir: Path, key: str) -> None:
    """Under the key's lock: remove a damaged entry and what killed builds left (no live build can
    own a temporary directory, since builds hold the lock)."""
    entry = cache_dir / key
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    elif entry.exists() or entry.is_symlink():
        entry.unlink()
    for tmp in cache_dir.glob(f".{key}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def _dtype_for(tokenizer, eos: int | None) -> str:
    vocab_max = max([len(tokenizer) - 1, eos or 0, *tokenizer.get_vocab().values()])
    return "uint16" if vocab_max <= np.iinfo(np.uint16).max else "int32"


def _tokenized(texts: Iterator[str], tokenizer, eos: int | None, dtype: np.dtype, bar) -> Iterator[tuple[np.ndarray, list[int]]]:
    """(the ids of a chunk of documents end to end, each document's length), chunk by chunk."""
    while chunk := list(islice(texts, _CHUNK)):
        flat: list[int] = []
        lengths = []
        for ids in encode_documents(tokenizer, chunk):
            flat.extend(ids)
            if eos is not None:
                flat.append(eos)
            lengths.append(len(ids) + (eos is not None))
        arr = np.asarray(flat, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(dtype).max):
            raise LetiError(f"pretraining corpus cache: token id {int(arr.max())} outside the tokenizer's vocabulary")
        bar.update(len(chunk))
        yield arr.astype(dtype), lengths


def _offsets(lengths: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(_OFFSET)


def tokenize_in_memory(texts: Iterator[str], tokenizer, eos: int | None, *, total: int | None = None,
                       progress: bool = False) -> TokenStream:
    """What token_stream builds, in memory and without a cache (trainer.pretrain_cache: false)."""
    dtype = _DTYPES[_dtype_for(tokenizer, eos)]
    parts, lengths = [], []
    with Progress(total, "tokenizing pretraining corpus", "files", progress) as bar:
        for arr, chunk_lengths in _tokenized(texts, tokenizer, eos, dtype, bar):
            parts.append(arr)
            lengths.extend(chunk_lengths)
    return TokenStream(np.concatenate(parts) if parts else np.zeros(0, dtype), _offsets(lengths))


def _build(cache_dir: Path, key: str, fields: dict, texts: Callable[[], Iterator[str]], tokenizer,
           eos: int | None, total: int | None, progress: bool) -> None:
    dtype_name = _dtype_for(tokenizer, eos)
    dtype = _DTYPES[dtype_name]
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=cache_dir))
    try:
        lengths: list[int] = []
        with open(tmp / "tokens.bin", "wb") as out, \
                Progress(total, "tokenizing pretraining corpus", "files", progress) as bar:
            for arr, chunk_lengths in _tokenized(texts(), tokenizer, eos, dtype, bar):
                with _writing(cache_dir, arr.nbytes):
                    arr.tofile(out)
                lengths.extend(chunk_lengths)
            with _writing(cache_dir):
                out.flush()
                os.fsync(out.fileno())
        offsets = _offsets(lengths)
        with _writing(cache_dir, offsets.nbytes), open(tmp / "offsets.bin", "wb") as out:
            offsets.tofile(out)
            out.flush()
            os.fsync(out.fileno())
        meta = {"format": FORMAT_VERSION, "key": key, "dtype": dtype_name, "n_tokens": int(offsets[-1]),
                "n_documents": len(lengths), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "fields": fields}
        with _writing(cache_dir), open(tmp / "meta.json", "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700: let other users of a shared cache read it
        os.rename(tmp, cache_dir / key)  # atomic: the entry appears whole or not at all
        _fsync_dir(cache_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(path: Path) -> None:
    # makes the rename durable across a power loss; some file systems refuse to fsync a directory
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
