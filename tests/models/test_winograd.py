"""Winograd F(2x2, 3x3) convolutions: lax's values and gradients (1e-5 relative) on random
shapes, nn.Conv's parameters, and the backend policy that picks them."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import models, runtime
from jaxseg.models import winograd
from tests.helpers import policy


def lax_conv3x3(x, kernel, dilation=1):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((dilation, dilation),) * 2,
                                        rhs_dilation=(dilation, dilation),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def relative_error(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize("seed", range(6))
def test_values_and_both_gradients_equal_lax_on_random_shapes_and_dilations(seed):
    rng = np.random.default_rng(seed)
    n, height, width = rng.integers(1, 4), rng.integers(1, 14), rng.integers(1, 14)
    channels, features, dilation = rng.integers(1, 20), rng.integers(1, 20), 1 + seed % 4
    keys = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(keys[0], (n, height, width, channels))
    kernel = jax.random.normal(keys[1], (3, 3, channels, features))
    cotangent = jax.random.normal(keys[2], (n, height, width, features))

    @jax.jit
    def value_and_grads(x, kernel, cotangent):
        value, pullback = jax.vjp(lambda x, k: winograd.conv3x3(x, k, dilation), x, kernel)
        value_lax, pullback_lax = jax.vjp(lambda x, k: lax_conv3x3(x, k, dilation), x, kernel)
        return (value, *pullback(cotangent)), (value_lax, *pullback_lax(cotangent))

    ours, theirs = value_and_grads(x, kernel, cotangent)
    assert ours[0].shape == theirs[0].shape
    for a, b in zip(ours, theirs):  # value, input gradient, kernel gradient
        assert relative_error(a, b) < 1e-5


def test_each_output_reads_only_its_3x3_neighbourhood():
    # One input pixel on: the output is the flipped kernel around it, zero elsewhere (padding 1).
    x = jnp.zeros((1, 5, 6, 1)).at[0, 2, 3, 0].set(1.0)
    kernel = jnp.arange(1.0, 10.0).reshape(3, 3, 1, 1)
    y = winograd.conv3x3(x, kernel)[0, :, :, 0]
    expected = np.zeros((5, 6))
    expected[1:4, 2:5] = np.arange(9.0, 0.0, -1.0).reshape(3, 3)
    np.testing.assert_allclose(y, expected, atol=1e-6)


@pytest.mark.parametrize("dilation", [1, 2])
def test_module_has_nn_convs_parameters_and_values(dilation):
    x = jax.random.normal(jax.random.key(0), (2, 7, 9, 4))
    ours = winograd.Conv3x3(6, dilation, use_bias=True)
    theirs = nn.Conv(6, (3, 3), padding=((dilation, dilation),) * 2,
                     kernel_dilation=(dilation, dilation), use_bias=True)
    params, params_lax = ours.init(jax.random.key(1), x), theirs.init(jax.random.key(1), x)
    jax.tree.map(np.testing.assert_array_equal, params, params_lax)
    params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero bias
    assert relative_error(ours.apply(params, x), theirs.apply(params, x)) < 1e-5


def test_models_use_it_on_cpu_for_large_float32_stride_1_3x3_only(monkeypatch):
    """The backend policy: on CPU, Winograd for float32 stride-1 3x3 convolutions of at least
    WINOGRAD_MIN_MACS multiply-adds per call (smaller ones stay lax's: they compile slower and
    save too little), every one of them under conv_policy(winograd_convs=True); the same
    parameters, outputs and parameter gradients whichever form runs."""
    threshold = runtime.WINOGRAD_MIN_MACS
    assert runtime.winograd_convs((4, 56, 56, 64), 64)  # FCN-ResNet50's smallest at 224
    assert not runtime.winograd_convs((2, 8, 8, 64), 64)  # the tests' models
    side = int((threshold / 9) ** 0.5) + 1  # batch 1, 1 channel in and out, side x side
    assert runtime.winograd_convs((1, side, side, 1), 1)
    assert not runtime.winograd_convs((1, side - 2, side - 2, 1), 1)

    model = models.build("fcn_resnet14_w8", num_classes=5)
    variables = models.init(model, jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (2, 40, 40, 3))
    traced = lambda: policy.traced_loss(model, variables, x, "conv_general_dilated")  # noqa: E731
    counts, results = {}, {}
    for name, choice in (("default", None), ("all", True), ("none", False)):
        with runtime.conv_policy(winograd_convs=choice):
            counts[name], results[name] = traced()
    # fcn_resnet14_w8 has 7 3x3 convolutions (the stem is 7x7): 5 of stride 1, all small here
    assert counts["all"] == 2  # the stem and layer2's strided 3x3 stay lax's
    assert counts["default"] == counts["none"] == 2 + 5
    value, grads = results["all"]
    np.testing.assert_allclose(value, results["none"][0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(results["none"][1])):
        assert relative_error(a, b) < 1e-4
    with runtime.conv_policy(winograd_convs=True):
        bf16 = models.build("fcn_resnet14_w8", num_classes=5, dtype=jnp.bfloat16)
        assert str(jax.make_jaxpr(bf16.apply)(variables, x)).count("conv_general_dilated") == \
            counts["none"]  # every bfloat16 convolution stays lax's
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert not runtime.winograd_convs((64, 480, 480, 512), 512)
