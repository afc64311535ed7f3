"""Inpainting (eq. 6) and generation (eq. 7) as descents on the attack kernel, and `run`, which
validates inputs and runs one jitted program for a Flax model.

Both descend the segmentation cross-entropy of a fixed model with respect to the input pixels,
which is exactly what a targeted attack does; they differ from one only in the objective, the
start point and the constraint set (objectives.py, docs/synthesis.md).

`inpaint` / `generate` are pure and traceable (call them inside `jax.jit`, on a batch sharded over
`runtime.make_mesh()` if you like): `logits_fn(x) -> [N, H, W, C]` is the model (for instance
`attacks.model_logits(model.apply, variables)`), and lam, step size, radius and jitter may be
traced values. How the step loop compiles is the backend's business (`jaxseg.runtime`).
"""

import dataclasses
import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import attacks, runtime
from jaxseg.errors import JaxsegError
from jaxseg.synthesis.objectives import (KINDS, PENALTIES, RECIPES, default_step_size,
                                         generate_objective, inpaint_objective, start_point,
                                         as_mask)

RULES = ("l2", "sign", "plain")
MIN_SIZE = 16  # below this a head at output stride 8 sees less than 2x2 feature cells


class Synthesis(NamedTuple):
    """x: the result [N, H, W, 3]. start: where the descent began. trace: the objective at every
    iterate before its step, [steps, N]. frames: the iterates every steps / F steps, start
    first and result last, [F + 1, N, H, W, 3] (None unless frames were asked for)."""

    x: jax.Array
    start: jax.Array
    trace: jax.Array
    frames: jax.Array | None = None


# ---------------------------------------------------------------------------------------------
# The descent: one kernel call (or one per frame, chained, for a trajectory)


def _kernel_config(steps, rule, bounded, unroll=None):
    if rule not in RULES:
        raise JaxsegError(f"unknown step rule {rule!r}; choose one of {', '.join(RULES)}")
    return attacks.KernelConfig(norm="l2" if bounded else "none", steps=steps, step_rule=rule,
                                start="clean", ascend=False, trace=True, unroll=unroll)


def _check_schedule(steps, frames):
    if isinstance(steps, numbers.Integral) and not isinstance(steps, bool):
        steps = int(steps)
    if not isinstance(steps, int) or steps < 1:
        raise JaxsegError(f"steps must be an integer >= 1, got {steps!r}")
    if not isinstance(frames, int) or frames < 0:
        raise JaxsegError(f"frames must be an integer >= 0, got {frames!r}")
    if frames and steps % frames:
        raise JaxsegError(f"frames ({frames}) must divide steps ({steps})")


def _descend(objective, centre, start, key, *, steps, rule, step_size, radius, frames, unroll=None):
    """Minimise `objective` from `start` (in the L2 ball of `radius` around `centre` if given).

    With frames F > 0 the kernel runs F times for steps / F steps each, every run starting
    where the last stopped: the same iterates (the objective ignores the step index and a
    clean start re-projects a feasible point onto itself), with a snapshot between runs."""
    _check_schedule(steps, frames)
    bounded = radius is not None
    eps = radius if bounded else 0.0
    if not frames:
        config = _kernel_config(steps, rule, bounded, unroll)
        result = attacks.optimize(objective, centre, key, config, eps=eps, step_size=step_size,
                                  x_start=start)
        return result.x, result.trace[0], None

    config = _kernel_config(steps // frames, rule, bounded, unroll)

    def chunk(x, k):
        result = attacks.optimize(objective, centre, k, config, eps=eps, step_size=step_size,
                                  x_start=x)
        return result.x, (result.x, result.trace[0])

    x, (snapshots, traces) = jax.lax.scan(chunk, start, jax.random.split(key, frames))
    snapshots = jnp.concatenate([start[None], snapshots], axis=0)
    return x, traces.reshape(steps, -1), snapshots


def _synthesize(kind, logits_fn, images, labels, mask, key, *, lam, penalty, steps, step_size,
                rule, radius, jitter, frames, unroll=None, resume=None):
    """The descent shared by `inpaint` and `generate`, from `resume` if given (`run` chains
    short descents this way), else from the start point. `unroll`: None = the backend's policy."""
    if penalty not in PENALTIES:
        raise JaxsegError(f"unknown penalty {penalty!r}; choose one of {', '.join(PENALTIES)}")
    images = jnp.asarray(images, jnp.float32)
    if kind == "inpaint":
        mask = as_mask(mask, images)
    centre, start = start_point(kind, images, mask, key, jitter)
    if kind == "inpaint":
        objective = inpaint_objective(logits_fn, centre, labels, mask, lam, penalty)
    else:
        objective = generate_objective(logits_fn, labels)
    step_size = default_step_size(kind, images.shape, rule) if step_size is None else step_size
    first = start if resume is None else jnp.asarray(resume, jnp.float32)
    x, trace, snapshots = _descend(objective, centre, first, jax.random.fold_in(key, 1),
                                   steps=steps, rule=rule, step_size=step_size, radius=radius,
                                   frames=frames, unroll=unroll)
    return Synthesis(x, start, trace, snapshots)


def inpaint(logits_fn, images, labels, mask, key, *, lam=RECIPES["inpaint"]["lam"],
            steps=RECIPES["inpaint"]["steps"], step_size=None, rule="l2", radius=None,
            penalty="mse", jitter=0.0, frames=0):
    """Eq. 6: fill the hole `mask` of `images` so that `logits_fn` segments them as `labels`.

    images: float [N, H, W, 3] in [0, 1]; the pixels under the hole are never read (the start
    replaces them by the per-channel mean of the known pixels, and the penalty ignores them).
    labels: int [N, H, W] (the true, or an edited, segmentation; 255 ignored). mask: bool
    [N, H, W], True in the hole. lam: penalty weight; penalty: 'mse' or 'l2' (see
    `objectives.penalty_value`). step_size: None = Santurkar's 0.1 scaled to the image size
    (`default_step_size`). radius: None = only the [0, 1] box; else an L2 ball around the start.
    jitter: std of Gaussian noise added in the hole at the start (the key picks it).
    frames: F > 0 also returns F + 1 snapshots of the trajectory (F must divide steps).
    Pure: traceable under `jax.jit`; lam, step_size, radius and jitter may be traced.
    """
    return _synthesize("inpaint", logits_fn, images, labels, mask, key, lam=lam, penalty=penalty,
                       steps=steps, step_size=step_size, rule=rule, radius=radius,
                       jitter=jitter, frames=frames)


def generate(logits_fn, images, labels, key, *, steps=RECIPES["generate"]["steps"],
             step_size=None, rule="l2", radius=None, jitter=0.0, frames=0):
    """Eq. 7: an image that `logits_fn` segments as `labels`, from the per-channel-mean image
    of `images` (only its mean colour is used). Options as for `inpaint` (step size default:
    Santurkar's 1.0 scaled to the image size)."""
    return _synthesize("generate", logits_fn, images, labels, None, key, lam=0.0, penalty="mse",
                       steps=steps, step_size=step_size, rule=rule, radius=radius,
                       jitter=jitter, frames=frames)


# ---------------------------------------------------------------------------------------------
# Running a Flax model: validation + one jitted program


@dataclasses.dataclass(frozen=True)
class Options:
    """Everything about a synthesis run that changes the compiled program."""

    kind: str = "inpaint"
    steps: int = 720
    rule: str = "l2"
    penalty: str = "mse"
    bounded: bool = False
    frames: int = 0
    bn: str = "running"
    unroll: bool | None = None  # decided by `run` from jaxseg.runtime (part of the jit key)


def check_images(images, labels, mask=None, classes=None):
    """Eager checks with one-line errors: shapes, pixel range, labels, the hole, the size."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    attacks.check_inputs(jnp.asarray(images), jnp.asarray(labels), classes)
    height, width = images.shape[1:3]
    if min(height, width) < MIN_SIZE:
        raise JaxsegError(f"image size {height}x{width} is too small for the model: at least "
                          f"{MIN_SIZE}x{MIN_SIZE}")
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != images.shape[:3]:
            raise JaxsegError(f"mask shape {mask.shape} does not match images {images.shape}")
        holes = mask.reshape(len(mask), -1)
        if not holes.any(axis=1).all():
            raise JaxsegError(f"empty mask for example {int(np.argmin(holes.any(axis=1)))}")
        if holes.all(axis=1).any():
            full = int(np.argmax(holes.all(axis=1)))
            raise JaxsegError(f"the mask covers all of example {full}: nothing is left to "
                              "inpaint from (use generate)")


def check_options(kind, *, steps, step_size, lam, rule, radius, penalty, jitter, bn, frames):
    """Eager checks of a run's settings (one-line JaxsegErrors)."""
    if kind not in KINDS:
        raise JaxsegError(f"unknown synthesis kind {kind!r}; choose one of {', '.join(KINDS)}")
    _check_schedule(steps, frames)
    if rule not in RULES:
        raise JaxsegError(f"unknown step rule {rule!r}; choose one of {', '.join(RULES)}")
    if penalty not in PENALTIES:
        raise JaxsegError(f"unknown penalty {penalty!r}; choose one of {', '.join(PENALTIES)}")
    if bn not in attacks.BN_MODES:
        raise JaxsegError(f"unknown bn mode {bn!r}; choose one of {', '.join(attacks.BN_MODES)}")
    for name, value in (("lambda", lam), ("jitter", jitter)):
        if not float(value) >= 0:
            raise JaxsegError(f"{name} must be >= 0, got {value}")
    if not float(step_size) > 0:
        raise JaxsegError(f"step size must be > 0, got {step_size}")
    if radius is not None and not float(radius) > 0:
        raise JaxsegError(f"radius must be > 0, got {radius}")


@functools.partial(runtime.jit, static_argnames=("apply_fn", "options"))
def _run_jit(apply_fn, options, variables, images, labels, mask, key, lam, step_size, radius,
             jitter, resume=None):
    logits_fn = attacks.model_logits(apply_fn, variables, options.bn)
    return _synthesize(options.kind, logits_fn, images, labels, mask, key, lam=lam,
                       penalty=options.penalty, steps=options.steps, step_size=step_size,
                       rule=options.rule, radius=radius if options.bounded else None,
                       jitter=jitter, frames=options.frames, unroll=options.unroll,
                       resume=resume)


@functools.partial(runtime.jit, static_argnames=("kind",))
def _start_jit(kind, images, mask, key, jitter):
    return start_point(kind, images, mask, key, jitter)[1]


def _run_chunked(call, options, chunk, start, progress):
    """`options.steps` steps from `start` as a host loop of unrolled `chunk`-step programs, each
    resuming where the last stopped (the same iterates as one program: see `_descend`)."""
    step = dataclasses.replace(options, steps=chunk, frames=0, unroll=True)
    per_frame = options.steps // options.frames if options.frames else None
    x, traces, frames = start, [], [start]
    for done in range(chunk, options.steps + 1, chunk):
        result = call(step, x)
        x = result.x
        traces.append(result.trace)
        if progress:
            x.block_until_ready()  # report steps done, not steps dispatched
            progress(chunk)
        if per_frame and done % per_frame == 0:
            frames.append(x)
    return Synthesis(x, start, jnp.concatenate(traces), jnp.stack(frames) if per_frame else None)


def run(kind, apply_fn, variables, images, labels, key, *, mask=None, lam=None, steps=None,
        step_size=None, rule="l2", radius=None, penalty="mse", jitter=0.0, frames=0,
        bn="running", mesh=None, progress=None):
    """Validate, then inpaint (`kind='inpaint'`, needs `mask`) or generate with a Flax model.

    apply_fn: e.g. `model.apply` (hashable: a static jit argument). Defaults: `RECIPES[kind]`
    with the step size scaled to the image (`default_step_size`). mesh: shard the batch over a
    `runtime.make_mesh()` mesh ('data' axis; the batch size must divide), variables replicated.
    How the steps compile follows `jaxseg.runtime`: on CPU a long descent runs as a host loop
    of one compiled program of `runtime.chunk` unrolled steps, each resuming where the last
    stopped (the same iterates as one program); on GPU/TPU one rolled program.
    progress: called with the number of steps just finished (after each chained program on
    CPU; once, at the end, for one program). Returns `Synthesis`; one compiled program per
    (shapes, Options) whatever lam / step size.
    """
    if kind not in KINDS:
        raise JaxsegError(f"unknown synthesis kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "inpaint" and mask is None:
        raise JaxsegError("inpaint needs a mask (True in the hole)")
    recipe = RECIPES[kind]
    steps = recipe["steps"] if steps is None else steps
    lam = recipe["lam"] if lam is None else lam
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int32)
    step_size = default_step_size(kind, images.shape, rule) if step_size is None else step_size
    check_options(kind, steps=steps, step_size=step_size, lam=lam, rule=rule, radius=radius,
                  penalty=penalty, jitter=jitter, bn=bn, frames=frames)
    classes = attacks.num_classes(apply_fn, variables, images.shape)
    check_images(images, labels, mask if kind == "inpaint" else None, classes)
    per_frame = steps // frames if frames else steps
    chunk = runtime.chunk(steps, per_frame)
    options = Options(kind, steps, rule, penalty, radius is not None, frames, bn,
                      runtime.unroll(per_frame))
    mask = np.zeros(labels.shape, bool) if mask is None else np.asarray(mask, bool)
    batch = (images, labels, mask)
    if mesh is not None:
        batch = runtime.shard_batch(mesh, batch)
        variables = runtime.replicate(mesh, variables)
    scalars = [jnp.asarray(v, jnp.float32) for v in (lam, step_size, radius or 0.0, jitter)]
    call = lambda opts, resume: _run_jit(apply_fn, opts, variables, *batch, key, *scalars,  # noqa: E731
                                         resume=resume)
    if chunk:
        # Every chained program resumes, the first from the start: one compiled program.
        start = _start_jit(kind, batch[0], batch[2], key, scalars[3])
        return _run_chunked(call, options, chunk, start, progress)
    result = call(options, None)
    if progress:
        result.x.block_until_ready()
        progress(steps)
    return result


def compiled_programs():
    """How many programs `run` has compiled (a lam or step-size sweep must not add any)."""
    return _run_jit._cache_size()
