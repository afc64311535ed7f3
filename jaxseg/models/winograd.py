"""3x3 stride-1 convolutions as Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray 2016).

Every 2x2 block of outputs is (A^T [(G g G^T) * (B^T d B)] A) for the 4x4 input tile d around
it: the 9 multiply-adds per output pixel and input channel of a direct convolution become 4, in
16 batched matmuls (one per tile position) between cheap linear transforms. Autodiff keeps that
form: the input gradient is again 16 matmuls and transforms, the weight gradient 16 matmuls
contracting over tiles. A dilated convolution is the undilated one on each interleaved
sub-grid. XLA:CPU runs batched matmuls near its peak and its direct 3x3 convolutions well below
it, dilated ones further below (figures: docs/performance.md); the runtime decides where this
form is used (`jaxseg.runtime.winograd_convs`). Results equal lax's to float32 rounding (the
transforms only add, subtract and halve)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg import runtime


def _pairs(a, axis):
    """(a[:-1], a[1:]) along `axis`."""
    size = a.shape[axis]
    return (jax.lax.slice_in_dim(a, 0, size - 1, axis=axis),
            jax.lax.slice_in_dim(a, 1, size, axis=axis))


def _input_transform(even, odd, axis):
    """B^T along `axis`, stacked as a new leading axis: tile i spans the rows (even[i], odd[i],
    even[i+1], odd[i+1])."""
    (e0, e1), (o0, o1) = _pairs(even, axis), _pairs(odd, axis)
    return jnp.stack([e0 - e1, o0 + e1, e1 - o0, o0 - o1])


def _filter_transform(g, axis):
    """G (4x3) along `axis` of length 3."""
    g0, g1, g2 = (jax.lax.index_in_dim(g, i, axis, keepdims=False) for i in range(3))
    return jnp.stack([g0, (g0 + g1 + g2) * 0.5, (g0 - g1 + g2) * 0.5, g2], axis=axis)


def _output_transform(m, axis):
    """A^T (2x4) along `axis` of length 4."""
    m0, m1, m2, m3 = (jax.lax.index_in_dim(m, i, axis, keepdims=False) for i in range(4))
    return jnp.stack([m0 + m1 + m2, m1 - m2 - m3], axis=axis)


def conv3x3(x, kernel, dilation=1):
    """A 3x3 convolution, stride 1, padding = dilation (torch's Conv2d(k=3, padding=d,
    dilation=d)) of NHWC `x` with an HWIO `kernel`, any height and width. Dilated, it is the
    undilated convolution of each of the d x d interleaved sub-grids (space to batch and back)."""
    if dilation == 1:
        return _conv3x3(x, kernel)
    d = dilation
    n, height, width, channels = x.shape
    rows, cols = -(-height // d), -(-width // d)  # of each sub-grid
    x = jnp.pad(x, ((0, 0), (0, rows * d - height), (0, cols * d - width), (0, 0)))
    x = x.reshape(n, rows, d, cols, d, channels).transpose(2, 4, 0, 1, 3, 5)
    y = _conv3x3(x.reshape(d * d * n, rows, cols, channels), kernel)
    y = y.reshape(d, d, n, rows, cols, -1).transpose(2, 3, 0, 4, 1, 5)
    return y.reshape(n, rows * d, cols * d, -1)[:, :height, :width]


def _conv3x3(x, kernel):
    n, height, width, channels = x.shape
    features = kernel.shape[-1]
    rows, cols = -(-height // 2), -(-width // 2)  # of 2x2 output tiles
    # Padded to 2 * (tiles + 1) each way and split into even and odd rows and columns: every
    # tile's 4x4 input is then two neighbouring 2x2 blocks each way (slices, no gather).
    x = jnp.pad(x, ((0, 0), (1, 1 + 2 * rows - height), (1, 1 + 2 * cols - width), (0, 0)))
    x = x.reshape(n, rows + 1, 2, cols + 1, 2, channels)
    v = _input_transform(x[:, :, 0], x[:, :, 1], axis=1)           # (4, n, rows, cols+1, 2, c)
    v = _input_transform(v[:, :, :, :, 0], v[:, :, :, :, 1], axis=3)  # (4, 4, n, rows, cols, c)
    v = v.swapaxes(0, 1).reshape(16, n * rows * cols, channels)    # (tile row, col) first
    u = _filter_transform(_filter_transform(kernel, 0), 1).reshape(16, channels, features)
    m = jnp.einsum("tpc,tcf->tpf", v, u).reshape(4, 4, n, rows, cols, features)
    y = _output_transform(_output_transform(m, 0), 1)              # (2, 2, n, rows, cols, f)
    y = y.transpose(2, 3, 0, 4, 1, 5).reshape(n, 2 * rows, 2 * cols, features)
    return y[:, :height, :width]


class Conv3x3(nn.Module):
    """nn.Conv(features, (3, 3), padding=dilation, kernel_dilation=dilation), the same
    parameters (`kernel` [3, 3, in, out], `bias`), initialisers and values, computed through
    `conv3x3` where the backend policy says it pays (`jaxseg.runtime.winograd_convs`, read for
    this call's size when traced) and as a lax convolution elsewhere; a dilation reaching past
    the whole input leaves only the centre tap (a 1x1)."""

    features: int
    dilation: int = 1
    use_bias: bool = False
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (3, 3, x.shape[-1], self.features), jnp.float32)
        bias = (self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
                if self.use_bias else None)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        d = self.dilation
        if d >= x.shape[1] and d >= x.shape[2]:
            # Every tap but the centre falls in the padding (ASPP's rates 12-36 on small feature
            # maps): the convolution is the centre tap's 1x1, as torch computes it.
            y = jnp.einsum("nhwc,cf->nhwf", x, kernel[1, 1])
        elif x.dtype == jnp.float32 and runtime.winograd_convs(x.shape, self.features):
            y = conv3x3(x, kernel, d)
        else:
            y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((d, d), (d, d)),
                                             rhs_dilation=(d, d),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y if bias is None else y + bias
