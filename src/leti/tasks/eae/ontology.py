"""Event ontology -> Python class definitions (Code4Struct style, spec "EAE as code").

Ontology file (GENEVA's `event_ontology.json` format; also accepted for other data sets):

    {"Attack": {"description": "...",                        # optional
                "arguments": {"Attacker": {"arg_desc": "..."}, # or "Attacker": "description"
                              "Victim": {"arg_desc": "..."}}}, # or a list of role names
     ...}

Event type names become CamelCase class names ("Commerce_money-transfer" ->
CommerceMoneyTransfer), role names snake_case keyword names ("Undesirable_event" ->
undesirable_event); a name that would collide with another is an error, not silently merged.
A name the generated code itself uses gets a trailing "_" (e.g. class `Counter_`, role `list_`),
so that any ontology's classes work: see `class_name` and `role_name`.
"""

from __future__ import annotations

import ast
import json
import keyword
import re
import textwrap
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from leti.errors import LetiError
from leti.jsonl import json_error_reason

# The base class every event class extends. Unknown keywords are rejected here (rather than by
# an explicit per-class signature) so that the message can list the valid roles. Roles are the
# class annotations; an unset role falls back to the class attribute `[]`, which nothing mutates.
BASE_CLASS = '''class Event:
    """Base class of all event types. Each role is a keyword argument whose value is the list of
    text spans copied from the sentence that fill the role (empty when it is not mentioned)."""

    def __init__(self, **roles: list[str]) -> None:
        known = list(type(self).__annotations__)
        for role, spans in roles.items():
            if role not in known:
                raise TypeError(f"{type(self).__name__} has no role {role!r}; its roles are: {', '.join(known)}")
            setattr(self, role, spans)
'''

_WRAP = 96  # docstring width; keeps prompt lines inside the usual 100-column code style


@dataclass(frozen=True)
class Role:
    name: str  # as in the data, e.g. "Undesirable_event"
    py_name: str  # keyword argument name, e.g. "undesirable_event"
    description: str


@dataclass(frozen=True)
class EventType:
    name: str  # as in the data, e.g. "Commerce_money-transfer"
    class_name: str  # e.g. "CommerceMoneyTransfer"
    description: str
    roles: tuple[Role, ...]

    def role(self, name: str) -> Role | None:
        return next((r for r in self.roles if r.name == name), None)


@cache
def _module_names() -> frozenset[str]:
    """Every name the base class and the pasted tests (check.py and the extractor) bind or read at
    module level or look up there (builtins included). An event class of the same name breaks
    them: check.py's `Counter` or `VerificationError` rebinds the class before the extractor names
    it, and a class `Exception` or `TypeError` replaces what they raise. GENEVA uses none."""
    from leti.tasks.eae.problems import render_tests  # (problems imports this module)

    source = BASE_CLASS + render_tests(EventType("Event", "Event", "", ()), 1.0)
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return frozenset(names)


# What each role's line in a class body (`role: list[str] = []`) evaluates: a role bound to one
# of these names would change the next role's annotation (`list: list[str]`, then `list[str]`
# indexes the empty list).
_CLASS_BODY_NAMES = ("list", "str")


def class_name(event_type: str) -> str:
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", event_type) if p]
    name = "".join(p[:1].upper() + p[1:] for p in parts) or "Event_"
    if name[0].isdigit():
        name = "E" + name
    while keyword.iskeyword(name) or name in _module_names():
        name += "_"
    return name


def role_name(role: str) -> str:
    name = "_".join(p for p in re.split(r"[^0-9A-Za-z]+", role) if p).lower() or "role"
    if name[0].isdigit():
        name = "r_" + name
    # `self` and the names of the base class's own attributes would shadow them.
    if keyword.iskeyword(name) or name in ("self", "roles", *_CLASS_BODY_NAMES):
        name += "_"
    return name


def _description(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return str(value.get("arg_desc") or value.get("description") or "")
    return ""


def _first_frame_description(spec: dict) -> str:
    frames = spec.get("frames")
    if isinstance(frames, dict):
        for frame in frames.values():
            if isinstance(frame, dict) and frame.get("description"):
                return str(frame["description"])
    return ""


def _line_of(text: str, key: str) -> int:
    """Line where `"key":` first appears, for error messages (json.load keeps no positions)."""
    match = re.search(re.escape(json.dumps(key)) + r"\s*:", text)
    return text.count("\n", 0, match.start()) + 1 if match else 1


def parse_ontology(data: Any, text: str, where: str) -> dict[str, EventType]:
    """Validate the decoded ontology; `text` and `where` (file name) locate errors."""
    if not isinstance(data, dict) or not data:
        raise LetiError(f"{where}:1: an ontology is a non-empty JSON object mapping event type -> {{'arguments': ...}}")
    types: dict[str, EventType] = {}
    taken: dict[str, str] = {}
    for name, spec in data.items():
        at = f"{where}:{_line_of(text, name)}"
        if not isinstance(spec, dict) or "arguments" not in spec:
            raise LetiError(f"{at}: event type {name!r} needs an 'arguments' object (role -> description)")
        args = spec["arguments"]
        if isinstance(args, list) and all(isinstance(a, str) for a in args):
            args = {a: "" for a in args}
        if not isinstance(args, dict):
            raise LetiError(f"{at}: 'arguments' of {name!r} must map role -> description or list role names")
        roles: list[Role] = []
        for role, desc in args.items():
            py = role_name(role)
            clash = next((r.name for r in roles if r.py_name == py), None)
            if clash is not None:
                raise LetiError(f"{at}: roles {clash!r} and {role!r} of {name!r} both become keyword {py!r}; rename one")
            roles.append(Role(name=role, py_name=py, description=_description(desc)))
        cls = class_name(name)
        if cls in taken:
            raise LetiError(f"{at}: event types {taken[cls]!r} and {name!r} both become class {cls}; rename one")
        taken[cls] = name
        desc = str(spec.get("description") or "") or _first_frame_description(spec)
        types[name] = EventType(name=name, class_name=cls, description=desc, roles=tuple(roles))
    return types


def load_ontology(path: Path) -> dict[str, EventType]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LetiError(f"{path}: cannot read the event ontology ({e}); give a UTF-8 JSON file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LetiError(f"{path}:{e.lineno}: ontology is not valid JSON ({json_error_reason(e, line=False)})") from None
    return parse_ontology(data, text, str(path))


def _docstring_text(text: str) -> str:
    # Inside a """ docstring: a backslash or a run of three quotes would end or alter it.
    return " ".join(text.split()).replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def _wrap(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(
        _docstring_text(text), _WRAP, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False
    ) or [first.rstrip()]


def render_class(event: EventType) -> str:
    """The class definition the model sees for one event type."""
    from leti.tasks.eae.problems import _article  # (problems imports this module)

    ind = " " * 4
    # "An Attack event.", as the prompt's trigger comment says it (was "A Attack event.")
    doc = _wrap(event.description or f"{_article(event.name).capitalize()} {event.name} event.", ind + '"""', ind)
    if event.roles:
        doc += ["", ind + "Roles:"]
        for role in event.roles:
            doc += _wrap(f"{role.py_name}: {role.description or role.name}", ind * 2, ind * 3)
    doc.append(ind + '"""')
    body = [f"{ind}{r.py_name}: list[str] = []" for r in event.roles] or [f"{ind}pass"]
    return "\n".join([f"class {event.class_name}(Event):", *doc, "", *body]) + "\n"
