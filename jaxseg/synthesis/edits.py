"""Where to synthesise and what: hole masks from short specs, and edited targets.

Hole masks (True = the region to synthesise), checked against an image:

    rect:x,y,w,h     a box: left x, top y, width w, height h, in pixels, inside the image
    class:k          the pixels of class k (an id or a class name) in the true segmentation
    random:n[,seed]  n boxes of random position and size (1/8 to 1/3 of each side), seeded
    all              the whole image
    PATH.png         a PNG of the image's size; non-zero pixels (any channel) are the hole

Every bad spec raises a one-line JaxsegError naming the spec (or the file).

Edited targets: `paint_class` (a class into a region), `swap_class` ("make the car a bus"),
`changed` (where an edit must be synthesised).
"""


import numpy as np

from jaxseg.errors import JaxsegError
from jaxseg.io import read_mask




def class_id(text, class_names):
    """A class given as an id or as one of `class_names` -> its id."""
    text = str(text).strip()
    if text.lstrip("-").isdigit():
        k = int(text)
        if not 0 <= k < len(class_names):
            raise JaxsegError(f"class {k} is out of range: the model has {len(class_names)} "
                              f"classes (0..{len(class_names) - 1})")
        return k
    if text in class_names:
        return list(class_names).index(text)
    raise JaxsegError(f"unknown class {text!r}; use an id or one of {', '.join(class_names)}")


def _ints(spec, body, count):
    parts = body.split(",")
    if len(parts) != count or not all(p.strip().lstrip("-").isdigit() for p in parts):
        raise JaxsegError(f"mask spec {spec!r}: expected {count} comma-separated integers")
    return [int(p) for p in parts]


def rect(spec, height, width):
    x, y, w, h = _ints(spec, spec.partition(":")[2], 4)
    if w <= 0 or h <= 0:
        raise JaxsegError(f"mask spec {spec!r}: width and height must be positive")
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise JaxsegError(f"mask spec {spec!r} reaches outside the {width}x{height} image "
                          f"(x + w <= {width}, y + h <= {height} needed)")
    mask = np.zeros((height, width), bool)
    mask[y:y + h, x:x + w] = True
    return mask


def random_boxes(spec, height, width, seed=0):
    """n boxes, each side uniformly 1/8 to 1/3 of the image's, placed uniformly inside it."""
    body = spec.partition(":")[2]
    values = _ints(spec, body, 2 if "," in body else 1)
    n, seed = (values[0], values[1]) if len(values) == 2 else (values[0], seed)
    if n < 1:
        raise JaxsegError(f"mask spec {spec!r}: need at least one box")
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), bool)
    for _ in range(n):
        h = int(rng.integers(max(1, height // 8), max(2, height // 3) + 1))
        w = int(rng.integers(max(1, width // 8), max(2, width // 3) + 1))
        y = int(rng.integers(0, height - h + 1))
        x = int(rng.integers(0, width - w + 1))
        mask[y:y + h, x:x + w] = True
    return mask


def from_png(path, height, width):
    mask = read_mask(path)
    if mask.shape != (height, width):
        raise JaxsegError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]}, the image "
                          f"{width}x{height}")
    return mask


def from_class(spec, label, class_names):
    if label is None:
        raise JaxsegError(f"mask spec {spec!r} needs the true segmentation (--label)")
    k = class_id(spec.partition(":")[2], class_names)
    mask = np.asarray(label) == k
    if not mask.any():
        raise JaxsegError(f"mask spec {spec!r}: class {class_names[k]!r} is not present in "
                          "the image")
    return mask


def parse(spec, height, width, label=None, class_names=(), seed=0):
    """The hole [height, width] for `spec` (see the module doc). Never empty."""
    spec = str(spec).strip()
    kind = spec.partition(":")[0]
    if kind == "rect":
        mask = rect(spec, height, width)
    elif kind == "random":
        mask = random_boxes(spec, height, width, seed)
    elif kind == "class":
        mask = from_class(spec, label, class_names)
    elif spec == "all":
        mask = np.ones((height, width), bool)
    elif spec.lower().endswith(".png"):
        mask = from_png(spec, height, width)
    else:
        raise JaxsegError(f"unknown mask spec {spec!r}; use rect:x,y,w,h, class:k, "
                          "random:n[,seed], all or a .png file")
    if not mask.any():
        raise JaxsegError(f"mask {spec!r} is empty for this image")
    return mask


# ---------------------------------------------------------------------------------------------
# Edited targets (semantic editing)


def paint_class(labels, region, k):
    """labels with every pixel of `region` (bool, same shape) set to class k."""
    labels = np.asarray(labels)
    return np.where(np.asarray(region, bool), k, labels).astype(labels.dtype)


def swap_class(labels, a, b):
    """labels with class a replaced by class b ("make the car a bus")."""
    labels = np.asarray(labels)
    return np.where(labels == a, b, labels).astype(labels.dtype)


def changed(labels, edited):
    """Bool mask of the pixels an edit changed (where the new content must be synthesised)."""
    return np.asarray(labels) != np.asarray(edited)
