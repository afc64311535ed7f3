"""Plots written as PNG files (matplotlib, no display)."""

import os
import tempfile


def robustness_curve(curves, path, metric="miou", attack="pgd"):
    """curves: {model name: [(eps, summary), ...]} -> a line plot of `metric` (percent) vs eps*255."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5), dpi=120)
    for name, points in curves.items():
        axis.plot([255 * eps for eps, _ in points], [100 * s[metric] for _, s in points],
                  marker="o", label=name)
    axis.set_xlabel("eps (x/255)")
    axis.set_ylabel({"miou": "mIoU (%)", "pixel_acc": "pixel accuracy (%)"}.get(metric, metric))
    axis.set_title(f"{attack} robustness")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".png")
    os.close(fd)
    try:
        figure.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        if os.path.exists(tmp):
            os.remove(tmp)
