"""Flax segmentation models, torchvision-exact, and their weights in and out.

    model = jaxseg.models.fcn("fcn_resnet50", num_classes=21)
    variables = jaxseg.models.init(model, jax.random.key(0))
    logits = model.apply(variables, images, train=False)["out"]
    jaxseg.models.save("ckpt/mine", model, variables); model, variables = jaxseg.models.load("ckpt/mine")

Porting from / to torchvision and the robustness library: `jaxseg.models.port`
(`python -m jaxseg.cli.port`).
"""

from jaxseg.models.build import fcn, from_config, init, model_config
from jaxseg.models.checkpoint import load, load_config, resolve, save
from jaxseg.models.fcn import ARCHS, FCN, FCNHead, resize_bilinear
from jaxseg.models.resnet import REMAT_POLICIES, Bottleneck, ResNet

__all__ = ["ARCHS", "REMAT_POLICIES", "FCN", "FCNHead", "ResNet", "Bottleneck", "fcn", "init", "model_config",
           "from_config", "resize_bilinear", "load", "load_config", "resolve", "save"]
