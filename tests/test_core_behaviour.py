"""Boundaries of the training data's pure logic that the end-to-end tests pass over: a text of
exactly `max_length` tokens, documents that fill blocks exactly, empty texts."""

from __future__ import annotations

import numpy as np
import pytest

from leti.testing import make_tiny_tokenizer
from leti.training import corpus_cache
from leti.training.data import PackingStats, document_blocks, pack_blocks, tokenize_texts

DOCS = ["def f(x):\n    return x + 1\n", "import os\nprint(os.sep)\n", "class A:\n    pass\n"]


@pytest.fixture(scope="module")
def tok():
    return make_tiny_tokenizer()


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_a_text_of_exactly_max_length_tokens_is_not_truncated(tok):
    n = len(tokenize_texts(tok, [DOCS[0]], max_length=10_000).examples[0])
    exact = tokenize_texts(tok, [DOCS[0]], max_length=n)
    assert exact.n_truncated == 0 and len(exact.examples[0]) == n
    one_less = tokenize_texts(tok, [DOCS[0]], max_length=n - 1)
    assert one_less.n_truncated == 1 and len(one_less.examples[0]) == n - 1


def test_a_text_with_no_tokens_is_no_example(tok):
    """An empty text would be a row of padding only, which trains on nothing."""
    data = tokenize_texts(tok, ["", DOCS[0], ""], max_length=100)
    assert len(data.examples) == 1 and data.n_tokens == len(data.examples[0])


def test_documents_that_fill_blocks_exactly_lose_no_block(tok):
    """Packing keeps every full block, the last one included when the stream ends exactly on a
    block boundary; only a partial tail is dropped."""
    eos = tok.eos_token_id
    stream_ids = [t for d in DOCS for t in [*_ids(tok, d), eos]]
    for block in (len(stream_ids), len(stream_ids) // 2 if len(stream_ids) % 2 == 0 else len(stream_ids),
                  len(_ids(tok, DOCS[0])) + 1):
        want = [stream_ids[i : i + block] for i in range(0, len(stream_ids) - block + 1, block)]
        stats = PackingStats()
        assert list(pack_blocks(iter(DOCS), tok, block, stats)) == want
        assert (stats.blocks, stats.tokens, stats.slots) == (len(want), len(want) * block, len(want) * block)
        stream = corpus_cache.tokenize_in_memory(iter(DOCS), tok, eos)
        got = [b.tolist() for b in document_blocks(stream, np.arange(stream.n_documents), block)]
        assert got == want
    # one document exactly one block long
    first = [*_ids(tok, DOCS[0]), eos]
    assert list(pack_blocks(iter(DOCS[:1]), tok, len(first), PackingStats())) == [first]


def test_stdlib_corpus_is_the_first_files_in_path_order():
    """The same files, in the same order, on every machine with this interpreter: sorted by path
    relative to the standard library, not in the order the filesystem lists them."""
    import sysconfig
    from pathlib import Path

    from leti.training.data import stdlib_files

    root = Path(sysconfig.get_paths()["stdlib"])
    every = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py")
                   if not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts))
    assert [p.relative_to(root).as_posix() for p in stdlib_files(40)] == every[:40]


def test_pretraining_blocks_train_on_every_token_separators_included(tok, tmp_path):
    """Packed blocks are full, so nothing is padding: labels are the ids everywhere, the EOS that
    separates documents included although it shares its id with the pad token."""
    import torch

    from leti.training.data import pretrain_batches

    assert tok.eos_token_id == tok.pad_token_id
    (tmp_path / "src").mkdir()
    for i in range(12):
        (tmp_path / "src" / f"m{i:02d}.py").write_text(DOCS[i % 3] * (1 + i % 2))
    batch = next(pretrain_batches(tok, str(tmp_path / "src"), 16, 2, 100, PackingStats(),
                                  heldout_fraction=0.25, split_seed=0))
    assert (batch["input_ids"] == tok.eos_token_id).any()
    assert torch.equal(batch["labels"], batch["input_ids"]) and bool(batch["attention_mask"].all())
