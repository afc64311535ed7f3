"""FCN's head (Long et al. 2015), exactly as torchvision's `FCNHead` (also every auxiliary
head of torchvision's segmentation models), and the bilinear resize every model ends with."""

import functools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxseg.models.resnet import batch_norm, conv


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
