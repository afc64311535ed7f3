"""Segmentation attacks on the kernel: the model as an objective, named presets, validation.

    spec = make("pgd", eps=8/255, steps=10)
    x_adv = attack(spec, model.apply, variables, images, labels, key).x

`objective(spec, apply_fn, variables, labels)` is the one place that turns a segmentation model
and a labelling into a kernel objective; `run(spec, ...)` is the traceable attack that training,
evaluation and `attack` all call.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.attacks import losses
from jaxseg.attacks.kernel import KernelConfig, optimize
from jaxseg.errors import JaxsegError
from jaxseg.labels import check_labels, is_concrete

BN_MODES = ("running", "batch")


# ---------------------------------------------------------------------------------------------
# Segmentation objectives


def _no_dropout(next_fun, args, kwargs, context):
    """Method interceptor: a Dropout layer returns its input unchanged."""
    if isinstance(context.module, nn.Dropout) and context.method_name == "__call__":
        return args[0]
    return next_fun(*args, **kwargs)


def model_logits(apply_fn, variables, bn="running"):
    """x -> logits ([N, H, W, C], the 'out' head) of a Flax-style segmentation model.

    bn='running': inference mode (running statistics), as torchattacks and the robustness
    library attack. bn='batch': BatchNorm normalises with the statistics of the attacked batch
    (train=True); the updated running statistics are discarded and Dropout is switched off (an
    interceptor makes it the identity), so the objective stays a deterministic function of x.
    """
    if bn not in BN_MODES:
        raise JaxsegError(f"unknown bn mode {bn!r}; choose one of {', '.join(BN_MODES)}")

    def logits(x):
        if bn == "running":
            out = apply_fn(variables, x, train=False)
        else:
            with nn.intercept_methods(_no_dropout):
                out, _ = apply_fn(variables, x, train=True, mutable=["batch_stats"])
        return out["out"] if isinstance(out, dict) else out

    return logits


def segmentation_objective(apply_fn, variables, labels, *, loss="ce", steps=1, targeted=False,
                           bn="running"):
    """objective(x, step) for attacking a segmentation model against `labels` (the true mask, or
    the target mask when targeted). Values: the attack loss per example. Scores for best-iterate
    selection: plain cross-entropy (SegPGD's value changes meaning with the step)."""
    if loss not in losses.ATTACK_LOSSES:
        raise JaxsegError(
            f"unknown attack loss {loss!r}; choose one of {', '.join(losses.ATTACK_LOSSES)}")
    logits_fn = model_logits(apply_fn, variables, bn)

    def objective(x, step):
        logits = logits_fn(x)
        values = losses.attack_loss(loss, logits, labels, step, steps, targeted)
        if loss == "ce":
            return values
        return values, losses.cross_entropy(logits, labels)

    return objective


def run(static, apply_fn, variables, images, labels, key, eps, step_size, x_start=None):
    """The attack `static` (an `Attack.static`) on a segmentation model: traceable, no checks.
    Training, evaluation and `attack` all craft their examples here."""
    config, loss, targeted, bn = static
    objective = segmentation_objective(apply_fn, variables, labels, loss=loss,
                                       steps=config.steps, targeted=targeted, bn=bn)
    return optimize(objective, images, key, config, eps=eps, step_size=step_size,
                    x_start=x_start)


# ---------------------------------------------------------------------------------------------
# Presets


@dataclasses.dataclass(frozen=True)
class Attack:
    """A named, fully configured segmentation attack. `static` parts compile; eps and
    step_size are data (changing them reuses the compiled program)."""

    name: str
    config: KernelConfig
    loss: str
    targeted: bool
    bn: str
    eps: Any
    step_size: Any

    @property
    def static(self):
        return (self.config, self.loss, self.targeted, self.bn)


# name -> (norm, loss, start, default eps). Linf budgets are the paper's; L2 is torchattacks'.
PRESETS = {
    "fgsm": ("linf", "ce", "clean", 8 / 255),
    "bim": ("linf", "ce", "clean", 8 / 255),
    "pgd": ("linf", "ce", "random", 8 / 255),
    "pgd_l2": ("l2", "ce", "random", 1.0),
    "segpgd": ("linf", "segpgd", "random", 8 / 255),
    "cospgd": ("linf", "cospgd", "random", 8 / 255),
}


def check_hyper(eps, step_size):
    """Eager checks of traced hyper-parameters (skipped for tracers)."""
    if is_concrete(eps) and not float(eps) >= 0:
        raise JaxsegError(f"eps must be >= 0, got {float(eps)}")
    if is_concrete(step_size) and not float(step_size) > 0:
        raise JaxsegError(f"step size must be > 0, got {float(step_size)}")


def make(name, *, eps=None, step_size=None, steps=None, restarts=1, targeted=False,
         use_best=None, random_start=None, norm=None, bn="running", trace=False):
    """Build a preset attack by name.

    fgsm    one sign step of size eps from the clean image.
    bim     I-FGSM: `steps` (10) sign steps from the clean image.
    pgd     BIM from a uniformly random point of the Linf ball (Madry et al.).
    pgd_l2  per-example normalised-gradient steps in the L2 ball, random start.
    segpgd  PGD on the SegPGD loss (Gu et al. 2022).
    cospgd  PGD on the CosPGD loss (Agnihotri & Keuper 2023).
    Defaults: eps 8/255 (pgd_l2: 1.0), steps 10 (fgsm: 1), step size 2.5 * eps / steps (Madry's
    rule: 2/255 for 8/255 in 10 steps; fgsm: eps), use_best True unless fgsm or a single step.
    `norm` switches segpgd / cospgd / pgd to 'l2'; `targeted` descends the loss of `labels`.
    """
    if name not in PRESETS:
        raise JaxsegError(f"unknown attack preset {name!r}; choose one of {', '.join(PRESETS)}")
    default_norm, loss, start, default_eps = PRESETS[name]
    norm = norm or default_norm
    if name in ("fgsm", "bim") and norm != "linf":
        raise JaxsegError(f"{name} is an Linf attack; use pgd_l2 (or norm='l2' with pgd)")
    eps = default_eps if eps is None else eps
    if name == "fgsm":
        if steps not in (None, 1):
            raise JaxsegError(f"fgsm takes exactly one step, got steps={steps}")
        steps = 1
    steps = 10 if steps is None else steps
    if step_size is None:
        step_size = eps if name == "fgsm" else 2.5 * eps / max(int(steps), 1)
        if is_concrete(eps) and float(eps) == 0:
            step_size = 1.0  # eps 0 leaves nothing to move; any positive step is the same
    if random_start is not None:
        start = "random" if random_start else "clean"
    if use_best is None:
        use_best = bool(steps > 1 or restarts > 1)
    check_hyper(eps, step_size)
    config = KernelConfig(norm=norm, steps=steps, start=start, restarts=restarts,
                          ascend=not targeted, use_best=bool(use_best), trace=bool(trace))
    if bn not in BN_MODES:
        raise JaxsegError(f"unknown bn mode {bn!r}; choose one of {', '.join(BN_MODES)}")
    return Attack(name, config, loss, bool(targeted), bn, eps, step_size)


# ---------------------------------------------------------------------------------------------
# Validation and the public entry point


def _shape_key(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((tuple(leaf.shape), str(leaf.dtype)) for leaf in leaves)


@functools.lru_cache(maxsize=32)
def _num_classes_cached(apply_fn, variables_key, image_shape):
    treedef, leaves = variables_key
    variables = jax.tree_util.tree_unflatten(
        treedef, [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in leaves])
    images = jax.ShapeDtypeStruct(image_shape, jnp.float32)
    logits = jax.eval_shape(lambda v, x: model_logits(apply_fn, v)(x), variables, images)
    return int(logits.shape[-1])


def num_classes(apply_fn, variables, image_shape):
    """Classes the model predicts (from shapes only: no compute)."""
    return _num_classes_cached(apply_fn, _shape_key(variables), (1, *image_shape[1:]))


def check_inputs(images, labels, classes=None):
    """Shapes always; values (pixel range, label range) only for concrete arrays.

    Raises JaxsegError with a one-line message. Called eagerly by `attack`; under an outer jit
    the values are tracers and only the shape checks run."""
    if images.ndim != 4:
        raise JaxsegError(f"images must be NHWC (4-D), got shape {tuple(images.shape)}")
    if tuple(labels.shape) != tuple(images.shape[:3]):
        raise JaxsegError(f"labels shape {tuple(labels.shape)} does not match images "
                          f"{tuple(images.shape)}; expected {tuple(images.shape[:3])}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise JaxsegError(f"labels must be integers, got dtype {labels.dtype}")
    if is_concrete(images):
        values = np.asarray(images)
        if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
            raise JaxsegError(f"images must be finite and in [0, 1], got range "
                              f"[{np.nanmin(values):.4g}, {np.nanmax(values):.4g}]")
    if classes is not None:
        check_labels(labels, classes)


@functools.partial(jax.jit, static_argnames=("apply_fn", "static"))
def _attack_jit(apply_fn, static, variables, images, labels, key, eps, step_size, x_start):
    return run(static, apply_fn, variables, images, labels, key, eps, step_size, x_start)


def attack(spec, apply_fn, variables, images, labels, key, *, x_start=None):
    """Run the preset `spec` (from `make`) on a segmentation model; returns `AttackResult`.

    apply_fn: Flax-style `apply(variables, x, train=..., mutable=...)` returning logits or
    {'out': logits, ...} (e.g. `model.apply`); it must be hashable (it is a static jit argument).
    images: float [N, H, W, 3] in [0, 1]; labels: int [N, H, W] (true or target mask), 255 ignored.
    Works under an outer `jax.jit` and on batches sharded over a `runtime.make_mesh()` mesh.
    """
    check_hyper(spec.eps, spec.step_size)
    images = jnp.asarray(images)
    labels = jnp.asarray(labels)
    check_inputs(images, labels)
    if is_concrete(labels):
        check_labels(labels, num_classes(apply_fn, variables, images.shape))
    return _attack_jit(apply_fn, spec.static, variables, images.astype(jnp.float32),
                       labels.astype(jnp.int32), key, jnp.asarray(spec.eps, jnp.float32),
                       jnp.asarray(spec.step_size, jnp.float32), x_start)


def compiled_programs():
    """How many programs `attack` has compiled so far (an eps sweep must not add any)."""
    return _attack_jit._cache_size()
