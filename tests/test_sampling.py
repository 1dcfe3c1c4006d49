"""HF sampler on a tiny random GPT-2 (counts, indices, stop sequences, seeds, resume) and JSONL io."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from functools import partial

import pytest

from leti.errors import LetiError
from leti.model import decode_completion, encode_prompt, load_model_and_tokenizer
from leti.sampling import (
    Sample,
    SampleRequest,
    SamplingConfig,
    append_samples_jsonl,
    done_keys,
    get_sampler,
    read_samples_jsonl,
)

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


def test_a_requests_own_stops_apply_to_its_rows_only(model_and_tokenizer):
    """One batch mixes a request with its own stops, one with none, and one using the config's:
    each row is cut by its own list, as if it had been sampled alone with that list."""
    kw = dict(n=3, batch_size=9, max_new_tokens=48, seed=5)
    own = SampleRequest("own", REQUESTS[0].prompt, stop=("e", "\n"))
    free = SampleRequest("free", REQUESTS[1].prompt, stop=())
    default = SampleRequest("default", REQUESTS[1].prompt)
    mixed = run(model_and_tokenizer, [own, free, default], stop=("a",), **kw)
    alone_own = run(model_and_tokenizer, [SampleRequest("own", own.prompt)], stop=own.stop, **kw)
    alone_free = run(model_and_tokenizer, [SampleRequest("free", free.prompt)], **kw)
    alone_default = run(model_and_tokenizer, [SampleRequest("default", default.prompt)], stop=("a",), **kw)
    assert {k: v for k, v in mixed.items() if k[0] == "own"} == alone_own
    assert {k: v for k, v in mixed.items() if k[0] == "free"} == alone_free
    assert {k: v for k, v in mixed.items() if k[0] == "default"} == alone_default
    assert any(s.finish_reason == "stop" and s.n_completion_tokens < 48 for s in alone_own.values())
    assert any("a" in s.completion for s in alone_free.values())  # the config's stop did not apply


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


def test_the_checkpoints_generation_config_does_not_change_the_draws(model_and_tokenizer):
    """A generation_config.json (instruct checkpoints ship sampling settings; some set
    min_new_tokens or suppress_tokens) must not reach leti's draws, which depend on the seed
    and the logits alone."""
    model, tok = model_and_tokenizer
    reference = run(model_and_tokenizer, n=2, temperature=1.0)
    greedy = run(model_and_tokenizer, n=1, temperature=0.0)
    saved = model.generation_config
    shipped = copy.deepcopy(saved)
    shipped.update(do_sample=True, temperature=0.3, top_k=2, repetition_penalty=1.3, min_new_tokens=12,
                   suppress_tokens=list(range(100, 400)))
    model.generation_config = shipped
    try:
        assert run(model_and_tokenizer, n=2, temperature=1.0) == reference
        assert run(model_and_tokenizer, n=1, temperature=0.0) == greedy
        assert model.generation_config is shipped  # the checkpoint's own is kept for saving
    finally:
        model.generation_config = saved


def test_bad_requests_are_one_line_errors(model_and_tokenizer):
    sampler = get_sampler(SamplingConfig(max_new_tokens=4), *model_and_tokenizer)
    dup = [SampleRequest("p", "x = 1\n"), SampleRequest("p", "y = 2\n")]
    with pytest.raises(LetiError, match="'p' appears twice"):
        list(sampler.sample(dup, n=1))
    too_long = [SampleRequest("big", "x = 1\n" * 400)]
    with pytest.raises(LetiError, match="'big'.*context"):
        list(sampler.sample(too_long, n=1))
    with pytest.raises(LetiError, match="'s'.*stop"):
        list(sampler.sample([SampleRequest("s", "x = 1\n", stop="\n")], n=1))


def test_vllm_backend_gives_install_hint_or_clear_error(model_and_tokenizer):
    with pytest.raises(LetiError, match="vllm|vLLM"):
        get_sampler(SamplingConfig(backend="vllm"), *model_and_tokenizer)


# --- JSONL storage -------------------------------------------------------------------------


def make_sample(pid: str, k: int, completion: str = "    return a + b\n") -> Sample:
    return Sample(pid, k, "def add(a, b):\n", completion, 6, 5, "stop")


def test_jsonl_round_trip_and_done_keys(tmp_path):
    path = tmp_path / "run" / "samples.jsonl"
    assert done_keys(path) == set()
    first = [make_sample("a", 0), make_sample("a", 1, "ünïcode \"quotes\"\n\t")]
    assert append_samples_jsonl(path, first) == 2
    assert append_samples_jsonl(path, [make_sample("b", 0)]) == 1
    assert read_samples_jsonl(path) == [*first, make_sample("b", 0)]
    assert done_keys(path) == {("a", 0), ("a", 1), ("b", 0)}


def test_truncated_last_line_is_dropped_then_repaired_on_append(tmp_path):
    path = tmp_path / "samples.jsonl"
    append_samples_jsonl(path, [make_sample("a", 0), make_sample("a", 1)])
    with open(path, "ab") as f:  # what kill -9 in the middle of a write leaves behind
        f.write(b'{"problem_id": "a", "sample_idx": 2, "prom')
    assert [s.key for s in read_samples_jsonl(path)] == [("a", 0), ("a", 1)]
    assert done_keys(path) == {("a", 0), ("a", 1)}
    append_samples_jsonl(path, [make_sample("a", 2)])
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    assert [s.key for s in read_samples_jsonl(path)] == [("a", 0), ("a", 1), ("a", 2)]


def test_record_cut_before_its_newline_is_kept(tmp_path):
    path = tmp_path / "samples.jsonl"
    append_samples_jsonl(path, [make_sample("a", 0)])
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    assert done_keys(path) == {("a", 0)}
    append_samples_jsonl(path, [make_sample("a", 1)])
    assert [s.key for s in read_samples_jsonl(path)] == [("a", 0), ("a", 1)]


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    path = tmp_path / "samples.jsonl"
    append_samples_jsonl(path, [make_sample("a", 0)])
    with open(path, "ab") as f:
        f.write(b"garbage\n")
    with open(path, "ab") as f:
        f.write((json.dumps(asdict(make_sample("a", 1))) + "\n").encode())
    with pytest.raises(LetiError, match=r"samples.jsonl:2"):
        read_samples_jsonl(path)


def test_append_writes_each_sample_as_it_arrives(tmp_path):
    path = tmp_path / "samples.jsonl"

    def sampler_that_dies():
        yield make_sample("a", 0)
        yield make_sample("a", 1)
        raise RuntimeError("killed mid-run")

    with pytest.raises(RuntimeError):
        append_samples_jsonl(path, sampler_that_dies())
    assert done_keys(path) == {("a", 0), ("a", 1)}


def test_sampler_output_streams_into_jsonl_and_resumes(model_and_tokenizer, tmp_path):
    path = tmp_path / "samples.jsonl"
    sampler = get_sampler(SamplingConfig(n=3, max_new_tokens=8, batch_size=2), *model_and_tokenizer)
    append_samples_jsonl(path, sampler.sample(REQUESTS[:1], n=2))
    append_samples_jsonl(path, sampler.sample(REQUESTS, skip=done_keys(path)))
    keys = [s.key for s in read_samples_jsonl(path)]
    assert sorted(keys) == sorted((r.problem_id, k) for r in REQUESTS for k in range(3))


class _CountingDecode:
    """A tokenizer whose decode calls are counted by the ids they decode."""

    def __init__(self, tok):
        self.tok, self.decoded = tok, []

    def __getattr__(self, name):
        return getattr(self.tok, name)

    def __call__(self, *args, **kwargs):
        return self.tok(*args, **kwargs)

    def decode(self, ids, **kwargs):
        self.decoded.append(tuple(ids))
        return self.tok.decode(ids, **kwargs)


def test_each_prompt_is_decoded_once_per_batch_not_once_per_sample(model_and_tokenizer):
    model, tok = model_and_tokenizer
    counting = _CountingDecode(tok)
    cfg = SamplingConfig(n=4, max_new_tokens=8, batch_size=8)
    samples = {s.key: s for s in get_sampler(cfg, model, counting).sample(REQUESTS)}
    assert samples == run(model_and_tokenizer, n=4, max_new_tokens=8, batch_size=8)  # same output
    for req in REQUESTS:
        prompt = tuple(tok(req.prompt).input_ids)
        assert counting.decoded.count(prompt) == 1


def test_per_row_uniforms_are_drawn_once_per_batch_and_match_per_step_draws(model_and_tokenizer, monkeypatch):
    """Each row's uniforms come from its own generator: drawn up front for the batch's steps,
    they are the draws of one rand(()) per step (and go on from there past those steps)."""
    import torch

    from leti.sampling.hf import _PerRowSampling

    torch.manual_seed(0)
    scores = [torch.randn(5, 40) * 3 for _ in range(9)]

    def picks(steps):
        sampler = _PerRowSampling([torch.Generator().manual_seed(i) for i in range(5)], 0.8, 0.9, steps=steps)
        return [sampler(None, s).argmax(-1).tolist() for s in scores]

    assert picks(0) == picks(6) == picks(9)  # per step; 6 drawn up front, then per step; all up front
    calls = []
    rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: calls.append(a) or rand(*a, **k))
    samples = run(model_and_tokenizer, n=4, max_new_tokens=12, batch_size=8, temperature=1.0)
    monkeypatch.undo()
    assert samples == run(model_and_tokenizer, n=4, max_new_tokens=12, batch_size=8, temperature=1.0)
    assert len(calls) == len(samples)  # one call per row, not one per row and step


def test_every_end_token_of_the_generation_config_ends_a_sample_on_both_backends(tiny_model_path, tmp_path):
    """A generation_config.json naming several eos ids (Llama 3, Qwen2.5 instruct): vLLM stops at
    each (as stop token ids) and returns it as the last token; the vLLM sampler must cut it as
    the HF sampler does, not decode it into the completion (e.g. a literal '<|endoftext|>')."""
    import shutil

    import torch

    from leti.sampling.vllm import VLLMSampler, plan_requests, to_sample

    path = shutil.copytree(tiny_model_path, tmp_path / "m")
    model, tok = load_model_and_tokenizer(str(path), device="cpu")
    prompt = tok(REQUESTS[0].prompt).input_ids
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             do_sample=False, max_new_tokens=8, pad_token_id=tok.pad_token_id, eos_token_id=None)
    raw = out[0, len(prompt):].tolist()
    end = raw[1]  # a token the model writes: the checkpoint's second end token
    assert end != tok.eos_token_id and raw[0] != end
    config = json.loads((path / "generation_config.json").read_text())
    (path / "generation_config.json").write_text(json.dumps({**config, "eos_token_id": [tok.eos_token_id, end]}))
    cfg = SamplingConfig(n=1, temperature=0.0, max_new_tokens=8)
    model, tok = load_model_and_tokenizer(str(path), device="cpu")
    (hf,) = get_sampler(cfg, model, tok).sample(REQUESTS[:1])
    assert hf.n_completion_tokens == 1 and hf.finish_reason == "stop"
    assert hf.completion == tok.decode(raw[:1])
    vllm = VLLMSampler(cfg, str(path))  # no engine starts before sample()
    (planned,) = plan_requests(REQUESTS[:1], 1, set(), vllm._tokenize, 512, cfg)
    # What vLLM's engine returns: the tokens up to and including the end token it stopped at.
    assert to_sample(planned, raw[:2], vllm._decoder(planned.prompt_ids), vllm.eos_ids) == hf
    # A tokenizer eos the generation config leaves out still ends a sample (vLLM stops there).
    (path / "generation_config.json").write_text(json.dumps({**config, "eos_token_id": end}))
    model, tok = load_model_and_tokenizer(str(path), device="cpu")
    assert get_sampler(cfg, model, tok).eos_ids == VLLMSampler(cfg, str(path)).eos_ids == {tok.eos_token_id, end}


def _writes_forever(model, tok, tokens: list[int]) -> None:
    """Make a Phi model write `tokens` again and again from any prompt: its blocks add nothing
    (attention and MLP outputs zeroed), so a token's logits come from its own embedding row
    alone, set to point at the next token of the cycle."""
    import torch

    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.dense.weight.zero_()
            layer.self_attn.dense.bias.zero_()
            layer.mlp.fc2.weight.zero_()
            layer.mlp.fc2.bias.zero_()
        emb, head = model.get_input_embeddings().weight, model.lm_head
        emb.zero_()
        emb[:, 0] = 1.0  # every other token (the prompt's last) leads to tokens[0]
        head.weight.zero_()
        head.bias.zero_()
        for k, token in enumerate(tokens):
            emb[token] = 0.0
            emb[token, k + 1] = 1.0
            head.weight[tokens[(k + 1) % len(tokens)], k + 1] = 10.0
        head.weight[tokens[0], 0] = 10.0


def test_stops_are_found_in_the_text_the_completion_is_cut_from(tmp_path):
    """The stop check while generating decodes as the completion is decoded: with the
    sentencepiece decoder, the first new token keeps its leading space, so a stop " +" ends
    the sample at that token (it was seen one token late); a tokenizer saved with
    clean_up_tokenization_spaces=True (transformers 4 honours it) does not turn " ." into "." there,
    which ended samples at a stop ".." that their text does not hold."""
    from leti.sampling.vllm import plan_requests, to_sample
    from leti.testing import make_tiny_model

    model, tok = load_model_and_tokenizer(make_tiny_model(tmp_path / "sp", arch="phi", tokenizer="sentencepiece"),
                                          device="cpu")
    (plus,) = tok("x = 1 +", add_special_tokens=False).input_ids[-1:]
    assert tok.convert_ids_to_tokens(plus) == "▁+"
    _writes_forever(model, tok, [plus])
    for stop, n_tokens in [(" +", 1), (" + +", 2)]:
        cfg = SamplingConfig(n=1, temperature=0.0, max_new_tokens=6, stop=(stop,))
        (sample,) = get_sampler(cfg, model, tok).sample([SampleRequest("a", "x = 1")])
        assert (sample.completion, sample.n_completion_tokens, sample.finish_reason) == ("", n_tokens, "stop")
        # The vLLM sampler's count for the same tokens.
        (planned,) = plan_requests([SampleRequest("a", "x = 1")], 1, set(), lambda text: encode_prompt(tok, text), 512, cfg)
        decode = partial(decode_completion, tok, planned.prompt_ids)
        assert to_sample(planned, [plus] * 6, decode, {tok.eos_token_id}).n_completion_tokens == n_tokens

    model, tok = load_model_and_tokenizer(make_tiny_model(tmp_path / "bl", arch="phi"), device="cpu")
    space, dot = tok.convert_tokens_to_ids(["Ġ", "."])
    _writes_forever(model, tok, [space, dot])
    cleaning = copy.deepcopy(tok)
    cleaning.clean_up_tokenization_spaces = True
    # transformers 5 ignores the setting for BPE tokenizers unless told to apply it anyway
    cleaning.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output = True
    assert cleaning.decode([space, dot, space, dot]) == ".."
    cfg = SamplingConfig(n=1, temperature=0.0, max_new_tokens=8, stop=("..",))
    for t in (tok, cleaning):
        (sample,) = get_sampler(cfg, model, t).sample([SampleRequest("a", "x = 1")])
        assert (sample.completion, sample.n_completion_tokens, sample.finish_reason) == (" ." * 4, 8, "length")


def test_a_file_of_other_records_is_refused_not_dropped(tmp_path):
    """A JSONL file of other records (here: one line with the wrong fields, which is also the last
    line) is not taken for a partial write: the error names the file, the line and the fields."""
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps({"problem_id": "a", "sample_idx": 0, "passed": True}) + "\n")
    with pytest.raises(LetiError, match=r"samples.jsonl:1: sample record has fields \['passed', 'problem_id', 'sample_idx'\]"):
        read_samples_jsonl(path)
    with pytest.raises(LetiError, match="not written by leti.sampling.io"):
        append_samples_jsonl(path, [make_sample("a", 1)])


def test_blank_lines_are_skipped_and_text_is_stored_as_utf8(tmp_path):
    path = tmp_path / "samples.jsonl"
    append_samples_jsonl(path, [make_sample("a", 0, "    return 'ünï' + '日本'\n")])
    with open(path, "ab") as f:
        f.write(b"\n  \n")  # e.g. a hand edit
    append_samples_jsonl(path, [make_sample("a", 1)])
    assert [s.key for s in read_samples_jsonl(path)] == [("a", 0), ("a", 1)]
    assert read_samples_jsonl(path)[0].completion == "    return 'ünï' + '日本'\n"
    assert "'ünï' + '日本'" in path.read_text(encoding="utf-8")  # readable as it was written, not \\u escapes


def test_each_sample_is_on_disk_before_the_next_is_generated(tmp_path):
    """A reader (or a kill -9) between two samples finds every earlier sample in the file."""
    path = tmp_path / "samples.jsonl"
    seen = []

    def sampler():
        for k in range(3):
            seen.append(done_keys(path))  # what is on disk when sample k is about to be produced
            yield make_sample("a", k)

    assert append_samples_jsonl(path, sampler()) == 3
    assert seen == [set(), {("a", 0)}, {("a", 0), ("a", 1)}]


def test_a_prompt_near_the_context_does_not_shorten_the_others_in_its_batch(tmp_path):
    """The widest prompt of a batch set every row's token budget: a short prompt batched with one
    that left less than max_new_tokens of the context was cut to that one's budget, so its sample
    depended on the batch (vLLM caps each prompt by itself). Now each gets what it gets alone."""
    from leti.testing import make_tiny_model

    model, tok = load_model_and_tokenizer(make_tiny_model(tmp_path / "m", n_positions=64), device="cpu")
    long = "def f(x):\n" + "    x = x + 1\n" * 7
    n_long = len(encode_prompt(tok, long))
    assert 64 - 30 < n_long < 64 - 4  # leaves fewer than max_new_tokens (30), but some
    requests = [SampleRequest("short", "def add(a, b):\n"), SampleRequest("long", long),
                SampleRequest("long2", long.replace("x", "y"))]
    together = run((model, tok), requests, n=2, max_new_tokens=30, batch_size=8, seed=1)
    for req in requests:
        alone = run((model, tok), [req], n=2, max_new_tokens=30, batch_size=1, seed=1)
        assert all(together[key] == alone[key] for key in alone), req.problem_id
    # the short prompt goes past the budget the long ones have (64 - n_long), up to max_new_tokens
    assert max(s.n_completion_tokens for s in together.values() if s.problem_id == "short") == 30
    assert all(s.n_completion_tokens + s.n_prompt_tokens == 64 and s.finish_reason == "length"
               for s in together.values() if s.problem_id.startswith("long"))
