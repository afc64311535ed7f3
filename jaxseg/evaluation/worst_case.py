"""Per-image results and the worst case over attacks, recomputed from stored counts.

Evaluation keeps, for every image and attack, the per-class true positives, false positives and
false negatives (`PerImage`). From them, without attacking again:

* the split's metrics for one attack (`summarize_counts`: pooled pixel accuracy, mean class
  accuracy, per-class IoU and mIoU, and the image-averaged accuracy);
* the worst case over any set of attacks (`worst_case`): accuracy per image is the minimum over
  the attacks (the image-averaged accuracy is what Croce, Singh and Hein report; the pixel-pooled
  accuracy of the per-image worst attack is Table 1's measure); mIoU is not separable over
  images, so an assignment of one attack to each image is searched greedily: start from the
  attack with the lowest dataset mIoU, then, in shuffled rounds over the images, switch an
  image to the attack that lowers the dataset mIoU most, until a round changes nothing.
"""

import os
import zipfile
from typing import NamedTuple

import numpy as np

from jaxseg.errors import JaxsegError


class PerImage(NamedTuple):
    """Counts of one attack over a split: index [M] (dataset indices), tp / fp / fn [M, C]."""

    index: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @property
    def pixels(self):
        """Valid pixels per image [M]."""
        return (self.tp + self.fn).sum(axis=1)

    @property
    def accuracy(self):
        """Pixel accuracy per image [M] (NaN for an image without valid pixels)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.tp.sum(axis=1) / self.pixels

    def save(self, path, **meta):
        """npz with the counts and `meta` (eps, steps, loss ...), written atomically. The same
        results give the same bytes (np.savez would stamp the time into the zip)."""
        from jaxseg.io import atomic_path

        arrays = dict(index=self.index, tp=self.tp, fp=self.fp, fn=self.fn,
                      **{f"meta_{k}": np.asarray(v) for k, v in meta.items()})
        with atomic_path(path, ".npz") as tmp:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
                for name, value in arrays.items():
                    entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                    with archive.open(entry, "w", force_zip64=True) as f:
                        np.lib.format.write_array(f, np.asarray(value), allow_pickle=False)

    @staticmethod
    def load(path):
        """(PerImage, meta dict) from a file written by `save`."""
        if not os.path.isfile(path):
            raise JaxsegError(f"per-image results not found: {path}")
        try:
            with np.load(path) as stored:
                counts = PerImage(*(stored[k] for k in ("index", "tp", "fp", "fn")))
                meta = {k[5:]: stored[k].item() for k in stored.files if k.startswith("meta_")}
        except (OSError, ValueError, KeyError) as err:
            raise JaxsegError(f"cannot read per-image results {path}: {err}") from None
        return counts, meta


def _iou(tp, fp, fn):
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def miou_of(tp, fp, fn):
    """mIoU over classes with a non-empty union, from per-class totals [C]."""
    iou = _iou(tp, fp, fn)
    return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")


def summarize_counts(tp, fp, fn, class_names=None):
    """Split metrics from per-image counts [M, C] (the keys of `metrics.summarize`, plus
    `image_acc`: the mean over images of their pixel accuracy)."""
    tp, fp, fn = (np.asarray(a, np.float64) for a in (tp, fp, fn))
    total_tp, total_fp, total_fn = tp.sum(0), fp.sum(0), fn.sum(0)
    iou = _iou(total_tp, total_fp, total_fn)
    per_label = total_tp + total_fn
    pixels = per_label.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        class_acc = np.where(per_label > 0, total_tp / per_label, np.nan)
        image_acc = tp.sum(1) / (tp + fn).sum(1)
    names = class_names or [str(c) for c in range(len(iou))]
    return {
        "pixel_acc": float(total_tp.sum() / pixels) if pixels else float("nan"),
        "mean_class_acc": float(np.nanmean(class_acc)) if np.any(per_label > 0) else float("nan"),
        "miou": miou_of(total_tp, total_fp, total_fn),
        "iou": {name: float(value) for name, value in zip(names, iou)},
        "pixels": int(pixels),
        "image_acc": float(np.nanmean(image_acc)) if np.any(~np.isnan(image_acc)) else float("nan"),
    }


def _aligned(results):
    """The attacks' counts stacked [A, M, C] over the same images in the same order."""
    names = list(results)
    first = results[names[0]]
    order = np.argsort(first.index)
    stacks = {k: [] for k in ("tp", "fp", "fn")}
    for name in names:
        counts = results[name]
        if sorted(counts.index.tolist()) != sorted(first.index.tolist()):
            raise JaxsegError(f"attack {name!r} was run on other images than {names[0]!r}; the "
                              "worst case needs the same images")
        position = np.argsort(counts.index)
        for k in stacks:
            stacks[k].append(np.asarray(getattr(counts, k), np.float64)[position])
    return names, first.index[order], {k: np.stack(v) for k, v in stacks.items()}


def worst_case(results, class_names=None, seed=0):
    """The worst case over `results` ({attack name: PerImage}, same images).

    Returns a summary (the keys of `summarize_counts`; `pixel_acc` pooled over the images with
    each image's lowest-accuracy attack, `image_acc` the mean of the per-image minima, `miou`
    from the greedy assignment) plus `attack_for_accuracy` and `attack_for_miou`: the attack
    chosen per image (in the order of `index`), and `index`.
    """
    if not results:
        raise JaxsegError("the worst case needs at least one attack")
    names, index, stacks = _aligned(results)
    tp, fp, fn = stacks["tp"], stacks["fp"], stacks["fn"]
    pixels = (tp + fn).sum(axis=2)  # [A, M]
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(pixels > 0, tp.sum(axis=2) / pixels, np.inf)
    for_accuracy = np.argmin(accuracy, axis=0)  # first attack on ties
    images = np.arange(tp.shape[1])
    pooled = summarize_counts(tp[for_accuracy, images], fp[for_accuracy, images],
                              fn[for_accuracy, images], class_names)
    for_miou = greedy_miou_assignment(tp, fp, fn, seed)
    summary = summarize_counts(tp[for_miou, images], fp[for_miou, images],
                               fn[for_miou, images], class_names)
    summary["pixel_acc"] = pooled["pixel_acc"]
    summary["image_acc"] = pooled["image_acc"]
    summary["mean_class_acc"] = pooled["mean_class_acc"]
    summary["attack_for_accuracy"] = [names[a] for a in for_accuracy]
    summary["attack_for_miou"] = [names[a] for a in for_miou]
    summary["index"] = [int(i) for i in index]
    return summary


def greedy_miou_assignment(tp, fp, fn, seed=0):
    """An attack per image [M] that makes the dataset mIoU low (see the module doc); counts
    are [A, M, C]."""
    totals = tp.sum(axis=1), fp.sum(axis=1), fn.sum(axis=1)  # each [A, C]
    start = int(np.argmin([miou_of(totals[0][a], totals[1][a], totals[2][a])
                           for a in range(tp.shape[0])]))
    choice = np.full(tp.shape[1], start)
    current = [t[start].copy() for t in totals]
    best = miou_of(*current)
    rng = np.random.default_rng(seed)
    changed = tp.shape[0] > 1
    while changed:
        changed = False
        for image in rng.permutation(tp.shape[1]):
            old = choice[image]
            base = [current[k] - counts[old, image] for k, counts in enumerate((tp, fp, fn))]
            candidates = [(miou_of(*(base[k] + counts[a, image]
                                     for k, counts in enumerate((tp, fp, fn)))), a)
                          for a in range(tp.shape[0]) if a != old]
            value, attack = min(candidates)
            if value < best - 1e-12:
                choice[image], best, changed = attack, value, True
                current = [base[k] + counts[attack, image]
                           for k, counts in enumerate((tp, fp, fn))]
    return choice
