"""What a training configuration costs per device, before renting the devices: FLOPs, peak
memory, the largest batch that fits, and a roofline estimate of the step time.

    jaxseg.plan.plan(config, batches=(1, 2, 4, 8, 16), remats=("none", "full"),
                     dtypes=("float32", "bfloat16"), accelerator="h100")

is what `python -m jaxseg.cli.plan --config configs/coco_fcn50_at.py` prints. Nothing runs: every
program is traced and compiled ahead of time for abstract shapes (jax.ShapeDtypeStruct), on
one device, with the per-device batch (data parallelism adds only the gradient all-reduce).

- FLOPs: XLA's cost analysis of the step with every loop unrolled (XLA counts a while loop's
  body once, so the rolled program would undercount the attack's steps).
- Peak memory: XLA's memory analysis of the step as GPUs/TPUs run it (loops rolled, state
  donated): arguments + outputs - donated + temporaries, from the default backend's compiler.
  On a CPU-only machine it comes from XLA:CPU, compiled with its memory-minimising scheduler,
  and approximates what XLA:GPU allocates; it is not a GPU measurement (run on a GPU for
  that: the table names the backend). For the FCN-ResNet50 AT step at batch 8 in bf16,
  XLA:CPU says 7.94 GB and XLA:GPU 4.82 GB. XLA:CPU schedules recomputed values early, so it
  does not credit rematerialisation (jax issue #19822; XLA:GPU does: 4.82 -> 2.50 GB with
  remat 'full'); `kept_gb`, the activations the forward pass keeps for the backward pass
  (JAX's saved residuals of the training gradient), shows what remat saves.
- Roofline: max(FLOPs / peak FLOP/s, bytes / bandwidth) for one device. Bytes are XLA's
  "bytes accessed" of the compiled program, scaled by the unrolled / rolled FLOPs ratio.
  bf16 runs at the accelerator's bf16 dense rate, float32 at its TF32 rate (XLA's default
  precision for float32 convolutions on GPU). XLA:CPU's byte counts exceed XLA:GPU's (the AT
  step above: bandwidth-bound at 52 ms on an H200 from XLA:CPU's bytes, compute-bound at 17.8
  ms from XLA:GPU's). A lower bound either way: the H200 ran that step in 72 ms.
"""

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import attacks, models, runtime
from jaxseg.errors import JaxsegError
from jaxseg.evaluation import confusion
from jaxseg.train import optim
from jaxseg.train import state as training

# Dense peak FLOP/s (bf16, TF32) and memory bandwidth, from the vendors' data sheets.
ACCELERATORS = {
    "h100": {"name": "H100 SXM 80 GB", "bfloat16": 989e12, "float32": 494.5e12, "bandwidth": 3.35e12,
             "memory_gb": 80},
    "h200": {"name": "H200 SXM 141 GB", "bfloat16": 989e12, "float32": 494.5e12, "bandwidth": 4.8e12,
             "memory_gb": 141},
    "a100": {"name": "A100 SXM 80 GB", "bfloat16": 312e12, "float32": 156e12, "bandwidth": 2.04e12,
             "memory_gb": 80},
}
# XLA:CPU's default scheduler favours concurrency over memory; the plan wants the memory a
# memory-aware (GPU-like) schedule needs. Set before the CPU backend starts (cli.plan does).
CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


@dataclasses.dataclass
class Row:
    program: str  # 'train' (one optimizer step, with the configured adversary) or 'eval'
    batch: int  # per device
    dtype: str
    remat: str
    gflops: float
    peak_gb: float
    kept_gb: float | None  # activations kept for the backward pass (train only)
    step_ms: float  # roofline estimate on the accelerator
    images_per_s: float

    def line(self):
        """One line for the log while the plan compiles."""
        kept = "" if self.kept_gb is None else f", kept {self.kept_gb:.2f} GB"
        return (f"{self.program} {self.dtype} remat={self.remat} batch {self.batch}/device: "
                f"{self.gflops:,.0f} GFLOP, peak {self.peak_gb:.2f} GB{kept}, roofline "
                f"{self.step_ms:.1f} ms ({self.images_per_s:.1f} images/s)")


def _gb(value):
    return value / 1e9


def _peak_bytes(compiled):
    memory = compiled.memory_analysis()
    return (memory.argument_size_in_bytes + memory.output_size_in_bytes
            - memory.alias_size_in_bytes + memory.temp_size_in_bytes)


def _lower(function, args, donate=()):
    """The program lowered for abstract `args`, always on the CPU backend: XLA's FLOP count
    does not depend on the device, and GPU/TPU runtimes (PJRT C API) analyse compiled programs
    only (there an uncompiled program's analysis is empty). The program is traced as the
    default backend runs it; abstract arguments let the CPU device own the lowering."""
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), args)
    try:
        counting_device = jax.devices("cpu")[0]
    except RuntimeError:  # JAX_PLATFORMS without cpu: the default backend has to do
        counting_device = jax.devices()[0]
    with jax.default_device(counting_device):
        return jax.jit(function, donate_argnums=donate).lower(*abstract)


def _flops(function, args, donate=()):
    """XLA's FLOP count of the program before compilation (see _lower)."""
    return _count(_lower(function, args, donate))


def _count(lowered):
    return float((lowered.cost_analysis() or {}).get("flops", 0.0))


def _cost(build, args, donate=(), loops=True):
    """(FLOPs unrolled, peak bytes rolled, bytes accessed scaled to the unrolled FLOPs) of the
    program `build()` returns. It is built once per loop policy: an attack fixes its loops when
    it is made, not when it is traced. Both FLOP counts come from the same (CPU) counter, so
    their ratio holds whichever backend compiled the rolled program and reported its bytes.
    Without `loops` (standard training: no attack) both are the same program: traced once."""
    with runtime.loop_policy("off"):
        function = build()
        rolled = _lower(function, args, donate)
        rolled_flops = _count(rolled)
        if jax.default_backend() == "cpu":  # the lowering above is the default backend's
            compiled = rolled.compile()
        else:
            compiled = jax.jit(function, donate_argnums=donate).lower(*args).compile()
    flops = rolled_flops
    if loops:
        with runtime.loop_policy("on"):
            flops = _flops(build(), args, donate)
    analysis = compiled.cost_analysis() or {}
    bytes_accessed = float(analysis.get("bytes accessed", 0.0)) * flops / (rolled_flops or flops)
    return flops, _peak_bytes(compiled), bytes_accessed


def _roofline(flops, bytes_accessed, dtype, accelerator):
    spec = ACCELERATORS[accelerator]
    return max(flops / spec[dtype], bytes_accessed / spec["bandwidth"])


def _kept_bytes(model, variables, images, labels):
    """Bytes of the residuals the training gradient's forward pass keeps (not the inputs)."""
    from jax._src.ad_checkpoint import saved_residuals  # public only as print_saved_residuals

    def loss(params, batch_stats, x, y):
        out, _ = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                             mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
        return training.batch_cross_entropy(out["out"], y)

    kept = saved_residuals(loss, variables["params"], variables["batch_stats"], images, labels)
    return sum(math.prod(a.shape) * a.dtype.itemsize for a, why in kept
               if not why.startswith("from the argument"))


def plan(config, batches=(1, 2, 4, 8, 16), remats=("none", "full"),
         dtypes=("float32", "bfloat16"), accelerator="h100", evaluation=True, log=None):
    """[Row] for every per-device batch, remat and compute dtype: the configured train step
    (adversary included) and, with `evaluation`, one evaluation batch under the configured
    eval attack, at the training crop size. See the module docstring for what each figure is."""
    if accelerator not in ACCELERATORS:
        raise JaxsegError(f"unknown accelerator {accelerator!r}; choose one of "
                          f"{', '.join(ACCELERATORS)}")
    if not batches or min(batches) < 1:
        raise JaxsegError(f"per-device batches must be >= 1, got {list(batches)}")
    # The programs an accelerator runs: lax 3x3 convolutions (Winograd's are XLA:CPU's choice,
    # with other FLOPs and buffers), whichever backend compiles the plan.
    with runtime.conv_policy(winograd_convs=False):
        return _plan(config, batches, remats, dtypes, accelerator, evaluation, log)


def _plan(config, batches, remats, dtypes, accelerator, evaluation, log):
    num_classes = config.model.num_classes or 21
    height, width = (int(v) for v in config.data.crop_size)
    key = jax.random.key(0)
    rows = []
    for dtype in dtypes:
        for remat in remats:
            model = models.build(config.model.arch, num_classes, config.model.aux,
                               runtime.compute_dtype(dtype), remat)
            variables = jax.eval_shape(lambda m=model: models.init(m, key, (height, width)))
            steps = config.steps * (config.adv.replays if config.adv.mode == "free" else 1)
            tx = optim.make_optimizer(config.optim, steps)
            build_step = lambda m=model, t=tx: training.make_train_step(m, t, config)  # noqa: E731
            for batch in batches:
                images = jax.ShapeDtypeStruct((batch, height, width, 3), jnp.float32)
                labels = jax.ShapeDtypeStruct((batch, height, width), jnp.int32)
                free = (batch, height, width, 3) if config.adv.mode == "free" else None
                state = jax.eval_shape(
                    lambda v, f=free: training.create_state(v, tx, key, f), variables)
                flops, peak, accessed = _cost(build_step, (state, images, labels), donate=(0,),
                                              loops=config.adv.mode != "none")
                seconds = _roofline(flops, accessed, dtype, accelerator)
                kept = _kept_bytes(model, variables, images, labels)
                rows.append(Row("train", batch, dtype, remat, flops / 1e9, _gb(peak),
                                _gb(kept), 1e3 * seconds, batch / seconds))
                if log:
                    log(rows[-1])
                if evaluation and config.eval.attack:
                    rows.append(_eval_row(config, model, variables, batch, height, width,
                                          dtype, remat, accelerator))
                    if log:
                        log(rows[-1])
    return rows


def _eval_row(config, model, variables, batch, height, width, dtype, remat, accelerator):
    """One evaluation batch: the configured eval attack, then the prediction and its counts.
    FLOPs of k > 3 attack steps are F(2) + (k - 2) (F(3) - F(2)): from the second step on every
    step is the same work (measured: exact), which spares unrolling long attacks; memory is
    the rolled program's, which does not grow with the steps."""
    eps = config.adv.eps if config.eval.eps is None else config.eval.eps
    images = jax.ShapeDtypeStruct((batch, height, width, 3), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch, height, width), jnp.int32)
    scalar = jax.ShapeDtypeStruct((), jnp.float32)

    def program(steps):
        spec = attacks.make(config.eval.attack, eps=eps, steps=steps)

        def evaluate(variables, images, labels, key, eps, step_size):
            return confusion.batch_counts(model.apply, spec.static, model.num_classes,
                                          variables, images, labels, key, eps, step_size, None)
        return evaluate

    args = (variables, images, labels, jax.random.key(0), scalar, scalar)
    steps = config.eval.steps
    if steps <= 3:
        flops, peak, accessed = _cost(lambda: program(steps), args)
    else:
        two, _, accessed_two = _cost(lambda: program(2), args)
        three, _, accessed_three = _cost(lambda: program(3), args)
        flops = two + (steps - 2) * (three - two)
        accessed = accessed_two + (steps - 2) * (accessed_three - accessed_two)
        with runtime.loop_policy("off"):
            peak = _peak_bytes(jax.jit(program(steps)).lower(*args).compile())
    seconds = _roofline(flops, accessed, dtype, accelerator)
    return Row("eval", batch, dtype, remat, flops / 1e9, _gb(peak), None, 1e3 * seconds,
               batch / seconds)


def largest_batch(rows, memory_gb):
    """{(program, dtype, remat): the largest per-device batch whose peak fits `memory_gb`},
    from a least-squares line through the measured peaks (peak grows linearly with the batch);
    0 when not even one image fits, None with a single batch size measured."""
    fits = {}
    for group in sorted({(r.program, r.dtype, r.remat) for r in rows}):
        points = [(r.batch, r.peak_gb) for r in rows if (r.program, r.dtype, r.remat) == group]
        if len(points) == 1:  # a line needs two batch sizes
            fits[group] = None
            continue
        slope, intercept = np.polyfit(*zip(*points), 1)
        # a hair of slack: a line fitted through exact points lands 1e-14 off an integer
        fits[group] = max(0, int(np.floor((memory_gb - intercept) / slope + 1e-9))) \
            if slope > 0 else None
    return fits


def markdown(rows, fits, accelerator, memory_gb, backend=None):
    """The rows as a markdown table; `backend` names the XLA backend whose memory analysis gave
    the peaks (default: JAX's default backend, where `plan` compiled them)."""
    name = ACCELERATORS[accelerator]["name"]
    backend = (backend or jax.default_backend()).upper()
    lines = [f"| program | dtype | remat | batch/device | GFLOP/step | peak GB (XLA:{backend}) | "
             f"kept GB | roofline ms ({name}) | images/s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kept = "" if r.kept_gb is None else f"{r.kept_gb:.2f}"
        lines.append(f"| {r.program} | {r.dtype} | {r.remat} | {r.batch} | {r.gflops:,.0f} | "
                     f"{r.peak_gb:.2f} | {kept} | {r.step_ms:.1f} | {r.images_per_s:.1f} |")
    lines += ["", f"Largest per-device batch within {memory_gb:g} GB (XLA:{backend} peak, linear "
              "fit):"]
    for (program, dtype, remat), batch in fits.items():
        lines.append(f"- {program} {dtype} remat={remat}: "
                     + ("plan two batch sizes or more" if batch is None else str(batch)))
    return "\n".join(lines)


def run_estimate(config, rows, devices, accelerator, train_images=None):
    """Lines on the whole run as the config writes it, at its global batch over `devices`:
    steps (config.steps, or epochs x batches per epoch of `train_images`), and from the
    planned train rows at that per-device batch the roofline wall time and device-hours on the
    accelerator per dtype and remat. The roofline is a lower bound: FCN-ResNet50's AT step ran
    at 25 % of it on an H200 (docs/performance.md)."""
    name = ACCELERATORS[accelerator]["name"]
    if devices < 1:
        raise JaxsegError(f"--devices must be >= 1, got {devices}")
    if config.batch_size % devices:
        return [f"the global batch {config.batch_size} does not split over {devices} devices; "
                "choose --devices dividing it"]
    per_device = config.batch_size // devices
    if config.epochs is None:
        steps, how = config.steps, f"{config.steps:,} steps (config.steps)"
    elif train_images:
        per_epoch = train_images // config.batch_size
        steps = config.epochs * per_epoch
        how = (f"{config.epochs} epochs x {per_epoch:,} batches of {config.batch_size} "
               f"({train_images:,} training images) = {steps:,} steps")
    else:
        return [f"{config.epochs} epochs: pass --train-images N (the training split's size) "
                "for the step count, wall time and device-hours"]
    lines = [f"the run as configured: {how}, global batch {config.batch_size} = {per_device} per "
             f"device on {devices} x {name}"]
    matching = [r for r in rows if r.program == "train" and r.batch == per_device]
    if not matching:
        lines.append(f"  (plan batch {per_device} per device for its time: --batches "
                     f"{per_device})")
    for r in matching:
        hours = steps * r.step_ms / 1e3 / 3600
        lines.append(f"  {r.dtype} remat={r.remat}: roofline {r.step_ms:.1f} ms/step -> "
                     f"{hours:.1f} h wall, {hours * devices:.1f} device-hours (a lower bound; "
                     f"at 25 % of the roofline: {4 * hours:.1f} h, {4 * hours * devices:.1f})")
    return lines


def set_cpu_scheduler():
    """Ask XLA:CPU for its memory-minimising scheduler (before JAX starts its backend)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if CPU_SCHEDULER_FLAG.split("=")[0] not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_SCHEDULER_FLAG}".strip()
