"""The worst case over attacks from per-image counts: hand-made tables with known answers."""

import itertools

import numpy as np
import pytest

from jaxseg.errors import JaxsegError
from jaxseg.evaluation import worst_case as wc


def counts(rows):
    """PerImage from rows of (tp, fp, fn) per class, one row per image."""
    tp, fp, fn = (np.array([[c[k] for c in row] for row in rows], np.int64) for k in range(3))
    return wc.PerImage(np.arange(len(rows)), tp, fp, fn)


# Two classes; class 1 is rare. Per image, (tp, fp, fn) of class 0 and of class 1.
# Image 0 (95 px of class 0, 5 of class 1): A turns 10 class-0 pixels into 1 (accuracy 0.90);
#   B turns the 5 class-1 pixels into 0 (accuracy 0.95) and so erases class 1's IoU.
# Image 1 (100 px of class 0): both attacks leave it alone.
# Image 2 (50 / 50): A turns all of class 1 into 0 (0.50); B 10 pixels of class 0 into 1 (0.90).
A = counts([[(85, 0, 10), (5, 10, 0)], [(100, 0, 0), (0, 0, 0)], [(50, 50, 0), (0, 0, 50)]])
B = counts([[(95, 5, 0), (0, 0, 5)], [(100, 0, 0), (0, 0, 0)], [(40, 0, 10), (50, 10, 0)]])


def brute_force_miou(results):
    names = list(results)
    best = None
    for choice in itertools.product(range(len(names)), repeat=len(results[names[0]].index)):
        totals = [sum(getattr(results[names[a]], k)[i] for i, a in enumerate(choice))
                  for k in ("tp", "fp", "fn")]
        value = wc.miou_of(*totals)
        best = value if best is None else min(best, value)
    return best


def test_accuracy_is_the_per_image_minimum_pooled_and_averaged():
    summary = wc.worst_case({"A": A, "B": B})
    assert summary["attack_for_accuracy"] == ["A", "A", "A"]  # first attack on the tie (image 1)
    assert summary["image_acc"] == pytest.approx((0.90 + 1.0 + 0.50) / 3)
    assert summary["pixel_acc"] == pytest.approx((90 + 100 + 50) / 300)


def test_greedy_miou_finds_the_optimum_which_differs_from_the_accuracy_choice():
    summary = wc.worst_case({"A": A, "B": B})
    assert summary["miou"] == pytest.approx(brute_force_miou({"A": A, "B": B}))
    # image 0: A has the lower accuracy, but B (which erases the rare class) lowers mIoU more
    assert summary["attack_for_miou"][0] == "B" and summary["attack_for_accuracy"][0] == "A"
    for name, single in (("A", A), ("B", B)):
        alone = wc.summarize_counts(single.tp, single.fp, single.fn)
        assert summary["miou"] <= alone["miou"] + 1e-12
        assert summary["pixel_acc"] <= alone["pixel_acc"] + 1e-12
        assert summary["image_acc"] <= alone["image_acc"] + 1e-12


def test_greedy_matches_brute_force_on_random_tables():
    rng = np.random.default_rng(0)
    for _ in range(20):
        results = {}
        for name in "ABC":
            tp = rng.integers(0, 30, (5, 3))
            results[name] = wc.PerImage(np.arange(5), tp, rng.integers(0, 10, (5, 3)),
                                        rng.integers(0, 10, (5, 3)))
        greedy = wc.worst_case(results, seed=1)["miou"]
        optimum = brute_force_miou(results)
        assert optimum <= greedy + 1e-12 and greedy <= optimum + 0.02  # greedy: close, not exact


def test_summarize_counts_matches_a_confusion_matrix():
    from jaxseg.evaluation import metrics

    confusion = np.array([[3, 1, 0], [0, 2, 0], [1, 0, 1]])
    tp = np.diag(confusion)[None]
    fp = (confusion.sum(0) - np.diag(confusion))[None]
    fn = (confusion.sum(1) - np.diag(confusion))[None]
    ours, reference = wc.summarize_counts(tp, fp, fn), metrics.summarize(confusion)
    for key in ("pixel_acc", "mean_class_acc", "miou", "pixels"):
        assert ours[key] == pytest.approx(reference[key])


def test_images_must_match_and_files_round_trip(tmp_path):
    other = wc.PerImage(np.array([0, 1, 7]), A.tp, A.fp, A.fn)
    with pytest.raises(JaxsegError, match="other images"):
        wc.worst_case({"A": A, "X": other})
    A.save(tmp_path / "a.npz", attack="apgd", eps=4 / 255)
    loaded, meta = wc.PerImage.load(tmp_path / "a.npz")
    np.testing.assert_array_equal(loaded.tp, A.tp)
    assert meta == {"attack": "apgd", "eps": pytest.approx(4 / 255)}
    (tmp_path / "bad.npz").write_text("junk")
    with pytest.raises(JaxsegError, match="cannot read per-image results"):
        wc.PerImage.load(tmp_path / "bad.npz")
