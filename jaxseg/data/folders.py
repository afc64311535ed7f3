"""Segmentation datasets laid out as folders of files: PASCAL VOC 2012, CamVid, and a generic
list of `image label` pairs with a label remap table."""

from __future__ import annotations

import os

from jaxseg.data.base import DatasetInfo, PairDataset, default_palette, remap_table, require_dir, require_file
from jaxseg.errors import JaxsegError

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
VOC_INFO = DatasetInfo("voc", VOC_CLASSES, default_palette(len(VOC_CLASSES)))

CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence",
                  "car", "pedestrian", "bicyclist")
# The SegNet tutorial's colours for the 11 CamVid classes.
CAMVID_PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)
CAMVID_INFO = DatasetInfo("camvid", CAMVID_CLASSES, CAMVID_PALETTE)
CAMVID_UNLABELLED = 11


def read_list_file(path, root):
    """(image path, label path) pairs from a file of `image label` lines relative to `root`."""
    require_file(path, "split file")
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 2:
                raise JaxsegError(f"{path} line {number}: expected 'image label', got "
                                  f"{line.strip()!r}")
            pairs.append(tuple(os.path.join(root, field) for field in fields))
    return pairs


def voc(root, split="train", skip_bad=False):
    """PASCAL VOC 2012: `JPEGImages/<id>.jpg`, palette PNGs `SegmentationClass/<id>.png` (borders
    255), ids in `ImageSets/Segmentation/<split>.txt`. `root` is the folder holding those three
    (e.g. `VOCdevkit/VOC2012`)."""
    require_dir(root, "VOC root")
    split_file = os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt")
    require_file(split_file, f"VOC split file for {split!r}")
    with open(split_file, encoding="utf-8") as f:
        ids = [line.strip() for line in f if line.strip()]
    pairs = [(os.path.join(root, "JPEGImages", f"{i}.jpg"),
              os.path.join(root, "SegmentationClass", f"{i}.png")) for i in ids]
    return PairDataset(pairs, VOC_INFO, skip_bad=skip_bad, source=split_file)


def camvid(root, split="train", skip_bad=False):
    """CamVid as in the SegNet tutorial: `<split>.txt` lists `image label` pairs relative to
    `root`; label 11 (unlabelled) becomes 255 (ignore)."""
    require_dir(root, "CamVid root")
    split_file = os.path.join(root, f"{split}.txt")
    pairs = read_list_file(split_file, root)
    table = remap_table(len(CAMVID_CLASSES), {CAMVID_UNLABELLED: 255})
    return PairDataset(pairs, CAMVID_INFO, table, skip_bad=skip_bad, source=split_file)


def list_dataset(list_file, root=None, *, num_classes=None, class_names=None, palette=None,
                 remap=None, name=None, skip_bad=False):
    """Any `image label` list file. Paths are relative to `root` (default: the list's folder).

    `remap` maps raw label values to class ids or 255, e.g. `{11: 255}`; raw values in
    [0, num_classes) and 255 keep their meaning. Give `class_names` or `num_classes`.
    """
    if class_names is None:
        if num_classes is None:
            raise JaxsegError(f"list dataset {list_file}: give class_names or num_classes")
        class_names = tuple(f"class_{i}" for i in range(num_classes))
    elif num_classes is not None and num_classes != len(class_names):
        raise JaxsegError(f"list dataset {list_file}: num_classes={num_classes} but "
                          f"{len(class_names)} class names")
    root = os.path.dirname(os.path.abspath(list_file)) if root is None else root
    require_dir(root, "dataset root")
    info = DatasetInfo(name or os.path.splitext(os.path.basename(list_file))[0], class_names,
                       default_palette(len(class_names)) if palette is None else palette)
    table = remap_table(info.num_classes, remap)  # checks the arguments before any file
    return PairDataset(read_list_file(list_file, root), info, table, skip_bad=skip_bad,
                       source=list_file)
