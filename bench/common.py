"""Shared by the benchmarks: access to the test references (torchvision with its import shim,
the torchattacks wrapper) and side-by-side timing."""

import os
import statistics
import sys
import time

# `import torch_reference` (test-only helpers) works in every benchmark that imports this module.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))


def interleaved_medians(functions, repeats):
    """Median seconds per call of each function, calls interleaved so machine noise hits all alike."""
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
