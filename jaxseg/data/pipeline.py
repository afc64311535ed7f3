"""The grain input pipeline: shuffling, augmentation, batching, per-process sharding,
background prefetch, and an iterator whose position can be checkpointed.

Sharding works at batch granularity so that the *global* batch at step k is the same whatever
the number of processes: the stream of examples is cut into local batches of
`batch_size / process_count`, and process p takes local batches p, p + count, p + 2 * count, ...
Stacked in process order (what `jax.make_array_from_process_local_data` does with a batch-sharded
`NamedSharding`), step k's local batches form global batch k. A checkpointed step therefore
restores on any number of processes.

Train: every epoch is a fresh shuffle (seeded by `seed` and the epoch) truncated to whole global
batches, with augmentation seeded per (seed, epoch, position), so runs are deterministic.
Eval: the dataset in order, padded with blank examples (`valid` False, label all 255) to whole
global batches, so that every process runs the same number of steps and every example is
seen exactly once.
"""

from __future__ import annotations

import dataclasses
import math

import grain
import jax
from absl import flags
import numpy as np

from jaxseg.data.base import is_skipped
from jaxseg.data.transforms import EvalTransform, TrainTransform, blank
from jaxseg.errors import JaxsegError


@dataclasses.dataclass(frozen=True)
class Shard:
    """This process's slice of the data: `index` in [0, count)."""

    index: int
    count: int

    def __post_init__(self):
        if not 0 <= self.index < self.count:
            raise JaxsegError(f"shard index {self.index} is outside [0, {self.count})")

    @classmethod
    def from_jax(cls):
        return cls(jax.process_index(), jax.process_count())


def _local_batch_size(batch_size, shard):
    if batch_size < 1 or batch_size % shard.count:
        raise JaxsegError(f"global batch_size {batch_size} must be a positive multiple of the "
                          f"process count {shard.count}")
    return batch_size // shard.count


class Collate:
    """Stacks items into a batch: image float32 in [0, 1] (or uint8), label int32, valid bool,
    index int32. Skipped examples become blanks of the batch's shape."""

    def __init__(self, image_dtype=np.float32, fallback_shape=None):
        self.image_dtype = np.dtype(image_dtype)
        if self.image_dtype not in (np.float32, np.uint8):
            raise JaxsegError(f"image_dtype must be float32 or uint8, got {image_dtype!r}")
        self.fallback_shape = fallback_shape

    def __call__(self, items):
        shapes = {item["label"].shape for item in items if not is_skipped(item)}
        if len(shapes) > 1:
            sizes = ", ".join(f"example {item['index']}: {item['label'].shape}"
                              for item in items if not is_skipped(item))
            raise JaxsegError(f"cannot batch examples of different sizes ({sizes}); set a crop "
                              "size (train) or pad_to (eval)")
        shape = shapes.pop() if shapes else self.fallback_shape()
        items = [blank(item["index"], *shape) if is_skipped(item) else item for item in items]
        image = np.stack([item["image"] for item in items])
        if self.image_dtype == np.float32:
            image = image.astype(np.float32) / np.float32(255.0)  # 255 -> exactly 1.0
        return {
            "image": image,
            "label": np.stack([item["label"] for item in items]).astype(np.int32),
            "valid": np.array([item.get("valid", True) for item in items], bool),
            "index": np.array([item["index"] for item in items], np.int32),
        }


class _EvalShape:
    """Shape of an eval example after its transform: `pad_to`, or the first readable example's.
    Computed on first use (only when a blank is needed)."""

    def __init__(self, dataset, transform):
        self.dataset, self.transform, self.shape = dataset, transform, transform.pad_to

    def __call__(self):
        if self.shape is None:
            for i in range(len(self.dataset)):
                item = self.dataset[i]
                if not is_skipped(item):
                    self.shape = self.transform.map(item)["label"].shape
                    break
            else:
                raise JaxsegError("every example of the eval dataset was skipped as bad")
        return self.shape


class _Padding(grain.transforms.Map):
    """Blank example (index -1) filling the last global eval batch."""

    def __init__(self, shape):
        self.shape = shape

    def map(self, _):
        return blank(-1, *self.shape())


class Loader:
    """Iterator of numpy batches (local to this process) with a checkpointable position.

    `step` counts the batches produced; `get_state()` / `set_state()` save and restore the
    position as a small JSON-able dict. The grain iterator is `iterator` (it also implements
    grain's orbax checkpoint protocol).
    """

    def __init__(self, dataset, iter_dataset, *, batch_size, shard, steps_per_epoch,
                 num_steps, fingerprint):
        self.dataset = dataset
        self.info = getattr(dataset, "info", None)
        self.batch_size = batch_size
        self.local_batch_size = batch_size // shard.count
        self.shard = shard
        self.steps_per_epoch = steps_per_epoch
        self.num_steps = num_steps  # None: endless
        self.fingerprint = fingerprint
        self.iterator = iter(iter_dataset)
        self.step = 0
        self.skipped = 0  # examples replaced by blanks because their files were bad

    @property
    def epoch(self):
        return self.step // self.steps_per_epoch

    def __iter__(self):
        return self

    def __next__(self):
        if self.iterator is None:
            raise RuntimeError("the loader is closed")
        batch = next(self.iterator)
        self.step += 1
        self.skipped += int(np.sum(~batch["valid"] & (batch["index"] >= 0)))
        return batch

    def __len__(self):
        if self.num_steps is None:
            raise TypeError("an endless loader has no length")
        return self.num_steps

    def get_state(self):
        return {"step": self.step, "skipped": self.skipped, "fingerprint": self.fingerprint,
                "iterator": self.iterator.get_state()}

    def set_state(self, state):
        if state.get("fingerprint") != self.fingerprint:
            raise JaxsegError(f"loader state was saved for a different pipeline "
                              f"({state.get('fingerprint')}), this one is {self.fingerprint}")
        step = int(state["step"])
        if self.num_steps is not None and not 0 <= step <= self.num_steps:
            raise JaxsegError(f"loader state step {step} is outside [0, {self.num_steps}]")
        iterator_state = state["iterator"]
        if set(iterator_state) == {"next_index"}:
            # the threaded iterator counts local batches = global steps, whatever the number
            # of processes, so the step alone restores it
            iterator_state = {"next_index": step}
        self.iterator.set_state(iterator_state)
        self.step, self.skipped = step, int(state.get("skipped", 0))

    def global_batches(self, sharding):
        """Yield global `jax.Array` batches assembled from every process's local batches."""
        for batch in self:
            yield to_global(batch, sharding)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Stop background threads / worker processes. Dropping the iterator now (rather than
        at interpreter exit, when grain's finaliser finds its modules gone) keeps exit quiet."""
        if self.iterator is not None:
            self.iterator.close()
            self.iterator = None


def to_global(local_batch, sharding):
    """Assemble a global batch from each process's local part (batch-sharded `sharding`, e.g.
    `NamedSharding(mesh, P('data'))`)."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x),
                        local_batch)


def _finish(ds, local_batch, shard, collate, num_threads, prefetch, num_workers):
    ds = ds.batch(local_batch, drop_remainder=True, batch_fn=collate)
    ds = ds[shard.index:: shard.count]
    iter_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                   prefetch_buffer_size=prefetch))
    if num_workers:
        # grain's worker processes read absl flags; outside an absl app take their defaults
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return ds, iter_ds


def train_loader(dataset, batch_size, crop_size, *, short_side_range=None, flip_prob=0.5,
                 seed=0, num_epochs=None, shard=None, num_threads=2, prefetch=4, num_workers=0,
                 image_dtype=np.float32):
    """Endless (or `num_epochs`) shuffled, augmented training batches.

    `batch_size` is global; each process yields `batch_size / process_count` examples a step.
    `shard` defaults to this JAX process. Threads (`num_threads`) read and augment in the
    background, `prefetch` batches ahead; `num_workers` > 0 adds worker processes.
    """
    shard = shard or Shard.from_jax()
    local_batch = _local_batch_size(batch_size, shard)
    steps_per_epoch = len(dataset) // batch_size
    if steps_per_epoch == 0:
        raise JaxsegError(f"dataset of {len(dataset)} examples is smaller than one global "
                          f"batch of {batch_size}")
    transform = TrainTransform(crop_size, short_side_range, flip_prob)
    ds = grain.MapDataset.source(dataset).seed(seed).shuffle().random_map(transform)
    ds = ds[: steps_per_epoch * batch_size].repeat(num_epochs)
    ds, iter_ds = _finish(ds, local_batch, shard, Collate(image_dtype), num_threads, prefetch,
                          num_workers)
    fingerprint = {"kind": "train", "examples": len(dataset), "batch_size": batch_size,
                   "seed": seed, "crop_size": list(transform.crop_size),
                   "short_side_range": list(transform.short_side_range or []),
                   "flip_prob": flip_prob}
    return Loader(dataset, iter_ds, batch_size=batch_size, shard=shard,
                  steps_per_epoch=steps_per_epoch,
                  num_steps=None if num_epochs is None else len(ds),
                  fingerprint=fingerprint)


def eval_loader(dataset, batch_size, *, short_side=None, pad_to=None, shard=None,
                num_threads=2, prefetch=4, num_workers=0, image_dtype=np.float32):
    """One ordered pass; the last global batch is filled with blanks (`valid` False)."""
    shard = shard or Shard.from_jax()
    local_batch = _local_batch_size(batch_size, shard)
    transform = EvalTransform(short_side, pad_to)
    shape = _EvalShape(dataset, transform)
    ds = grain.MapDataset.source(dataset).map(transform)
    num_steps = math.ceil(len(dataset) / batch_size)
    padding = num_steps * batch_size - len(dataset)
    if padding:
        blanks = grain.MapDataset.range(padding).map(_Padding(shape))
        ds = grain.MapDataset.concatenate([ds, blanks])
    ds, iter_ds = _finish(ds, local_batch, shard, Collate(image_dtype, shape), num_threads,
                          prefetch, num_workers)
    fingerprint = {"kind": "eval", "examples": len(dataset), "batch_size": batch_size,
                   "short_side": short_side, "pad_to": list(transform.pad_to or [])}
    return Loader(dataset, iter_ds, batch_size=batch_size, shard=shard,
                  steps_per_epoch=num_steps, num_steps=num_steps, fingerprint=fingerprint)
