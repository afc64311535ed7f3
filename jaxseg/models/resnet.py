"""ResNet backbones (bottleneck blocks) laid out exactly as torchvision builds them.

Module names mirror torchvision's state-dict keys (`layer3_0.downsample_conv` <->
`layer3.0.downsample.0`) so that `jaxseg.models.port` can map weights with one rule. Padding is
always explicit and symmetric: 'SAME' pads asymmetrically on strided convolutions and would break
parity with PyTorch.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxseg import runtime
from jaxseg.models import winograd

# Rematerialisation per bottleneck block (`model.remat`): what the backward pass keeps of a
# block's forward; the rest is recomputed. 'full': only the block's input; 'convs': also the
# convolution / matmul outputs (BN and ReLU are recomputed, cheap next to the convolutions).
REMAT_POLICIES = {
    "none": None,
    "convs": jax.checkpoint_policies.save_only_these_names("conv"),
    "full": jax.checkpoint_policies.nothing_saveable,
}

# torch BatchNorm2d(eps=1e-5, momentum=0.1) == flax BatchNorm(epsilon=1e-5, momentum=0.9).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


class PointwiseConv(nn.Module):
    """A 1x1 convolution (stride s: every s-th pixel) written as a matmul over channels. Same
    parameters as nn.Conv (`kernel` [1, 1, in, out], `bias`), same initialisers and values;
    faster on XLA:CPU forward and backward (figures: docs/performance.md)."""

    features: int
    stride: int = 1
    use_bias: bool = False
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (1, 1, x.shape[-1], self.features), jnp.float32)
        bias = (self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
                if self.use_bias else None)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if self.stride > 1:
            x = x[:, ::self.stride, ::self.stride, :]
        # A 2-D matmul, not a 4-D einsum: autodiff of the 4-D form contracts over (n, h, w) for
        # the weight gradient, and XLA:CPU then writes the output gradient out transposed
        # ([out, n*h*w], fused into BN's backward) for every 1x1 convolution (~10 % of a step)
        rows = x.reshape(-1, x.shape[-1])
        y = (rows @ kernel[0, 0]).reshape(*x.shape[:-1], self.features)
        return y if bias is None else y + bias


def conv(features, kernel, stride=1, dilation=1, bias=False, name=None, dtype=None):
    """A torch-style Conv2d: explicit symmetric padding of dilation * (kernel - 1) / 2."""
    if kernel == 1 and runtime.pointwise_matmul():  # the backend policy: jaxseg.runtime
        return PointwiseConv(features, stride, bias, dtype, name=name)
    if (kernel, stride) == (3, 1):  # Winograd's or lax's, per the backend policy and size
        return winograd.Conv3x3(features, dilation, bias, dtype, name=name)
    pad = dilation * (kernel - 1) // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        kernel_dilation=(dilation, dilation),
        use_bias=bias,
        name=name,
        dtype=dtype,
    )


def batch_norm(train, name=None, dtype=None):
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        name=name,
        dtype=dtype,
    )


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5): the stride sits on the 3x3 convolution."""

    width: int
    stride: int = 1
    dilation: int = 1
    downsample: bool = False
    dtype: jnp.dtype | None = None
    expansion = 4

    @nn.compact
    def __call__(self, x, train=False):
        out_features = self.width * self.expansion
        named = lambda y: checkpoint_name(y, "conv")  # noqa: E731 (for the 'convs' remat policy)
        y = named(conv(self.width, 1, name="conv1", dtype=self.dtype)(x))
        y = nn.relu(batch_norm(train, "bn1", self.dtype)(y))
        y = named(conv(self.width, 3, self.stride, self.dilation, name="conv2",
                       dtype=self.dtype)(y))
        y = nn.relu(batch_norm(train, "bn2", self.dtype)(y))
        y = named(conv(out_features, 1, name="conv3", dtype=self.dtype)(y))
        y = batch_norm(train, "bn3", self.dtype)(y)
        if self.downsample:
            x = named(conv(out_features, 1, self.stride, name="downsample_conv",
                           dtype=self.dtype)(x))
            x = batch_norm(train, "downsample_bn", self.dtype)(x)
        out = nn.relu(y + x)
        if runtime.materialize_blocks():  # the backend policy: jaxseg.runtime
            out = jax.lax.optimization_barrier(out)
        return out


class ResNet(nn.Module):
    """A bottleneck ResNet trunk (no pooling head, no fc) returning layer3 and layer4 features.

    `dilate` replaces the stride of layers 2-4 by dilation, as torchvision's
    `replace_stride_with_dilation`; FCN uses (False, True, True) for output stride 8.
    `remat`: a key of REMAT_POLICIES (same parameters and results, less memory, more compute).
    """

    blocks: Sequence[int]
    base_width: int = 64
    dilate: Sequence[bool] = (False, True, True)
    dtype: jnp.dtype | None = None
    remat: str = "none"

    @nn.compact
    def __call__(self, x, train=False):
        x = conv(self.base_width, 7, 2, name="conv1", dtype=self.dtype)(x)
        x = nn.relu(batch_norm(train, "bn1", self.dtype)(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

        block = Bottleneck
        if REMAT_POLICIES[self.remat] is not None:  # argument 2 (train) is a Python bool
            block = nn.remat(Bottleneck, static_argnums=(2,), policy=REMAT_POLICIES[self.remat])
        features = {}
        in_features = self.base_width
        dilation = 1
        for stage, num_blocks in enumerate(self.blocks):
            width = self.base_width * 2**stage
            stride = 1 if stage == 0 else 2
            previous_dilation = dilation
            if stage > 0 and self.dilate[stage - 1]:
                dilation *= stride
                stride = 1
            for index in range(num_blocks):
                first = index == 0
                x = block(
                    width,
                    stride=stride if first else 1,
                    # The first block of a dilated stage keeps the previous dilation (torchvision).
                    dilation=previous_dilation if first else dilation,
                    downsample=first and (stride != 1 or in_features != width * Bottleneck.expansion),
                    dtype=self.dtype,
                    name=f"layer{stage + 1}_{index}",
                )(x, train)
                in_features = width * Bottleneck.expansion
            features[f"layer{stage + 1}"] = x
        return features
