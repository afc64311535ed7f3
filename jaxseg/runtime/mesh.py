"""The device mesh and moving arrays between hosts and devices, in one process or many.

One 1-D `Mesh` with a 'data' axis; batches sharded over it, parameters replicated. Under
`jax.jit`, a batch placed with `batch_sharding(mesh)` and variables placed with
`replicated(mesh)` make XLA split every per-example computation over the devices (and reduce
across them where the program needs it, e.g. batch statistics). No `pmap`.
"""

import jax
import numpy as np
from jax.experimental import multihost_utils
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


def local_device_count(mesh):
    """Devices of this process in `mesh` (each process feeds that many batch shards)."""
    return len([d for d in mesh.devices.flat if d.process_index == jax.process_index()])


def shard_batch(mesh, tree):
    """Place every array of `tree`, this process's rows of a batch (the whole batch in a
    one-process job), with the batch axis split over the mesh: process p's rows follow process
    p - 1's in the global batch (`jax.make_array_from_process_local_data`)."""
    local = local_device_count(mesh)
    for leaf in jax.tree_util.tree_leaves(tree):
        if leaf.shape[0] % local:
            raise JaxsegError(f"batch size {leaf.shape[0]} is not divisible by the {local} "
                              "devices of the mesh" + (" in this process" if
                                                       jax.process_count() > 1 else ""))
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                        tree)


def all_rows(mesh, tree):
    """Every process's rows of host arrays (`tree`: this process's), in process order, as numpy
    on every process; in a one-process job the arrays themselves (in the dtypes a device would
    give them, e.g. int32 for int64 without x64), without a device round trip."""
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: np.asarray(
            x, jax.dtypes.canonicalize_dtype(np.asarray(x).dtype)), tree)
    return jax.tree.map(to_host, shard_batch(mesh, tree))


def to_host(array):
    """A (possibly multi-process, sharded) array as one numpy array, whole, on every process."""
    if jax.process_count() > 1 and isinstance(array, jax.Array) \
            and not array.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    return np.asarray(array)


def is_main_process():
    """Whether this process writes files and prints (process 0 of a multi-process job)."""
    return jax.process_index() == 0


def sum_over_processes(array):
    """The elementwise sum of a numpy array over the processes of the job (host-side)."""
    if jax.process_count() == 1:
        return np.asarray(array)
    return np.asarray(multihost_utils.process_allgather(np.asarray(array))).sum(axis=0)


def on_every_process(check):
    """`check()`, with its outcome agreed: if it raises a JaxsegError on any process, every
    process raises one (naming the process that failed), so that no process waits forever in
    a collective the others never join. Returns check()'s value."""
    try:
        value, message = check(), ""
    except JaxsegError as err:
        if jax.process_count() == 1:
            raise
        value, message = None, str(err)
    if jax.process_count() == 1:
        return value
    encoded = np.zeros(1024, np.uint8)
    raw = message.encode()[:1023]
    encoded[:len(raw)] = np.frombuffer(raw, np.uint8)
    encoded[-1] = bool(message)
    everyone = np.asarray(multihost_utils.process_allgather(encoded))
    failed = [p for p in range(len(everyone)) if everyone[p, -1]]
    if not failed:
        return value
    if message:
        raise JaxsegError(message)
    first = everyone[failed[0], :-1]
    text = bytes(first[first > 0]).decode(errors="replace")
    raise JaxsegError(f"process {failed[0]}: {text}")


def place(tree, shardings):
    """`jax.device_put(tree, shardings)` for a value every process holds whole and alike (made
    from the same seed or loaded from the same file): each process copies its own shards. In a
    multi-process job device_put would first check that the processes agree, one collective
    per array (hundreds for a train state, slow and at the mercy of Gloo's 30 s timeouts)."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(x, sharding):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree.map(one, tree, shardings)


def replicate(mesh, tree):
    """Place every array of `tree` whole on every device of the mesh."""
    if jax.process_count() == 1:
        return jax.device_put(tree, replicated(mesh))
    # Every process holds the whole value (loaded or computed alike); no cross-host copy.
    sharding = replicated(mesh)
    return jax.tree.map(
        lambda x: x if isinstance(x, jax.Array) and x.sharding == sharding
        else jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)
