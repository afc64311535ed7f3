"""Where Winograd's 3x3 convolutions pay on XLA:CPU: lax vs Winograd F(2x2, 3x3), per shape.

For each input-channel count, size and dilation: the forward + backward of one float32 3x3
stride-1 convolution (channels in = out, batch 4; gradients for input and kernel), compiled
alone, median of alternated calls; and the compile time of each form. The runtime's threshold
(`jaxseg.runtime.WINOGRAD_MIN_MACS`, multiply-adds per call) is read off this table: Winograd
runs faster at nearly every size but compiles slower, so it pays only where a call is large.

    .venv/bin/python -m bench.winograd_shapes [--repeats 7]
"""

import argparse
import time

from bench.common import interleaved_medians, machine

# (channels, size, dilation): the 3x3 convolutions of FCN-ResNet50 at 224 (56x56 c64 in
# layer1, 28x28 c128..c512 dilated, the head's c2048 -> 512 is wider still) and of the small
# CPU models at 64x64 (8x8 / 16x16, c8..c128).
SHAPES = [(8, 16, 1), (32, 16, 1), (64, 16, 1), (128, 8, 1), (128, 16, 1), (256, 4, 1),
          (512, 8, 1), (32, 56, 1), (64, 56, 1), (128, 28, 1), (64, 28, 2), (128, 28, 2),
          (256, 28, 2)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    from jaxseg import runtime

    runtime.keep_freed_memory()  # as the CLIs run: glibc keeps freed memory on CPU

    import jax
    import jax.numpy as jnp

    from jaxseg.models import winograd

    def lax_conv(x, kernel, dilation):
        return jax.lax.conv_general_dilated(
            x, kernel, (1, 1), ((dilation, dilation),) * 2, rhs_dilation=(dilation, dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    print(f"3x3 stride-1 convolution, forward + backward, batch {args.batch} fp32, jax "
          f"{jax.__version__}; median of {args.repeats} alternated calls")
    print(f"machine: {machine()}")
    print("| in = out channels | size | dilation | multiply-adds | lax ms | Winograd ms | "
          "Winograd / lax | compile lax s | compile Winograd s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for channels, size, dilation in SHAPES:
        key = jax.random.key(channels * 1000 + size)
        x = jax.random.normal(key, (args.batch, size, size, channels))
        kernel = jax.random.normal(key, (3, 3, channels, channels)) * channels ** -0.5
        compiled, compile_s = {}, {}
        for name, conv in (("lax", lax_conv), ("winograd", winograd.conv3x3)):
            def loss(x, kernel, conv=conv):
                return jnp.sum(conv(x, kernel, dilation) ** 2)
            start = time.perf_counter()
            compiled[name] = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, kernel).compile()
            compile_s[name] = time.perf_counter() - start
        medians = interleaved_medians(
            {name: (lambda f=f: jax.block_until_ready(f(x, kernel)))
             for name, f in compiled.items()}, args.repeats)
        macs = 9 * args.batch * size * size * channels * channels
        print(f"| {channels} | {size}x{size} | {dilation} | {macs:.2g} | "
              f"{1e3 * medians['lax']:.2f} | "
              f"{1e3 * medians['winograd']:.2f} | {medians['winograd'] / medians['lax']:.2f} | "
              f"{compile_s['lax']:.2f} | {compile_s['winograd']:.2f} |", flush=True)
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
