"""How loops compile on this backend: compile time and time per step of a PGD-10 attack and of a
120-step inpainting, rolled (one `while` loop) vs unrolled (straight-line code; for the long
descent, the CPU default: a host loop of one unrolled program of `runtime.chunk` steps). The
figures behind the policy in jaxseg/runtime/loops.py (docs/performance.md).

    .venv/bin/python -m bench.loop_policy [--size 96,128] [--batch 4] [--repeats 3]

fcn_resnet26_w16 with random weights (the cost does not depend on them) on built-in scenes.
"""

import argparse
import os
import subprocess
import time

import jax
import numpy as np

from bench.common import interleaved_medians, scenes_and_model
from jaxseg import attacks, runtime, synthesis


def machine():
    """CPU model and load average, printed with every figure."""
    model = next((line.split(":", 1)[1].strip() for line in
                  subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                  if line.startswith("Model name")), "unknown CPU")
    return f"{model}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="96,128", help="H,W of the images")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--descent-steps", type=int, default=120)
    args = parser.parse_args()
    runtime.keep_freed_memory()  # as the CLIs run: glibc keeps freed memory on CPU

    height, width = (int(v) for v in args.size.split(","))

    _, images, labels, model, variables = scenes_and_model(height, width, args.batch)
    holes = np.zeros(labels.shape, bool)
    holes[:, height // 4: height // 2, width // 4: width // 2] = True
    key = jax.random.key(0)

    def pgd(mode):
        with runtime.loop_policy(mode):
            spec = attacks.make("pgd", eps=8 / 255, steps=10)
        return lambda: np.asarray(attacks.attack(spec, model.apply, variables, images, labels,
                                                 key).x)

    def inpaint(mode):
        def call():
            with runtime.loop_policy(mode):
                result = synthesis.run("inpaint", model.apply, variables, images, labels, key,
                                       mask=holes, steps=args.descent_steps, step_size=0.5)
            return np.asarray(result.x)
        return call

    cases = {"PGD-10 rolled": (pgd("off"), 10), "PGD-10 unrolled": (pgd("on"), 10),
             f"inpaint-{args.descent_steps} rolled": (inpaint("off"), args.descent_steps),
             f"inpaint-{args.descent_steps} chained unrolled (CPU default)":
                 (inpaint("auto"), args.descent_steps)}
    print(f"backend {jax.default_backend()}; {machine()}; fcn_resnet26_w16, batch {args.batch} "
          f"at {height}x{width}", flush=True)
    first = {}
    for name, (call, _) in cases.items():
        start = time.perf_counter()
        call()
        first[name] = time.perf_counter() - start
    medians = interleaved_medians({name: call for name, (call, _) in cases.items()}, args.repeats)
    print("| program | first call (compile + run) | run | per step |")
    print("|---|---|---|---|")
    for name, (_, steps) in cases.items():
        print(f"| {name} | {first[name]:.1f} s | {medians[name]:.2f} s | "
              f"{1000 * medians[name] / steps:.0f} ms |")
    for kind, rolled, fast in (("PGD-10", "PGD-10 rolled", "PGD-10 unrolled"),
                               ("inpaint", *[n for n in cases if n.startswith("inpaint")])):
        print(f"{kind}: unrolled / rolled step time {medians[fast] / medians[rolled]:.2f}, "
              f"speed-up {medians[rolled] / medians[fast]:.2f}x; compile+first call "
              f"{first[fast]:.1f} s vs {first[rolled]:.1f} s")
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
