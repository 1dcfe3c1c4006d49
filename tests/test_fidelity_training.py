"""The trainer does what the authors' JAX trainer does (xingyaoww/LeTI, leti/scripts/model/run_leti.py,
leti/utils/training.py, leti/utils/dataloader.py and the shell scripts under
leti/scripts/model/train/): no gradient clipping, a global batch of 128, texts in order,
pretraining and LeTI batches alternating by whole optimiser steps, the pretraining stream
started anew each epoch, and each step's loss normalised by its token count."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from leti.cli import main
from leti.config import dump_config, load_config
from leti.loop.checks import check_unchanged
from leti.loop.rundir import RunDir
from leti.model import load_model_and_tokenizer
from leti.training.config import TrainerConfig
from leti.training.trainer import train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
GOOD_TEXTS = [f"<|good|>def f{i}(a):\n    return a + {i}\n" for i in range(8)]


@pytest.fixture
def model_and_tokenizer(tiny_model_path):
    return load_model_and_tokenizer(tiny_model_path, dtype="float32", device="cpu")


def _record_inputs(model) -> list[list[int]]:
    """Every forward's input_ids, in order (one entry per micro-batch row)."""
    seen: list[list[int]] = []

    def hook(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen.append(ids.tolist())

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


# These tests record every forward pass; the held-out loss's passes after training are not
# training batches (tests/test_heldout.py covers them).
TRAINING_FORWARDS_ONLY = {"pretrain_heldout_loss": False}


def test_a_marker_the_program_spells_out_is_not_read_as_the_marker(model_and_tokenizer):
    """A program that writes '<|/lang_feedback|>' (the sampler never draws the marker's token, but
    can spell it in ordinary tokens) made its training text close the feedback span three times:
    in the quoted traceback, in the program, and where the span ends."""
    from leti.execution import ExecutionConfig, Executor, Program
    from leti.feedback.training_text import (
        FEEDBACK_CLOSE,
        GOOD,
        TrainingTextConfig,
        build_training_text,
    )
    from leti.training.data import tokenize_texts

    _, tok = model_and_tokenizer
    prompt, completion = "def f(a):\n", "    x = '<|/lang_feedback|>' + a\n    return '<|good|>'\n"
    with Executor(ExecutionConfig(workers=1)) as ex:
        result = ex.run([Program(prompt + completion, tests="assert f(1) == 2\n")])[0]
    assert "<|/lang_feedback|>' + a" in result.feedback  # the traceback quotes the line
    text = build_training_text(prompt, completion, result, TrainingTextConfig())
    ids = tokenize_texts(tok, [text], 4096).examples[0]
    close, good = tok.convert_tokens_to_ids(FEEDBACK_CLOSE), tok.convert_tokens_to_ids(GOOD)
    assert ids.count(close) == 1 and good not in ids
    assert tok.decode(ids[ids.index(close) + 1:]).replace("\u200b", "") == prompt + completion


def test_defaults_are_the_authors_optimiser_settings():
    """run_leti.py builds AdamW with no clipping in train_step; the 350M script trains with
    per_replica_batch_size 16 on the 8 cores of a TPU v3-8 = 128 texts per step."""
    cfg = TrainerConfig()
    assert cfg.max_grad_norm == 0.0
    assert cfg.batch_size * cfg.gradient_accumulation_steps == 128
    assert cfg.shuffle is False
    assert (cfg.adam_beta1, cfg.adam_beta2, cfg.weight_decay, cfg.max_length) == (0.9, 0.999, 0.01, 2048)


def test_texts_are_trained_on_in_order_by_default(model_and_tokenizer):
    """The authors' dataloader takes the training texts in order (no shuffle anywhere)."""
    model, tok = model_and_tokenizer
    seen = _record_inputs(model)
    cfg = TrainerConfig(batch_size=1, gradient_accumulation_steps=1, epochs=1, max_length=64, pretrain_mix_ratio=0)
    train(model, tok, GOOD_TEXTS, cfg, progress=False)
    assert [s[0] for s in seen] == [tok(t).input_ids for t in GOOD_TEXTS]


def test_mix_alternates_whole_optimiser_steps(model_and_tokenizer):
    """run_leti.py: one train_step on a (global) LeTI batch, then one on a pretraining batch.
    With 2 micro-batches per step, that is L L P P, not L P L P."""
    model, tok = model_and_tokenizer
    seen = _record_inputs(model)
    cfg = TrainerConfig(batch_size=2, gradient_accumulation_steps=2, epochs=1, max_length=32,
                        pretrain_corpus="stdlib", pretrain_max_files=5, **TRAINING_FORWARDS_ONLY)
    _, stats = train(model, tok, GOOD_TEXTS, cfg, progress=False)
    good = tok.convert_tokens_to_ids("<|good|>")
    sources = ["L" if rows[0][0] == good else "P" for rows in seen]
    assert "".join(sources) == "LLPPLLPP"
    assert (stats.leti_batches, stats.pretrain_batches, stats.optimizer_steps) == (4, 4, 4)


def test_pretraining_stream_restarts_every_epoch(model_and_tokenizer):
    """run_leti.py builds a new pretraining dataloader at the start of every epoch."""
    model, tok = model_and_tokenizer
    seen = _record_inputs(model)
    cfg = TrainerConfig(batch_size=1, gradient_accumulation_steps=1, epochs=2, max_length=32,
                        pretrain_corpus="stdlib", pretrain_max_files=40, **TRAINING_FORWARDS_ONLY)
    train(model, tok, GOOD_TEXTS[:2], cfg, progress=False)
    good = tok.convert_tokens_to_ids("<|good|>")
    pre = [rows for rows in seen if rows[0][0] != good]
    assert len(pre) == 4 and pre[:2] == pre[2:] and pre[0] != pre[1]


def test_the_stream_continues_across_epochs_when_not_restarted(model_and_tokenizer):
    model, tok = model_and_tokenizer
    seen = _record_inputs(model)
    cfg = TrainerConfig(batch_size=1, gradient_accumulation_steps=1, epochs=2, max_length=32,
                        pretrain_corpus="stdlib", pretrain_max_files=40, pretrain_restart_every_epoch=False,
                        **TRAINING_FORWARDS_ONLY)
    train(model, tok, GOOD_TEXTS[:2], cfg, progress=False)
    good = tok.convert_tokens_to_ids("<|good|>")
    pre = [rows[0] for rows in seen if rows[0][0] != good]
    assert len(pre) == 4 and len({tuple(r) for r in pre}) == 4  # four different blocks, in stream order


def test_one_micro_batch_step_is_exactly_the_plain_loss_step(model_and_tokenizer):
    """With one micro-batch per step on one process the step's weight is exactly 1.0, so the
    trainer's update is bit for bit loss.backward() + AdamW: the demo's curves stay as measured."""
    model, tok = model_and_tokenizer
    reference = copy.deepcopy(model)
    text = GOOD_TEXTS[3]
    cfg = TrainerConfig(batch_size=1, gradient_accumulation_steps=1, epochs=1, max_length=64, pretrain_mix_ratio=0,
                        learning_rate=1e-3)
    trained, _ = train(model, tok, [text], cfg, progress=False)

    reference.train()
    decay = [p for p in reference.parameters() if p.ndim >= 2]
    no_decay = [p for p in reference.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2))
    ids = torch.tensor([tok(text).input_ids])
    torch.manual_seed(0)  # train() seeds torch with its seed (0) before the forward: same dropout masks
    reference(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.backward()
    opt.step()
    for (name, a), b in zip(trained.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_step_gradient_is_summed_token_loss_over_the_steps_tokens(model_and_tokenizer, monkeypatch):
    """leti/utils/training.py + run_leti.py train_step: the per-token losses of all micro-batches
    are summed and divided once for the step (by its predicted tokens; the authors divide by the
    attention-mask sum, one token more per row), so a long text weighs more than a short one,
    whatever micro-batch it sits in."""
    model, tok = model_and_tokenizer
    for m in model.modules():  # no dropout: the two gradients must see the same network
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    reference = copy.deepcopy(model)
    texts = ["<|good|>x = 1\n", "<|bad|><|lang_feedback|>" + "Error line\n" * 12 + "<|/lang_feedback|>y = 2\n"]
    grads: list[torch.Tensor] = []

    class Recording(torch.optim.AdamW):
        def step(self, closure=None):
            grads.append(model.get_input_embeddings().weight.grad.detach().clone())
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    cfg = TrainerConfig(batch_size=1, gradient_accumulation_steps=2, epochs=1, max_length=128, pretrain_mix_ratio=0)
    train(model, tok, texts, cfg, progress=False)

    total_loss, n_tokens = 0.0, 0
    for text in texts:
        ids = torch.tensor([tok(text).input_ids])
        logits = reference(input_ids=ids).logits[:, :-1]
        total_loss = total_loss + torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
        n_tokens += ids.shape[1] - 1  # every token but the first is predicted
    (total_loss / n_tokens).backward()
    expected = reference.get_input_embeddings().weight.grad
    assert len(grads) == 1
    torch.testing.assert_close(grads[0], expected, rtol=1e-4, atol=1e-7)


def test_presets_have_the_authors_global_batches():
    """2B: per_replica_batch_size 128 with num_partitions 8 on 8 cores = 128; the supervised
    baseline (actor/mbpp/jax-350M.sh, jax-2B.sh): 384 per step, i.e. the whole 374-problem
    split in one step per epoch, on <|endoftext|> + text + <|endoftext|> (run_ft.py)."""
    def global_batch(name: str, devices: int = 1) -> int:
        t = load_config(CONFIGS / name).trainer
        return t.batch_size * t.gradient_accumulation_steps * devices

    for name in ("mbpp-codegen-350m.yaml", "mbpp-codegen-350m-1gpu.yaml", "mbpp-codegen-2b.yaml",
                 "mbpp-binary-only.yaml", "mbpp-codegen-2b-binary-only.yaml", "mbpp-postprocess-hints.yaml"):
        assert global_batch(name) == 128, name
    assert global_batch("mbpp-codegen-2b-8gpu.yaml", devices=8) == 128
    for name in ("mbpp-sft.yaml", "mbpp-codegen-2b-sft.yaml"):
        cfg = load_config(CONFIGS / name)
        assert global_batch(name) == 384 and cfg.training_text.append_eos, name


def test_pretraining_documents_are_packed_without_separator_by_default(model_and_tokenizer, tmp_path):
    """run_leti.py tokenizes each file with the plain tokenizer (CodeGen's adds no token) and
    group_texts concatenates them: no end-of-text token between files."""
    for i in range(40):  # small files: every block holds several of them
        (tmp_path / f"m{i:02d}.py").write_text(f"x{i} = {i}\n")
    model, tok = model_and_tokenizer
    seen = _record_inputs(model)
    cfg = TrainerConfig(batch_size=2, gradient_accumulation_steps=1, epochs=1, max_length=32,
                        pretrain_corpus=str(tmp_path), **TRAINING_FORWARDS_ONLY)
    train(model, tok, GOOD_TEXTS[:4], cfg, progress=False)
    good = tok.convert_tokens_to_ids("<|good|>")
    pre = [tok_id for rows in seen if rows[0][0] != good for row in rows for tok_id in row]
    assert len(pre) == 2 * 2 * 32 and tok.eos_token_id not in pre


def test_2b_binary_arm_runs_the_authors_30_iterations():
    """finetune+coarse-only+30x3+lr5e-6+mixpretrain.sh: NUM_ITERATIONS=30 (the textual 2B run: 10)."""
    assert load_config(CONFIGS / "mbpp-codegen-2b-binary-only.yaml").iterations == 30
    assert load_config(CONFIGS / "mbpp-codegen-2b.yaml").iterations == 10


@pytest.mark.parametrize("field", ["shuffle", "pretrain_eos_separator", "pretrain_restart_every_epoch"])
def test_a_run_from_before_a_new_training_field_resumes_only_as_it_ran(tmp_path, tiny_model_path, capsys, field):
    """A run started before these fields existed shuffled, separated documents with EOS and
    streamed the corpus once per stage; their new defaults do otherwise, so its resume must say
    so instead of changing how the rest of the run trains."""
    cfg = load_config(CONFIGS / "tiny-cpu.yaml", [f"model={tiny_model_path}"])
    run = tmp_path / "run"
    (run / "iterations" / "1").mkdir(parents=True)
    old = yaml.safe_load(dump_config(cfg))
    del old["trainer"][field]  # what an older leti wrote
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    (run / "run.json").write_text(json.dumps({"mode": "leti"}))
    (run / "iterations" / "1" / "samples.jsonl").write_text("{}\n")

    assert main(["run", str(CONFIGS / "tiny-cpu.yaml"), "--run-dir", str(run), "--set", f"model={tiny_model_path}"]) == 2
    before = {"shuffle": "true", "pretrain_eos_separator": "true", "pretrain_restart_every_epoch": "false"}[field]
    assert f"field 'trainer.{field}' did not exist when the run started, which ran as trainer.{field}={before}; " \
           f"resume with --set trainer.{field}={before} or use a new --run-dir" in capsys.readouterr().err
    check_unchanged(RunDir(run), load_config(CONFIGS / "tiny-cpu.yaml", [f"model={tiny_model_path}", f"trainer.{field}={before}"]))


def test_a_run_from_before_the_new_defaults_is_told_the_set_that_resumes_it(tmp_path, tiny_model_path, capsys):
    """Its config.yaml holds the old defaults (one step per micro-batch of 8, clipping at 1.0); the
    same YAML now means 16 and 0, so the refusal names the --set that resumes it as it ran."""
    run = tmp_path / "run"
    (run / "iterations" / "1").mkdir(parents=True)
    old = yaml.safe_load(dump_config(load_config(CONFIGS / "tiny-cpu.yaml", [f"model={tiny_model_path}"])))
    old["trainer"]["max_grad_norm"] = 1.0
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    (run / "run.json").write_text(json.dumps({"mode": "leti"}))
    (run / "iterations" / "1" / "samples.jsonl").write_text("{}\n")
    args = ["run", str(CONFIGS / "tiny-cpu.yaml"), "--run-dir", str(run), "--set", f"model={tiny_model_path}"]
    assert main(args) == 2
    assert ("field 'trainer.max_grad_norm' was 1.0 when the run started, now 0.0; resume with the same config "
            "(--set trainer.max_grad_norm=1.0) or use a new --run-dir") in capsys.readouterr().err
    check_unchanged(RunDir(run), load_config(CONFIGS / "tiny-cpu.yaml", [f"model={tiny_model_path}", "trainer.max_grad_norm=1.0"]))


# Trains the tiny model on TEXTS and saves the weights (rank 0): once alone, once under torchrun.
_TRAIN_SCRIPT = '''
import sys, torch
from leti.model import load_model_and_tokenizer
from leti.training.config import TrainerConfig
from leti.training.trainer import train
from accelerate import PartialState
model_path, out, accumulation, stages = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if int(__import__("os").environ.get("WORLD_SIZE", "1")) > 1:  # as leti.loop.distributed.Group does
    PartialState(cpu=True)
texts = [f"<|good|>def f{i}(a):\\\\n    return a + {i}" + " # pad" * (i % 5) + "\\\\n" for i in range(16)]
model, tok = load_model_and_tokenizer(model_path, dtype="float32", device="cpu")
for m in model.modules():
    if isinstance(m, torch.nn.Dropout):
        m.p = 0.0
cfg = TrainerConfig(batch_size=1, gradient_accumulation_steps=accumulation, epochs=1, max_length=64,
                    pretrain_mix_ratio=0, learning_rate=1e-3)
if stages == 1:
    model, stats = train(model, tok, texts, cfg, progress=False)
else:  # two stages, the second going on from the AdamW state rank 0 saved (as iterations do)
    model, stats = train(model, tok, texts[:8], cfg, progress=False, optimizer_to=out + ".adamw")
    PartialState().wait_for_everyone()
    model, more = train(model, tok, texts[8:], cfg, progress=False, optimizer_from=out + ".adamw")
    stats.optimizer_steps += more.optimizer_steps
if model is not None and int(__import__("os").environ.get("RANK", "0")) == 0:
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out)
    print("steps", stats.optimizer_steps)
'''


@pytest.mark.slow
@pytest.mark.parametrize("stages", [1, 2], ids=["one-stage", "adamw-carried-to-a-second-stage"])
def test_two_ranks_of_two_micro_batches_train_as_one_process_of_four(tmp_path, tiny_model_path, stages):
    """A step's gradient is its summed token loss over its predicted tokens however the texts fall
    into micro-batches and ranks: texts of different lengths, 2 ranks x 2 accumulation steps vs 1
    process x 4 (the texts are dealt in order, so every step holds the same four texts). In two
    stages, every rank goes on from the AdamW state rank 0 saved."""
    script = tmp_path / "train.py"
    script.write_text(_TRAIN_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(script), tiny_model_path, str(tmp_path / "one.pt"), "4", str(stages)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), tiny_model_path, str(tmp_path / "two.pt"), "2", str(stages)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "steps 4" in one.stdout and "steps 4" in two.stdout
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    base = load_model_and_tokenizer(tiny_model_path, dtype="float32", device="cpu")[0].state_dict()
    assert max((a[k] - base[k]).abs().max().item() for k in base if a[k].shape == base[k].shape) > 1e-4
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
