"""PNG grids: images, colourised masks and predictions side by side, with column titles."""

import jax
import numpy as np
from PIL import Image, ImageDraw

from jaxseg import attacks
from jaxseg.files import atomic_path

TITLE_HEIGHT = 14


def to_uint8(image):
    """float [0, 1] or uint8 [H, W, 3] -> uint8."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


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


def save_png(image, path):
    """Write a PIL image atomically (see jaxseg.files)."""
    with atomic_path(path, ".png") as tmp:
        image.save(tmp, format="PNG")


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
