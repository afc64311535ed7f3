"""The attack kernel: projected gradient steps on input pixels, shared by everything in jaxseg.

Adversarial training, robust evaluation, inpainting and generation all run `optimize`: the same
loop with a different objective, constraint set, direction and start (see docs/attacks.md).

    optimize(objective, x_ref, key, config, eps=..., step_size=...) -> AttackResult

* `objective(x, step) -> values [N]` (or `(values, scores)`) is a pure function of the batch and
  the 0-based step index. The gradient of `sum(values)` drives the steps (one value per example,
  so an example's gradient does not depend on the batch size); `scores` (default: `values`) pick
  the best iterate per example. The kernel knows nothing about models or labels.
* `config` (`KernelConfig`) is static: norm, step rule, steps, start, restarts, direction,
  best-iterate selection, trace. `eps` and `step_size` are traced: an eps sweep reuses one
  compiled program.
* The loop is `lax.fori_loop` (`lax.scan` when a per-step trace is asked for); call `optimize`
  inside `jax.jit` (with the batch sharded over `parallel.make_mesh()` if you like).

Segmentation presets on top: `make('pgd', eps=8/255)` names an attack, `attack(spec, apply_fn,
variables, images, labels, key)` validates concrete inputs eagerly and runs one jitted program.
"""

import dataclasses
import functools
import numbers
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import losses
from jaxseg.errors import JaxsegError

NORMS = ("linf", "l2", "none")
STEP_RULES = ("sign", "l2", "plain")
STARTS = ("clean", "random")
BN_MODES = ("running", "batch")
DEFAULT_RULE = {"linf": "sign", "l2": "l2", "none": "plain"}
UNROLL_LIMIT = 32  # steps x restarts up to which loops are unrolled by default (see KernelConfig)
UNROLL_CHOICES = {"auto": None, "on": True, "off": False}  # the CLIs' --unroll values


# ---------------------------------------------------------------------------------------------
# Static configuration


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Everything that changes the compiled program (hashable: a static jit argument).

    norm       'linf' | 'l2' (per-example ball of radius eps around x_ref) | 'none' (only [0,1]).
    step_rule  'sign' | 'l2' (gradient / its per-example L2 norm) | 'plain'; default from norm.
    steps      gradient steps per restart.
    start      'clean' (x_start, default x_ref) | 'random' (uniform point in the eps-ball).
    restarts   independent runs from fresh random starts; the best per example is kept.
    ascend     True: maximise the objective (untargeted); False: minimise (targeted, synthesis).
    use_best   return, per example, the best iterate over all steps and restarts (like the
               robustness library's use_best) instead of the last one. Costs one extra forward.
    trace      also return the score of every iterate, [restarts, steps, N] (uses lax.scan).
    unroll     unroll the step (and restart) loops into straight-line code. None: when
               steps * restarts <= UNROLL_LIMIT. On XLA:CPU (jax 0.10.2) a convolutional
               network inside a rolled while loop runs about 5x slower per step than the same
               steps unrolled (measured on FCN-ResNet50), while unrolling costs compile time
               linear in the steps: attacks (a few to tens of steps) unroll, long synthesis
               runs (hundreds of steps) stay rolled.
    """

    norm: str = "linf"
    steps: int = 10
    step_rule: str | None = None
    start: str = "random"
    restarts: int = 1
    ascend: bool = True
    use_best: bool = False
    trace: bool = False
    unroll: bool | None = None

    def __post_init__(self):
        for name in ("steps", "restarts"):  # numpy integers (from configs) count as ints
            value = getattr(self, name)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                object.__setattr__(self, name, int(value))
        if self.norm not in NORMS:
            raise JaxsegError(f"unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        if self.step_rule is None:
            object.__setattr__(self, "step_rule", DEFAULT_RULE[self.norm])
        if self.step_rule not in STEP_RULES:
            raise JaxsegError(
                f"unknown step rule {self.step_rule!r}; choose one of {', '.join(STEP_RULES)}")
        if self.start not in STARTS:
            raise JaxsegError(f"unknown start {self.start!r}; choose one of {', '.join(STARTS)}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise JaxsegError(f"steps must be an integer >= 1, got {self.steps!r}")
        if not isinstance(self.restarts, int) or self.restarts < 1:
            raise JaxsegError(f"restarts must be an integer >= 1, got {self.restarts!r}")
        if self.start == "random" and self.norm == "none":
            raise JaxsegError("a random start needs a ball to sample from (norm 'linf' or 'l2')")
        if self.restarts > 1 and self.start != "random":
            raise JaxsegError("restarts > 1 need start='random' (clean restarts are identical)")
        if self.unroll is None:
            object.__setattr__(self, "unroll", self.steps * self.restarts <= UNROLL_LIMIT)


class AttackResult(NamedTuple):
    """x: the optimised batch. value: per-example score at x ([N]; None when neither use_best nor
    restarts asked for a final evaluation). trace: scores per iterate [restarts, steps, N] or None."""

    x: jax.Array
    value: jax.Array | None = None
    trace: jax.Array | None = None


# ---------------------------------------------------------------------------------------------
# The three pieces: start, step rule, projection


def _example_norm(v):
    """Per-example L2 norm, shaped [N, 1, 1, ...] to broadcast against v."""
    flat = v.reshape(v.shape[0], -1)
    return jnp.linalg.norm(flat, axis=1).reshape((-1,) + (1,) * (v.ndim - 1))


def make_project(norm, eps):
    """project(x, x_ref): nearest point of the constraint set, then the [0, 1] box.

    Box-clipping after the ball projection never leaves the ball: x_ref is in the box, so the
    clip only moves each coordinate towards it."""

    def project(x, x_ref):
        delta = x - x_ref
        if norm == "linf":
            delta = jnp.clip(delta, -eps, eps)
        elif norm == "l2":
            length = _example_norm(delta)
            delta = delta * jnp.minimum(1.0, eps / jnp.maximum(length, 1e-12))
        return jnp.clip(x_ref + delta, 0.0, 1.0)

    return project


def make_step(rule):
    """direction(grad): the step direction for one unit of step size."""

    def direction(grad):
        if rule == "sign":
            return jnp.sign(grad)
        if rule == "l2":
            return grad / jnp.maximum(_example_norm(grad), 1e-12)
        return grad

    return direction


def _uniform_l2_ball(key, shape, eps, dtype):
    """Uniform in the per-example L2 ball (by volume): Gaussian direction, radius eps * u^(1/d).

    Strictly inside for u < 1; in high dimension the radius concentrates just below eps."""
    k_dir, k_rad = jax.random.split(key)
    direction = jax.random.normal(k_dir, shape, dtype)
    direction = direction / jnp.maximum(_example_norm(direction), 1e-12)
    dims = float(np.prod(shape[1:]))
    u = jax.random.uniform(k_rad, (shape[0],) + (1,) * (len(shape) - 1), dtype)
    return direction * eps * u ** (1.0 / dims)


def make_init(config, eps):
    """init(key, x_ref, x_start): the first iterate, projected onto the constraint set."""
    project = make_project(config.norm, eps)

    def init(key, x_ref, x_start):
        if config.start == "clean":
            return project(x_start, x_ref)
        if config.norm == "linf":
            noise = jax.random.uniform(key, x_start.shape, x_start.dtype, -1.0, 1.0) * eps
        else:
            noise = _uniform_l2_ball(key, x_start.shape, eps, x_start.dtype)
        return project(x_start + noise, x_ref)

    return init


# ---------------------------------------------------------------------------------------------
# The loop


def _split_objective(objective):
    """objective(x, step) -> (sum of values to differentiate, (values, scores))."""

    def wrapped(x, step):
        out = objective(x, step)
        values, scores = out if isinstance(out, tuple) else (out, out)
        return jnp.sum(values), (values, scores)

    return wrapped


def _keep_better(ascend, x, score, best_x, best_score):
    """Per example, keep (x, score) where it beats the best so far."""
    better = score > best_score if ascend else score < best_score
    mask = better.reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x, best_x), jnp.where(better, score, best_score)


def _one_run(objective, x_ref, x_start, key, config, eps, step_size):
    """One restart: (x, score at x or None, trace [steps, N] or None)."""
    project = make_project(config.norm, eps)
    direction = make_step(config.step_rule)
    grad_fn = jax.grad(_split_objective(objective), has_aux=True)
    sign = 1.0 if config.ascend else -1.0
    worst = -jnp.inf if config.ascend else jnp.inf
    x0 = make_init(config, eps)(key, x_ref, x_start)
    best0 = (x0, jnp.full((x0.shape[0],), worst, jnp.float32))

    def step(carry, t):
        x, best = carry
        grad, (_, score) = grad_fn(x, t)
        if config.use_best:
            best = _keep_better(config.ascend, x, score, *best)
        x = project(x + sign * step_size * direction(grad), x_ref)
        return (x, best), score

    if config.trace:
        (x, best), trace = jax.lax.scan(step, (x0, best0), jnp.arange(config.steps),
                                        unroll=config.unroll)
    else:
        x, best = jax.lax.fori_loop(0, config.steps, lambda t, c: step(c, t)[0], (x0, best0),
                                    unroll=config.unroll)
        trace = None

    if not (config.use_best or config.restarts > 1):
        return x, None, trace
    _, (_, final) = _split_objective(objective)(x, jnp.asarray(config.steps))
    if config.use_best:
        x, final = _keep_better(config.ascend, x, final, *best)
    return x, final, trace


def optimize(objective, x_ref, key, config, *, eps, step_size, x_start=None):
    """Projected gradient optimisation of `objective` over inputs near `x_ref`.

    Pure and traceable: call it inside `jax.jit`. `x_start` (default `x_ref`) is where the clean
    start begins and the centre of the random start (inpainting starts from a filled-in image);
    the constraint set is always centred on `x_ref`. Returns `AttackResult`; no gradient flows
    out of it (the result is a constant for whoever differentiates the caller, e.g. a train step).
    """
    x_ref = jnp.asarray(x_ref, jnp.float32)
    x_start = x_ref if x_start is None else jnp.asarray(x_start, jnp.float32)
    eps = jnp.asarray(eps, jnp.float32)
    step_size = jnp.asarray(step_size, jnp.float32)
    run = functools.partial(_one_run, objective, x_ref, x_start, config=config, eps=eps,
                            step_size=step_size)

    if config.restarts == 1:
        x, value, trace = run(key)
        traces = None if trace is None else trace[None]
    else:
        def restart(best, k):
            x, value, trace = run(k)
            return _keep_better(config.ascend, x, value, *best), trace

        worst = jnp.full((x_ref.shape[0],), -jnp.inf if config.ascend else jnp.inf, jnp.float32)
        keys = jax.random.split(key, config.restarts)
        (x, value), traces = jax.lax.scan(restart, (x_ref, worst), keys, unroll=config.unroll)
    return jax.lax.stop_gradient(AttackResult(x, value, traces))


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


def _is_concrete(value):
    return not isinstance(value, jax.core.Tracer)


def check_hyper(eps, step_size):
    """Eager checks of traced hyper-parameters (skipped for tracers)."""
    if _is_concrete(eps) and not float(eps) >= 0:
        raise JaxsegError(f"eps must be >= 0, got {float(eps)}")
    if _is_concrete(step_size) and not float(step_size) > 0:
        raise JaxsegError(f"step size must be > 0, got {float(step_size)}")


def make(name, *, eps=None, step_size=None, steps=None, restarts=1, targeted=False,
         use_best=None, random_start=None, norm=None, bn="running", trace=False, unroll=None):
    """Build a preset attack by name.

    fgsm    one sign step of size eps from the clean image.
    bim     I-FGSM: `steps` (10) sign steps from the clean image.
    pgd     BIM from a uniformly random point of the Linf ball (Madry et al.).
    pgd_l2  per-example normalised-gradient steps in the L2 ball, random start.
    segpgd  PGD on the SegPGD loss (Gu et al. 2022).
    cospgd  PGD on the CosPGD loss (Agnihotri & Keuper 2023).
    Defaults: eps 8/255 (pgd_l2: 1.0), steps 10 (fgsm: 1), step size 2.5 * eps / steps (Madry's
    rule: 2/255 for 8/255 in 10 steps; fgsm: eps), use_best True unless fgsm or a single step.
    `norm` switches segpgd / cospgd / pgd to 'l2'; `targeted` descends the loss of `labels`;
    `unroll` as in `KernelConfig` (default: unrolled up to UNROLL_LIMIT steps x restarts).
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
        if _is_concrete(eps) and float(eps) == 0:
            step_size = 1.0  # eps 0 leaves nothing to move; any positive step is the same
    if random_start is not None:
        start = "random" if random_start else "clean"
    if use_best is None:
        use_best = bool(steps > 1 or restarts > 1)
    check_hyper(eps, step_size)
    config = KernelConfig(norm=norm, steps=steps, start=start, restarts=restarts,
                          ascend=not targeted, use_best=bool(use_best), trace=bool(trace),
                          unroll=unroll)
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
    if _is_concrete(images):
        values = np.asarray(images)
        if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
            raise JaxsegError(f"images must be finite and in [0, 1], got range "
                              f"[{np.nanmin(values):.4g}, {np.nanmax(values):.4g}]")
    if classes is not None:
        check_labels(labels, classes)


def check_labels(labels, classes):
    """Every label in [0, classes) or the ignore label (skipped for tracers)."""
    if _is_concrete(labels):
        values = np.asarray(labels)
        bad = (values != losses.IGNORE) & ((values < 0) | (values >= classes))
        if bad.any():
            raise JaxsegError(f"labels must be in [0, {classes}) or {losses.IGNORE} (ignore); "
                              f"found {values[bad].flat[0]}")


@functools.partial(jax.jit, static_argnames=("apply_fn", "static"))
def _attack_jit(apply_fn, static, variables, images, labels, key, eps, step_size, x_start):
    config, loss, targeted, bn = static
    objective = segmentation_objective(apply_fn, variables, labels, loss=loss,
                                       steps=config.steps, targeted=targeted, bn=bn)
    return optimize(objective, images, key, config, eps=eps, step_size=step_size,
                    x_start=x_start)


def attack(spec, apply_fn, variables, images, labels, key, *, x_start=None):
    """Run the preset `spec` (from `make`) on a segmentation model; returns `AttackResult`.

    apply_fn: Flax-style `apply(variables, x, train=..., mutable=...)` returning logits or
    {'out': logits, ...} (e.g. `model.apply`); it must be hashable (it is a static jit argument).
    images: float [N, H, W, 3] in [0, 1]; labels: int [N, H, W] (true or target mask), 255 ignored.
    Works under an outer `jax.jit` and on batches sharded over a `parallel.make_mesh()` mesh.
    """
    check_hyper(spec.eps, spec.step_size)
    images = jnp.asarray(images)
    labels = jnp.asarray(labels)
    check_inputs(images, labels)
    if _is_concrete(labels):
        check_labels(labels, num_classes(apply_fn, variables, images.shape))
    return _attack_jit(apply_fn, spec.static, variables, images.astype(jnp.float32),
                       labels.astype(jnp.int32), key, jnp.asarray(spec.eps, jnp.float32),
                       jnp.asarray(spec.step_size, jnp.float32), x_start)


def compiled_programs():
    """How many programs `attack` has compiled so far (an eps sweep must not add any)."""
    return _attack_jit._cache_size()
