"""Clean and robust evaluation: confusion matrices and per-image counts over a split
(confusion.py), metrics (metrics.py), the worst case over attacks from per-image counts
(worst_case.py), and end-to-end evaluation of checkpoints with reports (report.py)."""

from jaxseg.evaluation import confusion, metrics, report, worst_case
from jaxseg.evaluation.confusion import (SplitResult, confusion_matrix, confusion_over, evaluate,
                                         evaluate_attack, evaluate_split, per_image_counts)
from jaxseg.evaluation.worst_case import PerImage, summarize_counts
from jaxseg.evaluation.metrics import summarize
from jaxseg.evaluation.report import evaluate_checkpoints, markdown_table, robustness_curve

__all__ = ["confusion", "metrics", "report", "worst_case", "SplitResult", "confusion_matrix",
           "confusion_over", "evaluate", "evaluate_attack", "evaluate_split", "per_image_counts",
           "PerImage", "summarize_counts",
           "summarize", "evaluate_checkpoints", "markdown_table", "robustness_curve"]
