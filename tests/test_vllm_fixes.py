"""vLLM backend review fixes: prompt ids beyond the served vocabulary (a LoRA adapter whose tokenizer
has LeTI's tokens but not their rows), a seed above vLLM's 32 bits, vLLM's weight-loading bar
under `progress: false`, the memory hint of a failed engine start, --batch-size with
--backend vllm, and the prompt decoded once per prompt. The pure parts run everywhere; one test
starts an engine (vLLM's CPU build: .venv-vllm/bin/python)."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from leti.cli import main
from leti.errors import LetiError
from leti.model import SPECIAL_TOKENS, encode_prompt
from leti.sampling import SampleRequest, SamplingConfig, get_sampler
from leti.sampling.hf import derive_seed
from leti.sampling.vllm import (
    Checkpoint,
    check_prompt_vocab,
    engine_seed,
    plan_requests,
    ram_hint,
    start_failure_hint,
)
from leti.sampling.vllm_config import VLLMConfig
from leti.testing import make_tiny_model

GIB = 2**30
REQUESTS = [
    SampleRequest("short", "def add(a, b):\n"),
    SampleRequest("long", '"""\nWrite a function to sort a list.\nassert f([2, 1]) == [1, 2]\n"""\n'),
]


def _with_leti_tokens(path: str):
    """The model's tokenizer with LeTI's tokens added and the model left as it is: what an adapter
    saved with trainer.lora.train_special_tokens: false carries."""
    tok = AutoTokenizer.from_pretrained(path)
    vocab = len(tok)
    tok.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return tok, vocab


def test_a_prompt_token_the_model_has_no_row_for_is_one_line_naming_it(tiny_model_path):
    tok, vocab = _with_leti_tokens(tiny_model_path)
    cfg = SamplingConfig(n=2, temperature=1.0)
    good = tok.convert_tokens_to_ids("<|good|>")
    assert good >= vocab
    plain = plan_requests(REQUESTS, 2, set(), lambda t: encode_prompt(tok, t), 512, cfg)
    check_prompt_vocab(plain, vocab, tok, Checkpoint(model="base"))  # every id has a row: nothing to say
    prefixed = [SampleRequest(r.problem_id, "<|good|>" + r.prompt) for r in REQUESTS]
    planned = plan_requests(prefixed, 2, set(), lambda t: encode_prompt(tok, t), 512, cfg)
    adapter = Checkpoint(model="base", adapter="run/ckpt", lora_rank=8)
    with pytest.raises(LetiError) as info:
        check_prompt_vocab(planned, vocab, tok, adapter)
    message = str(info.value)
    assert message.startswith(f"problem short: its prompt holds token id {good} ('<|good|>'), for which the base "
                              f"model base of adapter run/ckpt has no embedding row (its vocabulary: {vocab} tokens, the "
                              f"tokenizer's: {len(tok)}), so vLLM cannot serve it; sample with the HF backend")
    assert "--backend hf; sampling.backend: hf" in message and "trainer.lora.save: merged" in message
    assert "\n" not in message
    with pytest.raises(LetiError, match=r"model.resize_token_embeddings") as info:
        check_prompt_vocab(planned, vocab, tok, Checkpoint(model="full"))
    assert "trainer.lora" not in str(info.value)


def test_the_engine_seed_is_in_vllms_range_and_request_seeds_in_torchs():
    """vLLM's engine seeds numpy (32 bits); a request's seed goes to a torch.Generator (64 bits)."""
    assert engine_seed(5_000_000_000) == 5_000_000_000 - 2**32
    assert [engine_seed(s) for s in (0, 7, 2**32 - 1)] == [0, 7, 2**32 - 1]  # in range: unchanged
    for seed in (0, 5_000_000_000, 2**63, 10**30):
        request_seed = derive_seed(seed, "p", 3)
        assert 0 <= request_seed < 2**63
        torch.Generator().manual_seed(request_seed)


def test_a_failed_engine_start_is_blamed_on_ram_only_when_ram_is_short():
    """Every engine-process failure reaches leti as this one RuntimeError; the RAM hint came with
    each of them on CPU (a refused seed included)."""
    failed = RuntimeError("Engine core initialization failed. See root cause above. Failed core proc(s): {}")
    assert ram_hint(0.1, 16 * GIB, 12 * GIB) == ""
    assert start_failure_hint(failed, 0, None, ram_hint(0.1, 16 * GIB, 12 * GIB)) == ""
    short = ram_hint(1.0, 16 * GIB, 12 * GIB)
    assert short.startswith("on vLLM's CPU build sampling.vllm.gpu_memory_utilization is the share of RAM")
    assert short.endswith("(weights and KV cache; 1: 16.0 GiB, 12.0 GiB are free): lower it below 0.75")
    assert start_failure_hint(failed, 0, None, short) == f"; {short}"
    assert start_failure_hint(failed, 1, None, short) == ""  # on GPUs the setting is no RAM share
    assert ram_hint(0.01, 16 * GIB, 12 * GIB).endswith("less than the engine process itself holds): raise it")
    script = start_failure_hint(failed, 0, "/x/s.py", "")
    assert script.startswith("; if /x/s.py runs leti outside") and "gpu_memory_utilization" not in script


def _evaluate_parser() -> argparse.ArgumentParser:
    from leti.cli import evaluate_cmd

    parser = argparse.ArgumentParser()
    evaluate_cmd.register(parser.add_subparsers())
    return parser


def test_batch_size_with_the_vllm_backend_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    """vLLM makes its own batches: --batch-size was ignored without a word; explicitly given (even
    the default value) it is refused, naming --vllm chunk_size."""
    from leti.cli.evaluate_cmd import check_generation_flags

    for size in ("8", "16"):
        rc = main(["evaluate", "--task", "mbpp", "--model", "some/model", "--backend", "vllm", "--batch-size", size,
                   "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1
        assert err.startswith(f"leti: error: --batch-size {size}: applies to --backend hf") and "--vllm chunk_size=N" in err
        assert not (tmp_path / "o").exists()
    parser = _evaluate_parser()
    common = ["evaluate", "--task", "mbpp", "--model", "m", "--out", "o"]
    check_generation_flags(parser.parse_args([*common, "--backend", "vllm"]))  # not given: fine
    check_generation_flags(parser.parse_args([*common, "--batch-size", "8"]))  # the hf backend's setting
    # with --samples, a --batch-size given at its default value is refused too (it was let through)
    samples = tmp_path / "s.jsonl"
    samples.write_text("")
    rc = main(["evaluate", "--task", "mbpp", "--samples", str(samples), "--batch-size", "16", "--out", str(tmp_path / "o2")])
    assert rc == 2 and "--batch-size applies to --model" in capsys.readouterr().err


@pytest.mark.vllm
def test_vllm_adapter_with_tokens_beyond_its_base_large_seed_quiet_load(tmp_path, capfd):
    """One engine (each start costs ~25 s on CPU) on a LoRA adapter whose tokenizer has LeTI's tokens
    and whose base model has no rows for them, started with a seed above 2**32 under `progress: false`:
    - it starts (was: vLLM's "Seed must be between 0 and 2**32 - 1" and leti's RAM hint), and its
      seeded samples at temperature 1 (each request's seed derived from 5e9) are drawn;
    - vLLM's "Loading safetensors checkpoint shards" bar is not drawn;
    - each prompt is decoded once, not once per sample;
    - a prompt holding <|good|> is leti's one line naming the token and the fixes (was vLLM's
      VLLMValidationError traceback from llm.generate)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from leti.loop.runner import _library_progress
    from leti.sampling.vllm import VLLMEngine

    base = make_tiny_model(tmp_path / "base", arch="llama")  # vLLM has no LoRA for GPT-2
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora = LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, lora).save_pretrained(tmp_path / "adapter")
    tok, _ = _with_leti_tokens(base)
    tok.save_pretrained(tmp_path / "adapter")
    engine_cfg = VLLMConfig(dtype="float32", enforce_eager=True,
                            gpu_memory_utilization=0.3 if torch.cuda.is_available() else 0.1)
    cfg = SamplingConfig(n=3, temperature=1.0, max_new_tokens=8, seed=5_000_000_000, backend="vllm", vllm=engine_cfg)
    engine = VLLMEngine(cfg, str(tmp_path / "adapter"))
    decoded: list[tuple[int, ...]] = []
    decode = engine.tokenizer.decode

    def counting_decode(ids, **kwargs):
        decoded.append(tuple(ids))
        return decode(ids, **kwargs)

    engine.tokenizer.decode = counting_decode  # the real decode, its calls counted
    try:
        capfd.readouterr()
        with _library_progress(False):  # what `progress: false` does in a run
            samples = list(get_sampler(cfg, engine, None).sample(REQUESTS))
        err = capfd.readouterr().err
        assert engine.running and engine.seed == 5_000_000_000
        assert len(samples) == 6 and len({s.completion for s in samples}) > 1
        assert "Loading safetensors" not in err, err[-2000:]
        prompts = {tuple(encode_prompt(engine.tokenizer, r.prompt)) for r in REQUESTS}
        assert Counter(ids for ids in decoded if ids in prompts) == Counter(prompts)  # once each

        good = engine.tokenizer.convert_tokens_to_ids("<|good|>")
        assert good >= engine.vocab_size
        prefixed = [SampleRequest("good", "<|good|>" + REQUESTS[0].prompt)]
        with pytest.raises(LetiError) as info:
            list(get_sampler(cfg, engine, None).sample(prefixed))
        message = str(info.value)
        assert message.startswith(f"problem good: its prompt holds token id {good} ('<|good|>'), for which the base "
                                  f"model {base} of adapter {tmp_path / 'adapter'} has no embedding row")
        assert "--backend hf" in message and "trainer.lora.save: merged" in message and "\n" not in message
    finally:
        engine.close()
