"""Evaluating checkpoints end to end and reporting: Table-1 markdown, JSON, robustness curves.

    jaxseg.evaluation.report.evaluate_checkpoints(["ckpt/pre"], data="synthetic",
        attacks=["pgd"], eps=8/255, output="results/pre")

is what `evaluate.py` runs (the CLI only parses arguments).
"""

import os

import jax

from jaxseg import attacks as attack_presets
from jaxseg import data as datasets
from jaxseg import labels, models
from jaxseg.evaluation import confusion, metrics
from jaxseg.errors import JaxsegError
from jaxseg.io import atomic_path, write_json, write_text


def evaluate_checkpoints(checkpoints, *, output, names=None, data="synthetic", split="val",
                         data_kwargs=None, num_images=None, batch_size=8, short_side=None,
                         pad_to=None, attacks=(), eps=8 / 255, steps=10, step_size=None,
                         restarts=1, eps_curve=None, curve_attack="pgd", seed=0, log=print):
    """Clean and robust accuracy / mIoU of each checkpoint (Table 1), and with `eps_curve` (a
    list of eps values) a robustness curve per model. Every input is checked before any work.

    Writes OUTPUT/results.md (Table-1 style), results.json (per-class IoU too), and with
    `eps_curve`: curve.json and curve.png. Returns {model name: {attack: summary}}.
    """
    names = list(names) if names else [os.path.basename(os.path.normpath(c)) for c in checkpoints]
    if len(names) != len(checkpoints):
        raise JaxsegError(f"{len(names)} --name values for {len(checkpoints)} checkpoints")
    attack_presets.check_hyper(eps, 1.0)  # also when only the clean row is asked for
    specs = {"clean": None}
    for name in attacks:
        specs[name] = attack_presets.make(name, eps=eps, steps=None if name == "fgsm" else steps,
                                          step_size=step_size, restarts=restarts)
    if eps_curve:
        attack_presets.make(curve_attack, eps=max(eps_curve), steps=steps)  # validate
    dataset = datasets.get_dataset(data, split, **(data_kwargs or {}))
    if num_images:
        dataset = datasets.Subset(dataset, num_images)
    loaded = [models.load(path) for path in checkpoints]  # all errors before any work
    for path, (model, _) in zip(checkpoints, loaded):
        labels.check_num_classes(model.num_classes, dataset.info.num_classes, path,
                                 f"data {data}")
    os.makedirs(output, exist_ok=True)

    loader = lambda: datasets.eval_loader(dataset, batch_size, short_side=short_side,  # noqa: E731
                                          pad_to=pad_to)
    key = jax.random.key(seed)
    results, curves = {}, {}
    for name, (model, variables) in zip(names, loaded):
        results[name] = {}
        for attack_name, spec in specs.items():
            matrix = confusion.confusion_over(model, variables, loader(), spec, key)
            results[name][attack_name] = metrics.summarize(matrix, dataset.info.class_names)
            log(f"{name} {attack_name}: pixel acc "
                f"{100 * results[name][attack_name]['pixel_acc']:.1f} "
                f"mIoU {100 * results[name][attack_name]['miou']:.1f}")
        if eps_curve:
            curves[name] = []
            for value in eps_curve:
                spec = attack_presets.make(curve_attack, eps=value, steps=steps)
                matrix = confusion.confusion_over(model, variables, loader(), spec, key)
                curves[name].append((value, metrics.summarize(matrix)))

    header = (f"data {data} ({split}, {len(dataset)} images); attacks: eps {255 * eps:.4g}/255, "
              f"{steps} steps, {restarts} restart(s)\n\n")
    write_text(os.path.join(output, "results.md"), header + markdown_table(results) + "\n")
    write_json(os.path.join(output, "results.json"),
               {"data": data, "split": split, "images": len(dataset), "eps": eps,
                "steps": steps, "restarts": restarts,
                "checkpoints": dict(zip(names, checkpoints)), "results": results})
    if curves:
        write_json(os.path.join(output, "curve.json"), {
            "attack": curve_attack, "steps": steps, "curves": {
                n: [{"eps": e, "pixel_acc": s["pixel_acc"], "miou": s["miou"]} for e, s in pts]
                for n, pts in curves.items()}})
        robustness_curve(curves, os.path.join(output, "curve.png"), attack=curve_attack)
    return results


def markdown_table(rows, title="model"):
    """Table-1 style: one row per (model, attack) with pixel accuracy and mIoU in percent."""
    lines = [f"| {title} | attack | pixel acc | mIoU |", "|---|---|---|---|"]
    for name, results in rows.items():
        for attack_name, summary in results.items():
            lines.append(f"| {name} | {attack_name} | {100 * summary['pixel_acc']:.1f} | "
                         f"{100 * summary['miou']:.1f} |")
    return "\n".join(lines)


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
