"""PGD-10 L-inf attack speed: jaxseg vs torchattacks on the same ported FCN-ResNet50 weights.

    .venv/bin/python -m bench.attack_speed                      # batch 4, 224x224, fp32 + bf16
    .venv/bin/python -m bench.attack_speed --repeats 1 --xla-flags=--xla_cpu_use_onednn=true

Both libraries attack [0,1] pixels of the same images with the same model (torchvision
fcn_resnet50 with random weights, ported to Flax; labels = the clean prediction), eps 8/255,
step 2/255, 10 steps, random start, no best-iterate selection (torchattacks has none). Runs are
interleaved (torch, jax fp32, jax bf16, torch, ...) so that load from other processes hits all
of them alike; after one warm-up (compile) run, `--repeats` timed runs give the median and best
wall time and the median process CPU time (the load-robust figure on a shared machine).

Printed: images/s and the jaxseg/torch ratio; jaxseg's GFLOP/s from XLA's cost analysis of one
attack step (forward + input gradient) times the steps, against a measured fp32 matmul peak; the
bf16-compute mode (fp32 parameters, bf16 convolutions) with its ratio and its effect on the
attack: pixel accuracy under attack (w.r.t. the clean prediction) and CE, evaluated in fp32.
Not a test: a random-weight model is not a trained one, so the success figures only show that
bf16 gradients still attack; their size depends on the weights.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time



def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--xla-flags", default="", help="appended to XLA_FLAGS before jax loads")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16-compute mode")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    return parser.parse_args()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def timed_cpu(fn):
    """(wall seconds, process CPU seconds over all threads, output). CPU time is the load-robust
    figure on a shared machine: descheduled time is not counted, only work (and spinning)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def matmul_peak(jax, jnp, n=2048, reps=10):
    """fp32 GFLOP/s of a jitted n x n matmul on this machine (XLA's own kernel)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, a).block_until_ready()
    best = min(timed(lambda: f(a, a).block_until_ready())[0] for _ in range(reps))
    return 2 * n**3 / best / 1e9


def step_gflop(jax, jnp, attacks, model, variables, images, labels):
    """XLA's flop count of one attack step (objective value + input gradient)."""
    def one_step(v, x, y):
        objective = attacks.segmentation_objective(model.apply, v, y)
        return jax.grad(lambda z: jnp.sum(objective(z, 0)))(x)

    cost = jax.jit(one_step).lower(variables, images, labels).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return cost["flops"] / 1e9


def main():
    args = parse_args()
    if args.xla_flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    import torchattacks

    from jaxseg import attacks, models
    from jaxseg.attacks import losses
    from jaxseg.models import port
    from tests.helpers import torch_reference as tr  # the torchvision import shim (test/bench only)

    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)

    net = tr.torch_fcn("fcn_resnet50", seed=0)
    model, variables, _ = port.port(tr.state_numpy(net))
    model_bf16 = models.fcn("fcn_resnet50", num_classes=model.num_classes, aux=model.aux,
                            dtype=jnp.bfloat16)

    wrapped = tr.PixelLogits(net).eval()
    try:
        images = np.concatenate([tr.camvid_image(args.size, args.size, i)
                                 for i in range(args.batch)])
    except (FileNotFoundError, IndexError, OSError):
        images = np.random.default_rng(0).random((args.batch, args.size, args.size, 3),
                                                 np.float32)
    images_t = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        labels_t = wrapped(images_t).argmax(1)
    labels = jnp.asarray(labels_t.numpy().astype(np.int32))

    eps, alpha = 8 / 255, 2 / 255
    spec = attacks.make("pgd", eps=eps, step_size=alpha, steps=args.steps, use_best=False)
    torch_attack = torchattacks.PGD(wrapped, eps=eps, alpha=alpha, steps=args.steps,
                                    random_start=True)
    key = jax.random.key(0)
    images_j = jnp.asarray(images)

    def run_torch():
        return torch_attack(images_t, labels_t).permute(0, 2, 3, 1).numpy()

    def run_jax(m):
        return lambda: attacks.attack(spec, m.apply, variables, images_j, labels, key).x \
            .block_until_ready()

    modes = {"torch": run_torch, "jax_fp32": run_jax(model)}
    if not args.no_bf16:
        modes["jax_bf16"] = run_jax(model_bf16)

    compile_s = {}
    outputs = {}
    for name, fn in modes.items():  # warm-up: compiles, oneDNN primitive caches
        compile_s[name], outputs[name] = timed(fn)
        print(f"warm-up {name}: {compile_s[name]:.1f} s", file=sys.stderr, flush=True)
    times = {name: [] for name in modes}
    cpu_times = {name: [] for name in modes}
    for _ in range(args.repeats):
        for name, fn in modes.items():
            seconds, cpu_seconds, outputs[name] = timed_cpu(fn)
            times[name].append(seconds)
            cpu_times[name].append(cpu_seconds)
            print(f"{name}: {seconds:.2f} s wall, {cpu_seconds:.2f} CPU-s", file=sys.stderr,
                  flush=True)

    median = {name: statistics.median(values) for name, values in times.items()}
    best = {name: min(values) for name, values in times.items()}
    cpu = {name: statistics.median(values) for name, values in cpu_times.items()}
    rate = {name: args.batch / seconds for name, seconds in median.items()}
    gflop = step_gflop(jax, jnp, attacks, model, variables, images_j, labels) * args.steps
    peak = matmul_peak(jax, jnp)

    eval_logits = jax.jit(lambda x: model.apply(variables, x)["out"])

    def damage(x):
        logits = eval_logits(jnp.asarray(x))
        return (float(jnp.mean(losses.pixel_accuracy(logits, labels))),
                float(jnp.mean(losses.cross_entropy(logits, labels))))

    clean_acc, clean_ce = damage(images)
    report = {
        "config": {"batch": args.batch, "size": args.size, "steps": args.steps,
                   "repeats": args.repeats, "threads": threads,
                   "xla_flags": os.environ.get("XLA_FLAGS", ""), "jax": jax.__version__,
                   "torch": torch.__version__, "cpus": os.cpu_count()},
        "seconds": {k: round(v, 3) for k, v in median.items()},
        "all_seconds": {k: [round(s, 3) for s in v] for k, v in times.items()},
        "first_call_seconds": {k: round(v, 2) for k, v in compile_s.items()},
        "images_per_s": {k: round(v, 3) for k, v in rate.items()},
        "best_seconds": {k: round(v, 3) for k, v in best.items()},
        "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
        "ratio_fp32": round(rate["jax_fp32"] / rate["torch"], 3),
        "ratio_fp32_best": round(best["torch"] / best["jax_fp32"], 3),
        "ratio_fp32_cpu": round(cpu["torch"] / cpu["jax_fp32"], 3),
        "attack_gflop": round(gflop, 1),
        "gflops_fp32": round(gflop / median["jax_fp32"], 1),
        "matmul_peak_gflops_fp32": round(peak, 1),
        "clean": {"pixel_acc": round(clean_acc, 4), "ce": round(clean_ce, 4)},
        "under_attack": {},
    }
    for name, x in outputs.items():
        acc, ce = damage(x)
        report["under_attack"][name] = {"pixel_acc": round(acc, 4), "ce": round(ce, 4)}
    if "jax_bf16" in rate:
        report["ratio_bf16"] = round(rate["jax_bf16"] / rate["torch"], 3)
        report["ratio_bf16_best"] = round(best["torch"] / best["jax_bf16"], 3)
        report["ratio_bf16_cpu"] = round(cpu["torch"] / cpu["jax_bf16"], 3)

    print(f"PGD-{args.steps} Linf, FCN-ResNet50, batch {args.batch}, {args.size}x{args.size}, "
          f"{threads} threads, XLA_FLAGS='{report['config']['xla_flags']}'")
    for name in modes:
        print(f"  {name:9s} {rate[name]:7.3f} images/s  (median {median[name]:.2f} s/attack, "
              f"best {best[name]:.2f} s, {cpu[name]:.2f} CPU-s; runs "
              f"{[round(t, 2) for t in times[name]]}, first call {compile_s[name]:.1f} s)")
    for mode in ("fp32", "bf16"):
        if f"ratio_{mode}" in report:
            print(f"  ratio jaxseg {mode}/torch images/s: median {report[f'ratio_{mode}']:.3f}, "
                  f"best-of-{args.repeats} {report[f'ratio_{mode}_best']:.3f}, "
                  f"CPU time {report[f'ratio_{mode}_cpu']:.3f}")
    print(f"  jaxseg fp32: {gflop:.0f} GFLOP per attack (XLA cost analysis), "
          f"{report['gflops_fp32']:.1f} GFLOP/s vs matmul peak {peak:.1f} GFLOP/s "
          f"({report['gflops_fp32'] / peak:.0%})")
    print(f"  clean pixel acc {clean_acc:.4f} CE {clean_ce:.4f}; under attack: "
          + ", ".join(f"{k} acc {v['pixel_acc']:.4f} CE {v['ce']:.4f}"
                      for k, v in report["under_attack"].items()))
    print("JSON " + json.dumps(report))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
