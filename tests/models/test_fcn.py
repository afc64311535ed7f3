"""FCN models: torchvision parity, shapes, modes. Parity uses randomised torchvision weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxseg import JaxsegError, models
from jaxseg.models import port
from tests.helpers import policy
from tests.helpers import torch_reference as tr
from tests.helpers.forward import forward


def assert_parity(jax_out, torch_out):
    for key in torch_out:
        ours, ref = np.asarray(jax_out[key]), torch_out[key]
        assert ours.shape == ref.shape
        scale = np.abs(ref).max()
        assert np.abs(ours - ref).max() <= 1e-4 * scale, key
        np.testing.assert_array_equal(ours.argmax(-1), ref.argmax(-1))


@pytest.mark.parametrize(
    "arch, size",
    [("fcn_resnet50", (96, 128)), ("fcn_resnet50", (97, 131)), ("fcn_resnet101", (97, 131))],
)
@pytest.mark.slow
def test_full_fcn_matches_torchvision(arch, size):
    reference = tr.torch_fcn(arch, seed=1)
    image = tr.camvid_image(*size)
    model, variables, source = port.port(tr.state_numpy(reference))
    assert (source, model.arch, model.num_classes, model.aux) == ("segmentation", arch, 21, True)
    assert_parity(forward(model, variables, image), tr.run_torch(reference, image))


@pytest.mark.parametrize("in_size, out_size", [((13, 17), (97, 131)), ((8, 8), (64, 64)),
                                               ((31, 20), (7, 9)), ((5, 5), (5, 5))])
def test_resize_bilinear_matches_torch_interpolate(in_size, out_size):
    x = np.random.default_rng(0).normal(size=(2, *in_size, 3)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=out_size,
                                          mode="bilinear", align_corners=False)
    ours = models.resize_bilinear(jnp.asarray(x), *out_size)
    np.testing.assert_allclose(ours, ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["fcn_resnet26_w16", "fcn_resnet14_w8"])
def test_small_variants_use_the_same_structure(arch):
    model = models.build(arch, num_classes=7)
    variables = models.init(model, jax.random.key(0), (40, 56))
    out = forward(model, variables, jnp.full((2, 41, 57, 3), 0.5))
    assert {k: v.shape for k, v in out.items()} == {"out": (2, 41, 57, 7), "aux": (2, 41, 57, 7)}
    backbone = variables["params"]["backbone"]
    blocks = models.ARCHS[arch]["blocks"]
    assert sorted(k for k in backbone if k.startswith("layer")) == sorted(
        f"layer{s + 1}_{i}" for s, n in enumerate(blocks) for i in range(n))
    # torchvision's bottleneck layout: 1x1 -> 3x3 -> 1x1 with expansion 4, a downsample per stage.
    width = models.ARCHS[arch]["base_width"]
    assert backbone["layer4_0"]["conv3"]["kernel"].shape == (1, 1, 8 * width, 32 * width)
    assert "downsample_conv" in backbone["layer1_0"] and "downsample_conv" not in backbone.get("layer1_1", {})


def test_initial_values_depend_on_the_key_not_the_input_size():
    """Training initialises at the default size whatever its crops (one program per model)."""
    model = models.build("fcn_resnet14_w8", num_classes=3)
    default = jax.tree.leaves(models.init(model, jax.random.key(4)))
    other = jax.tree.leaves(models.init(model, jax.random.key(4), (40, 56)))
    assert len(default) == len(other) and all(
        np.array_equal(a, b) for a, b in zip(default, other))
    another_key = jax.tree.leaves(models.init(model, jax.random.key(5)))
    assert not all(np.array_equal(a, b) for a, b in zip(default, another_key))


@pytest.mark.slow
def test_train_mode_updates_batch_stats_and_uses_dropout():
    model = models.build("fcn_resnet14_w8", num_classes=3)
    variables = models.init(model, jax.random.key(0), (32, 32))
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    apply = lambda key: model.apply(variables, x, train=True, mutable=["batch_stats"],  # noqa: E731
                                    rngs={"dropout": key})
    (out_a, state), (out_b, _) = apply(jax.random.key(2)), apply(jax.random.key(3))
    assert not np.allclose(out_a["out"], out_b["out"])  # dropout differs per key
    old = variables["batch_stats"]["backbone"]["bn1"]["mean"]
    assert not np.allclose(state["batch_stats"]["backbone"]["bn1"]["mean"], old)
    # Eval mode is deterministic and leaves statistics alone.
    np.testing.assert_array_equal(model.apply(variables, x)["out"], model.apply(variables, x)["out"])


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params_and_logits():
    model32 = models.build("fcn_resnet14_w8", num_classes=4)
    model16 = models.build("fcn_resnet14_w8", num_classes=4, dtype=jnp.bfloat16)
    variables = models.init(model32, jax.random.key(0), (32, 32))
    x = jax.random.uniform(jax.random.key(1), (1, 32, 32, 3))
    out32, out16 = forward(model32, variables, x)["out"], forward(model16, variables, x)["out"]
    assert out16.dtype == jnp.float32
    assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(variables))
    assert np.abs(out16 - out32).max() <= 0.05 * np.abs(out32).max() + 1e-3


def test_unknown_arch_and_bad_classes_are_user_errors():
    with pytest.raises(JaxsegError, match="unknown arch 'fcn_resnet18'"):
        models.build("fcn_resnet18")
    with pytest.raises(JaxsegError, match="num_classes"):
        models.build("fcn_resnet50", num_classes=0)


@pytest.mark.slow
def test_remat_keeps_parameters_and_gradients():
    """Rematerialised blocks: the same variables tree, the same parameter and input gradients."""
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    plain = models.build("fcn_resnet14_w8", num_classes=5)
    variables = models.init(plain, jax.random.key(0))

    def loss(model, variables, x):
        out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"],
                             rngs={"dropout": jax.random.key(3)})
        return jnp.mean(out["out"] ** 2)

    gradient = jax.jit(jax.grad(loss, argnums=(1, 2)), static_argnums=0)
    want = gradient(plain, variables, x)
    for remat in ("convs", "full"):
        rematted = models.build("fcn_resnet14_w8", num_classes=5, remat=remat)
        assert jax.tree.structure(models.init(rematted, jax.random.key(0))) == \
            jax.tree.structure(variables)
        # Recomputing lets XLA fuse differently: float32 rounding, relative to each leaf's size.
        jax.tree.map(lambda a, b: np.testing.assert_allclose(
            a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max())),
            gradient(rematted, variables, x), want)


def test_compute_dtype_follows_the_backend(monkeypatch):
    from jaxseg import runtime

    assert runtime.compute_dtype("auto") is None  # CPU: float32
    assert runtime.compute_dtype("bfloat16") == jnp.bfloat16
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert runtime.compute_dtype("auto") == jnp.bfloat16
    assert runtime.compute_dtype("float32") is None
    with pytest.raises(JaxsegError, match="compute dtype 'fp16'"):
        runtime.compute_dtype("fp16")
    with pytest.raises(JaxsegError, match="unknown remat 'some'"):
        models.build("fcn_resnet14_w8", remat="some")


def test_pointwise_convolutions_as_matmuls_on_cpu_only_and_equal_either_way(monkeypatch):
    """The backend policy (jaxseg.runtime): 1x1 convolutions as matmuls on CPU, lax convolutions
    on GPU/TPU; the same variables and outputs either way (stride-2 downsampling included)."""
    from jaxseg import runtime

    x = jax.random.uniform(jax.random.key(1), (2, 40, 40, 3))
    assert runtime.pointwise_matmul()
    matmul = models.build("fcn_resnet14_w8", num_classes=5)
    variables = models.init(matmul, jax.random.key(0))
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert not runtime.pointwise_matmul()
    lax_model = models.build("fcn_resnet14_w8", num_classes=5)
    assert jax.tree.structure(models.init(lax_model, jax.random.key(0))) == \
        jax.tree.structure(variables)
    convolutions = lambda model: str(jax.make_jaxpr(model.apply)(variables, x)).count(  # noqa: E731
        "conv_general_dilated")
    lax_out = lax_model.apply(variables, x)["out"]
    lax_convolutions = convolutions(lax_model)
    with runtime.conv_policy(True):
        assert runtime.pointwise_matmul()
        matmul_out = matmul.apply(variables, x)["out"]
        assert convolutions(matmul) < lax_convolutions  # the 1x1 ones became matmuls
    np.testing.assert_allclose(lax_out, matmul_out, rtol=1e-5, atol=1e-5)


def test_blocks_materialized_on_cpu_only_and_equal_either_way(monkeypatch):
    """The backend policy: an optimization barrier after each bottleneck block on CPU only; the
    same outputs and parameter gradients with and without it."""
    from jaxseg import runtime

    model = models.build("fcn_resnet14_w8", num_classes=5)
    variables = models.init(model, jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (2, 40, 40, 3))

    traced = lambda: policy.traced_loss(model, variables, x, "optimization_barrier")  # noqa: E731

    assert runtime.materialize_blocks()
    barriers, (value, grads) = traced()
    assert barriers == 4  # one per block: fcn_resnet14_w8 has four
    with runtime.conv_policy(materialize_blocks=False):
        assert runtime.pointwise_matmul() and not runtime.materialize_blocks()
        barriers, (value_plain, grads_plain) = traced()
    assert barriers == 0
    np.testing.assert_allclose(value, value_plain, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert not runtime.materialize_blocks()
    assert runtime.compiler_options() == {}
