"""PNG plots of run histories (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import ParamSpec, TypeVar

from leti.report.data import RunHistory, shared_metric


def _save(fig, out: Path) -> None:
    """Written whole or not at all: a report killed mid-write left a cut PNG."""
    tmp = out.with_name(out.name + ".tmp")
    fig.savefig(tmp, dpi=90, format="png")
    os.replace(tmp, out)

# Failure types in a fixed order so that colours mean the same thing in every plot.
_KNOWN = ("AssertionError", "NameError", "TypeError", "SyntaxError", "IndentationError",
          "IndexError", "ValueError", "AttributeError", "ZeroDivisionError", "timeout")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never opens a window
    import matplotlib.pyplot as plt

    return plt


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _plain_text(plot: Callable[_P, _R]) -> Callable[_P, _R]:
    """`plot` drawing text as written: run names and failure labels come from the run (a program
    can name its exception class anything), and `$...$` in one was read as mathtext (garbled, or
    savefig raised on an unknown symbol), or as LaTeX under a user's text.usetex. A context, not a
    change of the global rcParams, since leti may plot inside someone else's process."""
    @wraps(plot)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return plot(*args, **kwargs)

    return run


def _legend(label: str) -> str:
    """`label` as a legend shows it: matplotlib leaves out labels starting with "_" (its mark for
    artists without a legend entry), so such a failure type or run name gets a space in front."""
    return f" {label}" if label.startswith("_") else label


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def pass_at_1_series(history: RunHistory, metric: str | None = None) -> tuple[list[int], list[int], list[float], list[float]]:
    """(iterations, gradient steps, score %, its standard error %) of the points evaluated for
    `metric` (default: the run's own, history.metric: pass@1, or its smallest pass@k without it);
    the error is 0 where it is unknown (runs from before it was recorded, one problem)."""
    metric = metric or history.metric
    pts = [p for p in history.points if metric is not None and p.eval_metrics.get(metric) is not None]
    errs = [100 * (p.eval_stderr.get(metric) or 0.0) for p in pts]  # type: ignore[arg-type]
    return ([p.iteration for p in pts], [p.gradient_steps for p in pts],
            [100 * p.eval_metrics[metric] for p in pts], errs)  # type: ignore[index]


@_plain_text
def plot_pass_at_1(histories: list[RunHistory], out: Path, iteration_zero: str = "before training") -> Path:
    """Held-out pass@1 vs iteration (left) and vs gradient steps (right), one line per arm, with
    a ±1 standard error band (over problems) where the run has them. A run without pass@1 is
    drawn with its smallest pass@k, which the axis (or, when runs differ, its legend) names.
    `iteration_zero` says what iteration 0 is ("warm start" in the demo)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    evaluated = any(h.metric is not None for h in histories)
    one = shared_metric(histories) if evaluated else None  # the metric of every line, if one
    name = one or ("pass@1" if not evaluated else "pass@k")
    series = [pass_at_1_series(h) for h in histories]
    any_err = False
    for h, (iters, steps, ys, errs) in zip(histories, series, strict=True):
        any_err = any_err or any(errs)
        label = _legend(h.label if one or h.metric is None else f"{h.label} ({h.metric})")
        for ax, xs in ((axes[0], iters), (axes[1], steps)):
            (line,) = ax.plot(xs, ys, marker="o", label=label)
            if any(errs):  # a band, not bars: arms often overlap and bars would hide each other
                # clipped to what a percentage can be (97 ± 5 drew a band up to 102%)
                ax.fill_between(xs, [max(0.0, y - e) for y, e in zip(ys, errs, strict=True)],
                                [min(100.0, y + e) for y, e in zip(ys, errs, strict=True)],
                                color=line.get_color(), alpha=0.15)
    axes[0].set_xlabel(f"iteration (0 = {iteration_zero})")
    axes[0].xaxis.set_major_locator(_integer_ticks())  # iterations are whole numbers
    axes[1].set_xlabel("gradient steps")
    top = max((min(100.0, y + e) for _, _, ys, es in series for y, e in zip(ys, es, strict=True)), default=0)
    for ax in axes:
        ax.set_ylim(0, max(5.0, 1.05 * top))  # a percentage never goes below 0, even when all are 0
        ax.set_ylabel(f"held-out {name} (%)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[1]:
            ax.legend()
    title = f"Held-out {name}" + (" (pass@1 not computed)" if one and one != "pass@1" else "")
    if not evaluated:
        title += ": no evaluation yet"
    fig.suptitle(title + (" (band: ±1 standard error over problems)" if any_err else ""))
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)
    return out


@_plain_text
def plot_code_loss(histories: list[RunHistory], out: Path, iteration_zero: str = "before training") -> Path:
    """The mean token loss on the pretraining corpus's held-out files vs iteration (left) and vs
    gradient steps (right), one line per run that measured it: what the model forgets of
    ordinary code (the continued-pretraining mix is there to keep it low)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for h in histories:
        pts = [p for p in h.points if p.code_loss is not None]
        if pts:
            axes[0].plot([p.iteration for p in pts], [p.code_loss for p in pts], marker="o", label=_legend(h.label))
            axes[1].plot([p.gradient_steps for p in pts], [p.code_loss for p in pts], marker="o", label=_legend(h.label))
    axes[0].set_xlabel(f"iteration (0 = {iteration_zero})")
    axes[0].xaxis.set_major_locator(_integer_ticks())
    axes[1].set_xlabel("gradient steps")
    for ax in axes:
        ax.set_ylabel("mean token loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Loss on held-out code (pretraining corpus files no run trains on)")
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)
    return out


def _ordered_labels(tables: list[dict[str, int]], top: int = 7) -> list[str]:
    total: dict[str, int] = {}
    for t in tables:
        for k, v in t.items():
            total[k] = total.get(k, 0) + v
    ranked = sorted(total, key=lambda k: (-total[k], _KNOWN.index(k) if k in _KNOWN else 99, k))
    return ranked[:top]


def _stacked(ax, iterations: list[int], tables: list[dict[str, int]], sizes: list[int], title: str,
             labels: list[str]) -> None:
    """One bar per iteration, a segment per failure type of `labels` (one colour per label in
    every panel), then "other"."""
    bottom = [0.0] * len(iterations)
    for label in [*labels, None]:  # None: the rest (not "other", which a failure type may be called)
        if label is None:
            vals = [sum(v for k, v in t.items() if k not in labels) for t in tables]
        else:
            vals = [t.get(label, 0) for t in tables]
        # Fractions of all samples, so iterations with different sample counts compare.
        fr = [100 * v / n if n else 0.0 for v, n in zip(vals, sizes, strict=True)]
        if any(fr):
            color = "0.6" if label is None else f"C{labels.index(label) % 10}"
            ax.bar(iterations, fr, bottom=bottom, label="other" if label is None else _legend(label), color=color)
            bottom = [b + f for b, f in zip(bottom, fr, strict=True)]
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_ylabel("% of samples failing with")
    ax.set_xticks(iterations)
    ax.set_ylim(0, 125)  # headroom above 100% for the legend
    ax.set_yticks(range(0, 101, 20))
    if ax.get_legend_handles_labels()[1]:  # nothing failed: no legend to draw
        ax.legend(fontsize=7, loc="upper center", ncol=4)


@_plain_text
def plot_failures(history: RunHistory, out: Path) -> Path:
    """Stacked failure types per iteration: training samples (left), held-out samples (right)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    train = [p for p in history.points if p.train_samples]
    evals = [p for p in history.points if p.eval_samples]
    # One label list for both panels, so a failure type has the same colour in each.
    labels = _ordered_labels([p.train_failures for p in train] + [p.eval_failures for p in evals])
    _stacked(axes[0], [p.iteration for p in train], [p.train_failures for p in train],
             [p.train_samples for p in train], "training samples", labels)
    _stacked(axes[1], [p.iteration for p in evals], [p.eval_failures for p in evals],
             [p.eval_samples for p in evals], "held-out samples", labels)
    fig.suptitle(f"Failure types per iteration: {history.label}")
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)
    return out
