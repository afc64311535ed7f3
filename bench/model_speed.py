"""Where a train step's time goes on this backend, and what the 1x1-convolution policy changes.

FCN-ResNet50, batch 4 at 224x224 fp32, BatchNorm in training mode: the forward pass, the input
gradient (what an attack step pays), the parameter gradient (what a standard train step pays,
without the optimizer), each with 1x1 convolutions as lax convolutions and as matmuls
(`jaxseg.runtime.conv_policy`), timed interleaved in one process; plus the stem alone (7x7
stride 2), whose input gradient XLA:CPU computes through a slow dilated-input path.

    .venv/bin/python -m bench.model_speed [--batch 4] [--size 224] [--repeats 3]
"""

import argparse

import jax
import jax.numpy as jnp

from bench.common import interleaved_medians, machine
from jaxseg import models, runtime


def programs(batch, size, pointwise_matmul):
    with runtime.conv_policy(pointwise_matmul):
        model = models.build("fcn_resnet50", num_classes=21)
        variables = models.init(model, jax.random.key(0), (size, size))

        def loss(params, x):
            out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                 train=True, mutable=["batch_stats"],
                                 rngs={"dropout": jax.random.key(3)})
            return jnp.mean(jax.nn.log_softmax(out["out"])[..., 0]) + jnp.mean(out["aux"])

        x = jax.random.uniform(jax.random.key(1), (batch, size, size, 3))
        params = variables["params"]
        jitted = {"forward": jax.jit(loss), "input grad": jax.jit(jax.grad(loss, argnums=1)),
                  "param grad": jax.jit(jax.grad(loss))}
        for fn in jitted.values():  # trace and compile under the policy
            jax.block_until_ready(fn(params, x))
    return {name: (lambda fn=fn: jax.block_until_ready(fn(params, x))) for name, fn in jitted.items()}


def stem(batch, size):
    """The 7x7 stride-2 stem convolution alone: forward, and forward + input gradient."""
    conv = lambda x, w: jax.lax.conv_general_dilated(  # noqa: E731
        x, w, (2, 2), ((3, 3), (3, 3)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    x = jax.random.uniform(jax.random.key(1), (batch, size, size, 3))
    w = jax.random.normal(jax.random.key(2), (7, 7, 3, 64)) * 0.05
    forward = jax.jit(lambda x: jnp.sum(conv(x, w) ** 2))
    grad = jax.jit(jax.grad(lambda x: jnp.sum(conv(x, w) ** 2)))
    for fn in (forward, grad):
        jax.block_until_ready(fn(x))
    return {"stem forward": lambda: jax.block_until_ready(forward(x)),
            "stem input grad": lambda: jax.block_until_ready(grad(x))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runtime.keep_freed_memory()  # as the CLIs run: glibc keeps freed memory on CPU

    print(f"FCN-ResNet50, batch {args.batch} at {args.size}x{args.size} fp32, jax {jax.__version__}, "
          f"backend {jax.default_backend()}; median of {args.repeats} interleaved")
    print(f"machine: {machine()}")
    conv, matmul = programs(args.batch, args.size, False), programs(args.batch, args.size, True)
    functions = {f"{name} [conv]": fn for name, fn in conv.items()}
    functions.update({f"{name} [matmul]": fn for name, fn in matmul.items()})
    functions.update(stem(args.batch, args.size))
    medians = interleaved_medians(functions, args.repeats)
    for name in conv:
        a, b = medians[f"{name} [conv]"], medians[f"{name} [matmul]"]
        print(f"  {name:<11} 1x1 as conv {a:6.2f} s   as matmul {b:6.2f} s   ratio {a / b:.2f}x")
    forward, grad = medians["stem forward"], medians["stem input grad"]
    print(f"  stem 7x7/2  forward {forward * 1e3:6.0f} ms   forward + input grad "
          f"{grad * 1e3:6.0f} ms   ({grad / forward:.1f}x the forward)")
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
