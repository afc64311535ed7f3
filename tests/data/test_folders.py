"""VOC / CamVid / list readers, on a tiny generated VOC tree and on the shared CamVid copy,
and every bad-input case the issue names."""

import os

import numpy as np
import pytest
from PIL import Image

import jaxseg.data as data
from jaxseg.data.folders import CAMVID_CLASSES, VOC_CLASSES
from jaxseg.errors import JaxsegError
from tests.helpers import paths

CAMVID = paths.CAMVID
needs_camvid = pytest.mark.skipif(not CAMVID.is_dir(), reason=f"CamVid copy absent at {CAMVID}")


def voc_palette_png(label, path):
    img = Image.fromarray(label, mode="P")
    img.putpalette(data.VOC_INFO.palette.reshape(-1).tolist() + [224, 224, 192] * 235)
    img.save(path)


def make_voc(root, ids=("2007_000032", "2007_000039"), split="train", size=(30, 40)):
    """A VOC2012-shaped tree: JPEGs, palette PNG labels with 255 borders, a split file."""
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    labels = {}
    for n, image_id in enumerate(ids):
        label = np.zeros(size, np.uint8)
        label[5:20, 8:30] = n + 1
        label[4, 8:30] = 255  # object border, as VOC draws them
        rgb = np.zeros((*size, 3), np.uint8)
        rgb[..., 0] = label * 10
        Image.fromarray(rgb).save(os.path.join(root, "JPEGImages", f"{image_id}.jpg"), quality=95)
        voc_palette_png(label, os.path.join(root, "SegmentationClass", f"{image_id}.png"))
        labels[image_id] = label
    with open(os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")
    return labels


def test_voc_reads_palette_indices_and_borders(tmp_path):
    labels = make_voc(str(tmp_path))
    ds = data.voc(str(tmp_path), "train")
    assert len(ds) == 2 and ds.info.class_names == VOC_CLASSES and ds.info.num_classes == 21
    for i, (image_id, label) in enumerate(labels.items()):
        item = ds[i]
        assert item["image"].dtype == np.uint8 and item["image"].shape == (30, 40, 3)
        assert item["label"].dtype == np.uint8 and item["index"] == i
        np.testing.assert_array_equal(item["label"], label)  # palette indices, 255 kept
    # colours travel with the dataset: class 1 is VOC's dark red
    assert tuple(ds.info.palette[1]) == (128, 0, 0)
    assert tuple(ds.info.colorize(labels["2007_000032"])[4, 10]) == (255, 255, 255)


@needs_camvid
def test_camvid_train_and_val_on_the_shared_copy():
    train, val = data.camvid(str(CAMVID), "train"), data.camvid(str(CAMVID), "val")
    assert (len(train), len(val)) == (367, 101)
    assert train.info.class_names == CAMVID_CLASSES and train.info.num_classes == 11
    item = val[0]
    assert item["image"].shape == (180, 240, 3) and item["label"].shape == (180, 240)
    values = set(np.unique(item["label"]).tolist())
    assert values <= set(range(11)) | {255}
    # the raw file's 11 (unlabelled) became 255, every other value is unchanged
    raw = np.asarray(Image.open(val.pairs[0][1]))
    np.testing.assert_array_equal(item["label"] == 255, raw == 11)
    np.testing.assert_array_equal(item["label"][raw != 11], raw[raw != 11])


@needs_camvid
def test_list_dataset_with_remap_matches_camvid_reader():
    ds = data.get_dataset(f"list:{CAMVID}/{{split}}.txt", "val", class_names=CAMVID_CLASSES,
                          remap={11: 255})
    reference = data.camvid(str(CAMVID), "val")
    assert len(ds) == len(reference)
    np.testing.assert_array_equal(ds[3]["label"], reference[3]["label"])
    np.testing.assert_array_equal(ds[3]["image"], reference[3]["image"])


def test_datasets_pickle_for_worker_processes(tmp_path):
    import pickle

    make_voc(str(tmp_path))
    ds = data.voc(str(tmp_path), skip_bad=True)
    copy = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(copy[1]["label"], ds[1]["label"])
    assert copy.skip_bad and copy.info.class_names == VOC_CLASSES


def test_list_dataset_remap_to_other_classes(tmp_path):
    label = np.array([[0, 7, 7], [9, 255, 0]], np.uint8)
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(label).save(tmp_path / "a_label.png")
    (tmp_path / "list.txt").write_text("# comment\na.png a_label.png\n")
    ds = data.list_dataset(str(tmp_path / "list.txt"), num_classes=3, remap={7: 2, 9: 255})
    np.testing.assert_array_equal(ds[0]["label"], [[0, 2, 2], [255, 255, 0]])
    assert ds.info.name == "list" and ds.info.class_names == ("class_0", "class_1", "class_2")


# ---- bad input: each a clear JaxsegError naming the file and the value ----

def test_missing_root_and_split_file(tmp_path):
    with pytest.raises(JaxsegError, match="VOC root not found: .*nowhere"):
        data.voc(str(tmp_path / "nowhere"))
    make_voc(str(tmp_path))
    with pytest.raises(JaxsegError, match=r"VOC split file for 'val' not found: .*val\.txt"):
        data.voc(str(tmp_path), "val")
    with pytest.raises(JaxsegError, match="CamVid root not found"):
        data.camvid(str(tmp_path / "nowhere"))
    with pytest.raises(JaxsegError, match=r"split file not found: .*test\.txt"):
        data.camvid(str(tmp_path), "test")


def test_empty_split(tmp_path):
    make_voc(str(tmp_path))
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").write_text("\n\n")
    with pytest.raises(JaxsegError, match=r"train\.txt: the split lists no examples"):
        data.voc(str(tmp_path), "train")


def test_malformed_list_line(tmp_path):
    (tmp_path / "list.txt").write_text("a.png\n")
    with pytest.raises(JaxsegError, match=r"list\.txt line 1: expected 'image label'"):
        data.list_dataset(str(tmp_path / "list.txt"), num_classes=2)


def test_truncated_image_names_the_file(tmp_path):
    make_voc(str(tmp_path))
    jpeg = tmp_path / "JPEGImages" / "2007_000039.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    ds = data.voc(str(tmp_path))
    ds[0]  # the intact one still reads
    with pytest.raises(JaxsegError, match=r"cannot read image .*2007_000039\.jpg"):
        ds[1]


def test_unreadable_image_names_the_file(tmp_path):
    make_voc(str(tmp_path))
    (tmp_path / "JPEGImages" / "2007_000032.jpg").write_bytes(b"not an image at all")
    with pytest.raises(JaxsegError, match=r"cannot read image .*2007_000032\.jpg"):
        data.voc(str(tmp_path))[0]


def test_missing_image_file_names_it(tmp_path):
    make_voc(str(tmp_path))
    os.remove(tmp_path / "JPEGImages" / "2007_000032.jpg")
    with pytest.raises(JaxsegError, match=r"image file not found: .*2007_000032\.jpg"):
        data.voc(str(tmp_path))[0]


def test_skip_bad_skips_and_counts(tmp_path):
    make_voc(str(tmp_path), ids=("a", "b", "c"))
    (tmp_path / "JPEGImages" / "b.jpg").write_bytes(b"\xff\xd8\xff garbage")
    ds = data.voc(str(tmp_path), skip_bad=True)
    items = [ds[i] for i in range(3)] + [ds[1]]
    assert items[1]["image"] is None and items[1]["index"] == 1
    assert items[0]["image"] is not None and items[2]["image"] is not None
    assert ds.num_skipped == 1 and list(ds.skipped)[0].endswith("b.jpg")  # counted once


def test_label_value_out_of_range_names_file_and_value(tmp_path):
    make_voc(str(tmp_path))
    label = np.zeros((30, 40), np.uint8)
    label[3, 3] = 37
    voc_palette_png(label, str(tmp_path / "SegmentationClass" / "2007_000039.png"))
    with pytest.raises(JaxsegError, match=r"label .*2007_000039\.png has value 37 outside "
                                          r"\[0, 21\) \(255 = ignore\)"):
        data.voc(str(tmp_path))[1]


def test_camvid_raw_value_12_is_rejected(tmp_path):
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "i.png")
    Image.fromarray(np.full((4, 5), 12, np.uint8)).save(tmp_path / "l.png")
    (tmp_path / "train.txt").write_text("i.png l.png\n")
    with pytest.raises(JaxsegError, match=r"l\.png has value 12 outside \[0, 11\)"):
        data.camvid(str(tmp_path))[0]


def test_image_and_label_sizes_differ(tmp_path):
    make_voc(str(tmp_path))
    voc_palette_png(np.zeros((31, 40), np.uint8),
                    str(tmp_path / "SegmentationClass" / "2007_000032.png"))
    with pytest.raises(JaxsegError, match=r"image .*2007_000032\.jpg is 40x30 but label "
                                          r".*2007_000032\.png is 40x31"):
        data.voc(str(tmp_path))[0]


def test_rgb_label_is_rejected(tmp_path):
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "i.png")
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "l.png")
    (tmp_path / "train.txt").write_text("i.png l.png\n")
    with pytest.raises(JaxsegError, match=r"l\.png has image mode 'RGB'"):
        data.camvid(str(tmp_path))[0]


def test_get_dataset_spec_errors():
    with pytest.raises(JaxsegError, match="unknown dataset 'imagenet'"):
        data.get_dataset("imagenet:/x")
    with pytest.raises(JaxsegError, match="needs a location"):
        data.get_dataset("camvid")
    with pytest.raises(JaxsegError, match="unexpected keyword argument 'colour'"):
        data.get_dataset("synthetic", colour=1)
    with pytest.raises(JaxsegError, match="remap key 300"):
        data.list_dataset(__file__, num_classes=2, remap={300: 1})
