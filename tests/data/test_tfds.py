"""tensorflow-datasets reader (and writer) on a tiny array_record dataset made here, no network,
no TensorFlow."""

import logging
import sys

import numpy as np
import pytest

from jaxseg.data import Shard, SyntheticScenes, get_dataset, train_loader
from jaxseg.errors import JaxsegError

tfds = pytest.importorskip("tensorflow_datasets", reason="the optional tfds extra is absent")
from jaxseg.data.tfds import TfdsDataset, tfds_dataset, write_tfds  # noqa: E402

logging.getLogger("absl").setLevel(logging.ERROR)  # tfds progress chatter


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    splits = {"train": SyntheticScenes("train", (24, 32), num_examples=6),
              "val": SyntheticScenes("val", (24, 32), num_examples=3)}
    write_tfds(splits, "synthetic_seg", data_dir)
    return data_dir, splits


def test_reads_what_was_written_without_tensorflow(prepared):
    data_dir, splits = prepared
    names = splits["val"].info.class_names
    ds = tfds_dataset("synthetic_seg", "val", data_dir=data_dir, class_names=names)
    assert len(ds) == 3 and ds.info.class_names == names
    for i in range(3):
        original = splits["val"][int(ds.source[i]["index"])]  # array_record order is hashed
        np.testing.assert_array_equal(ds[i]["image"], original["image"])
        np.testing.assert_array_equal(ds[i]["label"], original["label"])
        assert ds[i]["index"] == i
    assert "tensorflow" not in sys.modules


def test_spec_remap_and_pipeline(prepared):
    data_dir, _ = prepared
    ds = get_dataset("tfds:synthetic_seg", "train", data_dir=data_dir, num_classes=7,
                     remap={6: 255})  # e.g. ignore class 6
    assert all(6 not in np.unique(ds[i]["label"]) for i in range(len(ds)))
    batch = next(train_loader(ds, 2, 16, shard=Shard(0, 1)))
    assert batch["image"].shape == (2, 16, 16, 3)


def test_errors_are_one_line(prepared):
    data_dir, _ = prepared
    with pytest.raises(JaxsegError, match="cannot open tfds no_such_set/train") as err:
        tfds_dataset("no_such_set", "train", data_dir=data_dir, num_classes=2)
    assert "\n" not in str(err.value)
    with pytest.raises(JaxsegError, match="Unknown split 'test'"):
        tfds_dataset("synthetic_seg", "test", data_dir=data_dir, num_classes=7)
    with pytest.raises(JaxsegError, match="has no feature 'mask'; it has image, index, "
                                          "segmentation_mask"):
        tfds_dataset("synthetic_seg", "val", data_dir=data_dir, num_classes=7, label_key="mask")
    with pytest.raises(JaxsegError, match="give class_names or num_classes"):
        tfds_dataset("synthetic_seg", "val", data_dir=data_dir)


def test_bad_records_name_the_example():
    info = SyntheticScenes("val").info
    from jaxseg.data.base import remap_table

    good = {"image": np.zeros((4, 5, 3), np.uint8), "segmentation_mask": np.zeros((4, 5, 1))}
    records = [good, {**good, "segmentation_mask": np.full((4, 5, 1), 9)},
               {**good, "segmentation_mask": np.zeros((4, 6, 1))}]
    ds = TfdsDataset(records, info, "image", "segmentation_mask", remap_table(7), where="fake")
    assert ds[0]["label"].shape == (4, 5)
    with pytest.raises(JaxsegError, match="fake example 1: mask value 9 is outside"):
        ds[1]
    with pytest.raises(JaxsegError, match="fake example 2: image is 5x4 but mask is 6x4"):
        ds[2]
    lenient = TfdsDataset(records, info, "image", "segmentation_mask", remap_table(7),
                          skip_bad=True, where="fake")
    assert lenient[1]["image"] is None and len(lenient.skipped) == 1


def test_missing_extra_gives_a_clear_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now fails
    with pytest.raises(JaxsegError, match=r"pip install 'jaxseg\[tfds\]'"):
        tfds_dataset("anything", num_classes=2)


def test_the_data_pages_coco_to_tfds_block_runs_as_written(tmp_path):
    """docs/data.md's "Preparing COCO for tfds" block, on the doc walk's COCO stand-in with
    /data moved into the test's folder, then read back as the page says."""
    import re

    from jaxseg import data
    from tests.helpers import doc_world, paths

    page = (paths.REPO / "docs" / "data.md").read_text()
    section = page[page.index("**Preparing COCO for tfds**"):]
    block = re.search(r"^```text\n(.*?)^```", section, re.M | re.S)[1]
    assert "data.write_tfds(" in block and "data.coco_voc(" in block
    doc_world.coco(tmp_path / "data" / "coco")
    exec(block.replace('"/data/', f'"{tmp_path}/data/'), {"data": data})
    val = get_dataset("tfds:coco_voc21", "val", data_dir=str(tmp_path / "data" / "tfds"),
                      class_names=data.VOC_INFO.class_names)
    assert len(val) == 2 and val.info.num_classes == 21
    labels = {int(v) for i in range(len(val)) for v in np.unique(val[i]["label"])}
    assert {7, 15} <= labels  # the stand-in's car and person (VOC ids)
