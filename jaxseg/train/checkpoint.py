"""Training checkpoints with orbax: async saves, the last N kept; each step is also a model
checkpoint (`jaxseg.models.load` reads it).

Resuming takes the newest intact step: a damaged one (truncated arrays, a missing item, corrupt
metadata, an empty folder, non-finite values) is renamed aside to `<step>.damaged` (kept, never
deleted) with a one-line warning, and the next older one is tried. A step whose arrays have other
shapes than the new run's state is not damaged but a different experiment: that stops the run,
naming the configuration keys that differ.
"""

import collections
import logging
import os
import re
import shutil
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxseg.errors import JaxsegError
from jaxseg.models import model_config
from jaxseg.models.checkpoint import quiet_orbax


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a quota, a vanished directory). orbax
    reports a failed asynchronous save as whatever tensorstore raised, often a ValueError
    (RESOURCE_EXHAUSTED), at the next save or wait."""


def _write_error(step, directory, err):
    reason = " ".join(str(err).split())[:200] or type(err).__name__
    where = f"checkpoint {step}" if step is not None else "a checkpoint"
    where += f" in {directory}"
    return CheckpointWriteError(f"writing {where} failed ({reason}); is the disk full?")


class TrainCheckpoints:
    """Training checkpoints in `directory` (an orbax CheckpointManager): async saves, the last
    `keep` kept. Each step holds the model-checkpoint items (`model`, `variables`, so `load()`
    works on it) plus `train` (optimizer state, step, PRNG key, ...), `data` (the input
    iterator's position) and `config` (the run's full configuration, for provenance)."""

    failed = False  # a save failed: its temporary folder is removed on close

    def __init__(self, directory, model, keep=3, async_save=True):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.model = model
        self.directory = os.path.abspath(directory)
        # A save failing in orbax's background threads (a full disk) is logged there at length,
        # then raised here at the next save or wait: the loop reports it in one line.
        self._loggers = {name: logging.getLogger(name).level for name in ("absl", "asyncio")}
        for name in self._loggers:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self._hooks = sys.excepthook, sys.unraisablehook
        sys.excepthook, sys.unraisablehook = _without_closed_loop(*self._hooks)
        with quiet_orbax():  # it reads every step's metadata; damage is reported on restore
            self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self):
        return self.manager.latest_step()

    def path(self, step):
        return os.path.join(self.directory, str(step))

    def save(self, step, variables, train, data_state, config):
        try:
            self.manager.save(step, force=True, args=ocp.args.Composite(
                model=ocp.args.JsonSave(model_config(self.model)),
                variables=ocp.args.StandardSave(variables),
                train=ocp.args.StandardSave(train),
                data=ocp.args.JsonSave(data_state),
                config=ocp.args.JsonSave(config),
            ))
        except (OSError, ValueError, RuntimeError) as err:  # this save, or the one in flight
            self.failed = True
            raise _write_error(step, self.directory, err) from None

    def restore(self, step, variables, train):
        """(variables, train, data_state) of `step`, shaped and sharded like the given targets."""
        abstract = lambda tree: jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)  # noqa: E731
        restored = self.manager.restore(step, args=ocp.args.Composite(
            variables=ocp.args.StandardRestore(abstract(variables)),
            train=ocp.args.StandardRestore(abstract(train)),
            data=ocp.args.JsonRestore(),
        ))
        return restored["variables"], restored["train"], restored["data"]

    def saved_config(self, step):
        """The configuration dict stored with `step`."""
        return self.manager.restore(step, args=ocp.args.Composite(
            config=ocp.args.JsonRestore()))["config"]

    def restore_latest(self, variables, train, config):
        """(step, variables, train, data_state, changed_keys) of the newest intact step, or None
        when there is none at all. `config` (a dict) is compared with the stored one: differing
        keys are returned when the state's shapes agree, and stop the run when they do not."""
        with quiet_orbax():
            steps = sorted(self.manager.all_steps(), reverse=True)
        damaged = []
        for step in steps:
            try:
                with quiet_orbax():
                    saved = self.saved_config(step)
                    same_shapes = all(_shapes(self.path(step), name) == _shapes_of(target)
                                      for name, target in (("variables", variables),
                                                           ("train", train)))
            except Exception as err:  # orbax and tensorstore raise many types for damage
                damaged.append(self._set_aside(step, err))
                continue
            changes = config_changes(saved, config)
            if not same_shapes:
                listed = "; ".join(changes) or "none (the code's state layout changed)"
                raise JaxsegError(f"{self.directory}: step {step} was trained with a different "
                                  f"model, data or adversarial mode, so it cannot be resumed with "
                                  f"this configuration; changed keys: {listed}. Use a new workdir")
            try:
                with quiet_orbax():
                    restored = self.restore(step, variables, train)
                _check_finite(restored[:2], self.path(step))
            except Exception as err:
                damaged.append(self._set_aside(step, err))
                continue
            return (step, *restored, changes)
        if damaged:
            raise JaxsegError(f"{self.directory}: no intact checkpoint (damaged, set aside: "
                              f"{', '.join(damaged)}); nothing to resume from")
        return None

    def _set_aside(self, step, err):
        """Rename a damaged step to `<step>.damaged[.N]` (orbax ignores it), warn in one line."""
        source = self.path(step)
        target, n = f"{source}.damaged", 1
        while os.path.exists(target):
            target, n = f"{source}.damaged.{n}", n + 1
        if jax.process_index() == 0:
            os.rename(source, target)
            reason = " ".join(str(err).split())[:160] or type(err).__name__
            print(f"warning: checkpoint {source} is damaged ({reason}); moved aside to {target}, "
                  "trying the previous one", file=sys.stderr)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"jaxseg set aside {step}")
        self.manager.reload()
        return os.path.basename(target)

    def wait(self):
        try:
            self.manager.wait_until_finished()
        except (OSError, ValueError, RuntimeError) as err:
            self.failed = True
            raise _write_error(None, self.directory, err) from None

    def remove_unfinished(self):
        """Delete the temporary folders of saves that never finished (orbax publishes a step
        by renaming its temporary folder; one left behind holds no usable checkpoint)."""
        if jax.process_index() != 0 or not os.path.isdir(self.directory):
            return
        for name in os.listdir(self.directory):
            if re.fullmatch(r"\d+\.orbax-checkpoint-tmp.*", name):
                path = os.path.join(self.directory, name)
                for _ in range(50):  # a failed save's threads may still be writing into it
                    shutil.rmtree(path, ignore_errors=True)
                    if not os.path.exists(path):
                        break
                    time.sleep(0.1)

    def close(self):
        try:
            self.manager.close()
        except (OSError, ValueError, RuntimeError) as err:  # a failed save, already reported
            if not self.failed:
                print(f"warning: {_write_error(None, self.directory, err)}", file=sys.stderr)
            self.failed = True
        if self.failed:  # after close: no save is in flight any more
            self.remove_unfinished()
            return  # the failed save's tasks are still logged when collected: keep them quiet
        for name, level in self._loggers.items():
            logging.getLogger(name).setLevel(level)
        sys.excepthook, sys.unraisablehook = self._hooks


def _closed_loop(exc_type, exc):
    return exc_type is RuntimeError and str(exc) == "Event loop is closed"


def _without_closed_loop(excepthook, unraisablehook):
    """The interpreter's hooks, less one message: as a save fails in the background (a full
    disk), tensorstore's callbacks post each array's result to orbax's event loop after it has
    closed, and each print a traceback 'Event loop is closed' (hundreds), before the one line
    that reports the failure."""

    def quiet_excepthook(exc_type, exc, tb):
        if not _closed_loop(exc_type, exc):
            excepthook(exc_type, exc, tb)

    def quiet_unraisablehook(unraisable):
        if not _closed_loop(unraisable.exc_type, unraisable.exc_value):
            unraisablehook(unraisable)

    return quiet_excepthook, quiet_unraisablehook


def _shapes(step_path, item):
    """The multiset of (shape, dtype) of the arrays saved in item `item` of a step."""
    metadata = ocp.StandardCheckpointer().metadata(os.path.join(step_path, item)).item_metadata
    if metadata is None:  # orbax logs the reason and returns nothing
        raise JaxsegError(f"item {item!r} is missing or its metadata is unreadable")
    leaves = jax.tree_util.tree_leaves(metadata.tree if hasattr(metadata, "tree") else metadata)
    return collections.Counter((tuple(x.shape), np.dtype(x.dtype).name) for x in leaves)


def _shapes_of(tree):
    return collections.Counter((tuple(x.shape), np.dtype(x.dtype).name)
                               for x in jax.tree_util.tree_leaves(tree))


def _check_finite(trees, path):
    for leaf in jax.tree_util.tree_leaves(trees):
        if jax.numpy.issubdtype(leaf.dtype, jax.numpy.inexact) and not bool(jax.numpy.isfinite(leaf).all()):
            raise JaxsegError(f"{path}: holds non-finite values")


def config_changes(old, new, prefix=""):
    """'key: old -> new' for every leaf that differs between two nested config dicts."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, f"{prefix}{key}.")
        elif _normal(a) != _normal(b):
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


def _normal(value):
    """Tuples and lists compare alike (JSON stores tuples as lists)."""
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    return value
