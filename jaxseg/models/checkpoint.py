"""Model checkpoints with orbax: variables plus the model config needed to rebuild the model.

A model checkpoint is a directory holding two orbax items, `model` (JSON: arch, num_classes, aux)
and `variables` ({'params', 'batch_stats'}). `load()` also accepts a directory of numbered steps
(an orbax CheckpointManager root, as training writes) and then takes the latest step.
"""

import os
import re

import jax
import orbax.checkpoint as ocp

from jaxseg.errors import JaxsegError
from jaxseg.models.build import from_config, init, model_config


def _checkpointer():
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


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
        restored = _checkpointer().restore(path, args=ocp.args.Composite(model=ocp.args.JsonRestore()))
    except Exception as err:  # orbax raises many types for damaged directories
        raise JaxsegError(f"{path}: unreadable checkpoint ({type(err).__name__})") from err
    return restored["model"]


def load(path):
    """Rebuild (model, variables) from a checkpoint written by `save` or by training."""
    path = resolve(path)
    model = from_config(load_config(path))
    abstract = jax.eval_shape(lambda: init(model, jax.random.key(0)))
    abstract = {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}
    try:
        restored = _checkpointer().restore(
            path, args=ocp.args.Composite(variables=ocp.args.StandardRestore(abstract))
        )
    except Exception as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise JaxsegError(f"{path}: variables do not match the stored model config: {first_line}") from err
    return model, restored["variables"]
