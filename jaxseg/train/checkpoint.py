"""Training checkpoints with orbax: async saves, the last N kept; each step is also a model
checkpoint (`jaxseg.models.load` reads it)."""

import os

import jax
import orbax.checkpoint as ocp

from jaxseg.models import model_config


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
            model=ocp.args.JsonSave(model_config(self.model)),
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
