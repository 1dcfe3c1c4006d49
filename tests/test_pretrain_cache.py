"""The on-disk cache of the tokenized pretraining corpus (leti.training.corpus_cache): the same
batches as the uncached stream, built once per key, rebuilt for a changed tokenizer or corpus,
never trusted when damaged or half built, and built once when processes race for it."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from leti.errors import LetiError
from leti.testing import make_tiny_tokenizer
from leti.training.corpus_cache import default_cache_dir, tokenizer_fingerprint
from leti.training.data import PackingStats, iter_corpus, pack_blocks, pretrain_batches


@pytest.fixture(scope="module")
def tok():
    return make_tiny_tokenizer()


def _py_corpus(root: Path) -> str:
    """A directory corpus with what the reader treats specially: a nested package, an empty file
    (a document of no tokens: only its EOS), a non-UTF-8 file (skipped), a literal EOS in a text."""
    (root / "pkg").mkdir(parents=True)
    for i in range(5):
        (root / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i}  # <|endoftext|>\n" * (4 + 3 * i))
    (root / "pkg" / "inner.py").write_text("class A:\n    def go(self):\n        return [n for n in range(9)]\n" * 5)
    (root / "empty.py").write_text("")
    (root / "latin1.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    return str(root)


def _blocks_per_pass(tok, corpus: str, max_files: int, block_size: int, separator: bool, **kw) -> int:
    return len(list(pack_blocks(iter_corpus(corpus, max_files, **kw), tok, block_size, PackingStats(), separator)))


def _assert_same_stream(tok, corpus: str, block_size: int, batch_size: int, max_files: int, n: int,
                        cache_dir: Path, separator: bool = True, **kw) -> None:
    """n batches of the cached and the uncached stream: equal tensors (values, dtype, shape) and
    equal PackingStats after every batch."""
    plain_stats, cached_stats = PackingStats(), PackingStats()
    plain = pretrain_batches(tok, corpus, block_size, batch_size, max_files, plain_stats, separator=separator, **kw)
    cached = pretrain_batches(tok, corpus, block_size, batch_size, max_files, cached_stats, separator=separator,
                              cache_dir=cache_dir, **kw)
    for i in range(n):
        want, got = next(plain), next(cached)
        assert sorted(want) == sorted(got) == ["attention_mask", "input_ids", "labels"]
        for name in want:
            assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape, (i, name)
            assert torch.equal(got[name], want[name]), (i, name)
        assert cached_stats == plain_stats, i


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.mark.parametrize("separator", [True, False])
@pytest.mark.parametrize("corpus", ["stdlib", "dir"])
def test_cached_batches_equal_uncached_over_several_passes(tmp_path, tok, corpus, separator):
    corpus = _py_corpus(tmp_path / "src") if corpus == "dir" else corpus
    max_files, block = 6, 32
    blocks = _blocks_per_pass(tok, corpus, max_files, block, separator)
    # a pass's last blocks do not fill a batch: they are dropped, yet counted in PackingStats (the
    # batch size is chosen so; a fixed 3 stopped doing it when the corpus's tokens changed)
    batch = next(b for b in range(3, blocks) if blocks % b)
    assert blocks % batch and blocks // batch >= 2
    n = 2 * (blocks // batch) + 2  # into the third pass
    _assert_same_stream(tok, corpus, block, batch, max_files, n, tmp_path / "cache", separator)
    # the first stream built the entry, this one reads it
    _assert_same_stream(tok, corpus, block, batch, max_files, n, tmp_path / "cache", separator)
    assert len(_entries(tmp_path / "cache")) == 1


def test_a_bos_adding_tokenizer_without_pad_and_other_block_sizes_share_an_entry(tmp_path):
    """A Llama-style tokenizer (BOS added by default, no pad token): the corpus is tokenized
    without special tokens on both paths. Block and batch sizes are cut at read time: one entry."""
    spm = make_tiny_tokenizer(style="sentencepiece")
    assert spm.pad_token_id is None
    for block, batch in [(16, 2), (48, 5)]:
        _assert_same_stream(spm, "stdlib", block, batch, 3, 40, tmp_path / "cache")
    assert len(_entries(tmp_path / "cache")) == 1


def test_ids_beyond_uint16_are_stored_as_int32(tmp_path, tok):
    big = copy.deepcopy(tok)
    big.add_tokens([f"<t{i}>" for i in range(65_100)])
    corpus = _py_corpus(tmp_path / "src")
    Path(corpus, "m0.py").write_text("x = '<t65000>'  # <t7>\n" * 30)  # ids 65512 and 519
    _assert_same_stream(big, corpus, 16, 2, 10, 30, tmp_path / "cache")
    [entry] = _entries(tmp_path / "cache")
    assert json.loads((entry / "meta.json").read_text())["dtype"] == "int32"
    _assert_same_stream(tok, corpus, 16, 2, 10, 30, tmp_path / "cache")
    metas = [json.loads((e / "meta.json").read_text()) for e in _entries(tmp_path / "cache")]
    assert sorted(m["dtype"] for m in metas) == ["int32", "uint16"]


def test_a_corpus_smaller_than_a_batch_fails_the_same_way(tmp_path, tok):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n" * 10)  # a few blocks of 16, not 8 of them
    corpus = str(tmp_path / "src")
    stats = {}
    for cache in (None, tmp_path / "cache"):
        stats[cache] = PackingStats()
        with pytest.raises(LetiError, match="smaller than one batch of 8 x 16 tokens"):
            next(pretrain_batches(tok, corpus, 16, 8, 10, stats[cache], cache_dir=cache))
    assert stats[None] == stats[tmp_path / "cache"] and stats[None].blocks > 0
    no_eos = copy.deepcopy(tok)
    no_eos.eos_token = None
    with pytest.raises(LetiError, match="tokenizer has no eos token"):
        next(pretrain_batches(no_eos, corpus, 4, 1, 10, PackingStats(), cache_dir=tmp_path / "cache"))


def _write_jsonl(data_dir: Path, tag: str) -> None:
    data_dir.mkdir(exist_ok=True)
    for f in range(3):
        rows = [{"content": f"def {tag}_{f}_{r}(x):\n    return x + {f * 10 + r}\n" * (2 + r), "id": r} for r in range(4)]
        (data_dir / f"part{f}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def _uncached(tok, kw: dict, n: int) -> list[torch.Tensor]:
    return [b["input_ids"] for b in islice(pretrain_batches(tok, "json", 16, 2, 10, PackingStats(), **kw), n)]


def test_a_hugging_face_dataset_is_read_once_then_served_from_the_cache(tmp_path, tok, hub_offline):
    """The `datasets` path for real, offline: the json builder over a local data_dir. After the
    build the cache alone serves the stream: with every file's bytes replaced (same size and
    mtime, so the same key) the uncached stream fails and the cached one is unchanged."""
    data = tmp_path / "data"
    _write_jsonl(data, "a")
    kw = {"hf_data_dir": str(data), "text_field": "content"}
    blocks = _blocks_per_pass(tok, "json", 10, 16, True, **kw)  # max_files 10 of 12 rows
    n = 2 * (blocks // 2) + 1
    cache = tmp_path / "cache"
    _assert_same_stream(tok, "json", 16, 2, 10, n, cache, **kw)
    want = _uncached(tok, kw, n)
    for f in data.iterdir():
        st = f.stat()
        f.write_bytes(b"x" * st.st_size)  # not JSON any more
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(Exception):  # noqa: B017 - whichever error datasets raises for bad JSON
        _uncached(tok, kw, n)
    got = [b["input_ids"] for b in islice(pretrain_batches(tok, "json", 16, 2, 10, PackingStats(), cache_dir=cache, **kw), n)]
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    # an edit that changes the files' size or mtime is a new key: rebuilt, not the old ids
    _write_jsonl(data, "b")
    _assert_same_stream(tok, "json", 16, 2, 10, n, cache, **kw)
    assert not torch.equal(_uncached(tok, kw, 1)[0], want[0])
    assert len(_entries(cache)) == 2
    with pytest.raises(LetiError, match="has no column 'text'"):
        next(pretrain_batches(tok, "json", 16, 2, 10, PackingStats(), hf_data_dir=str(data), text_field="text",
                              cache_dir=cache))
    assert len(_entries(cache)) == 2 and not list(cache.glob(".*tmp*"))  # a failed build leaves nothing


def test_a_changed_tokenizer_gets_its_own_entry(tmp_path, tok):
    corpus = _py_corpus(tmp_path / "src")
    Path(corpus, "a.py").write_text("value = '<|marker|>'\n" * 20)  # the first file read
    cache = tmp_path / "cache"
    old = next(pretrain_batches(tok, corpus, 16, 2, 10, PackingStats(), cache_dir=cache))["input_ids"]
    fp = tokenizer_fingerprint(tok)
    padded = copy.deepcopy(tok)
    padded(["a b", "a"], padding=True, truncation=True, max_length=4)  # leaves padding settings behind
    assert tokenizer_fingerprint(padded) == fp  # ... which do not change how the corpus is split
    marked = copy.deepcopy(tok)
    # an added token (not a special one: a special token's string in a document is read as text)
    marked.add_tokens(["<|marker|>"])
    assert tokenizer_fingerprint(marked) != fp
    _assert_same_stream(marked, corpus, 16, 2, 10, 30, cache)
    new = next(pretrain_batches(marked, corpus, 16, 2, 10, PackingStats(), cache_dir=cache))["input_ids"]
    assert marked.convert_tokens_to_ids("<|marker|>") in new and not torch.equal(new, old)
    assert len(_entries(cache)) == 2


def test_an_edited_local_file_gets_a_new_entry(tmp_path, tok):
    corpus = _py_corpus(tmp_path / "src")
    cache = tmp_path / "cache"
    _assert_same_stream(tok, corpus, 16, 2, 10, 20, cache)
    target = Path(corpus, "m2.py")
    st = target.stat()
    target.write_text(target.read_text().replace("x * 2", "y + 2"))  # same size, new mtime
    assert target.stat().st_size == st.st_size
    _assert_same_stream(tok, corpus, 16, 2, 10, 20, cache)
    (Path(corpus) / "pkg" / "new.py").write_text("import os\n" * 30)  # an added file
    _assert_same_stream(tok, corpus, 16, 2, 10, 20, cache)
    assert len(_entries(cache)) == 3


@pytest.mark.parametrize("damage", ["meta not JSON", "meta missing", "meta a list", "n_tokens too large",
                                    "unknown dtype", "tokens.bin truncated", "tokens.bin longer"])
def test_a_damaged_entry_is_rebuilt(tmp_path, tok, damage):
    corpus = _py_corpus(tmp_path / "src")
    cache = tmp_path / "cache"
    _assert_same_stream(tok, corpus, 16, 2, 10, 5, cache)
    [entry] = _entries(cache)
    meta_path, bin_path = entry / "meta.json", entry / "tokens.bin"
    meta = json.loads(meta_path.read_text())
    data = bin_path.read_bytes()
    if damage == "meta not JSON":
        meta_path.write_text('{"format": 1, "dtype": "uint1')
    elif damage == "meta missing":
        meta_path.unlink()
    elif damage == "meta a list":
        meta_path.write_text("[1, 2]")
    elif damage == "n_tokens too large":
        meta_path.write_text(json.dumps({**meta, "n_tokens": meta["n_tokens"] + 1}))
    elif damage == "unknown dtype":
        meta_path.write_text(json.dumps({**meta, "dtype": "float64"}))
    elif damage == "tokens.bin truncated":
        bin_path.write_bytes(data[: len(data) // 2])
    else:
        bin_path.write_bytes(data + data[:64])
    blocks = _blocks_per_pass(tok, corpus, 10, 16, True)
    _assert_same_stream(tok, corpus, 16, 2, 10, 2 * (blocks // 2) + 1, cache)
    assert json.loads(meta_path.read_text()) == {**meta, "created": json.loads(meta_path.read_text())["created"]}
    assert bin_path.read_bytes() == data


def test_a_leftover_temporary_build_is_not_trusted_and_is_removed(tmp_path, tok):
    corpus = _py_corpus(tmp_path / "src")
    cache = tmp_path / "cache"
    _assert_same_stream(tok, corpus, 16, 2, 10, 3, cache)
    [entry] = _entries(cache)
    leftover = cache / f".{entry.name}.tmp-dead"
    entry.rename(leftover)  # a complete-looking build that was never renamed into place
    (leftover / "tokens.bin").write_bytes(b"\x01\x00" * 4096)  # (killed builds leave any bytes)
    _assert_same_stream(tok, corpus, 16, 2, 10, 20, cache)
    assert not leftover.exists() and [e.name for e in _entries(cache)] == [entry.name]


_CHILD = """
import os, sys, time
from itertools import islice
from pathlib import Path
import torch
from leti.testing import make_tiny_tokenizer
from leti.training import corpus_cache
from leti.training.data import PackingStats, pretrain_batches

cache, go, log, out, max_files = sys.argv[1:6]
real_build = corpus_cache._build

def logged_build(*args, **kwargs):  # the real build, noted in the log first
    with open(log, "a") as f:
        f.write("build\\n")
    time.sleep(1)  # holding the lock: the other process surely asks for it meanwhile
    return real_build(*args, **kwargs)

corpus_cache._build = logged_build
hold = os.environ.get("HOLD_AFTER_FIRST_CHUNK")
if hold:  # the build stops midway (its first chunk written) until it is killed
    real_tokenized = corpus_cache._tokenized

    def held(*args, **kwargs):
        chunks = real_tokenized(*args, **kwargs)
        yield next(chunks)  # _build writes it before it asks for the next
        Path(hold).touch()
        while True:
            time.sleep(1)

    corpus_cache._tokenized = held
tok = make_tiny_tokenizer()
Path(out + ".ready").touch()
while not Path(go).exists():
    time.sleep(0.01)
stream = pretrain_batches(tok, "stdlib", 32, 4, int(max_files), PackingStats(), cache_dir=cache)
torch.save([b["input_ids"] for b in islice(stream, 50)], out)
"""


def _child(tmp_path: Path, name: str, max_files: int, env: dict | None = None) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD))
    out = tmp_path / f"{name}.pt"
    args = [sys.executable, str(script), str(tmp_path / "cache"), str(tmp_path / "go"), str(tmp_path / "builds.log"),
            str(out), str(max_files)]
    return subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}), out


def _wait(path: Path, procs: list[subprocess.Popen], timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline and all(p.poll() is None for p in procs), f"no {path.name}"
        time.sleep(0.02)


def test_two_processes_asking_for_one_key_build_it_once(tmp_path, tok):
    procs = [_child(tmp_path, f"rank{i}", 60) for i in range(2)]
    for p, out in procs:
        _wait(Path(str(out) + ".ready"), [p for p, _ in procs])
    (tmp_path / "go").touch()  # both start together: each finds no entry and asks for the lock
    for p, _ in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    assert (tmp_path / "builds.log").read_text() == "build\n"
    want = [b["input_ids"] for b in islice(pretrain_batches(tok, "stdlib", 32, 4, 60, PackingStats()), 50)]
    for _, out in procs:
        got = torch.load(out)
        assert len(got) == 50 and all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    assert len(_entries(tmp_path / "cache")) == 1 and not list((tmp_path / "cache").glob(".*"))


def test_a_build_killed_midway_leaves_no_entry_and_the_next_build_is_whole(tmp_path, tok):
    (tmp_path / "go").touch()
    # held after its first chunk: left to run, the whole build took about 0.13 s from the first
    # chunk on disk to its rename, a window a kill could miss
    proc, _ = _child(tmp_path, "killed", 150, env={"HOLD_AFTER_FIRST_CHUNK": str(tmp_path / "midway")})
    cache = tmp_path / "cache"
    _wait(tmp_path / "midway", [proc])
    assert any(p.stat().st_size > 0 for p in cache.glob(".*.tmp-*/tokens.bin"))  # some chunks written
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [tmp] = cache.glob(".*.tmp-*")
    assert _entries(cache) == []  # nothing under the key's name
    key = tmp.name[1:].split(".tmp-")[0]
    _assert_same_stream(tok, "stdlib", 32, 4, 150, 30, cache)  # the lock died with the process
    assert [e.name for e in _entries(cache)] == [key] and not tmp.exists()
    meta = json.loads((cache / key / "meta.json").read_text())
    texts = list(iter_corpus("stdlib", 150))
    stream = [i for t in texts for i in [*tok(t, add_special_tokens=False)["input_ids"], tok.eos_token_id]]
    assert (meta["n_tokens"], meta["n_documents"], meta["dtype"]) == (len(stream), len(texts), "uint16")
    assert (cache / key / "tokens.bin").read_bytes() == np.array(stream, dtype="<u2").tobytes()


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("LETI_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "leti" / "pretrain"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "leti" / "pretrain"
    monkeypatch.setenv("LETI_CACHE_DIR", str(tmp_path / "mine"))  # leti's cache root, as for the demo's warm start
    assert default_cache_dir() == tmp_path / "mine" / "pretrain"
    from leti.demo.warmstart import WarmStartConfig, cached_path

    assert cached_path(WarmStartConfig()).parent == tmp_path / "mine" / "warmstart"


def test_an_unusable_cache_directory_is_one_error_line(tmp_path, tok):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(LetiError, match="cannot write to .*file"):
        next(pretrain_batches(tok, "stdlib", 16, 2, 3, PackingStats(), cache_dir=not_a_dir / "cache"))


def test_a_checkpoints_reloaded_tokenizer_keeps_its_entry(tmp_path, tiny_model_path):
    """Each LeTI iteration trains from the last checkpoint's tokenizer (saved and loaded again):
    the same fingerprint, so a run builds its corpus cache once, not once per iteration."""
    from leti.model import load_model_and_tokenizer, save_model

    model, tok = load_model_and_tokenizer(tiny_model_path, dtype="float32", device="cpu")
    save_model(model, tok, tmp_path / "iteration1")
    _, reloaded = load_model_and_tokenizer(str(tmp_path / "iteration1"), dtype="float32", device="cpu")
    assert tokenizer_fingerprint(reloaded) == tokenizer_fingerprint(tok)
    for t in (tok, reloaded):
        next(pretrain_batches(t, "stdlib", 16, 2, 3, PackingStats(), cache_dir=tmp_path / "cache"))
    assert len(_entries(tmp_path / "cache")) == 1


def test_training_reads_the_cache_and_trains_the_same_weights(tiny_model_path, tmp_path, monkeypatch):
    """trainer.pretrain_cache (on by default) fills $LETI_CACHE_DIR/pretrain in the first stage,
    and a training stage with it trains exactly the weights one without it trains."""
    from dataclasses import replace

    from leti.model import load_model_and_tokenizer
    from leti.training.config import TrainerConfig
    from leti.training.trainer import train

    monkeypatch.setenv("LETI_CACHE_DIR", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "pretrain"
    model, tok_ = load_model_and_tokenizer(tiny_model_path, dtype="float32", device="cpu")
    texts = [f"<|good|>def f{i}(a):\n    return a + {i}\n" for i in range(8)]
    cfg = TrainerConfig(batch_size=2, gradient_accumulation_steps=1, epochs=2, max_length=32, learning_rate=1e-3,
                        pretrain_corpus="stdlib", pretrain_max_files=5)
    assert cfg.pretrain_cache
    cached, s1 = train(copy.deepcopy(model), tok_, texts, cfg, progress=False)
    entries = [p for p in cache.iterdir() if p.is_dir()]
    assert len(entries) == 1 and (entries[0] / "tokens.bin").stat().st_size > 0
    plain, s2 = train(copy.deepcopy(model), tok_, texts, replace(cfg, pretrain_cache=False), progress=False)
    assert [p for p in cache.iterdir() if p.is_dir()] == entries
    assert (s1.pretrain_batches, s1.pretrain_tokens) == (s2.pretrain_batches, s2.pretrain_tokens) and s1.pretrain_batches > 0
    a, b = cached.state_dict(), plain.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_with_an_unwritable_cache_stops_at_start(tmp_path, tiny_model_path, shared_add_task, monkeypatch, capsys):
    from leti.cli import main

    (tmp_path / "file").write_text("")
    monkeypatch.setenv("LETI_CACHE_DIR", str(tmp_path / "file" / "cache"))
    config = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")
    run = tmp_path / "run"
    args = ["run", config, "--run-dir", str(run), "--set", f"model={tiny_model_path}", "--set", f"task={shared_add_task}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"leti: error: pretraining corpus cache: cannot write to {tmp_path / 'file' / 'cache' / 'pretrain'}")
    assert "trainer.pretrain_cache: false" in err and "\n" not in err
    assert not (run / "iterations").exists()  # before the iteration-0 evaluation
