"""MBPP: Mostly Basic Python Problems.

Source:   google-research/mbpp (github.com/google-research/google-research/tree/master/mbpp),
          also the HF dataset `google-research-datasets/mbpp`. A byte-identical copy of
          `mbpp.jsonl` and `sanitized-mbpp.json` ships in leti/data/mbpp/ (sha256s in NOTICE).
Licence:  CC BY 4.0.
Citation: Austin, Odena, Nye, Bosma, Michalewski, Dohan, Jiang, Cai, Terry, Le, Sutton.
          "Program Synthesis with Large Language Models." arXiv:2108.07732, 2021.

Prompt and stop sequences follow LeTI (spec "Prompts and stop sequences"): a docstring with the
problem text and the first test assert. Tests are `test_setup_code` plus all of `test_list`.
`challenge_test_list` is not used: LeTI and the usual MBPP protocol score on `test_list` only,
and only 11 problems have challenge tests at all (kept in `Problem.meta`).
"""

from __future__ import annotations

import json
import re
import warnings
from importlib import resources
from typing import Any

from leti.errors import LetiError
from leti.tasks.base import EvalDefaults, Problem, Task
from leti.tasks.registry import register_task

HF_DATASET = "google-research-datasets/mbpp"

CITATION = """@article{austin2021program,
  title={Program Synthesis with Large Language Models},
  author={Austin, Jacob and Odena, Augustus and Nye, Maxwell and Bosma, Maarten and Michalewski,
          Henryk and Dohan, David and Jiang, Ellen and Cai, Carrie and Terry, Michael and
          Le, Quoc and Sutton, Charles},
  journal={arXiv preprint arXiv:2108.07732},
  year={2021}
}"""

STOP_SEQUENCES = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/")

# Inclusive task-id ranges of the standard splits (Austin et al. 2021, section 2.1).
SPLITS = (("prompt", 1, 10), ("test", 11, 510), ("validation", 511, 600), ("train", 601, 974))

# Spec "Evaluation protocol": MBPP test split, n = 16, temperature 0.1, pass@1 and pass@10.
# The spec names no top_p for MBPP; the authors' evaluation script (jax_batch_infer_mbpp.sh) sets
# TOPP=1, which is also `leti run`'s eval.top_p default: both paths score MBPP the same way.
MBPP_EVAL = EvalDefaults(split="test", n=16, temperatures=(0.1,), top_p=1.0, max_new_tokens=512, ks=(1, 10))


def split_of(task_id: int) -> str:
    for name, lo, hi in SPLITS:
        if lo <= task_id <= hi:
            return name
    raise ValueError(f"MBPP task_id {task_id} is outside 1-974")


def normalise_newlines(text: str) -> str:
    """The MBPP files mix \\r\\n and a few stray \\r into code and setup; the executor and the
    training text want plain \\n."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def format_prompt(text: str, first_test: str) -> str:
    return f'"""\n{text}\n{first_test}\n"""\n'


def _entry_point(code: str, first_test: str) -> str | None:
    """The function the first test calls, if the reference defines it (informational)."""
    for name in re.findall(r"^def\s+(\w+)", code, flags=re.M):
        if re.search(rf"\b{re.escape(name)}\s*\(", first_test):
            return name
    return None


def problem_from_row(row: dict[str, Any], *, text_field: str = "text", setup: str = "") -> Problem:
    """One MBPP row (original or sanitized field names) -> Problem."""
    task_id = int(row["task_id"])
    # No stripping: the prompt must be byte-for-byte the authors' f-string over the raw fields.
    text = normalise_newlines(row[text_field])
    tests = [normalise_newlines(t) for t in row["test_list"]]
    code = normalise_newlines(row["code"])
    setup = normalise_newlines(setup).rstrip("\n")
    test_code = "\n".join(([setup] if setup else []) + tests) + "\n"
    return Problem(
        id=str(task_id),
        prompt=format_prompt(text, tests[0]),
        tests=test_code,
        split=split_of(task_id),
        entry_point=_entry_point(code, tests[0]),
        reference=code,
        meta={
            "task_id": task_id,
            "text": text,
            "test_list": tests,
            "challenge_test_list": list(row.get("challenge_test_list") or []),
        },
    )


def _bundled(name: str) -> str:
    return resources.files("leti").joinpath("data", "mbpp", name).read_text(encoding="utf-8")


def _load_hub_rows() -> list[dict[str, Any]]:
    from datasets import load_dataset  # optional at run time: only the hub path needs it

    ds = load_dataset(HF_DATASET, "full")
    return [dict(row) for split in ds.values() for row in split]


@register_task("mbpp")
class MBPPTask(Task):
    """All 974 MBPP problems, splits by task id. `MBPPTask("hub")` (spec `mbpp:hub`) prefers the
    HF hub copy and falls back to the bundled one; the default reads the bundled copy only, so
    nothing waits on a hub timeout."""

    description = "MBPP, 974 crowd-sourced Python problems (prompt/test/validation/train by task id)"
    source = f"bundled leti/data/mbpp/mbpp.jsonl (= HF {HF_DATASET}, config 'full')"
    license = "CC BY 4.0"
    citation = CITATION
    stop_sequences = STOP_SEQUENCES
    eval_defaults = MBPP_EVAL

    def __init__(self, source: str = "bundled") -> None:
        if source not in ("bundled", "hub"):
            raise LetiError(f"mbpp source must be 'bundled' or 'hub' (spec mbpp or mbpp:hub), got {source!r}")
        self.data_source = source

    def _rows(self) -> list[dict[str, Any]]:
        if self.data_source == "hub":
            try:
                return _load_hub_rows()
            except Exception as e:  # any hub/network/cache failure: the bundled copy is identical
                warnings.warn(f"MBPP from the HF hub failed ({type(e).__name__}: {e}); using the bundled copy", stacklevel=2)
        return [json.loads(line) for line in _bundled("mbpp.jsonl").splitlines() if line.strip()]

    def load_problems(self) -> list[Problem]:
        rows = sorted(self._rows(), key=lambda r: int(r["task_id"]))
        return [problem_from_row(r, setup=r.get("test_setup_code") or "") for r in rows]


@register_task("mbpp-sanitized")
class MBPPSanitizedTask(Task):
    """The hand-verified subset (427 problems; clearer texts, some tests fixed), with MBPP's
    split-by-task-id rule applied to the ids present. Test imports become the test setup."""

    description = "MBPP sanitized: 427 hand-verified MBPP problems, same splits by task id"
    source = "bundled leti/data/mbpp/sanitized-mbpp.json (google-research/mbpp)"
    license = "CC BY 4.0"
    citation = CITATION
    stop_sequences = STOP_SEQUENCES
    eval_defaults = MBPP_EVAL

    def load_problems(self) -> list[Problem]:
        rows = sorted(json.loads(_bundled("sanitized-mbpp.json")), key=lambda r: int(r["task_id"]))
        return [problem_from_row(r, text_field="prompt", setup="\n".join(r.get("test_imports") or [])) for r in rows]
