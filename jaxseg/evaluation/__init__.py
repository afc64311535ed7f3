"""Clean and robust evaluation: confusion matrices over a split (confusion.py), metrics from
them (metrics.py), and end-to-end evaluation of checkpoints with reports (report.py)."""

from jaxseg.evaluation import confusion, metrics, report
from jaxseg.evaluation.confusion import confusion_matrix, confusion_over, evaluate
from jaxseg.evaluation.metrics import summarize
from jaxseg.evaluation.report import evaluate_checkpoints, markdown_table, robustness_curve

__all__ = ["confusion", "metrics", "report", "confusion_matrix", "confusion_over", "evaluate",
           "summarize", "evaluate_checkpoints", "markdown_table", "robustness_curve"]
