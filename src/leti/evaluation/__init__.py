"""Scoring: pass@k (pure), executing samples against task tests, and the resumable file runner.

    from leti.evaluation import evaluate_samples
    report = evaluate_samples(task, problems, samples, executor, ks=(1, 10))
    report.pass_at_k  # {"pass@1": ..., "pass@10": ...}
    report.pass_at_k_stderr  # the same keys: standard error over problems
"""

from leti.evaluation.evaluate import EvalReport, ProblemScore, evaluate_samples, score
from leti.evaluation.pass_at_k import (
    PairedDifference,
    mean_pass_at_k,
    paired_difference,
    pass_at_k,
    pass_at_k_stderr,
    reportable_ks,
    stderr_of_mean,
)
from leti.evaluation.samples import Sample, read_samples

__all__ = [
    "EvalReport",
    "PairedDifference",
    "ProblemScore",
    "Sample",
    "evaluate_samples",
    "mean_pass_at_k",
    "paired_difference",
    "pass_at_k",
    "pass_at_k_stderr",
    "read_samples",
    "reportable_ks",
    "score",
    "stderr_of_mean",
]
