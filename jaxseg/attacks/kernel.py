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
STARTS = ("clean", "random")
DEFAULT_RULE = {"linf": "sign", "l2": "l2", "none": "plain"}


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
            object.__setattr__(self, "unroll", runtime.unroll(self.steps * self.restarts))


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
