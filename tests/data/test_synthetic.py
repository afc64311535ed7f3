"""Built-in synthetic scenes: deterministic, exact masks, classes that need shape and appearance."""

import colorsys
import time

import numpy as np
import pytest

from jaxseg.data import SyntheticScenes, get_dataset
from jaxseg.data.synthetic import CLASS_NAMES
from jaxseg.errors import JaxsegError

DISC, RING, BOX, TILE, TRIANGLE, STAR = range(1, 7)


@pytest.fixture(scope="module")
def scenes():
    ds = SyntheticScenes("train", size=(96, 96), num_examples=120, seed=3)
    return [ds.scene(i) for i in range(len(ds))]


def test_deterministic_per_seed_split_and_index():
    a = SyntheticScenes("train", size=(48, 64), seed=7)
    b = SyntheticScenes("train", size=(48, 64), seed=7)
    for i in (0, 5, 4000):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
        np.testing.assert_array_equal(a[i]["label"], b[i]["label"])
    assert not np.array_equal(a[0]["image"], a[1]["image"])
    assert not np.array_equal(a[0]["image"], SyntheticScenes("train", (48, 64), seed=8)[0]["image"])
    assert not np.array_equal(a[0]["image"], SyntheticScenes("val", (48, 64), seed=7)[0]["image"])


def test_any_size_and_item_format():
    for size in ((17, 200), (64, 64), (300, 90)):
        item = SyntheticScenes("val", size=size)[2]
        assert item["image"].shape == (*size, 3) and item["image"].dtype == np.uint8
        assert item["label"].shape == size and item["label"].dtype == np.uint8
        assert item["label"].max() < len(CLASS_NAMES) and item["index"] == 2
    ds = get_dataset("synthetic", "val", size=32, num_examples=10)
    assert len(ds) == 10 and ds.info.num_classes == 7 and ds.info.palette.shape == (7, 3)


def test_masks_are_exact_and_objects_occlude(scenes):
    occluded = 0
    for scene in scenes:
        label, instances = scene["label"], scene["instances"]
        np.testing.assert_array_equal(label == 0, instances == 0)
        for k in np.unique(instances[instances > 0]):
            classes = np.unique(label[instances == k])
            assert len(classes) == 1  # every visible object pixel carries its object's class
        visible = len(np.unique(instances[instances > 0]))
        drawn = int(instances.max())
        occluded += visible < drawn  # some object hidden entirely, or cut by the frame
    assert all(len(np.unique(s["label"])) >= 2 for s in scenes[:20])
    assert occluded >= 1


def _mean_hue(pixels):
    hues = np.array([colorsys.rgb_to_hsv(*p)[0] for p in pixels[:: max(1, len(pixels) // 400)]])
    return np.angle(np.mean(np.exp(2j * np.pi * hues))) / (2 * np.pi) % 1.0  # circular mean


def test_classes_pair_up_on_colour_and_differ_on_texture(scenes):
    pixels = {c: [] for c in range(1, 7)}
    roughness = {c: [] for c in range(1, 7)}
    for scene in scenes:
        image, label = scene["image"], scene["label"]
        # high-frequency energy inside objects (away from their edges)
        interior = label.copy()
        for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            interior = np.where(np.roll(label, (dy, dx), (0, 1)) == label, interior, 255)
        lap = np.abs(4 * image - sum(np.roll(image, s, a) for s in (1, -1) for a in (0, 1)))
        for c in range(1, 7):
            if (label == c).sum() > 50:
                pixels[c].append(image[label == c])
            if (interior == c).sum() > 50:
                roughness[c].append(lap[interior == c].mean())
    hue = {c: _mean_hue(np.concatenate(p)) for c, p in pixels.items()}
    rough = {c: float(np.mean(r)) for c, r in roughness.items()}

    def hue_gap(a, b):
        return min(abs(hue[a] - hue[b]), 1 - abs(hue[a] - hue[b]))

    # same colours within a pair (so colour alone cannot separate them) ...
    assert hue_gap(DISC, RING) < 0.03 and hue_gap(BOX, TILE) < 0.03
    # ... different colour families across pairs
    assert min(hue_gap(DISC, BOX), hue_gap(DISC, TRIANGLE), hue_gap(BOX, STAR)) > 0.1
    # textured classes (stripes, dots, bands) are rougher than smooth gradients
    assert min(rough[BOX], rough[TILE], rough[STAR]) > 1.5 * max(rough[DISC], rough[TRIANGLE])


def test_every_class_appears(scenes):
    present = set()
    for scene in scenes:
        present |= set(np.unique(scene["label"]).tolist())
    assert present == set(range(len(CLASS_NAMES)))


def test_generation_is_fast():
    ds = SyntheticScenes("train", size=(128, 128))
    start = time.perf_counter()
    for i in range(50):
        ds[i]
    assert (time.perf_counter() - start) / 50 < 0.02  # ~3 ms on one shared core


def test_bad_arguments():
    with pytest.raises(JaxsegError, match="split 'dev'"):
        SyntheticScenes("dev")
    with pytest.raises(JaxsegError, match="too small"):
        SyntheticScenes("train", size=(4, 100))
    with pytest.raises(JaxsegError, match="num_examples=0"):
        SyntheticScenes("train", num_examples=0)
    with pytest.raises(IndexError):
        SyntheticScenes("val", num_examples=3)[3]
