"""Speed and memory of the paper's configuration on an accelerator, against the plan's roofline.

The FCN-ResNet50 PGD-AT configuration (configs/coco_fcn50_at.py: 480x480 crops, PGD-3 at
8/255), per device batch 8 by default, on the one device this process sees:

- programs: the train step with the configured adversary, the standard train step, and one
  evaluation batch under the configured eval attack (PGD-10);
- for each compute dtype and remat policy asked for: XLA's memory analysis of the compiled
  program on this device (arguments + outputs - donated + temporaries; on a GPU, XLA:GPU's own
  buffer assignment, not XLA:CPU's approximation), the median wall time of --steps runs, and
  achieved TFLOP/s and MFU: model FLOPs (XLA's cost analysis of the unrolled program without
  remat, as `jaxseg.plan` counts them) per second, over the device's dense peak for the dtype
  (bf16; float32 at the TF32 rate), next to the plan's roofline time;
- PyTorch (torchvision's fcn_resnet50, cudnn.benchmark, bf16 autocast or fp32 with TF32
  convolutions, the same hand-written PGD-3) in its own process first, for the ratio.

    python -m bench.accelerator [--batch 8] [--steps 10] [--remat none,convs,full] \
        [--torch-dtypes bfloat16] [--lock FILE]

On a CPU it runs too (slowly; use --size 64 --batch 1 to try it).
Compilation dominates a short run: on an H200's host the three bf16 programs took 157 s to
trace, count and compile; the full default set (eight programs) more than 300 s.
"""

import argparse
import concurrent.futures
import statistics
import subprocess
import sys
import time

from bench.common import exclusive, machine


def torch_worker(batch, size, steps, dtype, mode, lock=None):
    """Median seconds per PyTorch train step on CUDA (or CPU), printed as one number."""
    import torch

    from tests.helpers.torch_reference import IMAGENET_MEAN, IMAGENET_STD, TORCH_FCN

    device = "cuda" if torch.cuda.is_available() else "cpu"
    mean, std = IMAGENET_MEAN.to(device), IMAGENET_STD.to(device)
    normalize = lambda images: (images - mean) / std  # noqa: E731
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True  # torch's default for convolutions; matmuls too:
    torch.backends.cuda.matmul.allow_tf32 = True  # XLA's float32 default on GPU is TF32
    torch.manual_seed(0)
    model = TORCH_FCN["fcn_resnet50"](weights=None, weights_backbone=None, num_classes=21,
                         aux_loss=True).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, 21, (batch, size, size), device=device)
    ce = torch.nn.CrossEntropyLoss(ignore_index=255)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    eps, alpha = 8 / 255, 2.5 * (8 / 255) / 3

    def pgd(images):
        model.eval()  # BatchNorm with running statistics during the attack, as jaxseg's default
        delta = (torch.rand_like(images) * 2 - 1) * eps
        for _ in range(3):
            delta.requires_grad_(True)
            with autocast:
                loss = ce(model(normalize((images + delta).clamp(0, 1)))["out"].float(), y)
            grad, = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        model.train()
        return (images + delta).clamp(0, 1).detach()

    def step():
        inputs = pgd(x) if mode == "pgd" else x
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = model(normalize(inputs))
            loss = ce(out["out"].float(), y) + 0.5 * ce(out["aux"].float(), y)
        loss.backward()
        optimizer.step()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    with exclusive(lock):
        for _ in range(3):
            step()
        sync()
        for _ in range(steps):
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
    print(statistics.median(times), flush=True)


def torch_seconds(batch, size, steps, dtype, mode, lock=None):
    argv = [sys.executable, "-m", "bench.accelerator", "--torch-worker", dtype, mode,
            "--batch", str(batch), "--size", str(size), "--steps", str(steps)]
    argv += ["--lock", lock] if lock else []
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode:
        tail = result.stderr.strip().splitlines()[-1:] or ["?"]
        print(f"  pytorch {dtype} {mode}: failed ({tail[0]})", flush=True)
        return None
    return float(result.stdout.strip().splitlines()[-1])


def jax_programs(config, batch, dtype, remat):
    """{name: (function, real args, donate)} for the train steps and the eval batch."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxseg import attacks, models, runtime
    from jaxseg.evaluation import confusion
    from jaxseg.train import optim
    from jaxseg.train import state as training

    height, width = (int(v) for v in config.data.crop_size)
    num_classes = config.model.num_classes or 21
    model = models.build(config.model.arch, num_classes, config.model.aux,
                       runtime.compute_dtype(dtype), remat)
    variables = models.init(model, jax.random.key(0), (height, width))
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.random((batch, height, width, 3), np.float32))
    labels = jnp.asarray(rng.integers(0, num_classes, (batch, height, width)), jnp.int32)
    tx = optim.make_optimizer(config.optim, config.steps or 1000)
    programs = {}
    for name, mode in (("train AT", config.adv.mode), ("train standard", "none")):
        step_config = config.copy_and_resolve_references()
        step_config.adv.mode = mode
        step = training.make_train_step(model, tx, step_config)
        # a fresh state (and key) for every call: the step donates them
        state = lambda: training.create_state(variables, tx, jax.random.key(0))  # noqa: E731
        programs[name] = (step, state, (images, labels), (0,))
    eps = config.adv.eps if config.eval.eps is None else config.eval.eps
    spec = attacks.make(config.eval.attack, eps=eps, steps=config.eval.steps)

    def evaluate(variables, images, labels, key):
        return confusion.batch_counts(model.apply, spec.static, num_classes, variables, images,
                                      labels, key, spec.eps, spec.step_size, None)
    programs["eval"] = (
        evaluate, lambda: variables, (images, labels, jax.random.key(1)), ())
    return programs


def prepare(function, first, rest, donate):
    """The program compiled as jaxseg runs it on this backend (GPU: loops rolled) and its peak
    GB from XLA's memory analysis on this device."""
    import jax

    from jaxseg import plan

    compiled = jax.jit(function, donate_argnums=donate).lower(first(), *rest).compile()
    return compiled, plan._peak_bytes(compiled) / 1e9


def model_gflop(function, first, rest, donate):
    """FLOPs of a program built with its loops unrolled, as XLA's cost analysis counts them."""
    from jaxseg import plan

    return plan._flops(function, (first(), *rest), donate) / 1e9


def median_seconds(compiled, first, rest, donate, steps, lock=None):
    import jax

    carry = first()
    times = []
    with exclusive(lock):
        for i in range(steps + 2):  # two warm-up calls
            start = time.perf_counter()
            out = compiled(carry, *rest)
            jax.block_until_ready(out)
            if i >= 2:
                times.append(time.perf_counter() - start)
            if donate:
                carry = out[0]
    return statistics.median(times)


def accelerator_key():
    import jax

    kind = jax.devices()[0].device_kind.lower()
    return next((k for k in ("h200", "h100", "a100") if k in kind), None), kind


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/coco_fcn50_at.py")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=None, help="crop size (default: config's)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--remat", default="none,convs,full",
                        help="remat policies, measured for the AT step in the first dtype")
    parser.add_argument("--torch-dtypes", default="bfloat16",
                        help="PyTorch references to time ('' for none)")
    parser.add_argument("--lock", default=None,
                        help="a file to lock while timing, for benches run side by side on one "
                             "device (they compile in parallel and time one at a time)")
    parser.add_argument("--torch-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_worker:
        torch_worker(args.batch, args.size, args.steps, *args.torch_worker, lock=args.lock)
        return

    from jaxseg.config import overrides

    config = overrides.load(args.config)
    if args.size:
        config.data.crop_size = (args.size, args.size)
    size = int(config.data.crop_size[0])
    dtypes = args.dtypes.split(",")
    remats = args.remat.split(",")
    print(f"machine: {machine()}", flush=True)
    torch_times = {}
    for dtype in filter(None, args.torch_dtypes.split(",")):  # first: jax takes the memory
        for mode in ("pgd", "none"):
            seconds = torch_seconds(args.batch, size, args.steps, dtype, mode, args.lock)
            torch_times[dtype, mode] = seconds
            if seconds:  # printed now: an XLA abort later must not lose it
                print(f"pytorch {dtype} {'PGD-3 AT' if mode == 'pgd' else 'standard'} train step: "
                      f"{1e3 * seconds:.1f} ms ({args.batch / seconds:.1f} images/s)", flush=True)

    import jax

    from jaxseg import plan, runtime

    key, kind = accelerator_key()
    print(f"jax {jax.__version__} on {kind}; {config.model.arch}, batch {args.batch} at "
          f"{size}x{size}, median of {args.steps} steps", flush=True)
    # In order of interest: the AT step per dtype, then its remat policies, then the rest.
    cases = ([("train AT", d, "none") for d in dtypes]
             + [("train AT", dtypes[0], r) for r in remats if r != "none"]
             + [(n, d, "none") for d in dtypes for n in ("train standard", "eval")])
    programs = {}
    for name, dtype, remat in cases:
        if (dtype, remat) not in programs:
            programs[dtype, remat] = jax_programs(config, args.batch, dtype, remat)
    program = lambda name, dtype, remat: programs[dtype, remat][name]  # noqa: E731
    start = time.perf_counter()
    # FLOPs: any dtype, no remat, counted on programs built unrolled (an attack fixes its loops
    # when it is made; XLA counts a rolled loop's body once)
    with runtime.loop_policy("on"):
        counted = jax_programs(config, args.batch, dtypes[0], "none")
    gflop = {name: model_gflop(*counted[name]) for name in ("train AT", "train standard", "eval")}
    del counted
    # XLA compiles outside the GIL: all programs at once, then each timed alone.
    with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
        compiled = {case: pool.submit(prepare, *program(*case)) for case in cases}
        compiled = {case: future.result() for case, future in compiled.items()}
    print(f"traced and compiled {len(cases)} programs in {time.perf_counter() - start:.0f} s; "
          f"GFLOP per call (model, unrolled): "
          + ", ".join(f"{n} {g:.0f}" for n, g in gflop.items()), flush=True)
    print("| program | dtype | remat | peak GB (XLA, this device) | ms/step | images/s | "
          "TFLOP/s (model) | MFU | roofline ms | PyTorch ms | jaxseg/PyTorch speed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        name, dtype, remat = case
        executable, peak = compiled.pop(case)
        _, first, rest, donate = program(*case)
        seconds = median_seconds(executable, first, rest, donate, args.steps, args.lock)
        del executable
        tflops = gflop[name] / 1e3 / seconds  # remat's recomputation is not counted
        mfu = roof = ""
        if key:
            spec = plan.ACCELERATORS[key]
            mfu = f"{100 * tflops * 1e12 / spec[dtype]:.1f} %"
            roof = f"{1e3 * gflop[name] * 1e9 / spec[dtype]:.1f}"
        mode = {"train AT": "pgd", "train standard": "none"}.get(name)
        reference = torch_times.get((dtype, mode)) if remat == "none" else None
        versus = f"{1e3 * reference:.1f} | {reference / seconds:.2f}x" if reference else " | "
        label = f"eval {config.eval.attack}-{config.eval.steps}" if name == "eval" else name
        print(f"| {label} | {dtype} | {remat} | {peak:.2f} | {1e3 * seconds:.1f} | "
              f"{args.batch / seconds:.1f} | {tflops:.3g} | {mfu} | {roof} | {versus} |",
              flush=True)
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
