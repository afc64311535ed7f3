"""How attack and descent loops compile per backend.

XLA:CPU runs a convolutional network about 4-5x slower per step inside a rolled while loop than
the same steps unrolled into straight-line code, while unrolling costs compile time linear in
the steps (figures: docs/performance.md). XLA:GPU/TPU run while loops natively, so there
unrolling only multiplies compile time. The policy:

    CPU      loops of up to UNROLL_LIMIT steps unroll; longer descents that can be split
             (synthesis) run as a host loop of unrolled chunks of at most UNROLL_LIMIT steps
    GPU/TPU  rolled, one program

The expert overrides are the environment variables JAXSEG_UNROLL=auto|on|off (or the
`loop_policy` context manager): on unrolls every loop, off rolls every loop; and
JAXSEG_UNROLL_LIMIT=N, the CPU limit of 'auto' (the test suite sets a small one: its programs
run once or twice, so compiling is most of their time). Both are read when an attack or a
descent is configured, so set them before building one.
"""

import contextlib
import os

import jax

from jaxseg.errors import JaxsegError

UNROLL_LIMIT = 32  # steps (x restarts) up to which CPU loops unroll
UNROLL_ENV = "JAXSEG_UNROLL"
LIMIT_ENV = "JAXSEG_UNROLL_LIMIT"
LOOP_MODES = ("auto", "on", "off")
_override = []  # stack of loop_policy() modes


def loop_mode():
    """'auto', 'on' or 'off': the innermost `loop_policy`, else $JAXSEG_UNROLL, else 'auto'."""
    mode = _override[-1] if _override else os.environ.get(UNROLL_ENV, "auto").strip().lower()
    if mode not in LOOP_MODES:
        raise JaxsegError(f"{UNROLL_ENV}={mode!r}; choose one of {', '.join(LOOP_MODES)}")
    return mode


@contextlib.contextmanager
def loop_policy(mode):
    """Within the block, loops configured are unrolled ('on'), rolled ('off') or chosen per
    backend ('auto'). For tests and benchmarks; results do not depend on it."""
    if mode not in LOOP_MODES:
        raise JaxsegError(f"unknown loop mode {mode!r}; choose one of {', '.join(LOOP_MODES)}")
    _override.append(mode)
    try:
        yield
    finally:
        _override.pop()


def unroll_limit():
    """Steps (x restarts) up to which CPU loops unroll: $JAXSEG_UNROLL_LIMIT, else UNROLL_LIMIT."""
    value = os.environ.get(LIMIT_ENV, "").strip()
    if not value:
        return UNROLL_LIMIT
    if not value.isdigit() or int(value) < 1:
        raise JaxsegError(f"{LIMIT_ENV}={value!r}; give a number of steps >= 1")
    return int(value)


def unroll(steps):
    """Whether a loop of `steps` iterations compiles unrolled."""
    mode = loop_mode()
    if mode != "auto":
        return mode == "on"
    return jax.default_backend() == "cpu" and steps <= unroll_limit()


def largest_divisor(n, at_most):
    """The largest divisor of n that is <= at_most (at least 1)."""
    return max(d for d in range(1, max(1, min(n, at_most)) + 1) if n % d == 0)


def chunk(steps, divides=None):
    """Steps per compiled program when a long descent of `steps` should run as a host loop of
    unrolled programs (CPU, 'auto', more than `unroll_limit()` steps): the largest divisor of
    `divides` (default `steps`; a trajectory passes its steps per frame) up to the limit.
    None: one program."""
    limit = unroll_limit()
    if loop_mode() != "auto" or jax.default_backend() != "cpu" or steps <= limit:
        return None
    return largest_divisor(steps if divides is None else divides, limit)
