"""The attack kernel: projected gradient steps on input pixels, shared by everything in jaxseg.

Adversarial training, robust evaluation, inpainting and generation all run `optimize`: the same
loop with a different objective, constraint set, direction and start (see docs/attacks.md).

    optimize(objective, x_ref, key, config, eps=..., step_size=...) -> AttackResult

* `objective(x, step) -> values [N]` (or `(values, scores)`, or an `Evaluation`) is a pure
  function of the batch and the 0-based step index. The gradient of `sum(values)` drives the
  steps (one value per example, so an example's gradient does not depend on the batch size);
  `scores` (default: `values`) pick the best iterate per example; `control` (default: `scores`)
  is what an adaptive update (APGD) watches to size its steps; `done` lets a batch stop early.
  The kernel knows nothing about models or labels.
* `config` (`KernelConfig`) is static: norm, direction rule, update rule, steps, start, restarts,
  ascend or descend, best-iterate selection, early stop, trace. `eps` and `step_size` are traced:
  an eps sweep reuses one compiled program.
* An update rule is a small stateful transformation, like an optax one:
  `init(x0, step_size) -> state`, `update(state, x, grad, control, t) -> (x_next, state)`.
  'fixed' (a constant step along the direction rule, then the projection) is the stateless case;
  'apgd' is Croce and Hein's (2020) adaptive rule (`apgd_update`).
* The loop is `lax.fori_loop` (`lax.scan` when a per-step trace is asked for); call `optimize`
  inside `jax.jit` (with the batch sharded over `runtime.make_mesh()` if you like).

Segmentation presets on top (presets.py): `make('pgd', eps=8/255)` names an attack,
`attack(spec, apply_fn, variables, images, labels, key)` validates concrete inputs eagerly and
runs one jitted program.
"""

import dataclasses
import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import runtime
from jaxseg.errors import JaxsegError

NORMS = ("linf", "l2", "none")
STEP_RULES = ("sign", "l2", "plain")
UPDATES = ("fixed", "apgd")
APGD_MOMENTUM = 0.75  # weight of the new step; 0.25 goes to the previous move
APGD_OSCILLATION = 0.75  # halve if at most this share of a window's steps increased the loss
STARTS = ("clean", "random")
DEFAULT_RULE = {"linf": "sign", "l2": "l2", "none": "plain"}


# ---------------------------------------------------------------------------------------------
# Static configuration


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Everything that changes the compiled program (hashable: a static jit argument).

    norm       'linf' | 'l2' (per-example ball of radius eps around x_ref) | 'none' (only [0,1]).
    step_rule  'sign' | 'l2' (gradient / its per-example L2 norm) | 'plain'; default from norm.
    update     'fixed' (step_size times the step rule's direction) | 'apgd' (per-example
               adaptive step size starting at step_size, momentum, restarts from the best
               point at checkpoints; see `apgd_update`).
    steps      gradient steps per restart.
    start      'clean' (x_start, default x_ref) | 'random' (uniform point in the eps-ball).
    restarts   independent runs from fresh random starts; the best per example is kept.
    ascend     True: maximise the objective (untargeted); False: minimise (targeted, synthesis).
    use_best   return, per example, the best iterate over all steps and restarts (like the
               robustness library's use_best) instead of the last one. Costs one extra forward.
    early_stop once every example of the batch reported `done` (the objective must return an
               `Evaluation` with `done`), the iterate stops moving and, in rolled loops, the
               remaining steps are skipped (on unrolled CPU code a cond would cost more).
    trace      also return the score of every iterate, [restarts, steps, N] (uses lax.scan).
    unroll     how the loops compile; None (leave it): decided by `jaxseg.runtime.unroll` for
               steps * restarts when the config is made (the backend's policy). It never
               changes the result.
    """

    norm: str = "linf"
    steps: int = 10
    step_rule: str | None = None
    start: str = "random"
    restarts: int = 1
    ascend: bool = True
    use_best: bool = False
    trace: bool = False
    update: str = "fixed"
    early_stop: bool = False
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
        if self.update not in UPDATES:
            raise JaxsegError(f"unknown update {self.update!r}; choose one of {', '.join(UPDATES)}")
        if self.update == "apgd" and self.norm == "none":
            raise JaxsegError("the apgd update needs a ball (norm 'linf' or 'l2')")
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
            object.__setattr__(self, "unroll", runtime.unroll(self.steps * self.restarts))


class Evaluation(NamedTuple):
    """What an objective may return for a batch (each [N]): `values` to differentiate; `scores`
    to pick the best iterate (default values); `control` for adaptive updates (default
    scores); `done` (bool) where nothing is left to gain (needed by early_stop)."""

    values: jax.Array
    scores: jax.Array | None = None
    control: jax.Array | None = None
    done: jax.Array | None = None


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
    """objective(x, step) -> (sum of values to differentiate, Evaluation with every field set)."""

    def wrapped(x, step):
        out = objective(x, step)
        if not isinstance(out, Evaluation):
            out = Evaluation(*out) if isinstance(out, tuple) else Evaluation(out)
        scores = out.values if out.scores is None else out.scores
        control = scores if out.control is None else out.control
        done = jnp.zeros(scores.shape, bool) if out.done is None else out.done
        return jnp.sum(out.values), Evaluation(out.values, scores, control, done)

    return wrapped


# ---------------------------------------------------------------------------------------------
# Update rules


class UpdateRule(NamedTuple):
    """init(x0, step_size) -> state; update(state, x, grad, control, t) -> (x_next, state)."""

    init: object
    update: object


def fixed_update(direction, project, x_ref, sign):
    """A constant step along `direction(grad)`, then the projection (PGD, BIM, FGSM, synthesis)."""

    def init(x0, step_size):
        return step_size

    def update(step_size, x, grad, control, t):
        return project(x + sign * step_size * direction(grad), x_ref), step_size

    return UpdateRule(init, update)


def apgd_checkpoints(steps):
    """Iterations after which APGD checks its progress: p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), in iterations (rounded down, windows of at
    least one step), as Croce and Hein's reference code computes them."""
    window = max(int(0.22 * steps), 1)
    decrease, smallest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    points, at = [], window
    while at < steps:
        points.append(at)
        window = max(window - decrease, smallest)
        at += window
    return tuple(points)


class ApgdState(NamedTuple):
    eta: jax.Array  # [N] step size per example
    x_prev: jax.Array  # the previous iterate (momentum)
    best_x: jax.Array  # highest control so far, where a halving restarts from
    best_grad: jax.Array
    best: jax.Array  # [N] its control value
    last: jax.Array  # [N] control at the previous iterate
    increases: jax.Array  # [N] steps since the last checkpoint that increased the control
    best_at_check: jax.Array  # [N] best at the last checkpoint
    halved_at_check: jax.Array  # [N] bool: halved at the last checkpoint


def apgd_update(direction, project, x_ref, sign, steps):
    """APGD (Croce and Hein 2020) as a kernel update rule, per example:

    z = P(x + eta * direction(g)), x_next = P(x + 0.75 (z - x) + 0.25 (x - x_prev)) (plain z on
    the first step). At each checkpoint (`apgd_checkpoints`), with the control value c (plain CE
    for segmentation attacks; the gradient comes from the attack loss): halve eta and continue
    from the best point (and its gradient) if (a) at most 75 % of the steps since the last
    checkpoint increased c, or (b) eta was not halved at the last checkpoint and the best c did
    not improve since. Descending (sign -1) watches -c."""
    checks = np.zeros(steps, bool)
    windows = np.ones(steps, np.float32)
    previous = 0
    for point in apgd_checkpoints(steps):
        checks[point], windows[point] = True, point - previous
        previous = point
    checks, windows = jnp.asarray(checks), jnp.asarray(windows)

    def per_example(mask, like):
        return mask.reshape((-1,) + (1,) * (like.ndim - 1))

    def init(x0, step_size):
        n = x0.shape[0]
        return ApgdState(eta=jnp.full((n,), step_size, jnp.float32), x_prev=x0, best_x=x0,
                         best_grad=jnp.zeros_like(x0), best=jnp.full((n,), -jnp.inf),
                         last=jnp.full((n,), -jnp.inf), increases=jnp.zeros((n,)),
                         best_at_check=jnp.full((n,), -jnp.inf),
                         halved_at_check=jnp.ones((n,), bool))

    def update(state, x, grad, control, t):
        c = sign * control
        better = c > state.best
        best_x = jnp.where(per_example(better, x), x, state.best_x)
        best_grad = jnp.where(per_example(better, x), grad, state.best_grad)
        best = jnp.where(better, c, state.best)
        increases = state.increases + ((t > 0) & (c > state.last)).astype(jnp.float32)
        check = checks[t]
        halve = check & ((increases <= APGD_OSCILLATION * windows[t])
                         | (~state.halved_at_check & (state.best_at_check >= best)))
        eta = jnp.where(halve, state.eta / 2, state.eta)
        x = jnp.where(per_example(halve, x), best_x, x)
        grad = jnp.where(per_example(halve, x), best_grad, grad)
        z = project(x + sign * per_example(eta, x) * direction(grad), x_ref)
        momentum = jnp.where(t > 0, APGD_MOMENTUM, 1.0)
        x_next = project(x + momentum * (z - x) + (1 - momentum) * (x - state.x_prev), x_ref)
        state = ApgdState(
            eta=eta, x_prev=x, best_x=best_x, best_grad=best_grad, best=best, last=c,
            increases=jnp.where(check, 0.0, increases),
            best_at_check=jnp.where(check, best, state.best_at_check),
            halved_at_check=jnp.where(check, halve, state.halved_at_check))
        return x_next, state

    return UpdateRule(init, update)


def make_update(config, eps, x_ref):
    """The update rule of `config` for the ball of radius eps around x_ref."""
    project = make_project(config.norm, eps)
    direction = make_step(config.step_rule)
    sign = 1.0 if config.ascend else -1.0
    if config.update == "apgd":
        return apgd_update(direction, project, x_ref, sign, config.steps)
    return fixed_update(direction, project, x_ref, sign)


# ---------------------------------------------------------------------------------------------
# The loop


def _keep_better(ascend, x, score, best_x, best_score):
    """Per example, keep (x, score) where it beats the best so far."""
    better = score > best_score if ascend else score < best_score
    mask = better.reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x, best_x), jnp.where(better, score, best_score)


def _one_run(objective, x_ref, x_start, key, config, eps, step_size):
    """One restart: (x, score at x or None, trace [steps, N] or None)."""
    rule = make_update(config, eps, x_ref)
    grad_fn = jax.grad(_split_objective(objective), has_aux=True)
    worst = -jnp.inf if config.ascend else jnp.inf
    x0 = make_init(config, eps)(key, x_ref, x_start)
    n = x0.shape[0]
    # carry: iterate, (best iterate, its score), rule state, examples done so far
    carry0 = (x0, (x0, jnp.full((n,), worst, jnp.float32)), rule.init(x0, step_size),
              jnp.zeros((n,), bool))

    def step(carry, t):
        x, best, state, done = carry
        grad, evaluation = grad_fn(x, t)
        if config.use_best:
            best = _keep_better(config.ascend, x, evaluation.scores, *best)
        done = done | evaluation.done
        moved, state = rule.update(state, x, grad, evaluation.control, t)
        if config.early_stop:  # nothing left to gain anywhere: stay (and skip what follows)
            moved = jnp.where(jnp.all(done), x, moved)
        return (moved, best, state, done), evaluation.scores

    if config.early_stop and not config.unroll:
        plain_step = step

        def step(carry, t):  # noqa: F811  (skips the work once every example is done)
            finished = jnp.all(carry[3])
            return jax.lax.cond(finished, lambda c: (c, c[1][1]), lambda c: plain_step(c, t),
                                carry)
        # Unrolled (XLA:CPU) code only freezes the iterate: a network inside a cond branch runs
        # there about 2x slower (measured: APGD-10, fcn_resnet26_w16 4x96x128, 0.60 vs 1.27 s),
        # which costs more than the skipped steps save.

    if config.trace:
        (x, best, _, _), trace = jax.lax.scan(step, carry0, jnp.arange(config.steps),
                                              unroll=config.unroll)
    else:
        x, best, _, _ = jax.lax.fori_loop(0, config.steps, lambda t, c: step(c, t)[0], carry0,
                                          unroll=config.unroll)
        trace = None

    if not (config.use_best or config.restarts > 1):
        return x, None, trace
    _, final = _split_objective(objective)(x, jnp.asarray(config.steps))
    final = final.scores
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
