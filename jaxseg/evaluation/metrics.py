"""Segmentation metrics from a confusion matrix accumulated over a whole split.

mIoU is computed once from the summed confusion matrix (never an average of per-batch mIoU).
Classes with an empty union (never in the labels, never predicted) are left out of the mean and
reported as NaN; a class present in the labels but never predicted counts with IoU 0.
"""

import numpy as np


def summarize(confusion, class_names=None):
    """Global pixel accuracy, mean class accuracy, per-class IoU and mIoU (all in [0, 1])."""
    confusion = np.asarray(confusion, np.float64)
    true_positive = np.diag(confusion)
    per_label = confusion.sum(axis=1)
    per_prediction = confusion.sum(axis=0)
    union = per_label + per_prediction - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        class_acc = np.where(per_label > 0, true_positive / per_label, np.nan)
    total = confusion.sum()
    names = class_names or [str(c) for c in range(len(iou))]
    return {
        "pixel_acc": float(true_positive.sum() / total) if total else float("nan"),
        "mean_class_acc": float(np.nanmean(class_acc)) if np.any(per_label > 0) else float("nan"),
        "miou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
        "iou": {name: float(value) for name, value in zip(names, iou)},
        "pixels": int(total),
    }
