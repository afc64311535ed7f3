"""Every command takes every model by name: PGD adversarial training, evaluation (SEA on
DeepLabV3; PGD on LR-ASPP, whose MobileNetV3 compiles slowly: SEA's programs are the same for
every model) and inpainting on DeepLabV3 (ResNet) and LR-ASPP (MobileNetV3-Large), in-process at
the smallest size (the models' parity with torchvision: tests/models/test_family.py)."""

import json
import os

import numpy as np
import pytest

from jaxseg import models
from tests.helpers import paths
from tests.helpers.cli import run_cli

REPO = str(paths.REPO)
DATA = ["--data", "synthetic", "--data-arg", "size=(32,32)", "--num-images", "2",
        "--batch-size", "2"]


@pytest.mark.slow
@pytest.mark.parametrize("arch, attack, stored", [
    ("deeplabv3_resnet14_w8", ["sea", "--restarts", "1"], "sea_apgd_red-mce"),
    ("lraspp_mobilenet_v3_large", ["pgd"], "pgd")])
def test_train_evaluate_and_synthesize_take_the_model(arch, attack, stored, tmp_path, capsys):
    from jaxseg.cli import evaluate, synthesize, train

    workdir = tmp_path / "w"
    assert run_cli(train.main, "--config", os.path.join(REPO, "configs", "quick.py"),
                   "--workdir", workdir, f"--config.model.arch={arch}",
                   "--config.adv.mode=pgd", "--config.adv.steps=1", "--config.eval.attack=",
                   "--config.eval.num_images=2", "--config.eval.batch_size=2") == 0
    model, _ = models.load(str(workdir))
    assert (model.arch, model.aux) == (arch, models.has_aux(arch))
    assert f"trained {arch} to step 2" in capsys.readouterr().out

    out = tmp_path / "eval"
    assert run_cli(evaluate.main, "--checkpoint", workdir, "--name", "M", *DATA,
                   "--attack", *attack, "--steps", "3", "--eps", "4/255",
                   "--output", out) == 0
    results = json.loads((out / "results.json").read_text())["results"]["M"]
    assert {"clean", attack[0]} <= set(results)
    assert results[attack[0]]["miou"] <= results["clean"]["miou"]
    stored = np.load(out / "per_image" / "M" / f"{stored}.npz")
    assert json.loads(str(stored["meta_fingerprint"]))["model"]["arch"] == arch

    assert run_cli(synthesize.main, "inpaint", "--checkpoint", workdir, "--data", "synthetic",
                   "--data-arg", "size=(32,32)", "--index", "0", "--mask", "random:2",
                   "--steps", "2", "--output", tmp_path / "inpaint") == 0
    assert (tmp_path / "inpaint" / "grid.png").exists()
