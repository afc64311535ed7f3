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
