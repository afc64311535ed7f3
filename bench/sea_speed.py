"""What SEA's adaptive steps and bookkeeping cost: SEA (red-eps APGD on three losses, N steps
each) against PGD with the same total number of steps (3 N), per image, measured side by side.

    .venv/bin/python -m bench.sea_speed [--steps 30] [--batch 4] [--size 96,128] [--repeats 3]

fcn_resnet26_w16 with random weights on built-in scenes. Both run with every loop rolled (the
GPU/TPU policy) so that neither gains from unrolling; SEA's early stop is off in effect (random
weights never misclassify every pixel). Target: SEA / PGD within 1.15x.
"""

import argparse
import os
import time

import jax
import numpy as np

from bench.common import interleaved_medians, scenes_and_model
from bench.loop_policy import machine
from jaxseg import attacks, data, runtime
from jaxseg.attacks import losses


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30, help="SEA steps per loss")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", default="96,128")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runtime.keep_freed_memory()  # as the CLIs run: glibc keeps freed memory on CPU

    height, width = (int(v) for v in args.size.split(","))
    dataset, images, labels, model, variables = scenes_and_model(height, width, args.batch)
    weights = losses.balanced_class_weights(data.count_pixels(data.Subset(dataset, 32)))
    with runtime.loop_policy("off"):
        sea = attacks.make("sea", eps=8 / 255, steps=args.steps, class_weights=weights)
        pgd = attacks.make("pgd", eps=8 / 255, steps=3 * args.steps)
    key = jax.random.key(0)
    calls = {f"SEA 3 x {args.steps}": lambda: np.asarray(
                 attacks.attack(sea, model.apply, variables, images, labels, key).x),
             f"PGD-{3 * args.steps}": lambda: np.asarray(
                 attacks.attack(pgd, model.apply, variables, images, labels, key).x)}
    print(f"backend {jax.default_backend()}; {machine()}; fcn_resnet26_w16, batch {args.batch} "
          f"at {height}x{width}; loops rolled", flush=True)
    for name, call in calls.items():
        start = time.perf_counter()
        call()
        print(f"{name}: first call (compile + run) {time.perf_counter() - start:.1f} s",
              flush=True)
    medians = interleaved_medians(calls, args.repeats)
    for name, seconds in medians.items():
        print(f"{name}: {seconds:.2f} s per batch, {seconds / args.batch:.3f} s per image, "
              f"{1000 * seconds / (3 * args.steps):.0f} ms per step")
    sea_s, pgd_s = medians[f"SEA 3 x {args.steps}"], medians[f"PGD-{3 * args.steps}"]
    print(f"SEA / PGD at the same total steps: {sea_s / pgd_s:.3f}x (target <= 1.15x)")
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
