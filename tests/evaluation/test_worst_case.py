"""The worst case over attacks from per-image counts: hand-made tables with known answers."""

import itertools
import re

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


def test_each_attack_takes_its_own_settings_before_the_shared_ones():
    from jaxseg.evaluation import report

    assert report.parse_attack("sea") == ("sea", {})
    assert report.parse_attack("pgd:steps=20,restarts=3,step_size=1/255,loss=segpgd") == (
        "pgd", {"steps": 20, "restarts": 3, "step_size": 1 / 255, "loss": "segpgd"})
    for bad, message in (("pgd:steps", "expected NAME[:KEY=VALUE,...]"),
                         ("pgd:eps=1", "expected NAME[:KEY=VALUE,...]"),
                         ("pgd:steps=0", "steps must be an integer >= 1"),
                         ("pgd:step_size=inf", "is infinite")):
        with pytest.raises(JaxsegError, match=re.escape(message)):
            report.parse_attack(bad)
    lines = []
    weights = np.ones(3, np.float32)
    specs = report.make_attacks(["pgd", "sea:steps=6", "apgd:loss=js"], eps=8 / 255, steps=2,
                                step_size=None, restarts=1, class_weights=weights,
                                log=lines.append)
    assert list(specs) == ["pgd", "sea", "apgd-js"]
    assert specs["pgd"].steps == 2  # the shared --steps
    assert [m.steps for _, m in specs["sea"].members] == [6, 6, 6]  # its own
    assert specs["apgd-js"].steps == 2 and specs["apgd-js"].loss == "js"
    # the shared --steps replaced apgd's published schedule: said, not silent; sea's own kept
    assert lines == ["apgd: the shared --steps replaces its published 100 steps from a step of "
                     "2 eps (apgd:steps=N sets it for apgd alone)"]
    defaults = report.make_attacks(["sea", "pgd"], eps=8 / 255, steps=None, step_size=None,
                                   restarts=1, class_weights=weights)
    assert [m.steps for _, m in defaults["sea"].members] == [300] * 3
    assert defaults["pgd"].steps == 10
    assert report.describe_attack("pgd", defaults["pgd"]) == \
        "pgd: 10 steps, 1 restart(s), step size 0.007843, loss ce, linf"
    assert report.describe_attack("sea", defaults["sea"]) == \
        "sea: apgd_red on js, mce, mce_bal, 300 steps each, step size from 0.06275, linf"
