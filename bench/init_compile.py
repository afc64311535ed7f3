"""Compile time of the models' initialisers: XLA:CPU's default optimisation level against the
run-once options jaxseg compiles them with (`runtime.compiler_options(run_once=True)`), side by
side in one process with the compilation cache off, and how far apart the values are.

    python -m bench.init_compile
    python -m bench.init_compile --arch fcn_resnet26_w16 --arch deeplabv3_resnet50
"""

import argparse
import os
import time

os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"  # time the compiler, not the cache

DEFAULT_ARCHS = ("fcn_resnet14_w8", "fcn_resnet26_w16", "deeplabv3_resnet26_w16",
                 "lraspp_mobilenet_v3_large")


def compile_seconds(model, options, key, size):
    import jax
    import jax.numpy as jnp

    program = jax.jit(lambda k: model.init(k, jnp.zeros((1, *size, 3)), train=False),
                      compiler_options=options)
    start = time.perf_counter()
    compiled = program.lower(key).compile()
    seconds = time.perf_counter() - start
    return seconds, jax.block_until_ready(compiled(key))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", help=f"(default: {', '.join(DEFAULT_ARCHS)})")
    parser.add_argument("--size", default="64,64", help="H,W of the initialising input")
    args = parser.parse_args()
    import jax
    import numpy as np

    from bench.common import machine
    from jaxseg import models, runtime

    size = tuple(int(v) for v in args.size.split(","))
    print(f"# {machine()}")
    print("| model | parameter leaves | compile, default options | compile, run-once options | "
          "ratio | values differing | largest difference (of the leaf's max) |")
    print("|---|---|---|---|---|---|---|")
    for arch in args.arch or DEFAULT_ARCHS:
        model = models.build(arch, 11, aux=None)
        key = jax.random.key(0)
        slow, reference = compile_seconds(model, runtime.compiler_options(), key, size)
        fast, values = compile_seconds(model, runtime.compiler_options(run_once=True), key, size)
        pairs = [(np.asarray(a, np.float64), np.asarray(b, np.float64))
                 for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(values))]
        differing = sum(int(np.sum(a != b)) for a, b in pairs)
        total = sum(a.size for a, _ in pairs)
        largest = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) or 1.0)) for a, b in pairs)
        print(f"| {arch} | {len(pairs)} | {slow:.2f} s | {fast:.2f} s | {slow / fast:.1f}x | "
              f"{differing} of {total} | {largest:.1e} |", flush=True)


if __name__ == "__main__":
    main()
