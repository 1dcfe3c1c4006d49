"""One event mention -> one `Problem`: prompt, sandbox code, gold reference.

Prompt (what the model continues: the arguments and the closing parenthesis, on one line or more):

    class Event: ...                      # the shared base class
    class Attack(Event): ...              # this mention's event type, roles documented
    sentence = "The army attacked Baghdad ."
    # In the sentence, "attacked" expresses an Attack event. Its arguments:
    event = Attack(

Tests (run after prompt + completion in the sandbox, never shown to the model): the source of
`leti/tasks/eae/check.py` and an extractor that ends the program by raising `LetiEventReport`
with the event's arguments as JSON (or the message for an `event` of the wrong shape, or for
arguments too long to send whole: `check.report_text`). They hold
no gold: the program runs in the same process as the tests and could rewrite any verifier there
(patched builtins, tracers, a forged result record), so the host decides the verdict from the
reported data and the gold (`judge.judge_result`). The tests have as many lines as the earlier
in-sandbox verifier, so tracebacks and syntax errors keep their line numbers.
"""

from __future__ import annotations

import ast
import inspect
import json
import string
from functools import cache

from leti.errors import LetiError
from leti.tasks.base import Problem
from leti.tasks.eae import check
from leti.tasks.eae.data import EventMention
from leti.tasks.eae.ontology import BASE_CLASS, EventType, render_class

# Generation stops where the instantiation ends: at a blank line, or at a line that starts at
# column 0 with anything but a closing bracket (a call wrapped one argument per line ends with
# `)` there). Anything after the call (a second event, prints) would only add noise to the
# program. Stopping at the first newline instead cut every wrapped call, valid Python that the
# verifier accepts, into a SyntaxError; the authors stop EAE samples at words ('"""', 'class',
# 'print', '#'), never at a newline. Strings cannot see where the call closes, so an indented
# line after a finished call is kept (an IndentationError; code rarely indents after a statement).
_CLOSERS = ")]}"
STOP_SEQUENCES = ("\n\n", *("\n" + c for c in string.printable if not c.isspace() and c not in _CLOSERS))
STOP_SUMMARY = "a blank line, or a new line that starts at column 0 with anything but ) ] or }"


@cache
def verifier_source() -> str:
    return inspect.getsource(check)


def py_str(text: str) -> str:
    """A Python string literal for `text`, double-quoted when that round-trips on one line."""
    literal = json.dumps(text, ensure_ascii=False)
    try:
        if len(literal.splitlines()) == 1 and ast.literal_eval(literal) == text:
            return literal
    except (SyntaxError, ValueError):
        pass
    return repr(text)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def trigger_phrase(mention: EventMention) -> str:
    """`"attacked"`, plus which occurrence when the trigger words appear more than once."""
    quoted = py_str(mention.trigger)
    toks, start, end = mention.tokens, mention.trigger_start, mention.trigger_end
    if not toks or not 0 <= start < len(toks):
        return quoted
    # The data's token span, not the trigger text's word count: GENEVA splits "'s" into the
    # tokens "'" "s", and matching only "'" would count every lone quote as an occurrence.
    width = end - start if start < end <= len(toks) else max(1, len(mention.trigger.split()))
    target = list(toks[start : start + width])
    hits = [i for i in range(len(toks) - width + 1) if list(toks[i : i + width]) == target]
    if len(hits) > 1 and start in hits:
        return f"{quoted} (its {_ordinal(hits.index(start) + 1)} occurrence)"
    return quoted


def gold_arguments(mention: EventMention, event: EventType) -> dict[str, list[str]]:
    """role keyword -> gold spans, roles in class order, spans in data order."""
    gold: dict[str, list[str]] = {r.py_name: [] for r in event.roles}
    for arg in mention.arguments:
        role = event.role(arg.role)
        if role is None:
            raise LetiError(
                f"{mention.where}: role {arg.role!r} of event {mention.id!r} is not a role of "
                f"{event.name!r} in the ontology; add it there or fix the data"
            )
        if arg.text not in gold[role.py_name]:
            gold[role.py_name].append(arg.text)
    return gold


def render_prompt(mention: EventMention, event: EventType) -> str:
    return (
        f"{BASE_CLASS}\n\n{render_class(event)}\n\n"
        f"sentence = {py_str(mention.sentence)}\n"
        f"# In the sentence, {trigger_phrase(mention)} expresses {_article(event.class_name)} "
        f"{event.class_name} event. Its arguments:\n"
        f"event = {event.class_name}("
    )


# Vowel letters that sound like a consonant ("a Using event", "a Union event", "a One...").
_CONSONANT_SOUNDS = ("us", "uni", "uti", "eu", "one")


def _article(word: str) -> str:
    lower = word.lower()
    return "an" if lower[:1] in "aeiou" and not lower.startswith(_CONSONANT_SOUNDS) else "a"


def render_reference(gold: dict[str, list[str]]) -> str:
    """The gold instantiation as a completion of the prompt's `event = Cls(`."""
    parts = [f"{role}=[{', '.join(py_str(s) for s in spans)}]" for role, spans in gold.items() if spans]
    return ", ".join(parts) + ")"


# The extractor's last line, and the exception that carries its report to the host.
REPORT_EXCEPTION = "LetiEventReport"
REPORT_RAISE = f"raise {REPORT_EXCEPTION}(_leti_text)"


def render_tests(event: EventType, min_f1: float, data: str = "") -> str:
    """check.py, then five lines that report the event's arguments (the earlier verifier's
    line count). `check_event` with no gold and threshold 0 only checks the value types, so type
    errors keep the verifier's words. `min_f1` and `data` (a digest of the data and ontology the
    gold comes from, `EaeTask.data_digest`) are named only so that programs judged against
    another threshold or another gold differ: result logs are keyed by the program's text."""
    cls = event.class_name
    judged_by = f"min_f1 {min_f1!r}, data {data}" if data else f"min_f1 {min_f1!r}"
    return (
        f"\n# Verifier (not part of the prompt): reports `event`; the host judges it ({judged_by}).\n"
        f"{verifier_source()}\n"
        f"class {REPORT_EXCEPTION}(Exception): pass\n"
        f"_leti_message = check_event(event, {cls}, {{}}, '', 0.0)\n"
        "_leti_report = {'error': _leti_message} if _leti_message else "
        f"{{'roles': {{r: list(getattr(event, r, [])) for r in {cls}.__annotations__}}}}\n"
        "_leti_text = report_text(_leti_report)  # JSON, short enough to reach the host whole\n"
        f"{REPORT_RAISE}\n"
    )


def make_problem(mention: EventMention, ontology: dict[str, EventType], split: str, prefix: str, min_f1: float,
                 data: str = "") -> Problem:
    """The problem for one mention; `data` is the digest of the files its gold comes from."""
    event = ontology.get(mention.event_type)
    if event is None:
        raise LetiError(
            f"{mention.where}: event type {mention.event_type!r} is not in the ontology; "
            "give the ontology that defines it"
        )
    gold = gold_arguments(mention, event)
    return Problem(
        id=f"{prefix}/{split}/{mention.id}",
        prompt=render_prompt(mention, event),
        tests=render_tests(event, min_f1, data),
        split=split,
        entry_point=event.class_name,
        reference=render_reference(gold),
        meta={
            "event_type": event.name,
            "class_name": event.class_name,
            "sentence": mention.sentence,
            "trigger": mention.trigger,
            "gold": gold,
            "roles": [r.py_name for r in event.roles],
            "min_f1": min_f1,
        },
    )
