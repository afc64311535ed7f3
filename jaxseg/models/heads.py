"""Segmentation heads of torchvision's DeepLabV3 (Chen et al. 2017) and LR-ASPP (Howard et al.
2019), exactly as torchvision builds them.

Module names are torchvision's state-dict keys with '.' before an index written '_'
(`classifier/0/convs_1/0` <-> `classifier.0.convs.1.0`), the rule `jaxseg.models.port` maps by.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.fcn import resize_bilinear
from jaxseg.models.resnet import batch_norm, conv

ATROUS_RATES = (12, 24, 36)  # torchvision's DeepLabHead default


class ConvBNReLU(nn.Module):
    """conv (no bias) '<first>', BatchNorm '<first + 1>', ReLU: one of torchvision's
    nn.Sequential(Conv2d, BatchNorm2d, ReLU) with the conv at index `first`."""

    features: int
    kernel: int = 1
    dilation: int = 1
    first: int = 0
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x, train=False):
        x = conv(self.features, self.kernel, dilation=self.dilation, name=str(self.first),
                 dtype=self.dtype)(x)
        return nn.relu(batch_norm(train, str(self.first + 1), self.dtype)(x))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch, one dilated 3x3 branch per rate, and an
    image-pooling branch (global average, 1x1, BN, ReLU, upsampled: from one pixel bilinear
    interpolation is a broadcast), concatenated and projected to `width` channels (1x1, BN, ReLU,
    Dropout(0.5))."""

    width: int = 256
    rates: Sequence[int] = ATROUS_RATES
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x, train=False):
        branches = [ConvBNReLU(self.width, 1, dtype=self.dtype, name="convs_0")(x, train)]
        for index, rate in enumerate(self.rates, start=1):
            branches.append(ConvBNReLU(self.width, 3, rate, dtype=self.dtype,
                                       name=f"convs_{index}")(x, train))
        pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
        pooled = ConvBNReLU(self.width, 1, first=1, dtype=self.dtype,
                            name=f"convs_{len(self.rates) + 1}")(pooled, train)
        branches.append(jnp.broadcast_to(pooled, (*x.shape[:3], self.width)))
        y = ConvBNReLU(self.width, 1, dtype=self.dtype, name="project")(
            jnp.concatenate(branches, axis=-1), train)
        return nn.Dropout(0.5, deterministic=not train)(y)


class DeepLabHead(nn.Module):
    """torchvision's DeepLabHead: ASPP '0', conv3x3 '1' (no bias), BN '2', ReLU, conv1x1 '4'."""

    num_classes: int
    width: int = 256
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x, train=False):
        x = ASPP(self.width, dtype=self.dtype, name="0")(x, train)
        x = conv(self.width, 3, name="1", dtype=self.dtype)(x)
        x = nn.relu(batch_norm(train, "2", self.dtype)(x))
        return conv(self.num_classes, 1, bias=True, name="4", dtype=self.dtype)(x)


class ImageGate(nn.Module):
    """LR-ASPP's 'scale' branch: global average '0', 1x1 conv (no bias) '1', sigmoid '2'."""

    features: int
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x):
        x = jnp.mean(x, axis=(1, 2), keepdims=True)
        return jax.nn.sigmoid(conv(self.features, 1, name="1", dtype=self.dtype)(x))


class LRASPPHead(nn.Module):
    """torchvision's LRASPPHead: the high features through a 1x1-BN-ReLU branch ('cbr') gated by
    a sigmoid of their global average ('scale': 1x1, no BN), upsampled to the low features'
    size; class scores from each (`low_classifier`, `high_classifier`), summed."""

    num_classes: int
    width: int = 128
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, low, high, train=False):
        x = ConvBNReLU(self.width, 1, dtype=self.dtype, name="cbr")(high, train)
        x = x * ImageGate(self.width, self.dtype, name="scale")(high)
        x = resize_bilinear(x, *low.shape[1:3])
        return (conv(self.num_classes, 1, bias=True, name="low_classifier", dtype=self.dtype)(low)
                + conv(self.num_classes, 1, bias=True, name="high_classifier",
                       dtype=self.dtype)(x))
