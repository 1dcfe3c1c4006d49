"""Held-out pretraining files (trainer.pretrain_heldout_fraction): split off as the authors split
their corpus with `datasets`, never in the mix, and the model's loss on them measured on the base
model and after every training stage (metrics.jsonl: pretrain_heldout_loss)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from accelerate import Accelerator

from leti.cli import main
from leti.errors import LetiError
from leti.model import load_model_and_tokenizer
from leti.testing import make_tiny_tokenizer
from leti.training.data import PackingStats, heldout_blocks, pretrain_batches, split_documents
from leti.training.heldout import heldout_loss

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")


@pytest.fixture(scope="module")
def tok():
    return make_tiny_tokenizer()


@pytest.mark.parametrize(("n", "fraction", "seed"), [(10, 0.1, 42), (50_000, 0.1, 42), (7, 0.5, 0), (3, 0.1, 3),
                                                     (1234, 0.25, 2**31)])
def test_the_split_is_datasets_train_test_split(n, fraction, seed):
    ds = datasets.Dataset.from_dict({"i": list(range(n))}).train_test_split(test_size=fraction, seed=seed)
    train, heldout = split_documents(n, fraction, seed)
    assert train.tolist() == ds["train"]["i"] and heldout.tolist() == ds["test"]["i"]


def test_a_split_that_leaves_nothing_to_train_on_is_one_error():
    with pytest.raises(LetiError, match=r"pretrain_heldout_fraction 0.5 of 1 corpus files leaves none to train on"):
        split_documents(1, 0.5, 42)


def _corpus(root: Path, n: int) -> list[str]:
    """n .py files of distinct text (and one that is not UTF-8, which the reader skips: the
    split counts the documents read); returns the texts read, in corpus order."""
    root.mkdir()
    texts = []
    for i in range(n):
        text = f"def f{i}(x):\n    return x * {i} + {i * i}\n" * (1 + i % 4)
        (root / f"m{i:02d}.py").write_text(text)
        texts.append(text)
    (root / "m_latin1.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    return texts


def _ids(tok, texts: list[str], order) -> list[int]:
    return [t for i in order for t in [*tok(texts[i], add_special_tokens=False)["input_ids"], tok.eos_token_id]]


@pytest.mark.parametrize("cached", [False, True])
def test_the_mix_trains_on_the_training_files_in_the_splits_order_and_never_on_the_heldout(tmp_path, tok, cached):
    texts = _corpus(tmp_path / "src", 30)
    corpus, block, batch = str(tmp_path / "src"), 16, 3
    cache = tmp_path / "cache" if cached else None
    train, heldout = split_documents(30, 0.2, 7)
    want = _ids(tok, texts, train)
    n_batches = len(want) // block // batch
    stats = PackingStats()
    stream = pretrain_batches(tok, corpus, block, batch, 100, stats, cache_dir=cache, heldout_fraction=0.2, split_seed=7)
    got = [next(stream)["input_ids"] for _ in range(n_batches)]
    assert torch.cat(got).flatten().tolist() == want[: n_batches * batch * block]
    assert (stats.blocks, stats.tokens, stats.slots) == (n_batches * batch, n_batches * batch * block, n_batches * batch * block)
    assert torch.equal(next(stream)["input_ids"], got[0])  # the next pass starts again

    held = _ids(tok, texts, heldout)
    blocks = heldout_blocks(tok, corpus, block, 100, heldout_fraction=0.2, split_seed=7, cache_dir=cache)
    assert blocks.flatten().tolist() == held[: len(held) // block * block]
    assert torch.equal(heldout_blocks(tok, corpus, block, 100, heldout_fraction=0.2, split_seed=7, cache_dir=cache, max_blocks=2),
                       blocks[:2])
    # another seed, another split
    other = next(pretrain_batches(tok, corpus, block, batch, 100, PackingStats(), cache_dir=cache,
                                  heldout_fraction=0.2, split_seed=8))
    assert not torch.equal(other["input_ids"], got[0])


def test_held_out_files_that_fill_no_block_are_one_error(tmp_path, tok):
    _corpus(tmp_path / "src", 3)
    with pytest.raises(LetiError, match="its held-out files .* fill no block of 4096 tokens"):
        heldout_blocks(tok, str(tmp_path / "src"), 4096, 100, heldout_fraction=0.3, split_seed=0)


def test_heldout_loss_is_the_mean_token_loss_over_every_block(tiny_model_path):
    model, _ = load_model_and_tokenizer(tiny_model_path, dtype="float32", device="cpu")
    blocks = torch.from_numpy(np.random.default_rng(0).integers(0, model.config.vocab_size, (5, 24)))
    model.train()
    got = heldout_loss(Accelerator(cpu=True), model, blocks, batch_size=2)
    assert model.training  # put back as it was
    model.eval()
    with torch.no_grad():
        logits = model(blocks).logits
    summed = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), blocks[:, 1:].reshape(-1),
                                               reduction="sum")
    assert got == pytest.approx(float(summed) / (5 * 23), rel=1e-5)


def _run(run: Path, model: str, task: str, *extra: str) -> list[dict]:
    assert main(["run", CONFIG, "--run-dir", str(run), "--set", f"model={model}", "--set", f"task={task}",
                 "--set", "progress=false", "--set", "iterations=2", *extra]) == 0
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _loss_of(weights: str | Path) -> float:
    model, tok = load_model_and_tokenizer(str(weights), dtype="float32", device="cpu")
    blocks = heldout_blocks(tok, "stdlib", 256, 20, heldout_fraction=0.1, split_seed=42, separator=False,
                            packing="authors")  # the run's default (trainer.pretrain_packing)
    return heldout_loss(Accelerator(cpu=True), model, blocks, batch_size=4)


@pytest.mark.slow
def test_a_run_records_the_heldout_loss_of_every_iterations_weights(tmp_path, tiny_model_path, shared_add_task):
    metrics = _run(tmp_path / "mixed", tiny_model_path, shared_add_task)
    losses = [m["pretrain_heldout_loss"] for m in metrics]
    assert [m["iteration"] for m in metrics] == [0, 1, 2]
    # iteration 0: the base model's, measured by iteration 1's training stage
    assert losses[0] == pytest.approx(_loss_of(tiny_model_path), rel=1e-5)
    for k in (1, 2):
        assert losses[k] == pytest.approx(_loss_of(tmp_path / "mixed" / "iterations" / str(k) / "checkpoint"), rel=1e-5)
    stats = json.loads((tmp_path / "mixed" / "iterations" / "1" / "train_stats.json").read_text())
    assert stats["pretrain_heldout_blocks"] > 0 and stats["pretrain_heldout_loss_before"] == losses[0]

    # no mix: no corpus is read (this one does not exist) and nothing is measured...
    metrics = _run(tmp_path / "plain", tiny_model_path, shared_add_task, "--set", "trainer.pretrain_mix_ratio=0",
                   "--set", f"trainer.pretrain_corpus={tmp_path / 'nowhere'}")
    assert [m["pretrain_heldout_loss"] for m in metrics] == [None, None, None]
    # ...unless asked for (the no-mix ablation), on the same held-out files
    metrics = _run(tmp_path / "nomix", tiny_model_path, shared_add_task, "--set", "trainer.pretrain_mix_ratio=0",
                   "--set", "trainer.pretrain_heldout_loss=true")
    assert metrics[0]["pretrain_heldout_loss"] == pytest.approx(losses[0], rel=1e-6)
    assert all(m["pretrain_heldout_loss"] is not None for m in metrics)


def test_a_run_from_before_the_split_resumes_only_without_it(tmp_path):
    """Its config.yaml has no pretrain_heldout_fraction: its mix trained on every file."""
    import yaml

    from leti.config import RunConfig, config_to_dict
    from leti.loop.checks import check_unchanged
    from leti.loop.rundir import RunDir
    from leti.training.config import TrainerConfig

    run = tmp_path / "old"
    run.mkdir()
    old = config_to_dict(RunConfig(trainer=TrainerConfig(pretrain_heldout_fraction=0)))
    del old["trainer"]["pretrain_heldout_fraction"]
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(LetiError, match="resume with --set trainer.pretrain_heldout_fraction=0.0"):
        check_unchanged(RunDir(run), RunConfig())
    check_unchanged(RunDir(run), RunConfig(trainer=TrainerConfig(pretrain_heldout_fraction=0)))


def test_config_refuses_what_cannot_be_measured():
    from leti.training.config import TrainerConfig

    with pytest.raises(ValueError, match="pretrain_heldout_loss: true needs held-out files"):
        TrainerConfig(pretrain_heldout_fraction=0, pretrain_heldout_loss=True)
    with pytest.raises(ValueError, match=r"pretrain_heldout_fraction must be in \[0, 1\)"):
        TrainerConfig(pretrain_heldout_fraction=1.0)
    assert not TrainerConfig(pretrain_mix_ratio=0).measures_heldout
    assert TrainerConfig(pretrain_mix_ratio=0, pretrain_heldout_loss=True).measures_heldout
    assert not TrainerConfig(pretrain_heldout_loss=False).measures_heldout


def test_qlora_trains_after_the_heldout_loss_is_measured(tiny_model_path):
    """bitsandbytes' 4-bit layers switch, in eval mode on a CPU, to an inference-only weight layout
    that training cannot use: the measurement before training must leave them trainable."""
    pytest.importorskip("bitsandbytes")
    from leti.training.config import LoraSettings, TrainerConfig
    from leti.training.trainer import train

    model, tok = load_model_and_tokenizer(tiny_model_path, dtype="float32", device="cpu")
    cfg = TrainerConfig(batch_size=2, gradient_accumulation_steps=1, epochs=1, max_length=64, pretrain_corpus="stdlib",
                        pretrain_max_files=20, lora=LoraSettings(enabled=True, load_in_4bit=True))
    _, stats = train(model, tok, ["<|good|>def f(a):\n    return a\n"] * 4, cfg, progress=False,
                     source=tiny_model_path, heldout_before=True)
    assert stats.optimizer_steps == 4 and stats.pretrain_heldout_loss_before is not None
    assert stats.pretrain_heldout_loss != stats.pretrain_heldout_loss_before  # the adapters trained


def test_without_a_cache_a_stage_tokenizes_the_split_corpus_once(tiny_model_path, monkeypatch):
    """Every epoch's pass and the held-out blocks read one in-memory tokenization (it was redone
    for each: once per epoch, and again for the held-out loss)."""
    from leti.training import corpus_cache
    from leti.training.config import TrainerConfig
    from leti.training.trainer import train

    calls = []
    real = corpus_cache.tokenize_in_memory

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(corpus_cache, "tokenize_in_memory", counted)
    model, tok = load_model_and_tokenizer(tiny_model_path, dtype="float32", device="cpu")
    cfg = TrainerConfig(batch_size=2, gradient_accumulation_steps=1, epochs=3, max_length=64, pretrain_corpus="stdlib",
                        pretrain_max_files=20, pretrain_cache=False)
    _, stats = train(model, tok, ["<|good|>def f(a):\n    return a\n"] * 4, cfg, progress=False, heldout_before=True)
    assert len(calls) == 1 and stats.pretrain_batches == 6 and stats.pretrain_heldout_loss is not None
