"""Batched sampling with transformers' `generate` (KV cache, left padding).

Many prompts x n samples are expanded into rows, sorted by prompt length (little padding) and
generated batch_size rows at a time. Stop sequences end a row while generating; a batch ends
once every row has stopped or the budget is spent. LeTI's four control tokens (<|good|> ...)
are never drawn: they mark up training texts, and a sample holding one would teach the model to
write them inside code.

Determinism: every (problem_id, sample_idx) draws its tokens from its own random stream,
seeded by a hash of (seed, problem_id, sample_idx). Generation runs greedy over logits that a
per-row sampler has already reduced to the one token it drew, so the draw for a row does not
depend on the other rows. Hence a sample does not depend on batch_size, on the other requests
or on `skip`, with two caveats: padding and batch shape change floating-point rounding, which
can flip a near-tied draw (rare in fp32, more frequent in bf16/fp16). A prompt that leaves less
than max_new_tokens of the model's context gets the rest of the context (finish_reason "length"
when it is used up), in a batch of prompts of its own length. Same inputs, config and batch
composition -> same output on the same hardware and software.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.utils import logging as hf_logging

from leti.errors import LetiError
from leti.model import decode_completion, decode_prompt, encode_prompt, end_token_ids, model_context
from leti.progress import Progress
from leti.sampling.base import (
    Sample,
    SampleRequest,
    SamplingConfig,
    check_prompt_fits,
    check_requests,
    cut_at_stop,
    leti_token_ids,
    samples_per_request,
)

# One row of a batch: (prompt token ids, request, sample index).
_Row = tuple[list[int], SampleRequest, int]


def derive_seed(seed: int, problem_id: str, sample_idx: int) -> int:
    """Stable 63-bit seed for one sample (Python's hash() is salted per process, so no)."""
    digest = hashlib.blake2b(f"{seed}\0{problem_id}\0{sample_idx}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


class _PerRowSampling(LogitsProcessor):
    """Temperature + top-p sampling with one torch.Generator per row. Returns logits that are
    -inf except for the drawn token, so generate's greedy step picks exactly that token.

    `blocked` tokens (LeTI's control tokens) are never returned. A row whose draw lands on one
    draws again, once, from the same top-p set without them, with the next uniform of its own
    stream. That is exactly that set's distribution with them removed (a draw of x: p(x) at once,
    or P(blocked) * p(x) / (1 - P(blocked)) on the redraw; vLLM removes them before its top-p
    cut, which differs only when one is inside the set), and every other draw stays the one it
    was without the block, so a model that never draws them samples what it sampled before the
    block existed (removing their mass before the draw would move every inverse-CDF draw a
    little). A set of blocked tokens only is redrawn from top-p over the other tokens."""

    def __init__(self, generators: list[torch.Generator], temperature: float, top_p: float, steps: int = 0,
                 blocked: list[int] | None = None):
        self.generators = generators
        self.temperature = temperature
        self.top_p = top_p
        self.blocked = torch.tensor(blocked or [], dtype=torch.long)
        # The uniforms of the first `steps` steps, drawn up front: a CPU generator's rand(n) is
        # the same stream as n calls of rand(()) (uniform_ fills serially), so these are the
        # draws of one call per row and step, without a Python loop over the rows every step.
        self.uniforms = (torch.stack([torch.rand(steps, generator=g) for g in generators]).double()
                         if steps > 0 and generators else None)
        self.step = 0

    def _uniforms(self, device: torch.device) -> torch.Tensor:
        """This step's uniform of every row, from the row's own stream."""
        step, self.step = self.step, self.step + 1
        if self.uniforms is not None and step < self.uniforms.shape[1]:
            return self.uniforms[:, step].to(device)
        # Past the drawn steps: each stream goes on where the draws above left it.
        return torch.tensor([torch.rand((), generator=g).item() for g in self.generators],
                            dtype=torch.float64, device=device)

    def _in_top_p(self, ranked: torch.Tensor) -> torch.Tensor:
        """Over probabilities sorted in descending order: the smallest prefix whose mass reaches
        top_p (the top token always stays), as 1.0 / 0.0. The one rule of both draws."""
        return ((ranked.cumsum(dim=-1) - ranked) < self.top_p).to(ranked.dtype)

    def _top_p_set(self, probs: torch.Tensor) -> torch.Tensor:
        """1.0 on the tokens of each row's top-p set (all of them at top_p 1), 0.0 elsewhere."""
        if self.top_p >= 1.0:
            return torch.ones_like(probs)
        ranked, order = probs.sort(dim=-1, descending=True)
        return torch.zeros_like(probs).scatter_(-1, order, self._in_top_p(ranked))

    def _draw(self, probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """Inverse-CDF draw of one token per row (column (rows, 1)) from `probs` cut to top_p."""
        order = None
        if self.top_p < 1.0:
            probs, order = probs.sort(dim=-1, descending=True)
            probs = probs * self._in_top_p(probs)
        cdf = probs.cumsum(dim=-1)
        # The uniform scaled by the kept mass: an inverse-CDF draw.
        targets = (uniforms * cdf[:, -1]).unsqueeze(-1)
        picked = torch.searchsorted(cdf, targets, right=True).clamp_(max=cdf.shape[-1] - 1)
        return picked if order is None else order.gather(-1, picked)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        # float64 cumsum: the inverse-CDF draw must not land past the last token.
        probs = torch.softmax(scores.double().div_(self.temperature), dim=-1)  # (batch, vocab)
        # One uniform per row from that row's own stream (CPU generators: same draws on any device).
        picked = self._draw(probs, self._uniforms(scores.device))
        blocked = self.blocked.to(scores.device)
        hit = torch.isin(picked.squeeze(-1), blocked).nonzero().squeeze(-1).tolist() if len(blocked) else []
        for row in hit:  # rare: a Python loop over the rows that drew a blocked token
            # In logits, not in probs: a blocked token far above the rest (~745 x T) leaves the
            # others' probabilities 0 in float64, and a draw among zeros took the last id.
            logits = scores[row : row + 1].double().div(self.temperature)
            again = logits.masked_fill(self._top_p_set(probs[row : row + 1]) == 0, float("-inf"))  # the first draw's set
            again[:, blocked] = float("-inf")
            if torch.isinf(again).all():  # the set held blocked tokens only: top-p over the others
                again = logits.clone()
                again[:, blocked] = float("-inf")
                again = again.masked_fill(self._top_p_set(torch.softmax(again, dim=-1)) == 0, float("-inf"))
            uniform = torch.rand((), generator=self.generators[row]).to(device=scores.device, dtype=torch.float64)
            cdf = torch.softmax(again, dim=-1).cumsum(dim=-1)
            target = (uniform * cdf[:, -1]).unsqueeze(-1)
            picked[row] = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.shape[-1] - 1)[0]
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, picked, 0.0)


class _StopOnText(StoppingCriteria):
    """Marks a row done once its generated text contains one of its stop sequences (each row
    has its own list). Only a tail window of tokens is decoded each step: a stop sequence of c
    characters is at most 4c UTF-8 bytes, hence spans at most 4c byte-level tokens, so the
    window always covers a fresh match. The window is decoded as decode_completion decodes the
    completion (after the token before it, no clean-up of spaces), so that it is the very text
    the sample is cut on: decoded alone, a sentencepiece window lost its first token's leading
    space (a stop " +" right at the start was seen one token late or never), and a tokenizer
    saved with clean_up_tokenization_spaces=True turned " ," into "," (a stop that the
    completion does not hold ended it early)."""

    def __init__(self, tokenizer, stops: list[tuple[str, ...]], prompt_width: int, end_ids: set[int]):
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_width = prompt_width
        self.end_ids = end_ids
        self.window = 4 * max(len(s) for row in stops for s in row) + 1
        self.stopped_at: dict[int, int] = {}  # row -> number of new tokens when it stopped

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        n_new = input_ids.shape[1] - self.prompt_width
        # The window and one token before it: the prompt's last token (left padding puts it at
        # prompt_width - 1 in every row) until the window slides past the first new token.
        tails = input_ids[:, self.prompt_width + max(0, n_new - self.window) - 1 :].tolist()
        for row, tail in enumerate(tails):
            # Rows already stopped, rows without stops, or padded after eos, need no decoding.
            if row in self.stopped_at or not self.stops[row] or tail[-1] in self.end_ids:
                continue
            text = decode_completion(self.tokenizer, tail[:1], tail[1:])
            if any(s in text for s in self.stops[row]):
                self.stopped_at[row] = n_new
        done = [row in self.stopped_at for row in range(len(tails))]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _NoPaddingWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("We strongly recommend passing in an `attention_mask`")


@contextmanager
def _quiet_padding_warning(unpadded: bool) -> Iterator[None]:
    """generate() drops an all-ones attention mask (a batch of prompts of one length), and a row
    that has ended on eos (= pad for many tokenizers) then feeds pad tokens, so the model warns
    that the input "may be padded". The prompts are not, and a row's tokens after its eos are
    cut off (_finish): the warning is wrong here. A padded batch keeps its mask and never warns.
    (transformers shows the warning once per process: it is not shown later in this one either.)"""
    if not unpadded:
        yield
        return
    log = logging.getLogger("transformers.modeling_utils")
    quiet = _NoPaddingWarning()
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


@contextmanager
def _checkpoint_defaults_off(model) -> Iterator[None]:
    """generate() takes every setting it is not given from the checkpoint's generation_config.json
    (transformers 5: min_new_tokens, suppress_tokens, forced_eos_token_id, ...; transformers 4:
    also do_sample, temperature, top_k, repetition_penalty where the given value is the default),
    which would change leti's draws: the model generates with a blank one meanwhile."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft reads the base's
    saved = inner.generation_config
    inner.generation_config = GenerationConfig()
    try:
        yield
    finally:
        inner.generation_config = saved


class HFSampler:
    """Sampler backend over a transformers causal LM (see the module doc for guarantees)."""

    def __init__(self, config: SamplingConfig, model, tokenizer):
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            raise LetiError(
                "tokenizer has no pad_token; load it with leti.model.load_model_and_tokenizer"
            )
        self.eos_ids = end_token_ids(getattr(model, "generation_config", None), tokenizer)
        self.context = model_context(model.config)
        # LeTI's control tokens are never drawn (base.leti_token_ids says why)
        self.blocked = leti_token_ids(tokenizer)

    def sample(
        self,
        requests: list[SampleRequest],
        n: int | None = None,
        skip: set[tuple[str, int]] | None = None,
    ) -> Iterator[Sample]:
        """Yield n samples per request, batch by batch, skipping keys in `skip`."""
        check_requests(requests)
        n = samples_per_request(self.config, n)
        skip = skip or set()
        rows = self._expand(requests, n, skip)
        size = self.config.batch_size
        # `progress: false` turns transformers' bars off (loop.runner._library_progress), and this
        # one with them: it was drawn on a terminal whatever the config said
        shown = hf_logging.is_progress_bar_enabled()
        bar = Progress(len(rows), "sampling", "samples", shown)
        n_tokens, start = 0, time.perf_counter()
        try:
            for batch in self._batches(rows, size):
                samples = self._generate(batch)
                n_tokens += sum(s.n_completion_tokens for s in samples)
                bar.update(len(samples))
                bar.set_postfix(tok_s=f"{n_tokens / (time.perf_counter() - start):.0f}")
                yield from samples
        finally:
            bar.close()

    def _expand(
        self, requests: list[SampleRequest], n: int, skip: set[tuple[str, int]]
    ) -> list[_Row]:
        """All (prompt, sample index) rows still to do, shortest prompts first."""
        rows: list[_Row] = []
        for req in requests:
            ids = encode_prompt(self.tokenizer, req.prompt)
            check_prompt_fits(req.problem_id, len(ids), self.context)
            rows += [(ids, req, k) for k in range(n) if (req.problem_id, k) not in skip]
        # Stable sort: equal lengths keep request order, then sample order.
        rows.sort(key=lambda row: len(row[0]))
        return rows

    def _batches(self, rows: list[_Row], size: int) -> Iterator[list[_Row]]:
        """Batches of at most `size` rows (sorted by prompt length). A row whose prompt leaves less
        than max_new_tokens of the context is batched only with prompts of its own length: the
        batch's widest prompt sets every row's token budget, and the row then gets what it gets
        alone (the context minus its prompt), as with vLLM, which caps each prompt by itself."""
        cap = None if self.context is None else self.context - self.config.max_new_tokens
        loose = [row for row in rows if cap is None or len(row[0]) <= cap]
        for i in range(0, len(loose), size):
            yield loose[i : i + size]
        tight: dict[int, list[_Row]] = {}
        for row in rows[len(loose):]:  # sorted, so the tight rows are the last ones
            tight.setdefault(len(row[0]), []).append(row)
        for same in tight.values():
            for i in range(0, len(same), size):
                yield same[i : i + size]

    def _generate(self, rows: list[_Row]) -> list[Sample]:
        """Generate one batch; returns its samples in row order."""
        cfg = self.config
        width = max(len(ids) for ids, _, _ in rows)
        pad = self.tokenizer.pad_token_id
        device = self.model.device
        # Left padding: every row's last prompt token sits at column width - 1.
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (ids, _, _) in enumerate(rows):
            input_ids[r, width - len(ids) :] = torch.tensor(ids)
            attention[r, width - len(ids) :] = 1
        budget = cfg.max_new_tokens
        if self.context is not None:
            budget = min(budget, self.context - width)
        processors = LogitsProcessorList()
        if cfg.temperature > 0:
            generators = [
                torch.Generator().manual_seed(derive_seed(cfg.seed, req.problem_id, k))
                for _, req, k in rows
            ]
            processors.append(_PerRowSampling(generators, cfg.temperature, cfg.top_p, steps=budget, blocked=self.blocked))
        criteria = StoppingCriteriaList()
        stopper = None
        stops = [req.stops(cfg) for _, req, _ in rows]
        if any(stops):
            stopper = _StopOnText(self.tokenizer, stops, width, self.eos_ids | {pad})
            criteria.append(stopper)
        gen_config = GenerationConfig(
            do_sample=False,  # the per-row processor has already drawn the token
            num_beams=1,
            max_new_tokens=budget,
            pad_token_id=pad,
            eos_token_id=sorted(self.eos_ids) or None,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            # Greedy: -inf for LeTI's control tokens. Sampled: _PerRowSampling draws again where
            # its draw is one (it says why), so they must still be there when it draws.
            suppress_tokens=(self.blocked or None) if cfg.temperature == 0 else None,
            use_cache=True,
        )
        was_training = self.model.training
        self.model.eval()  # no dropout while sampling, even right after a training step
        try:
            with (torch.inference_mode(), _checkpoint_defaults_off(self.model),
                  _quiet_padding_warning(bool(attention.all()))):
                out = self.model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    generation_config=gen_config,
                    logits_processor=processors,
                    stopping_criteria=criteria,
                )
        finally:
            self.model.train(was_training)
        new_tokens = out[:, width:].tolist()
        stopped_at = stopper.stopped_at if stopper else {}
        heads: dict[tuple[int, ...], str] = {}  # each prompt decoded once, not once per sample
        return [
            self._finish(row, new_tokens[r], stopped_at.get(r), budget, heads)
            for r, row in enumerate(rows)
        ]

    def _finish(self, row: _Row, new: list[int], stopped_at: int | None, budget: int,
                heads: dict[tuple[int, ...], str]) -> Sample:
        """Cut one row's tokens at eos / stop sequence and build its Sample."""
        ids, req, k = row
        n_kept = len(new) if stopped_at is None else stopped_at
        ended = False
        for i, tok in enumerate(new[:n_kept]):
            if tok in self.eos_ids:
                n_kept, ended = i, True
                break
        head = None
        if n_kept:
            key = tuple(ids)
            if key not in heads:
                heads[key] = decode_prompt(self.tokenizer, ids)
            head = heads[key]
        text = decode_completion(self.tokenizer, ids, new[:n_kept], head)
        text, rest = cut_at_stop(text, req.stops(self.config))
        ended = ended or bool(rest)
        reason = "stop" if ended or n_kept < budget else "length"
        return Sample(
            problem_id=req.problem_id,
            sample_idx=k,
            prompt=req.prompt,
            completion=text,
            n_prompt_tokens=len(ids),
            n_completion_tokens=n_kept,
            finish_reason=reason,
        )
