"""Built-in synthetic scenes: procedurally drawn, deterministic per (seed, split, index), any size,
no files.

Six object classes on a textured background. Classes come in pairs that share one cue and
differ in the other, so a model must learn both shape and appearance:

| class    | shape               | colours       | texture                 |
|----------|---------------------|---------------|-------------------------|
| disc     | filled ellipse      | red / orange  | radial gradient         |
| ring     | elliptical annulus  | red / orange  | radial gradient         |
| box      | rotated rectangle   | blue / cyan   | stripes                 |
| tile     | rotated rectangle   | blue / cyan   | dots                    |
| triangle | triangle            | green         | linear gradient         |
| star     | five-pointed star   | purple        | concentric bands        |

Objects are painted back to front, so later ones occlude earlier ones (and the frame crops
them); the label of a pixel is the class of the front-most object covering it, exact by
construction (hard edges, no anti-aliasing). The clean image is the ground truth against which
an inpainted region can be scored.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image

from jaxseg.data.base import DatasetInfo
from jaxseg.errors import JaxsegError

CLASS_NAMES = ("background", "disc", "ring", "box", "tile", "triangle", "star")
PALETTE = ((0, 0, 0), (230, 60, 40), (250, 160, 60), (40, 90, 220), (60, 200, 230),
           (60, 180, 60), (170, 60, 200))
INFO = DatasetInfo("synthetic", CLASS_NAMES, PALETTE)
SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_LENGTH = {"train": 4096, "val": 256, "test": 256}

# Per class: (hue range, saturation range, value range). Hue ranges may wrap past 1.
_COLOURS = {
    1: ((-0.04, 0.08), (0.6, 0.95), (0.65, 0.95)),
    2: ((-0.04, 0.08), (0.6, 0.95), (0.65, 0.95)),
    3: ((0.53, 0.66), (0.5, 0.9), (0.55, 0.95)),
    4: ((0.53, 0.66), (0.5, 0.9), (0.55, 0.95)),
    5: ((0.24, 0.40), (0.55, 0.9), (0.5, 0.9)),
    6: ((0.76, 0.90), (0.45, 0.85), (0.55, 0.95)),
}


def _colour(rng, cls):
    hue, sat, val = (rng.uniform(*bounds) for bounds in _COLOURS[cls])
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, sat, val), np.float32)


def _smooth_noise(rng, height, width, cell):
    """Zero-mean noise varying over about `cell` pixels (a coarse grid, bilinearly upsampled)."""
    grid = rng.standard_normal((height // cell + 2, width // cell + 2), dtype=np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((width, height), Image.BILINEAR))


def _background(rng, height, width):
    hue, sat, val = rng.uniform(0, 1), rng.uniform(0.05, 0.3), rng.uniform(0.3, 0.7)
    base = np.array(colorsys.hsv_to_rgb(hue, sat, val), np.float32)
    scale = min(height, width)
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(0.08, 0.25) * scale
    # sin(ax + by + c) from 1-D factors: an outer product instead of a full-image sin
    ax = 2 * np.pi * xs * np.cos(angle) / period
    by = 2 * np.pi * ys * np.sin(angle) / period + rng.uniform(0, 2 * np.pi)
    waves = 0.08 * (np.sin(ax) * np.cos(by) + np.cos(ax) * np.sin(by))
    shade = 1.0 + 0.22 * _smooth_noise(rng, height, width, max(2, scale // 6)) + waves
    tint = rng.normal(0, 0.06, 3).astype(np.float32)
    blotch = _smooth_noise(rng, height, width, max(2, scale // 3))
    return base * shade[..., None] + tint * blotch[..., None]


def _shape_mask(cls, rng, u, v, radius):
    """Mask of the object in its own rotated frame (u, v), plus its normalised radial coordinate."""
    if cls in (1, 2):  # ellipse / annulus
        a, b = radius, radius * rng.uniform(0.6, 1.0)
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        mask = rho <= 1.0
        if cls == 2:
            mask &= rho >= rng.uniform(0.45, 0.65)
        return mask, rho
    if cls in (3, 4):  # rectangle
        a, b = radius, radius * rng.uniform(0.45, 1.0)
        return (np.abs(u) <= a) & (np.abs(v) <= b), None
    if cls == 5:  # triangle with jittered vertices
        angles = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.35, 0.35, 3)
        radii = radius * rng.uniform(0.85, 1.15, 3)
        px, py = radii * np.cos(angles), radii * np.sin(angles)
        sides = [(px[(i + 1) % 3] - px[i]) * (v - py[i]) - (py[(i + 1) % 3] - py[i]) * (u - px[i])
                 for i in range(3)]
        return (sides[0] >= 0) & (sides[1] >= 0) & (sides[2] >= 0), None
    # five-pointed star: boundary radius is a triangle wave of the polar angle
    inner = rng.uniform(0.4, 0.55)
    phase = (np.arctan2(v, u) / (2 * np.pi / 5)) % 1.0
    boundary = radius * (inner + (1 - inner) * np.abs(2 * phase - 1))
    rho = np.hypot(u, v)
    return rho <= boundary, rho


def _texture(cls, rng, u, v, rho, radius, colour, scale):
    """RGB pixels of the object over its bounding box (the mask selects which are kept)."""
    period = max(3.0, rng.uniform(0.035, 0.07) * scale)
    if cls in (1, 2):  # radial gradient, bright centre
        shade = 1.15 - 0.55 * np.minimum(rho, 1.0) ** 2
        return colour * shade[..., None]
    if cls == 3:  # stripes in a random direction
        angle = rng.uniform(0, np.pi)
        s = u * np.cos(angle) + v * np.sin(angle)
        shade = np.where(np.sin(2 * np.pi * s / period) > 0, 1.0, 0.5)
        return colour * shade[..., None]
    if cls == 4:  # light dots on a grid
        du = (u % period) - period / 2
        dv = (v % period) - period / 2
        dots = (du**2 + dv**2) <= (0.32 * period) ** 2
        light = colour + 0.55 * (1.0 - colour)
        return np.where(dots[..., None], light, colour * 0.85)
    if cls == 5:  # linear gradient across the object
        angle = rng.uniform(0, 2 * np.pi)
        s = (u * np.cos(angle) + v * np.sin(angle)) / (2 * radius) + 0.5
        shade = 0.5 + 0.7 * np.clip(s, 0.0, 1.0)
        return colour * shade[..., None]
    shade = np.where(np.sin(2 * np.pi * rho / period) > 0, 1.05, 0.6)  # concentric bands
    return colour * shade[..., None]


def render_scene(rng, height, width, min_objects=2, max_objects=6):
    """Draw one scene with numpy generator `rng`.

    Returns (image float32 [H, W, 3] in [0, 1], label uint8 [H, W] class ids,
    instances uint8 [H, W]: 0 for background, k for the k-th object drawn).
    """
    image = _background(rng, height, width)
    label = np.zeros((height, width), np.uint8)
    instances = np.zeros((height, width), np.uint8)
    scale = min(height, width)
    for k in range(1, int(rng.integers(min_objects, max_objects + 1)) + 1):
        cls = int(rng.integers(1, len(CLASS_NAMES)))
        radius = rng.uniform(0.1, 0.28) * scale
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        angle = rng.uniform(0, 2 * np.pi)
        colour = _colour(rng, cls)
        reach = radius * 1.45  # covers a square's corners (sqrt 2)
        y0, y1 = max(0, int(cy - reach)), min(height, int(np.ceil(cy + reach)) + 1)
        x0, x1 = max(0, int(cx - reach)), min(width, int(np.ceil(cx + reach)) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        mask, rho = _shape_mask(cls, rng, u, v, radius)
        pixels = _texture(cls, rng, u, v, rho, radius, colour, scale)
        image[y0:y1, x0:x1][mask] = pixels[mask]
        label[y0:y1, x0:x1][mask] = cls
        instances[y0:y1, x0:x1][mask] = k
    image += 0.025 * rng.standard_normal(image.shape, dtype=np.float32)  # sensor noise
    return np.clip(image, 0.0, 1.0, out=image), label, instances


class SyntheticScenes:
    """A random-access dataset of synthetic scenes (see the module docstring).

    Item i of a split is always the same scene for the same `seed`; splits use separate
    random streams. `size` is (height, width).
    """

    def __init__(self, split="train", size=(128, 128), num_examples=None, seed=0,
                 min_objects=2, max_objects=6):
        if split not in SPLITS:
            raise JaxsegError(f"synthetic split {split!r} is not one of {', '.join(SPLITS)}")
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        if height < 8 or width < 8:
            raise JaxsegError(f"synthetic scene size {height}x{width} is too small (min 8x8)")
        if not 0 <= min_objects <= max_objects <= 255:
            raise JaxsegError(f"synthetic objects range [{min_objects}, {max_objects}] is invalid")
        self.split, self.size, self.seed = split, (int(height), int(width)), int(seed)
        self.num_examples = DEFAULT_LENGTH[split] if num_examples is None else int(num_examples)
        if self.num_examples < 1:
            raise JaxsegError(f"synthetic dataset needs at least one example, got "
                              f"num_examples={num_examples}")
        self.min_objects, self.max_objects = min_objects, max_objects
        self.info = INFO
        self.skipped = {}

    def __len__(self):
        return self.num_examples

    def scene(self, index):
        """The full scene: float image, label and per-object instance ids."""
        if not 0 <= index < self.num_examples:
            raise IndexError(f"synthetic index {index} out of range [0, {self.num_examples})")
        rng = np.random.default_rng([self.seed, SPLITS[self.split], int(index)])
        image, label, instances = render_scene(rng, *self.size, self.min_objects,
                                               self.max_objects)
        return {"image": image, "label": label, "instances": instances}

    def __getitem__(self, index):
        scene = self.scene(index)
        pixels = (scene["image"] * 255.0 + 0.5).astype(np.uint8)
        return {"image": pixels, "label": scene["label"], "index": int(index)}

    def __repr__(self):
        return (f"SyntheticScenes({self.split!r}, size={self.size}, "
                f"num_examples={self.num_examples}, seed={self.seed})")
