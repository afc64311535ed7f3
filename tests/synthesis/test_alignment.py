"""The alignment measure on cases whose answer is known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import data, models
from jaxseg.synthesis import alignment, objectives


def example(seed=0, size=24):
    rng = np.random.default_rng(seed)
    images = rng.random((3, size, size, 3)).astype(np.float32)
    mask = np.zeros((3, size, size), bool)
    mask[:, 6:18, 4:16] = True
    return images, mask


def test_a_gradient_that_points_at_the_original_scores_one():
    images, mask = example()
    start = objectives.fill_hole(jnp.asarray(images), jnp.asarray(mask))
    # 0.5 |x - original|^2: its descent direction at the start is exactly original - start.
    objective = lambda x, step: 0.5 * jnp.sum((x - images) ** 2, axis=(1, 2, 3))  # noqa: E731
    np.testing.assert_allclose(alignment.descent_alignment(objective, start, images, mask), 1.0,
                               atol=1e-6)
    away = lambda x, step: -objective(x, step)  # noqa: E731  (ascent: pushes away)
    np.testing.assert_allclose(alignment.descent_alignment(away, start, images, mask), -1.0,
                               atol=1e-6)


def test_a_random_direction_scores_about_zero():
    images, mask = example(1)
    values = alignment.random_alignment(images, mask, jax.random.key(0))
    hole_values = mask[0].sum() * 3  # cos of a random direction: mean 0, std 1 / sqrt(n)
    assert np.all(np.abs(values) < 4 / np.sqrt(hole_values))
    direction = jax.random.normal(jax.random.key(1), images.shape)
    objective = lambda x, step: -jnp.sum(direction * x, axis=(1, 2, 3))  # noqa: E731
    start = objectives.fill_hole(jnp.asarray(images), jnp.asarray(mask))
    assert np.all(np.abs(alignment.descent_alignment(objective, start, images, mask))
                  < 4 / np.sqrt(hole_values))


def test_only_the_hole_counts_and_empty_holes_are_nan():
    direction = np.zeros((2, 4, 4, 3), np.float32)
    target = np.zeros_like(direction)
    direction[:, 0, 0] = target[:, 0, 0] = 1.0  # agree in the hole
    direction[:, 3, 3], target[:, 3, 3] = 1.0, -1.0  # disagree outside it
    mask = np.zeros((2, 4, 4), bool)
    mask[0, 0, 0] = True
    values = alignment.cosine_in_hole(direction, target, mask)
    assert values[0] == pytest.approx(1.0) and np.isnan(values[1])


def test_a_model_scores_within_bounds_and_matches_its_objective():
    dataset = data.get_dataset("synthetic", "val", size=(32, 32))
    images = np.stack([dataset[i]["image"] for i in range(2)]).astype(np.float32) / 255
    labels = np.stack([dataset[i]["label"] for i in range(2)]).astype(np.int32)
    mask = np.zeros(labels.shape, bool)
    mask[:, 8:20, 8:20] = True
    model = models.build("fcn_resnet14_w8", num_classes=dataset.info.num_classes)
    variables = models.init(model, jax.random.key(0), (32, 32))
    values = alignment.inpainting_alignment(model.apply, variables, images, labels, mask)
    assert values.shape == (2,) and np.all(np.abs(values) <= 1)
    start = objectives.fill_hole(jnp.asarray(images), jnp.asarray(mask))

    @jax.jit
    def descent(variables, x):  # the inpainting objective's first direction, written out
        return -jax.grad(lambda z: jnp.sum(objectives.inpaint_objective(
            lambda y: model.apply(variables, y, train=False)["out"], start, labels, mask,
            10.0)(z, 0)))(x)

    direction = descent(variables, start)
    np.testing.assert_allclose(values, alignment.cosine_in_hole(direction, images - start, mask),
                               atol=1e-5)
