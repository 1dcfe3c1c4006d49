"""Read OneIE-style JSON lines (GENEVA, OneIE's ACE05/ERE preprocessing) into event mentions.

One sentence (window) per line:

    {"wnd_id": "...", "sentence": "...", "tokens": [...],
     "event_mentions": [{"id": "...", "event_type": "Attack",
                         "trigger": {"start": 2, "end": 3, "text": "attacked"},
                         "arguments": [{"entity_id": "...", "text": "the army", "role": "Attacker"}]}]}

Only `sentence` (or `tokens`), `event_mentions[].event_type`, `.trigger` and `.arguments[].text /
.role` are used; `id` and `wnd_id` name the problem when present.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leti.errors import LetiError
from leti.jsonl import read_json_lines


@dataclass(frozen=True)
class Argument:
    role: str
    text: str


@dataclass(frozen=True)
class EventMention:
    id: str  # unique within its file
    event_type: str
    sentence: str
    tokens: tuple[str, ...]
    trigger: str
    trigger_start: int  # token index, or -1 when the data gives no offsets
    trigger_end: int  # token index after the trigger, or -1 when the data gives none
    arguments: tuple[Argument, ...]
    where: str  # "FILE:LINE", for error messages about this mention


def _fail(where: str, msg: str) -> LetiError:
    return LetiError(f"{where}: {msg}")


def _str(obj: dict, key: str, where: str, ctx: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, f"{ctx} needs a non-empty string {key!r}, got {json.dumps(value)[:60]}")
    return value


def _mention(em: Any, line: dict, k: int, where: str) -> EventMention:
    if not isinstance(em, dict):
        raise _fail(where, f"event_mentions[{k}] must be an object with event_type, trigger, arguments")
    ctx = f"event_mentions[{k}]"
    event_type = _str(em, "event_type", where, ctx)
    trigger = em.get("trigger")
    if not isinstance(trigger, dict):
        raise _fail(where, f"{ctx} needs a 'trigger' object with 'text' (and token 'start')")
    trigger_text = _str(trigger, "text", where, ctx + ".trigger")
    start = trigger.get("start", -1)
    end = trigger.get("end", -1)
    args = em.get("arguments", [])
    if not isinstance(args, list):
        raise _fail(where, f"{ctx}.arguments must be a list of {{'role': ..., 'text': ...}} objects")
    arguments = []
    for j, arg in enumerate(args):
        if not isinstance(arg, dict):
            raise _fail(where, f"{ctx}.arguments[{j}] must be an object with 'role' and 'text'")
        arguments.append(Argument(role=_str(arg, "role", where, f"{ctx}.arguments[{j}]"),
                                  text=_str(arg, "text", where, f"{ctx}.arguments[{j}]")))
    tokens = tuple(line.get("tokens") or ())
    sentence = line.get("sentence") or " ".join(tokens)
    base = str(line.get("wnd_id") or line.get("doc_id") or where.rsplit(":", 1)[-1])
    return EventMention(
        id=str(em.get("id") or f"{base}/{k}"),
        event_type=event_type,
        sentence=sentence,
        tokens=tokens,
        trigger=trigger_text,
        trigger_start=start if isinstance(start, int) else -1,
        trigger_end=end if isinstance(end, int) else -1,
        arguments=tuple(arguments),
        where=where,
    )


def read_oneie(path: Path) -> list[EventMention]:
    """Every event mention in file order; the first malformed line raises a one-line LetiError."""
    mentions: list[EventMention] = []
    first: dict[str, str] = {}
    for where, _, line in read_json_lines(path, what="data file", missing_hint="check the path", item="OneIE object"):
        if not isinstance(line, dict):
            raise _fail(where, "expected a JSON object with 'sentence' and 'event_mentions'")
        if not isinstance(line.get("sentence"), str) and not isinstance(line.get("tokens"), list):
            raise _fail(where, "the line needs a 'sentence' string (or a 'tokens' list)")
        # each one that is given must have its type: the prompt joins the tokens when the
        # sentence is absent, and the trigger's offsets index them
        tokens, sentence = line.get("tokens"), line.get("sentence")
        if tokens is not None and (not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens)):
            raise _fail(where, f"'tokens' must be a list of strings, got {json.dumps(tokens)[:60]}")
        if sentence is not None and not isinstance(sentence, str):
            raise _fail(where, f"'sentence' must be a string, got {json.dumps(sentence)[:60]}")
        ems = line.get("event_mentions", [])
        if not isinstance(ems, list):
            raise _fail(where, "'event_mentions' must be a list")
        for k, em in enumerate(ems):
            mention = _mention(em, line, k, where)
            if mention.id in first:
                raise _fail(where, f"event mention id {mention.id!r} repeats {first[mention.id]}; ids must be unique")
            first[mention.id] = where
            mentions.append(mention)
    if not mentions:
        raise LetiError(f"{path}: no event mentions found; expected OneIE JSON lines with 'event_mentions'")
    return mentions
