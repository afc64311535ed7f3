"""What every dataset shares: its class metadata, the example format, and checked file reading.

Conventions (one for items, one for batches):

- A dataset item is ``{"image": uint8 [H, W, 3], "label": uint8 [H, W], "index": int}``: exactly
  what is stored on disk, compact for caches and worker pipes. Label values are class ids in
  [0, num_classes) or 255 (ignore).
- A pipeline batch (see ``pipeline.py``) is ``{"image": float32 [B, H, W, 3] in [0, 1],
  "label": int32 [B, H, W], "valid": bool [B], "index": int32 [B]}``, the project convention
  outside the model.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading

import numpy as np

from jaxseg.errors import JaxsegError
from jaxseg.io import read_image, read_label_values  # noqa: F401  (read_image: re-exported)
from jaxseg.labels import IGNORE

log = logging.getLogger("jaxseg.data")


def default_palette(num_classes):
    """PASCAL VOC's bit-interleaved colour map: distinct colours for any number of classes."""
    ids = np.arange(num_classes)
    palette = np.zeros((num_classes, 3), np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (ids >> (3 * shift + channel)) & 1
            palette[:, channel] |= bit << (7 - shift)
    return palette.astype(np.uint8)


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetInfo:
    """Class metadata that travels with a dataset (for losses, metrics and plots)."""

    name: str
    class_names: tuple[str, ...]
    palette: np.ndarray  # uint8 [num_classes, 3]
    ignore_index: int = IGNORE

    def __post_init__(self):
        palette = np.asarray(self.palette, np.uint8)
        if palette.shape != (len(self.class_names), 3):
            raise JaxsegError(f"dataset {self.name!r}: palette shape {palette.shape} does not "
                              f"match {len(self.class_names)} class names")
        if not 1 <= len(self.class_names) <= IGNORE:
            raise JaxsegError(f"dataset {self.name!r}: {len(self.class_names)} classes; "
                              f"1 to {IGNORE} are supported (255 is the ignore label)")
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "palette", palette)

    @property
    def num_classes(self):
        return len(self.class_names)

    def colorize(self, label, ignore_color=(255, 255, 255)):
        """uint8 RGB picture of a label map; ignored pixels get `ignore_color`."""
        table = np.zeros((256, 3), np.uint8)
        table[: self.num_classes] = self.palette
        table[IGNORE] = ignore_color
        return table[np.asarray(label, np.uint8)]


def remap_table(num_classes, remap=None):
    """A 256-entry lookup: raw label value -> class id or 255; 256 marks an invalid raw value.

    `remap` maps raw values to class ids (or to 255 to ignore them); raw values in [0, C) and
    255 that it does not mention keep their meaning.
    """
    table = np.full(256, 256, np.uint16)
    table[:num_classes] = np.arange(num_classes)
    table[IGNORE] = IGNORE
    for raw, target in (remap or {}).items():
        raw, target = int(raw), int(target)
        if not 0 <= raw <= 255:
            raise JaxsegError(f"label remap key {raw} is outside the 8-bit range [0, 255]")
        if not (0 <= target < num_classes or target == IGNORE):
            raise JaxsegError(f"label remap {raw} -> {target}: target is outside "
                              f"[0, {num_classes}) and is not {IGNORE}")
        table[raw] = target
    return table


def read_label(path, table, num_classes):
    """uint8 [H, W] class ids (255 ignore) via the remap `table`; errors name file and value."""
    raw = read_label_values(path)
    if raw.dtype != np.uint8:
        if raw.size and (raw.min() < 0 or raw.max() > 255):
            bad = raw.max() if raw.max() > 255 else raw.min()
            raise JaxsegError(f"label {path} has value {int(bad)} outside [0, {num_classes}) "
                              f"(255 = ignore)")
        raw = raw.astype(np.uint8)
    mapped = table[raw]
    invalid = mapped == 256
    if invalid.any():
        raise JaxsegError(f"label {path} has value {int(raw[invalid][0])} outside "
                          f"[0, {num_classes}) (255 = ignore)")
    return mapped.astype(np.uint8)


def skipped_item(index):
    """Stands in for an example whose files were bad (`skip_bad`): no pixels, just the index."""
    return {"image": None, "label": None, "index": index}


def is_skipped(item):
    return item["image"] is None


def require_file(path, what):
    if not os.path.isfile(path):
        raise JaxsegError(f"{what} not found: {path}")


def require_dir(path, what):
    if not os.path.isdir(path):
        raise JaxsegError(f"{what} not found: {path}")


class PairDataset:
    """Random-access (image file, label file) pairs: the source grain reads for every folder
    format and for the COCO mask cache.

    With ``skip_bad=True`` an example whose files cannot be read or are invalid becomes a
    `skipped_item` (the pipeline turns it into an ignored blank, so batches keep their shape and
    hosts stay in step); ``skipped`` maps the bad files seen by this process to the reason.
    """

    def __init__(self, pairs, info, table=None, skip_bad=False, source=""):
        if not pairs:
            raise JaxsegError(f"{source or info.name}: the split lists no examples")
        self.pairs = list(pairs)
        self.info = info
        self.table = remap_table(info.num_classes) if table is None else table
        self.skip_bad = skip_bad
        self.skipped = {}  # image path -> reason
        self._lock = threading.Lock()

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        image_path, label_path = self.pairs[index]
        try:
            return self.load(index, image_path, label_path)
        except JaxsegError as err:
            if not self.skip_bad:
                raise
            with self._lock:
                if image_path not in self.skipped:
                    self.skipped[image_path] = str(err)
                    log.warning("skipping example %d: %s", index, err)
            return skipped_item(index)

    def load(self, index, image_path, label_path):
        image = read_image(image_path)
        label = read_label(label_path, self.table, self.info.num_classes)
        if image.shape[:2] != label.shape:
            raise JaxsegError(f"image {image_path} is {image.shape[1]}x{image.shape[0]} but "
                              f"label {label_path} is {label.shape[1]}x{label.shape[0]}")
        return {"image": image, "label": label, "index": index}

    def __getstate__(self):  # grain worker processes receive a pickled copy; locks don't pickle
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def num_skipped(self):
        return len(self.skipped)

    def __repr__(self):
        return f"{type(self).__name__}({self.info.name!r}, {len(self)} examples)"


class Subset:
    """The first `count` examples of a dataset (a held-out evaluation subset, `--num-images`)."""

    def __init__(self, dataset, count):
        self.dataset, self.count = dataset, min(int(count), len(dataset))
        self.info = dataset.info

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self.dataset[index]
