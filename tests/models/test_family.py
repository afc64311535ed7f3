"""torchvision's segmentation family beyond FCN: DeepLabV3 (ResNet / MobileNetV3-Large) and
LR-ASPP. Parity with torchvision on randomised weights and BN statistics, state-dict layouts of
all six models, ports both ways (full models and ImageNet backbones), and the convolution forms
on ASPP's dilations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxseg import JaxsegError, models, runtime
from jaxseg.models import port
from tests.helpers import torch_reference as tr
from tests.helpers.forward import forward, submodule_output
from tests.models.test_fcn import assert_parity


def torch_shape(flax_shape):
    return flax_shape[::-1][:2] + flax_shape[:2] if len(flax_shape) == 4 else flax_shape


@pytest.mark.parametrize("arch", models.TORCHVISION)
def test_every_torchvision_model_has_its_state_dict_layout(arch):
    """Our variables, named the torch way, are exactly torchvision's keys with its shapes (with
    and without the aux head): what makes import and `strict=True` export possible."""
    for aux in ((True, False) if models.has_aux(arch) else (False,)):
        theirs = tr.TORCH_MODELS[arch](weights=None, weights_backbone=None, num_classes=7,
                                       **({"aux_loss": aux} if models.has_aux(arch) else {}))
        theirs = {k: tuple(v.shape) for k, v in theirs.state_dict().items()
                  if not k.endswith("num_batches_tracked")}
        model = models.build(arch, num_classes=7, aux=aux)
        shapes = jax.eval_shape(lambda: models.init(model, jax.random.key(0)))
        ours = {}
        for key, (collection, path) in port.torch_layout(shapes).items():
            leaf = shapes[collection]
            for part in path:
                leaf = leaf[part]
            ours[key] = torch_shape(leaf.shape)
        assert ours == theirs, (arch, aux)


PARITY = [pytest.param("deeplabv3_resnet50", marks=pytest.mark.slow),
          pytest.param("deeplabv3_resnet101", marks=pytest.mark.slow),
          "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]


@pytest.mark.parametrize("arch", PARITY)
def test_ported_model_matches_torchvision_and_exports_back_exactly(arch, tmp_path):
    """An odd input size (97x131: every stride rounds), aux head included; the export loads into
    torchvision with strict=True and gives back every tensor bit for bit."""
    reference = tr.torch_model(arch, seed=1)
    image = tr.camvid_image(97, 131, index=2)
    model, variables, source = port.port(tr.state_numpy(reference))
    assert (source, model.arch, model.num_classes, model.aux) == \
        ("segmentation", arch, 21, models.has_aux(arch))
    out = forward(model, variables, image)
    assert set(out) == ({"out", "aux"} if models.has_aux(arch) else {"out"})
    assert_parity(out, tr.run_torch(reference, image))

    path = tmp_path / "exported.pth"
    port.export_pth(variables, path)
    fresh = tr.TORCH_MODELS[arch](weights=None, weights_backbone=None, num_classes=21,
                                  **({"aux_loss": True} if models.has_aux(arch) else {}))
    fresh.load_state_dict(torch.load(path, weights_only=True), strict=True)
    for key, value in reference.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key].numpy(), value.numpy(), key)


@pytest.mark.parametrize("arch", ["fcn_resnet50", "deeplabv3_mobilenet_v3_large"])
def test_without_aux_head_and_with_other_classes_matches_torchvision(arch):
    reference = tr.torch_model(arch, seed=2, num_classes=5, aux=False)
    image = tr.camvid_image(64, 80, index=3)
    model, variables, _ = port.port(tr.state_numpy(reference))
    assert (model.aux, model.num_classes) == (False, 5)
    out = forward(model, variables, image)
    assert set(out) == {"out"}
    assert_parity(out, tr.run_torch(reference, image))


def test_imagenet_mobilenet_ports_into_the_backbone_and_the_head_is_named():
    """features.* of torchvision's ImageNet MobileNetV3-Large become the dilated backbone (its
    classifier dropped); the heads start fresh; without an arch the port names the choices."""
    imagenet = tr.torch_backbone("lraspp_mobilenet_v3_large", seed=4)
    state = tr.state_numpy(imagenet)
    with pytest.raises(JaxsegError, match="--arch deeplabv3_mobilenet_v3_large or "
                                          "lraspp_mobilenet_v3_large"):
        port.port(state)
    with pytest.raises(JaxsegError, match="holds a mobilenet_v3_large backbone but arch "
                                          "deeplabv3_resnet50"):
        port.port(state, arch="deeplabv3_resnet50")
    model, variables, source = port.port(state, arch="lraspp_mobilenet_v3_large", num_classes=11)
    assert (source, model.arch, model.num_classes, model.aux) == \
        ("mobilenet", "lraspp_mobilenet_v3_large", 11, False)

    reference = tr.TORCH_MODELS["lraspp_mobilenet_v3_large"](weights=None, weights_backbone=None,
                                                            num_classes=11).eval()
    result = reference.backbone.load_state_dict(
        {k.replace("features.", "", 1): v for k, v in imagenet.state_dict().items()
         if k.startswith("features.")}, strict=True)
    assert not result.missing_keys
    image = tr.camvid_image(97, 131, index=4)
    with torch.no_grad():
        theirs = reference.backbone(tr.normalize(torch.from_numpy(image).permute(0, 3, 1, 2)))
    ours = submodule_output(model, variables, image, "backbone")
    for name in ("low", "high"):
        ref = theirs[name].permute(0, 2, 3, 1).numpy()
        assert np.abs(np.asarray(ours[name]) - ref).max() <= 1e-4 * np.abs(ref).max(), name
    head = variables["params"]["classifier"]["low_classifier"]["kernel"]
    assert head.shape == (1, 1, 40, 11) and np.abs(head).max() > 0


@pytest.mark.parametrize("arch", ["deeplabv3_resnet50", "lraspp_mobilenet_v3_large"])
def test_fresh_heads_are_initialised_like_torchvisions(arch):
    """A backbone-only port starts DeepLabV3's / LR-ASPP's heads where torchvision's fresh ones
    start: the same bounds per tensor (PyTorch's default init), unit BN."""
    model = models.build(arch, num_classes=11, aux=models.has_aux(arch))
    shapes = jax.eval_shape(lambda: models.init(model, jax.random.key(0)))
    ours = port.to_state_dict(port.torch_fresh_heads(shapes, jax.random.key(1)))
    torch.manual_seed(0)
    theirs = tr.TORCH_MODELS[arch](weights=None, weights_backbone=None, num_classes=11,
                                   **({"aux_loss": True} if models.has_aux(arch) else {}))
    theirs = theirs.state_dict()
    heads = [k for k in theirs if k.startswith(("classifier.", "aux_classifier."))
             and not k.endswith("num_batches_tracked")]
    assert heads and set(heads) <= set(ours)
    for key in heads:
        a, b = np.asarray(ours[key]), theirs[key].numpy()
        assert a.shape == b.shape, key
        module = key.rsplit(".", 1)[0]
        if module + ".running_mean" in theirs:  # BatchNorm: exact constants
            np.testing.assert_array_equal(a, b, err_msg=key)
            continue
        bound = 1 / np.sqrt(np.prod(theirs[module + ".weight"].shape[1:]))  # 1 / sqrt(fan_in)
        for values in (a, b):  # U(-bound, bound), spread over most of it where there are many
            assert np.abs(values).max() <= bound * (1 + 1e-6), key
            if values.size >= 64:
                assert np.abs(values).max() > 0.8 * bound, key


def test_one_model_instance_per_configuration():
    """Programs take `model.apply` as a static argument: a second checkpoint of the same
    configuration must give the same bound method (equal instances' methods hash apart)."""
    a = models.build("deeplabv3_resnet14_w8", num_classes=7)
    assert a is models.build("deeplabv3_resnet14_w8", num_classes=7)
    assert a.apply == models.from_config(models.model_config(a)).apply
    assert hash(a.apply) == hash(models.build("deeplabv3_resnet14_w8", num_classes=7).apply)
    for other in (models.build("deeplabv3_resnet14_w8", num_classes=8),
                  models.build("deeplabv3_resnet14_w8", num_classes=7, aux=False),
                  models.build("deeplabv3_resnet14_w8", num_classes=7, dtype=jnp.bfloat16),
                  models.build("deeplabv3_resnet14_w8", num_classes=7, remat="full")):
        assert other is not a and other != a


def test_small_deeplabv3_and_lraspp_run_and_lraspp_has_no_aux_head():
    for arch, width in (("deeplabv3_resnet14_w8", 32), ("deeplabv3_resnet26_w16", 64)):
        model = models.build(arch, num_classes=7)
        shapes = jax.eval_shape(lambda m=model: models.init(m, jax.random.key(0), (40, 56)))
        head = shapes["params"]["classifier"]
        assert head["0"]["project"]["0"]["kernel"].shape == (1, 1, 5 * width, width)
        assert shapes["params"]["aux_classifier"]["conv"]["kernel"].shape[-1] == width
    model = models.build("deeplabv3_resnet14_w8", num_classes=7)
    variables = models.init(model, jax.random.key(0), (40, 56))
    out = forward(model, variables, jnp.full((2, 41, 57, 3), 0.5))
    assert {k: v.shape for k, v in out.items()} == {"out": (2, 41, 57, 7), "aux": (2, 41, 57, 7)}
    with pytest.raises(JaxsegError, match="lraspp_mobilenet_v3_large has no auxiliary head"):
        models.build("lraspp_mobilenet_v3_large", aux=True)
    assert not models.build("lraspp_mobilenet_v3_large", aux=None).aux


def test_aspp_dilations_give_the_same_model_in_every_convolution_form():
    """ASPP's rates 12 / 24 / 36 on a 16x20 feature map: Winograd's dilated form (12), a
    dilation past one side (24) and past both (36: only the centre tap), and lax's convolution,
    all the same outputs and parameter gradients to float32 rounding."""
    from tests.helpers import policy

    model = models.build("deeplabv3_resnet14_w8", num_classes=5)
    variables = models.init(model, jax.random.key(0), (128, 160))
    x = jax.random.uniform(jax.random.key(1), (1, 128, 160, 3))
    results = {}
    for choice in (True, False):
        with runtime.conv_policy(winograd_convs=choice):
            _, results[choice] = policy.traced_loss(model, variables, x, "conv_general_dilated")
    (value, grads), (value_lax, grads_lax) = results[True], results[False]
    np.testing.assert_allclose(value, value_lax, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_lax)):
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-4 * float(jnp.max(jnp.abs(b))) + 1e-9


@pytest.mark.slow
def test_mobilenet_remat_and_bfloat16_keep_parameters_and_results():
    """Rematerialised inverted residual blocks: the same variables and parameter gradients;
    bfloat16 compute: float32 logits close to float32's."""
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    plain = models.build("lraspp_mobilenet_v3_large", num_classes=5, aux=None)
    variables = models.init(plain, jax.random.key(0), (32, 32))

    def loss(model, variables, x):
        out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return jnp.mean(out["out"] ** 2)

    gradient = jax.jit(jax.grad(loss, argnums=1), static_argnums=0)
    rematted = models.build("lraspp_mobilenet_v3_large", num_classes=5, aux=None, remat="full")
    assert jax.tree.structure(jax.eval_shape(lambda: models.init(
        rematted, jax.random.key(0), (32, 32)))) == jax.tree.structure(variables)
    want = gradient(plain, variables, x)
    # Recomputing lets XLA fuse differently: float32 rounding, relative to the gradient's size
    # (some leaves, e.g. biases under a following BatchNorm, are zero up to rounding).
    scale = max(float(np.abs(leaf).max()) for leaf in jax.tree.leaves(want))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale),
                 gradient(rematted, variables, x), want)
    half = models.build("lraspp_mobilenet_v3_large", num_classes=5, aux=None,
                        dtype=jnp.bfloat16)
    out32, out16 = forward(plain, variables, x)["out"], forward(half, variables, x)["out"]
    assert out16.dtype == jnp.float32
    assert np.abs(out16 - out32).max() <= 0.05 * np.abs(out32).max() + 1e-3
