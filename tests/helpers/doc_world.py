"""What the docs' shell blocks assume a reader has, at the smallest size, and the `python` that
the doc walk (tests/test_doc_walk.py) puts first on the PATH: it runs each documented command
as written, with its budget cut (a step or two, two images, the smallest model) and absolute
data paths moved into the test's folder.

A reader brings downloaded torchvision / robustness-library weights, their own checkpoints, a
photo with its label map and COCO at /data/coco; here each is a stand-in of the same format
holding the smallest model (fcn_resnet14_w8, which the port recognises by its shapes)."""

import importlib.util
import json
import os
import shlex
import sys

import numpy as np
from PIL import Image

from tests.helpers import paths

MODEL = "fcn_resnet14_w8"
CAMVID_CLASSES = 11
COCO_CLASSES = 21  # VOC's 20 + background


def smoke_train_flags():
    """experiments/camvid.py's --smoke training flags (the smallest model, 2 steps, 2 images
    evaluated): a training command of the docs trains as the experiment's smoke run does."""
    spec = importlib.util.spec_from_file_location(
        "camvid_experiment", paths.REPO / "experiments" / "camvid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.SMOKE_TRAIN)


# Extra flags for configs at COCO's scale (short sides 260-1040 px, eval padded to 520x1664).
COCO_TRAIN = ["--config.epochs=none", "--config.data.short_side_range=(48,64)",
              "--config.data.eval_short_side=48", "--config.data.eval_pad_to=(48,160)",
              "--config.data.workers=0", "--config.eval.batch_size=2"]
CAPS = {"evaluate.py": {"--steps": 3, "--restarts": 1},  # SEA's reduced-eps schedule needs 3
        "synthesize.py": {"--steps": 2}}
SIZES = {"--short-side": "48", "--pad-to": "48,160"}
# The experiment drivers: each runs its every step at the smallest size with --smoke.
DRIVERS = ("experiments/camvid.py", "experiments/alignment_sweep.py",
           "experiments/architecture.py")


def smaller(argv, env=os.environ):
    """argv (after `python`) of a documented command -> the same command at the smallest size."""
    argv = [relocate(a, env) for a in argv]
    program = argv[1] if argv[0] == "-m" else argv[0]
    out, i = [], 0
    while i < len(argv):
        flag = argv[i]
        cap = CAPS.get(program, {}).get(flag)
        if cap is not None and i + 1 < len(argv):
            out += [flag, str(min(int(argv[i + 1]), cap))]
            i += 2
        elif flag in SIZES and i + 1 < len(argv):
            out += [flag, SIZES[flag]]
            i += 2
        else:
            out.append(flag)
            i += 1
    if program == "train.py":
        out += smoke_train_flags()
        if any("coco" in a for a in out):
            out += COCO_TRAIN
    elif program == "evaluate.py":
        out += ["--num-images", "2", "--batch-size", "2"]
    elif program == "synthesize.py" and "--steps" not in out:
        out += ["--steps", "2"]
    elif program in DRIVERS:
        out.append("--smoke")
    elif program == "jaxseg.cli.prepare" and "--download" in out:
        out += ["--mirror", env["DOC_MIRROR"]]
        if "voc" in out and env.get("DOC_VOC_MD5"):
            out = ["-c", WITH_VOC_MD5, env["DOC_VOC_MD5"], *out[2:]]
    return out


# VOC's published MD5 is that of the real archive: against the mirror's, prepare runs with the
# mirror archive's MD5 in its place (tests/data/test_prepare.py checks the published one).
WITH_VOC_MD5 = (
    "import dataclasses, runpy, sys\n"
    "from jaxseg.data import prepare\n"
    "voc = prepare.SOURCES['voc']\n"
    "archive = dataclasses.replace(voc.archives[0], md5=sys.argv.pop(1))\n"
    "prepare.SOURCES['voc'] = dataclasses.replace(voc, archives=(archive,))\n"
    "runpy.run_module('jaxseg.cli.prepare', run_name='__main__')\n")


def relocate(arg, env):
    """Absolute data paths of the docs (/data/coco, /scratch/...) -> under DOC_WORLD."""
    for root in ("/data/", "/scratch/"):
        at = arg.find(root)
        if at >= 0 and (at == 0 or arg[at - 1] in ":="):
            return arg[:at] + os.path.join(env["DOC_WORLD"], arg[at + 1:])
    return arg


def install_python(bin_dir, *more):
    """A `python` executable in bin_dir (and at each path of `more`) that runs smaller(argv)."""
    script = (f"#!{sys.executable}\nimport os, sys\nsys.path.insert(0, {str(paths.REPO)!r})\n"
              "from tests.helpers.doc_world import smaller\n"
              "argv = smaller(sys.argv[1:])\n"
              "print('+ python ' + ' '.join(map(__import__('shlex').quote, argv)), flush=True)\n"
              "os.execv(sys.executable, [sys.executable, *argv])\n")
    for path in [os.path.join(bin_dir, "python"), *more]:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(script)
        os.chmod(path, 0o755)


def quote(argv):
    return " ".join(shlex.quote(a) for a in argv)


# ---------------------------------------------------------------------------------------------
# Stand-ins for what a reader brings.


def tiny_fcn(num_classes, seed):
    import jax

    from jaxseg import models
    model = models.build(MODEL, num_classes=num_classes)
    return model, models.init(model, jax.random.key(seed))


def weights(folder):
    """The README's downloads: torchvision's COCO FCN and DeepLabV3, its ImageNet ResNet and
    MobileNetV3 (backbones only) and a robustness-library ImageNet checkpoint, each in its
    source's layout."""
    import jax
    import torch

    from jaxseg import models
    from jaxseg.models import port
    tensors = lambda state: {k: torch.from_numpy(np.array(v)) for k, v in state.items()}  # noqa: E731
    _, variables = tiny_fcn(COCO_CLASSES, 0)
    state = tensors(port.to_state_dict(variables))
    torch.save(state, os.path.join(folder, "fcn_resnet50_coco-1167a1af.pth"))
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    width = backbone["layer4.0.conv3.weight"].shape[0]
    backbone |= {"fc.weight": torch.zeros(1000, width), "fc.bias": torch.zeros(1000)}
    torch.save(backbone, os.path.join(folder, "resnet50-0676ba61.pth"))
    robust = {f"module.model.{k}": v for k, v in backbone.items()}
    robust |= {f"module.attacker.model.{k}": v.clone() for k, v in backbone.items()}
    robust["module.normalizer.new_mean"] = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    robust["module.normalizer.new_std"] = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.save({"model": robust, "epoch": 90}, os.path.join(folder, "imagenet_l2_3_0.pt"))
    # torchvision's COCO DeepLabV3 (the small one on the same code) and its ImageNet
    # MobileNetV3-Large (the real architecture: its layout is what the port recognises).
    deeplab = models.build("deeplabv3_resnet14_w8", num_classes=COCO_CLASSES)
    state = tensors(port.to_state_dict(models.init(deeplab, jax.random.key(4))))
    torch.save(state, os.path.join(folder, "deeplabv3_resnet50_coco-cd0a2569.pth"))
    mobilenet = models.build("lraspp_mobilenet_v3_large", num_classes=COCO_CLASSES, aux=False)
    state = tensors(port.to_state_dict(models.init(mobilenet, jax.random.key(5))))
    imagenet = {"features." + k[len("backbone."):]: v for k, v in state.items()
                if k.startswith("backbone.")}
    imagenet |= {"classifier.0.weight": torch.zeros(1280, 960), "classifier.0.bias":
                 torch.zeros(1280), "classifier.3.weight": torch.zeros(1000, 1280),
                 "classifier.3.bias": torch.zeros(1000)}
    torch.save(imagenet, os.path.join(folder, "mobilenet_v3_large-8738ca79.pth"))


def checkpoints(folder):
    """A reader's own trained models: ckpt/std and ckpt/at (CamVid), ckpt/at50 (COCO)."""
    from jaxseg import models
    for name, classes, seed in (("std", CAMVID_CLASSES, 1), ("at", CAMVID_CLASSES, 2),
                                ("at50", COCO_CLASSES, 3)):
        model, variables = tiny_fcn(classes, seed)
        models.save(os.path.join(folder, "ckpt", name), model, variables)


def photo(folder, size=(48, 64)):
    """photo.png and its CamVid label map mask.png."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    label = np.kron(rng.integers(0, CAMVID_CLASSES, (size[0] // 8, size[1] // 8)),
                    np.ones((8, 8), int)).astype(np.uint8)
    Image.fromarray(image).save(os.path.join(folder, "photo.png"))
    Image.fromarray(label).save(os.path.join(folder, "mask.png"))


def coco(root, size=(64, 96)):
    """COCO 2017's layout: 4 train and 2 val images, each with two VOC-class objects large
    enough (>= 1000 px) to be kept for training."""
    h, w = size
    rng = np.random.default_rng(1)
    for split, ids in (("train", [1, 2, 3, 4]), ("val", [5, 6])):
        os.makedirs(os.path.join(root, f"{split}2017"), exist_ok=True)
        images, annotations = [], []
        for i in ids:
            name = f"{i:012d}.jpg"
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
                os.path.join(root, f"{split}2017", name))
            images.append({"id": i, "file_name": name, "height": h, "width": w})
            for n, (category, x0, y0) in enumerate(((3, 4, 4), (1, 50, 20))):  # car, person
                polygon = [x0, y0, x0 + 40, y0, x0 + 40, y0 + 36, x0, y0 + 36]
                annotations.append({"id": 10 * i + n, "image_id": i, "category_id": category,
                                    "segmentation": [[float(v) for v in polygon]],
                                    "area": 1440.0, "iscrowd": 0, "bbox": [x0, y0, 40, 36]})
        os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
        with open(os.path.join(root, "annotations", f"instances_{split}2017.json"), "w") as f:
            json.dump({"images": images, "annotations": annotations,
                       "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]}, f)
