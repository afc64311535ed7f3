"""Device parallelism: one 1-D `Mesh` with a 'data' axis; batches sharded, parameters replicated.

Under `jax.jit`, a batch placed with `batch_sharding(mesh)` and variables placed with
`replicated(mesh)` make XLA split every per-example computation over the devices (and reduce
across them where the program needs it, e.g. batch statistics). No `pmap`.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxseg.errors import JaxsegError

DATA_AXIS = "data"


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
