"""Argument identification / classification scores (Arg-I, Arg-C) for EAE-as-code.

Definitions (the usual EAE ones, e.g. OneIE / Code4Struct, with text spans instead of offsets
because the model writes strings; spans are normalised by `check.normalise`):

  * every sample is one prediction for its event mention (the trigger and type are given);
  * a predicted argument is a (role, span) pair; gold arguments likewise; each side is a set
    (a span repeated under one role is one argument, as in OneIE / Code4Struct / LeTI);
  * Arg-I: a predicted argument is correctly *identified* if its span is a gold argument span
    of the same event mention (any role), matched one-to-one;
  * Arg-C: it is correctly *classified* if its span and its role both match a gold argument;
  * precision = matches / predicted arguments, recall = matches / gold arguments,
    F1 = 2PR / (P + R); counts are summed over all samples first (micro average).
    Reported in percent, as EAE papers do.

The task scores a sample by the arguments its verdict was decided on (the event the sandbox
reported, geneva.py `extra_metrics`); a program that failed before reporting predicts nothing.
Only a sample with no result is read from its completion here, with `ast` in the host process:
model output is parsed, never executed, outside the sandbox. A completion that does not parse (or
parses but does not compile, or nests too deeply for the parser) predicts no arguments: its gold
arguments count as missed. Keyword values that are lists or tuples of string constants are read;
other values (a bare string, which the verifier refuses as not a list; names, calls) and
non-string elements are ignored. Unknown roles count as predictions (always wrong).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from leti.tasks.eae.check import match_counts


@dataclass
class ArgCounts:
    n_pred: int = 0
    n_gold: int = 0
    arg_i: int = 0  # identification matches
    arg_c: int = 0  # classification matches

    def add(self, pred: dict[str, list[str]], gold: dict[str, list[str]]) -> None:
        n_pred, n_gold, arg_i, arg_c = match_counts(pred, gold)
        self.n_pred += n_pred
        self.n_gold += n_gold
        self.arg_i += arg_i
        self.arg_c += arg_c

    def scores(self) -> dict[str, float]:
        """arg_{i,c}_{precision,recall,f1} in percent (0 when a denominator is 0)."""
        out: dict[str, float] = {}
        for name, matches in (("arg_i", self.arg_i), ("arg_c", self.arg_c)):
            p = matches / self.n_pred if self.n_pred else 0.0
            r = matches / self.n_gold if self.n_gold else 0.0
            out[f"{name}_precision"] = 100.0 * p
            out[f"{name}_recall"] = 100.0 * r
            out[f"{name}_f1"] = 100.0 * (2 * p * r / (p + r) if p + r else 0.0)
        return out


def _spans(node: ast.expr) -> list[str]:
    if isinstance(node, (ast.List, ast.Tuple)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def parse_prediction(call_prefix: str, completion: str) -> dict[str, list[str]] | None:
    """role -> spans from `call_prefix + completion` (e.g. `event = Attack(` + `attacker=[...])`),
    or None when it is not a call statement. Only parses; nothing is evaluated."""
    try:
        tree = ast.parse(call_prefix + completion)
        # Compiling (never running) rejects what the parser lets through but Python refuses,
        # e.g. a repeated keyword `a=[...], a=[...]`: the sandbox reports a SyntaxError there.
        compile(tree, "<completion>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not tree.body or not isinstance(tree.body[0], ast.Assign):
        return None
    call = tree.body[0].value
    if not isinstance(call, ast.Call):
        return None
    pred: dict[str, list[str]] = {}
    for kw in call.keywords:
        if kw.arg is not None:
            pred.setdefault(kw.arg, []).extend(_spans(kw.value))
    return pred
