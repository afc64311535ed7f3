"""Shared by the benchmarks: the torchvision import shim and side-by-side timing."""

import contextlib
import statistics
import time

import torch


@contextlib.contextmanager
def torchvision_import_shim():
    """torchvision's compiled ops do not load against CPU torch; its Python models do."""
    original = torch.library.register_fake
    torch.library.register_fake = lambda *args, **kwargs: (lambda fn: fn)
    try:
        yield
    finally:
        torch.library.register_fake = original


def interleaved_medians(functions, repeats):
    """Median seconds per call of each function, calls interleaved so machine noise hits all alike."""
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
