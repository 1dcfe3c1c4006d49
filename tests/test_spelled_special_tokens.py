"""A special token's string spelled out in a prompt, a program, its feedback or a corpus file is
read as text: only LeTI's markers (and training_text.append_eos's final end-of-text) become
control tokens. Read as they stand, "<s>" in a task's prompt put a Llama BOS mid-prompt, and
"<|endoftext|>" printed by a program put an EOS inside a training text."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from tokenizers import pre_tokenizers

from leti.execution.records import ExecutionResult, Status
from leti.feedback.training_text import (
    BAD,
    FEEDBACK_CLOSE,
    FEEDBACK_OPEN,
    GOOD,
    TrainingTextConfig,
    build_training_text,
)
from leti.model import _add_tokens, encode_prompt
from leti.testing import make_tiny_tokenizer
from leti.training.data import PackingStats, pretrain_batches, tokenize_texts

PROMPT = 'def strike(s):\n    """Wrap s in "<s>" and "</s>" tags; <unk> and <|endoftext|> stay as they are."""\n'
COMPLETION = '    return "<s>" + s + "</s>"  # <|endoftext|>\n'


@pytest.fixture(scope="module", params=["byte_level", "sentencepiece", "sentencepiece-first", "llama-transformers5"])
def tok(request):
    """GPT-2 style (BOS = EOS = '<|endoftext|>'), Llama style ('<s>' put in front, EOS '</s>',
    '<unk>'), Metaspace's prepend_scheme 'first' (a stretch after a marker has no leading '▁'),
    and that as transformers 5 builds Llama 2's tokenizer (no normalizer, Metaspace split=False)."""
    t = make_tiny_tokenizer(style="byte_level" if request.param == "byte_level" else "sentencepiece")
    if request.param == "sentencepiece-first":
        t.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    if request.param == "llama-transformers5":
        t.backend_tokenizer.normalizer = None
        t.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                                     split=False)
    _add_tokens(t)
    return t


def _failed() -> ExecutionResult:
    return ExecutionResult(id=0, status=Status.FAILED, exception_type="AssertionError",
                           message='got "</s>" and <|endoftext|>')


def _specials(tok, ids: list[int]) -> list[tuple[int, str]]:
    special = set(tok.all_special_ids)
    return [(i, tok.convert_ids_to_tokens(t)) for i, t in enumerate(ids) if t in special]


def test_only_the_markers_are_control_tokens_in_a_training_text(tok):
    text = build_training_text(PROMPT, COMPLETION, _failed(), TrainingTextConfig())
    ids = tokenize_texts(tok, [text], 10_000).examples[0]
    front = [(0, "<s>")] if tok.bos_token == "<s>" else []  # what the Llama-style tokenizer adds
    found = _specials(tok, ids)
    assert [s for _, s in found] == [s for _, s in front] + [BAD, FEEDBACK_OPEN, FEEDBACK_CLOSE]
    # the spelled strings are all there, as text
    decoded = tok.decode(ids)
    for s in ("<s>", "</s>", "<unk>", "<|endoftext|>"):
        assert decoded.count(s) == text.count(s) + (s == "<s>" and bool(front)), s


def test_the_final_end_of_text_of_append_eos_stays_a_token(tok):
    text = build_training_text(PROMPT, COMPLETION, _failed(), TrainingTextConfig(append_eos=True), eos_token=tok.eos_token)
    ids = tokenize_texts(tok, [text], 10_000).examples[0]
    assert ids[-1] == tok.eos_token_id and tok.eos_token_id not in ids[:-1]


def test_the_sampling_prompt_is_the_start_of_its_training_text(tok):
    """What the model is prompted with (<|good|> + prompt) is what a passing sample trains on."""
    passed = ExecutionResult(id=0, status=Status.PASSED)
    prompt_ids = encode_prompt(tok, GOOD + PROMPT)
    text_ids = encode_prompt(tok, build_training_text(PROMPT, COMPLETION, passed, TrainingTextConfig()))
    # but the prompt's last token: its final newline may merge with the completion's indent
    # (GPT-2's byte-level pre-tokenizer), for any prompt
    assert text_ids[: len(prompt_ids) - 1] == prompt_ids[:-1]
    assert [s for _, s in _specials(tok, prompt_ids)][-1] == GOOD  # no BOS/EOS/UNK after the marker


@pytest.mark.parametrize("text", [GOOD + "s = 'a<s>b'\n", GOOD + 'x = "</s>"\n', GOOD + "x <s> y  <unk>\n",
                                  BAD + FEEDBACK_OPEN + "got </s>" + FEEDBACK_CLOSE + PROMPT + COMPLETION])
def test_the_text_reads_back_as_it_was_written(tok, text):
    """Nothing added round a spelled token: the prompt's string literal "</s>" stays "</s>", not
    " </s>". (Metaspace's 'always' scheme puts a space after every marker, for any text: left out.)"""
    if tok.backend_tokenizer.pre_tokenizer.__getstate__().find(b'"always"') >= 0:
        pytest.skip("prepend_scheme 'always' reads a space after every marker, spelled tokens or not")
    ids = encode_prompt(tok, text)
    front = 1 if tok.bos_token == "<s>" else 0
    assert tok.decode(ids[front:]) == text


def test_ordinary_text_keeps_the_tokenizers_own_ids(tok):
    for text in (GOOD + "def f(x):\n    return x < 2\n", BAD + FEEDBACK_OPEN + "NameError: y" + FEEDBACK_CLOSE + "y = 1\n"):
        assert encode_prompt(tok, text) == list(tok(text).input_ids)


def test_a_corpus_file_quoting_special_tokens_is_code(tok, tmp_path):
    """Documents are separated by one EOS each and hold no other control token, read in memory or
    through the on-disk token cache."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"m{i}.py").write_text(f"TAGS = ['<s>', '</s>', '<unk>', '<|endoftext|>', '<|bad|>']  # {i}\n" * 40)
    for cache in (None, tmp_path / "cache"):
        stats = PackingStats()
        blocks = pretrain_batches(tok, str(corpus), 64, 1, 10, stats, cache_dir=cache)
        # less than one pass (the stream starts again after the last file)
        ids = [t for _ in range(stats_blocks(tok, corpus, 64) - 1) for t in next(blocks)["input_ids"][0].tolist()]
        assert len(ids) > 1000
        assert set(ids) & set(tok.all_special_ids) <= {tok.eos_token_id}
        assert ids.count(tok.eos_token_id) <= 3  # the separators: one per file


def stats_blocks(tok, corpus: Path, block: int) -> int:
    """How many full blocks one pass over the corpus makes (the separators included)."""
    n = sum(len(tok(p.read_text(), split_special_tokens=True, add_special_tokens=False).input_ids) + 1
            for p in corpus.glob("*.py"))
    return n // block


def test_an_unchanged_copy_of_the_tokenizer_reads_specials_as_tokens_when_asked():
    """The tokenizer itself is left as it was: plain `tokenizer(text)` still reads the strings as
    its tokens (leti reads them as text only where it tokenizes)."""
    t = make_tiny_tokenizer(style="sentencepiece")
    before = copy.deepcopy(t)
    _add_tokens(t)
    encode_prompt(t, PROMPT)
    assert t("<s>", add_special_tokens=False).input_ids == [t.bos_token_id] == [before.bos_token_id]
