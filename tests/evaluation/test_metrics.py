"""Metrics on hand-made cases with known answers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.evaluation import confusion as confusion_module, metrics


def test_confusion_counts_and_ignore():
    labels = jnp.array([[0, 0, 1, 255], [2, 2, 255, 1]])
    preds = jnp.array([[0, 1, 1, 2], [2, 0, 0, 1]])
    confusion = jax.jit(confusion_module.confusion_matrix, static_argnums=2)(labels, preds, 3)
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])


def test_known_accuracy_and_iou():
    # Rows: truth, columns: prediction.
    confusion = np.array([[3, 1, 0], [0, 2, 0], [1, 0, 1]])
    result = metrics.summarize(confusion, ["a", "b", "c"])
    assert result["pixel_acc"] == pytest.approx(6 / 8)
    assert result["iou"] == pytest.approx({"a": 3 / 5, "b": 2 / 3, "c": 1 / 2})
    assert result["miou"] == pytest.approx((3 / 5 + 2 / 3 + 1 / 2) / 3)
    assert result["mean_class_acc"] == pytest.approx((3 / 4 + 1 + 1 / 2) / 3)
    assert result["pixels"] == 8


def test_absent_class_is_excluded_but_missed_class_counts_zero():
    # Class 2 never appears and is never predicted; class 1 appears but is never predicted.
    confusion = np.array([[4, 0, 0], [2, 0, 0], [0, 0, 0]])
    result = metrics.summarize(confusion)
    assert math.isnan(result["iou"]["2"])
    assert result["iou"]["1"] == 0.0
    assert result["iou"]["0"] == pytest.approx(4 / 6)
    assert result["miou"] == pytest.approx((4 / 6 + 0.0) / 2)


def test_split_level_miou_is_not_the_mean_of_batch_mious():
    labels_a, preds_a = np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0])
    labels_b, preds_b = np.array([1, 1]), np.array([1, 1])
    batches = [confusion_module.confusion_matrix(jnp.asarray(l), jnp.asarray(p), 2)
               for l, p in ((labels_a, preds_a), (labels_b, preds_b))]
    split = metrics.summarize(sum(batches))["miou"]
    # Over the split: class 0 IoU 3/4, class 1 IoU 2/3.
    assert split == pytest.approx((3 / 4 + 2 / 3) / 2)
    per_batch = np.mean([metrics.summarize(b)["miou"] for b in batches])
    assert per_batch != pytest.approx(split)


def test_everything_ignored_gives_nan_not_error():
    confusion = confusion_module.confusion_matrix(jnp.full((4, 4), 255), jnp.zeros((4, 4), jnp.int32), 3)
    assert int(confusion.sum()) == 0
    result = metrics.summarize(confusion)
    assert math.isnan(result["pixel_acc"]) and math.isnan(result["miou"])
