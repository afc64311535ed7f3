"""Plots written as PNG files (matplotlib, no display)."""

from jaxseg.files import atomic_path


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
    try:
        with atomic_path(path, ".png") as tmp:
            figure.savefig(tmp, format="png")
    finally:
        plt.close(figure)
