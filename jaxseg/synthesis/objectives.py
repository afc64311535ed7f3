"""What inpainting (eq. 6) and generation (eq. 7) minimise, where they start, and the scale of
Santurkar et al.'s recipe at any image size.

    inpaint:  min_x  CE(f(x), y) + lam * mean(((x - x0) * (1 - M))**2)    from x0, hole := mean
    generate: min_x  CE(f(x), y)                                          from the mean image

Santurkar et al. (2019) use L2-normalised steps: inpainting lam 10 on a mean squared penalty,
step 0.1, 720 steps; generation step 1, 60 steps. Their step sizes are L2 lengths on 224x224x3
images; an L2 step of length s changes a D-pixel image by s / sqrt(D) per pixel (RMS), so we
keep that per-pixel change: step = s * sqrt(D / (224 * 224 * 3)) (0.043 and 0.43 for a 96x96
image). The penalty is a mean over pixels, and so is the cross-entropy, so lam needs no
rescaling.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.attacks import losses
from jaxseg.errors import JaxsegError

KINDS = ("inpaint", "generate")
PENALTIES = ("mse", "l2")
REFERENCE_SHAPE = (224, 224, 3)  # Santurkar et al.'s image size (ImageNet crops)

# Santurkar et al.'s recipe at REFERENCE_SHAPE; `radius` is their L2 ball (eps), off by default.
RECIPES = {
    "inpaint": {"lam": 10.0, "steps": 720, "step_size": 0.1, "radius": 21.6},
    "generate": {"lam": 0.0, "steps": 60, "step_size": 1.0, "radius": 40.0},
}


# ---------------------------------------------------------------------------------------------
# Scale of the recipe


def _pixels(image_shape):
    """Number of values per example (H * W * C) from an NHWC or HWC shape."""
    return int(np.prod(image_shape[-3:]))


def scaled(value, image_shape, rule="l2"):
    """An L2 length `value` on a 224x224x3 image, rescaled to keep its per-pixel RMS change.

    For the l2 rule the length grows with sqrt(D); a sign step moves every pixel by the step
    size, so it gets the per-pixel amount itself (value / sqrt(224 * 224 * 3))."""
    per_pixel = value / math.sqrt(_pixels(REFERENCE_SHAPE))
    if rule == "sign":
        return per_pixel
    return per_pixel * math.sqrt(_pixels(image_shape))


def default_step_size(kind, image_shape, rule="l2"):
    """Santurkar et al.'s step for `kind`, scaled to `image_shape` (see `scaled`).

    The plain rule multiplies the raw gradient, whose size depends on the model: no default."""
    if rule == "plain":
        raise JaxsegError("step rule 'plain' has no scale-free default step size; pass one")
    return scaled(RECIPES[kind]["step_size"], image_shape, rule)


def default_radius(kind, image_shape):
    """Santurkar et al.'s L2 ball (eps 21.6 inpainting, 40 generation), scaled like a step."""
    return scaled(RECIPES[kind]["radius"], image_shape, "l2")


# ---------------------------------------------------------------------------------------------
# Start points


def as_mask(mask, images):
    """Bool [N, H, W] hole mask (True = corrupted / to synthesise)."""
    mask = jnp.asarray(mask)
    if mask.shape != images.shape[:3]:
        raise JaxsegError(f"mask shape {tuple(mask.shape)} does not match images "
                          f"{tuple(images.shape)}; expected {tuple(images.shape[:3])}")
    return mask.astype(bool)


def channel_mean(images, mask=None):
    """Per-example, per-channel mean [N, 1, 1, 3] over the known pixels (outside `mask`).

    Only known pixels count: the hole's content is what inpainting must not see."""
    known = jnp.ones(images.shape[:3], bool) if mask is None else jnp.logical_not(mask)
    weights = known[..., None].astype(images.dtype)
    total = jnp.sum(images * weights, axis=(1, 2), keepdims=True)
    return total / jnp.maximum(jnp.sum(weights, axis=(1, 2), keepdims=True), 1.0)


def fill_hole(images, mask):
    """The corrupted image: the hole replaced by the per-channel mean of the known pixels."""
    mask = as_mask(mask, images)
    return jnp.where(mask[..., None], channel_mean(images, mask), images)


def mean_image(images):
    """Every pixel the per-channel mean of its image (generation's start)."""
    return jnp.broadcast_to(channel_mean(images), images.shape)


def start_point(kind, images, mask, key, jitter):
    """(centre, start) of a descent: the image with its hole filled (inpaint) or the mean image
    (generate), and the same with `jitter` noise (in the hole only, for inpaint)."""
    images = jnp.asarray(images, jnp.float32)
    if kind == "inpaint":
        mask = as_mask(mask, images)
        centre = fill_hole(images, mask)
        return centre, _jitter(centre, key, jitter, mask)
    centre = mean_image(images)
    return centre, _jitter(centre, key, jitter)


def _jitter(start, key, jitter, where=None):
    """Gaussian noise of std `jitter` (only where `where`), clipped to [0, 1]. With jitter 0 the
    start is deterministic; a positive jitter makes the key choose one of many results."""
    noise = jitter * jax.random.normal(key, start.shape, start.dtype)
    if where is not None:
        noise = noise * where[..., None]
    return jnp.clip(start + noise, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Objectives


def penalty_value(x, x0, mask, penalty="mse"):
    """Per-example size of the change outside the hole, [N].

    'mse':  mean over all H*W*3 values of ((x - x0) * (1 - M))**2 (Santurkar et al.).
    'l2':   ||(x - x0) * (1 - M)||_2 / sqrt(H*W*3): eq. 6's norm, divided so that lam means
            the same at every resolution (an RMS; not smooth at x = x0).
    """
    keep = jnp.logical_not(mask)[..., None].astype(x.dtype)
    diff = ((x - x0) * keep).reshape(x.shape[0], -1)
    mse = jnp.mean(diff**2, axis=1)
    if penalty == "mse":
        return mse
    return jnp.sqrt(mse + 1e-12)


def inpaint_objective(logits_fn, x0, labels, mask, lam, penalty="mse"):
    """objective(x, step) -> CE(f(x), y) + lam * penalty, per example (to be minimised)."""

    def objective(x, step):
        del step  # the objective is the same at every step
        ce = losses.cross_entropy(logits_fn(x), labels)
        return ce + lam * penalty_value(x, x0, mask, penalty)

    return objective


def generate_objective(logits_fn, labels):
    """objective(x, step) -> CE(f(x), y) per example (to be minimised)."""

    def objective(x, step):
        del step
        return losses.cross_entropy(logits_fn(x), labels)

    return objective
