"""Porting torchvision / robustness-library weights and exporting back; bad input; checkpoints."""

import os
import re

import jax
import numpy as np
import pytest
import torch

from jaxseg import JaxsegError, models
from jaxseg.models import port
from tests.helpers import paths
from tests.helpers import torch_reference as tr
from tests.helpers.cli import run_captured
from tests.helpers.forward import forward, submodule_output

REPO = str(paths.REPO)


def backbone_features(model, variables, image):
    """layer3 / layer4 features of our backbone, captured from inside the FCN."""
    return submodule_output(model, variables, image, "backbone")


def torch_backbone_features(resnet, image):
    """The same features from a torchvision ResNet-50 dilated as FCN dilates it."""
    fcn = tr.TORCH_FCN["fcn_resnet50"](weights=None, weights_backbone=None, num_classes=21,
                                       aux_loss=True).eval()
    missing = fcn.backbone.load_state_dict(resnet.state_dict(), strict=False)
    assert set(missing.unexpected_keys) == {"fc.weight", "fc.bias"} and not missing.missing_keys
    with torch.no_grad():
        out = fcn.backbone(tr.normalize(torch.from_numpy(image).permute(0, 3, 1, 2)))
    return {"layer4": out["out"].permute(0, 2, 3, 1).numpy(),
            "layer3": out["aux"].permute(0, 2, 3, 1).numpy()}


def assert_close_features(ours, ref):
    for name in ("layer3", "layer4"):
        diff = np.abs(np.asarray(ours[name]) - ref[name]).max()
        assert diff <= 1e-4 * np.abs(ref[name]).max(), (name, diff)


@pytest.fixture(scope="module")
def resnet50():
    return tr.torch_resnet("fcn_resnet50", seed=3)


@pytest.mark.slow
def test_imagenet_resnet_ports_into_the_backbone_with_fresh_heads(resnet50, tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(resnet50.state_dict(), path)
    model, variables, source = port.port(str(path), num_classes=11)
    assert (source, model.arch, model.num_classes, model.aux) == ("resnet", "fcn_resnet50", 11, True)
    image = tr.camvid_image(97, 131, index=5)
    assert_close_features(backbone_features(model, variables, image), torch_backbone_features(resnet50, image))
    head = variables["params"]["classifier"]["out"]["kernel"]
    assert head.shape == (1, 1, 512, 11) and np.abs(head).max() > 0  # initialised, not zeros
    assert np.all(variables["batch_stats"]["classifier"]["bn"]["var"] == 1.0)


def test_fresh_heads_are_initialised_like_torchvisions():
    """A backbone-only port starts its heads where a fresh torchvision FCN's would: per tensor
    the same bound and spread (kaiming-uniform weights, uniform biases, unit BN), from shapes."""
    model = models.build("fcn_resnet50", num_classes=11)
    shapes = jax.eval_shape(lambda: models.init(model, jax.random.key(0)))
    ours = port.to_state_dict(port.torch_fresh_heads(shapes, jax.random.key(1)))
    torch.manual_seed(0)
    theirs = tr.TORCH_FCN["fcn_resnet50"](weights=None, weights_backbone=None, num_classes=11,
                                          aux_loss=True).state_dict()
    heads = [k for k in theirs if k.startswith(("classifier.", "aux_classifier."))
             and not k.endswith("num_batches_tracked")]
    assert len(heads) == 14  # per head: conv, BN (4 tensors), conv + bias
    for key in heads:
        a, b = np.asarray(ours[key]), theirs[key].numpy()
        assert a.shape == b.shape, key
        if key.endswith(("running_mean", "running_var")) or ".1." in key:  # BN: exact constants
            np.testing.assert_array_equal(a, b, err_msg=key)
            continue
        bound = 1 / np.sqrt(np.prod(theirs[key.replace("bias", "weight")].shape[1:]))
        assert max(np.abs(a).max(), np.abs(b).max()) <= bound * (1 + 1e-6), key  # float32
        # uniform on +-bound: std bound / sqrt(3); both within sampling error of it
        tolerance = 4 * bound / np.sqrt(3) / np.sqrt(2 * a.size) + 1e-3 * bound
        for values in (a, b):
            assert abs(values.std() - bound / np.sqrt(3)) < max(tolerance, 0.2 * bound), key
    assert np.abs(np.asarray(ours["backbone.conv1.weight"])).max() == 0  # the port fills it


@pytest.mark.slow
def test_robustness_library_checkpoint_ports_into_the_backbone(resnet50, tmp_path):
    weights = resnet50.state_dict()
    # The layout MadryLab's robustness library saves: the model twice, plus its normaliser.
    model_state = {f"module.model.{k}": v for k, v in weights.items()}
    model_state.update({f"module.attacker.model.{k}": v.clone() for k, v in weights.items()})
    model_state["module.normalizer.new_mean"] = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    model_state["module.normalizer.new_std"] = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    path = tmp_path / "imagenet_l2_3_0.pt"
    torch.save({"model": model_state, "epoch": 90, "schedule": None}, path)

    model, variables, source = port.port(str(path))
    assert (source, model.arch, model.num_classes) == ("robustness", "fcn_resnet50", 21)
    image = tr.camvid_image(96, 128, index=7)
    assert_close_features(backbone_features(model, variables, image), torch_backbone_features(resnet50, image))


def test_robustness_checkpoint_with_other_normalisation_is_refused(resnet50):
    state = {f"module.model.{k}": v.numpy() for k, v in resnet50.state_dict().items()}
    state["module.normalizer.new_mean"] = np.array([0.4914, 0.4822, 0.4465], np.float32)  # CIFAR
    with pytest.raises(JaxsegError, match="new_mean"):
        port.port({"model": state})


@pytest.mark.slow
def test_export_round_trip_is_exact_and_loads_into_torchvision(tmp_path):
    model = models.build("fcn_resnet50", num_classes=21)
    key = jax.random.key(4)
    variables = models.init(model, key)
    # Non-default BN statistics so the round trip checks them too.
    variables["batch_stats"] = jax.tree_util.tree_map(
        lambda v: v + jax.random.uniform(key, v.shape), variables["batch_stats"])
    path = tmp_path / "exported.pth"
    port.export_pth(variables, str(path))

    back_model, back, source = port.port(str(path))
    assert source == "segmentation" and back_model == model
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    reference = tr.TORCH_FCN["fcn_resnet50"](weights=None, weights_backbone=None, num_classes=21,
                                             aux_loss=True)
    reference.load_state_dict(torch.load(path, weights_only=True), strict=True)
    image = tr.camvid_image(64, 96, index=2)
    torch_out = tr.run_torch(reference.eval(), image)
    ours = forward(model, variables, image)
    for k in ("out", "aux"):
        assert np.abs(np.asarray(ours[k]) - torch_out[k]).max() <= 1e-4 * np.abs(torch_out[k]).max()


@pytest.mark.slow
def test_checkpoint_save_load_keeps_model_and_variables(tmp_path):
    model = models.build("fcn_resnet14_w8", num_classes=5, aux=False)
    variables = models.init(model, jax.random.key(0))
    models.save(tmp_path / "ckpt", model, variables)
    loaded_model, loaded = models.load(tmp_path / "ckpt")
    assert loaded_model == model
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables, loaded)
    with pytest.raises(JaxsegError, match="already exists"):
        models.save(tmp_path / "ckpt", model, variables)
    # A training workdir holds numbered steps; load() takes the latest.
    models.save(tmp_path / "run" / "10", model, variables)
    bumped = jax.tree_util.tree_map(lambda v: v + 1, variables)
    models.save(tmp_path / "run" / "20", model, bumped)
    _, latest = models.load(tmp_path / "run")
    jax.tree_util.tree_map(np.testing.assert_array_equal, bumped, latest)
    with pytest.raises(JaxsegError, match="no such checkpoint"):
        models.load(tmp_path / "nowhere")
    with pytest.raises(JaxsegError, match="not a jaxseg checkpoint"):
        models.load(tmp_path)


# ---------------------------------------------------------------------------------------------
# Bad input through the CLI: one line on stderr naming the problem, exit code 2, nothing written.


@pytest.fixture(scope="module")
def tiny_state():
    model = models.build("fcn_resnet14_w8", num_classes=3)
    return port.to_state_dict(models.init(model, jax.random.key(0)))


def run_cli(*args):
    from jaxseg.cli import port as cli

    return run_captured(cli.main, *args)


def save_state(path, state):
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, path)
    return path


@pytest.mark.slow
def test_cli_ports_and_exports(tiny_state, tmp_path):
    source = save_state(tmp_path / "tiny.pth", tiny_state)
    result = run_cli("import", source, tmp_path / "ckpt")
    assert result.returncode == 0, result.stderr
    assert "fcn_resnet14_w8: 3 classes" in result.stdout
    result = run_cli("export", tmp_path / "ckpt", tmp_path / "back.pth")
    assert result.returncode == 0, result.stderr
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert set(back) == set(tiny_state)
    for k, v in tiny_state.items():
        np.testing.assert_array_equal(back[k].numpy(), v)
    assert (tmp_path / "back.pth").stat().st_mode & 0o777 == 0o666 & ~current_umask()
    # export refuses what import refuses: an existing file without --overwrite, a directory
    before = (tmp_path / "back.pth").read_bytes()
    result = run_cli("export", tmp_path / "ckpt", tmp_path / "back.pth")
    assert result.returncode == 2 and "already exists (use --overwrite)" in result.stderr
    assert (tmp_path / "back.pth").read_bytes() == before
    result = run_cli("export", tmp_path / "ckpt", tmp_path)
    assert result.returncode == 2 and "is a directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli("export", tmp_path / "ckpt", tmp_path / "back.pth", "--overwrite")
    assert result.returncode == 0, result.stderr


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def corrupt(state, how):
    state = dict(state)
    if how == "missing":
        del state["backbone.layer2.0.conv2.weight"]
    elif how == "extra":
        state["backbone.layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    elif how == "shape":
        state["classifier.0.weight"] = np.zeros((64, 256, 1, 3), np.float32)
    elif how == "nan":
        state["backbone.layer1.0.bn1.running_var"] = np.full_like(
            state["backbone.layer1.0.bn1.running_var"], np.nan)
    return state


@pytest.mark.slow
@pytest.mark.parametrize("how, message", [
    ("missing", "missing key 'backbone.layer2.0.conv2.weight'"),
    ("extra", "unexpected key 'backbone.layer5.0.conv1.weight'"),
    ("shape", r"key 'classifier.0.weight' has shape \(64, 256, 1, 3\), the model expects \(64, 256, 3, 3\)"),
    ("nan", r"bad.pth: key 'backbone.layer1.0.bn1.running_var' holds 8 non-finite value\(s\)"),
])
def test_cli_rejects_bad_state_dicts_and_writes_nothing(tiny_state, tmp_path, how, message):
    source = save_state(tmp_path / "bad.pth", corrupt(tiny_state, how))
    result = run_cli("import", source, tmp_path / "out")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()
    assert sorted(os.listdir(tmp_path)) == ["bad.pth"]


@pytest.mark.slow
def test_cli_rejects_missing_and_non_checkpoint_files(tmp_path):
    result = run_cli("import", tmp_path / "absent.pth", tmp_path / "out")
    assert result.returncode == 2 and "absent.pth: no such file" in result.stderr
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    result = run_cli("import", text, tmp_path / "out")
    assert result.returncode == 2 and "notes.pth: not a readable PyTorch checkpoint" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli("export", tmp_path / "nowhere", tmp_path / "x.pth")
    assert result.returncode == 2 and "no such checkpoint directory" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["notes.pth"]


def test_mismatched_arch_or_classes_are_refused(tiny_state):
    with pytest.raises(JaxsegError, match="holds a fcn_resnet14_w8 but arch fcn_resnet50"):
        port.port(dict(tiny_state), arch="fcn_resnet50")
    with pytest.raises(JaxsegError, match="has 3 classes but num_classes=21"):
        port.port(dict(tiny_state), num_classes=21)
    with pytest.raises(JaxsegError, match="not 'robustness'"):
        port.port(dict(tiny_state), source="robustness")
