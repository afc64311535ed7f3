"""PGD-10 L-inf attack speed: jaxseg vs torchattacks on the same FCN-ResNet50 weights, fairly.

    .venv/bin/python -m bench.attack_speed [--batch 4] [--size 224] [--steps 10] [--repeats 5]

Both libraries attack [0,1] pixels of the same images with the same model (torchvision
fcn_resnet50 with random weights, ported to Flax; labels = the clean prediction), eps 8/255,
step 2/255, 10 steps, random start, no best-iterate selection (torchattacks has none). Fair, as
bench.train_speed: each of torch, jaxseg fp32 and jaxseg bf16 runs in its own process (in one
process torch's OpenMP threads keep spinning after each torch op and take the cores from XLA),
attacks alternate between the processes so that machine load hits them alike, and the median
of each is reported with the CPU model and load.

Then, in this process (the workers gone): jaxseg's GFLOP per attack from XLA's cost analysis
against a measured fp32 matmul peak, and what bf16 compute (fp32 parameters, bf16
convolutions) does to the attack: pixel accuracy under attack (w.r.t. the clean prediction)
and CE, evaluated in fp32. Not a test: a random-weight model is not a trained one.
"""

import argparse
import json
import pathlib
import time

from bench.common import alternated_medians, machine, serve

EPS, ALPHA = 8 / 255, 2 / 255


def inputs(batch, size):
    """Images [B, H, W, 3] in [0, 1]: street scenes (tests.helpers.torch_reference.camvid_image),
    else random."""
    import numpy as np

    from tests.helpers import torch_reference as tr

    try:
        return np.concatenate([tr.camvid_image(size, size, i) for i in range(batch)])
    except (FileNotFoundError, IndexError, OSError):
        return np.random.default_rng(0).random((batch, size, size, 3), np.float32)


def torch_worker(args):
    import torch

    import torchattacks
    from tests.helpers import torch_reference as tr

    net = tr.PixelLogits(tr.torch_fcn("fcn_resnet50", seed=0)).eval()
    x = torch.from_numpy(inputs(args.batch, args.size)).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        y = net(x).argmax(1)
    attack = torchattacks.PGD(net, eps=EPS, alpha=ALPHA, steps=args.steps, random_start=True)
    attack(x, y)  # warm-up
    serve(lambda: attack(x, y))


def jax_setup(args, dtype):
    """(run() -> adversarial images, model, variables, images, labels) for one compute dtype."""
    import jax
    import jax.numpy as jnp

    from jaxseg import attacks, models
    from jaxseg.models import port
    from tests.helpers import torch_reference as tr

    model, variables, _ = port.port(tr.state_numpy(tr.torch_fcn("fcn_resnet50", seed=0)))
    if dtype == "bfloat16":
        model = models.build("fcn_resnet50", num_classes=model.num_classes, aux=model.aux,
                           dtype=jnp.bfloat16)
    images = jnp.asarray(inputs(args.batch, args.size))
    labels = jnp.argmax(jax.jit(lambda x: model.apply(variables, x)["out"])(images), -1)
    spec = attacks.make("pgd", eps=EPS, step_size=ALPHA, steps=args.steps, use_best=False)
    key = jax.random.key(0)

    def run():
        return attacks.attack(spec, model.apply, variables, images, labels, key).x \
            .block_until_ready()

    return run, model, variables, images, labels


def jax_worker(args, dtype):
    from jaxseg import runtime

    runtime.keep_freed_memory()  # as the CLIs run: glibc keeps freed memory on CPU
    run = jax_setup(args, dtype)[0]
    run()  # warm-up: compiles
    serve(run)


def matmul_peak(n=2048, reps=10):
    """fp32 GFLOP/s of a jitted n x n matmul on this machine (XLA's own kernel)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def attack_gflop(model, variables, images, labels, steps):
    """XLA's flop count of one attack step (objective value + input gradient) times the steps,
    with lax 3x3 convolutions (the model's FLOPs; Winograd's on CPU do fewer multiplications)."""
    import jax
    import jax.numpy as jnp

    from jaxseg import attacks, runtime

    def one_step(v, x, y):
        objective = attacks.segmentation_objective(model.apply, v, y)
        return jax.grad(lambda z: jnp.sum(objective(z, 0).values))(x)

    with runtime.conv_policy(winograd_convs=False):  # read when the step is traced
        cost = jax.jit(one_step).lower(variables, images, labels).compile().cost_analysis()
    return steps * cost["flops"] / 1e9


def damage(model, variables, images, labels, x):
    """(pixel accuracy w.r.t. the clean prediction, CE) of fp32 predictions on `x`."""
    import jax
    import jax.numpy as jnp

    from jaxseg.attacks import losses

    logits = jax.jit(lambda x: model.apply(variables, x)["out"])(jnp.asarray(x))
    return (float(jnp.mean(losses.pixel_accuracy(logits, labels))),
            float(jnp.mean(losses.cross_entropy(logits, labels))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5, help="alternated attacks per worker")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16-compute worker")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    parser.add_argument("--worker", choices=("torch", "float32", "bfloat16"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "torch":
        return torch_worker(args)
    if args.worker:
        return jax_worker(args, args.worker)

    common = ["bench.attack_speed", "--batch", str(args.batch), "--size", str(args.size),
              "--steps", str(args.steps)]
    workers = {"torch": common + ["--worker", "torch"],
               "jax_fp32": common + ["--worker", "float32"]}
    if not args.no_bf16:
        workers["jax_bf16"] = common + ["--worker", "bfloat16"]
    before = machine()
    medians = alternated_medians(workers, args.repeats)
    after = machine()
    rates = {name: args.batch / seconds for name, seconds in medians.items()}

    run, model, variables, images, labels = jax_setup(args, "float32")
    gflop = attack_gflop(model, variables, images, labels, args.steps)
    peak = matmul_peak()
    report = {"config": vars(args), "machine_before": before, "machine_after": after,
              "seconds": {k: round(v, 3) for k, v in medians.items()},
              "images_per_s": {k: round(v, 3) for k, v in rates.items()},
              "ratio_fp32": round(rates["jax_fp32"] / rates["torch"], 3),
              "attack_gflop": round(gflop, 1), "gflops_fp32": round(gflop / medians["jax_fp32"], 1),
              "matmul_peak_gflops_fp32": round(peak, 1)}
    report["clean"] = damage(model, variables, images, labels, images)
    report["under_attack"] = {"jax_fp32": damage(model, variables, images, labels, run())}
    if not args.no_bf16:
        report["ratio_bf16"] = round(rates["jax_bf16"] / rates["torch"], 3)
        report["under_attack"]["jax_bf16"] = damage(model, variables, images, labels,
                                                    jax_setup(args, "bfloat16")[0]())

    print(f"PGD-{args.steps} Linf, FCN-ResNet50, batch {args.batch}, {args.size}x{args.size}; "
          f"each framework in its own process, median of {args.repeats} alternated attacks")
    print(f"machine: {before}; after: {after}")
    for name in workers:
        print(f"  {name:9s} {medians[name]:6.2f} s/attack {rates[name]:6.3f} images/s"
              + (f"   ratio to torch {rates[name] / rates['torch']:.2f}x" if name != "torch" else ""))
    print(f"  jaxseg fp32: {gflop:.0f} GFLOP per attack (XLA cost analysis), "
          f"{report['gflops_fp32']:.1f} GFLOP/s vs matmul peak {peak:.1f} GFLOP/s "
          f"({report['gflops_fp32'] / peak:.0%})")
    acc, ce = report["clean"]
    print(f"  clean pixel acc {acc:.4f} CE {ce:.4f}; under attack: " + ", ".join(
        f"{k} acc {a:.4f} CE {c:.4f}" for k, (a, c) in report["under_attack"].items()))
    print("JSON " + json.dumps(report))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
