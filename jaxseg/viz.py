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
