"""Per-example segmentation losses: values against independent references, ignore handling,
detached weights (SegPGD / CosPGD), finiteness."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxseg.attacks import losses
from jaxseg.errors import JaxsegError

N, H, W, C = 3, 4, 5, 6


def _batch(seed=0, ignore_fraction=0.2):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(N, H, W, C)).astype(np.float32) * 2
    labels = rng.integers(0, C, size=(N, H, W)).astype(np.int32)
    labels[rng.random((N, H, W)) < ignore_fraction] = losses.IGNORE
    return jnp.asarray(logits), jnp.asarray(labels)


def _reference_pixel_ce(logits, labels):
    """float64 numpy CE per pixel, NaN where ignored."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(-1, keepdims=True))
    labels = np.asarray(labels)
    ce = np.full(labels.shape, np.nan)
    for index in np.ndindex(labels.shape):
        if labels[index] != losses.IGNORE:
            ce[index] = -log_probs[index + (labels[index],)]
    return ce


def test_cross_entropy_matches_reference_and_ignores_255():
    logits, labels = _batch()
    ce = _reference_pixel_ce(logits, labels)
    expected = np.nanmean(ce.reshape(N, -1), axis=1)
    np.testing.assert_allclose(losses.cross_entropy(logits, labels), expected, rtol=1e-5)
    pixel = np.asarray(losses.pixel_cross_entropy(logits, labels))
    assert np.all(pixel[np.asarray(labels) == losses.IGNORE] == 0)


def test_all_ignored_example_gives_zero_not_nan_and_finite_gradient():
    logits, labels = _batch()
    labels = labels.at[1].set(losses.IGNORE)
    for loss in (losses.cross_entropy(logits, labels),
                 losses.segpgd(logits, labels, 3, 10),
                 losses.cospgd(logits, labels),
                 losses.pixel_accuracy(logits, labels)):
        assert np.all(np.isfinite(loss)) and float(loss[1]) == 0.0
    grad = jax.grad(lambda z: jnp.sum(losses.cross_entropy(z, labels)))(logits)
    assert np.all(np.isfinite(grad)) and float(jnp.abs(grad[1]).max()) == 0.0


def test_per_example_values_do_not_depend_on_the_rest_of_the_batch():
    logits, labels = _batch()
    full = losses.cross_entropy(logits, labels)
    np.testing.assert_allclose(losses.cross_entropy(logits[1:2], labels[1:2]), full[1:2], rtol=1e-6)


def test_segpgd_lambda_schedule():
    # lambda_t = (t - 1) / (2T) with 1-based t; the kernel passes 0-based steps.
    np.testing.assert_allclose([losses.segpgd_lambda(s, 4) for s in range(4)],
                               [0, 1 / 8, 2 / 8, 3 / 8])


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("step", [0, 3])
def test_segpgd_weights_and_detached_masks(targeted, step):
    logits, labels = _batch(1)
    steps = 5
    lam = step / (2 * steps)
    ce = np.nan_to_num(_reference_pixel_ce(logits, labels))
    correct = np.argmax(np.asarray(logits), -1) == np.asarray(labels)
    pending = ~correct if targeted else correct
    weights = np.where(pending, 1 - lam, lam)
    valid = np.asarray(labels) != losses.IGNORE
    expected = (weights * ce * valid).reshape(N, -1).sum(1) / valid.reshape(N, -1).sum(1)
    np.testing.assert_allclose(losses.segpgd(logits, labels, step, steps, targeted), expected,
                               rtol=1e-5)
    # The masks are constants: the gradient is that of CE weighted by fixed weights.
    grad = jax.grad(lambda z: jnp.sum(losses.segpgd(z, labels, step, steps, targeted)))(logits)
    fixed = jax.grad(lambda z: jnp.sum(losses.masked_mean(
        jnp.asarray(weights, jnp.float32) * losses.pixel_cross_entropy(z, labels), labels)))(logits)
    np.testing.assert_allclose(grad, fixed, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("targeted", [False, True])
def test_cospgd_weights_are_detached_cosine_to_one_hot(targeted):
    logits, labels = _batch(2)
    probs = np.asarray(jax.nn.softmax(logits, -1), np.float64)
    one_hot = np.eye(C)[np.where(np.asarray(labels) == losses.IGNORE, 0, np.asarray(labels))]
    cosine = (probs * one_hot).sum(-1) / (np.linalg.norm(probs, axis=-1) * 1.0)
    np.testing.assert_allclose(losses.label_cosine(logits, labels), cosine, rtol=1e-5)
    weights = 1 - cosine if targeted else cosine
    ce = np.nan_to_num(_reference_pixel_ce(logits, labels))
    valid = np.asarray(labels) != losses.IGNORE
    expected = (weights * ce * valid).reshape(N, -1).sum(1) / valid.reshape(N, -1).sum(1)
    np.testing.assert_allclose(losses.cospgd(logits, labels, targeted), expected, rtol=1e-5)
    grad = jax.grad(lambda z: jnp.sum(losses.cospgd(z, labels, targeted)))(logits)
    fixed = jax.grad(lambda z: jnp.sum(losses.masked_mean(
        jnp.asarray(weights, jnp.float32) * losses.pixel_cross_entropy(z, labels), labels)))(logits)
    np.testing.assert_allclose(grad, fixed, rtol=1e-5, atol=1e-7)


def test_attack_loss_dispatch_and_unknown_kind():
    logits, labels = _batch(3)
    np.testing.assert_allclose(losses.attack_loss("ce", logits, labels, 0, 1),
                               losses.cross_entropy(logits, labels))
    np.testing.assert_allclose(losses.attack_loss("segpgd", logits, labels, 2, 4, True),
                               losses.segpgd(logits, labels, 2, 4, True))
    np.testing.assert_allclose(losses.attack_loss("cospgd", logits, labels, 0, 1),
                               losses.cospgd(logits, labels))
    with pytest.raises(JaxsegError, match="unknown attack loss"):
        losses.attack_loss("hinge", logits, labels, 0, 1)


def test_pixel_accuracy():
    logits = jnp.zeros((1, 1, 3, 2)).at[0, 0, :, 1].set(1.0)  # predicts class 1 everywhere
    labels = jnp.asarray([[[1, 0, losses.IGNORE]]], jnp.int32)
    np.testing.assert_allclose(losses.pixel_accuracy(logits, labels), [0.5])


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(0.0, 1e4), seed=st.integers(0, 2**16))
def test_cross_entropy_is_finite_and_nonnegative_for_any_logit_scale(scale, seed):
    logits, labels = _batch(seed)
    ce = np.asarray(losses.cross_entropy(logits * scale, labels))
    assert np.all(np.isfinite(ce)) and np.all(ce >= 0)


# ---------------------------------------------------------------------------------------------
# SEA's losses against direct numpy formulas


def _softmax(logits):
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _per_example_mean(pixel, labels):
    valid = np.asarray(labels) != losses.IGNORE
    return np.array([pixel[n][valid[n]].mean() if valid[n].any() else 0.0
                     for n in range(len(pixel))])


def test_jensen_shannon_matches_the_definition():
    logits, labels = _batch(3)
    p = _softmax(logits)
    q = np.eye(C)[np.where(np.asarray(labels) == losses.IGNORE, 0, labels)]
    m = (p + q) / 2
    def kl(a, b):
        return (a * np.log(np.where(a > 0, a, 1.0) / b)).sum(-1)  # 0 log 0 = 0

    pixel = 0.5 * kl(p, m) + 0.5 * kl(q, m)
    np.testing.assert_allclose(losses.jensen_shannon(logits, labels),
                               _per_example_mean(pixel, labels), rtol=1e-5)
    assert float(jnp.max(losses.jensen_shannon(logits, labels))) <= np.log(2)


def test_jensen_shannon_gradient_vanishes_as_the_true_class_probability_goes_to_zero():
    labels = jnp.zeros((1, 1, 1), jnp.int32)
    grad = jax.grad(lambda z: losses.jensen_shannon(z, labels).sum())
    ce_grad = jax.grad(lambda z: losses.cross_entropy(z, labels).sum())
    norms = []
    for gap in (0.0, 5.0, 10.0, 20.0):
        logits = jnp.zeros((1, 1, 1, C)).at[..., 0].set(-gap)
        norms.append(float(jnp.linalg.norm(grad(logits))))
        assert float(jnp.linalg.norm(ce_grad(logits))) > 0.9  # CE keeps pulling
    assert norms[0] > 0.05 and norms == sorted(norms, reverse=True) and norms[-1] < 1e-6


def test_masked_cross_entropy_counts_only_pixels_still_correct():
    logits, labels = _batch(4)
    ce = np.nan_to_num(_reference_pixel_ce(logits, labels))
    correct = (np.asarray(logits).argmax(-1) == np.asarray(labels))
    np.testing.assert_allclose(losses.masked_cross_entropy(logits, labels),
                               _per_example_mean(ce * correct, labels), rtol=1e-5)
    # the mask is detached: the gradient is the CE gradient on the correct pixels only
    grad = jax.grad(lambda z: losses.masked_cross_entropy(z, labels).sum())(logits)
    assert float(jnp.abs(grad[~correct]).max()) == 0.0


def test_balanced_masked_cross_entropy_divides_by_training_pixel_counts():
    logits, labels = _batch(5)
    counts = np.array([100, 50, 10, 0, 400, 40], np.float64)
    weights = np.asarray(losses.balanced_class_weights(counts))
    mean = counts[counts > 0].mean()
    expected = np.where(counts > 0, mean / np.maximum(counts, 1), 0)
    expected[counts == 0] = expected.max()
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    ce = np.nan_to_num(_reference_pixel_ce(logits, labels))
    correct = (np.asarray(logits).argmax(-1) == np.asarray(labels))
    pixel_weight = weights[np.where(np.asarray(labels) == losses.IGNORE, 0, labels)]
    np.testing.assert_allclose(losses.balanced_masked_cross_entropy(logits, labels, weights),
                               _per_example_mean(ce * correct * pixel_weight, labels), rtol=1e-5)
    with pytest.raises(JaxsegError, match="class weights"):
        losses.attack_loss("mce_bal", logits, labels, 0, 1)
