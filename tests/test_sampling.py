"""HF sampler on a tiny random GPT-2: counts, indices, stop sequences, seeds, resume."""

from __future__ import annotations

import pytest

from leti.errors import LetiError
from leti.model import load_model_and_tokenizer
from leti.sampling import SampleRequest, SamplingConfig, get_sampler

REQUESTS = [
    SampleRequest("short", "def add(a, b):\n"),
    SampleRequest("long", '"""\nWrite a function to sort a list.\nassert f([2, 1]) == [1, 2]\n"""\n'),
]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_path):
    return load_model_and_tokenizer(tiny_model_path, device="cpu")


def run(model_and_tokenizer, requests=REQUESTS, n=None, skip=None, **config):
    config.setdefault("max_new_tokens", 16)
    sampler = get_sampler(SamplingConfig(**config), *model_and_tokenizer)
    return {s.key: s for s in sampler.sample(requests, n=n, skip=skip)}


@pytest.mark.parametrize(
    ("field", "value"),
    [("n", 0), ("temperature", -0.5), ("top_p", 0.0), ("top_p", 1.5), ("max_new_tokens", 0),
     ("batch_size", 0), ("stop", ("",)), ("stop", "\n"), ("backend", "tgi")],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(LetiError, match=f"{field}") as info:
        SamplingConfig(**{field: value})
    assert "\n" not in str(info.value)


def test_config_defaults_are_paper_training_sampling():
    cfg = SamplingConfig(stop=["\nassert"])
    assert (cfg.n, cfg.temperature, cfg.top_p, cfg.max_new_tokens) == (128, 1.0, 1.0, 512)
    assert cfg.stop == ("\nassert",)


def test_yields_n_samples_per_request_with_indices(model_and_tokenizer):
    _, tok = model_and_tokenizer
    samples = run(model_and_tokenizer, n=3, batch_size=4)
    assert set(samples) == {(r.problem_id, k) for r in REQUESTS for k in range(3)}
    prompts = {r.problem_id: r.prompt for r in REQUESTS}
    for (pid, _), s in samples.items():
        assert s.prompt == prompts[pid]
        assert s.n_prompt_tokens == len(tok(prompts[pid]).input_ids)
        assert 0 < s.n_completion_tokens <= 16
        assert s.finish_reason in ("stop", "length")
        assert not s.completion.startswith(s.prompt)  # prompt stripped


def test_stop_sequence_ends_generation_early_and_is_cut(model_and_tokenizer):
    free = run(model_and_tokenizer, REQUESTS[:1], n=1, temperature=0.0, max_new_tokens=24)
    text = free["short", 0].completion
    assert free["short", 0].n_completion_tokens == 24
    # A character from the first half of the greedy text must stop the same greedy run.
    stop = next(c for c in text[1 : len(text) // 2] if c.isascii() and c.isalnum())
    cut = run(
        model_and_tokenizer, REQUESTS[:1], n=1, temperature=0.0, max_new_tokens=24, stop=(stop,)
    )["short", 0]
    assert cut.completion == text[: text.index(stop)]
    assert cut.finish_reason == "stop"
    assert cut.n_completion_tokens < 24  # stopped while generating, not trimmed afterwards


def test_stop_sequences_hold_for_every_sampled_row(model_and_tokenizer):
    samples = run(model_and_tokenizer, n=6, batch_size=5, max_new_tokens=48, stop=("e", "\n"))
    assert all("e" not in s.completion and "\n" not in s.completion for s in samples.values())
    stopped = [s for s in samples.values() if s.finish_reason == "stop"]
    assert len(stopped) >= 10 and all(s.n_completion_tokens < 48 for s in stopped)


def test_seeded_samples_do_not_depend_on_batching(model_and_tokenizer):
    a = run(model_and_tokenizer, n=4, batch_size=8, seed=3)
    b = run(model_and_tokenizer, list(reversed(REQUESTS)), n=4, batch_size=3, seed=3)
    alone = run(model_and_tokenizer, REQUESTS[:1], n=4, batch_size=1, seed=3)
    assert a == b
    assert all(alone[key] == a[key] for key in alone)
    other = run(model_and_tokenizer, n=4, batch_size=8, seed=4)
    differ = sum(other[key].completion != a[key].completion for key in a)
    assert differ >= 6  # 8 samples of 16 random tokens: equal only by a freak chance


def test_skip_is_honoured_and_resume_matches_full_run(model_and_tokenizer):
    full = run(model_and_tokenizer, n=3, batch_size=4)
    skip = {("short", 0), ("long", 2)}
    rest = run(model_and_tokenizer, n=3, batch_size=4, skip=skip)
    assert set(rest) == set(full) - skip
    assert all(rest[key] == full[key] for key in rest)


def test_tiny_top_p_keeps_only_the_top_token(model_and_tokenizer):
    greedy = run(model_and_tokenizer, n=2, temperature=0.0)
    nucleus = run(model_and_tokenizer, n=2, temperature=1.0, top_p=1e-9)
    assert {k: s.completion for k, s in nucleus.items()} == {
        k: s.completion for k, s in greedy.items()
    }


def test_training_mode_model_samples_without_dropout(model_and_tokenizer):
    model, _ = model_and_tokenizer
    reference = run(model_and_tokenizer, n=2)
    model.train()
    try:
        assert run(model_and_tokenizer, n=2) == reference
        assert model.training  # mode restored for the trainer
    finally:
        model.eval()


def test_bad_requests_are_one_line_errors(model_and_tokenizer):
    sampler = get_sampler(SamplingConfig(max_new_tokens=4), *model_and_tokenizer)
    dup = [SampleRequest("p", "x = 1\n"), SampleRequest("p", "y = 2\n")]
    with pytest.raises(LetiError, match="'p' appears twice"):
        list(sampler.sample(dup, n=1))
    too_long = [SampleRequest("big", "x = 1\n" * 400)]
    with pytest.raises(LetiError, match="'big'.*context"):
        list(sampler.sample(too_long, n=1))


def test_vllm_backend_gives_install_hint_or_clear_error(model_and_tokenizer):
    with pytest.raises(LetiError, match="vllm|vLLM"):
        get_sampler(SamplingConfig(backend="vllm"), *model_and_tokenizer)
