"""A report is a list of blocks (heading, paragraph, table, image, code); the same blocks are
rendered to Markdown (images linked) and to one self-contained HTML file (images inlined as
base64), so the two never disagree.

Heading and paragraph text is a small subset of CommonMark: code spans, **bold** and backslash
escapes. Text that comes from the run (run and folder names, failure labels, config values: any
of it may be model-generated or hostile) goes in only through `esc` or `code` (or `markup`, for
notes written in this Markdown elsewhere), which keep it literal in both renderings. Table cells,
image alt text and code blocks are plain text, escaped here."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

# Backslash-escaped in text from the run: the ASCII punctuation that can open inline Markdown
# (code, emphasis, links, raw HTML, entities), split a table row (|) or start GitHub math ($).
_ESCAPED = frozenset("\\`*_[]<>&|~$#")
_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")  # what CommonMark lets a backslash escape


def _one_line(text: str) -> str:
    # A line break inside a block lets the next line start a block of its own (an HTML block
    # such as <script> can interrupt a paragraph), so text from the run stays on one line.
    return re.sub(r"[\r\n]+", " ", text)


def esc(text: object) -> str:
    """`text` (a name, label or value from the run) as literal Markdown inline text."""
    return _escape_chars(_one_line(str(text)))


def markup(text: object) -> str:
    """Text written as this inline Markdown elsewhere (summary.json's notes, which quote error
    messages): its code spans and **bold** kept, anything else literal, on one line."""
    s, out, plain = _one_line(str(text)), [], ""
    i, bold = 0, False
    while i < len(s):
        span = _code_span(s, i) if s[i] == "`" else None
        strong = not span and s.startswith("**", i) and _bold_mark(s, i, bold)
        if strong:
            bold = not bold
        if span or strong:
            end = span[2] if span else i + 2
            out += [_escape_chars(plain), s[i:end]]
            plain, i = "", end
        elif s[i] == "`":  # a run that opens no code span: literal, all of it
            plain, i = plain + s[i:i + _run_at(s, i)], i + _run_at(s, i)
        else:
            plain, i = plain + s[i], i + 1
    return "".join([*out, _escape_chars(plain)])


def _bold_mark(s: str, i: int, bold: bool) -> bool:
    """Whether the `**` at s[i] opens (bold False) or closes bold as CommonMark reads it: an
    opening one followed by a non-space, with a closing one (after a non-space) later; otherwise
    it is literal (a quoted error's `unsupported operand type(s) for ** or pow()` made the rest
    of the note bold in report.html)."""
    if bold:
        return i > 0 and not s[i - 1].isspace()
    return (i + 2 < len(s) and not s[i + 2].isspace()
            and re.compile(r"(?<=\S)\*\*").search(s, i + 3) is not None)


def _code_span(s: str, i: int) -> tuple[str, int, int] | None:
    """(content, start, end) of the code span opened by the backtick run at s[i] (the whole run),
    as CommonMark reads it: closed by the next backtick run of the same length, content stripped
    of one space each side where it has both. None when that run opens none."""
    ticks = _run_at(s, i)
    close = re.compile(f"(?<!`)`{{{ticks}}}(?!`)").search(s, i + ticks)
    if close is None:
        return None
    body = s[i + ticks:close.start()]
    if len(body) > 1 and body[0] == body[-1] == " " and body.strip():
        body = body[1:-1]
    return body, i, close.end()


def _run_at(s: str, i: int) -> int:
    """The length of the backtick run starting at s[i]."""
    return len(s) - i - len(s[i:].lstrip("`"))


def _escape_chars(s: str) -> str:
    # "_" inside a word (arg_i_f1) can open no emphasis in CommonMark: left as it is, for a
    # readable report.md
    return "".join("\\" + c if c in _ESCAPED and not (c == "_" and 0 < i < len(s) - 1 and s[i - 1].isalnum()
                                                      and s[i + 1].isalnum()) else c for i, c in enumerate(s))


def code(text: object) -> str:
    """`text` from the run as a code span: delimited by a backtick run longer than any inside it
    (CommonMark), padded with a space where it starts or ends with a backtick or a space."""
    s = _one_line(str(text))
    if not s:
        return "` `"  # "``" would be two literal backticks
    ticks = "`" * (_longest_run(s, "`") + 1)
    pad = " " if s[:1] in ("`", " ") or s[-1:] in ("`", " ") else ""
    return f"{ticks}{pad}{s}{pad}{ticks}"


def _longest_run(text: str, char: str) -> int:
    return max((len(m) for m in re.findall(f"{re.escape(char)}+", text)), default=0)


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Table:
    """Cells and header are plain text (escaped when rendered)."""

    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    path: Path  # a PNG next to the report
    alt: str  # plain text


@dataclass(frozen=True)
class Code:
    text: str  # plain text, shown as it is


Block = Heading | Para | Table | Image | Code


def to_markdown(blocks: list[Block], root: Path) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(_paragraph_start(b.text))
        elif isinstance(b, Table):
            out.append("| " + " | ".join(map(esc, b.header)) + " |")
            out.append("|" + "---|" * len(b.header))
            out.extend("| " + " | ".join(map(esc, r)) + " |" for r in b.rows)
        elif isinstance(b, Image):
            out.append(f"![{esc(b.alt)}]({b.path.relative_to(root).as_posix()})")
        elif isinstance(b, Code):
            # longer than any backtick run in the text, so no line of it can close the block
            fence = "`" * max(3, _longest_run(b.text, "`") + 1)
            out.append(f"{fence}\n{b.text.rstrip()}\n{fence}")
        out.append("")
    return "\n".join(out)


def _paragraph_start(text: str) -> str:
    """`text` with what would make it another block escaped: a paragraph may start with text from
    the run (a run name), and "- x", "+ x" or "1. x" there would begin a list, four spaces a code
    block (leading spaces are no part of a paragraph)."""
    text = text.lstrip(" ")
    return re.sub(r"^(?:([-+])|(\d{1,9})([.)]))", lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\{m[3]}", text, count=1)


_CSS = ("body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}th{background:#f3f3f3}pre{background:#f6f6f6;padding:.8em;"
        "overflow-x:auto;white-space:pre-wrap}img{max-width:100%}")


def to_html(blocks: list[Block], title: str) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in b.rows)
            out.append(f"<table><tr>{head}</tr>{body}</table>")
        elif isinstance(b, Image):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            out.append(f"<p><img alt='{html.escape(b.alt)}' src='data:image/png;base64,{data}'></p>")
        elif isinstance(b, Code):
            out.append(f"<pre>{html.escape(b.text)}</pre>")
    out.append("</body></html>")
    return "\n".join(out)


def _inline(text: str) -> str:
    """HTML of heading and paragraph text, read as Markdown reads it: backslash escapes, code
    spans (closed by a backtick run of the same length) and **bold**; everything escaped."""
    out: list[str] = []
    bold, i, n = False, 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in _PUNCT:
            out.append(html.escape(text[i + 1]))
            i += 2
        elif c == "`":
            span = _code_span(text, i)
            if span is None:  # no closing run: the backticks are literal
                out.append(text[i:i + _run_at(text, i)])
                i += _run_at(text, i)
                continue
            out.append(f"<code>{html.escape(span[0])}</code>")
            i = span[2]
        elif text.startswith("**", i):
            out.append("</b>" if bold else "<b>")
            bold, i = not bold, i + 2
        else:
            out.append(html.escape(c))
            i += 1
    return "".join(out) + ("</b>" if bold else "")
