"""COCO 2017 -> the 21 PASCAL VOC classes, with torchvision's segmentation-reference semantics,
and a cache of the converted label maps (one pass, then epochs read small PNGs).

Semantics (torchvision `references/segmentation/coco_utils.py`):
- annotations whose category is in `VOC_CATEGORIES` are kept, their class is the position in
  that list; all other annotations are ignored (their pixels are background);
- crowd annotations count like any other (their RLE is decoded and painted with their class);
- each annotation's polygons / RLE are decoded with pycocotools and OR-ed into one mask;
- a pixel covered by more than one kept annotation becomes 255 (ignore);
- train keeps an image only if its kept annotations exist and their `area` fields sum to more
  than 1000; val keeps every image (images without annotations are all background).

Layout: `<root>/annotations/instances_<split>2017.json` and `<root>/<split>2017/*.jpg`.
Prebuild the cache (optional; it is built on first use otherwise):
    python -m jaxseg.cli.coco /data/coco --split train --cache /data/coco_voc21 --workers 8
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import warnings

import numpy as np
from pycocotools import mask as coco_mask

from jaxseg.data.base import IGNORE, PairDataset, require_dir, require_file
from jaxseg.data.folders import VOC_INFO
from jaxseg.errors import JaxsegError
from jaxseg.io import save_png, write_json

# COCO category ids of background + the 20 VOC classes, in VOC order.
VOC_CATEGORIES = (0, 5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)
MIN_TRAIN_AREA = 1000
CACHE_VERSION = 1



def load_coco_json(path):
    """The parsed instances JSON, checked for the parts the converter reads."""
    require_file(path, "COCO annotation file")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise JaxsegError(f"cannot parse COCO JSON {path}: {err}") from None
    if not isinstance(data, dict):
        raise JaxsegError(f"COCO JSON {path} is not an object")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise JaxsegError(f"COCO JSON {path} has no {key!r} list")
    for image in data["images"]:
        if not all(k in image for k in ("id", "file_name", "height", "width")):
            raise JaxsegError(f"COCO JSON {path}: image entry {image!r:.80} lacks id, "
                              "file_name, height or width")
    return data


def voc_annotations(data):
    """image id -> [(voc class, annotation)] for annotations of the 20 VOC categories."""
    class_of = {cat: cls for cls, cat in enumerate(VOC_CATEGORIES)}
    per_image = {}
    for ann in data["annotations"]:
        cls = class_of.get(ann.get("category_id"))
        if cls is not None:
            per_image.setdefault(ann["image_id"], []).append((cls, ann))
    return per_image


def keep_image(anns, split):
    """torchvision's train filter: some VOC annotation, total `area` above 1000 pixels."""
    if split != "train":
        return True
    return bool(anns) and sum(ann["area"] for _, ann in anns) > MIN_TRAIN_AREA


def decode_segmentation(segmentation, height, width):
    """bool [H, W] mask of one annotation: polygons, uncompressed RLE (crowd) or compressed RLE."""
    if not segmentation:
        return np.zeros((height, width), bool)
    with warnings.catch_warnings():
        # pycocotools 2.0.11 (the latest) passes copy=False to numpy 2's __array__ on every
        # decode: its deprecation, harmless here, to be fixed upstream.
        warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a "
                                "copy", category=DeprecationWarning)
        if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"),
                                                         (str, bytes)):
            mask = coco_mask.decode(segmentation)  # already compressed RLE
        else:
            mask = coco_mask.decode(coco_mask.frPyObjects(segmentation, height, width))
    if mask.ndim == 3:  # one layer per polygon of the annotation
        mask = mask.any(axis=2)
    return mask.astype(bool)


def label_map(anns, height, width):
    """uint8 [H, W] VOC class ids; pixels of more than one annotation are 255."""
    label = np.zeros((height, width), np.uint8)
    coverage = np.zeros((height, width), np.uint16)
    for cls, ann in anns:
        mask = decode_segmentation(ann["segmentation"], height, width)
        if mask.shape != (height, width):
            raise JaxsegError(f"annotation {ann.get('id')} of image {ann['image_id']} decodes "
                              f"to {mask.shape}, but the image is {height}x{width}")
        coverage += mask
        np.maximum(label, np.where(mask, np.uint8(cls), np.uint8(0)), out=label)
    label[coverage > 1] = IGNORE
    return label


def _write_png_atomic(array, path):
    save_png(array, path)


def _convert_one(job):
    label_path, anns, height, width = job
    _write_png_atomic(label_map(anns, height, width), label_path)


def _fingerprint(ann_file):
    stat = os.stat(ann_file)
    return {"version": CACHE_VERSION, "annotations": os.path.abspath(ann_file),
            "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def default_cache_dir(ann_file):
    base = os.environ.get("JAXSEG_CACHE", os.path.join(os.path.expanduser("~"), ".cache",
                                                       "jaxseg"))
    digest = hashlib.sha1(os.path.abspath(ann_file).encode()).hexdigest()[:12]
    return os.path.join(base, "coco_voc21", digest)


def build_cache(ann_file, split, cache_dir, workers=1, log=print):
    """Convert every kept image's annotations to a label PNG under `cache_dir`; write
    `index.json` last (its presence marks a complete cache). Returns the index."""
    data = load_coco_json(ann_file)
    per_image = voc_annotations(data)
    os.makedirs(cache_dir, exist_ok=True)
    images = sorted(data["images"], key=lambda image: image["id"])  # torchvision's order
    entries, jobs = [], []
    for image in images:
        anns = per_image.get(image["id"], [])
        if not keep_image(anns, split):
            continue
        label_name = f"{image['id']:012d}.png"
        entries.append([image["file_name"], label_name])
        jobs.append((os.path.join(cache_dir, label_name), anns, int(image["height"]),
                     int(image["width"])))
    log(f"coco {split}: converting {len(jobs)} of {len(images)} images into {cache_dir}")
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_convert_one, jobs, chunksize=16):
                pass
    else:
        for job in jobs:
            _convert_one(job)
    index = {"fingerprint": _fingerprint(ann_file), "split": split, "images": entries,
             "num_images_in_json": len(images), "dropped": len(images) - len(entries)}
    write_json(os.path.join(cache_dir, "index.json"), index)
    return index


def load_or_build_cache(ann_file, split, cache_dir, workers=1, log=print):
    index_path = os.path.join(cache_dir, "index.json")
    if os.path.isfile(index_path):
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        if index.get("fingerprint") == _fingerprint(ann_file) and index.get("split") == split:
            return index
        log(f"coco {split}: cache {cache_dir} is stale (annotations changed); rebuilding")
    return build_cache(ann_file, split, cache_dir, workers, log)


def coco_voc(root, split="train", *, cache_dir=None, ann_file=None, image_dir=None,
             workers=1, skip_bad=False, log=print):
    """COCO 2017 restricted to VOC's 21 classes, as a dataset of (image, cached label) pairs."""
    if split not in ("train", "val"):
        raise JaxsegError(f"COCO split must be 'train' or 'val', got {split!r}")
    require_dir(root, "COCO root")
    ann_file = ann_file or os.path.join(root, "annotations", f"instances_{split}2017.json")
    image_dir = image_dir or os.path.join(root, f"{split}2017")
    require_file(ann_file, "COCO annotation file")
    require_dir(image_dir, "COCO image folder")
    cache_dir = os.path.join(cache_dir or default_cache_dir(ann_file), split)
    index = load_or_build_cache(ann_file, split, cache_dir, workers, log)
    pairs = [(os.path.join(image_dir, image), os.path.join(cache_dir, label))
             for image, label in index["images"]]
    dataset = PairDataset(pairs, VOC_INFO, skip_bad=skip_bad, source=ann_file)
    dataset.dropped = index["dropped"]
    return dataset
