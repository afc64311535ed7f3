"""The label convention, in one place: int class ids, and IGNORE (255) for pixels that count
nowhere (losses, metrics, attacks, synthesis targets)."""

import numpy as np

from jaxseg.errors import JaxsegError

IGNORE = 255


def valid_mask(labels):
    """True where a pixel has a real class (not the ignore label). numpy or jax arrays."""
    return labels != IGNORE


def is_concrete(value):
    """False for a jax tracer (inside jit), whose values cannot be checked eagerly."""
    import jax

    return not isinstance(value, jax.core.Tracer)


def check_labels(labels, classes):
    """Every label in [0, classes) or IGNORE (skipped for tracers); one-line JaxsegError."""
    if is_concrete(labels):
        values = np.asarray(labels)
        bad = (values != IGNORE) & ((values < 0) | (values >= classes))
        if bad.any():
            raise JaxsegError(f"labels must be in [0, {classes}) or {IGNORE} (ignore); "
                              f"found {values[bad].flat[0]}")


def check_num_classes(model_classes, data_classes, model_name, data_name):
    """A model and a dataset (or another model) must agree on the number of classes."""
    if model_classes != data_classes:
        raise JaxsegError(f"{model_name}: model has {model_classes} classes, {data_name} has "
                          f"{data_classes}")
