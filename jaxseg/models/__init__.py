"""Flax segmentation models, torchvision-exact, and their weights in and out.

    model = jaxseg.models.build("deeplabv3_resnet50", num_classes=21)   # any name in ARCHS
    variables = jaxseg.models.init(model, jax.random.key(0))
    logits = model.apply(variables, images, train=False)["out"]
    jaxseg.models.save("ckpt/mine", model, variables); model, variables = jaxseg.models.load("ckpt/mine")

Porting from / to torchvision and the robustness library: `jaxseg.models.port`
(`python -m jaxseg.cli.port`).
"""

from jaxseg.models.checkpoint import load, load_config, resolve, save
from jaxseg.models.fcn import FCNHead, resize_bilinear
from jaxseg.models.heads import ASPP, DeepLabHead, LRASPPHead
from jaxseg.models.mobilenet import MobileNetV3
from jaxseg.models.network import (ARCHS, TORCHVISION, SegmentationModel, build, from_config,
                                   has_aux, init, model_config)
from jaxseg.models.resnet import REMAT_POLICIES, Bottleneck, ResNet

__all__ = ["ARCHS", "TORCHVISION", "REMAT_POLICIES", "SegmentationModel", "FCNHead", "ASPP",
           "DeepLabHead", "LRASPPHead", "ResNet", "Bottleneck", "MobileNetV3", "build", "has_aux",
           "init", "model_config", "from_config", "resize_bilinear", "load", "load_config",
           "resolve", "save"]
