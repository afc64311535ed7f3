"""Long synthesis runs: one rolled program vs the default host loop of unrolled chunks.

    .venv/bin/python bench/synthesis_speed.py [--steps 120] [--batch 4] [--repeats 3]

Inpaints random boxes in CamVid val images (240x180) with fcn_resnet26_w16 (random weights: the
cost does not depend on them) and prints seconds per step of each way, measured interleaved
after a warm-up call (compile excluded; compile times printed separately), and their ratio.
"""

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved_medians  # noqa: E402

from jaxseg import data, masks, models, synthesis  # noqa: E402

CAMVID = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                      "data", "camvid")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    dataset = data.get_dataset(f"camvid:{CAMVID}", "val")
    examples = [dataset[i] for i in range(args.batch)]
    images = np.stack([e["image"] for e in examples]).astype(np.float32) / 255.0
    labels = np.stack([e["label"] for e in examples]).astype(np.int32)
    height, width = labels.shape[1:]
    holes = np.stack([masks.parse("random:2", height, width, labels[i], dataset.info.class_names,
                                  seed=i) for i in range(args.batch)])
    model = models.fcn("fcn_resnet26_w16", num_classes=dataset.info.num_classes)
    variables = models.init(model, jax.random.key(0), (height, width))

    def way(unroll):
        def call():
            result = synthesis.run("inpaint", model.apply, variables, images, labels,
                                   jax.random.key(0), mask=holes, steps=args.steps,
                                   step_size=0.5, unroll=unroll)
            return np.asarray(result.x)
        return call

    ways = {"rolled (unroll=False)": way(False), "chained (default)": way(None)}
    results = {}
    for name, call in ways.items():
        start = time.perf_counter()
        results[name] = call()
        print(f"{name}: first call (compile + run) {time.perf_counter() - start:.1f} s", flush=True)
    # Different compiled programs round differently, and random-weight gradients amplify it
    # over many normalised steps (one rolled vs one unrolled program differ as much): the
    # agreement of the iterates is tested on a small case in tests/test_synthesis.py.
    difference = np.abs(results["rolled (unroll=False)"] - results["chained (default)"]).mean()
    movement = np.abs(results["rolled (unroll=False)"] - images).mean()
    times = interleaved_medians(ways, args.repeats)
    print(f"inpaint, {args.steps} steps, {args.batch}x{height}x{width}, fcn_resnet26_w16, "
          f"chunks of {synthesis.chunk_size(args.steps)} steps; mean |difference| "
          f"{difference:.1e} (mean change from the image {movement:.1e})")
    for name, seconds in times.items():
        print(f"  {name}: {seconds:.2f} s ({1000 * seconds / args.steps:.0f} ms/step)")
    ratio = times["rolled (unroll=False)"] / times["chained (default)"]
    print(f"chained is {ratio:.2f}x faster than rolled")


if __name__ == "__main__":
    main()
