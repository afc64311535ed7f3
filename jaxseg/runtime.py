"""Backend policy in one place: the device mesh, multi-host start-up, and how loops compile.

Mesh: one 1-D `Mesh` with a 'data' axis; batches sharded over it, parameters replicated. Under
`jax.jit`, a batch placed with `batch_sharding(mesh)` and variables placed with
`replicated(mesh)` make XLA split every per-example computation over the devices (and reduce
across them where the program needs it, e.g. batch statistics). No `pmap`.

Loops: XLA:CPU runs a convolutional network about 4-5x slower per step inside a rolled while
loop than the same steps unrolled into straight-line code, while unrolling costs compile time
linear in the steps (figures: docs/performance.md). XLA:GPU/TPU run while loops natively, so
there unrolling only multiplies compile time. The policy, decided here and nowhere else:

    CPU      loops of up to UNROLL_LIMIT steps unroll; longer descents that can be split
             (synthesis) run as a host loop of unrolled chunks of at most UNROLL_LIMIT steps
    GPU/TPU  rolled, one program

The expert override is the environment variable JAXSEG_UNROLL=auto|on|off (or the
`loop_policy` context manager): on unrolls every loop, off rolls every loop. It is read when an
attack or a descent is configured, so set it before building one.

Convolutions: 1x1 convolutions run as matmuls over channels on every backend (XLA:CPU's
convolution path is slower for them, forward and backward; on GPU/TPU a 1x1 convolution is a
matmul anyway). `conv_policy(pointwise_matmul=False)` restores lax convolutions, for
benchmarks; parameters and results are the same either way.
"""

import contextlib
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxseg.errors import JaxsegError

DATA_AXIS = "data"
UNROLL_LIMIT = 32  # steps (x restarts) up to which CPU loops unroll
UNROLL_ENV = "JAXSEG_UNROLL"
LOOP_MODES = ("auto", "on", "off")
_override = []  # stack of loop_policy() modes


# ---------------------------------------------------------------------------------------------
# Convolutions

_pointwise_override = []  # stack of conv_policy() choices


def pointwise_matmul():
    """Whether models built now write 1x1 convolutions as matmuls (read at trace time)."""
    return _pointwise_override[-1] if _pointwise_override else True


@contextlib.contextmanager
def conv_policy(pointwise_matmul):
    """Within the block, models trace 1x1 convolutions as matmuls (True) or lax convolutions."""
    _pointwise_override.append(bool(pointwise_matmul))
    try:
        yield
    finally:
        _pointwise_override.pop()


# ---------------------------------------------------------------------------------------------
# Loops


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


# ---------------------------------------------------------------------------------------------
# Devices


def make_mesh(devices=None):
    """A 1-D mesh named 'data' over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise JaxsegError("make_mesh needs at least one device")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh):
    """Leading (batch) axis split over 'data'; the other axes whole on each device."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh):
    """The whole array on every device (parameters, optimizer state, scalars)."""
    return NamedSharding(mesh, PartitionSpec())


def local_device_count(mesh):
    """Devices of this process in `mesh` (each process feeds that many batch shards)."""
    return len([d for d in mesh.devices.flat if d.process_index == jax.process_index()])


def shard_batch(mesh, tree):
    """Place every array of `tree` with its batch axis split over the mesh."""
    size = mesh.shape[DATA_AXIS]
    for leaf in jax.tree_util.tree_leaves(tree):
        if leaf.shape[0] % size:
            raise JaxsegError(
                f"batch size {leaf.shape[0]} is not divisible by the {size} devices of the mesh")
    return jax.device_put(tree, batch_sharding(mesh))


def replicate(mesh, tree):
    """Place every array of `tree` whole on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))


def initialize_distributed(coordinator=None, num_processes=None, process_id=None):
    """Multi-host: explicit flags, or JAX's own detection from the environment (SLURM, TPU,
    JAX_COORDINATOR_ADDRESS ...) when `JAX_COORDINATOR_ADDRESS` or flags are given."""
    if coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        # CPU hosts (and tests) need a collectives backend across processes; GPU/TPU ignore it.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=coordinator or None,
                                   num_processes=num_processes, process_id=process_id)
