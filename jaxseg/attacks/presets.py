"""Segmentation attacks on the kernel: the model as an objective, named presets, validation.

    spec = make("pgd", eps=8/255, steps=10)
    x_adv = attack(spec, model.apply, variables, images, labels, key).x

`segmentation_objective` is the one place that turns a segmentation model and a labelling into a
kernel objective; `run(spec.static, ...)` is the traceable attack that training, evaluation and
`attack` all call. The strongest evaluation of the field is here too: APGD with the
reduced-eps schedule (`apgd_red`) and the Segmentation Ensemble Attack (`sea`: red-eps APGD on
the JS, masked-CE and balanced masked-CE losses, worst case per image; Croce, Singh and Hein,
ECCV 2024), all on the one kernel.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import runtime
from jaxseg.attacks import losses
from jaxseg.attacks.kernel import AttackResult, Evaluation, KernelConfig, optimize
from jaxseg.errors import JaxsegError
from jaxseg.labels import check_labels, is_concrete

BN_MODES = ("running", "batch")
SELECTS = ("loss", "accuracy")
RED_EPS = ((2.0, 3), (1.5, 3), (1.0, 4))  # (radius / eps, share of the iterations)
SEA_LOSSES = ("js", "mce", "mce_bal")
SEA_STEPS = 300


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
                           bn="running", select="loss", class_weights=None):
    """objective(x, step) for attacking a segmentation model against `labels` (the true mask, or
    the target mask when targeted). Values: the attack loss per example; control: plain
    cross-entropy (SegPGD's value changes meaning with the step, masked losses vanish as pixels
    fall). Scores pick the best iterate: select='loss' the cross-entropy, select='accuracy' the
    fewest correct pixels per image (SEA's choice), ties broken by the higher CE; an example is
    done when none of its pixels is still correct (for early stop)."""
    if loss not in losses.ATTACK_LOSSES:
        raise JaxsegError(
            f"unknown attack loss {loss!r}; choose one of {', '.join(losses.ATTACK_LOSSES)}")
    if select not in SELECTS:
        raise JaxsegError(f"unknown select {select!r}; choose one of {', '.join(SELECTS)}")
    logits_fn = model_logits(apply_fn, variables, bn)

    def objective(x, step):
        logits = logits_fn(x)
        values = losses.attack_loss(loss, logits, labels, step, steps, targeted, class_weights)
        ce = values if loss == "ce" else losses.cross_entropy(logits, labels)
        if select == "loss":
            return Evaluation(values, ce)
        # Fewest correct pixels first; among equals, the highest CE (its fraction is in [0, 1)).
        correct = jax.lax.stop_gradient(losses.correct_pixels(logits, labels))
        score = -correct + jax.lax.stop_gradient(ce / (1.0 + ce))
        return Evaluation(values, score, ce, correct == 0)

    return objective


def run(static, apply_fn, variables, images, labels, key, eps, step_size, x_start=None,
        class_weights=None):
    """The attack `static` (an `Attack.static`) on a segmentation model: traceable, no checks.
    Training, evaluation and `attack` all craft their examples here. With stages (red-eps),
    stage s runs the kernel in the ball of radius factor_s * eps with step size
    factor_s * step_size, started from the previous stage's best iterate projected onto its
    ball (the first stage from `config.start`)."""
    config, loss, targeted, bn, select, stages = static
    make_objective = functools.partial(segmentation_objective, apply_fn, variables, labels,
                                       loss=loss, targeted=targeted, bn=bn, select=select,
                                       class_weights=class_weights)
    if not stages:
        return optimize(make_objective(steps=config.steps), images, key, config, eps=eps,
                        step_size=step_size, x_start=x_start)
    x = x_start
    for index, (factor, stage) in enumerate(stages):
        result = optimize(make_objective(steps=stage.steps), images,
                          jax.random.fold_in(key, index), stage, eps=factor * eps,
                          step_size=factor * step_size, x_start=x)
        x = result.x
    return result


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
    select: str = "loss"  # best iterate by 'loss' (CE) or lowest pixel 'accuracy'
    stages: tuple = ()  # red-eps: ((radius / eps, KernelConfig), ...); () = one run at eps
    class_weights: Any = None  # [C] for the mce_bal loss (data, like eps)

    @property
    def static(self):
        return (self.config, self.loss, self.targeted, self.bn, self.select, self.stages)

    @property
    def steps(self):
        """Gradient steps per image (all stages and restarts)."""
        configs = [c for _, c in self.stages] or [self.config]
        return sum(c.steps * c.restarts for c in configs)

    @property
    def norm(self):
        return self.config.norm


@dataclasses.dataclass(frozen=True)
class Ensemble:
    """Several attacks whose worst case per image is the result (SEA). Evaluation runs every
    member and keeps, per image, the member that hurts most (`jaxseg.evaluation.worst_case`)."""

    name: str
    members: tuple  # ((name, Attack), ...)
    eps: Any

    @property
    def steps(self):
        return sum(member.steps for _, member in self.members)

    @property
    def norm(self):
        return self.members[0][1].norm


# name -> (norm, loss, start, default eps). Linf budgets are the paper's; L2 is torchattacks'.
PRESETS = {
    "fgsm": ("linf", "ce", "clean", 8 / 255),
    "bim": ("linf", "ce", "clean", 8 / 255),
    "pgd": ("linf", "ce", "random", 8 / 255),
    "pgd_l2": ("l2", "ce", "random", 1.0),
    "segpgd": ("linf", "segpgd", "random", 8 / 255),
    "cospgd": ("linf", "cospgd", "random", 8 / 255),
    "apgd": ("linf", "ce", "random", 8 / 255),
    "apgd_red": ("linf", "ce", "random", 8 / 255),
    "sea": ("linf", None, "random", 8 / 255),
}
APGD_PRESETS = ("apgd", "apgd_red")


def red_eps_stages(steps, start="random", norm="linf", use_best=True, trace=False):
    """The reduced-eps schedule: radii 2, 1.5, 1 x eps with the iterations split 3 : 3 : 4
    (`RED_EPS`), each stage a fresh APGD run; ((radius / eps, KernelConfig), ...)."""
    if steps < len(RED_EPS):
        raise JaxsegError(f"red-eps needs at least {len(RED_EPS)} iterations, got {steps}")
    total = sum(share for _, share in RED_EPS)
    counts = [max(1, steps * share // total) for _, share in RED_EPS[:-1]]
    counts.append(steps - sum(counts))
    return tuple((factor, KernelConfig(norm=norm, steps=count, start=start if i == 0 else "clean",
                                       update="apgd", use_best=use_best, early_stop=True,
                                       trace=trace))
                 for i, ((factor, _), count) in enumerate(zip(RED_EPS, counts)))


def check_hyper(eps, step_size, norm="linf"):
    """Eager checks of traced hyper-parameters (skipped for tracers): finite numbers, eps >= 0
    (at most 1 in Linf, where pixels live in [0, 1]: 8 is the easy slip for 8/255), step > 0."""
    if is_concrete(eps):
        value = float(eps)
        if value < 0:
            raise JaxsegError(f"eps must be >= 0, got a negative value ({value:g})")
        if not np.isfinite(value):
            raise JaxsegError(f"eps must be >= 0 and finite, got {value}")
        if norm == "linf" and value > 1:
            raise JaxsegError(f"Linf eps must be in [0, 1] (pixels are in [0, 1]; did you mean "
                              f"{value:g}/255?), got {value:g}")
    if is_concrete(step_size) and not (float(step_size) > 0 and np.isfinite(float(step_size))):
        raise JaxsegError(f"step size must be > 0 and finite, got {float(step_size)}")


def make(name, *, eps=None, step_size=None, steps=None, restarts=1, targeted=False,
         use_best=None, random_start=None, norm=None, bn="running", trace=False, loss=None,
         class_weights=None):
    """Build a preset attack by name.

    fgsm      one sign step of size eps from the clean image.
    bim       I-FGSM: `steps` (10) sign steps from the clean image.
    pgd       BIM from a uniformly random point of the Linf ball (Madry et al.).
    pgd_l2    per-example normalised-gradient steps in the L2 ball, random start.
    segpgd    PGD on the SegPGD loss (Gu et al. 2022).
    cospgd    PGD on the CosPGD loss (Agnihotri & Keuper 2023).
    apgd      APGD (Croce & Hein 2020): adaptive per-example step from 2 eps, momentum, best
              iterate = lowest per-image pixel accuracy, early stop; `loss` ce (default), js,
              mce, mce_bal, segpgd, cospgd.
    apgd_red  APGD with the reduced-eps schedule (2, 1.5, 1 x eps over 3 : 3 : 4 of the steps).
    sea       the Segmentation Ensemble Attack: apgd_red with js, mce and mce_bal (300 steps
              each by default), worst case per image. Returns an `Ensemble`.
    Defaults: eps 8/255 (pgd_l2: 1.0), steps 10 (fgsm: 1; apgd: 100; sea: 300 per loss), step
    size 2.5 * eps / steps (Madry's rule: 2/255 for 8/255 in 10 steps; fgsm: eps; apgd: 2 eps),
    use_best True unless fgsm or a single step. `norm` switches segpgd / cospgd / pgd / apgd to
    'l2'; `targeted` descends the loss of `labels`; `loss` replaces the preset's loss;
    `class_weights` ([C], `losses.balanced_class_weights` of training-set pixel counts) is what
    mce_bal needs.
    """
    if name not in PRESETS:
        raise JaxsegError(f"unknown attack preset {name!r}; choose one of {', '.join(PRESETS)}")
    default_norm, default_loss, start, default_eps = PRESETS[name]
    norm = norm or default_norm
    eps = default_eps if eps is None else eps
    if name == "sea":
        if loss is not None:
            raise JaxsegError("sea runs its own losses (js, mce, mce_bal); --loss does not apply")
        steps = SEA_STEPS if steps is None else steps
        members = tuple((f"apgd_red-{member}", make(
            "apgd_red", eps=eps, step_size=step_size, steps=steps, norm=norm, bn=bn,
            loss=member, class_weights=class_weights)) for member in SEA_LOSSES)
        return Ensemble("sea", members, eps)
    loss = default_loss if loss is None else loss
    if loss not in losses.ATTACK_LOSSES:
        raise JaxsegError(
            f"unknown attack loss {loss!r}; choose one of {', '.join(losses.ATTACK_LOSSES)}")
    if loss in losses.NEEDS_CLASS_WEIGHTS and class_weights is None:
        raise JaxsegError(f"the {loss} loss needs class weights from training-set pixel counts "
                          "(jaxseg.data.class_pixel_counts)")
    if name in ("fgsm", "bim") and norm != "linf":
        raise JaxsegError(f"{name} is an Linf attack; use pgd_l2 (or norm='l2' with pgd)")
    if name == "fgsm":
        if steps not in (None, 1):
            raise JaxsegError(f"fgsm takes exactly one step, got steps={steps}")
        steps = 1
    adaptive = name in APGD_PRESETS
    steps = (100 if adaptive else 10) if steps is None else steps
    if step_size is None:
        if name == "fgsm":
            step_size = eps
        elif adaptive:
            step_size = 2.0 * eps
        else:
            step_size = 2.5 * eps / max(int(steps), 1)
        if is_concrete(eps) and float(eps) == 0:
            step_size = 1.0  # eps 0 leaves nothing to move; any positive step is the same
    if random_start is not None:
        start = "random" if random_start else "clean"
    if use_best is None:
        use_best = bool(steps > 1 or restarts > 1)
    check_hyper(eps, step_size, norm)
    if bn not in BN_MODES:
        raise JaxsegError(f"unknown bn mode {bn!r}; choose one of {', '.join(BN_MODES)}")
    if adaptive and targeted:
        raise JaxsegError(f"{name} is untargeted (its losses and early stop are)")
    if name == "apgd_red":
        if restarts != 1:
            raise JaxsegError("apgd_red runs one schedule; use restarts with apgd")
        stages = red_eps_stages(int(steps), start, norm, bool(use_best), bool(trace))
        return Attack(name, stages[0][1], loss, False, bn, eps, step_size, "accuracy", stages,
                      class_weights)
    config = KernelConfig(norm=norm, steps=steps, start=start, restarts=restarts,
                          ascend=not targeted, use_best=bool(use_best), trace=bool(trace),
                          update="apgd" if adaptive else "fixed", early_stop=adaptive)
    return Attack(name, config, loss, bool(targeted), bn, eps, step_size,
                  "accuracy" if adaptive else "loss", (), class_weights)


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


@functools.partial(runtime.jit, static_argnames=("apply_fn", "static"))
def _attack_jit(apply_fn, static, variables, images, labels, key, eps, step_size, x_start,
                class_weights):
    return run(static, apply_fn, variables, images, labels, key, eps, step_size, x_start,
               class_weights)


@functools.partial(runtime.jit, static_argnames=("apply_fn",))
def _accuracy_jit(apply_fn, variables, images, labels):
    return losses.pixel_accuracy(model_logits(apply_fn, variables)(images), labels)


def attack(spec, apply_fn, variables, images, labels, key, *, x_start=None):
    """Run the preset `spec` (from `make`) on a segmentation model; returns `AttackResult`.
    An `Ensemble` (sea) runs every member and returns, per image, the member's result with
    the lowest pixel accuracy (value: that accuracy).

    apply_fn: Flax-style `apply(variables, x, train=..., mutable=...)` returning logits or
    {'out': logits, ...} (e.g. `model.apply`); it must be hashable (it is a static jit argument).
    images: float [N, H, W, 3] in [0, 1]; labels: int [N, H, W] (true or target mask), 255 ignored.
    Works under an outer `jax.jit` and on batches sharded over a `runtime.make_mesh()` mesh.
    """
    if isinstance(spec, Ensemble):
        best_x, best_accuracy = None, None
        for index, (_, member) in enumerate(spec.members):
            x = attack(member, apply_fn, variables, images, labels,
                       jax.random.fold_in(key, index), x_start=x_start).x
            accuracy = _accuracy_jit(apply_fn, variables, x, jnp.asarray(labels, jnp.int32))
            if best_x is None:
                best_x, best_accuracy = x, accuracy
            else:
                lower = accuracy < best_accuracy
                best_x = jnp.where(lower[:, None, None, None], x, best_x)
                best_accuracy = jnp.minimum(accuracy, best_accuracy)
        return AttackResult(best_x, best_accuracy)
    check_hyper(spec.eps, spec.step_size)
    images = jnp.asarray(images)
    labels = jnp.asarray(labels)
    check_inputs(images, labels)
    if is_concrete(labels):
        check_labels(labels, num_classes(apply_fn, variables, images.shape))
    return _attack_jit(apply_fn, spec.static, variables, images.astype(jnp.float32),
                       labels.astype(jnp.int32), key, jnp.asarray(spec.eps, jnp.float32),
                       jnp.asarray(spec.step_size, jnp.float32), x_start,
                       None if spec.class_weights is None
                       else jnp.asarray(spec.class_weights, jnp.float32))


def compiled_programs():
    """How many programs `attack` has compiled so far (an eps sweep must not add any)."""
    return _attack_jit._cache_size()
