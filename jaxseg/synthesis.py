"""Inpainting (eq. 6) and generation (eq. 7): objectives plus one call into the attack kernel.

Both descend the segmentation cross-entropy of a fixed model with respect to the input pixels,
which is exactly what a targeted attack does; they differ from one only in the objective, the
start point and the constraint set (see docs/synthesis.md):

    inpaint:  min_x  CE(f(x), y) + lam * mean(((x - x0) * (1 - M))**2)    from x0, hole := mean
    generate: min_x  CE(f(x), y)                                          from the mean image

`inpaint` / `generate` are pure and traceable (call them inside `jax.jit`, on a batch sharded over
`parallel.make_mesh()` if you like): `logits_fn(x) -> [N, H, W, C]` is the model (for instance
`attacks.model_logits(model.apply, variables)`), and lam, step size, radius and jitter may be
traced values. `run` validates concrete inputs and runs one jitted program for a Flax model.

Defaults follow Santurkar et al. (2019), "Image synthesis with a single (robust) classifier":
L2-normalised steps; inpainting lam 10 on a mean squared penalty, step 0.1, 720 steps; generation
step 1, 60 steps. Their step sizes are L2 lengths on 224x224x3 images; an L2 step of length s
changes a D-pixel image by s / sqrt(D) per pixel (RMS), so we keep that per-pixel change:
step = s * sqrt(D / (224 * 224 * 3)) (0.043 and 0.43 for a 96x96 image). The penalty is a mean
over pixels, and so is the cross-entropy, so lam needs no rescaling.
"""

import dataclasses
import functools
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import attacks, losses, parallel
from jaxseg.errors import JaxsegError

KINDS = ("inpaint", "generate")
RULES = ("l2", "sign", "plain")
PENALTIES = ("mse", "l2")
REFERENCE_SHAPE = (224, 224, 3)  # Santurkar et al.'s image size (ImageNet crops)
OUTPUT_STRIDE = 8  # of every FCN here
MIN_SIZE = 2 * OUTPUT_STRIDE  # below this the head sees less than 2x2 feature cells

# Santurkar et al.'s recipe at REFERENCE_SHAPE; `radius` is their L2 ball (eps), off by default.
RECIPES = {
    "inpaint": {"lam": 10.0, "steps": 720, "step_size": 0.1, "radius": 21.6},
    "generate": {"lam": 0.0, "steps": 60, "step_size": 1.0, "radius": 40.0},
}


class Synthesis(NamedTuple):
    """x: the result [N, H, W, 3]. start: where the descent began. trace: the objective at every
    iterate before its step, [steps, N]. frames: the iterates every steps / F steps, start
    first and result last, [F + 1, N, H, W, 3] (None unless frames were asked for)."""

    x: jax.Array
    start: jax.Array
    trace: jax.Array
    frames: jax.Array | None = None


# ---------------------------------------------------------------------------------------------
# Scale of the recipe


def _pixels(image_shape):
    """Number of values per example (H * W * C) from an NHWC or HWC shape."""
    return int(np.prod(image_shape[-3:]))


def scaled(value, image_shape, rule="l2"):
    """An L2 length `value` on a 224x224x3 image, rescaled to keep its per-pixel RMS change.

    For the l2 rule the length grows with sqrt(D); a sign step moves every pixel by the step
    size, so it gets the per-pixel amount itself (value / sqrt(224 * 224 * 3))."""
    per_pixel = value / math.sqrt(_pixels(REFERENCE_SHAPE))
    if rule == "sign":
        return per_pixel
    return per_pixel * math.sqrt(_pixels(image_shape))


def default_step_size(kind, image_shape, rule="l2"):
    """Santurkar et al.'s step for `kind`, scaled to `image_shape` (see `scaled`).

    The plain rule multiplies the raw gradient, whose size depends on the model: no default."""
    if rule == "plain":
        raise JaxsegError("step rule 'plain' has no scale-free default step size; pass one")
    return scaled(RECIPES[kind]["step_size"], image_shape, rule)


def default_radius(kind, image_shape):
    """Santurkar et al.'s L2 ball (eps 21.6 inpainting, 40 generation), scaled like a step."""
    return scaled(RECIPES[kind]["radius"], image_shape, "l2")


# ---------------------------------------------------------------------------------------------
# Start points


def _as_mask(mask, images):
    """Bool [N, H, W] hole mask (True = corrupted / to synthesise)."""
    mask = jnp.asarray(mask)
    if mask.shape != images.shape[:3]:
        raise JaxsegError(f"mask shape {tuple(mask.shape)} does not match images "
                          f"{tuple(images.shape)}; expected {tuple(images.shape[:3])}")
    return mask.astype(bool)


def channel_mean(images, mask=None):
    """Per-example, per-channel mean [N, 1, 1, 3] over the known pixels (outside `mask`).

    Only known pixels count: the hole's content is what inpainting must not see."""
    known = jnp.ones(images.shape[:3], bool) if mask is None else jnp.logical_not(mask)
    weights = known[..., None].astype(images.dtype)
    total = jnp.sum(images * weights, axis=(1, 2), keepdims=True)
    return total / jnp.maximum(jnp.sum(weights, axis=(1, 2), keepdims=True), 1.0)


def fill_hole(images, mask):
    """The corrupted image: the hole replaced by the per-channel mean of the known pixels."""
    mask = _as_mask(mask, images)
    return jnp.where(mask[..., None], channel_mean(images, mask), images)


def mean_image(images):
    """Every pixel the per-channel mean of its image (generation's start)."""
    return jnp.broadcast_to(channel_mean(images), images.shape)


def start_point(kind, images, mask, key, jitter):
    """(centre, start) of a descent: the image with its hole filled (inpaint) or the mean image
    (generate), and the same with `jitter` noise (in the hole only, for inpaint)."""
    images = jnp.asarray(images, jnp.float32)
    if kind == "inpaint":
        mask = _as_mask(mask, images)
        centre = fill_hole(images, mask)
        return centre, _jitter(centre, key, jitter, mask)
    centre = mean_image(images)
    return centre, _jitter(centre, key, jitter)


def _jitter(start, key, jitter, where=None):
    """Gaussian noise of std `jitter` (only where `where`), clipped to [0, 1]. With jitter 0 the
    start is deterministic; a positive jitter makes the key choose one of many results."""
    noise = jitter * jax.random.normal(key, start.shape, start.dtype)
    if where is not None:
        noise = noise * where[..., None]
    return jnp.clip(start + noise, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Objectives


def penalty_value(x, x0, mask, penalty="mse"):
    """Per-example size of the change outside the hole, [N].

    'mse':  mean over all H*W*3 values of ((x - x0) * (1 - M))**2 (Santurkar et al.).
    'l2':   ||(x - x0) * (1 - M)||_2 / sqrt(H*W*3): eq. 6's norm, divided so that lam means
            the same at every resolution (an RMS; not smooth at x = x0).
    """
    keep = jnp.logical_not(mask)[..., None].astype(x.dtype)
    diff = ((x - x0) * keep).reshape(x.shape[0], -1)
    mse = jnp.mean(diff**2, axis=1)
    if penalty == "mse":
        return mse
    return jnp.sqrt(mse + 1e-12)


def inpaint_objective(logits_fn, x0, labels, mask, lam, penalty="mse"):
    """objective(x, step) -> CE(f(x), y) + lam * penalty, per example (to be minimised)."""

    def objective(x, step):
        del step  # the objective is the same at every step
        ce = losses.cross_entropy(logits_fn(x), labels)
        return ce + lam * penalty_value(x, x0, mask, penalty)

    return objective


def generate_objective(logits_fn, labels):
    """objective(x, step) -> CE(f(x), y) per example (to be minimised)."""

    def objective(x, step):
        del step
        return losses.cross_entropy(logits_fn(x), labels)

    return objective


# ---------------------------------------------------------------------------------------------
# The descent: one kernel call (or one per frame, chained, for a trajectory)


def _kernel_config(steps, rule, bounded, unroll):
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


def _descend(objective, centre, start, key, *, steps, rule, step_size, radius, frames, unroll):
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


def _synthesize(kind, objective, centre, start, key, images, *, resume, step_size, rule,
                **descent):
    """The descent shared by `inpaint` and `generate`, from `resume` if given, else `start`."""
    step_size = default_step_size(kind, images.shape, rule) if step_size is None else step_size
    first = start if resume is None else jnp.asarray(resume, jnp.float32)
    x, trace, snapshots = _descend(objective, centre, first, jax.random.fold_in(key, 1),
                                   rule=rule, step_size=step_size, **descent)
    return Synthesis(x, start, trace, snapshots)


def inpaint(logits_fn, images, labels, mask, key, *, lam=RECIPES["inpaint"]["lam"],
            steps=RECIPES["inpaint"]["steps"], step_size=None, rule="l2", radius=None,
            penalty="mse", jitter=0.0, frames=0, unroll=None, resume=None):
    """Eq. 6: fill the hole `mask` of `images` so that `logits_fn` segments them as `labels`.

    images: float [N, H, W, 3] in [0, 1]; the pixels under the hole are never read (the start
    replaces them by the per-channel mean of the known pixels, and the penalty ignores them).
    labels: int [N, H, W] (the true, or an edited, segmentation; 255 ignored). mask: bool
    [N, H, W], True in the hole. lam: penalty weight; penalty: 'mse' or 'l2' (see
    `penalty_value`). step_size: None = Santurkar's 0.1 scaled to the image size
    (`default_step_size`). radius: None = only the [0, 1] box; else an L2 ball around the start.
    jitter: std of Gaussian noise added in the hole at the start (the key picks it).
    frames: F > 0 also returns F + 1 snapshots of the trajectory (F must divide steps).
    unroll: as `attacks.KernelConfig.unroll` (None: unrolled up to its step limit).
    resume: an iterate to continue the descent from instead of the start (`run` chains short
    descents this way); the objective, the ball and the returned start stay the original ones.
    Pure: traceable under `jax.jit`; lam, step_size, radius and jitter may be traced.
    """
    if penalty not in PENALTIES:
        raise JaxsegError(f"unknown penalty {penalty!r}; choose one of {', '.join(PENALTIES)}")
    images = jnp.asarray(images, jnp.float32)
    mask = _as_mask(mask, images)
    filled, start = start_point("inpaint", images, mask, key, jitter)
    objective = inpaint_objective(logits_fn, filled, labels, mask, lam, penalty)
    return _synthesize("inpaint", objective, filled, start, key, images, resume=resume,
                       step_size=step_size, rule=rule, steps=steps, radius=radius,
                       frames=frames, unroll=unroll)


def generate(logits_fn, images, labels, key, *, steps=RECIPES["generate"]["steps"],
             step_size=None, rule="l2", radius=None, jitter=0.0, frames=0, unroll=None,
             resume=None):
    """Eq. 7: an image that `logits_fn` segments as `labels`, from the per-channel-mean image
    of `images` (only its mean colour is used). Options as for `inpaint` (step size default:
    Santurkar's 1.0 scaled to the image size)."""
    images = jnp.asarray(images, jnp.float32)
    centre, start = start_point("generate", images, None, key, jitter)
    objective = generate_objective(logits_fn, labels)
    return _synthesize("generate", objective, centre, start, key, images, resume=resume,
                       step_size=step_size, rule=rule, steps=steps, radius=radius,
                       frames=frames, unroll=unroll)


# ---------------------------------------------------------------------------------------------
# Edited targets (semantic editing)


def paint_class(labels, region, k):
    """labels with every pixel of `region` (bool, same shape) set to class k."""
    labels = np.asarray(labels)
    return np.where(np.asarray(region, bool), k, labels).astype(labels.dtype)


def swap_class(labels, a, b):
    """labels with class a replaced by class b ("make the car a bus")."""
    labels = np.asarray(labels)
    return np.where(labels == a, b, labels).astype(labels.dtype)


def changed(labels, edited):
    """Bool mask of the pixels an edit changed (where the new content must be synthesised)."""
    return np.asarray(labels) != np.asarray(edited)


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
    unroll: bool | None = None


def check_images(images, labels, mask=None, classes=None):
    """Eager checks with one-line errors: shapes, pixel range, labels, the hole, the size."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    attacks.check_inputs(jnp.asarray(images), jnp.asarray(labels), classes)
    height, width = images.shape[1:3]
    if min(height, width) < MIN_SIZE:
        raise JaxsegError(f"image size {height}x{width} is too small for the model: at least "
                          f"{MIN_SIZE}x{MIN_SIZE} (output stride {OUTPUT_STRIDE})")
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


def check_options(kind, *, steps, step_size, lam, rule, radius, penalty, jitter, bn, frames,
                  unroll=None):
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
    if unroll not in (None, True, False):
        raise JaxsegError(f"unroll must be None, True or False, got {unroll!r}")


@functools.partial(jax.jit, static_argnames=("apply_fn", "options"))
def _run_jit(apply_fn, options, variables, images, labels, mask, key, lam, step_size, radius,
             jitter, resume=None):
    logits_fn = attacks.model_logits(apply_fn, variables, options.bn)
    common = dict(steps=options.steps, step_size=step_size, rule=options.rule,
                  radius=radius if options.bounded else None, jitter=jitter,
                  frames=options.frames, unroll=options.unroll, resume=resume)
    if options.kind == "inpaint":
        return inpaint(logits_fn, images, labels, mask, key, lam=lam, penalty=options.penalty,
                       **common)
    return generate(logits_fn, images, labels, key, **common)


@functools.partial(jax.jit, static_argnames=("kind",))
def _start_jit(kind, images, mask, key, jitter):
    return start_point(kind, images, mask, key, jitter)[1]


def largest_divisor(n, at_most):
    """The largest divisor of n that is <= at_most (at least 1)."""
    return max(d for d in range(1, max(1, min(n, at_most)) + 1) if n % d == 0)


def chunk_size(steps, frames=0):
    """Steps per compiled program when `run` chains unrolled descents on the host: the largest
    divisor of the steps (of each frame's steps) up to `attacks.UNROLL_LIMIT`."""
    return largest_divisor(steps // frames if frames else steps, attacks.UNROLL_LIMIT)


def _run_chunked(call, options, chunk, start):
    """`options.steps` steps from `start` as a host loop of unrolled `chunk`-step programs, each
    resuming where the last stopped (the same iterates as one program: see `_descend`)."""
    step = dataclasses.replace(options, steps=chunk, frames=0, unroll=True)
    per_frame = options.steps // options.frames if options.frames else None
    x, traces, frames = start, [], [start]
    for done in range(chunk, options.steps + 1, chunk):
        result = call(step, x)
        x = result.x
        traces.append(result.trace)
        if per_frame and done % per_frame == 0:
            frames.append(x)
    return Synthesis(x, start, jnp.concatenate(traces), jnp.stack(frames) if per_frame else None)


def run(kind, apply_fn, variables, images, labels, key, *, mask=None, lam=None, steps=None,
        step_size=None, rule="l2", radius=None, penalty="mse", jitter=0.0, frames=0,
        bn="running", unroll=None, mesh=None):
    """Validate, then inpaint (`kind='inpaint'`, needs `mask`) or generate with a Flax model.

    apply_fn: e.g. `model.apply` (hashable: a static jit argument). Defaults: `RECIPES[kind]`
    with the step size scaled to the image (`default_step_size`). mesh: shard the batch over a
    `parallel.make_mesh()` mesh ('data' axis; the batch size must divide), variables replicated.
    unroll: True / False: one program, its step loop unrolled / rolled. None (default): up to
    `attacks.UNROLL_LIMIT` steps one unrolled program; longer descents a host loop of unrolled
    programs of `chunk_size` steps (XLA:CPU runs a conv net about 4x slower per step inside a
    rolled loop, and compile time grows with the unrolled steps). The iterates are the same.
    Returns `Synthesis`; one compiled program per (shapes, Options) whatever lam / step size.
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
                  penalty=penalty, jitter=jitter, bn=bn, frames=frames, unroll=unroll)
    classes = attacks.num_classes(apply_fn, variables, images.shape)
    check_images(images, labels, mask if kind == "inpaint" else None, classes)
    options = Options(kind, steps, rule, penalty, radius is not None, frames, bn, unroll)
    mask = np.zeros(labels.shape, bool) if mask is None else np.asarray(mask, bool)
    batch = (images, labels, mask)
    if mesh is not None:
        batch = parallel.shard_batch(mesh, batch)
        variables = parallel.replicate(mesh, variables)
    scalars = [jnp.asarray(v, jnp.float32) for v in (lam, step_size, radius or 0.0, jitter)]
    call = lambda opts, resume: _run_jit(apply_fn, opts, variables, *batch, key, *scalars,  # noqa: E731
                                         resume=resume)
    if unroll is None and steps > attacks.UNROLL_LIMIT:
        # Every chained program resumes, the first from the start: one compiled program.
        start = _start_jit(kind, batch[0], batch[2], key, scalars[3])
        return _run_chunked(call, options, chunk_size(steps, frames), start)
    return call(options, None)


def compiled_programs():
    """How many programs `run` has compiled (a lam or step-size sweep must not add any)."""
    return _run_jit._cache_size()
