"""Host memory on a CPU-only host: glibc keeps what the process frees (opt-in).

XLA:CPU allocates a program's temporary buffer afresh for every execution (1.2 GB for the
FCN-ResNet50 train step at batch 4, from its worker threads); by default glibc maps it anew each
time and the kernel faults it in page by page (about 330 000 faults, ~1 s of system time per
step). With one malloc arena (a thread's own arena cannot hold such a buffer and would map it),
no mmap and no trimming, the heap keeps it: the process stays at its peak memory, which the
next step needs again anyway (-13 % standard, -10 % AT train step; docs/performance.md).

It changes the whole process's allocator, so importing jaxseg never does it: the command-line
tools call `keep_freed_memory()` first thing, and a library user opts in with the same call,
before JAX runs anything (threads pick their malloc arena on their first allocation).
"""

import ctypes
import importlib.metadata
import importlib.util
import os
import platform
import warnings

HEAP_ENV = "JAXSEG_CPU_HEAP"
HEAP_MODES = ("keep", "system")
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's mallopt() parameters


def cpu_only():
    """Whether JAX will run on the CPU alone, decided without starting a backend: JAX_PLATFORMS
    names only cpu, or no accelerator plugin (a PJRT plugin, libtpu) is installed."""
    import jax

    platforms = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or ""
    names = {name.strip().lower() for name in platforms.split(",") if name.strip()}
    if names:
        return names <= {"cpu"}
    return not (importlib.metadata.entry_points(group="jax_plugins")
                or importlib.util.find_spec("jax_plugins") or importlib.util.find_spec("libtpu"))


def keep_freed_memory():
    """On a CPU-only Linux host with glibc, make malloc keep the memory the process frees for
    its next allocation (one arena, no mmap, no trimming); JAXSEG_CPU_HEAP=system leaves glibc's
    defaults. Call it before JAX runs anything. Returns whether the options are in effect."""
    mode = os.environ.get(HEAP_ENV, "keep").strip().lower()
    if mode not in HEAP_MODES:
        warnings.warn(f"{HEAP_ENV}={mode!r} is not one of {', '.join(HEAP_MODES)}; leaving "
                      "glibc's malloc defaults", stacklevel=2)
        return False
    if mode == "system" or platform.libc_ver()[0] != "glibc" or not cpu_only():
        return False
    mallopt = ctypes.CDLL(None).mallopt
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))  # -1: never trim
    return all(mallopt(option, value) == 1 for option, value in settings)
