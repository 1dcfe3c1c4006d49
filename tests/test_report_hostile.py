"""`leti report` on runs whose text came from the model: exception class names (a program can
name its class anything printable), programs and run-folder names reach matplotlib and report.md,
and must be shown as written there, never parsed as mathtext, Markdown or HTML. The run
directories are written by hand (no execution, no model), so these tests stay fast."""

from __future__ import annotations

import html
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from leti.config import RunConfig, dump_config
from leti.execution import ExecutionResult, Status
from leti.report import build_report

TASK = "synthetic:seed=0,train=4,test=4"
PROGRAM = "x = 1\n````\n<script>alert('md')</script>\n````\n```````\n"  # closes a ```` fence early


def _record(i: int, label: str | None, completion: str = "def f(x):\n    return x\n") -> dict:
    result = ExecutionResult(id=i, status=Status.PASSED if label is None else Status.FAILED, exception_type=label,
                             message=None if label is None else "x")
    return {"problem_id": f"p{i % 4}", "sample_idx": i, "prompt": "def f(x):\n", "completion": completion,
            **result.to_dict()}


def hand_run(root: Path, labels: list[str], completion: str = "def f(x):\n    return x\n") -> Path:
    """A run of iterations 0 and 1: iteration 1's training samples fail with `labels` (one each, the
    first with `completion`), plus one passing sample; held-out samples fail with them too."""
    cfg = RunConfig(model="unused", task=TASK, iterations=1)
    cfg = replace(cfg, training_text=replace(cfg.training_text, textual_feedback=True))
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(dump_config(cfg))
    recs = [_record(i, label, completion if i == 0 else "def f(x):\n    return x\n") for i, label in enumerate(labels)]
    recs.append(_record(len(labels), None))
    for k in (0, 1):
        it = root / "iterations" / str(k)
        it.mkdir(parents=True)
        if k:
            (it / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (it / "eval_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    rate = 1 / len(recs)
    (root / "metrics.jsonl").write_text("".join(json.dumps(
        {"iteration": k, "gradient_steps_total": 4 * k, "train_pass_rate": rate if k else None,
         "eval": {"pass@1": rate}}) + "\n" for k in (0, 1)))
    return root


def _texts(fig) -> list:
    """The legend entries and titles of a figure (the Text objects that hold run text)."""
    out = [fig._suptitle] if fig._suptitle is not None else []
    for ax in fig.axes:
        if ax.get_legend() is not None:
            out += ax.get_legend().get_texts()
    return out


def test_dollar_signs_in_labels_and_run_names_are_drawn_as_written(tmp_path, figures):
    """`$\\foo$` in a failure label made savefig raise (unknown mathtext symbol); `$x$` in the run
    folder's name was set as math in the legend and title. Both are plain text now, and the
    user's own rcParams are left as they were."""
    import matplotlib

    run = hand_run(tmp_path / "run $x$", ["a$\\foo$b", "$x^2$", "NameError"])
    build_report(run)
    for name in ("pass_at_1.png", "failures_run__x_.png"):
        assert (run / name).stat().st_size > 0, name
    texts = [t for fig in figures.values() for t in _texts(fig)]
    shown = {t.get_text().strip() for t in texts}
    assert {"a$\\foo$b", "$x^2$", "run $x$", "Failure types per iteration: run $x$"} <= shown
    assert not [t.get_text() for t in texts if t.get_parse_math()]
    assert matplotlib.rcParams["text.parse_math"] is True  # a context, not a global change


def test_labels_starting_with_an_underscore_keep_their_legend_entry(tmp_path, figures):
    """matplotlib leaves labels starting with "_" out of a legend: a failure type `_Private` and a
    run named `_run` went missing from theirs."""
    run = hand_run(tmp_path / "_run", ["_Private", "NameError"])
    build_report(run)
    legends = {name: [t.get_text().strip() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
               for name, fig in figures.items()}
    assert "_Private" in legends["failures__run.png"] and "NameError" in legends["failures__run.png"]
    assert "_run" in legends["pass_at_1.png"]


# the table shows a run's top 3: the third holds the rest (a class name may be any printable text)
HOSTILE = ["<script>alert(1)</script>", "A|B", "<img src=x onerror=alert(1)> x`y _em_ **b** [l](u) &amp;"]


def test_report_md_shows_model_text_as_text(tmp_path):
    """A program with a line of four backticks closed the ```` fence and the lines after it were
    live HTML; failure labels went into table cells raw (live tags, `|` split the cell); the run
    folder's name went into headings raw."""
    run = hand_run(tmp_path / "<b>r|`y", HOSTILE, completion=PROGRAM)
    html_path = build_report(run)
    md = (run / "report.md").read_text()

    # the fence: longer than any backtick run in the text, so none of its lines closes it
    fences = re.findall(r"^(`{3,})$", md, re.M)
    assert fences and fences[0] == fences[-1] and len(fences[0]) > max(len(r) for r in re.findall("`+", PROGRAM))
    body = md.split(fences[0] + "\n", 1)[1].split("\n" + fences[0], 1)[0]
    assert PROGRAM.rstrip() in body
    # outside the code block: no raw tag, and every table row has its header's cell count
    outside = md.replace(body, "")
    assert not re.search(r"(?<!\\)<(script|img src=x)", outside)  # (the run name is in code spans)
    for table in re.findall(r"(?:^\|.*\|\n)+", outside, re.M):
        counts = {len(re.split(r"(?<!\\)\|", row)) for row in table.splitlines()}
        assert len(counts) == 1, table

    try:
        from markdown_it import MarkdownIt
    except ImportError:  # not a dependency of leti: the raw checks above stand alone
        return
    tokens = MarkdownIt("commonmark").enable("table").parse(md)
    assert not [t for t in tokens if t.type.startswith("html")]
    rendered = MarkdownIt("commonmark").enable("table").render(md)
    assert not re.search(r"<(script|img src=x|b>)", rendered)
    assert [t.content for t in tokens if t.type == "fence"] == [body + "\n"]
    cells: list[list[str]] = []
    for t in tokens:
        if t.type == "tr_open":
            cells.append([])
        elif t.type == "inline" and cells and t.level > 3:  # a cell's text
            cells[-1].append(t.content)
    rows = [c for c in cells if c]
    top = next(r for r in rows if "top training failures" in r)
    assert all(len(r) == len(top) for r in rows[rows.index(top):rows.index(top) + 3])
    # the labels come back whole, escapes and all undone by the parser
    text = rendered.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    assert f"<td>{' 1, '.join(HOSTILE)} 1</td>" in text
    assert "<h1>LeTI report: <b>r|`y</h1>" in text and "<h2>Run <code><b>r|`y</code></h2>" in text

    page = html_path.read_text()
    assert "<script" not in page and "&lt;script&gt;" in page and "<img src=x" not in page


@pytest.mark.parametrize("text", ["<script>x</script>", "a|b", "`x``", " lead", "-1", "1. item", "$\\foo$",
                                  "a\n<script>", "_u_ *s* ~t~ [l](u) &amp; \\", "",
                                  "    four", "+ x", "2) x", "> q", "# h", "~~~", "=== x", "<!-- c"])
def test_run_text_reads_back_the_same_from_markdown_and_html(text):
    """esc and code keep text from the run literal: Markdown (CommonMark) and the HTML report
    both show it as written (a line break as a space)."""
    from leti.report.render import Para, _inline, code, esc, to_markdown

    want = text.replace("\n", " ")
    assert html.unescape(_inline(esc(text))) == want
    assert re.fullmatch(r"<code>(.*)</code>", _inline(code(text)), re.S)[1] == html.escape(want or " ")
    try:
        from markdown_it import MarkdownIt
    except ImportError:
        return
    md = MarkdownIt("commonmark")
    assert html.unescape(md.renderInline(f"x {esc(text)} y")) == f"x {want} y"
    # a paragraph that starts with it stays one paragraph (not a list, quote or code block)
    para = to_markdown([Para(f"{esc(text)} y")], Path("."))
    assert html.unescape(md.render(para)) == f"<p>{f'{want} y'.lstrip()}</p>\n"
    assert html.unescape(md.renderInline(code(text))) == f"<code>{want or ' '}</code>"


def test_a_summary_note_keeps_its_code_spans_and_nothing_else_is_live():
    """summary.json's arms_note is Markdown the demo wrote (`leti run` in code), but it quotes the
    error that stopped a demo, which may hold anything: its code spans and bold stay, the rest is
    literal."""
    from leti.report.render import _inline, markup

    note = "INCOMPLETE: **stopped** (<script>x</script> in `seed0/<b>|` at a|b, `` a`b ``; ``` left open) [l](u)"
    assert _inline(markup(note)) == (
        "INCOMPLETE: <b>stopped</b> (&lt;script&gt;x&lt;/script&gt; in <code>seed0/&lt;b&gt;|</code> at a|b, "
        "<code>a`b</code>; ``` left open) [l](u)")
    try:
        from markdown_it import MarkdownIt
    except ImportError:
        return
    assert MarkdownIt("commonmark").renderInline(markup(note)) == _inline(markup(note)).replace(
        "<b>", "<strong>").replace("</b>", "</strong>")


def test_an_unpaired_bold_mark_in_a_quoted_error_stays_literal():
    """A demo error quoting Python's `for ** or pow()` made the rest of report.html's note bold."""
    from leti.report.render import _inline, markup

    note = "**stopped**: unsupported operand type(s) for ** or pow(): str and int"
    assert _inline(markup(note)) == "<b>stopped</b>: unsupported operand type(s) for ** or pow(): str and int"
    try:
        from markdown_it import MarkdownIt
    except ImportError:
        return
    assert MarkdownIt("commonmark").renderInline(markup(note)) == _inline(markup(note)).replace(
        "<b>", "<strong>").replace("</b>", "</strong>")
