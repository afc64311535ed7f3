"""COCO 2017 -> VOC21 converter on a small COCO-format fixture made here."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from jaxseg.cli import coco as coco_cli
from jaxseg.data import coco
from jaxseg.errors import JaxsegError

H, W = 40, 50
AEROPLANE, BICYCLE, PERSON, CAR = 5, 2, 1, 3  # COCO category ids
TRAFFIC_LIGHT = 10  # not a VOC class

# pycocotools 2.0.11 on numpy 2 warns on every decode (jaxseg filters it outside pytest)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def rect(x0, y0, x1, y1):
    """COCO polygon of the pixels [x0, x1) x [y0, y1) (pycocotools fills integer-corner
    rectangles that way)."""
    return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]


def uncompressed_rle(mask):
    """COCO crowd RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": [mask.shape[0], mask.shape[1]], "counts": counts}


def crowd_mask():
    mask = np.zeros((H, W), bool)
    mask[32:38, 5:45] = True
    mask[34:36, 10:12] = False  # a hole, so the RLE has several runs
    return mask


def annotation(ann_id, image_id, category, segmentation, area, crowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": category,
            "segmentation": segmentation, "area": area, "iscrowd": crowd,
            "bbox": [0, 0, 1, 1]}


def make_coco(root, split):
    """Three images: 1 with overlaps, a crowd region and a non-VOC object; 2 with one VOC object
    of area 500 (below the train threshold); 3 without annotations."""
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    os.makedirs(os.path.join(root, f"{split}2017"), exist_ok=True)
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": H, "width": W}
              for i in (3, 1, 2)]  # out of order on purpose: the converter sorts by id
    anns = [
        annotation(10, 1, AEROPLANE, [rect(2, 2, 20, 20)], 324),
        annotation(11, 1, BICYCLE, [rect(15, 10, 35, 30)], 400),  # overlaps the aeroplane
        annotation(12, 1, PERSON, uncompressed_rle(crowd_mask()), 236, crowd=1),
        # one car made of two polygons that overlap each other: not an instance overlap
        annotation(13, 1, CAR, [rect(40, 2, 48, 12), rect(44, 8, 50, 16)], 110),
        annotation(14, 1, TRAFFIC_LIGHT, [rect(0, 0, 10, 10)], 100),  # ignored category
        annotation(20, 2, AEROPLANE, [rect(0, 0, 20, 25)], 500),
    ]
    for image in images:
        pixels = np.full((H, W, 3), image["id"] * 40, np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, f"{split}2017", image["file_name"]))
    path = os.path.join(root, "annotations", f"instances_{split}2017.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns,
                   "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3, 5, 10)]}, f)
    return path


def expected_image1():
    voc = coco.VOC_CATEGORIES.index
    label = np.zeros((H, W), np.uint8)
    label[2:20, 2:20] = voc(AEROPLANE)
    label[10:30, 15:35] = voc(BICYCLE)
    label[10:20, 15:20] = 255  # aeroplane and bicycle overlap
    label[crowd_mask()] = voc(PERSON)  # crowd regions are painted with their class
    label[2:12, 40:48] = voc(CAR)
    label[8:16, 44:50] = voc(CAR)  # the car's own two polygons do not make 255
    return label


def test_voc_category_order():
    assert coco.VOC_CATEGORIES == (0, 5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64,
                                   20, 63, 7, 72)
    assert coco.VOC_CATEGORIES.index(AEROPLANE) == 1 and coco.VOC_CATEGORIES.index(PERSON) == 15


def test_train_conversion_exact_masks_and_area_filter(tmp_path):
    make_coco(tmp_path / "coco", "train")
    ds = coco.coco_voc(str(tmp_path / "coco"), "train", cache_dir=str(tmp_path / "cache"),
                       log=lambda _: None)
    # image 2 (area 500 <= 1000) and image 3 (no annotations) are dropped from train
    assert len(ds) == 1 and ds.dropped == 2
    item = ds[0]
    assert item["image"].shape == (H, W, 3) and int(item["image"][0, 0, 0]) == 40
    np.testing.assert_array_equal(item["label"], expected_image1())


def test_val_keeps_every_image_in_id_order(tmp_path):
    make_coco(tmp_path / "coco", "val")
    ds = coco.coco_voc(str(tmp_path / "coco"), "val", cache_dir=str(tmp_path / "cache"),
                       log=lambda _: None)
    assert len(ds) == 3 and ds.dropped == 0
    ids = [int(ds[i]["image"][0, 0, 0]) // 40 for i in range(3)]
    assert ids == [1, 2, 3]
    np.testing.assert_array_equal(ds[0]["label"], expected_image1())
    small = np.zeros((H, W), np.uint8)
    small[0:25, 0:20] = 1
    np.testing.assert_array_equal(ds[1]["label"], small)
    np.testing.assert_array_equal(ds[2]["label"], np.zeros((H, W), np.uint8))


def test_area_threshold_is_strict(tmp_path):
    anns = [(1, {"area": 600}), (2, {"area": 400})]
    assert not coco.keep_image(anns, "train")  # exactly 1000 is dropped, as torchvision
    assert coco.keep_image([(1, {"area": 1000.5})], "train")
    assert not coco.keep_image([], "train") and coco.keep_image([], "val")


def test_cache_is_reused_and_rebuilt_when_annotations_change(tmp_path):
    ann_file = make_coco(tmp_path / "coco", "train")
    messages = []
    kwargs = dict(cache_dir=str(tmp_path / "cache"), log=messages.append)
    coco.coco_voc(str(tmp_path / "coco"), "train", **kwargs)
    assert len(messages) == 1
    coco.coco_voc(str(tmp_path / "coco"), "train", **kwargs)
    assert len(messages) == 1  # second time: read from the cache, no conversion
    with open(ann_file) as f:
        data = json.load(f)
    data["annotations"][5]["area"] = 2000  # image 2 now passes the area filter
    with open(ann_file, "w") as f:
        json.dump(data, f)
    ds = coco.coco_voc(str(tmp_path / "coco"), "train", **kwargs)
    assert "stale" in messages[1] and len(ds) == 2


def test_parallel_cache_build_matches_serial(tmp_path):
    ann_file = make_coco(tmp_path / "coco", "val")
    serial = coco.build_cache(ann_file, "val", str(tmp_path / "a"), workers=1, log=lambda _: None)
    parallel = coco.build_cache(ann_file, "val", str(tmp_path / "b"), workers=2,
                                log=lambda _: None)
    assert serial["images"] == parallel["images"]
    for _, label in serial["images"]:
        a = np.asarray(Image.open(tmp_path / "a" / label))
        b = np.asarray(Image.open(tmp_path / "b" / label))
        np.testing.assert_array_equal(a, b)


def test_compressed_rle_decodes_like_uncompressed():
    from pycocotools import mask as coco_mask

    mask = crowd_mask()
    compressed = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    compressed["counts"] = compressed["counts"].decode()
    np.testing.assert_array_equal(coco.decode_segmentation(compressed, H, W), mask)
    np.testing.assert_array_equal(coco.decode_segmentation(uncompressed_rle(mask), H, W), mask)


def test_json_without_annotations_names_the_file(tmp_path):
    ann_file = make_coco(tmp_path / "coco", "train")
    with open(ann_file, "w") as f:
        json.dump({"images": []}, f)
    with pytest.raises(JaxsegError, match=r"instances_train2017\.json has no 'annotations'"):
        coco.coco_voc(str(tmp_path / "coco"), "train", cache_dir=str(tmp_path / "c"))


def test_unparsable_json_and_missing_paths(tmp_path):
    ann_file = make_coco(tmp_path / "coco", "val")
    with open(ann_file, "w") as f:
        f.write("{not json")
    with pytest.raises(JaxsegError, match="cannot parse COCO JSON .*instances_val2017"):
        coco.coco_voc(str(tmp_path / "coco"), "val", cache_dir=str(tmp_path / "c"))
    with pytest.raises(JaxsegError, match="COCO root not found"):
        coco.coco_voc(str(tmp_path / "nowhere"), "val")
    with pytest.raises(JaxsegError, match="split must be 'train' or 'val'"):
        coco.coco_voc(str(tmp_path / "coco"), "test")


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        coco_cli.main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: COCO root not found") and "\n" not in err


def test_cli_builds_the_cache(tmp_path, capsys):
    make_coco(tmp_path / "coco", "val")
    coco_cli.main([str(tmp_path / "coco"), "--split", "val", "--cache", str(tmp_path / "c"),
               "--workers", "1"])
    assert "3 images kept, 0 dropped" in capsys.readouterr().out
    assert (tmp_path / "c" / "val" / "index.json").is_file()
