"""Pixels per class over a dataset split: what the balanced masked-CE loss of SEA weighs by.

Computed once from the labels (no images are decoded for folder datasets that can skip them:
the whole item is read, which is fast enough for CamVid / VOC; COCO reads its label cache) and
cached as JSON keyed by the dataset spec, split and options, so that an evaluation does not
recount the training set.
"""

import hashlib
import json
import os

import numpy as np

from jaxseg.errors import JaxsegError
from jaxseg.io import write_json
from jaxseg.labels import IGNORE


def count_pixels(dataset, num_classes=None):
    """int64 [C]: labelled pixels of each class over every example of `dataset`."""
    classes = num_classes or dataset.info.num_classes
    counts = np.zeros(classes, np.int64)
    for i in range(len(dataset)):
        label = dataset[i]["label"]
        if label is None:  # an example skipped as bad
            continue
        values = np.asarray(label).reshape(-1)
        counts += np.bincount(values[values != IGNORE], minlength=classes)[:classes]
    return counts


def cache_path(spec, split, kwargs):
    base = os.environ.get("JAXSEG_CACHE", os.path.join(os.path.expanduser("~"), ".cache",
                                                       "jaxseg"))
    key = json.dumps({"spec": str(spec), "split": split, "kwargs": kwargs}, sort_keys=True,
                     default=str)
    return os.path.join(base, "class_counts", hashlib.sha1(key.encode()).hexdigest()[:16] + ".json")


def class_pixel_counts(spec, split="train", **kwargs):
    """Pixels per class of `get_dataset(spec, split, **kwargs)`, from the cache when present."""
    from jaxseg.data import get_dataset

    path = cache_path(spec, split, kwargs)
    if os.path.isfile(path):
        with open(path) as f:
            return np.asarray(json.load(f)["counts"], np.int64)
    dataset = get_dataset(spec, split, **kwargs)
    counts = count_pixels(dataset)
    write_json(path, {"spec": str(spec), "split": split, "counts": counts.tolist()})
    return counts


def read_counts(path, num_classes):
    """Counts from a JSON file: a list of C numbers, or {"counts": [...]}."""
    try:
        with open(path) as f:
            value = json.load(f)
    except FileNotFoundError:
        raise JaxsegError(f"class counts file not found: {path}") from None
    except (OSError, ValueError) as err:
        raise JaxsegError(f"cannot read class counts {path}: {err}") from None
    counts = value.get("counts") if isinstance(value, dict) else value
    try:
        counts = np.asarray(counts, np.float64)
    except (TypeError, ValueError):
        counts = None
    if counts is None or counts.shape != (num_classes,) or not np.all(counts >= 0):
        raise JaxsegError(f"class counts {path}: expected {num_classes} non-negative numbers")
    return counts
