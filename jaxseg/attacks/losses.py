"""Per-example segmentation losses for attacks, training and synthesis.

Conventions: logits are float [N, H, W, C], labels int [N, H, W] with `IGNORE` (255) marking
pixels that count nowhere. Every loss here returns one value per example, the average over that
example's valid pixels; an example without valid pixels gives 0 (never NaN), so per-example
best-iterate selection and batch sums stay finite.

The attack losses (SegPGD, CosPGD, masked CE, balanced masked CE) re-weight the per-pixel
cross-entropy with weights computed from the current prediction; the weights are constants for
differentiation (stop_gradient), as in their papers. JS is the Jensen-Shannon divergence of the
prediction and the one-hot label (Croce, Singh and Hein 2024, the losses of SEA).
"""

import jax
import jax.numpy as jnp

from jaxseg.errors import JaxsegError
from jaxseg.labels import IGNORE, valid_mask  # noqa: F401  (IGNORE: re-exported)

ATTACK_LOSSES = ("ce", "segpgd", "cospgd", "js", "mce", "mce_bal")
NEEDS_CLASS_WEIGHTS = ("mce_bal",)


def _safe_labels(labels):
    """Ignored pixels index class 0 so that gathers stay in range; their loss is masked later."""
    return jnp.where(valid_mask(labels), labels, 0).astype(jnp.int32)


def pixel_cross_entropy(logits, labels):
    """Per-pixel softmax cross-entropy [N, H, W], 0 at ignored pixels. Computed in float32."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probs, _safe_labels(labels)[..., None], axis=-1)[..., 0]
    return jnp.where(valid_mask(labels), -picked, 0.0)


def masked_mean(values, labels):
    """Per-example mean of `values` [N, H, W] over valid pixels; 0 for an all-ignored example."""
    mask = valid_mask(labels).astype(jnp.float32)
    axes = tuple(range(1, values.ndim))
    total = jnp.sum(values * mask, axis=axes)
    count = jnp.sum(mask, axis=axes)
    return total / jnp.maximum(count, 1.0)


def cross_entropy(logits, labels):
    """Per-example cross-entropy [N], averaged over valid pixels."""
    return masked_mean(pixel_cross_entropy(logits, labels), labels)


def segpgd_lambda(step, steps):
    """SegPGD's lambda_t = (t - 1) / (2T) for the 1-based step t; `step` here is 0-based."""
    return jnp.asarray(step, jnp.float32) / (2.0 * steps)


def segpgd(logits, labels, step, steps, targeted=False):
    """SegPGD (Gu et al. 2022), per example.

    Pixels the attack has not won yet get weight (1 - lambda_t), the others lambda_t, so the
    attack first concentrates on them and later balances. Untargeted, "not won" means still
    predicted correctly; targeted (labels = target), it means not yet predicted as the target.
    """
    lam = segpgd_lambda(step, steps)
    predicted = jax.lax.stop_gradient(jnp.argmax(logits, axis=-1))
    on_label = predicted == labels
    pending = jnp.logical_not(on_label) if targeted else on_label
    weights = jnp.where(pending, 1.0 - lam, lam)
    return masked_mean(weights * pixel_cross_entropy(logits, labels), labels)


def label_cosine(logits, labels):
    """Cosine similarity of softmax(logits) and the one-hot label, per pixel [N, H, W], detached."""
    probs = jax.nn.softmax(jax.lax.stop_gradient(logits).astype(jnp.float32), axis=-1)
    on_label = jnp.take_along_axis(probs, _safe_labels(labels)[..., None], axis=-1)[..., 0]
    # <p, e_y> = p_y and ||e_y|| = 1, so cos = p_y / ||p||.
    return on_label / jnp.maximum(jnp.linalg.norm(probs, axis=-1), 1e-12)


def cospgd(logits, labels, targeted=False):
    """CosPGD (Agnihotri & Keuper 2023), per example: per-pixel CE weighted by the detached cosine
    similarity to the one-hot label (untargeted: pixels still confidently right weigh most), or
    by 1 - that similarity to the target (targeted: pixels far from the target weigh most)."""
    cosine = label_cosine(logits, labels)
    weights = 1.0 - cosine if targeted else cosine
    return masked_mean(weights * pixel_cross_entropy(logits, labels), labels)


def jensen_shannon(logits, labels):
    """Per example: the Jensen-Shannon divergence between softmax(logits) and the one-hot label,
    averaged over valid pixels. With m = (p + e_y) / 2 it is
    0.5 * sum_c p_c log(p_c / m_c) + 0.5 * log(1 / m_y); bounded by log 2, and its gradient
    vanishes as p_y -> 0, so pixels already won stop pulling the attack (unlike CE)."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    p = jnp.exp(log_p)
    one_hot = jax.nn.one_hot(_safe_labels(labels), logits.shape[-1], dtype=jnp.float32)
    m = 0.5 * (p + one_hot)
    log_m = jnp.log(jnp.maximum(m, 1e-30))
    kl_p = jnp.sum(p * (log_p - log_m), axis=-1)
    kl_y = -jnp.sum(one_hot * log_m, axis=-1)
    pixel = jnp.where(valid_mask(labels), 0.5 * (kl_p + kl_y), 0.0)
    return masked_mean(pixel, labels)


def still_correct(logits, labels):
    """Pixels the model still predicts correctly [N, H, W] (detached; False where ignored)."""
    predicted = jax.lax.stop_gradient(jnp.argmax(logits, axis=-1))
    return (predicted == labels) & valid_mask(labels)


def masked_cross_entropy(logits, labels):
    """Per example: CE on the pixels still predicted correctly (the mask is detached), averaged
    over all valid pixels, so that the attack spends nothing on pixels already won."""
    weights = still_correct(logits, labels).astype(jnp.float32)
    return masked_mean(weights * pixel_cross_entropy(logits, labels), labels)


def balanced_class_weights(counts):
    """Weights [C] from training-set pixel counts per class: mean(count) / count_c, so a pixel
    of class c weighs the inverse of its class's frequency and the average class weighs 1.
    A class with no training pixel gets the largest weight of the others."""
    counts = jnp.asarray(counts, jnp.float32)
    present = counts > 0
    mean = jnp.sum(counts) / jnp.maximum(jnp.sum(present), 1)
    weights = jnp.where(present, mean / jnp.maximum(counts, 1.0), 0.0)
    return jnp.where(present, weights, jnp.max(weights))


def balanced_masked_cross_entropy(logits, labels, class_weights):
    """Masked CE with each pixel divided by its class's training-set pixel count (through
    `balanced_class_weights`), so that small classes, which decide mIoU, are not drowned."""
    weights = still_correct(logits, labels).astype(jnp.float32)
    weights = weights * jnp.asarray(class_weights, jnp.float32)[_safe_labels(labels)]
    return masked_mean(weights * pixel_cross_entropy(logits, labels), labels)


def attack_loss(kind, logits, labels, step, steps, targeted=False, class_weights=None):
    """The named attack loss, per example. `step` (0-based) and `steps` matter only to SegPGD;
    `class_weights` ([C], `balanced_class_weights`) only to mce_bal. js / mce / mce_bal are
    untargeted losses."""
    if kind == "ce":
        return cross_entropy(logits, labels)
    if kind == "segpgd":
        return segpgd(logits, labels, step, steps, targeted)
    if kind == "cospgd":
        return cospgd(logits, labels, targeted)
    if kind == "js":
        return jensen_shannon(logits, labels)
    if kind == "mce":
        return masked_cross_entropy(logits, labels)
    if kind == "mce_bal":
        if class_weights is None:
            raise JaxsegError("the mce_bal loss needs class weights (training-set pixel counts)")
        return balanced_masked_cross_entropy(logits, labels, class_weights)
    raise JaxsegError(f"unknown attack loss {kind!r}; choose one of {', '.join(ATTACK_LOSSES)}")


def correct_pixels(logits, labels):
    """Per-example number of valid pixels predicted correctly [N] (float32)."""
    correct = (jnp.argmax(logits, axis=-1) == labels) & valid_mask(labels)
    return jnp.sum(correct.astype(jnp.float32), axis=tuple(range(1, labels.ndim)))


def pixel_accuracy(logits, labels):
    """Per-example fraction of valid pixels predicted correctly [N] (0 when none are valid)."""
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return masked_mean(correct, labels)
