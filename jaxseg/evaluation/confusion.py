"""Clean and robust evaluation: confusion matrices summed over a whole split, per attack.

Each batch is attacked with the kernel (when an attack is given), predicted, and reduced to a
[C, C] confusion matrix inside one jitted program; eps and step size are traced arguments, so a
robustness curve over many eps values compiles once per attack kind.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import attacks, data, runtime
from jaxseg.evaluation import metrics
from jaxseg.labels import IGNORE


def confusion_matrix(labels, predictions, num_classes, ignore=IGNORE):
    """[C, C] int32 counts, rows = true class, columns = predicted class. Jittable.

    Pixels labelled `ignore` are skipped.
    """
    labels = labels.reshape(-1).astype(jnp.int32)
    predictions = predictions.reshape(-1).astype(jnp.int32)
    valid = labels != ignore
    index = jnp.where(valid, labels * num_classes + predictions, 0)
    counts = jnp.bincount(index, weights=valid.astype(jnp.int32), length=num_classes * num_classes)
    return counts.astype(jnp.int32).reshape(num_classes, num_classes)


@functools.partial(jax.jit, static_argnames=("apply_fn", "static", "num_classes"))
def _confusion(apply_fn, static, num_classes, variables, images, labels, key, eps, step_size):
    if static is not None:
        images = attacks.presets.run(static, apply_fn, variables, images, labels, key, eps,
                                     step_size).x
    logits = apply_fn(variables, images, train=False)["out"]
    return confusion_matrix(labels, jnp.argmax(logits, axis=-1), num_classes)


def _pad_batch(images, labels, multiple):
    """Pad the batch axis to a multiple of the device count; padded labels are all ignore."""
    extra = (-images.shape[0]) % multiple
    if not extra:
        return images, labels
    images = np.concatenate([images, np.zeros((extra, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.full((extra, *labels.shape[1:]), IGNORE, labels.dtype)])
    return images, labels


def confusion_over(model, variables, batches, spec=None, key=None, mesh=None):
    """Sum of confusion matrices over `batches` (an iterable of {'image', 'label'} numpy batches,
    as `jaxseg.data` loaders yield), each batch attacked with `spec` (an `attacks.Attack`) when
    given. Blank padding examples carry ignore labels and count nowhere."""
    mesh = mesh or runtime.make_mesh()
    sharding = runtime.batch_sharding(mesh)
    local_devices = runtime.local_device_count(mesh)
    key = jax.random.key(0) if key is None else key
    static = None if spec is None else spec.static
    eps = jnp.float32(0.0 if spec is None else spec.eps)
    step_size = jnp.float32(1.0 if spec is None else spec.step_size)
    variables = runtime.replicate(mesh, variables)
    total = np.zeros((model.num_classes, model.num_classes), np.int64)
    for index, batch in enumerate(batches):
        images, labels = _pad_batch(np.asarray(batch["image"], np.float32),
                                    np.asarray(batch["label"], np.int32), local_devices)
        # Each process holds its local part of the global batch (multi-host evaluation).
        images, labels = data.to_global((images, labels), sharding)
        confusion = _confusion(model.apply, static, model.num_classes, variables, images, labels,
                               jax.random.fold_in(key, index), eps, step_size)
        total += np.asarray(confusion, np.int64)
    return total


def evaluate(model, variables, batches, specs, key=None, mesh=None, class_names=None):
    """{name: metrics.summarize(...)} for each named attack in `specs` (None = clean).

    `batches` is re-iterated once per attack, so pass a re-iterable (a list or a loader)."""
    results = {}
    for name, spec in specs.items():
        confusion = confusion_over(model, variables, batches, spec, key, mesh)
        results[name] = metrics.summarize(confusion, class_names)
    return results
