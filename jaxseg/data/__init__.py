"""Datasets and the input pipeline.

    ds = jaxseg.data.get_dataset("camvid:/data/camvid", "train")
    loader = jaxseg.data.train_loader(ds, batch_size=16, crop_size=(176, 240),
                                      short_side_range=(90, 360), seed=0)
    for batch in loader:            # {"image" f32 [B,H,W,3] in [0,1], "label" i32 [B,H,W], ...}
        ...
    state = loader.get_state()      # JSON-able; loader.set_state(state) resumes there

A dataset item is {"image": uint8 [H,W,3], "label": uint8 [H,W] (255 = ignore), "index": int};
every dataset has `.info` (class names, palette) and `len()` / `[i]`. See docs/data.md.
"""

from jaxseg.data.class_counts import class_pixel_counts, count_pixels, read_counts
from jaxseg.data.base import IGNORE, DatasetInfo, PairDataset, Subset, default_palette
from jaxseg.data.coco import VOC_CATEGORIES, coco_voc
from jaxseg.data.folders import CAMVID_INFO, VOC_INFO, camvid, list_dataset, voc
from jaxseg.data.pipeline import Loader, Shard, eval_loader, to_global, train_loader
from jaxseg.data.synthetic import SyntheticScenes
from jaxseg.data.tfds import tfds_dataset, write_tfds
from jaxseg.errors import JaxsegError

__all__ = [
    "IGNORE", "DatasetInfo", "PairDataset", "Subset", "default_palette", "VOC_CATEGORIES", "coco_voc",
    "CAMVID_INFO", "VOC_INFO", "camvid", "list_dataset", "voc", "Loader", "Shard", "eval_loader",
    "to_global", "train_loader", "SyntheticScenes", "tfds_dataset", "write_tfds", "get_dataset",
    "DATASETS", "class_pixel_counts", "count_pixels", "read_counts",
]


def _list(path, split, **kwargs):
    return list_dataset(path.format(split=split), **kwargs)


# name -> builder(location, split, **kwargs); the location is what follows "name:" in a spec.
DATASETS = {
    "synthetic": lambda location, split, **kw: SyntheticScenes(split, **kw),
    "camvid": lambda location, split, **kw: camvid(location, split, **kw),
    "voc": lambda location, split, **kw: voc(location, split, **kw),
    "coco": lambda location, split, **kw: coco_voc(location, split, **kw),
    "list": _list,
    "tfds": lambda location, split, **kw: tfds_dataset(location, split, **kw),
}


def get_dataset(spec, split="train", **kwargs):
    """A dataset from a spec string `name` or `name:location`:

    - `synthetic` (kwargs: size, num_examples, seed, min_objects, max_objects)
    - `camvid:<root>`, `voc:<VOC2012 root>`, `coco:<COCO root>` (kwargs: cache_dir, workers)
    - `list:<list file>`, where `{split}` in the path is replaced (kwargs: num_classes or
      class_names, remap, root, palette)
    - `tfds:<name>` (kwargs: data_dir, image_key, label_key, class_names/num_classes, remap)

    Folder formats take `skip_bad=True` to replace unreadable examples by ignored blanks.
    """
    name, _, location = str(spec).partition(":")
    if name not in DATASETS:
        raise JaxsegError(f"unknown dataset {name!r} in spec {spec!r}; choose one of "
                          f"{', '.join(DATASETS)}")
    if name != "synthetic" and not location:
        raise JaxsegError(f"dataset spec {spec!r} needs a location: '{name}:<path or name>'")
    if name == "synthetic" and location:
        raise JaxsegError(f"dataset spec {spec!r}: synthetic takes no location")
    try:
        return DATASETS[name](location, split, **kwargs)
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            raise JaxsegError(f"dataset {name!r}: {err}") from None
        raise
