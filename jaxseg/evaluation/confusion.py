"""Clean and robust evaluation over a split: one confusion matrix, and per-image counts.

Each batch is attacked with the kernel (when an attack is given), predicted, and reduced inside
one jitted program to a [C, C] confusion matrix and, per image, the per-class true positives,
false positives and false negatives (`worst_case.PerImage`), so that the worst case over any
set of attacks can be recomputed later without attacking again. eps and step size are traced
arguments: a robustness curve over many eps values compiles once per attack kind.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import attacks, data, runtime
from jaxseg.evaluation import metrics
from jaxseg.evaluation.worst_case import PerImage, summarize_counts, worst_case
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


def per_image_counts(labels, predictions, num_classes, ignore=IGNORE):
    """Per image and class: (tp, fp, fn), each int32 [N, C]. Jittable."""
    n = labels.shape[0]
    valid = (labels != ignore).reshape(n, -1)
    truth = jnp.where(valid, labels.reshape(n, -1), 0).astype(jnp.int32)
    predicted = predictions.reshape(n, -1).astype(jnp.int32)
    row = (jnp.arange(n) * num_classes)[:, None]

    def histogram(classes, weights):
        counts = jnp.zeros(n * num_classes, jnp.int32).at[(row + classes).reshape(-1)].add(
            weights.reshape(-1).astype(jnp.int32))
        return counts.reshape(n, num_classes)

    tp = histogram(truth, valid & (truth == predicted))
    per_label = histogram(truth, valid)
    per_prediction = histogram(predicted, valid)
    return tp, per_prediction - tp, per_label - tp


@functools.partial(runtime.jit, static_argnames=("apply_fn", "static", "num_classes"))
def batch_counts(apply_fn, static, num_classes, variables, images, labels, key, eps, step_size,
                 class_weights):
    """One batch, attacked with `static` (an attack's static config) unless None: the [C, C]
    confusion matrix and the per-image (tp, fp, fn). Jitted."""
    if static is not None:
        images = attacks.presets.run(static, apply_fn, variables, images, labels, key, eps,
                                     step_size, class_weights=class_weights).x
    logits = apply_fn(variables, images, train=False)["out"]
    predictions = jnp.argmax(logits, axis=-1)
    return (confusion_matrix(labels, predictions, num_classes),
            per_image_counts(labels, predictions, num_classes))


def _pad_batch(images, labels, multiple):
    """Pad the batch axis to a multiple of the device count; padded labels are all ignore."""
    extra = (-images.shape[0]) % multiple
    if not extra:
        return images, labels
    images = np.concatenate([images, np.zeros((extra, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.full((extra, *labels.shape[1:]), IGNORE, labels.dtype)])
    return images, labels


class SplitResult(NamedTuple):
    """confusion [C, C] (int64) summed over the split; per_image: `PerImage` counts."""

    confusion: np.ndarray
    per_image: PerImage


def evaluate_split(model, variables, batches, spec=None, key=None, mesh=None, progress=None):
    """Confusion matrix and per-image counts over `batches` (an iterable of {'image', 'label'}
    numpy batches, with 'valid' and 'index' when a `jaxseg.data` loader yields them), each batch
    attacked with `spec` (an `attacks.Attack`) when given. Blank padding examples carry ignore
    labels and count nowhere. `progress`: called with the images done after each batch."""
    mesh = mesh or runtime.make_mesh()
    sharding = runtime.batch_sharding(mesh)
    local_devices = runtime.local_device_count(mesh)
    key = jax.random.key(0) if key is None else key
    static = None if spec is None else spec.static
    eps = jnp.float32(0.0 if spec is None else spec.eps)
    step_size = jnp.float32(1.0 if spec is None else spec.step_size)
    weights = None if spec is None or spec.class_weights is None else \
        jnp.asarray(spec.class_weights, jnp.float32)
    variables = runtime.replicate(mesh, variables)
    classes = model.num_classes
    total = np.zeros((classes, classes), np.int64)
    kept = {k: [] for k in ("index", "tp", "fp", "fn")}
    seen = 0
    for number, batch in enumerate(batches):
        count = len(batch["image"])
        valid = np.asarray(batch.get("valid", np.ones(count, bool)), bool)
        index = np.asarray(batch.get("index", np.arange(seen, seen + count)), np.int64)
        images, labels = _pad_batch(np.asarray(batch["image"], np.float32),
                                    np.asarray(batch["label"], np.int32), local_devices)
        padded = len(images)
        valid = np.concatenate([valid, np.zeros(padded - count, bool)])
        index = np.concatenate([index, np.full(padded - count, -1, np.int64)])
        # Each process holds its local part of the global batch (multi-host evaluation).
        images, labels = data.to_global((images, labels), sharding)
        confusion, (tp, fp, fn) = batch_counts(
            model.apply, static, classes, variables, images, labels,
            jax.random.fold_in(key, number), eps, step_size, weights)
        total += np.asarray(confusion, np.int64)
        valid, index = runtime.all_rows(mesh, (valid, index))
        for name, value in (("tp", tp), ("fp", fp), ("fn", fn)):
            kept[name].append(runtime.to_host(value)[valid].astype(np.int64))
        kept["index"].append(index[valid])
        seen += count
        if progress is not None:
            progress(int(valid.sum()))
    stacked = {k: np.concatenate(v) if v else np.zeros((0, classes) if k != "index" else (0,),
                                                        np.int64) for k, v in kept.items()}
    return SplitResult(total, PerImage(stacked["index"], stacked["tp"], stacked["fp"],
                                       stacked["fn"]))


def confusion_over(model, variables, batches, spec=None, key=None, mesh=None):
    """The split's confusion matrix [C, C] (see `evaluate_split`)."""
    return evaluate_split(model, variables, batches, spec, key, mesh).confusion


def evaluate_attack(model, variables, batches, spec=None, key=None, mesh=None, class_names=None,
                    progress=None):
    """(summary, {name: PerImage}) for one attack, a clean pass (spec None) or an ensemble. The
    summary has the keys of `metrics.summarize` plus `image_acc`; an ensemble's (SEA's) is the
    worst case over its members, whose own summaries are under 'members'. `batches`: an
    iterable, or a function returning a fresh one (an ensemble goes over the split once per
    member)."""
    fresh = batches if callable(batches) else (lambda: batches)
    if isinstance(spec, attacks.presets.Ensemble):
        key = jax.random.key(0) if key is None else key
        per_image, members = {}, {}
        for number, (name, member) in enumerate(spec.members):
            result = evaluate_split(model, variables, fresh(), member,
                                    jax.random.fold_in(key, number), mesh, progress)
            per_image[name] = result.per_image
            members[name] = _summary(result, class_names)
        summary = worst_case(per_image, class_names)
        summary["members"] = members
        return summary, per_image
    result = evaluate_split(model, variables, fresh(), spec, key, mesh, progress)
    return _summary(result, class_names), {None: result.per_image}


def _summary(result, class_names):
    summary = metrics.summarize(result.confusion, class_names)
    summary["image_acc"] = summarize_counts(*result.per_image[1:], class_names)["image_acc"]
    return summary


def evaluate(model, variables, batches, specs, key=None, mesh=None, class_names=None):
    """{name: summary} for each named attack in `specs` (None = clean; see `evaluate_attack`).

    `batches` is re-iterated once per attack, so pass a re-iterable (a list or a loader)."""
    return {name: evaluate_attack(model, variables, batches, spec, key, mesh, class_names)[0]
            for name, spec in specs.items()}
