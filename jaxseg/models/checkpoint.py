"""Model checkpoints with orbax: variables plus the model config needed to rebuild the model.

A model checkpoint is a directory holding two orbax items, `model` (JSON: arch, num_classes, aux)
and `variables` ({'params', 'batch_stats'}). `load()` also accepts a directory of numbered steps
(an orbax CheckpointManager root, as training writes) and then takes the latest step.
"""

import contextlib
import logging
import os
import re

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxseg import runtime
from jaxseg.errors import JaxsegError
from jaxseg.models.network import from_config, init, model_config


def _checkpointer():
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


@contextlib.contextmanager
def quiet_orbax():
    """Silence orbax's absl warnings while probing a checkpoint that may be damaged (jaxseg
    reports the damage itself, in one line)."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def save(path, model, variables, overwrite=False):
    """Write `variables` of `model` to the directory `path` (atomically, by orbax's rename)."""
    path = os.path.abspath(path)
    if os.path.exists(path):
        if not overwrite:
            raise JaxsegError(f"{path}: already exists (refusing to overwrite)")
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    _checkpointer().save(
        path,
        args=ocp.args.Composite(
            model=ocp.args.JsonSave(model_config(model)),
            variables=ocp.args.StandardSave(variables),
        ),
        force=overwrite,
    )


def resolve(path):
    """The model-checkpoint directory for `path`: itself, or the latest numbered step below it
    (or below its `checkpoints/`, for a training workdir)."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise JaxsegError(f"{path}: no such checkpoint directory")
    if os.path.isdir(os.path.join(path, "model")):
        return path
    if os.path.isdir(os.path.join(path, "checkpoints")):  # a training workdir
        path = os.path.join(path, "checkpoints")
    steps = [int(n) for n in os.listdir(path) if re.fullmatch(r"\d+", n)]
    steps = [s for s in steps if os.path.isdir(os.path.join(path, str(s), "model"))]
    if not steps:
        raise JaxsegError(f"{path}: not a jaxseg checkpoint (no 'model' item and no saved steps)")
    return os.path.join(path, str(max(steps)))


def load_config(path):
    path = resolve(path)
    try:
        with quiet_orbax():
            restored = _checkpointer().restore(
                path, args=ocp.args.Composite(model=ocp.args.JsonRestore()))
    except Exception as err:  # orbax raises many types for damaged directories
        raise JaxsegError(f"{path}: unreadable checkpoint ({type(err).__name__})") from err
    return restored["model"]


def load(path, dtype="auto", remat="none"):
    """Rebuild (model, variables) from a checkpoint written by `save` or by training. The model
    computes in `dtype` (`runtime.COMPUTE_DTYPES`; 'auto': the backend's) with per-block
    `remat` (`resnet.REMAT_POLICIES`); neither is stored, both leave the variables alone."""
    path = resolve(path)
    model = from_config(load_config(path), runtime.compute_dtype(dtype), remat)
    abstract = jax.eval_shape(lambda: init(model, jax.random.key(0)))
    abstract = {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}
    # On this process's first device: in a multi-process job every process loads its own copy.
    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=here),
                            abstract)
    try:
        with quiet_orbax():
            stored = ocp.StandardCheckpointer().metadata(os.path.join(path, "variables")).item_metadata
    except Exception as err:
        raise JaxsegError(f"{path}: damaged checkpoint, unreadable variables metadata "
                          f"({type(err).__name__})") from err
    if stored is None:  # orbax returns nothing for a missing or corrupt item
        raise JaxsegError(f"{path}: damaged checkpoint, its variables item is missing or corrupt")
    stored = stored.tree if hasattr(stored, "tree") else stored
    if _shapes(stored) != _shapes(abstract):
        raise JaxsegError(f"{path}: its variables do not match its model config ({model.arch}, "
                          f"{model.num_classes} classes)")
    try:
        with quiet_orbax():
            restored = _checkpointer().restore(
                path, args=ocp.args.Composite(variables=ocp.args.StandardRestore(abstract))
            )["variables"]
    except Exception as err:  # truncated or missing array files (TensorStore's long dump)
        raise JaxsegError(f"{path}: damaged checkpoint, its arrays cannot be read (missing or "
                          "truncated array files)") from err
    if not all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(restored)):
        raise JaxsegError(f"{path}: the checkpoint holds non-finite (NaN or inf) parameters")
    return model, restored


def _shapes(tree):
    """{path: shape} of a variables tree (abstract arrays or orbax metadata)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(k): tuple(v.shape) for k, v in flat}
