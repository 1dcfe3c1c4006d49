"""Training data (tokenise, pad/mask, pack) and the trainer on a tiny offline model."""

from __future__ import annotations

import copy

import pytest
import torch

from leti.errors import LetiError
from leti.model import load_model_and_tokenizer
from leti.training.config import LoraSettings, TrainerConfig
from leti.training.data import (
    PackingStats,
    PadCollator,
    iter_corpus,
    pack_blocks,
    pretrain_batches,
    stdlib_files,
    tokenize_texts,
)
from leti.training.trainer import train

TEXTS = [
    "<|good|>def add(a, b):\n    return a + b\n",
    "<|bad|><|lang_feedback|>NameError: name 'c' is not defined<|/lang_feedback|>def add(a, b):\n    return a + c\n",
] * 4


@pytest.fixture
def model_and_tokenizer(tiny_model_path):
    return load_model_and_tokenizer(tiny_model_path, dtype="float32", device="cpu")


def test_collator_masks_only_padding():
    batch = PadCollator(pad_token_id=0)([[5, 6, 7], [0, 9]])  # a real token may share the pad id
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 9, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [0, 9, -100]]


def test_tokenize_counts_truncation_and_keeps_special_tokens(model_and_tokenizer):
    _, tok = model_and_tokenizer
    data = tokenize_texts(tok, TEXTS[:2], max_length=12)
    assert data.n_truncated == 2 and all(len(e) <= 12 for e in data.examples)
    good, bad = tok.convert_tokens_to_ids(["<|good|>", "<|bad|>"])
    assert data.examples[0][0] == good and data.examples[1][0] == bad  # truncation keeps the front
    assert tokenize_texts(tok, TEXTS[:2], max_length=10_000).n_truncated == 0


def test_texts_are_tokenized_like_sampling_prompts_bos_included(model_and_tokenizer):
    """A tokenizer that adds a BOS (Llama style) gets it in training too, exactly as the samplers'
    `tokenizer(prompt)` does, so training and sampling see the same sequences."""
    from tokenizers.processors import TemplateProcessing

    _, tok = model_and_tokenizer
    tok = copy.deepcopy(tok)
    assert tokenize_texts(tok, TEXTS[:1], max_length=10_000).examples[0] == tok(TEXTS[0]).input_ids
    tok._tokenizer.post_processor = TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, tok.bos_token_id)])
    ids = tokenize_texts(tok, TEXTS[:1], max_length=10_000).examples[0]
    assert ids == tok(TEXTS[0]).input_ids and ids[0] == tok.bos_token_id
    assert ids[1] == tok.convert_tokens_to_ids("<|good|>")


def test_stdlib_corpus_is_sorted_and_packs_full_blocks(model_and_tokenizer):
    _, tok = model_and_tokenizer
    files = stdlib_files(max_files=30)
    assert files and files == stdlib_files(max_files=30)
    assert all("site-packages" not in f.parts for f in files)
    stats = PackingStats()
    blocks = list(pack_blocks(iter_corpus("stdlib", 5), tok, 64, stats))
    assert blocks and all(len(b) == 64 for b in blocks)
    assert tok.eos_token_id in sum(blocks, [])  # documents are separated by eos
    assert stats.efficiency >= 0.9


def test_directory_corpus_and_errors(tmp_path, model_and_tokenizer):
    _, tok = model_and_tokenizer
    (tmp_path / "b.py").write_text("def b():\n    return 2\n" * 20)
    (tmp_path / "a.py").write_text("def a():\n    return 1\n" * 20)
    assert list(iter_corpus(str(tmp_path), 10))[0].startswith("def a")
    batch = next(pretrain_batches(tok, str(tmp_path), 16, 2, 10, PackingStats()))
    assert batch["input_ids"].shape == (2, 16) and batch["attention_mask"].all()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LetiError, match="holds no .py files"):
        list(iter_corpus(str(empty), 10))


def test_trainer_changes_every_weight_and_reports_stats(model_and_tokenizer):
    model, tok = model_and_tokenizer
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainerConfig(batch_size=4, epochs=2, max_length=64, learning_rate=1e-3, pretrain_corpus="stdlib",
                        pretrain_max_files=5, gradient_accumulation_steps=1)
    assert model.loss_type is None  # GPT-2: transformers warns at the first loss unless it is named
    model, stats = train(model, tok, TEXTS, cfg, progress=False)
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert changed == list(before)
    assert model.loss_type == "ForCausalLM"
    # 8 texts / batch 4 = 2 LeTI batches per epoch, each followed by one pretraining batch (1:1)
    assert (stats.leti_batches, stats.pretrain_batches, stats.optimizer_steps) == (4, 4, 8)
    assert stats.packing_efficiency >= 0.9 and stats.pretrain_tokens == 4 * 4 * 64
    assert stats.loss_last < stats.loss_first


@pytest.mark.parametrize("ratio, expected", [(0.1, 1), (0.3, 3)])
def test_a_fractional_mix_ratio_takes_every_pretraining_step_it_owes(model_and_tokenizer, ratio, expected):
    """10 LeTI steps at ratio r take floor(10 r) pretraining steps (float credit lost one)."""
    model, tok = model_and_tokenizer
    cfg = TrainerConfig(batch_size=1, epochs=1, max_length=32, pretrain_corpus="stdlib", pretrain_max_files=5,
                        gradient_accumulation_steps=1, pretrain_mix_ratio=ratio)
    _, stats = train(model, tok, (TEXTS * 2)[:10], cfg, progress=False)
    assert (stats.leti_batches, stats.pretrain_batches) == (10, expected)


def test_trainer_without_mix_with_accumulation_and_checkpointing(model_and_tokenizer):
    model, tok = model_and_tokenizer
    cfg = TrainerConfig(batch_size=2, epochs=1, max_length=64, pretrain_mix_ratio=0,
                        gradient_accumulation_steps=2, gradient_checkpointing=True)
    model, stats = train(model, tok, TEXTS, cfg, progress=False)
    assert (stats.leti_batches, stats.pretrain_batches, stats.optimizer_steps) == (4, 0, 2)
    assert stats.packing_efficiency == 0.0  # no pretraining batches
    assert not model.is_gradient_checkpointing and model.config.use_cache  # ready to sample again


def test_lora_trains_adapters_and_special_tokens_then_merges(model_and_tokenizer):
    model, tok = model_and_tokenizer
    emb = model.get_input_embeddings().weight
    good = tok.convert_tokens_to_ids("<|good|>")
    before_good, before_plain = emb[good].clone(), emb[5].clone()
    cfg = TrainerConfig(batch_size=4, epochs=2, max_length=64, learning_rate=1e-2, pretrain_mix_ratio=0,
                        lora=LoraSettings(enabled=True, r=4))
    merged, _ = train(model, tok, TEXTS, cfg, progress=False)
    assert type(merged).__name__ == "GPT2LMHeadModel"  # plain model, ready to save and sample
    emb = merged.get_input_embeddings().weight
    assert not torch.equal(emb[good], before_good)  # new token embedding learned
    assert torch.equal(emb[5], before_plain)  # the rest of the vocabulary frozen


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora-adapter"])
def test_a_model_trained_in_mixed_precision_computes_as_its_reloaded_checkpoint(model_and_tokenizer, tmp_path, lora,
                                                                               request):
    """The autocast wrapper of mixed precision stays with training: the model handed back samples
    and evaluates as its saved checkpoint does when a resumed run (or vLLM) loads it."""
    from accelerate.state import AcceleratorState

    from leti.model import save_model

    # Accelerate keeps one state per process, fixed by the first Accelerator: a leti process
    # trains every stage in one precision, this test process in two (accelerate's tests reset it so)
    AcceleratorState._reset_state(reset_partial_state=True)
    request.addfinalizer(lambda: AcceleratorState._reset_state(reset_partial_state=True))
    model, tok = model_and_tokenizer
    cfg = TrainerConfig(batch_size=4, epochs=1, max_length=64, learning_rate=1e-3, pretrain_mix_ratio=0,
                        mixed_precision="bf16", lora=LoraSettings(enabled=lora, r=4, save="adapter" if lora else "merged"))
    trained, _ = train(model, tok, TEXTS, cfg, progress=False)
    save_model(trained, tok, tmp_path / "ck")
    reloaded, _ = load_model_and_tokenizer(str(tmp_path / "ck"), dtype="float32", device="cpu")
    ids = torch.tensor([tok(TEXTS[1]).input_ids])
    trained.eval(), reloaded.eval()
    with torch.no_grad():
        assert torch.equal(trained(ids).logits, reloaded(ids).logits)


def test_each_loss_curve_point_is_the_mean_of_the_steps_since_the_previous_one(model_and_tokenizer):
    """3 steps logged every 2: (2, mean of steps 1-2), (3, step 3 alone). The last point
    must not re-count step 2, so the points weighted by their steps give the stage's mean."""
    model, tok = model_and_tokenizer
    cfg = TrainerConfig(batch_size=1, gradient_accumulation_steps=1, epochs=1, max_length=64,
                        learning_rate=1e-2, pretrain_mix_ratio=0, log_every=2)
    _, stats = train(model, tok, TEXTS[:3], cfg, progress=False)
    assert [step for step, _ in stats.loss_curve] == [2, 3]
    (_, first_two), (_, third) = stats.loss_curve
    assert third == pytest.approx(stats.loss_last)
    assert (2 * first_two + third) / 3 == pytest.approx(stats.loss_mean)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_training_16_bit_weights_is_refused_before_any_step(tiny_model_path, dtype):
    """AdamW on bf16 weights loses lr-1e-5 updates to rounding; on fp16 weights it makes NaN
    (eps underflows). train() refuses them before a step, naming the fix, and leaves them as they were."""
    model, tok = load_model_and_tokenizer(tiny_model_path, dtype=dtype, device="cpu")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainerConfig(batch_size=2, epochs=1, max_length=64, pretrain_mix_ratio=0)
    with pytest.raises(LetiError, match=f"^the trained weights are {dtype}: AdamW needs them in float32") as e:
        train(model, tok, TEXTS, cfg, progress=False)
    assert "model_dtype: float32" in str(e.value) and "trainer.lora.enabled: true" in str(e.value)
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())


def test_lora_on_16_bit_weights_trains_fp32_adapters(tiny_model_path):
    model, tok = load_model_and_tokenizer(tiny_model_path, dtype="bfloat16", device="cpu")
    cfg = TrainerConfig(batch_size=2, epochs=2, max_length=64, learning_rate=1e-2, pretrain_mix_ratio=0,
                        lora=LoraSettings(enabled=True, r=4))
    merged, stats = train(model, tok, TEXTS, cfg, progress=False)
    assert stats.loss_last < stats.loss_first
    assert all(torch.isfinite(p).all() for p in merged.parameters())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_fp16_mixed_precision_without_a_gpu_is_refused(model_and_tokenizer):
    """CPU autocast takes bf16 only: Accelerate would quietly train fp32 under 'fp16'."""
    model, tok = model_and_tokenizer
    cfg = TrainerConfig(batch_size=2, epochs=1, max_length=64, pretrain_mix_ratio=0, mixed_precision="fp16")
    with pytest.raises(LetiError, match=r"^trainer.mixed_precision='fp16' needs a CUDA GPU"):
        train(model, tok, TEXTS, cfg, progress=False)


def test_qlora_trains_on_4bit_copy_and_merges_into_full_precision(model_and_tokenizer, tiny_model_path):
    pytest.importorskip("bitsandbytes")
    model, tok = model_and_tokenizer
    base = {k: v.clone() for k, v in model.state_dict().items()}
    good = tok.convert_tokens_to_ids("<|good|>")
    ids = tok(TEXTS[1], return_tensors="pt").input_ids

    def loss(m) -> float:
        with torch.no_grad():
            return float(m(input_ids=ids, labels=ids).loss)

    before = loss(model)
    cfg = TrainerConfig(batch_size=4, epochs=3, max_length=64, learning_rate=1e-2, pretrain_mix_ratio=0,
                        lora=LoraSettings(enabled=True, r=4, load_in_4bit=True))
    merged, stats = train(model, tok, TEXTS, cfg, progress=False, source=tiny_model_path)
    # A plain full-precision model comes back: no 4-bit layers, no adapters, fp32 weights.
    assert type(merged).__name__ == "GPT2LMHeadModel"
    assert not getattr(merged, "is_loaded_in_4bit", False)
    state = merged.state_dict()
    assert set(state) == set(base) and all(v.dtype == torch.float32 for v in state.values())
    # The adapters moved the attention weights and the <|good|> row; other token rows are frozen.
    name = "transformer.h.0.attn.c_attn.weight"
    assert not torch.equal(state[name], base[name])
    emb = "transformer.wte.weight"
    assert not torch.equal(state[emb][good], base[emb][good])
    assert torch.equal(state[emb][5], base[emb][5])
    # What was learned on the 4-bit copy carries over to the full-precision weights.
    assert stats.loss_last < stats.loss_first
    assert loss(merged) < before


def test_qlora_without_source_or_lora_is_an_error(model_and_tokenizer):
    model, tok = model_and_tokenizer
    with pytest.raises(ValueError, match="needs trainer.lora.enabled"):
        TrainerConfig(lora=LoraSettings(load_in_4bit=True))
    cfg = TrainerConfig(pretrain_mix_ratio=0, lora=LoraSettings(enabled=True, load_in_4bit=True))
    with pytest.raises(LetiError, match="needs source="):
        train(model, tok, TEXTS, cfg, progress=False)


def test_rebuild_from_gathered_weights_gives_the_same_model(model_and_tokenizer):
    """The leader's step after an FSDP / ZeRO-3 gather: a fresh plain model from a full state
    dict (here the model's own; 16-bit as ZeRO-3 gathers it, cast back to the template's fp32)."""
    from leti.training.sharded import Template, rebuild

    model, tok = model_and_tokenizer
    template = Template.of(model)
    state = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    fresh = rebuild(template, state)
    assert fresh is not model and type(fresh) is type(model)
    assert all(p.dtype == torch.float32 for p in fresh.parameters())
    ids = tok("def add(a, b):", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = model.to(torch.bfloat16).float()(input_ids=ids).logits
        assert torch.allclose(fresh(input_ids=ids).logits, expected, atol=1e-5)
    assert fresh.generation_config.pad_token_id == tok.pad_token_id
    # The output head is tied to the embeddings: a state without it is complete.
    del state["lm_head.weight"]
    rebuild(template, state)
    del state["transformer.h.0.attn.c_attn.weight"]
    with pytest.raises(LetiError, match="missing .*c_attn"):
        rebuild(template, state)


def test_empty_texts_is_an_error(model_and_tokenizer):
    model, tok = model_and_tokenizer
    with pytest.raises(LetiError, match="no training texts"):
        train(model, tok, [], TrainerConfig(), progress=False)


def _reference_batches(tok, corpus: str, block_size: int, batch_size: int, max_files: int, n: int):
    """The pretraining stream as a plain re-read of the corpus per pass (how it is defined)."""
    out = []
    while len(out) < n:
        blocks = list(pack_blocks(iter_corpus(corpus, max_files), tok, block_size, PackingStats()))
        out += [blocks[i : i + batch_size] for i in range(0, len(blocks) - batch_size + 1, batch_size)]
    return out[:n]


def test_the_pretraining_stream_restarts_the_corpus_and_every_stage_gets_the_same_batches(tmp_path, model_and_tokenizer):
    """Every training stage restarts the stream at the corpus's first file, and a stream that
    runs past the corpus's end goes round it again (blocks spill across the restart)."""
    _, tok = model_and_tokenizer
    for i in range(6):
        (tmp_path / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i}\n" * (3 + i))
    (tmp_path / "latin1.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))  # unreadable: skipped
    want = _reference_batches(tok, str(tmp_path), 16, 2, 10, 40)
    for _stage in range(2):
        stream = pretrain_batches(tok, str(tmp_path), 16, 2, 10, PackingStats())
        assert [next(stream)["input_ids"].tolist() for _ in range(40)] == want


_FSDP_GROUPS = r'''
import json, os, socket, sys
import torch, torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP, ShardingStrategy
from leti.training.trainer import _named_groups

def names(groups):
    return [[n.replace("_fsdp_wrapped_module.", "") for n, _ in g] for g in groups]

def run(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
    before = _named_groups(model)
    decayed = {id(p) for _, p in before[0]}
    wrapped = FSDP(model, device_id=torch.device("cpu"), use_orig_params=True, sharding_strategy=ShardingStrategy.FULL_SHARD)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"before": names(before), "by_shape": names(_named_groups(wrapped)),
                       "decided_before": names(_named_groups(wrapped, decayed))}, f)
    dist.destroy_process_group()

if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(run, args=(port, sys.argv[1]), nprocs=2, start_method="fork")
'''


def test_fsdp_weights_keep_their_weight_decay(tmp_path):
    """FSDP1 (use_orig_params, as fsdp.yaml) turns every parameter into a 1-D view of its shard,
    and the optimizer is built after wrapping: by shape, every weight looked like a bias and got
    no weight decay. The groups are decided before wrapping. Two CPU processes (gloo), for real."""
    import json
    import os
    import subprocess
    import sys

    script, out = tmp_path / "groups.py", tmp_path / "groups.json"
    script.write_text(_FSDP_GROUPS)
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got["before"] == [["0.weight", "2.weight"], ["0.bias", "1.weight", "1.bias", "2.bias"]]
    assert got["by_shape"][0] == []  # what the optimizer used to get: no weight decayed
    assert got["decided_before"] == got["before"]
