"""Both samplers never draw LeTI's four control tokens (<|good|>, <|bad|>, <|lang_feedback|>,
<|/lang_feedback|>). They mark up the training text; a sample holding one goes into execution
and into a training text, and teaches the model to write them inside code.

The model here is the tiny GPT-2 with its (tied) rows of the four tokens rebuilt so that their
logits are about 20 above every other token's at every position: unblocked, greedy decoding
writes one of them first and sampling at T=1 writes little else (checked on the raw logits, so
the tests cannot pass by a model that never wanted them)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from leti.model import SPECIAL_TOKENS, load_model_and_tokenizer
from leti.sampling import SampleRequest, SamplingConfig, get_sampler
from leti.sampling.vllm_config import VLLMConfig

REQUESTS = [
    SampleRequest("short", "def add(a, b):\n"),
    SampleRequest("long", '"""\nWrite a function to sort a list.\nassert f([2, 1]) == [1, 2]\n"""\n'),
]
# fp32 for token-exact HF/vLLM comparisons; on vLLM's CPU build gpu_memory_utilization is the
# share of RAM kept for the KV cache (as in tests/test_vllm.py).
ENGINE = VLLMConfig(dtype="float32", enforce_eager=True,
                    gpu_memory_utilization=0.3 if torch.cuda.is_available() else 0.1)


@torch.no_grad()
def _prefer_leti_tokens(model, tokenizer, margin: float = 20.0) -> list[int]:
    """Make the four tokens the model's favourites at every position; returns their ids. ln_f's
    first output dimension becomes the constant `margin` (weight 0, bias margin) and each token's
    row the unit vector on it (slightly scaled, so that greedy has one winner): the token's logit
    is about `margin` whatever the input, every other token's stays near 0. GPT-2 ties lm_head
    to the input embedding, so the rows change there too (no prompt here holds the tokens)."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    model.transformer.ln_f.weight[0] = 0.0
    model.transformer.ln_f.bias[0] = margin
    rows = model.get_output_embeddings().weight
    for k, i in enumerate(ids):
        rows[i] = 0.0
        rows[i, 0] = 1.0 + 0.01 * k
    return ids


@pytest.fixture(scope="module")
def eager_model(tiny_model_path: str, tmp_path_factory: pytest.TempPathFactory):
    """(model, tokenizer, the four ids, checkpoint dir): the tiny model that prefers LeTI's tokens,
    also saved (with its tokenizer) for the vLLM engine and `leti evaluate`."""
    model, tok = load_model_and_tokenizer(tiny_model_path, dtype="float32", device="cpu")
    ids = _prefer_leti_tokens(model, tok)
    path = tmp_path_factory.mktemp("eager_model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model, tok, ids, str(path)


def _has_leti_token(text: str) -> bool:
    return any(t in text for t in SPECIAL_TOKENS)


def test_the_model_really_prefers_leti_tokens(eager_model) -> None:
    """Without a block, the model writes them: argmax of the next-token logits on every prompt,
    and plain `generate` (greedy and sampled) emits them."""
    model, tok, ids, _ = eager_model
    for req in REQUESTS:
        prompt = torch.tensor([tok(req.prompt).input_ids])
        with torch.inference_mode():
            logits = model(prompt).logits[0, -1]
            assert logits.argmax().item() in ids
            assert logits[ids].min() > logits[[i for i in range(len(logits)) if i not in ids]].max() + 10
            greedy = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                    max_new_tokens=4, pad_token_id=tok.pad_token_id)
            torch.manual_seed(0)
            sampled = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=0,
                                     temperature=1.0, max_new_tokens=8, pad_token_id=tok.pad_token_id)
        assert set(greedy[0, prompt.shape[1]:].tolist()) <= set(ids)
        assert len(set(sampled[0, prompt.shape[1]:].tolist()) & set(ids)) >= 2


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_hf_sampler_never_writes_leti_tokens(eager_model, temperature: float) -> None:
    """Greedy and seeded T=1 samples of the HF sampler hold none of the four tokens, run to their
    budget (the model, kept off its favourites, writes other tokens) and repeat for the same seed."""
    model, tok, _, _ = eager_model
    cfg = SamplingConfig(n=3, temperature=temperature, max_new_tokens=12, seed=5, batch_size=4)
    samples = list(get_sampler(cfg, model, tok).sample(REQUESTS))
    assert len(samples) == 6
    for s in samples:
        assert not _has_leti_token(s.completion), s.completion
        assert s.n_completion_tokens > 0 and s.completion
    again = list(get_sampler(replace(cfg, batch_size=1), model, tok).sample(REQUESTS))
    assert {s.key: s for s in again} == {s.key: s for s in samples}


def test_evaluation_draws_no_leti_tokens(eager_model, tmp_path: Path) -> None:
    """`leti evaluate --model` samples through the same sampler: a LeTI checkpoint prompted with
    <|good|> (the test-time conditioning) gets no control token in its completions."""
    from leti.evaluation.generate import GenerationRequest, generate_samples
    from leti.tasks.jsonl import JsonlTask

    _, _, _, path = eager_model
    task_file = tmp_path / "toy.jsonl"
    task_file.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "inc", "prompt": "def inc(x):\n", "tests": "assert inc(1) == 2\n"},
        {"id": "dbl", "prompt": "def dbl(x):\n", "tests": "assert dbl(3) == 6\n"},
    ]))
    task = JsonlTask(task_file)
    req = GenerationRequest(model=path, n=2, temperature=1.0, top_p=1.0, max_new_tokens=8,
                            prompt_prefix="<|good|>", device="cpu")
    out = generate_samples(task, task.problems("test"), req, tmp_path / "samples.jsonl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4
    assert all(not _has_leti_token(r["completion"]) and r["completion"] for r in rows)


def test_only_the_tokenizers_own_leti_tokens_are_blocked(tiny_model_path: str, eager_model) -> None:
    """The blocked ids are the four added tokens' ids; a plain base model's tokenizer has none of
    them, and nothing is blocked (its ids for those strings would be unk or pieces of text)."""
    from transformers import AutoTokenizer

    from leti.sampling.base import leti_token_ids

    _, tok, ids, _ = eager_model
    assert leti_token_ids(tok) == sorted(ids) and len(set(ids)) == 4
    assert leti_token_ids(AutoTokenizer.from_pretrained(tiny_model_path)) == []


def test_the_block_changes_nothing_else(tiny_model_path: str) -> None:
    """On a model that does not want the tokens, greedy HF samples are plain `generate`'s tokens."""
    model, tok = load_model_and_tokenizer(tiny_model_path, dtype="float32", device="cpu")
    cfg = SamplingConfig(n=1, temperature=0, max_new_tokens=16, batch_size=1)
    for req in REQUESTS:
        [sample] = get_sampler(cfg, model, tok).sample([req])
        prompt = torch.tensor([tok(req.prompt).input_ids])
        with torch.inference_mode():
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                 max_new_tokens=16, pad_token_id=tok.pad_token_id, eos_token_id=None)
        new = out[0, prompt.shape[1]:].tolist()
        eos = new.index(tok.eos_token_id) if tok.eos_token_id in new else len(new)
        assert sample.completion == tok.decode(new[:eos], skip_special_tokens=False,
                                               clean_up_tokenization_spaces=False)


@pytest.mark.vllm
def test_vllm_sampler_never_writes_leti_tokens(eager_model) -> None:
    """The vLLM backend blocks them too: its greedy samples equal the HF backend's (both blocked),
    seeded T=1 samples hold none; the same engine, asked without the block, writes them."""
    from vllm import SamplingParams

    from leti.sampling.vllm import VLLMEngine

    model, tok, ids, path = eager_model
    cfg = SamplingConfig(n=3, temperature=0, max_new_tokens=12, seed=5, backend="vllm", vllm=ENGINE)
    engine = VLLMEngine(cfg, path)
    try:
        greedy = {s.key: s for s in get_sampler(cfg, engine, None).sample(REQUESTS)}
        hf = {s.key: s for s in get_sampler(replace(cfg, backend="hf", batch_size=1), model, tok).sample(REQUESTS)}
        assert greedy == hf
        sampled = list(get_sampler(replace(cfg, temperature=1.0), engine, None).sample(REQUESTS))
        assert len(sampled) == 6
        for s in [*greedy.values(), *sampled]:
            assert not _has_leti_token(s.completion) and s.n_completion_tokens > 0, s.completion
        # Not vacuous: the same engine without the block writes the tokens.
        llm, _ = engine.get()
        prompts = [{"prompt_token_ids": tok(r.prompt).input_ids} for r in REQUESTS]
        raw = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=4, seed=None), use_tqdm=False)
        assert all(set(o.outputs[0].token_ids) <= set(ids) for o in raw)
    finally:
        engine.close()


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_a_draw_of_a_blocked_token_is_drawn_again_exactly_and_no_other_draw_moves(top_p):
    """The per-row sampler with a block: every draw that is not a blocked token is the draw
    without the block (so a model that never draws them samples what it did before the block),
    and the rest are redrawn from the distribution with the blocked tokens removed (checked by
    frequency over 40,000 rows where the blocked tokens hold about half the mass)."""
    from leti.sampling.hf import _PerRowSampling

    vocab, rows, blocked = 12, 40_000, [3, 7]
    torch.manual_seed(0)
    logits = torch.randn(vocab)
    logits[blocked] += 1.0
    scores = logits.expand(rows, vocab).clone()

    def draw(block: list[int]) -> torch.Tensor:
        gens = [torch.Generator().manual_seed(r) for r in range(rows)]
        out = _PerRowSampling(gens, temperature=1.0, top_p=top_p, steps=1, blocked=block)(None, scores.clone())
        return out.argmax(dim=-1)

    free, kept = draw([]), draw(blocked)
    was_blocked = torch.isin(free, torch.tensor(blocked))
    assert 0.3 < was_blocked.float().mean() < 0.7  # the redraw path is exercised
    assert not torch.isin(kept, torch.tensor(blocked)).any()
    assert torch.equal(kept[~was_blocked], free[~was_blocked])
    # the target: the top-p set of the unblocked distribution's draw, blocked tokens removed
    p = torch.softmax(logits.double(), -1)
    ranked, order = p.sort(descending=True)
    inside = torch.zeros(vocab, dtype=torch.bool)
    inside[order[(ranked.cumsum(-1) - ranked) < top_p]] = True
    inside[blocked] = False
    target = torch.where(inside, p, 0.0)
    target /= target.sum()
    seen = torch.bincount(kept, minlength=vocab).double() / rows
    assert (seen - target).abs().max() < 0.01, (seen, target)


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_a_blocked_token_far_above_the_rest_is_redrawn_from_the_rest(top_p):
    """Its logit ~800 above every other: the others' probabilities are 0 in float64, and the
    redraw among zeros took the last vocabulary id (with leti's tokenizer, <|/lang_feedback|>)."""
    from leti.sampling.hf import _PerRowSampling

    vocab, rows, blocked = 8, 20_000, [6, 7]
    logits = torch.tensor([0.0, 1.0, 0.5, -1.0, 0.2, 0.3, 800.0, -5.0])
    gens = [torch.Generator().manual_seed(r) for r in range(rows)]
    out = _PerRowSampling(gens, temperature=1.0, top_p=top_p, steps=1, blocked=blocked)(None, logits.expand(rows, vocab).clone())
    seen = torch.bincount(out.argmax(dim=-1), minlength=vocab).double() / rows
    rest = logits.clone()
    rest[blocked] = float("-inf")
    target = torch.softmax(rest.double(), -1)
    if top_p < 1.0:  # top-p over the others: the set of the whole distribution held token 6 only
        ranked, order = target.sort(descending=True)
        keep = torch.zeros(vocab, dtype=torch.bool)
        keep[order[(ranked.cumsum(-1) - ranked) < top_p]] = True
        target = torch.where(keep, target, 0.0) / target[keep].sum()
    assert seen[blocked].sum() == 0
    assert (seen - target).abs().max() < 0.015, (seen, target)
