"""How attack and descent loops compile per backend.

XLA:CPU runs a convolutional network about 4-5x slower per step inside a rolled while loop than
the same steps unrolled into straight-line code, while unrolling costs compile time linear in
the steps (figures: docs/performance.md). XLA:GPU/TPU run while loops natively, so there
unrolling only multiplies compile time. The policy:

    CPU      loops of up to UNROLL_LIMIT steps unroll; longer descents that can be split
             (synthesis) run as a host loop of unrolled chunks of at most UNROLL_LIMIT steps
    GPU/TPU  rolled, one program

The expert override is the environment variable JAXSEG_UNROLL=auto|on|off (or the
`loop_policy` context manager): on unrolls every loop, off rolls every loop. It is read when an
attack or a descent is configured, so set it before building one.
"""

import contextlib
import os

import jax

from jaxseg.errors import JaxsegError

UNROLL_LIMIT = 32  # steps (x restarts) up to which CPU loops unroll
UNROLL_ENV = "JAXSEG_UNROLL"
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


def unroll(steps):
    """Whether a loop of `steps` iterations compiles unrolled."""
    mode = loop_mode()
    if mode != "auto":
        return mode == "on"
    return jax.default_backend() == "cpu" and steps <= UNROLL_LIMIT


def largest_divisor(n, at_most):
    """The largest divisor of n that is <= at_most (at least 1)."""
    return max(d for d in range(1, max(1, min(n, at_most)) + 1) if n % d == 0)


def chunk(steps, divides=None):
    """Steps per compiled program when a long descent of `steps` should run as a host loop of
    unrolled programs (CPU, 'auto', more than UNROLL_LIMIT steps): the largest divisor of
    `divides` (default `steps`; a trajectory passes its steps per frame) up to UNROLL_LIMIT.
    None: one program."""
    if loop_mode() != "auto" or jax.default_backend() != "cpu" or steps <= UNROLL_LIMIT:
        return None
    return largest_divisor(steps if divides is None else divides, UNROLL_LIMIT)
