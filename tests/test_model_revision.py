"""A run on a hub model is pinned to one commit: it records the commit it started on in run.json
(model_commit) and a resume loads that commit, even after the branch moved; model_revision picks
the revision at start, and another one on resume is refused. `leti evaluate --model` records the
commit too. All offline, against a hub cache built here the way huggingface_hub lays one out
(refs/<branch> holding a commit sha, snapshots/<sha>/ holding that commit's files), with two
commits of a tiny model whose weights differ."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from leti.cli import main
from leti.testing import make_tiny_model

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")
REPO = "org/tiny"
SHA_A = hashlib.sha1(b"commit A").hexdigest()  # main when the run starts (seed 0's weights)
SHA_B = hashlib.sha1(b"commit B").hexdigest()  # main after it moved, and branch dev (seed 1's weights)


def _build_cache(root: Path) -> Path:
    repo = root / "models--org--tiny"
    make_tiny_model(repo / "snapshots" / SHA_A, seed=0)
    make_tiny_model(repo / "snapshots" / SHA_B, seed=1)  # same tokenizer, other weights
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA_A)
    (repo / "refs" / "dev").write_text(SHA_B)
    return root


def _use_cache(mp: pytest.MonkeyPatch, cache: Path) -> None:
    """Point huggingface_hub (and so transformers) at `cache`, offline. huggingface_hub reads
    HF_HUB_CACHE and HF_HUB_OFFLINE when it is imported, so its constants are set too; the
    variables are for processes the run starts."""
    import huggingface_hub.constants

    mp.setenv("HF_HUB_CACHE", str(cache))
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache every test copies (and none edits): main -> A, dev -> B."""
    return _build_cache(tmp_path_factory.mktemp("hub"))


@pytest.fixture
def hub(hub_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own copy of the cache, in use: the test may move its branches."""
    cache = tmp_path / "hub"
    shutil.copytree(hub_cache, cache)
    _use_cache(monkeypatch, cache)
    return cache


def _move_main(cache: Path, sha: str) -> None:
    (cache / "models--org--tiny" / "refs" / "main").write_text(sha)


def _args(run: Path, task: str, *extra: str) -> list[str]:
    # the smallest run that loads the model: one train problem, one sample, short generations
    return ["run", CONFIG, "--run-dir", str(run), "--set", f"model={REPO}", "--set", f"task={task}",
            "--set", "progress=false", "--set", "max_train_problems=1", "--set", "sampling.n=1",
            "--set", "eval.n=1", "--set", "eval.ks=[1]", "--set", "sampling.max_new_tokens=8",
            "--set", "eval.max_new_tokens=8", "--set", "trainer.pretrain_mix_ratio=0",
            "--set", "trainer.pretrain_heldout_loss=false", *extra]


def _completions(path: Path) -> list[str]:
    return [json.loads(line)["completion"] for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def started_run(hub_cache: Path, tmp_path_factory: pytest.TempPathFactory, shared_add_task: str) -> Path:
    """A finished one-iteration run started on org/tiny while main was commit A."""
    run = tmp_path_factory.mktemp("started") / "run"
    with pytest.MonkeyPatch.context() as mp:
        _use_cache(mp, hub_cache)
        assert main(_args(run, shared_add_task)) == 0
    return run


def test_a_run_on_a_hub_id_records_the_commit_it_started_on(started_run):
    info = json.loads((started_run / "run.json").read_text())
    assert info["model_commit"] == SHA_A
    # config.yaml keeps what was asked for (the default branch), run.json what it was
    assert yaml.safe_load((started_run / "config.yaml").read_text())["model_revision"] is None


@pytest.fixture
def resumable(started_run: Path, tmp_path: Path) -> Path:
    """A copy of started_run as if killed before iteration 0's evaluation was written: a resume
    evaluates the configured model again."""
    run = tmp_path / "run"
    shutil.copytree(started_run, run)
    (run / "metrics.jsonl").unlink()
    for name in ("eval.json", "eval_samples.jsonl"):
        (run / "iterations" / "0" / name).unlink()
    return run


def test_a_resume_after_the_branch_moved_loads_the_commit_the_run_started_on(hub, resumable, started_run,
                                                                           shared_add_task, capsys):
    _move_main(hub, SHA_B)
    assert main(_args(resumable, shared_add_task)) == 0
    assert "resuming" in capsys.readouterr().out
    # the same draws as the run's own from commit A (commit B's weights draw others: see the last test)
    redrawn = _completions(resumable / "iterations" / "0" / "eval_samples.jsonl")
    assert redrawn == _completions(started_run / "iterations" / "0" / "eval_samples.jsonl")
    assert json.loads((resumable / "run.json").read_text())["model_commit"] == SHA_A


def test_another_model_revision_on_resume_is_refused_in_one_line(hub, resumable, shared_add_task, capsys):
    before = (resumable / "config.yaml").read_text()
    assert main(_args(resumable, shared_add_task, "--set", f"model_revision={SHA_B}")) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"leti: error: {resumable / 'config.yaml'}: field 'model_revision' was None when the run started, "
                   f"now '{SHA_B}'; resume with the same config (--set model_revision=null) or use a new --run-dir")
    assert (resumable / "config.yaml").read_text() == before
    assert not (resumable / "iterations" / "0" / "eval_samples.jsonl").exists()


def test_model_revision_on_a_local_directory_is_refused_in_one_line(hub, tmp_path, tiny_model_path, shared_add_task,
                                                                    capsys):
    run = tmp_path / "run"
    args = _args(run, shared_add_task, "--set", f"model={tiny_model_path}", "--set", "model_revision=main")
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        f"leti: error: model_revision='main' names a revision on the hub, but model '{tiny_model_path}' is a local "
        "directory, which has none; remove model_revision (--set model_revision=null)")
    assert not (run / "iterations").exists()


def test_model_revision_at_start_loads_that_revision(hub, tmp_path, started_run, shared_add_task):
    run = tmp_path / "run"
    assert main(_args(run, shared_add_task, "--set", "model_revision=dev")) == 0
    assert json.loads((run / "run.json").read_text())["model_commit"] == SHA_B  # the branch, resolved
    assert yaml.safe_load((run / "config.yaml").read_text())["model_revision"] == "dev"
    # commit B's weights: other draws than commit A's, for the same seeds and prompts
    drawn = _completions(run / "iterations" / "0" / "eval_samples.jsonl")
    assert drawn != _completions(started_run / "iterations" / "0" / "eval_samples.jsonl")


def _evaluate_args(task: str, out: Path, *extra: str) -> list[str]:
    return ["evaluate", "--task", task, "--split", "test", "--model", REPO, "--n", "1", "--max-new-tokens", "8",
            "--device", "cpu", "--out", str(out), *extra]


def test_evaluate_records_the_commit_and_refuses_a_rerun_after_the_branch_moved(hub, tmp_path, shared_add_task,
                                                                             capsys):
    out = tmp_path / "out"
    assert main(_evaluate_args(shared_add_task, out)) == 0
    assert json.loads((out / "generation.json").read_text())["revision"] == SHA_A
    capsys.readouterr()
    _move_main(hub, SHA_B)
    assert main(_evaluate_args(shared_add_task, out)) == 2
    assert capsys.readouterr().err.strip() == (
        f'leti: error: {out}: its samples were drawn with revision="{SHA_A}", not "{SHA_B}" (generation.json); '
        f'rerun with --revision "{SHA_A}" to resume, or pass a new --out for the new setting')
    assert main(_evaluate_args(shared_add_task, out, "--revision", SHA_A)) == 0  # the fix it names


def test_the_loaders_read_the_revision_they_are_given(hub):
    import torch

    from leti.model import hub_commit, load_model_and_tokenizer, load_tokenizer

    assert hub_commit(REPO) == SHA_A and hub_commit(REPO, "dev") == SHA_B and hub_commit(REPO, SHA_B) == SHA_B
    weights = {rev: load_model_and_tokenizer(REPO, device="cpu", revision=rev)[0].get_input_embeddings().weight
               for rev in (None, SHA_A, SHA_B)}
    assert torch.equal(weights[None], weights[SHA_A]) and not torch.equal(weights[SHA_A], weights[SHA_B])
    assert len(load_tokenizer(REPO, revision=SHA_B)) == len(load_tokenizer(REPO))


def test_the_lora_target_check_reads_the_pinned_commit(hub: Path) -> None:
    """trainer.lora's start check builds the model's skeleton from its config: at the pinned
    commit, not at the branch's head (which QLoRA's 4-bit copy reads the same way). Here main
    moved to a Llama (q_proj) from the GPT-2 (c_attn) the run was pinned to."""
    from dataclasses import replace

    from leti.errors import LetiError
    from leti.training.config import LoraSettings, TrainerConfig
    from leti.training.lora import check_lora_targets

    sha_c = hashlib.sha1(b"commit C").hexdigest()
    make_tiny_model(hub / "models--org--tiny" / "snapshots" / sha_c, arch="llama")
    _move_main(hub, sha_c)
    cfg = replace(TrainerConfig(), lora=LoraSettings(enabled=True, target_modules=["q_proj"]))
    check_lora_targets(REPO, cfg)  # main: the Llama has q_proj
    with pytest.raises(LetiError, match="c_attn"):
        check_lora_targets(REPO, cfg, revision=SHA_A)
