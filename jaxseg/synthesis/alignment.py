"""How perceptually aligned a model's gradient is, without running a descent.

For a hole filled with the mean colour (the inpainting start x0), the first descent direction
of the inpainting objective (eq. 6), -d objective / d x at x0, is compared inside the hole with
the direction that would restore the image, original - x0:

    alignment = cos( -grad(x0)[hole], (original - x0)[hole] )      per image, in [-1, 1]

A model whose gradient points straight at the missing pixels scores 1; an unrelated direction
about 0 (a random one: N(0, 1/n) over the n hole values); a model that pushes away from them,
below 0. The known pixels do not count: there the penalty term pulls toward x0 by design.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import attacks, runtime
from jaxseg.synthesis import objectives


def cosine_in_hole(direction, target, mask):
    """Per example, the cosine between `direction` and `target` ([N, H, W, C]) over the hole
    (`mask` [N, H, W], True inside); NaN where either is zero there."""
    direction, target = np.asarray(direction, np.float64), np.asarray(target, np.float64)
    inside = np.asarray(mask, bool)[..., None]
    d = (direction * inside).reshape(len(direction), -1)
    t = (target * inside).reshape(len(target), -1)
    norms = np.linalg.norm(d, axis=1) * np.linalg.norm(t, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, np.sum(d * t, axis=1) / norms, np.nan)


def descent_alignment(objective, start, original, mask):
    """cos(-d objective / d x at `start`, original - start) in the hole, per example.
    objective(x, step) -> [N] (a synthesis objective, to be minimised)."""
    start = jnp.asarray(start, jnp.float32)
    gradient = jax.grad(lambda x: jnp.sum(objective(x, 0)))(start)
    return cosine_in_hole(-np.asarray(gradient), np.asarray(original) - np.asarray(start), mask)


@functools.partial(runtime.jit, static_argnames=("apply_fn", "penalty", "bn"))
def _first_direction(apply_fn, variables, images, labels, mask, lam, penalty, bn):
    start = objectives.fill_hole(images, mask)
    objective = objectives.inpaint_objective(attacks.model_logits(apply_fn, variables, bn),
                                             start, labels, mask, lam, penalty)
    return start, -jax.grad(lambda x: jnp.sum(objective(x, 0)))(start)


def inpainting_alignment(apply_fn, variables, images, labels, mask, lam=None, penalty="mse",
                         bn="running"):
    """The alignment of a Flax segmentation model (`apply_fn`, e.g. `model.apply`, with its
    `variables`) at the mean-fill start of inpainting `images` ([N, H, W, 3] in [0, 1]) toward
    `labels` in the hole `mask`, with the inpainting objective of `synthesize` (lam, penalty,
    BatchNorm mode)."""
    images = jnp.asarray(images, jnp.float32)
    mask = objectives.as_mask(mask, images)
    lam = objectives.RECIPES["inpaint"]["lam"] if lam is None else lam
    start, direction = _first_direction(apply_fn, variables, images, jnp.asarray(labels),
                                        mask, jnp.float32(lam), penalty, bn)
    return cosine_in_hole(np.asarray(direction), np.asarray(images - start), mask)


def random_alignment(images, mask, key):
    """The floor: the same cosine for a Gaussian random direction, per example."""
    images = jnp.asarray(images, jnp.float32)
    start = objectives.fill_hole(images, objectives.as_mask(mask, images))
    direction = jax.random.normal(key, images.shape)
    return cosine_in_hole(np.asarray(direction), np.asarray(images - start), mask)
