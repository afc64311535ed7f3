"""Shared by the benchmarks: side-by-side timing. (The torchvision references with their import
shim live in tests/helpers/torch_reference.py; run benchmarks as `python -m bench.NAME` from the
repository root so that both packages import.)"""

import contextlib
import fcntl
import os
import statistics
import subprocess
import sys
import time


@contextlib.contextmanager
def exclusive(path):
    """Hold an exclusive lock on the file `path` (None: no lock), so that benchmarks started side
    by side on one device, to compile in parallel, time their programs one at a time."""
    if path is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    model = models.build(arch, num_classes=dataset.info.num_classes)
    variables = models.init(model, jax.random.key(0), (height, width))
    return dataset, images, labels, model, variables


def serve(step):
    """Worker side of `alternated_medians`: after the caller's warm-up, run and time one `step()`
    per 'step' line on stdin, answering with its seconds."""
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        start = time.perf_counter()
        step()
        print(time.perf_counter() - start, flush=True)


def alternated_medians(workers, repeats, pause=1.0, environ=None):
    """Median seconds per step of each worker (name -> argv of a `python -m bench.X` that calls
    `serve`; `environ`: name -> extra environment variables). Each framework runs in its own
    process, so no thread pool of one (torch's OpenMP spins after its ops) takes cores from the
    other; steps alternate between the workers so that machine load hits them alike, with
    `pause` seconds between steps for spinning threads to go idle. Workers start and warm up
    one after the other."""
    processes = {}
    try:
        for name, argv in workers.items():
            env = dict(os.environ, **(environ or {}).get(name, {}))
            process = subprocess.Popen([sys.executable, "-m", *argv], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, env=env)
            line = process.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"worker {name} failed to start: {line!r}")
            processes[name] = process
        times = {name: [] for name in workers}
        for _ in range(repeats):
            for name, process in processes.items():
                time.sleep(pause)
                process.stdin.write("step\n")
                process.stdin.flush()
                times[name].append(float(process.stdout.readline()))
        return {name: statistics.median(t) for name, t in times.items()}
    finally:
        for process in processes.values():
            process.stdin.close()
            process.wait()


def machine():
    """CPU model, core count and load average, for the line printed with every figure."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, load {load}"
