"""MobileNetV3-Large's feature extractor (Howard et al. 2019) exactly as torchvision builds it for
segmentation (`mobilenet_v3_large(dilated=True).features`): inverted residual blocks with
depthwise convolutions, squeeze-excitation and hardswish, the last stage dilated instead of
strided (output stride 16).

Module names are torchvision's state-dict keys with '.' before an index written '_'
(`4/block_2/fc1` <-> `4.block.2.fc1`), the rule `jaxseg.models.port` maps by.
"""

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxseg.models.resnet import REMAT_POLICIES, conv

# torchvision's MobileNetV3 BatchNorm2d(eps=0.001, momentum=0.01).
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99

ACTIVATIONS = {"RE": nn.relu, "HS": jax.nn.hard_swish, None: lambda x: x}


class BlockConfig(NamedTuple):
    """One inverted residual block: torchvision's InvertedResidualConfig."""
    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    squeeze_excite: bool
    activation: str  # 'RE' (ReLU) or 'HS' (hardswish)
    stride: int
    dilation: int


def _divisible(value, divisor=8):
    """torchvision's _make_divisible: round to a multiple of 8, never below 90 % of `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


# mobilenet_v3_large(dilated=True): the C4 stage (blocks 13-15) dilates by 2 instead of striding.
LARGE = (
    BlockConfig(16, 3, 16, 16, False, "RE", 1, 1),
    BlockConfig(16, 3, 64, 24, False, "RE", 2, 1),  # C1
    BlockConfig(24, 3, 72, 24, False, "RE", 1, 1),
    BlockConfig(24, 5, 72, 40, True, "RE", 2, 1),  # C2: output stride 8, the 'low' features
    BlockConfig(40, 5, 120, 40, True, "RE", 1, 1),
    BlockConfig(40, 5, 120, 40, True, "RE", 1, 1),
    BlockConfig(40, 3, 240, 80, False, "HS", 2, 1),  # C3
    BlockConfig(80, 3, 200, 80, False, "HS", 1, 1),
    BlockConfig(80, 3, 184, 80, False, "HS", 1, 1),
    BlockConfig(80, 3, 184, 80, False, "HS", 1, 1),
    BlockConfig(80, 3, 480, 112, True, "HS", 1, 1),
    BlockConfig(112, 3, 672, 112, True, "HS", 1, 1),
    BlockConfig(112, 5, 672, 160, True, "HS", 2, 2),  # C4, dilated
    BlockConfig(160, 5, 960, 160, True, "HS", 1, 2),
    BlockConfig(160, 5, 960, 160, True, "HS", 1, 2),
)
LOW_INDEX = 4  # features[4]: the last block at output stride 8 (torchvision's stage C2)


def mobilenet_batch_norm(train, name, dtype):
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                        name=name, dtype=dtype)


class ConvBNActivation(nn.Module):
    """torchvision's Conv2dNormActivation: conv (no bias, padding dilation * (k - 1) / 2) '0',
    BatchNorm '1', then the activation. `groups == channels`: a depthwise convolution."""

    features: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    depthwise: bool = False
    activation: str | None = None
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x, train=False):
        if self.depthwise:  # lax's grouped convolution: the Winograd / matmul forms are dense
            pad = self.dilation * (self.kernel - 1) // 2
            x = nn.Conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride),
                        padding=((pad, pad), (pad, pad)),
                        kernel_dilation=(self.dilation, self.dilation),
                        feature_group_count=x.shape[-1], use_bias=False, dtype=self.dtype,
                        name="0")(x)
        else:
            x = conv(self.features, self.kernel, self.stride, self.dilation, name="0",
                     dtype=self.dtype)(x)
        x = checkpoint_name(x, "conv")
        x = mobilenet_batch_norm(train, "1", self.dtype)(x)
        return ACTIVATIONS[self.activation](x)


class SqueezeExcitation(nn.Module):
    """torchvision's SqueezeExcitation with a hardsigmoid gate: global average, fc1 (1x1 conv),
    ReLU, fc2, hardsigmoid, times the input."""

    squeeze: int
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x):
        scale = jnp.mean(x, axis=(1, 2), keepdims=True)
        scale = nn.relu(conv(self.squeeze, 1, bias=True, name="fc1", dtype=self.dtype)(scale))
        scale = conv(x.shape[-1], 1, bias=True, name="fc2", dtype=self.dtype)(scale)
        return x * jax.nn.hard_sigmoid(scale)


class InvertedResidual(nn.Module):
    """Expand (1x1, unless the width stays), depthwise k x k, squeeze-excite, project (1x1, no
    activation); a residual connection when the block keeps stride and width."""

    config: BlockConfig
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x, train=False):
        c = self.config
        names = (f"block_{i}" for i in range(4))  # torchvision's block.<index>, in order
        y = x
        if c.expanded != c.in_channels:
            y = ConvBNActivation(c.expanded, 1, activation=c.activation, dtype=self.dtype,
                                 name=next(names))(y, train)
        stride = 1 if c.dilation > 1 else c.stride  # dilated: the stride becomes dilation
        y = ConvBNActivation(c.expanded, c.kernel, stride, c.dilation, depthwise=True,
                             activation=c.activation, dtype=self.dtype, name=next(names))(y, train)
        if c.squeeze_excite:
            y = SqueezeExcitation(_divisible(c.expanded // 4), self.dtype, name=next(names))(y)
        y = ConvBNActivation(c.out_channels, 1, dtype=self.dtype, name=next(names))(y, train)
        return y + x if c.stride == 1 and c.in_channels == c.out_channels else y


class MobileNetV3(nn.Module):
    """features[0..16] of MobileNetV3-Large: stem (3x3 stride 2, hardswish), 15 inverted
    residual blocks, a 1x1 conv to 6 x 160 channels with hardswish. Returns {'low':
    features[4] (output stride 8), 'high': features[16] (output stride 16)}."""

    blocks: tuple = LARGE
    dtype: jnp.dtype | None = None
    remat: str = "none"

    @nn.compact
    def __call__(self, x, train=False):
        block = InvertedResidual
        if REMAT_POLICIES[self.remat] is not None:  # argument 2 (train) is a Python bool
            block = nn.remat(InvertedResidual, static_argnums=(2,),
                             policy=REMAT_POLICIES[self.remat])
        x = ConvBNActivation(self.blocks[0].in_channels, 3, 2, activation="HS", dtype=self.dtype,
                             name="0")(x, train)
        features = {}
        for index, config in enumerate(self.blocks, start=1):
            x = block(config, self.dtype, name=str(index))(x, train)
            if index == LOW_INDEX:
                features["low"] = x
        last = len(self.blocks) + 1
        x = ConvBNActivation(6 * self.blocks[-1].out_channels, 1, activation="HS",
                             dtype=self.dtype, name=str(last))(x, train)
        features["high"] = x
        return features
