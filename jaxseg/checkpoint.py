"""Model checkpoints with orbax: variables plus the model config needed to rebuild the model.

A model checkpoint is a directory holding two orbax items, `model` (JSON: arch, num_classes, aux)
and `variables` ({'params', 'batch_stats'}). `load()` also accepts a directory of numbered steps
(an orbax CheckpointManager root, as training writes) and then takes the latest step.
"""

import os
import re

import jax
import orbax.checkpoint as ocp

from jaxseg import models
from jaxseg.errors import JaxsegError


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
            model=ocp.args.JsonSave(models.model_config(model)),
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
    model = models.from_config(load_config(path))
    abstract = jax.eval_shape(lambda: models.init(model, jax.random.key(0)))
    abstract = {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}
    try:
        restored = _checkpointer().restore(
            path, args=ocp.args.Composite(variables=ocp.args.StandardRestore(abstract))
        )
    except Exception as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise JaxsegError(f"{path}: variables do not match the stored model config: {first_line}") from err
    return model, restored["variables"]


class TrainCheckpoints:
    """Training checkpoints in `directory` (an orbax CheckpointManager): async saves, the last
    `keep` kept. Each step holds the model-checkpoint items (`model`, `variables`, so `load()`
    works on it) plus `train` (optimizer state, step, PRNG key, ...), `data` (the input
    iterator's position) and `config` (the run's full configuration, for provenance)."""

    def __init__(self, directory, model, keep=3, async_save=True):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.model = model
        self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def latest_step(self):
        return self.manager.latest_step()

    def save(self, step, variables, train, data_state, config):
        self.manager.save(step, force=True, args=ocp.args.Composite(
            model=ocp.args.JsonSave(models.model_config(self.model)),
            variables=ocp.args.StandardSave(variables),
            train=ocp.args.StandardSave(train),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config),
        ))

    def restore(self, step, variables, train):
        """(variables, train, data_state) of `step`, shaped and sharded like the given targets."""
        abstract = lambda tree: jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)  # noqa: E731
        restored = self.manager.restore(step, args=ocp.args.Composite(
            variables=ocp.args.StandardRestore(abstract(variables)),
            train=ocp.args.StandardRestore(abstract(train)),
            data=ocp.args.JsonRestore(),
        ))
        return restored["variables"], restored["train"], restored["data"]

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.close()
