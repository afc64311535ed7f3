"""torchvision's segmentation networks by name: FCN (Long et al. 2015) and DeepLabV3 (Chen et al.
2017) on a dilated ResNet (output stride 8), DeepLabV3 and LR-ASPP (Howard et al. 2019) on a
dilated MobileNetV3-Large (output stride 16), each exactly as torchvision builds it; plus narrower
ResNets on the same code for CPU-scale experiments and fast tests.

Input: float pixels in [0, 1], NHWC. ImageNet normalisation is the first op, so attack budgets are
always in pixel units. Output: {'out': logits} and, with `aux`, {'aux': logits} (an FCNHead on
the backbone's lower features), at the input's size (float32).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg import runtime
from jaxseg.errors import JaxsegError
from jaxseg.models.fcn import FCNHead, resize_bilinear
from jaxseg.models.heads import DeepLabHead, LRASPPHead
from jaxseg.models.mobilenet import MobileNetV3
from jaxseg.models.resnet import REMAT_POLICIES, ResNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Bottleneck blocks per stage and stem width. 50/101 are torchvision's; the small ones use the
# same code with fewer blocks and narrower stages.
RESNETS = {
    "resnet50": {"blocks": (3, 4, 6, 3), "base_width": 64},
    "resnet101": {"blocks": (3, 4, 23, 3), "base_width": 64},
    "resnet26_w16": {"blocks": (2, 2, 2, 2), "base_width": 16},
    "resnet14_w8": {"blocks": (1, 1, 1, 1), "base_width": 8},
}


def _arch(head, backbone, **spec):
    return {"head": head, "backbone": backbone, **spec}


# name -> head ('fcn', 'deeplabv3', 'lraspp'), backbone ('resnet' with its blocks and width, or
# 'mobilenet_v3_large'), head width (DeepLabV3's ASPP: 256 in torchvision, 4 x the stem width on
# the narrow ResNets), and whether the model has an auxiliary head (LR-ASPP has none).
ARCHS = {
    **{f"fcn_{name}": _arch("fcn", "resnet", **spec) for name, spec in RESNETS.items()},
    **{f"deeplabv3_{name}": _arch("deeplabv3", "resnet", head_width=4 * spec["base_width"],
                                  **spec) for name, spec in RESNETS.items()},
    "deeplabv3_mobilenet_v3_large": _arch("deeplabv3", "mobilenet_v3_large", head_width=256),
    "lraspp_mobilenet_v3_large": _arch("lraspp", "mobilenet_v3_large", head_width=128,
                                       aux=False),
}
# The six torchvision ships (the others are jaxseg's narrow variants).
TORCHVISION = ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
               "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")


def arch_backbone(arch):
    """'resnet50', ..., or 'mobilenet_v3_large': the backbone `arch` is built on."""
    spec = ARCHS[arch]
    if spec["backbone"] == "resnet":
        return next(name for name, r in RESNETS.items()
                    if r["blocks"] == spec["blocks"] and r["base_width"] == spec["base_width"])
    return spec["backbone"]


def has_aux(arch):
    """Whether `arch` can have an auxiliary head (torchvision's LR-ASPP has none)."""
    return ARCHS[arch].get("aux", True)


class SegmentationModel(nn.Module):
    """A segmentation network by `arch` (a key of ARCHS).

    `dtype` sets the compute dtype (e.g. bfloat16); parameters stay float32 and the returned
    logits are float32. `remat`: rematerialise each residual block ('none', 'convs', 'full':
    see `resnet.REMAT_POLICIES`). Neither changes the parameters.
    """

    arch: str
    num_classes: int = 21
    aux: bool = True
    dtype: jnp.dtype | None = None
    remat: str = "none"

    @nn.compact
    def __call__(self, x, train=False):
        spec = ARCHS[self.arch]
        height, width = x.shape[1:3]
        mean = jnp.asarray(IMAGENET_MEAN, x.dtype)
        std = jnp.asarray(IMAGENET_STD, x.dtype)
        x = (x - mean) / std
        if self.dtype is not None:
            x = x.astype(self.dtype)

        if spec["backbone"] == "resnet":
            features = ResNet(spec["blocks"], spec["base_width"], dtype=self.dtype,
                              remat=self.remat, name="backbone")(x, train)
            low, high = features["layer3"], features["layer4"]
        else:
            features = MobileNetV3(dtype=self.dtype, remat=self.remat, name="backbone")(x, train)
            low, high = features["low"], features["high"]

        if spec["head"] == "fcn":
            logits = FCNHead(self.num_classes, self.dtype, name="classifier")(high, train)
        elif spec["head"] == "deeplabv3":
            logits = DeepLabHead(self.num_classes, spec["head_width"], self.dtype,
                                 name="classifier")(high, train)
        else:
            logits = LRASPPHead(self.num_classes, spec["head_width"], self.dtype,
                                name="classifier")(low, high, train)
        outputs = {"out": logits}
        if self.aux:
            head = FCNHead(self.num_classes, self.dtype, name="aux_classifier")
            outputs["aux"] = head(low, train)
        return {key: resize_bilinear(value.astype(jnp.float32), height, width)
                for key, value in outputs.items()}


def build(arch, num_classes=21, aux=True, dtype=None, remat="none"):
    """A model by architecture name (see `ARCHS`); `aux`: with the auxiliary head (None: the
    arch's default), `dtype`: compute dtype (None = fp32), `remat`: per-block
    rematerialisation (see `resnet.REMAT_POLICIES`)."""
    if arch not in ARCHS:
        raise JaxsegError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if remat not in REMAT_POLICIES:
        raise JaxsegError(f"unknown remat {remat!r}; choose one of {', '.join(REMAT_POLICIES)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise JaxsegError(f"num_classes must be a positive integer, got {num_classes!r}")
    aux = has_aux(arch) if aux is None else bool(aux)
    if aux and not has_aux(arch):
        raise JaxsegError(f"{arch} has no auxiliary head (as in torchvision): set aux to False "
                          "(--config.model.aux=False)")
    return _shared_model(arch, num_classes, aux, dtype, remat)


@functools.lru_cache(maxsize=None)
def _shared_model(arch, num_classes, aux, dtype, remat):
    """One instance per configuration. Jitted programs take `model.apply` as a static argument,
    and the bound methods of two equal instances hash apart: evaluating a second checkpoint of
    the same architecture would trace and compile every program again."""
    return SegmentationModel(arch=arch, num_classes=num_classes, aux=aux, dtype=dtype,
                             remat=remat)


def init(model, key, image_size=(64, 64)):
    """Fresh variables {'params', 'batch_stats'} with Flax's default initialisers (a port from
    torchvision starts fresh heads as torchvision does: `port.torch_fresh_heads`). The values
    depend on `key` only: `image_size` is the input the shapes are traced with (tested)."""
    return _init(model, key, tuple(image_size))


@functools.partial(runtime.jit, run_once=True, static_argnames=("model", "image_size"))
def _init(model, key, image_size):
    # one compiled initialiser per model and size, compiled for speed of compilation
    return model.init(key, jnp.zeros((1, *image_size, 3), jnp.float32), train=False)


def model_config(model):
    """The plain dict a checkpoint stores to rebuild `model`."""
    return {"arch": model.arch, "num_classes": model.num_classes, "aux": model.aux}


def from_config(config, dtype=None, remat="none"):
    return build(config["arch"], int(config["num_classes"]), bool(config.get("aux", True)),
                 dtype, remat)
