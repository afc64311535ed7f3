"""Read any prepared tensorflow-datasets dataset that has an image and a segmentation mask, via
`tfds.data_source` (random access to array_record files; no TensorFlow needed), and write one.

Optional extra: `pip install 'jaxseg[tfds]'` (tensorflow-datasets). Writing uses PNG bytes made
with Pillow, so it needs no TensorFlow either:

    coco = jaxseg.data.coco_voc("/data/coco", "train", cache_dir="/data/coco_voc21")
    write_tfds({"train": coco}, "coco_voc21", "/data/tfds")           # once, on one machine
    ds = tfds_dataset("coco_voc21", "train", data_dir="/data/tfds",   # anywhere, e.g. on a pod
                      class_names=jaxseg.data.VOC_INFO.class_names)
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from jaxseg.data.base import DatasetInfo, default_palette, remap_table, skipped_item, log
from jaxseg.errors import JaxsegError


def _import_tfds():
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise JaxsegError("tfds datasets need tensorflow-datasets: pip install 'jaxseg[tfds]'"
                          ) from None
    return tfds


def _first_line(err):
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class TfdsDataset:
    """Random-access items {image uint8 [H,W,3], label uint8 [H,W], index} from a tfds source."""

    def __init__(self, source, info, image_key, label_key, table, skip_bad=False, where=""):
        if len(source) == 0:
            raise JaxsegError(f"{where}: the split has no examples")
        self.source, self.info = source, info
        self.image_key, self.label_key, self.table = image_key, label_key, table
        self.skip_bad, self.where, self.skipped = skip_bad, where, {}

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        try:
            return self._load(index)
        except JaxsegError as err:
            if not self.skip_bad:
                raise
            if index not in self.skipped:
                self.skipped[index] = str(err)
                log.warning("skipping example %d: %s", index, err)
            return skipped_item(index)

    def _load(self, index):
        where = f"{self.where} example {index}"
        try:
            record = self.source[index]
        except Exception as err:  # noqa: BLE001 - the reader raises many types; report one line
            raise JaxsegError(f"cannot read {where}: {_first_line(err)}") from None
        image = np.asarray(record[self.image_key])
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or image.dtype != np.uint8:
            raise JaxsegError(f"{where}: image {self.image_key!r} has shape {image.shape} "
                              f"dtype {image.dtype}; expected uint8 [H, W, 1|3|4]")
        image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
        raw = np.asarray(record[self.label_key])
        if raw.ndim == 3 and raw.shape[-1] == 1:
            raw = raw[..., 0]
        if raw.ndim != 2:
            raise JaxsegError(f"{where}: mask {self.label_key!r} has shape {raw.shape}; "
                              "expected [H, W] or [H, W, 1] class ids")
        if raw.size and (raw.min() < 0 or raw.max() > 255):
            bad = raw.max() if raw.max() > 255 else raw.min()
            raise JaxsegError(f"{where}: mask value {int(bad)} is outside "
                              f"[0, {self.info.num_classes}) (255 = ignore)")
        raw = raw.astype(np.uint8)
        label = self.table[raw]
        invalid = label == 256
        if invalid.any():
            raise JaxsegError(f"{where}: mask value {int(raw[invalid][0])} is outside "
                              f"[0, {self.info.num_classes}) (255 = ignore)")
        if image.shape[:2] != label.shape:
            raise JaxsegError(f"{where}: image is {image.shape[1]}x{image.shape[0]} but mask is "
                              f"{label.shape[1]}x{label.shape[0]}")
        return {"image": np.ascontiguousarray(image), "label": label.astype(np.uint8),
                "index": index}

    def __repr__(self):
        return f"TfdsDataset({self.where!r}, {len(self)} examples)"


def tfds_dataset(name, split="train", *, data_dir=None, image_key="image",
                 label_key="segmentation_mask", class_names=None, num_classes=None,
                 palette=None, remap=None, skip_bad=False):
    """A prepared tfds dataset as a jaxseg dataset.

    `image_key` / `label_key` name the features holding the RGB image and the class-id mask;
    `remap` maps raw mask values to class ids or 255 (e.g. oxford_iiit_pet's trimap
    `{1: 1, 2: 0, 3: 255}`). Give `class_names` or `num_classes`.
    """
    tfds = _import_tfds()
    where = f"tfds {name}/{split}" + (f" in {data_dir}" if data_dir else "")
    if class_names is None:
        if num_classes is None:
            raise JaxsegError(f"{where}: give class_names or num_classes")
        class_names = tuple(f"class_{i}" for i in range(num_classes))
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir)
    except Exception as err:  # noqa: BLE001 - tfds raises many types; report one line
        raise JaxsegError(f"cannot open {where}: {_first_line(err)}") from None
    features = source.dataset_info.features
    for key in (image_key, label_key):
        if key not in features:
            raise JaxsegError(f"{where} has no feature {key!r}; it has "
                              f"{', '.join(sorted(features.keys()))}")
    info = DatasetInfo(name, class_names,
                       default_palette(len(class_names)) if palette is None else palette)
    return TfdsDataset(source, info, image_key, label_key,
                       remap_table(info.num_classes, remap), skip_bad, where)


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_tfds(splits, name, data_dir, version="1.0.0"):
    """Write jaxseg datasets as the splits of a tfds array_record dataset `name`
    (`splits`: {"train": dataset, "val": dataset}; features `image`, `segmentation_mask`,
    `index`) that `tfds_dataset` and `tfds.data_source` read. Examples skipped as bad are left
    out. Returns the builder."""
    tfds = _import_tfds()
    if not splits:
        raise JaxsegError(f"write_tfds {name}: no splits given")

    def examples(dataset):
        for i in range(len(dataset)):
            item = dataset[i]
            if item["image"] is None:
                continue
            # PNG bytes: tfds stores encoded images as they are, so no TensorFlow is needed
            yield i, {"image": _png(item["image"]), "segmentation_mask": _png(item["label"]),
                      "index": i}

    class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(version)
        # No source file to locate (tfds would look for checksums beside it, and on
        # Python >= 3.9 trips over a missing `importlib_resources` doing so).
        code_path = None

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "segmentation_mask": tfds.features.Image(shape=(None, None, 1)),
                "index": np.int64,
            }))

        def _split_generators(self, dl_manager):
            return {split: examples(dataset) for split, dataset in splits.items()}

        def _generate_examples(self):  # required by the base class; splits use `examples`
            raise NotImplementedError

    Builder.name = name
    builder = Builder(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return builder
