"""Shared by the benchmarks: side-by-side timing. (The torchvision references with their import
shim live in tests/helpers/torch_reference.py; run benchmarks as `python -m bench.NAME` from the
repository root so that both packages import.)"""

import statistics
import time


def interleaved_medians(functions, repeats):
    """Median seconds per call of each function, calls interleaved so machine noise hits all alike."""
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def scenes_and_model(height, width, batch, arch="fcn_resnet26_w16"):
    """(dataset, images float [B, H, W, 3], labels int [B, H, W], model, random variables) on
    the built-in scenes: the cost of an attack or a descent does not depend on the weights."""
    import jax
    import numpy as np

    from jaxseg import data, models

    dataset = data.get_dataset("synthetic", "val", size=(height, width))
    items = [dataset[i] for i in range(batch)]
    images = np.stack([it["image"] for it in items]).astype(np.float32) / 255.0
    labels = np.stack([it["label"] for it in items]).astype(np.int32)
    model = models.fcn(arch, num_classes=dataset.info.num_classes)
    variables = models.init(model, jax.random.key(0), (height, width))
    return dataset, images, labels, model, variables
