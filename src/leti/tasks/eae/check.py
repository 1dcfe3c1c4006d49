"""The EAE verifier and the span normalisation, shared by the sandbox and the host.

This file's source is pasted verbatim into every problem's test code (see `verifier_source`), so
the sandbox needs no `leti` import; the host imports the same functions for the metrics, so
gold and prediction are normalised by one piece of code everywhere. Hence: standard library
only, and no `from __future__` import (it is only legal at the top of a module).

Normalisation (applied identically to gold spans, predicted spans and the sentence):
  1. Unicode NFKC (full-width forms, ligatures);
  2. quotes: PTB-tokenised ``, '' and curly double quotes become ", curly single quotes become ';
  3. whitespace around punctuation is removed, so tokenisation does not matter
     ("Fool 's Day" == "Fool's Day", "U . S ." == "U.S.");
  4. runs of whitespace become one space, ends are stripped;
  5. case is folded: a span that matches the sentence ignoring case names the same words
     (e.g. a sentence-initial "The army" copied as "the army").
"""

import json
import re
import unicodedata
from collections import Counter

_DOUBLE_QUOTES = ("``", "''", "\u201c", "\u201d", "\u201e", "\u201f")
_SINGLE_QUOTES = ("\u2018", "\u2019", "\u201a", "\u201b")
_SPACE_AROUND_PUNCT = re.compile(r"\s*([^\w\s])\s*")
# The longest report (JSON characters) the sandbox sends: the worker cuts exception messages at
# 16384 characters (worker.py MAX_MESSAGE), and a cut report no longer reads as one.
MAX_REPORT = 16000


class VerificationError(AssertionError):
    """The instantiation does not match the sentence's arguments; the message says how."""


def normalise(text: str) -> str:
    """The comparison form of a span or sentence (steps in the module docstring)."""
    text = unicodedata.normalize("NFKC", text)
    for quote in _DOUBLE_QUOTES:
        text = text.replace(quote, '"')
    for quote in _SINGLE_QUOTES:
        text = text.replace(quote, "'")
    text = _SPACE_AROUND_PUNCT.sub(r"\1", text)
    return " ".join(text.split()).casefold()


def occurs_in(span: str, sentence: str) -> bool:
    """Whether the span is a run of whole words of the sentence (after normalisation)."""
    needle = normalise(span)
    if not needle:
        return False
    # Word boundaries only where the span itself starts/ends with a word character, so that
    # "arm" does not match inside "army" but "'s" still matches after "Fool".
    left = r"(?<!\w)" if re.match(r"\w", needle[0]) else ""
    right = r"(?!\w)" if re.match(r"\w", needle[-1]) else ""
    return re.search(left + re.escape(needle) + right, normalise(sentence)) is not None


def match_counts(pred: dict, gold: dict) -> tuple:
    """(n_pred, n_gold, arg_i_matches, arg_c_matches) for one event mention.

    `pred` and `gold` map role -> list of spans. Each side is a set of (role, normalised span)
    pairs, as in OneIE's, Code4Struct's and LeTI's scorers: a span listed twice under one role
    is one argument (the text cannot say which occurrence it means). Arg-C matches = pairs on
    both sides; Arg-I matches = spans on both sides regardless of role (one-to-one, so a span
    given under two roles matches at most as often as gold has it)."""
    p_c = {(role, normalise(s)) for role, spans in pred.items() for s in spans}
    g_c = {(role, normalise(s)) for role, spans in gold.items() for s in spans}
    p_i = Counter(s for _, s in p_c)
    g_i = Counter(s for _, s in g_c)
    return (len(p_c), len(g_c), sum((p_i & g_i).values()), len(p_c & g_c))


def f1_score(n_pred: int, n_gold: int, matches: int) -> float:
    """F1 in [0, 1]; an empty prediction for an empty gold set is a perfect 1."""
    if n_pred == 0 and n_gold == 0:
        return 1.0
    return 2.0 * matches / (n_pred + n_gold)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def describe_errors(pred: dict, gold: dict, sentence: str, roles: list) -> list:
    """One line per problem, in role order, in words a model can act on. Never quotes a gold
    span: it names the role and counts, and quotes only the prediction's own spans."""
    lines = []
    for role in roles:
        spans = pred.get(role, [])
        gold_norm = {normalise(s) for s in gold.get(role, [])}
        seen = Counter()
        for span in spans:
            key = normalise(span)
            seen[key] += 1
            if seen[key] == 2:
                lines.append(f"role {role!r}: {span!r} is listed more than once")
            elif seen[key] > 2:
                continue
            elif not occurs_in(span, sentence):
                lines.append(f"role {role!r}: {span!r} does not occur in the sentence; copy spans from it exactly")
            elif key not in gold_norm:
                lines.append(f"role {role!r}: {span!r} is not an argument of this role")
        missing = len(gold_norm - {normalise(s) for s in spans})
        if missing:
            lines.append(f"role {role!r} is missing {_plural(missing, 'argument')}")
    return lines


def check_event(event: object, cls: type, gold: dict, sentence: str, min_f1: float) -> str:
    """'' when `event` is an acceptable instance of `cls`, else the feedback message.

    Acceptable = every role holds a list of strings and the Arg-C F1 against `gold` is at least
    `min_f1` (1.0: the argument set matches exactly)."""
    name = cls.__name__
    if not isinstance(event, cls):
        return f"`event` must be an instance of {name}, got {type(event).__name__}: write event = {name}(role=[...], ...)"
    roles = list(cls.__annotations__)
    pred = {}
    for role in roles:
        value = getattr(event, role, [])
        if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
            return (
                f"role {role!r} must be a list of strings copied from the sentence, "
                f"got {type(value).__name__} {value!r:.60}: write {role}=[\"...\"]"
            )
        pred[role] = list(value)
    n_pred, n_gold, _, arg_c = match_counts(pred, gold)
    f1 = f1_score(n_pred, n_gold, arg_c)
    if f1 >= min_f1:
        return ""
    lines = describe_errors(pred, gold, sentence, roles)
    head = f"the {name} arguments do not match the sentence (F1 {f1:.2f}, {_plural(len(lines), 'problem')}):"
    return "\n".join([head] + ["- " + line for line in lines])


def report_text(report: dict) -> str:
    """The extractor's report as JSON of at most MAX_REPORT characters. Arguments too long for it
    are reported as an error that says so (an honest program listing a very long span or many
    copies of one must not read as a tampered report); a long error message is shortened."""
    text = json.dumps(report, ensure_ascii=False)  # characters, as the worker's cut counts them: é is one, not six
    if len(text) <= MAX_REPORT:
        return text
    if "error" in report:  # 1000 characters stay under the limit even at 12 JSON characters each
        return json.dumps({"error": str(report["error"])[:1000] + " ..."})
    spans = [s for values in report["roles"].values() for s in values]
    return json.dumps({"error": (
        f"the arguments are too long to check ({_plural(len(spans), 'span')}, {len(text)} characters as JSON, "
        f"at most {MAX_REPORT}): list each argument once, as the words copied from the sentence")})
