"""A pretraining corpus too small for what a training stage takes from it (one batch of
trainer.batch_size blocks of the training length for the mix, a block of held-out files where that
loss is measured) is refused when `leti run` / `leti sft` start, in one line and before the run
directory is written, not at the first training stage after iteration 0's evaluation and iteration
1's sampling. The check asks the trainer's own code, so the boundary is the trainer's: one token
short of a batch is refused, exactly one batch passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leti.cli import main
from leti.config import load_config
from leti.loop.checks import check_corpus_fills_batch, start_tokenizer
from leti.training.data import split_documents

CONFIG = str(Path(__file__).resolve().parent.parent / "src" / "leti" / "configs" / "tiny-cpu.yaml")
B, L = 2, 32  # trainer.batch_size, and trainer.max_length: the block size (the tiny model's context is 512)
SMALL = f"is smaller than one batch of {B} x {L} tokens"


@pytest.fixture
def task(tmp_path: Path) -> str:
    """One train and one test problem, with reference solutions (`leti sft` trains on them)."""
    rows = [{"id": pid, "split": split, "prompt": "def add(a, b):\n", "tests": "assert add(1, 2) == 3",
             "reference": "def add(a, b):\n    return a + b\n"} for pid, split in (("t", "train"), ("e", "test"))]
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}"


def _corpus(directory: Path, tokens: list[int]) -> str:
    """A directory of .py files (f0.py, f1.py, ... in that order) of these many tokens each: the tiny
    tokenizer makes one token of each '~', and tiny-cpu packs files without a separator."""
    directory.mkdir()
    for i, n in enumerate(tokens):
        (directory / f"f{i}.py").write_text("~" * n)
    return str(directory)


def _sets(model: str, task: str, corpus: str, *more: str) -> list[str]:
    return [f"model={model}", f"task={task}", f"trainer.pretrain_corpus={corpus}", f"trainer.batch_size={B}",
            f"trainer.max_length={L}", "progress=false", "sampling.n=1", "eval.n=1", "eval.ks=[1]", *more]


def _run(mode: str, run_dir: Path, sets: list[str]) -> int:
    return main([mode, CONFIG, "--run-dir", str(run_dir), *(a for s in sets for a in ("--set", s))])


def _refused(capsys: pytest.CaptureFixture, run_dir: Path, code: int) -> str:
    """The one error line of a run refused at its start, which wrote nothing."""
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("leti: error: "), err
    # nothing sampled, nothing written (the lock file is taken before any check)
    assert not run_dir.exists() or [p.name for p in run_dir.iterdir()] == [".lock"]
    return err.removeprefix("leti: error: ")


def _passes(sets: list[str]) -> None:
    """The start check, called as `leti run` calls it, accepts the corpus."""
    cfg = load_config(CONFIG, sets)
    check_corpus_fills_batch(cfg, start_tokenizer(cfg))


def _heldout_index(n: int, fraction: float) -> set[int]:
    return {int(i) for i in split_documents(n, fraction, 42)[1]}


# (settings, what the refusal calls the corpus): the cache on (built at start), off and read lazily
# (one batch's worth), off with a held-out split (tokenized in memory)
PATHS = {
    "cache": (["trainer.pretrain_heldout_fraction=0", "trainer.pretrain_packing=stream"], ""),
    "lazy": (["trainer.pretrain_cache=false", "trainer.pretrain_heldout_fraction=0", "trainer.pretrain_packing=stream"], ""),
    "no cache, split": (["trainer.pretrain_cache=false", "trainer.pretrain_heldout_fraction=0.5"], "'s training files"),
}


@pytest.mark.parametrize("mode", ["run", "sft"])
@pytest.mark.parametrize("path", list(PATHS))
def test_one_token_short_of_a_batch_is_refused_at_start_and_one_batch_passes(tmp_path, tiny_model_path, task, capsys,
                                                                              path, mode):
    settings, what = PATHS[path]
    split = "split" in path
    heldout = _heldout_index(2, 0.5) if split else set()

    def sizes(n: int) -> list[int]:  # the training file of n tokens (and a held-out file of one block)
        return [L if i in heldout else n for i in range(2 if split else 1)]

    corpus = _corpus(tmp_path / "short", sizes(B * L - 1))
    run_dir = tmp_path / "run"
    err = _refused(capsys, run_dir, _run(mode, run_dir, _sets(tiny_model_path, task, corpus, *settings)))
    assert err == f"trainer.pretrain_corpus '{corpus}'{what} {SMALL}; use a larger corpus or smaller trainer.batch_size"
    _passes(_sets(tiny_model_path, task, _corpus(tmp_path / "enough", sizes(B * L)), *settings))


@pytest.mark.parametrize("cache", ["true", "false"])
def test_the_authors_packing_dropping_each_groups_tail_is_refused_at_start(tmp_path, tiny_model_path, task, capsys, cache):
    # eight files of L - 1 tokens: 248 tokens, enough for a batch of 2 x 32 as one stream, but
    # each file is a group of its own (8 shards), whose tail short of a block is dropped: no block
    corpus = _corpus(tmp_path / "src", [L - 1] * 8)
    sets = _sets(tiny_model_path, task, corpus, f"trainer.pretrain_cache={cache}", "trainer.pretrain_heldout_fraction=0")
    run_dir = tmp_path / "run"
    err = _refused(capsys, run_dir, _run("run", run_dir, [*sets, "trainer.pretrain_packing=authors"]))
    assert err == (f"trainer.pretrain_corpus '{corpus}', packed by trainer.pretrain_packing 'authors' (each group of files "
                   f"drops its tail short of a block), {SMALL}; use a larger corpus, trainer.pretrain_packing: stream "
                   "or smaller trainer.batch_size")
    _passes([*sets, "trainer.pretrain_packing=stream"])


def test_held_out_files_that_fill_no_block_are_refused_at_start(tmp_path, tiny_model_path, task, capsys):
    (held,) = _heldout_index(2, 0.5)
    corpus = _corpus(tmp_path / "src", [L - 1 if i == held else B * L for i in range(2)])
    sets = _sets(tiny_model_path, task, corpus, "trainer.pretrain_heldout_fraction=0.5")
    run_dir = tmp_path / "run"
    err = _refused(capsys, run_dir, _run("run", run_dir, sets))
    assert err == (f"trainer.pretrain_corpus '{corpus}': its held-out files (trainer.pretrain_heldout_fraction 0.5) "
                   f"fill no block of {L} tokens; use more files or a larger fraction")
    # without the mix, a training side short of a batch is never read: only the held-out files count
    small = _corpus(tmp_path / "small", [L if i == held else 1 for i in range(2)])
    _passes(_sets(tiny_model_path, task, small, "trainer.pretrain_heldout_fraction=0.5",
                  "trainer.pretrain_mix_ratio=0", "trainer.pretrain_heldout_loss=true"))


def test_a_corpus_cut_short_by_max_files_says_so(tmp_path, tiny_model_path, task, capsys):
    corpus = _corpus(tmp_path / "src", [B * L - 1, B * L, B * L])
    run_dir = tmp_path / "run"
    sets = _sets(tiny_model_path, task, corpus, "trainer.pretrain_max_files=1", "trainer.pretrain_heldout_fraction=0")
    err = _refused(capsys, run_dir, _run("run", run_dir, sets))
    assert err == (f"trainer.pretrain_corpus '{corpus}' (its first 1 file: trainer.pretrain_max_files) {SMALL}; "
                   "use a larger trainer.pretrain_max_files, a larger corpus or smaller trainer.batch_size")


def _entries(cache: Path) -> list[Path]:
    return [p for p in (cache / "pretrain").iterdir() if p.is_dir()]


def test_exactly_one_batch_runs_and_the_stage_reads_the_cache_built_at_start(tmp_path, tiny_model_path, task,
                                                                              monkeypatch):
    """tiny-cpu's own settings (cache on, a held-out split, the authors' packing): a corpus whose
    training files give exactly one batch and whose held-out file one block runs its training
    stage. The cache is built at start, before anything is sampled, and the stage reads it back
    (no second entry): the tokenizing moved, it did not double."""
    monkeypatch.setenv("LETI_CACHE_DIR", str(tmp_path / "cache"))
    (held,) = _heldout_index(2, 0.5)
    corpus = _corpus(tmp_path / "src", [L if i == held else B * L for i in range(2)])
    sets = _sets(tiny_model_path, task, corpus, "trainer.pretrain_heldout_fraction=0.5")
    run_dir = tmp_path / "run"
    assert _run("run", run_dir, sets) == 0
    (entry,) = _entries(tmp_path / "cache")
    built = entry.stat().st_mtime_ns
    assert built <= (run_dir / "iterations" / "1" / "samples.jsonl").stat().st_mtime_ns
    stats = json.loads((run_dir / "iterations" / "1" / "train_stats.json").read_text())
    assert stats["pretrain_batches"] > 0 and stats["pretrain_heldout_blocks"] == 1
    # a resume's start check reads the entry back rather than tokenizing the corpus again
    _passes(sets)
    assert _entries(tmp_path / "cache") == [entry] and entry.stat().st_mtime_ns == built
