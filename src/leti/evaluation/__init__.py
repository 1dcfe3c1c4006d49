"""Scoring: pass@k (pure), executing samples against task tests, and the resumable file runner.

    from leti.evaluation import evaluate_samples
    report = evaluate_samples(task, problems, samples, executor, ks=(1, 10))
    report.pass_at_k  # {"pass@1": ..., "pass@10": ...}
"""

from leti.evaluation.evaluate import EvalReport, ProblemScore, evaluate_samples, score
from leti.evaluation.pass_at_k import mean_pass_at_k, pass_at_k, reportable_ks
from leti.evaluation.samples import Sample, read_samples

__all__ = [
    "EvalReport",
    "ProblemScore",
    "Sample",
    "evaluate_samples",
    "mean_pass_at_k",
    "pass_at_k",
    "read_samples",
    "reportable_ks",
    "score",
]
