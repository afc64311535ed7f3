"""Per-example transforms, as torchvision's segmentation reference defines them.

Train: resize the short side to a random length in a range (image bilinear, label nearest),
horizontal flip, pad bottom/right to the crop size if smaller (image 0, label 255), random crop.
Eval: resize the short side to a fixed length; optionally pad bottom/right to a fixed size so
that examples of different shapes can be batched.

Transforms take and return dataset items (uint8 image, uint8 label) and add `valid`. Items of
files skipped with `skip_bad` become blank examples that are entirely ignored (`valid` False).
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np
from PIL import Image

from jaxseg.data.base import IGNORE, is_skipped
from jaxseg.errors import JaxsegError


def _pair(value, what):
    if value is None:
        return None
    pair = (int(value), int(value)) if np.isscalar(value) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise JaxsegError(f"{what} must be a positive int or (height, width), got {value!r}")
    return pair


def short_side_size(height, width, short):
    """Output (height, width) when the short side becomes `short`; torchvision truncates the
    long side to an int the same way."""
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def resize(image, label, height, width):
    """Image bilinear (PIL, antialiased when shrinking, as torchvision on PIL images), label
    nearest; both to (height, width)."""
    if image.shape[:2] == (height, width):
        return image, label
    image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    label = np.asarray(Image.fromarray(label).resize((width, height), Image.NEAREST))
    return image, label


def pad_bottom_right(image, label, height, width):
    """Pad to at least (height, width): image with 0, label with 255 (ignored)."""
    pad_h, pad_w = max(height - image.shape[0], 0), max(width - image.shape[1], 0)
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=0)
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=IGNORE)
    return image, label


def blank(index, height, width):
    """A fully ignored example standing in for a skipped file or an eval padding slot."""
    return {"image": np.zeros((height, width, 3), np.uint8),
            "label": np.full((height, width), IGNORE, np.uint8),
            "index": index, "valid": False}


@dataclasses.dataclass(frozen=True)
class TrainTransform(grain.transforms.RandomMap):
    """Random short-side resize in [low, high], flip, pad-if-smaller and random crop.

    `short_side_range=None` keeps the original size (only flip and crop).
    """

    crop_size: tuple[int, int] | int
    short_side_range: tuple[int, int] | None = None
    flip_prob: float = 0.5

    def __post_init__(self):
        object.__setattr__(self, "crop_size", _pair(self.crop_size, "crop_size"))
        if self.short_side_range is not None:
            low, high = (int(v) for v in self.short_side_range)
            if not 1 <= low <= high:
                raise JaxsegError(f"short_side_range must satisfy 1 <= low <= high, got "
                                  f"{self.short_side_range!r}")
            object.__setattr__(self, "short_side_range", (low, high))
        if not 0.0 <= self.flip_prob <= 1.0:
            raise JaxsegError(f"flip_prob must be in [0, 1], got {self.flip_prob}")

    def random_map(self, item, rng):
        crop_h, crop_w = self.crop_size
        if is_skipped(item):
            return blank(item["index"], crop_h, crop_w)
        image, label = item["image"], item["label"]
        if self.short_side_range is not None:
            short = int(rng.integers(self.short_side_range[0], self.short_side_range[1] + 1))
            image, label = resize(image, label, *short_side_size(*label.shape, short))
        if rng.random() < self.flip_prob:
            image, label = image[:, ::-1], label[:, ::-1]
        image, label = pad_bottom_right(image, label, crop_h, crop_w)
        top = int(rng.integers(0, image.shape[0] - crop_h + 1))
        left = int(rng.integers(0, image.shape[1] - crop_w + 1))
        image = np.ascontiguousarray(image[top: top + crop_h, left: left + crop_w])
        label = np.ascontiguousarray(label[top: top + crop_h, left: left + crop_w])
        return {"image": image, "label": label, "index": item["index"], "valid": True}


@dataclasses.dataclass(frozen=True)
class EvalTransform(grain.transforms.Map):
    """Resize the short side to `short_side` (None: keep), then pad bottom/right to `pad_to`
    (None: no padding; batching then needs all examples to share one size)."""

    short_side: int | None = None
    pad_to: tuple[int, int] | int | None = None

    def __post_init__(self):
        if self.short_side is not None and int(self.short_side) < 1:
            raise JaxsegError(f"short_side must be a positive int, got {self.short_side!r}")
        object.__setattr__(self, "pad_to", _pair(self.pad_to, "pad_to"))

    def map(self, item):
        if is_skipped(item):
            if self.pad_to is not None:
                return blank(item["index"], *self.pad_to)
            return item  # the pipeline fills it with a blank of the batch's shape
        image, label = item["image"], item["label"]
        if self.short_side is not None:
            image, label = resize(image, label, *short_side_size(*label.shape, self.short_side))
        if self.pad_to is not None:
            if image.shape[0] > self.pad_to[0] or image.shape[1] > self.pad_to[1]:
                raise JaxsegError(
                    f"example {item['index']} is {image.shape[0]}x{image.shape[1]} (HxW) after "
                    f"resizing, larger than pad_to={self.pad_to}; raise pad_to")
            image, label = pad_bottom_right(image, label, *self.pad_to)
        return {"image": image, "label": label, "index": item["index"], "valid": True}
