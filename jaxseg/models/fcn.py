"""FCN (Long et al. 2015) on a dilated ResNet, exactly as torchvision's `fcn_resnet50/101`.

Input: float pixels in [0, 1], NHWC. ImageNet normalisation is the first op, so attack budgets are
always in pixel units. Output: {'out': logits, 'aux': logits} at the input's size (float32).
"""

import functools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxseg.models.resnet import ResNet, batch_norm, conv

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUTPUT_STRIDE = 8  # of every FCN here (dilated layer3 and layer4)

# Bottleneck blocks per stage and stem width. 50/101 are torchvision's; the small ones use the
# same code with fewer blocks and narrower stages, for CPU-scale experiments and fast tests.
ARCHS = {
    "fcn_resnet50": {"blocks": (3, 4, 6, 3), "base_width": 64},
    "fcn_resnet101": {"blocks": (3, 4, 23, 3), "base_width": 64},
    "fcn_resnet26_w16": {"blocks": (2, 2, 2, 2), "base_width": 16},
    "fcn_resnet14_w8": {"blocks": (1, 1, 1, 1), "base_width": 8},
}


@functools.lru_cache(maxsize=64)
def _bilinear_matrix(out_size, in_size):
    """Rows interpolate like F.interpolate(mode='bilinear', align_corners=False)."""
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    matrix = np.zeros((out_size, in_size), np.float64)
    np.add.at(matrix, (np.arange(out_size), lo), 1.0 - frac)
    np.add.at(matrix, (np.arange(out_size), hi), frac)
    return matrix.astype(np.float32)


def resize_bilinear(x, height, width):
    """Bilinear resize of NHWC `x` to (height, width), matching PyTorch's align_corners=False.

    Two small matmuls with constant interpolation matrices: exact, and cheap to differentiate.
    """
    rows = jnp.asarray(_bilinear_matrix(height, x.shape[1]), x.dtype)
    cols = jnp.asarray(_bilinear_matrix(width, x.shape[2]), x.dtype)
    x = jnp.einsum("oh,nhwc->nowc", rows, x)
    return jnp.einsum("pw,nowc->nopc", cols, x)


class FCNHead(nn.Module):
    """conv3x3 (no bias) + BN + ReLU + Dropout(0.1) + conv1x1, as torchvision's FCNHead."""

    num_classes: int
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x, train=False):
        x = conv(x.shape[-1] // 4, 3, name="conv", dtype=self.dtype)(x)
        x = nn.relu(batch_norm(train, "bn", self.dtype)(x))
        x = nn.Dropout(0.1, deterministic=not train)(x)
        return conv(self.num_classes, 1, bias=True, name="out", dtype=self.dtype)(x)


class FCN(nn.Module):
    """Fully convolutional segmentation network, output stride 8.

    `dtype` sets the compute dtype (e.g. bfloat16); parameters stay float32 and the returned
    logits are float32. `remat`: rematerialise each bottleneck block ('none', 'convs', 'full':
    see `resnet.REMAT_POLICIES`). Neither changes the parameters.
    """

    arch: str
    num_classes: int = 21
    aux: bool = True
    dtype: jnp.dtype | None = None
    remat: str = "none"

    @nn.compact
    def __call__(self, x, train=False):
        height, width = x.shape[1:3]
        mean = jnp.asarray(IMAGENET_MEAN, x.dtype)
        std = jnp.asarray(IMAGENET_STD, x.dtype)
        x = (x - mean) / std
        if self.dtype is not None:
            x = x.astype(self.dtype)

        features = ResNet(**ARCHS[self.arch], dtype=self.dtype, remat=self.remat,
                          name="backbone")(x, train)
        logits = FCNHead(self.num_classes, self.dtype, name="classifier")(features["layer4"], train)
        outputs = {"out": logits}
        if self.aux:
            head = FCNHead(self.num_classes, self.dtype, name="aux_classifier")
            outputs["aux"] = head(features["layer3"], train)
        return {
            key: resize_bilinear(value.astype(jnp.float32), height, width)
            for key, value in outputs.items()
        }
