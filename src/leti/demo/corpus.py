"""Offline pretraining text for the demo's warm start: Python standard-library sources plus
generated modules of small documented functions, as ordinary code corpora contain.

The generated functions come from the `synthetic` task's templates but only with constants of
each template's `pretrain` pool (leti.tasks.synthetic.constant_pools), so no train or held-out
problem's instruction -> solution pair is ever pretrained on. They are written as library code
(a function with its own docstring, an assert after it), never in the task's MBPP prompt format:
turning the prompt into a correct function is left for LeTI to learn from execution feedback.
"""

from __future__ import annotations

import random
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from leti.tasks.synthetic import (
    ARG_NAMES,
    TEMPLATES,
    Template,
    constant_pools,
    make_tests,
    mbpp_prompt,
)

_TOPICS = ("numbers", "lists", "strings", "small utilities", "arithmetic", "checks")


def _docstring(template: Template, k: int, arg: str, rng: random.Random) -> str:
    """Either the paraphrase or the task phrasing without "Write a function to"."""
    if rng.random() < 0.5:
        return template.doc.format(k=k, a=arg)
    plain = template.text.format(k=k).removeprefix("Write a function to ")
    return plain[0].upper() + plain[1:]


def generated_function(template: Template, k: int, rng: random.Random, mbpp_style: float = 0.0) -> str:
    """One documented function, usually followed by a usage assert (as tests sit next to code)."""
    name = rng.choice(template.names).format(k=k)
    arg = rng.choice(ARG_NAMES[template.kind])
    expr = template.body.format(k=k, a=arg)
    if rng.random() < 0.2:  # a little variety in how the body is written
        body = f"    result = {expr}\n    return result\n"
    else:
        body = f"    return {expr}\n"
    if rng.random() < mbpp_style:
        # Documented the way the MBPP prompts are (text + example in a docstring above the
        # function): other constants, so never a train or held-out problem's pair.
        first = make_tests(template, k, name, rng, n=1)[0]
        return mbpp_prompt(template.text.format(k=k), first) + f"def {name}({arg}):\n{body}"
    src = f'def {name}({arg}):\n    """{_docstring(template, k, arg, rng)}"""\n{body}'
    if rng.random() < 0.7:
        src += "\n\n" + "\n".join(make_tests(template, k, name, rng, n=rng.randint(1, 2))) + "\n"
    return src


def mbpp_style_templates(seed: int, share: float) -> frozenset[str]:
    """The templates that pretraining ever shows in the MBPP prompt layout: a seeded `share` of
    them. The others appear only as library code, so for those the warm start must transfer
    the layout from other templates, which is what LeTI's feedback then has to teach."""
    keys = [t.key for t in TEMPLATES]
    random.Random(f"{seed}/mbpp-templates").shuffle(keys)
    return frozenset(keys[: round(share * len(keys))])


def generated_module(seed: int, index: int, mbpp_style: float = 0.0, template_share: float = 1.0) -> str:
    """A module of 2-5 generated functions; deterministic in (seed, index)."""
    rng = random.Random(f"{seed}/module/{index}")
    mbpp_keys = mbpp_style_templates(seed, template_share)
    topic = rng.choice(_TOPICS)
    # Both one-line and multi-line module docstrings, as real code has.
    head = f'"""Helpers for {topic}."""\n' if rng.random() < 0.5 else f'"""\nHelpers for {topic}.\n"""\n'
    parts = [head]
    for _ in range(rng.randint(2, 5)):
        template = rng.choice(TEMPLATES)
        k = rng.choice(constant_pools(template, seed)["pretrain"])
        parts.append(generated_function(template, k, rng, mbpp_style if template.key in mbpp_keys else 0.0))
    return "\n\n".join(parts)


def stdlib_sources(max_bytes: int) -> list[str]:
    """Top-level pure-Python stdlib modules (sorted, so deterministic), up to `max_bytes`."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out: list[str] = []
    total = 0
    for path in sorted(stdlib.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if total + len(text) > max_bytes:
            break
        out.append(text)
        total += len(text)
    return out


def corpus_documents(seed: int, n_generated: int, stdlib_bytes: int, mbpp_style: float = 0.0,
                     template_share: float = 1.0) -> Iterator[str]:
    """Generated modules interleaved with stdlib files (a fixed order for a fixed config)."""
    stdlib = stdlib_sources(stdlib_bytes)
    every = max(1, n_generated // max(1, len(stdlib)))
    j = 0
    for i in range(n_generated):
        yield generated_module(seed, i, mbpp_style, template_share)
        if i % every == 0 and j < len(stdlib):
            yield stdlib[j]
            j += 1
    yield from stdlib[j:]
