"""Pictures: grids of images, colourised masks and predictions side by side, with column titles;
animated GIFs of trajectories. Written atomically (jaxseg.io)."""

import jax
import numpy as np
from PIL import Image, ImageDraw

from jaxseg import attacks
from jaxseg.io import atomic_path, save_png, to_uint8

TITLE_HEIGHT = 14


def image_grid(rows, titles=None, gap=2):
    """One PIL image from rows of equally sized [H, W, 3] arrays, with optional column titles."""
    height, width = np.asarray(rows[0][0]).shape[:2]
    columns = max(len(row) for row in rows)
    top = TITLE_HEIGHT if titles else 0
    canvas = Image.new("RGB", (columns * (width + gap) - gap, top + len(rows) * (height + gap) - gap),
                       (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles or []):
        draw.text((c * (width + gap) + 2, 1), str(title)[: max(1, width // 6)], fill=(0, 0, 0))
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            canvas.paste(Image.fromarray(to_uint8(cell)), (c * (width + gap), top + r * (height + gap)))
    return canvas


def save_gif(frames, path, duration_ms=120):
    """Animated GIF of PIL images, written atomically; the last frame lingers."""
    durations = [duration_ms] * (len(frames) - 1) + [duration_ms * 10]
    with atomic_path(path, ".gif") as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                       duration=durations, loop=0)


def save_predictions(path, model, variables, images, labels, info, specs, key=None):
    """Rows: image | truth | prediction, then adversarial image | prediction per attack."""
    key = jax.random.key(0) if key is None else key
    images, labels = np.asarray(images, np.float32), np.asarray(labels, np.int32)
    columns = [list(images), [info.colorize(y) for y in labels]]
    titles = ["image", "truth"]
    for name, spec in specs.items():
        inputs = images
        if spec is not None:
            inputs = np.asarray(attacks.attack(spec, model.apply, variables, images, labels, key).x)
            columns.append(list(inputs))
            titles.append(name)
        predictions = np.asarray(model.apply(variables, inputs)["out"]).argmax(-1)
        columns.append([info.colorize(p) for p in predictions])
        titles.append(f"pred {name}")
    save_png(image_grid([list(row) for row in zip(*columns)], titles), path)


def legend(info, width):
    """A strip of [colour] name entries for the dataset's classes, `width` pixels wide."""
    entry, height = 90, 14
    per_row = max(1, width // entry)
    rows = -(-len(info.class_names) // per_row)
    strip = Image.new("RGB", (width, rows * height + 2), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for k, name in enumerate(info.class_names):
        x, y = (k % per_row) * entry + 2, (k // per_row) * height + 2
        draw.rectangle([x, y, x + 10, y + 10], fill=tuple(int(v) for v in info.palette[k]),
                       outline=(0, 0, 0))
        draw.text((x + 14, y), str(name)[:12], fill=(0, 0, 0))
    return strip


def attack_grid(images, adversarial, clean_predictions, adversarial_predictions, labels, info):
    """Rows per image: image | adversarial image | perturbation (mid-grey = none, scaled to its
    largest value so that it is visible) | clean prediction | adversarial prediction | truth, in
    the dataset's class colours, with a legend below."""
    images, adversarial = np.asarray(images, np.float32), np.asarray(adversarial, np.float32)
    delta = adversarial - images
    scale = max(float(np.abs(delta).max()), 1e-12)
    rows = [[x, a, 0.5 + 0.5 * d / scale, info.colorize(p), info.colorize(q), info.colorize(y)]
            for x, a, d, p, q, y in zip(images, adversarial, delta, clean_predictions,
                                        adversarial_predictions, labels)]
    grid = image_grid(rows, ["image", "adversarial", f"delta x{0.5 / scale:.3g}", "clean pred",
                             "adv pred", "truth"])
    strip = legend(info, grid.width)
    canvas = Image.new("RGB", (grid.width, grid.height + strip.height), (255, 255, 255))
    canvas.paste(grid, (0, 0))
    canvas.paste(strip, (0, grid.height))
    return canvas


def iou_bars(rows, class_names, path, title=""):
    """A bar chart of per-class IoU (percent), one bar per class and row ({row: {class: IoU}}),
    written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(max(5.0, 0.6 * len(class_names) * max(1, len(rows)) / 2),
                                         3.5), dpi=120)
    width = 0.8 / max(1, len(rows))
    for number, (name, iou) in enumerate(rows.items()):
        values = [100 * np.nan_to_num(iou.get(c, np.nan)) for c in class_names]
        axis.bar(np.arange(len(class_names)) + number * width, values, width, label=name)
    axis.set_xticks(np.arange(len(class_names)) + 0.4 - width / 2)
    axis.set_xticklabels(class_names, rotation=45, ha="right", fontsize=7)
    axis.set_ylabel("IoU (%)")
    axis.set_title(title)
    axis.legend(fontsize=7)
    save_figure(figure, path)


def save_figure(figure, path):
    """A matplotlib figure as PNG, laid out, written atomically, then closed."""
    from matplotlib import pyplot as plt

    try:
        figure.tight_layout()
        with atomic_path(path, ".png") as tmp:
            figure.savefig(tmp, format="png")
    finally:
        plt.close(figure)
