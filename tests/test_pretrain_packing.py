"""The authors' packing of the pretraining corpus (trainer.pretrain_packing 'authors'): each split
tokenized, then `map(group_texts, batched=True, num_proc=8)`, then cut to a multiple of 128
blocks (run_leti.py). Checked against `datasets` running that very pipeline."""

from __future__ import annotations

import itertools

import datasets
import numpy as np
import pytest
import torch

from leti.config import load_config
from leti.errors import LetiError
from leti.testing import make_tiny_tokenizer
from leti.training.corpus_cache import TokenStream
from leti.training.data import (
    PackingStats,
    document_blocks,
    heldout_blocks,
    packing_groups,
    pretrain_batches,
    split_documents,
)

BLOCK = 16


def _authors_blocks(docs: list[list[int]], fraction: float, seed: int) -> tuple[list, list]:
    """run_leti.py's pipeline on already tokenized documents: train_test_split, group_texts under
    map(batched=True, num_proc=8), each split cut to a multiple of 128 blocks."""

    def group_texts(examples):  # the authors' function (from transformers' run_clm example)
        concatenated = {k: list(itertools.chain(*examples[k])) for k in examples}
        total = len(concatenated["input_ids"])
        if total >= BLOCK:
            total = (total // BLOCK) * BLOCK
        return {k: [t[i : i + BLOCK] for i in range(0, total, BLOCK)] for k, t in concatenated.items()}

    split = datasets.Dataset.from_dict({"input_ids": docs}).train_test_split(test_size=fraction, seed=seed)
    grouped = split.map(group_texts, batched=True, num_proc=8)
    out = []
    for name in ("train", "test"):
        blocks = grouped[name]["input_ids"]
        out.append(blocks[: len(blocks) // 128 * 128])
    return out[0], out[1]


def _stream(docs: list[list[int]]) -> TokenStream:
    lengths = [len(d) for d in docs]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return TokenStream(np.array([t for d in docs for t in d], dtype=np.int64), offsets)


def test_blocks_are_the_authors_blocks_from_datasets():
    """9,000 documents: every shard of the 90% holds more than 1,000 files, so groups end both
    at 1,000 files and at shard ends; each split ends cut to a multiple of 128 blocks."""
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 1000, size=int(rng.integers(1, 30))).tolist() for _ in range(9000)]
    want_train, want_heldout = _authors_blocks(docs, 0.1, 42)
    stream = _stream(docs)
    train, heldout = split_documents(len(docs), 0.1, 42)
    got_train = [b.tolist() for b in document_blocks(stream, train, BLOCK, "authors")]
    got_heldout = [b.tolist() for b in document_blocks(stream, heldout, BLOCK, "authors")]
    assert len(want_train) % 128 == 0 and len(want_train) > 5000 and len(want_heldout) >= 128
    assert got_train == want_train
    assert got_heldout == want_heldout
    # one stream over the same files: other blocks (the groups' tails are not dropped)
    assert [b.tolist() for b in document_blocks(stream, train, BLOCK, "stream")][:len(want_train)] != want_train


def test_groups_follow_datasets_shards():
    """Contiguous shards of datasets' Dataset.shard, then at most 1,000 files each; fewer than 8
    files give one shard per file, as map lowers num_proc to the dataset's length."""
    docs = np.arange(8100)
    groups = packing_groups(docs, "authors")
    assert [len(g) for g in groups] == [1000, 13] * 4 + [1000, 12] * 4
    assert np.array_equal(np.concatenate(groups), docs)
    shards = datasets.Dataset.from_dict({"i": list(range(8100))})
    starts = [shards.shard(8, r, contiguous=True)["i"][0] for r in range(8)]
    assert starts == [int(g[0]) for g in groups[::2]]
    assert [len(g) for g in packing_groups(np.arange(5), "authors")] == [1] * 5
    assert [len(g) for g in packing_groups(np.arange(5), "stream")] == [5]


def test_a_split_under_128_blocks_keeps_them_all():
    """The multiple of 128 would leave a small corpus nothing to train on or score: kept whole."""
    docs = [[i] * 40 for i in range(6)]  # 6 files, one shard each, of 2.5 blocks: 2 each, tails dropped
    blocks = list(document_blocks(_stream(docs), np.arange(6), BLOCK, "authors"))
    assert [int(b[0]) for b in blocks] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert len(list(document_blocks(_stream(docs), np.arange(6), BLOCK, "stream"))) == 15


def test_the_trainer_streams_pack_the_authors_way(tmp_path):
    """pretrain_batches and heldout_blocks (what the trainer calls) pack with `packing`, cached
    or not."""
    tok = make_tiny_tokenizer()
    root = tmp_path / "src"
    root.mkdir()
    for i in range(30):
        (root / f"m{i:02d}.py").write_text(f"def f{i}(x):\n    return x * {i}\n" * (1 + i % 5))
    kw = dict(heldout_fraction=0.2, split_seed=3, packing="authors")
    plain = [b["input_ids"] for b in itertools.islice(pretrain_batches(tok, str(root), BLOCK, 2, 100, PackingStats(), **kw), 6)]
    cached = [b["input_ids"] for b in itertools.islice(
        pretrain_batches(tok, str(root), BLOCK, 2, 100, PackingStats(), cache_dir=tmp_path / "c", **kw), 6)]
    assert all(torch.equal(a, b) for a, b in zip(plain, cached, strict=True))
    stream_batches = [b["input_ids"] for b in itertools.islice(
        pretrain_batches(tok, str(root), BLOCK, 2, 100, PackingStats(), heldout_fraction=0.2, split_seed=3), 6)]
    assert not all(torch.equal(a, b) for a, b in zip(plain, stream_batches, strict=True))
    held = heldout_blocks(tok, str(root), BLOCK, 100, heldout_fraction=0.2, split_seed=3, packing="authors")
    held_stream = heldout_blocks(tok, str(root), BLOCK, 100, heldout_fraction=0.2, split_seed=3)
    assert 0 < len(held) < len(held_stream)  # six groups of one file each: six tails dropped


def test_the_field_defaults_to_the_authors_and_is_checked():
    assert load_config(None).trainer.pretrain_packing == "authors"
    assert load_config(None, ["trainer.pretrain_packing=stream"]).trainer.pretrain_packing == "stream"
    with pytest.raises(LetiError, match="trainer.pretrain_packing"):
        load_config(None, ["trainer.pretrain_packing=groups"])
